"""The quick predicate of argument validation never accepts what the full validator refuses.

`mcp_auth.mcp.quickcheck` answers True only when it is sure a value is valid;
everything else goes to the `jsonschema` validator. These tests hold it to
that against the real validator (the one `compile_schema` builds), for
schemas drawn from the keywords it understands and values drawn from all of
JSON, and check that it does fire for the schemas tools really have (else it
would save nothing).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_auth.mcp.quickcheck import quick_accept
from mcp_auth.mcp.schema import function_schema
from mcp_auth.mcp.validation import compile_schema
from mcp_auth.server import Context

TYPE_NAMES = ["object", "array", "string", "integer", "number", "boolean", "null"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1, 1.0, -0.0, 2.5, True, False, "", "a", "1"])
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "d", "x"]), children, max_size=4)
    ),
    max_leaves=12,
)


def _schemas(depth: int) -> st.SearchStrategy[Any]:
    leaf_type = st.sampled_from(TYPE_NAMES) | st.lists(st.sampled_from(TYPE_NAMES), min_size=1, max_size=3, unique=True)
    annotations = st.fixed_dictionaries(
        {}, optional={"title": st.just("T"), "description": st.just("D"), "default": st.just(1), "x-note": st.just(1)}
    )
    leaf = st.builds(lambda t, a: {"type": t, **a}, leaf_type, annotations) | st.just(True) | st.just({})
    if depth == 0:
        return leaf
    inner = _schemas(depth - 1)
    names = st.sampled_from(["a", "b", "c"])
    obj = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["object", "array", "string"]) | st.just(["object", "null"]),
            "properties": st.dictionaries(names, inner, max_size=3),
            "required": st.lists(names, max_size=3, unique=True),
            "additionalProperties": st.booleans() | inner,
            "items": inner,
            "anyOf": st.lists(inner, min_size=1, max_size=3),
            # Keywords it does not understand: the whole schema must then go to the validator.
            "minLength": st.just(2),
            "enum": st.just([1, "a"]),
        },
    )
    return leaf | obj


def full_validator_accepts(schema: Any, value: Any) -> bool:
    compiled = compile_schema(schema, "test")
    return list(compiled._validator.iter_errors(value)) == []


@given(_schemas(3).filter(lambda schema: isinstance(schema, dict)), json_values)
def test_a_quick_yes_is_always_a_yes_of_the_full_validator(schema: Any, value: Any) -> None:
    if isinstance(schema, dict) and {"minLength", "enum"} & schema.keys():
        assert quick_accept(schema) is None
    quick = quick_accept(schema)
    if quick is not None and quick(value):
        assert full_validator_accepts(schema, value), (schema, value)


@given(json_values)
def test_problems_agree_with_the_full_validator_for_an_inferred_schema(value: Any) -> None:
    def tool(text: str, count: int = 1, ratio: float = 0.5, flag: bool = False, tags: list[str] | None = None) -> str:
        return text

    compiled = compile_schema(function_schema(tool, Context).input_schema, "tool")
    arguments = {"text": "t", "count": value} if not isinstance(value, dict) else value
    assert (compiled.problems(arguments) == []) == full_validator_accepts(compiled.schema, arguments)


def test_the_quick_predicate_fires_for_inferred_schemas_and_refuses_what_it_must() -> None:
    def tool(text: str, count: int = 1, ratio: float = 0.5, flag: bool = False, tags: list[str] | None = None) -> str:
        return text

    schema = function_schema(tool, Context).input_schema
    quick = quick_accept(schema)
    assert quick is not None
    assert quick({"text": "a", "count": 2, "ratio": 1, "flag": True, "tags": ["x"]})
    assert quick({"text": "a", "tags": None})
    assert not quick({})  # text is required
    assert not quick({"text": 1})
    assert not quick({"text": "a", "count": True})  # a boolean is not an integer
    assert not quick({"text": "a", "ratio": False})
    assert not quick({"text": "a", "tags": [1]})
    assert not quick({"text": "a", "count": 1.0})  # not sure: the full validator decides
    unsure = {"text": "a", "count": 1.0}
    assert (compile_schema(schema, "tool").problems(unsure) == []) == full_validator_accepts(schema, unsure)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": "email"},
        {"type": "string", "pattern": "^a"},
        {"type": "integer", "minimum": 0},
        {"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}},
        {"type": "array", "items": [{"type": "string"}]},
        {"type": "object", "properties": {"a": {"const": 1}}},
        {"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}},
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"not": {"type": "string"}},
        False,
    ],
)
def test_a_schema_with_any_other_keyword_has_no_quick_predicate(schema: Any) -> None:
    assert quick_accept(schema) is None
