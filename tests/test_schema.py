"""Tables for mcp_auth.mcp.schema, .validation, .formats: schemas from hints, checks at registration, validation."""

from __future__ import annotations

import enum
import http.server
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, NotRequired, Optional, Required, TypedDict, Union

import pytest

from mcp_auth.mcp.formats import FORMAT_CHECKS, ecma_pattern
from mcp_auth.mcp.schema import JsonSchema, SchemaError, function_schema, return_schema, split_docstring, type_schema
from mcp_auth.mcp.validation import MAX_REPORTED_ERRORS, compile_schema, validate
from mcp_auth.server import Context


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.Enum):
    LOW = 0
    HIGH = 1


class Point(TypedDict):
    x: int
    y: int


class Labelled(TypedDict):
    x: int
    label: NotRequired[str]


class MostlyOptional(TypedDict, total=False):
    x: Required[int]
    note: str


class Partial(TypedDict, total=False):
    note: str


@dataclass
class Box:
    width: float
    tags: list[str] = field(default_factory=list)
    name: str = "box"
    depth: int | None = None


class NotJson:
    pass


# --- type_schema -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        pytest.param(str, {"type": "string"}, id="str"),
        pytest.param(int, {"type": "integer"}, id="int"),
        pytest.param(float, {"type": "number"}, id="float"),
        pytest.param(bool, {"type": "boolean"}, id="bool"),
        pytest.param(type(None), {"type": "null"}, id="NoneType"),
        pytest.param(Any, {}, id="Any"),
        pytest.param(list, {"type": "array"}, id="bare-list"),
        pytest.param(list[int], {"type": "array", "items": {"type": "integer"}}, id="list-int"),
        pytest.param(
            list[list[str]],
            {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            id="list-of-lists",
        ),
        pytest.param(tuple, {"type": "array"}, id="bare-tuple"),
        pytest.param(tuple[int, ...], {"type": "array", "items": {"type": "integer"}}, id="tuple-variadic"),
        pytest.param(tuple[int, int], {"type": "array", "items": {"type": "integer"}}, id="tuple-uniform"),
        pytest.param(
            tuple[int, str],
            {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
            id="tuple-mixed",
        ),
        pytest.param(set[str], {"type": "array", "items": {"type": "string"}}, id="set-str"),
        pytest.param(frozenset[int], {"type": "array", "items": {"type": "integer"}}, id="frozenset-int"),
        pytest.param(Sequence[float], {"type": "array", "items": {"type": "number"}}, id="Sequence-float"),
        pytest.param(dict, {"type": "object"}, id="bare-dict"),
        pytest.param(
            dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}, id="dict-str-int"
        ),
        pytest.param(dict[str, Any], {"type": "object"}, id="dict-str-Any-no-additionalProperties"),
        pytest.param(Mapping[str, bool], {"type": "object", "additionalProperties": {"type": "boolean"}}, id="Mapping"),
        pytest.param(Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}, id="Optional"),  # noqa: UP045
        pytest.param(int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}, id="pipe-None"),
        pytest.param(Union[str, int], {"anyOf": [{"type": "string"}, {"type": "integer"}]}, id="Union"),  # noqa: UP007
        pytest.param(
            str | list[int] | None,
            {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}, {"type": "null"}]},
            id="pipe-three",
        ),
        pytest.param(Literal["a", "b"], {"enum": ["a", "b"], "type": "string"}, id="Literal-str"),
        pytest.param(Literal[1, 2, 3], {"enum": [1, 2, 3], "type": "integer"}, id="Literal-int"),
        pytest.param(Literal[True], {"enum": [True], "type": "boolean"}, id="Literal-bool"),
        pytest.param(Literal[1, "a"], {"enum": [1, "a"]}, id="Literal-mixed-no-type"),
        pytest.param(Color, {"enum": ["red", "green"]}, id="Enum-str"),
        pytest.param(Level, {"enum": [0, 1]}, id="Enum-int"),
        pytest.param(
            Point,
            {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            },
            id="TypedDict",
        ),
        # PEP 655 markers are how a TypedDict says which keys are optional.
        pytest.param(
            Labelled,
            {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "label": {"type": "string"}},
                "required": ["x"],
            },
            id="TypedDict-NotRequired",
        ),
        pytest.param(
            MostlyOptional,
            {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "note": {"type": "string"}},
                "required": ["x"],
            },
            id="TypedDict-Required-in-total-False",
        ),
        pytest.param(
            Partial,
            {"type": "object", "properties": {"note": {"type": "string"}}, "required": []},
            id="TypedDict-total-False",
        ),
        pytest.param(
            Box,
            {
                "type": "object",
                "properties": {
                    "width": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "name": {"type": "string"},
                    "depth": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                },
                "required": ["width"],
            },
            id="dataclass",
        ),
        pytest.param(
            Annotated[str, "a city name"], {"type": "string", "description": "a city name"}, id="Annotated-desc"
        ),
        pytest.param(Annotated[int, 42], {"type": "integer"}, id="Annotated-non-str-ignored"),
        pytest.param(
            Annotated[int | None, "maybe"],
            {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "maybe"},
            id="Annotated-Optional",
        ),
        pytest.param(
            list[Annotated[str, "a tag"]],
            {"type": "array", "items": {"type": "string", "description": "a tag"}},
            id="Annotated-inside-list",
        ),
    ],
)
def test_type_schema(tp: Any, expected: JsonSchema) -> None:
    assert type_schema(tp) == expected


def test_type_schema_returns_fresh_dicts() -> None:
    first = type_schema(str)
    first["description"] = "changed"
    assert type_schema(str) == {"type": "string"}


