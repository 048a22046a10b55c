"""McpServer: the public way to write tools, resources and prompts, and the dispatcher.

Tool authors decorate plain or `async def` functions; this module infers their
schemas, validates arguments, calls them (a coroutine on the server's event
loop, see "async handlers" below), and turns what they return into MCP results.

Dispatch is the second lock of the pipeline (DESIGN.md step 7). Transports
call `dispatch` only with a `Call` that carries the principal which passed the
bearer check; before any handler runs, dispatch asks the token source whether
that principal is still current (a revoked token stops here, on open sessions
and sockets too) and whether its scope allows the tool, resource or prompt.
The list methods show only what the principal may use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import inspect
import json
import logging
import os
import queue
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any, Protocol

from . import audit
from ._version import __version__ as _package_version
from .content import ToolResult, is_content, resource_contents, text_content
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    RESOURCE_NOT_FOUND,
    ErrorResponse,
    JsonRpcError,
    Notification,
    Request,
    Response,
)
from .schema import CompiledSchema, JsonSchema, SchemaError, Signature, compile_schema, function_schema, return_schema
from .sessions import Session
from .tokens import Principal
from .uritemplate import RefusedValue, UriTemplate

logger = logging.getLogger("mcp_auth.server")

# Newest first; initialize answers with the client's version when it is here,
# else with the newest.
SUPPORTED_PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
LATEST_PROTOCOL_VERSION = SUPPORTED_PROTOCOL_VERSIONS[0]
# Streams are resumable (priming events, Last-Event-ID) for sessions of this revision on.
RESUMABLE_SINCE = "2025-11-25"


def protocol_at_least(version: str | None, revision: str) -> bool:
    """Whether a session speaking `version` has what MCP revision `revision` added.

    Revisions are ordered by their place in SUPPORTED_PROTOCOL_VERSIONS, never as
    strings. A version that is not one of them (None before initialize) has
    nothing a later revision added; asking about an unknown revision is a bug.
    """
    if revision not in SUPPORTED_PROTOCOL_VERSIONS:
        raise ValueError(f"unknown MCP revision {revision!r}")
    if version not in SUPPORTED_PROTOCOL_VERSIONS:
        return False
    # Newest first: a smaller index is a later revision.
    return SUPPORTED_PROTOCOL_VERSIONS.index(version) <= SUPPORTED_PROTOCOL_VERSIONS.index(revision)


# Items per page of the list methods: small enough to keep responses small,
# large enough that ordinary servers answer in one page.
PAGE_SIZE = 100
# Resource subscriptions one session may hold: plenty for a client, bounded for the server.
MAX_SUBSCRIPTIONS = 100
# Longest resource URI accepted: far beyond real URIs (browsers and proxies
# commonly stop near 2,000 characters), and it bounds what a session stores
# per subscription and what an error message repeats. Matching templates is
# linear in the URI's length (uritemplate.py), so the bound is not what keeps
# matching cheap; it only keeps it small.
MAX_URI_LENGTH = 2048
# completion/complete returns at most this many values (spec).
MAX_COMPLETION_VALUES = 100

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_LOG_RANK = {name: rank for rank, name in enumerate(LOG_LEVELS)}

_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,128}", re.ASCII)


class Channel(Protocol):
    """Where a call's server-to-client messages go (an SSE stream, a socket)."""

    def send(self, message: dict[str, Any]) -> None: ...


# How long a handler waits for the client to answer a server-to-client request
# (sampling, elicitation, roots) by default: elicitation waits for a person.
CLIENT_REQUEST_TIMEOUT_SECONDS = 300.0
# How often a waiting handler looks up to notice its call was cancelled.
_WAIT_SLICE_SECONDS = 0.25


class ClientError(Exception):
    """The client answered a server-to-client request with an error, or cannot be asked."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class DispatchDenied(Exception):
    """Step 7 refused the call; transports map the subclasses to their answers."""

    def __init__(self, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class RequestCancelled(Exception):
    """The call was cancelled (notifications/cancelled) or its session ended."""


class ScopeDenied(DispatchDenied):
    """The principal's scope does not include what it asked for."""


class PrincipalRevoked(DispatchDenied):
    """The principal's token was removed after the session or socket opened."""


