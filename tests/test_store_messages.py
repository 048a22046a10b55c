"""Messages between processes sharing a session store (Redis pub/sub): a client's answer to a
server-to-client request landing on another process, cancellation of a call running elsewhere,
and a GET stream receiving resources/updated caused by a call served elsewhere.

The two "processes" are two servers with their own app and McpServer each, sharing only a
real redis-server. The real `mcp` client is routed by a transport that sends each kind of
message to a chosen server, so the case under test happens every time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from redis_support import RedisServer, module_redis
from support import TOKEN, Live, live_server, open_session, request, rpc
from test_listen import open_listen, tag

from mcp_auth import Context, McpServer

# Generous: how long a test waits for something that must happen (never a pass/fail timing).
PATIENCE_SECONDS = 30.0
REQUEST_CANCELLED = -32800


class Waits:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()


def _server(waits: Waits) -> McpServer:
    server = McpServer("messages")

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

    @server.tool()
    def wait_for_cancel(ctx: Context) -> str:
        """Runs until the client cancels it."""
        waits.started.set()
        deadline = time.monotonic() + PATIENCE_SECONDS
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if ctx.cancelled:
            waits.cancelled.set()
        return "cancelled" if ctx.cancelled else "not cancelled"

    @server.tool()
    def bump() -> str:
        """Changes the counter resource and says so to subscribers."""
        server.notify_resource_updated("counter://value")
        return "bumped"

    @server.resource("counter://value")
    def counter() -> str:
        return "1"

    return server


shared_redis = module_redis("shared_redis")


@pytest.fixture
def two(shared_redis: RedisServer) -> Iterator[tuple[Live, Live, Waits, Waits]]:
    waits = Waits(), Waits()
    with live_server(_server(waits[0]), session_store=shared_redis.url) as first:
        with live_server(_server(waits[1]), session_store=shared_redis.url) as second:
            for live in (first, second):  # each process listens before the test sends anything
                live.app.sessions.bus.start()  # type: ignore[attr-defined]
                assert live.app.sessions.bus.wait_subscribed(PATIENCE_SECONDS)  # type: ignore[attr-defined]
            yield first, second, *waits


def _routed(route: Callable[[str, dict[str, Any] | None], int], seen: list[tuple[int, str]]) -> Any:
    """An httpx transport that sends each request to the port `route` picks from its method and JSON body."""

    class Routed(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            body = json.loads(request.content) if request.method == "POST" and request.content else None
            port = route(request.method, body)
            seen.append((port, request.method if body is None else str(body.get("method", "answer"))))
            request.url = request.url.copy_with(port=port)
            return await super().handle_async_request(request)

    return Routed()


def _is_answer(body: dict[str, Any] | None) -> bool:
    return body is not None and "method" not in body and ("result" in body or "error" in body)


async def _elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def _roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work")])


def test_answers_to_server_requests_reach_the_handler_on_another_process(
    two: tuple[Live, Live, Waits, Waits],
) -> None:
    first, second, _, _ = two
    seen: list[tuple[int, str]] = []
    transport = _routed(lambda method, body: second.port if _is_answer(body) else first.port, seen)

    async def main() -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx2.AsyncClient(headers=headers, timeout=PATIENCE_SECONDS, transport=transport) as http:
            client_transport = streamable_http_client(first.url, http_client=http)
            async with Client(
                client_transport,  # type: ignore[arg-type]
                mode="legacy",
                elicitation_callback=_elicitation,
                list_roots_callback=_roots,
            ) as client:
                return await client.call_tool("ask_user", {}), await client.call_tool("roots", {})

    elicited, listed = asyncio.run(main())
    assert elicited.structured_content == {"action": "accept", "content": {"name": "Ada"}}
    assert listed.content[0].text == "file:///work"
    assert [port for port, kind in seen if kind == "answer"] == [second.port, second.port]


def test_cancellation_reaches_a_call_running_on_another_process(two: tuple[Live, Live, Waits, Waits]) -> None:
    first, second, waits, _ = two
    session_id = open_session(first.port)
    replies: dict[str, Any] = {}

    def call() -> None:
        replies["call"] = rpc(first.port, session_id, "tools/call", {"name": "wait_for_cancel"}, request_id=77)

    worker = threading.Thread(target=call)
    worker.start()
    assert waits.started.wait(PATIENCE_SECONDS), "the tool never started"
    cancel = request(
        second.port,
        body={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77}},
        headers={"Mcp-Session-Id": session_id},
    )
    assert cancel.status == 202
    worker.join(PATIENCE_SECONDS)
    assert not worker.is_alive()
    assert waits.cancelled.is_set(), "the call on the first process never saw the cancellation"
    reply = replies["call"]
    answer = reply.json() if reply.header("Content-Type") == "application/json" else reply.sse_messages()[-1]
    assert answer["id"] == 77


def _open_get_stream(port: int, session_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(PATIENCE_SECONDS)
    sock.sendall(
        (
            f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n\r\n"
        ).encode()
    )
    return sock


def test_a_get_stream_receives_resource_updates_caused_on_another_process(
    two: tuple[Live, Live, Waits, Waits],
) -> None:
    first, second, _, _ = two
    session_id = open_session(first.port)
    with _open_get_stream(second.port, session_id) as stream:
        received = stream.recv(4096)
        assert received.startswith(b"HTTP/1.1 200"), received
        # Subscribed on the first process after the stream opened on the second: the second's
        # copy learns of it from the store (a "state changed" message), not from its own request.
        assert rpc(first.port, session_id, "resources/subscribe", {"uri": "counter://value"}).status == 200
        bumped = rpc(first.port, session_id, "tools/call", {"name": "bump", "arguments": {}})
        assert bumped.status == 200
        deadline = time.monotonic() + PATIENCE_SECONDS  # keepalives come every 15 s: recv alone never times out
        while b"notifications/resources/updated" not in received:
            assert time.monotonic() < deadline, "the update never reached the stream"
            chunk = stream.recv(4096)
            assert chunk, "the stream ended without the update"
            received += chunk
    assert b"counter://value" in received


def test_delete_on_one_process_ends_a_get_stream_on_the_other(two: tuple[Live, Live, Waits, Waits]) -> None:
    first, second, _, _ = two
    session_id = open_session(first.port)
    with _open_get_stream(second.port, session_id) as stream:
        received = stream.recv(4096)
        assert received.startswith(b"HTTP/1.1 200"), received
        assert request(first.port, "DELETE", headers={"Mcp-Session-Id": session_id}).status == 204
        # The stream's connection ends (at once, on the "ended" message; at the latest at the next
        # liveness check), well before the 15 s keepalive would have noticed.
        deadline = time.monotonic() + PATIENCE_SECONDS
        while chunk := stream.recv(4096):
            assert time.monotonic() < deadline, "the stream outlived its session"
            received += chunk
    assert b"resources/updated" not in received


def test_a_listen_hears_of_changes_made_on_another_process(two: tuple[Live, Live, Waits, Waits]) -> None:
    """subscriptions/listen (2026-07-28) on the second process; the change is made on the first."""
    first, second, _, _ = two
    second.app.listens.keepalive_seconds = 3600.0  # a quiet stream then fails by read timeout, never hangs
    with open_listen(second, {"resourceSubscriptions": ["counter://value"]}, request_id="far") as stream:
        ack = stream.next()
        assert ack is not None and ack["params"]["notifications"] == {"resourceSubscriptions": ["counter://value"]}
        first.app.server.notify_resource_updated("counter://value")
        updated = stream.next()
    assert updated is not None and updated["method"] == "notifications/resources/updated"
    assert updated["params"]["uri"] == "counter://value" and tag(updated) == "far"
