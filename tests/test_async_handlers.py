"""`async def` tools, resources, prompts and completions: through the real `mcp` client over
Streamable HTTP and WebSocket, with progress, logs, sampling, elicitation, roots and
cancellation; and, in process, how they run (the loop thread, slow clients, shutdown).

Nothing here sleeps for pass/fail: handlers signal threading.Events, tests wait on them
with generous bounds.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import threading
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypedDict

import mcp_types as types
import pytest
from mcp.client.client import Client
from support import TOKEN, initialize_body, live_server, open_session, request, rpc
from websockets.asyncio.client import connect
from ws_client import websocket_client, ws_url

import mcp_auth
from mcp_auth import Context, McpServer
from mcp_auth.auth.tokens import Principal
from mcp_auth.mcp.context import Call
from mcp_auth.mcp.jsonrpc import REQUEST_CANCELLED, Notification, Request
from mcp_auth.mcp.protocol import LATEST_PROTOCOL_VERSION
from mcp_auth.sessions import Session

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Bound on waiting for something that happens at once when the code is right.
PATIENCE_SECONDS = 30.0
LOOP_THREAD = "mcp-auth-async"


class Sum(TypedDict):
    total: int
    by: str


class Waits:
    """Events a long async tool signals: it started; it saw asyncio.CancelledError."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()


async def _scaled_sum(a: int, b: int, scale: int) -> Sum:
    """Adds, then scales."""
    await asyncio.sleep(0)
    return {"total": (a + b) * scale, "by": "partial"}


class _AsyncCallable:
    """An object whose __call__ is a coroutine function."""

    async def __call__(self, word: str) -> str:
        await asyncio.sleep(0)
        return word.upper()


def _server(waits: Waits | None = None) -> McpServer:
    waits = waits or Waits()
    server = McpServer("async")

    @server.tool()
    async def add(a: int, b: int) -> Sum:
        """Adds two numbers, asynchronously."""
        await asyncio.sleep(0)
        return {"total": a + b, "by": "add"}

    @server.tool()
    async def countdown(start: int, ctx: Context) -> str:
        """Counts down, reporting progress and logging."""
        for n in range(start, 0, -1):
            await ctx.report_progress(start - n + 1, start, f"{n}...")
        await ctx.info({"finished": True})
        await ctx.debug("below the level the client set")
        return "liftoff"

    @server.tool()
    async def fails() -> str:
        """Always raises."""
        await asyncio.sleep(0)
        raise RuntimeError("the async tool broke")

    @server.tool()
    async def ask_model(question: str, ctx: Context) -> str:
        """Asks the client's model."""
        result = await ctx.sample(question, max_tokens=50, system_prompt="be brief")
        return f"model said: {result['content']['text']} ({result['model']})"

    @server.tool()
    async def ask_user(ctx: Context) -> dict[str, Any]:
        """Asks the user for a name."""
        answer = await ctx.elicit(
            "What is your name?",
            {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        )
        return {"action": answer["action"], "content": answer.get("content")}

    @server.tool()
    async def roots(ctx: Context) -> str:
        """Lists the client's roots."""
        return ",".join(root["uri"] for root in await ctx.list_roots())

    @server.tool()
    async def wait_forever(ctx: Context) -> str:
        """Waits until cancelled."""
        waits.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            waits.cancelled.set()
            raise
        return "never"

    @server.resource("config://async", mime_type="application/json")
    async def app_config() -> str:
        await asyncio.sleep(0)
        return '{"async": true}'

    @server.resource("notes://{name}", mime_type="text/plain")
    async def note(name: str) -> str:
        """A note by name."""
        await asyncio.sleep(0)
        return f"note {name}"

    @server.prompt()
    async def greet(name: str, style: str = "plain") -> str:
        """Greets someone."""
        await asyncio.sleep(0)
        return f"Say hello to {name} in a {style} way."

    @server.completion(prompt="greet")
    async def complete_greet(argument: str, value: str, context: dict[str, str]) -> list[str]:
        await asyncio.sleep(0)
        return [s for s in ("plain", "fancy", "formal") if s.startswith(value)]

    return server


def _http(url: str) -> Any:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    class Transport:
        async def __aenter__(self) -> Any:
            self._http = httpx2.AsyncClient(headers=AUTH, timeout=PATIENCE_SECONDS)
            await self._http.__aenter__()
            self._inner = streamable_http_client(url, http_client=self._http)
            return await self._inner.__aenter__()

        async def __aexit__(self, *exc: Any) -> None:
            await self._inner.__aexit__(*exc)
            await self._http.__aexit__(*exc)

    return Transport()


TRANSPORTS: list[Any] = [
    pytest.param(lambda url: _http(url), id="http"),
    pytest.param(lambda url: websocket_client(ws_url(url), AUTH), id="websocket"),
]


async def _sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    question = params.messages[0].content.text  # type: ignore[union-attr]
    assert params.system_prompt == "be brief" and params.max_tokens == 50
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"answer to {question}"), model="test-model"
    )