@pytest.mark.parametrize(
    ("tp", "fragment"),
    [
        pytest.param(dict[int, str], "dict keys must be str", id="dict-int-keys"),
        pytest.param(dict[tuple[int, int], str], "dict keys must be str", id="dict-tuple-keys"),
        pytest.param(list[dict[int, str]], "dict keys must be str", id="nested-dict-int-keys"),
        pytest.param(bytes, "cannot describe", id="bytes"),
        pytest.param(complex, "cannot describe", id="complex"),
        pytest.param(object, "cannot describe", id="object"),
        pytest.param(NotJson, "cannot describe", id="plain-class"),
        pytest.param(Callable[[int], int], "cannot describe", id="callable"),
        pytest.param(bytes | None, "cannot describe", id="optional-bytes"),
    ],
)
def test_type_schema_refuses(tp: Any, fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment):
        type_schema(tp)


# --- function_schema ---------------------------------------------------------------------


def f_required_and_defaults(a: int, b: str = "x", c: float | None = None, d: bool = False) -> None:
    pass


NOT_JSON = NotJson()


def f_non_json_default(when=NOT_JSON) -> None:  # type: ignore[no-untyped-def]
    pass


def f_enum_default(color: Color = Color.GREEN, level: Level = Level.HIGH) -> None:
    pass


def f_collection_defaults(tags: list[str] = ["a"], opts: dict[str, int] = {"k": 1}) -> None:  # noqa: B006
    pass


def f_with_context(ctx: Context, query: str) -> None:
    pass


def f_context_last(query: str, limit: int = 5, context: Context | None = None) -> None:
    pass


def f_unannotated(anything, count: int = 3):  # type: ignore[no-untyped-def]
    pass


def f_keyword_only(*, flag: bool, name: str = "n") -> None:
    pass


def f_no_params() -> None:
    pass


def f_args(*values: int) -> None:
    pass


def f_kwargs(**options: str) -> None:
    pass


def f_bad_hint(data: bytes) -> None:
    pass


