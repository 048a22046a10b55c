"""Revocation through the session store (`mcp_auth.store.revocations`), against a real redis-server.

`token revoke` / `token rotate` with `--session-store` (or MCP_AUTH_SESSION_STORE)
record the old token's digest in the store before they edit the tokens file;
every process refuses a listed digest, looked up in a local set that one thread
per process refreshes: no Redis round trip per request. A set gone stale (the
store not answering) makes authentication a 503, never a silent pass.

Clocks are injected where staleness is judged; every wait on the refresh thread
is an upper bound on something that must happen.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis_support import RedisServer, emptied_redis, free_port, module_redis, redis_server
from support import initialize_body, live_server, request

from mcp_auth.auth.tokens import TokensFile, add_token
from mcp_auth.refusals import ServiceUnavailable
from mcp_auth.store.connection import open_store
from mcp_auth.store.revocations import REVOKED_KEY, RevocationCheckedSource, RevocationList, record_revocation
from mcp_auth.store.url import parse_store_url

ROOT = Path(__file__).resolve().parent.parent
WAIT_SECONDS = 30.0
NEVER = 3600.0  # a refresh interval no test outlives: only explicit refreshes happen


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


redis_instance = module_redis("redis_instance")


store = emptied_redis("store")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if key != "MCP_AUTH_SESSION_STORE"}
    return subprocess.run(
        [sys.executable, "-m", "mcp_auth", "token", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _listed(server: RedisServer) -> list[str]:
    with server.client() as client:
        return [entry.decode() for entry in client.lrange(REVOKED_KEY, 0, -1)]


def _source(path: Path, server: RedisServer, **options: float) -> tuple[RevocationCheckedSource, RevocationList]:
    client = open_store(parse_store_url(server.url, "test"), "test")
    revocations = RevocationList(client, **options)  # type: ignore[arg-type]
    return RevocationCheckedSource(TokensFile(path, "test"), revocations), revocations


# --- the command line -------------------------------------------------------------


def test_revoke_with_the_store_records_the_digest_never_the_token(tmp_path: Path, store: RedisServer) -> None:
    path = tmp_path / "tokens.json"
    token = add_token(path, "alice", None)
    done = _token("revoke", "alice", "--tokens-file", str(path), "--session-store", store.url)
    assert done.returncode == 0, done.stderr
    assert "every host using it refuses the old token within 5 s" in done.stderr
    assert _listed(store) == [_digest(token)]
    assert token not in done.stdout + done.stderr
    with store.client() as client:
        assert not any(token.encode() in (client.dump(key) or b"") for key in client.keys("*"))


def test_rotate_reads_the_store_from_the_environment_and_records_the_old_digest(
    tmp_path: Path, store: RedisServer
) -> None:
    path = tmp_path / "tokens.json"
    old = add_token(path, "alice", None)
    done = _token("rotate", "alice", "--tokens-file", str(path), env={"MCP_AUTH_SESSION_STORE": store.url})
    assert done.returncode == 0, done.stderr
    new = done.stdout.strip().splitlines()[-1]
    assert _listed(store) == [_digest(old)] and new != old


def test_an_unreachable_store_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "alice", None)
    before = path.read_bytes()
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    for command in ("revoke", "rotate"):
        done = _token(command, "alice", "--tokens-file", str(path), "--session-store", url)
        assert done.returncode == 2, done.stderr
        assert "cannot reach the session store" in done.stderr and "s3cret" not in done.stderr
        assert "Traceback" not in done.stderr
        assert path.read_bytes() == before


def test_without_a_store_revoke_only_edits_the_file(tmp_path: Path, store: RedisServer) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "alice", None)
    done = _token("revoke", "alice", "--tokens-file", str(path))
    assert done.returncode == 0 and "session store" not in done.stderr
    assert _listed(store) == []


# --- every process refuses what the store lists ------------------------------------


def test_a_listed_digest_is_refused_by_a_process_whose_file_still_has_it(tmp_path: Path, store: RedisServer) -> None:
    path = tmp_path / "tokens.json"
    alice, bob = add_token(path, "alice", None), add_token(path, "bob", None)
    source, revocations = _source(path, store, refresh_seconds=NEVER)
    principal = source.authenticate(alice.encode())
    assert principal is not None and source.is_current(principal)
    with store.client() as client:
        record_revocation(client, _digest(alice))
    revocations.refresh()
    assert source.authenticate(alice.encode()) is None
    assert not source.is_current(principal)
    assert source.authenticate(bob.encode()) is not None
    revocations.close()


def test_the_refresh_thread_brings_a_revocation_without_being_asked(tmp_path: Path, store: RedisServer) -> None:
    path = tmp_path / "tokens.json"
    alice = add_token(path, "alice", None)
    source, revocations = _source(path, store, refresh_seconds=0.05)
    assert source.authenticate(alice.encode()) is not None  # starts the thread
    with store.client() as client:
        record_revocation(client, _digest(alice))
    deadline = time.monotonic() + WAIT_SECONDS
    while source.authenticate(alice.encode()) is not None:
        assert time.monotonic() < deadline, "the refresh thread never read the revocation"
        time.sleep(0.02)
    revocations.close()


def test_requests_cost_no_store_round_trip(tmp_path: Path, store: RedisServer) -> None:
    path = tmp_path / "tokens.json"
    alice = add_token(path, "alice", None)
    source, revocations = _source(path, store, refresh_seconds=NEVER)

    def reads() -> int:
        with store.client() as client:
            stats = client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("get", "llen", "lrange"))

    before = reads()
    for _ in range(200):
        principal = source.authenticate(alice.encode())
        assert principal is not None and source.is_current(principal)
    assert reads() - before == 3  # the first use: one pipeline (GET, LLEN, LRANGE); nothing per request
    revocations.close()


def test_a_list_emptied_in_the_store_is_read_again_from_its_start(tmp_path: Path, store: RedisServer) -> None:
    path = tmp_path / "tokens.json"
    alice, bob = add_token(path, "alice", None), add_token(path, "bob", None)
    source, revocations = _source(path, store, refresh_seconds=NEVER)
    with store.client() as client:
        record_revocation(client, _digest(alice))
        revocations.refresh()
        client.flushdb()  # a store restarted without persistence, say
        record_revocation(client, _digest(bob))
    revocations.refresh()
    assert source.authenticate(bob.encode()) is None
    assert source.authenticate(alice.encode()) is None  # what this process saw stays refused
    revocations.close()


def test_a_stale_list_makes_authentication_503_while_admitted_requests_go_on(
    tmp_path: Path, redis_instance: RedisServer
) -> None:
    path = tmp_path / "tokens.json"
    alice = add_token(path, "alice", None)
    clock = ManualClock()
    with redis_server(tmp_path / "own-redis") as own:  # stopped halfway through
        source, revocations = _source(path, own, refresh_seconds=NEVER, clock=clock)
        principal = source.authenticate(alice.encode())
        assert principal is not None
    clock.now += 3.0  # within the bound: the local set still answers, the store is not asked
    assert source.authenticate(alice.encode()) == principal
    clock.now += 2.0  # past it: a revocation may have been missed
    with pytest.raises(ServiceUnavailable):
        source.authenticate(alice.encode())
    assert source.is_current(principal)  # open streams and WebSockets are not ended by a store outage
    revocations.close()


def test_a_served_app_refuses_a_token_revoked_in_another_copy(tmp_path: Path, store: RedisServer) -> None:
    """The built-in server with a store: its tokens file keeps the token, the store lists it: 401."""
    path = tmp_path / "tokens.json"
    alice = add_token(path, "alice", None)
    elsewhere = tmp_path / "elsewhere.json"
    shutil.copy2(path, elsewhere)
    with live_server(tokens_file=str(path), session_store=store.url) as live:
        assert request(live.port, body=initialize_body(), token=alice).status == 200
        done = _token("revoke", "alice", "--tokens-file", str(elsewhere), "--session-store", store.url)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + WAIT_SECONDS
        while request(live.port, body=initialize_body(), token=alice).status != 401:
            assert time.monotonic() < deadline, "the revocation never reached the server"
            time.sleep(0.05)
    assert path.read_text().count('"alice"') == 1  # its own copy was never edited


def test_the_readme_revoke_command_works_as_written(tmp_path: Path, store: RedisServer) -> None:
    readme = (ROOT / "README.md").read_text()
    (command,) = [block for block in re.findall(r"```sh\n(.*?)```", readme, re.DOTALL) if "token revoke alice" in block]
    path = tmp_path / "tokens.json"
    alice = add_token(path, "alice", None)
    command = command.replace("/etc/mcp-auth/tokens.json", str(path)).replace("redis://127.0.0.1:6379/0", store.url)
    command = command.replace("python -m mcp_auth", f"{shlex.quote(sys.executable)} -m mcp_auth", 1)
    base = {key: value for key, value in os.environ.items() if key != "MCP_AUTH_SESSION_STORE"}
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _listed(store) == [_digest(alice)]
    assert '"alice"' not in path.read_text()


def test_a_forked_child_refreshes_on_its_own(tmp_path: Path, store: RedisServer) -> None:
    """gunicorn --preload builds the app in the master and forks: the child starts its own refresh thread."""
    path = tmp_path / "tokens.json"
    alice = add_token(path, "alice", None)
    source, revocations = _source(path, store, refresh_seconds=0.05)
    assert source.authenticate(alice.encode()) is not None  # the parent's thread runs
    pid = os.fork()
    if pid == 0:  # the child: only the thread it starts itself can bring the revocation
        code = 1
        try:
            with store.client() as client:
                record_revocation(client, _digest(alice))
            deadline = time.monotonic() + WAIT_SECONDS
            while source.authenticate(alice.encode()) is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            code = 0 if source.authenticate(alice.encode()) is None else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    revocations.close()
