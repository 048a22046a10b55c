"""What a handler sees of its call: `Context` (plain functions) and `AsyncContext` (`async def`).

What a transport hands the dispatcher with each message (`Call`, and the
session protocols it refers to) is in `mcp_auth.mcp.call`, re-exported here.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..auth.tokens.principal import Principal
from .asyncrun import _WAIT_SLICE_SECONDS, _CallThread, _LoopWakingEvent
from .call import Call, Channel, LiveSessions, McpSession, StatelessSession
from .content import text_content
from .jsonrpc import (
    METHOD_NOT_FOUND,
    ErrorResponse,
    Notification,
    Request,
    Response,
)
from .outcome import RequestCancelled
from .protocol import _LOG_RANK, LOG_LEVELS, RESUMABLE_SINCE, protocol_at_least

__all__ = [
    "AsyncContext",
    "Call",
    "Channel",
    "ClientError",
    "Context",
    "LiveSessions",
    "McpSession",
    "StatelessSession",
]


# How long a handler waits for the client to answer a server-to-client request
# (sampling, elicitation, roots) by default: elicitation waits for a person.
CLIENT_REQUEST_TIMEOUT_SECONDS = 300.0


class ClientError(Exception):
    """The client answered a server-to-client request with an error, or cannot be asked."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class _CallContext:
    """What both kinds of context share: who is asking, about which call, and the messages to send."""

    def __init__(self, call: Call, request: Request, cancelled: threading.Event) -> None:
        self._call = call
        self._request = request
        self._cancelled = cancelled
        meta = request.params.get("_meta")
        self.progress_token = meta.get("progressToken") if isinstance(meta, dict) else None

    @property
    def principal(self) -> Principal:
        return self._call.principal

    @property
    def client_address(self) -> str:
        return self._call.client_address

    @property
    def session_id(self) -> str | None:
        return self._call.session.session_id

    @property
    def request_id(self) -> Any:
        return self._request.id

    @property
    def cancelled(self) -> bool:
        """True once the client sent notifications/cancelled for this request."""
        return self._cancelled.is_set()

    def _progress_message(self, progress: float, total: float | None, message: str | None) -> dict[str, Any] | None:
        if self.progress_token is None:
            return None
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        return Notification("notifications/progress", params).to_dict()

    def _log_message(self, level: str, data: Any, logger_name: str | None) -> dict[str, Any] | None:
        if level not in _LOG_RANK:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
        modern = self._call.modern
        # Handshake era: the session's logging/setLevel (none set: everything). Stateless:
        # only what this request's _meta asked for, and nothing when it asked for nothing.
        threshold = self._call.session.state.log_level if modern is None else modern.log_level
        if modern is not None and threshold is None:
            return None
        if threshold is not None and _LOG_RANK[level] < _LOG_RANK[threshold]:
            return None
        params: dict[str, Any] = {"level": level, "data": data}
        if logger_name:
            params["logger"] = logger_name
        return Notification("notifications/message", params).to_dict()

    def _close_stream(self) -> None:
        # A client of an older revision got no priming event, so it could not resume: keep the stream.
        if not protocol_at_least(self._call.session.state.protocol_version, RESUMABLE_SINCE):
            return
        detach = getattr(self._call.channel, "detach", None)
        if detach is not None:
            detach()

    def _require_capability(self, capability: str, method: str) -> None:
        modern = self._call.modern
        state = self._call.session.state
        if not (state.has_capability(capability) if modern is None else modern.supports(capability)):
            raise ClientError(
                METHOD_NOT_FOUND,
                f"the client did not declare the '{capability}' capability, so it cannot answer {method}",
            )

    def _refuse_stateless(self, method: str) -> None:
        # The stateless revision has no server-to-client requests on any stream.
        if self._call.modern is not None:
            raise ClientError(
                METHOD_NOT_FOUND,
                f"{method} cannot be sent to a client of MCP {self._call.modern.protocol_version}: "
                "that revision has no server-to-client requests",
            )

    def _sampling_params(
        self,
        messages: str | list[dict[str, Any]],
        max_tokens: int,
        optional: dict[str, Any],
    ) -> dict[str, Any]:
        self._require_capability("sampling", "sampling/createMessage")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": text_content(messages)}]
        params: dict[str, Any] = {"messages": messages, "maxTokens": max_tokens}
        params.update({k: v for k, v in optional.items() if v is not None})
        return params

    @staticmethod
    def _result_of(reply: Response | ErrorResponse | None) -> dict[str, Any]:
        if isinstance(reply, ErrorResponse):
            raise ClientError(reply.code, reply.message, reply.data)
        assert isinstance(reply, Response)
        return reply.result

    @staticmethod
    def _timed_out(request_id: str) -> dict[str, Any]:
        return Notification("notifications/cancelled", {"requestId": request_id, "reason": "timed out"}).to_dict()


