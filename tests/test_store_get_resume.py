"""The standalone GET stream of a shared session, resumed with Last-Event-ID on another process.

Two servers, each with its own app and McpServer, share only a real redis-server (as two
workers or two hosts do). A client's GET stream is open on the first; a notification raised
there reaches it; the connection drops; another notification is raised while no one reads;
the client reconnects to the second with Last-Event-ID and gets what it missed, once (both
processes have a copy of the session, and both hear of the notification), with ids that
continue the same stream. Only the session's principal gets that far: another token is told
the session is not found (404), as for any request.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nginx_support import gunicorn_process
from redis_support import RedisServer, module_redis
from support import Live, live_server, open_session, request, rpc

from mcp_auth import McpServer
from mcp_auth.auth.tokens import add_token
from mcp_auth.store.records import record_digest

# Generous: how long a test waits for something that must happen (never a pass/fail timing).
PATIENCE_SECONDS = 30.0
URI = "counter://value"


TOOLS_MODULE = textwrap.dedent(
    '''
    import itertools

    from mcp_auth import McpServer

    server = McpServer("get-resume-hosts")
    added = itertools.count(1)


    @server.tool()
    def bump() -> str:
        """Changes the counter resource and says so to subscribers."""
        server.notify_resource_updated("counter://value")
        return "bumped"


    @server.tool()
    def add_tool() -> str:
        """Registers one more tool: every session hears that the list changed."""
        name = f"added_{next(added)}"

        @server.tool(name=name)
        def one_more() -> str:
            """Added at run time."""
            return name

        return name


    @server.resource("counter://value")
    def counter() -> str:
        return "1"
    '''
)


def _server() -> McpServer:
    """The tools gunicorn serves from TOOLS_MODULE, for the in-process servers."""
    namespace: dict[str, Any] = {}
    exec(compile(TOOLS_MODULE, "get_resume_tools.py", "exec"), namespace)
    server: McpServer = namespace["server"]
    return server


store = module_redis("store")


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "tokens.json"
    return path, add_token(path, "alice", None), add_token(path, "bob", None)


@pytest.fixture
def two(store: RedisServer, tokens: tuple[Path, str, str]) -> Iterator[tuple[Live, Live]]:
    path = str(tokens[0])
    with live_server(_server(), session_store=store.url, tokens_file=path) as first:
        with live_server(_server(), session_store=store.url, tokens_file=path) as second:
            for live in (first, second):  # each process listens before the test sends anything
                live.app.sessions.bus.start()  # type: ignore[attr-defined]
                assert live.app.sessions.bus.wait_subscribed(PATIENCE_SECONDS)  # type: ignore[attr-defined]
            yield first, second


class GetStream:
    """A raw GET on the MCP endpoint, read event by event, dropped on exit."""

    def __init__(self, port: int, session_id: str, token: str, last_event_id: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(PATIENCE_SECONDS)
        resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        self.sock.sendall(
            (
                f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n{resume}\r\n"
            ).encode()
        )
        self.received = b""

    def until(self, marker: bytes) -> None:
        """Read until `marker`, and the end of the event that holds it, have arrived."""
        deadline = time.monotonic() + PATIENCE_SECONDS  # keepalives arrive meanwhile: recv alone never times out
        while marker not in self.received or b"\n\n" not in self.received[self.received.index(marker) :]:
            assert time.monotonic() < deadline, f"{marker!r} never came: {self.received!r}"
            chunk = self.sock.recv(4096)
            assert chunk, self.received
            self.received += chunk

    def until_ended(self) -> None:
        """Read until the response ends (its last chunk), or the server closes the connection."""
        deadline = time.monotonic() + PATIENCE_SECONDS
        while not self.received.endswith(b"0\r\n\r\n"):
            assert time.monotonic() < deadline, f"the stream never ended: {self.received!r}"
            chunk = self.sock.recv(4096)
            if not chunk:
                return
            self.received += chunk

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(id, message) of every event with data read so far."""
        found = []
        for block in self.received.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if lines.get("data", "").startswith("{"):
                found.append((lines["id"], json.loads(lines["data"])))
        return found

    def __enter__(self) -> GetStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _call(port: int, session_id: str, token: str, tool: str) -> None:
    reply = rpc(port, session_id, "tools/call", {"name": tool, "arguments": {}}, token=token)
    assert reply.status == 200 and not reply.json()["result"].get("isError"), reply


def test_a_get_stream_dropped_on_one_process_resumes_on_the_other(
    two: tuple[Live, Live], tokens: tuple[Path, str, str]
) -> None:
    first, second = two
    _, alice, _ = tokens
    session_id = open_session(first.port, token=alice)
    assert rpc(first.port, session_id, "resources/subscribe", {"uri": URI}, token=alice).status == 200
    with GetStream(first.port, session_id, alice) as stream:
        stream.until(b"id: g_0")  # the priming event: this stream can be resumed
        _call(first.port, session_id, alice, "add_tool")  # before the second process ever saw the session
        stream.until(b"list_changed")
        [(last_id, seen)] = stream.events()
        assert seen["method"] == "notifications/tools/list_changed"
    # Dropped. Now both processes have a copy of the session, and both hear of what is raised on
    # either: a notification raised on each while no one reads.
    assert rpc(second.port, session_id, "ping", token=alice).status == 200
    _call(first.port, session_id, alice, "bump")
    _call(second.port, session_id, alice, "add_tool")
    with GetStream(second.port, session_id, alice, last_event_id=last_id) as resumed:
        resumed.until(b"list_changed")
        missed = resumed.events()
    assert resumed.received.startswith(b"HTTP/1.1 200"), resumed.received
    assert [message["method"] for _, message in missed] == [
        "notifications/resources/updated",
        "notifications/tools/list_changed",
    ]  # each once, although both processes heard of both
    number = int(last_id.removeprefix("g_"))
    assert [event_id for event_id, _ in missed] == [f"g_{number + 1}", f"g_{number + 2}"]  # the same stream, on


