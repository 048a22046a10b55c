"""Tables for mcp_auth.mcp.dialects and the dialect-aware parts of mcp_auth.mcp.validation.

`$schema` chooses the dialect (2020-12 without one; 2019-09 and draft-07 on
request; anything else refused at registration), `$ref` resolves inside the
document only ($defs, $anchor, $id-relative), a schema too composed to check
in bounded time is refused, and tools/list shows every keyword as written.
Output schemas: any schema in 2026-07-28, object-only for the handshake era.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_server import initialized_call

from mcp_auth import McpServer, ToolResult, text_content
from mcp_auth.mcp.jsonrpc import Request
from mcp_auth.mcp.modern import ModernRequest
from mcp_auth.mcp.schema import JsonSchema, SchemaError
from mcp_auth.mcp.validation import MAX_EXPANDED_SUBSCHEMAS, MAX_SUBSCHEMA_DEPTH, compile_schema

D2020 = "https://json-schema.org/draft/2020-12/schema"
D2019 = "https://json-schema.org/draft/2019-09/schema"
D7 = "http://json-schema.org/draft-07/schema#"


# --- each dialect validates by its own rules -----------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "good", "bad", "fragment"),
    [
        pytest.param(
            {"$schema": D7, "type": "array", "items": [{"type": "integer"}], "additionalItems": False},
            [1],
            [1, 2],
            "arguments",
            id="draft-07-tuple-items",
        ),
        pytest.param(
            {"$schema": D7, "type": "object", "dependencies": {"a": ["b"]}},
            {"a": 1, "b": 2},
            {"a": 1},
            "dependency",
            id="draft-07-dependencies-names",
        ),
        pytest.param(
            {"$schema": D7, "type": "object", "dependencies": {"a": {"required": ["c"]}}},
            {"a": 1, "c": 2},
            {"a": 1},
            "missing required property",
            id="draft-07-dependencies-schema",
        ),
        pytest.param(
            {"$schema": D7, "definitions": {"port": {"type": "integer", "maximum": 9}}, "$ref": "#/definitions/port"},
            9,
            10,
            "greater than the maximum",
            id="draft-07-definitions-ref",
        ),
        pytest.param(
            {"$schema": D7, "definitions": {"p": {"$id": "#port", "type": "integer"}}, "$ref": "#port"},
            1,
            "x",
            "expected integer",
            id="draft-07-plain-name-id",
        ),
        pytest.param(
            {"$schema": D2019, "type": "array", "items": [{"type": "string"}], "additionalItems": {"type": "integer"}},
            ["a", 1],
            ["a", "b"],
            "expected integer",
            id="2019-09-tuple-items",
        ),
        pytest.param(
            {
                "$schema": D2019,
                "$recursiveAnchor": True,
                "type": "object",
                "properties": {"child": {"$recursiveRef": "#"}, "n": {"type": "integer"}},
            },
            {"child": {"n": 1}},
            {"child": {"n": "x"}},
            "arguments.child.n: expected integer",
            id="2019-09-recursiveRef",
        ),
        pytest.param(
            {"$schema": D2020, "type": "array", "prefixItems": [{"type": "string"}], "items": False},
            ["a"],
            ["a", 1],
            "Expected at most 1 item",
            id="2020-12-prefixItems",
        ),
        pytest.param(
            {
                "$id": "https://example.org/root",
                "$defs": {"a": {"$anchor": "Port", "type": "integer"}},
                "$ref": "#Port",
            },
            1,
            "x",
            "expected integer",
            id="2020-12-anchor",
        ),
        pytest.param(
            {
                "$id": "https://example.org/schemas/root",
                "$defs": {"a": {"$id": "port.json", "type": "integer", "minimum": 1}},
                "$ref": "port.json",
            },
            1,
            0,
            "less than the minimum",
            id="2020-12-id-relative",
        ),
        pytest.param(
            {"type": "array", "items": {"type": "string", "pattern": r"^\d$"}},
            ["3"],
            ["\u0663"],  # ARABIC-INDIC DIGIT THREE: \d in Python, not in ECMA-262
            "does not match the pattern",
            id="ecma-pattern-under-items",
        ),
        pytest.param(
            {"type": "object", "additionalProperties": {"type": "string", "pattern": r"^\d$"}},
            {"a": "3"},
            {"a": "\u0663"},
            "does not match the pattern",
            id="ecma-pattern-under-additionalProperties",
        ),
        pytest.param({"$schema": D7, "type": "integer"}, 1, 1.0, "expected integer", id="draft-07-integer-is-an-int"),
        pytest.param(
            {"$schema": D2019, "type": "array", "uniqueItems": True},
            [{"a": 1}, {"a": 2}],
            [{"a": 1}, {"a": 1}],
            "repeated items",
            id="2019-09-unique-items-repaired",
        ),
    ],
)
def test_dialect_rules(schema: JsonSchema, good: Any, bad: Any, fragment: str) -> None:
    validator = compile_schema(schema, "test")
    assert validator.problems(good) == []
    problems = validator.problems(bad)
    assert problems and fragment in problems[0], problems


# --- refused at registration ----------------------------------------------------------------------


def _ref_chain(length: int) -> JsonSchema:
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(length)}
    defs[f"d{length}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def _doubling(levels: int) -> JsonSchema:
    # Each level tries the next one twice: 2**levels checks of the last one per value.
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(levels)}
    defs[f"d{levels}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def _nested(levels: int) -> JsonSchema:
    schema: JsonSchema = {"type": "integer"}
    for _ in range(levels):
        schema = {"not": schema}
    return schema


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        pytest.param({"$schema": "http://json-schema.org/draft-04/schema#"}, "draft-04", id="draft-04"),
        pytest.param({"$schema": "https://example.org/my-dialect"}, "not a JSON Schema dialect", id="made-up"),
        pytest.param({"$schema": 7}, "'int' is not a JSON Schema dialect", id="not-a-string"),
        pytest.param(
            {"$schema": D7, "prefixItems": [{}]}, '"prefixItems" is not a JSON Schema draft-07', id="2020-in-07"
        ),
        pytest.param({"$schema": D7, "$defs": {"a": {}}}, '"$defs" is not a JSON Schema draft-07', id="defs-in-07"),
        pytest.param({"$schema": D2019, "$dynamicRef": "#a"}, '"$dynamicRef" is not a JSON Schema 2019-09', id="dyn"),
        pytest.param({"$recursiveRef": "#"}, '"$recursiveRef" is not a JSON Schema 2020-12', id="recursive-in-2020"),
        pytest.param(
            {
                "$schema": D7,
                "definitions": {"a": {}},
                "properties": {"n": {"$ref": "#/definitions/a", "type": "integer"}},
            },
            'draft-07 ignores the keywords beside $ref ("type")',
            id="draft-07-ref-sibling",
        ),
        pytest.param(
            {"$schema": D7, "properties": {"n": {"$ref": "#/definitions/none"}}},
            '$ref "#/definitions/none" does not resolve',
            id="draft-07-dangling",
        ),
        pytest.param(
            {"$defs": {"a": {"$schema": D7, "type": "integer"}}},
            "the whole schema must be one dialect (2020-12",
            id="mixed-dialects",
        ),
        pytest.param({"$ref": "#Missing"}, '$ref "#Missing" does not resolve', id="missing-anchor"),
        pytest.param(
            {"$id": "https://example.org/root", "$ref": "https://example.org/other.json"},
            "references to other documents are never fetched",
            id="id-relative-to-another-document",
        ),
        pytest.param(_doubling(20), f"more than {MAX_EXPANDED_SUBSCHEMAS} subschemas", id="exponential-anyOf"),
        pytest.param(_ref_chain(MAX_SUBSCHEMA_DEPTH + 5), f"deeper than {MAX_SUBSCHEMA_DEPTH} levels", id="ref-chain"),
        pytest.param(_nested(5000), "nests deeper than", id="deep-document"),
    ],
)
def test_refused_at_registration(schema: JsonSchema, fragment: str) -> None:
    with pytest.raises(SchemaError, match=r"^tool 'x': ") as caught:
        compile_schema(schema, "tool 'x'")
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(_doubling(8), id="modest-anyOf-sharing"),
        pytest.param(_ref_chain(MAX_SUBSCHEMA_DEPTH - 5), id="ref-chain-within-bound"),
        pytest.param({"$schema": D7, "$ref": "#/definitions/a", "definitions": {"a": {}}, "title": "t"}, id="07-title"),
        pytest.param({"$schema": D2019 + "#", "type": "object"}, id="2019-with-empty-fragment"),
        pytest.param({"$schema": D2020 + "#", "type": "object"}, id="2020-with-empty-fragment"),
        pytest.param({"properties": {}}, id="empty-properties"),
    ],
)
def test_accepted_at_registration(schema: JsonSchema) -> None:
    compile_schema(schema, "test")


# --- tools/list: keywords verbatim; outputSchema per era ------------------------------------------

DRAFT_07_TOOL: JsonSchema = {
    "$schema": D7,
    "type": "object",
    "definitions": {"port": {"type": "integer", "minimum": 1}},
    "properties": {"port": {"$ref": "#/definitions/port"}, "tags": {"type": "array", "items": [{"type": "string"}]}},
    "required": ["port"],
}

LIST_OUTPUT: JsonSchema = {"type": "array", "items": {"type": "integer"}}


def _server() -> McpServer:
    server = McpServer("t")
    server.tool("connect", input_schema=DRAFT_07_TOOL)(lambda port, tags=(): f"port {port}")
    server.tool("numbers", output_schema=LIST_OUTPUT)(lambda: [1, 2, 3])
    server.tool("wrong", output_schema=LIST_OUTPUT)(lambda: ["x"])
    server.tool("explicit", output_schema=LIST_OUTPUT)(lambda: ToolResult([text_content("[4]")], structured=[4]))
    return server


def _dispatch(server: McpServer, modern: bool, method: str, params: dict[str, Any]) -> dict[str, Any]:
    call = initialized_call(server)
    call.modern = ModernRequest("2026-07-28", {}) if modern else None
    return server.dispatcher.dispatch(Request(1, method, params), call)


@pytest.mark.parametrize("modern", [pytest.param(False, id="handshake"), pytest.param(True, id="modern")])
def test_input_schema_listed_verbatim(modern: bool) -> None:
    tools = {t["name"]: t for t in _dispatch(_server(), modern, "tools/list", {})["tools"]}
    assert tools["connect"]["inputSchema"] == DRAFT_07_TOOL
    result = _dispatch(_server(), modern, "tools/call", {"name": "connect", "arguments": {"port": 0}})
    assert result["isError"] and "less than the minimum of 1" in result["content"][0]["text"]


def test_non_object_output_schema_is_modern_only() -> None:
    handshake = {t["name"]: t for t in _dispatch(_server(), False, "tools/list", {})["tools"]}
    modern = {t["name"]: t for t in _dispatch(_server(), True, "tools/list", {})["tools"]}
    assert "outputSchema" not in handshake["numbers"]
    assert modern["numbers"]["outputSchema"] == LIST_OUTPUT


@pytest.mark.parametrize(
    ("tool", "modern", "expected"),
    [
        pytest.param("numbers", True, {"content": [text_content("[1, 2, 3]")], "structuredContent": [1, 2, 3]}, id="m"),
        pytest.param("numbers", False, {"content": [text_content("[1, 2, 3]")]}, id="handshake-text-only"),
        pytest.param("explicit", True, {"content": [text_content("[4]")], "structuredContent": [4]}, id="result-m"),
        pytest.param("explicit", False, {"content": [text_content("[4]")]}, id="result-handshake"),
    ],
)
def test_structured_content_per_era(tool: str, modern: bool, expected: dict[str, Any]) -> None:
    result = _dispatch(_server(), modern, "tools/call", {"name": tool, "arguments": {}})
    assert {key: result[key] for key in ("content", "structuredContent", "isError") if key in result} == expected


def test_modern_output_is_validated_against_any_schema() -> None:
    result = _dispatch(_server(), True, "tools/call", {"name": "wrong", "arguments": {}})
    assert result["isError"]
    assert "structuredContent[0]: expected integer" in result["content"][0]["text"]


def test_output_schema_must_be_an_object_schema_document() -> None:
    with pytest.raises(SchemaError, match="outputSchema: must be a JSON Schema object"):
        McpServer("t").tool("bad", output_schema=[])(lambda: 1)  # type: ignore[arg-type]
