"""Resumable SSE streams (MCP 2025-11-25, SEP-1699): event ids, priming, retry, Last-Event-ID."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from support import TOKEN, Live, RawResponse, initialize_body, live_server, open_session, request, rpc

from mcp_auth import Context, McpServer


def _server(release: threading.Event | None = None) -> McpServer:
    server = McpServer("resumable")

    @server.tool()
    def detach_then_answer(ctx: Context) -> str:
        """Closes its stream, then answers: the client must resume to get the answer."""
        ctx.info("before close")
        ctx.close_stream()
        if release is not None:
            release.wait(30)
        ctx.info("after close")
        return "answer after reconnect"

    @server.tool()
    def chatty(label: str, ctx: Context) -> str:
        """Sends two log messages, then answers."""
        ctx.info(f"{label} one")
        ctx.info(f"{label} two")
        return f"{label} done"

    return server


def _events(response: RawResponse) -> list[tuple[str | None, str | None, str]]:
    """(id, retry, data) of each SSE event in a body."""
    events = []
    for block in response.body.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")
        if fields:
            events.append((fields.get("id"), fields.get("retry"), fields.get("data", "")))
    return events


def resume(port: int, session_id: str, last_event_id: str) -> RawResponse:
    return request(
        port,
        "GET",
        headers={"Mcp-Session-Id": session_id, "Accept": "text/event-stream", "Last-Event-ID": last_event_id},
    )


def test_a_closed_stream_is_resumed_with_last_event_id() -> None:
    with live_server(_server()) as live:
        session_id = open_session(live.port)
        first = rpc(live.port, session_id, "tools/call", {"name": "detach_then_answer"}, request_id=1)
        assert first.header("Content-Type") == "text/event-stream"
        events = _events(first)
        # The priming event first: an id, a retry and empty data; then what came before the close.
        assert (
            events[0][0] is not None and events[0][0].endswith("_0") and events[0][1] == "1000" and events[0][2] == ""
        )
        assert [e[2] for e in events[1:]] == [
            '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"before close"}}'
        ]
        assert all('"result"' not in e[2] for e in events)
        resumed = resume(live.port, session_id, events[-1][0] or "")
        assert resumed.status == 200
        datas = [m for m in resumed.sse_messages()]
        assert datas[0]["params"]["data"] == "after close"
        assert datas[-1] == {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {"content": [{"type": "text", "text": "answer after reconnect"}]},
        }


def test_resuming_replays_only_that_streams_events() -> None:
    with live_server(_server()) as live:
        session_id = open_session(live.port)
        a = _events(
            rpc(live.port, session_id, "tools/call", {"name": "chatty", "arguments": {"label": "A"}}, request_id=1)
        )
        b = _events(
            rpc(live.port, session_id, "tools/call", {"name": "chatty", "arguments": {"label": "B"}}, request_id=2)
        )
        assert a[0][0] != b[0][0] and a[0][0].split("_")[0] != b[0][0].split("_")[0]  # type: ignore[union-attr]
        # A fully delivered stream is gone; a stream cut off mid-way is what resumption is for.
        assert resume(live.port, session_id, a[1][0] or "").status == 400


def test_a_dropped_connection_is_resumed_from_the_last_event_seen() -> None:
    release = threading.Event()
    with live_server(_server(release)) as live:
        session_id = open_session(live.port)
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            body = b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"detach_then_answer"}}'
            sock.sendall(
                (
                    f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                    f"Mcp-Session-Id: {session_id}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            sock.settimeout(30)
            received = b""
            while b"before close" not in received:
                received += sock.recv(4096)
        last_id = [line for line in received.decode().splitlines() if line.startswith("id: ")][-1][4:]
        release.set()
        resumed = resume(live.port, session_id, last_id)
        messages = resumed.sse_messages()
        assert [m.get("params", {}).get("data") for m in messages[:-1]] == ["after close"]
        assert messages[-1]["id"] == 5 and messages[-1]["result"]["content"][0]["text"] == "answer after reconnect"


@pytest.mark.parametrize(
    "last_event_id",
    [
        pytest.param("p999_0", id="unknown-stream"),
        pytest.param("garbage", id="malformed"),
        pytest.param("p1_x", id="bad-seq"),
        # str.isdigit is true for superscripts that int() refuses; latin-1 headers carry them.
        pytest.param("g_\xb2", id="superscript-digit"),
        pytest.param("g_1\xb9", id="trailing-superscript"),
    ],
)
def test_an_unknown_last_event_id_is_400(live: Live, last_event_id: str) -> None:
    session_id = open_session(live.port)
    response = resume(live.port, session_id, last_event_id)
    assert response.status == 400
    assert "Last-Event-ID" in response.json()["error"]["message"]


def test_older_sessions_get_no_priming_event() -> None:
    with live_server(_server()) as live:
        session_id = open_session(live.port, version="2025-06-18")
        events = _events(rpc(live.port, session_id, "tools/call", {"name": "chatty", "arguments": {"label": "old"}}))
        assert all(data for _, _, data in events)
        assert [e[1] for e in events] == [None, None, None]


def test_standalone_stream_delivers_queued_notifications_once() -> None:
    server = _server()
    with live_server(server) as live:
        session_id = open_session(live.port)
        server.notify_list_changed("tools")

        def read_standalone(marker: str, last_event_id: str | None = None) -> list[tuple[str | None, str | None, str]]:
            """The stream's events up to a `marker` list_changed the server is told to send once the
            stream is open: read as they come, no waiting for silence. Everything before the marker
            was queued for this reader, and the reader took it (the server moved past it)."""
            headers = {"Mcp-Session-Id": session_id, "Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            with socket.create_connection(("127.0.0.1", live.port)) as sock:
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                sock.sendall(
                    f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n{head}\r\n".encode()
                )
                sock.settimeout(30)
                received = b""
                while b"\r\n\r\n" not in received:
                    chunk = sock.recv(4096)
                    assert chunk, received
                    received += chunk
                server.notify_list_changed(marker)  # the stream is open: this reaches it
                while f"{marker}/list_changed".encode() not in received:
                    chunk = sock.recv(4096)
                    assert chunk, received
                    received += chunk
            head_end = received.index(b"\r\n\r\n") + 4
            return _events(RawResponse(200, "", [], received[head_end:].replace(b"\r\n", b"\n")))

        first = read_standalone("prompts")
        assert any("tools/list_changed" in data for _, _, data in first)
        again = read_standalone("resources")
        assert not any("tools/list_changed" in data for _, _, data in again)
        replay = read_standalone("resources", "g_0")
        assert any("tools/list_changed" in data for _, _, data in replay)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_mcp_client_resumes_by_itself(mode: str) -> None:
    async def main(url: str) -> Any:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                return await client.call_tool("detach_then_answer", {})

    with live_server(_server()) as live:
        result = asyncio.run(main(live.url))
    assert result.content[0].text == "answer after reconnect"


def test_several_streams_of_one_session_at_once() -> None:
    with live_server(_server()) as live:
        session_id = open_session(live.port)
        results: dict[int, Any] = {}

        def call(n: int) -> None:
            results[n] = rpc(
                live.port, session_id, "tools/call", {"name": "chatty", "arguments": {"label": f"s{n}"}}, request_id=n
            ).sse_messages()

        threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for n in range(8):
            assert [m.get("params", {}).get("data") for m in results[n][:2]] == [f"s{n} one", f"s{n} two"]
            assert results[n][-1]["result"]["content"][0]["text"] == f"s{n} done"


def test_initialize_body_is_plain_json_and_complete(live: Live) -> None:
    # A client that reads the whole body of initialize (the DNS-rebinding check does) must not hang.
    response = request(
        live.port,
        body=initialize_body(),
        headers={"Origin": f"http://localhost:{live.port}"},
        host_header=f"localhost:{live.port}",
    )
    assert response.status == 200 and response.header("Content-Type") == "application/json"
