"""McpServer: the public way to write tools, resources and prompts, and the dispatcher.

Tool authors decorate plain functions; this module infers their schemas,
validates arguments, calls them, and turns what they return into MCP results.

Dispatch is the second lock of the pipeline (DESIGN.md step 7). Transports
call `dispatch` only with a `Call` that carries the principal which passed the
bearer check; before any handler runs, dispatch asks the token source whether
that principal is still current (a revoked token stops here, on open sessions
and sockets too) and whether its scope allows the tool, resource or prompt.
The list methods show only what the principal may use.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any, Protocol

from . import audit
from ._version import __version__ as _package_version
from .content import ToolResult, is_content, resource_contents, text_content
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    RESOURCE_NOT_FOUND,
    ErrorResponse,
    JsonRpcError,
    Notification,
    Request,
    Response,
)
from .schema import JsonSchema, Signature, function_schema, return_schema, validate
from .sessions import Session
from .tokens import Principal

logger = logging.getLogger("mcp_auth.server")

# Newest first; initialize answers with the client's version when it is here,
# else with the newest.
SUPPORTED_PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
LATEST_PROTOCOL_VERSION = SUPPORTED_PROTOCOL_VERSIONS[0]
# Streams are resumable (priming events, Last-Event-ID) for sessions of this revision on.
RESUMABLE_SINCE = "2025-11-25"


def protocol_at_least(version: str | None, revision: str) -> bool:
    """Whether a session speaking `version` has what MCP revision `revision` added.

    Revisions are ordered by their place in SUPPORTED_PROTOCOL_VERSIONS, never as
    strings. A version that is not one of them (None before initialize) has
    nothing a later revision added; asking about an unknown revision is a bug.
    """
    if revision not in SUPPORTED_PROTOCOL_VERSIONS:
        raise ValueError(f"unknown MCP revision {revision!r}")
    if version not in SUPPORTED_PROTOCOL_VERSIONS:
        return False
    # Newest first: a smaller index is a later revision.
    return SUPPORTED_PROTOCOL_VERSIONS.index(version) <= SUPPORTED_PROTOCOL_VERSIONS.index(revision)


# Items per page of the list methods: small enough to keep responses small,
# large enough that ordinary servers answer in one page.
PAGE_SIZE = 100
# Resource subscriptions one session may hold: plenty for a client, bounded for the server.
MAX_SUBSCRIPTIONS = 100
# Longest resource URI accepted: far beyond real URIs, and it bounds the cost
# of matching URI templates (which backtrack) and of stored subscriptions.
MAX_URI_LENGTH = 2048
# completion/complete returns at most this many values (spec).
MAX_COMPLETION_VALUES = 100

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_LOG_RANK = {name: rank for rank, name in enumerate(LOG_LEVELS)}

_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,128}", re.ASCII)


class Channel(Protocol):
    """Where a call's server-to-client messages go (an SSE stream, a socket)."""

    def send(self, message: dict[str, Any]) -> None: ...


# How long a handler waits for the client to answer a server-to-client request
# (sampling, elicitation, roots) by default: elicitation waits for a person.
CLIENT_REQUEST_TIMEOUT_SECONDS = 300.0
# How often a waiting handler looks up to notice its call was cancelled.
_WAIT_SLICE_SECONDS = 0.25


class ClientError(Exception):
    """The client answered a server-to-client request with an error, or cannot be asked."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class DispatchDenied(Exception):
    """Step 7 refused the call; transports map the subclasses to their answers."""

    def __init__(self, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class RequestCancelled(Exception):
    """The call was cancelled (notifications/cancelled) or its session ended."""


class ScopeDenied(DispatchDenied):
    """The principal's scope does not include what it asked for."""


class PrincipalRevoked(DispatchDenied):
    """The principal's token was removed after the session or socket opened."""


@dataclass
class Call:
    """What a transport hands the dispatcher with each message."""

    session: Session
    principal: Principal
    channel: Channel
    client_address: str
    principal_is_current: Callable[[Principal], bool]


