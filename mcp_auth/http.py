"""The Streamable HTTP transport (MCP 2025-11-25) at the MCP endpoint: step 6 and the hand-off to dispatch.

The transport only sees requests that passed steps 1-5 (it receives their
`Admission`). It enforces the transport rules (method, Content-Type, Accept,
body size, MCP-Protocol-Version, session id), then hands one JSON-RPC message
to `McpServer.dispatch` together with the principal, so the dispatcher's
second lock sees exactly who is calling.

A request's answer is JSON unless its handler sends something first
(progress, a log message): then the response becomes an SSE stream, written
as events happen through the WSGI `write` callable, and the last event carries
the result. Sessions are bound to the principal that initialized them.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .guard import Admission
from .jsonrpc import (
    UNSUPPORTED_PROTOCOL_VERSION,
    ErrorResponse,
    JsonRpcError,
    Notification,
    Request,
    Response,
    dumps,
    parse_message,
)
from .refusals import (
    BadRequest,
    Conflict,
    InsufficientScope,
    MethodNotAllowed,
    NotAcceptable,
    PayloadTooLarge,
    ServiceUnavailable,
    SessionNotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from .server import SUPPORTED_PROTOCOL_VERSIONS, Call, McpServer, PrincipalRevoked, ScopeDenied
from .sessions import Session, SessionStore

SESSION_HEADER = "Mcp-Session-Id"
# Open GET streams each hold a server thread for their lifetime; past this
# many a new one is refused with 503 rather than starving request threads.
MAX_GET_STREAMS = 64
# A comment line this often keeps proxies from timing out an idle stream and
# lets the server notice a client that went away, or a token that was revoked.
KEEPALIVE_SECONDS = 15.0
# Content-Length values longer than this many digits are nonsense, not big bodies.
MAX_CONTENT_LENGTH_DIGITS = 19

StartResponse = Callable[..., Callable[[bytes], Any]]

_SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]


def _media_types(header: str | None) -> set[str]:
    """Media types in an Accept or Content-Type header, lowercased, without parameters; q=0 entries dropped."""
    found = set()
    for part in (header or "").split(","):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        if not media:
            continue
        if any(p.strip().replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params.split(";")):
            continue
        found.add(media)
    return found


def _accepts(accepted: set[str], media_type: str) -> bool:
    major = media_type.split("/", 1)[0]
    return bool(accepted & {media_type, f"{major}/*", "*/*"})


def sse_event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + dumps(message) + b"\n\n"


class _LazyEventStream:
    """A Channel that turns the response into SSE on the first message sent before the result."""

    def __init__(self, start_response: StartResponse, headers: list[tuple[str, str]]) -> None:
        self._start_response = start_response
        self._headers = headers
        self._write: Callable[[bytes], Any] | None = None
        self._lock = threading.Lock()
        self.client_gone = False

    @property
    def started(self) -> bool:
        return self._write is not None

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._write is None:
                self._write = self._start_response("200 OK", _SSE_HEADERS + self._headers)
            if self.client_gone:
                return
            try:
                self._write(sse_event(message))
            except OSError:
                # The client went away mid-call; the handler finishes, its output is dropped.
                self.client_gone = True


class _SessionChannel:
    """A Channel for notifications without a request stream: they go to the session's GET stream."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def send(self, message: dict[str, Any]) -> None:
        self._session.push(message)


