"""Test support: live servers on port 0 and a raw HTTP/1.1 client over real sockets.

The raw client exists because the cases that matter most here are the ones a
polite client library will not send: missing or doubled Host headers, bad
Content-Length, garbage request lines. Everything is real: a real socket to a
real server thread running the real app.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mcp_auth.app import McpAuthApp
from mcp_auth.config import Config
from mcp_auth.diagnostics import build_diagnostics
from mcp_auth.embedded import EmbeddedServer
from mcp_auth.http import BODY_DEADLINE_SECONDS
from mcp_auth.server import McpServer
from mcp_auth.startup import build_app

TOKEN = "test-token-0123456789abcdefghijklmnop"
ACCEPT_BOTH = "application/json, text/event-stream"


@dataclass
class Live:
    app: McpAuthApp
    port: int
    host: str = "127.0.0.1"
    token: str | None = TOKEN

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/mcp"


class ManualClock:
    """A monotonic clock that moves only when a test says so: timers are tested without sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@contextmanager
def live_server(
    server: McpServer | None = None,
    *,
    host: str = "127.0.0.1",
    clock: Callable[[], float] = time.monotonic,
    body_deadline: float = BODY_DEADLINE_SECONDS,
    **settings: Any,
) -> Iterator[Live]:
    """Serve `server` (default: diagnostics) on host:0 in a thread; always stopped.
    `clock` times sessions, streams, socket idleness and the transport's body deadline (a ManualClock
    in timer tests); `body_deadline` is the built-in server's own (real time)."""
    if "no_auth" not in settings and "tokens_file" not in settings and "token_file" not in settings:
        settings.setdefault("token", TOKEN)
    config = Config(host=host, port=0, **settings)
    app = build_app(server or build_diagnostics(), config, summary=False, clock=clock)
    embedded = EmbeddedServer(app, host, 0, body_deadline=body_deadline)
    thread = threading.Thread(target=embedded.serve_forever, daemon=True)
    thread.start()
    try:
        yield Live(app, embedded.port, host, settings.get("token"))
    finally:
        app.close()
        embedded.shutdown()
        embedded.close()
        thread.join(timeout=10)


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = field(repr=False, default=b"")

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def sse_messages(self) -> list[dict[str, Any]]:
        """The JSON data of each SSE event in the body."""
        messages = []
        for event in self.body.decode().split("\n\n"):
            data = [line[5:].strip() for line in event.splitlines() if line.startswith("data:")]
            if any(data):  # an event with empty data is the priming event, not a message
                messages.append(json.loads("\n".join(data)))
        return messages


def ipv6_loopback_available() -> bool:
    """Whether ::1 can be bound here (some CI machines have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


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


def response_complete(raw: bytes) -> bool:
    """Whether `raw` holds one whole response that leaves its connection open (delimited by
    Content-Length, chunked, or a status without a body): the server will not close it, so a
    client stops reading here. A response that closes its connection is read to the close."""
    head, found, body = raw.partition(b"\r\n\r\n")
    if not found or not raw.startswith(b"HTTP/1.1 "):
        return False
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "close" in headers.get("connection", "") or raw[9:12] == b"101":
        return False
    if raw[9:12] in (b"204", b"304"):
        return True
    if headers.get("transfer-encoding") == "chunked":
        return body.endswith(b"0\r\n\r\n")
    if "content-length" in headers:
        return len(body) >= int(headers["content-length"])
    return False


def raw_exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 30.0) -> RawResponse:
    """Send bytes, read one HTTP/1.1 response (to the server's close, or to its end when the
    server keeps the connection alive), parse it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        chunks = []
        while not response_complete(b"".join(chunks)):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.startswith(b"HTTP/"):
        # http.server answers a request line it cannot parse HTTP/0.9-style: a body, no status line.
        return RawResponse(0, "HTTP/0.9", [], raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _version, status, *reason = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    response = RawResponse(int(status), reason[0] if reason else "", headers, body, head)
    if (response.header("Transfer-Encoding") or "").lower() == "chunked":
        response.body = _dechunk(body)
    return response


def request(
    port: int,
    method: str = "POST",
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    path: str = "/mcp",
    host_header: str | None = "127.0.0.1",
    token: str | None = TOKEN,
    host: str = "127.0.0.1",
) -> RawResponse:
    """One HTTP request with sensible MCP defaults; every default can be removed by passing None.

    `Connection: close` by default: the answer is read to the server's close, which comes
    after the app has finished with the request (its audit lines written, say)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    merged: dict[str, str | None] = {"Host": host_header, "Connection": "close"}
    if token is not None:
        merged["Authorization"] = f"Bearer {token}"
    if method == "POST":
        merged["Content-Type"] = "application/json"
        merged["Accept"] = ACCEPT_BOTH
    merged.update(headers or {})
    if body is not None:
        merged["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in merged.items() if v is not None)
    return raw_exchange(port, head.encode("latin-1") + b"\r\n" + (body or b""), host=host)


def initialize_body(request_id: int = 1, version: str = "2025-11-25") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }


def open_session(port: int, token: str | None = TOKEN, version: str = "2025-11-25") -> str:
    """Initialize over raw HTTP and return the session id."""
    response = request(port, body=initialize_body(version=version), token=token)
    assert response.status == 200, response
    session_id = response.header("Mcp-Session-Id")
    assert session_id
    note = request(
        port,
        body={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={"Mcp-Session-Id": session_id},
        token=token,
    )
    assert note.status == 202, note
    return session_id


def rpc(
    port: int,
    session_id: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    request_id: int = 7,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> RawResponse:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return request(port, body=body, headers={"Mcp-Session-Id": session_id, **(headers or {})}, token=token)