class Context:
    """A handler's view of its call: who is asking, and ways to talk back.

    Declare a parameter annotated `Context` on any tool, resource or prompt
    function to receive it; it is not part of the tool's input schema.
    """

    def __init__(self, call: Call, request: Request, cancelled: threading.Event) -> None:
        self._call = call
        self._request = request
        self._cancelled = cancelled
        meta = request.params.get("_meta")
        self.progress_token = meta.get("progressToken") if isinstance(meta, dict) else None

    @property
    def principal(self) -> Principal:
        return self._call.principal

    @property
    def client_address(self) -> str:
        return self._call.client_address

    @property
    def session_id(self) -> str | None:
        return self._call.session.session_id

    @property
    def request_id(self) -> Any:
        return self._request.id

    @property
    def cancelled(self) -> bool:
        """True once the client sent notifications/cancelled for this request."""
        return self._cancelled.is_set()

    def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send notifications/progress, when the client asked for progress."""
        if self.progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        self._call.channel.send(Notification("notifications/progress", params).to_dict())

    def log(self, level: str, data: Any, logger_name: str | None = None) -> None:
        """Send notifications/message at `level`, if the session's logging/setLevel allows it."""
        if level not in _LOG_RANK:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
        threshold = self._call.session.log_level
        if threshold is not None and _LOG_RANK[level] < _LOG_RANK[threshold]:
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger_name:
            params["logger"] = logger_name
        self._call.channel.send(Notification("notifications/message", params).to_dict())

    def close_stream(self) -> None:
        """End this call's SSE connection now, before the answer (SEP-1699 polling).

        The handler goes on; what it sends next is kept, and the client, told
        by the stream's `retry` field, reconnects with Last-Event-ID and gets
        it. For long calls this frees the connection. No effect on WebSocket.
        """
        # A client of an older revision got no priming event, so it could not resume: keep the stream.
        if not protocol_at_least(self._call.session.protocol_version, RESUMABLE_SINCE):
            return
        detach = getattr(self._call.channel, "detach", None)
        if detach is not None:
            detach()

    # --- asking the client (server-to-client requests) ---------------------

    def request(
        self, method: str, params: dict[str, Any], *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS
    ) -> dict[str, Any]:
        """Send a request to the client on this call's stream and wait for its result.

        Raises ClientError when the client answers with an error, TimeoutError
        when it does not answer in time (the request is then cancelled), and
        RequestCancelled when this call is cancelled while waiting.
        """
        session = self._call.session
        request_id, pending = session.expect_reply()
        try:
            self._call.channel.send(Request(request_id, method, params).to_dict())
            waited = 0.0
            while not pending.answered.wait(_WAIT_SLICE_SECONDS):
                waited += _WAIT_SLICE_SECONDS
                if self._cancelled.is_set() or session.closed.is_set():
                    raise RequestCancelled(f"the call was cancelled while waiting for the client's {method}")
                if waited >= timeout:
                    self._call.channel.send(
                        Notification(
                            "notifications/cancelled", {"requestId": request_id, "reason": "timed out"}
                        ).to_dict()
                    )
                    raise TimeoutError(f"the client did not answer {method} within {timeout:g} seconds")
        finally:
            session.forget_reply(request_id)
        reply = pending.reply
        if isinstance(reply, ErrorResponse):
            raise ClientError(reply.code, reply.message, reply.data)
        assert isinstance(reply, Response)
        return reply.result

    def _require_capability(self, capability: str, method: str) -> None:
        if capability not in self._call.session.client_capabilities:
            raise ClientError(
                METHOD_NOT_FOUND,
                f"the client did not declare the '{capability}' capability, so it cannot answer {method}",
            )

    def sample(
        self,
        messages: str | list[dict[str, Any]],
        max_tokens: int,
        *,
        system_prompt: str | None = None,
        temperature: float | None = None,
        stop_sequences: list[str] | None = None,
        model_preferences: dict[str, Any] | None = None,
        timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS,
    ) -> dict[str, Any]:
        """Ask the client's model (sampling/createMessage); a str is one user text message."""
        self._require_capability("sampling", "sampling/createMessage")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": text_content(messages)}]
        params: dict[str, Any] = {"messages": messages, "maxTokens": max_tokens}
        optional = {
            "systemPrompt": system_prompt,
            "temperature": temperature,
            "stopSequences": stop_sequences,
            "modelPreferences": model_preferences,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return self.request("sampling/createMessage", params, timeout=timeout)

    def elicit(
        self, message: str, requested_schema: dict[str, Any], *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS
    ) -> dict[str, Any]:
        """Ask the user for input (elicitation/create); returns {"action": ..., "content": ...}."""
        self._require_capability("elicitation", "elicitation/create")
        return self.request(
            "elicitation/create", {"message": message, "requestedSchema": requested_schema}, timeout=timeout
        )

    def list_roots(self, *, timeout: float = CLIENT_REQUEST_TIMEOUT_SECONDS) -> list[dict[str, Any]]:
        """The client's roots (roots/list)."""
        self._require_capability("roots", "roots/list")
        roots = self.request("roots/list", {}, timeout=timeout).get("roots", [])
        return roots if isinstance(roots, list) else []

    def debug(self, data: Any) -> None:
        self.log("debug", data)

    def info(self, data: Any) -> None:
        self.log("info", data)

    def warning(self, data: Any) -> None:
        self.log("warning", data)

    def error(self, data: Any) -> None:
        self.log("error", data)


@dataclass
class _Tool:
    name: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]
    output_schema: JsonSchema | None