def test_a_new_get_elsewhere_starts_where_the_last_reader_stopped(
    two: tuple[Live, Live], tokens: tuple[Path, str, str], store: RedisServer
) -> None:
    first, second = two
    _, alice, _ = tokens
    session_id = open_session(first.port, token=alice)
    with GetStream(first.port, session_id, alice) as stream:
        stream.until(b"id: g_0")
        _call(first.port, session_id, alice, "add_tool")
        stream.until(b"list_changed")
    # The first reader's position is in the store once the event is written (waited for, not assumed).
    meta = first.app.sessions.stream_logs.log(record_digest(session_id), "g").key + ":meta"  # type: ignore[attr-defined]
    deadline = time.monotonic() + PATIENCE_SECONDS
    with store.client() as client:
        while client.hget(meta, "delivered") != b"1":
            assert time.monotonic() < deadline, "the first reader's position never reached the store"
            time.sleep(0.05)
    _call(first.port, session_id, alice, "add_tool")  # queued: nobody reads
    with GetStream(second.port, session_id, alice) as fresh:  # no Last-Event-ID: what was not delivered
        fresh.until(b"list_changed")
        assert [event_id for event_id, _ in fresh.events()] == ["g_2"]


def test_only_the_sessions_principal_can_resume_its_get_stream(
    two: tuple[Live, Live], tokens: tuple[Path, str, str]
) -> None:
    first, second = two
    _, alice, bob = tokens
    session_id = open_session(first.port, token=alice)
    assert rpc(first.port, session_id, "resources/subscribe", {"uri": URI}, token=alice).status == 200
    _call(first.port, session_id, alice, "bump")
    headers = {"Mcp-Session-Id": session_id, "Accept": "text/event-stream", "Last-Event-ID": "g_0"}
    for live in (first, second):
        stolen = request(live.port, "GET", headers=headers, token=bob)
        assert stolen.status == 404 and "Session not found" in stolen.json()["error"]["message"]
    # Bob's own session names his own GET stream: Alice's events are not in it.
    bobs = open_session(second.port, token=bob)
    with GetStream(second.port, bobs, bob, last_event_id="g_0") as his:
        his.until(b"stream open")
        _call(second.port, bobs, bob, "add_tool")
        his.until(b"list_changed")
        assert [message["method"] for _, message in his.events()] == ["notifications/tools/list_changed"]


def test_two_gunicorn_hosts_resume_each_others_get_streams(
    store: RedisServer, tokens: tuple[Path, str, str], tmp_path: Path
) -> None:
    """As operators run it: two gunicorn instances ("hosts") sharing only the store and the tokens file."""
    path, alice, _ = tokens
    workdir = tmp_path / "app"
    workdir.mkdir()
    (workdir / "get_resume_tools.py").write_text(TOOLS_MODULE)
    env = {
        "MCP_AUTH_TOKENS_FILE": str(path),
        "MCP_AUTH_SESSION_STORE": store.url,
        "MCP_AUTH_TARGET": "get_resume_tools:server",
    }
    with gunicorn_process(workdir, env) as first, gunicorn_process(workdir, env) as second:
        session_id = open_session(first.port, token=alice)
        assert rpc(first.port, session_id, "resources/subscribe", {"uri": URI}, token=alice).status == 200
        with GetStream(first.port, session_id, alice) as stream:
            stream.until(b"id: g_0")
            _call(first.port, session_id, alice, "add_tool")
            stream.until(b"list_changed")
            [(last_id, _)] = stream.events()
        assert rpc(second.port, session_id, "ping", token=alice).status == 200
        _call(first.port, session_id, alice, "bump")  # while no one reads
        with GetStream(second.port, session_id, alice, last_event_id=last_id) as resumed:
            resumed.until(b"resources/updated")
            missed = resumed.events()
        number = int(last_id.removeprefix("g_"))
        assert [(event_id, message["method"]) for event_id, message in missed] == [
            (f"g_{number + 1}", "notifications/resources/updated")
        ]
        for host in (first, second):
            assert "Traceback" not in host.log, host.log


def test_delete_removes_the_get_streams_events_from_the_store(
    two: tuple[Live, Live], tokens: tuple[Path, str, str], store: RedisServer
) -> None:
    first, second = two
    _, alice, _ = tokens
    session_id = open_session(first.port, token=alice)
    _call(first.port, session_id, alice, "add_tool")  # queued for a GET: kept in the store
    key = first.app.sessions.stream_logs.log(record_digest(session_id), "g").key  # type: ignore[attr-defined]
    with store.client() as client:
        assert client.zcard(key) == 1
        assert request(second.port, "DELETE", headers={"Mcp-Session-Id": session_id}, token=alice).status == 204
        assert client.exists(key, key + ":meta") == 0


def test_a_new_reader_on_one_process_ends_the_reader_on_the_other(
    two: tuple[Live, Live], tokens: tuple[Path, str, str]
) -> None:
    """As in one process, the newest reader wins: no event goes out on two streams at once."""
    first, second = two
    _, alice, _ = tokens
    session_id = open_session(first.port, token=alice)
    with GetStream(first.port, session_id, alice) as older:
        older.until(b"id: g_0")
        with GetStream(second.port, session_id, alice) as newer:
            newer.until(b"id: g_0")
            older.until_ended()
            _call(first.port, session_id, alice, "add_tool")
            newer.until(b"list_changed")
        assert b"list_changed" not in older.received
