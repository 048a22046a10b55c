"""Tables for mcp_auth.server and mcp_auth.mcp.dispatch: registration and dispatch, with no transport.

Every test builds a `Call` by hand, with a list standing in for the channel a
transport would stream server-to-client messages into.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest

from mcp_auth.auth.tokens import Principal
from mcp_auth.mcp.content import ToolResult, image_content, text_content
from mcp_auth.mcp.context import Call, Context
from mcp_auth.mcp.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    RESOURCE_NOT_FOUND,
    JsonRpcError,
    Notification,
    Request,
)
from mcp_auth.mcp.outcome import (
    Answered,
    DispatchDenied,
    PrincipalRevoked,
    ScopeDenied,
    ScopeRefused,
    ToolCallRecord,
)
from mcp_auth.mcp.protocol import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_PROTOCOL_VERSION,
    LOG_LEVELS,
    MAX_COMPLETION_VALUES,
    PAGE_SIZE,
    SUPPORTED_PROTOCOL_VERSIONS,
)
from mcp_auth.server import McpServer
from mcp_auth.sessions import Session

EVERYONE = Principal(name="admin", tool_patterns=None, credential_id="a" * 64)
CI = Principal(name="ci", tool_patterns=("echo",), credential_id="x")


class ListChannel:
    """Collects what the server sends, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def make_call(principal: Principal = EVERYONE, is_current: Callable[[Principal], bool] = lambda p: True) -> Call:
    return Call(
        session=Session(principal=principal, outbound=ListChannel(), session_id="sess-1"),
        principal=principal,
        channel=ListChannel(),
        client_address="127.0.0.1",
        principal_is_current=is_current,
    )


def initialized_call(server: McpServer, principal: Principal = EVERYONE) -> Call:
    call = make_call(principal)
    server.dispatcher.dispatch(Request("init", "initialize", {"protocolVersion": LATEST_PROTOCOL_VERSION}), call)
    server.dispatcher.handle_notification(Notification("notifications/initialized"), call)
    return call


def sent(call: Call) -> list[dict[str, Any]]:
    channel = call.channel
    assert isinstance(channel, ListChannel)
    return channel.messages


class Weather(TypedDict):
    city: str
    celsius: float


@dataclass
class Reading:
    sensor: str
    value: int


# --- a server with one of everything ---------------------------------------------------


class Fixture:
    """A server and a log of which handler bodies ran."""

    def __init__(self) -> None:
        self.server = McpServer("test-server", "9.9.9", instructions="Use the tools.")
        self.ran: list[str] = []
        server, ran = self.server, self.ran

        @server.tool(title="Echo", annotations={"readOnlyHint": True})
        def echo(text: str) -> str:
            """Say it back.

            Args:
                text: What to say.
            """
            ran.append("echo")
            return text

        @server.tool()
        def add(a: int, b: int = 1) -> int:
            ran.append("add")
            return a + b

        @server.tool()
        def weather(city: str) -> Weather:
            ran.append("weather")
            return {"city": city, "celsius": 21.5}

        @server.tool(structured_output=False)
        def weather_plain(city: str) -> Weather:
            return {"city": city, "celsius": 1.0}

        @server.tool()
        def reading() -> Reading:
            return Reading("s1", 7)

        @server.tool()
        def boom() -> str:
            ran.append("boom")
            raise ValueError("the tool broke")

        @server.tool()
        def nothing() -> None:
            return None

        @server.tool()
        def picture() -> dict:  # type: ignore[type-arg]
            return image_content(b"\x89PNG", "image/png")

        @server.tool()
        def blocks() -> list:  # type: ignore[type-arg]
            return [text_content("one"), text_content("two")]

        @server.tool()
        def explicit() -> ToolResult:
            return ToolResult([text_content("partial")], structured={"n": 1}, is_error=True)

        @server.tool()
        def not_json() -> object:
            return {1, 2}

        @server.tool()
        def secret() -> str:
            ran.append("secret")
            return "classified"

        @server.tool()
        def progress(ctx: Context) -> str:
            ctx.report_progress(1, 2, "half")
            ctx.report_progress(2)
            return "done"

        @server.tool()
        def chatty(ctx: Context) -> str:
            for level in LOG_LEVELS:
                ctx.log(level, f"at {level}")
            return "logged"

        @server.tool()
        def named_logger(ctx: Context) -> str:
            ctx.warning({"k": 1})
            ctx.log("info", "x", logger_name="db")
            return ""

        @server.tool()
        def bad_level(ctx: Context) -> str:
            ctx.log("verbose", "x")
            return "unreachable"

        @server.tool()
        def whoami(ctx: Context) -> dict:  # type: ignore[type-arg]
            return {
                "principal": ctx.principal.name,
                "client": ctx.client_address,
                "session": ctx.session_id,
                "request": ctx.request_id,
                "cancelled": ctx.cancelled,
            }

        @server.resource("note://hello", description="A greeting")
        def hello() -> str:
            ran.append("hello")
            return "hello world"

        @server.resource("bin://logo", mime_type="image/png")
        def logo() -> bytes:
            return b"\x89PNG\r\n"

        @server.resource("bin://raw")
        def raw() -> bytes:
            return b"\x00\x01"

        @server.resource("note://broken")
        def broken() -> str:
            raise OSError("disk gone")

        @server.resource("users://{user_id}/profile", mime_type="text/markdown")
        def profile(user_id: str) -> str:
            ran.append("profile")
            return f"profile of {user_id}"

        @server.resource("docs://{+path}")
        def doc(path: str, ctx: Context) -> str:
            return f"doc {path} for {ctx.principal.name}"

        @server.prompt(title="Code review")
        def review(code: str, language: str = "python") -> str:
            """Review some code.

            Args:
                code: The code to review.
            """
            ran.append("review")
            return f"Review this {language}: {code}"

        @server.prompt()
        def dialogue(topic: str) -> list:  # type: ignore[type-arg]
            return [
                f"Tell me about {topic}",
                {"role": "assistant", "content": text_content("Sure.")},
                image_content(b"i", "image/gif"),
            ]

        @server.prompt()
        def bad_prompt() -> int:
            return 3

        languages = ["python", "perl", "php", "rust"]

        @server.completion(prompt="review")
        def complete_language(argument: str, value: str, context: dict[str, str]) -> list[str]:
            ran.append(f"complete:{argument}:{value}:{sorted(context.items())}")
            return [name for name in languages if name.startswith(value)]

        @server.completion(resource_template="users://{user_id}/profile")
        def complete_user(argument: str, value: str, context: dict[str, str]) -> list[int]:
            ran.append("complete_user")
            return list(range(150))

        @server.completion(prompt="dialogue")
        def complete_broken(argument: str, value: str, context: dict[str, str]) -> list[str]:
            raise KeyError("nope")


@pytest.fixture
def fx() -> Fixture:
    return Fixture()


def dispatch_error(server: McpServer, request: Request, call: Call) -> JsonRpcError:
    with pytest.raises(JsonRpcError) as info:
        server.dispatcher.dispatch(request, call)
    return info.value


# --- initialize --------------------------------------------------------------------------


def test_supported_versions_newest_first() -> None:
    assert HANDSHAKE_PROTOCOL_VERSIONS == ("2025-11-25", "2025-06-18", "2025-03-26")
    # Every revision served, the stateless one first: -32022's list and server/discover's are this one.
    assert SUPPORTED_PROTOCOL_VERSIONS == ("2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26")
    # What initialize answers a client asking for a revision it cannot have: a handshake one.
    assert LATEST_PROTOCOL_VERSION == "2025-11-25"


