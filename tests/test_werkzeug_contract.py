"""The parts of Werkzeug, http.server, socketserver and simple-websocket that mcp_auth relies on.

`mcp_auth.embedded` hardens Werkzeug's development server through hooks that
are not Werkzeug's public API, and `mcp_auth.websocket` lets simple-websocket
find the connection in the environ. setup.cfg pins both to the minor series
tested here. Each hook gets two checks: it still exists with the signature we
override or call (`inspect.signature`), and it still behaves as we rely on,
shown by a small real exchange over a socket against the library itself (not
against our subclasses), so an upgrade that changes the contract fails here,
by name, rather than somewhere in the hardening tests.
"""

from __future__ import annotations

import configparser
import http.client
import http.server
import inspect
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import simple_websocket
from werkzeug import serving

from mcp_auth import embedded
from mcp_auth.requesthead import RequestHeaders
from mcp_auth.websocket import WebSocketDone

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"
# Generous: a reply from a server in this process; only a broken contract waits this long.
PATIENCE_SECONDS = 10.0

_EMPTY = inspect.Parameter.empty
_POS = inspect.Parameter.POSITIONAL_OR_KEYWORD
_VAR = inspect.Parameter.VAR_POSITIONAL


def _shape(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Parameter names, kinds and defaults (annotations left out: they are strings that may be reworded)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


# --- the pins ----------------------------------------------------------------------------------


def _pins() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    requirements = [line.strip() for line in parser["options"]["install_requires"].splitlines() if line.strip()]
    return {line.split(">", 1)[0].split("=", 1)[0].split("<", 1)[0]: line for line in requirements}


@pytest.mark.parametrize("package", ["werkzeug", "simple-websocket"])
def test_the_installed_version_is_in_the_pinned_minor_series(package: str) -> None:
    requirement = _pins()[package]
    major, minor = (int(part) for part in version(package).split(".")[:2])
    # Pinned as ">=X.Y,<X.(Y+1)": exactly the series these tests ran against.
    assert requirement == f"{package}>={major}.{minor},<{major}.{minor + 1}", requirement


# --- the hooks exist, with the signatures we override or call -----------------------------------

SIGNATURES = [
    pytest.param(serving.WSGIRequestHandler.make_environ, [("self", _POS, _EMPTY)], id="make_environ"),
    pytest.param(
        http.server.BaseHTTPRequestHandler.handle_one_request, [("self", _POS, _EMPTY)], id="handle_one_request"
    ),
    pytest.param(http.server.BaseHTTPRequestHandler.parse_request, [("self", _POS, _EMPTY)], id="parse_request"),
    pytest.param(
        http.server.BaseHTTPRequestHandler.send_error,
        [("self", _POS, _EMPTY), ("code", _POS, _EMPTY), ("message", _POS, None), ("explain", _POS, None)],
        id="send_error",
    ),
    pytest.param(
        http.server.BaseHTTPRequestHandler.send_response,
        [("self", _POS, _EMPTY), ("code", _POS, _EMPTY), ("message", _POS, None)],
        id="send_response",
    ),
    pytest.param(
        http.server.BaseHTTPRequestHandler.send_header,
        [("self", _POS, _EMPTY), ("keyword", _POS, _EMPTY), ("value", _POS, _EMPTY)],
        id="send_header",
    ),
    pytest.param(http.server.BaseHTTPRequestHandler.end_headers, [("self", _POS, _EMPTY)], id="end_headers"),
    pytest.param(
        serving.WSGIRequestHandler.connection_dropped,
        [("self", _POS, _EMPTY), ("error", _POS, _EMPTY), ("environ", _POS, None)],
        id="connection_dropped",
    ),
    pytest.param(
        serving.WSGIRequestHandler.log_request,
        [("self", _POS, _EMPTY), ("code", _POS, "-"), ("size", _POS, "-")],
        id="log_request",
    ),
    pytest.param(
        serving.WSGIRequestHandler.log_error,
        [("self", _POS, _EMPTY), ("format", _POS, _EMPTY), ("args", _VAR, _EMPTY)],
        id="log_error",
    ),
    pytest.param(
        serving.BaseWSGIServer.log,
        [("self", _POS, _EMPTY), ("type", _POS, _EMPTY), ("message", _POS, _EMPTY), ("args", _VAR, _EMPTY)],
        id="server.log",
    ),
    pytest.param(
        serving.BaseWSGIServer.__init__,
        [
            ("self", _POS, _EMPTY),
            ("host", _POS, _EMPTY),
            ("port", _POS, _EMPTY),
            ("app", _POS, _EMPTY),
            ("handler", _POS, None),
            ("passthrough_errors", _POS, False),
            ("ssl_context", _POS, None),
            ("fd", _POS, None),
        ],
        id="BaseWSGIServer.__init__",
    ),
    pytest.param(
        serving.BaseWSGIServer.serve_forever,
        [("self", _POS, _EMPTY), ("poll_interval", _POS, 0.5)],
        id="serve_forever",
    ),
    pytest.param(
        socketserver.ThreadingMixIn.process_request,
        [("self", _POS, _EMPTY), ("request", _POS, _EMPTY), ("client_address", _POS, _EMPTY)],
        id="process_request",
    ),
    pytest.param(
        socketserver.ThreadingMixIn.process_request_thread,
        [("self", _POS, _EMPTY), ("request", _POS, _EMPTY), ("client_address", _POS, _EMPTY)],
        id="process_request_thread",
    ),
    pytest.param(
        socketserver.TCPServer.shutdown_request,
        [("self", _POS, _EMPTY), ("request", _POS, _EMPTY)],
        id="shutdown_request",
    ),
    pytest.param(socketserver.TCPServer.server_close, [("self", _POS, _EMPTY)], id="server_close"),
    pytest.param(socketserver.BaseServer.shutdown, [("self", _POS, _EMPTY)], id="shutdown"),
    pytest.param(
        simple_websocket.Server.__init__,
        [
            ("self", _POS, _EMPTY),
            ("environ", _POS, _EMPTY),
            ("subprotocols", _POS, None),
            ("receive_bytes", _POS, 4096),
            ("ping_interval", _POS, None),
            ("max_message_size", _POS, None),
            ("thread_class", _POS, None),
            ("event_class", _POS, None),
            ("selector_class", _POS, None),
        ],
        id="simple_websocket.Server",
    ),
    pytest.param(
        simple_websocket.Server.choose_subprotocol,
        [("self", _POS, _EMPTY), ("request", _POS, _EMPTY)],
        id="choose_subprotocol",
    ),
]


@pytest.mark.parametrize(("hook", "expected"), SIGNATURES)
def test_the_hook_has_the_signature_we_rely_on(hook: Callable[..., Any], expected: list[Any]) -> None:
    assert _shape(hook) == expected


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        pytest.param(embedded._RequestHandler.make_environ, serving.WSGIRequestHandler.make_environ, id="make_environ"),
        pytest.param(
            embedded._RequestHandler.handle_one_request,
            http.server.BaseHTTPRequestHandler.handle_one_request,
            id="handle_one_request",
        ),
        pytest.param(
            embedded._RequestHandler.parse_request, http.server.BaseHTTPRequestHandler.parse_request, id="parse_request"
        ),
        pytest.param(
            embedded._RequestHandler.send_error, http.server.BaseHTTPRequestHandler.send_error, id="send_error"
        ),
        pytest.param(
            embedded._RequestHandler.connection_dropped,
            serving.WSGIRequestHandler.connection_dropped,
            id="connection_dropped",
        ),
        pytest.param(embedded._RequestHandler.log_request, serving.WSGIRequestHandler.log_request, id="log_request"),
        pytest.param(embedded._RequestHandler.log_error, serving.WSGIRequestHandler.log_error, id="log_error"),
        pytest.param(
            embedded._Server.process_request, socketserver.ThreadingMixIn.process_request, id="process_request"
        ),
        pytest.param(embedded._Server.shutdown_request, socketserver.TCPServer.shutdown_request, id="shutdown_request"),
        pytest.param(embedded._Server.log, serving.BaseWSGIServer.log, id="server.log"),
        pytest.param(embedded._Server.server_close, socketserver.TCPServer.server_close, id="server_close"),
    ],
)
def test_our_overrides_keep_the_base_signature(ours: Callable[..., Any], theirs: Callable[..., Any]) -> None:
    assert [name for name, _, _ in _shape(ours)] == [name for name, _, _ in _shape(theirs)]


