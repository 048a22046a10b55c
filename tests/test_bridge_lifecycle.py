"""No child outlives what it serves: DELETE, a closed socket, idle expiry, a stopped front, a killed front.

Every check looks at the process table (/proc) for the child's pid, and for
its process group (what the child started), never at the bridge's own
bookkeeping alone. Waits are on conditions with generous deadlines; idle
expiry uses an injected clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from bridge_support import CHILD_ARGV, RAW_CHILD_ARGV, alive, bridged, group_members, wait_gone
from mcp.client.client import Client
from support import TOKEN, ManualClock, open_session, request, rpc
from ws_client import websocket_client, ws_url

from mcp_auth.sessions import SESSION_IDLE_SECONDS, SWEEP_INTERVAL_SECONDS

ROOT = Path(__file__).resolve().parent.parent
SUBREAPER = Path(__file__).resolve().parent / "stdio_servers" / "subreaper.py"
STARTUP_DEADLINE_SECONDS = 120


def _tool_text(port: int, session_id: str, name: str) -> str:
    response = rpc(port, session_id, "tools/call", {"name": name, "arguments": {}})
    assert response.status == 200, response
    message = response.json() if response.header("Content-Type") == "application/json" else response.sse_messages()[-1]
    return str(message["result"]["content"][0]["text"])


def test_delete_ends_the_child_and_its_process_group() -> None:
    with bridged(RAW_CHILD_ARGV) as live:
        session_id = open_session(live.port)
        pid = int(_tool_text(live.port, session_id, "pid"))
        grandchild = int(_tool_text(live.port, session_id, "spawn_grandchild"))
        assert alive(pid) and alive(grandchild) and os.getpgid(grandchild) == pid
        deleted = request(live.port, "DELETE", headers={"Mcp-Session-Id": session_id})
        assert deleted.status == 204
        assert wait_gone(pid), "the child outlived DELETE"
        assert wait_gone(grandchild, reaped=False), "what the child started outlived DELETE"
        assert group_members(pid) == []


def test_closing_the_socket_ends_the_child() -> None:
    async def main(url: str) -> int:
        async with Client(websocket_client(ws_url(url), {"Authorization": f"Bearer {TOKEN}"}), mode="legacy") as c:
            return int((await c.call_tool("pid", {})).content[0].text)  # type: ignore[union-attr]

    with bridged() as live:
        pid = asyncio.run(main(live.url))
        assert wait_gone(pid), "the child outlived its socket"
        assert live.app.server.children() == []  # type: ignore[attr-defined]


def test_an_idle_session_expires_with_its_child() -> None:
    clock = ManualClock()
    with bridged(settings={"clock": clock}) as live:
        idle = open_session(live.port)
        pid = int(_tool_text(live.port, idle, "pid"))
        clock.advance(SESSION_IDLE_SECONDS + SWEEP_INTERVAL_SECONDS + 1)
        open_session(live.port)  # a new session sweeps the idle ones
        assert wait_gone(pid), "the child outlived its session's idle expiry"
        assert rpc(live.port, idle, "tools/list", {}).status == 404


def test_stopping_the_front_sends_sigterm_then_sigkill_after_the_grace_period() -> None:
    with bridged([*RAW_CHILD_ARGV, "--ignore-sigterm"], grace_seconds=0.5) as live:
        session_id = open_session(live.port)
        pid = int(_tool_text(live.port, session_id, "pid"))
    assert wait_gone(pid), "a child that ignores SIGTERM outlived the front's stop"


# --- the front as a process: SIGTERM, SIGKILL --------------------------------------------


@contextmanager
def front_process(*child: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int, IO[str]]]:
    """`python -m mcp_auth serve --stdio -- child` under a subreaper; (supervisor, front pid, port, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MCP_AUTH_TOKEN": TOKEN}
    supervisor = subprocess.Popen(
        [
            sys.executable,
            str(SUBREAPER),
            sys.executable,
            "-m",
            "mcp_auth",
            "serve",
            "--port",
            "0",
            "--stdio",
            "--",
            *child,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert supervisor.stdout is not None and supervisor.stderr is not None
        front = int(supervisor.stdout.readline())
        port = 0
        for line in iter(supervisor.stderr.readline, ""):
            if "listening on http://127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1].split("/")[0])
                break
        assert port, "the front did not start"
        yield supervisor, front, port, supervisor.stderr
    finally:
        if supervisor.poll() is None:
            try:
                os.kill(front, signal.SIGKILL)
            except ProcessLookupError:
                pass
            supervisor.wait(STARTUP_DEADLINE_SECONDS)
        for pipe in (supervisor.stdout, supervisor.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.parametrize(
    ("child", "how"),
    [
        pytest.param(CHILD_ARGV, signal.SIGTERM, id="sigterm"),
        pytest.param(CHILD_ARGV, signal.SIGKILL, id="sigkill-child-sees-eof"),
        pytest.param([*RAW_CHILD_ARGV, "--ignore-eof"], signal.SIGKILL, id="sigkill-child-ignores-eof"),
    ],
)
def test_no_child_outlives_the_front(child: list[str], how: signal.Signals, tmp_path: Path) -> None:
    pids: list[int] = []
    try:
        with front_process(*child, tmp_path=tmp_path) as (supervisor, front, port, stderr):
            for _ in range(2):
                session_id = open_session(port)
                pids.append(int(_tool_text(port, session_id, "pid")))
            assert all(alive(pid) for pid in pids)
            os.kill(front, how)
            # The supervisor exits once nothing it adopted is left: every child ended, and was reaped.
            assert all(wait_gone(pid) for pid in pids), "a child outlived the front"
            status = supervisor.wait(STARTUP_DEADLINE_SECONDS)
            rest: Any = stderr.read()
    finally:
        for pid in pids:  # a failed run must not leave its children behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    if how == signal.SIGTERM:
        assert status == 0, rest
        assert "mcp_auth: stopped" in rest
