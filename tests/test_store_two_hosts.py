"""Two gunicorn instances of two workers each ("two hosts", different ports) sharing one real Redis,
behind the documented nginx front (deploy/nginx.conf) round-robin: no request depends on its process.

Each instance reads its own copy of the tokens file (as hosts without shared
storage would) and the same session store; nothing else is shared. A token
revoked in one copy reaches the other host through the store.
Skipped when nginx or redis-server is not installed, and a failure then if CI is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import redis
from mcp.client.client import Client
from nginx_support import Gunicorn, Nginx, gunicorn_process, nginx_front, require_nginx
from redis_support import RedisServer, redis_server
from support import request, rpc
from test_mcp_client import run_client

from mcp_auth.auth.statekey import generate_state_key
from mcp_auth.auth.tokens import add_token

ROOT = Path(__file__).resolve().parent.parent
CALLS = 200
# The workload, and what deploy/nginx.conf lets one client address have in progress at once (limit_conn).
AT_ONCE = 16
# As documented for several workers: gunicorn -k gthread -w 2 --threads 16.
WORKERS, THREADS = 2, 16
# DESIGN.md: a revoked token is refused by every worker of every host within this.
REVOCATION_SECONDS = 5.0
# Requests per host that must all be refused before revocation counts as reached: each goes
# over a fresh connection to whichever worker accepts it, so both workers are asked.
REFUSALS_PER_HOST = 16
# Generous: how long a test waits for something that must happen (never a pass/fail timing).
WAIT_SECONDS = 60.0
CLOSE = {"Connection": "close"}

TOOLS_MODULE = textwrap.dedent(
    '''
    import os
    import time
    from pathlib import Path

    from mcp_auth import Context, McpServer

    server = McpServer("two-hosts")

    @server.tool()
    def where() -> str:
        """The serving host (gunicorn master) and worker, as master:worker process ids."""
        return f"{os.getppid()}:{os.getpid()}"

    @server.tool()
    def steps(count: int, ctx: Context) -> str:
        """Reports progress count times."""
        for n in range(count):
            ctx.report_progress(n + 1, count)
        return f"{count} steps"

    @server.tool()
    def ask_user(ctx: Context) -> str:
        """Asks the user for a name."""
        with open("rounds.log", "a") as rounds:  # which host ran this round (the cwd is shared)
            rounds.write(str(os.getppid()) + " ")
        answer = ctx.elicit(
            "What is your name?",
            {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        )
        return f"{answer['action']}: {(answer.get('content') or {}).get('name')}"

    @server.tool()
    def bump() -> str:
        """Changes the counter resource and tells its subscribers."""
        server.notify_resource_updated("counter://value")
        return "bumped"

    @server.resource("counter://value")
    def counter() -> str:
        return "1"

    @server.tool()
    async def in_two_parts(ctx: Context) -> str:
        """Reports progress, cuts its own stream (the client resumes with Last-Event-ID), reports again."""
        await ctx.report_progress(1, 2)
        await ctx.close_stream()
        await ctx.report_progress(2, 2)
        return "both parts"

    @server.tool()
    def held(marker: str) -> str:
        """Says it started (a file), then runs until the test releases it (another file)."""
        Path(marker + ".started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not Path(marker + ".release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return "finished"
    '''
)


@dataclass
class TwoHosts:
    hosts: list[Gunicorn]
    front: Nginx
    tokens: dict[str, str]
    tokens_files: list[Path]  # one copy per host
    workdir: Path
    store_url: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.front.port}/mcp"


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[TwoHosts]:
    require_nginx()
    workdir = tmp_path / "app"
    workdir.mkdir()
    (workdir / "two_hosts_tools.py").write_text(TOOLS_MODULE)
    tokens_file = tmp_path / "tokens.json"
    tokens = {name: add_token(tokens_file, name, None) for name in ("alice", "bob", "carol")}
    copies = [tmp_path / f"tokens-host{n}.json" for n in (1, 2)]
    for copy in copies:
        shutil.copy2(tokens_file, copy)
    # One request-state key for every host: a multi round-trip retry may land on any of them.
    state_key = tmp_path / "state-key"
    state_key.write_text(generate_state_key() + "\n")
    state_key.chmod(0o600)
    with ExitStack() as stack:
        store: RedisServer = stack.enter_context(redis_server(tmp_path / "redis"))
        env = {
            "MCP_AUTH_SESSION_STORE": store.url,
            "MCP_AUTH_STATE_KEY_FILE": str(state_key),
            "MCP_AUTH_TRUSTED_PROXIES": "127.0.0.1",
            "MCP_AUTH_TARGET": "two_hosts_tools:server",
        }
        hosts = [
            stack.enter_context(
                gunicorn_process(workdir, {**env, "MCP_AUTH_TOKENS_FILE": str(copy)}, threads=THREADS, workers=WORKERS)
            )
            for copy in copies
        ]
        front = stack.enter_context(nginx_front(tmp_path / "nginx", [host.port for host in hosts]))
        deployment = TwoHosts(hosts, front, tokens, copies, workdir, store.url)
        yield deployment
        for host in hosts:
            for token in tokens.values():
                assert token not in host.log
            assert "Traceback" not in host.log, host.log


def _open(port: int, token: str) -> str:
    """initialize and notifications/initialized, each on its own connection (closed after the answer)."""
    response = request(port, body=_initialize(), token=token, headers=CLOSE)
    session_id = response.header("Mcp-Session-Id")
    assert response.status == 200 and session_id, response
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert request(port, body=note, headers={"Mcp-Session-Id": session_id, **CLOSE}, token=token).status == 202
    return session_id


def _rpc(port: int, session_id: str, method: str, params: Any = None, *, token: str, request_id: int = 7) -> Any:
    return rpc(port, session_id, method, params, request_id=request_id, token=token, headers=CLOSE)


def _where(port: int, session_id: str, token: str, request_id: int) -> str:
    response = _rpc(
        port, session_id, "tools/call", {"name": "where", "arguments": {}}, request_id=request_id, token=token
    )
    assert response.status == 200, (response.status, response.body)
    return str(response.json()["result"]["content"][0]["text"])


def test_200_calls_of_one_session_16_at_a_time_all_succeed_on_2_workers_x_2_hosts(two_hosts: TwoHosts) -> None:
    # As an operator runs it: every call through the documented nginx front (deploy/nginx.conf as written,
    # limit_conn included), from one client address, over fresh connections, round-robin over the hosts.
    alice = two_hosts.tokens["alice"]
    port = two_hosts.front.port
    session_id = _open(port, token=alice)
    with ThreadPoolExecutor(AT_ONCE) as pool:
        served = list(pool.map(lambda n: _where(port, session_id, alice, 1000 + n), range(CALLS)))
    assert len(served) == CALLS
    masters = {entry.split(":")[0] for entry in served}
    assert masters == {str(host.process.pid) for host in two_hosts.hosts}, "both hosts served the session"
    assert len(set(served)) >= 3, f"workers that served: {sorted(set(served))}"


def test_calls_of_one_session_through_the_front_reach_both_hosts_and_delete_ends_it_everywhere(
    two_hosts: TwoHosts,
) -> None:
    alice = two_hosts.tokens["alice"]
    port = two_hosts.front.port
    session_id = _open(port, token=alice)
    with ThreadPoolExecutor(AT_ONCE) as pool:
        served = list(pool.map(lambda n: _where(port, session_id, alice, 1000 + n), range(CALLS // 4)))
    assert {entry.split(":")[0] for entry in served} == {str(host.process.pid) for host in two_hosts.hosts}
    deleted = request(port, "DELETE", headers={"Mcp-Session-Id": session_id, **CLOSE}, token=alice)
    assert deleted.status == 204
    for host in two_hosts.hosts:
        for _ in range(4):  # fresh connections: either worker
            assert _rpc(host.port, session_id, "tools/list", token=alice).status == 404


def test_the_real_client_runs_whole_sessions_through_the_front(two_hosts: TwoHosts) -> None:
    async def body(client: Client) -> Any:
        seen: list[float] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(value)

        tools = await client.list_tools()
        calls = [await client.call_tool("steps", {"count": 4}, progress_callback=progress) for _ in range(4)]
        served = {(await client.call_tool("where", {})).content[0].text for _ in range(8)}  # type: ignore[union-attr]
        return tools, calls, seen, served

    tools, calls, seen, served = run_client(two_hosts.url, two_hosts.tokens["alice"], "legacy", body)
    assert {tool.name for tool in tools.tools} == {"where", "steps", "held", "ask_user", "bump", "in_two_parts"}
    assert all(call.content[0].text == "4 steps" for call in calls)
    assert seen == [1, 2, 3, 4] * 4
    assert served


def test_the_real_client_resumes_a_dropped_stream_through_the_front_on_the_other_host(two_hosts: TwoHosts) -> None:
    """A call's stream is cut; the mcp client resumes it with Last-Event-ID through nginx, which sends the
    resumption to whichever host its rotation names; over several calls some land on the other host."""

    async def body(client: Client) -> Any:
        results = []
        for _ in range(6):
            seen: list[float] = []

            async def progress(
                value: float, total: float | None, message: str | None, into: list[float] = seen
            ) -> None:
                into.append(value)

            result = await client.call_tool("in_two_parts", {}, progress_callback=progress)
            results.append((result.content[0].text, seen))  # type: ignore[union-attr]
        return results

    results = run_client(two_hosts.url, two_hosts.tokens["alice"], "legacy", body)
    assert results == [("both parts", [1, 2])] * 6
    log = two_hosts.front.access_log()
    resumptions = [upstream for method, _, upstream, last_event_id in log if method == "GET" and last_event_id != "-"]
    assert len(resumptions) >= 6, log
    # Which host served the call each resumption continued: the POST logged just before it.
    crossed = 0
    for index, (method, _, upstream, last_event_id) in enumerate(log):
        if method == "GET" and last_event_id != "-":
            calls = [entry[2] for entry in log[:index] if entry[0] == "POST"]
            crossed += bool(calls) and calls[-1] != upstream
    assert crossed, log


def _refused_everywhere(two_hosts: TwoHosts, session_id: str, token: str) -> bool:
    for host in two_hosts.hosts:
        for n in range(REFUSALS_PER_HOST):
            # Alternate: a new session (step 5) and the open session's next call (steps 5 and 7).
            if n % 2:
                status = _rpc(host.port, session_id, "tools/list", token=token).status
            else:
                status = request(host.port, body=_initialize(), token=token, headers=CLOSE).status
            if status != 401:
                return False
    return True


def _initialize() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }


def _token_command(*args: str) -> str:
    """`python -m mcp_auth token ...` as an operator runs it (no MCP_AUTH_SESSION_STORE in its environment)."""
    env = {key: value for key, value in os.environ.items() if key != "MCP_AUTH_SESSION_STORE"}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_auth", "token", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_token_revoked_on_one_host_is_refused_by_every_worker_of_both_within_5_seconds(two_hosts: TwoHosts) -> None:
    """The hosts share no file: `token revoke` edits the first host's copy and records the token's
    digest in the store, and every worker of both hosts refuses it within 5 s."""
    alice, bob = two_hosts.tokens["alice"], two_hosts.tokens["bob"]
    session_id = _open(two_hosts.front.port, token=alice)
    for host in two_hosts.hosts:
        assert _rpc(host.port, session_id, "tools/list", token=alice).status == 200
    first_copy = str(two_hosts.tokens_files[0])
    _token_command("revoke", "alice", "--tokens-file", first_copy, "--session-store", two_hosts.store_url)
    revoked_at = time.monotonic()
    while not _refused_everywhere(two_hosts, session_id, alice):
        assert time.monotonic() - revoked_at < REVOCATION_SECONDS, "a worker still accepts the revoked token"
    # The store holds the digest the tokens file held, never the token.
    with redis.Redis.from_url(two_hosts.store_url) as client:
        assert client.lrange("mcp_auth:revoked", 0, -1) == [hashlib.sha256(alice.encode()).hexdigest().encode()]
        assert not any(alice.encode() in (client.dump(key) or b"") for key in client.keys("*"))
    # Everyone else is served as before, on every worker of both hosts.
    for host in two_hosts.hosts:
        other = _open(host.port, token=bob)
        assert _rpc(host.port, other, "tools/list", token=bob).status == 200


def test_sigterm_to_one_host_lets_its_call_finish_while_the_other_keeps_serving(two_hosts: TwoHosts) -> None:
    alice = two_hosts.tokens["alice"]
    first, second = two_hosts.hosts
    session_id = _open(two_hosts.front.port, token=alice)
    marker = str(two_hosts.workdir / "held-call")
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(
            _rpc, first.port, session_id, "tools/call", {"name": "held", "arguments": {"marker": marker}}, token=alice
        )
        started = Path(marker + ".started")
        deadline = time.monotonic() + WAIT_SECONDS
        while not started.exists():
            assert time.monotonic() < deadline and not in_flight.done(), "the held call never started"
            time.sleep(0.02)
        first.process.send_signal(signal.SIGTERM)
        # The stopping host closes its listening socket at once, while its call goes on ...
        deadline = time.monotonic() + WAIT_SECONDS
        while not _refused(first.port):
            assert time.monotonic() < deadline, "the stopping host still takes connections"
            time.sleep(0.02)
        # ... so the front's connects to it are refused and every request, POSTs included, goes
        # to the other host (proxy_next_upstream error): all answered while the held call still
        # holds the first host, i.e. none waits for the stopping host to exit.
        with ThreadPoolExecutor(AT_ONCE) as pool:
            calls = [pool.submit(_where, two_hosts.front.port, session_id, alice, 2000 + n) for n in range(2 * AT_ONCE)]
            served = [call.result(timeout=WAIT_SECONDS) for call in calls]
        assert all(entry.startswith(f"{second.process.pid}:") for entry in served), served
        assert not in_flight.done() and first.process.poll() is None, "the first host was still draining"
        Path(marker + ".release").write_text("go")
        finished = in_flight.result(timeout=WAIT_SECONDS)
    assert finished.status == 200, finished.body
    assert finished.json()["result"]["content"][0]["text"] == "finished"
    assert first.process.wait(timeout=WAIT_SECONDS) == 0
    # The first host is gone: the front serves the session from the second alone.
    for n in range(4):
        assert _where(two_hosts.front.port, session_id, alice, 2200 + n).startswith(f"{second.process.pid}:")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_stateless_era_through_the_front_is_served_by_both_hosts(two_hosts: TwoHosts) -> None:
    async def body(client: Client) -> Any:
        seen: list[float] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(value)

        calls = [await client.call_tool("steps", {"count": 2}, progress_callback=progress) for _ in range(3)]
        served = [(await client.call_tool("where", {})).content[0].text for _ in range(12)]  # type: ignore[union-attr]
        return client.protocol_version, calls, seen, served

    version, calls, seen, served = run_client(two_hosts.url, two_hosts.tokens["bob"], "auto", body)
    assert version == "2026-07-28"
    assert all(call.content[0].text == "2 steps" for call in calls) and seen == [1, 2] * 3
    assert {entry.split(":")[0] for entry in served} == {str(host.process.pid) for host in two_hosts.hosts}


async def _elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


# resources/subscribe is a 2025-11-25 feature the 2.x client marks deprecated for 2026-07-28.
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
def test_elicitation_answers_and_resource_updates_cross_hosts_through_the_front(two_hosts: TwoHosts) -> None:
    """The answer to an elicitation reaches the worker whose tool waits, and a GET stream gets the
    resources/updated that a call on another worker caused (nginx alternates hosts per request)."""
    relayed: list[dict[str, Any]] = []
    with redis.Redis.from_url(two_hosts.store_url) as client, client.pubsub() as bus:
        bus.subscribe("mcp_auth:bus")
        confirmed = bus.get_message(timeout=WAIT_SECONDS)  # subscribed before any traffic
        assert confirmed is not None and confirmed["type"] == "subscribe", confirmed

        updates: list[str] = []

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                updates.append(str(message.params.uri))

        async def body(mcp: Client) -> Any:
            answers = [(await mcp.call_tool("ask_user", {})).content[0].text for _ in range(4)]  # type: ignore[union-attr]
            await mcp.subscribe_resource("counter://value")
            for _ in range(4):  # the GET stream is on one host; some of these run on the other
                await mcp.call_tool("bump", {})
            deadline = time.monotonic() + WAIT_SECONDS
            while not updates:
                assert time.monotonic() < deadline, "no resources/updated reached the client"
                await asyncio.sleep(0.05)
            return answers

        kwargs: dict[str, Any] = {"elicitation_callback": _elicitation, "message_handler": on_message}
        answers = run_client(two_hosts.url, two_hosts.tokens["alice"], "legacy", body, **kwargs)
        quiet = 0  # what was published is buffered on this connection: read until it stays quiet
        while quiet < 3:
            message = bus.get_message(timeout=0.5)
            quiet = quiet + 1 if message is None else 0
            if message is not None and message["type"] == "message":
                relayed.append(json.loads(message["data"]))
    assert answers == ["accept: Ada"] * 4
    kinds = [message["kind"] for message in relayed]
    assert "reply" in kinds, f"no answer crossed hosts: {kinds}"
    assert "notify" in kinds


def test_a_stateless_multi_round_trip_retry_lands_on_the_other_host(two_hosts: TwoHosts) -> None:
    """2026-07-28: the tool asks the user; the client answers by sending the request again with the
    sealed requestState, and nginx's round-robin takes the retry to the other host (same key file)."""

    async def body(client: Client) -> Any:
        return client.protocol_version, [(await client.call_tool("ask_user", {})) for _ in range(4)]

    version, results = run_client(
        two_hosts.url, two_hosts.tokens["bob"], "auto", body, elicitation_callback=_elicitation
    )
    assert version == "2026-07-28"
    assert [result.content[0].text for result in results] == ["accept: Ada"] * 4
    # Each round wrote the host that ran it: the first round and its retry were on different hosts.
    rounds = (two_hosts.workdir / "rounds.log").read_text().split()
    assert len(rounds) == 8, rounds
    pairs = list(zip(rounds[::2], rounds[1::2], strict=True))
    assert any(first != retry for first, retry in pairs), f"every retry stayed on its host: {pairs}"