def _refuse_on_event_loop(method: str) -> None:
    """A blocking Context method called from a coroutine would stall every async handler."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"Context.{method} blocks, and this is a coroutine: annotate the parameter AsyncContext "
        f"and write `await ctx.{method}(...)`"
    )


class Context(_CallContext):
    """A handler's view of its call: who is asking, and ways to talk back.

    Declare a parameter annotated `Context` on any tool, resource or prompt
    function to receive it; it is not part of the tool's input schema. A
    plain function gets this Context, whose methods return when they are
    done; an `async def` handler gets an `AsyncContext` (same abilities, awaited).
    """

    def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send notifications/progress, when the client asked for progress."""
        notification = self._progress_message(progress, total, message)
        if notification is not None:
            self._call.channel.send(notification)

    def log(self, level: str, data: Any, logger_name: str | None = None) -> None:
        """Send notifications/message at `level` if logging/setLevel, or a stateless request's logLevel, allows."""
        notification = self._log_message(level, data, logger_name)
        if notification is not None:
            self._call.channel.send(notification)

    def close_stream(self) -> None:
        """End this call's SSE connection now, before the answer (SEP-1699 polling).

        The handler goes on; what it sends next is kept, and the client, told
        by the stream's `retry` field, reconnects with Last-Event-ID and gets
        it. For long calls this frees the connection. No effect on WebSocket.
        """
        self._close_stream()

    # --- asking the client (server-to-client requests) ---------------------

    def request(
        self, method: str, params: dict[str, Any], *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS
    ) -> dict[str, Any]:
        """Send a request to the client on this call's stream and wait for its result.

        Raises ClientError when the client answers with an error, TimeoutError
        when it does not answer in time (the request is then cancelled), and
        RequestCancelled when this call is cancelled while waiting.
        """
        _refuse_on_event_loop("request")
        self._refuse_stateless(method)
        session = self._call.session
        request_id, pending = session.replies.expect_reply()
        try:
            self._call.channel.send(Request(request_id, method, params).to_dict())
            waited = 0.0
            while not pending.answered.wait(_WAIT_SLICE_SECONDS):
                waited += _WAIT_SLICE_SECONDS
                if self._cancelled.is_set() or session.closed.is_set():
                    raise RequestCancelled(f"the call was cancelled while waiting for the client's {method}")
                if waited >= timeout:
                    self._call.channel.send(self._timed_out(request_id))
                    raise TimeoutError(f"the client did not answer {method} within {timeout:g} seconds")
        finally:
            session.replies.forget_reply(request_id)
        return self._result_of(pending.reply)

    def sample(
        self,
        messages: str | list[dict[str, Any]],
        max_tokens: int,
        *,
        system_prompt: str | None = None,
        temperature: float | None = None,
        stop_sequences: list[str] | None = None,
        model_preferences: dict[str, Any] | None = None,
        timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS,
    ) -> dict[str, Any]:
        """Ask the client's model (sampling/createMessage); a str is one user text message."""
        optional = {
            "systemPrompt": system_prompt,
            "temperature": temperature,
            "stopSequences": stop_sequences,
            "modelPreferences": model_preferences,
        }
        params = self._sampling_params(messages, max_tokens, optional)
        return self.request("sampling/createMessage", params, timeout=timeout)

    def elicit(
        self, message: str, requested_schema: dict[str, Any], *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS
    ) -> dict[str, Any]:
        """Ask the user for input (elicitation/create); returns {"action": ..., "content": ...}."""
        self._require_capability("elicitation", "elicitation/create")
        return self.request(
            "elicitation/create", {"message": message, "requestedSchema": requested_schema}, timeout=timeout
        )

    def list_roots(self, *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS) -> list[dict[str, Any]]:
        """The client's roots (roots/list)."""
        self._require_capability("roots", "roots/list")
        roots = self.request("roots/list", {}, timeout=timeout).get("roots", [])
        return roots if isinstance(roots, list) else []

    def debug(self, data: Any) -> None:
        self.log("debug", data)

    def info(self, data: Any) -> None:
        self.log("info", data)

    def warning(self, data: Any) -> None:
        self.log("warning", data)

    def error(self, data: Any) -> None:
        self.log("error", data)


