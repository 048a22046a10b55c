"""What a handler sees of its call: `Context` (plain functions) and `AsyncContext` (`async def`).

Both eras behind one API: in the handshake era a handler's asks (sampling,
elicitation, roots) are server-to-client requests that it waits for; in the
stateless era they are answered by replay (`mcp_auth.mcp.mrtr`). `Call` and
the session protocols live in `mcp_auth.mcp.call` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any, cast

from ..auth.tokens.principal import Principal
from .asyncrun import _WAIT_SLICE_SECONDS, _CallThread, _LoopWakingEvent
from .call import (
    CLIENT_REQUEST_TIMEOUT_SECONDS,
    Call,
    Channel,
    ClientError,
    LiveSessions,
    McpSession,
    StatelessSession,
)
from .jsonrpc import METHOD_NOT_FOUND, ErrorResponse, Notification, Request, Response
from .mrtr import Ask, Elicitation, RawAsk, Replay, Roots, Sampling
from .outcome import RequestCancelled
from .protocol import _LOG_RANK, LOG_LEVELS, RESUMABLE_SINCE, protocol_at_least

__all__ = [
    "CLIENT_REQUEST_TIMEOUT_SECONDS",
    "AsyncContext",
    "Call",
    "Channel",
    "ClientError",
    "Context",
    "LiveSessions",
    "McpSession",
    "StatelessSession",
]


class _CallContext:
    """What both kinds of context share: who is asking, about which call, and the messages to send."""

    def __init__(self, call: Call, request: Request, cancelled: threading.Event, replay: Replay | None = None) -> None:
        self._call = call
        self._request = request
        self._cancelled = cancelled
        self._replay = replay
        self._asks = 0  # single asks so far in this run: default keys follow call order, stable across replays
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

    @property
    def round(self) -> int:
        """1 for the first run of this request; n for the n-th round of a multi round-trip request."""
        return self._replay.round if self._replay is not None else 1

    @property
    def client_capabilities(self) -> dict[str, Any]:
        """What the client declared: this request's (stateless era) or the session's (handshake era)."""
        if self._call.modern is not None:
            return dict(self._call.modern.client_capabilities)
        return self._call.session.state.client_capabilities

    def supports(self, capability: str) -> bool:
        """Whether the client can answer asks that need `capability` ("elicitation", "sampling", "roots")."""
        if self._call.modern is not None:
            return self._call.modern.supports(capability)
        return self._call.session.state.has_capability(capability)

    def _key(self, key: str | None, kind: str) -> str:
        self._asks += 1
        return key if key is not None else f"{kind}-{self._asks}"

    def _modern_replay(self) -> Replay | None:
        """The replay answering this call's asks in the stateless era; None in the handshake era."""
        if self._call.modern is None:
            return None
        if self._replay is None:
            raise RuntimeError("in the stateless revision only tools, prompts and resources can ask the client")
        return self._replay

    def _check_capabilities(self, asks: Mapping[str, Ask]) -> None:
        for ask in asks.values():
            self._require_capability(ask.capability, ask.method)

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
        # Handshake era only: a stateless-era ask is judged by its Replay (-32021).
        if not self._call.session.state.has_capability(capability):
            raise ClientError(
                METHOD_NOT_FOUND,
                f"the client did not declare the '{capability}' capability, so it cannot answer {method}",
            )

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
        RequestCancelled when this call is cancelled while waiting. In the
        stateless era only the three asks exist, answered by replay (`ask`).
        """
        if self._modern_replay() is not None:
            key = self._key(None, method.split("/")[0])
            return cast(dict[str, Any], self.ask({key: RawAsk(method, params)})[key])
        return self._blocking_request(method, params, timeout)

    def _blocking_request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        _refuse_on_event_loop("request")
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

    def ask(self, asks: Mapping[str, Ask], *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Ask the client several things at once: {key: Elicitation(...) | Sampling(...) | Roots()} -> {key: answer}.

        Each answer has the shape `elicit`, `sample` and `list_roots` return. In
        the stateless era the keys are the `inputRequests` keys and every
        unanswered one goes to the client in one round; in the handshake era
        the requests are sent one after another on the call's stream.
        """
        replay = self._modern_replay()
        if replay is not None:
            return replay.ask(asks)
        self._check_capabilities(asks)
        return {k: a.result(self._blocking_request(a.method, a.params(), timeout)) for k, a in asks.items()}

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
        key: str | None = None,
    ) -> dict[str, Any]:
        """Ask the client's model (sampling/createMessage); a str is one user text message.

        `key` names the question in the stateless era's inputRequests (default: "sampling-<n>").
        """
        ask = Sampling(messages, max_tokens, system_prompt, temperature, stop_sequences, model_preferences)
        key = self._key(key, "sampling")
        return cast(dict[str, Any], self.ask({key: ask}, timeout=timeout)[key])

    def elicit(
        self,
        message: str,
        requested_schema: dict[str, Any],
        *,
        timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Ask the user for input (elicitation/create); returns {"action": ..., "content": ...}.

        `key` names the question in the stateless era's inputRequests (default: "elicitation-<n>").
        """
        key = self._key(key, "elicitation")
        return cast(dict[str, Any], self.ask({key: Elicitation(message, requested_schema)}, timeout=timeout)[key])

    def list_roots(
        self, *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS, key: str | None = None
    ) -> list[dict[str, Any]]:
        """The client's roots (roots/list); `key` as for `elicit` (default: "roots-<n>")."""
        key = self._key(key, "roots")
        return cast(list[dict[str, Any]], self.ask({key: Roots()}, timeout=timeout)[key])

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

    def __init__(
        self,
        call: Call,
        request: Request,
        cancelled: threading.Event,
        helper: _CallThread,
        replay: Replay | None = None,
    ) -> None:
        super().__init__(call, request, cancelled, replay)
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
        asyncio.CancelledError when this call is cancelled while waiting. In
        the stateless era only the three asks exist, answered by replay (`ask`).
        """
        if self._modern_replay() is not None:
            key = self._key(None, method.split("/")[0])
            return cast(dict[str, Any], (await self.ask({key: RawAsk(method, params)}))[key])
        return await self._awaited_request(method, params, timeout)

    async def _awaited_request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
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

    async def ask(self, asks: Mapping[str, Ask], *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Ask the client several things at once; see Context.ask."""
        replay = self._modern_replay()
        if replay is not None:
            return replay.ask(asks)
        self._check_capabilities(asks)
        return {k: a.result(await self._awaited_request(a.method, a.params(), timeout)) for k, a in asks.items()}

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
        key: str | None = None,
    ) -> dict[str, Any]:
        """Ask the client's model (sampling/createMessage); see Context.sample."""
        ask = Sampling(messages, max_tokens, system_prompt, temperature, stop_sequences, model_preferences)
        key = self._key(key, "sampling")
        return cast(dict[str, Any], (await self.ask({key: ask}, timeout=timeout))[key])

    async def elicit(
        self,
        message: str,
        requested_schema: dict[str, Any],
        *,
        timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Ask the user for input (elicitation/create); see Context.elicit."""
        key = self._key(key, "elicitation")
        return cast(
            dict[str, Any], (await self.ask({key: Elicitation(message, requested_schema)}, timeout=timeout))[key]
        )

    async def list_roots(
        self, *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS, key: str | None = None
    ) -> list[dict[str, Any]]:
        """The client's roots (roots/list); see Context.list_roots."""
        key = self._key(key, "roots")
        return cast(list[dict[str, Any]], (await self.ask({key: Roots()}, timeout=timeout))[key])

    async def debug(self, data: Any) -> None:
        await self.log("debug", data)

    async def info(self, data: Any) -> None:
        await self.log("info", data)

    async def warning(self, data: Any) -> None:
        await self.log("warning", data)

    async def error(self, data: Any) -> None:
        await self.log("error", data)