async def _elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    assert params.message == "What is your name?"
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def _roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work"), types.Root(uri="file:///tmp")])


# --- through the real client ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [pytest.param("auto", id="auto"), pytest.param("legacy", id="legacy")])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_tools_resources_prompts_and_completions(transport: Callable[[str], Any], mode: str) -> None:
    async def main(url: str) -> Any:
        async with Client(transport(url), mode=mode) as client:  # type: ignore[arg-type]
            return (
                await client.list_tools(),
                await client.call_tool("add", {"a": 2, "b": 3}),
                await client.call_tool("fails", {}),
                # `scale` is bound by the partial: a client's value is ignored, not applied.
                await client.call_tool("scaled_sum", {"a": 1, "b": 2, "scale": 1000}),
                await client.call_tool("shout", {"word": "hi"}),
                await client.read_resource("config://async"),
                await client.read_resource("notes://shopping"),
                await client.get_prompt("greet", {"name": "Ada", "style": "fancy"}),
                await client.complete({"type": "ref/prompt", "name": "greet"}, {"name": "style", "value": "f"}),
            )

    server = _server()
    # Not `async def`, but each returns something to await.
    server.tool(name="scaled_sum")(functools.partial(_scaled_sum, scale=10))
    server.tool(name="shout")(_AsyncCallable())
    with live_server(server) as live:
        tools, added, failed, scaled, shouted, config, note, prompt, completion = asyncio.run(main(live.url))
    listed = {tool.name: tool for tool in tools.tools}
    # Schemas inferred from async functions: the return annotation is what the call produces.
    assert listed["add"].output_schema is not None and listed["add"].output_schema["properties"]["total"] == {
        "type": "integer"
    }
    assert listed["add"].description == "Adds two numbers, asynchronously."
    # A partial's bound keyword is not a parameter a client could override.
    assert sorted(listed["scaled_sum"].input_schema["properties"]) == ["a", "b"]
    assert listed["scaled_sum"].description == "Adds, then scales."
    assert listed["shout"].input_schema["required"] == ["word"]
    assert added.is_error is False and added.structured_content == {"total": 5, "by": "add"}
    assert failed.is_error is True and "RuntimeError: the async tool broke" in failed.content[0].text
    assert scaled.structured_content == {"total": 30, "by": "partial"}
    assert shouted.content[0].text == "HI"
    assert config.contents[0].text == '{"async": true}'
    assert note.contents[0].text == "note shopping"
    assert prompt.messages[0].content.text == "Say hello to Ada in a fancy way."
    assert completion.completion.values == ["fancy", "formal"]


