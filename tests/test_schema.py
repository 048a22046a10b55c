"""Tables for mcp_auth.schema: JSON Schema from type hints, and argument validation."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired, Optional, Required, TypedDict, Union

import pytest

from mcp_auth.schema import (
    MAX_REPORTED_ERRORS,
    JsonSchema,
    function_schema,
    has_problems,
    return_schema,
    split_docstring,
    type_schema,
    validate,
)
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


# --- validate ----------------------------------------------------------------------------

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
        pytest.param(1, {"type": "mystery"}, [], id="unknown-type-name-allows"),
        pytest.param(1, {}, [], id="empty-schema-allows-anything"),
        # properties and required
        pytest.param({"a": 1, "b": "x"}, OBJECT_AB, [], id="object-valid"),
        pytest.param({"b": "x"}, OBJECT_AB, ["arguments: missing required property 'a'"], id="missing-required"),
        pytest.param({"a": "1"}, OBJECT_AB, ["arguments.a: expected integer, got string"], id="property-wrong-type"),
        pytest.param(
            {"a": True, "b": 2},
            OBJECT_AB,
            ["arguments.a: expected integer, got boolean", "arguments.b: expected string, got integer"],
            id="two-property-errors",
        ),
        pytest.param({"a": 1, "zzz": object()}, OBJECT_AB, [], id="extra-allowed-by-default"),
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
        # anyOf
        pytest.param(None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}, [], id="anyOf-second"),
        pytest.param(4, {"anyOf": [{"type": "integer"}, {"type": "null"}]}, [], id="anyOf-first"),
        pytest.param(
            "4",
            {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            ["arguments: string matches none of the allowed types"],
            id="anyOf-none",
        ),
        pytest.param(
            {"x": [1, "a"]},
            {
                "type": "object",
                "properties": {"x": {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "string"}]}},
            },
            ["arguments.x: array matches none of the allowed types"],
            id="anyOf-nested-deep-mismatch",
        ),
        # enum and const
        pytest.param("red", {"enum": ["red", "green"]}, [], id="enum-ok"),
        pytest.param("blue", {"enum": ["red", "green"]}, ["arguments: must be one of 'red', 'green'"], id="enum-miss"),
        pytest.param(
            3, {"enum": [1, 2], "type": "integer"}, ["arguments: must be one of 1, 2"], id="enum-with-type-miss"
        ),
        pytest.param(
            "1", {"enum": [1, 2], "type": "integer"}, ["arguments: expected integer, got string"], id="type-before-enum"
        ),
        pytest.param(None, {"enum": [None, "x"]}, [], id="enum-null-member"),
        pytest.param("a", {"const": "a"}, [], id="const-ok"),
        pytest.param("b", {"const": "a"}, ["arguments: must be 'a'"], id="const-miss"),
        # JSON true is not the number 1, and false is not 0 (JSON Schema equality).
        pytest.param(True, {"enum": [1, 2]}, ["arguments: must be one of 1, 2"], id="enum-bool-is-not-int-member"),
        pytest.param(False, {"enum": [0, 1]}, ["arguments: must be one of 0, 1"], id="enum-false-is-not-zero"),
        pytest.param(1, {"enum": [True, "x"]}, ["arguments: must be one of True, 'x'"], id="enum-int-is-not-true"),
        pytest.param(True, {"const": 1}, ["arguments: must be 1"], id="const-bool-is-not-int"),
        # additionalProperties
        pytest.param(
            {"a": 1, "c": 2},
            {**OBJECT_AB, "additionalProperties": False},
            ["arguments: unexpected property 'c'"],
            id="additionalProperties-false",
        ),
        pytest.param({"a": 1}, {**OBJECT_AB, "additionalProperties": False}, [], id="additionalProperties-false-ok"),
        pytest.param(
            {"k": 1, "j": "2"},
            {"type": "object", "additionalProperties": {"type": "integer"}},
            ["arguments.j: expected integer, got string"],
            id="additionalProperties-schema",
        ),
        pytest.param(
            {"a": 1, "k": "anything"},
            {**OBJECT_AB, "additionalProperties": True},
            [],
            id="additionalProperties-true",
        ),
    ],
)
def test_validate(value: Any, schema: JsonSchema, expected: list[str]) -> None:
    assert validate(value, schema) == expected
    assert has_problems(value, schema) is bool(expected)


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
    ],
)
def test_validate_caps_reported_errors(value: Any, schema: JsonSchema) -> None:
    errors = validate(value, schema)
    assert MAX_REPORTED_ERRORS == 10
    assert len(errors) == MAX_REPORTED_ERRORS
    assert len(set(errors)) == MAX_REPORTED_ERRORS  # ten distinct problems, the first ten in order
    assert errors[0].startswith("arguments")


def test_validate_round_trip_with_function_schema() -> None:
    schema = function_schema(f_required_and_defaults, Context).input_schema
    assert validate({"a": 1}, schema) == []
    assert validate({"a": 1, "c": None}, schema) == []
    assert validate({"a": 1, "c": 2}, schema) == []
    assert validate({"a": 1, "c": "2"}, schema) == ["arguments.c: string matches none of the allowed types"]
    assert validate({"b": "x"}, schema) == ["arguments: missing required property 'a'"]


def test_validate_enum_class_refuses_bool_for_int_values() -> None:
    """An Enum with int values publishes {"enum": [0, 1]} with no "type"; JSON `true` is not 1."""
    schema = function_schema(f_enum_default, Context).input_schema
    assert validate({"level": 1}, schema) == []
    assert validate({"level": True}, schema) == ["arguments.level: must be one of 0, 1"]
