"""The real `mcp` 2.3.0 client against a live mcp_auth server, in `auto` and `legacy` modes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from support import TOKEN, live_server

from mcp_auth import Context, McpServer, image_content

MODES = [pytest.param("auto", id="auto"), pytest.param("legacy", id="legacy")]


def run_client(url: str, token: str | None, mode: str, body: Callable[[Client], Awaitable[Any]], **kwargs: Any) -> Any:
    async def main() -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode, **kwargs) as client:  # type: ignore[arg-type]
                return await body(client)

    return asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_lists_and_calls_the_diagnostics_tools(mode: str) -> None:
    async def body(client: Client) -> Any:
        tools = await client.list_tools()
        echo = await client.call_tool("echo", {"text": "hello, world"})
        whoami = await client.call_tool("whoami", {})
        return tools, echo, whoami

    with live_server() as live:
        tools, echo, whoami = run_client(live.url, TOKEN, mode, body)
    assert sorted(tool.name for tool in tools.tools) == ["echo", "whoami"]
    assert echo.is_error is False
    assert echo.content[0].text == "hello, world"
    assert whoami.structured_content["token_name"] == "default"
    assert whoami.structured_content["client_address"] == "127.0.0.1"
    assert sorted(whoami.structured_content["tools"]) == ["echo", "whoami"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "token", [pytest.param(None, id="no-token"), pytest.param("wrong-token-0123456789abcdef", id="wrong-token")]
)
def test_without_the_token_the_client_gets_nothing(mode: str, token: str | None) -> None:
    async def body(client: Client) -> Any:
        return await client.list_tools()

    with live_server() as live, pytest.raises((MCPError, httpx2.HTTPError, ExceptionGroup)):
        run_client(live.url, token, mode, body)


def _rich_server() -> McpServer:
    server = McpServer("rich")

    @server.tool()
    def countdown(start: int, ctx: Context) -> str:
        """Counts down, reporting progress and logging."""
        for n in range(start, 0, -1):
            ctx.report_progress(start - n + 1, start, f"{n}...")
        ctx.info({"finished": True})
        return "liftoff"

    @server.tool()
    def fails() -> str:
        """Always raises."""
        raise RuntimeError("the tool broke")

    @server.tool()
    def picture() -> list[dict[str, Any]]:
        """An image and a caption."""
        return [image_content(b"\x89PNG\r\n", "image/png"), {"type": "text", "text": "a tiny png"}]

    @server.resource("notes://{name}", mime_type="text/plain")
    def note(name: str) -> str:
        """A note by name."""
        return f"note {name}"

    @server.resource("config://app", mime_type="application/json")
    def app_config() -> str:
        return '{"debug": false}'

    @server.prompt()
    def greet(name: str, style: str = "plain") -> str:
        """Greets someone.

        Args:
            name: Who to greet.
            style: plain or fancy.
        """
        return f"Say hello to {name} in a {style} way."

    @server.completion(prompt="greet")
    def complete_greet(argument: str, value: str, context: dict[str, str]) -> list[str]:
        return [s for s in ("plain", "fancy", "formal") if s.startswith(value)]

    return server


@pytest.mark.parametrize("mode", MODES)
def test_progress_logging_resources_prompts_and_completion(mode: str) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(params: Any) -> None:
        logs.append(params.data)

    async def body(client: Client) -> Any:
        result = await client.call_tool("countdown", {"start": 3}, progress_callback=on_progress)
        failed = await client.call_tool("fails", {})
        picture = await client.call_tool("picture", {})
        resources = await client.list_resources()
        templates = await client.list_resource_templates()
        note = await client.read_resource("notes://shopping")
        prompt = await client.get_prompt("greet", {"name": "Ada", "style": "fancy"})
        completion = await client.complete({"type": "ref/prompt", "name": "greet"}, {"name": "style", "value": "f"})
        return result, failed, picture, resources, templates, note, prompt, completion

    with live_server(_rich_server()) as live:
        result, failed, picture, resources, templates, note, prompt, completion = run_client(
            live.url, TOKEN, mode, body, logging_callback=on_log, log_level="info"
        )
    assert result.content[0].text == "liftoff"
    assert [p[0] for p in progress] == [1, 2, 3]
    assert progress[0][1] == 3 and progress[0][2] == "3..."
    assert logs == [{"finished": True}]
    assert failed.is_error is True and "the tool broke" in failed.content[0].text
    assert picture.content[0].type == "image" and picture.content[0].mime_type == "image/png"
    assert [r.uri for r in resources.resources] == ["config://app"]
    assert [t.uri_template for t in templates.resource_templates] == ["notes://{name}"]
    assert note.contents[0].text == "note shopping"
    assert prompt.messages[0].content.text == "Say hello to Ada in a fancy way."
    assert completion.completion.values == ["fancy", "formal"]


@pytest.mark.parametrize("mode", MODES)
def test_invalid_arguments_reach_the_client_as_a_tool_error(mode: str) -> None:
    """The refusal a real client sees for {"n": -5} against "minimum": 0; the tool never runs."""
    server = McpServer("validated")
    ran: list[int] = []

    @server.tool(input_schema={"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}})
    def count(n: int = 0) -> str:
        ran.append(n)
        return f"counted {n}"

    async def body(client: Client) -> Any:
        return await client.call_tool("count", {"n": -5}), await client.call_tool("count", {"n": 5})

    with live_server(server) as live:
        refused, accepted = run_client(live.url, TOKEN, mode, body)
    assert refused.is_error is True
    assert [block.text for block in refused.content] == [
        "Invalid arguments: arguments.n: -5 is less than the minimum of 0"
    ]
    assert accepted.is_error is False
    assert accepted.content[0].text == "counted 5"
    assert ran == [5]


def test_bare_decorators_register_tools_and_prompts_like_fastmcp() -> None:
    """`@server.tool` / `@server.prompt` without parentheses (the FastMCP habit) register the function."""
    server = McpServer("bare")

    @server.tool
    def shout(text: str) -> str:
        """Upper-cases the text."""
        return text.upper()

    @server.prompt
    def haiku(topic: str) -> str:
        """A haiku prompt."""
        return f"Write a haiku about {topic}."

    assert shout("still a function") == "STILL A FUNCTION"
    assert haiku("rain") == "Write a haiku about rain."

    async def body(client: Client) -> Any:
        tools = await client.list_tools()
        result = await client.call_tool("shout", {"text": "hi"})
        prompts = await client.list_prompts()
        prompt = await client.get_prompt("haiku", {"topic": "rain"})
        return tools, result, prompts, prompt

    with live_server(server) as live:
        tools, result, prompts, prompt = run_client(live.url, TOKEN, "auto", body)
    assert [tool.name for tool in tools.tools] == ["shout"]
    assert tools.tools[0].description == "Upper-cases the text."
    assert result.is_error is False and result.content[0].text == "HI"
    assert [p.name for p in prompts.prompts] == ["haiku"]
    assert prompt.messages[0].content.text == "Write a haiku about rain."


def test_a_bare_resource_decorator_is_refused_at_decoration_time() -> None:
    server = McpServer("bare")
    with pytest.raises(TypeError, match=r'use @server\.resource\("uri"\)'):

        @server.resource  # type: ignore[arg-type]
        def config() -> str:
            return "{}"


def test_auto_mode_negotiates_the_stateless_revision_and_is_never_refused(caplog: pytest.LogCaptureFixture) -> None:
    """`mcp` 2.x in its default mode probes with server/discover at 2026-07-28: this server speaks it,
    so the client stays on the stateless revision (no fallback to initialize) and nothing is denied."""

    async def body(client: Client) -> Any:
        tools = await client.list_tools()
        echoed = await client.call_tool("echo", {"text": "stateless"})
        return client.protocol_version, tools, echoed

    with caplog.at_level(logging.DEBUG, logger="mcp_auth"), live_server() as live:
        version, tools, echoed = run_client(live.url, TOKEN, "auto", body)
    assert version == "2026-07-28"
    assert sorted(tool.name for tool in tools.tools) == ["echo", "whoami"]
    assert echoed.content[0].text == "stateless"
    audited = [r.audit for r in caplog.records if getattr(r, "audit", None)]
    assert [a for a in audited if a["event"] == "denied"] == []


def test_an_unsupported_protocol_version_is_still_answered_400_with_the_supported_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A version nobody here speaks is negotiation, not a denial: a debug line, no audit event."""
    with caplog.at_level(logging.DEBUG, logger="mcp_auth"), live_server() as live:
        response = httpx2.post(
            live.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "1999-01-01",
            },
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32022 and error["data"]["supported"]
    assert error["data"]["requested"] == "1999-01-01" and response.json()["id"] == 1
    audited = [r.audit for r in caplog.records if getattr(r, "audit", None)]
    assert [a for a in audited if a["event"] == "denied"] == []
    negotiation = [r for r in caplog.records if "protocol version negotiation" in r.getMessage()]
    assert negotiation and all(r.levelno == logging.DEBUG for r in negotiation)
