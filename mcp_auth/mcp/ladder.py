"""Which protocol era a message belongs to, and the checks a stateless (2026-07-28) request must pass.

No I/O and no transport: the HTTP transport hands in the header values it
read (names lower-cased, `None` for WebSocket, which has no headers per
message) and the parsed JSON-RPC message; what comes back is the request's
`ModernRequest`, or a `JsonRpcError` carrying the request's id and the code
the revision names. What is trusted: nothing the client sent. Every header
is compared with the body it claims to describe, so a proxy or an
authorization layer that routes on headers cannot be shown one request and
made to run another.

The order of the rungs is the revision's (and the reference SDK's): the
envelope first (-32602), then the headers against the body (-32020), then the
version (-32022), then the log level. The header rungs come before the
version rung on purpose: a header that disagrees with the body is a broken
or tampered request whatever version either names. Whether the method exists
in the era (-32601) is the dispatcher's question (`Dispatcher._answer`), so
HTTP and WebSocket share one answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .jsonrpc import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, JsonRpcError, Request
from .modern import (
    HEADER_MISMATCH,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    MISSING_CLIENT_CAPABILITY,
    MODERN_PROTOCOL_VERSIONS,
    UNSUPPORTED_PROTOCOL_VERSION,
    ModernRequest,
    decode_header_value,
)
from .protocol import HANDSHAKE_PROTOCOL_VERSIONS, LOG_LEVELS, SUPPORTED_PROTOCOL_VERSIONS

# The methods a stateless request may name (the 2026-07-28 schema's ClientRequest).
# Anything else, including what the revision removed (initialize, ping,
# logging/setLevel, resources/subscribe and unsubscribe), is -32601 in this era
# only; the handshake era keeps all of them.
MODERN_METHODS = frozenset(
    {
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "subscriptions/listen",
    }
)
# Methods only the stateless era has: a handshake session asking for them gets -32601.
MODERN_ONLY_METHODS = frozenset({"server/discover", "subscriptions/listen"})
# What the revision removed, for a message that says so rather than only "not found".
REMOVED_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "notifications/initialized",
        "notifications/roots/list_changed",
    }
)

# The routing headers, by lower-cased name, and which body field `Mcp-Name` mirrors per method.
PROTOCOL_VERSION_HEADER = "mcp-protocol-version"
METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"
NAME_FIELDS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

# HTTP status of each JSON-RPC error code in a stateless answer (the revision
# mandates 400 for the envelope, header, capability and version errors and 404
# for an unknown method; the rest follows the reference SDK). Codes not listed
# (a tool's failure, -32603, the server's own codes) are answered 200.
HTTP_STATUS_OF_CODE = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}

_OWS = " \t"


def http_status(code: int) -> int:
    """The HTTP status of a stateless answer carrying JSON-RPC error `code`."""
    return HTTP_STATUS_OF_CODE.get(code, 200)


def meta_of(params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """`params._meta` when it is an object."""
    meta = params.get("_meta") if isinstance(params, Mapping) else None
    return meta if isinstance(meta, Mapping) else None


def says_modern(params: Mapping[str, Any] | None) -> bool:
    """Whether a message's `_meta` carries the stateless envelope's protocol version key."""
    meta = meta_of(params)
    return meta is not None and META_PROTOCOL_VERSION in meta


def is_modern_http(version_header: str | None, has_session: bool, params: Mapping[str, Any] | None) -> bool:
    """Whether an HTTP POST is served statelessly, decided after its body was parsed.

    A `MCP-Protocol-Version` that is not a handshake revision makes it stateless
    (even a version nobody speaks: the ladder then answers -32022 with the
    supported list); no header but the envelope in `_meta` does too, unless a
    handshake session id came with it. Everything else is the handshake era,
    exactly as before (no header still means 2025-03-26).
    """
    if version_header is not None:
        return version_header.strip(_OWS) not in HANDSHAKE_PROTOCOL_VERSIONS
    return not has_session and says_modern(params)


def is_modern_header(version_header: str | None) -> bool:
    """Whether a GET or DELETE names a stateless revision (or one nobody speaks): those have no GET
    stream and no session to end."""
    return version_header is not None and version_header.strip(_OWS) not in HANDSHAKE_PROTOCOL_VERSIONS


def _mismatch(request: Request, message: str) -> JsonRpcError:
    return JsonRpcError(HEADER_MISMATCH, message, request_id=request.id)


def _unsupported(request: Request, requested: str) -> JsonRpcError:
    return JsonRpcError(
        UNSUPPORTED_PROTOCOL_VERSION,
        f"Unsupported MCP-Protocol-Version; this server speaks {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}",
        data={"supported": list(SUPPORTED_PROTOCOL_VERSIONS), "requested": requested},
        request_id=request.id,
    )


def _check_headers(request: Request, headers: Mapping[str, str], version: Any) -> None:
    """Rungs c-e: each routing header present and equal to what the body says."""
    header_version = headers.get(PROTOCOL_VERSION_HEADER)
    if header_version is None:
        raise _mismatch(request, "The MCP-Protocol-Version header is required and must equal _meta's protocolVersion")
    if header_version.strip(_OWS) != version:
        raise _mismatch(request, "The MCP-Protocol-Version header does not match the request's _meta protocolVersion")
    method = headers.get(METHOD_HEADER)
    if method is None:
        raise _mismatch(request, "The Mcp-Method header is required and must equal the request's method")
    if method.strip(_OWS) != request.method:
        raise _mismatch(request, "The Mcp-Method header does not match the request's method")
    field = NAME_FIELDS.get(request.method)
    body_value = request.params.get(field) if field else None
    if not isinstance(body_value, str):
        return  # nothing to mirror; the method's own check answers a missing name or uri
    name = headers.get(NAME_HEADER)
    if name is None:
        raise _mismatch(request, f"The Mcp-Name header is required for {request.method} and must equal params.{field}")
    try:
        decoded = decode_header_value(name)
    except ValueError as exc:
        raise _mismatch(request, f"The Mcp-Name header cannot be decoded: {exc}") from None
    if decoded != body_value:
        raise _mismatch(request, f"The Mcp-Name header does not match params.{field}")


def modern_request(request: Request, headers: Mapping[str, str] | None) -> ModernRequest:
    """The checked envelope of a stateless request; JsonRpcError (with the request's id) when a rung fails.

    `headers`: the HTTP request's header values by lower-cased name, or None on
    a transport without headers per message (WebSocket), where the header
    rungs do not apply.
    """
    meta = meta_of(request.params)
    if headers is not None and (meta is None or META_PROTOCOL_VERSION not in meta):
        header_version = headers.get(PROTOCOL_VERSION_HEADER)
        if header_version is not None and header_version.strip(_OWS) not in SUPPORTED_PROTOCOL_VERSIONS:
            # A client of a revision nobody here speaks, without the stateless envelope: what it
            # needs to hear is the supported list (and a handshake client falls back on it).
            raise _unsupported(request, header_version.strip(_OWS))
    missing = [key for key in (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES) if meta is None or key not in meta]
    if missing or meta is None:
        raise JsonRpcError(
            INVALID_PARAMS,
            f"params._meta is missing the required envelope key(s): {', '.join(missing)}",
            request_id=request.id,
        )
    version = meta[META_PROTOCOL_VERSION]
    if headers is not None:
        _check_headers(request, headers, version)
    if not isinstance(version, str):
        raise JsonRpcError(INVALID_PARAMS, f"_meta {META_PROTOCOL_VERSION} must be a string", request_id=request.id)
    if version not in MODERN_PROTOCOL_VERSIONS:
        raise _unsupported(request, version)
    capabilities = meta[META_CLIENT_CAPABILITIES]
    if not isinstance(capabilities, Mapping):
        raise JsonRpcError(
            INVALID_PARAMS, f"_meta {META_CLIENT_CAPABILITIES} must be an object ({{}} for none)", request_id=request.id
        )
    log_level = meta.get(META_LOG_LEVEL)
    if log_level is not None and log_level not in LOG_LEVELS:
        raise JsonRpcError(
            INVALID_PARAMS, f"_meta {META_LOG_LEVEL} must be one of {', '.join(LOG_LEVELS)}", request_id=request.id
        )
    client_info = meta.get(META_CLIENT_INFO)
    return ModernRequest(
        protocol_version=version,
        client_capabilities=capabilities,
        client_info=client_info if isinstance(client_info, Mapping) else None,
        log_level=log_level,
        headers=headers,
    )


def method_not_found(method: str) -> str:
    """The -32601 message of a stateless request; says when the revision removed the method."""
    if method in REMOVED_METHODS:
        return f"Method not found: {method} (removed in MCP 2026-07-28; this request is served statelessly)"
    return f"Method not found: {method}"