@dataclass
class Call:
    """What a transport hands the dispatcher with each message."""

    session: Session
    principal: Principal
    channel: Channel
    client_address: str
    principal_is_current: Callable[[Principal], bool]


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
        threshold = self._call.session.log_level
        if threshold is not None and _LOG_RANK[level] < _LOG_RANK[threshold]:
            return None
        params: dict[str, Any] = {"level": level, "data": data}
        if logger_name:
            params["logger"] = logger_name
        return Notification("notifications/message", params).to_dict()

    def _close_stream(self) -> None:
        # A client of an older revision got no priming event, so it could not resume: keep the stream.
        if not protocol_at_least(self._call.session.protocol_version, RESUMABLE_SINCE):
            return
        detach = getattr(self._call.channel, "detach", None)
        if detach is not None:
            detach()

    def _require_capability(self, capability: str, method: str) -> None:
        if capability not in self._call.session.client_capabilities:
            raise ClientError(
                METHOD_NOT_FOUND,
                f"the client did not declare the '{capability}' capability, so it cannot answer {method}",
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
        """Send notifications/message at `level`, if the session's logging/setLevel allows it."""
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
        session = self._call.session
        request_id, pending = session.expect_reply()
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
            session.forget_reply(request_id)
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
        """Send notifications/message at `level`, if the session's logging/setLevel allows it."""
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
        session = self._call.session
        request_id, pending = session.expect_reply()
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
            session.forget_reply(request_id)
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


# --- async handlers ---------------------------------------------------------
#
# `async def` tools, resources, prompts and completions run on one event loop
# per McpServer, on a daemon thread that the first async call starts and
# McpServer.close() (called when the app closes) stops. The thread that
# dispatched the call (the same request thread a plain handler runs on) hands
# the coroutine to the loop and waits; while it waits it watches for
# cancellation, and it does the blocking work the coroutine asks of it
# (writing to the client), so nothing that may block runs on the loop. Plain
# handlers are untouched by all this: they run on their request thread as before.

# How long closing the server waits for cancelled async handlers to finish
# their cleanup before the loop stops anyway: enough for `finally` blocks that
# close connections, short enough that a shutdown does not hang on one that
# ignores cancellation.
ASYNC_SHUTDOWN_SECONDS = 5.0
_ASYNC_THREAD_NAME = "mcp-auth-async"


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Resolve `future` on its loop, unless whoever awaited it was cancelled meanwhile."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class _LoopWakingEvent(threading.Event):
    """A PendingReply's `answered` event that also wakes a coroutine awaiting the reply.

    The client's answer is delivered by a transport thread, which sets the
    event; the coroutine awaits `future` instead of blocking the loop on it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        super().__init__()
        self._loop = loop
        self._future = future

    def set(self) -> None:
        super().set()
        try:
            self._loop.call_soon_threadsafe(_settle, self._future, None, None)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits the answer any more


_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_FINISHED = None  # put in the inbox when the coroutine is done


class _CallThread:
    """The request thread of an async call, seen from the coroutine: blocking work goes here.

    Writing to the client can block (a WebSocket peer that stops reading), so
    an AsyncContext never writes on the loop: it queues the write for its own
    call's thread, which is idle while it waits for the coroutine anyway. One
    slow client then holds only its own calls, as it would with plain handlers,
    and the messages of one call keep their order.
    """

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open = True

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the call's thread and return its result (from the coroutine)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if not self._open:
                raise RuntimeError("this call has ended: its context cannot talk to the client any more")
            self._inbox.put((fn, args, loop, done))
        return await done

    def finished(self) -> None:
        """The coroutine is done (called on the loop): the waiting thread returns."""
        self._inbox.put(_FINISHED)

    def serve(self, timeout: float) -> bool:
        """Wait up to `timeout` and do one job; True once the coroutine is done."""
        try:
            job = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return False
        if job is _FINISHED:
            self._close()
            return True
        self._do(job)
        return False

    @staticmethod
    def _do(job: _Job) -> None:
        fn, args, loop, done = job
        result, error = None, None
        try:
            result = fn(*args)
        except BaseException as exc:  # whatever it is, the coroutine awaiting it gets it
            error = exc
        try:
            loop.call_soon_threadsafe(_settle, done, result, error)
        except RuntimeError:
            pass  # the loop is closed

    def _close(self) -> None:
        # A job queued by a task that outlived the call (it kept the context) fails rather than hangs.
        with self._lock:
            self._open = False
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if job is not _FINISHED:
                _fn, _args, loop, done = job
                error = RuntimeError("this call has ended: its context cannot talk to the client any more")
                try:
                    loop.call_soon_threadsafe(_settle, done, None, error)
                except RuntimeError:
                    pass


async def _outcome(awaitable: Awaitable[Any]) -> tuple[Any, BaseException | None]:
    """Await a handler; its exception is returned, so SystemExit from a tool cannot stop the loop."""
    try:
        return await awaitable, None
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return None, exc


def _close_unstarted(*awaitables: Awaitable[Any]) -> None:
    # A coroutine that will never run (on) is closed, so Python does not warn that it was never awaited.
    for awaitable in awaitables:
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()


class _AsyncRunner:
    """The event loop of one McpServer's async handlers, on its own daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # After a fork (gunicorn --preload) the parent's loop thread does not exist here,
            # and a loop whose thread died is no use either: start anew.
            if self._loop is None or self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                # Daemon: a handler that ignores cancellation cannot hold up the process's exit.
                thread = threading.Thread(target=self._serve, args=(loop,), name=_ASYNC_THREAD_NAME, daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_forever()
        finally:
            # What asyncio.run does on the way out: cancel what still runs, then close.
            try:
                loop.run_until_complete(_cancel_all())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def run(self, awaitable: Awaitable[Any], helper: _CallThread, should_stop: Callable[[], bool]) -> Any:
        """Run `awaitable` on the loop and wait for it on this (the call's) thread.

        When `should_stop()` turns true (the call was cancelled, the session
        ended) the task is cancelled; the handler sees asyncio.CancelledError
        and this raises RequestCancelled once the task has ended.
        """
        outcome = _outcome(awaitable)
        try:
            loop = self._running_loop()
        except BaseException:
            _close_unstarted(outcome, awaitable)
            raise
        started: list[asyncio.Task[tuple[Any, BaseException | None]]] = []

        def start() -> None:
            task = loop.create_task(outcome)
            task.add_done_callback(lambda _: helper.finished())
            started.append(task)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # closed by a shutdown a moment ago
            _close_unstarted(outcome, awaitable)
            raise RequestCancelled("the server is shutting down") from None
        cancelling = False
        while not helper.serve(_WAIT_SLICE_SECONDS):
            if loop.is_closed():
                if started and started[0].done():
                    break  # it finished just before the loop closed
                # The server stopped the loop; a task it could not end (or never started) ends here.
                _close_unstarted(outcome, awaitable)
                raise RequestCancelled("the server shut down while the handler ran")
            if not cancelling and should_stop():
                cancelling = True
                try:
                    loop.call_soon_threadsafe(lambda: started[0].cancel())  # start() ran before: FIFO
                except RuntimeError:
                    pass  # closed meanwhile: noticed above at the next turn
        task = started[0]
        if task.cancelled():
            raise RequestCancelled("the call was cancelled")
        value, error = task.result()
        if error is not None:
            raise error
        return value

    def stop(self) -> None:
        """End the loop's thread: handlers still running are cancelled and get ASYNC_SHUTDOWN_SECONDS."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            loop.stop()  # a handler closed the server: the loop winds down once it yields
            return
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:
            return  # already closed
        # The thread's way out waits ASYNC_SHUTDOWN_SECONDS for cancelled handlers; the rest is margin.
        thread.join(ASYNC_SHUTDOWN_SECONDS * 2)


async def _cancel_all() -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ASYNC_SHUTDOWN_SECONDS
    current = asyncio.current_task()
    # Again until none is left: a call that arrived during the shutdown may have started one.
    while tasks := [task for task in asyncio.all_tasks() if task is not current]:
        for task in tasks:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            logger.warning(
                "%d async handler(s) went on %g s after being cancelled; stopping without them",
                len(tasks),
                ASYNC_SHUTDOWN_SECONDS,
            )
            return
        await asyncio.wait(tasks, timeout=remaining)


def _default_name(fn: Callable[..., Any]) -> str:
    """A handler's name when none is given: its function's, through partials."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__name__", type(fn).__name__))