# logging/setLevel is a 2025-11-25 feature the 2.x client marks deprecated for 2026-07-28.
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_progress_and_log_messages(transport: Callable[[str], Any]) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(params: Any) -> None:
        logs.append(params.data)

    async def main(url: str) -> Any:
        async with Client(transport(url), mode="legacy", logging_callback=on_log) as client:
            await client.set_logging_level("info")
            return await client.call_tool("countdown", {"start": 3}, progress_callback=on_progress)

    with live_server(_server()) as live:
        result = asyncio.run(main(live.url))
    assert result.content[0].text == "liftoff"
    assert progress == [(1, 3, "3..."), (2, 3, "2..."), (3, 3, "1...")]
    assert logs == [{"finished": True}]  # the debug line is below the level the client set


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_sampling_elicitation_and_roots_mid_call(transport: Callable[[str], Any]) -> None:
    async def main(url: str) -> Any:
        async with Client(
            transport(url),
            mode="legacy",
            sampling_callback=_sampling,
            elicitation_callback=_elicitation,
            list_roots_callback=_roots,
        ) as client:
            return (
                await client.call_tool("ask_model", {"question": "2+2"}),
                await client.call_tool("ask_user", {}),
                await client.call_tool("roots", {}),
            )

    with live_server(_server()) as live:
        sampled, elicited, listed_roots = asyncio.run(main(live.url))
    assert sampled.content[0].text == "model said: answer to 2+2 (test-model)"
    assert elicited.structured_content == {"action": "accept", "content": {"name": "Ada"}}
    assert listed_roots.content[0].text == "file:///work,file:///tmp"


def test_an_async_client_error_answer_reaches_the_tool() -> None:
    async def refuse(context: Any, params: types.CreateMessageRequestParams) -> types.ErrorData:
        return types.ErrorData(code=-1, message="user declined sampling")

    async def main(url: str) -> Any:
        async with Client(_http(url), mode="legacy", sampling_callback=refuse) as client:
            return await client.call_tool("ask_model", {"question": "x"})

    with live_server(_server()) as live:
        result = asyncio.run(main(live.url))
    assert result.is_error is True and "user declined sampling" in result.content[0].text


# --- cancellation ----------------------------------------------------------------------------


def test_notifications_cancelled_cancels_the_coroutine_over_http() -> None:
    waits = Waits()
    with live_server(_server(waits)) as live:
        session_id = open_session(live.port)
        replies: dict[str, Any] = {}

        def call() -> None:
            replies["call"] = rpc(live.port, session_id, "tools/call", {"name": "wait_forever"}, request_id=77)

        worker = threading.Thread(target=call)
        worker.start()
        assert waits.started.wait(PATIENCE_SECONDS), "the tool never started"
        cancel = request(
            live.port,
            body={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77}},
            headers={"Mcp-Session-Id": session_id},
        )
        assert cancel.status == 202
        worker.join(PATIENCE_SECONDS)
        assert not worker.is_alive()
    assert waits.cancelled.is_set(), "the tool did not see asyncio.CancelledError"
    reply = replies["call"]
    # Nothing was sent before the answer, so it comes as plain JSON; SSE is as good.
    answer = reply.json() if reply.header("Content-Type") == "application/json" else reply.sse_messages()[-1]
    assert answer["id"] == 77 and answer["error"]["code"] == REQUEST_CANCELLED


def _ws_message(method: str, params: dict[str, Any] | None = None, request_id: int | None = None) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if request_id is not None:
        message["id"] = request_id
    return json.dumps(message)


async def _ws_open(url: str) -> Any:
    ws = await connect(ws_url(url), subprotocols=["mcp"], additional_headers=AUTH)  # type: ignore[list-item]
    await ws.send(json.dumps(initialize_body()))
    assert json.loads(await ws.recv())["id"] == 1
    await ws.send(_ws_message("notifications/initialized"))
    return ws


def test_notifications_cancelled_cancels_the_coroutine_over_websocket() -> None:
    waits = Waits()

    async def main(url: str) -> Any:
        ws = await _ws_open(url)
        try:
            await ws.send(_ws_message("tools/call", {"name": "wait_forever"}, request_id=5))
            started = await asyncio.to_thread(waits.started.wait, PATIENCE_SECONDS)
            assert started, "the tool never started"
            await ws.send(_ws_message("notifications/cancelled", {"requestId": 5}))
            return json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_SECONDS))
        finally:
            await ws.close()

    with live_server(_server(waits)) as live:
        answer = asyncio.run(main(live.url))
    assert answer["id"] == 5 and answer["error"]["code"] == REQUEST_CANCELLED
    assert waits.cancelled.is_set()


