"""Per-token shares of every capacity, through real sockets against the real server.

WebSockets (the `websockets` client), the threads that run WebSocket requests,
HTTP streaming calls and event streams: one token cannot take them all, and
every place comes back on every way a socket, stream or call can end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Live, initialize_body, live_server, open_session, request, rpc
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from ws_client import ws_url

from mcp_auth import Context, McpServer
from mcp_auth.auth.tokens import add_token, revoke_token

# Generous: these waits end as soon as the server has noticed; the bound only
# keeps a broken build from hanging the suite.
WAIT_SECONDS = 30.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_SECONDS:g} s: {what}")
        time.sleep(0.02)


class Tokens:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.echo_only = add_token(path, "echo-only", ["echo"])
        self.a = add_token(path, "a", None)
        self.b = add_token(path, "b", None)
        self.c = add_token(path, "c", None)


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "tokens.json")


class Gate:
    """Lets a test hold handler threads inside a tool and count how many got there."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def wait_entered(self, count: int) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=WAIT_SECONDS), "a handler never started"


def capacity_server(gate: Gate) -> McpServer:
    server = McpServer("capacity")

    @server.tool()
    def echo(text: str) -> str:
        """Echoes."""
        return text

    @server.tool()
    def wait(ctx: Context) -> str:
        """Holds its handler thread until the test releases it."""
        gate.entered.release()
        gate.release.wait(WAIT_SECONDS)
        return "released"

    @server.tool()
    def note(ctx: Context) -> str:
        """Sends a log message, then answers: an SSE answer."""
        ctx.info("noted")
        return "noted"

    @server.tool()
    def fails(ctx: Context) -> str:
        """Sends a log message, then raises."""
        ctx.info("about to fail")
        raise RuntimeError("the tool failed")

    return server


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def open_socket(live: Live, token: str) -> ClientConnection:
    return await connect(
        ws_url(live.url),
        subprotocols=["mcp"],
        additional_headers={"Authorization": f"Bearer {token}"},  # type: ignore[list-item]
    )


async def exchange(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))


async def answer_to(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    """Send a request and return its answer, passing over notifications (log messages) before it."""
    await ws.send(json.dumps(message))
    while True:
        received = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
        if received.get("id") == message["id"]:
            return received


async def initialized(ws: ClientConnection) -> None:
    await exchange(ws, initialize_body())
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))


def call(request_id: int, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments or {}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


# --- WebSockets: the per-token share (issue 9, finding 6) -----------------------------------------


def test_one_token_opening_sockets_up_to_the_total_leaves_room_for_another(tokens: Tokens) -> None:
    total = 4

    async def main(live: Live) -> tuple[int, list[Any], str]:
        held: list[ClientConnection] = []
        refused = []
        for _ in range(total):
            try:
                held.append(await open_socket(live, tokens.echo_only))
            except InvalidStatus as exc:  # refused before the handshake: no socket was ever open
                refused.append(exc.response)
        second = await open_socket(live, tokens.a)
        await initialized(second)
        reply = await exchange(second, call(2, "echo", {"text": "room left"}))
        for ws in [*held, second]:
            await ws.close()
        return len(held), refused, reply["result"]["content"][0]["text"]

    with live_server(tokens_file=str(tokens.path), max_websockets=total) as live:
        held, refused, text = run(main(live))
    assert held == total // 2
    assert [r.status_code for r in refused] == [503] * (total - total // 2)
    assert refused[0].headers["Retry-After"] == "30"
    assert "at most 2 per token" in json.loads(refused[0].body)["error"]["message"]
    assert text == "room left"


def test_past_the_total_a_third_token_gets_503_and_never_a_socket(tokens: Tokens) -> None:
    async def main(live: Live) -> tuple[int, str]:
        held = [await open_socket(live, token) for token in (tokens.a, tokens.a, tokens.b, tokens.b)]
        try:
            await open_socket(live, tokens.c)
        except InvalidStatus as exc:
            status, message = exc.response.status_code, json.loads(exc.response.body)["error"]["message"]
        else:
            status, message = 101, ""
        for ws in held:
            await ws.close()
        return status, message

    with live_server(tokens_file=str(tokens.path), max_websockets=4) as live:
        status, message = run(main(live))
    assert status == 503
    assert "at most 4 on this server" in message


async def _end_by_close(ws: ClientConnection, tokens: Tokens) -> None:
    await ws.close()


async def _end_by_dropping_the_connection(ws: ClientConnection, tokens: Tokens) -> None:
    ws.transport.abort()  # no close frame: the peer just went away


async def _end_by_revocation(ws: ClientConnection, tokens: Tokens) -> None:
    revoke_token(tokens.path, "a")
    await ws.send(json.dumps(call(5, "echo", {"text": "after revocation"})))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), WAIT_SECONDS)
    assert ws.close_code == 4401