@pytest.mark.parametrize(
    ("requested", "negotiated"),
    [
        pytest.param("2025-11-25", "2025-11-25", id="2025-11-25-echoed"),
        pytest.param("2025-06-18", "2025-06-18", id="2025-06-18-echoed"),
        pytest.param("2025-03-26", "2025-03-26", id="2025-03-26-echoed"),
        pytest.param("2024-11-05", "2025-11-25", id="older-unknown-gets-newest"),
        pytest.param("2026-07-28", "2025-11-25", id="stateless-revision-gets-newest"),
        pytest.param("banana", "2025-11-25", id="garbage-gets-newest"),
        pytest.param("", "2025-11-25", id="empty-gets-newest"),
    ],
)
def test_initialize_negotiates_version(fx: Fixture, requested: str, negotiated: str) -> None:
    call = make_call()
    params = {"protocolVersion": requested, "clientInfo": {"name": "t", "version": "1"}, "capabilities": {"roots": {}}}
    result = fx.server.dispatcher.dispatch(Request(1, "initialize", params), call)
    assert result == {
        "protocolVersion": negotiated,
        "capabilities": {
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
            "logging": {},
            "completions": {},
        },
        "serverInfo": {"name": "test-server", "version": "9.9.9"},
        "instructions": "Use the tools.",
    }
    assert call.session.state.protocol_version == negotiated
    assert call.session.state.client_info == {"name": "t", "version": "1"}
    assert call.session.state.client_capabilities == {"roots": True}  # names kept, contents not


def test_initialize_without_instructions_omits_them() -> None:
    result = McpServer("bare").dispatcher.dispatch(
        Request(1, "initialize", {"protocolVersion": "2025-06-18"}), make_call()
    )
    assert "instructions" not in result
    assert result["serverInfo"]["name"] == "bare"


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="missing"),
        pytest.param({"protocolVersion": None}, id="null"),
        pytest.param({"protocolVersion": 20251125}, id="number"),
        pytest.param({"protocolVersion": ["2025-11-25"]}, id="list"),
    ],
)
def test_initialize_needs_protocol_version(fx: Fixture, params: dict[str, Any]) -> None:
    call = make_call()
    error = dispatch_error(fx.server, Request("i-1", "initialize", params), call)
    assert error.code == INVALID_PARAMS
    assert "protocolVersion" in error.message
    assert error.request_id == "i-1"
    assert call.session.state.protocol_version is None


def test_second_initialize_refused(fx: Fixture) -> None:
    call = make_call()
    fx.server.dispatcher.dispatch(Request(1, "initialize", {"protocolVersion": "2025-03-26"}), call)
    error = dispatch_error(fx.server, Request(2, "initialize", {"protocolVersion": "2025-11-25"}), call)
    assert (error.code, error.request_id) == (INVALID_REQUEST, 2)
    assert "already initialized" in error.message
    assert call.session.state.protocol_version == "2025-03-26"


def test_initialized_notification_marks_session(fx: Fixture) -> None:
    call = make_call()
    fx.server.dispatcher.dispatch(Request(1, "initialize", {"protocolVersion": "2025-11-25"}), call)
    assert call.session.state.initialized is False
    fx.server.dispatcher.handle_notification(Notification("notifications/initialized"), call)
    assert call.session.state.initialized is True


@pytest.mark.parametrize(
    ("method", "params"),
    [
        pytest.param("tools/list", {}, id="tools-list"),
        pytest.param("tools/call", {"name": "echo", "arguments": {"text": "x"}}, id="tools-call"),
        pytest.param("resources/list", {}, id="resources-list"),
        pytest.param("resources/templates/list", {}, id="templates-list"),
        pytest.param("resources/read", {"uri": "note://hello"}, id="resources-read"),
        pytest.param("prompts/list", {}, id="prompts-list"),
        pytest.param("prompts/get", {"name": "review", "arguments": {"code": "x"}}, id="prompts-get"),
        pytest.param("logging/setLevel", {"level": "info"}, id="set-level"),
        pytest.param(
            "completion/complete",
            {"ref": {"type": "ref/prompt", "name": "review"}, "argument": {"name": "language", "value": "p"}},
            id="complete",
        ),
    ],
)
def test_requests_before_initialize_refused(fx: Fixture, method: str, params: dict[str, Any]) -> None:
    call = make_call()
    error = dispatch_error(fx.server, Request(41, method, params), call)
    assert (error.code, error.request_id) == (INVALID_REQUEST, 41)
    assert "initialize" in error.message
    assert fx.ran == []
    assert call.session.state.log_level is None


def test_ping_before_and_after_initialize(fx: Fixture) -> None:
    call = make_call()
    assert fx.server.dispatcher.dispatch(Request(1, "ping"), call) == {}
    fx.server.dispatcher.dispatch(Request(2, "initialize", {"protocolVersion": "2025-11-25"}), call)
    assert fx.server.dispatcher.dispatch(Request(3, "ping"), call) == {}


@pytest.mark.parametrize(
    ("method", "initialize_first"),
    [
        pytest.param("tools/lists", True, id="typo"),
        pytest.param("server/discover", False, id="stateless-discover-before-initialize"),
        pytest.param("sampling/createMessage", True, id="client-side-method"),
        pytest.param("TOOLS/LIST", True, id="case-sensitive"),
        pytest.param("notifications/initialized", True, id="notification-sent-as-request"),
    ],
)
def test_unknown_method(fx: Fixture, method: str, initialize_first: bool) -> None:
    call = initialized_call(fx.server) if initialize_first else make_call()
    error = dispatch_error(fx.server, Request("u-9", method), call)
    assert (error.code, error.request_id) == (METHOD_NOT_FOUND, "u-9")
    assert method in error.message


# --- tools/list and pagination ------------------------------------------------------------


def test_tools_list_definitions(fx: Fixture) -> None:
    tools = fx.server.dispatcher.dispatch(Request(1, "tools/list"), initialized_call(fx.server))["tools"]
    by_name = {tool["name"]: tool for tool in tools}
    assert [tool["name"] for tool in tools] == fx.server.tool_names
    assert by_name["echo"] == {
        "name": "echo",
        "title": "Echo",
        "description": "Say it back.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "What to say."}},
            "required": ["text"],
        },
        "annotations": {"readOnlyHint": True},
    }
    assert by_name["add"] == {
        "name": "add",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 1}},
            "required": ["a"],
        },
    }
    assert by_name["weather"]["outputSchema"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
        "required": ["celsius", "city"],
    }
    assert "outputSchema" not in by_name["weather_plain"]
    assert by_name["reading"]["outputSchema"]["required"] == ["sensor", "value"]
    assert by_name["progress"]["inputSchema"] == {"type": "object", "properties": {}}  # Context is not an argument


def paged_server(count: int) -> McpServer:
    server = McpServer("many")
    for index in range(count):
        server.tool(f"t{index:04}")(lambda: "")
    return server


