"""JSON-RPC 2.0 messages: parse, validate, serialize. No I/O.

Everything here works on bytes and plain Python values; transports hand this
module the bytes a client sent and get back a typed message, or a
`JsonRpcError` that already knows the error code and the id to answer with.
Nothing in this module trusts its input: sizes are bounded by the transport
before parsing, and nesting depth is bounded here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# MCP-defined codes.
RESOURCE_NOT_FOUND = -32002
UNSUPPORTED_PROTOCOL_VERSION = -32022
# Server-defined (the -32000..-32099 range is reserved for implementations).
FORBIDDEN = -32003
REQUEST_CANCELLED = -32800

# Deeper JSON than this is refused before anything walks it: a legitimate MCP
# message nests a handful of levels, and unbounded depth is a recursion bomb.
MAX_JSON_DEPTH = 64

RequestId = str | int


class JsonRpcError(Exception):
    """A JSON-RPC error to send back; `request_id` is None when it is unknown."""

    def __init__(self, code: int, message: str, data: Any = None, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.request_id = request_id

    def to_message(self) -> ErrorResponse:
        return ErrorResponse(self.request_id, self.code, self.message, self.data)


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": self.id, "method": self.method}
        if self.params:
            out["params"] = self.params
        return out


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"jsonrpc": "2.0", "method": self.method}
        if self.params:
            out["params"] = self.params
        return out


@dataclass(frozen=True, slots=True)
class Response:
    id: RequestId
    result: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": self.id, "result": self.result}


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    id: RequestId | None
    code: int
    message: str
    data: Any = None

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": self.id, "error": error}


Message = Request | Notification | Response | ErrorResponse


class BatchNotSupported(JsonRpcError):
    """A JSON array body: batching was removed from MCP in 2025-06-18."""

    def __init__(self) -> None:
        super().__init__(
            INVALID_REQUEST,
            "JSON-RPC batches are not supported (removed in MCP 2025-06-18): send one message per request",
        )


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when containers nest deeper than `limit`; iterative, so it cannot overflow."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if isinstance(child, (dict, list)))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return False


def _valid_id(value: Any) -> bool:
    # MCP: "string or integer"; bool is an int subclass in Python and is not an id.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def loads(data: bytes | str) -> Any:
    """Decode JSON with the depth bound; raises JsonRpcError(PARSE_ERROR)."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRpcError(PARSE_ERROR, "Parse error: the body is not valid UTF-8") from None
    else:
        text = data
    # Counting brackets is a cheap upper bound on depth; only walk when it could matter.
    could_be_deep = text.count("[") + text.count("{") > MAX_JSON_DEPTH
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise JsonRpcError(PARSE_ERROR, f"Parse error: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise JsonRpcError(PARSE_ERROR, f"Parse error: {exc}") from None
    if could_be_deep and _depth_exceeds(value, MAX_JSON_DEPTH):
        raise JsonRpcError(PARSE_ERROR, f"Parse error: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def parse_message(data: bytes | str) -> Message:
    """Parse exactly one JSON-RPC 2.0 message.

    Raises JsonRpcError with PARSE_ERROR for bad JSON, INVALID_REQUEST for a
    well-formed value that is not a JSON-RPC message (the error carries the
    request id when one could be read), and BatchNotSupported for an array.
    """
    value = loads(data)
    if isinstance(value, list):
        raise BatchNotSupported()
    return message_from_value(value)


def message_from_value(value: Any) -> Message:
    if not isinstance(value, dict):
        raise JsonRpcError(INVALID_REQUEST, "Invalid Request: a JSON-RPC message must be a JSON object")
    raw_id = value.get("id")
    known_id = raw_id if _valid_id(raw_id) else None
    if value.get("jsonrpc") != "2.0":
        raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', request_id=known_id)

    if "method" in value:
        method = value["method"]
        if not isinstance(method, str) or not method:
            raise JsonRpcError(
                INVALID_REQUEST, 'Invalid Request: "method" must be a non-empty string', request_id=known_id
            )
        params = value.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            # MCP only uses by-name parameters.
            raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: "params" must be an object', request_id=known_id)
        if "id" not in value:
            return Notification(method, params)
        if known_id is None:
            raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: "id" must be a string or an integer')
        return Request(known_id, method, params)

    if "result" in value:
        if known_id is None:
            raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: a response needs a string or integer "id"')
        result = value["result"]
        if not isinstance(result, dict):
            raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: "result" must be an object', request_id=known_id)
        return Response(known_id, result)

    if "error" in value:
        error = value["error"]
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(error.get("message"), str):
            raise JsonRpcError(
                INVALID_REQUEST,
                'Invalid Request: "error" needs an integer "code" and a string "message"',
                request_id=known_id,
            )
        return ErrorResponse(known_id, code, error["message"], error.get("data"))

    raise JsonRpcError(
        INVALID_REQUEST, 'Invalid Request: a message needs "method", "result" or "error"', request_id=known_id
    )


def dumps(message: Message | dict[str, Any]) -> bytes:
    """Serialize one message compactly.

    ASCII output on purpose: a lone surrogate that arrived as "\\ud800" in a
    client's JSON cannot be encoded as UTF-8, but round-trips as an escape.
    """
    value = message if isinstance(message, dict) else message.to_dict()
    return json.dumps(value, separators=(",", ":")).encode("ascii")
