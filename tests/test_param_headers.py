"""Tables for mcp_auth.mcp.param_headers: `x-mcp-header` at registration, `Mcp-Param-*` on a modern tools/call.

Registration cases follow the spec's validity rules (streamable-http.mdx
§Schema Extension); call cases its Server Behavior for Custom Headers table
and the conformance suite's `http-custom-header-server-validation` probes.
The transport end to end (HTTP 400, the real `mcp` client) is in
tests/test_param_headers_live.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.shared import inbound
from test_server import initialized_call

from mcp_auth import Header, McpServer
from mcp_auth.auth.tokens import Principal
from mcp_auth.mcp.jsonrpc import JsonRpcError, Request
from mcp_auth.mcp.modern import HEADER_MISMATCH, ModernRequest
from mcp_auth.mcp.outcome import ScopeDenied
from mcp_auth.mcp.param_headers import MAX_SAFE_INTEGER, ParamHeader, check_param_headers, find_param_headers
from mcp_auth.mcp.schema import JsonSchema, SchemaError


def _tool(properties: dict[str, Any], **extra: Any) -> JsonSchema:
    return {"type": "object", "properties": properties, **extra}


REGION = {"type": "string", "x-mcp-header": "Region"}

# --- registration: what a client would drop is refused, naming tool and property ---------------


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        pytest.param({"type": "object", "x-mcp-header": "Root"}, "found one at the schema root", id="on-root"),
        pytest.param(
            _tool({"list": {"type": "array", "items": REGION}}), "not a plain chain of 'properties'", id="under-items"
        ),
        pytest.param(_tool({}, **{"$defs": {"r": REGION}}), "not a plain chain of 'properties'", id="under-defs"),
        pytest.param(_tool({"r": {"anyOf": [REGION, {"type": "integer"}]}}), "not a plain chain", id="under-anyOf"),
        pytest.param(_tool({"r": {"allOf": [REGION]}}), "not a plain chain", id="under-allOf"),
        pytest.param(_tool({"r": {"type": "string", "not": REGION}}), "not a plain chain", id="under-not"),
        pytest.param(_tool({}, **{"if": {"type": "object"}, "then": REGION}), "not a plain chain", id="under-then"),
        pytest.param(_tool({}, additionalProperties=REGION), "not a plain chain", id="under-additionalProperties"),
        pytest.param(_tool({}, patternProperties={"^r": REGION}), "not a plain chain", id="under-patternProperties"),
        pytest.param(
            _tool({"o": {"type": "object", "additionalProperties": {"type": "object", "properties": {"r": REGION}}}}),
            "not a plain chain",
            id="properties-below-a-non-properties-step",
        ),
        pytest.param(_tool({"r": {"type": "string", "x-mcp-header": 7}}), "must be a string header name", id="not-str"),
        pytest.param(_tool({"r": {"type": "string", "x-mcp-header": ""}}), "is not an HTTP header name", id="empty"),
        pytest.param(
            _tool({"r": {"type": "string", "x-mcp-header": "My Region"}}), "is not an HTTP header name", id="space"
        ),
        pytest.param(_tool({"r": {"type": "string", "x-mcp-header": "a:b"}}), "not an HTTP header name", id="colon"),
        pytest.param(
            _tool({"r": {"type": "string", "x-mcp-header": "X\r\nInjected: 1"}}), "not an HTTP header name", id="crlf"
        ),
        pytest.param(_tool({"r": {"type": "string", "x-mcp-header": "Régión"}}), "not an HTTP header", id="non-ascii"),
        pytest.param(
            _tool({"r": {"type": "string", "x-mcp-header": "tenant_id"}}), "use '-' instead of '_'", id="underscore"
        ),
        pytest.param(_tool({"r": {"type": "number", "x-mcp-header": "R"}}), "not 'number'", id="type-number"),
        pytest.param(_tool({"r": {"type": "object", "x-mcp-header": "R"}}), "not 'object'", id="type-object"),
        pytest.param(_tool({"r": {"type": "array", "x-mcp-header": "R"}}), "not 'array'", id="type-array"),
        pytest.param(
            _tool({"r": {"type": ["string", "null"], "x-mcp-header": "R"}}), "not ['string', 'null']", id="type-list"
        ),
        pytest.param(_tool({"r": {"x-mcp-header": "R"}}), "not None", id="no-type"),
        pytest.param(
            _tool(
                {"a": {"type": "string", "x-mcp-header": "Region"}, "b": {"type": "string", "x-mcp-header": "REGION"}}
            ),
            "is already used by property 'a' (header names ignore case)",
            id="duplicate-ignoring-case",
        ),
        pytest.param(
            _tool(
                {
                    "a": {"type": "string", "x-mcp-header": "Region"},
                    "o": {"type": "object", "properties": {"b": {"type": "string", "x-mcp-header": "region"}}},
                }
            ),
            "already used",
            id="duplicate-across-nesting",
        ),
    ],
)
def test_invalid_annotation_is_a_registration_error(schema: JsonSchema, fragment: str) -> None:
    server = McpServer("t")
    with pytest.raises(SchemaError, match=r"^tool 'query': inputSchema: ") as caught:
        server.tool("query", input_schema=schema)(lambda: "x")
    assert fragment in str(caught.value)
    assert "query" not in server.tool_names
    # The real client would drop every one of these tools (but one: it keeps an '_' the server could never see).
    assert (inbound.find_invalid_x_mcp_header(schema) is None) == ("'_'" in fragment)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param(_tool({"region": REGION}), [ParamHeader(("region",), "Region", "string")], id="string"),
        pytest.param(
            _tool({"n": {"type": "integer", "x-mcp-header": "N"}, "b": {"type": "boolean", "x-mcp-header": "Flag"}}),
            [ParamHeader(("b",), "Flag", "boolean"), ParamHeader(("n",), "N", "integer")],
            id="integer-and-boolean",
        ),
        pytest.param(
            _tool({"o": {"type": "object", "properties": {"deep": {"type": "string", "x-mcp-header": "Deep"}}}}),
            [ParamHeader(("o", "deep"), "Deep", "string")],
            id="nested-properties-chain",
        ),
        pytest.param(
            _tool({"r": {"type": "string", "x-mcp-header": "A.b-c!#$%&'*+^`|~9"}}),
            [ParamHeader(("r",), "A.b-c!#$%&'*+^`|~9", "string")],
            id="every-token-character",
        ),
        pytest.param(
            _tool({"r": {"type": "string", "default": "x", "examples": [{"x-mcp-header": 1}]}}), [], id="data-not-read"
        ),
        pytest.param(_tool({"x-mcp-header": {"type": "string"}}), [], id="property-named-like-the-keyword"),
        pytest.param(_tool({"r": {"type": "string", "x-vendor": {"x-mcp-header": 1}}}), [], id="inside-an-extension"),
    ],
)
def test_valid_annotations_are_found(schema: JsonSchema, expected: list[ParamHeader]) -> None:
    assert list(find_param_headers(schema, "tool 't'")) == expected
    assert inbound.find_invalid_x_mcp_header(schema) is None  # and the real client keeps the tool


def test_header_annotation_on_a_parameter() -> None:
    server = McpServer("t")

    @server.tool()
    def execute_sql(region: Annotated[str, Header("Region"), "The region"], query: str, limit: int = 10) -> str:
        return region

    tool = server.dispatcher._registry.tools["execute_sql"]
    assert tool.definition["inputSchema"]["properties"]["region"] == {
        "type": "string",
        "description": "The region",
        "x-mcp-header": "Region",
    }
    assert tool.param_headers == (ParamHeader(("region",), "Region", "string"),)


def test_headers_argument_of_the_decorator() -> None:
    server = McpServer("t")
    given = _tool({"region": {"type": "string"}})

    @server.tool(headers={"region": "Region"})
    def inferred(region: str, count: int) -> str:
        return region

    @server.tool("given", input_schema=given, headers={"region": "Where"})
    def by_hand(region: str) -> str:
        return region

    tools = server.dispatcher._registry.tools
    assert tools["inferred"].definition["inputSchema"]["properties"]["region"]["x-mcp-header"] == "Region"
    assert tools["given"].param_headers == (ParamHeader(("region",), "Where", "string"),)
    assert "x-mcp-header" not in given["properties"]["region"]  # the author's dict is not changed


class Filter(TypedDict):
    region: Annotated[str, Header("Region")]


@pytest.mark.parametrize(
    ("register", "fragment"),
    [
        pytest.param(
            lambda s: s.tool(headers={"nope": "X"})(_str_tool),
            "headers= names 'nope', which is not one of the tool's arguments",
            id="headers-unknown-argument",
        ),
        pytest.param(lambda s: s.tool(headers={"n": "N"})(_float_tool), "not 'number'", id="headers-on-a-float"),
        pytest.param(lambda s: s.tool()(_optional_tool), "give it a default value instead", id="optional"),
        pytest.param(lambda s: s.tool()(_list_tool), "not a plain chain of 'properties'", id="in-a-list"),
    ],
)
def test_decorator_errors_name_the_problem(register: Any, fragment: str) -> None:
    with pytest.raises(SchemaError) as caught:
        register(McpServer("t"))
    assert fragment in str(caught.value)


def _str_tool(region: str) -> str:
    return region


def _float_tool(n: float) -> str:
    return "x"


def _optional_tool(region: Annotated[str | None, Header("Region")] = None) -> str:
    return "x"


def _list_tool(filters: list[Filter]) -> str:
    return "x"


def test_annotation_in_a_typeddict_is_a_nested_header() -> None:
    server = McpServer("t")

    @server.tool()
    def search(where: Filter) -> str:
        return where["region"]

    assert server.dispatcher._registry.tools["search"].param_headers == (
        ParamHeader(("where", "region"), "Region", "string"),
    )


# --- check_param_headers: the server side of the table ---------------------------------------

STRING = [ParamHeader(("region",), "Region", "string")]
INTEGER = [ParamHeader(("n",), "N", "integer")]
BOOLEAN = [ParamHeader(("flag",), "Flag", "boolean")]
NESTED = [ParamHeader(("o", "deep"), "Deep", "string")]


def _h(**headers: str | Sequence[str]) -> dict[str, str | Sequence[str]]:
    return {"mcp-param-" + name.lower(): value for name, value in headers.items()}


@pytest.mark.parametrize(
    ("params", "arguments", "headers"),
    [
        pytest.param(STRING, {}, {}, id="absent-and-no-header"),
        pytest.param(STRING, {"region": None}, {}, id="null-and-no-header"),
        pytest.param(STRING, {"region": "us-west1"}, _h(region="us-west1"), id="plain"),
        pytest.param(
            STRING, {"region": "us-west1"}, _h(region="  us-west1\t"), id="surrounding-whitespace-is-not-value"
        ),
        pytest.param(STRING, {"region": "Hello"}, _h(region="=?base64?SGVsbG8=?="), id="base64"),
        pytest.param(STRING, {"region": "Hello, 世界"}, _h(region="=?base64?SGVsbG8sIOS4lueVjA==?="), id="base64-utf8"),
        pytest.param(STRING, {"region": " padded "}, _h(region="=?base64?IHBhZGRlZCA=?="), id="base64-padded-value"),
        pytest.param(STRING, {"region": "line1\nline2"}, _h(region="=?base64?bGluZTEKbGluZTI=?="), id="base64-newline"),
        pytest.param(
            STRING, {"region": "=?base64?literal?="}, _h(region="=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="), id="sentinel"
        ),
        pytest.param(STRING, {"region": "SGVsbG8="}, _h(region="SGVsbG8="), id="literal-missing-prefix"),
        pytest.param(
            STRING, {"region": "=?base64?SGVsbG8="}, _h(region="=?base64?SGVsbG8="), id="literal-missing-suffix"
        ),
        pytest.param(STRING, {"region": "a,b"}, _h(region="a,b"), id="comma-in-one-value"),
        pytest.param(STRING, {"region": "x"}, _h(region=["x"]), id="one-copy-as-list"),
        pytest.param(INTEGER, {"n": 42}, _h(n="42"), id="integer"),
        pytest.param(INTEGER, {"n": 42}, _h(n="42.0"), id="integer-numerically"),
        pytest.param(INTEGER, {"n": 42.0}, _h(n="42"), id="integral-float-body"),
        pytest.param(INTEGER, {"n": -7}, _h(n="-7"), id="negative"),
        pytest.param(INTEGER, {"n": MAX_SAFE_INTEGER}, _h(n=str(MAX_SAFE_INTEGER)), id="largest-safe"),
        pytest.param(INTEGER, {"n": 5}, _h(n="=?base64?NQ==?="), id="integer-base64"),
        pytest.param(BOOLEAN, {"flag": True}, _h(flag="true"), id="true"),
        pytest.param(BOOLEAN, {"flag": False}, _h(flag="false"), id="false"),
        pytest.param(NESTED, {"o": {"deep": "d"}}, _h(deep="d"), id="nested"),
        pytest.param(NESTED, {"o": "not-an-object"}, {}, id="nested-parent-not-object"),
        pytest.param([], {"region": "x"}, _h(region="y", other="z"), id="undeclared-headers-ignored"),
        pytest.param(STRING, {"region": "x"}, {**_h(region="x"), "mcp-param-other": "y"}, id="extra-header-ignored"),
    ],
)
def test_headers_that_agree(params: list[ParamHeader], arguments: dict[str, Any], headers: dict[str, Any]) -> None:
    assert check_param_headers(params, arguments, headers) is None


SECRET = "s3cr3t-value-never-echoed"


@pytest.mark.parametrize(
    ("params", "arguments", "headers", "fragment"),
    [
        pytest.param(STRING, {"region": "test-value"}, {}, "is sent without its Mcp-Param-Region header", id="missing"),
        pytest.param(STRING, {}, _h(region="x"), "header is sent but the argument 'region' is not", id="no-argument"),
        pytest.param(STRING, {"region": None}, _h(region="x"), "argument 'region' is not", id="null-argument"),
        pytest.param(STRING, {"region": SECRET}, _h(region=SECRET + "x"), "does not match", id="mismatch"),
        pytest.param(STRING, {"region": "Hello"}, _h(region="hello"), "does not match", id="values-are-case-sensitive"),
        pytest.param(STRING, {"region": "Hello"}, _h(region="=?base64?SGVsbG8?="), "not valid base64", id="padding"),
        pytest.param(STRING, {"region": "Hello"}, _h(region="=?base64?SGVs!!!bG8=?="), "not valid base64", id="chars"),
        pytest.param(STRING, {"region": "Hello"}, _h(region="=?base64?SGVsbG9=?="), "not canonical", id="noncanonical"),
        pytest.param(STRING, {"region": "\udcff"}, _h(region="=?base64?/w==?="), "UTF-8", id="not-utf8"),
        pytest.param(STRING, {"region": "é"}, _h(region="é"), "outside visible ASCII", id="raw-non-ascii"),
        pytest.param(STRING, {"region": "x"}, _h(region=["x", "x"]), "sent more than once", id="duplicated"),
        pytest.param(STRING, {"region": "x"}, _h(region="x,x"), "does not match", id="duplicated-joined-by-wsgi"),
        pytest.param(STRING, {"region": {"a": 1}}, _h(region='{"a": 1}'), "does not match", id="object-argument"),
        pytest.param(INTEGER, {"n": 42}, _h(n="42.5"), "does not match", id="integer-fraction"),
        pytest.param(INTEGER, {"n": 42}, _h(n="4.2e1"), "does not match", id="integer-exponent"),
        pytest.param(INTEGER, {"n": 42}, _h(n="+42"), "does not match", id="integer-plus-sign"),
        pytest.param(INTEGER, {"n": 42}, _h(n="43"), "does not match", id="integer-other"),
        pytest.param(INTEGER, {"n": 1.5}, _h(n="1.5"), "does not match", id="fraction-argument"),
        pytest.param(INTEGER, {"n": 2**53}, _h(n=str(2**53)), "beyond ±(2^53-1)", id="unsafe-integer"),
        pytest.param(INTEGER, {"n": -(10**5000)}, _h(n="1"), "beyond", id="huge-integer"),
        pytest.param(BOOLEAN, {"flag": True}, _h(flag="True"), "does not match", id="boolean-capitalised"),
        pytest.param(BOOLEAN, {"flag": True}, _h(flag="1"), "does not match", id="boolean-as-number"),
        pytest.param(NESTED, {"o": {"deep": "d"}}, {}, "argument 'o.deep' is sent without", id="nested-missing"),
    ],
)
def test_headers_that_do_not_agree(
    params: list[ParamHeader], arguments: dict[str, Any], headers: dict[str, Any], fragment: str
) -> None:
    message = check_param_headers(params, arguments, headers)
    assert message is not None
    assert fragment in message
    assert SECRET not in message
    assert len(message) < 200


def test_first_failing_annotation_is_reported() -> None:
    params = [*STRING, *INTEGER]
    assert check_param_headers(params, {"region": "a", "n": 1}, _h(region="a", n="1")) is None
    message = check_param_headers(params, {"region": "a", "n": 1}, _h(region="a", n="2"))
    assert message is not None and "Mcp-Param-N" in message


# --- wired into dispatch: modern calls only, after the scope check -----------------------------

SCOPED = Principal(name="scoped", tool_patterns=("other",), credential_id="s")


def _server() -> McpServer:
    server = McpServer("t")

    @server.tool()
    def execute_sql(region: Annotated[str, Header("Region")], query: str = "") -> str:
        return f"ran in {region}"

    return server


def _modern(headers: dict[str, str] | None) -> ModernRequest:
    return ModernRequest("2026-07-28", {}, headers=headers)


def _call_tool(server: McpServer, modern: ModernRequest | None, principal: Principal | None = None) -> dict[str, Any]:
    call = initialized_call(server) if principal is None else initialized_call(server, principal)
    call.modern = modern
    request = Request(7, "tools/call", {"name": "execute_sql", "arguments": {"region": "eu"}})
    return server.dispatcher.dispatch(request, call)


def test_modern_call_with_matching_header_runs() -> None:
    result = _call_tool(_server(), _modern({"mcp-param-region": "eu"}))
    assert result["content"][0]["text"] == "ran in eu"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"mcp-param-region": "us"}, id="mismatch"),
        pytest.param({"mcp-param-region": "=?base64?ZXU?="}, id="bad-base64"),
    ],
)
def test_modern_call_with_bad_header_is_header_mismatch(headers: dict[str, str]) -> None:
    with pytest.raises(JsonRpcError) as caught:
        _call_tool(_server(), _modern(headers))
    assert caught.value.code == HEADER_MISMATCH == -32020
    assert "Mcp-Param-Region" in caught.value.message


@pytest.mark.parametrize(
    "modern",
    [pytest.param(None, id="handshake-era"), pytest.param(_modern(None), id="modern-without-http-headers")],
)
def test_no_header_check_without_http_headers(modern: ModernRequest | None) -> None:
    # The handshake era had no such headers; a WebSocket message has no headers at all.
    assert _call_tool(_server(), modern)["content"][0]["text"] == "ran in eu"


def test_scope_is_checked_before_the_headers() -> None:
    # A token that may not call the tool gets the 403 whatever its headers say.
    with pytest.raises(ScopeDenied):
        _call_tool(_server(), _modern({}), SCOPED)


def test_tools_list_shows_the_annotation_verbatim() -> None:
    server = _server()
    call = initialized_call(server)
    call.modern = _modern({})
    (tool,) = server.dispatcher.dispatch(Request(1, "tools/list", {}), call)["tools"]
    assert tool["inputSchema"]["properties"]["region"]["x-mcp-header"] == "Region"


# --- against the real client's codec (mcp 2.3.0 `mcp.shared.inbound`) -------------------------------

CLIENT_SCHEMA: JsonSchema = _tool(
    {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "n": {"type": "integer", "x-mcp-header": "N"},
        "flag": {"type": "boolean", "x-mcp-header": "Flag"},
        "o": {"type": "object", "properties": {"deep": {"type": "string", "x-mcp-header": "Deep"}}},
    }
)

_arguments = st.fixed_dictionaries(
    {},
    optional={
        "region": st.text() | st.none(),
        "n": st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
        "flag": st.booleans(),
        "o": st.fixed_dictionaries({}, optional={"deep": st.text()}),
    },
)


def _as_wsgi_sees_them(headers: dict[str, str]) -> dict[str, str]:
    # Names lower-cased (ModernRequest.headers); values as latin-1 text, which is how WSGI hands bytes over.
    return {name.lower(): value.encode("utf-8").decode("latin-1") for name, value in headers.items()}


@given(_arguments)
def test_what_the_mcp_client_sends_is_accepted(arguments: dict[str, Any]) -> None:
    params = find_param_headers(CLIENT_SCHEMA, "tool 't'")
    assert inbound.find_invalid_x_mcp_header(CLIENT_SCHEMA) is None  # the client keeps the tool
    sent = inbound.mcp_param_headers(inbound.x_mcp_header_map(CLIENT_SCHEMA), arguments)
    assert check_param_headers(params, arguments, _as_wsgi_sees_them(sent)) is None


_REPLACEMENTS = {
    "region": st.text(),
    "n": st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    "flag": st.booleans(),
}


@given(st.fixed_dictionaries(_REPLACEMENTS), st.sampled_from(sorted(_REPLACEMENTS)), st.data())
def test_a_changed_argument_is_caught(arguments: dict[str, Any], name: str, data: st.DataObject) -> None:
    sent = inbound.mcp_param_headers(inbound.x_mcp_header_map(CLIENT_SCHEMA), arguments)
    other = data.draw(_REPLACEMENTS[name].filter(lambda value: value != arguments[name]))
    params = find_param_headers(CLIENT_SCHEMA, "tool 't'")
    assert check_param_headers(params, {**arguments, name: other}, _as_wsgi_sees_them(sent)) is not None
