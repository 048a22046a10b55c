"""SIGTERM, as an operator sends it, to the built-in server and to gunicorn: new connections are
refused, a call in flight finishes, an open WebSocket is closed with 1001, the process exits 0.

Real processes (`python -m mcp_auth serve`, `gunicorn 'mcp_auth:create_app()'`), the real app, a
real WebSocket client. The tool in flight waits on an event the test controls: it connects to a
socket the test listens on and answers only when the test writes to it. Every wait is an upper
bound on something that must happen.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import TOKEN, live_server, open_session, request
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
PATIENCE_SECONDS = 30.0

HOLD_MODULE = textwrap.dedent(
    '''
    import os
    import socket

    from mcp_auth import McpServer

    server = McpServer("stopping")


    @server.tool()
    def hold() -> str:
        """Waits until the test lets it finish."""
        with socket.create_connection(("127.0.0.1", int(os.environ["HOLD_PORT"])), timeout=60) as test:
            test.sendall(b"started")
            word = test.recv(16).decode()
        return f"finished after {word}"
    '''
)


@dataclass
class Running:
    process: subprocess.Popen[str]
    port: int
    holds: socket.socket  # the test's end: the tool connects here
    lines: list[str] = field(default_factory=list)


@contextmanager
def running(tmp_path: Path, kind: str, grace: int) -> Iterator[Running]:
    (tmp_path / "hold_tools.py").write_text(HOLD_MODULE)
    holds = socket.create_server(("127.0.0.1", 0))
    env = {
        **os.environ,
        "MCP_AUTH_TOKEN": TOKEN,
        "HOLD_PORT": str(holds.getsockname()[1]),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
    }
    if kind == "builtin":
        command = [sys.executable, "-m", "mcp_auth", "serve", "hold_tools:server", "--port", "0"]
        command += ["--shutdown-timeout", str(grace)]
        ready = re.compile(r"mcp_auth: listening on http://127\.0\.0\.1:(\d+)/mcp")
    else:
        env["MCP_AUTH_TARGET"] = "hold_tools:server"
        command = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "-b", "127.0.0.1:0"]
        command += ["--graceful-timeout", str(grace), "--chdir", str(tmp_path), "mcp_auth:create_app()"]
        ready = re.compile(r"Booting worker")
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    found = threading.Event()
    ports: list[int] = []
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            listening = re.search(r"(?:Listening at: http|listening on http)://127\.0\.0\.1:(\d+)", line)
            if listening:
                ports.append(int(listening.group(1)))
            if ready.search(line) and ports:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(PATIENCE_SECONDS), "the server did not start:\n" + "".join(lines)
        yield Running(process, ports[0], holds, lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(PATIENCE_SECONDS)
        holds.close()
        if process.stderr is not None:
            process.stderr.close()


def _call_hold(port: int, session_id: str, answers: list[object]) -> None:
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "hold", "arguments": {}}}
    headers = {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
    try:
        answers.append(request(port, body=body, headers=headers))
    except OSError as error:
        answers.append(error)


@pytest.mark.parametrize("kind", ["builtin", "gunicorn"])
def test_sigterm_lets_the_call_in_flight_finish_and_closes_websockets_with_1001(tmp_path: Path, kind: str) -> None:
    with running(tmp_path, kind, grace=int(PATIENCE_SECONDS)) as server:
        session_id = open_session(server.port)
        websocket = connect(
            f"ws://127.0.0.1:{server.port}/mcp",
            subprotocols=["mcp"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {TOKEN}"},
            open_timeout=PATIENCE_SECONDS,
        )
        answers: list[object] = []
        caller = threading.Thread(target=_call_hold, args=(server.port, session_id, answers))
        caller.start()
        server.holds.settimeout(PATIENCE_SECONDS)
        tool, _ = server.holds.accept()  # the call is in flight
        with tool, websocket:
            assert tool.recv(16) == b"started"
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=PATIENCE_SECONDS)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            tool.sendall(b"go")
        caller.join(PATIENCE_SECONDS)
        assert server.process.wait(PATIENCE_SECONDS) == 0
    (answer,) = answers
    assert not isinstance(answer, BaseException), answer
    assert answer.status == 200  # type: ignore[attr-defined]
    reply = json.loads(answer.body)  # type: ignore[attr-defined]
    assert reply["result"]["content"] == [{"type": "text", "text": "finished after go"}]
    log = "".join(server.lines)
    assert "Traceback" not in log and TOKEN not in log


def test_the_builtin_server_refuses_new_connections_and_exits_0_at_its_bound(tmp_path: Path) -> None:
    with running(tmp_path, "builtin", grace=1) as server:
        session_id = open_session(server.port)
        answers: list[object] = []
        caller = threading.Thread(target=_call_hold, args=(server.port, session_id, answers))
        caller.start()
        server.holds.settimeout(PATIENCE_SECONDS)
        tool, _ = server.holds.accept()
        with tool:
            server.process.send_signal(signal.SIGTERM)
            # The call never finishes: the process exits anyway, 0, once the bound has passed.
            assert server.process.wait(PATIENCE_SECONDS) == 0
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE_SECONDS).close()
        caller.join(PATIENCE_SECONDS)
    assert "requests still in flight were cut off" in "".join(server.lines)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_SECONDS).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("kind", ["builtin", "gunicorn"])
def test_sigterm_refuses_new_connections_while_the_call_in_flight_goes_on(tmp_path: Path, kind: str) -> None:
    """The listening socket closes at SIGTERM, not when the drain is over: a proxy's next connection
    is refused (and goes to another upstream) instead of waiting in a backlog nobody accepts."""
    with running(tmp_path, kind, grace=int(PATIENCE_SECONDS)) as server:
        session_id = open_session(server.port)
        answers: list[object] = []
        caller = threading.Thread(target=_call_hold, args=(server.port, session_id, answers))
        caller.start()
        server.holds.settimeout(PATIENCE_SECONDS)
        tool, _ = server.holds.accept()  # the call is in flight
        with tool:
            assert tool.recv(16) == b"started"
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + PATIENCE_SECONDS
            while not _refused(server.port):  # each probe that got in is closed unanswered
                assert time.monotonic() < deadline, "the listening socket stayed open during the drain"
                time.sleep(0.02)
            # Still refusing, still running: the call in flight holds the process, not the port.
            assert server.process.poll() is None and not answers
            tool.sendall(b"go")
        caller.join(PATIENCE_SECONDS)
        assert server.process.wait(PATIENCE_SECONDS) == 0
    (answer,) = answers
    assert not isinstance(answer, BaseException), answer
    assert answer.status == 200  # type: ignore[attr-defined]
    log = "".join(server.lines)
    assert "Traceback" not in log and TOKEN not in log


def test_a_websocket_whose_handshake_ends_after_the_stop_began_is_closed_with_1001() -> None:
    """The race behind a stop: a socket accepted while the app begins shutting down is not yet among
    the open ones that get 1001; it gets its own 1001 as soon as its handshake completes."""
    with live_server() as live:
        live.app.begin_shutdown()
        with connect(
            f"ws://127.0.0.1:{live.port}/mcp",
            subprotocols=["mcp"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {TOKEN}"},
            open_timeout=PATIENCE_SECONDS,
        ) as websocket:
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=PATIENCE_SECONDS)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