async def _end_by_a_binary_frame(ws: ClientConnection, tokens: Tokens) -> None:
    await ws.send(b"\x00")
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), WAIT_SECONDS)
    assert ws.close_code == 1003


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(_end_by_close, id="client-closes"),
        pytest.param(_end_by_dropping_the_connection, id="client-disconnects"),
        pytest.param(_end_by_revocation, id="token-revoked"),
        pytest.param(_end_by_a_binary_frame, id="bad-frame"),
    ],
)
def test_a_socket_gives_its_place_back_however_it_ends(tokens: Tokens, end: Any) -> None:
    async def main(live: Live) -> str:
        ws = await open_socket(live, tokens.a)
        await initialized(ws)
        await end(ws, tokens)
        await asyncio.get_running_loop().run_in_executor(
            None, wait_until, lambda: live.app.websocket.sockets.in_use() == 0, "the socket's place came back"
        )
        again = await open_socket(live, tokens.b)  # a share of one: this needs the place back
        await initialized(again)
        reply = await exchange(again, call(2, "echo", {"text": "again"}))
        await again.close()
        return reply["result"]["content"][0]["text"]

    with live_server(capacity_server(Gate()), tokens_file=str(tokens.path), max_websockets=1) as live:
        assert run(main(live)) == "again"


# --- WebSocket request threads: the per-token share -----------------------------------------------


def test_one_tokens_requests_cannot_take_every_handler_thread(tokens: Tokens) -> None:
    gate = Gate()

    async def main(live: Live) -> tuple[dict[str, Any], dict[str, Any], str, list[str], str]:
        first = await open_socket(live, tokens.a)
        await initialized(first)
        for request_id in (1, 2, 3):
            await first.send(json.dumps(call(10 + request_id, "wait")))
        refused = json.loads(await asyncio.wait_for(first.recv(), WAIT_SECONDS))
        await asyncio.get_running_loop().run_in_executor(None, gate.wait_entered, 2)
        # The share is per token, not per socket: a second socket of the same token is refused too.
        second_socket = await open_socket(live, tokens.a)
        await initialized(second_socket)
        refused_elsewhere = await exchange(second_socket, call(20, "wait"))
        # Another token's requests still run.
        other = await open_socket(live, tokens.b)
        await initialized(other)
        theirs = await exchange(other, call(30, "echo", {"text": "other token runs"}))
        gate.release.set()
        done = [json.loads(await asyncio.wait_for(first.recv(), WAIT_SECONDS)) for _ in range(2)]
        # Both places came back before the answers went out: the next call runs at once.
        again = await exchange(first, call(40, "wait"))
        for ws in (first, second_socket, other):
            await ws.close()
        return (
            refused,
            refused_elsewhere,
            theirs["result"]["content"][0]["text"],
            [d["result"]["content"][0]["text"] for d in done],
            again["result"]["content"][0]["text"],
        )

    # max_streams bounds handler threads: 4 in total, 2 per token.
    with live_server(capacity_server(gate), tokens_file=str(tokens.path), max_streams=4) as live:
        refused, refused_elsewhere, theirs, done, again = run(main(live))
        assert live.app.websocket.calls.in_use() == 0
    assert refused["id"] == 13 and refused["error"]["code"] == -32000
    assert "at most 2 per token" in refused["error"]["message"]
    assert refused["error"]["data"] == {"retryAfter": 5}
    assert refused_elsewhere["error"]["code"] == -32000
    assert theirs == "other token runs"
    assert done == ["released", "released"]
    assert again == "released"