def test_closing_the_socket_cancels_the_coroutine() -> None:
    waits = Waits()

    async def main(url: str) -> None:
        ws = await _ws_open(url)
        await ws.send(_ws_message("tools/call", {"name": "wait_forever"}, request_id=5))
        assert await asyncio.to_thread(waits.started.wait, PATIENCE_SECONDS), "the tool never started"
        await ws.close()

    with live_server(_server(waits)) as live:
        asyncio.run(main(live.url))
        assert waits.cancelled.wait(PATIENCE_SECONDS), "the session ended but the tool went on"


def test_closing_the_app_cancels_running_coroutines_and_ends_the_loop_thread() -> None:
    waits = Waits()
    with live_server(_server(waits)) as live:
        session_id = open_session(live.port)
        worker = threading.Thread(
            target=lambda: rpc(live.port, session_id, "tools/call", {"name": "wait_forever"}), daemon=True
        )
        worker.start()
        assert waits.started.wait(PATIENCE_SECONDS), "the tool never started"
        loop_threads = [t for t in threading.enumerate() if t.name == LOOP_THREAD]
        assert loop_threads
    # live_server closed the app on the way out.
    assert waits.cancelled.is_set()
    assert not any(t.is_alive() for t in loop_threads)
    worker.join(PATIENCE_SECONDS)


# --- in process: how async handlers run ------------------------------------------------------

ADMIN = Principal(name="admin", tool_patterns=None, credential_id="a" * 64)


class BlockingChannel:
    """A channel whose sends wait for `release`, like a WebSocket peer that stopped reading."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.entered.set()
        assert self.release.wait(PATIENCE_SECONDS)
        self.messages.append(message)


class ListChannel:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def _call(server: McpServer, channel: Any = None) -> Call:
    channel = channel or ListChannel()
    call = Call(Session(ADMIN, channel, session_id="s"), ADMIN, channel, "127.0.0.1", lambda p: True)
    server.dispatcher.dispatch(Request("init", "initialize", {"protocolVersion": LATEST_PROTOCOL_VERSION}), call)
    server.dispatcher.handle_notification(Notification("notifications/initialized"), call)
    return call


def _tool_call(name: str, arguments: dict[str, Any] | None = None, progress: bool = False) -> Request:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if progress:
        params["_meta"] = {"progressToken": "p"}
    return Request(1, "tools/call", params)


@pytest.fixture
def closing() -> Any:
    servers: list[McpServer] = []

    def make() -> McpServer:
        servers.append(McpServer("in-process"))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_a_client_that_stops_reading_holds_only_its_own_call(closing: Callable[[], McpServer]) -> None:
    """Writes to the client happen on the call's thread, never on the loop other calls share."""
    server = closing()

    @server.tool()
    async def chatty(ctx: Context) -> str:
        await ctx.report_progress(1, 2)
        return "sent"

    @server.tool()
    async def quick() -> str:
        await asyncio.sleep(0)
        return "quick"

    blocked = BlockingChannel()
    stuck_answer: dict[str, Any] = {}
    stuck = threading.Thread(
        target=lambda: stuck_answer.update(
            server.dispatcher.dispatch(_tool_call("chatty", progress=True), _call(server, blocked))
        )
    )
    stuck.start()
    try:
        assert blocked.entered.wait(PATIENCE_SECONDS)
        # The loop is free while chatty's write waits: another async call completes.
        assert server.dispatcher.dispatch(_tool_call("quick"), _call(server))["content"][0]["text"] == "quick"
    finally:
        blocked.release.set()
        stuck.join(PATIENCE_SECONDS)
    assert stuck_answer["content"][0]["text"] == "sent"
    assert blocked.messages[0]["method"] == "notifications/progress"


