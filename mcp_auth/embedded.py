"""The built-in HTTP server: Werkzeug's threaded WSGI server with mcp_auth's limits.

A thread per connection (pooled: reused, not started anew each time), pure
Python, so it runs the same on Linux, macOS and Windows. Connections are
kept alive between requests (HTTP/1.1; `mcp_auth.keepalive` decides when and
writes the responses). What this module adds is bounded patience and bounded
concurrency, all of it before the app has authenticated anyone, so it trusts
nothing about the peer:

- the client address is judged at accept time, before a byte is read: when
  the app is an `McpAuthApp` and the peer is not one of its trusted proxies,
  step 1 of its pipeline (allowed networks, loopback-only) runs on the TCP
  peer, and a refused peer is audited, answered 403 by the accepting thread
  and closed at once, without a thread and without a byte of it being parsed;
- at most `MAX_CONNECTIONS` connections hold a thread, and one client address
  (one /64 for IPv6) at most 1/`CONNECTION_SHARE_DIVISOR` of them; past either
  a new connection is answered 503 by the accepting thread and closed at once;
  a trusted proxy speaks for many clients and is held to the global cap only;
- a request head (request line and headers) must arrive within
  `HEAD_DEADLINE_SECONDS`, however it is trickled, or the connection is shut
  down; one watchdog thread per server enforces that for every connection;
- a request head larger than `MAX_HEAD_BYTES` is answered 431 as soon as the
  bound is crossed, so a refused head never costs more memory than that;
- the header fields are read strictly (`mcp_auth.requesthead`: no folded
  lines, no space before a colon, no bare CR in a value; 400), not by the lenient
  `email` parser http.server uses, which also cost more than the rest of a
  request's handling outside the app;
- the errors written before the app runs (an unparsable request line, a
  malformed or too large head) are the app's JSON refusal bodies, properly escaped;
- the Host header in the WSGI environ is the one the client sent, even for an
  absolute-form request target (Werkzeug would put the target's host there);
- a request body must arrive within `BODY_DEADLINE_SECONDS` of the app's
  first read of it, however it trickles (a chunked one too), and after the
  answer on a connection that closes, a client gets
  `keepalive.DRAIN_DEADLINE_SECONDS` to stop sending;
- a connection that stops sending or accepting bytes is dropped after
  `SOCKET_TIMEOUT_SECONDS`;
- a kept-alive connection waits at most `keepalive_seconds` (default
  `KEEPALIVE_SECONDS`) for its next request, then the head deadline applies
  again. Threads stay bounded: every open connection, idle or not, holds one
  of the `MAX_CONNECTIONS` slots (and its place in the per-address share), an
  idle one for at most the keep-alive bound, and keep-alive is only offered
  while at most 1/`KEEPALIVE_ROOM_DIVISOR` of the slots are taken, so idle
  connections cannot crowd out new ones;
- on shutdown (`EmbeddedServer.drain`) the listening socket closes at once,
  idle kept-alive connections are closed, requests in flight get a bounded
  time to finish (their answers say `Connection: close`), then everything left
  is cut.

All of this stays in this module. What the app sees of the server, and all
it may rely on (`_Bounded` puts it in place around the app):

- `wsgi.input` reads at most what was asked for and may fail: an OSError
  (`TimeoutError` at the body deadline) or ValueError (a broken chunked body);
- `werkzeug.socket` is the connection, which a WebSocket takes over
  (simple-websocket finds it there); when the socket is over, the app ends its
  call by raising `WebSocketDone` (`mcp_auth.websocket.finish_upgraded_request`),
  a ConnectionError that Werkzeug hands to `connection_dropped`, and no
  response is written on the connection.

The Werkzeug, http.server and socketserver hooks overridden or relied on here
are not Werkzeug's public API: setup.cfg pins Werkzeug to the minor series
tested, and tests/test_werkzeug_contract.py checks each hook's signature and
behaviour. Per-request access logs are left to the audit log.

Size: longer than the other modules (about 1100 lines) on purpose: it is the
one owner of the built-in server's hardening (connection caps and shares,
head/body/drain deadlines, lingering close, early errors), and every piece of
it leans on the same few Werkzeug hooks, which are easier to audit against the
pins in one place.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any

from werkzeug.http import parse_set_header
from werkzeug.serving import BaseWSGIServer, DechunkedInput

from . import audit
from .app import McpAuthApp
from .config import DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
from .errors import ConfigError
from .guard import Guard
from .http import BODY_DEADLINE_SECONDS, MAX_CONTENT_LENGTH_DIGITS
from .keepalive import KEEPALIVE_SECONDS, MAX_KEEPALIVE_SECONDS, KeepAliveHandler
from .network import IPAddress, parse_address
from .refusals import IpNotAllowed, Refusal
from .requesthead import HeadError, block_length, fields_of_block, parse_request_line, read_fields

logger = logging.getLogger("mcp_auth.embedded")

# How long a connection may sit without sending or accepting a byte: long
# enough for a slow network, short enough that an idle client cannot hold
# threads. Open event streams are unaffected: they write a keepalive every 15 s.
SOCKET_TIMEOUT_SECONDS = 30.0
# Connections served at once, each on its own thread. An open WebSocket is two
# threads (its handler and simple-websocket's reader) and an open event stream
# holds its thread for as long as it lasts, so at worst this is about 2000
# threads: roughly what 2 cores can switch between while still answering, and
# well below the usual thread and descriptor limits of one process.
MAX_CONNECTIONS = 1024
# One client address (IPv4) or one /64 (IPv6: what one subscriber is routed)
# may hold at most 1/4 of the connections: 256 of the default 1024, as many as
# the app's own bounds on open WebSockets and on event streams (256 each), so
# the share never stops one client short of what the app would give it, while
# it takes at least four addresses to fill the server.
CONNECTION_SHARE_DIVISOR = 4
# A connection refused at accept time is answered at once, and the client may
# not have sent its request yet: closing the socket when that request arrives
# resets the connection, and a reset can destroy the answer before the client
# reads it. So a refused socket is closed "lingering" (as Apache does): its
# write side is shut, and one thread reads and drops (never parses) what still
# comes, for at most LINGER_SECONDS and LINGER_MAX_BYTES, before closing it.
# Long enough for a client to send its head and read the answer on any real
# network; bounded so a refused peer holds nothing for long: at most
# MAX_LINGERING sockets at once (one descriptor each, no thread), past which
# a refused socket is closed at once as before.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 64 * 1024
MAX_LINGERING = 256
# The prefix of an IPv6 address that counts as one client for that share: a
# single host usually holds a whole /64 and can pick any address inside it.
IPV6_SHARE_PREFIX = 64
# BODY_DEADLINE_SECONDS (from the transport: the same bound it checks between
# reads) is enforced here on the connection, so it also holds inside one read.
# The whole request head must arrive within this, however slowly it trickles:
# SOCKET_TIMEOUT_SECONDS is per read, so without it a client sending a header
# byte every 29 s would hold a thread forever before it is ever authenticated.
# A real client sends its head in one packet; 20 s covers the slowest network.
HEAD_DEADLINE_SECONDS = 20.0
# The watchdog wakes this often (or four times per deadline, if that is shorter),
# so a deadline is enforced at most this late; one wake-up scans every connection.
HEAD_WATCH_TICK_SECONDS = 1.0
# A pooled thread with nothing to do for this long ends; the next burst starts new ones.
IDLE_THREAD_SECONDS = 60.0
# Connections turn over in well under a second when the server is healthy.
OVER_CAPACITY_RETRY_AFTER_SECONDS = 5
# The whole request head (request line and every header line, with their line
# ends): 64 KiB, the longest single line http.server already accepted, so one
# maximal line still fits. A real MCP request head is well under 2 KiB; the
# largest header the pipeline reads is X-Forwarded-For, bounded at 8 KiB. Past
# this the answer is 431 at once: at most 64 KiB per connection, where
# http.server alone would hold 100 lines of 64 KiB each until the deadline.
MAX_HEAD_BYTES = 64 * 1024
# Keep-alive is offered while at most half the connection slots are taken:
# under pressure every answer closes its connection, so slots turn over.
KEEPALIVE_ROOM_DIVISOR = 2
# On shutdown, how long requests in flight get to finish before the rest is cut.
SHUTDOWN_GRACE_SECONDS = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
# A target holding one of these is split and decoded by Werkzeug's make_environ: a percent-escape
# to decode, a fragment to drop, a second leading slash Werkzeug reads as an authority.
_DECODED_IN_TARGETS = ("%", "#", "//")
# A message from http.server may quote the request line: bounded so that a
# refusal never echoes much of what the client sent.
MAX_ERROR_MESSAGE_LENGTH = 120


class _TooManyConnections(Refusal):
    """Past the connection cap, before any request is read (the body is a refusal's, JSON-RPC with no id)."""

    status, reason_phrase, error, step = 503, "Service Unavailable", "unavailable", "connection"


# Each status http.server (or the head bound) answers with, and the error name in its body.
_ERROR_NAMES = {
    HTTPStatus.BAD_REQUEST: "bad_request",
    HTTPStatus.REQUEST_URI_TOO_LONG: "uri_too_long",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "request_head_too_large",
    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: "http_version_not_supported",
}


class _BeforeTheApp(Refusal):
    """What http.server refuses before the app runs (a request line it cannot parse, a head too
    large), with the app's JSON body: `json.dumps` escapes whatever the message quotes."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        if len(message) > MAX_ERROR_MESSAGE_LENGTH:
            message = message[: MAX_ERROR_MESSAGE_LENGTH - 3] + "..."
        super().__init__(message)
        self.status = status.value
        self.reason_phrase = status.phrase
        self.error = _ERROR_NAMES.get(status, "bad_request")


class _HeadTooLarge(Exception):
    """The request head crossed MAX_HEAD_BYTES before it ended."""


class _BoundedHead(io.BufferedIOBase):
    """The connection's reader while the request head is read: at most `budget` bytes in all.

    http.server reads the head with `readline` alone (the request line, then
    each header line); this gives each call no more than what is left of the
    budget plus one byte, and raises `_HeadTooLarge` once a line goes past it,
    so no more than the budget is ever buffered for one head.
    """

    def __init__(self, raw: io.BufferedIOBase, budget: int) -> None:
        super().__init__()
        self.raw = raw
        self._remaining = budget

    def buffered_fields(self) -> bytes | None:
        """The header block through its empty line, taken whole when it is already buffered (nearly
        always: a client sends its head in one packet); None, having taken nothing, when it is not."""
        peek = getattr(self.raw, "peek", None)
        if peek is None:
            return None
        length = block_length(peek(1))
        if length is None or length > self._remaining:
            return None  # not all here yet (or past the budget, which readline then reports)
        self._remaining -= length
        block: bytes = self.raw.read(length)
        return block

    def readline(self, size: int | None = -1, /) -> bytes:
        allowed = self._remaining + 1  # one byte over tells "too large" from "exactly the budget"
        line: bytes = self.raw.readline(allowed if size is None or size < 0 else min(size, allowed))
        self._remaining -= len(line)
        if self._remaining < 0:
            raise _HeadTooLarge
        return line


def _rendered(refusal: Refusal, method: str = "GET") -> tuple[str, list[tuple[str, str]], bytes]:
    """The refusal's status line text, headers and body, as the app would send them."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body = b"".join(refusal({"REQUEST_METHOD": method}, lambda status, headers: started.append((status, headers))))
    status, headers = started[0]
    return status, headers, body


def _raw_response(refusal: Refusal) -> bytes:
    """The refusal as the bytes of a complete HTTP/1.1 response that closes the connection."""
    status, headers, body = _rendered(refusal)
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# Built once: the accepting thread sends them without parsing anything.
_OVER_CAPACITY = _raw_response(
    _TooManyConnections(
        "Too many open connections; try again later",
        headers=[("Retry-After", str(OVER_CAPACITY_RETRY_AFTER_SECONDS))],
    )
)
_OVER_SHARE = _raw_response(
    _TooManyConnections(
        "Too many open connections from this client address; close some and try again",
        headers=[("Retry-After", str(OVER_CAPACITY_RETRY_AFTER_SECONDS))],
    )
)


def _share_of(peer: IPAddress) -> IPAddress | ipaddress.IPv6Network:
    """Which per-address share a client's connection counts against: its IPv4 address, or its IPv6 /64."""
    if isinstance(peer, ipaddress.IPv6Address):
        return ipaddress.IPv6Network((peer, IPV6_SHARE_PREFIX), strict=False)
    return peer


class _HeadWatch:
    """One thread per server that shuts down connections whose deadline has passed.

    One deadline per connection at a time: handlers arm the head's before reading
    a request line and disarm it as soon as the head is parsed; `_BodyWithin`
    arms the body's at the app's first read and disarms it at the body's end;
    `_DrainBounded` arms the drain's after the answer. Shutting a socket down
    (rather than closing it) makes the handler's blocked read return, so the
    handler ends the connection on its own thread. Arming, disarming and enforcing happen under one lock: once
    `disarm` has returned, the watchdog never touches that socket again.
    """

    def __init__(self, tick: float) -> None:
        self._tick = tick
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        with self._lock:
            if self._thread is not None and not self._stop.is_set():
                return  # already running
            self._stop = threading.Event()  # the old thread, if any, keeps the one that stopped it
            # A daemon: the watchdog must never be what keeps the process open.
            self._thread = threading.Thread(target=self._run, args=(self._stop,), name=name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it, however many callers stop it at once."""
        with self._lock:
            thread = self._thread
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def arm(self, connection: socket.socket, deadline: float) -> None:
        with self._lock:
            self._deadlines[connection] = deadline

    def disarm(self, connection: socket.socket) -> bool:
        """Stop watching; False if the deadline had already passed and the connection was shut down."""
        with self._lock:
            return self._deadlines.pop(connection, None) is not None

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._tick):
            now = time.monotonic()
            with self._lock:
                overdue = [connection for connection, deadline in self._deadlines.items() if deadline <= now]
                for connection in overdue:
                    del self._deadlines[connection]
                    try:
                        connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # the peer already went away: the handler's read returns anyway


class _RequestHandler(KeepAliveHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_SECONDS
    # As Werkzeug's make_server sets for threaded servers: chunked responses
    # (event streams) need HTTP/1.1.
    protocol_version = "HTTP/1.1"

    def make_environ(self) -> dict[str, Any]:
        environ = self._plain_environ() if self._is_plain_target() else super().make_environ()
        # Werkzeug replaces Host with the authority of an absolute-form target
        # (GET http://name/mcp). Step 2 must see the Host the client sent, and
        # judges the target's authority on its own; joined as Werkzeug joins
        # repeated headers, so two Host lines stay a malformed Host.
        hosts = self.headers.get_all("Host")
        if hosts is None:
            environ.pop("HTTP_HOST", None)
        else:
            environ["HTTP_HOST"] = ",".join(value.replace("\r\n", "") for value in hosts)
        return environ

    def _is_plain_target(self) -> bool:
        """An origin-form target with nothing to decode (`/mcp`, `/mcp?a=b`) on a plain-HTTP server:
        what nearly every request is, and what `_plain_environ` builds an environ for by itself."""
        path = self.path
        return (
            self.server.ssl_context is None
            and path.startswith("/")
            and path.isascii()
            and not any(mark in path for mark in _DECODED_IN_TARGETS)
        )

    def _plain_environ(self) -> dict[str, Any]:
        """Werkzeug's `make_environ` for a plain target, without the URL splitting and decoding it needs
        no part of (tests/test_werkzeug_contract.py checks that both build the same environ)."""
        path_info, _, query = self.path.partition("?")
        peer = self.client_address
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": self.rfile,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": self.server.multithread,
            "wsgi.multiprocess": self.server.multiprocess,
            "wsgi.run_once": False,
            "werkzeug.socket": self.connection,
            "SERVER_SOFTWARE": self.server_version,
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_URI": self.path,
            "RAW_URI": self.path,
            "REMOTE_ADDR": peer[0],
            "REMOTE_PORT": peer[1],
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
        }
        for name, value in self.headers.items():
            if "_" in name:
                continue  # as Werkzeug: X_Forwarded_For must not pose as X-Forwarded-For
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
                if key in environ:
                    value = f"{environ[key]},{value}"
            environ[key] = value
        if "chunked" in parse_set_header(environ.get("HTTP_TRANSFER_ENCODING")):
            environ["wsgi.input_terminated"] = True
            environ["wsgi.input"] = DechunkedInput(environ["wsgi.input"])
        return environ

    def handle_one_request(self) -> None:
        # A kept-alive connection first waits (bounded) for its next request to start.
        if self.requests_served and not self.wait_for_next_request():
            self.close_connection = True
            return
        # Armed before the request line is read, so the deadline also covers a
        # client that connects and sends nothing, and (from its first byte) any
        # later request read from the same connection.
        self.server.head_watch.arm(self.connection, time.monotonic() + self.server.head_deadline)
        # The head is read through a reader that counts it (parse_request
        # gives the connection's own reader back, for the body).
        unbounded = self.rfile
        self.rfile = _BoundedHead(unbounded, MAX_HEAD_BYTES)
        try:
            super().handle_one_request()
        except _HeadTooLarge:
            if not hasattr(self, "request_version"):  # it ended inside the request line
                self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"The request head is over {MAX_HEAD_BYTES} bytes; send fewer or shorter headers",
            )
        finally:
            self.rfile = unbounded
            self.server.head_watch.disarm(self.connection)  # if the head never got as far as parse_request

    def parse_request(self) -> bool:
        try:
            parsed = self._parse_head()
        finally:
            if isinstance(self.rfile, _BoundedHead):
                self.rfile = self.rfile.raw  # the head is read: the body is bounded elsewhere
            on_time = self.server.head_watch.disarm(self.connection)
        if not on_time:
            # The watchdog shut the connection mid-head; what was read ends at
            # that EOF, so it is a truncated head that must not reach the app.
            self.close_connection = True
            return False
        return parsed

    def _parse_head(self) -> bool:
        """http.server's `parse_request`, with the header fields read by `mcp_auth.requesthead`.

        Sets what http.server's does (command, path, request_version, headers,
        close_connection) and answers what it refuses; False when the request
        goes no further.
        """
        self.command = None  # type: ignore[assignment]  # as http.server: no method until the line is read
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        if not self.requestline.split():
            return False  # an empty line: nothing to answer
        try:
            line = parse_request_line(self.requestline)
            self.request_version = line.version
            self.close_connection = not line.persistent
            self.command, self.path = line.method, line.target
            block = self.rfile.buffered_fields() if isinstance(self.rfile, _BoundedHead) else None
            fields = read_fields(self.rfile.readline) if block is None else fields_of_block(block)
            self.headers = fields  # type: ignore[assignment]  # what is read of an HTTPMessage, see requesthead
        except HeadError as refused:
            self.send_error(refused.status, refused.message)
            return False
        connection = (self.headers.get("Connection") or "").lower()
        if connection == "close" or line.version == "HTTP/0.9":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        # Judged before any "100 Continue", which would invite a body that is then never read.
        if not self._framing_is_unambiguous():
            return False
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            return bool(self.handle_expect_100())
        return True

    def _framing_is_unambiguous(self) -> bool:
        """Refuse a head whose body length two readers could see differently (request smuggling)."""
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or ()}
        if len(lengths) > 1:
            # RFC 9110 section 8.6: differing Content-Length values are an unrecoverable error.
            self.send_error(HTTPStatus.BAD_REQUEST, "The request has Content-Length headers that differ; send one")
            return False
        if "" in lengths:
            # RFC 9112 section 6.3: invalid framing, not "no body" (which would make the body the next request).
            self.send_error(HTTPStatus.BAD_REQUEST, "Content-Length is empty; send the body's length in bytes")
            return False
        if lengths and self.headers.get("Transfer-Encoding") is not None:
            # RFC 9112 section 6.1: both at once is an error for a server that does not forward the request.
            self.send_error(
                HTTPStatus.BAD_REQUEST, "The request has both Transfer-Encoding and Content-Length; send only one"
            )
            return False
        codings = [
            part.strip(" \t").lower()
            for value in self.headers.get_all("Transfer-Encoding") or ()
            for part in value.split(",")
        ]
        if codings and codings != ["chunked"]:
            # RFC 9112 section 6.3: without chunked as its one, final coding a request's body has no
            # length this server can know; read as "no body", its bytes would be taken for the next request.
            self.send_error(
                HTTPStatus.BAD_REQUEST,
                "Transfer-Encoding must be chunked alone; send the body chunked or with Content-Length",
            )
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's refusals, written as the app writes its own: a JSON body, standard reason phrase."""
        # Everything http.server refuses before the app runs is the client's
        # doing (a request line it cannot parse, HTTP/2.0+ on an HTTP/1.1
        # port): a 4xx, except 505 for a well-formed version this server does not speak.
        status = (
            HTTPStatus(code) if code < 500 or code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED else HTTPStatus.BAD_REQUEST
        )
        # http.server refuses a bad or unsupported version ("GET / HTTP/9.9") before it
        # records it, so the answer would go out HTTP/0.9-style, without a status line.
        # Only a two-word request line is HTTP/0.9; with a third word, answer in HTTP/1.x.
        if getattr(self, "request_version", "") == "HTTP/0.9" and len(getattr(self, "requestline", "").split()) >= 3:
            self.request_version = "HTTP/1.0"
        # http.server's messages end by quoting the request, as "(...)": that part is dropped.
        text = (message or status.phrase).split(" (", 1)[0] + (f": {explain}" if explain else "")
        _, headers, body = _rendered(_BeforeTheApp(status, text), self.command or "GET")
        self.send_response(status.value, status.phrase)  # no status line at all for an HTTP/0.9 request
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Connection", "close")  # and this connection reads no further request
        self.end_headers()
        self.wfile.write(body)

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        # A WebSocket took this connection over and has ended it, or the client
        # went away: do not read another request from it.
        self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Access logs are off: refusals and tool calls are audited by the app."""

    def log_error(self, format: str, *args: Any) -> None:
        """Quiet on client misbehaviour (timeouts, bad request lines): not server errors."""


class _ThreadPool:
    """Threads that serve one connection after another, started on demand.

    Starting a thread per connection costs more than the request itself on a
    small machine; these threads are reused, and one that stays idle for
    `IDLE_THREAD_SECONDS` ends, so the pool shrinks back after a burst. The
    connection cap bounds how many can exist at once.
    """

    def __init__(self, work: Any, name: str) -> None:
        self._work = work
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        # One token per idle thread: taking one reserves that thread for the next job.
        self._idle = threading.Semaphore(0)

    def submit(self, request: Any, client_address: Any) -> None:
        reserved = self._idle.acquire(blocking=False)
        self._jobs.put((request, client_address))
        if not reserved:
            threading.Thread(target=self._serve, name=self._name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                request, client_address = self._jobs.get(timeout=IDLE_THREAD_SECONDS)
            except queue.Empty:
                if self._idle.acquire(blocking=False):
                    return  # idle too long and nobody reserved a thread: end one
                continue  # a job was reserved for an idle thread and is on its way
            self._work(request, client_address)
            self._idle.release()


class _LingeringCloser:
    """Closes refused sockets after the client has had time to read their answer (see LINGER_SECONDS)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._lingering: dict[socket.socket, tuple[float, int]] = {}  # socket -> (deadline, bytes read)
        self._stopped = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        # One thread per server, started with it (never one per connection).
        self._thread = threading.Thread(target=self._run, name="mcp-auth-linger", daemon=True)
        self._thread.start()

    def close_later(self, sock: socket.socket) -> None:
        """Shut the write side now; close when the peer is done or the bounds run out."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            if self._stopped or len(self._lingering) >= MAX_LINGERING:
                sock.close()
                return
            try:
                self._selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError):
                sock.close()
                return
            self._lingering[sock] = (self._clock() + LINGER_SECONDS, 0)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    @property
    def lingering(self) -> int:
        with self._lock:
            return len(self._lingering)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                now = self._clock()
                deadlines = [deadline for deadline, _ in self._lingering.values()]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            for key, _events in self._selector.select(timeout):
                sock = key.fileobj
                if sock is self._wake_r:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                assert isinstance(sock, socket.socket)
                self._drop_what_came(sock)
            self._close_expired()

    def _drop_what_came(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(LINGER_MAX_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        with self._lock:
            entry = self._lingering.get(sock)
            if entry is None:
                return
            total = entry[1] + len(data)
            if data and total < LINGER_MAX_BYTES:
                self._lingering[sock] = (entry[0], total)
                return
        self._close(sock)  # the peer closed, or sent more than a refused client may

    def _close_expired(self) -> None:
        now = self._clock()
        with self._lock:
            expired = [sock for sock, (deadline, _) in self._lingering.items() if deadline <= now]
        for sock in expired:
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            if self._lingering.pop(sock, None) is None:
                return
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        sock.close()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            sockets = list(self._lingering)
            self._lingering.clear()
            for sock in sockets:
                try:
                    self._selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
        for sock in sockets:
            sock.close()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


class _Server(ThreadingMixIn, BaseWSGIServer):
    """Werkzeug's threaded server with a cap on connections and a watchdog on request heads."""

    multithread = True
    daemon_threads = True  # an open event stream must not keep the process alive at exit

    def __init__(
        self,
        host: str,
        port: int,
        app: Any,
        max_connections: int,
        max_per_address: int,
        head_deadline: float,
        keepalive_seconds: float,
    ) -> None:
        # Set before binding: a failed bind calls server_close, which uses them.
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.head_deadline = head_deadline
        self.keepalive_seconds = keepalive_seconds
        shortest = min(head_deadline, keepalive_seconds) if keepalive_seconds else head_deadline
        self.head_watch = _HeadWatch(min(HEAD_WATCH_TICK_SECONDS, shortest / 4))
        # Kept-alive connections waiting for their next request, and whether the server is stopping.
        self._parked: set[socket.socket] = set()
        self.draining = False
        # Step 1 at accept time, when the app is one whose pipeline we know.
        self.guard: Guard | None = None
        # The sockets holding a slot, each with the share it counts against
        # (None: a trusted proxy's). Released in shutdown_request, which every
        # path through socketserver calls exactly once per accepted connection
        # (at the end of its thread, or when starting the thread failed);
        # popping with a default makes a second call harmless anyway.
        self._holding: dict[socket.socket, Any] = {}
        self._per_share: dict[Any, int] = {}
        self._holding_lock = threading.Lock()
        self.lingering = _LingeringCloser()
        super().__init__(host, port, app, handler=_RequestHandler)
        self._pool = _ThreadPool(self.process_request_thread, f"mcp-auth-http:{self.server_address[1]}")

    @property
    def open_connections(self) -> int:
        with self._holding_lock:
            return len(self._holding)

    def offers_keep_alive(self) -> bool:
        """Whether an answer now may leave its connection open (see KEEPALIVE_ROOM_DIVISOR)."""
        if not self.keepalive_seconds:
            return False
        with self._holding_lock:
            return not self.draining and len(self._holding) <= self.max_connections // KEEPALIVE_ROOM_DIVISOR

    def park(self, connection: socket.socket) -> bool:
        """A kept-alive connection starts waiting for its next request; False if the server is stopping."""
        with self._holding_lock:
            if self.draining:
                return False
            self._parked.add(connection)
            return True

    def unpark(self, connection: socket.socket) -> bool:
        """Its next request has started (or not); False if the server closed it meanwhile."""
        with self._holding_lock:
            if connection not in self._parked:
                return False
            self._parked.discard(connection)
            return True

    def begin_drain(self) -> None:
        """Stop taking requests: close the listening socket and every connection waiting for a next request.

        Requests in flight go on; their answers close their connections.
        """
        with self._holding_lock:
            self.draining = True
            parked = list(self._parked)
            self._parked.clear()
        try:
            self.socket.close()  # a new client is refused by the kernel rather than left in the backlog
        except OSError:
            pass
        for connection in parked:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # its waiting read returns; its thread closes it
            except OSError:
                pass

    def process_request(self, request: Any, client_address: Any) -> None:
        # On the accepting thread, before anything is read from the socket.
        peer = parse_address(str(client_address[0])) if client_address else None
        share = None if peer is None else _share_of(peer)
        guard = self.guard
        if guard is not None and peer is not None:
            try:
                if guard.check_peer(peer):
                    share = None  # a trusted proxy speaks for many clients: held to the global cap only
            except IpNotAllowed as refusal:
                # Answered and closed by this thread, like a connection past the cap:
                # it never gets a thread, and nothing it sent is ever parsed.
                audit.denial(str(peer), refusal.step, refusal.error)
                self._refuse_at_accept(request, _raw_response(refusal))
                return
        with self._holding_lock:
            if len(self._holding) >= self.max_connections:
                refusal_bytes: bytes | None = _OVER_CAPACITY
            elif share is not None and self._per_share.get(share, 0) >= self.max_per_address:
                refusal_bytes = _OVER_SHARE
            else:
                refusal_bytes = None
                self._holding[request] = share
                if share is not None:
                    self._per_share[share] = self._per_share.get(share, 0) + 1
        if refusal_bytes is not None:
            self._refuse_at_accept(request, refusal_bytes)
            return
        # ThreadingMixIn's per-connection body (finish, handle errors, shut down), on a pooled thread.
        self._pool.submit(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._holding_lock:
                share = self._holding.pop(request, None)
                if share is not None:
                    left = self._per_share[share] - 1
                    if left:
                        self._per_share[share] = left
                    else:
                        del self._per_share[share]

    def _refuse_at_accept(self, request: socket.socket, response: bytes) -> None:
        # On the accepting thread, so nothing here may block: one non-blocking
        # send of a response that fits any empty send buffer.
        try:
            request.setblocking(False)
            try:
                # Whatever the client has sent already is read first (and dropped,
                # unparsed): closing a socket with unread data resets the
                # connection, which can destroy the response before the client reads it.
                request.recv(65536)
            except BlockingIOError:
                pass
            request.send(response)
        except OSError:
            self.shutdown_request(request)  # the client is gone, or sent more than it should
            return
        self.lingering.close_later(request)  # holds no slot: closed once the client has read the answer

    def log(self, type: str, message: str, *args: Any) -> None:
        # Werkzeug reports here what went wrong on a connection after the app was
        # done with it (a client that timed out while the server drained what it
        # sent, say): the client's doing, so a debug line, never a traceback on stderr.
        logger.debug("werkzeug %s: %s", type, message.splitlines()[0] if message else "")

    def server_close(self) -> None:
        self.head_watch.stop()
        self.lingering.stop()
        super().server_close()


class _BodyWithin:
    """`wsgi.input` as the built-in server hands it to the app: a read may time out.

    The first read arms the connection's deadline: the whole body (its
    Content-Length bytes, or a chunked body to its end) must arrive within
    `seconds` of it, however it trickles; a chunked body is read a buffer at a
    time, so the transport's own check between reads cannot see a trickle
    inside one read. The end of the body disarms it. At the deadline the
    watchdog shuts the connection down, and the read that was waiting raises
    `TimeoutError` (an OSError, as any unreadable body), so all the transport
    sees is "read at most N bytes; the read may fail". A request whose body is
    never read (a GET, a refused request) never arms it.
    """

    def __init__(
        self, raw: Any, watch: _HeadWatch, connection: socket.socket, seconds: float, length: int | None
    ) -> None:
        self._raw = raw
        self._watch = watch
        self._connection = connection
        self._seconds = seconds
        self._remaining = length  # None: unknown (chunked, or no Content-Length): read to the end
        self._armed = False
        self._late = length is None  # a chunked body's end is never a place to read the next request from

    @property
    def complete(self) -> bool:
        """The body's declared Content-Length was read in full (or there was none), in time: the
        connection is at the start of the next request. Never for a chunked body."""
        return self._remaining == 0 and not self._late

    def read(self, size: int | None = -1, /) -> bytes:
        return self._read(self._raw.read, size, to_the_end=size is None or size < 0)

    def read1(self, size: int | None = -1, /) -> bytes:
        return self._read(getattr(self._raw, "read1", self._raw.read), size)

    def readline(self, size: int | None = -1, /) -> bytes:
        return self._read(self._raw.readline, size)

    def _read(self, read: Any, size: int | None, to_the_end: bool = False) -> bytes:
        wanted = -1 if size is None or size < 0 else size
        if self._remaining is not None:
            wanted = self._remaining if wanted < 0 else min(wanted, self._remaining)
        if wanted == 0:
            return b""
        if not self._armed:
            self._armed = True
            self._watch.arm(self._connection, time.monotonic() + self._seconds)
        try:
            data: bytes = read(wanted)
        except (OSError, ValueError):
            if not self._end():
                raise self._timed_out() from None
            raise
        if not data or (to_the_end and self._remaining is None):  # the end, or the watchdog shut the connection
            if not self._end():
                raise self._timed_out()
        elif self._remaining is not None:
            self._remaining -= len(data)
            if self._remaining == 0:
                self._end()  # the whole body is here, even if the deadline passed as it arrived
        return data

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"the request body was not sent within {self._seconds:g} seconds")

    def _end(self) -> bool:
        """Disarm; False if the deadline had passed (the connection was shut down mid-body)."""
        if not self._armed:
            return True
        self._armed = False
        self._remaining = 0  # nothing more is read through this reader
        on_time = self._watch.disarm(self._connection)
        self._late = self._late or not on_time
        return on_time


class _Bounded:
    """The built-in server's own bounds around the app it serves: the app never sees them.

    The body reader times out at the body deadline, enforced by the server's
    watchdog on the connection (`werkzeug.socket`), and tells the response
    writer whether the body was read to its end (keep-alive needs that).
    Under another WSGI server (gunicorn) none of this applies: it has its own timeouts.
    """

    def __init__(self, app: Any, watch: _HeadWatch, body_deadline: float) -> None:
        self.app = app
        self._watch = watch
        self._body_deadline = body_deadline

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        connection = environ["werkzeug.socket"]
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        # ASCII digits only (str.isdigit accepts superscripts that int() refuses), and few enough for
        # int() (which refuses more than 4300 digits: a 500 here); the app judges the rest.
        chunked = bool(environ.get("wsgi.input_terminated"))
        known = (
            raw_length.isascii() and raw_length.isdigit() and len(raw_length) <= MAX_CONTENT_LENGTH_DIGITS
        ) and not chunked
        # Neither Content-Length nor chunked: no body (RFC 9112 section 6.3), and the next request follows.
        length = int(raw_length) if known else (0 if not raw_length and not chunked else None)
        environ["wsgi.input"] = _BodyWithin(environ["wsgi.input"], self._watch, connection, self._body_deadline, length)
        return self.app(environ, start_response)


def _not_ready(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Length", "0")])
    return []


class EmbeddedServer:
    """Bind now (so the port is known, and a busy port fails before anything else happens), serve later."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_address: int | None = None,
        head_deadline: float = HEAD_DEADLINE_SECONDS,
        body_deadline: float = BODY_DEADLINE_SECONDS,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        """`app` may be None until `.app` is set; requests before then get 503.

        `max_connections`, `head_deadline` and `body_deadline` (seconds) default to
        `MAX_CONNECTIONS`, `HEAD_DEADLINE_SECONDS` and `BODY_DEADLINE_SECONDS` (the
        transport's bound between reads); `max_connections_per_address` to
        1/`CONNECTION_SHARE_DIVISOR` of `max_connections` (at least 1); `keepalive`
        (the wait for a kept-alive connection's next request; 0: close after every
        answer) to `KEEPALIVE_SECONDS`. Tests set them small.
        When `app` is an `McpAuthApp`, its step 1 also runs at accept time.
        """
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections must be a whole number of at least 1, not {max_connections!r}")
        if max_connections_per_address is None:
            max_connections_per_address = max(1, max_connections // CONNECTION_SHARE_DIVISOR)
        if (
            isinstance(max_connections_per_address, bool)
            or not isinstance(max_connections_per_address, int)
            or not 1 <= max_connections_per_address <= max_connections
        ):
            raise ConfigError(
                "max_connections_per_address must be a whole number from 1 to max_connections, "
                f"not {max_connections_per_address!r}"
            )
        if isinstance(head_deadline, bool) or not isinstance(head_deadline, int | float) or not head_deadline > 0:
            raise ConfigError(f"head_deadline must be a positive number of seconds, not {head_deadline!r}")
        if isinstance(body_deadline, bool) or not isinstance(body_deadline, int | float) or not body_deadline > 0:
            raise ConfigError(f"body_deadline must be a positive number of seconds, not {body_deadline!r}")
        self._body_deadline = float(body_deadline)
        if (
            isinstance(keepalive, bool)
            or not isinstance(keepalive, int | float)
            or not 0 <= keepalive <= MAX_KEEPALIVE_SECONDS
        ):
            raise ConfigError(
                f"keepalive must be a number of seconds from 0 (no keep-alive) to {MAX_KEEPALIVE_SECONDS:g}, "
                f"not {keepalive!r}"
            )
        try:
            self._server = _Server(
                host,
                port,
                _not_ready,
                max_connections,
                max_connections_per_address,
                float(head_deadline),
                float(keepalive),
            )
        except SystemExit:  # Werkzeug printed why (port in use, address not available) and gave up
            raise ConfigError(f"cannot listen on {host} port {port}; choose another --port or --host") from None
        self._app: Any = None
        self._server.app = _Bounded(_not_ready, self._server.head_watch, self._body_deadline)
        if app is not None:
            self.app = app

    @property
    def app(self) -> Any:
        return self._app

    @app.setter
    def app(self, app: Any) -> None:
        # The guard first: no connection may be admitted by the new app's rules before they apply.
        self._server.guard = app.guard if isinstance(app, McpAuthApp) else None
        self._app = app
        self._server.app = _Bounded(app, self._server.head_watch, self._body_deadline)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def open_connections(self) -> int:
        """Connections holding a slot (and a thread) right now."""
        return self._server.open_connections

    def serve_forever(self) -> None:
        self._server.head_watch.start(f"mcp_auth head deadline, port {self.port}")
        try:
            self._server.serve_forever(poll_interval=0.1)
        finally:
            self._server.head_watch.stop()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.head_watch.stop()

    def drain(self, grace: float = SHUTDOWN_GRACE_SECONDS, interrupt: threading.Event | None = None) -> bool:
        """After `shutdown`: refuse new connections, close idle ones, and wait up to `grace` seconds
        for the requests in flight; True if all of them finished. Whatever is left is cut by `close`.

        The app's own long-lived things (event streams, WebSockets) are the
        caller's to end first (`McpAuthApp.begin_shutdown`); `interrupt` (a
        second signal, say) ends the wait early.
        """
        self._server.head_watch.start(f"mcp_auth head deadline, port {self.port}")  # drains stay bounded
        self._server.begin_drain()
        deadline = time.monotonic() + grace
        stop = interrupt or threading.Event()
        while self.open_connections and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            stop.wait(min(left, 0.05))
        return self.open_connections == 0

    def close(self) -> None:
        self._server.server_close()


def serve_until_signalled(embedded: EmbeddedServer, app: McpAuthApp, url: str, shutdown_timeout: float) -> int:
    """Serve until SIGINT or SIGTERM, then stop gracefully; the exit status (0).

    Stopping: no new connections; WebSockets close with 1001 and GET streams
    end; requests in flight get `shutdown_timeout` seconds to finish; a second
    signal stops the wait; then whatever is left is cut.
    """
    stop, hurry = threading.Event(), threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():
            hurry.set()  # a second signal: stop waiting for requests in flight
            return
        stop.set()
        threading.Thread(target=embedded.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(f"mcp_auth: listening on {url}", file=sys.stderr, flush=True)
    embedded.serve_forever()
    # Stopping: no new connections; WebSockets close with 1001 and GET streams end; requests
    # in flight get shutdown_timeout seconds to finish; then whatever is left is cut.
    print(
        f"mcp_auth: stopping; requests in flight get up to {shutdown_timeout:g} s",
        file=sys.stderr,
        flush=True,
    )
    app.begin_shutdown()
    finished = embedded.drain(shutdown_timeout, hurry)
    app.close()  # ends sessions, sockets and (behind --stdio) every child
    embedded.close()
    print(
        "mcp_auth: stopped" if finished else "mcp_auth: stopped; requests still in flight were cut off",
        file=sys.stderr,
        flush=True,
    )
    return 0
