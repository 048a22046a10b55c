"""Test support: a real redis-server on a free loopback port, always stopped.

No persistence (no RDB, no AOF), every file under a temporary directory, in
the foreground. When redis-server is not installed the tests that need it are
skipped, or fail when the CI environment variable is set (CI installs it: see
.ci/run).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from binaries import find_binary, free_port, require_binary

STARTUP_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 30.0
# Free-port races (another process takes the port between our probe and the bind) are retried.
START_ATTEMPTS = 3


def redis_binary() -> str | None:
    return find_binary("redis-server", ("/usr/bin", "/usr/local/bin"))


def require_redis() -> str:
    """The redis-server binary; else skip, or fail when CI is set."""
    return require_binary(redis_binary(), "redis-server", "session store")


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=10)

    def stop(self) -> None:
        """Stop it now (an outage); `redis_server(workdir, port=...)` starts one on the same port again."""
        _stop(self.process)

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _answers(port: int) -> bool:
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@contextmanager
def redis_server(workdir: Path, port: int | None = None) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 (on `port`, else a free one), no persistence, files under
    `workdir`; always stopped."""
    binary = require_redis()
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = port
    for attempt in range(START_ATTEMPTS):
        port = chosen or free_port()
        options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        files = ["--dir", str(workdir), "--logfile", str(workdir / "redis.log"), "--daemonize", "no"]
        process = subprocess.Popen(
            [binary, *options, *files],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(port, workdir, process)
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while time.monotonic() < deadline and process.poll() is None and not _answers(port):
            time.sleep(0.05)
        if process.poll() is not None or not _answers(port):
            _stop(process)
            if chosen is None and attempt + 1 < START_ATTEMPTS and "Address already in use" in server.log():
                continue
            raise RuntimeError(f"redis-server did not start on port {port}:\n{server.log()}")
        try:
            yield server
        finally:
            _stop(process)
        return


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def module_redis(name: str) -> Any:
    """A module-scoped fixture called `name`: one real redis-server for the test module, always stopped."""

    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        with redis_server(tmp_path_factory.mktemp("redis")) as server:
            yield server

    return pytest.fixture(scope="module", name=name)(fixture)


def emptied_redis(name: str) -> Any:
    """A fixture called `name`: the module's `redis_instance` (see `module_redis`), emptied for this test."""

    def fixture(redis_instance: RedisServer) -> Iterator[RedisServer]:
        with redis_instance.client() as client:
            client.flushdb()
        yield redis_instance

    return pytest.fixture(name=name)(fixture)
