"""subscriptions/listen (MCP 2026-07-28) on WebSocket, and with the real `mcp` 2.3.0 client's `Client.listen`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, SubscriptionLost, ToolsListChanged
from support import TOKEN, Live, live_server
from test_listen import listen_server
from test_readme import block
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from ws_client import ws_url

from mcp_auth import McpServer
from mcp_auth.auth.tokens import add_token, revoke_token
from mcp_auth.mcp.modern import META_SUBSCRIPTION_ID

MODERN = "2026-07-28"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_SECONDS = 30.0
SERVER_BUSY = -32000
# How long a test lets the server's close run before it lets a paused listen go on.
CLOSE_GRACE_SECONDS = 2.0


def envelope() -> dict[str, Any]:
    return {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def listen_message(request_id: Any, notifications: dict[str, Any]) -> str:
    params = {"_meta": envelope(), "notifications": notifications}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "subscriptions/listen", "params": params})


def cancel_message(request_id: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}})


def open_socket(live: Live, token: str = TOKEN) -> connect:
    """A socket to use as `async with`: closed however the test ends."""
    return connect(ws_url(live.url), subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {token}"})  # type: ignore[list-item]


def list_tools(request_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/list", "params": {"_meta": envelope()}}


async def exchange(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    return await receive(ws)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))  # type: ignore[no-any-return]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# --- WebSocket ---------------------------------------------------------------------------------


def test_a_listen_on_a_socket_is_acknowledged_tagged_and_cancelled() -> None:
    server = listen_server()

    async def main(live: Live) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
        async with open_socket(live) as ws:
            await ws.send(
                listen_message("w1", {"toolsListChanged": True, "resourceSubscriptions": ["file:///nowhere"]})
            )
            ack = await receive(ws)
            await asyncio.to_thread(server.notify_list_changed, "tools")
            changed = await receive(ws)
            await ws.send(cancel_message("w1"))
            # The socket reads in order: once a later request's answer is back, the cancel was handled.
            first = await exchange(ws, list_tools(5))
            await asyncio.to_thread(server.notify_list_changed, "tools")
            # Any notification would be on the socket before this answer.
            listed = await exchange(ws, list_tools(6))
            assert first["id"] == 5
            open_after = len(server.dispatcher.subscriptions)
            return ack, changed, listed, open_after

    with live_server(server) as live:
        ack, changed, listed, open_after = run(main(live))
        assert live.app.http.event_streams.in_use() == 0
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"] == {"_meta": {META_SUBSCRIPTION_ID: "w1"}, "notifications": {"toolsListChanged": True}}
    assert changed["method"] == "notifications/tools/list_changed"
    assert changed["params"]["_meta"][META_SUBSCRIPTION_ID] == "w1"
    assert listed["id"] == 6 and "result" in listed
    assert open_after == 0


def test_a_revoked_tokens_socket_listens_are_cancelled_then_closed_4401(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    doomed = add_token(path, "doomed", None)
    server = listen_server()

    async def main(live: Live) -> tuple[dict[str, Any], dict[str, Any], int | None]:
        async with open_socket(live, doomed) as ws:
            await ws.send(listen_message(11, {"toolsListChanged": True}))
            ack = await receive(ws)
            revoke_token(path, "doomed")
            await asyncio.to_thread(server.notify_list_changed, "tools")  # step 7 before it is sent
            cancelled = await receive(ws)
            with pytest.raises(ConnectionClosed):
                await receive(ws)
            return ack, cancelled, ws.close_code

    with live_server(server, tokens_file=str(path)) as live:
        ack, cancelled, code = run(main(live))
        assert len(server.dispatcher.subscriptions) == 0
    assert ack["params"]["_meta"][META_SUBSCRIPTION_ID] == 11
    assert cancelled == {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": 11, "reason": "token revoked"},
    }
    assert code == 4401


def test_a_socket_listen_that_shutdown_overtakes_is_refused_not_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listen that passed the first shutdown check as shutdown began is refused when it would
    register: `close_all` may already have ended the socket's listens and would never end this one.
    The pause is injected while the listen takes its place in the stream budget."""
    taking = threading.Event()
    go_on = threading.Event()

    async def main(live: Live) -> dict[str, Any]:
        capacity = live.app.listens.capacity
        acquire = capacity.acquire

        def paused_acquire(key: Any) -> Any:
            taking.set()
            go_on.wait(WAIT_SECONDS)
            return acquire(key)

        monkeypatch.setattr(capacity, "acquire", paused_acquire)
        async with open_socket(live) as ws:
            await ws.send(listen_message("late", {"toolsListChanged": True}))
            assert await asyncio.to_thread(taking.wait, WAIT_SECONDS)
            live.app.shutdown_event.set()  # what close() does first
            go_on.set()
            return await receive(ws)

    with live_server(listen_server()) as live:
        answer = run(main(live))
        assert live.app.listens.capacity.in_use() == 0
    assert answer["id"] == "late"
    assert answer["error"]["code"] == SERVER_BUSY
    assert "shutting down" in answer["error"]["message"]


