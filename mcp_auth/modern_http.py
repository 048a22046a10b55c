"""Stateless (MCP 2026-07-28) POSTs at the MCP endpoint: the revision's ladder, dispatch, and the answer.

The HTTP transport (`mcp_auth.http`) reads and parses the body, decides the
era (`mcp.ladder.is_modern_http`) and hands a stateless message here. Steps
1-5 already ran for this very request: in this era every request is
authenticated on its own, and nothing from an earlier request is trusted or
even remembered (no session id is read or issued). Here the envelope and the
routing headers are checked against the body (`mcp.ladder.modern_request`),
then the dispatcher runs the request with a `StatelessSession` stand-in and
the request's `ModernRequest` on the `Call`; step 7 (revocation, scope) is
the dispatcher's, as in the handshake era.

The answer: JSON-RPC errors with the request's id and the status the
revision names (`mcp.ladder.http_status`); a result as JSON, or, when the
request asked for progress or log messages and the handler takes a Context,
an SSE stream whose last event is the result. These streams have no event
ids, no priming event and cannot be resumed: a client that loses one asks
again. The client closing the stream cancels the request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import audit
from .capacity import Capacity, Slot, SlotBody, principal_key
from .guard import Admission
from .listen import Listens, peer_closed_check
from .mcp.context import Call, StatelessSession
from .mcp.dispatch import Dispatcher
from .mcp.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    JsonRpcError,
    Message,
    Notification,
    Request,
    dumps,
)
from .mcp.ladder import http_status, method_not_found, modern_request
from .mcp.modern import HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION, ModernRequest
from .mcp.outcome import Crashed, Outcome, PrincipalRevoked, Revoked, ScopeRefused
from .mcp.subscriptions import LISTEN_METHOD
from .refusals import InsufficientScope, Refusal, ServiceUnavailable, TokenRevoked, TransportRefusal
from .streams import EventStream

StartResponse = Callable[..., Callable[[bytes], Any]]

# Retry-After when the process cannot start another thread (the OS limit, not ours).
THREAD_RETRY_AFTER_SECONDS = 5
SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
_REASON_PHRASES = {200: "OK", 400: "Bad Request", 404: "Not Found"}
# The audit reason of each refusal the ladder gives, by JSON-RPC code.
_AUDIT_REASONS = {
    HEADER_MISMATCH: "header_mismatch",
    INVALID_PARAMS: "invalid_envelope",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    UNSUPPORTED_PROTOCOL_VERSION: "unsupported_protocol_version",
}


class StatelessRefusal(TransportRefusal):
    """A stateless request refused before dispatch: a JSON-RPC error with the request's id, at the
    status the revision gives its code (400, or 404 for an unknown method)."""

    def __init__(self, error: JsonRpcError) -> None:
        super().__init__(error.message, request_id=error.request_id, code=error.code, data=error.data)
        self.status = http_status(error.code)
        self.reason_phrase = _REASON_PHRASES.get(self.status, "Bad Request")
        self.error = _AUDIT_REASONS.get(error.code, "bad_request")


def mcp_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's `Mcp-*` header values by lower-cased name (WSGI already folded their case)."""
    return {
        key[5:].lower().replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith("HTTP_MCP_") and isinstance(value, str)
    }


def _status_of(message: dict[str, Any]) -> int:
    error = message.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return http_status(code) if isinstance(code, int) else 200


def start_handler_thread(target: Callable[..., None], args: tuple[Any, ...], request: Request, slot: Slot) -> None:
    """Run a request's handler on its own (daemon) thread, which holds `slot` while it runs; 503
    when the OS refuses a thread (then no handler would ever give the place back: released here)."""
    try:
        threading.Thread(target=target, args=args, name=f"mcp-call-{request.method}", daemon=True).start()
    except RuntimeError:
        slot.release()
        raise ServiceUnavailable(
            "The server cannot start another thread now; try again later",
            headers=[("Retry-After", str(THREAD_RETRY_AFTER_SECONDS))],
        ) from None