@pytest.mark.parametrize(
    ("count", "page_sizes"),
    [
        pytest.param(0, [0], id="empty"),
        pytest.param(1, [1], id="one"),
        pytest.param(PAGE_SIZE, [PAGE_SIZE], id="exactly-one-page"),
        pytest.param(PAGE_SIZE + 1, [PAGE_SIZE, 1], id="one-over"),
        pytest.param(2 * PAGE_SIZE + 50, [PAGE_SIZE, PAGE_SIZE, 50], id="two-and-a-half-pages"),
    ],
)
def test_tools_list_pagination(count: int, page_sizes: list[int]) -> None:
    assert PAGE_SIZE == 100
    server = paged_server(count)
    call = initialized_call(server)
    names: list[str] = []
    sizes: list[int] = []
    params: dict[str, Any] = {}
    for request_id in range(1, 10):
        result = server.dispatcher.dispatch(Request(request_id, "tools/list", params), call)
        names.extend(tool["name"] for tool in result["tools"])
        sizes.append(len(result["tools"]))
        if "nextCursor" not in result:
            break
        assert isinstance(result["nextCursor"], str)
        params = {"cursor": result["nextCursor"]}
    assert sizes == page_sizes
    assert names == [f"t{index:04}" for index in range(count)]


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "bad_cursor",
    [
        pytest.param("not a cursor!", id="garbage"),
        pytest.param("", id="empty"),
        pytest.param(7, id="number"),
        pytest.param(cursor("offset:-1"), id="negative-offset"),
        pytest.param(cursor("offset:ten"), id="non-numeric-offset"),
        pytest.param(cursor("page:1"), id="wrong-kind"),
        pytest.param(cursor("offset:" + "9" * 5000), id="offset-with-5000-digits"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe:1").decode(), id="not-utf8"),
    ],
)
@pytest.mark.parametrize("method", ["tools/list", "resources/list", "resources/templates/list", "prompts/list"])
def test_list_bad_cursor(fx: Fixture, method: str, bad_cursor: Any) -> None:
    error = dispatch_error(fx.server, Request("c1", method, {"cursor": bad_cursor}), initialized_call(fx.server))
    assert (error.code, error.request_id) == (INVALID_PARAMS, "c1")
    assert "cursor" in error.message


def test_cursor_past_the_end_is_an_empty_last_page() -> None:
    server = paged_server(3)
    result = server.dispatcher.dispatch(
        Request(1, "tools/list", {"cursor": cursor("offset:500")}), initialized_call(server)
    )
    assert result == {"tools": []}


# --- tools/call ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        pytest.param("echo", {"text": "hi"}, {"content": [{"type": "text", "text": "hi"}]}, id="str-is-text"),
        pytest.param(
            "add", {"a": 2, "b": 3}, {"content": [{"type": "text", "text": "5"}]}, id="int-is-json-text-no-structured"
        ),
        pytest.param("add", {"a": 2}, {"content": [{"type": "text", "text": "3"}]}, id="default-used"),
        pytest.param(
            "add", {"a": 2, "extra": 1}, {"content": [{"type": "text", "text": "3"}]}, id="extra-argument-ignored"
        ),
        pytest.param(
            "weather",
            {"city": "Oslo"},
            {
                "content": [{"type": "text", "text": json.dumps({"city": "Oslo", "celsius": 21.5})}],
                "structuredContent": {"city": "Oslo", "celsius": 21.5},
            },
            id="typeddict-structured",
        ),
        pytest.param(
            "weather_plain",
            {"city": "Oslo"},
            {"content": [{"type": "text", "text": json.dumps({"city": "Oslo", "celsius": 1.0})}]},
            id="structured-output-off",
        ),
        pytest.param(
            "reading",
            None,
            {
                "content": [{"type": "text", "text": json.dumps({"sensor": "s1", "value": 7})}],
                "structuredContent": {"sensor": "s1", "value": 7},
            },
            id="dataclass-structured-arguments-null",
        ),
        pytest.param(
            "boom",
            {},
            {"content": [{"type": "text", "text": "ValueError: the tool broke"}], "isError": True},
            id="raising-tool",
        ),
        pytest.param("nothing", {}, {"content": []}, id="none-is-empty"),
        pytest.param(
            "picture",
            {},
            {"content": [{"type": "image", "data": base64.b64encode(b"\x89PNG").decode(), "mimeType": "image/png"}]},
            id="content-block",
        ),
        pytest.param(
            "blocks",
            {},
            {"content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
            id="content-list",
        ),
        pytest.param(
            "explicit",
            {},
            {"content": [{"type": "text", "text": "partial"}], "structuredContent": {"n": 1}, "isError": True},
            id="tool-result",
        ),
        pytest.param(
            "not_json",
            {},
            {
                "content": [
                    {
                        "type": "text",
                        "text": "TypeError: the tool returned a value that is not JSON: "
                        "Object of type set is not JSON serializable",
                    }
                ],
                "isError": True,
            },
            id="non-json-return-is-error-result",
        ),
        pytest.param(
            "add",
            {"a": "2"},
            {
                "content": [{"type": "text", "text": "Invalid arguments: arguments.a: expected integer, got string"}],
                "isError": True,
            },
            id="invalid-argument-named",
        ),
        pytest.param(
            "add",
            {"a": True, "b": 1.5},
            {
                "content": [
                    {
                        "type": "text",
                        "text": "Invalid arguments: arguments.a: expected integer, got boolean; "
                        "arguments.b: expected integer, got number",
                    }
                ],
                "isError": True,
            },
            id="two-invalid-arguments",
        ),
        pytest.param(
            "echo",
            {},
            {
                "content": [{"type": "text", "text": 'Invalid arguments: arguments: missing required property "text"'}],
                "isError": True,
            },
            id="missing-argument-named",
        ),
    ],
)
def test_tools_call(fx: Fixture, name: str, arguments: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    assert fx.server.dispatcher.dispatch(Request(5, "tools/call", params), initialized_call(fx.server)) == expected


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        pytest.param("add", {"a": "x"}, id="invalid"),
        pytest.param("echo", {"text": 5}, id="wrong-type"),
        pytest.param("echo", {}, id="missing"),
    ],
)
def test_invalid_arguments_do_not_run_the_tool(fx: Fixture, name: str, arguments: dict[str, Any]) -> None:
    result = fx.server.dispatcher.dispatch(
        Request(5, "tools/call", {"name": name, "arguments": arguments}), initialized_call(fx.server)
    )
    assert result["isError"] is True
    assert fx.ran == []


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        pytest.param({"name": "nope"}, "Unknown tool: nope", id="unknown-tool"),
        pytest.param({}, "params.name", id="no-name"),
        pytest.param({"name": 3}, "params.name", id="name-not-string"),
        pytest.param({"name": "echo", "arguments": ["hi"]}, "must be an object", id="arguments-array"),
        pytest.param({"name": "echo", "arguments": "hi"}, "must be an object", id="arguments-string"),
    ],
)
def test_tools_call_protocol_errors(fx: Fixture, params: dict[str, Any], fragment: str) -> None:
    error = dispatch_error(fx.server, Request("t-3", "tools/call", params), initialized_call(fx.server))
    assert (error.code, error.request_id) == (INVALID_PARAMS, "t-3")
    assert fragment in error.message
    assert fx.ran == []


def test_context_properties(fx: Fixture) -> None:
    call = initialized_call(fx.server)
    result = fx.server.dispatcher.dispatch(Request(77, "tools/call", {"name": "whoami"}), call)
    assert result["structuredContent"] == {
        "principal": "admin",
        "client": "127.0.0.1",
        "session": "sess-1",
        "request": 77,
        "cancelled": False,
    }
    assert call.session.in_flight.ids() == []


# --- tools/call: schemas written by hand are enforced, checked at registration -----------------

COUNTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {"tag": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8}},
    "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 100},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "uniqueItems": True, "maxItems": 3},
        "mode": {"oneOf": [{"const": "fast"}, {"const": "safe"}]},
        "step": {"type": "number", "multipleOf": 0.75},
    },
    "required": ["n"],
    "additionalProperties": False,
}