@pytest.mark.parametrize(
    ("fn", "expected_schema", "parameters", "context_parameter"),
    [
        pytest.param(
            f_required_and_defaults,
            {
                "type": "object",
                "properties": {
                    "a": {"type": "integer"},
                    "b": {"type": "string", "default": "x"},
                    "c": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
                    "d": {"type": "boolean", "default": False},
                },
                "required": ["a"],
            },
            ("a", "b", "c", "d"),
            None,
            id="required-vs-defaults",
        ),
        pytest.param(
            f_non_json_default,
            {"type": "object", "properties": {"when": {}}},
            ("when",),
            None,
            id="non-json-default-omitted",
        ),
        pytest.param(
            f_enum_default,
            {
                "type": "object",
                "properties": {
                    "color": {"enum": ["red", "green"], "default": "green"},
                    "level": {"enum": [0, 1], "default": 1},
                },
            },
            ("color", "level"),
            None,
            id="enum-default-is-its-value",
        ),
        pytest.param(
            f_collection_defaults,
            {
                "type": "object",
                "properties": {
                    "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
                    "opts": {"type": "object", "additionalProperties": {"type": "integer"}, "default": {"k": 1}},
                },
            },
            ("tags", "opts"),
            None,
            id="collection-defaults",
        ),
        pytest.param(
            f_with_context,
            {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
            ("query",),
            "ctx",
            id="context-excluded",
        ),
        pytest.param(
            f_unannotated,
            {
                "type": "object",
                "properties": {"anything": {}, "count": {"type": "integer", "default": 3}},
                "required": ["anything"],
            },
            ("anything", "count"),
            None,
            id="unannotated-is-unconstrained",
        ),
        pytest.param(
            f_keyword_only,
            {
                "type": "object",
                "properties": {"flag": {"type": "boolean"}, "name": {"type": "string", "default": "n"}},
                "required": ["flag"],
            },
            ("flag", "name"),
            None,
            id="keyword-only",
        ),
        pytest.param(f_no_params, {"type": "object", "properties": {}}, (), None, id="no-parameters-no-required-key"),
    ],
)
def test_function_schema(
    fn: Callable[..., Any], expected_schema: JsonSchema, parameters: tuple[str, ...], context_parameter: str | None
) -> None:
    signature = function_schema(fn, Context)
    assert signature.input_schema == expected_schema
    assert signature.parameters == parameters
    assert signature.context_parameter == context_parameter


@pytest.mark.parametrize(
    ("fn", "fragment"),
    [
        pytest.param(f_args, "*args and **kwargs", id="star-args"),
        pytest.param(f_kwargs, "*args and **kwargs", id="star-kwargs"),
        pytest.param(f_bad_hint, "cannot describe", id="bytes-parameter"),
        # Only a parameter annotated exactly `Context` is the context; `Context | None` is an argument.
        pytest.param(f_context_last, "cannot describe", id="optional-context-is-an-argument"),
    ],
)
def test_function_schema_refuses(fn: Callable[..., Any], fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment.replace("*", r"\*")):
        function_schema(fn, Context)


def doc_google(city: str, days: int = 3, units: str = "metric") -> None:
    """Forecast the weather.

    Looks it up somewhere.

    Args:
        city: The city to look up.
        days (int): How many days,
            counted from today.
        units: Either metric or imperial.

    Returns:
        Nothing.
    """


def doc_continuation_with_colon(path: str, mode: str = "r") -> None:
    """Open a file.

    Args:
        path: Where the file is.
            Example: /tmp/x
        mode: How to open it.
    """


def doc_annotated_wins(city: Annotated[str, "from Annotated"]) -> None:
    """Look up.

    Args:
        city: from docstring
    """


def doc_parameters_header(q: str) -> None:
    """Search.

    Parameters:
        q: the query
    """


def doc_only_description(q: str) -> None:
    """Just a description.

    Over two paragraphs.
    """


def doc_none(q: str) -> None:
    pass


def doc_args_first(q: str) -> None:
    """
    Args:
        q: the query: with a colon
    """


@pytest.mark.parametrize(
    ("fn", "description", "parameter_descriptions", "property_descriptions"),
    [
        pytest.param(
            doc_google,
            "Forecast the weather.\n\nLooks it up somewhere.",
            {
                "city": "The city to look up.",
                "days": "How many days, counted from today.",
                "units": "Either metric or imperial.",
            },
            {
                "city": "The city to look up.",
                "days": "How many days, counted from today.",
                "units": "Either metric or imperial.",
            },
            id="google-args",
        ),
        pytest.param(
            doc_continuation_with_colon,
            "Open a file.",
            {"path": "Where the file is. Example: /tmp/x", "mode": "How to open it."},
            {"path": "Where the file is. Example: /tmp/x", "mode": "How to open it."},
            id="continuation-line-with-colon",
        ),
        pytest.param(
            doc_annotated_wins,
            "Look up.",
            {"city": "from docstring"},
            {"city": "from Annotated"},
            id="annotated-description-wins",
        ),
        pytest.param(doc_parameters_header, "Search.", {"q": "the query"}, {"q": "the query"}, id="parameters-header"),
        pytest.param(
            doc_only_description,
            "Just a description.\n\nOver two paragraphs.",
            {},
            {"q": None},
            id="no-args-section",
        ),
        pytest.param(doc_none, None, {}, {"q": None}, id="no-docstring"),
        pytest.param(
            doc_args_first, None, {"q": "the query: with a colon"}, {"q": "the query: with a colon"}, id="args-only"
        ),
    ],
)
def test_function_schema_docstrings(
    fn: Callable[..., Any],
    description: str | None,
    parameter_descriptions: dict[str, str],
    property_descriptions: dict[str, str | None],
) -> None:
    signature = function_schema(fn, Context)
    assert signature.description == description
    assert dict(signature.parameter_descriptions) == parameter_descriptions
    assert split_docstring(fn) == (description, parameter_descriptions)
    for name, text in property_descriptions.items():
        assert signature.input_schema["properties"][name].get("description") == text


# --- return_schema -----------------------------------------------------------------------


def r_dict() -> dict:  # type: ignore[type-arg]
    return {}


def r_dict_str_int() -> dict[str, int]:
    return {}


def r_typeddict() -> Point:
    return {"x": 1, "y": 2}


def r_typeddict_not_required() -> Labelled:
    return {"x": 1}


def r_dataclass() -> Box:
    return Box(1.0)


def r_int() -> int:
    return 1


def r_str() -> str:
    return ""


def r_list() -> list[int]:
    return []


def r_optional_dict() -> dict[str, int] | None:
    return None


def r_none() -> None:
    return None


def r_bytes() -> bytes:
    return b""


def r_unannotated():  # type: ignore[no-untyped-def]
    return {}


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        pytest.param(r_dict, {"type": "object"}, id="dict"),
        pytest.param(
            r_dict_str_int, {"type": "object", "additionalProperties": {"type": "integer"}}, id="dict-str-int"
        ),
        pytest.param(
            r_typeddict,
            {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            },
            id="TypedDict",
        ),
        pytest.param(
            r_typeddict_not_required,
            {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "label": {"type": "string"}},
                "required": ["x"],
            },
            id="TypedDict-NotRequired",
        ),
        pytest.param(
            r_dataclass,
            {
                "type": "object",
                "properties": {
                    "width": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "name": {"type": "string"},
                    "depth": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                },
                "required": ["width"],
            },
            id="dataclass",
        ),
        pytest.param(r_int, None, id="int"),
        pytest.param(r_str, None, id="str"),
        pytest.param(r_list, None, id="list"),
        pytest.param(r_optional_dict, None, id="optional-dict-is-anyOf"),
        pytest.param(r_none, None, id="None"),
        pytest.param(r_bytes, None, id="unsupported-is-None-not-error"),
        pytest.param(r_unannotated, None, id="unannotated"),
    ],
)
def test_return_schema(fn: Callable[..., Any], expected: JsonSchema | None) -> None:
    assert return_schema(fn) == expected


# --- validate: the messages ----------------------------------------------------------------

OBJECT_AB: JsonSchema = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
    "required": ["a"],
}
NESTED: JsonSchema = {
    "type": "object",
    "properties": {
        "outer": {
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
        }
    },
}


def test_negative_number_refused_by_minimum() -> None:
    """The issue's example: fails open on the hand-written validator, refused with the rule named now."""
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}
    assert validate({"n": -5}, schema) == ["arguments.n: -5 is less than the minimum of 0"]
    assert validate({"n": 0}, schema) == []