def test_system_exit_in_an_async_tool_does_not_stop_the_loop(closing: Callable[[], McpServer]) -> None:
    server = closing()

    @server.tool()
    async def exits() -> str:
        raise SystemExit(3)

    @server.tool()
    async def fine() -> str:
        return "still here"

    call = _call(server)
    # As with a plain tool: SystemExit is not a tool result; the transport answers "Internal error".
    with pytest.raises(SystemExit):
        server.dispatcher.dispatch(_tool_call("exits"), call)
    assert server.dispatcher.dispatch(_tool_call("fine"), call)["content"][0]["text"] == "still here"


def test_a_blocking_context_method_inside_a_coroutine_is_refused_with_a_hint(
    closing: Callable[[], McpServer],
) -> None:
    server = closing()

    async def inner(ctx: Context) -> str:
        ctx.request("ping", {})  # the sync Context: this would block the loop
        return "unreachable"

    @server.tool()
    def wrapper(ctx: Context) -> Coroutine[Any, Any, str]:
        """Plain function returning a coroutine: it gets the sync Context."""
        return inner(ctx)

    result = server.dispatcher.dispatch(_tool_call("wrapper"), _call(server))
    assert result["isError"] is True
    assert "AsyncContext" in result["content"][0]["text"] and "await" in result["content"][0]["text"]


def test_async_context_annotation_makes_a_plain_callable_async(closing: Callable[[], McpServer]) -> None:
    server = closing()

    async def inner(ctx: mcp_auth.AsyncContext) -> str:
        await ctx.info("from inner")
        return "ok"

    @server.tool()
    def wrapper(ctx: mcp_auth.AsyncContext) -> Coroutine[Any, Any, Sum]:
        return inner(ctx)  # type: ignore[return-value]

    call = _call(server)
    assert server.dispatcher.dispatch(_tool_call("wrapper"), call)["content"][0]["text"] == "ok"
    assert call.channel.messages[-1]["params"]["data"] == "from inner"  # type: ignore[attr-defined]
    # `-> Coroutine[..., Sum]` describes what the call produces.
    assert server._registry.tools["wrapper"].definition["outputSchema"]["properties"]["by"] == {"type": "string"}


def test_a_context_kept_after_its_call_cannot_talk_to_the_client(closing: Callable[[], McpServer]) -> None:
    server = closing()
    kept: list[Any] = []

    @server.tool()
    async def keeps(ctx: Context) -> str:
        kept.append(ctx)
        return "done"

    @server.tool()
    async def uses_kept() -> str:
        await kept[0].info("late")
        return "sent"

    call = _call(server)
    server.dispatcher.dispatch(_tool_call("keeps"), call)
    result = server.dispatcher.dispatch(_tool_call("uses_kept"), call)
    assert result["isError"] is True and "this call has ended" in result["content"][0]["text"]


def test_a_late_call_after_close_starts_the_loop_again_and_nothing_is_left_unawaited(
    closing: Callable[[], McpServer],
) -> None:
    server = closing()

    @server.tool()
    async def hello() -> str:
        return "hello"

    call = _call(server)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert server.dispatcher.dispatch(_tool_call("hello"), call)["content"][0]["text"] == "hello"
        server.close()
        server.close()  # twice is harmless
        assert server.dispatcher.dispatch(_tool_call("hello"), call)["content"][0]["text"] == "hello"
        server.close()
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert not [t for t in threading.enumerate() if t.name == LOOP_THREAD and t.is_alive()]


def test_a_coroutine_that_swallows_cancellation_answers_with_what_it_returns(
    closing: Callable[[], McpServer],
) -> None:
    """Like a plain tool that checks ctx.cancelled and returns early: its result is the answer."""
    server = closing()
    started = threading.Event()

    @server.tool()
    async def stubborn(ctx: Context) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return f"stopped early, cancelled={ctx.cancelled}"
        return "never"

    call = _call(server)
    answer: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: answer.update(server.dispatcher.dispatch(_tool_call("stubborn"), call)))
    worker.start()
    assert started.wait(PATIENCE_SECONDS)
    server.dispatcher.handle_notification(Notification("notifications/cancelled", {"requestId": 1}), call)
    worker.join(PATIENCE_SECONDS)
    assert answer["content"][0]["text"] == "stopped early, cancelled=True"