def _is_coroutine_callable(fn: Callable[..., Any]) -> bool:
    """`async def` functions, partials of them, their functools.wraps wrappers, objects with async __call__."""
    if inspect.iscoroutinefunction(fn):
        return True
    try:
        if inspect.iscoroutinefunction(inspect.unwrap(fn)):
            return True
    except ValueError:  # a __wrapped__ cycle
        return False
    return callable(fn) and not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


@dataclass
class _Tool:
    name: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]
    output_schema: JsonSchema | None
    arguments: CompiledSchema  # built once, at registration
    output: CompiledSchema | None


@dataclass
class _Resource:
    uri: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]
    mime_type: str | None
    template: UriTemplate | None = None  # set for URI templates


@dataclass(frozen=True)
class _Target:
    """A resource a URI resolved to, with its handler's arguments and the URI scopes are judged on."""

    resource: _Resource
    arguments: dict[str, str]
    effective_uri: str


@dataclass
class _Prompt:
    name: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]
    arguments: CompiledSchema


@dataclass
class _Registry:
    tools: dict[str, _Tool] = field(default_factory=dict)
    resources: dict[str, _Resource] = field(default_factory=dict)
    templates: dict[str, _Resource] = field(default_factory=dict)
    prompts: dict[str, _Prompt] = field(default_factory=dict)
    completions: dict[tuple[str, str], Callable[..., Any]] = field(default_factory=dict)


# What a session keeps of the client's initialize: a few short strings, not
# whatever a client chooses to send (a session must stay small).
MAX_CLIENT_FIELDS = 32
MAX_CLIENT_STRING = 256


def _bounded_strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {
        key: item[:MAX_CLIENT_STRING]
        for key, item in list(value.items())[:MAX_CLIENT_FIELDS]
        if isinstance(key, str) and len(key) <= MAX_CLIENT_STRING and isinstance(item, str)
    }


def _compile_object_schema(schema: Any, owner: str) -> CompiledSchema:
    # MCP says a tool's input and output schemas describe objects.
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise SchemaError(f'{owner}: must be a JSON Schema with "type": "object"')
    return compile_schema(schema, owner)