def test_a_rotated_token_is_refused_by_both_hosts_and_its_successor_served_where_the_copy_has_it(
    two_hosts: TwoHosts,
) -> None:
    carol = two_hosts.tokens["carol"]
    session_id = _open(two_hosts.front.port, token=carol)
    first, second = two_hosts.hosts
    new = _token_command(
        "rotate", "carol", "--tokens-file", str(two_hosts.tokens_files[1]), "--session-store", two_hosts.store_url
    )
    rotated_at = time.monotonic()
    while not _refused_everywhere(two_hosts, session_id, carol):
        assert time.monotonic() - rotated_at < REVOCATION_SECONDS, "a worker still accepts the rotated token"
    # The new token is in the second host's copy only, until the operator copies the file to the first.
    assert _rpc(second.port, _open(second.port, token=new), "tools/list", token=new).status == 200
    assert request(first.port, body=_initialize(), token=new, headers=CLOSE).status == 401


def test_without_the_store_a_revocation_reaches_only_the_hosts_whose_copy_was_edited(two_hosts: TwoHosts) -> None:
    """The contrast: what the store adds. Revoked in the first host's copy alone, the token still
    works on the second host, whose copy still lists it."""
    bob = two_hosts.tokens["bob"]
    first, second = two_hosts.hosts
    _token_command("revoke", "bob", "--tokens-file", str(two_hosts.tokens_files[0]))
    deadline = time.monotonic() + WAIT_SECONDS
    while request(first.port, body=_initialize(), token=bob, headers=CLOSE).status != 401:
        assert time.monotonic() < deadline, "the first host never refused the token revoked in its copy"
    session_id = _open(second.port, token=bob)
    assert _rpc(second.port, session_id, "tools/list", token=bob).status == 200
