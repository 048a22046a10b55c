"""Bounds and refusals added after review: each test fails without the rule it names."""

from __future__ import annotations

import asyncio
import json
import math
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import TOKEN, ManualClock, initialize_body, live_server, open_session, request, rpc
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from ws_client import ws_url

from mcp_auth import Config, ConfigError, Context, McpServer
from mcp_auth.auth.tokens import ANONYMOUS, Principal, StaticToken, add_token, revoke_token
from mcp_auth.config import AuthSetup
from mcp_auth.guard import Guard
from mcp_auth.http import BODY_DEADLINE_SECONDS
from mcp_auth.mcp.context import Call
from mcp_auth.mcp.jsonrpc import INVALID_PARAMS, Request
from mcp_auth.mcp.protocol import MAX_URI_LENGTH
from mcp_auth.refusals import IpNotAllowed
from mcp_auth.sessions import (
    SESSION_IDLE_SECONDS,
    STREAM_RETENTION_SECONDS,
    SWEEP_INTERVAL_SECONDS,
    HttpStreams,
    Session,
    SessionStore,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _blocking_server(release: threading.Event, entered: threading.Semaphore | None = None) -> McpServer:
    server = McpServer("blocking")

    @server.tool()
    def wait(ctx: Context) -> str:
        """Waits until released."""
        if entered is not None:
            entered.release()
        release.wait(30)
        return "released"

    @server.tool()
    def exits(ctx: Context) -> str:
        """Raises SystemExit from the handler thread."""
        raise SystemExit(3)

    @server.tool()
    def detach(ctx: Context) -> str:
        """Asks for the stream to be closed; older clients cannot resume, so it must not be."""
        ctx.close_stream()
        return "still delivered"

    @server.resource("files://{name}.{ext}")
    def file(name: str, ext: str) -> str:
        return f"{name}.{ext}"

    return server


class _Sink:
    def send(self, message: dict[str, Any]) -> None:
        pass


def _uninitialized_call(principal: Principal = ANONYMOUS) -> Call:
    return Call(Session(principal, _Sink()), principal, _Sink(), "127.0.0.1", lambda p: True)


def _call(server: McpServer, principal: Principal = ANONYMOUS) -> Call:
    call = _uninitialized_call(principal)
    server.dispatcher.dispatch(Request(0, "initialize", {"protocolVersion": "2025-11-25"}), call)
    return call


# --- dispatch ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [[], {}, 3, None, "loud"])
def test_set_level_with_a_bad_value_is_invalid_params(level: Any) -> None:
    server = McpServer("x")
    with pytest.raises(Exception) as info:
        server.dispatcher.dispatch(Request(1, "logging/setLevel", {"level": level}), _call(server))
    assert getattr(info.value, "code", None) == INVALID_PARAMS


def test_over_long_uris_are_refused_before_template_matching() -> None:
    server = _blocking_server(threading.Event())
    call = _call(server)
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        server.dispatcher.dispatch(Request(1, "resources/read", {"uri": "files://" + "a" * 60_000 + ".txt"}), call)
    assert getattr(info.value, "code", None) == INVALID_PARAMS
    assert str(MAX_URI_LENGTH) in str(info.value)
    assert time.monotonic() - started < 5  # an upper bound, not a benchmark: backtracking took 15 s
    ok = server.dispatcher.dispatch(Request(2, "resources/read", {"uri": "files://notes.txt"}), call)
    assert ok["contents"][0]["text"] == "notes.txt"


def test_a_session_keeps_only_bounded_client_strings() -> None:
    server = McpServer("x")
    call = _uninitialized_call()
    huge = "x" * 100_000
    params = {
        "protocolVersion": "2025-11-25",
        "clientInfo": {"name": huge, "version": "1", "extra": {"nested": huge}},
        "capabilities": {f"cap{n}": {"data": huge} for n in range(100)},
    }
    server.dispatcher.dispatch(Request(1, "initialize", params), call)
    state = call.session.state
    assert len(state.client_info["name"]) == 256 and "extra" not in state.client_info
    assert len(state.client_capabilities) == 32
    assert all(value is True for value in state.client_capabilities.values())


def test_subscriptions_are_bounded_per_session() -> None:
    server = McpServer("x")
    call = _call(server)
    for n in range(100):
        server.dispatcher.dispatch(Request(n, "resources/subscribe", {"uri": f"x://{n}"}), call)
    with pytest.raises(Exception) as info:
        server.dispatcher.dispatch(Request(101, "resources/subscribe", {"uri": "x://one-too-many"}), call)
    assert "at most 100" in str(info.value)


# --- sessions --------------------------------------------------------------------------------


def test_an_idle_session_is_forgotten_and_a_used_one_is_not() -> None:
    clock = ManualClock()
    store = SessionStore(idle_seconds=100, clock=clock)
    used, idle = store.create(ANONYMOUS), store.create(ANONYMOUS)
    assert used is not None and idle is not None and used.session_id and idle.session_id
    clock.advance(60)
    assert store.get(used.session_id, ANONYMOUS) is used  # touched: its idle time starts again
    clock.advance(60)
    assert store.get(idle.session_id, ANONYMOUS) is None  # 120 s unused: gone, and closed
    assert idle.closed.is_set()
    assert store.get(used.session_id, ANONYMOUS) is used
    clock.advance(1000)
    assert store.get(used.session_id, ANONYMOUS) is None


def test_a_session_with_a_call_running_is_not_idle() -> None:
    clock = ManualClock()
    store = SessionStore(idle_seconds=100, clock=clock)
    session = store.create(ANONYMOUS)
    assert session is not None and session.session_id
    session.in_flight.begin(1)
    clock.advance(10_000)
    assert store.get(session.session_id, ANONYMOUS) is session


def test_idle_sessions_are_swept_when_new_ones_are_made() -> None:
    clock = ManualClock()
    store = SessionStore(idle_seconds=100, clock=clock)
    for _ in range(5):
        store.create(ANONYMOUS)
    clock.advance(SWEEP_INTERVAL_SECONDS / 2)
    store.create(ANONYMOUS)
    assert len(store) == 6  # within the sweep interval nothing is looked at
    clock.advance(SWEEP_INTERVAL_SECONDS + 100)
    store.create(ANONYMOUS)
    assert len(store) == 1  # the sweep forgot the six idle ones; only the new one is left


def test_finished_streams_are_kept_for_resumption_within_a_time() -> None:
    clock = ManualClock()
    streams = HttpStreams(clock=clock)
    finished, running = streams.new_stream(), streams.new_stream()
    finished.finish({"jsonrpc": "2.0", "id": 1, "result": {}})
    clock.advance(STREAM_RETENTION_SECONDS - 1)
    streams.new_stream()
    assert streams.find_stream(finished.stream_id) is finished  # still within the retention time
    clock.advance(2)
    streams.new_stream()
    assert streams.find_stream(finished.stream_id) is None  # past it: dropped at the next new stream
    clock.advance(10 * STREAM_RETENTION_SECONDS)
    streams.new_stream()
    assert streams.find_stream(running.stream_id) is running  # a stream whose handler runs is never dropped


def test_one_principal_cannot_crowd_out_the_others() -> None:
    store = SessionStore(max_sessions=10, max_per_principal=3)
    greedy = Principal("greedy", None, "a" * 64)
    modest = Principal("modest", None, "b" * 64)
    greedy_sessions = [store.create(greedy) for _ in range(50)]
    assert all(s is not None for s in greedy_sessions)
    assert len(store) == 3  # its own oldest went first
    first_id = greedy_sessions[0].session_id  # type: ignore[union-attr]
    assert store.get(first_id or "", greedy) is None
    assert store.create(modest) is not None


# --- guard --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "peer", "allowed"),
    [
        pytest.param({"no_auth": True}, "10.0.0.5", False, id="no-auth-remote-peer"),
        pytest.param({"no_auth": True}, "127.0.0.1", True, id="no-auth-loopback"),
        pytest.param({"no_auth": True}, "::1", True, id="no-auth-v6-loopback"),
        pytest.param({}, "10.0.0.5", False, id="implicit-token-remote-peer"),
        pytest.param({"token": TOKEN}, "10.0.0.5", True, id="explicit-token-remote-peer"),
    ],
)
def test_without_an_explicit_token_only_loopback_peers_are_served(
    settings: dict[str, Any], peer: str, allowed: bool
) -> None:
    """Under gunicorn or embedding the bind is not ours to check; the peer is, on every request."""
    config = Config(**settings)
    source = StaticToken(TOKEN, "test") if not config.no_auth else None
    guard = Guard(config, AuthSetup(source))
    environ = {"REMOTE_ADDR": peer, "HTTP_HOST": "127.0.0.1", "HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    if allowed:
        assert guard.admit(environ).client_address.compressed == peer
    else:
        with pytest.raises(IpNotAllowed) as info:
            guard.admit(environ)
        assert "loopback" in info.value.message


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rate_limit_window", "websocket_idle_timeout", "websocket_ping_interval"])
@pytest.mark.parametrize("value", [math.inf, math.nan, -math.inf])
def test_durations_must_be_finite(name: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        Config(token=TOKEN, **{name: value})
    assert name in str(info.value)


@pytest.mark.parametrize("variable", ["MCP_AUTH_RATE_LIMIT_WINDOW", "MCP_AUTH_WEBSOCKET_IDLE_TIMEOUT"])
def test_durations_from_the_environment_must_be_finite(variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_sources({}, {variable: "inf", "MCP_AUTH_TOKEN": TOKEN})
    assert variable in str(info.value)


# --- HTTP transport -------------------------------------------------------------------------------


def test_transport_rules_answer_before_the_protocol_version(live: Any) -> None:
    bad_version = {"MCP-Protocol-Version": "1999-01-01"}
    assert request(live.port, "PUT", headers=bad_version).status == 405
    assert (
        request(live.port, body=initialize_body(), headers={**bad_version, "Content-Type": "text/plain"}).status == 415
    )
    assert request(live.port, body=initialize_body(), headers={**bad_version, "Accept": "text/plain"}).status == 406
    assert request(live.port, body=initialize_body(), headers=bad_version).status == 400


def test_past_the_stream_bound_a_streaming_call_is_503_not_lost() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)
    with live_server(_blocking_server(release, entered), max_streams=1) as live:
        session_id = open_session(live.port)
        first: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: first.update(reply=rpc(live.port, session_id, "tools/call", {"name": "wait"}))
        )
        worker.start()
        assert entered.acquire(timeout=30)
        busy = rpc(live.port, session_id, "tools/call", {"name": "wait"}, request_id=8)
        assert busy.status == 503 and busy.header("Retry-After")
        # Plain answers need no slot and still flow.
        assert rpc(live.port, session_id, "tools/list").status == 200
        release.set()
        worker.join(timeout=30)
        assert first["reply"].json()["result"]["content"][0]["text"] == "released"
        # The slot came back.
        assert rpc(live.port, session_id, "tools/call", {"name": "wait"}, request_id=9).status == 200


def test_a_body_that_trickles_in_is_refused() -> None:
    clock = ManualClock()
    with live_server(clock=clock) as live:
        body = json.dumps(initialize_body()).encode()
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(head)
            sent = 0
            for byte in body:  # one byte per deadline, by the server's clock
                if select.select([sock], [], [], 0.05)[0]:
                    break  # the server answered
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                sent += 1
                clock.advance(BODY_DEADLINE_SECONDS + 1)
            sock.settimeout(30)
            answer = b""
            try:
                while chunk := sock.recv(4096):
                    answer += chunk
            except OSError:
                pass
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"not sent within" in answer
        assert sent < len(body)


def test_a_tool_raising_system_exit_answers_instead_of_hanging() -> None:
    with live_server(_blocking_server(threading.Event())) as live:
        session_id = open_session(live.port)
        reply = rpc(live.port, session_id, "tools/call", {"name": "exits"})
        assert reply.status == 200
        assert reply.json()["error"]["code"] == -32603


def test_close_stream_is_ignored_for_clients_that_cannot_resume() -> None:
    with live_server(_blocking_server(threading.Event())) as live:
        session_id = open_session(live.port, version="2025-06-18")
        reply = rpc(live.port, session_id, "tools/call", {"name": "detach"})
        assert reply.json()["result"]["content"][0]["text"] == "still delivered"


# --- WebSocket -------------------------------------------------------------------------------------


def test_a_full_socket_refuses_requests_instead_of_blocking_its_reader() -> None:
    release = threading.Event()

    async def main(url: str) -> tuple[list[int], list[str]]:
        async with connect(url, subprotocols=["mcp"], additional_headers=AUTH) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps(initialize_body()))
            await ws.recv()
            for n in range(17):
                await ws.send(
                    json.dumps({"jsonrpc": "2.0", "id": 100 + n, "method": "tools/call", "params": {"name": "wait"}})
                )
            refused = json.loads(await asyncio.wait_for(ws.recv(), 30))
            # The reader still reads: a ping is answered while 16 calls wait.
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            pong = json.loads(await asyncio.wait_for(ws.recv(), 30))
            release.set()
            done = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(16)]
            return [refused["error"]["code"], pong["id"]], sorted({d["result"]["content"][0]["text"] for d in done})

    with live_server(_blocking_server(release)) as live:
        codes, texts = asyncio.run(main(ws_url(live.url)))
    assert codes == [-32000, 1]
    assert texts == ["released"]


