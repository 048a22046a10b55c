"""The bridge's dispatcher: the transports' `Dispatcher`, answered by stdio children instead of a registry.

It plugs into the same place as an `McpServer`'s dispatcher, so the whole
pipeline (steps 1-6 in the guard and the transports) runs unchanged before
anything reaches a child. Here is step 7 for the bridge: the principal must
still be current, and its scope must allow the call (`scope.refusal`) before
the call is forwarded; the child's lists come back filtered (`scope.visible`).

Handshake era: `initialize` starts the session's own child (within the
`ChildBudget`), forwards the client's initialize to it and answers with the
child's result; the child lives as long as the session (`SessionChild`).
Stateless era (`Call.modern`): `server/discover` is answered here from what the
startup check learned; every other request is served by a child of the token's
pool (`pool`, `stateless`), the same budget bounding both eras.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from .. import audit
from ..capacity import principal_key
from ..mcp.call import Call, McpSession
from ..mcp.dispatch import Dispatcher
from ..mcp.jsonrpc import INVALID_REQUEST, REQUEST_CANCELLED, JsonRpcError, Notification, Request
from ..mcp.outcome import (
    TOOL_CANCELLED,
    TOOL_ERROR,
    TOOL_OK,
    Answered,
    Crashed,
    Failed,
    Outcome,
    Revoked,
    ScopeRefused,
    ToolCallRecord,
)
from ..mcp.protocol import HANDSHAKE_PROTOCOL_VERSIONS
from ..mcp.registry import Registry
from ..mcp.results import MAX_CLIENT_FIELDS, MAX_CLIENT_STRING, _bounded_strings
from . import scope
from .budget import ChildBudget, Place
from .command import StdioCommand
from .link import CHILD_UNAVAILABLE, ChildLink
from .pool import Pools
from .process import STOP_GRACE_SECONDS
from .session_child import DEAD_SESSION_CLOSE_SECONDS, SessionChild
from .stateless import StatelessBridge

logger = logging.getLogger("mcp_auth.bridge")

# A child has this long to answer initialize (an `npx` command may download its package first).
INITIALIZE_TIMEOUT_SECONDS = 60.0
# A forwarded request waits this long for the child's answer; then the child is told to
# cancel it and the client gets an error. Long tool calls are normal; a stuck child is not.
REQUEST_TIMEOUT_SECONDS = 300.0
# Client notifications the child gets (cancellation is translated, initialized confirmed too).
_FORWARDED_NOTIFICATIONS = frozenset(
    {"notifications/initialized", "notifications/roots/list_changed", "notifications/progress"}
)

# A pooled child's notifications that reach its token's listens: method -> the kind of list.
_LIST_CHANGED = {f"notifications/{kind}/list_changed": kind for kind in ("tools", "prompts", "resources")}


class BridgeDispatcher(Dispatcher):
    """Answers MCP requests by forwarding them to per-session stdio children, scope first."""

    def __init__(
        self,
        command: StdioCommand,
        *,
        name: str,
        version: str,
        instructions: str | None = None,
        budget: ChildBudget | None = None,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        initialize_timeout: float = INITIALIZE_TIMEOUT_SECONDS,
        grace_seconds: float = STOP_GRACE_SECONDS,
        dead_session_seconds: float = DEAD_SESSION_CLOSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(Registry(), audit, name, version, instructions)
        self.command = command
        self.budget = budget if budget is not None else ChildBudget()
        self.request_timeout = request_timeout
        self.initialize_timeout = initialize_timeout
        self.grace_seconds = grace_seconds
        self.dead_session_seconds = dead_session_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._children: dict[McpSession, SessionChild] = {}
        self._places: dict[SessionChild, Place] = {}
        self._numbers = itertools.count(1)
        self._closed = False
        # What the child said it offers (the startup check), for server/discover.
        self.child_capabilities: dict[str, Any] = {}
        self.pools = Pools(
            command,
            self.budget,
            grace_seconds=grace_seconds,
            initialize_timeout=initialize_timeout,
            clock=clock,
            notify=self._pooled_notification,
        )
        self.stateless = StatelessBridge(
            self.pools, request_timeout=request_timeout, server_info=self._server_info, clock=clock
        )

    # --- what transports call ------------------------------------------------------

    def may_send_before_answer(self, request: Request) -> bool:
        """Any forwarded request may bring progress, logs or the child's own requests before its answer."""
        return True

    def outcome(self, request: Request, call: Call) -> Outcome:
        record: ToolCallRecord | None = None
        try:
            if not call.is_current():
                return Revoked(request.id)
            if call.modern is not None:
                return self._modern(request, call)
            if request.method == "initialize":
                return Answered(request.id, self._start_child(request, call))
            child = self._child_of(call.session)
            if child is None:
                raise JsonRpcError(INVALID_REQUEST, "Send initialize before other requests")
            refused = scope.refusal(request, call.principal)
            if refused is not None:
                return ScopeRefused(request.id, refused)
            if request.method == "tools/call":
                record = ToolCallRecord(str(request.params.get("name")), TOOL_ERROR)
            self._touch(child)
            result = child.forward(request, call.channel)
            if request.method == "logging/setLevel" and isinstance(request.params.get("level"), str):
                call.session.state.set_log_level(request.params["level"])
            if record is not None:
                record = ToolCallRecord(record.tool, TOOL_ERROR if result.get("isError") else TOOL_OK)
            return Answered(request.id, scope.visible(request.method, result, call.principal), record)
        except JsonRpcError as exc:
            if record is not None and exc.code == REQUEST_CANCELLED:
                record = ToolCallRecord(record.tool, TOOL_CANCELLED)
            return Failed.of(exc, request.id, record)
        except BaseException:  # the answering thread must not die, nor wait forever
            logger.exception("unexpected error forwarding %s", audit.escape_controls(request.method))
            return Crashed(request.id)

    def _modern(self, request: Request, call: Call) -> Outcome:
        """A stateless-era request: discovery here, the rest from the token's pool (`stateless`); the
        revision's envelope (resultType, serverInfo, caching hints) added as for any dispatcher."""
        if request.method == "server/discover":
            discovered = {**self._discover(request, call), "capabilities": self.child_capabilities}
            return Answered(request.id, self._modern_result(request.method, discovered, call))
        refused = scope.refusal(request, call.principal)
        if refused is not None:
            return ScopeRefused(request.id, refused)
        record = ToolCallRecord(str(request.params.get("name")), TOOL_ERROR) if request.method == "tools/call" else None
        result = self.stateless.answer(request, call, call.channel)
        if result.get("resultType") != "input_required":
            result = scope.visible(request.method, result, call.principal)
            if record is not None:
                record = ToolCallRecord(record.tool, TOOL_ERROR if result.get("isError") else TOOL_OK)
        return Answered(request.id, self._modern_result(request.method, result, call), record)

    def _pooled_notification(self, owner: Hashable, message: dict[str, Any]) -> None:
        """A pooled child's list-changed or resource-updated, for the open listens of its token only.

        Children are per token, so another token's listens never hear of them.
        Each listen's honoured filter does the rest: a kind the token's scope
        has no pattern for, or a URI outside it, was never honoured and is never
        delivered (`honoured_filter`, with `_may_read` below). Anything else a
        child says between requests (a log line) has nobody to go to.
        """
        method = message.get("method")
        params = message.get("params")
        kind = _LIST_CHANGED.get(method) if isinstance(method, str) else None
        if kind is not None:
            self.subscriptions.list_changed(kind, owner)
        elif method == "notifications/resources/updated" and isinstance(params, dict):
            uri = params.get("uri")
            if isinstance(uri, str):
                self.subscriptions.resource_updated(uri, owner)

    def _may_read(self, uri: str, request: Request, call: Call) -> bool:
        """Whether a listen may name `uri`: the token's scope decides (the child knows its resources; the
        front has no registry to look them up in)."""
        return call.principal.may_use(uri, "resource")

    def handle_notification(self, notification: Notification, call: Call) -> None:
        if not call.is_current():
            return  # step 7 for notifications: a revoked principal changes nothing
        child = self._child_of(call.session)
        if child is None:
            return
        method = notification.method
        if method == "notifications/cancelled":
            request_id = notification.params.get("requestId")
            reason = notification.params.get("reason")
            if isinstance(request_id, (str, int)):
                child.link.cancel_client_request(request_id, reason if isinstance(reason, str) else None)
            return
        if method == "notifications/initialized":
            call.session.state.confirm_initialized()
        if method in _FORWARDED_NOTIFICATIONS:
            child.link.notify(method, notification.params)

    def close(self) -> None:
        """Stop every child (SIGTERM, SIGKILL after the grace period), all at once; then the async loop."""
        with self._lock:
            self._closed = True
            children = list(self._children.values())
        stoppers = [threading.Thread(target=child.session_closed, daemon=True) for child in children]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(self.grace_seconds + 5)
        with self._lock:
            self._children.clear()
        self.stateless.close()
        self.pools.close()
        super().close()

    # --- children ----------------------------------------------------------------------

    def children(self) -> list[SessionChild]:
        with self._lock:
            return list(self._children.values())

    def _child_of(self, session: McpSession) -> SessionChild | None:
        with self._lock:
            return self._children.get(session)

    def _touch(self, child: SessionChild) -> None:
        with self._lock:
            place = self._places.get(child)
        if place is not None:
            place.last_used = self._clock()

    def _start_child(self, request: Request, call: Call) -> dict[str, Any]:
        session = call.session
        with self._lock:
            if self._closed:
                raise JsonRpcError(CHILD_UNAVAILABLE, "the server is shutting down")
            if session in self._children:
                raise JsonRpcError(INVALID_REQUEST, "This session is already initialized")
        holder: list[SessionChild] = []

        def end_holder() -> None:  # evicted for a newer session of the same token
            if holder:
                holder[0].session.close()

        place = self.budget.take(
            principal_key(call.principal),
            busy=lambda: bool(holder) and holder[0].busy(),
            end=end_holder,
            now=self._clock(),
        )
        number = next(self._numbers)
        session_hint = f", session {session.session_id[:8]}" if session.session_id else ", WebSocket"
        label = f"#{number} (token '{call.principal.name}'{session_hint})"
        try:
            child = SessionChild(
                session,
                call.principal,
                lambda owner: ChildLink(self.command, label, owner, grace_seconds=self.grace_seconds),
                self._release,
                request_timeout=self.request_timeout,
                dead_session_seconds=self.dead_session_seconds,
            )
        except OSError as exc:
            self.budget.release(place)
            raise JsonRpcError(
                CHILD_UNAVAILABLE, f"the stdio server '{self.command.display}' could not be started: {exc}"
            ) from None
        holder.append(child)
        with self._lock:
            self._children[session] = child
            self._places[child] = place
        logger.info("started stdio server %s, pid %d", label, child.link.pid)
        self._on_session_close(session, child)
        try:
            result = child.forward(request, call.channel, timeout=self.initialize_timeout)
            version = result.get("protocolVersion")
            if version not in HANDSHAKE_PROTOCOL_VERSIONS:
                raise JsonRpcError(
                    CHILD_UNAVAILABLE,
                    f"the stdio server answered with protocol version {version!r}, which this front does not "
                    f"serve ({', '.join(HANDSHAKE_PROTOCOL_VERSIONS)})",
                )
            capabilities = request.params.get("capabilities")
            client_capabilities: dict[str, Any] = {
                name: True
                for name in (list(capabilities)[:MAX_CLIENT_FIELDS] if isinstance(capabilities, dict) else [])
                if isinstance(name, str) and len(name) <= MAX_CLIENT_STRING
            }
            session.state.negotiate(version, _bounded_strings(request.params.get("clientInfo")), client_capabilities)
            return result
        except BaseException:
            # No half-made session: the transport forgets it (it is not negotiated), a WebSocket
            # client may send initialize again, and this child stops.
            with self._lock:
                if self._children.get(session) is child:
                    del self._children[session]
            threading.Thread(target=child.session_closed, name="mcp-bridge-stop", daemon=True).start()
            raise

    def _on_session_close(self, session: McpSession, child: SessionChild) -> None:
        """Stop the child when the session ends; on a thread, since the closer may hold the store's lock."""

        def end() -> None:
            child.session_closed()
            with self._lock:
                if self._children.get(session) is child:
                    del self._children[session]

        def stop_child(_session: Any = None) -> None:
            threading.Thread(target=end, name="mcp-bridge-stop", daemon=True).start()

        on_close = getattr(session, "on_close", None)
        if on_close is not None:
            on_close(stop_child)
            return

        def watch() -> None:
            session.closed.wait()
            end()

        threading.Thread(target=watch, name="mcp-bridge-watch", daemon=True).start()

    def _release(self, child: SessionChild) -> None:
        """The child ended: its place is free (the session keeps its entry, answering why, until it closes)."""
        with self._lock:
            place = self._places.pop(child, None)
        if place is not None:
            self.budget.release(place)
