"""HTTP/1.1 keep-alive for the built-in server: whether a connection takes another request, and the
response writer that says so on the wire.

Werkzeug's development server closes every connection after one response
(its `run_wsgi` always sends `Connection: close` and then reads whatever the
client still sends, which would eat a pipelined next request). A client then
pays a TCP handshake per MCP message. This module replaces `run_wsgi` with one
that keeps a connection open when, and only when, reusing it is safe:

- the request is HTTP/1.1 and neither side said `Connection: close`
  (HTTP/1.0 always closes: no `Connection: keep-alive` dialect is spoken);
- the request body was read to its declared `Content-Length` (or there was
  none): the next request starts exactly where this one ended. A chunked
  request body, or one the app did not read (a refusal before the body),
  closes the connection, after a bounded drain so the client still sees the answer;
- the response is delimited (`Content-Length`, chunked, or a status without a body);
- the server offers it: not shutting down, fewer than `MAX_REQUESTS_PER_CONNECTION`
  served on this connection, and room to spare (see `embedded._Server.offers_keep_alive`).

Between requests a kept-alive connection waits at most `keepalive_seconds` for
the first byte of the next request (the server's watchdog shuts it down after
that); from that byte on, the request-head deadline applies as it does to a
new connection. The connection keeps its slot (the connection cap and the
per-address share) and its thread while it waits: that is what bounds the
threads (see embedded's docstring).

What this module trusts: nothing the client sends; it only reads the
framing the request parser already validated (ambiguous framing is refused
before the app runs) and counts the bytes the app read.
"""

from __future__ import annotations

import email.utils
import selectors
import socket
import time
from typing import Any, Protocol

from werkzeug.serving import WSGIRequestHandler

# How long a kept-alive connection may wait for its next request. Clients reuse a
# connection within milliseconds when they have something to send; an idle one
# holds a thread, so the wait is short (nginx's upstream default is 60 s, gunicorn's 2 s).
KEEPALIVE_SECONDS = 5.0
# The longest it may be set to: past embedded.SOCKET_TIMEOUT_SECONDS (30 s) the
# socket's own timeout would end the wait anyway.
MAX_KEEPALIVE_SECONDS = 30.0
# Requests served on one connection before it is closed (the client reconnects):
# bounds how long one connection can keep its thread and its place in the share
# while it is busy, far above what a client does in a burst.
MAX_REQUESTS_PER_CONNECTION = 1000
# After an answer on a connection that closes, what the client still sends is
# read (and dropped) so that it sees the answer rather than a reset; 2 s is
# plenty for bytes already in flight, and a client trickling more cannot hold the thread.
DRAIN_DEADLINE_SECONDS = 2.0
# ... and at most this much of it, whatever the deadline.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
# The last second a Date header was formatted for, and its text; a tuple replaced whole, so
# threads never see half of an update.
_last_date: tuple[int, str] = (-1, "")
# Statuses whose responses never have a body (RFC 9110 section 6.4.1).
_NO_BODY_STATUSES = frozenset({204, 304})


class Watch(Protocol):
    """The server's deadline watchdog (`embedded._HeadWatch`)."""

    def arm(self, connection: socket.socket, deadline: float) -> None: ...

    def disarm(self, connection: socket.socket) -> bool: ...


class KeepAliveServer(Protocol):
    """What the handler needs of its server."""

    head_watch: Watch
    keepalive_seconds: float

    def offers_keep_alive(self) -> bool: ...

    def park(self, connection: socket.socket) -> bool: ...

    def unpark(self, connection: socket.socket) -> bool: ...


def connection_tokens(values: list[str] | None) -> set[str]:
    """The options of every Connection header, lower-cased ("close", "keep-alive", "upgrade")."""
    return {token.strip().lower() for value in values or () for token in value.split(",") if token.strip()}


def may_keep_alive(
    *,
    request_version: str,
    client_closes: bool,
    response_closes: bool,
    delimited: bool,
    body_complete: bool,
    server_offers: bool,
    served: int,
) -> bool:
    """Whether the connection may take another request after this response (pure: see the module docstring)."""
    return (
        request_version == "HTTP/1.1"
        and not client_closes
        and not response_closes
        and delimited
        and body_complete
        and server_offers
        and served + 1 < MAX_REQUESTS_PER_CONNECTION
    )