def hand_written_server(ran: list[dict[str, Any]]) -> McpServer:
    server = McpServer("hand")

    @server.tool(input_schema=COUNTER_SCHEMA)
    def count(n: int, email: str = "", tags: list[str] | None = None, mode: str = "fast", step: float = 0) -> str:
        ran.append({"n": n, "email": email, "tags": tags, "mode": mode})
        return "counted"

    return server


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        pytest.param({"n": 0}, None, id="minimal"),
        pytest.param({"n": 100, "email": "ada@example.org", "tags": ["a", "b"], "mode": "safe"}, None, id="everything"),
        pytest.param({"n": -5}, "arguments.n: -5 is less than the minimum of 0", id="minimum"),
        pytest.param({"n": 101}, "arguments.n: 101 is greater than the maximum of 100", id="maximum"),
        pytest.param({"n": 1, "email": "ada"}, 'arguments.email: "ada" is not a valid email', id="format"),
        pytest.param(
            {"n": 1, "tags": ["ok", "NO"]}, 'arguments.tags[1]: "NO" does not match the pattern "^[a-z]+$"', id="ref"
        ),
        pytest.param({"n": 1, "tags": ["ab\n"]}, 'arguments.tags[0]: "ab\\n" does not match', id="pattern-newline"),
        pytest.param({"n": 1, "tags": ["a", "a"]}, "arguments.tags: has repeated items", id="uniqueItems"),
        pytest.param({"n": 1, "mode": "slow"}, 'arguments.mode: "slow" matches none of the oneOf', id="oneOf"),
        pytest.param({"n": 1, "x": 1}, 'arguments: unexpected property "x"', id="additionalProperties"),
        pytest.param({"n": 1, "step": 10**400}, "is not a multiple of 0.75", id="multipleOf-huge-integer"),
        pytest.param({}, 'arguments: missing required property "n"', id="required"),
    ],
)
def test_hand_written_schema_enforced(arguments: dict[str, Any], problem: str | None) -> None:
    ran: list[dict[str, Any]] = []
    server = hand_written_server(ran)
    result = server.dispatcher.dispatch(
        Request(1, "tools/call", {"name": "count", "arguments": arguments}), initialized_call(server)
    )
    if problem is None:
        assert result == {"content": [{"type": "text", "text": "counted"}]}
        assert len(ran) == 1
    else:
        assert result["isError"] is True
        (block,) = result["content"]
        assert block["text"].startswith("Invalid arguments: ")
        assert problem in block["text"]
        assert ran == []


def test_schema_compiled_once_at_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    import mcp_auth.mcp.registry as registry_module

    compiled: list[str] = []
    real = registry_module.compile_schema

    def spy(schema: Any, owner: str) -> Any:
        compiled.append(owner)
        return real(schema, owner)

    monkeypatch.setattr(registry_module, "compile_schema", spy)
    server = hand_written_server([])
    assert compiled == ["tool 'count': inputSchema"]
    call = initialized_call(server)
    for n in (1, -1, 2):
        server.dispatcher.dispatch(Request(n, "tools/call", {"name": "count", "arguments": {"n": n}}), call)
    assert compiled == ["tool 'count': inputSchema"]


def test_invalid_argument_message_is_bounded() -> None:
    ran: list[dict[str, Any]] = []
    server = hand_written_server(ran)
    arguments = {"n": 1, "tags": ["x" * 1_000_000], "y" * 100_000: 1}
    result = server.dispatcher.dispatch(
        Request(1, "tools/call", {"name": "count", "arguments": arguments}), initialized_call(server)
    )
    assert result["isError"] is True
    assert len(result["content"][0]["text"]) < 1000
    assert ran == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        pytest.param(
            {"input_schema": {"type": "object", "properties": {"n": {"minimum": "0"}}}},
            "tool 'bad': inputSchema: not a valid JSON Schema 2020-12 at #/properties/n/minimum",
            id="meta-schema",
        ),
        pytest.param(
            {"input_schema": {"type": "object", "properties": {"n": {"minimun": 0}}}},
            "tool 'bad': inputSchema: the schema cannot be enforced as written: #/properties/n/minimun",
            id="typo-keyword",
        ),
        pytest.param(
            {"input_schema": {"type": "object", "properties": {"n": {"$ref": "https://example.org/n.json"}}}},
            "tool 'bad': inputSchema: the schema cannot be enforced as written: #/properties/n/$ref",
            id="remote-ref",
        ),
        pytest.param(
            {"input_schema": {"type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}}},
            '$ref "#/$defs/n" does not resolve',
            id="dangling-ref",
        ),
        pytest.param(
            {"input_schema": {"type": "object", "properties": {"card": {"format": "credit-card"}}}},
            'format "credit-card" cannot be checked',
            id="unknown-format",
        ),
        pytest.param({"input_schema": {"properties": {}}}, "tool 'bad': inputSchema: must be", id="not-type-object"),
        pytest.param({"input_schema": {"type": "array"}}, 'with "type": "object"', id="type-array"),
        pytest.param(
            {"output_schema": {"type": "object", "properties": {"n": {"type": "int"}}}},
            "tool 'bad': outputSchema: not a valid JSON Schema 2020-12 at #/properties/n/type",
            id="output-schema",
        ),
    ],
)
def test_bad_schema_refused_at_decoration_naming_the_tool(kwargs: dict[str, Any], fragment: str) -> None:
    server = McpServer("s")
    with pytest.raises(ValueError, match=r"tool 'bad'") as caught:

        @server.tool(name="bad", **kwargs)
        def tool(n: int = 0) -> dict[str, int]:
            return {"n": n}

    assert fragment in str(caught.value)
    listed = server.dispatcher.dispatch(Request(1, "tools/list", {}), initialized_call(server))
    assert listed["tools"] == []  # nothing half-registered


class Count(TypedDict):
    n: int


def output_server() -> McpServer:
    server = McpServer("out")

    @server.tool()
    def typed(value: Any) -> Count:
        return value  # type: ignore[no-any-return]

    @server.tool(output_schema={"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}})
    def by_hand(value: Any) -> dict[str, Any]:
        return value  # type: ignore[no-any-return]

    @server.tool(output_schema={"type": "object", "required": ["n"]})
    def explicit(ok: bool) -> ToolResult:
        return ToolResult([text_content("x")], structured={}, is_error=not ok)

    return server


@pytest.mark.parametrize(
    ("name", "arguments", "problem"),
    [
        pytest.param("typed", {"value": {"n": 1}}, None, id="typed-ok"),
        pytest.param("typed", {"value": {"n": "1"}}, "structuredContent.n: expected integer, got string", id="typed"),
        pytest.param("typed", {"value": {}}, 'structuredContent: missing required property "n"', id="typed-missing"),
        pytest.param("by_hand", {"value": {"n": 0}}, None, id="by-hand-ok"),
        pytest.param("by_hand", {"value": {"n": -1}}, "structuredContent.n: -1 is less than the minimum", id="by-hand"),
        pytest.param("explicit", {"ok": True}, 'structuredContent: missing required property "n"', id="tool-result"),
    ],
)
def test_structured_output_validated(name: str, arguments: dict[str, Any], problem: str | None) -> None:
    server = output_server()
    outcome = server.dispatcher.outcome(
        Request(1, "tools/call", {"name": name, "arguments": arguments}), initialized_call(server)
    )
    # The audit record travels with the outcome; the transport that answers writes it (tests/test_outcome.py).
    assert isinstance(outcome, Answered)
    assert outcome.tool_call == ToolCallRecord(name, "ok" if problem is None else "invalid_output")
    result = outcome.result
    if problem is None:
        assert result["structuredContent"] == arguments["value"]
        assert "isError" not in result
    else:
        assert result["isError"] is True
        assert "structuredContent" not in result  # the client never gets data that breaks the contract
        text = result["content"][0]["text"]
        assert text.startswith("The tool's output does not match its outputSchema: ")
        assert problem in text


def test_error_result_output_is_not_validated() -> None:
    server = output_server()
    result = server.dispatcher.dispatch(
        Request(1, "tools/call", {"name": "explicit", "arguments": {"ok": False}}), initialized_call(server)
    )
    assert result == {"content": [{"type": "text", "text": "x"}], "structuredContent": {}, "isError": True}


# --- Context: progress and logging ---------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        pytest.param(
            {"progressToken": "p1"},
            [
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": "p1", "progress": 1, "total": 2, "message": "half"},
                },
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": "p1", "progress": 2},
                },
            ],
            id="string-token",
        ),
        pytest.param(
            {"progressToken": 0},
            [
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": 0, "progress": 1, "total": 2, "message": "half"},
                },
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 0, "progress": 2}},
            ],
            id="int-token-zero",
        ),
        pytest.param(None, [], id="no-meta"),
        pytest.param({}, [], id="meta-without-token"),
        pytest.param({"progressToken": None}, [], id="null-token"),
        pytest.param("p1", [], id="meta-not-object"),
    ],
)
def test_report_progress(fx: Fixture, meta: Any, expected: list[dict[str, Any]]) -> None:
    call = initialized_call(fx.server)
    params: dict[str, Any] = {"name": "progress", "arguments": {}}
    if meta is not None:
        params["_meta"] = meta
    result = fx.server.dispatcher.dispatch(Request(9, "tools/call", params), call)
    assert result == {"content": [{"type": "text", "text": "done"}]}
    assert sent(call) == expected


