"""Resuming an SSE answer stream with Last-Event-ID on another process (a shared session store).

Two servers, each with its own app and McpServer, share only a real redis-server: a call's
stream starts on the first, its connection ends, and the client resumes on the second, which
replays what was missed from the store and then follows the stream to its answer. Event ids
stay bound to their session: another session's ids, and made-up ones, are refused as in one
process (400).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from redis_support import RedisServer, redis_server
from support import TOKEN, Live, live_server, open_session, request, rpc
from test_store_messages import _routed

from mcp_auth import Context, McpServer
from mcp_auth.store.bus import MessageBus
from mcp_auth.store.events import SessionStreams, StreamLogs

# Generous: how long a test waits for something that must happen (never a pass/fail timing).
PATIENCE_SECONDS = 30.0


class Steps:
    def __init__(self) -> None:
        self.missed_written = threading.Event()
        self.release = threading.Event()


def _server(steps: Steps) -> McpServer:
    server = McpServer("resume-elsewhere")

    @server.tool()
    def in_three_parts(ctx: Context) -> str:
        """Sends one message, closes its stream, sends another while no one reads, waits, sends a third."""
        ctx.info("one")
        ctx.close_stream()
        ctx.info("two")
        steps.missed_written.set()
        steps.release.wait(PATIENCE_SECONDS)
        ctx.info("three")
        return "done"

    @server.tool()
    def chatty(ctx: Context) -> str:
        """Sends a message, then answers."""
        ctx.info("hello")
        return "chatted"

    return server


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def two(shared_redis: RedisServer) -> Iterator[tuple[Live, Live, Steps]]:
    steps = Steps()
    with live_server(_server(steps), session_store=shared_redis.url) as first:
        with live_server(_server(Steps()), session_store=shared_redis.url) as second:
            for live in (first, second):  # each process listens before the test sends anything
                live.app.sessions.bus.start()  # type: ignore[attr-defined]
                assert live.app.sessions.bus.wait_subscribed(PATIENCE_SECONDS)  # type: ignore[attr-defined]
            yield first, second, steps


def post_until(port: int, session_id: str, name: str, marker: bytes, request_id: int = 5) -> str:
    """Call a tool over a raw socket, read until `marker`, drop the connection; the last event id seen."""
    call = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name}}
    body = json.dumps(call).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(PATIENCE_SECONDS)
        sock.sendall(
            (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                f"Mcp-Session-Id: {session_id}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        received = b""
        while marker not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
    return [line for line in received.decode().splitlines() if line.startswith("id: ")][-1][4:]


def _data_lines(received: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in received.decode().splitlines() if line.startswith("data: {")]


def test_a_stream_cut_on_one_process_is_resumed_on_the_other(two: tuple[Live, Live, Steps]) -> None:
    first, second, steps = two
    # No keepalive (which also reads the log again) within the test: the first process's
    # "events" message is what makes the second read on.
    second.app.http.keepalive_seconds = 3600
    session_id = open_session(first.port)
    last_id = post_until(first.port, session_id, "in_three_parts", b"one")
    assert steps.missed_written.wait(PATIENCE_SECONDS)  # "two" was written while no one read the stream
    with socket.create_connection(("127.0.0.1", second.port)) as sock:
        sock.settimeout(PATIENCE_SECONDS)
        sock.sendall(
            (
                f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\nLast-Event-ID: {last_id}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
        )
        received = b""
        while b'"two"' not in received:  # replayed from the store
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received
        steps.release.set()  # what the first process writes from now on reaches the second as it comes
        while b'"result"' not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        # Read on to the server's close: the server learns that the answer was delivered only
        # once its write returned, which may be after the client has read it; the stream is
        # dropped then, before the response ends (a client resuming in between still gets it).
        while chunk := sock.recv(4096):
            received += chunk
    messages = _data_lines(received)
    assert [m.get("params", {}).get("data") for m in messages[:-1]] == ["two", "three"]
    assert messages[-1]["id"] == 5 and messages[-1]["result"]["content"][0]["text"] == "done"
    ids = [line[4:] for line in received.decode().splitlines() if line.startswith("id: ")]
    assert all(i.startswith(last_id.rpartition("_")[0] + "_") for i in ids)  # the same stream, continued
    # The answer was delivered: the stream is gone everywhere, as it is in one process.
    assert resume(first.port, session_id, last_id).status == 400
    assert resume(second.port, session_id, last_id).status == 400


def resume(port: int, session_id: str, last_event_id: str) -> Any:
    return request(
        port,
        "GET",
        headers={"Mcp-Session-Id": session_id, "Accept": "text/event-stream", "Last-Event-ID": last_event_id},
    )


def test_another_sessions_event_ids_name_nothing(two: tuple[Live, Live, Steps]) -> None:
    first, second, steps = two
    owner = open_session(first.port)
    last_id = post_until(first.port, owner, "in_three_parts", b"one")
    other = open_session(second.port)  # the same token, another session
    for port in (first.port, second.port):
        refused = resume(port, other, last_id)
        assert refused.status == 400
        assert "Last-Event-ID" in refused.json()["error"]["message"]
    forged = last_id.rpartition("_")[0][:-4] + "abcd_1"
    assert resume(second.port, owner, forged).status == 400
    steps.release.set()
    resumed = resume(second.port, owner, last_id)  # the owner still can
    assert resumed.sse_messages()[-1]["result"]["content"][0]["text"] == "done"


def test_stream_ids_differ_between_processes(two: tuple[Live, Live, Steps]) -> None:
    first, second, _ = two
    session_id = open_session(first.port)
    ids = set()
    for port in (first.port, second.port, first.port, second.port):
        reply = rpc(port, session_id, "tools/call", {"name": "chatty", "arguments": {}})
        event_ids = [line[4:] for line in reply.body.decode().splitlines() if line.startswith("id: ")]
        ids.add(event_ids[0].rpartition("_")[0])
    assert len(ids) == 4


def test_the_mcp_client_resumes_on_the_other_process(two: tuple[Live, Live, Steps]) -> None:
    first, second, steps = two
    seen: list[tuple[int, str]] = []
    steps.release.set()  # the call runs through; its stream is still cut by close_stream

    def route(method: str, body: dict[str, Any] | None) -> int:
        return second.port if method == "GET" else first.port

    async def main() -> Any:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=PATIENCE_SECONDS, transport=_routed(route, seen)
        )
        async with http, Client(streamable_http_client(first.url, http_client=http), mode="legacy") as client:
            return await client.call_tool("in_three_parts", {})

    result = asyncio.run(main())
    assert result.content[0].text == "done"
    assert (second.port, "GET") in seen  # the resumption went to the other process


def test_a_wake_up_while_the_reader_writes_is_not_lost(shared_redis: RedisServer) -> None:
    """The log grows while the reader here is busy writing an event (not waiting): the "events"
    message's wake-up must still make it read the log again, not wait for the next keepalive."""
    client = shared_redis.client()
    logs = StreamLogs(client, MessageBus(client, lambda message: None), 3600, time.monotonic)
    writer = SessionStreams(logs, "a-session").new_stream(time.monotonic)  # the other process's stream
    writer.start_log()
    writer.send({"n": 1})
    followed = SessionStreams(logs, "a-session").find(writer.stream_id)
    assert followed is not None
    reader = followed.read(0, keepalive_seconds=3600, stop=lambda: False)
    assert next(reader) == (1, {"n": 1})  # the reader now writes this event to its client
    writer.finish({"n": 2})
    logs.wake(followed.shared_log.key)  # the "events" message arrives meanwhile
    items: list[Any] = []
    thread = threading.Thread(target=lambda: items.extend(reader), daemon=True)
    thread.start()
    thread.join(PATIENCE_SECONDS)
    if thread.is_alive():
        followed.detach()  # ends the reader, the test has failed
    assert [item for item in items if item is not None] == [(2, {"n": 2})]


def test_a_log_is_bounded_and_expires(shared_redis: RedisServer) -> None:
    client = shared_redis.client()
    bus = MessageBus(client, lambda message: None)
    logs = StreamLogs(client, bus, running_seconds=3600, clock=time.monotonic, max_events=3, retention_seconds=300)
    log = logs.log("a-session", "p1")
    for sequence in range(1, 6):
        log.append(sequence, {"n": sequence}, final=False)
    assert [event[0] for event in log.read(0)] == [3, 4, 5]
    assert 3_500_000 < client.pttl(log.key) <= 3_600_000  # a running stream: the session's idle time
    log.append(6, {"n": 6}, final=True)
    assert 0 < client.pttl(log.key) <= 300_000  # finished: kept for resumption only so long
    assert log.read(4) == [(5, {"n": 5}, False), (6, {"n": 6}, True)]
    assert logs.log("another-session", "p1").read(0) == []  # the same stream id under another session
    log.drop()
    assert client.exists(log.key) == 0
