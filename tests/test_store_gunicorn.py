"""Handshake-era sessions under real gunicorn workers sharing a real Redis: no request depends on its worker."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mcp.client.client import Client
from nginx_support import Gunicorn, gunicorn_process
from redis_support import RedisServer, free_port, module_redis
from support import TOKEN, open_session, rpc
from test_mcp_client import run_client
from test_store_resume import post_until, resume

from mcp_auth.auth.tokens import add_token

# The measurement: 200 calls of one session, 16 at a time, each over a fresh connection.
CALLS = 200
AT_ONCE = 16

TOOLS_MODULE = textwrap.dedent(
    '''
    import os

    from mcp_auth import Context, McpServer

    server = McpServer("workers")

    @server.tool()
    def pid() -> int:
        """The serving process's id."""
        return os.getpid()

    @server.tool()
    def cut(ctx: Context) -> str:
        """Sends a message, closes its stream, sends another, answers: the client resumes for the rest."""
        ctx.info("before")
        ctx.close_stream()
        ctx.info("after")
        return "resumed"

    @server.tool()
    def steps(count: int, ctx: Context) -> str:
        """Reports progress count times."""
        for n in range(count):
            ctx.report_progress(n + 1, count)
        return f"{count} steps"
    '''
)


TARGET = "worker_tools:server"
ROOT = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE_SECONDS = 60.0


shared_redis = module_redis("shared_redis")


def _workers(tmp_path: Path, store: str | None, workers: int = 2) -> Any:
    (tmp_path / "worker_tools.py").write_text(TOOLS_MODULE)
    env = {"MCP_AUTH_TOKEN": TOKEN, "MCP_AUTH_TARGET": TARGET}
    if store:
        env["MCP_AUTH_SESSION_STORE"] = store
    return gunicorn_process(tmp_path, env, threads=8, workers=workers)


def _pid(port: int, session_id: str, request_id: int, token: str = TOKEN) -> int:
    response = rpc(port, session_id, "tools/call", {"name": "pid", "arguments": {}}, request_id=request_id, token=token)
    assert response.status == 200, (response.status, response.body)
    result = response.json()["result"]
    assert not result.get("isError"), result
    return int(result["content"][0]["text"])


def _served_by_both_workers(port: int, session_id: str, token: str, first_id: int, per_batch: int) -> bool:
    """Send batches of calls of one session, AT_ONCE at a time, until both workers have served it.

    Which worker accepts a connection is the kernel's choice: on a busy machine one may take a
    whole batch, and a worker still loading the app takes none. Every call of every batch must
    succeed (`_pid` asserts it); more batches run until both workers have answered (or the
    startup deadline, a generous bound, has passed), so sharing is proven without relying on timing.
    """
    served: set[int] = set()
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    for batch in itertools.count():
        if batch >= 10 and time.monotonic() > deadline:
            break
        start = first_id + batch * per_batch
        with ThreadPoolExecutor(AT_ONCE) as pool:
            pids = list(pool.map(lambda n: _pid(port, session_id, n, token), range(start, start + per_batch)))
        assert len(pids) == per_batch
        served.update(pids)
        if len(served) == 2:
            return True
    return False


def test_200_calls_of_one_session_16_at_a_time_all_succeed_on_2_workers(
    tmp_path: Path, shared_redis: RedisServer
) -> None:
    with _workers(tmp_path, shared_redis.url) as server:
        session_id = open_session(server.port)
        assert _served_by_both_workers(server.port, session_id, TOKEN, first_id=100, per_batch=CALLS)
        assert "no session store is configured" not in server.log


def test_the_real_client_runs_a_session_with_progress_across_workers(tmp_path: Path, shared_redis: RedisServer) -> None:
    with _workers(tmp_path, shared_redis.url) as server:
        url = f"http://127.0.0.1:{server.port}/mcp"

        async def body(client: Client) -> Any:
            seen: list[float] = []

            async def progress(value: float, total: float | None, message: str | None) -> None:
                seen.append(value)

            calls = [await client.call_tool("steps", {"count": 3}, progress_callback=progress) for _ in range(6)]
            pids = {(await client.call_tool("pid", {})).content[0].text for _ in range(12)}  # type: ignore[union-attr]
            return calls, seen, pids

        calls, seen, pids = run_client(url, TOKEN, "legacy", body)
        assert all(call.content[0].text == "3 steps" for call in calls)
        assert seen == [1, 2, 3] * 6
        assert pids  # served; which worker is the connection pool's choice


def test_streams_cut_on_one_worker_are_resumed_on_whichever_worker_gets_the_get(
    tmp_path: Path, shared_redis: RedisServer
) -> None:
    """Each call's stream is cut and resumed over fresh connections, 16 at a time: gunicorn hands the
    resuming GETs to both workers (checked below), and each gets the rest of its stream."""

    def cut_and_resume(n: int) -> list[dict[str, Any]]:
        last_id = post_until(server.port, session_id, "cut", b"before", request_id=500 + n)
        resumed = resume(server.port, session_id, last_id)
        assert resumed.status == 200, (resumed.status, resumed.body)
        return resumed.sse_messages()

    with _workers(tmp_path, shared_redis.url) as server:
        session_id = open_session(server.port)
        with ThreadPoolExecutor(AT_ONCE) as pool:
            results = list(pool.map(cut_and_resume, range(64)))
        assert len(_worker_pids(server)) == 2
    for n, messages in enumerate(results):
        assert [m.get("params", {}).get("data") for m in messages[:-1]] == ["after"]
        assert messages[-1]["id"] == 500 + n and messages[-1]["result"]["content"][0]["text"] == "resumed"


def test_two_workers_without_a_store_are_warned_about_with_the_fix(tmp_path: Path) -> None:
    server: Gunicorn
    with _workers(tmp_path, None) as server:
        pass  # each worker builds its app as it boots: the warning is written by then
    assert "gunicorn runs 2 workers and no session store is configured" in server.log
    assert "MCP_AUTH_SESSION_STORE=redis://" in server.log


def test_one_worker_without_a_store_is_not_warned_about(tmp_path: Path) -> None:
    with _workers(tmp_path, None, workers=1) as server:
        assert open_session(server.port)
    assert "no session store is configured" not in server.log


README = (ROOT / "README.md").read_text()  # the multi-worker command, run as written


def _readme_block(containing: str) -> str:
    found = [m.group(1) for m in re.finditer(r"```sh\n(.*?)```", README, re.S) if containing in m.group(1)]
    assert len(found) == 1, f"expected one sh block containing {containing!r}, found {len(found)}"
    return found[0]


def test_the_readme_multi_worker_command_works_as_written(tmp_path: Path, shared_redis: RedisServer) -> None:
    command = _readme_block("MCP_AUTH_SESSION_STORE=redis://")
    (tmp_path / "worker_tools.py").write_text(TOOLS_MODULE)
    port = free_port()
    tokens_file = tmp_path / "tokens.json"
    token = add_token(tokens_file, "reader", None)
    # Only what must differ here: the store's port, the tokens file, the bind port, this interpreter.
    for documented, here in (
        ("redis://127.0.0.1:6379/0", shared_redis.url),
        ("/etc/mcp-auth/tokens.json", str(tokens_file)),
        ("-b 127.0.0.1:8000", f"-b 127.0.0.1:{port}"),
        ("    gunicorn ", f"    {shlex.quote(sys.executable)} -m gunicorn "),
    ):
        assert command.count(documented) == 1, documented
        command = command.replace(documented, here)
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=tmp_path,
        # The tools that say which worker answered (the command serves MCP_AUTH_TARGET when it is set).
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "MCP_AUTH_TARGET": TARGET},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    booted = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if sum("Booting worker" in seen for seen in lines) >= 2:
                booted.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert booted.wait(STARTUP_DEADLINE_SECONDS), "".join(lines)
        session_id = open_session(port, token=token)
        assert _served_by_both_workers(port, session_id, token, first_id=300, per_batch=40)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STARTUP_DEADLINE_SECONDS)
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
    log = "".join(lines)
    assert "no session store is configured" not in log and token not in log and "Traceback" not in log


def test_the_stateless_era_needs_no_store_200_calls_16_at_a_time_on_2_workers(tmp_path: Path) -> None:
    """Issue 11, item 1: 2026-07-28 requests carry everything; any worker serves any of them, nothing shared."""
    with _workers(tmp_path, None) as server:
        url = f"http://127.0.0.1:{server.port}/mcp"

        async def body(client: Client) -> Any:
            gate = asyncio.Semaphore(AT_ONCE)

            async def one() -> str:
                async with gate:
                    result = await client.call_tool("pid", {})
                    assert not result.is_error, result
                    return str(result.content[0].text)  # type: ignore[union-attr]

            steps = await client.call_tool("steps", {"count": 3})
            return steps, await asyncio.gather(*(one() for _ in range(CALLS))), client.protocol_version

        steps, pids, version = run_client(url, TOKEN, "auto", body)
    assert version == "2026-07-28"
    assert steps.content[0].text == "3 steps"
    # All succeed, whichever worker the client's pooled connections reached (the two-hosts test shows
    # the same calls spread over hosts by nginx).
    assert len(pids) == CALLS and set(pids) <= {str(pid) for pid in _worker_pids(server)}


def _worker_pids(server: Gunicorn) -> set[int]:
    """The worker pids gunicorn logged ("Booting worker with pid: N")."""
    return {int(match) for match in re.findall(r"Booting worker with pid: (\d+)", server.log)}