def test_socket_listens_share_the_stream_budget() -> None:
    async def main(live: Live) -> tuple[dict[str, Any], dict[str, Any]]:
        async with open_socket(live) as ws:
            await ws.send(listen_message("a", {"toolsListChanged": True}))
            first = await receive(ws)
            await ws.send(listen_message("b", {"toolsListChanged": True}))
            refused = await receive(ws)
            return first, refused

    # max_streams 2: one place per token.
    with live_server(listen_server(), max_streams=2) as live:
        first, refused = run(main(live))
    assert first["method"] == "notifications/subscriptions/acknowledged"
    assert refused["id"] == "b" and refused["error"]["code"] == SERVER_BUSY
    assert refused["error"]["data"]["retryAfter"] > 0
    assert "at most 1 per token" in refused["error"]["message"]


def test_shutdown_ends_a_socket_listen_with_its_result() -> None:
    async def main(live: Live) -> tuple[dict[str, Any], int | None]:
        async with open_socket(live) as ws:
            await ws.send(listen_message("s", {"toolsListChanged": True}))
            await receive(ws)
            await asyncio.to_thread(live.app.close)
            final = await receive(ws)
            with pytest.raises(ConnectionClosed):
                await receive(ws)
            return final, ws.close_code

    with live_server(listen_server()) as live:
        final, code = run(main(live))
    assert final["id"] == "s"
    assert final["result"]["resultType"] == "complete"
    assert final["result"]["_meta"][META_SUBSCRIPTION_ID] == "s"
    assert code == 1001


