"""HTTP/1.1 keep-alive in the built-in server: when a connection takes another request, and every
slow-client bound still holding on the requests after the first.

Real `EmbeddedServer`s on 127.0.0.1:0 running the real app (`serving` from
test_embedded), raw sockets as the client so each byte on the wire is the
test's choice. Waits are upper bounds on something that must happen (a drop,
a slot given back); nothing passes or fails on how fast the machine is.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest
from support import TOKEN, initialize_body, open_session, response_complete
from test_embedded import PATIENCE_SECONDS, connected, read_until_dropped, serving, wait_until

from mcp_auth import McpServer
from mcp_auth.embedded import MAX_HEAD_BYTES
from mcp_auth.keepalive import MAX_REQUESTS_PER_CONNECTION, connection_tokens, may_keep_alive

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


_LEFT_OVER: dict[int, bytes] = {}  # bytes read past a response, per socket (pipelined answers)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response from `sock`: to its end when the connection stays open, else to the close."""
    received = _LEFT_OVER.pop(sock.fileno(), b"")
    while not response_complete(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        body, rest = body[: int(headers["content-length"])], body[int(headers["content-length"]) :]
        if rest:
            _LEFT_OVER[sock.fileno()] = rest
    return int(lines[0].split(" ")[1]), headers, body


def post(body: dict[str, Any], *, session_id: str | None = None, extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    session = f"Mcp-Session-Id: {session_id}\r\n" if session_id else ""
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{session}{extra}"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def call_echo(session_id: str, request_id: int) -> bytes:
    return post(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": f"call {request_id}"}},
        },
        session_id=session_id,
        extra="MCP-Protocol-Version: 2025-11-25\r\n",
    )


# --- the decision, as a table -------------------------------------------------------------------

KEEPS = {
    "request_version": "HTTP/1.1",
    "client_closes": False,
    "response_closes": False,
    "delimited": True,
    "body_complete": True,
    "server_offers": True,
    "served": 0,
}


@pytest.mark.parametrize(
    ("change", "keeps"),
    [
        pytest.param({}, True, id="all-good"),
        pytest.param({"request_version": "HTTP/1.0"}, False, id="http-1.0"),
        pytest.param({"request_version": "HTTP/0.9"}, False, id="http-0.9"),
        pytest.param({"client_closes": True}, False, id="client-says-close"),
        pytest.param({"response_closes": True}, False, id="app-says-close"),
        pytest.param({"delimited": False}, False, id="body-to-the-close"),
        pytest.param({"body_complete": False}, False, id="request-body-unread"),
        pytest.param({"server_offers": False}, False, id="server-busy-or-stopping"),
        pytest.param({"served": MAX_REQUESTS_PER_CONNECTION - 2}, True, id="below-the-cap"),
        pytest.param({"served": MAX_REQUESTS_PER_CONNECTION - 1}, False, id="the-last-request"),
    ],
)
def test_when_a_connection_is_kept(change: dict[str, Any], keeps: bool) -> None:
    assert may_keep_alive(**{**KEEPS, **change}) is keeps


@pytest.mark.parametrize(
    ("values", "tokens"),
    [
        pytest.param(None, set(), id="none"),
        pytest.param(["close"], {"close"}, id="close"),
        pytest.param(["Keep-Alive, CLOSE"], {"keep-alive", "close"}, id="list-any-case"),
        pytest.param(["Upgrade", " close "], {"upgrade", "close"}, id="repeated-header"),
    ],
)
def test_connection_options_are_read_from_every_header(values: list[str] | None, tokens: set[str]) -> None:
    assert connection_tokens(values) == tokens


# --- on the wire -------------------------------------------------------------------------------


def test_one_connection_carries_a_whole_session() -> None:
    with serving() as served:
        with connected(served.port) as sock:
            sock.sendall(post(initialize_body()))
            status, headers, _ = read_response(sock)
            assert status == 200 and "connection" not in headers
            assert headers["keep-alive"] == "timeout=5"
            session_id = headers["mcp-session-id"]
            for request_id in (2, 3, 4):
                sock.sendall(call_echo(session_id, request_id))
                status, headers, body = read_response(sock)
                assert status == 200, body
                assert json.loads(body)["result"]["content"] == [{"type": "text", "text": f"call {request_id}"}]
            assert served.embedded.open_connections == 1  # the same connection all along


def test_pipelined_requests_are_answered_in_order() -> None:
    with serving() as served:
        session_id = open_session(served.port)
        with connected(served.port) as sock:
            sock.sendall(call_echo(session_id, 7) + HEALTHZ + call_echo(session_id, 8))
            first, second, third = read_response(sock), read_response(sock), read_response(sock)
        assert json.loads(first[2])["id"] == 7
        assert second[0] == 200 and json.loads(second[2]) == {"status": "ok"}
        assert json.loads(third[2])["id"] == 8


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", id="client-close"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive, Close\r\n\r\n", id="list"),
        pytest.param(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", id="http-1.0"),
        pytest.param(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n", id="http-1.0-ka"),
        pytest.param(
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40\r\n\r\n{'x' * 40}".encode(),
            id="refused-before-the-body-was-read",
        ),
        pytest.param(
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\n[1,2]\r\n0\r\n\r\n".encode(),
            id="chunked-request-body",
        ),
    ],
)
def test_these_answers_close_their_connection(request_bytes: bytes) -> None:
    with serving() as served:
        with connected(served.port) as sock:
            sock.sendall(request_bytes)
            received = read_until_dropped(sock)  # ends: the server closed, well inside the keep-alive bound
        head = received.partition(b"\r\n\r\n")[0].lower()
        assert b"\r\nconnection: close" in head
        assert b"keep-alive:" not in head
        served.wait_until_idle()