def test_the_handler_attributes_we_set_or_read_exist() -> None:
    # `timeout` is applied to the connection by StreamRequestHandler.setup; the
    # others are read or set by our overrides.
    assert socketserver.StreamRequestHandler.timeout is None  # the default we replace
    assert http.server.BaseHTTPRequestHandler.protocol_version == "HTTP/1.0"  # the default we replace
    assert hasattr(socketserver.ThreadingMixIn, "daemon_threads")
    assert serving.BaseWSGIServer.multithread is False  # we set it: Werkzeug's own threaded server does the same
    # Our make_environ reads every Host line the client sent.
    assert http.server.BaseHTTPRequestHandler.MessageClass is http.client.HTTPMessage
    assert callable(http.client.HTTPMessage.get_all)
    # run_wsgi's dropped-connection clause: WebSocketDone must be one of them.
    assert issubclass(WebSocketDone, serving.connection_dropped_errors)


# --- the hooks behave as we rely on: real exchanges with Werkzeug itself ----------------------------


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, name: str, value: Any = None) -> None:
        with self.lock:
            self.events.append((name, value))

    def named(self, name: str) -> list[Any]:
        with self.lock:
            return [value for event, value in self.events if event == name]


@contextmanager
def _werkzeug(app: Any, recorder: _Recorder) -> Iterator[int]:
    """Werkzeug's own threaded server (no mcp_auth subclass), recording the hooks we override."""

    class Handler(serving.WSGIRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 7.5

        def parse_request(self) -> bool:
            recorder.add("parse_request", self.raw_requestline)
            return super().parse_request()

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            recorder.add("send_error", (int(code), message))
            super().send_error(code, message, explain)

        def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
            recorder.add("connection_dropped", (error, environ))
            self.close_connection = True  # as ours does: no further request is read from it

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

        def log_error(self, format: str, *args: Any) -> None:
            pass

    class Server(socketserver.ThreadingMixIn, serving.BaseWSGIServer):
        multithread = True
        daemon_threads = True

        def process_request(self, request: Any, client_address: Any) -> None:
            recorder.add("process_request", threading.current_thread().name)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            recorder.add("shutdown_request", request)
            super().shutdown_request(request)

        def log(self, type: str, message: str, *args: Any) -> None:
            recorder.add("log", type)

    server = Server("127.0.0.1", 0, app, handler=Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="werkzeug-contract")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_SECONDS) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def _echo_environ(recorder: _Recorder) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        recorder.add("environ", dict(environ))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length if length else (-1 if environ.get("wsgi.input_terminated") else 0))
        recorder.add("body", body)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return app