@pytest.mark.parametrize(
    ("value", "schema", "expected"),
    [
        # type
        pytest.param("x", {"type": "string"}, [], id="string-ok"),
        pytest.param(1, {"type": "string"}, ["arguments: expected string, got integer"], id="string-got-integer"),
        pytest.param(3, {"type": "integer"}, [], id="integer-ok"),
        pytest.param(True, {"type": "integer"}, ["arguments: expected integer, got boolean"], id="bool-is-not-integer"),
        pytest.param(False, {"type": "number"}, ["arguments: expected number, got boolean"], id="bool-is-not-number"),
        pytest.param(1.5, {"type": "integer"}, ["arguments: expected integer, got number"], id="float-is-not-integer"),
        # A Python int parameter must not receive a float, even one 2020-12 would call an integer.
        pytest.param(1.0, {"type": "integer"}, ["arguments: expected integer, got number"], id="1.0-is-not-integer"),
        pytest.param(3, {"type": "number"}, [], id="int-is-a-number"),
        pytest.param(2.5, {"type": "number"}, [], id="float-is-a-number"),
        pytest.param(True, {"type": "boolean"}, [], id="boolean-ok"),
        pytest.param(0, {"type": "boolean"}, ["arguments: expected boolean, got integer"], id="zero-is-not-boolean"),
        pytest.param(None, {"type": "null"}, [], id="null-ok"),
        pytest.param("", {"type": "null"}, ["arguments: expected null, got string"], id="empty-string-is-not-null"),
        pytest.param([], {"type": "array"}, [], id="array-ok"),
        pytest.param({}, {"type": "array"}, ["arguments: expected array, got object"], id="object-is-not-array"),
        pytest.param({}, {"type": "object"}, [], id="object-ok"),
        pytest.param([], {"type": "object"}, ["arguments: expected object, got array"], id="array-is-not-object"),
        pytest.param(None, {"type": ["string", "null"]}, [], id="type-list-ok"),
        pytest.param(
            1, {"type": ["string", "null"]}, ["arguments: expected string or null, got integer"], id="type-list-miss"
        ),
        pytest.param(1, {}, [], id="empty-schema-allows-anything"),
        # properties and required
        pytest.param({"a": 1, "b": "x"}, OBJECT_AB, [], id="object-valid"),
        pytest.param({"b": "x"}, OBJECT_AB, ['arguments: missing required property "a"'], id="missing-required"),
        pytest.param({"a": "1"}, OBJECT_AB, ["arguments.a: expected integer, got string"], id="property-wrong-type"),
        pytest.param(
            {"a": True, "b": 2},
            OBJECT_AB,
            ["arguments.a: expected integer, got boolean", "arguments.b: expected string, got integer"],
            id="two-property-errors",
        ),
        pytest.param({"a": 1, "zzz": [1]}, OBJECT_AB, [], id="extra-allowed-by-default"),
        # nested paths
        pytest.param({"outer": {"items": [1, 2]}}, NESTED, [], id="nested-ok"),
        pytest.param(
            {"outer": {"items": [1, "two", 3, None]}},
            NESTED,
            [
                "arguments.outer.items[1]: expected integer, got string",
                "arguments.outer.items[3]: expected integer, got null",
            ],
            id="nested-path-with-index",
        ),
        pytest.param(
            {"outer": []}, NESTED, ["arguments.outer: expected object, got array"], id="nested-wrong-container"
        ),
        pytest.param(
            [[1], [2, "x"]],
            {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            ["arguments[1][1]: expected integer, got string"],
            id="array-of-arrays-path",
        ),
        # A property name that is not a plain identifier is quoted: it cannot pose as another message.
        pytest.param(
            {"a b; arguments.x: fine\n": "x"},
            {"type": "object", "additionalProperties": {"type": "integer"}},
            ['arguments["a b; arguments.x: fine\\n"]: expected integer, got string'],
            id="odd-property-name-quoted",
        ),
        # anyOf: the message says what would have fitted
        pytest.param(None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}, [], id="anyOf-second"),
        pytest.param(4, {"anyOf": [{"type": "integer"}, {"type": "null"}]}, [], id="anyOf-first"),
        pytest.param(
            "4",
            {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            ["arguments: expected integer or null, got string"],
            id="anyOf-no-type-fits",
        ),
        pytest.param(
            {"x": [1, "a"]},
            {
                "type": "object",
                "properties": {"x": {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "string"}]}},
            },
            ["arguments.x[1]: expected integer, got string"],
            id="anyOf-the-one-fitting-type-explains",
        ),
        pytest.param(
            5,
            {"anyOf": [{"type": "integer", "maximum": 1}, {"type": "integer", "minimum": 10}]},
            ["arguments: 5 matches none of the anyOf schemas"],
            id="anyOf-two-fitting-types",
        ),
        # enum and const: JSON equality, so true is not 1 and false is not 0
        pytest.param("red", {"enum": ["red", "green"]}, [], id="enum-ok"),
        pytest.param(
            "blue", {"enum": ["red", "green"]}, ['arguments: "blue" is not one of "red", "green"'], id="enum-miss"
        ),
        pytest.param(
            "1", {"enum": [1, 2], "type": "integer"}, ["arguments: expected integer, got string"], id="type-before-enum"
        ),
        pytest.param(None, {"enum": [None, "x"]}, [], id="enum-null-member"),
        pytest.param("b", {"const": "a"}, ['arguments: "b" is not "a"'], id="const-miss"),
        pytest.param(True, {"enum": [1, 2]}, ["arguments: true is not one of 1, 2"], id="enum-bool-is-not-int-member"),
        pytest.param(False, {"enum": [0, 1]}, ["arguments: false is not one of 0, 1"], id="enum-false-is-not-zero"),
        pytest.param(1, {"enum": [True, "x"]}, ['arguments: 1 is not one of true, "x"'], id="enum-int-is-not-true"),
        pytest.param(True, {"const": 1}, ["arguments: true is not 1"], id="const-bool-is-not-int"),
        # additionalProperties
        pytest.param(
            {"a": 1, "c": 2},
            {**OBJECT_AB, "additionalProperties": False},
            ['arguments: unexpected property "c"'],
            id="additionalProperties-false",
        ),
        pytest.param(
            {"a": 1, "k": "anything"}, {**OBJECT_AB, "additionalProperties": True}, [], id="additionalProperties-true"
        ),
        pytest.param(
            {"k": 1, "j": "2"},
            {"type": "object", "additionalProperties": {"type": "integer"}},
            ["arguments.j: expected integer, got string"],
            id="additionalProperties-schema",
        ),
    ],
)
def test_validate(value: Any, schema: JsonSchema, expected: list[str]) -> None:
    assert validate(value, schema) == expected


