"""The built-in HTTP server: Werkzeug's threaded WSGI server with mcp_auth's limits.

A thread per connection, pure Python, so it runs the same on Linux, macOS and
Windows. Werkzeug closes each connection after one response. What this module
adds is bounded patience: a client that stops sending headers or a body is
dropped after `SOCKET_TIMEOUT_SECONDS` instead of pinning a thread forever,
and per-request access logs are left to the audit log.
"""

from __future__ import annotations

from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .errors import ConfigError
from .websocket import WebSocketDone

# How long a connection may sit without sending or accepting a byte: long
# enough for a slow network, short enough that a slowloris client cannot hold
# threads. Open event streams are unaffected: they write a keepalive every 15 s.
SOCKET_TIMEOUT_SECONDS = 30.0


class _RequestHandler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT_SECONDS
    # http.server's own refusals (unparsable request lines, oversized headers)
    # answer in JSON like the app's, not HTML.
    error_content_type = "application/json"
    error_message_format = '{"error": "bad_request", "message": "%(message)s: %(explain)s"}'

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


def _not_ready(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Length", "0")])
    return []


class EmbeddedServer:
    """Bind now (so the port is known, and a busy port fails before anything else happens), serve later."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        """`app` may be None until `.app` is set; requests before then get 503."""
        try:
            self._server: BaseWSGIServer = make_server(
                host, port, app or _not_ready, threaded=True, request_handler=_RequestHandler
            )
        except SystemExit:  # Werkzeug printed why (port in use, address not available) and gave up
            raise ConfigError(f"cannot listen on {host} port {port}; choose another --port or --host") from None
        self._server.daemon_threads = True  # type: ignore[attr-defined]  # a ThreadedWSGIServer

    @property
    def app(self) -> Any:
        return self._server.app

    @app.setter
    def app(self, app: Any) -> None:
        self._server.app = app

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.1)

    def shutdown(self) -> None:
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()