@pytest.mark.parametrize(
    ("threshold", "expected_levels"),
    [
        pytest.param(None, list(LOG_LEVELS), id="no-setLevel-sends-all"),
        pytest.param("debug", list(LOG_LEVELS), id="debug"),
        pytest.param("notice", ["notice", "warning", "error", "critical", "alert", "emergency"], id="notice"),
        pytest.param("warning", ["warning", "error", "critical", "alert", "emergency"], id="warning"),
        pytest.param("emergency", ["emergency"], id="emergency"),
    ],
)
def test_log_respects_set_level(fx: Fixture, threshold: str | None, expected_levels: list[str]) -> None:
    call = initialized_call(fx.server)
    if threshold is not None:
        assert fx.server.dispatcher.dispatch(Request(1, "logging/setLevel", {"level": threshold}), call) == {}
        assert call.session.state.log_level == threshold
    fx.server.dispatcher.dispatch(Request(2, "tools/call", {"name": "chatty"}), call)
    assert sent(call) == [
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": level, "data": f"at {level}"}}
        for level in expected_levels
    ]


def test_log_helpers_and_logger_name(fx: Fixture) -> None:
    call = initialized_call(fx.server)
    fx.server.dispatcher.dispatch(Request(2, "tools/call", {"name": "named_logger"}), call)
    assert sent(call) == [
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "warning", "data": {"k": 1}}},
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x", "logger": "db"}},
    ]


@pytest.mark.parametrize(
    "level",
    [
        pytest.param("verbose", id="unknown"),
        pytest.param("WARNING", id="upper-case"),
        pytest.param(None, id="null"),
        pytest.param(3, id="number"),
        pytest.param("", id="empty"),
    ],
)
def test_set_level_refuses_invalid(fx: Fixture, level: Any) -> None:
    call = initialized_call(fx.server)
    fx.server.dispatcher.dispatch(Request(1, "logging/setLevel", {"level": "error"}), call)
    error = dispatch_error(fx.server, Request(2, "logging/setLevel", {"level": level}), call)
    assert (error.code, error.request_id) == (INVALID_PARAMS, 2)
    assert "log level" in error.message
    assert call.session.state.log_level == "error"


def test_context_log_refuses_invalid_level(fx: Fixture) -> None:
    call = initialized_call(fx.server)
    result = fx.server.dispatcher.dispatch(Request(2, "tools/call", {"name": "bad_level"}), call)
    assert result["isError"] is True
    assert result["content"][0]["text"].startswith("ValueError: unknown log level 'verbose'")
    assert sent(call) == []


# --- resources -----------------------------------------------------------------------------


def test_resources_list_and_templates(fx: Fixture) -> None:
    call = initialized_call(fx.server)
    resources = fx.server.dispatcher.dispatch(Request(1, "resources/list"), call)["resources"]
    assert resources == [
        {"uri": "note://hello", "name": "hello", "description": "A greeting"},
        {"uri": "bin://logo", "name": "logo", "mimeType": "image/png"},
        {"uri": "bin://raw", "name": "raw"},
        {"uri": "note://broken", "name": "broken"},
    ]
    templates = fx.server.dispatcher.dispatch(Request(2, "resources/templates/list"), call)["resourceTemplates"]
    assert templates == [
        {"uriTemplate": "users://{user_id}/profile", "name": "profile", "mimeType": "text/markdown"},
        {"uriTemplate": "docs://{+path}", "name": "doc"},
    ]


@pytest.mark.parametrize(
    ("uri", "contents"),
    [
        pytest.param(
            "note://hello", [{"uri": "note://hello", "mimeType": "text/plain", "text": "hello world"}], id="static-text"
        ),
        pytest.param(
            "bin://logo",
            [{"uri": "bin://logo", "mimeType": "image/png", "blob": base64.b64encode(b"\x89PNG\r\n").decode()}],
            id="bytes-blob-with-mime",
        ),
        pytest.param(
            "bin://raw",
            [{"uri": "bin://raw", "mimeType": "application/octet-stream", "blob": "AAE="}],
            id="bytes-blob-default-mime",
        ),
        pytest.param(
            "users://42/profile",
            [{"uri": "users://42/profile", "mimeType": "text/markdown", "text": "profile of 42"}],
            id="template-var",
        ),
        pytest.param(
            "users://a%20b/profile",
            [{"uri": "users://a%20b/profile", "mimeType": "text/markdown", "text": "profile of a b"}],
            id="template-var-percent-decoded",
        ),
        pytest.param(
            "docs://guide/install/linux.md",
            [
                {
                    "uri": "docs://guide/install/linux.md",
                    "mimeType": "text/plain",
                    "text": "doc guide/install/linux.md for admin",
                }
            ],
            id="reserved-var-spans-slashes-with-context",
        ),
        pytest.param(
            "docs://x",
            [{"uri": "docs://x", "mimeType": "text/plain", "text": "doc x for admin"}],
            id="reserved-var-single-segment",
        ),
    ],
)
def test_resources_read(fx: Fixture, uri: str, contents: list[dict[str, Any]]) -> None:
    result = fx.server.dispatcher.dispatch(Request(3, "resources/read", {"uri": uri}), initialized_call(fx.server))
    assert result == {"contents": contents}


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("note://nope", id="unknown-static"),
        pytest.param("users://a/b/profile", id="simple-var-does-not-span-slash"),
        pytest.param("users:///profile", id="simple-var-empty"),
        pytest.param("users://42/profile/extra", id="template-with-suffix"),
        pytest.param("docs://", id="reserved-var-empty"),
        pytest.param("NOTE://hello", id="case-sensitive"),
        pytest.param("", id="empty-uri"),
    ],
)
def test_resources_read_not_found(fx: Fixture, uri: str) -> None:
    error = dispatch_error(fx.server, Request("r-1", "resources/read", {"uri": uri}), initialized_call(fx.server))
    assert RESOURCE_NOT_FOUND == -32002
    assert (error.code, error.request_id, error.data) == (-32002, "r-1", {"uri": uri})
    assert fx.ran == []


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        pytest.param({}, INVALID_PARAMS, "params.uri", id="no-uri"),
        pytest.param({"uri": 5}, INVALID_PARAMS, "params.uri", id="uri-not-string"),
        pytest.param(
            {"uri": "note://broken"},
            INTERNAL_ERROR,
            "Reading note://broken failed: OSError: disk gone",
            id="raising-resource",
        ),
    ],
)
def test_resources_read_errors(fx: Fixture, params: dict[str, Any], code: int, fragment: str) -> None:
    error = dispatch_error(fx.server, Request(8, "resources/read", params), initialized_call(fx.server))
    assert (error.code, error.request_id) == (code, 8)
    assert fragment in error.message


def _takes_id(id: str) -> str:
    return id


def _takes_nothing() -> str:
    return ""


def _takes_two(a: str, b: str) -> str:
    return a + b