# --- validate: every keyword enforced ------------------------------------------------------

DEFS: JsonSchema = {
    "$defs": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}},
    "type": "object",
    "properties": {"port": {"$ref": "#/$defs/port"}},
}
TREE: JsonSchema = {  # recursive through $ref: bounded by the value's own depth
    "$defs": {
        "node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}
    },
    "$ref": "#/$defs/node",
}


@pytest.mark.parametrize(
    ("schema", "good", "bad", "message"),
    [
        pytest.param({"maximum": 10}, 10, 11, "11 is greater than the maximum of 10", id="maximum"),
        pytest.param({"minimum": 0}, 0, -5, "-5 is less than the minimum of 0", id="minimum"),
        pytest.param(
            {"exclusiveMinimum": 0},
            0.5,
            0,
            "0 is less than or equal to the exclusiveMinimum of 0",
            id="exclusiveMinimum",
        ),
        pytest.param(
            {"exclusiveMaximum": 1},
            0,
            1,
            "1 is greater than or equal to the exclusiveMaximum of 1",
            id="exclusiveMaximum",
        ),
        pytest.param({"multipleOf": 5}, 15, 12, "12 is not a multiple of 5", id="multipleOf"),
        pytest.param({"multipleOf": 0.5}, 1.5, 1.2, "1.2 is not a multiple of 0.5", id="multipleOf-float"),
        # Once an OverflowError out of jsonschema: a huge integer over a float divisor.
        pytest.param({"multipleOf": 0.75}, 3 * 10**400, 10**400, "is not a multiple of 0.75", id="multipleOf-huge-int"),
        pytest.param(
            {"maxLength": 3}, "abc", "abcd", '"abcd" has 4 characters, more than the maxLength of 3', id="maxLength"
        ),
        pytest.param(
            {"minLength": 2}, "ab", "a", '"a" has 1 characters, fewer than the minLength of 2', id="minLength"
        ),
        pytest.param(
            {"pattern": "^[a-z]+$"}, "abc", "aBc", '"aBc" does not match the pattern "^[a-z]+$"', id="pattern"
        ),
        # ECMA-262 `$` is the end of the text; Python's would accept a trailing newline.
        pytest.param(
            {"pattern": "^[a-z]+$"}, "abc", "abc\n", "does not match the pattern", id="pattern-dollar-no-newline"
        ),
        # ECMA-262 `\d` is 0-9; Python's would accept "٣" (ARABIC-INDIC DIGIT THREE).
        pytest.param({"pattern": r"^\d+$"}, "123", "\u0663", "does not match the pattern", id="pattern-digit-is-ascii"),
        pytest.param({"pattern": "^a.c$"}, "abc", "a\rc", "does not match the pattern", id="pattern-dot-not-cr"),
        pytest.param({"pattern": "b"}, "abc", "xyz", "does not match", id="pattern-is-a-search"),
        pytest.param({"enum": ["a", 1]}, 1, "1", '"1" is not one of "a", 1', id="enum"),
        pytest.param({"const": {"k": [1]}}, {"k": [1]}, {"k": [2]}, '{"k": [2]} is not {"k": [1]}', id="const-object"),
        pytest.param(
            {"oneOf": [{"type": "integer"}, {"minimum": 2}]},
            1,
            3,
            "3 matches more than one of the oneOf schemas",
            id="oneOf-two-match",
        ),
        pytest.param(
            {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            1,
            None,
            "expected integer or string, got null",
            id="oneOf-none-match",
        ),
        pytest.param({"anyOf": [{"minimum": 10}, {"maximum": 0}]}, 11, 5, "5 matches none of the anyOf", id="anyOf"),
        pytest.param(
            {"allOf": [{"type": "integer"}, {"minimum": 3}]}, 3, 2, "2 is less than the minimum of 3", id="allOf"
        ),
        pytest.param({"not": {"type": "string"}}, 1, "s", "\"s\" matches the schema under 'not'", id="not"),
        pytest.param(
            DEFS, {"port": 80}, {"port": 0}, "arguments.port: 0 is less than the minimum of 1", id="$ref-$defs"
        ),
        pytest.param(
            TREE,
            {"children": [{"children": []}]},
            {"children": [{"children": [{"children": 3}]}]},
            "arguments.children[0].children[0].children: expected array, got integer",
            id="$ref-recursive",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
            {"a": 1},
            {"a": 1, "b": 2},
            'unexpected property "b"',
            id="additionalProperties",
        ),
        pytest.param(
            {"type": "object", "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": False},
            {"x-a": 1},
            {"x-a": "1"},
            "arguments.x-a: expected integer, got string",
            id="patternProperties",
        ),
        pytest.param(
            {"type": "object", "patternProperties": {"^[a-z]+$": {}}, "additionalProperties": False},
            {"ab": 1},
            {"ab\n": 1},
            'unexpected property "ab\\n"',
            id="patternProperties-dollar-no-newline",
        ),
        pytest.param(
            {"required": ["a", "b"]},
            {"a": 1, "b": 2},
            {},
            'missing required property "a"; arguments: missing required property "b"',
            id="required",
        ),
        pytest.param(
            {"dependentRequired": {"a": ["b"]}}, {"a": 1, "b": 2}, {"a": 1}, "dependency", id="dependentRequired"
        ),
        pytest.param(
            {"minProperties": 1},
            {"a": 1},
            {},
            "has 0 properties, fewer than the minProperties of 1",
            id="minProperties",
        ),
        pytest.param(
            {"maxProperties": 1}, {"a": 1}, {"a": 1, "b": 2}, "more than the maxProperties of 1", id="maxProperties"
        ),
        pytest.param(
            {"propertyNames": {"maxLength": 2}},
            {"ab": 1},
            {"abc": 1},
            "more than the maxLength of 2",
            id="propertyNames",
        ),
        pytest.param({"minItems": 2}, [1, 2], [1], "[1] has 1 items, fewer than the minItems of 2", id="minItems"),
        pytest.param({"maxItems": 1}, [1], [1, 2], "[1, 2] has 2 items, more than the maxItems of 1", id="maxItems"),
        pytest.param({"uniqueItems": True}, [1, 2], [1, 1], "has repeated items (uniqueItems)", id="uniqueItems"),
        pytest.param({"uniqueItems": True}, [1, True], [1, 1.0], "has repeated items", id="uniqueItems-json-equality"),
        pytest.param(
            {"uniqueItems": True},
            [0, False, [1], [True], {"a": 1}, {"a": True}, None, "1"],
            [{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}],
            "has repeated items",
            id="uniqueItems-objects-by-value",
        ),
        pytest.param({"contains": {"type": "string"}}, [1, "a"], [1, 2], "contain", id="contains"),
        pytest.param(
            {"contains": {"type": "string"}, "maxContains": 1},
            ["a", 1],
            ["a", "b"],
            "Too many items match",
            id="maxContains",
        ),
        pytest.param(
            {"prefixItems": [{"type": "integer"}], "items": False},
            [1],
            [1, 2],
            "arguments",
            id="prefixItems-items-false",
        ),
        pytest.param(
            {"if": {"type": "integer"}, "then": {"minimum": 0}, "else": {"type": "string"}},
            "x",
            -1,
            "-1 is less than the minimum of 0",
            id="if-then-else",
        ),
        pytest.param(
            {"properties": {"a": {}}, "unevaluatedProperties": False},
            {"a": 1},
            {"a": 1, "b": 2},
            "arguments",
            id="unevaluatedProperties",
        ),
        pytest.param(
            {"type": "object", "properties": {"gone": False}},
            {},
            {"gone": 1},
            "arguments.gone: no value is allowed here",
            id="false-schema",
        ),
        pytest.param(
            {"dependentSchemas": {"a": {"required": ["b"]}}},
            {"a": 1, "b": 1},
            {"a": 1},
            'missing required property "b"',
            id="dependentSchemas",
        ),
    ],
)
def test_keyword_enforced(schema: JsonSchema, good: Any, bad: Any, message: str) -> None:
    validator = compile_schema(schema, "test")
    assert validator.problems(good) == []
    problems = validator.problems(bad)
    assert problems, f"{bad!r} passed {schema}"
    assert message in "; ".join(problems)


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        pytest.param(
            "email",
            ["ada@example.org", "a.b+c@x-y.example", "x@[127.0.0.1]"],
            ["ada", "ada@", "@x.org", "a..b@x.org", "a b@x.org", "ada@-x.org"],
            id="email",
        ),
        pytest.param(
            "date-time",
            ["2026-12-01T08:00:00Z", "2026-12-01t08:00:00.5+01:00", "2016-12-31T23:59:60Z"],
            [
                "2026-12-01",
                "2026-13-01T08:00:00Z",
                "2026-02-30T08:00:00Z",
                "2026-12-01T08:00:00",
                "2026-12-01 08:00:00Z",
                "2026-12-01T24:00:00Z",
            ],
            id="date-time",
        ),
        pytest.param("date", ["2024-02-29"], ["2023-02-29", "2024-2-29", "20240229"], id="date"),
        pytest.param(
            "time", ["08:00:00Z", "23:59:59.123-05:30"], ["08:00:00", "8:00:00Z", "08:00:00+25:00"], id="time"
        ),
        pytest.param(
            "uri",
            ["https://example.org/a?b=c#d", "urn:isbn:0451450523", "mailto:ada@example.org"],
            [
                "/relative/path",
                "no scheme",
                "http://exa mple.org",
                "http://x:99999/",
                "https://example.org/%zz",
                "http://ex\u00e4mple.org",
            ],
            id="uri",
        ),
        pytest.param("uri-reference", ["/relative/path?x=1", "https://example.org"], ["a b", "%"], id="uri-reference"),
        pytest.param(
            "hostname",
            ["example.org", "a-b.c", "localhost"],
            ["-x.org", "a..b", "x" * 64 + ".org", "ex_ample.org"],
            id="hostname",
        ),
        pytest.param("ipv4", ["192.0.2.1"], ["192.0.2", "192.0.2.256", "01.2.3.4"], id="ipv4"),
        pytest.param("ipv6", ["::1", "2001:db8::1"], ["::g", "fe80::1%eth0", "192.0.2.1"], id="ipv6"),
        pytest.param(
            "uuid", ["2f1c5c8e-9b7a-4c1e-8f2d-3a4b5c6d7e8f"], ["2f1c5c8e9b7a4c1e8f2d3a4b5c6d7e8f", "x"], id="uuid"
        ),
        pytest.param("json-pointer", ["", "/a/b~0~1"], ["a", "/a~2"], id="json-pointer"),
    ],
)
def test_format_enforced(fmt: str, good: list[str], bad: list[str]) -> None:
    validator = compile_schema({"format": fmt}, "test")
    for value in good:
        assert validator.problems(value) == [], value
    for value in bad:
        (problem,) = validator.problems(value)
        assert problem.startswith("arguments: ") and problem.endswith(f" is not a valid {fmt}"), value
    assert validator.problems(5) == []  # a format constrains strings; `type` is for the rest


