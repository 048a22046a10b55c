"""The built-in server's own limits over real sockets: the connection cap and the request-head deadline.

Every server here is a real `EmbeddedServer` on 127.0.0.1:0 running the real app,
always stopped. Limits are set small through the constructor, never by patching
module constants. Nothing passes or fails on how fast the machine is: waits are
upper bounds on something that must happen, and the sleeps only make a broken
server fail (a deadline that would have fired, had it still been armed).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from support import TOKEN, initialize_body, ipv6_loopback_available, open_session, raw_exchange, request, rpc
from websockets.asyncio.client import connect

from mcp_auth import McpServer
from mcp_auth.config import Config
from mcp_auth.diagnostics import build_diagnostics
from mcp_auth.embedded import SOCKET_TIMEOUT_SECONDS, EmbeddedServer
from mcp_auth.errors import ConfigError
from mcp_auth.startup import build_app

# The longest any test waits for something that must happen; far below
# SOCKET_TIMEOUT_SECONDS, so a drop seen within it is the head deadline's doing.
PATIENCE_SECONDS = 10.0
assert PATIENCE_SECONDS < SOCKET_TIMEOUT_SECONDS


@dataclass
class Served:
    embedded: EmbeddedServer
    port: int
    paths: list[str] = field(default_factory=list)  # every request that reached the app

    def wait_until_idle(self) -> None:
        wait_until(lambda: self.embedded.open_connections == 0, "every connection to give its slot back")

    def wait_until_open(self, count: int) -> None:
        wait_until(lambda: self.embedded.open_connections == count, f"{count} connection(s) to be accepted")


@contextmanager
def serving(server: McpServer | None = None, *, host: str = "127.0.0.1", **limits: Any) -> Iterator[Served]:
    """The app for `server` (default: diagnostics) on host:0 with `limits` for EmbeddedServer; always stopped."""
    app = build_app(server or build_diagnostics(), Config(host=host, port=0, token=TOKEN), summary=False)
    paths: list[str] = []

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        paths.append(environ["PATH_INFO"])
        return app(environ, start_response)

    embedded = EmbeddedServer(recording, host, 0, **limits)
    thread = threading.Thread(target=embedded.serve_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(watchdogs(embedded.port)) == 1, "the head-deadline watchdog to start")
        yield Served(embedded, embedded.port, paths)
    finally:
        app.close()
        embedded.shutdown()
        embedded.close()
        thread.join(timeout=PATIENCE_SECONDS)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {PATIENCE_SECONDS:g} s waiting for {what}")
        time.sleep(0.01)


def watchdogs(port: int) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"mcp_auth head deadline, port {port}"]


def healthz(port: int) -> int:
    return request(port, "GET", path="/healthz", token=None).status


def connected(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(PATIENCE_SECONDS)
    return sock


def read_until_dropped(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes or resets the connection."""
    received = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({"max_connections": 0}, id="no-connections"),
        pytest.param({"max_connections": -1}, id="negative-connections"),
        pytest.param({"max_connections": 1.5}, id="fractional-connections"),
        pytest.param({"max_connections": True}, id="bool-connections"),
        pytest.param({"head_deadline": 0}, id="zero-deadline"),
        pytest.param({"head_deadline": -1.0}, id="negative-deadline"),
        pytest.param({"head_deadline": float("nan")}, id="nan-deadline"),
        pytest.param({"head_deadline": "20"}, id="string-deadline"),
        pytest.param({"body_deadline": 0}, id="zero-body-deadline"),
        pytest.param({"body_deadline": True}, id="bool-body-deadline"),
    ],
)
def test_nonsense_limits_are_a_config_error(limits: dict[str, Any]) -> None:
    name = next(iter(limits))
    with pytest.raises(ConfigError, match=name):
        EmbeddedServer(None, "127.0.0.1", 0, **limits)