def test_a_request_gives_its_thread_place_back_before_its_answer(tokens: Tokens) -> None:
    async def main(live: Live) -> list[tuple[str, int]]:
        ws = await open_socket(live, tokens.a)
        await initialized(ws)
        seen = []
        for request_id, name in enumerate(["echo", "fails", "note"], start=2):
            reply = await answer_to(ws, call(request_id, name, {"text": "x"} if name == "echo" else {}))
            # Checked the moment the answer arrives: no waiting, the place is already back.
            seen.append((name, live.app.websocket.calls.in_use()))
            assert "result" in reply or "error" in reply
        await ws.close()
        return seen

    with live_server(capacity_server(Gate()), tokens_file=str(tokens.path), max_streams=2) as live:
        assert run(main(live)) == [("echo", 0), ("fails", 0), ("note", 0)]


def test_a_closed_socket_keeps_its_running_calls_counted_until_they_end(tokens: Tokens) -> None:
    gate = Gate()

    async def main(live: Live) -> None:
        ws = await open_socket(live, tokens.a)
        await initialized(ws)
        await ws.send(json.dumps(call(2, "wait")))
        await asyncio.get_running_loop().run_in_executor(None, gate.wait_entered, 1)
        ws.transport.abort()

    with live_server(capacity_server(gate), tokens_file=str(tokens.path), max_streams=2) as live:
        run(main(live))
        wait_until(lambda: live.app.websocket.sockets.in_use() == 0, "the socket's place came back")
        assert live.app.websocket.calls.in_use() == 1  # the handler still runs: its thread is still counted
        gate.release.set()
        wait_until(lambda: live.app.websocket.calls.in_use() == 0, "the call's place came back")


@pytest.fixture
def threads_cannot_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The operating system refuses new handler threads while the event is set (the server's own threads start)."""
    start = threading.Thread.start
    refusing = threading.Event()
    refusing.set()

    def refusing_start(self: threading.Thread) -> None:
        if refusing.is_set() and self.name.startswith(("mcp-call-", "mcp-ws-call")):
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refusing_start)
    yield refusing
    monkeypatch.undo()


def test_a_websocket_request_whose_thread_cannot_start_is_refused_and_its_place_returns(
    tokens: Tokens, threads_cannot_start: threading.Event
) -> None:
    async def main(live: Live) -> tuple[dict[str, Any], dict[str, Any]]:
        ws = await open_socket(live, tokens.a)
        await initialized(ws)
        refused = await exchange(ws, call(2, "echo", {"text": "x"}))
        threads_cannot_start.clear()
        # The socket is still served, and a share of one: the refused request's place came back.
        ping = await exchange(ws, {"jsonrpc": "2.0", "id": 3, "method": "ping"})
        await ws.close()
        return refused, ping

    with live_server(capacity_server(Gate()), tokens_file=str(tokens.path), max_streams=2) as live:
        refused, ping = run(main(live))
        assert live.app.websocket.calls.in_use() == 0
    assert refused["error"]["code"] == -32000 and "thread" in refused["error"]["message"]
    assert ping == {"jsonrpc": "2.0", "id": 3, "result": {}}


# --- HTTP: streaming calls and event streams -------------------------------------------------------