def test_checked_formats_do_not_depend_on_installed_packages() -> None:
    # jsonschema's own checker grows with whatever optional packages are installed.
    assert set(FORMAT_CHECKS) == {
        "date-time",
        "date",
        "time",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "uri",
        "uri-reference",
        "uuid",
        "json-pointer",
    }


# --- compile_schema: what cannot be enforced is refused ------------------------------------


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        pytest.param(
            {"properties": {"n": {"minimum": "0"}}},
            "#/properties/n/minimum: '0' is not of type 'number'",
            id="meta-schema",
        ),
        pytest.param({"type": "integr"}, "not a valid JSON Schema 2020-12 at #/type", id="unknown-type-name"),
        pytest.param(
            {"properties": {"n": {"minimun": 0}}},
            '#/properties/n/minimun: "minimun" is not a JSON Schema 2020-12 keyword',
            id="typo-keyword",
        ),
        pytest.param(
            {"dependencies": {"a": ["b"]}}, '"dependencies" is not a JSON Schema 2020-12 keyword', id="draft-7-keyword"
        ),
        pytest.param({"contentEncoding": "base64"}, '"contentEncoding" is not', id="content-annotation-not-enforced"),
        pytest.param(
            {"format": "credit-card"},
            'format "credit-card" cannot be checked; checked formats: date-time',
            id="unknown-format",
        ),
        pytest.param({"format": "regex"}, 'format "regex" cannot be checked', id="regex-format"),
        pytest.param(
            {"$ref": "#/$defs/missing"},
            '#/$ref: $ref "#/$defs/missing" does not resolve within the schema',
            id="dangling-ref",
        ),
        pytest.param({"$ref": "other.json"}, '$ref "other.json" does not resolve', id="relative-document-ref"),
        pytest.param(
            {"items": {"$dynamicRef": "https://example.org/x"}}, "#/items/$dynamicRef", id="remote-dynamicRef"
        ),
        pytest.param(
            {"$schema": "http://json-schema.org/draft-04/schema#"},
            "is not a JSON Schema dialect mcp_auth supports: 2020-12",
            id="unsupported-draft",
        ),
        pytest.param({"pattern": "(?<name>a)"}, "#/pattern", id="pattern-python-cannot-compile"),
        pytest.param({"pattern": r"[\D]"}, r"\D inside [...] is not supported", id="pattern-negated-class-escape"),
        pytest.param({"patternProperties": {"(": {}}}, "#/patternProperties", id="bad-patternProperties"),
        pytest.param(
            {"patternProperties": {r"^[\D]$": {}}}, r"#/patternProperties: pattern", id="patternProperties-class-escape"
        ),
        pytest.param([], "the schema must be a JSON object, not list", id="not-an-object"),
    ],
)
def test_compile_schema_refuses(schema: Any, fragment: str) -> None:
    with pytest.raises(SchemaError, match=r"^tool 'x': ") as caught:
        compile_schema(schema, "tool 'x'")
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}, id="$schema-2020-12"
        ),
        pytest.param(
            {"title": "t", "description": "d", "default": 1, "examples": [1], "deprecated": False}, id="annotations"
        ),
        pytest.param({"readOnly": True, "writeOnly": False, "$comment": "c"}, id="more-annotations"),
        pytest.param({"properties": {"q": {"type": "string", "x-mcp-header": "Query"}}}, id="x-extension"),
        pytest.param({"$id": "https://example.org/s", "$defs": {"a": {"$anchor": "A"}}, "$ref": "#A"}, id="anchor"),
        pytest.param(
            {"$defs": {"a": {"$id": "https://example.org/a", "type": "integer"}}, "$ref": "https://example.org/a"},
            id="embedded-id",
        ),
        pytest.param({"definitions": {"a": {}}, "$ref": "#/definitions/a"}, id="definitions-pointer"),
        pytest.param({"examples": [{"pattern": "[", "minimun": 1}]}, id="keywords-inside-examples-are-data"),
        pytest.param({"properties": {"minimun": {}, "pattern": {}}}, id="property-named-like-keywords"),
        pytest.param(DEFS, id="defs"),
        pytest.param(TREE, id="recursive"),
    ],
)
def test_compile_schema_accepts(schema: JsonSchema) -> None:
    compile_schema(schema, "test")


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = json.dumps({"type": "integer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_remote_ref_is_refused_and_never_fetched() -> None:
    """jsonschema's default registry would GET the URL; ours refuses the schema and sends nothing."""
    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.server_address[1]}/schema.json"
        schema = {"type": "object", "properties": {"n": {"$ref": url}}}
        with pytest.raises(SchemaError, match="references to other documents are never fetched"):
            compile_schema(schema, "tool 'x'")
        assert _CountingHandler.hits == []
    finally:
        listener.shutdown()
        listener.server_close()
        thread.join(timeout=10)


# --- validate: bounded answers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "schema"),
    [
        pytest.param(
            {f"k{i:02}": "x" for i in range(50)},
            {"type": "object", "additionalProperties": {"type": "integer"}},
            id="many-bad-properties",
        ),
        pytest.param(["x"] * 1000, {"type": "array", "items": {"type": "integer"}}, id="many-bad-items"),
        pytest.param({}, {"type": "object", "required": [f"r{i}" for i in range(30)]}, id="many-missing-required"),
        pytest.param(
            [i for i in range(1000)],
            {"type": "array", "items": {"type": "integer", "maximum": -1}},
            id="many-out-of-range",
        ),
    ],
)
def test_validate_caps_reported_errors(value: Any, schema: JsonSchema) -> None:
    errors = validate(value, schema)
    assert MAX_REPORTED_ERRORS == 10
    assert len(errors) == MAX_REPORTED_ERRORS
    assert len(set(errors)) == MAX_REPORTED_ERRORS  # ten distinct problems, the first ten in order
    assert errors[0].startswith("arguments")


