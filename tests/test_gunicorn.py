"""`gunicorn 'mcp_auth:create_app()'` with gthread workers, configured from the environment."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client.client import Client
from mcp.client.subscriptions import ToolsListChanged
from support import TOKEN, initialize_body, request
from test_mcp_client import run_client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from ws_client import websocket_client

ROOT = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE_SECONDS = 30

TOOLS_MODULE = textwrap.dedent(
    '''
    from mcp_auth import Context, McpServer

    server = McpServer("under-gunicorn")

    @server.tool()
    def steps(count: int, ctx: Context) -> str:
        """Reports progress count times."""
        for n in range(count):
            ctx.report_progress(n + 1, count)
        return f"{count} steps"

    @server.tool()
    def touch_tools() -> str:
        """Tells every listener that the tool list changed."""
        server.notify_list_changed("tools")
        return "touched"
    '''
)


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "gunicorn_tools.py").write_text(TOOLS_MODULE)
    env = {
        **os.environ,
        "MCP_AUTH_TOKEN": TOKEN,
        "MCP_AUTH_TARGET": "gunicorn_tools:server",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            "8",
            "-b",
            "127.0.0.1:0",
            "--chdir",
            str(tmp_path),
            "mcp_auth:create_app()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    port: list[int] = []
    ready = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if match:
                port.append(int(match.group(1)))
            if "Booting worker" in line and port:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(STARTUP_DEADLINE_SECONDS), "gunicorn did not start:\n" + "".join(lines)
        yield port[0]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
    log = "".join(lines)
    assert TOKEN not in log
    assert "Traceback" not in log and "Error handling request" not in log, log
    # create_app() sets up audit logging when the host has not: every test here audits something.
    assert " audit " in log, log


def test_pipeline_runs_under_gunicorn(gunicorn_server: int) -> None:
    assert request(gunicorn_server, body=initialize_body(), token=None).status == 401
    assert request(gunicorn_server, body=initialize_body(), host_header="evil.example").status == 403
    assert request(gunicorn_server, body=initialize_body()).status == 200


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_mcp_client_with_progress_under_gunicorn(gunicorn_server: int, mode: str) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def body(client: Client) -> Any:
        return await client.call_tool("steps", {"count": 4}, progress_callback=on_progress)

    result = run_client(f"http://127.0.0.1:{gunicorn_server}/mcp", TOKEN, mode, body)
    assert result.content[0].text == "4 steps"
    assert progress == [1, 2, 3, 4]


def test_websocket_under_gunicorn(gunicorn_server: int) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def main() -> Any:
        url = f"ws://127.0.0.1:{gunicorn_server}/mcp"
        try:
            await connect(url, subprotocols=["mcp"])  # type: ignore[list-item]
        except InvalidStatus as exc:
            refused = exc.response.status_code
        else:
            refused = 101
        async with Client(websocket_client(url, {"Authorization": f"Bearer {TOKEN}"}), mode="legacy") as client:  # type: ignore[arg-type]
            result = await client.call_tool("steps", {"count": 2}, progress_callback=on_progress)
        return refused, result

    refused, result = asyncio.run(main())
    assert refused == 401
    assert result.content[0].text == "2 steps"
    assert progress == [1, 2]
    # The worker is still serving plain HTTP after the socket closed.
    assert request(gunicorn_server, body=initialize_body()).status == 200


def _run_until_booted(
    args: list[str], env: dict[str, str], workers: int, summaries: int, cwd: Path
) -> tuple[str, str, int]:
    """Start gunicorn, wait until `workers` workers have booted and `summaries` summaries are printed,
    stop it; its stdout, stderr, port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *args, "-w", str(workers), "-b", "127.0.0.1:0", "mcp_auth:create_app()"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    booted = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            printed = sum(seen.startswith("mcp_auth ") and " serving " in seen for seen in lines)
            if sum("Booting worker" in seen for seen in lines) == workers and printed >= summaries:
                booted.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert booted.wait(STARTUP_DEADLINE_SECONDS), "gunicorn did not start:\n" + "".join(lines)
        port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", "".join(lines)).group(1))  # type: ignore[union-attr]
        assert request(port, "GET", path="/healthz", token=None).status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=STARTUP_DEADLINE_SECONDS)
        reader.join(timeout=10)
    assert process.returncode == 0
    return stdout, "".join(lines), port


@pytest.mark.parametrize("hooks", [pytest.param(True, id="with-gunicorn_conf"), pytest.param(False, id="plain")])
def test_the_summary_and_first_run_name_the_real_bind(tmp_path: Path, hooks: bool) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_AUTH_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PYTHONPATH": str(ROOT)})
    args = ["-k", "gthread", "--threads", "4", *(["-c", "python:mcp_auth.gunicorn_conf"] if hooks else [])]
    stdout, stderr, port = _run_until_booted(args, env, workers=2, summaries=1 if hooks else 2, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/mcp"
    summaries = [line for line in stderr.splitlines() if line.startswith("mcp_auth ") and "serving" in line]
    # Printed once by the master with gunicorn_conf; once per worker without it. The real address either way.
    assert len(summaries) == (1 if hooks else 2), stderr
    assert all(url in line for line in summaries), summaries
    assert stderr.count("clients:          loopback only (no explicit token)") == len(summaries)
    assert "8765" not in stdout + stderr
    # The first run's guidance: once, with the real address.
    assert stdout.count("First run: generated a bearer token") == 1
    assert f'"url": "{url}"' in stdout


def test_the_mcp_client_listens_under_gunicorn(gunicorn_server: int) -> None:
    """gthread workers: the listen's answer is flushed per event, and a change made by another
    request of the same worker reaches it."""

    async def body(client: Client) -> tuple[str | None, Any, str]:
        async with client.listen(tools_list_changed=True) as subscription:
            touched = await client.call_tool("touch_tools", {})
            event = await asyncio.wait_for(anext(subscription), 30)
        return client.protocol_version, event, touched.content[0].text

    version, event, touched = run_client(f"http://127.0.0.1:{gunicorn_server}/mcp", TOKEN, "auto", body)
    assert (version, event, touched) == ("2026-07-28", ToolsListChanged(), "touched")