@dataclass
class _Resource:
    uri: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]
    mime_type: str | None
    pattern: re.Pattern[str] | None = None  # set for URI templates


@dataclass
class _Prompt:
    name: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]


@dataclass
class _Registry:
    tools: dict[str, _Tool] = field(default_factory=dict)
    resources: dict[str, _Resource] = field(default_factory=dict)
    templates: dict[str, _Resource] = field(default_factory=dict)
    prompts: dict[str, _Prompt] = field(default_factory=dict)
    completions: dict[tuple[str, str], Callable[..., Any]] = field(default_factory=dict)


_TEMPLATE_VARIABLE = re.compile(r"\{(\+?)([A-Za-z_][A-Za-z0-9_]*)\}")


def _template_pattern(template: str) -> re.Pattern[str]:
    """A regex for an RFC 6570 level-1/2 URI template: {var} stops at '/', {+var} does not."""
    parts: list[str] = []
    position = 0
    for match in _TEMPLATE_VARIABLE.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        reserved, name = match.groups()
        parts.append(f"(?P<{name}>{'.+' if reserved else '[^/?#]+'})")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


# What a session keeps of the client's initialize: a few short strings, not
# whatever a client chooses to send (a session must stay small).
MAX_CLIENT_FIELDS = 32
MAX_CLIENT_STRING = 256


def _bounded_strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {
        key: item[:MAX_CLIENT_STRING]
        for key, item in list(value.items())[:MAX_CLIENT_FIELDS]
        if isinstance(key, str) and len(key) <= MAX_CLIENT_STRING and isinstance(item, str)
    }


def _handler_failed(kind: str, name: str, exc: Exception) -> None:
    # A handler's failure is answered to the client; the operator sees one line,
    # and the traceback only with debug logging (a client can trigger this at will).
    logger.warning("%s %s raised %s", kind, name, type(exc).__name__)
    logger.debug("%s %s raised", kind, name, exc_info=exc)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(str(cursor).encode()).decode().partition(":")
        offset = int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        offset = -1
        kind = ""
    if kind != "offset" or offset < 0:
        raise JsonRpcError(INVALID_PARAMS, "Invalid cursor: pass back the nextCursor of the previous page unchanged")
    return offset