class AsyncContext(_CallContext):
    """The context of an `async def` handler: Context's abilities, awaited.

    `await ctx.report_progress(...)`, `await ctx.info(...)`, `await ctx.sample(...)`,
    `await ctx.elicit(...)`, `await ctx.list_roots()`, `await ctx.request(...)`,
    `await ctx.close_stream()`; `principal`, `client_address`, `session_id`,
    `request_id`, `progress_token` and `cancelled` as on Context. An async
    handler annotated `Context` gets one of these too (the FastMCP habit);
    annotate `AsyncContext` so that a type checker agrees.

    Waiting for the client never blocks the event loop: the coroutine is
    suspended until the answer arrives. Writing to the client (which may block
    on a slow connection) happens on the call's own request thread, so one
    slow client cannot stall the other async handlers. When the call is
    cancelled, what the handler awaits raises asyncio.CancelledError.
    """

    def __init__(self, call: Call, request: Request, cancelled: threading.Event, helper: _CallThread) -> None:
        super().__init__(call, request, cancelled)
        self._helper = helper

    async def _send(self, message: dict[str, Any]) -> None:
        await self._helper.run(self._call.channel.send, message)

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send notifications/progress, when the client asked for progress."""
        notification = self._progress_message(progress, total, message)
        if notification is not None:
            await self._send(notification)

    async def log(self, level: str, data: Any, logger_name: str | None = None) -> None:
        """Send notifications/message at `level` if logging/setLevel, or a stateless request's logLevel, allows."""
        notification = self._log_message(level, data, logger_name)
        if notification is not None:
            await self._send(notification)

    async def close_stream(self) -> None:
        """End this call's SSE connection now, before the answer; see Context.close_stream."""
        await self._helper.run(self._close_stream)

    async def request(
        self, method: str, params: dict[str, Any], *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS
    ) -> dict[str, Any]:
        """Send a request to the client on this call's stream and await its result.

        Raises ClientError when the client answers with an error, TimeoutError
        when it does not answer in time (the request is then cancelled), and
        asyncio.CancelledError when this call is cancelled while waiting.
        """
        self._refuse_stateless(method)
        session = self._call.session
        request_id, pending = session.replies.expect_reply()
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        # The transport thread that receives the answer sets this event; it also wakes us.
        pending.answered = _LoopWakingEvent(loop, answered)
        try:
            await self._send(Request(request_id, method, params).to_dict())
            try:
                async with asyncio.timeout(timeout):
                    await answered
            except TimeoutError:
                await self._send(self._timed_out(request_id))
                raise TimeoutError(f"the client did not answer {method} within {timeout:g} seconds") from None
        finally:
            session.replies.forget_reply(request_id)
        return self._result_of(pending.reply)

    async def sample(
        self,
        messages: str | list[dict[str, Any]],
        max_tokens: int,
        *,
        system_prompt: str | None = None,
        temperature: float | None = None,
        stop_sequences: list[str] | None = None,
        model_preferences: dict[str, Any] | None = None,
        timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS,
    ) -> dict[str, Any]:
        """Ask the client's model (sampling/createMessage); a str is one user text message."""
        optional = {
            "systemPrompt": system_prompt,
            "temperature": temperature,
            "stopSequences": stop_sequences,
            "modelPreferences": model_preferences,
        }
        params = self._sampling_params(messages, max_tokens, optional)
        return await self.request("sampling/createMessage", params, timeout=timeout)

    async def elicit(
        self, message: str, requested_schema: dict[str, Any], *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS
    ) -> dict[str, Any]:
        """Ask the user for input (elicitation/create); returns {"action": ..., "content": ...}."""
        self._require_capability("elicitation", "elicitation/create")
        return await self.request(
            "elicitation/create", {"message": message, "requestedSchema": requested_schema}, timeout=timeout
        )

    async def list_roots(self, *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS) -> list[dict[str, Any]]:
        """The client's roots (roots/list)."""
        self._require_capability("roots", "roots/list")
        roots = (await self.request("roots/list", {}, timeout=timeout)).get("roots", [])
        return roots if isinstance(roots, list) else []

    async def debug(self, data: Any) -> None:
        await self.log("debug", data)

    async def info(self, data: Any) -> None:
        await self.log("info", data)

    async def warning(self, data: Any) -> None:
        await self.log("warning", data)

    async def error(self, data: Any) -> None:
        await self.log("error", data)