def test_streaming_calls_keep_a_per_token_share(tokens: Tokens) -> None:
    gate = Gate()
    with live_server(capacity_server(gate), tokens_file=str(tokens.path), max_streams=4) as live:
        session_a = open_session(live.port, token=tokens.a)
        replies: list[Any] = []
        holders = [
            threading.Thread(
                target=lambda n=n: replies.append(
                    rpc(live.port, session_a, "tools/call", {"name": "wait"}, request_id=n, token=tokens.a)
                )
            )
            for n in (1, 2)
        ]
        for holder in holders:
            holder.start()
        gate.wait_entered(2)
        over = rpc(live.port, session_a, "tools/call", {"name": "note"}, request_id=3, token=tokens.a)
        assert over.status == 503
        assert over.header("Retry-After") == "5"
        assert "at most 2 per token" in over.json()["error"]["message"]
        session_b = open_session(live.port, token=tokens.b)
        theirs = rpc(live.port, session_b, "tools/call", {"name": "note"}, token=tokens.b)
        assert theirs.status == 200 and theirs.sse_messages()[-1]["result"]["content"][0]["text"] == "noted"
        gate.release.set()
        for holder in holders:
            holder.join(timeout=WAIT_SECONDS)
        assert [r.status for r in replies] == [200, 200]
        assert live.app.http.calls.in_use() == 0


@pytest.mark.parametrize("tool", [pytest.param("note", id="answered"), pytest.param("fails", id="handler-raises")])
def test_a_streaming_call_gives_its_place_back_when_it_ends(tool: str) -> None:
    with live_server(capacity_server(Gate()), max_streams=2) as live:
        session_id = open_session(live.port)
        for request_id in range(2, 6):  # a share of one: each call needs the previous one's place
            reply = rpc(live.port, session_id, "tools/call", {"name": tool}, request_id=request_id)
            assert reply.status == 200
            assert live.app.http.calls.in_use() == 0


def test_a_streaming_call_whose_thread_cannot_start_is_a_503_and_its_place_returns(
    threads_cannot_start: threading.Event,
) -> None:
    with live_server(capacity_server(Gate()), max_streams=2) as live:
        session_id = open_session(live.port)
        refused = rpc(live.port, session_id, "tools/call", {"name": "note"})
        assert refused.status == 503 and refused.header("Retry-After")
        assert "thread" in refused.json()["error"]["message"]
        assert live.app.http.calls.in_use() == 0
        threads_cannot_start.clear()
        # A share of one: the refused call's place came back.
        again = rpc(live.port, session_id, "tools/call", {"name": "note"}, request_id=8)
        assert again.status == 200 and again.sse_messages()[-1]["result"]["content"][0]["text"] == "noted"


def _open_event_stream(live: Live, session_id: str, token: str | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.sendall(
        (
            f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token or live.token}\r\n"
            f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n\r\n"
        ).encode()
    )
    sock.settimeout(WAIT_SECONDS)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock


def _end_stream_by_disconnect(live: Live, sock: socket.socket, session_id: str, tokens: Tokens) -> None:
    sock.close()  # noticed at the next keepalive the server writes


def _end_stream_by_delete(live: Live, sock: socket.socket, session_id: str, tokens: Tokens) -> None:
    assert request(live.port, "DELETE", headers={"Mcp-Session-Id": session_id}, token=tokens.a).status == 204
    sock.close()


def _end_stream_by_revocation(live: Live, sock: socket.socket, session_id: str, tokens: Tokens) -> None:
    revoke_token(tokens.path, "a")
    sock.close()


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(_end_stream_by_disconnect, id="client-disconnects"),
        pytest.param(_end_stream_by_delete, id="session-deleted"),
        pytest.param(_end_stream_by_revocation, id="token-revoked"),
    ],
)
def test_an_event_stream_gives_its_place_back_however_it_ends(tokens: Tokens, end: Any) -> None:
    with live_server(capacity_server(Gate()), tokens_file=str(tokens.path), max_streams=2) as live:
        live.app.http.keepalive_seconds = 0.05  # the server notices a gone client when it next writes
        session_id = open_session(live.port, token=tokens.a)
        sock = _open_event_stream(live, session_id, tokens.a)
        assert live.app.http.event_streams.in_use() == 1
        end(live, sock, session_id, tokens)
        wait_until(lambda: live.app.http.event_streams.in_use() == 0, "the event stream's place came back")
        other = open_session(live.port, token=tokens.b)
        _open_event_stream(live, other, tokens.b).close()