def test_keepalive_zero_closes_after_every_answer() -> None:
    with serving(keepalive=0) as served:
        with connected(served.port) as sock:
            sock.sendall(HEALTHZ)
            assert b"\r\nConnection: close\r\n" in read_until_dropped(sock)


def test_an_idle_connection_is_closed_at_the_keepalive_bound_and_gives_its_slot_back() -> None:
    with serving(keepalive=0.3) as served:
        with connected(served.port) as sock:
            sock.sendall(HEALTHZ)
            status, headers, _ = read_response(sock)
            assert status == 200 and headers["keep-alive"] == "timeout=1"
            assert served.embedded.open_connections == 1  # kept: waiting for the next request
            assert read_until_dropped(sock) == b""  # closed, nothing sent (PATIENCE_SECONDS << socket timeout)
        served.wait_until_idle()


def test_a_next_request_trickled_past_the_head_deadline_is_dropped_unanswered() -> None:
    with serving(head_deadline=0.5, keepalive=20) as served:
        with connected(served.port) as sock:
            sock.sendall(HEALTHZ)
            assert read_response(sock)[0] == 200
            sock.sendall(b"GET /trickled HTTP/1.1\r\nHo")  # starts, never ends
            assert read_until_dropped(sock) == b""
        served.wait_until_idle()
        assert "/trickled" not in served.paths


def test_a_next_request_head_over_the_bound_is_431() -> None:
    with serving() as served:
        with connected(served.port) as sock:
            sock.sendall(HEALTHZ)
            assert read_response(sock)[0] == 200
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before the rest was sent
            received = read_until_dropped(sock)
        assert received.startswith(b"HTTP/1.1 431")
        assert b"request_head_too_large" in received


def test_a_next_request_with_ambiguous_framing_is_refused_and_closed() -> None:
    with serving() as served:
        with connected(served.port) as sock:
            sock.sendall(HEALTHZ)
            assert read_response(sock)[0] == 200
            sock.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            received = read_until_dropped(sock)
        assert received.startswith(b"HTTP/1.1 400")
        assert received.count(b"HTTP/1.1 ") == 1
        assert "/smuggled" not in served.paths


def test_past_half_the_slots_answers_close_their_connections() -> None:
    """Idle kept-alive connections can never take the slots new clients need."""
    with serving(max_connections=4, max_connections_per_address=4, keepalive=20) as served:
        holders = [connected(served.port) for _ in range(2)]
        try:
            served.wait_until_open(2)
            with connected(served.port) as third:
                served.wait_until_open(3)
                third.sendall(HEALTHZ)
                assert b"\r\nConnection: close\r\n" in read_until_dropped(third)
            for holder in holders:
                holder.close()
            served.wait_until_idle()
            with connected(served.port) as fresh:
                fresh.sendall(HEALTHZ)
                assert "connection" not in read_response(fresh)[1]  # room again: kept alive
        finally:
            for holder in holders:
                holder.close()


# --- shutdown ------------------------------------------------------------------------------------


def _waiting_server(started: threading.Event, release: threading.Event) -> McpServer:
    server = McpServer("waiting")

    @server.tool()
    def wait() -> str:
        """Waits until the test releases it."""
        started.set()
        release.wait(PATIENCE_SECONDS)
        return "released"

    return server


def test_drain_closes_idle_connections_refuses_new_ones_and_lets_a_call_in_flight_finish() -> None:
    started, release = threading.Event(), threading.Event()
    with serving(_waiting_server(started, release), keepalive=20) as served:
        session_id = open_session(served.port)
        with connected(served.port) as idle, connected(served.port) as busy:
            idle.sendall(HEALTHZ)
            assert read_response(idle)[0] == 200
            busy.sendall(
                post(
                    {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "wait", "arguments": {}}},
                    session_id=session_id,
                    extra="MCP-Protocol-Version: 2025-11-25\r\n",
                )
            )
            assert started.wait(PATIENCE_SECONDS)
            served.embedded.shutdown()
            finished: list[bool] = []
            drainer = threading.Thread(target=lambda: finished.append(served.embedded.drain(PATIENCE_SECONDS)))
            drainer.start()
            assert read_until_dropped(idle) == b""  # the idle connection is closed at once
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", served.port), timeout=PATIENCE_SECONDS).close()
            release.set()
            received = read_until_dropped(busy)
            drainer.join(PATIENCE_SECONDS)
        assert received.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close\r\n" in received
        assert b'"released"' in received
        assert finished == [True]


def test_drain_gives_up_at_its_bound() -> None:
    started, release = threading.Event(), threading.Event()
    with serving(_waiting_server(started, release)) as served:
        session_id = open_session(served.port)
        with connected(served.port) as busy:
            busy.sendall(
                post(
                    {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "wait", "arguments": {}}},
                    session_id=session_id,
                    extra="MCP-Protocol-Version: 2025-11-25\r\n",
                )
            )
            assert started.wait(PATIENCE_SECONDS)
            served.embedded.shutdown()
            interrupted = threading.Event()
            interrupted.set()  # a second signal: stop waiting at once
            assert served.embedded.drain(PATIENCE_SECONDS, interrupted) is False
            release.set()
        wait_until(lambda: served.embedded.open_connections == 0, "the released call to end")
