"""Test support: a real gunicorn subprocess, and a real nginx in front of one or more of them.

nginx runs from the configuration documented in deploy/nginx.conf, rendered for a
test: a free loopback port, the given upstream ports, every file (pid, logs,
temporary bodies) under a temporary prefix, in the foreground, one process and
no privileges. Each rendering step must find its line in the documented file,
so the file and this helper cannot drift apart silently.

When nginx is not installed the tests that need it are skipped, or fail when
the CI environment variable is set (CI must run them).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from binaries import find_binary, free_port, require_binary

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
# Generous: starting a process is slow on a loaded 2-core machine, and nothing
# passes or fails on it being fast.
STARTUP_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 30.0
# Free-port races (another process takes the port between our probe and nginx's bind) are retried.
NGINX_START_ATTEMPTS = 3

# The lines of deploy/nginx.conf that a test run replaces: each must occur exactly once.
_DOCUMENTED_LISTEN = "listen 127.0.0.1:8080;"
_DOCUMENTED_UPSTREAM = "server 127.0.0.1:8000;"
_DOCUMENTED_PID = "pid /run/nginx-mcp-auth.pid;"
_DOCUMENTED_ERROR_LOG = "error_log /var/log/nginx/mcp-auth.error.log;"
_DOCUMENTED_ACCESS_LOG = "access_log /var/log/nginx/mcp-auth.access.log;"
_DOCUMENTED_WORKERS = "worker_processes auto;"
# Each access log line of a test's nginx: method, status, the upstream that answered, the Last-Event-ID sent.
UPSTREAM_LOG_FORMAT = "mcp_auth_upstreams '$request_method $status $upstream_addr \"$http_last_event_id\"'"


def nginx_binary() -> str | None:
    return find_binary("nginx", ("/usr/sbin", "/usr/local/sbin"))


def require_nginx() -> str:
    """The nginx binary; else skip, or fail when CI is set."""
    return require_binary(nginx_binary(), "nginx", "nginx front")


def _replace_once(text: str, old: str, new: str) -> str:
    count = text.count(old)
    if count != 1:
        raise AssertionError(f"deploy/nginx.conf must contain {old!r} exactly once, found {count}")
    return text.replace(old, new)


def render_nginx_conf(prefix: Path, port: int, upstream_ports: Sequence[int]) -> str:
    """deploy/nginx.conf for a test: our port and upstreams, every file under `prefix`, foreground, one process."""
    text = NGINX_CONF.read_text()
    text = _replace_once(text, _DOCUMENTED_LISTEN, f"listen 127.0.0.1:{port};")
    text = _replace_once(
        text, _DOCUMENTED_UPSTREAM, " ".join(f"server 127.0.0.1:{upstream};" for upstream in upstream_ports)
    )
    text = _replace_once(text, _DOCUMENTED_PID, f"pid {prefix / 'nginx.pid'};")
    text = _replace_once(text, _DOCUMENTED_ERROR_LOG, f"error_log {prefix / 'error.log'} info;")
    # The test's access log also says which upstream served each request (tests that prove a request
    # crossed hosts read it); only what is logged differs from the documented file.
    text = _replace_once(
        text,
        _DOCUMENTED_ACCESS_LOG,
        f"log_format {UPSTREAM_LOG_FORMAT};\n    access_log {prefix / 'access.log'} mcp_auth_upstreams;",
    )
    # One process that never changes user: no root needed, nothing to reap.
    text = _replace_once(text, _DOCUMENTED_WORKERS, "worker_processes 1;\ndaemon off;\nmaster_process off;")
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return _replace_once(text, "http {\n", "http {\n" + temp_paths)


@dataclass
class Nginx:
    port: int
    prefix: Path

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""

    def access_log(self) -> list[tuple[str, str, str, str]]:
        """(method, status, upstream address, Last-Event-ID) of every request logged so far."""
        path = self.prefix / "access.log"
        entries = []
        for line in path.read_text().splitlines() if path.exists() else []:
            method, status, upstream, last_event_id = line.split(" ", 3)
            entries.append((method, status, upstream, last_event_id.strip('"')))
        return entries


def _wait_listening(port: int, process: subprocess.Popen[bytes], what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}) before listening:\n{log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen within {STARTUP_DEADLINE_SECONDS:g} s:\n{log()}")


def _stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], signum: int) -> None:
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def nginx_front(prefix: Path, upstream_ports: Sequence[int]) -> Iterator[Nginx]:
    """A real nginx, from the documented configuration, in front of `upstream_ports`; always stopped."""
    binary = require_nginx()
    prefix.mkdir(parents=True, exist_ok=True)
    for attempt in range(NGINX_START_ATTEMPTS):
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(render_nginx_conf(prefix, port, upstream_ports))
        front = Nginx(port, prefix)
        process = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(port, process, "nginx", front.error_log)
        except RuntimeError:
            _stop(process, signal.SIGTERM)
            if attempt + 1 == NGINX_START_ATTEMPTS or "Address already in use" not in front.error_log():
                raise
            continue
        try:
            yield front
        finally:
            _stop(process, signal.SIGQUIT)  # graceful: finishes what is in flight
        return


@dataclass
class Gunicorn:
    port: int
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines)


@contextmanager
def gunicorn_process(
    workdir: Path,
    env: Mapping[str, str],
    *,
    threads: int = 4,
    app: str = "mcp_auth:create_app()",
    workers: int = 1,
) -> Iterator[Gunicorn]:
    """`gunicorn -k gthread -w W --threads N APP` on 127.0.0.1, configured by `env` (MCP_AUTH_*); always stopped."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "-w",
            str(workers),
            "-b",
            "127.0.0.1:0",
            "--chdir",
            str(workdir),
            app,
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(workdir)]), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Gunicorn(0, process)
    ready = threading.Event()
    booted: list[str] = []  # every worker has booted: the test reaches all of them

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            server.lines.append(line)
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if match:
                server.port = int(match.group(1))
            if "Booting worker" in line:
                booted.append(line)
            if server.port and len(booted) >= workers:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(STARTUP_DEADLINE_SECONDS):
            raise RuntimeError("gunicorn did not start:\n" + server.log)
        yield server
    finally:
        _stop(process, signal.SIGTERM)
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
