"""The built-in HTTP server: Werkzeug's threaded WSGI server with mcp_auth's limits.

A thread per connection (pooled: reused, not started anew each time), pure
Python, so it runs the same on Linux, macOS and Windows. Werkzeug closes each
connection after one response. What this module adds is bounded patience and
bounded concurrency, all of it before the app has authenticated anyone, so it
trusts nothing about the peer:

- at most `MAX_CONNECTIONS` connections hold a thread; past that a new
  connection is answered 503 by the accepting thread and closed at once;
- a request head (request line and headers) must arrive within
  `HEAD_DEADLINE_SECONDS`, however it is trickled, or the connection is shut
  down; one watchdog thread per server enforces that for every connection;
- a connection that stops sending or accepting bytes is dropped after
  `SOCKET_TIMEOUT_SECONDS`.

Per-request access logs are left to the audit log.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

from .errors import ConfigError
from .http import DEADLINE_ENVIRON_KEY
from .refusals import Refusal
from .websocket import WebSocketDone

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


class _TooManyConnections(Refusal):
    """Past the connection cap, before any request is read (the body is a refusal's, JSON-RPC with no id)."""

    status, reason_phrase, error, step = 503, "Service Unavailable", "unavailable", "connection"
    ws_close_code = 1013  # try again later


def _raw_response(refusal: Refusal) -> bytes:
    """The refusal as the bytes of a complete HTTP/1.1 response that closes the connection."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body = b"".join(refusal({"REQUEST_METHOD": "GET"}, lambda status, headers: started.append((status, headers))))
    status, headers = started[0]
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# Built once: the accepting thread sends it without parsing anything.
_OVER_CAPACITY = _raw_response(
    _TooManyConnections(
        "Too many open connections; try again later",
        headers=[("Retry-After", str(OVER_CAPACITY_RETRY_AFTER_SECONDS))],
    )
)


class _HeadWatch:
    """One thread per server that shuts down connections whose request head is overdue.

    Handlers arm a deadline before reading a request line and disarm it as soon
    as the head is parsed. Shutting a socket down (rather than closing it) makes
    the handler's blocked read return, so the handler ends the connection on
    its own thread. Arming, disarming and enforcing happen under one lock: once
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


class _RequestHandler(WSGIRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_SECONDS
    # As Werkzeug's make_server sets for threaded servers: chunked responses
    # (event streams) need HTTP/1.1.
    protocol_version = "HTTP/1.1"
    # http.server's own refusals (unparsable request lines, oversized headers)
    # answer in JSON like the app's, not HTML.
    error_content_type = "application/json"
    error_message_format = '{"error": "bad_request", "message": "%(message)s: %(explain)s"}'

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        # The app may bound how long this connection may take from here on
        # (reading a body, draining after the answer); None lifts the bound.
        environ[DEADLINE_ENVIRON_KEY] = self._set_deadline
        return environ

    def _set_deadline(self, seconds: float | None) -> None:
        if seconds is None:
            self.server.head_watch.disarm(self.connection)
        else:
            self.server.head_watch.arm(self.connection, time.monotonic() + seconds)

    def handle_one_request(self) -> None:
        # Armed before the request line is read, so the deadline also covers a
        # client that connects and sends nothing, and any later request read
        # from the same connection.
        self.server.head_watch.arm(self.connection, time.monotonic() + self.server.head_deadline)
        try:
            super().handle_one_request()
        finally:
            self.server.head_watch.disarm(self.connection)  # if the head never got as far as parse_request

    def parse_request(self) -> bool:
        try:
            parsed = super().parse_request()
        finally:
            on_time = self.server.head_watch.disarm(self.connection)
        if not on_time:
            # The watchdog shut the connection mid-head; what was read ends at
            # that EOF, so it is a truncated head that must not reach the app.
            self.close_connection = True
            return False
        return parsed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Everything http.server refuses before the app runs is the client's
        # doing (a request line it cannot parse, HTTP/2.0+ on an HTTP/1.1
        # port): a 4xx, never a 5xx.
        if code >= 500:
            code, message = 400, message or "Bad Request"
        super().send_error(code, message, explain)

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        # A WebSocket took this connection over and has ended it: do not read
        # another request from it.
        if isinstance(error, WebSocketDone):
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


class _Server(ThreadingMixIn, BaseWSGIServer):
    """Werkzeug's threaded server with a cap on connections and a watchdog on request heads."""

    multithread = True
    daemon_threads = True  # an open event stream must not keep the process alive at exit

    def __init__(self, host: str, port: int, app: Any, max_connections: int, head_deadline: float) -> None:
        # Set before binding: a failed bind calls server_close, which uses them.
        self.max_connections = max_connections
        self.head_deadline = head_deadline
        self.head_watch = _HeadWatch(min(HEAD_WATCH_TICK_SECONDS, head_deadline / 4))
        # The sockets holding a slot. Released in shutdown_request, which every
        # path through socketserver calls exactly once per accepted connection
        # (at the end of its thread, or when starting the thread failed);
        # discarding from a set makes a second call harmless anyway.
        self._holding: set[socket.socket] = set()
        self._holding_lock = threading.Lock()
        super().__init__(host, port, app, handler=_RequestHandler)
        self._pool = _ThreadPool(self.process_request_thread, f"mcp-auth-http:{self.server_address[1]}")

    @property
    def open_connections(self) -> int:
        with self._holding_lock:
            return len(self._holding)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._holding_lock:
            admitted = len(self._holding) < self.max_connections
            if admitted:
                self._holding.add(request)
        if not admitted:
            self._refuse_over_capacity(request)
            return
        # ThreadingMixIn's per-connection body (finish, handle errors, shut down), on a pooled thread.
        self._pool.submit(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._holding_lock:
                self._holding.discard(request)

    def _refuse_over_capacity(self, request: socket.socket) -> None:
        # On the accepting thread, so nothing here may block: one non-blocking
        # send of a response that fits any empty send buffer.
        try:
            request.setblocking(False)
            try:
                # Whatever the client has sent already is read first: closing a
                # socket with unread data resets the connection, which can
                # destroy the response before the client reads it.
                request.recv(65536)
            except BlockingIOError:
                pass
            request.send(_OVER_CAPACITY)
        except OSError:
            pass  # the client is gone, or sent more than it should: it is closed either way
        finally:
            self.shutdown_request(request)

    def log(self, type: str, message: str, *args: Any) -> None:
        # Werkzeug reports here what went wrong on a connection after the app was
        # done with it (a client that timed out while the server drained what it
        # sent, say): the client's doing, so a debug line, never a traceback on stderr.
        logger.debug("werkzeug %s: %s", type, message.splitlines()[0] if message else "")

    def server_close(self) -> None:
        self.head_watch.stop()
        super().server_close()


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
        head_deadline: float = HEAD_DEADLINE_SECONDS,
    ) -> None:
        """`app` may be None until `.app` is set; requests before then get 503.

        `max_connections` and `head_deadline` (seconds) default to `MAX_CONNECTIONS`
        and `HEAD_DEADLINE_SECONDS`; tests set them small.
        """
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections must be a whole number of at least 1, not {max_connections!r}")
        if isinstance(head_deadline, bool) or not isinstance(head_deadline, int | float) or not head_deadline > 0:
            raise ConfigError(f"head_deadline must be a positive number of seconds, not {head_deadline!r}")
        try:
            self._server = _Server(host, port, app or _not_ready, max_connections, float(head_deadline))
        except SystemExit:  # Werkzeug printed why (port in use, address not available) and gave up
            raise ConfigError(f"cannot listen on {host} port {port}; choose another --port or --host") from None

    @property
    def app(self) -> Any:
        return self._server.app

    @app.setter
    def app(self, app: Any) -> None:
        self._server.app = app

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

    def close(self) -> None:
        self._server.server_close()
