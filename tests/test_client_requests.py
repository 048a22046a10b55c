"""Server-to-client requests (sampling, elicitation, roots) in the middle of a tool call,
with the real `mcp` client over Streamable HTTP and over WebSocket; subscriptions and
list-changed notifications."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from support import TOKEN, initialize_body, live_server, open_session, request, rpc
from ws_client import websocket_client, ws_url

from mcp_auth import Context, McpServer

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _server() -> McpServer:
    server = McpServer("asks")

    @server.tool()
    def ask_model(question: str, ctx: Context) -> str:
        """Asks the client's model."""
        result = ctx.sample(question, max_tokens=50, system_prompt="be brief")
        return f"model said: {result['content']['text']} ({result['model']})"

    @server.tool()
    def ask_user(ctx: Context) -> dict[str, Any]:
        """Asks the user for a name."""
        answer = ctx.elicit(
            "What is your name?",
            {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        )
        return {"action": answer["action"], "content": answer.get("content")}

    @server.tool()
    def roots(ctx: Context) -> str:
        """Lists the client's roots."""
        return ",".join(root["uri"] for root in ctx.list_roots())

    @server.resource("counter://value")
    def counter() -> str:
        return "1"

    return server


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


def _http(url: str) -> Any:
    import httpx2

    class Transport:
        async def __aenter__(self) -> Any:
            self._http = httpx2.AsyncClient(headers=AUTH, timeout=30)
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


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sampling_elicitation_and_roots_mid_call(transport: Callable[[str], Any]) -> None:
    async def main(url: str) -> Any:
        async with Client(
            transport(url),
            mode="legacy",
            sampling_callback=_sampling,
            elicitation_callback=_elicitation,
            list_roots_callback=_roots,
        ) as client:
            sampled = await client.call_tool("ask_model", {"question": "2+2"})
            elicited = await client.call_tool("ask_user", {})
            roots = await client.call_tool("roots", {})
            return sampled, elicited, roots

    with live_server(_server()) as live:
        sampled, elicited, roots = asyncio.run(main(live.url))
    assert sampled.content[0].text == "model said: answer to 2+2 (test-model)"
    assert elicited.structured_content == {"action": "accept", "content": {"name": "Ada"}}
    assert roots.content[0].text == "file:///work,file:///tmp"


def test_a_client_without_the_capability_gets_an_error_result() -> None:
    async def main(url: str) -> Any:
        async with Client(_http(url), mode="legacy") as client:
            return await client.call_tool("ask_model", {"question": "x"})

    with live_server(_server()) as live:
        result = asyncio.run(main(live.url))
    assert result.is_error is True
    assert "sampling" in result.content[0].text


def test_a_client_error_answer_reaches_the_tool() -> None:
    async def refuse(context: Any, params: types.CreateMessageRequestParams) -> types.ErrorData:
        return types.ErrorData(code=-1, message="user declined sampling")

    async def main(url: str) -> Any:
        async with Client(_http(url), mode="legacy", sampling_callback=refuse) as client:
            return await client.call_tool("ask_model", {"question": "x"})

    with live_server(_server()) as live:
        result = asyncio.run(main(live.url))
    assert result.is_error is True
    assert "user declined sampling" in result.content[0].text


def test_cancelling_the_call_stops_the_wait() -> None:
    """notifications/cancelled for the tools/call reaches a handler waiting for the client."""
    with live_server(_server()) as live:
        # A session whose client declared sampling, so the tool asks; nobody answers.
        init = request(
            live.port,
            body={**initialize_body(), "params": {**initialize_body()["params"], "capabilities": {"sampling": {}}}},
        )
        session_id = init.header("Mcp-Session-Id") or ""
        replies: dict[str, Any] = {}

        def call() -> None:
            replies["call"] = rpc(
                live.port,
                session_id,
                "tools/call",
                {"name": "ask_model", "arguments": {"question": "q"}},
                request_id=77,
            )

        worker = threading.Thread(target=call)
        worker.start()
        session = next(s for s in live.app.sessions.each_negotiated() if s.session_id == session_id)
        for _ in range(400):  # bounded wait for the tool to be waiting on the client
            if len(session.replies):
                break
            threading.Event().wait(0.05)
        assert len(session.replies), "the tool never asked the client"
        cancel = request(
            live.port,
            body={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77}},
            headers={"Mcp-Session-Id": session_id},
        )
        assert cancel.status == 202
        worker.join(timeout=30)
        messages = replies["call"].sse_messages()
        assert messages[0]["method"] == "sampling/createMessage"
        assert messages[-1]["id"] == 77 and messages[-1]["error"]["code"] == -32800


# resources/subscribe is a 2025-11-25 feature the 2.x client marks deprecated for 2026-07-28.
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
def test_subscribed_sessions_get_resource_updates_on_the_socket() -> None:
    updates: list[str] = []

    async def main(url: str, server: McpServer) -> list[str]:
        seen = asyncio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ServerNotification) and isinstance(message, types.ResourceUpdatedNotification):
                updates.append(str(message.params.uri))
                seen.set()

        async with Client(websocket_client(ws_url(url), AUTH), mode="legacy", message_handler=on_message) as client:
            await client.subscribe_resource("counter://value")
            await asyncio.get_running_loop().run_in_executor(None, server.notify_resource_updated, "counter://value")
            await asyncio.get_running_loop().run_in_executor(None, server.notify_resource_updated, "counter://other")
            await asyncio.wait_for(seen.wait(), 30)
            await client.unsubscribe_resource("counter://value")
        return updates

    server = _server()
    with live_server(server) as live:
        assert asyncio.run(main(live.url, server)) == ["counter://value"]


def test_list_changed_reaches_the_get_stream() -> None:
    server = _server()
    with live_server(server) as live:
        session_id = open_session(live.port)
        import socket

        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(
                (
                    f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n\r\n"
                ).encode()
            )
            sock.settimeout(30)
            received = sock.recv(4096)
            assert received.startswith(b"HTTP/1.1 200")

            @server.tool()
            def added_later() -> str:
                """A tool added while clients are connected."""
                return "new"

            while b"list_changed" not in received:
                received += sock.recv(4096)
        assert b"notifications/tools/list_changed" in received