def _handler_failed(kind: str, name: str, exc: Exception) -> None:
    # A handler's failure is answered to the client; its author needs the traceback
    # to fix it, so it is one WARNING record with the handler's name and traceback
    # (a client's doing as often as the tool's; never a token: handlers get none).
    # `name` may be a client's URI: escaped here too, for handlers with their own formatter.
    logger.warning("%s %s raised %s", kind, audit.escape_controls(name), type(exc).__name__, exc_info=exc)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(str(cursor).encode()).decode().partition(":")
        offset = int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        offset = -1
        kind = ""
    if kind != "offset" or offset < 0:
        raise JsonRpcError(INVALID_PARAMS, "Invalid cursor: pass back the nextCursor of the previous page unchanged")
    return offset


def _page(items: Sequence[dict[str, Any]], params: dict[str, Any], key: str) -> dict[str, Any]:
    offset = _decode_cursor(params.get("cursor"))
    result: dict[str, Any] = {key: list(items[offset : offset + PAGE_SIZE])}
    if offset + PAGE_SIZE < len(items):
        result["nextCursor"] = _encode_cursor(offset + PAGE_SIZE)
    return result


def _to_json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the tool returned a value that is not JSON: {exc}") from None


def tool_result(value: Any, output_schema: JsonSchema | None) -> dict[str, Any]:
    """Turn what a tool returned into a CallToolResult."""
    if isinstance(value, ToolResult):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if value is None:
        return {"content": []}
    if isinstance(value, str):
        return {"content": [text_content(value)]}
    if is_content(value):
        return {"content": [value]}
    if isinstance(value, list) and value and all(is_content(item) for item in value):
        return {"content": value}
    result: dict[str, Any] = {"content": [text_content(_to_json_text(value))]}
    if output_schema is not None and isinstance(value, dict):
        result["structuredContent"] = value
    return result


