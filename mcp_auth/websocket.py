"""MCP over WebSocket at the MCP endpoint: subprotocol `mcp`, one JSON-RPC message per text frame.

No MCP revision defines a WebSocket transport; this follows the draft
(SEP-1288) as PROTOCOL.md describes it: the same message flow as stdio
(initialize first) on a socket opened with subprotocol `mcp`. A request whose
`params._meta` carries the 2026-07-28 envelope is served statelessly instead
(its own version and capabilities, `mcp.ladder.modern_request` without the
header rungs); both eras may interleave on one socket.

The upgrade request has already passed steps 1-5 of the pipeline when it
reaches this module (`Admission`), so a refused client gets a plain HTTP
answer and never a 101. Here the transport adds its own handshake rules
(version, key, subprotocol, the open-socket bound), then accepts with
simple-websocket and runs the socket in the request's thread; simple-websocket
adds one reader thread. Requests run on their own threads (a few at once per socket) so a slow tool
does not stop the socket from reading.

The second lock on a socket (`Call.is_current`): before every message, and
between messages at every receive poll, the principal must still be current;
a revoked token's socket is closed with 4401 and its session ends. How a call
ended (its `Outcome`) becomes a frame or that close in one method, `_answer`,
which also audits it once; a call outside the token's scope gets a JSON-RPC
error (FORBIDDEN). Bad input never ends the
thread: a frame that is not JSON gets -32700 and the socket stays open; a
message over the size limit closes with 1009.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from simple_websocket import ConnectionClosed, Server

from . import audit
from .capacity import Capacity, CapacityExhausted, Slot, principal_key
from .config import DEFAULT_MAX_STREAMS
from .guard import Admission
from .listen import REVOKED_REASON, Listens, ShuttingDown
from .mcp.context import Call
from .mcp.dispatch import Dispatcher as McpServer  # the transport's view of a server: its dispatcher
from .mcp.jsonrpc import (
    FORBIDDEN,
    ErrorResponse,
    JsonRpcError,
    Message,
    Notification,
    Request,
    dumps,
    parse_message,
)
from .mcp.ladder import modern_request, says_modern
from .mcp.outcome import Outcome, PrincipalRevoked, Revoked, ScopeRefused
from .mcp.subscriptions import LISTEN_METHOD
from .refusals import BadRequest
from .sessions import Session, SessionStore

logger = logging.getLogger("mcp_auth.websocket")

SUBPROTOCOL = "mcp"
# Browsers cannot set headers on an upgrade; when the operator enables it, a
# token may ride as the subprotocol entry "mcp.auth.<token>" (SEP-1288's
# spelling). It is never echoed back: the server selects only "mcp".
TOKEN_SUBPROTOCOL_PREFIX = "mcp.auth."
# Close codes: 1000 normal, 1001 going away, 1003 unsupported data, 1009 too big, 1011 session ended
# (simple-websocket sends it); 4401 is ours (4000-4999 are private): the token was revoked.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
# RFC 6455 section 4.1: the client's Sec-WebSocket-Key is a random 16-byte value, base64-encoded (24 characters).
WEBSOCKET_KEY_BYTES = 16
WEBSOCKET_KEY_LENGTH = 24
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_REVOKED = 4401
# 1011: the server ended the socket's session (a stdio bridge's child exited or broke).
CLOSE_SESSION_ENDED = 1011
# How often the socket's thread wakes to notice a dead peer, shutdown or idleness:
# simple-websocket can mark a socket closed without waking a waiting reader.
RECEIVE_POLL_SECONDS = 1.0
# Requests of one socket that may run at once; past it a request is refused with
# SERVER_BUSY. Enough for a client that pipelines, and it bounds threads per socket.
MAX_CONCURRENT_REQUESTS = 16
SERVER_BUSY = -32000
# Retry-After on a refused handshake: a socket is long-lived, so places free up
# slowly; retrying sooner would mostly be refused again.
SOCKET_RETRY_AFTER_SECONDS = 30


class WebSocketDone(ConnectionError):
    """Raised to the Werkzeug server after a socket ends: the connection is ours, write nothing."""


def is_upgrade(environ: dict[str, Any]) -> bool:
    return environ.get("REQUEST_METHOD") == "GET" and "websocket" in (environ.get("HTTP_UPGRADE") or "").lower()


def requested_subprotocols(environ: dict[str, Any]) -> list[str]:
    return [p.strip() for p in (environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL") or "").split(",") if p.strip()]


def subprotocol_token(environ: dict[str, Any]) -> bytes | None:
    """The token carried as a `mcp.auth.<token>` subprotocol entry, if any."""
    for entry in requested_subprotocols(environ):
        if entry.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(entry) > len(TOKEN_SUBPROTOCOL_PREFIX):
            return entry[len(TOKEN_SUBPROTOCOL_PREFIX) :].encode("latin-1", "replace")
    return None


def finish_upgraded_request(environ: dict[str, Any]) -> list[bytes]:
    """End the WSGI call of a socket that is over, without writing an HTTP response on it."""
    if "gunicorn.socket" in environ:
        raise StopIteration  # gunicorn's gthread worker closes the connection quietly on this
    if "werkzeug.socket" in environ:
        raise WebSocketDone("websocket closed")
    return []


def _is_websocket_key(key: str) -> bool:
    """Whether `key` is what RFC 6455 requires of Sec-WebSocket-Key: 16 bytes in canonical base64."""
    if len(key) != WEBSOCKET_KEY_LENGTH:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == WEBSOCKET_KEY_BYTES
    except ValueError:
        return False


class _McpSocketServer(Server):
    def choose_subprotocol(self, request: Any) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in request.subprotocols else None


class _SocketChannel:
    """A Channel over the socket; sends from the request threads are serialised."""

    def __init__(self, ws: Server) -> None:
        self._ws = ws
        self._lock = threading.Lock()
        self._revoked = False

    def claim_revocation(self) -> bool:
        """True only for the first caller: the socket's loop and its request threads may all
        notice one revocation, and it is closed and audited once."""
        with self._lock:
            first, self._revoked = not self._revoked, True
        return first

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            try:
                self._ws.send(dumps(message).decode("ascii"))
            except (ConnectionClosed, OSError):
                pass  # the peer is gone; the read loop notices and ends

    def close(self, code: int, reason: str) -> None:
        with self._lock:
            try:
                self._ws.close(code, reason)
            except (ConnectionClosed, OSError):
                pass


class WebSocketTransport:
    """Accept admitted upgrade requests and serve MCP on the socket."""

    def __init__(
        self,
        server: McpServer,
        principal_is_current: Callable[..., bool],
        *,
        sessions: SessionStore,
        max_sockets: int,
        max_message_bytes: int,
        ping_interval: float,
        idle_timeout: float,
        shutdown: threading.Event,
        listens: Listens,
        max_calls: int = DEFAULT_MAX_STREAMS,
        clock: Callable[[], float] = time.monotonic,
        same_view_for_all: bool = False,
    ) -> None:
        self.server = server
        # subscriptions/listen on sockets (2026-07-28): the HTTP transport's, so one budget counts both.
        self.listens = listens
        # No token can have a scope: stateless lists may be cached as "public" (mcp.handlers_modern).
        self.same_view_for_all = same_view_for_all
        # The one registry of live sessions: each socket's session is in it while the socket is open.
        self.sessions = sessions
        # Monotonic seconds for the idle timeout (and the sockets' sessions); injectable for tests.
        self._clock = clock
        self.principal_is_current = principal_is_current
        self.max_message_bytes = max_message_bytes
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.shutdown = shutdown
        # Open sockets, and the threads running their requests, each with a per-token
        # share (half), so one token cannot take every socket or every thread. Request
        # threads of all sockets are counted together: a socket that closes leaves its
        # calls running (until they end or notice the session closed), so the
        # per-socket bound alone does not bound threads.
        self.sockets = Capacity("open WebSocket connections", max_sockets, retry_after=SOCKET_RETRY_AFTER_SECONDS)
        self.calls = Capacity("WebSocket requests in flight", max_calls)
        self._open: set[_SocketChannel] = set()
        self._open_lock = threading.Lock()
        self._going_away = False  # close_all has run: the server is stopping

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any], admission: Admission) -> Any:
        self._check_handshake(environ)
        # Before the handshake: a client past the total or its token's share gets a
        # plain 503 (CapacityExhausted is one) and never an open socket.
        with self.sockets.acquire(principal_key(admission.principal)):
            ws = _McpSocketServer.accept(
                environ,
                subprotocols=[SUBPROTOCOL],
                max_message_size=self.max_message_bytes,
                ping_interval=self.ping_interval or None,
            )
            channel = _SocketChannel(ws)
            with self._open_lock:
                self._open.add(channel)
                going_away = self._going_away
            try:
                if going_away:  # stopping began during the handshake: close_all passed this socket by
                    channel.close(CLOSE_GOING_AWAY, "server shutting down")
                else:
                    self._serve(ws, channel, admission)
            finally:
                with self._open_lock:
                    self._open.discard(channel)
        return finish_upgraded_request(environ)

    def close_all(self) -> None:
        """Server shutdown: close every open socket with 1001, and from now on each one whose
        handshake completes (a client that connected just before the stop, say)."""
        with self._open_lock:
            self._going_away = True
            channels = list(self._open)
        for channel in channels:
            channel.close(CLOSE_GOING_AWAY, "server shutting down")

    @staticmethod
    def _check_handshake(environ: dict[str, Any]) -> None:
        if "upgrade" not in (environ.get("HTTP_CONNECTION") or "").lower():
            raise BadRequest("A WebSocket upgrade needs 'Connection: Upgrade'")
        if (environ.get("HTTP_SEC_WEBSOCKET_VERSION") or "").strip() != "13":
            raise BadRequest("Unsupported WebSocket version; use 13", headers=[("Sec-WebSocket-Version", "13")])
        if (environ.get("HTTP_UPGRADE") or "").strip().lower() != "websocket":
            # Two Upgrade lines arrive joined ("websocket, h2c"): the handshake library would fail on them.
            raise BadRequest("A WebSocket upgrade needs exactly one 'Upgrade: websocket' header")
        key = (environ.get("HTTP_SEC_WEBSOCKET_KEY") or "").strip()
        if not key:
            raise BadRequest("The WebSocket upgrade is missing Sec-WebSocket-Key")
        if not _is_websocket_key(key):
            # RFC 6455 section 4.1: one header, a random 16-byte value in base64 (two lines arrive joined).
            raise BadRequest("Sec-WebSocket-Key must be one base64-encoded 16-byte value")
        if SUBPROTOCOL not in requested_subprotocols(environ):
            raise BadRequest(
                f"Request the WebSocket subprotocol '{SUBPROTOCOL}' (Sec-WebSocket-Protocol: {SUBPROTOCOL})"
            )
        if "werkzeug.socket" not in environ and "gunicorn.socket" not in environ:
            raise BadRequest("WebSocket is not available under this WSGI server; use the built-in server or gunicorn")

    def _serve(self, ws: Server, channel: _SocketChannel, admission: Admission) -> None:
        # In the registry until it closes (below), so notifications reach this socket.
        session = self.sessions.register(Session(admission.principal, channel, clock=self._clock))
        call = Call(
            session,
            admission.principal,
            channel,
            str(admission.client_address),
            self.principal_is_current,
            same_view_for_all=self.same_view_for_all,
        )
        # One key for the whole socket: the bound is per socket, not per token.
        in_flight = Capacity(
            "requests in flight", MAX_CONCURRENT_REQUESTS, MAX_CONCURRENT_REQUESTS, scope="on this socket"
        )
        last_activity = self._clock()
        try:
            while not self.shutdown.is_set():
                try:
                    data = ws.receive(timeout=min(RECEIVE_POLL_SECONDS, self.idle_timeout))
                except ConnectionClosed:
                    return
                if data is None:
                    if not ws.connected:
                        return
                    if session.closed.is_set():
                        # Ended by what serves it (a stdio bridge whose child ended): the client starts over.
                        channel.close(CLOSE_SESSION_ENDED, "the session ended; connect again")
                        return
                    # The second lock also between messages: a revoked token's socket
                    # stops receiving notifications within a poll interval.
                    if not call.is_current():
                        self._answer(Revoked(), call, channel)
                        return
                    if session.in_flight or self.listens.has_open(session):
                        last_activity = self._clock()  # a long call, or a client listening, is not idleness
                    elif self._clock() - last_activity >= self.idle_timeout:
                        channel.close(CLOSE_NORMAL, "idle timeout")
                        return
                    continue
                last_activity = self._clock()
                if isinstance(data, (bytes, bytearray)):
                    channel.close(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported: send JSON-RPC as text")
                    return
                # The second lock, per message: a revoked token is done here.
                if not call.is_current():
                    self._answer(Revoked(), call, channel)
                    return
                if not self._handle_frame(data, call, channel, in_flight):
                    return
        finally:
            self.listens.end_socket(session)  # its listens end with it, and give their places back
            session.close()  # handlers waiting on the client give up; it leaves the registry
            # The loop may notice shutdown before close_all() reaches this socket: it is still 1001.
            if self.shutdown.is_set():
                channel.close(CLOSE_GOING_AWAY, "server shutting down")
            else:
                channel.close(CLOSE_NORMAL, "")

    def _handle_frame(self, data: str, call: Call, channel: _SocketChannel, in_flight: Capacity) -> bool:
        """Handle one text frame; False when the socket must close."""
        try:
            message: Message = parse_message(data)
        except JsonRpcError as exc:
            channel.send(exc.to_message().to_dict())
            return True
        if isinstance(message, Notification):
            if not self.listens.cancel(call.session, message):  # ending a listen, or for the dispatcher
                self.server.handle_notification(message, call)
        elif isinstance(message, Request):
            if says_modern(message.params):
                # Stateless (2026-07-28): the envelope is this message's own; no header rungs on a socket.
                try:
                    call = replace(call, modern=modern_request(message, None))
                except JsonRpcError as exc:
                    channel.send(exc.to_message().to_dict())
                    return True
                if message.method == LISTEN_METHOD:
                    return self._listen(message, call, channel)
            elif message.method == "initialize":
                return self._run_request(message, call, channel)  # in order: later requests depend on it
            try:
                slot = self._take_call(in_flight, call)
            except CapacityExhausted as busy:
                # Refuse rather than wait: this thread must keep reading, since the
                # requests in flight may be waiting for the client's answers.
                reply = ErrorResponse(message.id, SERVER_BUSY, busy.message, {"retryAfter": busy.retry_after})
                channel.send(reply.to_dict())
                return True
            try:
                # Daemon threads: a handler stuck in user code cannot hold up the process's exit.
                threading.Thread(
                    target=self._run_counted, args=(message, call, channel, slot), name="mcp-ws-call", daemon=True
                ).start()
            except RuntimeError:  # the OS refused a thread: nothing would give the places back
                slot.release()
                reply = ErrorResponse(message.id, SERVER_BUSY, "The server cannot start another thread now; try again")
                channel.send(reply.to_dict())
        else:
            # The client's answer to a sampling/elicitation/roots request: wake the waiting handler.
            call.session.replies.deliver(message)
        return True

    def _listen(self, request: Request, call: Call, channel: _SocketChannel) -> bool:
        """Open a listen on this socket (`mcp_auth.listen`); a refusal is a JSON-RPC error on the socket."""
        try:
            self.listens.open_socket(request, call, channel, lambda: self._answer(Revoked(), call, channel))
        except JsonRpcError as exc:
            channel.send(exc.to_message().to_dict())
        except PrincipalRevoked:
            return self._answer(Revoked(request.id), call, channel)
        except (CapacityExhausted, ShuttingDown) as busy:
            # The same refusal as a request past this socket's budget.
            reply = ErrorResponse(request.id, SERVER_BUSY, busy.message, {"retryAfter": busy.retry_after})
            channel.send(reply.to_dict())
        return True

    def _take_call(self, in_flight: Capacity, call: Call) -> Slot:
        """A place on this socket and in the token's share of request threads, or CapacityExhausted."""
        on_socket = in_flight.acquire(None)
        try:
            slot = self.calls.acquire(principal_key(call.principal))
        except CapacityExhausted:
            on_socket.release()
            raise
        slot.also(on_socket.release)
        return slot

    def _run_counted(self, request: Request, call: Call, channel: _SocketChannel, slot: Slot) -> None:
        with slot:  # given back on every path, once
            self._run_request(request, call, channel, slot)

    def _run_request(self, request: Request, call: Call, channel: _SocketChannel, slot: Slot | None = None) -> bool:
        # Every exception is caught in there, once: a bug or SystemExit from a tool cannot kill the socket.
        outcome = self.server.outcome(request, call)
        if slot is not None:
            # Before the answer goes out: a client that sends its next request the
            # moment it has this answer must find the place free.
            slot.release()
        return self._answer(outcome, call, channel)

    def _answer(self, outcome: Outcome, call: Call, channel: _SocketChannel) -> bool:
        """The one place an Outcome becomes WebSocket: a frame, or close 4401 on revocation
        (as HTTP ends its session: the socket's session closes, its handlers are cancelled).
        Audited here, once. False when the socket must close."""
        if isinstance(outcome, Revoked):
            if channel.claim_revocation():
                # Each open listen is told it was torn down, and why, before the socket closes.
                self.listens.end_socket(call.session, REVOKED_REASON)
                # Session and audit first: once the client sees 4401, both are done.
                # A socket's calls always carry the Session `_serve` made for it.
                cast(Session, call.session).close()  # handlers waiting on the client give up; notifications stop
                audit.dispatch_outcome(outcome, call.client_address, call.principal.name)
                channel.close(CLOSE_REVOKED, "token revoked")
            return False
        audit.dispatch_outcome(outcome, call.client_address, call.principal.name)
        if isinstance(outcome, ScopeRefused):
            channel.send(ErrorResponse(outcome.request_id, FORBIDDEN, outcome.reason).to_dict())
        else:
            channel.send(outcome.message())
        return True
