"""JSON-RPC with one stdio child: requests out with ids of our own, everything the child says routed back.

A `ChildLink` speaks for whoever owns the child (a handshake session, or a
token's pool in the stateless revision: its `LinkOwner`). The ids the child
sees are the link's own integers, never a client's: two clients' ids can never
meet in one child, and a client cannot answer or cancel a request by guessing
the child's numbering. What the child sends is routed here:

- a response: to the request waiting for it;
- `notifications/progress`: to the channel of the request whose progress token
  it names (the client's token is passed through unchanged);
- `notifications/message` (logs): to the oldest request in flight, so a log
  written before an answer arrives before it; outside any request, to the owner;
- its own requests (sampling, elicitation, roots) and its cancellations of them:
  to the owner, which asks the client (`ping` is answered here);
- other notifications (list changed, resource updated): to the owner.

Anything that is not one JSON-RPC message per line ends the child: a stdio
server that prints a banner to stdout would otherwise corrupt every answer
after it. When the child ends, for whatever reason, every waiting request is
answered at once with an error that says why (`ChildGone`), and the owner is
told (`LinkOwner.child_gone`).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..mcp.call import Channel
from ..mcp.jsonrpc import (
    REQUEST_CANCELLED,
    ErrorResponse,
    JsonRpcError,
    Notification,
    Request,
    Response,
    dumps,
    parse_message,
)
from .command import StdioCommand
from .process import ChildProcess, _escape

logger = logging.getLogger("mcp_auth.bridge")

# The JSON-RPC error a client gets when the child is gone or silent: "server error" range.
CHILD_UNAVAILABLE = -32000
# How much of a line that is not JSON-RPC the log shows (escaped): enough to recognise a banner.
MAX_GARBAGE_EXCERPT = 200
# Waiting threads wake this often to notice a cancelled call or a closed session.
_WAIT_SLICE_SECONDS = 0.25


class ChildGone(JsonRpcError):
    """The child ended (crashed, exited, wrote garbage, or was stopped) while or before a request waited."""

    def __init__(self, reason: str) -> None:
        super().__init__(CHILD_UNAVAILABLE, reason)


class LinkOwner(Protocol):
    """Who a child works for: where its messages outside a request go, and who hears that it ended."""

    def push(self, message: dict[str, Any]) -> None:
        """A notification outside any request (list changed, resource updated, a log between calls)."""

    def child_request(self, link: ChildLink, request: Request, channel: Channel | None) -> None:
        """The child asks the client something; answer with `link.respond`. Called on its own thread."""

    def child_cancelled(self, link: ChildLink, request_id: Any) -> None:
        """The child withdrew one of its own requests."""

    def child_gone(self, link: ChildLink, reason: str) -> None:
        """The child ended; `reason` is a sentence for the client and the log."""


@dataclass(eq=False)
class _Waiting:
    """A request sent to the child, waiting for its answer."""

    method: str
    client_id: Any
    channel: Channel | None
    progress_token: Any
    answered: threading.Event = field(default_factory=threading.Event)
    reply: Response | ErrorResponse | None = None


@dataclass(eq=False)
class Pending:
    """A request of ours the child has not answered yet."""

    child_id: int
    waiting: _Waiting


class ChildLink:
    """One child process and the JSON-RPC conversation with it. Thread-safe."""

    def __init__(self, command: StdioCommand, label: str, owner: LinkOwner, *, grace_seconds: float) -> None:
        self.command = command
        self.label = label
        self._owner = owner
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiting] = {}
        self._progress: dict[Any, Channel] = {}
        self.gone: str | None = None
        self._gone_event = threading.Event()
        self._started = threading.Event()
        self.process = ChildProcess(
            command.argv, command.env, label, self._on_line, self._on_exit, cwd=command.cwd, grace_seconds=grace_seconds
        )
        self.pid = self.process.pid
        self._started.set()

    # --- to the child ---------------------------------------------------------------

    def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        timeout: float,
        channel: Channel | None = None,
        client_id: Any = None,
        stop: Callable[[], str | None] = lambda: None,
    ) -> dict[str, Any]:
        """Send a request and wait for its result; JsonRpcError for the child's error answer, ChildGone when
        it ends, a -32000 error after `timeout` seconds (the child is told to cancel), REQUEST_CANCELLED when
        `stop()` returns a reason (the call was cancelled, its session ended)."""
        pending = self.begin(method, params, channel=channel, client_id=client_id)
        try:
            result = self.wait(pending, timeout=timeout, stop=stop)
        finally:
            self.end(pending)
        assert result is not None
        return result

    def begin(self, method: str, params: dict[str, Any], *, channel: Channel | None, client_id: Any) -> Pending:
        """Send a request; its answer is awaited with `wait` and forgotten with `end` (a stateless round
        may wait for it over several client requests)."""
        child_id = next(self._ids)
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        waiting = _Waiting(method, client_id, channel, token)
        with self._lock:
            if self.gone is not None:
                raise ChildGone(self.gone)
            self._waiting[child_id] = waiting
            if token is not None and channel is not None and isinstance(token, (str, int)):
                self._progress[token] = channel
        pending = Pending(child_id, waiting)
        # params always present: some servers do not answer a request without them.
        line = dumps({"jsonrpc": "2.0", "id": child_id, "method": method, "params": params})
        if not self.process.send(line):
            self._gone_event.wait(_WAIT_SLICE_SECONDS * 8)
            self.end(pending)
            raise ChildGone(self.gone or f"the stdio server {self.label} closed its input")
        return pending

    def rebind(self, pending: Pending, channel: Channel | None, client_id: Any) -> None:
        """A later client request now waits for `pending` (the retry of a stateless round)."""
        with self._lock:
            pending.waiting.channel = channel
            pending.waiting.client_id = client_id
            token = pending.waiting.progress_token
            if token is not None and channel is not None and isinstance(token, (str, int)):
                self._progress[token] = channel

    def wait(
        self,
        pending: Pending,
        *,
        timeout: float,
        stop: Callable[[], str | None] = lambda: None,
        wake: threading.Event | None = None,
    ) -> dict[str, Any] | None:
        """The result of `pending` (errors as in `request`), or None as soon as `wake` is set (still pending)."""
        waiting, method = pending.waiting, pending.waiting.method
        waited = 0.0
        while not waiting.answered.wait(_WAIT_SLICE_SECONDS):
            if wake is not None and wake.is_set():
                return None
            waited += _WAIT_SLICE_SECONDS
            reason = stop()
            if reason is not None:
                self.notify("notifications/cancelled", {"requestId": pending.child_id, "reason": reason})
                raise JsonRpcError(REQUEST_CANCELLED, reason)
            if waited >= timeout:
                self.notify("notifications/cancelled", {"requestId": pending.child_id, "reason": "timed out"})
                raise JsonRpcError(
                    CHILD_UNAVAILABLE,
                    f"the stdio server did not answer {method} within {timeout:g} seconds; the request was "
                    "cancelled (the server may be stuck: end the session to restart it)",
                )
        reply = waiting.reply
        if isinstance(reply, ErrorResponse):
            if reply.code == CHILD_UNAVAILABLE and self.gone is not None and reply.message == self.gone:
                raise ChildGone(self.gone)
            raise JsonRpcError(reply.code, reply.message, reply.data)
        assert isinstance(reply, Response)
        return reply.result

    def end(self, pending: Pending) -> None:
        """Forget `pending` (answered, failed, or given up)."""
        with self._lock:
            self._waiting.pop(pending.child_id, None)
            token = pending.waiting.progress_token
            if token is not None and self._progress.get(token) is pending.waiting.channel:
                self._progress.pop(token, None)

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.process.send(dumps(Notification(method, params or {})))

    def cancel_client_request(self, client_id: Any, reason: str | None) -> bool:
        """The client cancelled its request `client_id`: tell the child, end the wait; False if none waits."""
        with self._lock:
            found = [(cid, w) for cid, w in self._waiting.items() if w.client_id == client_id]
        for child_id, waiting in found:
            params: dict[str, Any] = {"requestId": child_id}
            if reason:
                params["reason"] = reason
            self.notify("notifications/cancelled", params)
            waiting.reply = ErrorResponse(None, REQUEST_CANCELLED, "the client cancelled the request")
            waiting.answered.set()
        return bool(found)

    def respond(self, request_id: Any, reply: Response | ErrorResponse) -> None:
        """Answer one of the child's own requests (with the child's id)."""
        if isinstance(reply, Response):
            self.process.send(dumps(Response(request_id, reply.result)))
        else:
            self.process.send(dumps(ErrorResponse(request_id, reply.code, reply.message, reply.data)))

    def stop(self) -> None:
        """End the child (SIGTERM, then SIGKILL after the grace period); waiting requests get ChildGone."""
        self._mark_gone(f"the stdio server {self.label} was stopped")
        self.process.stop()

    def _stop_process(self) -> None:
        self._started.wait()  # the child may write garbage before its constructor returned
        self.process.stop()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._waiting)

    # --- from the child -----------------------------------------------------------------

    def _on_line(self, line: bytes) -> None:
        try:
            message = parse_message(line)
        except JsonRpcError:
            excerpt = _escape(line[:MAX_GARBAGE_EXCERPT].decode("utf-8", "replace"))
            logger.warning("stdio server %s wrote something that is not JSON-RPC: %s", self.label, excerpt)
            self._mark_gone(
                f"the stdio server {self.label} wrote something that is not JSON-RPC to its standard output "
                "(it must write only JSON-RPC messages there; logs belong on standard error)"
            )
            # Stopped from another thread: this one must keep draining stdout until EOF.
            threading.Thread(target=self._stop_process, name="mcp-bridge-stop", daemon=True).start()
            return
        if isinstance(message, (Response, ErrorResponse)):
            self._on_reply(message)
        elif isinstance(message, Request):
            if message.method == "ping":
                self.respond(message.id, Response(message.id, {}))
                return
            channel = self._oldest_channel()
            threading.Thread(
                target=self._owner.child_request,
                args=(self, message, channel),
                name="mcp-bridge-child-request",
                daemon=True,
            ).start()
        else:
            self._on_notification(message)

    def _on_reply(self, reply: Response | ErrorResponse) -> None:
        with self._lock:
            waiting = self._waiting.get(reply.id) if isinstance(reply.id, int) else None
        if waiting is None:
            logger.debug("stdio server %s answered a request nobody waits for", self.label)
            return
        waiting.reply = reply
        waiting.answered.set()

    def _on_notification(self, note: Notification) -> None:
        message = note.to_dict()
        if note.method == "notifications/progress":
            token = note.params.get("progressToken")
            with self._lock:
                channel = self._progress.get(token) if isinstance(token, (str, int)) else None
            if channel is not None:
                channel.send(message)
            return  # progress for a request that ended (or never asked for it): nobody to tell
        if note.method == "notifications/cancelled":
            self._owner.child_cancelled(self, note.params.get("requestId"))
            return
        if note.method == "notifications/message":
            channel = self._oldest_channel()
            if channel is not None:
                channel.send(message)
                return
        self._owner.push(message)

    def _oldest_channel(self) -> Channel | None:
        with self._lock:
            for waiting in self._waiting.values():  # insertion order: the oldest first
                if waiting.channel is not None:
                    return waiting.channel
        return None

    def _on_exit(self, reason: str) -> None:
        self._mark_gone(f"the stdio server {self.label} ended: {reason}")
        if self.process.returncode not in (0, None, -15):
            logger.warning("stdio server %s ended: %s", self.label, reason)
        self._owner.child_gone(self, self.gone or reason)

    def _mark_gone(self, reason: str) -> None:
        """From now on every request fails with `reason`; those waiting are answered now."""
        with self._lock:
            if self.gone is None:
                self.gone = reason
            waiting = list(self._waiting.values())
        self._gone_event.set()
        for each in waiting:
            if each.reply is None:
                each.reply = ErrorResponse(None, CHILD_UNAVAILABLE, self.gone or reason)
                each.answered.set()