def test_shutdown_waits_for_the_result_a_socket_is_sending_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The socket's own thread may notice shutdown and start ending its listens before
    `close_all` reaches them: shutdown must wait for that result, not close the socket 1001 under it.

    A pause is injected where the socket's thread is ending its listen (in the dispatcher's
    `listen_final_result`, the listen already taken from the open ones); the server's close runs
    meanwhile. Without the wait, close sends 1001 first and the result is lost (a race once seen
    under load). With it, close waits for the pause, which then times out: the order holds however
    long it takes."""
    server = listen_server()
    dispatcher = server.dispatcher
    final_result = dispatcher.listen_final_result
    ending = threading.Event()
    closed = threading.Event()

    def paused_final_result(subscription: Any) -> dict[str, Any]:
        ending.set()
        closed.wait(WAIT_SECONDS)  # the test sets it once close returned, or after CLOSE_GRACE_SECONDS
        return final_result(subscription)

    monkeypatch.setattr(dispatcher, "listen_final_result", paused_final_result)

    async def main(live: Live) -> tuple[dict[str, Any], int | None]:
        async with open_socket(live) as ws:
            await ws.send(listen_message("s", {"toolsListChanged": True}))
            await receive(ws)
            live.app.shutdown_event.set()  # what close() does first; the socket's thread notices it within a poll
            assert await asyncio.to_thread(ending.wait, WAIT_SECONDS)
            closing = asyncio.ensure_future(asyncio.to_thread(live.app.close))
            await asyncio.wait([closing], timeout=CLOSE_GRACE_SECONDS)  # done early only when close did not wait
            closed.set()
            await closing
            final = await receive(ws)
            with pytest.raises(ConnectionClosed):
                await receive(ws)
            return final, ws.close_code

    with live_server(server) as live:
        final, code = run(main(live))
    assert final["id"] == "s"
    assert final["result"]["resultType"] == "complete"
    assert code == 1001


# --- the real mcp 2.3.0 client ------------------------------------------------------------------


def test_the_mcp_client_listens_and_hears_changes() -> None:
    server = listen_server()

    async def main(live: Live) -> tuple[str | None, Any, list[Any]]:
        async with httpx2.AsyncClient(headers=AUTH, timeout=WAIT_SECONDS) as http:
            async with Client(streamable_http_client(live.url, http_client=http)) as client:
                async with client.listen(
                    tools_list_changed=True, resource_subscriptions=["file:///public/a", "file:///nowhere"]
                ) as subscription:
                    await asyncio.to_thread(server.notify_resource_updated, "file:///public/a")
                    await asyncio.to_thread(server.notify_list_changed, "tools")
                    events = [await anext(subscription), await anext(subscription)]
                return client.protocol_version, subscription.honored, events

    with live_server(server) as live:
        version, honored, events = run(main(live))
        # The client closed its stream: the server forgets the subscription.
    assert version == MODERN
    assert honored.tools_list_changed is True
    assert honored.resource_subscriptions == ["file:///public/a"]
    assert events == [ResourceUpdated(uri="file:///public/a"), ToolsListChanged()]


def test_the_mcp_client_ends_gracefully_on_shutdown_and_loses_a_revoked_listen(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    doomed = add_token(path, "doomed", None)
    server: McpServer = listen_server()

    async def listen_until_end(live: Live, token: str, end: Any) -> str:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=WAIT_SECONDS) as http:
            async with Client(streamable_http_client(live.url, http_client=http)) as client:
                async with client.listen(tools_list_changed=True) as subscription:
                    await asyncio.to_thread(end)
                    try:
                        async for _event in subscription:
                            pass
                    except SubscriptionLost:
                        return "lost"
                    return "graceful"

    def revoke_and_notify() -> None:
        revoke_token(path, "doomed")
        server.notify_list_changed("tools")

    with live_server(server, tokens_file=str(path)) as live:
        assert run(listen_until_end(live, doomed, revoke_and_notify)) == "lost"
    with live_server(server) as live:
        assert run(listen_until_end(live, TOKEN, live.app.close)) == "graceful"


def test_the_readme_listen_snippet_runs() -> None:
    """The README's `client.listen` example, run as written inside a connected client."""
    server = listen_server()

    @server.resource("config://app")
    def app_config() -> str:
        return "{}"

    source = "async def snippet(client):\n" + textwrap.indent(block("python", "client.listen("), "    ")
    namespace: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), namespace)

    async def main(live: Live) -> str:
        async with httpx2.AsyncClient(headers=AUTH, timeout=WAIT_SECONDS) as http:
            async with Client(streamable_http_client(live.url, http_client=http)) as client:
                output = io.StringIO()
                with contextlib.redirect_stdout(output):
                    task = asyncio.create_task(namespace["snippet"](client))
                    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
                    while "honoured:" not in output.getvalue():  # until the acknowledgment arrived
                        assert not task.done() and asyncio.get_running_loop().time() < deadline
                        await asyncio.sleep(0.01)
                    await asyncio.to_thread(server.notify_list_changed, "tools")
                    await asyncio.wait_for(task, WAIT_SECONDS)
                return output.getvalue()

    with live_server(server) as live:
        printed = run(main(live))
    assert "resource_subscriptions=['config://app']" in printed
    assert "changed: ToolsListChanged" in printed