class StatelessHttp:
    """Serves the stateless POSTs the HTTP transport hands over."""

    def __init__(
        self,
        server: Dispatcher,
        calls: Capacity,
        principal_is_current: Callable[..., bool],
        shutdown: threading.Event,
        keepalive_seconds: float,
        same_view_for_all: bool = False,
        listens: Listens | None = None,
    ) -> None:
        self.server = server
        # subscriptions/listen: its own long-lived answer (`mcp_auth.listen`); None answers it -32601.
        self.listens = listens
        # The HTTP transport's capacity of streaming calls: both eras share one budget.
        self.calls = calls
        self.principal_is_current = principal_is_current
        self.shutdown = shutdown
        self.keepalive_seconds = keepalive_seconds
        self.same_view_for_all = same_view_for_all

    def post(
        self, environ: dict[str, Any], start_response: StartResponse, admission: Admission, message: Message
    ) -> Any:
        if isinstance(message, Notification):
            if message.method == "notifications/cancelled":
                # Over HTTP a stateless request is cancelled by closing its stream; nothing to do.
                start_response("202 Accepted", [("Content-Length", "0")])
                return []
            raise TransportRefusal(method_not_found(message.method), code=METHOD_NOT_FOUND)
        if not isinstance(message, Request):
            raise TransportRefusal(
                "A client of MCP 2026-07-28 sends no responses: the server sends it no requests", code=INVALID_REQUEST
            )
        try:
            modern = modern_request(message, mcp_headers(environ))
        except JsonRpcError as exc:
            raise StatelessRefusal(exc) from None
        session = StatelessSession()
        call = Call(
            session,
            admission.principal,
            session,  # sends nothing: only a request that streams (below) gets a channel
            str(admission.client_address),
            self.principal_is_current,
            modern,
            same_view_for_all=self.same_view_for_all,
        )
        if message.method == LISTEN_METHOD and self.listens is not None:
            return self._listen(message, call, start_response, environ)
        if not self._may_stream(message, modern):
            answer = self._answer(self.server.outcome(message, call), call)
            if isinstance(answer, Refusal):
                raise answer
            return self._json(start_response, answer)
        return self._streamed(message, call, session, start_response)

    def _listen(self, request: Request, call: Call, start_response: StartResponse, environ: dict[str, Any]) -> Any:
        """The SSE answer of a listen; refused as plain HTTP before it opens: 400 for a malformed
        filter, 401 for a revoked token, 503 past the stream budget."""
        assert self.listens is not None
        try:
            body, slot = self.listens.open_http(request, call, peer_closed_check(environ))
        except JsonRpcError as exc:
            raise StatelessRefusal(exc) from None
        except PrincipalRevoked:
            audit.dispatch_outcome(Revoked(request.id), call.client_address, call.principal.name)
            raise TokenRevoked() from None
        try:
            start_response("200 OK", list(SSE_HEADERS))
        except BaseException:
            slot.release()  # the subscription is forgotten with its place
            raise
        return SlotBody(body, slot)

    def _may_stream(self, request: Request, modern: ModernRequest) -> bool:
        """Only progress and log messages can precede a stateless answer, and only when the request
        asked for them and its handler takes a Context; everything else is answered as plain JSON."""
        meta = request.params.get("_meta")
        asked = modern.log_level is not None or (isinstance(meta, dict) and "progressToken" in meta)
        return asked and self.server.may_send_before_answer(request)

    def _answer(self, outcome: Outcome, call: Call) -> dict[str, Any] | Refusal:
        """The one place a stateless Outcome becomes HTTP: the JSON-RPC message, or the refusal to
        answer with instead. Audited here, once."""
        audit.dispatch_outcome(outcome, call.client_address, call.principal.name)
        if isinstance(outcome, Revoked):
            return TokenRevoked()
        if isinstance(outcome, ScopeRefused):
            return InsufficientScope(outcome.reason, outcome.request_id)
        return outcome.message()

    @staticmethod
    def _json(start_response: StartResponse, message: dict[str, Any]) -> list[bytes]:
        status = _status_of(message)
        body = dumps(message)
        start_response(
            f"{status} {_REASON_PHRASES.get(status, 'OK')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _streamed(
        self,
        request: Request,
        call: Call,
        session: StatelessSession,
        start_response: StartResponse,
    ) -> Any:
        slot = self.calls.acquire(principal_key(call.principal))
        try:
            stream = EventStream("stateless")
            call.channel = stream
            self._start_handler(request, call, stream, slot.share())
            stream.wait_started()
            if stream.refusal is not None:
                slot.release()
                raise stream.refusal
            only = stream.only_final()
            if only is not None:
                slot.release()
                return self._json(start_response, only)
            start_response("200 OK", list(SSE_HEADERS))
            body = self._events(stream, call, session)
        except BaseException:
            slot.release()
            raise
        return SlotBody(body, slot)

    def _start_handler(self, request: Request, call: Call, stream: EventStream, handler_slot: Slot) -> None:
        start_handler_thread(self._run_handler, (request, call, stream, handler_slot), request, handler_slot)

    def _run_handler(self, request: Request, call: Call, stream: EventStream, slot: Slot) -> None:
        """The handler's thread: every path ends the stream, so the answering thread never waits forever."""
        answer: dict[str, Any] | Refusal = Crashed(request.id).message()
        try:
            try:
                outcome = self.server.outcome(request, call)  # catches everything, once
            finally:
                slot.release()
            answer = self._answer(outcome, call)
        finally:
            if isinstance(answer, Refusal):
                stream.refuse(answer)
            else:
                stream.finish(answer)

    def _events(self, stream: EventStream, call: Call, session: StatelessSession) -> Iterator[bytes]:
        """The SSE body: each message one event, no ids. Ends with the answer, on shutdown, or when the
        token is revoked (asked at every event and keepalive); a client that goes away cancels the call."""
        revoked = False

        def stop() -> bool:
            nonlocal revoked
            if self.shutdown.is_set():
                return True
            revoked = not call.is_current()
            return revoked

        try:
            for item in stream.read(0, self.keepalive_seconds, stop):
                yield b": keepalive\n\n" if item is None else b"event: message\ndata: " + dumps(item[1]) + b"\n\n"
            if revoked:
                # Already a 200 event stream: nothing more can be said; the next request gets the 401.
                audit.dispatch_outcome(Revoked(), call.client_address, call.principal.name)
        finally:
            session.close()  # the handler, if it still runs, is cancelled