@pytest.mark.parametrize(
    ("value", "schema"),
    [
        pytest.param({"s": "A" * 1_000_000}, {"properties": {"s": {"maxLength": 5}}}, id="long-string-maxLength"),
        pytest.param({"s": "A" * 1_000_000}, {"properties": {"s": {"pattern": "^b"}}}, id="long-string-pattern"),
        pytest.param({"s": "A" * 1_000_000}, {"properties": {"s": {"enum": ["a"]}}}, id="long-string-enum"),
        pytest.param({"s": ["A" * 1000] * 1000}, {"properties": {"s": {"maxItems": 1}}}, id="long-array"),
        pytest.param({"A" * 100_000: 1}, {"additionalProperties": False}, id="long-property-name"),
        pytest.param({"A" * 100_000: 1}, {"additionalProperties": {"type": "string"}}, id="long-name-in-path"),
        pytest.param({"s": "A" * 1_000_000}, {"properties": {"s": {"not": {"type": "string"}}}}, id="long-string-not"),
    ],
)
def test_validate_never_echoes_a_huge_value(value: Any, schema: JsonSchema) -> None:
    (problem,) = validate(value, schema)
    assert len(problem) < 300
    assert "AAAAAAAAAA…" in problem


# jsonschema's own uniqueItems compares pairwise when items cannot be sorted: 50,000
# small objects took hours. This bound is about that, and generous for a busy machine.
UNIQUE_ITEMS_SECONDS = 10


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([{"i": n} for n in range(50_000)], id="objects"),
        pytest.param([n if n % 2 else str(n) for n in range(50_000)], id="mixed-types"),
    ],
)
def test_unique_items_is_linear(items: list[Any]) -> None:
    validator = compile_schema({"type": "array", "uniqueItems": True}, "test")
    started = time.monotonic()
    assert validator.problems(items) == []
    assert validator.problems([*items, items[-1]]) == ["arguments: has repeated items (uniqueItems)"]
    assert time.monotonic() - started < UNIQUE_ITEMS_SECONDS


