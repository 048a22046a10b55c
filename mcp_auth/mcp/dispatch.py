"""The dispatcher: one MCP request or notification in, an `Outcome` out.

Dispatch is the second lock of the pipeline (step 7). Transports call
`Dispatcher.outcome` only with a `Call` that carries the principal which
passed the bearer check; before any handler runs, dispatch asks whether that
principal is still current (`Call.is_current`: a revoked token stops here, on
open sessions and sockets too) and whether its scope allows the tool, resource
or prompt. The list methods show only what the principal may use. How the
request ended (result, error, refusal, crash; for a tools/call also the audit
record) is the `Outcome` (`mcp_auth.mcp.outcome`) that each transport maps to
its wire answer in one function.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .asyncrun import _AsyncRunner, _CallThread
from .content import ToolResult, text_content
from .context import AsyncContext, Call, Context
from .handlers_listen import ListenHandlers
from .handlers_modern import ModernResults
from .handlers_prompts import PromptHandlers
from .handlers_resources import ResourceHandlers
from .jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    JsonRpcError,
    Notification,
    Request,
)
from .ladder import MODERN_METHODS, MODERN_ONLY_METHODS, method_not_found
from .modern import HEADER_MISMATCH
from .mrtr import MRTR_METHODS, InputRequired, Replay, ReplayRefused
from .notifications import SessionNotifications
from .outcome import (
    TOOL_CANCELLED,
    TOOL_ERROR,
    TOOL_INPUT_REQUIRED,
    TOOL_INVALID_ARGUMENTS,
    TOOL_INVALID_OUTPUT,
    TOOL_OK,
    Answered,
    Crashed,
    Failed,
    Outcome,
    PrincipalRevoked,
    RequestCancelled,
    RequestStateRefused,
    Revoked,
    ScopeDenied,
    ScopeRefused,
    ToolCallFailed,
    ToolCallRecord,
)
from .param_headers import check_param_headers
from .protocol import (
    _LOG_RANK,
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_PROTOCOL_VERSION,
    LOG_LEVELS,
    MAX_URI_LENGTH,
)
from .registry import Registry, _is_coroutine_callable, _Prompt, _Resource, _Tool
from .request_state import RequestStateCodec, StateBinding
from .results import (
    MAX_CLIENT_FIELDS,
    MAX_CLIENT_STRING,
    _bounded_strings,
    _page,
    tool_result,
)
from .schema import Signature
from .session_state import AlreadyNegotiated

logger = logging.getLogger("mcp_auth.server")  # the name operators and tests filter on


class AuditSink(Protocol):
    """How dispatch escapes client text in its log lines; the `mcp_auth.audit` module is one
    (the MCP layer does not import it). Tool calls are audited from their `Outcome`, by the transports."""

    def escape_controls(self, value: str) -> str: ...


class Dispatcher(ResourceHandlers, PromptHandlers, ModernResults, SessionNotifications, ListenHandlers):
    """Answers the MCP methods for one server's registry; what transports and the app hold.

    `outcome` runs a request (step 7 first) and says how it ended (what
    transports call), `handle_notification` takes the client's notifications,
    `may_send_before_answer` tells a transport whether a call may stream;
    `notify_*` reach every live session, of every transport, through the
    registry the app hands over (`attach_sessions`).
    """

    def __init__(
        self, registry: Registry, audit: AuditSink, name: str, version: str, instructions: str | None = None
    ) -> None:
        self.name = name
        self.version = version
        self.instructions = instructions
        self._registry = registry
        self._audit = audit
        SessionNotifications.__init__(self)
        # Where async handlers run; a dispatcher dropped without close() still stops its loop.
        self._async = _AsyncRunner()
        weakref.finalize(self, self._async.stop)
        # Seals the stateless era's requestState. An app replaces this one-process key with
        # the deployment's key ring (`use_request_state`), so a retry may land on any worker.
        self.request_state = RequestStateCodec.ephemeral()
        self._methods: dict[str, Callable[[Request, Call], dict[str, Any]]] = {
            "initialize": self._initialize,
            "server/discover": self._discover,
            "ping": lambda request, call: {},
            "tools/list": self._tools_list,
            "tools/call": lambda request, call: self._tools_call(request, call)[0],
            "resources/list": self._resources_list,
            "resources/templates/list": self._templates_list,
            "resources/read": self._resources_read,
            "prompts/list": self._prompts_list,
            "prompts/get": self._prompts_get,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "logging/setLevel": self._set_level,
            "completion/complete": self._complete,
        }

    def _handler_failed(self, kind: str, name: str, exc: Exception) -> None:
        # A handler's failure is answered to the client; its author needs the traceback
        # to fix it, so it is one WARNING record with the handler's name and traceback
        # (a client's doing as often as the tool's; never a token: handlers get none).
        # `name` may be a client's URI: escaped here too, for handlers with their own formatter.
        logger.warning("%s %s raised %s", kind, self._audit.escape_controls(name), type(exc).__name__, exc_info=exc)

    def use_request_state(self, codec: RequestStateCodec) -> None:
        """Seal and open requestState with `codec` (the app hands over the deployment's key ring)."""
        self.request_state = codec

    # --- the loop of async handlers ------------------------------------------

    def close(self) -> None:
        """Stop the event loop of async handlers, cancelling those still running.

        The app calls this when it closes. Plain handlers are not affected, and
        a later async call starts the loop again.
        """
        self._async.stop()

    # --- dispatch ---------------------------------------------------------

    def may_send_before_answer(self, request: Request) -> bool:
        """Whether handling `request` may send messages before its answer.

        Only a handler that takes a Context can (progress, logs, requests to
        the client, close_stream); transports answer everything else inline,
        as plain JSON, without handing the call to another thread.
        """
        name = request.params.get("name")
        target: _Tool | _Resource | _Prompt | None = None
        if request.method == "tools/call" and isinstance(name, str):
            target = self._registry.tools.get(name)
        elif request.method == "prompts/get" and isinstance(name, str):
            target = self._registry.prompts.get(name)
        elif request.method == "resources/read":
            uri = request.params.get("uri")
            # No matching here: that waits for dispatch, after the scope check.
            # A head-and-tail look says whether a handler that takes a Context could answer.
            if isinstance(uri, str) and len(uri) <= MAX_URI_LENGTH:
                return self._resource_may_stream(uri)
        return target is not None and target.signature.context_parameter is not None

    def outcome(self, request: Request, call: Call) -> Outcome:
        """Run one request and say how it ended; what transports call.

        Every exception is caught here, once: the refusals and errors become
        their outcomes, anything else (a bug, even SystemExit from a tool) is
        logged once with its traceback and becomes `Crashed`, so a transport's
        thread always has an answer to send and never dies.
        """
        try:
            result, tool_call = self._answer(request, call)
            return Answered(request.id, result, tool_call)
        except JsonRpcError as exc:
            return Failed.of(exc, request.id)
        except ToolCallFailed as exc:
            return Failed.of(exc.error, request.id, exc.record)
        except ScopeDenied as exc:
            return ScopeRefused(request.id, exc.message)
        except PrincipalRevoked:
            return Revoked(request.id)
        except BaseException:  # the answering thread must not die, nor wait forever
            logger.exception("unexpected error handling %s", self._audit.escape_controls(request.method))
            return Crashed(request.id)

    def dispatch(self, request: Request, call: Call) -> dict[str, Any]:
        """Run one request; its result, or raises JsonRpcError / DispatchDenied (or what a handler
        raised unexpectedly). For tests and embedders that want exceptions; transports call `outcome`."""
        try:
            return self._answer(request, call)[0]
        except ToolCallFailed as exc:
            raise exc.error from None

    def _answer(self, request: Request, call: Call) -> tuple[dict[str, Any], ToolCallRecord | None]:
        # Step 7, the second lock: whatever the transport did, no handler runs
        # for a principal whose token is gone.
        if not call.is_current():
            raise PrincipalRevoked("the token of this session was revoked; authenticate again", request.id)
        method = self._methods.get(request.method)
        if call.modern is not None:
            # Stateless: no handshake to wait for; only the revision's own methods exist.
            if method is None or request.method not in MODERN_METHODS:
                raise JsonRpcError(METHOD_NOT_FOUND, method_not_found(request.method), request_id=request.id)
        elif method is None or request.method in MODERN_ONLY_METHODS:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {request.method}", request_id=request.id)
        elif not call.session.state.negotiated and request.method not in ("initialize", "ping"):
            raise JsonRpcError(INVALID_REQUEST, "Send initialize before other requests", request_id=request.id)
        try:
            if request.method == "tools/call":
                result, record = self._tools_call(request, call)
            else:
                result, record = method(request, call), None
        except InputRequired as paused:  # a stateless-era round ended asking the client (mcp_auth.mcp.mrtr)
            name = request.params.get("name")
            is_tool = request.method == "tools/call" and isinstance(name, str)
            result, record = paused.result, ToolCallRecord(str(name), TOOL_INPUT_REQUIRED) if is_tool else None
        except ReplayRefused as exc:
            if exc.audit_reason is not None:
                raise RequestStateRefused(exc.code, exc.message, exc.data, exc.audit_reason, request.id) from None
            raise JsonRpcError(exc.code, exc.message, exc.data, request.id) from None
        except JsonRpcError as exc:
            exc.request_id = request.id
            raise
        except ToolCallFailed as exc:
            exc.error.request_id = request.id
            raise
        if call.modern is not None:
            result = self._modern_result(request.method, result, call)
        return result, record

    def handle_notification(self, notification: Notification, call: Call) -> None:
        """Client notifications: initialized, cancelled; others are ignored as the spec allows."""
        if not call.is_current():
            return  # step 7 for notifications: a revoked principal changes nothing
        if notification.method == "notifications/initialized":
            call.session.state.confirm_initialized()
        elif notification.method == "notifications/cancelled":
            request_id = notification.params.get("requestId")
            if isinstance(request_id, (str, int)):
                call.session.in_flight.cancel(request_id)

    def _run(
        self, request: Request, call: Call, fn: Callable[..., Any], signature: Signature, arguments: dict[str, Any]
    ) -> Any:
        kwargs = {name: arguments[name] for name in signature.parameters if name in arguments}
        return self._invoke(request, call, fn, (), kwargs, signature)

    def _invoke(
        self,
        request: Request,
        call: Call,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        signature: Signature | None = None,
    ) -> Any:
        """Call a handler on this thread; what it returns, awaited on the loop when it is awaitable."""
        replay: Replay | None = None
        if call.modern is not None and request.method in MRTR_METHODS:
            # Verifies the retry's requestState and inputResponses before the handler runs.
            binding = StateBinding.of(request.method, request.params, call.principal)
            replay = Replay(request, call.modern, binding, self.request_state)
        cancelled = call.session.in_flight.begin(request.id)
        try:
            helper: _CallThread | None = None
            if signature is not None and signature.context_parameter:
                if signature.context_type is AsyncContext or _is_coroutine_callable(fn):
                    helper = _CallThread()
                    kwargs[signature.context_parameter] = AsyncContext(call, request, cancelled, helper, replay)
                else:
                    kwargs[signature.context_parameter] = Context(call, request, cancelled, replay)
            value = fn(*args, **kwargs)
            if not inspect.isawaitable(value):
                return value
            return self._async.run(
                value, helper or _CallThread(), lambda: cancelled.is_set() or call.session.closed.is_set()
            )
        finally:
            call.session.in_flight.end(request.id)

    def _initialize(self, request: Request, call: Call) -> dict[str, Any]:
        state = call.session.state
        if state.negotiated:
            raise JsonRpcError(INVALID_REQUEST, "This session is already initialized")
        requested = request.params.get("protocolVersion")
        if not isinstance(requested, str):
            raise JsonRpcError(INVALID_PARAMS, "initialize needs params.protocolVersion (a string)")
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
        capabilities = request.params.get("capabilities")
        # Only which capabilities the client has matters; keep their names, bounded.
        client_capabilities: dict[str, Any] = {
            name: True
            for name in (list(capabilities)[:MAX_CLIENT_FIELDS] if isinstance(capabilities, dict) else [])
            if isinstance(name, str) and len(name) <= MAX_CLIENT_STRING
        }
        try:
            # From here the session counts as negotiated, so notifications reach it.
            state.negotiate(version, _bounded_strings(request.params.get("clientInfo")), client_capabilities)
        except AlreadyNegotiated:  # a second initialize that raced the first
            raise JsonRpcError(INVALID_REQUEST, "This session is already initialized") from None
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": self._capabilities(),
            "serverInfo": {"name": self.name, "version": self.version},
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    # tools

    def _tools_list(self, request: Request, call: Call) -> dict[str, Any]:
        modern = call.modern is not None
        visible = [t.listed(modern) for t in self._registry.tools.values() if call.principal.may_use(t.name)]
        return _page(visible, request.params, "tools")

    def _tools_call(self, request: Request, call: Call) -> tuple[dict[str, Any], ToolCallRecord]:
        """The result, and how the call ended for the audit log (written from the outcome, by the transport)."""
        name = request.params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(INVALID_PARAMS, "tools/call needs params.name (a string)")
        # Scope before existence: a scoped token learns nothing about tools outside its scope.
        if not call.principal.may_use(name):
            # Audited once, as a denial, from its outcome (no tool_call record: the tool was not reached).
            raise ScopeDenied(f"the token '{call.principal.name}' is not allowed to call the tool '{name}'", request.id)
        tool = self._registry.tools.get(name)
        if tool is None:
            raise JsonRpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        arguments = request.params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise JsonRpcError(INVALID_PARAMS, "tools/call params.arguments must be an object")
        if call.modern is not None and call.modern.headers is not None:
            # After the scope check, so a refused token learns nothing from its headers.
            mismatch = check_param_headers(tool.param_headers, arguments, call.modern.headers)
            if mismatch is not None:
                raise JsonRpcError(HEADER_MISMATCH, mismatch)
        problems = tool.arguments.problems(arguments)
        if problems:
            invalid = ToolResult([text_content("Invalid arguments: " + "; ".join(problems))], is_error=True)
            return invalid.to_dict(), ToolCallRecord(name, TOOL_INVALID_ARGUMENTS)
        try:
            value = self._run(request, call, tool.fn, tool.signature, arguments)
            modern = call.modern is not None
            result = tool_result(value, tool.output_schema if tool.structured_in(modern) else None, modern=modern)
        except RequestCancelled as exc:
            cancelled = JsonRpcError(REQUEST_CANCELLED, str(exc))
            raise ToolCallFailed(cancelled, ToolCallRecord(name, TOOL_CANCELLED)) from None
        except Exception as exc:  # a tool's failure is a result the model can read, not a protocol error
            self._handler_failed("tool", name, exc)
            failed = ToolResult([text_content(f"{type(exc).__name__}: {exc}")], is_error=True)
            return failed.to_dict(), ToolCallRecord(name, TOOL_ERROR)
        if (
            tool.output is not None
            and tool.structured_in(modern)
            and "structuredContent" in result
            and not result.get("isError")
        ):
            wrong = tool.output.problems(result["structuredContent"], "structuredContent")
            if wrong:
                # The tool broke its own published contract: the client gets an error, not bad data.
                logger.warning("tool %s returned structuredContent that does not match its outputSchema", name)
                message = "The tool's output does not match its outputSchema: " + "; ".join(wrong)
                invalid = ToolResult([text_content(message)], is_error=True)
                return invalid.to_dict(), ToolCallRecord(name, TOOL_INVALID_OUTPUT)
        return result, ToolCallRecord(name, TOOL_OK)

    # prompts

    # logging

    def _set_level(self, request: Request, call: Call) -> dict[str, Any]:
        level = request.params.get("level")
        if not isinstance(level, str) or level not in _LOG_RANK:
            raise JsonRpcError(INVALID_PARAMS, f"Invalid log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
        call.session.state.set_log_level(level)
        return {}
