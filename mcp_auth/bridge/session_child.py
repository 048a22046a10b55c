"""The handshake era: one child per session, living exactly as long as the session.

A `SessionChild` is the `LinkOwner` of one session's child. The child's
notifications go to the session (its GET stream or its socket); its requests
to the client (sampling, elicitation, roots) go out on the channel of the call
that is running (or the session's stream), with an id of the front's own, and
the client's answer, which the transport delivers to the session's pending
replies, goes back to the child under the child's id.

Ending, both ways:
- the session ends (DELETE, idle expiry, socket closed, token revoked, front
  stopping): the child is stopped, on a thread of its own (the store may be
  holding its lock while it closes sessions);
- the child ends (crash, exit, garbage on stdout, eviction): its waiting
  requests are answered at once with the reason (`ChildLink`), and the session
  is ended, not restarted behind the client's back (a fresh child would not
  have the state the client built). The session is closed once those answers
  are out (`DEAD_SESSION_CLOSE_SECONDS` after the last call returned; a request
  in between is answered with the reason); from then on the
  session id is unknown (HTTP 404, WebSocket close 1011) and the client starts
  a new session, with a new child.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..mcp.context import CLIENT_REQUEST_TIMEOUT_SECONDS, Channel, McpSession
from ..mcp.jsonrpc import ErrorResponse, JsonRpcError, Notification, Request, Response
from .link import CHILD_UNAVAILABLE, ChildGone, ChildLink
from .scope import may_see_notification

logger = logging.getLogger("mcp_auth.bridge")

# After the child ended and the session's last call returned, the session stays open
# this long so that the transports deliver those calls' error answers; then it closes.
DEAD_SESSION_CLOSE_SECONDS = 10.0
_WAIT_SLICE_SECONDS = 0.25


class SessionChild:
    """One handshake session's child and what flows between them."""

    def __init__(
        self,
        session: McpSession,
        principal: Any,
        make_link: Callable[[SessionChild], ChildLink],
        on_end: Callable[[SessionChild], None],
        *,
        request_timeout: float,
        dead_session_seconds: float = DEAD_SESSION_CLOSE_SECONDS,
    ) -> None:
        self.session = session
        self._dead_session_seconds = dead_session_seconds
        self.principal = principal
        self.request_timeout = request_timeout
        self._on_end = on_end
        self._lock = threading.Lock()
        self._active = 0  # forwarded calls running now (counted by `forward`)
        self._idle = threading.Condition(self._lock)
        self._child_requests: dict[Any, tuple[str, threading.Event]] = {}
        self._ended = False
        self.link = make_link(self)

    # --- calls from the client ------------------------------------------------------

    def forward(self, request: Request, channel: Channel, *, timeout: float | None = None) -> dict[str, Any]:
        """Send the client's request to the child and return its result (or raise its JsonRpcError)."""
        if self.link.gone is not None:
            raise ChildGone(f"{self.link.gone}; this session is over: start a new one (initialize)")
        with self._lock:
            self._active += 1
        # In flight for the session too: a long call keeps an idle session (and socket) from expiring.
        self.session.in_flight.begin(request.id)
        try:
            return self.link.request(
                request.method,
                request.params,
                timeout=self.request_timeout if timeout is None else timeout,
                channel=channel,
                client_id=request.id,
                stop=self._stop_reason,
            )
        finally:
            self.session.in_flight.end(request.id)
            with self._lock:
                self._active -= 1
                self._idle.notify_all()

    def busy(self) -> bool:
        with self._lock:
            return self._active > 0

    def _stop_reason(self) -> str | None:
        return "the session ended" if self.session.closed.is_set() else None

    # --- LinkOwner: what the child sends -------------------------------------------------

    def push(self, message: dict[str, Any]) -> None:
        if may_see_notification(message, self.principal) and not self.session.closed.is_set():
            self.session.push(message)

    def child_request(self, link: ChildLink, request: Request, channel: Channel | None) -> None:
        """Ask the client on the child's behalf; the answer (or why there is none) goes back to the child."""
        session = self.session
        try:
            front_id, pending = session.replies.expect_reply()
        except RuntimeError as exc:
            link.respond(request.id, ErrorResponse(request.id, CHILD_UNAVAILABLE, str(exc)))
            return
        withdrawn = threading.Event()
        with self._lock:
            self._child_requests[request.id] = (front_id, withdrawn)
        try:
            outgoing = Request(front_id, request.method, request.params).to_dict()
            (channel.send if channel is not None else session.push)(outgoing)
            waited = 0.0
            while not pending.answered.wait(_WAIT_SLICE_SECONDS):
                waited += _WAIT_SLICE_SECONDS
                if withdrawn.is_set() or session.closed.is_set() or link.gone is not None:
                    return
                if waited >= CLIENT_REQUEST_TIMEOUT_SECONDS:
                    session.push(Notification("notifications/cancelled", {"requestId": front_id}).to_dict())
                    message = f"the client did not answer {request.method} in {CLIENT_REQUEST_TIMEOUT_SECONDS:g} s"
                    link.respond(request.id, ErrorResponse(request.id, CHILD_UNAVAILABLE, message))
                    return
            reply = pending.reply
            if isinstance(reply, (Response, ErrorResponse)):
                link.respond(request.id, reply)
        finally:
            session.replies.forget_reply(front_id)
            with self._lock:
                self._child_requests.pop(request.id, None)

    def child_cancelled(self, link: ChildLink, request_id: Any) -> None:
        with self._lock:
            entry = self._child_requests.get(request_id) if isinstance(request_id, (str, int)) else None
        if entry is None:
            return
        front_id, withdrawn = entry
        withdrawn.set()
        self.session.push(Notification("notifications/cancelled", {"requestId": front_id}).to_dict())

    def child_gone(self, link: ChildLink, reason: str) -> None:
        self._end()
        if not self.session.closed.is_set():
            self.end_session_soon()

    # --- ending ------------------------------------------------------------------------

    def end_session_soon(self) -> None:
        """Close the session once its calls' answers are out (see the module docstring)."""

        def close_when_answered() -> None:
            with self._lock:
                self._idle.wait_for(lambda: self._active == 0)
            if not self.session.closed.wait(self._dead_session_seconds):
                self.session.close()

        threading.Thread(target=close_when_answered, name="mcp-bridge-end-session", daemon=True).start()

    def session_closed(self) -> None:
        """The session ended: stop the child (on this thread; callers use a thread of their own)."""
        self.link.stop()
        self._end()

    def _end(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._on_end(self)


def initialize_error(exc: Exception) -> JsonRpcError:
    """Why a child could not be started, as the client's answer to initialize."""
    return JsonRpcError(CHILD_UNAVAILABLE, f"the stdio server could not be started: {exc}")
