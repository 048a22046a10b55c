"""Open `subscriptions/listen` streams (2026-07-28) on both transports: their budget, life and end.

A listen is the stateless revision's replacement for the handshake era's GET
stream, and it is held to the same bound: each open listen takes a place of
the app's event-stream `Capacity` (the one GET streams take, with its
per-token share), so past the bound the client is refused before anything
opens (HTTP 503 with Retry-After; on a socket, the transport's "server busy"
error). What a listen may hear was decided by the dispatcher
(`Dispatcher.honoured_filter`); this module delivers it.

On HTTP the listen's answer is an SSE stream (`EventStream` as the queue,
written by the notifying thread, read by the request's thread): the
acknowledgment first, then the change notifications as they come, a comment
line every keep-alive interval (which also keeps idle timeouts of proxies and
of our own server off a quiet stream), no event ids (the revision's streams
are not resumable). It ends:

- when the client closes it: the write fails, the WSGI server closes the body,
  and the subscription is forgotten at once (that is its cancellation);
- when the token is no longer current (revoked, or rotated away): step 7 is
  asked at every event and every keep-alive tick, and the stream stops without
  a result, which a client reads as an abrupt end; audited once;
- on server shutdown: the listen request's result
  (`{"resultType": "complete", "_meta": {subscriptionId}}`) is the last event.

On WebSocket the listen is not a stream: the acknowledgment and notifications
are ordinary messages on the socket, tagged with the listen id; the client
ends one with `notifications/cancelled` naming it; a revoked token's listens
each get `notifications/cancelled` with the reason before the socket closes
4401; shutdown sends each its result before the socket closes 1001. A
socket's listens end with the socket.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from . import audit
from .capacity import Capacity, Slot, principal_key
from .mcp.context import Call, McpSession
from .mcp.dispatch import Dispatcher
from .mcp.jsonrpc import INVALID_REQUEST, JsonRpcError, Notification, Request, RequestId, dumps
from .mcp.outcome import Revoked
from .mcp.subscriptions import CANCELLED, Subscription
from .refusals import ServiceUnavailable
from .streams import EventStream

# Messages queued for a listen whose client reads slowly; past this the oldest
# go first. Change notifications are hints to refetch, so losing an old one to a
# newer one of the same kind costs the client nothing it cannot recover.
MAX_QUEUED_LISTEN_EVENTS = 256
# A comment line this often on a quiet listen stream: proxies (nginx's default read
# timeout is 60 s) and clients keep it open, and a revoked token or a client that
# went away is noticed within this time even when nothing changes.
LISTEN_KEEPALIVE_SECONDS = 15.0
# How often a quiet listen stream looks whether its client closed the connection
# (a WSGI app learns of it only when a write fails, and keep-alives are rare):
# within this time the subscription is forgotten and its place given back.
PEER_POLL_SECONDS = 1.0
# Told to a client refused because the server is shutting down.
SHUTDOWN_RETRY_AFTER_SECONDS = 5
REVOKED_REASON = "token revoked"


class ShuttingDown(ServiceUnavailable):
    """No listen opens once the server is shutting down (503; on a socket, the busy error)."""

    def __init__(self) -> None:
        super().__init__(
            "The server is shutting down; listen again in a moment",
            headers=[("Retry-After", str(SHUTDOWN_RETRY_AFTER_SECONDS))],
        )
        self.retry_after = SHUTDOWN_RETRY_AFTER_SECONDS


class _Sender(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...


def peer_closed_check(environ: dict[str, Any]) -> Callable[[], bool]:
    """A check whether the client of this request closed its connection, for a long answer.

    The connection's socket is the WSGI server's (`werkzeug.socket` under the
    built-in server, `gunicorn.socket` under gunicorn). While the client waits
    for the answer it sends nothing, so a readable socket that has no bytes is
    the client's close; a byte it did send (a pipelined request) is left unread.
    Where the socket is unknown or cannot be peeked (TLS), the check says "open"
    and the next failed write ends the stream instead.
    """
    connection = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    if not isinstance(connection, socket.socket):
        return lambda: False

    def closed() -> bool:
        try:
            # poll, not the socket's own wait: a socket with a timeout would block in recv for it.
            poller = select.poll()
            poller.register(connection, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(0):
                return False  # nothing to read: still there
            return connection.recv(1, socket.MSG_PEEK) == b""
        except ValueError:
            return False  # a TLS socket cannot peek (or the socket is already closed)
        except OSError:
            return True  # reset

    return closed


def encode_listen_event(message: dict[str, Any]) -> bytes:
    """One SSE event without an id: listen streams are not resumable (2026-07-28)."""
    return b"event: message\ndata: " + dumps(message) + b"\n\n"


class _AckFirst:
    """Sends to a socket, holding back changes until the acknowledgment is out.

    A socket listen is registered before it is acknowledged, so no change made
    after the client saw the acknowledgment can be missed; a change that comes
    in between waits here, so the acknowledgment is still the first message.
    """

    def __init__(self, channel: _Sender) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._held: list[dict[str, Any]] | None = []

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._held is not None:
                if len(self._held) < MAX_QUEUED_LISTEN_EVENTS:
                    self._held.append(message)
                return
        self._channel.send(message)

    def acknowledge(self, acknowledgment: dict[str, Any]) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            for message in [acknowledgment, *held]:
                self._channel.send(message)


class _SocketListens:
    """The listens open on one socket, by id; guarded by `Listens._lock`."""

    def __init__(self, channel: _Sender) -> None:
        self.channel = channel
        self.open: dict[RequestId, tuple[Subscription, Slot]] = {}
        # Held while the listens are ended: a second caller (the socket's own thread, or
        # shutdown) waits until the first has sent every last message, so the socket
        # cannot close before them.
        self.ending = threading.Lock()


class Listens:
    """The open listens of one app, on HTTP and WebSocket. Thread-safe."""

    def __init__(
        self,
        server: Dispatcher,
        capacity: Capacity,
        shutdown: threading.Event,
        keepalive_seconds: float = LISTEN_KEEPALIVE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        # The event-stream capacity GET streams take too: one budget for both.
        self.capacity = capacity
        self.shutdown = shutdown
        self.keepalive_seconds = keepalive_seconds
        self._clock = clock  # monotonic seconds: when the next keep-alive is due
        self._lock = threading.Lock()
        self._streams: dict[Subscription, EventStream] = {}
        self._sockets: dict[McpSession, _SocketListens] = {}

    def _take_place(self, call: Call) -> Slot:
        """A place in the stream budget, or a 503 refusal (CapacityExhausted, or shutting down)."""
        if self.shutdown.is_set():
            raise ShuttingDown()
        return self.capacity.acquire(principal_key(call.principal))

    # --- HTTP: the listen's own response stream ------------------------------------

    def open_http(
        self, request: Request, call: Call, peer_closed: Callable[[], bool] = lambda: False
    ) -> tuple[Iterator[bytes], Slot]:
        """The SSE body of a listen and the place it holds (the caller releases it when the body ends).

        `peer_closed` says whether the client went away (`peer_closed_check`).

        Raises before anything is sent: JsonRpcError for a malformed filter,
        PrincipalRevoked for a revoked token, a 503 refusal past the budget.
        """
        honoured = self.server.honoured_filter(request, call)
        slot = self._take_place(call)
        try:
            stream = EventStream("listen", MAX_QUEUED_LISTEN_EVENTS)
            subscription = Subscription(request.id, honoured, stream.send, principal_key(call.principal))
            stream.send(subscription.acknowledgment())  # first, before any change can be queued
            # Whoever gives the place back (the body ending, the client gone, a failed
            # start) forgets the subscription: it can never outlive its place.
            slot.also(lambda: self._forget_stream(subscription))
            with self._lock:
                if self.shutdown.is_set():  # close_all already ran: it would never end this one
                    raise ShuttingDown()
                self._streams[subscription] = stream
            self.server.subscriptions.add(subscription)
        except BaseException:
            slot.release()
            raise
        return self._http_body(subscription, stream, call, peer_closed), slot

    def _http_body(
        self, subscription: Subscription, stream: EventStream, call: Call, peer_closed: Callable[[], bool]
    ) -> Iterator[bytes]:
        revoked = False

        def stop() -> bool:
            # The client's close, then step 7: at every event and every poll, so at every keep-alive too.
            nonlocal revoked
            if peer_closed():
                return True
            revoked = not call.is_current()
            return revoked

        poll = min(PEER_POLL_SECONDS, self.keepalive_seconds)
        last_write = self._clock()
        try:
            for item in stream.read(0, poll, stop):
                if item is not None:
                    yield encode_listen_event(item[1])
                elif self._clock() - last_write >= self.keepalive_seconds:
                    yield b": keepalive\n\n"
                else:
                    continue
                last_write = self._clock()
            if revoked:
                # The answer is already a 200 stream: it ends without a result, and the
                # client's next request (a new listen) gets the 401.
                audit.dispatch_outcome(Revoked(), call.client_address, call.principal.name)
        finally:
            # Reached when the stream ends and when the client went away (the WSGI
            # server closes this generator): the subscription is forgotten at once
            # (again when its place is given back, which does nothing more).
            self._forget_stream(subscription)

    def _forget_stream(self, subscription: Subscription) -> None:
        self.server.subscriptions.remove(subscription)
        with self._lock:
            self._streams.pop(subscription, None)

    # --- WebSocket: ordinary messages on the socket -----------------------------------

    def open_socket(self, request: Request, call: Call, channel: _Sender, on_revoked: Callable[[], object]) -> None:
        """Open a listen on a socket: acknowledge it there, and deliver its notifications there.

        `on_revoked` is the socket's revocation path (it calls `end_socket` and
        closes 4401); it runs when a notification finds the token no longer
        current. Raises JsonRpcError, PrincipalRevoked, CapacityExhausted or ShuttingDown
        (the transport answers each); nothing was opened then.
        """
        honoured = self.server.honoured_filter(request, call)
        session = call.session
        slot = self._take_place(call)
        outbox = _AckFirst(channel)

        def deliver(message: dict[str, Any]) -> None:
            if not call.is_current():
                on_revoked()
                return
            outbox.send(message)

        subscription = Subscription(request.id, honoured, deliver, principal_key(call.principal))
        try:
            with self._lock:
                if self.shutdown.is_set():  # close_all may have ended this socket's listens: it would miss this one
                    raise ShuttingDown()
                listens = self._sockets.get(session)
                if listens is None:
                    listens = self._sockets[session] = _SocketListens(channel)
                if request.id in listens.open:
                    raise JsonRpcError(
                        INVALID_REQUEST,
                        f"A listen with id {request.id!r} is already open on this socket; use a new id",
                        request_id=request.id,
                    )
                listens.open[request.id] = (subscription, slot)
        except BaseException:
            slot.release()
            raise
        self.server.subscriptions.add(subscription)
        outbox.acknowledge(subscription.acknowledgment())  # first, then what came meanwhile

    def has_open(self, session: McpSession) -> bool:
        """Whether the socket of `session` has a listen open (a socket waiting for changes is not idle)."""
        with self._lock:
            listens = self._sockets.get(session)
            return bool(listens and listens.open)

    def cancel(self, session: McpSession, notification: Notification) -> bool:
        """A client's notifications/cancelled: True when it named a listen of this socket (now ended)."""
        if notification.method != CANCELLED:
            return False
        request_id = notification.params.get("requestId")
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
            return False
        with self._lock:
            listens = self._sockets.get(session)
            entry = listens.open.pop(request_id, None) if listens else None
        if entry is None:
            return False
        self._forget(*entry)
        return True

    def end_socket(self, session: McpSession, reason: str | None = None) -> None:
        """End every listen of a socket. With a reason (revocation) each is told so
        (notifications/cancelled); on shutdown each gets its result (the graceful end).

        The socket's transport calls it when the socket ends, whatever ended it,
        and `close_all` on shutdown: whichever comes first ends them, once. The
        socket stays registered until its last message is sent, so the other
        caller finds it and waits (`ending`) before it returns, and so before
        the socket can be closed (`WebSocketTransport.close_all`, or the
        socket's own end): no result is lost to a 1001 that overtook it.
        """
        with self._lock:
            listens = self._sockets.get(session)
        if listens is None:
            return
        with listens.ending:
            with self._lock:
                entries = list(listens.open.values())
                listens.open.clear()
            for subscription, slot in entries:
                self._forget(subscription, slot)
                if reason is not None:
                    listens.channel.send(subscription.cancelled(reason))
                elif self.shutdown.is_set():
                    listens.channel.send(self.server.listen_final_result(subscription))
            with self._lock:
                # A listen opened meanwhile (only before shutdown) stays, for the socket's own end.
                if not listens.open and self._sockets.get(session) is listens:
                    del self._sockets[session]

    def _forget(self, subscription: Subscription, slot: Slot) -> None:
        self.server.subscriptions.remove(subscription)
        slot.release()

    # --- shutdown --------------------------------------------------------------------

    def close_all(self) -> None:
        """Server shutdown: every listen gets its result (the graceful end), then its stream ends.

        The app sets its shutdown event first, so no listen opens after this.
        """
        with self._lock:
            streams = list(self._streams.items())
            sockets = list(self._sockets)
        for subscription, stream in streams:
            self.server.subscriptions.remove(subscription)
            stream.finish(self.server.listen_final_result(subscription))
        for session in sockets:
            self.end_socket(session)
