"""The Streamable HTTP transport at the MCP endpoint: step 6 and the hand-off to dispatch.

The transport only sees requests that passed steps 1-5 (it receives their
`Admission`). It enforces the transport rules (method, Content-Type, Accept,
body size), reads and parses the body, and then chooses the request's era
(`mcp.ladder.is_modern_http`): a stateless 2026-07-28 request goes to
`modern_http.StatelessHttp` (its own ladder, no session); a handshake-era one
(2025-03-26/06-18/11-25) stays here, with its session id rules, and is handed
to `Dispatcher.outcome` together with the principal, so the dispatcher's
second lock sees exactly who is calling.

How a call ended (its `Outcome`) becomes HTTP in one method, `_answer`: a
JSON-RPC reply (as JSON, or as the SSE stream's final event), 403
insufficient_scope, or 401 when the token was revoked; revocation ends the
session on every path (a call answered inline, a streamed call, and an event
stream that notices it at an event or keepalive), audited once.

A request's answer is JSON unless its handler sends something first
(progress, a log message): then the response becomes an SSE stream, written
as events happen through the WSGI `write` callable, and the last event carries
the result. Sessions are bound to the principal that initialized them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import audit
from .capacity import Capacity, Slot, SlotBody, principal_key
from .config import DEFAULT_MAX_STREAMS
from .guard import Admission
from .listen import Listens
from .mcp.context import Call
from .mcp.dispatch import Dispatcher as McpServer  # the transport's view of a server: its dispatcher
from .mcp.jsonrpc import (
    ErrorResponse,
    JsonRpcError,
    Notification,
    Request,
    Response,
    dumps,
    parse_message,
)
from .mcp.ladder import is_modern_header, is_modern_http
from .mcp.outcome import Crashed, Outcome, Revoked, ScopeRefused
from .mcp.protocol import RESUMABLE_SINCE, protocol_at_least
from .media import acceptable, accepts, media_type
from .modern_http import SSE_HEADERS, StatelessHttp, start_handler_thread
from .refusals import (
    BadRequest,
    InsufficientScope,
    MethodNotAllowed,
    NotAcceptable,
    PayloadTooLarge,
    Refusal,
    ServiceUnavailable,
    SessionNotFound,
    TokenRevoked,
    UnsupportedMediaType,
)
from .sessions import HttpSession, SessionStore
from .streams import EventStream, encode_event, parse_event_id, priming_event

logger = logging.getLogger("mcp_auth.http")

SESSION_HEADER = "Mcp-Session-Id"
# A request body that trickles in slower than this is refused (a thread is held while it reads).
BODY_DEADLINE_SECONDS = 60.0
# A comment line this often keeps proxies from timing out an idle stream and
# lets the server notice a client that went away, or a token that was revoked.
KEEPALIVE_SECONDS = 15.0
# Content-Length values longer than this many digits are nonsense, not big bodies.
MAX_CONTENT_LENGTH_DIGITS = 19
# Retry-After for a client refused a streaming call or an event stream: calls
# usually end within seconds, so a short wait is likely to find a place.
STREAM_RETRY_AFTER_SECONDS = 5

StartResponse = Callable[..., Callable[[bytes], Any]]

# What an Outcome becomes over HTTP: the JSON-RPC message to send, or the refusal to answer with instead.
HttpAnswer = dict[str, Any] | Refusal


class _SessionChannel:
    """A Channel for messages outside a request stream: they go to the session's GET stream."""

    def __init__(self, session: HttpSession) -> None:
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
        max_streams: int = DEFAULT_MAX_STREAMS,
        body_deadline_seconds: float = BODY_DEADLINE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        same_view_for_all: bool = False,
    ) -> None:
        self.keepalive_seconds = keepalive_seconds
        self._clock = clock  # monotonic seconds, for the body deadline; injectable for tests
        self.body_deadline_seconds = body_deadline_seconds
        self.server = server
        self.sessions = sessions
        self.principal_is_current = principal_is_current
        self.max_body_bytes = max_body_bytes
        self.shutdown = shutdown
        # Separate capacities, so idle GET streams cannot starve tool calls, and a
        # per-token share of each (half), so one token cannot starve the others.
        # A streaming call's place is held by its handler thread as well as its
        # response, so this also bounds the handler threads a token can start.
        self.calls = Capacity("streaming tool calls", max_streams, retry_after=STREAM_RETRY_AFTER_SECONDS)
        self.event_streams = Capacity("open event streams", max_streams, retry_after=STREAM_RETRY_AFTER_SECONDS)
        # subscriptions/listen streams (2026-07-28) take places of the same budget as GET streams.
        self.listens = Listens(server, self.event_streams, shutdown, keepalive_seconds, clock)
        # Requests of the stateless revision (2026-07-28): no session, their own ladder.
        self.stateless = StatelessHttp(
            server, self.calls, principal_is_current, shutdown, keepalive_seconds, same_view_for_all, self.listens
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse, admission: Admission) -> Any:
        method = environ.get("REQUEST_METHOD", "")
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
    def _refuse_stateless_get_or_delete(environ: dict[str, Any]) -> None:
        """The stateless revision has no GET stream and no session to end: POST only."""
        if is_modern_header(environ.get("HTTP_MCP_PROTOCOL_VERSION")):
            raise MethodNotAllowed(
                f"{environ.get('REQUEST_METHOD')} is not part of MCP 2026-07-28 (it has no sessions): use POST",
                headers=[("Allow", "POST")],
            )

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        stream = environ["wsgi.input"]
        if raw_length:
            # ASCII digits only: str.isdigit is also true for superscripts that int() refuses.
            if not (raw_length.isascii() and raw_length.isdigit()) or len(raw_length) > MAX_CONTENT_LENGTH_DIGITS:
                raise BadRequest("Content-Length is not a valid number")
            length = int(raw_length)
            if length > self.max_body_bytes:
                raise PayloadTooLarge(f"The request body is over the limit of {self.max_body_bytes} bytes")
            body = self._read_exactly(stream, length, self.body_deadline_seconds)
            if len(body) < length:
                # The client closed its side early: what came is not the message it declared.
                raise BadRequest("The request body ended before Content-Length bytes")
            return body
        if environ.get("wsgi.input_terminated"):
            body = self._read_exactly(stream, self.max_body_bytes + 1, self.body_deadline_seconds)
            if len(body) > self.max_body_bytes:
                raise PayloadTooLarge(f"The request body is over the limit of {self.max_body_bytes} bytes")
            return body
        return b""

    def _read_exactly(self, stream: Any, length: int, deadline_seconds: float) -> bytes:
        chunks = []
        remaining = length
        deadline = self._clock() + deadline_seconds
        # read1 returns what one socket read brought, so the deadline is checked between
        # reads; plain read(n) would block until all n bytes arrived, however slowly.
        read = getattr(stream, "read1", stream.read)
        while remaining > 0:
            if self._clock() > deadline:
                raise BadRequest(f"The request body was not sent within {deadline_seconds:g} seconds")
            try:
                chunk = read(min(remaining, 65536))
            except Exception as exc:  # only what the client sent can make reading wsgi.input fail
                # A broken chunked encoding (each WSGI server raises its own parse
                # errors: gunicorn's are not OSError or ValueError), or a read timeout.
                logger.debug("reading the request body failed: %s", type(exc).__name__)
                raise BadRequest(
                    "The request body could not be read (bad chunked encoding, or sent too slowly)"
                ) from None
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _session(self, environ: dict[str, Any], admission: Admission) -> HttpSession:
        session_id = environ.get("HTTP_MCP_SESSION_ID")
        if not session_id:
            raise BadRequest(f"The {SESSION_HEADER} header is required: send initialize first and reuse its session id")
        session = self.sessions.get(session_id.strip(), admission.principal)
        if session is None:
            raise SessionNotFound()
        return session

    def _call(self, session: HttpSession, admission: Admission, channel: Any) -> Call:
        return Call(session, admission.principal, channel, str(admission.client_address), self.principal_is_current)

    # --- POST: one JSON-RPC message -------------------------------------------------

    def _post(self, environ: dict[str, Any], start_response: StartResponse, admission: Admission) -> Any:
        if media_type(environ.get("CONTENT_TYPE")) != "application/json":
            raise UnsupportedMediaType("Content-Type must be application/json")
        accepted = acceptable(environ.get("HTTP_ACCEPT"))
        if not (accepts(accepted, "application/json") and accepts(accepted, "text/event-stream")):
            raise NotAcceptable("The Accept header must list both application/json and text/event-stream")
        body = self._read_body(environ)
        try:
            message = parse_message(body)
        except JsonRpcError as exc:
            raise BadRequest.from_jsonrpc(exc) from None
        # The era is chosen per request, with the body in hand: a refusal carries the request's id.
        params = message.params if isinstance(message, (Request, Notification)) else None
        if is_modern_http(environ.get("HTTP_MCP_PROTOCOL_VERSION"), bool(environ.get("HTTP_MCP_SESSION_ID")), params):
            return self.stateless.post(environ, start_response, admission, message)

        if isinstance(message, Request) and message.method == "initialize":
            return self._initialize(message, start_response, admission)

        session = self._session(environ, admission)
        if isinstance(message, Notification):
            self.server.handle_notification(message, self._call(session, admission, _SessionChannel(session)))
            if message.method == "notifications/cancelled":
                self.sessions.relay_cancel(session, message.params.get("requestId"))
            return self._accepted(start_response)
        if isinstance(message, (Response, ErrorResponse)):
            # The client's answer to a sampling/elicitation/roots request: wake the waiting handler,
            # here or (a shared store) in the process where it runs.
            if not session.replies.deliver(message):
                self.sessions.relay_reply(session, message.to_dict())
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
            if not session.state.negotiated:  # initialize failed: no half-made session stays behind
                self.sessions.delete(session.session_id, admission.principal)

    def _request(
        self,
        request: Request,
        session: HttpSession,
        start_response: StartResponse,
        admission: Admission,
        headers: list[tuple[str, str]] | None = None,
    ) -> Any:
        headers = headers or []
        if not self.server.may_send_before_answer(request):
            # Nothing can be sent before the answer: answer inline, as JSON.
            call = self._call(session, admission, _SessionChannel(session))
            answers: list[HttpAnswer] = []
            self._answer(self.server.outcome(request, call), call, session, answers.append)
            if isinstance(answers[0], Refusal):
                raise answers[0]
            return self._json_reply(answers[0], start_response, headers)
        # A handler may send progress, log messages or requests to the client before its
        # answer, so it runs on its own thread and writes to a resumable event stream;
        # this thread answers JSON if the answer is all there is, SSE otherwise.
        slot = self.calls.acquire(principal_key(admission.principal))
        try:
            stream = session.streams.new_stream()
            call = self._call(session, admission, stream)
            self._start_handler(request, call, stream, session, slot.share())
            stream.wait_started()
            if stream.refusal is not None:
                slot.release()
                session.streams.drop_stream(stream)
                if isinstance(stream.refusal, TokenRevoked):
                    # The handler's thread ends the session right after it publishes the
                    # refusal; ended here too (once in all), so the client that reads this
                    # 401 can never find the session still there.
                    self._end_revoked(call, session)
                raise stream.refusal
            only = stream.only_final()
            if only is not None:
                slot.release()
                session.streams.drop_stream(stream)
                return self._json_reply(only, start_response, headers)
            stream.start_log()  # the client learns the stream's id now: resumable on any process
            start_response("200 OK", SSE_HEADERS + headers)
            body = self._event_body(stream, session, call, after=0, prime=True, detachments=0)
        except BaseException:
            slot.release()  # released once, whatever path got here
            raise
        return SlotBody(body, slot)

    def _answer(self, outcome: Outcome, call: Call, session: HttpSession, send: Callable[[HttpAnswer], None]) -> None:
        """The one place an Outcome becomes HTTP; `send` takes the answer (inline: the reply or
        the refusal to raise; streamed: the final event or the refusal to answer with instead).

        Audited here, once (`audit.dispatch_outcome`). Revocation ends the session,
        whichever path noticed it: its streams end, its handlers are cancelled, and
        its id is unknown from then on (401 for the revoked token at step 5, 404 for
        anyone else). The revoked call's 401 is published before the session ends, so
        a streamed call's answering thread sees the refusal, not a detached stream
        (and that thread ends the session too before it answers: `_end_revoked`).
        """
        if isinstance(outcome, Revoked):
            send(TokenRevoked())
            self._end_revoked(call, session)
            return
        audit.dispatch_outcome(outcome, call.client_address, call.principal.name)
        if isinstance(outcome, ScopeRefused):
            send(InsufficientScope(outcome.reason, outcome.request_id))
        else:
            send(outcome.message())

    def _end_revoked(self, call: Call, session: HttpSession) -> None:
        """End the session of a revoked principal; audited by the path that ended it, so a call
        and an event stream noticing the same revocation write one event, not two."""
        if session.session_id is not None and self.sessions.delete(session.session_id, call.principal):
            audit.dispatch_outcome(Revoked(), call.client_address, call.principal.name)

    def _start_handler(
        self, request: Request, call: Call, stream: EventStream, session: HttpSession, handler_slot: Slot
    ) -> None:
        """Run the handler on its own thread, which holds `handler_slot` for as long as it runs."""
        try:
            start_handler_thread(
                self._run_handler, (request, call, stream, session, handler_slot), request, handler_slot
            )
        except ServiceUnavailable:
            session.streams.drop_stream(stream)
            raise

    def _run_handler(self, request: Request, call: Call, stream: EventStream, session: HttpSession, slot: Slot) -> None:
        """The handler's thread: every outcome ends the stream, so the answering thread never waits forever.

        The thread gives its hold on the slot back before it publishes the
        outcome: a client that sends its next call the moment it has the answer
        must not find the slot still taken by a thread that is only returning.
        """
        published = False

        def publish(answer: HttpAnswer) -> None:
            nonlocal published
            published = True
            if isinstance(answer, Refusal):
                stream.refuse(answer)
            else:
                stream.finish(answer)

        try:
            try:
                outcome = self.server.outcome(request, call)  # catches everything, once
            finally:
                slot.release()
            self._answer(outcome, call, session, publish)
        finally:
            if not published:  # only a bug in this module gets here; the client still gets an answer
                publish(Crashed(request.id).message())

    @staticmethod
    def _json_reply(
        reply: dict[str, Any], start_response: StartResponse, headers: list[tuple[str, str]]
    ) -> list[bytes]:
        body = dumps(reply)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
        return [body]

    def _event_body(
        self, stream: EventStream, session: HttpSession, call: Call, *, after: int, prime: bool, detachments: int
    ) -> Iterator[bytes]:
        """The SSE body of `stream` from sequence `after`; ends with the stream, on detach,
        session end or shutdown, or when the principal's token is revoked (the second lock,
        asked at every event and keepalive: revocation then ends the session, see `_answer`)."""
        revoked = False

        def stop() -> bool:
            nonlocal revoked
            if self.shutdown.is_set() or not self.sessions.is_live(session):
                return True
            revoked = not call.is_current()
            return revoked

        # The priming event (an id, empty data) tells 2025-11-25 clients they may resume.
        if prime and protocol_at_least(session.state.protocol_version, RESUMABLE_SINCE):
            yield priming_event(stream.stream_id, after)
        else:
            yield b": stream open\n\n"  # sends the head now, not at the first event
        sent = after
        for item in stream.read(after, self.keepalive_seconds, stop, detachments):
            if item is None:
                session.touch()
                yield b": keepalive\n\n"
            else:
                session.touch()  # a session that is being sent events is in use
                yield encode_event(stream.stream_id, *item)
                sent = item[0]
        if revoked:
            # The response is already a 200 event stream: nothing more can be said on it.
            # The session ends; the client learns why at its next request (401).
            self._answer(Revoked(), call, session, lambda answer: None)
            return
        if stream is not session.streams.standalone and stream.fully_sent(sent):
            session.streams.drop_stream(stream)  # the answer was delivered: nothing left to resume

    # --- GET: the session's standalone stream, or resuming a stream ------------------

    def _get(self, environ: dict[str, Any], start_response: StartResponse, admission: Admission) -> Any:
        self._refuse_stateless_get_or_delete(environ)
        if not accepts(acceptable(environ.get("HTTP_ACCEPT")), "text/event-stream"):
            raise NotAcceptable("GET on the MCP endpoint opens an event stream: send Accept: text/event-stream")
        session = self._session(environ, admission)
        last_event_id = environ.get("HTTP_LAST_EVENT_ID")
        if last_event_id:
            parsed = parse_event_id(last_event_id)
            stream = session.streams.find_stream(parsed[0]) if parsed else None
            if parsed is None or stream is None:
                raise BadRequest(
                    "Last-Event-ID names no stream of this session that can be resumed; send the request again"
                )
            after, prime = parsed[1], False
        else:
            stream, after, prime = session.streams.standalone, session.streams.standalone.delivered, True
        slot = self.event_streams.acquire(principal_key(admission.principal))
        try:
            if stream is session.streams.standalone:
                # One reader at a time, and the newest wins (a client reconnecting after a drop).
                detachments = session.streams.open_standalone()
                slot.also(session.streams.leave_standalone)
            else:
                detachments = stream.attach()
            start_response("200 OK", list(SSE_HEADERS))
            call = self._call(session, admission, stream)
            body = self._event_body(stream, session, call, after=after, prime=prime, detachments=detachments)
        except BaseException:
            slot.release()  # e.g. the WSGI server refused the headers: the place must not stay taken
            raise
        return SlotBody(body, slot)

    # --- DELETE: end the session -------------------------------------------------------

    def _delete(self, environ: dict[str, Any], start_response: StartResponse, admission: Admission) -> Any:
        self._refuse_stateless_get_or_delete(environ)
        session = self._session(environ, admission)
        assert session.session_id is not None
        self.sessions.delete(session.session_id, admission.principal)
        start_response("204 No Content", [])
        return []


def json_response(start_response: StartResponse, status: str, payload: dict[str, Any]) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
