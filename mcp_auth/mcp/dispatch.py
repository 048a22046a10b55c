"""The dispatcher: one MCP request or notification in, a result or a refusal out.

Dispatch is the second lock of the pipeline (step 7). Transports call
`Dispatcher.dispatch` only with a `Call` that carries the principal which
passed the bearer check; before any handler runs, dispatch asks whether that
principal is still current (a revoked token stops here, on open sessions and
sockets too) and whether its scope allows the tool, resource or prompt. The
list methods show only what the principal may use.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .asyncrun import _AsyncRunner, _CallThread
from .content import ToolResult, text_content
from .context import AsyncContext, Call, Context, LiveSessions, McpSession
from .handlers_resources import ResourceHandlers
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    JsonRpcError,
    Notification,
    Request,
)
from .outcome import PrincipalRevoked, RequestCancelled, ScopeDenied
from .protocol import (
    _LOG_RANK,
    LATEST_PROTOCOL_VERSION,
    LOG_LEVELS,
    MAX_COMPLETION_VALUES,
    MAX_URI_LENGTH,
    SUPPORTED_PROTOCOL_VERSIONS,
)
from .registry import Registry, _is_coroutine_callable, _Prompt, _Resource, _Tool
from .results import (
    MAX_CLIENT_FIELDS,
    MAX_CLIENT_STRING,
    _bounded_strings,
    _page,
    _prompt_messages,
    tool_result,
)
from .schema import Signature
from .session_state import AlreadyNegotiated

logger = logging.getLogger("mcp_auth.server")  # the name operators and tests filter on


class AuditSink(Protocol):
    """Where dispatch reports tool calls; the `mcp_auth.audit` module is one (the MCP layer does not import it)."""

    def tool_call(self, client_address: str, token_name: str, tool: str, outcome: str) -> None: ...

    def escape_controls(self, value: str) -> str: ...


class Dispatcher(ResourceHandlers):
    """Answers the MCP methods for one server's registry; what transports and the app hold.

    `dispatch` runs a request (step 7 first), `handle_notification` takes the
    client's notifications, `may_send_before_answer` tells a transport whether
    a call may stream; `notify_*` reach every live session, of every transport,
    through the registry the app hands over (`attach_sessions`).
    """

    def __init__(
        self, registry: Registry, audit: AuditSink, name: str, version: str, instructions: str | None = None
    ) -> None:
        self.name = name
        self.version = version
        self.instructions = instructions
        self._registry = registry
        self._audit = audit
        # The registries of live sessions (one per app serving this dispatcher, usually
        # one), for notifications outside a request. Weak: an app dropped without
        # close() takes its sessions with it.
        self._registries: weakref.WeakSet[LiveSessions] = weakref.WeakSet()
        self._registries_lock = threading.Lock()
        # Where async handlers run; a dispatcher dropped without close() still stops its loop.
        self._async = _AsyncRunner()
        weakref.finalize(self, self._async.stop)
        self._methods: dict[str, Callable[[Request, Call], dict[str, Any]]] = {
            "initialize": self._initialize,
            "ping": lambda request, call: {},
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
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

    # --- notifications outside a request -----------------------------------

    def attach_sessions(self, live: LiveSessions) -> None:
        """Reach the sessions of `live` with notifications (the app does this once, at construction)."""
        with self._registries_lock:
            self._registries.add(live)

    def detach_sessions(self, live: LiveSessions) -> None:
        with self._registries_lock:
            self._registries.discard(live)

    def _sessions(self) -> list[McpSession]:
        with self._registries_lock:
            registries = list(self._registries)
        return [session for live in registries for session in live.each_negotiated()]

    def notify_resource_updated(self, uri: str) -> None:
        """Tell every session subscribed to `uri` that it changed (notifications/resources/updated)."""
        message = Notification("notifications/resources/updated", {"uri": uri}).to_dict()
        for session in self._sessions():
            if session.state.is_subscribed(uri):
                session.push(message)

    def notify_list_changed(self, kind: str) -> None:
        """Tell every session that the tools, resources or prompts changed."""
        if kind not in ("tools", "resources", "prompts"):
            raise ValueError("kind is 'tools', 'resources' or 'prompts'")
        message = Notification(f"notifications/{kind}/list_changed").to_dict()
        for session in self._sessions():
            session.push(message)

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

    def dispatch(self, request: Request, call: Call) -> dict[str, Any]:
        """Run one request; returns its result or raises JsonRpcError / DispatchDenied."""
        # Step 7, the second lock: whatever the transport did, no handler runs
        # for a principal whose token is gone.
        if not call.principal_is_current(call.principal):
            raise PrincipalRevoked("the token of this session was revoked; authenticate again", request.id)
        method = self._methods.get(request.method)
        if method is None:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {request.method}", request_id=request.id)
        if not call.session.state.negotiated and request.method not in ("initialize", "ping"):
            raise JsonRpcError(INVALID_REQUEST, "Send initialize before other requests", request_id=request.id)
        try:
            return method(request, call)
        except JsonRpcError as exc:
            exc.request_id = request.id
            raise

    def handle_notification(self, notification: Notification, call: Call) -> None:
        """Client notifications: initialized, cancelled; others are ignored as the spec allows."""
        if not call.principal_is_current(call.principal):
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
        cancelled = call.session.in_flight.begin(request.id)
        try:
            helper: _CallThread | None = None
            if signature is not None and signature.context_parameter:
                if signature.context_type is AsyncContext or _is_coroutine_callable(fn):
                    helper = _CallThread()
                    kwargs[signature.context_parameter] = AsyncContext(call, request, cancelled, helper)
                else:
                    kwargs[signature.context_parameter] = Context(call, request, cancelled)
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
        version = requested if requested in SUPPORTED_PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
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
            "capabilities": {
                "tools": {"listChanged": True},
                "resources": {"subscribe": True, "listChanged": True},
                "prompts": {"listChanged": True},
                "logging": {},
                "completions": {},
            },
            "serverInfo": {"name": self.name, "version": self.version},
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    # tools

    def _tools_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [t.definition for t in self._registry.tools.values() if call.principal.may_use(t.name)]
        return _page(visible, request.params, "tools")

    def _tools_call(self, request: Request, call: Call) -> dict[str, Any]:
        name = request.params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(INVALID_PARAMS, "tools/call needs params.name (a string)")
        # Scope before existence: a scoped token learns nothing about tools outside its scope.
        if not call.principal.may_use(name):
            # Audited once, as a denial, by the transport that answers it.
            raise ScopeDenied(f"the token '{call.principal.name}' is not allowed to call the tool '{name}'", request.id)
        tool = self._registry.tools.get(name)
        if tool is None:
            raise JsonRpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        arguments = request.params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise JsonRpcError(INVALID_PARAMS, "tools/call params.arguments must be an object")
        problems = tool.arguments.problems(arguments)
        if problems:
            self._audit.tool_call(call.client_address, call.principal.name, name, "invalid_arguments")
            return ToolResult([text_content("Invalid arguments: " + "; ".join(problems))], is_error=True).to_dict()
        try:
            value = self._run(request, call, tool.fn, tool.signature, arguments)
            result = tool_result(value, tool.output_schema)
        except RequestCancelled as exc:
            self._audit.tool_call(call.client_address, call.principal.name, name, "cancelled")
            raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
        except Exception as exc:  # a tool's failure is a result the model can read, not a protocol error
            self._handler_failed("tool", name, exc)
            self._audit.tool_call(call.client_address, call.principal.name, name, "error")
            return ToolResult([text_content(f"{type(exc).__name__}: {exc}")], is_error=True).to_dict()
        if tool.output is not None and "structuredContent" in result and not result.get("isError"):
            wrong = tool.output.problems(result["structuredContent"], "structuredContent")
            if wrong:
                # The tool broke its own published contract: the client gets an error, not bad data.
                logger.warning("tool %s returned structuredContent that does not match its outputSchema", name)
                self._audit.tool_call(call.client_address, call.principal.name, name, "invalid_output")
                message = "The tool's output does not match its outputSchema: " + "; ".join(wrong)
                return ToolResult([text_content(message)], is_error=True).to_dict()
        self._audit.tool_call(call.client_address, call.principal.name, name, "ok")
        return result

    # prompts

    def _prompts_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [p.definition for p in self._registry.prompts.values() if call.principal.may_use(p.name, "prompt")]
        return _page(visible, request.params, "prompts")

    def _prompts_get(self, request: Request, call: Call) -> dict[str, Any]:
        name = request.params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(INVALID_PARAMS, "prompts/get needs params.name (a string)")
        if not call.principal.may_use(name, "prompt"):
            raise ScopeDenied(
                f"the token '{call.principal.name}' is not allowed to get the prompt '{name}'", request.id
            )
        prompt = self._registry.prompts.get(name)
        if prompt is None:
            raise JsonRpcError(INVALID_PARAMS, f"Unknown prompt: {name}")
        arguments = request.params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise JsonRpcError(INVALID_PARAMS, "prompts/get params.arguments must be an object")
        problems = prompt.arguments.problems(arguments)
        if problems:
            raise JsonRpcError(INVALID_PARAMS, "Invalid prompt arguments: " + "; ".join(problems))
        try:
            value = self._run(request, call, prompt.fn, prompt.signature, arguments)
            result: dict[str, Any] = {"messages": _prompt_messages(value)}
        except RequestCancelled as exc:
            raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
        except Exception as exc:
            self._handler_failed("prompt", name, exc)
            raise JsonRpcError(INTERNAL_ERROR, f"Prompt {name} failed: {type(exc).__name__}: {exc}") from None
        if "description" in prompt.definition:
            result["description"] = prompt.definition["description"]
        return result

    # logging and completion

    def _set_level(self, request: Request, call: Call) -> dict[str, Any]:
        level = request.params.get("level")
        if not isinstance(level, str) or level not in _LOG_RANK:
            raise JsonRpcError(INVALID_PARAMS, f"Invalid log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
        call.session.state.set_log_level(level)
        return {}

    def _complete(self, request: Request, call: Call) -> dict[str, Any]:
        ref = request.params.get("ref")
        argument = request.params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise JsonRpcError(INVALID_PARAMS, "completion/complete needs params.ref and params.argument (objects)")
        ref_type = ref.get("type")
        ref_key = ref.get("name") if ref_type == "ref/prompt" else ref.get("uri")
        arg_name, arg_value = argument.get("name"), argument.get("value", "")
        if not isinstance(ref_key, str) or not isinstance(arg_name, str) or not isinstance(arg_value, str):
            raise JsonRpcError(
                INVALID_PARAMS, "completion/complete: ref needs name or uri; argument needs name and value"
            )
        scope_kind = "prompt" if ref_type == "ref/prompt" else "resource"
        completer = self._registry.completions.get((str(ref_type), ref_key))
        values: list[str] = []
        if completer is not None and call.principal.may_use(ref_key, scope_kind):
            context = request.params.get("context")
            context_arguments = context.get("arguments", {}) if isinstance(context, dict) else {}
            try:
                suggested = self._invoke(request, call, completer, (arg_name, arg_value, context_arguments), {})
                values = [str(v) for v in suggested]
            except RequestCancelled as exc:
                raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
            except Exception as exc:
                self._handler_failed("completion for", ref_key, exc)
                raise JsonRpcError(INTERNAL_ERROR, f"Completion failed: {type(exc).__name__}: {exc}") from None
        return {
            "completion": {
                "values": values[:MAX_COMPLETION_VALUES],
                "total": len(values),
                "hasMore": len(values) > MAX_COMPLETION_VALUES,
            }
        }