def test_a_busy_port_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    first = EmbeddedServer(None, "127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match=f"port {first.port}"):
            EmbeddedServer(None, "127.0.0.1", first.port)
    finally:
        first.close()
    capsys.readouterr()  # Werkzeug's own explanation on stderr


def test_without_an_app_the_answer_is_503_until_one_is_set() -> None:
    embedded = EmbeddedServer(None, "127.0.0.1", 0)
    app = build_app(build_diagnostics(), Config(port=0, token=TOKEN), summary=False)
    thread = threading.Thread(target=embedded.serve_forever, daemon=True)
    thread.start()
    try:
        assert healthz(embedded.port) == 503
        embedded.app = app
        assert healthz(embedded.port) == 200
    finally:
        app.close()
        embedded.shutdown()
        embedded.close()
        thread.join(timeout=PATIENCE_SECONDS)


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_an_ipv6_host_is_served() -> None:
    with serving(host="::1") as served:
        response = request(served.port, "GET", path="/healthz", token=None, host="::1", host_header="[::1]")
        assert response.status == 200
        assert response.raw_head.startswith(b"HTTP/1.1 200")


# --- the connection cap ------------------------------------------------------------------


@contextmanager
def holding(served: Served, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that have sent nothing, each holding a slot and a thread; closed after."""
    holders: list[socket.socket] = []
    try:
        for _ in range(count):
            holders.append(connected(served.port))
        served.wait_until_open(count)
        yield holders
    finally:
        for holder in holders:
            holder.close()


@pytest.mark.parametrize(
    "sends",
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="a-request"),
        pytest.param(b"", id="nothing"),
        pytest.param(b"GET /healthz HTT", id="half-a-request-line"),
    ],
)
def test_past_the_cap_a_new_connection_is_answered_503_at_once(sends: bytes) -> None:
    with serving(max_connections=3, max_connections_per_address=3) as served, holding(served, 3) as holders:
        for _ in range(5):
            # Answered while every slot is still held: by the accepting thread, not a new one.
            with connected(served.port) as refused:
                if sends:
                    refused.sendall(sends)
                raw = read_until_dropped(refused)
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            assert lines[0] == "HTTP/1.1 503 Service Unavailable"
            headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
            assert headers["retry-after"] == "5"
            assert headers["connection"] == "close"
            assert headers["content-type"] == "application/json"
            assert int(headers["content-length"]) == len(body)
            error = json.loads(body)["error"]
            assert (error["message"], error["data"]) == (
                "Too many open connections; try again later",
                {"reason": "unavailable"},
            )
            assert served.embedded.open_connections == 3
        assert served.paths == []  # nothing refused ever reached the app
        # A slot freed: served again.
        holders[0].close()
        served.wait_until_open(2)
        assert healthz(served.port) == 200


def test_the_cap_refuses_without_starting_threads() -> None:
    with serving(max_connections=4, max_connections_per_address=4) as served:
        threads_before = threading.active_count()
        with holding(served, 4):
            assert threading.active_count() <= threads_before + 4  # one per connection: no timers, no extras
            for _ in range(20):
                assert raw_exchange(served.port, b"GET /healthz HTTP/1.1\r\n\r\n").status == 503
            assert threading.active_count() <= threads_before + 4
        served.wait_until_idle()


# Each use of a connection returns once the server has accepted it (so that
# waiting for the slot to come back afterwards is not trivially satisfied).


def _normal_request(served: Served) -> None:
    assert healthz(served.port) == 200


def _full_mcp_exchange(served: Served) -> None:
    session_id = open_session(served.port)
    assert rpc(served.port, session_id, "tools/list").status == 200


def _disconnect_mid_head(served: Served) -> None:
    with connected(served.port) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthoriz")
        served.wait_until_open(1)


def _reset_mid_head(served: Served) -> None:
    with connected(served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        served.wait_until_open(1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST


def _connect_and_leave(served: Served) -> None:
    with connected(served.port):
        served.wait_until_open(1)


def _garbage(served: Served) -> None:
    response = raw_exchange(served.port, b"\x00\x01\x02 / HTTP/1.1\r\n\r\n")
    assert response.status == 0 or 400 <= response.status < 500  # 0: an HTTP/0.9-style refusal


def _websocket_session(served: Served) -> None:
    async def session() -> dict[str, Any]:
        async with connect(
            f"ws://127.0.0.1:{served.port}/mcp",
            subprotocols=["mcp"],  # type: ignore[list-item]
            additional_headers={"Authorization": "Bearer " + TOKEN},
        ) as ws:
            await ws.send(json.dumps(initialize_body()))
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_SECONDS))
            return reply

    assert asyncio.run(session())["result"]["serverInfo"]["name"] == "mcp-auth-diagnostics"


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(_normal_request, id="normal-request"),
        pytest.param(_full_mcp_exchange, id="mcp-session"),
        pytest.param(_disconnect_mid_head, id="disconnect-mid-head"),
        pytest.param(_reset_mid_head, id="reset-mid-head"),
        pytest.param(_connect_and_leave, id="connect-and-leave"),
        pytest.param(_garbage, id="garbage-request-line"),
        pytest.param(_websocket_session, id="websocket-session"),
    ],
)
def test_every_way_a_connection_ends_gives_its_slot_back(use: Callable[[Served], None]) -> None:
    cap = 2
    with serving(max_connections=cap, max_connections_per_address=cap) as served:
        # Many more connections than the cap, one after another: a slot leaked by
        # any of them would show here, and would end in a 503 below.
        for _ in range(3 * cap):
            use(served)
            served.wait_until_idle()
        with holding(served, cap - 1):
            assert healthz(served.port) == 200


# --- the request-head deadline -------------------------------------------------------------


def _trickle_until_dropped(sock: socket.socket, head: bytes, meanwhile: Callable[[], None]) -> bytes:
    """Send `head` and then an endless header, a byte every 50 ms (each read well inside the
    socket timeout), calling `meanwhile` once; return what the server sent before it dropped us."""
    sock.settimeout(0.05)
    data = head + b"X-Slow: " + b"a" * 100_000
    received = b""
    started = time.monotonic()
    for index, byte in enumerate(data):
        if time.monotonic() - started > PATIENCE_SECONDS:
            pytest.fail(f"still connected after trickling for {PATIENCE_SECONDS:g} s")
        try:
            sock.send(bytes([byte]))
            chunk = sock.recv(4096)
        except TimeoutError:
            chunk = None
        except (BrokenPipeError, ConnectionResetError):
            return received
        if chunk == b"":
            return received
        received += chunk or b""
        if index == 3:
            meanwhile()
    pytest.fail("the whole trickle was accepted")


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"", id="in-the-request-line"),
        pytest.param(b"GET /trickled HTTP/1.1\r\nHost: 127.0.0.1\r\n", id="in-the-headers"),
        pytest.param(
            f"POST /trickled HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n".encode(),
            id="after-credentials",
        ),
    ],
)
def test_a_head_trickled_slower_than_the_deadline_is_dropped(head: bytes) -> None:
    with serving(head_deadline=0.5) as served:
        others: list[int] = []
        with connected(served.port) as sock:
            received = _trickle_until_dropped(sock, head, lambda: others.append(healthz(served.port)))
        assert received == b""  # dropped, not answered: the truncated head reached nothing
        assert others == [200]  # served meanwhile, on another connection
        served.wait_until_idle()
        assert "/trickled" not in served.paths
        assert healthz(served.port) == 200


def test_a_connection_that_never_sends_is_dropped_at_the_deadline() -> None:
    with serving(head_deadline=0.5) as served:
        with connected(served.port) as sock:
            assert read_until_dropped(sock) == b""  # well before SOCKET_TIMEOUT_SECONDS: see PATIENCE_SECONDS
        served.wait_until_idle()


def test_a_pipelined_second_request_left_unfinished_is_dropped_at_the_head_deadline() -> None:
    # The connection is kept alive, so the second head is read; its deadline is armed like the first's.
    with serving(head_deadline=0.5) as served:
        with connected(served.port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHo")
            received = read_until_dropped(sock)
        assert received.startswith(b"HTTP/1.1 200")
        assert received.count(b"HTTP/1.1 ") == 1
        served.wait_until_idle()


def _napping_server(seconds: float) -> McpServer:
    server = McpServer("napping")

    @server.tool()
    def nap() -> str:
        """Takes longer than the head deadline to answer."""
        time.sleep(seconds)
        return "rested"

    return server


def test_a_complete_request_is_not_cut_by_the_head_deadline() -> None:
    deadline = 0.2
    with serving(_napping_server(5 * deadline), head_deadline=deadline) as served:
        session_id = open_session(served.port)
        reply = rpc(served.port, session_id, "tools/call", {"name": "nap", "arguments": {}})
        assert reply.status == 200
        assert reply.json()["result"]["content"] == [{"type": "text", "text": "rested"}]


def test_an_open_event_stream_is_not_cut_by_the_head_deadline() -> None:
    deadline = 0.2
    with serving(head_deadline=deadline) as served:
        session_id = open_session(served.port)
        with connected(served.port) as stream:
            stream.sendall(
                (
                    f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n\r\n"
                ).encode()
            )
            received = b""
            while b"\r\n\r\n" not in received:
                received += stream.recv(4096)
            assert received.startswith(b"HTTP/1.1 200")
            time.sleep(5 * deadline)  # the deadline would have fired by now, had it stayed armed
            assert request(served.port, "DELETE", headers={"Mcp-Session-Id": session_id}).status == 204
            received += read_until_dropped(stream)
        assert received.endswith(b"0\r\n\r\n")  # the stream ended properly, not shut down mid-way


def test_a_websocket_outlives_the_head_deadline() -> None:
    deadline = 0.2

    async def session(port: int) -> list[dict[str, Any]]:
        async with connect(
            f"ws://127.0.0.1:{port}/mcp",
            subprotocols=["mcp"],  # type: ignore[list-item]
            additional_headers={"Authorization": "Bearer " + TOKEN},
        ) as ws:
            replies = []
            for request_id in (1, 2):
                await ws.send(json.dumps(initialize_body(request_id)))
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_SECONDS)))
                await asyncio.sleep(5 * deadline)  # the deadline would have fired by now, had it stayed armed
            return replies

    with serving(head_deadline=deadline) as served:
        replies = asyncio.run(session(served.port))
        assert [reply["id"] for reply in replies] == [1, 2]
        served.wait_until_idle()


# --- the watchdog ----------------------------------------------------------------------------


def test_one_daemon_watchdog_per_server_stopped_by_shutdown() -> None:
    embedded = EmbeddedServer(None, "127.0.0.1", 0, head_deadline=0.5)
    thread = threading.Thread(target=embedded.serve_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(watchdogs(embedded.port)) == 1, "the watchdog to start")
        watchdog = watchdogs(embedded.port)[0]
        assert watchdog.daemon  # never what keeps the process open
        holders = [connected(embedded.port) for _ in range(10)]
        try:
            wait_until(lambda: embedded.open_connections == 10, "10 connections to be accepted")
            assert len(watchdogs(embedded.port)) == 1  # one per server, not one per request
        finally:
            for holder in holders:
                holder.close()
        embedded.shutdown()
        assert not watchdog.is_alive()
    finally:
        embedded.shutdown()  # again if the test failed early: harmless once stopped
        embedded.close()
        thread.join(timeout=PATIENCE_SECONDS)


def test_close_without_serving_leaves_no_thread() -> None:
    embedded = EmbeddedServer(None, "127.0.0.1", 0)
    port = embedded.port
    embedded.close()
    assert watchdogs(port) == []


def test_connection_threads_are_reused() -> None:
    """A thread per connection, but pooled: sequential connections do not each start one."""
    with serving() as served:
        for _ in range(50):
            assert healthz(served.port) == 200
        wait_until(lambda: served.embedded.open_connections == 0, "every connection to be released")
        workers = [t for t in threading.enumerate() if t.name == f"mcp-auth-http:{served.port}"]
        assert 1 <= len(workers) <= 3, [t.name for t in workers]


def test_concurrent_connections_get_their_own_threads() -> None:
    """Reuse never makes a connection wait for another: two open streams and a request at once."""
    with serving() as served:
        first, second = connected(served.port), connected(served.port)
        with first, second:
            wait_until(lambda: served.embedded.open_connections == 2, "both connections to be held")
            assert healthz(served.port) == 200
