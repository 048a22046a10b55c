"""Handshake-era sessions under real gunicorn workers sharing a real Redis: no request depends on its worker."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from mcp.client.client import Client
from nginx_support import Gunicorn, gunicorn_process
from redis_support import RedisServer, redis_server
from support import TOKEN, open_session, rpc
from test_mcp_client import run_client

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
    def steps(count: int, ctx: Context) -> str:
        """Reports progress count times."""
        for n in range(count):
            ctx.report_progress(n + 1, count)
        return f"{count} steps"
    '''
)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _workers(tmp_path: Path, store: str | None, workers: int = 2) -> Any:
    (tmp_path / "worker_tools.py").write_text(TOOLS_MODULE)
    env = {"MCP_AUTH_TOKEN": TOKEN, "MCP_AUTH_TARGET": "worker_tools:server"}
    if store:
        env["MCP_AUTH_SESSION_STORE"] = store
    return gunicorn_process(tmp_path, env, threads=8, workers=workers)


def _pid(port: int, session_id: str, request_id: int) -> int:
    response = rpc(port, session_id, "tools/call", {"name": "pid", "arguments": {}}, request_id=request_id)
    assert response.status == 200, (response.status, response.body)
    result = response.json()["result"]
    assert not result.get("isError"), result
    return int(result["content"][0]["text"])


def test_200_calls_of_one_session_16_at_a_time_all_succeed_on_2_workers(
    tmp_path: Path, shared_redis: RedisServer
) -> None:
    with _workers(tmp_path, shared_redis.url) as server:
        session_id = open_session(server.port)
        with ThreadPoolExecutor(AT_ONCE) as pool:
            pids = list(pool.map(lambda n: _pid(server.port, session_id, 100 + n), range(CALLS)))
        assert len(pids) == CALLS
        assert len(set(pids)) == 2, "both workers served the session"
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
