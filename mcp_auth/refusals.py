"""Refusals: exceptions that are complete HTTP responses.

Every way mcp_auth says "no" is one of these classes. Raising one anywhere in
the request path ends the request with exactly that status, body and headers;
the WSGI app turns it into a response in one place (`Refusal.__call__`), so a
refusal can never be half-written. Each refusal also carries the audit facts
(pipeline step and reason). The app audits refusals of steps 1-6; step-7
refusals (`InsufficientScope`, `TokenRevoked`, step "dispatch") were already
audited from their dispatch outcome, the same way for HTTP and WebSocket.
A refused WebSocket upgrade gets the same plain HTTP answer before any 101,
so a refusal has no close code.

The message is for an honest client: it says what to fix. It never contains
anything the client sent that could be secret.

Every body is a JSON-RPC error response, because that is the only non-2xx body
MCP clients show their users (the Python `mcp` client reads a non-2xx body
only when it parses as one; otherwise it says "Server returned an error
response"). The machine-readable refusal code (`ip_not_allowed`,
`unauthorized`, ...) is `error.data.reason`:

    {"jsonrpc": "2.0", "id": null,
     "error": {"code": -32001, "message": "...", "data": {"reason": "unauthorized"}}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .mcp.jsonrpc import (
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    UNSUPPORTED_PROTOCOL_VERSION,
    JsonRpcError,
    RequestId,
)

StartResponse = Any  # the WSGI start_response callable

# JSON-RPC error codes of the pipeline's refusals. -32000..-32099 are the
# implementation-defined server errors; -32001 is the code MCP servers in the
# wild use for "authentication required", -32003 (FORBIDDEN) is already ours
# for step 7, so a client sees the same code for every "not allowed".
UNAUTHORIZED_CODE = -32001
RATE_LIMITED_CODE = -32029


class Refusal(Exception):
    """A refused request; the instance is a WSGI response."""

    status = 400
    reason_phrase = "Bad Request"
    error = "bad_request"
    step = "transport"
    jsonrpc_code = INVALID_REQUEST

    def __init__(self, message: str, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.extra_headers = list(headers)

    def body(self) -> bytes:
        error = {"code": self.jsonrpc_code, "message": self.message, "data": {"reason": self.error}}
        return json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        body = self.body()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *self.extra_headers,
        ]
        start_response(f"{self.status} {self.reason_phrase}", headers)
        return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []


class InternalError(Refusal):
    """The unexpected (a bug): logged with its traceback on the server; the client gets
    the same JSON-RPC error shape as every refusal, and no detail."""

    status, reason_phrase, error = 500, "Internal Server Error", "internal_error"
    jsonrpc_code = INTERNAL_ERROR


# --- the auth pipeline (DESIGN.md, steps 1-5) -------------------------------


class IpNotAllowed(Refusal):
    status, reason_phrase, error, step = 403, "Forbidden", "ip_not_allowed", "client_address"
    jsonrpc_code = FORBIDDEN


class HostInvalid(Refusal):
    status, reason_phrase, error, step = 400, "Bad Request", "host_invalid", "host"


class HostNotAllowed(Refusal):
    status, reason_phrase, error, step = 403, "Forbidden", "host_not_allowed", "host"
    jsonrpc_code = FORBIDDEN


class OriginNotAllowed(Refusal):
    status, reason_phrase, error, step = 403, "Forbidden", "origin_not_allowed", "origin"
    jsonrpc_code = FORBIDDEN


class RateLimited(Refusal):
    status, reason_phrase, error, step = 429, "Too Many Requests", "rate_limited", "rate_limit"
    jsonrpc_code = RATE_LIMITED_CODE

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed authentication attempts from this address; retry after {retry_after} seconds",
            headers=[("Retry-After", str(retry_after))],
        )


# No "Authorization: Bearer" sequence: clients' log redactors (Claude Code's) mangle what follows it.
UNAUTHORIZED_MESSAGE = "A valid bearer token is required: send it in the Authorization header, with the Bearer scheme."
# Where to find the right token; the server's token source picks one (config.AuthSetup).
# None of them names or hints at a token, and each is fixed per server, so the
# 401 stays byte-identical for missing, malformed, non-Bearer and wrong tokens.
UNAUTHORIZED_HINT = "Ask the server's operator for a token."
# A browser-style WebSocket that carried the token as a subprotocol while that
# carrier is off: the token was not looked at, so this says nothing about it.
SUBPROTOCOL_CARRIER_OFF_HINT = (
    "This server does not read a token from the 'mcp.auth.<token>' WebSocket subprotocol: send the "
    "Authorization header, or ask the operator to start the server with --websocket-token-subprotocol."
)


class Unauthorized(Refusal):
    """The one 401. Its bytes never depend on what the client sent."""

    status, reason_phrase, error, step = 401, "Unauthorized", "unauthorized", "bearer_token"
    jsonrpc_code = UNAUTHORIZED_CODE

    def __init__(self, reason: str, hint: str | None = None) -> None:
        # `reason` is for the audit log only (missing / malformed / wrong); it
        # never reaches the client, so the answer cannot tell which it was.
        # `hint` depends on the server's token source only (None: filled in by the app).
        super().__init__(
            f"{UNAUTHORIZED_MESSAGE} {hint or UNAUTHORIZED_HINT}",
            headers=[("WWW-Authenticate", 'Bearer realm="mcp-auth"')],
        )
        self.audit_reason = reason
        self.hint = hint

    def with_hint(self, hint: str) -> Unauthorized:
        """The same refusal, with the server's hint (what the app fills in for a transport's 401)."""
        return type(self)(self.audit_reason, hint)


# The pipeline step of refusals that come from dispatch (step 7); audited from the outcome, not by the app.
DISPATCH_STEP = "dispatch"


class TokenRevoked(Unauthorized):
    """Step 7 over HTTP: the token was revoked after the session opened. The client sees the
    same 401 as for any wrong token; the session is gone, and the audit says "revoked"."""

    step = DISPATCH_STEP

    def __init__(self, reason: str = "revoked", hint: str | None = None) -> None:
        super().__init__(reason, hint)


class InsufficientScope(Refusal):
    """Step 7 over HTTP: the body is a JSON-RPC error so MCP clients can show it."""

    status, reason_phrase, error, step = 403, "Forbidden", "insufficient_scope", DISPATCH_STEP

    def __init__(self, message: str, request_id: RequestId | None) -> None:
        super().__init__(
            message,
            headers=[("WWW-Authenticate", 'Bearer realm="mcp-auth", error="insufficient_scope"')],
        )
        self.request_id = request_id

    def body(self) -> bytes:
        return json.dumps(
            {"jsonrpc": "2.0", "id": self.request_id, "error": {"code": FORBIDDEN, "message": self.message}}
        ).encode()


# --- transport rules (step 6) -------------------------------------------------


class TransportRefusal(Refusal):
    """Step 6 refusals answer with a JSON-RPC error body, which MCP clients surface."""

    jsonrpc_code = INVALID_REQUEST

    def __init__(
        self,
        message: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        request_id: RequestId | None = None,
        code: int | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.request_id = request_id
        self.code = self.jsonrpc_code if code is None else code
        self.data = data

    @classmethod
    def from_jsonrpc(cls, exc: JsonRpcError) -> TransportRefusal:
        return cls(exc.message, request_id=exc.request_id, code=exc.code, data=exc.data)

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return json.dumps({"jsonrpc": "2.0", "id": self.request_id, "error": error}).encode()


class BadRequest(TransportRefusal):
    status, reason_phrase, error = 400, "Bad Request", "bad_request"


def is_version_negotiation(refusal: Refusal) -> bool:
    """An unsupported MCP-Protocol-Version (-32022): how a client learns which versions this server
    speaks (`mcp` 2.x probes with a newer one on every connection, then falls back to initialize).
    Already past steps 1-5, it is negotiation, not a denial: not audited as one."""
    return isinstance(refusal, TransportRefusal) and refusal.code == UNSUPPORTED_PROTOCOL_VERSION


class NotFound(TransportRefusal):
    status, reason_phrase, error = 404, "Not Found", "not_found"


class SessionNotFound(TransportRefusal):
    status, reason_phrase, error = 404, "Not Found", "session_not_found"

    def __init__(self) -> None:
        super().__init__("Session not found: it expired or was terminated; send a new initialize request")


class MethodNotAllowed(TransportRefusal):
    status, reason_phrase, error = 405, "Method Not Allowed", "method_not_allowed"


class NotAcceptable(TransportRefusal):
    status, reason_phrase, error = 406, "Not Acceptable", "not_acceptable"


class PayloadTooLarge(TransportRefusal):
    status, reason_phrase, error = 413, "Content Too Large", "payload_too_large"


class UnsupportedMediaType(TransportRefusal):
    status, reason_phrase, error = 415, "Unsupported Media Type", "unsupported_media_type"


class ServiceUnavailable(TransportRefusal):
    status, reason_phrase, error = 503, "Service Unavailable", "unavailable"