def test_make_environ_carries_the_connection_the_input_and_the_absolute_form_host() -> None:
    recorder = _Recorder()
    with _werkzeug(_echo_environ(recorder), recorder) as port:
        answer = _exchange(
            port, b"POST http://elsewhere.test/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc"
        )
    assert answer.startswith(b"HTTP/1.1 200")
    (environ,) = recorder.named("environ")
    # simple-websocket and our _Bounded take the connection from here; the
    # handler's `timeout` has been applied to it.
    connection = environ["werkzeug.socket"]
    assert isinstance(connection, socket.socket)
    assert connection.gettimeout() == 7.5
    assert environ["PATH_INFO"] == "/mcp"
    # Werkzeug puts the absolute-form target's authority in HTTP_HOST: our make_environ undoes that.
    assert environ["HTTP_HOST"] == "elsewhere.test"
    assert not environ.get("wsgi.input_terminated")
    assert recorder.named("body") == [b"abc"]
    # The head is parsed once, from the request line on.
    assert recorder.named("parse_request") == [b"POST http://elsewhere.test/mcp HTTP/1.1\r\n"]


def test_a_chunked_body_is_dechunked_and_marked_terminated() -> None:
    recorder = _Recorder()
    with _werkzeug(_echo_environ(recorder), recorder) as port:
        _exchange(
            port,
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
    (environ,) = recorder.named("environ")
    assert environ["wsgi.input_terminated"] is True
    assert isinstance(environ["wsgi.input"], serving.DechunkedInput)
    assert recorder.named("body") == [b"abcde"]


def test_the_head_is_read_with_readline_alone() -> None:
    """Our head bound (`_BoundedHead`) offers only `readline`: http.server must read the head with nothing else."""
    recorder = _Recorder()

    class ReadlineOnly:
        def __init__(self, raw: Any) -> None:
            self.raw = raw

        def readline(self, size: int = -1) -> bytes:
            line: bytes = self.raw.readline(size)
            recorder.add("readline", size)
            return line

    class Handler(serving.WSGIRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_one_request(self) -> None:
            real = self.rfile
            self.rfile = ReadlineOnly(real)  # type: ignore[assignment]
            try:
                super().handle_one_request()
            finally:
                self.rfile = real

        def parse_request(self) -> bool:
            try:
                return super().parse_request()
            finally:
                recorder.add("parsed", isinstance(self.rfile, ReadlineOnly))
                self.rfile = self.rfile.raw if isinstance(self.rfile, ReadlineOnly) else self.rfile

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    server = serving.BaseWSGIServer("127.0.0.1", 0, _echo_environ(recorder), handler=Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        answer = _exchange(
            server.server_address[1], b"POST /x HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nContent-Length: 2\r\n\r\nhi"
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert answer.startswith(b"HTTP/1.1 200")
    assert recorder.named("parsed") == [True]  # parse_request reads the headers through the same reader
    assert len(recorder.named("readline")) == 5  # request line, three headers, the blank line
    assert recorder.named("body") == [b"hi"]  # the body comes from the real reader, given back in parse_request


@pytest.mark.parametrize(
    ("data", "status", "message_starts"),
    [
        pytest.param(b"GET /mcp HTTP/1.1 extra\r\n\r\n", HTTPStatus.BAD_REQUEST, "Bad request", id="bad-line"),
        pytest.param(b"GET /mcp HTTP/a.b\r\n\r\n", HTTPStatus.BAD_REQUEST, "Bad request version", id="bad-version"),
        pytest.param(
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", HTTPStatus.REQUEST_URI_TOO_LONG, "", id="line-too-long"
        ),
        pytest.param(
            b"GET /mcp HTTP/2.0\r\n\r\n",
            HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
            "Invalid HTTP version",
            id="http-2",
        ),
    ],
)
def test_http_server_refuses_through_send_error(data: bytes, status: HTTPStatus, message_starts: str) -> None:
    """Our send_error turns these into JSON refusals (a 5xx into 400): http.server must go through it."""
    recorder = _Recorder()
    with _werkzeug(_echo_environ(recorder), recorder) as port:
        _exchange(port, data)
    ((code, message),) = recorder.named("send_error")
    assert code == status
    assert (message or "").startswith(message_starts)
    assert recorder.named("environ") == []  # the app never ran
    assert set(embedded._ERROR_NAMES) >= {HTTPStatus.BAD_REQUEST, HTTPStatus.REQUEST_URI_TOO_LONG}


def test_http_server_reads_requests_while_close_connection_is_false() -> None:
    """`keepalive.KeepAliveHandler` replaces Werkzeug's run_wsgi (which always closes) and relies on
    http.server for the rest: `handle` calls `handle_one_request` again while `close_connection` is
    False, `send_header("Connection", "close")` sets it, `parse_request` clears it for an HTTP/1.1
    request, and the connection's reader can `peek` (the wait for a kept-alive connection's next request)."""
    recorder = _Recorder()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            recorder.add("kept", self.close_connection is False)
            recorder.add("peek", hasattr(self.rfile, "peek"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            if self.path == "/last":
                self.send_header("Connection", "close")
                recorder.add("closing", self.close_connection)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        answer = _exchange(
            server.server_address[1],
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /last HTTP/1.1\r\nHost: a\r\n\r\n",
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert answer.count(b"HTTP/1.1 200") == 3  # three requests on one connection, then the close
    assert recorder.named("kept") == [True, True, True]
    assert recorder.named("peek") == [True, True, True]
    assert recorder.named("closing") == [True]


def test_a_connection_error_from_the_app_is_a_dropped_connection_and_nothing_is_written() -> None:
    """The WebSocket hand-off: after the socket is over the app raises WebSocketDone (a ConnectionError);
    run_wsgi must hand it to connection_dropped with the environ and write no response."""
    recorder = _Recorder()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise WebSocketDone("websocket closed")

    with _werkzeug(app, recorder) as port:
        answer = _exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert answer == b""
    ((error, environ),) = recorder.named("connection_dropped")
    assert isinstance(error, WebSocketDone)
    assert environ is not None and "werkzeug.socket" in environ
    assert recorder.named("log") == []  # not reported as an error either


def test_process_request_runs_on_the_accepting_thread_and_shutdown_request_once_per_connection() -> None:
    recorder = _Recorder()
    with _werkzeug(_echo_environ(recorder), recorder) as port:
        for _ in range(3):
            _exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_SECONDS):
            pass  # a connection that sends nothing and closes
        _exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")  # served after the silent one has ended
    assert recorder.named("process_request") == ["werkzeug-contract"] * 5
    assert len(recorder.named("shutdown_request")) == 5
    assert len(set(map(id, recorder.named("shutdown_request")))) == 5


def test_a_busy_port_is_system_exit_after_server_close(capsys: pytest.CaptureFixture[str]) -> None:
    """EmbeddedServer turns Werkzeug's SystemExit into a ConfigError, and sets what server_close uses first."""
    closed: list[bool] = []

    class Server(serving.BaseWSGIServer):
        def server_close(self) -> None:
            closed.append(True)
            super().server_close()

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SystemExit):
            Server("127.0.0.1", busy.getsockname()[1], _echo_environ(_Recorder()))
    assert closed == [True]
    capsys.readouterr()  # Werkzeug printed why


def test_simple_websocket_takes_the_connection_from_werkzeug_socket() -> None:
    """How simple-websocket finds the socket under the built-in server: `environ['werkzeug.socket']`."""
    left, right = socket.socketpair()
    try:
        environ = {
            "werkzeug.socket": left,
            "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
            "HTTP_SEC_WEBSOCKET_VERSION": "13",
            "HTTP_CONNECTION": "Upgrade",
            "HTTP_UPGRADE": "websocket",
            "HTTP_HOST": "127.0.0.1",
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/mcp",
            "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        ws = simple_websocket.Server.accept(environ)
        try:
            assert ws.sock is left
            right.settimeout(PATIENCE_SECONDS)
            assert right.recv(4096).startswith(b"HTTP/1.1 101")
        finally:
            ws.close()
    finally:
        left.close()
        right.close()


# --- our make_environ for plain targets builds what Werkzeug's builds --------------------------


def _handler_for(server: Any, target: str, fields: list[tuple[str, str]]) -> Any:
    """A request handler in the state parse_request leaves it in, on a real (unstarted) server."""
    handler = embedded._RequestHandler.__new__(embedded._RequestHandler)
    left, right = socket.socketpair()
    handler.server, handler.connection, handler.client_address = server, left, ("127.0.0.1", 50123)
    handler.rfile, handler.wfile = left.makefile("rb"), left.makefile("wb")
    handler.command, handler.path, handler.request_version = "POST", target, "HTTP/1.1"
    handler.headers = RequestHeaders(fields)
    handler._sockets = (left, right)
    return handler


PLAIN_FIELDS = [
    ("Host", "127.0.0.1:8765"),
    ("Content-Type", "application/json"),
    ("Content-Length", "12"),
    ("Accept", "application/json, text/event-stream"),
    ("X-Forwarded-For", "192.0.2.1"),
    ("x-forwarded-for", "192.0.2.2"),
    ("X_Forwarded_For", "198.51.100.9"),
    ("Authorization", "Bearer abc"),
]


@pytest.mark.parametrize(
    ("target", "fields"),
    [
        ("/mcp", PLAIN_FIELDS),
        ("/mcp?a=b&c=%20d", PLAIN_FIELDS),  # a percent-escape: Werkzeug's own path
        ("/mcp/?x=1?y=2", PLAIN_FIELDS),
        ("/m%63p", PLAIN_FIELDS),
        ("/mcp#fragment", PLAIN_FIELDS),
        ("/mcp", [*PLAIN_FIELDS, ("Transfer-Encoding", "chunked")]),
        ("/caf\xe9", PLAIN_FIELDS),
        ("http://127.0.0.1/mcp", PLAIN_FIELDS),
        ("/mcp", [("Content-Type", "a/b"), ("content-type", "c/d"), ("Host", "a"), ("host", "b")]),
    ],
)
def test_our_plain_target_environ_is_werkzeugs(target: str, fields: list[tuple[str, str]]) -> None:
    with embedded.EmbeddedServer(None, "127.0.0.1", 0)._server as server:
        handler = _handler_for(server, target, fields)
        try:
            ours = embedded._RequestHandler.make_environ(handler)
            handler.environ = None  # Werkzeug's address_string reads a previous request's environ
            theirs = serving.WSGIRequestHandler.make_environ(handler)
        finally:
            for sock in handler._sockets:
                sock.close()
    for environ in (ours, theirs):
        environ["wsgi.input"] = type(environ["wsgi.input"])  # different objects of the same kind
        environ.pop("HTTP_HOST", None)  # ours keeps the Host the client sent (checked elsewhere)
    assert ours == theirs
    assert embedded._RequestHandler._is_plain_target(handler) == (target in ("/mcp", "/mcp/?x=1?y=2"))
