"""--session-store: the setting, opening the store at start, and handshake-era sessions shared by processes.

Every test that needs Redis runs a real redis-server (tests/redis_support.py);
the "processes" are two servers with their own app each, sharing nothing but
the store (as two gunicorn workers or two hosts would), or real gunicorn
workers (test_store_gunicorn.py).
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_support import RedisServer, emptied_redis, free_port, module_redis, redis_server
from support import TOKEN, Live, live_server, open_session, request, rpc

from mcp_auth import Context, McpServer
from mcp_auth.auth.tokens import StaticToken, add_token
from mcp_auth.config import Config, ConfigError
from mcp_auth.diagnostics import build_diagnostics
from mcp_auth.startup import build_app
from mcp_auth.store.deployment import split_sessions_warning
from mcp_auth.store.sessions import SharedSessionStore
from mcp_auth.store.url import parse_store_url

ROOT = Path(__file__).resolve().parent.parent
# Redis expiry is the store's own clock: tests that wait for it poll with this deadline.
EXPIRY_DEADLINE_SECONDS = 20.0


redis_instance = module_redis("redis_instance")


store = emptied_redis("store")


# --- the setting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", id="full"),
        pytest.param("redis://cache.internal", "redis://cache.internal:6379/0", id="defaults"),
        pytest.param("redis://h:7000/3", "redis://h:7000/3", id="db"),
        pytest.param("rediss://[::1]:7000/1", "rediss://[::1]:7000/1", id="tls-ipv6"),
        pytest.param("redis://:s3cret@h/2", "redis://h:6379/2 (with a password)", id="password-hidden"),
        pytest.param("redis://user:s3cret@h:1/2", "redis://h:1/2 (with a password)", id="user-password-hidden"),
        pytest.param("  redis://h/0  ", "redis://h:6379/0", id="whitespace"),
    ],
)
def test_a_store_url_is_parsed_and_shown_without_its_password(url: str, shown: str) -> None:
    parsed = parse_store_url(url, "X")
    assert parsed.display == shown
    assert "s3cret" not in parsed.display and "s3cret" not in repr(parsed)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param("http://h:6379/0", "scheme 'http'", id="http"),
        pytest.param("h:6379", "only a Redis URL", id="no-scheme"),
        pytest.param("memcached://h/0", "scheme 'memcached'", id="other-engine"),
        pytest.param("redis://:s3cret@h:99999/0", "malformed", id="port-range"),
        pytest.param("redis://:s3cret@h:port/0", "malformed", id="port-text"),
        pytest.param("redis:///0", "names no host", id="no-host"),
        pytest.param("redis://:s3cret@h/db0", "database number", id="db-text"),
        pytest.param("redis://h/0?ssl_cert_reqs=none", "query or fragment", id="query"),
    ],
)
def test_a_bad_store_url_is_a_config_error_naming_its_source_and_never_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_sources({}, {"MCP_AUTH_SESSION_STORE": url})
    message = str(refused.value)
    assert says in message and "MCP_AUTH_SESSION_STORE" in message and "redis://127.0.0.1:6379/0" in message
    assert "s3cret" not in message


def test_the_setting_comes_from_flag_environment_or_toml_in_that_order(tmp_path: Path) -> None:
    toml = tmp_path / "mcp.toml"
    toml.write_text('session_store = "redis://from-toml/1"\n')
    assert Config.from_sources({}, {}, str(toml)).store_url.host == "from-toml"  # type: ignore[union-attr]
    env = {"MCP_AUTH_SESSION_STORE": "redis://from-env/2"}
    assert Config.from_sources({}, env, str(toml)).store_url.host == "from-env"  # type: ignore[union-attr]
    flagged = Config.from_sources({"session_store": "redis://from-flag/3"}, env, str(toml))
    assert flagged.store_url is not None and flagged.store_url.host == "from-flag"
    assert flagged.source_of("session_store") == "--session-store"
    assert Config().store_url is None and Config(session_store="").store_url is None
    assert "s3cret" not in repr(Config(session_store="redis://:s3cret@h/0"))


def test_an_unreachable_store_refuses_to_start_and_leaves_no_first_run_token(isolated_home: Path) -> None:
    dead = free_port()
    config = Config(session_store=f"redis://:s3cret@127.0.0.1:{dead}/0")
    with pytest.raises(ConfigError) as refused:
        build_app(build_diagnostics(), config, summary=False, out=io.StringIO())
    message = str(refused.value)
    assert f"cannot reach the session store at redis://127.0.0.1:{dead}/0 (with a password)" in message
    assert "start redis-server there, or fix the URL" in message and "s3cret" not in message
    assert not (isolated_home / ".config" / "mcp-auth" / "token").exists()


def test_the_command_line_exits_2_with_the_fix_when_the_store_is_unreachable() -> None:
    dead = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "mcp_auth", "--port", "0", "--session-store", f"redis://127.0.0.1:{dead}/0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot reach the session store at redis://127.0.0.1:{dead}/0" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_store_that_is_not_redis_refuses_to_start(tmp_path: Path) -> None:
    # Something listens but speaks another protocol (here: mcp_auth's own HTTP server).
    with live_server() as other:
        with pytest.raises(ConfigError, match=r"session store at redis://127\.0\.0\.1"):
            build_app(build_diagnostics(), Config(token=TOKEN, session_store=f"redis://127.0.0.1:{other.port}/0"))


def test_the_summary_says_where_sessions_live(store: RedisServer) -> None:
    out = io.StringIO()
    app = build_app(build_diagnostics(), Config(token=TOKEN, session_store=store.url), err=out)
    try:
        assert f"sessions:         shared through the store at redis://127.0.0.1:{store.port}/0" in out.getvalue()
    finally:
        app.close()
    out = io.StringIO()
    app = build_app(build_diagnostics(), Config(token=TOKEN), err=out)
    app.close()
    assert "sessions:         in this process's memory (one process; see --session-store" in out.getvalue()


@pytest.mark.parametrize(
    ("workers", "store_configured", "warned"),
    [
        pytest.param(None, False, False, id="not-gunicorn"),
        pytest.param(1, False, False, id="one-worker"),
        pytest.param(2, False, True, id="two-workers-no-store"),
        pytest.param(2, True, False, id="two-workers-store"),
    ],
)
def test_several_workers_without_a_store_are_warned_about_with_the_fix(
    workers: int | None, store_configured: bool, warned: bool
) -> None:
    warning = split_sessions_warning(workers, store_configured)
    assert (warning is not None) == warned
    if warning:
        assert "MCP_AUTH_SESSION_STORE=redis://" in warning and "-w 1" in warning and "404" in warning


# --- sessions shared between two processes ----------------------------------------------


def _logging_server() -> McpServer:
    server = McpServer("shared")

    @server.tool()
    def chatty(ctx: Context) -> str:
        """Logs one line at each level."""
        for level in ("debug", "info", "warning", "error"):
            ctx.log(level, f"a {level} line")
        return "done"

    return server


@pytest.fixture
def two_processes(store: RedisServer) -> Iterator[tuple[Live, Live]]:
    """Two servers, each with its own app, sharing only the store (as two workers or hosts do)."""
    with live_server(_logging_server(), session_store=store.url) as first:
        with live_server(_logging_server(), session_store=store.url) as second:
            yield first, second


def _tool_text(response: Any) -> str:
    messages = response.sse_messages() if response.header("Content-Type") == "text/event-stream" else [response.json()]
    final = messages[-1]
    assert "result" in final, final
    return str(final["result"]["content"][0]["text"])


def test_a_session_made_on_one_process_serves_requests_on_the_other(two_processes: tuple[Live, Live]) -> None:
    first, second = two_processes
    response = request(
        first.port,
        body={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
    )
    session_id = response.header("Mcp-Session-Id")
    assert response.status == 200 and session_id
    # notifications/initialized lands on the other process, then calls alternate.
    note = request(
        second.port,
        body={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={"Mcp-Session-Id": session_id},
    )
    assert note.status == 202
    for n, live in enumerate((first, second, first, second)):
        listed = rpc(live.port, session_id, "tools/list", request_id=10 + n)
        assert listed.status == 200, listed.body
        assert [tool["name"] for tool in listed.json()["result"]["tools"]] == ["chatty"]
    assert second.app.sessions.get(session_id, first.app.guard.token_source.authenticate(TOKEN.encode()))  # type: ignore[union-attr]


def test_an_unknown_session_id_is_404_on_every_process(two_processes: tuple[Live, Live]) -> None:
    for live in two_processes:
        assert rpc(live.port, "no-such-session", "tools/list").status == 404


def test_delete_on_one_process_ends_the_session_on_every_process(two_processes: tuple[Live, Live]) -> None:
    first, second = two_processes
    session_id = open_session(first.port)
    assert rpc(second.port, session_id, "tools/list").status == 200  # the second has a local copy now
    deleted = request(second.port, "DELETE", headers={"Mcp-Session-Id": session_id})
    assert deleted.status == 204
    for live in (first, second):
        refused = rpc(live.port, session_id, "tools/list")
        assert refused.status == 404 and "Session not found" in refused.json()["error"]["message"]


def test_a_session_is_bound_to_its_principal_on_every_process(store: RedisServer, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    alice, bob = add_token(tokens, "alice", None), add_token(tokens, "bob", None)
    with live_server(tokens_file=str(tokens), session_store=store.url) as first:
        with live_server(tokens_file=str(tokens), session_store=store.url) as second:
            session_id = open_session(first.port, token=alice)
            for live in (first, second):
                stolen = rpc(live.port, session_id, "tools/list", token=bob)
                assert stolen.status == 404 and "Session not found" in stolen.json()["error"]["message"]
                assert request(live.port, "DELETE", headers={"Mcp-Session-Id": session_id}, token=bob).status == 404
                assert rpc(live.port, session_id, "tools/list", token=alice).status == 200


def test_the_log_level_set_on_one_process_holds_on_the_other(two_processes: tuple[Live, Live]) -> None:
    first, second = two_processes
    session_id = open_session(first.port)
    assert rpc(first.port, session_id, "logging/setLevel", {"level": "warning"}).status == 200
    called = rpc(second.port, session_id, "tools/call", {"name": "chatty", "arguments": {}})
    assert called.status == 200
    logged = [m["params"]["data"] for m in called.sse_messages() if m.get("method") == "notifications/message"]
    assert logged == ["a warning line", "a error line"]
    assert _tool_text(called) == "done"


def test_the_store_holds_no_session_id_and_no_token(two_processes: tuple[Live, Live], store: RedisServer) -> None:
    first, second = two_processes
    session_id = open_session(first.port)
    assert rpc(second.port, session_id, "logging/setLevel", {"level": "error"}).status == 200
    with store.client() as client:
        dump = b""
        for key in client.scan_iter("*"):
            dump += key
            kind = client.type(key)
            if kind == b"hash":
                dump += b"".join(k + v for k, v in client.hgetall(key).items())
            elif kind == b"set":
                dump += b"".join(client.smembers(key))
            elif kind == b"zset":
                dump += b"".join(member for member, _ in client.zrange(key, 0, -1, withscores=True))
        assert b"mcp_auth:session:" in dump  # the dump did see the session
        assert session_id.encode() not in dump and TOKEN.encode() not in dump
        records = list(client.scan_iter("mcp_auth:session:*"))
        # The idle hour, plus the minute within which a process renews what it uses.
        assert len(records) == 1 and 0 < client.pttl(records[0]) <= (3600 + 60) * 1000


def test_a_store_that_stops_answering_gets_503_with_retry_after_not_500(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as private:
        with live_server(session_store=private.url) as live:
            session_id = open_session(live.port)
            private.process.terminate()
            private.process.wait(timeout=30)
            refused = rpc(live.port, session_id, "tools/list")
            assert refused.status == 503 and refused.header("Retry-After") == "5"
            assert "session store is not answering" in refused.json()["error"]["message"]
            assert request(live.port, body=_initialize()).status == 503


def _initialize() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }


@contextmanager
def _stores(client: redis.Redis, **settings: Any) -> Iterator[tuple[SharedSessionStore, SharedSessionStore]]:
    """Two registries on one client, as two processes; closed at the end, so their listeners end quietly."""
    first, second = SharedSessionStore(client, **settings), SharedSessionStore(client, **settings)
    try:
        yield first, second
    finally:
        first.close_all()
        second.close_all()


def test_an_idle_session_expires_in_the_store_for_every_process(store: RedisServer) -> None:
    with store.client() as client, _stores(client, idle_seconds=1.0) as (shared, other):
        alice = StaticToken(TOKEN, "test").authenticate(TOKEN.encode())
        assert alice is not None
        session = shared.create(alice)
        assert session is not None and session.session_id is not None
        assert other.get(session.session_id, alice) is not None
        deadline = time.monotonic() + EXPIRY_DEADLINE_SECONDS
        # Asked without renewing it (a request would renew it: that is what keeps a used session).
        while other.records.exists(session.session_id):
            assert time.monotonic() < deadline, "the record never expired"
            time.sleep(0.2)
        assert other.get(session.session_id, alice) is None and shared.get(session.session_id, alice) is None
        assert len(shared) == 0  # the local copy went with the record


def test_one_principal_cannot_fill_the_store(store: RedisServer) -> None:
    with store.client() as client, _stores(client, max_per_principal=3) as (first, second):
        alice = StaticToken(TOKEN, "test").authenticate(TOKEN.encode())
        assert alice is not None
        made = [first.create(alice) if n % 2 else second.create(alice) for n in range(5)]
        ids = [s.session_id for s in made if s is not None and s.session_id]
        assert len(ids) == 5
        alive = [sid for sid in ids if first.get(sid, alice) is not None]
        assert alive == ids[-3:]  # the oldest went, whichever process made them


# --- the guessing limit, counted across processes --------------------------------------

BUDGET = 4


@pytest.fixture
def two_guarded(store: RedisServer) -> Iterator[tuple[Live, Live]]:
    settings: dict[str, Any] = {"rate_limit_failures": BUDGET, "rate_limit_window": 600.0}
    with live_server(session_store=store.url, **settings) as first:
        with live_server(session_store=store.url, **settings) as second:
            yield first, second


def _status(live: Live, token: str) -> int:
    return request(live.port, body=_initialize(), token=token).status


def test_guesses_spread_over_processes_spend_one_budget(two_guarded: tuple[Live, Live]) -> None:
    first, second = two_guarded
    statuses = [_status(first if n % 2 else second, f"wrong-{n}") for n in range(BUDGET)]
    assert statuses == [401] * BUDGET
    for live in (first, second):
        refused = request(live.port, body=_initialize(), token="wrong-next")
        assert refused.status == 429 and int(refused.header("Retry-After") or 0) >= 1
        # A blocked address waits whatever it presents, the right token included.
        assert _status(live, TOKEN) == 429


def test_without_a_store_each_process_counts_alone(tmp_path: Path) -> None:
    # The control: what the shared limit prevents (two budgets for one guesser).
    with live_server(rate_limit_failures=BUDGET, rate_limit_window=600.0) as first:
        with live_server(rate_limit_failures=BUDGET, rate_limit_window=600.0) as second:
            statuses = [_status(first if n % 2 else second, f"wrong-{n}") for n in range(BUDGET + 2)]
    assert statuses == [401] * (BUDGET + 2)


def test_a_repeated_wrong_token_costs_once_on_every_process(two_guarded: tuple[Live, Live]) -> None:
    first, second = two_guarded
    for _ in range(3):
        for live in (first, second):
            assert _status(live, "the-same-typo") == 401
    # One guess spent: the rest of the budget is still there.
    assert [_status(second, f"other-{n}") for n in range(BUDGET - 1)] == [401] * (BUDGET - 1)
    assert _status(first, "one-too-many") == 429


def test_the_right_token_spends_nothing_on_any_process(two_guarded: tuple[Live, Live]) -> None:
    first, second = two_guarded
    for n in range(3 * BUDGET):
        assert _status(first if n % 2 else second, TOKEN) == 200
    assert [_status(first, f"wrong-{n}") for n in range(BUDGET)] == [401] * BUDGET
    assert _status(second, "wrong-last") == 429


def test_parallel_guesses_on_both_processes_never_pass_the_budget(two_guarded: tuple[Live, Live]) -> None:
    first, second = two_guarded
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda n: _status(first if n % 2 else second, f"parallel-{n}"), range(24)))
    assert statuses.count(401) == BUDGET and statuses.count(429) == 24 - BUDGET