class KeepAliveHandler(WSGIRequestHandler):
    """Werkzeug's request handler with `run_wsgi` replaced by one that may keep the connection open."""

    server: Any  # a KeepAliveServer (and Werkzeug's BaseWSGIServer)
    # Requests answered on this connection so far.
    requests_served = 0
    # On a kept-alive connection a small write (the last chunk, a short answer) must not wait
    # for the client's delayed ACK of the previous one (Nagle: 40 ms per answer on Linux).
    disable_nagle_algorithm = True

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header's value, formatted once per second rather than once per response."""
        global _last_date
        whole = int(time.time() if timestamp is None else timestamp)
        cached = _last_date
        if cached[0] != whole:
            cached = _last_date = (whole, email.utils.formatdate(whole, usegmt=True))
        return cached[1]

    def wait_for_next_request(self) -> bool:
        """Wait, within the keep-alive bound, for a kept-alive connection's next request to start.

        True when its first byte is here (the head deadline then starts); False
        when the client closed, the bound passed, or the server is stopping.
        """
        connection = self.connection
        if not self.server.park(connection):
            return False  # the server is stopping: no next request
        self.server.head_watch.arm(connection, time.monotonic() + self.server.keepalive_seconds)
        try:
            started = bool(self.rfile.peek(1))  # type: ignore[attr-defined]
        except (OSError, ValueError):
            started = False
        on_time = self.server.head_watch.disarm(connection)
        still_ours = self.server.unpark(connection)
        return started and on_time and still_ours

    def run_wsgi(self) -> None:
        self.environ = environ = self.make_environ()
        client_closes = "close" in connection_tokens(self.headers.get_all("Connection"))
        status_sent: str | None = None
        started: list[Any] = []  # [status, headers] once start_response was called
        chunked = False
        keep_alive = False

        def write(data: bytes) -> None:
            nonlocal status_sent, chunked, keep_alive
            if not started:
                raise AssertionError("write() before start_response")
            if status_sent is None:
                status_sent, headers = started
                code_text, _, reason = status_sent.partition(" ")
                code = int(code_text)
                # The head is built here in one piece (http.server's send_response and send_header,
                # a call and an encode per line, cost more than the rest of the writing): the status
                # line, Server and Date as they write them, then the app's headers.
                lines = [
                    f"{self.protocol_version} {code} {reason}",
                    f"Server: {self.version_string()}",
                    f"Date: {self.date_time_string()}",
                ]
                names = set()
                for name, value in headers:
                    lines.append(f"{name}: {value}")
                    lowered = name.lower()
                    names.add(lowered)
                    if lowered == "connection" and value.lower() == "close":
                        self.close_connection = True  # as send_header: the app's close is kept
                bodiless = environ["REQUEST_METHOD"] == "HEAD" or code < 200 or code in _NO_BODY_STATUSES
                # Chunked only for HTTP/1.1 clients: an HTTP/1.0 one reads to the close.
                chunked = not bodiless and "content-length" not in names and self.request_version == "HTTP/1.1"
                if chunked:
                    lines.append("Transfer-Encoding: chunked")
                keep_alive = may_keep_alive(
                    request_version=self.request_version,
                    client_closes=client_closes,
                    response_closes=self.close_connection,
                    delimited=bodiless or chunked or "content-length" in names,
                    body_complete=bool(getattr(environ.get("wsgi.input"), "complete", False)),
                    server_offers=self.server.offers_keep_alive(),
                    served=self.requests_served,
                )
                if keep_alive:
                    lines.append(f"Keep-Alive: timeout={max(1, int(self.server.keepalive_seconds))}")
                else:
                    lines.append("Connection: close")
                    self.close_connection = True
                # The head goes out with the first piece of the body, in one write.
                # (HTTP/0.9 has no head at all.)
                lines.append("\r\n")
                head = b"" if self.request_version == "HTTP/0.9" else "\r\n".join(lines).encode("latin-1")
            else:
                head = b""
            if data and chunked:
                data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
            if head or data:
                self.wfile.write(head + data)
            self.wfile.flush()

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info:
                try:
                    if status_sent is not None:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif started:
                raise AssertionError("Headers already set")
            started[:] = [status, headers]
            return write

        try:
            body = self.server.app(environ, start_response)
            try:
                for data in body:
                    write(data)
                if status_sent is None:
                    write(b"")
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        except (ConnectionError, TimeoutError) as error:
            # The client went away, or a WebSocket took the connection over and ended it:
            # nothing more is read or written on it.
            self.close_connection = True
            self.requests_served += 1
            self.connection_dropped(error, environ)
            return
        except Exception as error:
            # The app answers its own errors (a bare 500); this is the server's last line.
            self.close_connection = True
            self.server.log("error", f"Error on request: {type(error).__name__}")
            if status_sent is None:
                try:
                    self.send_response(500, "Internal Server Error")
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.flush()
                except OSError:
                    pass
        else:
            # The body must have been read to its end for the next request to start where it
            # ended: checked again now, in case the app read more after the headers went out.
            if not (keep_alive and getattr(environ.get("wsgi.input"), "complete", False)):
                self.close_connection = True
        self.requests_served += 1
        if self.close_connection:
            self._drain()

    def _drain(self) -> None:
        """Read and drop what the client still sends, within DRAIN_DEADLINE_SECONDS, before the close."""
        connection = self.connection
        watch = self.server.head_watch
        watch.arm(connection, time.monotonic() + DRAIN_DEADLINE_SECONDS)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(connection, selectors.EVENT_READ)
                total = 0
                # A timeout of 0 tends to miss bytes a client is still sending.
                while total < DRAIN_MAX_BYTES and selector.select(timeout=0.01):
                    data = self.rfile.read1(65536)
                    if not data:
                        break
                    total += len(data)
        except (OSError, ValueError):
            pass  # the client is gone, or the watchdog ended the drain
        finally:
            watch.disarm(connection)