def _takes_ctx_and_id(id: str, ctx: Context) -> str:
    return id


@pytest.mark.parametrize(
    ("uri", "fn", "error"),
    [
        pytest.param("users://{user}/x", _takes_id, TypeError, id="variable-name-differs"),
        pytest.param("users://{id}/x", _takes_nothing, TypeError, id="function-takes-nothing"),
        pytest.param("users://{a}/x", _takes_two, TypeError, id="function-takes-more"),
        pytest.param("users://{a}/{b}/{c}", _takes_two, TypeError, id="template-has-more"),
        pytest.param("static://x", _takes_id, TypeError, id="static-resource-with-argument"),
        pytest.param("users://{+id}", _takes_id, None, id="reserved-variable-matches"),
        pytest.param("users://{a}-{b}", _takes_two, None, id="two-variables-match"),
        pytest.param("users://{id}", _takes_ctx_and_id, None, id="context-not-counted"),
    ],
)
def test_resource_template_variables_must_match_parameters(
    uri: str, fn: Callable[..., Any], error: type[Exception] | None
) -> None:
    server = McpServer("reg")
    if error is None:
        assert server.resource(uri)(fn) is fn
    else:
        with pytest.raises(error):
            server.resource(uri)(fn)
        call = initialized_call(server)
        assert server.dispatcher.dispatch(Request(1, "resources/list"), call) == {"resources": []}
        assert server.dispatcher.dispatch(Request(2, "resources/templates/list"), call) == {"resourceTemplates": []}


def test_resource_registered_twice_refused() -> None:
    server = McpServer("reg")
    server.resource("note://a")(_takes_nothing)
    with pytest.raises(ValueError, match="already registered"):
        server.resource("note://a")(_takes_nothing)


def test_two_variable_template_splits_values() -> None:
    server = McpServer("reg")
    server.resource("pair://{a}-{b}")(_takes_two)
    result = server.dispatcher.dispatch(
        Request(1, "resources/read", {"uri": "pair://left-right"}), initialized_call(server)
    )
    assert result["contents"][0]["text"] == "leftright"


# --- prompts -------------------------------------------------------------------------------


def test_prompts_list(fx: Fixture) -> None:
    prompts = fx.server.dispatcher.dispatch(Request(1, "prompts/list"), initialized_call(fx.server))["prompts"]
    assert prompts == [
        {
            "name": "review",
            "title": "Code review",
            "description": "Review some code.",
            "arguments": [
                {"name": "code", "required": True, "description": "The code to review."},
                {"name": "language", "required": False},
            ],
        },
        {"name": "dialogue", "arguments": [{"name": "topic", "required": True}]},
        {"name": "bad_prompt", "arguments": []},
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(
            {"name": "review", "arguments": {"code": "x = 1"}},
            {
                "messages": [{"role": "user", "content": {"type": "text", "text": "Review this python: x = 1"}}],
                "description": "Review some code.",
            },
            id="str-with-default",
        ),
        pytest.param(
            {"name": "review", "arguments": {"code": "fn f()", "language": "rust"}},
            {
                "messages": [{"role": "user", "content": {"type": "text", "text": "Review this rust: fn f()"}}],
                "description": "Review some code.",
            },
            id="str-all-arguments",
        ),
        pytest.param(
            {"name": "dialogue", "arguments": {"topic": "owls"}},
            {
                "messages": [
                    {"role": "user", "content": {"type": "text", "text": "Tell me about owls"}},
                    {"role": "assistant", "content": {"type": "text", "text": "Sure."}},
                    {
                        "role": "user",
                        "content": {"type": "image", "data": base64.b64encode(b"i").decode(), "mimeType": "image/gif"},
                    },
                ]
            },
            id="list-of-str-message-and-block",
        ),
    ],
)
def test_prompts_get(fx: Fixture, params: dict[str, Any], expected: dict[str, Any]) -> None:
    assert fx.server.dispatcher.dispatch(Request(4, "prompts/get", params), initialized_call(fx.server)) == expected


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        pytest.param(
            {"name": "review"}, INVALID_PARAMS, 'missing required property "code"', id="missing-required-no-arguments"
        ),
        pytest.param(
            {"name": "review", "arguments": {"language": "go"}},
            INVALID_PARAMS,
            'missing required property "code"',
            id="missing-required",
        ),
        pytest.param(
            {"name": "review", "arguments": {"code": 1}},
            INVALID_PARAMS,
            "arguments.code: expected string",
            id="wrong-type",
        ),
        pytest.param(
            {"name": "review", "arguments": "code"}, INVALID_PARAMS, "must be an object", id="arguments-string"
        ),
        pytest.param({"name": "nope"}, INVALID_PARAMS, "Unknown prompt: nope", id="unknown-prompt"),
        pytest.param({}, INVALID_PARAMS, "params.name", id="no-name"),
        pytest.param(
            {"name": "bad_prompt"}, INTERNAL_ERROR, "Prompt bad_prompt failed: TypeError", id="bad-return-type"
        ),
    ],
)
def test_prompts_get_errors(fx: Fixture, params: dict[str, Any], code: int, fragment: str) -> None:
    error = dispatch_error(fx.server, Request("p", "prompts/get", params), initialized_call(fx.server))
    assert (error.code, error.request_id) == (code, "p")
    assert fragment in error.message
    assert "review" not in fx.ran


# --- completion ----------------------------------------------------------------------------


def complete_params(ref: dict[str, Any], name: str, value: str, context: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {"ref": ref, "argument": {"name": name, "value": value}}
    if context is not None:
        params["context"] = context
    return params


@pytest.mark.parametrize(
    ("params", "expected", "ran"),
    [
        pytest.param(
            complete_params({"type": "ref/prompt", "name": "review"}, "language", "p"),
            {"values": ["python", "perl", "php"], "total": 3, "hasMore": False},
            ["complete:language:p:[]"],
            id="prompt-completer",
        ),
        pytest.param(
            complete_params({"type": "ref/prompt", "name": "review"}, "language", "ru", {"arguments": {"code": "x"}}),
            {"values": ["rust"], "total": 1, "hasMore": False},
            ["complete:language:ru:[('code', 'x')]"],
            id="context-arguments-passed",
        ),
        pytest.param(
            complete_params({"type": "ref/prompt", "name": "review"}, "language", "zzz"),
            {"values": [], "total": 0, "hasMore": False},
            ["complete:language:zzz:[]"],
            id="no-match",
        ),
        pytest.param(
            complete_params({"type": "ref/resource", "uri": "users://{user_id}/profile"}, "user_id", ""),
            {"values": [str(n) for n in range(MAX_COMPLETION_VALUES)], "total": 150, "hasMore": True},
            ["complete_user"],
            id="capped-at-100-values-as-strings",
        ),
        pytest.param(
            complete_params({"type": "ref/prompt", "name": "dialogue-unknown"}, "topic", "o"),
            {"values": [], "total": 0, "hasMore": False},
            [],
            id="no-completer",
        ),
        pytest.param(
            complete_params({"type": "ref/resource", "uri": "review"}, "language", "p"),
            {"values": [], "total": 0, "hasMore": False},
            [],
            id="ref-type-must-match",
        ),
    ],
)
def test_completion(fx: Fixture, params: dict[str, Any], expected: dict[str, Any], ran: list[str]) -> None:
    assert MAX_COMPLETION_VALUES == 100
    result = fx.server.dispatcher.dispatch(Request(6, "completion/complete", params), initialized_call(fx.server))
    assert result == {"completion": expected}
    assert fx.ran == ran


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        pytest.param({"argument": {"name": "a", "value": ""}}, INVALID_PARAMS, "params.ref", id="no-ref"),
        pytest.param(
            {"ref": {"type": "ref/prompt", "name": "review"}}, INVALID_PARAMS, "params.argument", id="no-argument"
        ),
        pytest.param(
            complete_params({"type": "ref/prompt"}, "a", ""), INVALID_PARAMS, "ref needs name", id="prompt-ref-no-name"
        ),
        pytest.param(
            {"ref": {"type": "ref/prompt", "name": "review"}, "argument": {"value": "p"}},
            INVALID_PARAMS,
            "argument needs name",
            id="argument-no-name",
        ),
        pytest.param(
            {"ref": {"type": "ref/prompt", "name": "review"}, "argument": {"name": "language", "value": 3}},
            INVALID_PARAMS,
            "argument needs name and value",
            id="value-not-string",
        ),
        pytest.param(
            complete_params({"type": "ref/prompt", "name": "dialogue"}, "topic", ""),
            INTERNAL_ERROR,
            "Completion failed: KeyError",
            id="raising-completer",
        ),
    ],
)
def test_completion_errors(fx: Fixture, params: dict[str, Any], code: int, fragment: str) -> None:
    error = dispatch_error(fx.server, Request(6, "completion/complete", params), initialized_call(fx.server))
    assert (error.code, error.request_id) == (code, 6)
    assert fragment in error.message


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="neither"),
        pytest.param({"prompt": "p", "resource_template": "r://{x}"}, id="both"),
    ],
)
def test_completion_registration_needs_exactly_one_ref(kwargs: dict[str, str]) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        McpServer().completion(**kwargs)