def test_a_revoked_socket_is_closed_without_sending_anything(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = add_token(path, "full", None)

    async def main(url: str) -> int | None:
        async with connect(url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps(initialize_body()))
            await ws.recv()
            revoke_token(path, "full")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
            return ws.close_code

    with live_server(tokens_file=str(path)) as live:
        assert asyncio.run(main(ws_url(live.url))) == 4401


# --- second review: slots, drains, streams ------------------------------------------------------


def _streaming_server(release: threading.Event, clock: ManualClock | None = None) -> McpServer:
    server = McpServer("streams")

    @server.tool()
    def chatty(ctx: Context) -> str:
        """Logs, then answers: an SSE answer."""
        ctx.info("working")
        return "done"

    @server.tool()
    def detach_and_wait(ctx: Context) -> str:
        """Closes its stream at once, then keeps running until released."""
        ctx.close_stream()
        release.wait(30)
        return "late answer"

    @server.tool()
    def tick(count: int, ctx: Context) -> str:
        """Sends a log message, then moves the server's clock on by most of the idle time, `count` times."""
        for n in range(count):
            ctx.info(f"tick {n}")
            if clock is not None:
                clock.advance(SESSION_IDLE_SECONDS * 0.9)
        return "ticked"

    return server


def test_streaming_calls_give_their_slot_back_with_the_real_client() -> None:
    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    async def main(url: str) -> list[str]:
        async with httpx2.AsyncClient(headers=AUTH, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                return [(await client.call_tool("chatty", {})).content[0].text for _ in range(40)]  # type: ignore[union-attr]

    with live_server(_streaming_server(threading.Event()), max_streams=4) as live:  # 2 per token
        assert asyncio.run(main(live.url)) == ["done"] * 40
        # Every slot came back: a streaming call still gets through.
        session_id = open_session(live.port)
        assert rpc(live.port, session_id, "tools/call", {"name": "chatty"}).status == 200


def test_a_handler_that_outlives_its_stream_keeps_its_slot() -> None:
    release = threading.Event()
    before = set(threading.enumerate())
    with live_server(_streaming_server(release), max_streams=4) as live:  # 2 per token
        session_id = open_session(live.port)
        for request_id in (1, 2):
            first = rpc(live.port, session_id, "tools/call", {"name": "detach_and_wait"}, request_id=request_id)
            assert first.status == 200  # the stream was closed at once; the handler runs on
        assert rpc(live.port, session_id, "tools/call", {"name": "detach_and_wait"}, request_id=3).status == 503
        release.set()
        # The handler threads give their slots back before they end: wait for them, not for time.
        for thread in set(threading.enumerate()) - before:
            if thread.name == "mcp-call-tools/call":
                thread.join(timeout=30)
        assert rpc(live.port, session_id, "tools/call", {"name": "chatty"}, request_id=4).status == 200


def test_a_running_stream_is_never_evicted_for_newer_ones() -> None:
    release = threading.Event()
    with live_server(_streaming_server(release), max_streams=200) as live:
        session_id = open_session(live.port)
        first = rpc(live.port, session_id, "tools/call", {"name": "detach_and_wait"}, request_id=1)
        first_id = [line[4:] for line in first.body.decode().splitlines() if line.startswith("id: ")][-1]
        for request_id in range(2, 40):  # more than the 32 finished streams a session keeps
            rpc(live.port, session_id, "tools/call", {"name": "detach_and_wait"}, request_id=request_id)
        release.set()
        resumed = request(
            live.port,
            "GET",
            headers={"Mcp-Session-Id": session_id, "Accept": "text/event-stream", "Last-Event-ID": first_id},
        )
        assert resumed.status == 200
        assert resumed.sse_messages()[-1]["result"]["content"][0]["text"] == "late answer"


def test_get_streams_cannot_starve_tool_calls_and_tokens_share(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token_a, token_b = add_token(path, "a", None), add_token(path, "b", None)
    with live_server(_streaming_server(threading.Event()), tokens_file=str(path), max_streams=4) as live:
        held = []
        for _ in range(2):  # token a takes its share of GET streams (half of 4)
            session_id = open_session(live.port, token=token_a)
            sock = socket.create_connection(("127.0.0.1", live.port))
            sock.sendall(
                (
                    f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token_a}\r\n"
                    f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n\r\n"
                ).encode()
            )
            sock.settimeout(10)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            held.append(sock)
        try:
            third = open_session(live.port, token=token_a)
            over = request(
                live.port, "GET", headers={"Mcp-Session-Id": third, "Accept": "text/event-stream"}, token=token_a
            )
            assert over.status == 503
            # Tool calls have their own budget, and token b its own share.
            assert rpc(live.port, third, "tools/call", {"name": "chatty"}, token=token_a).status == 200
            other = open_session(live.port, token=token_b)
            assert rpc(live.port, other, "tools/call", {"name": "chatty"}, token=token_b).status == 200
        finally:
            for sock in held:
                sock.close()


def test_after_the_answer_a_trickling_client_is_cut_off() -> None:
    """An unauthenticated client with a huge Content-Length gets its 401, then cannot hold the thread."""
    with live_server() as live, socket.create_connection(("127.0.0.1", live.port)) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\nxx")
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401")
        closed = False
        for _ in range(100):  # up to 20 s of trickling, one byte every 0.2 s
            try:
                sock.sendall(b"x")
                if select.select([sock], [], [], 0.2)[0] and sock.recv(4096) == b"":
                    closed = True
                    break
            except OSError:
                closed = True
                break
        assert closed, "the server kept reading a trickle after its answer"


def test_a_trickled_chunked_body_is_cut_off() -> None:
    """A chunked body is read a whole buffer at a time, so the built-in server's connection
    deadline (real time, its body_deadline) is what ends it: a test about time."""
    with live_server(body_deadline=0.5) as live, socket.create_connection(("127.0.0.1", live.port)) as sock:
        sock.sendall(
            (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        sent = 0
        for _ in range(150):  # one 1-byte chunk every 0.1 s: 15 s for the lot
            if select.select([sock], [], [], 0.1)[0]:
                break
            try:
                sock.sendall(b"1\r\n{\r\n")
            except OSError:
                break
            sent += 1
        assert sent < 150, "the server waited for the whole trickled body"


def test_a_session_that_is_being_sent_events_is_not_idle() -> None:
    clock = ManualClock()
    with live_server(_streaming_server(threading.Event(), clock), clock=clock) as live:
        session_id = open_session(live.port)
        # Six idle times pass while the call streams events; each event written touches the session.
        reply = rpc(live.port, session_id, "tools/call", {"name": "tick", "arguments": {"count": 6}})
        assert reply.sse_messages()[-1]["result"]["content"][0]["text"] == "ticked"
        assert rpc(live.port, session_id, "ping").status == 200
        # The same store forgets the session once it really is idle.
        clock.advance(SESSION_IDLE_SECONDS + 1)
        assert rpc(live.port, session_id, "ping").status == 404