def test_a_cancelled_async_resource_read_is_answered_as_cancelled(closing: Callable[[], McpServer]) -> None:
    server = closing()
    started = threading.Event()

    @server.resource("slow://thing")
    async def slow() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    call = _call(server)
    errors: list[Any] = []

    def read() -> None:
        try:
            server.dispatcher.dispatch(Request(1, "resources/read", {"uri": "slow://thing"}), call)
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=read)
    worker.start()
    assert started.wait(PATIENCE_SECONDS)
    server.dispatcher.handle_notification(Notification("notifications/cancelled", {"requestId": 1}), call)
    worker.join(PATIENCE_SECONDS)
    assert [getattr(e, "code", None) for e in errors] == [REQUEST_CANCELLED]  # not INTERNAL_ERROR


def test_a_coroutine_that_ignores_cancellation_cannot_hold_up_closing(
    closing: Callable[[], McpServer], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing waits ASYNC_SHUTDOWN_SECONDS (shortened here) for cancelled handlers, then ends the loop anyway."""
    monkeypatch.setattr("mcp_auth.mcp.asyncrun.ASYNC_SHUTDOWN_SECONDS", 0.2)
    server = closing()
    started = threading.Event()

    @server.tool()
    async def deaf() -> str:
        started.set()
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                continue  # the worst a tool author can do

    call = _call(server)
    errors: list[Any] = []

    def run() -> None:
        try:
            server.dispatcher.dispatch(_tool_call("deaf"), call)
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(PATIENCE_SECONDS)
    closer = threading.Thread(target=server.close)
    closer.start()
    closer.join(PATIENCE_SECONDS)
    worker.join(PATIENCE_SECONDS)
    assert not closer.is_alive() and not worker.is_alive()
    assert [getattr(e, "code", None) for e in errors] == [REQUEST_CANCELLED]
    assert not [t for t in threading.enumerate() if t.name == LOOP_THREAD and t.is_alive()]
    assert "1 async handler(s) went on 0.2 s after being cancelled" in caplog.text


async def _produces_sum() -> Sum:
    return {"total": 1, "by": "x"}


def _awaitable_of_sum() -> Awaitable[Sum]:
    return _produces_sum()


def _coroutine_of_sum() -> Coroutine[Any, Any, Sum]:
    return _produces_sum()


def _bare_awaitable() -> Awaitable:  # type: ignore[type-arg]
    return _produces_sum()


async def _produces_text() -> str:
    return "x"


SUM_SCHEMA = {
    "type": "object",
    "properties": {"total": {"type": "integer"}, "by": {"type": "string"}},
    "required": ["by", "total"],
}


@pytest.mark.parametrize(
    ("fn", "output_schema"),
    [
        pytest.param(_produces_sum, SUM_SCHEMA, id="async-def"),
        pytest.param(functools.partial(_produces_sum), SUM_SCHEMA, id="partial-of-async-def"),
        pytest.param(_awaitable_of_sum, SUM_SCHEMA, id="Awaitable[T]"),
        pytest.param(_coroutine_of_sum, SUM_SCHEMA, id="Coroutine[..., T]"),
        pytest.param(_bare_awaitable, None, id="bare-Awaitable"),
        pytest.param(_produces_text, None, id="async-def-str"),
    ],
)
def test_the_output_schema_describes_what_the_call_produces(
    fn: Callable[..., Any], output_schema: dict[str, Any] | None, closing: Callable[[], McpServer]
) -> None:
    server = closing()
    server.tool(name="t")(fn)
    assert server._registry.tools["t"].definition.get("outputSchema") == output_schema
    result = server.dispatcher.dispatch(_tool_call("t"), _call(server))
    assert result.get("isError") is None
    assert result.get("structuredContent") == ({"total": 1, "by": "x"} if output_schema else None)