# --- registration names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "registered"),
    [
        pytest.param("ok_name-1.v2/x", "ok_name-1.v2/x", id="allowed-characters"),
        pytest.param("a" * 128, "a" * 128, id="128-chars"),
        pytest.param(None, "_takes_nothing", id="default-is-function-name"),
        pytest.param("", "_takes_nothing", id="empty-means-function-name"),
        pytest.param("a" * 129, None, id="129-chars"),
        pytest.param("has space", None, id="space"),
        pytest.param("naïve", None, id="non-ascii"),
        pytest.param("tool\n", None, id="trailing-newline"),
        pytest.param("resource:x", None, id="colon-reserved-for-scope-prefixes"),
    ],
)
def test_tool_names(name: str | None, registered: str | None) -> None:
    server = McpServer()
    if registered is not None:
        server.tool(name)(_takes_nothing)
        assert server.tool_names == [registered]
    else:
        with pytest.raises(ValueError, match="use 1-128 of"):
            server.tool(name)(_takes_nothing)
        assert server.tool_names == []


def test_tool_registered_twice_refused() -> None:
    server = McpServer()
    server.tool("t")(_takes_nothing)
    with pytest.raises(ValueError, match="already registered"):
        server.tool("t")(_takes_nothing)


# --- step 7: revocation and scope ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        pytest.param("initialize", {"protocolVersion": "2025-11-25"}, id="initialize"),
        pytest.param("ping", {}, id="ping"),
        pytest.param("tools/list", {}, id="tools-list"),
        pytest.param("tools/call", {"name": "echo", "arguments": {"text": "x"}}, id="tools-call"),
        pytest.param("tools/call", {"name": "secret"}, id="tools-call-secret"),
        pytest.param("resources/read", {"uri": "note://hello"}, id="resources-read"),
        pytest.param("resources/read", {"uri": "users://1/profile"}, id="resources-read-template"),
        pytest.param("prompts/get", {"name": "review", "arguments": {"code": "x"}}, id="prompts-get"),
        pytest.param(
            "completion/complete",
            complete_params({"type": "ref/prompt", "name": "review"}, "language", ""),
            id="completion",
        ),
        pytest.param("no/such/method", {}, id="even-unknown-methods"),
    ],
)
def test_revoked_principal_stops_before_any_handler(fx: Fixture, method: str, params: dict[str, Any]) -> None:
    call = initialized_call(fx.server)
    asked: list[Principal] = []

    def revoked(principal: Principal) -> bool:
        asked.append(principal)
        return False

    call.principal_is_current = revoked
    with pytest.raises(PrincipalRevoked) as info:
        fx.server.dispatcher.dispatch(Request("rv", method, params), call)
    assert info.value.request_id == "rv"
    assert "revoked" in info.value.message
    assert not isinstance(info.value, ScopeDenied)
    assert isinstance(info.value, DispatchDenied)
    assert asked == [EVERYONE]
    assert fx.ran == []
    assert call.session.state.protocol_version == LATEST_PROTOCOL_VERSION
    assert sent(call) == []


def test_revoked_before_initialize_leaves_session_uninitialized(fx: Fixture) -> None:
    call = make_call(is_current=lambda p: False)
    with pytest.raises(PrincipalRevoked):
        fx.server.dispatcher.dispatch(Request(1, "initialize", {"protocolVersion": "2025-11-25"}), call)
    assert call.session.state.protocol_version is None


def list_names(server: McpServer, call: Call) -> dict[str, list[str]]:
    return {
        "tools": [t["name"] for t in server.dispatcher.dispatch(Request(1, "tools/list"), call)["tools"]],
        "resources": [r["uri"] for r in server.dispatcher.dispatch(Request(2, "resources/list"), call)["resources"]],
        "templates": [
            r["uriTemplate"]
            for r in server.dispatcher.dispatch(Request(3, "resources/templates/list"), call)["resourceTemplates"]
        ],
        "prompts": [p["name"] for p in server.dispatcher.dispatch(Request(4, "prompts/list"), call)["prompts"]],
    }


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        pytest.param(("echo",), {"tools": ["echo"], "resources": [], "templates": [], "prompts": []}, id="one-tool"),
        pytest.param((), {"tools": [], "resources": [], "templates": [], "prompts": []}, id="nothing"),
        pytest.param(
            ("weather*",),
            {"tools": ["weather", "weather_plain"], "resources": [], "templates": [], "prompts": []},
            id="tool-glob",
        ),
        pytest.param(
            ("echo", "resource:note://*", "prompt:review"),
            {"tools": ["echo"], "resources": ["note://hello", "note://broken"], "templates": [], "prompts": ["review"]},
            id="resource-and-prompt-patterns",
        ),
        pytest.param(
            ("resource:**",),
            {
                "tools": [],
                "resources": ["note://hello", "bin://logo", "bin://raw", "note://broken"],
                "templates": ["users://{user_id}/profile", "docs://{+path}"],
                "prompts": [],
            },
            id="all-resources-no-tools",
        ),
        pytest.param(
            ("prompt:*",),
            {"tools": [], "resources": [], "templates": [], "prompts": ["review", "dialogue", "bad_prompt"]},
            id="all-prompts",
        ),
        pytest.param(
            ("*",),
            {"tools": Fixture().server.tool_names, "resources": [], "templates": [], "prompts": []},
            id="bare-star-is-every-tool-only",
        ),
        pytest.param(
            ("re*", "p*"),
            {"tools": ["reading", "picture", "progress"], "resources": [], "templates": [], "prompts": []},
            id="tool-globs-never-reach-resources-or-prompts",
        ),
        pytest.param(
            ("*", "resource:**", "prompt:*"),
            {
                "tools": Fixture().server.tool_names,
                "resources": ["note://hello", "bin://logo", "bin://raw", "note://broken"],
                "templates": ["users://{user_id}/profile", "docs://{+path}"],
                "prompts": ["review", "dialogue", "bad_prompt"],
            },
            id="each-kind-granted-by-its-own-pattern",
        ),
        pytest.param(
            ("ECHO", "resource:NOTE://*"),
            {"tools": [], "resources": [], "templates": [], "prompts": []},
            id="case-sensitive",
        ),
        pytest.param(
            ("hello", "review"),
            {"tools": [], "resources": [], "templates": [], "prompts": []},
            id="bare-names-are-tool-patterns",
        ),
    ],
)
def test_scoped_lists_show_only_what_may_be_used(
    fx: Fixture, patterns: tuple[str, ...], expected: dict[str, list[str]]
) -> None:
    principal = Principal(name="scoped", tool_patterns=patterns, credential_id="x")
    assert list_names(fx.server, initialized_call(fx.server, principal)) == expected