def _page(items: Sequence[dict[str, Any]], params: dict[str, Any], key: str) -> dict[str, Any]:
    offset = _decode_cursor(params.get("cursor"))
    result: dict[str, Any] = {key: list(items[offset : offset + PAGE_SIZE])}
    if offset + PAGE_SIZE < len(items):
        result["nextCursor"] = _encode_cursor(offset + PAGE_SIZE)
    return result


def _to_json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the tool returned a value that is not JSON: {exc}") from None


def tool_result(value: Any, output_schema: JsonSchema | None) -> dict[str, Any]:
    """Turn what a tool returned into a CallToolResult."""
    if isinstance(value, ToolResult):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if value is None:
        return {"content": []}
    if isinstance(value, str):
        return {"content": [text_content(value)]}
    if is_content(value):
        return {"content": [value]}
    if isinstance(value, list) and value and all(is_content(item) for item in value):
        return {"content": value}
    result: dict[str, Any] = {"content": [text_content(_to_json_text(value))]}
    if output_schema is not None and isinstance(value, dict):
        result["structuredContent"] = value
    return result


def _prompt_messages(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    messages = []
    for item in items:
        if isinstance(item, str):
            messages.append({"role": "user", "content": text_content(item)})
        elif is_content(item):
            messages.append({"role": "user", "content": item})
        elif isinstance(item, dict) and item.get("role") in ("user", "assistant") and is_content(item.get("content")):
            messages.append(item)
        else:
            raise TypeError("a prompt returns a str, a content block, a {role, content} message, or a list of these")
    return messages


def _read_contents(uri: str, value: Any, mime_type: str | None) -> list[dict[str, Any]]:
    if isinstance(value, (str, bytes)):
        return [resource_contents(uri, value, mime_type)]
    if isinstance(value, dict) and "uri" in value:
        return [value]
    if isinstance(value, list) and all(isinstance(item, dict) and "uri" in item for item in value):
        return value
    raise TypeError("a resource returns str, bytes, a contents dict with 'uri', or a list of those")


class McpServer:
    """A set of tools, resources and prompts, served by `wsgi_app` behind the auth pipeline.

    >>> server = McpServer("notes")
    >>> @server.tool()
    ... def add(a: int, b: int) -> int:
    ...     '''Add two numbers.'''
    ...     return a + b
    """

    def __init__(self, name: str = "mcp-auth", version: str = _package_version, *, instructions: str | None = None):
        self.name = name
        self.version = version
        self.instructions = instructions
        self._registry = _Registry()
        # Initialized sessions of every transport, for notifications outside a request.
        self._live_sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._live_lock = threading.Lock()
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

    # --- registration -----------------------------------------------------

    def tool(
        self,
        name: str | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        annotations: dict[str, Any] | None = None,
        input_schema: JsonSchema | None = None,
        output_schema: JsonSchema | None = None,
        structured_output: bool | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a tool. Its input schema comes from the type hints, its description from the docstring.

        A return annotation that is an object (dict, TypedDict, dataclass) adds
        an `outputSchema` and `structuredContent`; `structured_output=False`
        turns that off, `output_schema=` sets it by hand.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = self._check_name(name or fn.__name__, "tool", self._registry.tools)
            signature = function_schema(fn, Context)
            schema = input_schema if input_schema is not None else signature.input_schema
            out_schema = output_schema
            if out_schema is None and structured_output is not False:
                out_schema = return_schema(fn)
            definition: dict[str, Any] = {"name": tool_name, "inputSchema": schema}
            if title:
                definition["title"] = title
            if description or signature.description:
                definition["description"] = description or signature.description
            if out_schema is not None:
                definition["outputSchema"] = out_schema
            if annotations:
                definition["annotations"] = annotations
            self._registry.tools[tool_name] = _Tool(
                tool_name, fn, replace(signature, input_schema=schema), definition, out_schema
            )
            self.notify_list_changed("tools")
            return fn

        return register

    def resource(
        self,
        uri: str,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a resource; a URI with `{variables}` is a template whose values become arguments."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            signature = function_schema(fn, Context)
            is_template = bool(_TEMPLATE_VARIABLE.search(uri))
            table = self._registry.templates if is_template else self._registry.resources
            if uri in table:
                raise ValueError(f"resource {uri!r} is already registered")
            definition: dict[str, Any] = {"uriTemplate" if is_template else "uri": uri, "name": name or fn.__name__}
            if title:
                definition["title"] = title
            if description or signature.description:
                definition["description"] = description or signature.description
            if mime_type:
                definition["mimeType"] = mime_type
            pattern = None
            if is_template:
                pattern = _template_pattern(uri)
                variables = set(pattern.groupindex)
                if variables != set(signature.parameters):
                    raise TypeError(
                        f"resource template {uri!r} has variables {sorted(variables)} but "
                        f"{fn.__qualname__} takes {sorted(signature.parameters)}; they must match"
                    )
            elif signature.parameters:
                raise TypeError(f"{fn.__qualname__}: a resource without {{variables}} takes no arguments")
            table[uri] = _Resource(uri, fn, signature, definition, mime_type, pattern)
            self.notify_list_changed("resources")
            return fn

        return register

    def prompt(
        self, name: str | None = None, *, title: str | None = None, description: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a prompt; its parameters are the prompt's (string) arguments."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            prompt_name = self._check_name(name or fn.__name__, "prompt", self._registry.prompts)
            signature = function_schema(fn, Context)
            required = set(signature.input_schema.get("required", []))
            arguments = []
            for parameter in signature.parameters:
                argument: dict[str, Any] = {"name": parameter, "required": parameter in required}
                if parameter in signature.parameter_descriptions:
                    argument["description"] = signature.parameter_descriptions[parameter]
                arguments.append(argument)
            definition: dict[str, Any] = {"name": prompt_name, "arguments": arguments}
            if title:
                definition["title"] = title
            if description or signature.description:
                definition["description"] = description or signature.description
            self._registry.prompts[prompt_name] = _Prompt(prompt_name, fn, signature, definition)
            self.notify_list_changed("prompts")
            return fn

        return register

    def completion(
        self, *, prompt: str | None = None, resource_template: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register argument completion for a prompt or a resource template.

        The function is called as `fn(argument_name, partial_value, context_arguments)`
        and returns a list of suggested values.
        """
        if (prompt is None) == (resource_template is None):
            raise TypeError("completion() takes exactly one of prompt= or resource_template=")
        key = ("ref/prompt", prompt) if prompt is not None else ("ref/resource", resource_template)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._registry.completions[key] = fn  # type: ignore[index]
            return fn

        return register

    @staticmethod
    def _check_name(name: str, kind: str, table: dict[str, Any]) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{kind} name {name!r}: use 1-128 of A-Z a-z 0-9 _ - . /")
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        return name

    @property
    def tool_names(self) -> list[str]:
        return list(self._registry.tools)

    # --- notifications outside a request -----------------------------------

    def _sessions(self) -> list[Session]:
        with self._live_lock:
            return [s for s in self._live_sessions if not s.closed.is_set()]

    def notify_resource_updated(self, uri: str) -> None:
        """Tell every session subscribed to `uri` that it changed (notifications/resources/updated)."""
        message = Notification("notifications/resources/updated", {"uri": uri}).to_dict()
        for session in self._sessions():
            if uri in session.subscriptions:
                session.push(message)

    def notify_list_changed(self, kind: str) -> None:
        """Tell every session that the tools, resources or prompts changed."""
        if kind not in ("tools", "resources", "prompts"):
            raise ValueError("kind is 'tools', 'resources' or 'prompts'")
        message = Notification(f"notifications/{kind}/list_changed").to_dict()
        for session in self._sessions():
            session.push(message)

    # --- serving ----------------------------------------------------------

    def wsgi_app(self, config: Any = None) -> Any:
        """The WSGI application serving this server behind the auth pipeline."""
        from .app import McpAuthApp
        from .config import Config

        return McpAuthApp(self, config if config is not None else Config.from_sources())

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
            if isinstance(uri, str) and len(uri) <= MAX_URI_LENGTH:
                target, _ = self._find_resource(uri)
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
        if call.session.protocol_version is None and request.method not in ("initialize", "ping"):
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
            call.session.initialized = True
        elif notification.method == "notifications/cancelled":
            request_id = notification.params.get("requestId")
            if isinstance(request_id, (str, int)):
                event = call.session.in_flight.get(request_id)
                if event is not None:
                    event.set()

    def _run(
        self, request: Request, call: Call, fn: Callable[..., Any], signature: Signature, arguments: dict[str, Any]
    ) -> Any:
        cancelled = threading.Event()
        call.session.in_flight[request.id] = cancelled
        try:
            kwargs = {name: arguments[name] for name in signature.parameters if name in arguments}
            if signature.context_parameter:
                kwargs[signature.context_parameter] = Context(call, request, cancelled)
            return fn(**kwargs)
        finally:
            call.session.in_flight.pop(request.id, None)

    def _initialize(self, request: Request, call: Call) -> dict[str, Any]:
        session = call.session
        if session.protocol_version is not None:
            raise JsonRpcError(INVALID_REQUEST, "This session is already initialized")
        requested = request.params.get("protocolVersion")
        if not isinstance(requested, str):
            raise JsonRpcError(INVALID_PARAMS, "initialize needs params.protocolVersion (a string)")
        version = requested if requested in SUPPORTED_PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
        session.protocol_version = version
        with self._live_lock:
            self._live_sessions.add(session)
        session.client_info = _bounded_strings(request.params.get("clientInfo"))
        capabilities = request.params.get("capabilities")
        # Only which capabilities the client has matters; keep their names, bounded.
        session.client_capabilities = {
            name: True
            for name in (list(capabilities)[:MAX_CLIENT_FIELDS] if isinstance(capabilities, dict) else [])
            if isinstance(name, str) and len(name) <= MAX_CLIENT_STRING
        }
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
        problems = validate(arguments, tool.signature.input_schema)
        if problems:
            audit.tool_call(call.client_address, call.principal.name, name, "invalid_arguments")
            return ToolResult([text_content("Invalid arguments: " + "; ".join(problems))], is_error=True).to_dict()
        try:
            value = self._run(request, call, tool.fn, tool.signature, arguments)
            result = tool_result(value, tool.output_schema)
        except RequestCancelled as exc:
            audit.tool_call(call.client_address, call.principal.name, name, "cancelled")
            raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
        except Exception as exc:  # a tool's failure is a result the model can read, not a protocol error
            _handler_failed("tool", name, exc)
            audit.tool_call(call.client_address, call.principal.name, name, "error")
            return ToolResult([text_content(f"{type(exc).__name__}: {exc}")], is_error=True).to_dict()
        audit.tool_call(call.client_address, call.principal.name, name, "ok")
        return result

    # resources

    def _resources_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [r.definition for r in self._registry.resources.values() if call.principal.may_use(r.uri, "resource")]
        return _page(visible, request.params, "resources")

    def _templates_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [r.definition for r in self._registry.templates.values() if call.principal.may_use(r.uri, "resource")]
        return _page(visible, request.params, "resourceTemplates")

    def _resources_read(self, request: Request, call: Call) -> dict[str, Any]:
        uri = request.params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(INVALID_PARAMS, "resources/read needs params.uri (a string)")
        resource, arguments = self._find_resource(uri)
        self._check_resource_scope(uri, resource, request, call)
        if resource is None:
            raise JsonRpcError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", data={"uri": uri})
        try:
            value = self._run(request, call, resource.fn, resource.signature, arguments)
            return {"contents": _read_contents(uri, value, resource.mime_type)}
        except Exception as exc:
            _handler_failed("resource", uri, exc)
            raise JsonRpcError(INTERNAL_ERROR, f"Reading {uri} failed: {type(exc).__name__}: {exc}") from None

    def _find_resource(self, uri: str) -> tuple[_Resource | None, dict[str, Any]]:
        if len(uri) > MAX_URI_LENGTH:
            # Template matching backtracks; a bounded URI keeps it cheap whatever the template.
            raise JsonRpcError(INVALID_PARAMS, f"The URI is longer than {MAX_URI_LENGTH} characters")
        resource = self._registry.resources.get(uri)
        if resource is not None:
            return resource, {}
        for template in self._registry.templates.values():
            match = template.pattern.fullmatch(uri) if template.pattern else None
            if match is None:
                continue
            arguments = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            # A {var} stops at '/'; "%2F" must not smuggle one in after decoding.
            simple = {name for name in arguments if f"{{{name}}}" in template.uri}
            if any("/" in arguments[name] for name in simple):
                continue
            return template, arguments
        return None, {}

    def _subscription_uri(self, request: Request, call: Call) -> str:
        uri = request.params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise JsonRpcError(INVALID_PARAMS, f"{request.method} needs params.uri (a string)")
        resource, _ = self._find_resource(uri)
        self._check_resource_scope(uri, resource, request, call)
        return uri

    @staticmethod
    def _check_resource_scope(uri: str, resource: _Resource | None, request: Request, call: Call) -> None:
        # A templated resource is in scope when its URI or its template is. Scope is
        # checked before existence, so a scoped token cannot probe for resources.
        if call.principal.may_use(uri, "resource"):
            return
        if resource is not None and call.principal.may_use(resource.uri, "resource"):
            return
        raise ScopeDenied(f"the token '{call.principal.name}' is not allowed to read the resource '{uri}'", request.id)

    def _subscribe(self, request: Request, call: Call) -> dict[str, Any]:
        uri = self._subscription_uri(request, call)
        with call.session.lock:
            if uri not in call.session.subscriptions and len(call.session.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise JsonRpcError(INVALID_REQUEST, f"A session may subscribe to at most {MAX_SUBSCRIPTIONS} resources")
            call.session.subscriptions.add(uri)
        return {}

    def _unsubscribe(self, request: Request, call: Call) -> dict[str, Any]:
        uri = self._subscription_uri(request, call)
        with call.session.lock:
            call.session.subscriptions.discard(uri)
        return {}

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
        problems = validate(arguments, prompt.signature.input_schema)
        if problems:
            raise JsonRpcError(INVALID_PARAMS, "Invalid prompt arguments: " + "; ".join(problems))
        try:
            value = self._run(request, call, prompt.fn, prompt.signature, arguments)
            result: dict[str, Any] = {"messages": _prompt_messages(value)}
        except Exception as exc:
            _handler_failed("prompt", name, exc)
            raise JsonRpcError(INTERNAL_ERROR, f"Prompt {name} failed: {type(exc).__name__}: {exc}") from None
        if "description" in prompt.definition:
            result["description"] = prompt.definition["description"]
        return result

    # logging and completion

    def _set_level(self, request: Request, call: Call) -> dict[str, Any]:
        level = request.params.get("level")
        if not isinstance(level, str) or level not in _LOG_RANK:
            raise JsonRpcError(INVALID_PARAMS, f"Invalid log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
        call.session.log_level = level
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
                values = [str(v) for v in completer(arg_name, arg_value, context_arguments)]
            except Exception as exc:
                _handler_failed("completion for", ref_key, exc)
                raise JsonRpcError(INTERNAL_ERROR, f"Completion failed: {type(exc).__name__}: {exc}") from None
        return {
            "completion": {
                "values": values[:MAX_COMPLETION_VALUES],
                "total": len(values),
                "hasMore": len(values) > MAX_COMPLETION_VALUES,
            }
        }