def test_validate_survives_a_schema_that_loops() -> None:
    # A $ref cycle that never descends into the value: refused, not a RecursionError.
    schema = {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    assert validate({}, schema) == ["arguments: cannot be validated (the schema refers to itself without end)"]


def test_validate_round_trip_with_function_schema() -> None:
    schema = function_schema(f_required_and_defaults, Context).input_schema
    assert validate({"a": 1}, schema) == []
    assert validate({"a": 1, "c": None}, schema) == []
    assert validate({"a": 1, "c": 2}, schema) == []
    assert validate({"a": 1, "c": "2"}, schema) == ["arguments.c: expected number or null, got string"]
    assert validate({"b": "x"}, schema) == ['arguments: missing required property "a"']


def test_validate_enum_class_refuses_bool_for_int_values() -> None:
    """An Enum with int values publishes {"enum": [0, 1]} with no "type"; JSON `true` is not 1."""
    schema = function_schema(f_enum_default, Context).input_schema
    assert validate({"level": 1}, schema) == []
    assert validate({"level": True}, schema) == ["arguments.level: true is not one of 0, 1"]


@pytest.mark.parametrize(
    "fn",
    [
        f_required_and_defaults,
        f_non_json_default,
        f_enum_default,
        f_collection_defaults,
        f_with_context,
        f_unannotated,
        f_keyword_only,
        f_no_params,
    ],
)
def test_inferred_schemas_compile(fn: Callable[..., Any]) -> None:
    compile_schema(function_schema(fn, Context).input_schema, fn.__name__)


@pytest.mark.parametrize("fn", [r_dict, r_dict_str_int, r_typeddict, r_typeddict_not_required, r_dataclass])
def test_inferred_output_schemas_compile(fn: Callable[..., Any]) -> None:
    schema = return_schema(fn)
    assert schema is not None
    compile_schema(schema, fn.__name__)


@pytest.mark.parametrize(
    ("pattern", "python"),
    [
        pytest.param("^[a-z]+$", r"^[a-z]+\Z", id="dollar-is-end-of-text"),
        pytest.param(r"\$", r"\$", id="escaped-dollar"),
        pytest.param("[$]", "[$]", id="dollar-in-class"),
        pytest.param(r"\d\D\w\W", "[0-9][^0-9][A-Za-z0-9_][^A-Za-z0-9_]", id="ascii-classes"),
        pytest.param(r"[\d\w-]", "[0-9A-Za-z0-9_-]", id="class-escapes-in-class"),
        pytest.param("a.b", "a[^\\n\\r\\u2028\\u2029]b", id="dot-not-line-terminators"),
        pytest.param("[.]", "[.]", id="dot-in-class"),
        pytest.param("[]", "(?!)", id="empty-class"),
        pytest.param("[^]", "(?s:.)", id="negated-empty-class"),
        pytest.param("[[]", r"[\[]", id="bracket-in-class"),
        pytest.param("[a&&b]", r"[a\&\&b]", id="set-operators-are-characters"),
        pytest.param(r"\s\b(?:x)", r"\s\b(?:x)", id="other-escapes-kept"),
    ],
)
def test_ecma_pattern(pattern: str, python: str) -> None:
    assert ecma_pattern(pattern) == python
