"""How one dispatched request ended: the `Outcome` a transport turns into its wire answer.

`Dispatcher.outcome` runs a request and returns exactly one of these, having
caught every exception once (an unexpected one is logged once, there):

- `Answered`: a result (a tool's own failure is a result too, `isError`; so is a
  stateless-era `input_required`, the pause of a multi round-trip request);
- `Failed`: a JSON-RPC error (unknown method, bad params, cancelled, a refused requestState, ...);
- `ScopeRefused`: step 7 refused the call, the principal's scope does not reach it;
- `Revoked`: step 7 refused the call, the principal's token is no longer current;
- `Crashed`: something unexpected; the client learns only "Internal error".

A tools/call's outcome carries a `ToolCallRecord` (the audit log's tool_call
event), so tool calls are audited where outcomes are, not inside the handlers.
Each transport has one function that maps an Outcome to its wire form (HTTP:
`HttpTransport._answer`; WebSocket: `WebSocketTransport._answer`), and that
function hands it to `mcp_auth.audit.outcome`, the one place that audits
step-7 denials and tool calls. A transport that notices revocation itself
(an event stream, a socket between messages) maps `Revoked()` the same way.

The exceptions below are how the handlers inside the dispatcher say "refused"
or "cancelled"; they never leave `Dispatcher.outcome`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .jsonrpc import INTERNAL_ERROR, ErrorResponse, JsonRpcError, RequestId, Response


class DispatchDenied(Exception):
    """Step 7 refused the call; `Dispatcher.outcome` turns the subclasses into outcomes."""

    def __init__(self, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class RequestStateRefused(JsonRpcError):
    """A retry's requestState failed verification. The client gets one frozen message for every
    cause; `reason` (expired, signature, principal, ...) is for the audit log only."""

    def __init__(self, code: int, message: str, data: Any, reason: str, request_id: RequestId | None = None) -> None:
        super().__init__(code, message, data, request_id)
        self.reason = reason


class RequestCancelled(Exception):
    """The call was cancelled (notifications/cancelled) or its session ended."""


class ScopeDenied(DispatchDenied):
    """The principal's scope does not include what it asked for."""


class PrincipalRevoked(DispatchDenied):
    """The principal's token was removed after the session or socket opened."""


# What the audit log's tool_call event says about how a call ended.
TOOL_OK = "ok"
TOOL_ERROR = "error"
TOOL_INVALID_ARGUMENTS = "invalid_arguments"
TOOL_INVALID_OUTPUT = "invalid_output"
TOOL_CANCELLED = "cancelled"
# Stateless era: the round ended asking the client for input (input_required); a retry follows.
TOOL_INPUT_REQUIRED = "input_required"


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A tools/call that reached its tool (or its argument check), and how it ended."""

    tool: str
    outcome: str


class ToolCallFailed(Exception):
    """A tools/call that ended in a JSON-RPC error after reaching its tool (cancelled)."""

    def __init__(self, error: JsonRpcError, record: ToolCallRecord) -> None:
        super().__init__(error.message)
        self.error = error
        self.record = record


@dataclass(frozen=True, slots=True)
class Answered:
    """The request has a result."""

    request_id: RequestId
    result: dict[str, Any]
    tool_call: ToolCallRecord | None = None

    def message(self) -> dict[str, Any]:
        return Response(self.request_id, self.result).to_dict()


@dataclass(frozen=True, slots=True)
class Failed:
    """The request is answered with a JSON-RPC error."""

    request_id: RequestId | None
    code: int
    error_message: str
    data: Any = None
    tool_call: ToolCallRecord | None = None
    # Why a requestState was refused, for the audit log (never sent to the client).
    state_refusal: str | None = None

    @classmethod
    def of(cls, error: JsonRpcError, request_id: RequestId | None, tool_call: ToolCallRecord | None = None) -> Failed:
        refusal = error.reason if isinstance(error, RequestStateRefused) else None
        return cls(request_id, error.code, error.message, error.data, tool_call, refusal)

    def message(self) -> dict[str, Any]:
        return ErrorResponse(self.request_id, self.code, self.error_message, self.data).to_dict()


@dataclass(frozen=True, slots=True)
class ScopeRefused:
    """Step 7: the principal may not use what it asked for; `reason` says so, for the client."""

    request_id: RequestId | None
    reason: str


@dataclass(frozen=True, slots=True)
class Revoked:
    """Step 7: the principal's token was revoked; the session or socket ends."""

    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class Crashed:
    """Something unexpected (already logged with its traceback); the client gets no detail."""

    request_id: RequestId | None

    def message(self) -> dict[str, Any]:
        return ErrorResponse(self.request_id, INTERNAL_ERROR, "Internal error").to_dict()


Outcome = Answered | Failed | ScopeRefused | Revoked | Crashed
