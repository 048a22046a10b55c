"""Benchmark: mcp_auth against the official MCP Python SDK, side by side, as ratios within one run.

What is measured. Eleven servers, ten of them serving one `echo(text: str) -> str` tool
(the same function body, the same input, the same single text block out):

  mcp_auth_serve     `python -m mcp_auth serve <echo module>:server --port 0`: the built-in
                     threaded Werkzeug server, bearer token in MCP_AUTH_TOKEN, a temporary HOME.
                     Its defaults stay on, including one audit log line per tools/call.
  mcp_auth_gunicorn  `gunicorn -k gthread --threads 8 'mcp_auth:create_app()'`, MCP_AUTH_TARGET
                     naming the same module, the same token: one worker process, 8 threads.
                     create_app() sends the audit lines to stderr (this server's log file), as serve does.
  mcp_auth_gunicorn_2w  the same with `-w 2`: two worker processes. Handshake sessions live in the
                     worker that created them; the client's one connection per session keeps a
                     session on its worker (gunicorn --keep-alive 30 for every gunicorn here).
  mcp_auth_gunicorn(_2w)_redis  the same two, with the session store in Redis
                     (MCP_AUTH_SESSION_STORE=redis://...): a real redis-server the script starts
                     on a free loopback port (no persistence) and always stops. With the store, a
                     session lives in Redis and any worker serves it. What the store costs is
                     printed per call (with minus without, same run): median call time, server
                     CPU per call, session setup, and the throughput ratio.
  stateless_serve, stateless_gunicorn(_2w)  the 2026-07-28 stateless revision on the built-in
                     server and gunicorn 1 and 2 workers, no store: no initialize, no session;
                     every call is a self-contained POST carrying the `_meta` envelope
                     (protocol version, client capabilities, client info) and the
                     MCP-Protocol-Version, Mcp-Method and Mcp-Name headers; its "setup" is one
                     `server/discover`. Every answer must say resultType "complete".
  raw_gunicorn(_2w)  the floor: a WSGI app that reads the body and returns a fixed answer,
                     under the same gunicorn settings (1 and 2 workers); no MCP, no auth.
  sdk                the official SDK (`mcp` 2.x): `MCPServer`, the tool registered with
                     `@server.tool(structured_output=False)` (so the answer is the same text block),
                     `server.streamable_http_app(json_response=True)` under uvicorn: stateful
                     sessions, JSON answers (`--sdk-stateless` adds `stateless_http=True`, which
                     is slower). No auth, and no access log (MCPServer.run() would log each request).

The SDK runs without any authentication and without an access log, so the
comparison favours the SDK: mcp_auth pays for its whole pipeline (IP allowlist,
Host/Origin, rate limiter, constant-time token check, the second check at
dispatch) on every request.

For each server:

  latency        `tools/call echo` in one initialized session: N sequential calls after a
                 warm-up; median and p95 in milliseconds.
  throughput     C client threads, each with its own initialized session, make N calls between
                 them as fast as the server answers; calls per second, from a common start.
  session_setup  `initialize` + `notifications/initialized`, back to back, timed together;
                 median and p95 in milliseconds (each session is then deleted, untimed).
  cpu/call       where /proc exists: the server's CPU time (user + system, with its child
                 processes) per call while the calls ran, in 10 ms ticks; the throughput
                 test's is the one printed. It says how much of a call is the server's work.

How. All servers run as subprocesses on 127.0.0.1 on ports they pick themselves
(port 0), started together and always stopped. One client, shared by all of
them: a plain socket speaking HTTP/1.1, one kept-alive connection per session
(as real clients do; `--no-keepalive`: one request per connection,
`Connection: close`). Issue 11's throughput targets are printed as ratios of
calls per second within the run: 2 workers / 1 worker (>= 1.7), 2 workers /
the raw app on 2 workers (>= 0.6), 1 worker / raw on 1 (>= 0.6), built-in
server / SDK (>= 2). The calls are spread
over rounds that interleave the servers (rotating their order), so drift on the
machine hits all of them alike. Every answer is checked (HTTP status, JSON-RPC
result, the echoed text). A failed call, or a server that does not start, makes
the exit status non-zero; the speed itself never does.

How to read it. The client runs in this Python process and costs the same for
every server, so absolute times include it; the ratios are what to compare, and
they hold for this one run on this one machine. "1.25x faster per call" means
the SDK's median call took 1.25 times as long as mcp_auth's; "0.80x the SDK's
throughput" means mcp_auth answered 80 calls for every 100 the SDK answered. On
a small machine throughput is bounded by the cores the client and the servers
share; cpu/call shows which server does more work per call.

Argument validation, alone. A micro-benchmark in this process, no server: the
schema inferred from a typical tool's type hints (five parameters: two strings,
an optional list of strings, a Literal, an int with a minimum), compiled once
as registration does, then `problems()` run on a valid and on an invalid
argument object; microseconds per call (median of 5 batches). This is the cost
the jsonschema Draft 2020-12 validator adds to every tools/call.

    python scripts/bench.py [--calls 2000] [--concurrency 8] [--sessions 300] [--rounds 3]
                            [--warmup 100] [--quick] [--json results.json] [--sdk-stateless] [--no-keepalive]
                            [--validation-calls 20000] [--validation-only]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PROTOCOL_VERSION = "2025-11-25"
STARTUP_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0
SOCKET_TIMEOUT_SECONDS = 30.0
# A phase stops early after this many failed calls: the run has failed already.
MAX_FAILURES_PER_PHASE = 10
GUNICORN_THREADS = 8

# gunicorn's wait for a kept-alive connection's next request: longer than any pause between the
# phases, so a session's connection (and with it the worker holding the session) lasts the phase.
GUNICORN_KEEPALIVE_SECONDS = 30

MCP_AUTH_SERVERS = (
    "mcp_auth_serve",
    "mcp_auth_gunicorn",
    "mcp_auth_gunicorn_2w",
    "mcp_auth_gunicorn_redis",
    "mcp_auth_gunicorn_2w_redis",
    "stateless_serve",
    "stateless_gunicorn",
    "stateless_gunicorn_2w",
)
SERVERS = (*MCP_AUTH_SERVERS, "raw_gunicorn", "raw_gunicorn_2w", "sdk")
# The handshake era with and without the Redis session store, same settings: (label, without, with).
STORE_PAIRS = (
    ("1 worker", "mcp_auth_gunicorn", "mcp_auth_gunicorn_redis"),
    ("2 workers", "mcp_auth_gunicorn_2w", "mcp_auth_gunicorn_2w_redis"),
)
STATELESS_VERSION = "2026-07-28"
# The per-request envelope of the stateless revision: every call carries who the client is.
STATELESS_ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "mcp-auth-bench", "version": "1"},
}
RAW_SERVERS = ("raw_gunicorn", "raw_gunicorn_2w")
METRICS = ("latency", "throughput", "session_setup")
LABELS = {
    "mcp_auth_serve": "mcp_auth serve",
    "mcp_auth_gunicorn": f"mcp_auth gunicorn 1w x{GUNICORN_THREADS}",
    "mcp_auth_gunicorn_2w": f"mcp_auth gunicorn 2w x{GUNICORN_THREADS}",
    "mcp_auth_gunicorn_redis": f"mcp_auth gunicorn 1w x{GUNICORN_THREADS} redis",
    "mcp_auth_gunicorn_2w_redis": f"mcp_auth gunicorn 2w x{GUNICORN_THREADS} redis",
    "stateless_serve": "stateless serve",
    "stateless_gunicorn": f"stateless gunicorn 1w x{GUNICORN_THREADS}",
    "stateless_gunicorn_2w": f"stateless gunicorn 2w x{GUNICORN_THREADS}",
    "raw_gunicorn": f"raw WSGI gunicorn 1w x{GUNICORN_THREADS}",
    "raw_gunicorn_2w": f"raw WSGI gunicorn 2w x{GUNICORN_THREADS}",
    "sdk": "SDK MCPServer + uvicorn",
}
# The targets of issue 11, as (name, numerator server, denominator server, at least), on calls per second.
TARGETS = (
    ("gunicorn 2 workers / 1 worker", "mcp_auth_gunicorn_2w", "mcp_auth_gunicorn", 1.7),
    ("gunicorn 2 workers / raw app 2 workers", "mcp_auth_gunicorn_2w", "raw_gunicorn_2w", 0.6),
    ("gunicorn 1 worker / raw app 1 worker", "mcp_auth_gunicorn", "raw_gunicorn", 0.6),
    ("built-in server / SDK", "mcp_auth_serve", "sdk", 2.0),
)

RAW_MODULE = "bench_raw_app"
# What the raw app answers to every request: a JSON-RPC result of the echo's size.
RAW_ANSWER = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"call 0"}]}}'
RAW_APP = textwrap.dedent(
    f'''
    """The floor: a WSGI app that reads the request body and returns a fixed answer, nothing else."""

    ANSWER = {RAW_ANSWER!r}


    def app(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))])
        return [ANSWER]
    '''
)

ECHO_MODULE = "bench_echo_tools"
MCP_AUTH_ECHO = textwrap.dedent(
    '''
    """The benchmark's echo tool, written with mcp_auth's public API."""

    from mcp_auth import McpServer

    server = McpServer("bench-echo")


    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged.

        Args:
            text: The text to send back.
        """
        return text
    '''
)

SDK_MODULE = "bench_sdk_echo"
SDK_ECHO = textwrap.dedent(
    '''
    """The benchmark's echo tool on the official MCP SDK: MCPServer, its Streamable HTTP app, uvicorn."""

    import sys

    import uvicorn
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench-echo")


    # structured_output=False: the answer is the one text block, as mcp_auth sends it.
    @server.tool(structured_output=False)
    def echo(text: str) -> str:
        """Return the text unchanged.

        Args:
            text: The text to send back.
        """
        return text


    app = server.streamable_http_app(json_response=True, stateless_http="--stateless" in sys.argv, host="127.0.0.1")

    if __name__ == "__main__":
        # What MCPServer.run("streamable-http", port=0) does, minus the per-request access log line.
        uvicorn.run(app, host="127.0.0.1", port=0, log_level="info", access_log=False)
    '''
)


class BenchError(Exception):
    """A server that would not start, or a call that failed."""


# --- the client: one HTTP/1.1 request per connection over a plain socket --------------------


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def _parse_head(method: str, head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise BenchError(f"{method}: bad status line {status_line[:80]!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class Connection:
    """One client connection kept open between requests (HTTP/1.1 keep-alive), reopened when the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def open(self) -> tuple[socket.socket, bool]:
        """The socket, and whether it was used before (a reused one may have been closed by the server)."""
        if self.sock is not None:
            return self.sock, True
        self.sock = socket.create_connection((HOST, self.port), timeout=SOCKET_TIMEOUT_SECONDS)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock, False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def http_exchange(
    port: int, method: str, headers: dict[str, str], body: bytes = b"", connection: Connection | None = None
) -> HttpReply:
    """One request: on `connection` (kept open, HTTP/1.1 keep-alive), else on a fresh
    connection closed by us as soon as the whole response is in.

    The response ends where its Content-Length (or last chunk) says, as for any
    HTTP/1.1 client; only a response with neither is read until the server closes.
    Not waiting for the close matters: Werkzeug's server lingers up to 10 ms after
    each response draining the socket, unless the client has closed it. On a
    kept-alive connection the server may have closed meanwhile: the request is
    sent again once on a new connection when nothing of the answer arrived.
    """
    lines = [f"{method} /mcp HTTP/1.1", f"Host: {HOST}:{port}"]
    if connection is None:
        lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    if connection is None:
        with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(data)
            return _read_reply(sock, method)
    for attempt in (1, 2):
        sock, reused = connection.open()
        try:
            sock.sendall(data)
            reply = _read_reply(sock, method)
        except (OSError, BenchError):
            connection.close()
            if reused and attempt == 1:
                continue  # the server closed the idle connection first: a new one, once
            raise
        if reply.headers.get("connection", "").lower() == "close":
            connection.close()
        return reply
    raise BenchError(f"{method}: no answer")


def _read_reply(sock: socket.socket, method: str) -> HttpReply:
    buffer = bytearray()
    status: int | None = None
    reply_headers: dict[str, str] = {}
    body_start = 0
    while True:
        if status is None and (end := buffer.find(b"\r\n\r\n")) >= 0:
            status, reply_headers = _parse_head(method, bytes(buffer[:end]))
            body_start = end + 4
        if status is not None:
            if status in (204, 304):
                break  # never a body (RFC 9110 section 6.4.1)
            length = reply_headers.get("content-length")
            if length is not None and len(buffer) - body_start >= int(length):
                break
            if reply_headers.get("transfer-encoding", "").lower() == "chunked" and buffer.endswith(b"0\r\n\r\n"):
                break
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    if status is None:
        raise BenchError(f"{method}: no complete HTTP response ({len(buffer)} bytes)")
    payload = bytes(buffer[body_start:])
    if reply_headers.get("transfer-encoding", "").lower() == "chunked":
        payload = _dechunk(payload)
    elif "content-length" in reply_headers and len(payload) != int(reply_headers["content-length"]):
        raise BenchError(f"{method}: body of {len(payload)} bytes, Content-Length {reply_headers['content-length']}")
    return HttpReply(status, reply_headers, payload)


def jsonrpc_result(reply: HttpReply, request_id: int) -> dict[str, Any]:
    """The `result` of the answer to `request_id`, from a JSON or an SSE body."""
    if reply.status != 200:
        raise BenchError(f"HTTP {reply.status}: {reply.body[:200]!r}")
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        messages = []
        for event in reply.body.decode().replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].strip() for line in event.splitlines() if line.startswith("data:"))
            if data:
                messages.append(json.loads(data))
    else:
        messages = [json.loads(reply.body)]
    for message in messages:
        if isinstance(message, dict) and message.get("id") == request_id:
            if "result" not in message or not isinstance(message["result"], dict):
                raise BenchError(f"JSON-RPC error: {json.dumps(message)[:200]}")
            return message["result"]
    raise BenchError(f"no answer to request {request_id} in {reply.body[:200]!r}")


class McpSession:
    """An initialized MCP session over `http_exchange`."""

    def __init__(
        self, port: int, token: str | None, keepalive: bool = True, raw: bool = False, stateless: bool = False
    ) -> None:
        self.port = port
        # stateless: the 2026-07-28 revision; no session, every call a self-contained POST (envelope + headers).
        self.stateless = stateless
        # keep-alive: one connection for the whole session (a gunicorn worker keeps its sessions to itself,
        # so a session's requests must reach the worker that created it: the connection does that).
        self.connection = Connection(port) if keepalive else None
        # raw: the server is the raw WSGI app (reads the body, answers RAW_ANSWER): nothing to initialize.
        self.raw = raw
        self.base_headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if token is not None:
            self.base_headers["Authorization"] = f"Bearer {token}"
        self.session_id: str | None = None
        self.next_id = 1

    def _headers(self) -> dict[str, str]:
        headers = {**self.base_headers, "Mcp-Protocol-Version": PROTOCOL_VERSION}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    def _request(self, method: str, params: dict[str, Any], headers: dict[str, str]) -> tuple[HttpReply, int]:
        request_id = self.next_id
        self.next_id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        return http_exchange(self.port, "POST", headers, body, self.connection), request_id

    def initialize(self) -> None:
        """`initialize`, then `notifications/initialized` (the raw app: one request, its fixed answer)."""
        if self.raw:
            reply, _ = self._request("initialize", {}, self.base_headers)
            if reply.status != 200 or reply.body != RAW_ANSWER:
                raise BenchError(f"raw app: HTTP {reply.status}: {reply.body[:200]!r}")
            return
        if self.stateless:
            # Nothing to set up; the counterpart of initialize is server/discover, timed as the setup.
            headers = {**self.base_headers, "MCP-Protocol-Version": STATELESS_VERSION, "Mcp-Method": "server/discover"}
            reply, request_id = self._request("server/discover", {"_meta": STATELESS_ENVELOPE}, headers)
            if jsonrpc_result(reply, request_id).get("resultType") != "complete":
                raise BenchError(f"server/discover answered {reply.body[:200]!r}")
            return
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-auth-bench", "version": "1"},
        }
        reply, request_id = self._request("initialize", params, self.base_headers)
        result = jsonrpc_result(reply, request_id)
        if result.get("protocolVersion") != PROTOCOL_VERSION:
            raise BenchError(f"initialize negotiated {result.get('protocolVersion')!r}")
        self.session_id = reply.headers.get("mcp-session-id")
        body = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        notified = http_exchange(self.port, "POST", self._headers(), body, self.connection)
        if notified.status != 202:
            raise BenchError(f"notifications/initialized: HTTP {notified.status}: {notified.body[:200]!r}")

    def echo(self, text: str) -> dict[str, Any]:
        """`tools/call echo`; the result, checked."""
        params: dict[str, Any] = {"name": "echo", "arguments": {"text": text}}
        headers = self._headers()
        if self.stateless:
            params["_meta"] = STATELESS_ENVELOPE
            headers = {
                **self.base_headers,
                "MCP-Protocol-Version": STATELESS_VERSION,
                "Mcp-Method": "tools/call",
                "Mcp-Name": "echo",
            }
        reply, request_id = self._request("tools/call", params, headers)
        if self.raw:
            if reply.status != 200 or reply.body != RAW_ANSWER:
                raise BenchError(f"raw app: HTTP {reply.status}: {reply.body[:200]!r}")
            return {}
        result = jsonrpc_result(reply, request_id)
        content = result.get("content")
        complete = not self.stateless or result.get("resultType") == "complete"
        if result.get("isError") or content != [{"type": "text", "text": text}] or not complete:
            raise BenchError(f"echo answered {json.dumps(result)[:200]}")
        return result

    def close(self) -> None:
        """DELETE the session (best effort, untimed: a stateless server has nothing to delete)."""
        if self.session_id is not None:
            with contextlib.suppress(OSError, BenchError):
                http_exchange(self.port, "DELETE", self._headers(), b"", self.connection)
            self.session_id = None
        if self.connection is not None:
            self.connection.close()


# --- the servers ---------------------------------------------------------------------------


@dataclass
class ServerSpec:
    key: str
    argv: list[str]
    env: dict[str, str]
    ready: list[str]  # regexes that must all appear in the log; the first captures the port
    token: str | None
    raw: bool = False  # the raw WSGI app: no MCP, a fixed answer
    keepalive: bool = True  # the client keeps one connection per session
    stateless: bool = False  # the client speaks the 2026-07-28 stateless revision


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    exit_status: int | None = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "".join(self.log_text().splitlines(keepends=True)[-lines:])


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM if the benchmark dies without stopping us."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _gunicorn(python: str, workers: int, app: str) -> list[str]:
    return [
        python,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "-w",
        str(workers),
        "--threads",
        str(GUNICORN_THREADS),
        "--keep-alive",
        str(GUNICORN_KEEPALIVE_SECONDS),
        "-b",
        f"{HOST}:0",
        app,
    ]


def server_specs(
    workdir: Path, token: str, sdk_stateless: bool, keepalive: bool = True, store_url: str = ""
) -> list[ServerSpec]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("MCP_AUTH_")}
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    base.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(workdir)]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    python = sys.executable
    gunicorn_env = {**base, "MCP_AUTH_TOKEN": token, "MCP_AUTH_TARGET": f"{ECHO_MODULE}:server"}
    gunicorn_ready = [r"Listening at: http://127\.0\.0\.1:(\d+)", r"Booting worker"]
    store_env = {**gunicorn_env, "MCP_AUTH_SESSION_STORE": store_url}
    serve_argv = [python, "-m", "mcp_auth", "serve", f"{ECHO_MODULE}:server", "--port", "0"]
    serve_ready = [r"listening on http://127\.0\.0\.1:(\d+)/mcp"]
    specs = [
        ServerSpec(
            "mcp_auth_serve",
            [python, "-m", "mcp_auth", "serve", f"{ECHO_MODULE}:server", "--port", "0"],
            {**base, "MCP_AUTH_TOKEN": token},
            [r"listening on http://127\.0\.0\.1:(\d+)/mcp"],
            token,
        ),
        ServerSpec(
            "mcp_auth_gunicorn", _gunicorn(python, 1, "mcp_auth:create_app()"), gunicorn_env, gunicorn_ready, token
        ),
        ServerSpec(
            "mcp_auth_gunicorn_2w", _gunicorn(python, 2, "mcp_auth:create_app()"), gunicorn_env, gunicorn_ready, token
        ),
        ServerSpec(
            "mcp_auth_gunicorn_redis", _gunicorn(python, 1, "mcp_auth:create_app()"), store_env, gunicorn_ready, token
        ),
        ServerSpec(
            "mcp_auth_gunicorn_2w_redis",
            _gunicorn(python, 2, "mcp_auth:create_app()"),
            store_env,
            gunicorn_ready,
            token,
        ),
        ServerSpec("stateless_serve", serve_argv, {**base, "MCP_AUTH_TOKEN": token}, serve_ready, token),
        ServerSpec(
            "stateless_gunicorn", _gunicorn(python, 1, "mcp_auth:create_app()"), gunicorn_env, gunicorn_ready, token
        ),
        ServerSpec(
            "stateless_gunicorn_2w", _gunicorn(python, 2, "mcp_auth:create_app()"), gunicorn_env, gunicorn_ready, token
        ),
        ServerSpec("raw_gunicorn", _gunicorn(python, 1, f"{RAW_MODULE}:app"), base, gunicorn_ready, None, raw=True),
        ServerSpec("raw_gunicorn_2w", _gunicorn(python, 2, f"{RAW_MODULE}:app"), base, gunicorn_ready, None, raw=True),
        ServerSpec(
            "sdk",
            [python, str(workdir / f"{SDK_MODULE}.py"), *(["--stateless"] if sdk_stateless else [])],
            base,
            [r"Uvicorn running on http://127\.0\.0\.1:(\d+)"],
            None,
        ),
    ]
    for spec in specs:
        spec.keepalive = keepalive
        spec.stateless = spec.key.startswith("stateless_")
    return specs


def launch(spec: ServerSpec, workdir: Path) -> RunningServer:
    log_path = workdir / f"{spec.key}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            spec.argv,
            cwd=workdir,
            env=spec.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # only the main thread exists at launch
        )
    return RunningServer(spec, process, log_path)


def wait_ready(server: RunningServer) -> None:
    """Wait for the readiness lines, then for a first session that works."""
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while True:
        text = server.log_text()
        matches = [re.search(pattern, text) for pattern in server.spec.ready]
        if all(matches):
            assert matches[0] is not None
            server.port = int(matches[0].group(1))
            break
        if server.process.poll() is not None:
            raise BenchError(f"{server.spec.key} exited with {server.process.returncode}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"{server.spec.key} did not start in {STARTUP_DEADLINE_SECONDS:.0f} s:\n{server.log_tail()}"
            )
        time.sleep(0.05)
    while True:
        session = client_session(server)
        try:
            session.initialize()
            session.echo("ready?")
            session.close()
            return
        except OSError as exc:  # not accepting connections yet; a wrong answer is final
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{server.spec.key} does not answer: {exc}\n{server.log_tail()}") from None
            time.sleep(0.1)
        except BenchError as exc:
            raise BenchError(f"{server.spec.key} answers wrongly: {exc}\n{server.log_tail()}") from None


def client_session(server: RunningServer) -> McpSession:
    """A client for `server`, speaking the era and keep-alive its spec names (not yet initialized)."""
    spec = server.spec
    return McpSession(server.port, spec.token, spec.keepalive, spec.raw, spec.stateless)


def stop(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        server.exit_status = server.process.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.exit_status = server.process.wait()


@contextlib.contextmanager
def running_servers(
    workdir: Path, token: str, sdk_stateless: bool, keepalive: bool = True
) -> Iterator[tuple[dict[str, RunningServer], RedisProcess]]:
    """Start them all at once (they start in parallel), wait for each, always stop every one."""
    (workdir / f"{ECHO_MODULE}.py").write_text(MCP_AUTH_ECHO)
    (workdir / f"{SDK_MODULE}.py").write_text(SDK_ECHO)
    (workdir / f"{RAW_MODULE}.py").write_text(RAW_APP)
    started: dict[str, RunningServer] = {}
    with redis_server(workdir / "redis") as store:
        try:
            for spec in server_specs(workdir, token, sdk_stateless, keepalive, store.url):
                started[spec.key] = launch(spec, workdir)
            for server in started.values():
                wait_ready(server)
            yield started, store
        finally:
            for server in started.values():
                stop(server)


@dataclass
class RedisProcess:
    """The session store's redis-server, as the benchmark started it."""

    port: int

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def commands_processed(self) -> int:
        """Redis's own count of the commands it served: proof that the store runs used it."""
        with socket.create_connection((HOST, self.port), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
            sock.sendall(b"INFO stats\r\n")
            data = b""
            while b"total_commands_processed:" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        found = re.search(rb"total_commands_processed:(\d+)", data)
        if found is None:
            raise BenchError(f"redis INFO stats without total_commands_processed: {data[:200]!r}")
        return int(found.group(1))


def _redis_answers(port: int) -> bool:
    """Whether a Redis server on `port` answers PING (a plain socket: the script needs no redis package)."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisProcess]:
    """A real redis-server on a free loopback port for the session store runs, no persistence; always stopped."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (Debian: apt-get install redis-server); the store runs need it")
    workdir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    log = workdir / "redis.log"
    process = subprocess.Popen(
        [*argv, "--logfile", str(log), "--daemonize", "no"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while not _redis_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise BenchError(f"redis-server did not start on port {port}:\n{text}")
            time.sleep(0.05)
        yield RedisProcess(port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- measurements ---------------------------------------------------------------------------


@dataclass
class Tally:
    """Samples (nanoseconds), successes and failures of one metric of one server, over all rounds."""

    samples_ns: list[int] = field(default_factory=list)
    requested: int = 0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    # The server's CPU time (user + system, with its child processes) while the timed calls ran; None without /proc.
    server_cpu_seconds: float | None = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_cpu(self, before: float | None, after: float | None) -> None:
        if before is None or after is None or self.server_cpu_seconds is None:
            self.server_cpu_seconds = None
        else:
            self.server_cpu_seconds += after - before

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            message = f"{type(exc).__name__}: {exc}"[:300]
            if len(self.errors) < 5 and message not in self.errors:
                self.errors.append(message)


def server_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` and its children (a gunicorn worker), from /proc; else None."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        entries = os.listdir("/proc")
    except (OSError, ValueError, AttributeError):
        return None
    total, found = 0.0, False
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue  # gone since listdir, or not ours to read
        # After "pid (comm) ": state, ppid, ... utime and stime are fields 14 and 15 of the whole line.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
            found = True
    return total if found else None


def _timed(tally: Tally, action: Callable[[], object]) -> bool:
    """Time one call into `tally`; False once the phase has failed too often to go on."""
    started = time.perf_counter_ns()
    try:
        action()
    except (OSError, BenchError, ValueError) as exc:
        tally.fail(exc)
        return tally.failed < MAX_FAILURES_PER_PHASE
    elapsed = time.perf_counter_ns() - started
    with tally.lock:
        tally.samples_ns.append(elapsed)
        tally.ok += 1
    return True


def _new_session(server: RunningServer) -> McpSession:
    session = client_session(server)
    session.initialize()
    return session


def measure_latency(server: RunningServer, tally: Tally, calls: int, warmup: int) -> None:
    tally.requested += calls
    try:
        session = _new_session(server)
    except (OSError, BenchError, ValueError) as exc:
        tally.fail(exc)
        return
    try:
        for n in range(warmup):
            session.echo(f"warm-up {n}")
        cpu_before = server_cpu_seconds(server.process.pid)
        for n in range(calls):
            if not _timed(tally, functools.partial(session.echo, f"call {n}")):
                break
        tally.add_cpu(cpu_before, server_cpu_seconds(server.process.pid))
    except (OSError, BenchError, ValueError) as exc:
        tally.fail(exc)
    finally:
        session.close()


def measure_throughput(server: RunningServer, tally: Tally, calls: int, concurrency: int, warmup: int) -> None:
    """`concurrency` threads with a session each share `calls`; the wall time runs from a common start."""
    tally.requested += calls
    shares = split(calls, concurrency)
    sessions: list[McpSession] = []
    try:
        for _ in range(concurrency):
            sessions.append(_new_session(server))
    except (OSError, BenchError, ValueError) as exc:
        tally.fail(exc)
        for session in sessions:
            session.close()
        return
    cpu_before: list[float | None] = []
    began: list[float] = []

    def go() -> None:
        """Runs once every client has warmed up, just before they are all let go."""
        cpu_before.append(server_cpu_seconds(server.process.pid))
        began.append(time.perf_counter())

    start = threading.Barrier(concurrency + 1, action=go, timeout=STARTUP_DEADLINE_SECONDS)

    def client(session: McpSession, share: int) -> None:
        with contextlib.suppress(OSError, BenchError, ValueError):
            for n in range(warmup):
                session.echo(f"warm-up {n}")
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait()
        for n in range(share):
            if not _timed(tally, functools.partial(session.echo, f"call {n}")):
                return

    threads = [threading.Thread(target=client, args=pair, daemon=True) for pair in zip(sessions, shares, strict=True)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError as exc:
        tally.fail(exc)
    deadline = time.monotonic() + max(60.0, calls * SOCKET_TIMEOUT_SECONDS / concurrency)
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    tally.wall_seconds += time.perf_counter() - (began[0] if began else time.perf_counter())
    tally.add_cpu(cpu_before[0] if cpu_before else None, server_cpu_seconds(server.process.pid))
    if any(thread.is_alive() for thread in threads):
        tally.fail(BenchError("client threads did not finish in time"))
    for session in sessions:
        session.close()


def measure_setup(server: RunningServer, tally: Tally, sessions: int) -> None:
    tally.requested += sessions
    for _ in range(sessions):
        session = client_session(server)
        going_on = _timed(tally, session.initialize)
        session.close()
        if not going_on:
            return


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


def percentile(sorted_samples: list[int], fraction: float) -> int:
    """Nearest-rank percentile."""
    return sorted_samples[max(0, math.ceil(fraction * len(sorted_samples)) - 1)]


def summarize(metric: str, tally: Tally, concurrency: int) -> dict[str, Any]:
    samples = sorted(tally.samples_ns)
    summary: dict[str, Any] = {"requested": tally.requested, "ok": tally.ok, "failed": tally.failed}
    if samples:
        summary |= {
            "median_ms": statistics.median(samples) / 1e6,
            "p95_ms": percentile(samples, 0.95) / 1e6,
            "mean_ms": statistics.fmean(samples) / 1e6,
            "min_ms": samples[0] / 1e6,
            "max_ms": samples[-1] / 1e6,
        }
    if metric != "session_setup" and tally.server_cpu_seconds is not None and tally.ok:
        summary["server_cpu_ms_per_call"] = tally.server_cpu_seconds * 1000 / tally.ok
    if metric == "throughput":
        summary["concurrency"] = concurrency
        summary["seconds"] = tally.wall_seconds
        summary["calls_per_second"] = tally.ok / tally.wall_seconds if tally.wall_seconds > 0 else 0.0
    if tally.errors:
        summary["errors"] = tally.errors
    return summary


# --- report ---------------------------------------------------------------------------------


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """For each mcp_auth server: mcp_auth/SDK for each number, and the speedup (>1: mcp_auth is faster)."""
    sdk = results["sdk"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in MCP_AUTH_SERVERS:
        mine = results[key]
        entry: dict[str, dict[str, float]] = {}
        for name, metric, stat, higher_is_better in (
            ("call_median", "latency", "median_ms", False),
            ("call_p95", "latency", "p95_ms", False),
            ("throughput", "throughput", "calls_per_second", True),
            ("setup_median", "session_setup", "median_ms", False),
            ("setup_p95", "session_setup", "p95_ms", False),
            ("server_cpu_per_call", "throughput", "server_cpu_ms_per_call", False),
        ):
            a, b = mine[metric].get(stat, 0.0), sdk[metric].get(stat, 0.0)
            if a > 0 and b > 0:
                entry[name] = {"mcp_auth_over_sdk": a / b, "speedup": a / b if higher_is_better else b / a}
        out[key] = entry
    return out


def target_ratios(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 11's throughput targets, as measured in this run: each ratio, its bound, whether it was met."""
    out = []
    for name, mine, theirs, bound in TARGETS:
        a = results[mine]["throughput"].get("calls_per_second", 0.0)
        b = results[theirs]["throughput"].get("calls_per_second", 0.0)
        ratio = a / b if a > 0 and b > 0 else 0.0
        out.append({"name": name, "of": mine, "over": theirs, "ratio": ratio, "target": bound, "met": ratio >= bound})
    return out


def store_cost(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What the Redis session store costs per handshake-era call: with minus without, same run, same settings."""
    out = []
    for name, without, with_store in STORE_PAIRS:
        entry: dict[str, Any] = {"name": name, "without": without, "with": with_store}
        for stat, metric, key in (
            ("call_median_ms", "latency", "median_ms"),
            ("server_cpu_ms_per_call", "throughput", "server_cpu_ms_per_call"),
            ("setup_median_ms", "session_setup", "median_ms"),
        ):
            a, b = results[with_store][metric].get(key), results[without][metric].get(key)
            if a is not None and b is not None:
                entry[f"added_{stat}"] = a - b
        a = results[with_store]["throughput"].get("calls_per_second", 0.0)
        b = results[without]["throughput"].get("calls_per_second", 0.0)
        entry["throughput_ratio"] = a / b if a > 0 and b > 0 else 0.0
        out.append(entry)
    return out


def _faster(speedup: float) -> str:
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"


def print_report(results: dict[str, dict[str, Any]], ratio_table: dict[str, dict[str, dict[str, float]]]) -> None:
    def ms(metric: dict[str, Any], stat: str) -> str:
        return f"{metric[stat]:.2f}" if stat in metric else "-"

    concurrency = results["sdk"]["throughput"]["concurrency"]
    header = (
        f"{'server':<32} {'auth':<7} {'call p50':>9} {'call p95':>9} {f'calls/s C={concurrency}':>13} "
        f"{'setup p50':>10} {'setup p95':>10} {'cpu/call':>9} {'failed':>7}"
    )
    print(header)
    print("-" * len(header))
    for key in SERVERS:
        result = results[key]
        latency, throughput, setup = result["latency"], result["throughput"], result["session_setup"]
        failed = sum(result[metric]["failed"] for metric in METRICS)
        print(
            f"{LABELS[key]:<32} {result['auth']:<7} {ms(latency, 'median_ms'):>9} {ms(latency, 'p95_ms'):>9} "
            f"{throughput.get('calls_per_second', 0.0):>13.1f} {ms(setup, 'median_ms'):>10} "
            f"{ms(setup, 'p95_ms'):>10} {ms(throughput, 'server_cpu_ms_per_call'):>9} {failed:>7}"
        )
    print(
        "(milliseconds; setup = initialize + notifications/initialized; "
        "cpu/call = the server's CPU time per call in the throughput test)"
    )
    print()
    for key, entry in ratio_table.items():
        parts = []
        if "call_median" in entry:
            parts.append(f"{_faster(entry['call_median']['speedup'])} per call (median)")
        if "call_p95" in entry:
            parts.append(f"{_faster(entry['call_p95']['speedup'])} at p95")
        if "throughput" in entry:
            parts.append(f"{entry['throughput']['speedup']:.2f}x the SDK's throughput")
        if "setup_median" in entry:
            parts.append(f"{_faster(entry['setup_median']['speedup'])} to set up a session")
        if "server_cpu_per_call" in entry:
            parts.append(f"{entry['server_cpu_per_call']['mcp_auth_over_sdk']:.2f}x the SDK's server CPU per call")
        print(f"{LABELS[key]} vs SDK: " + ", ".join(parts) if parts else f"{LABELS[key]}: no ratios (failures)")
    print("(the SDK runs without auth or access log; mcp_auth checks its token and writes an audit line per call)")
    print()
    for cost in store_cost(results):
        added = [
            f"{cost[f'added_{stat}']:+.2f} ms {label}"
            for stat, label in (
                ("call_median_ms", "per call (median)"),
                ("server_cpu_ms_per_call", "server CPU per call"),
                ("setup_median_ms", "per session setup"),
            )
            if f"added_{stat}" in cost
        ]
        print(
            f"Redis session store, gunicorn {cost['name']}: " + ", ".join(added) + f", {cost['throughput_ratio']:.2f}x"
            " the throughput without it"
        )
    print()
    for target in target_ratios(results):
        verdict = "met" if target["met"] else f"missed by {(1 - target['ratio'] / target['target']) * 100:.0f}%"
        print(f"target {target['name']}: {target['ratio']:.2f}x (target >= {target['target']}x: {verdict})")


# --- argument validation (in this process, no servers) ----------------------------------------

VALIDATION_BATCHES = 5  # the median of five batches steadies the number against a busy machine


def typical_tool(
    title: str,
    body: str,
    tags: list[str] | None = None,
    priority: Literal["low", "high"] = "low",
    due_in_days: Annotated[int, "days from today"] = 0,
) -> dict[str, str]:
    """Store a note (the README's example tool, with one more argument)."""
    return {"id": "n1", "title": title}


def measure_validation(calls: int) -> dict[str, Any]:
    """Microseconds per `problems()` call on a typical tool's inferred schema, valid and invalid input."""
    from mcp_auth.mcp.schema import function_schema
    from mcp_auth.mcp.validation import compile_schema
    from mcp_auth.server import Context

    schema = function_schema(typical_tool, Context).input_schema
    schema["properties"]["due_in_days"]["minimum"] = 0  # one numeric bound, as tools often have
    compile_samples = []
    for _ in range(20):
        start = time.perf_counter_ns()
        validator = compile_schema(schema, "tool 'typical_tool'")
        compile_samples.append(time.perf_counter_ns() - start)
    valid = {"title": "Groceries", "body": "milk, eggs, bread", "tags": ["home", "errands"], "priority": "high"}
    invalid = {"title": "Groceries", "body": 42, "tags": ["home", 7], "priority": "urgent", "due_in_days": -1}
    if validator.problems(valid) or len(validator.problems(invalid)) != 4:
        raise BenchError(f"validation gave unexpected answers: {validator.problems(invalid)}")
    result: dict[str, Any] = {
        "schema": schema,
        "calls": calls,
        "compile_us": statistics.median(compile_samples) / 1000,
    }
    for name, arguments in (("valid", valid), ("invalid", invalid)):
        per_batch = max(1, calls // VALIDATION_BATCHES)
        samples = []
        for _ in range(VALIDATION_BATCHES):
            start = time.perf_counter_ns()
            for _ in range(per_batch):
                validator.problems(arguments)
            samples.append((time.perf_counter_ns() - start) / per_batch)
        result[f"{name}_us_per_call"] = statistics.median(samples) / 1000
    return result


def print_validation(validation: dict[str, Any]) -> None:
    print(
        f"argument validation (jsonschema Draft 2020-12, typical tool, {validation['calls']} calls): "
        f"{validation['valid_us_per_call']:.1f} us per valid call, "
        f"{validation['invalid_us_per_call']:.1f} us per invalid call, "
        f"{validation['compile_us']:.0f} us to compile at registration"
    )


# --- main -----------------------------------------------------------------------------------

PRESETS = {
    "full": {"calls": 2000, "concurrency": 8, "sessions": 300, "warmup": 100, "rounds": 3, "validation_calls": 20000},
    "quick": {"calls": 60, "concurrency": 4, "sessions": 15, "warmup": 10, "rounds": 1, "validation_calls": 2000},
}


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, help="calls per server for latency, and again for throughput (2000)")
    parser.add_argument("--concurrency", type=int, help="client threads for the throughput test (8)")
    parser.add_argument("--sessions", type=int, help="sessions set up per server (300)")
    parser.add_argument("--warmup", type=int, help="untimed calls before the latency test (100)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds the calls are spread over (3)")
    parser.add_argument("--quick", action="store_true", help="small numbers, for CI: 60 calls, 4 threads, 1 round")
    parser.add_argument("--json", type=Path, help="write every number as JSON to this path")
    parser.add_argument("--sdk-stateless", action="store_true", help="run the SDK with stateless_http=True")
    parser.add_argument(
        "--no-keepalive",
        dest="keepalive",
        action="store_false",
        help="one request per connection (Connection: close) instead of one kept-alive connection per session",
    )
    parser.add_argument("--validation-calls", type=int, help="calls for the argument validation micro-benchmark")
    parser.add_argument("--validation-only", action="store_true", help="only the validation micro-benchmark")
    options = parser.parse_args(argv)
    preset = PRESETS["quick" if options.quick else "full"]
    for name, default in preset.items():
        if getattr(options, name) is None:
            setattr(options, name, default)
        if getattr(options, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'warmup' else 'positive'}")
    return options


def run(options: argparse.Namespace) -> dict[str, Any]:
    """Start the servers, measure them round by round, stop them; every number, as a dict."""
    token = secrets.token_urlsafe(32)
    tallies = {key: {metric: Tally() for metric in METRICS} for key in SERVERS}
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="mcp-auth-bench-") as tmp,
        running_servers(Path(tmp), token, options.sdk_stateless, options.keepalive) as (servers, store),
    ):
        print(
            "servers: " + ", ".join(f"{LABELS[key]} on port {server.port}" for key, server in servers.items()),
            file=sys.stderr,
        )
        calls, sessions = split(options.calls, options.rounds), split(options.sessions, options.rounds)
        for number in range(options.rounds):
            order = SERVERS[number % len(SERVERS) :] + SERVERS[: number % len(SERVERS)]
            for key in order:
                server, tally = servers[key], tallies[key]
                measure_setup(server, tally["session_setup"], sessions[number])
                measure_latency(server, tally["latency"], calls[number], options.warmup if number == 0 else 0)
                measure_throughput(
                    server, tally["throughput"], calls[number], options.concurrency, 5 if number == 0 else 0
                )
            print(f"round {number + 1}/{options.rounds} done ({time.monotonic() - started:.1f} s)", file=sys.stderr)
        store_commands = store.commands_processed()
        results: dict[str, dict[str, Any]] = {}
        for key in SERVERS:
            results[key] = {
                "label": LABELS[key],
                "auth": "none" if servers[key].spec.token is None else "bearer",
                "command": [Path(arg).name if arg == sys.executable else arg for arg in servers[key].spec.argv],
                **{metric: summarize(metric, tallies[key][metric], options.concurrency) for metric in METRICS},
            }
    for key in SERVERS:
        results[key]["exit_status"] = servers[key].exit_status
    return {
        "settings": {
            "calls": options.calls,
            "concurrency": options.concurrency,
            "sessions": options.sessions,
            "warmup": options.warmup,
            "rounds": options.rounds,
            "quick": options.quick,
            "protocol_version": PROTOCOL_VERSION,
            "client": (
                "plain socket, HTTP/1.1, one kept-alive connection per session"
                if options.keepalive
                else "plain socket, HTTP/1.1, one request per connection (Connection: close)"
            ),
            "keepalive": options.keepalive,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "seconds": time.monotonic() - started,
        },
        "sdk_mode": (
            "MCPServer.streamable_http_app(json_response=True, stateless_http="
            f"{bool(options.sdk_stateless)}) under uvicorn, access log off, no auth"
        ),
        "servers": results,
        "ratios": ratios(results),
        "targets": target_ratios(results),
        "store_cost": store_cost(results),
        "store": {"server": "redis-server, loopback, no persistence", "commands_processed": store_commands},
    }


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        validation = measure_validation(options.validation_calls)
        if options.validation_only:
            print_validation(validation)
            if options.json is not None:
                options.json.write_text(json.dumps({"ok": True, "validation": validation}, indent=2) + "\n")
            return 0
        report = run(options)
        report["validation"] = validation
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        if options.json is not None:
            options.json.write_text(json.dumps({"ok": False, "error": str(exc)}, indent=2) + "\n")
        return 1
    servers = report["servers"]
    failures = [
        f"{key} {metric}: {servers[key][metric]['failed']} failed; {servers[key][metric].get('errors', [])}"
        for key in SERVERS
        for metric in METRICS
        if servers[key][metric]["failed"] or servers[key][metric]["ok"] != servers[key][metric]["requested"]
    ]
    report["ok"] = not failures
    print_report(servers, report["ratios"])
    print(f"SDK mode: {report['sdk_mode']}")
    print_validation(validation)
    if options.json is not None:
        options.json.write_text(json.dumps(report, indent=2) + "\n")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