def test_ci_principal_calls_only_echo(fx: Fixture, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcp_auth.audit")
    call = initialized_call(fx.server, CI)
    assert fx.server.dispatcher.dispatch(
        Request(1, "tools/call", {"name": "echo", "arguments": {"text": "ok"}}), call
    ) == {"content": [{"type": "text", "text": "ok"}]}
    with pytest.raises(ScopeDenied) as info:
        fx.server.dispatcher.dispatch(Request(2, "tools/call", {"name": "secret"}), call)
    assert info.value.request_id == 2
    assert "'ci'" in info.value.message and "'secret'" in info.value.message
    assert fx.ran == ["echo"]
    # Dispatch writes no audit event: the transport audits each outcome once (tests/test_outcome.py).
    assert [r for r in caplog.records if hasattr(r, "audit")] == []
    assert fx.server.dispatcher.outcome(Request(3, "tools/call", {"name": "secret"}), call) == ScopeRefused(
        3, info.value.message
    )
    echoed = fx.server.dispatcher.outcome(Request(4, "tools/call", {"name": "echo", "arguments": {"text": "ok"}}), call)
    assert isinstance(echoed, Answered) and echoed.tool_call == ToolCallRecord("echo", "ok")


@pytest.mark.parametrize(
    ("patterns", "method", "params"),
    [
        pytest.param(("echo",), "tools/call", {"name": "add", "arguments": {"a": 1}}, id="tool"),
        pytest.param(
            ("echo",), "tools/call", {"name": "add", "arguments": {"a": "bad"}}, id="tool-scope-before-validation"
        ),
        pytest.param(("echo",), "resources/read", {"uri": "note://hello"}, id="resource"),
        pytest.param(("resource:note://*",), "resources/read", {"uri": "users://7/profile"}, id="template-resource"),
        pytest.param(("echo",), "prompts/get", {"name": "review", "arguments": {"code": "x"}}, id="prompt"),
        pytest.param(
            ("prompt:dialogue",), "prompts/get", {"name": "review", "arguments": {"code": "x"}}, id="other-prompt"
        ),
    ],
)
def test_scope_denied_before_handler_runs(
    fx: Fixture, patterns: tuple[str, ...], method: str, params: dict[str, Any]
) -> None:
    call = initialized_call(fx.server, Principal(name="scoped", tool_patterns=patterns, credential_id="x"))
    with pytest.raises(ScopeDenied) as info:
        fx.server.dispatcher.dispatch(Request("sd", method, params), call)
    assert info.value.request_id == "sd"
    assert "'scoped'" in info.value.message
    assert fx.ran == []


@pytest.mark.parametrize(
    ("patterns", "method", "params", "expected"),
    [
        pytest.param(
            ("resource:users://*/profile",),
            "resources/read",
            {"uri": "users://7/profile"},
            {"contents": [{"uri": "users://7/profile", "mimeType": "text/markdown", "text": "profile of 7"}]},
            id="template-read-allowed",
        ),
        pytest.param(
            ("prompt:review",),
            "prompts/get",
            {"name": "review", "arguments": {"code": "c"}},
            {
                "messages": [{"role": "user", "content": {"type": "text", "text": "Review this python: c"}}],
                "description": "Review some code.",
            },
            id="prompt-allowed",
        ),
    ],
)
def test_scope_allows_matching_resource_and_prompt(
    fx: Fixture, patterns: tuple[str, ...], method: str, params: dict[str, Any], expected: dict[str, Any]
) -> None:
    call = initialized_call(fx.server, Principal(name="scoped", tool_patterns=patterns, credential_id="x"))
    assert fx.server.dispatcher.dispatch(Request(1, method, params), call) == expected


@pytest.mark.parametrize(
    ("patterns", "ref", "expected_values", "ran"),
    [
        pytest.param(("echo",), {"type": "ref/prompt", "name": "review"}, [], [], id="prompt-out-of-scope-empty"),
        pytest.param(
            ("prompt:review",),
            {"type": "ref/prompt", "name": "review"},
            ["python", "perl", "php"],
            ["complete:language:p:[]"],
            id="prompt-in-scope",
        ),
        pytest.param(
            ("echo",),
            {"type": "ref/resource", "uri": "users://{user_id}/profile"},
            [],
            [],
            id="template-out-of-scope-empty",
        ),
    ],
)
def test_scoped_completion(
    fx: Fixture, patterns: tuple[str, ...], ref: dict[str, Any], expected_values: list[str], ran: list[str]
) -> None:
    call = initialized_call(fx.server, Principal(name="scoped", tool_patterns=patterns, credential_id="x"))
    result = fx.server.dispatcher.dispatch(
        Request(1, "completion/complete", complete_params(ref, "language", "p")), call
    )
    assert result["completion"]["values"] == expected_values
    assert fx.ran == ran


# --- cancellation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_id", "cancel_id", "cancelled"),
    [
        pytest.param(7, 7, True, id="int-id"),
        pytest.param("req-a", "req-a", True, id="string-id"),
        pytest.param(7, "7", False, id="string-does-not-cancel-int"),
        pytest.param(7, 8, False, id="other-id"),
        pytest.param(7, None, False, id="no-request-id"),
    ],
)
def test_cancelled_notification_reaches_in_flight_request(request_id: Any, cancel_id: Any, cancelled: bool) -> None:
    server = McpServer("cancel")
    call = make_call()
    server.dispatcher.dispatch(Request(0, "initialize", {"protocolVersion": "2025-11-25"}), call)
    observed: list[tuple[bool, bool, list[Any]]] = []

    @server.tool()
    def long(ctx: Context) -> str:
        before = ctx.cancelled
        params = {"reason": "user"} if cancel_id is None else {"requestId": cancel_id, "reason": "user"}
        server.dispatcher.handle_notification(Notification("notifications/cancelled", params), call)
        observed.append((before, ctx.cancelled, call.session.in_flight.ids()))
        return "finished"

    result = server.dispatcher.dispatch(Request(request_id, "tools/call", {"name": "long"}), call)
    assert result == {"content": [{"type": "text", "text": "finished"}]}
    assert observed == [(False, cancelled, [request_id])]
    assert call.session.in_flight.ids() == []


def test_cancelling_a_finished_request_is_ignored(fx: Fixture) -> None:
    call = initialized_call(fx.server)
    fx.server.dispatcher.dispatch(Request(3, "tools/call", {"name": "echo", "arguments": {"text": "x"}}), call)
    fx.server.dispatcher.handle_notification(Notification("notifications/cancelled", {"requestId": 3}), call)
    assert call.session.in_flight.ids() == []


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"requestId": [1]}, id="array-id"),
        pytest.param({"requestId": {"id": 1}}, id="object-id"),
    ],
)
def test_cancelled_with_unhashable_request_id_is_ignored(fx: Fixture, params: dict[str, Any]) -> None:
    """Notification params come straight from the client; a malformed one must not raise."""
    call = initialized_call(fx.server)
    assert fx.server.dispatcher.handle_notification(Notification("notifications/cancelled", params), call) is None
    assert call.session.in_flight.ids() == []


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("notifications/progress", id="progress"),
        pytest.param("notifications/roots/list_changed", id="roots-changed"),
        pytest.param("x/unknown", id="unknown"),
    ],
)
def test_other_notifications_ignored(fx: Fixture, method: str) -> None:
    call = make_call()
    assert fx.server.dispatcher.handle_notification(Notification(method, {"requestId": 1}), call) is None
    assert call.session.state.initialized is False
    assert sent(call) == []
