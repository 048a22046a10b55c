"""MCP over WebSocket: real `websockets` clients and the `mcp` client over a WebSocket adapter."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mcp.client.client import Client
from support import TOKEN, Live, ManualClock, initialize_body, live_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from ws_client import websocket_client, ws_url

from mcp_auth import Context, McpServer
from mcp_auth.auth.tokens import add_token, revoke_token
from mcp_auth.mcp.jsonrpc import FORBIDDEN, PARSE_ERROR

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_RATE_LIMIT: dict[str, Any] = {"rate_limit_failures": 100_000}
# The idle timeout in the idle test: long in real time, so only the test's clock can reach it.
IDLE_SECONDS = 600.0


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def open_socket(live: Live, headers: dict[str, str] | None = None, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("subprotocols", ["mcp"])
    return await connect(ws_url(live.url), additional_headers=AUTH if headers is None else headers, **kwargs)


async def exchange(ws: ClientConnection, message: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    return json.loads(await asyncio.wait_for(ws.recv(), 30))


async def initialized(ws: ClientConnection) -> dict[str, Any]:
    reply = await exchange(ws, initialize_body())
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return reply


def call(request_id: int, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments or {}},
    }


# --- the mcp client over WebSocket ------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_mcp_client_lists_and_calls_tools_over_websocket(mode: str) -> None:
    async def main(url: str) -> Any:
        async with Client(websocket_client(url, AUTH), mode=mode) as client:  # type: ignore[arg-type]
            tools = await client.list_tools()
            echo = await client.call_tool("echo", {"text": "over a socket"})
            whoami = await client.call_tool("whoami", {})
            return tools, echo, whoami, client.protocol_version

    with live_server() as live:
        tools, echo, whoami, version = run(main(ws_url(live.url)))
    # The default mode stays on the stateless revision over a socket too; legacy initializes.
    assert version == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert sorted(t.name for t in tools.tools) == ["echo", "whoami"]
    assert echo.content[0].text == "over a socket"
    assert whoami.structured_content["token_name"] == "default"
    assert whoami.structured_content["session_id"] is None


def _progress_server() -> McpServer:
    server = McpServer("ws-progress")

    @server.tool()
    def count(to: int, ctx: Context) -> str:
        """Counts with progress."""
        for n in range(to):
            ctx.report_progress(n + 1, to)
        ctx.info("counted")
        return f"counted to {to}"

    return server


def test_notifications_travel_on_the_socket() -> None:
    progress: list[float] = []
    logs: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def on_log(params: Any) -> None:
        logs.append(params.data)

    async def main(url: str) -> Any:
        async with Client(websocket_client(url, AUTH), mode="legacy", logging_callback=on_log) as client:  # type: ignore[arg-type]
            return await client.call_tool("count", {"to": 3}, progress_callback=on_progress)

    with live_server(_progress_server()) as live:
        result = run(main(ws_url(live.url)))
    assert result.content[0].text == "counted to 3"
    assert progress == [1, 2, 3]
    assert logs == ["counted"]


# --- refusals happen before the handshake ---------------------------------------------------


REFUSALS = [
    pytest.param({}, {}, 401, id="no-token"),
    pytest.param({"Authorization": "Bearer wrong-token-0123456789abcdef"}, {}, 401, id="wrong-token"),
    pytest.param({**AUTH, "Origin": "http://evil.example"}, {}, 403, id="bad-origin"),
    pytest.param({**AUTH, "Origin": "null"}, {}, 403, id="null-origin"),
    pytest.param(AUTH, {"allowed_ips": ("10.0.0.0/8",)}, 403, id="ip-not-allowed"),
    pytest.param(AUTH, {"allowed_hosts": ()}, 101, id="allowed-defaults-accept"),
]


@pytest.mark.parametrize(("headers", "settings", "status"), REFUSALS)
def test_every_refusal_is_plain_http_before_the_101(
    headers: dict[str, str], settings: dict[str, Any], status: int
) -> None:
    async def main(live: Live) -> int:
        try:
            ws = await open_socket(live, headers)
        except InvalidStatus as exc:
            assert b"Traceback" not in exc.response.body
            return exc.response.status_code
        await ws.close()
        return 101

    with live_server(**settings) as live:
        assert run(main(live)) == status


def test_a_bad_host_is_refused_before_the_101(live: Live) -> None:
    async def main() -> int:
        try:
            await connect(
                f"ws://evil.example:{live.port}/mcp",
                host="127.0.0.1",
                port=live.port,
                subprotocols=["mcp"],
                additional_headers=AUTH,
            )  # type: ignore[list-item]
        except InvalidStatus as exc:
            return exc.response.status_code
        return 101

    assert run(main()) == 403


def test_rate_limited_client_is_429_even_with_the_token() -> None:
    async def main(live: Live) -> list[int]:
        statuses = []
        wrong = [{"Authorization": f"Bearer wrong-token-0123456789abcdef-{n}"} for n in range(2)]
        for headers in (*wrong, AUTH):
            try:
                ws = await open_socket(live, headers)
                await ws.close()
                statuses.append(101)
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)
                if exc.response.status_code == 429:
                    assert int(exc.response.headers["Retry-After"]) >= 1
        return statuses

    with live_server(rate_limit_failures=2, rate_limit_window=3600) as live:
        assert run(main(live)) == [401, 401, 429]


@pytest.mark.parametrize(
    "subprotocols",
    [pytest.param(None, id="none"), pytest.param(["graphql-ws"], id="other"), pytest.param(["MCP"], id="wrong-case")],
)
def test_the_mcp_subprotocol_is_required(live: Live, subprotocols: list[str] | None) -> None:
    async def main() -> int:
        try:
            await open_socket(live, subprotocols=subprotocols)
        except InvalidStatus as exc:
            assert b"subprotocol" in exc.response.body
            return exc.response.status_code
        return 101

    assert run(main()) == 400


def test_the_accepted_subprotocol_is_mcp(live: Live) -> None:
    async def main() -> str | None:
        ws = await open_socket(live, subprotocols=["other", "mcp"])
        chosen = ws.subprotocol
        await ws.close()
        return chosen

    assert run(main()) == "mcp"


def test_past_the_socket_bound_the_answer_is_503() -> None:
    async def main(live: Live) -> tuple[int, str]:
        first = await open_socket(live)
        await initialized(first)
        try:
            await open_socket(live)
        except InvalidStatus as exc:
            status = exc.response.status_code
        else:
            status = 101
        # The first socket is unaffected.
        reply = await exchange(first, call(2, "echo", {"text": "still here"}))
        await first.close()
        return status, reply["result"]["content"][0]["text"]

    with live_server(max_websockets=1) as live:
        assert run(main(live)) == (503, "still here")


# --- the token carrier for browsers ---------------------------------------------------------


def test_subprotocol_token_is_off_by_default(live: Live) -> None:
    async def main() -> int:
        try:
            await open_socket(live, {}, subprotocols=["mcp", f"mcp.auth.{TOKEN}"])
        except InvalidStatus as exc:
            return exc.response.status_code
        return 101

    assert run(main()) == 401


def test_subprotocol_token_when_enabled_is_never_echoed() -> None:
    async def main(live: Live) -> tuple[str | None, str, dict[str, Any]]:
        ws = await open_socket(live, {}, subprotocols=["mcp", f"mcp.auth.{TOKEN}"])
        response_headers = str(ws.response.headers)
        reply = await initialized(ws)
        await ws.close()
        return ws.subprotocol, response_headers, reply

    with live_server(websocket_token_subprotocol=True) as live:
        chosen, headers, reply = run(main(live))
    assert chosen == "mcp"
    assert TOKEN not in headers
    assert reply["result"]["protocolVersion"] == "2025-11-25"


def test_enabled_carrier_still_refuses_a_wrong_token() -> None:
    async def main(live: Live) -> int:
        try:
            await open_socket(live, {}, subprotocols=["mcp", "mcp.auth.wrong-token-0123456789abcdef"])
        except InvalidStatus as exc:
            return exc.response.status_code
        return 101

    with live_server(websocket_token_subprotocol=True) as live:
        assert run(main(live)) == 401


# --- bad input on an open socket ------------------------------------------------------------


def test_bad_frames_get_errors_and_the_socket_stays(live: Live) -> None:
    async def main() -> list[dict[str, Any]]:
        ws = await open_socket(live)
        await initialized(ws)
        replies = [
            await exchange(ws, "this is not json"),
            await exchange(ws, "[" * 200 + "]" * 200),
            await exchange(ws, json.dumps([call(1, "echo", {"text": "a"})])),
            await exchange(ws, '{"jsonrpc":"2.0","id":1}'),
            await exchange(ws, call(5, "echo", {"text": "after the garbage"})),
        ]
        await ws.close()
        return replies

    replies = run(main())
    assert [r.get("error", {}).get("code") for r in replies[:4]] == [PARSE_ERROR, PARSE_ERROR, -32600, -32600]
    assert replies[4]["result"]["content"][0]["text"] == "after the garbage"


def test_requests_before_initialize_are_refused(live: Live) -> None:
    async def main() -> dict[str, Any]:
        ws = await open_socket(live)
        reply = await exchange(ws, call(1, "echo", {"text": "x"}))
        await ws.close()
        return reply

    assert "initialize" in run(main())["error"]["message"]


def test_a_20mib_frame_closes_1009_and_the_server_keeps_serving(live: Live) -> None:
    async def main() -> tuple[int | None, str]:
        ws = await open_socket(live)
        await initialized(ws)
        await ws.send(
            json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"pad": "x" * (20 * 1024 * 1024)}})
        )
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        code = ws.close_code
        other = await open_socket(live)
        await initialized(other)
        reply = await exchange(other, call(2, "echo", {"text": "alive"}))
        await other.close()
        return code, reply["result"]["content"][0]["text"]

    assert run(main()) == (1009, "alive")


def test_binary_frames_close_with_1003(live: Live) -> None:
    async def main() -> int | None:
        ws = await open_socket(live)
        await ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        return ws.close_code

    assert run(main()) == 1003


def test_an_idle_socket_is_closed() -> None:
    clock = ManualClock()

    async def main(live: Live) -> tuple[str, int | None, str | None]:
        ws = await open_socket(live)
        await initialized(ws)
        clock.advance(IDLE_SECONDS - 1)
        # Not idle yet; a message starts the idle time again.
        pong = await exchange(ws, {"jsonrpc": "2.0", "id": 5, "method": "ping"})
        clock.advance(IDLE_SECONDS - 1)
        still_open = await exchange(ws, {"jsonrpc": "2.0", "id": 6, "method": "ping"})
        clock.advance(IDLE_SECONDS + 1)
        # The socket's thread notices at its next poll (RECEIVE_POLL_SECONDS of real time).
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        return f"{pong['id']},{still_open['id']}", ws.close_code, ws.close_reason

    with live_server(websocket_idle_timeout=IDLE_SECONDS, clock=clock) as live:
        assert run(main(live)) == ("5,6", 1000, "idle timeout")


def test_server_shutdown_closes_open_sockets() -> None:
    async def main(live: Live) -> int | None:
        ws = await open_socket(live)
        await initialized(ws)
        await asyncio.get_running_loop().run_in_executor(None, live.app.close)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        return ws.close_code

    with live_server() as live:
        assert run(main(live)) == 1001


# --- the second lock on a socket ------------------------------------------------------------


@pytest.fixture
def scoped_tokens(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "tokens.json"
    full = add_token(path, "full", None)
    echo_only = add_token(path, "echo-only", ["echo"])
    return path, full, echo_only


def test_a_call_outside_the_scope_is_a_jsonrpc_error(scoped_tokens: tuple[Path, str, str]) -> None:
    path, _, echo_only = scoped_tokens

    async def main(live: Live) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        ws = await open_socket(live, {"Authorization": f"Bearer {echo_only}"})
        await initialized(ws)
        listed = await exchange(ws, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        denied = await exchange(ws, call(3, "whoami"))
        allowed = await exchange(ws, call(4, "echo", {"text": "in scope"}))
        await ws.close()
        return [t["name"] for t in listed["result"]["tools"]], denied, allowed

    with live_server(tokens_file=str(path)) as live:
        names, denied, allowed = run(main(live))
    assert names == ["echo"]
    assert denied["id"] == 3 and denied["error"]["code"] == FORBIDDEN
    assert "echo-only" in denied["error"]["message"]
    assert allowed["result"]["content"][0]["text"] == "in scope"


def test_a_revoked_token_is_closed_4401_at_its_next_call(scoped_tokens: tuple[Path, str, str]) -> None:
    path, full, echo_only = scoped_tokens

    async def main(live: Live) -> tuple[int | None, str]:
        ws = await open_socket(live, {"Authorization": f"Bearer {full}"})
        other = await open_socket(live, {"Authorization": f"Bearer {echo_only}"})
        await initialized(ws)
        await initialized(other)
        assert "result" in await exchange(ws, call(2, "echo", {"text": "before"}))
        revoke_token(path, "full")
        await ws.send(json.dumps(call(3, "echo", {"text": "after"})))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        still = await exchange(other, call(4, "echo", {"text": "other token still works"}))
        await other.close()
        return ws.close_code, still["result"]["content"][0]["text"]

    with live_server(tokens_file=str(path)) as live:
        assert run(main(live)) == (4401, "other token still works")


# --- concurrency ---------------------------------------------------------------------------------


def test_200_concurrent_sockets_each_complete_initialize() -> None:
    async def one(live: Live, n: int) -> str:
        ws = await open_socket(live, open_timeout=60)
        await initialized(ws)
        reply = await exchange(ws, call(2, "echo", {"text": f"socket {n}"}))
        return ws, reply["result"]["content"][0]["text"]

    async def main(live: Live) -> list[str]:
        results = await asyncio.gather(*(one(live, n) for n in range(200)))
        for ws, _ in results:
            await ws.close()
        return [text for _, text in results]

    # One token may hold half of the sockets: 400 in total lets it open 200.
    with live_server(max_websockets=400, **NO_RATE_LIMIT) as live:
        assert run(main(live)) == [f"socket {n}" for n in range(200)]