def _prompt_messages(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    messages = []
    for item in items:
        if isinstance(item, str):
            messages.append({"role": "user", "content": text_content(item)})
        elif is_content(item):
            messages.append({"role": "user", "content": item})
        elif isinstance(item, dict) and item.get("role") in ("user", "assistant") and is_content(item.get("content")):
            messages.append(item)
        else:
            raise TypeError("a prompt returns a str, a content block, a {role, content} message, or a list of these")
    return messages


def _read_contents(uri: str, value: Any, mime_type: str | None) -> list[dict[str, Any]]:
    if isinstance(value, (str, bytes)):
        return [resource_contents(uri, value, mime_type)]
    if isinstance(value, dict) and "uri" in value:
        return [value]
    if isinstance(value, list) and all(isinstance(item, dict) and "uri" in item for item in value):
        return value
    raise TypeError("a resource returns str, bytes, a contents dict with 'uri', or a list of those")


class McpServer:
    """A set of tools, resources and prompts, served by `wsgi_app` behind the auth pipeline.

    >>> server = McpServer("notes")
    >>> @server.tool()
    ... def add(a: int, b: int) -> int:
    ...     '''Add two numbers.'''
    ...     return a + b
    """

    def __init__(self, name: str = "mcp-auth", version: str = _package_version, *, instructions: str | None = None):
        self.name = name
        self.version = version
        self.instructions = instructions
        self._registry = _Registry()
        # Initialized sessions of every transport, for notifications outside a request.
        self._live_sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._live_lock = threading.Lock()
        # Where async handlers run; a server dropped without close() still stops its loop.
        self._async = _AsyncRunner()
        weakref.finalize(self, self._async.stop)
        self._methods: dict[str, Callable[[Request, Call], dict[str, Any]]] = {
            "initialize": self._initialize,
            "ping": lambda request, call: {},
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
            "resources/list": self._resources_list,
            "resources/templates/list": self._templates_list,
            "resources/read": self._resources_read,
            "prompts/list": self._prompts_list,
            "prompts/get": self._prompts_get,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "logging/setLevel": self._set_level,
            "completion/complete": self._complete,
        }

    # --- registration -----------------------------------------------------

    def tool(
        self,
        name: str | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        annotations: dict[str, Any] | None = None,
        input_schema: JsonSchema | None = None,
        output_schema: JsonSchema | None = None,
        structured_output: bool | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a tool. Its input schema comes from the type hints, its description from the docstring.

        A return annotation that is an object (dict, TypedDict, dataclass) adds
        an `outputSchema` and `structuredContent`; `structured_output=False`
        turns that off, `output_schema=` sets it by hand.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = self._check_name(name or _default_name(fn), "tool", self._registry.tools)
            signature = function_schema(fn, _CallContext)
            schema = input_schema if input_schema is not None else signature.input_schema
            out_schema = output_schema
            if out_schema is None and structured_output is not False:
                out_schema = return_schema(fn)
            arguments = _compile_object_schema(schema, f"tool {tool_name!r}: inputSchema")
            output = (
                None if out_schema is None else _compile_object_schema(out_schema, f"tool {tool_name!r}: outputSchema")
            )
            definition: dict[str, Any] = {"name": tool_name, "inputSchema": schema}
            if title:
                definition["title"] = title
            if description or signature.description:
                definition["description"] = description or signature.description
            if out_schema is not None:
                definition["outputSchema"] = out_schema
            if annotations:
                definition["annotations"] = annotations
            self._registry.tools[tool_name] = _Tool(
                tool_name, fn, replace(signature, input_schema=schema), definition, out_schema, arguments, output
            )
            self.notify_list_changed("tools")
            return fn

        return register

    def resource(
        self,
        uri: str,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a resource; a URI with `{variables}` is a template whose values become arguments."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            signature = function_schema(fn, _CallContext)
            parsed = UriTemplate.parse(uri)  # TemplateError (a ValueError) for an ambiguous template
            is_template = bool(parsed.variables)
            table = self._registry.templates if is_template else self._registry.resources
            if uri in table:
                raise ValueError(f"resource {uri!r} is already registered")
            definition: dict[str, Any] = {
                "uriTemplate" if is_template else "uri": uri,
                "name": name or _default_name(fn),
            }
            if title:
                definition["title"] = title
            if description or signature.description:
                definition["description"] = description or signature.description
            if mime_type:
                definition["mimeType"] = mime_type
            template = None
            if is_template:
                template = parsed
                variables = set(template.names)
                if variables != set(signature.parameters):
                    raise TypeError(
                        f"resource template {uri!r} has variables {sorted(variables)} but "
                        f"{fn.__qualname__} takes {sorted(signature.parameters)}; they must match"
                    )
            elif signature.parameters:
                raise TypeError(f"{fn.__qualname__}: a resource without {{variables}} takes no arguments")
            table[uri] = _Resource(uri, fn, signature, definition, mime_type, template)
            self.notify_list_changed("resources")
            return fn

        return register

    def prompt(
        self, name: str | None = None, *, title: str | None = None, description: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a prompt; its parameters are the prompt's (string) arguments."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            prompt_name = self._check_name(name or _default_name(fn), "prompt", self._registry.prompts)
            signature = function_schema(fn, _CallContext)
            required = set(signature.input_schema.get("required", []))
            arguments = []
            for parameter in signature.parameters:
                argument: dict[str, Any] = {"name": parameter, "required": parameter in required}
                if parameter in signature.parameter_descriptions:
                    argument["description"] = signature.parameter_descriptions[parameter]
                arguments.append(argument)
            definition: dict[str, Any] = {"name": prompt_name, "arguments": arguments}
            if title:
                definition["title"] = title
            if description or signature.description:
                definition["description"] = description or signature.description
            validator = compile_schema(signature.input_schema, f"prompt {prompt_name!r}")
            self._registry.prompts[prompt_name] = _Prompt(prompt_name, fn, signature, definition, validator)
            self.notify_list_changed("prompts")
            return fn

        return register

    def completion(
        self, *, prompt: str | None = None, resource_template: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register argument completion for a prompt or a resource template.

        The function is called as `fn(argument_name, partial_value, context_arguments)`
        and returns a list of suggested values.
        """
        if (prompt is None) == (resource_template is None):
            raise TypeError("completion() takes exactly one of prompt= or resource_template=")
        key = ("ref/prompt", prompt) if prompt is not None else ("ref/resource", resource_template)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._registry.completions[key] = fn  # type: ignore[index]
            return fn

        return register

    @staticmethod
    def _check_name(name: str, kind: str, table: dict[str, Any]) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{kind} name {name!r}: use 1-128 of A-Z a-z 0-9 _ - . /")
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        return name

    @property
    def tool_names(self) -> list[str]:
        return list(self._registry.tools)

    # --- notifications outside a request -----------------------------------

    def _sessions(self) -> list[Session]:
        with self._live_lock:
            return [s for s in self._live_sessions if not s.closed.is_set()]

    def notify_resource_updated(self, uri: str) -> None:
        """Tell every session subscribed to `uri` that it changed (notifications/resources/updated)."""
        message = Notification("notifications/resources/updated", {"uri": uri}).to_dict()
        for session in self._sessions():
            if uri in session.subscriptions:
                session.push(message)

    def notify_list_changed(self, kind: str) -> None:
        """Tell every session that the tools, resources or prompts changed."""
        if kind not in ("tools", "resources", "prompts"):
            raise ValueError("kind is 'tools', 'resources' or 'prompts'")
        message = Notification(f"notifications/{kind}/list_changed").to_dict()
        for session in self._sessions():
            session.push(message)

    # --- serving ----------------------------------------------------------

    def wsgi_app(self, config: Any = None) -> Any:
        """The WSGI application serving this server behind the auth pipeline.

        Prints nothing, except on a first run that creates the default token
        file: then the token and client configurations go to stdout, once
        (a token nobody was shown is no use; a log would keep a secret).
        """
        from .config import Config
        from .startup import build_app

        return build_app(self, config if config is not None else Config.from_sources(), summary=False)

    def close(self) -> None:
        """Stop the event loop of async handlers, cancelling those still running.

        The app calls this when it closes. Plain handlers are not affected, and
        a later async call starts the loop again.
        """
        self._async.stop()

    # --- dispatch ---------------------------------------------------------

    def may_send_before_answer(self, request: Request) -> bool:
        """Whether handling `request` may send messages before its answer.

        Only a handler that takes a Context can (progress, logs, requests to
        the client, close_stream); transports answer everything else inline,
        as plain JSON, without handing the call to another thread.
        """
        name = request.params.get("name")
        target: _Tool | _Resource | _Prompt | None = None
        if request.method == "tools/call" and isinstance(name, str):
            target = self._registry.tools.get(name)
        elif request.method == "prompts/get" and isinstance(name, str):
            target = self._registry.prompts.get(name)
        elif request.method == "resources/read":
            uri = request.params.get("uri")
            # No matching here: that waits for dispatch, after the scope check.
            # A head-and-tail look says whether a handler that takes a Context could answer.
            if isinstance(uri, str) and len(uri) <= MAX_URI_LENGTH:
                return self._resource_may_stream(uri)
        return target is not None and target.signature.context_parameter is not None

    def _resource_may_stream(self, uri: str) -> bool:
        static = self._registry.resources.get(uri)
        if static is not None:
            return static.signature.context_parameter is not None
        return any(
            resource.signature.context_parameter is not None and resource.template.could_match(uri)
            for resource in self._registry.templates.values()
            if resource.template is not None
        )

    def dispatch(self, request: Request, call: Call) -> dict[str, Any]:
        """Run one request; returns its result or raises JsonRpcError / DispatchDenied."""
        # Step 7, the second lock: whatever the transport did, no handler runs
        # for a principal whose token is gone.
        if not call.principal_is_current(call.principal):
            raise PrincipalRevoked("the token of this session was revoked; authenticate again", request.id)
        method = self._methods.get(request.method)
        if method is None:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {request.method}", request_id=request.id)
        if call.session.protocol_version is None and request.method not in ("initialize", "ping"):
            raise JsonRpcError(INVALID_REQUEST, "Send initialize before other requests", request_id=request.id)
        try:
            return method(request, call)
        except JsonRpcError as exc:
            exc.request_id = request.id
            raise

    def handle_notification(self, notification: Notification, call: Call) -> None:
        """Client notifications: initialized, cancelled; others are ignored as the spec allows."""
        if not call.principal_is_current(call.principal):
            return  # step 7 for notifications: a revoked principal changes nothing
        if notification.method == "notifications/initialized":
            call.session.initialized = True
        elif notification.method == "notifications/cancelled":
            request_id = notification.params.get("requestId")
            if isinstance(request_id, (str, int)):
                event = call.session.in_flight.get(request_id)
                if event is not None:
                    event.set()

    def _run(
        self, request: Request, call: Call, fn: Callable[..., Any], signature: Signature, arguments: dict[str, Any]
    ) -> Any:
        kwargs = {name: arguments[name] for name in signature.parameters if name in arguments}
        return self._invoke(request, call, fn, (), kwargs, signature)

    def _invoke(
        self,
        request: Request,
        call: Call,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        signature: Signature | None = None,
    ) -> Any:
        """Call a handler on this thread; what it returns, awaited on the loop when it is awaitable."""
        cancelled = threading.Event()
        call.session.in_flight[request.id] = cancelled
        try:
            helper: _CallThread | None = None
            if signature is not None and signature.context_parameter:
                if signature.context_type is AsyncContext or _is_coroutine_callable(fn):
                    helper = _CallThread()
                    kwargs[signature.context_parameter] = AsyncContext(call, request, cancelled, helper)
                else:
                    kwargs[signature.context_parameter] = Context(call, request, cancelled)
            value = fn(*args, **kwargs)
            if not inspect.isawaitable(value):
                return value
            return self._async.run(
                value, helper or _CallThread(), lambda: cancelled.is_set() or call.session.closed.is_set()
            )
        finally:
            call.session.in_flight.pop(request.id, None)

    def _initialize(self, request: Request, call: Call) -> dict[str, Any]:
        session = call.session
        if session.protocol_version is not None:
            raise JsonRpcError(INVALID_REQUEST, "This session is already initialized")
        requested = request.params.get("protocolVersion")
        if not isinstance(requested, str):
            raise JsonRpcError(INVALID_PARAMS, "initialize needs params.protocolVersion (a string)")
        version = requested if requested in SUPPORTED_PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
        session.protocol_version = version
        with self._live_lock:
            self._live_sessions.add(session)
        session.client_info = _bounded_strings(request.params.get("clientInfo"))
        capabilities = request.params.get("capabilities")
        # Only which capabilities the client has matters; keep their names, bounded.
        session.client_capabilities = {
            name: True
            for name in (list(capabilities)[:MAX_CLIENT_FIELDS] if isinstance(capabilities, dict) else [])
            if isinstance(name, str) and len(name) <= MAX_CLIENT_STRING
        }
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": True},
                "resources": {"subscribe": True, "listChanged": True},
                "prompts": {"listChanged": True},
                "logging": {},
                "completions": {},
            },
            "serverInfo": {"name": self.name, "version": self.version},
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    # tools

    def _tools_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [t.definition for t in self._registry.tools.values() if call.principal.may_use(t.name)]
        return _page(visible, request.params, "tools")

    def _tools_call(self, request: Request, call: Call) -> dict[str, Any]:
        name = request.params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(INVALID_PARAMS, "tools/call needs params.name (a string)")
        # Scope before existence: a scoped token learns nothing about tools outside its scope.
        if not call.principal.may_use(name):
            # Audited once, as a denial, by the transport that answers it.
            raise ScopeDenied(f"the token '{call.principal.name}' is not allowed to call the tool '{name}'", request.id)
        tool = self._registry.tools.get(name)
        if tool is None:
            raise JsonRpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        arguments = request.params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise JsonRpcError(INVALID_PARAMS, "tools/call params.arguments must be an object")
        problems = tool.arguments.problems(arguments)
        if problems:
            audit.tool_call(call.client_address, call.principal.name, name, "invalid_arguments")
            return ToolResult([text_content("Invalid arguments: " + "; ".join(problems))], is_error=True).to_dict()
        try:
            value = self._run(request, call, tool.fn, tool.signature, arguments)
            result = tool_result(value, tool.output_schema)
        except RequestCancelled as exc:
            audit.tool_call(call.client_address, call.principal.name, name, "cancelled")
            raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
        except Exception as exc:  # a tool's failure is a result the model can read, not a protocol error
            _handler_failed("tool", name, exc)
            audit.tool_call(call.client_address, call.principal.name, name, "error")
            return ToolResult([text_content(f"{type(exc).__name__}: {exc}")], is_error=True).to_dict()
        if tool.output is not None and "structuredContent" in result and not result.get("isError"):
            wrong = tool.output.problems(result["structuredContent"], "structuredContent")
            if wrong:
                # The tool broke its own published contract: the client gets an error, not bad data.
                logger.warning("tool %s returned structuredContent that does not match its outputSchema", name)
                audit.tool_call(call.client_address, call.principal.name, name, "invalid_output")
                message = "The tool's output does not match its outputSchema: " + "; ".join(wrong)
                return ToolResult([text_content(message)], is_error=True).to_dict()
        audit.tool_call(call.client_address, call.principal.name, name, "ok")
        return result

    # resources

    def _resources_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [r.definition for r in self._registry.resources.values() if call.principal.may_use(r.uri, "resource")]
        return _page(visible, request.params, "resources")

    def _templates_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [r.definition for r in self._registry.templates.values() if call.principal.may_use(r.uri, "resource")]
        return _page(visible, request.params, "resourceTemplates")

    def _resources_read(self, request: Request, call: Call) -> dict[str, Any]:
        uri = request.params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(INVALID_PARAMS, "resources/read needs params.uri (a string)")
        target = self._resource_target(uri, request, call)
        if target is None:
            raise JsonRpcError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", data={"uri": uri})
        resource = target.resource
        try:
            value = self._run(request, call, resource.fn, resource.signature, target.arguments)
            return {"contents": _read_contents(uri, value, resource.mime_type)}
        except RequestCancelled as exc:
            raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
        except Exception as exc:
            _handler_failed("resource", uri, exc)
            raise JsonRpcError(INTERNAL_ERROR, f"Reading {uri} failed: {type(exc).__name__}: {exc}") from None

    def _resource_target(self, uri: str, request: Request, call: Call) -> _Target | None:
        """The resource `uri` names, checked against the principal's scope; None: in scope but not found.

        The order is the point: the length bound, then whether the token may
        read any resource at all (a token without resource patterns causes no
        matching), then one linear match, then the scope judged on the decoded
        URI the handler will be asked for. A scoped token cannot probe: what
        is outside its scope is refused the same way whether it exists or not.
        """
        if len(uri) > MAX_URI_LENGTH:
            raise JsonRpcError(INVALID_PARAMS, f"The URI is longer than {MAX_URI_LENGTH} characters")
        principal = call.principal
        if not principal.may_use_some("resource"):
            raise self._resource_denied(uri, request, call)
        static = self._registry.resources.get(uri)
        if static is not None:
            if principal.may_use(uri, "resource"):
                return _Target(static, {}, uri)
            raise self._resource_denied(uri, request, call)
        for resource in self._registry.templates.values():
            assert resource.template is not None
            try:
                resolved = resource.template.resolve(uri)
            except RefusedValue as exc:
                # Refused whatever the scope; the scope only decides which refusal is told.
                if principal.may_use(uri, "resource") or principal.names_exactly(resource.uri, "resource"):
                    raise JsonRpcError(INVALID_PARAMS, str(exc), data={"uri": uri}) from None
                raise self._resource_denied(uri, request, call) from None
            if resolved is None:
                continue  # templates are tried in registration order; the first that matches decides
            # A templated resource is in scope when its decoded URI matches a
            # pattern, or a pattern is the template's own text.
            if principal.may_use(resolved.effective_uri, "resource") or principal.names_exactly(
                resource.uri, "resource"
            ):
                return _Target(resource, resolved.arguments, resolved.effective_uri)
            raise self._resource_denied(uri, request, call)
        if principal.may_use(uri, "resource"):
            return None
        raise self._resource_denied(uri, request, call)

    @staticmethod
    def _resource_denied(uri: str, request: Request, call: Call) -> ScopeDenied:
        return ScopeDenied(f"the token '{call.principal.name}' is not allowed to read the resource '{uri}'", request.id)

    def _subscription_uri(self, request: Request, call: Call) -> str:
        uri = request.params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise JsonRpcError(INVALID_PARAMS, f"{request.method} needs params.uri (a string)")
        # The same path as resources/read: scope first, one linear match, scope on the decoded URI.
        self._resource_target(uri, request, call)
        return uri

    def _subscribe(self, request: Request, call: Call) -> dict[str, Any]:
        uri = self._subscription_uri(request, call)
        with call.session.lock:
            if uri not in call.session.subscriptions and len(call.session.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise JsonRpcError(INVALID_REQUEST, f"A session may subscribe to at most {MAX_SUBSCRIPTIONS} resources")
            call.session.subscriptions.add(uri)
        return {}

    def _unsubscribe(self, request: Request, call: Call) -> dict[str, Any]:
        uri = self._subscription_uri(request, call)
        with call.session.lock:
            call.session.subscriptions.discard(uri)
        return {}

    # prompts

    def _prompts_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [p.definition for p in self._registry.prompts.values() if call.principal.may_use(p.name, "prompt")]
        return _page(visible, request.params, "prompts")

    def _prompts_get(self, request: Request, call: Call) -> dict[str, Any]:
        name = request.params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(INVALID_PARAMS, "prompts/get needs params.name (a string)")
        if not call.principal.may_use(name, "prompt"):
            raise ScopeDenied(
                f"the token '{call.principal.name}' is not allowed to get the prompt '{name}'", request.id
            )
        prompt = self._registry.prompts.get(name)
        if prompt is None:
            raise JsonRpcError(INVALID_PARAMS, f"Unknown prompt: {name}")
        arguments = request.params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise JsonRpcError(INVALID_PARAMS, "prompts/get params.arguments must be an object")
        problems = prompt.arguments.problems(arguments)
        if problems:
            raise JsonRpcError(INVALID_PARAMS, "Invalid prompt arguments: " + "; ".join(problems))
        try:
            value = self._run(request, call, prompt.fn, prompt.signature, arguments)
            result: dict[str, Any] = {"messages": _prompt_messages(value)}
        except RequestCancelled as exc:
            raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
        except Exception as exc:
            _handler_failed("prompt", name, exc)
            raise JsonRpcError(INTERNAL_ERROR, f"Prompt {name} failed: {type(exc).__name__}: {exc}") from None
        if "description" in prompt.definition:
            result["description"] = prompt.definition["description"]
        return result

    # logging and completion

    def _set_level(self, request: Request, call: Call) -> dict[str, Any]:
        level = request.params.get("level")
        if not isinstance(level, str) or level not in _LOG_RANK:
            raise JsonRpcError(INVALID_PARAMS, f"Invalid log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
        call.session.log_level = level
        return {}

    def _complete(self, request: Request, call: Call) -> dict[str, Any]:
        ref = request.params.get("ref")
        argument = request.params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise JsonRpcError(INVALID_PARAMS, "completion/complete needs params.ref and params.argument (objects)")
        ref_type = ref.get("type")
        ref_key = ref.get("name") if ref_type == "ref/prompt" else ref.get("uri")
        arg_name, arg_value = argument.get("name"), argument.get("value", "")
        if not isinstance(ref_key, str) or not isinstance(arg_name, str) or not isinstance(arg_value, str):
            raise JsonRpcError(
                INVALID_PARAMS, "completion/complete: ref needs name or uri; argument needs name and value"
            )
        scope_kind = "prompt" if ref_type == "ref/prompt" else "resource"
        completer = self._registry.completions.get((str(ref_type), ref_key))
        values: list[str] = []
        if completer is not None and call.principal.may_use(ref_key, scope_kind):
            context = request.params.get("context")
            context_arguments = context.get("arguments", {}) if isinstance(context, dict) else {}
            try:
                suggested = self._invoke(request, call, completer, (arg_name, arg_value, context_arguments), {})
                values = [str(v) for v in suggested]
            except RequestCancelled as exc:
                raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
            except Exception as exc:
                _handler_failed("completion for", ref_key, exc)
                raise JsonRpcError(INTERNAL_ERROR, f"Completion failed: {type(exc).__name__}: {exc}") from None
        return {
            "completion": {
                "values": values[:MAX_COMPLETION_VALUES],
                "total": len(values),
                "hasMore": len(values) > MAX_COMPLETION_VALUES,
            }
        }