class HttpTransport:
    """POST, GET and DELETE on the MCP endpoint for admitted requests."""

    def __init__(
        self,
        server: McpServer,
        sessions: SessionStore,
        principal_is_current: Callable[..., bool],
        max_body_bytes: int,
        shutdown: threading.Event,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.keepalive_seconds = keepalive_seconds
        self.server = server
        self.sessions = sessions
        self.principal_is_current = principal_is_current
        self.max_body_bytes = max_body_bytes
        self.shutdown = shutdown
        self._get_streams = threading.BoundedSemaphore(MAX_GET_STREAMS)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse, admission: Admission) -> Any:
        method = environ.get("REQUEST_METHOD", "")
        self._check_protocol_version(environ)
        if method == "POST":
            return self._post(environ, start_response, admission)
        if method == "GET":
            return self._get(environ, start_response, admission)
        if method == "DELETE":
            return self._delete(environ, start_response, admission)
        raise MethodNotAllowed(
            f"{method} is not supported on the MCP endpoint; use POST, GET or DELETE",
            headers=[("Allow", "GET, POST, DELETE")],
        )

    # --- step 6 checks --------------------------------------------------------

    @staticmethod
    def _check_protocol_version(environ: dict[str, Any]) -> None:
        version = environ.get("HTTP_MCP_PROTOCOL_VERSION")
        if version is not None and version.strip() not in SUPPORTED_PROTOCOL_VERSIONS:
            raise BadRequest(
                f"Unsupported MCP-Protocol-Version; this server speaks {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}",
                code=UNSUPPORTED_PROTOCOL_VERSION,
                data={"supported": list(SUPPORTED_PROTOCOL_VERSIONS)},
            )

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        stream = environ["wsgi.input"]
        if raw_length:
            if not raw_length.isdigit() or len(raw_length) > MAX_CONTENT_LENGTH_DIGITS:
                raise BadRequest("Content-Length is not a valid number")
            length = int(raw_length)
            if length > self.max_body_bytes:
                raise PayloadTooLarge(f"The request body is over the limit of {self.max_body_bytes} bytes")
            return self._read_exactly(stream, length)
        if environ.get("wsgi.input_terminated"):
            body = self._read_exactly(stream, self.max_body_bytes + 1)
            if len(body) > self.max_body_bytes:
                raise PayloadTooLarge(f"The request body is over the limit of {self.max_body_bytes} bytes")
            return body
        return b""

    @staticmethod
    def _read_exactly(stream: Any, length: int) -> bytes:
        chunks = []
        remaining = length
        while remaining > 0:
            chunk = stream.read(min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _session(self, environ: dict[str, Any], admission: Admission) -> Session:
        session_id = environ.get("HTTP_MCP_SESSION_ID")
        if not session_id:
            raise BadRequest(f"The {SESSION_HEADER} header is required: send initialize first and reuse its session id")
        session = self.sessions.get(session_id.strip(), admission.principal)
        if session is None:
            raise SessionNotFound()
        return session

    def _call(self, session: Session, admission: Admission, channel: Any) -> Call:
        return Call(session, admission.principal, channel, str(admission.client_address), self.principal_is_current)

    # --- POST: one JSON-RPC message -------------------------------------------------

    def _post(self, environ: dict[str, Any], start_response: StartResponse, admission: Admission) -> Any:
        if "application/json" not in _media_types(environ.get("CONTENT_TYPE")):
            raise UnsupportedMediaType("Content-Type must be application/json")
        accepted = _media_types(environ.get("HTTP_ACCEPT"))
        if not (_accepts(accepted, "application/json") and _accepts(accepted, "text/event-stream")):
            raise NotAcceptable("The Accept header must list both application/json and text/event-stream")
        body = self._read_body(environ)
        try:
            message = parse_message(body)
        except JsonRpcError as exc:
            raise BadRequest.from_jsonrpc(exc) from None

        if isinstance(message, Request) and message.method == "initialize":
            return self._initialize(message, start_response, admission)

        session = self._session(environ, admission)
        if isinstance(message, Notification):
            self.server.handle_notification(message, self._call(session, admission, _SessionChannel(session)))
            return self._accepted(start_response)
        if isinstance(message, (Response, ErrorResponse)):
            # The client's answer to a sampling/elicitation/roots request: wake the waiting handler.
            session.deliver(message)
            return self._accepted(start_response)
        return self._request(message, session, start_response, admission)

    @staticmethod
    def _accepted(start_response: StartResponse) -> list[bytes]:
        start_response("202 Accepted", [("Content-Length", "0")])
        return []

    def _initialize(self, request: Request, start_response: StartResponse, admission: Admission) -> Any:
        session = self.sessions.create(admission.principal)
        if session is None:
            raise ServiceUnavailable("Too many open sessions; try again later", headers=[("Retry-After", "60")])
        assert session.session_id is not None
        headers = [(SESSION_HEADER, session.session_id)]
        try:
            return self._request(request, session, start_response, admission, headers)
        finally:
            if session.protocol_version is None:  # initialize failed: no half-made session stays behind
                self.sessions.delete(session.session_id, admission.principal)

    def _request(
        self,
        request: Request,
        session: Session,
        start_response: StartResponse,
        admission: Admission,
        headers: list[tuple[str, str]] | None = None,
    ) -> Any:
        headers = headers or []
        stream = _LazyEventStream(start_response, headers)
        try:
            reply: Response | ErrorResponse = Response(request.id, self.server.dispatch(request, self._call(session, admission, stream)))
        except JsonRpcError as exc:
            reply = exc.to_message()
        except ScopeDenied as exc:
            if stream.started:
                reply = ErrorResponse(request.id, -32003, exc.message)
            else:
                raise InsufficientScope(exc.message, request.id) from None
        except PrincipalRevoked:
            if session.session_id:
                self.sessions.delete(session.session_id, admission.principal)
            raise Unauthorized("revoked") from None
        body = dumps(reply)
        if stream.started:
            stream.send(reply.to_dict())
            return []
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
        return [body]

    # --- GET: the session's server-to-client stream ---------------------------------

    def _get(self, environ: dict[str, Any], start_response: StartResponse, admission: Admission) -> Any:
        if not _accepts(_media_types(environ.get("HTTP_ACCEPT")), "text/event-stream"):
            raise NotAcceptable("GET on the MCP endpoint opens an event stream: send Accept: text/event-stream")
        session = self._session(environ, admission)
        with session.lock:
            if session.stream_open:
                raise Conflict("This session already has an open GET stream")
            if not self._get_streams.acquire(blocking=False):
                raise ServiceUnavailable("Too many open event streams; try again later", headers=[("Retry-After", "30")])
            session.stream_open = True
        start_response("200 OK", list(_SSE_HEADERS))
        return self._stream_events(session, admission)

    def _stream_events(self, session: Session, admission: Admission) -> Iterator[bytes]:
        try:
            yield b": stream open\n\n"
            while not (session.closed.is_set() or self.shutdown.is_set()):
                try:
                    message = session.outbox.get(timeout=self.keepalive_seconds)
                except queue.Empty:
                    message = None
                # The second lock on long-lived streams: a revoked token's stream ends
                # before it is sent anything more, and at the latest at the next keepalive.
                if not self.principal_is_current(admission.principal):
                    return
                if message is None:
                    session.touch()
                    yield b": keepalive\n\n"
                elif message and not session.closed.is_set():
                    yield sse_event(message)
        finally:
            with session.lock:
                session.stream_open = False
            self._get_streams.release()

    # --- DELETE: end the session -------------------------------------------------------

    def _delete(self, environ: dict[str, Any], start_response: StartResponse, admission: Admission) -> Any:
        session = self._session(environ, admission)
        assert session.session_id is not None
        self.sessions.delete(session.session_id, admission.principal)
        start_response("204 No Content", [])
        return []


def json_response(start_response: StartResponse, status: str, payload: dict[str, Any]) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
