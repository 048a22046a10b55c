"""The JSON Schema dialects a tool's schemas may be written in, and the validator each one gets.

MCP says a schema without `$schema` is JSON Schema 2020-12, and lets an
explicit `$schema` choose another dialect. We serve the three that tools are
written in: 2020-12 (the default), 2019-09 and draft-07. Each `Dialect`
names its keywords by role (which hold subschemas, which assert, which only
describe), so `mcp_auth.mcp.validation` can refuse at registration what a
dialect would silently ignore (a typo, a keyword from another dialect, a
draft-07 sibling of `$ref`), and gives its `jsonschema` validator class the
same repairs in every dialect: linear `uniqueItems`, overflow-safe
`multipleOf`, `integer` meaning an integer, and a reference registry that
never fetches anything.

It trusts the schema's author; the values validated come from clients and
are never fetched, evaluated or imported.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.validators
import referencing
import referencing.exceptions
import referencing.jsonschema

from .schema import SchemaError

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
DRAFT_2019_09 = "https://json-schema.org/draft/2019-09/schema"
DRAFT_07 = "http://json-schema.org/draft-07/schema"


def _is_integer(checker: Any, value: Any) -> bool:
    # 2020-12 counts 1.0 as an integer; a Python `int` parameter must not receive a float.
    return isinstance(value, int) and not isinstance(value, bool)


def _json_key(value: Any) -> Any:
    """A hashable stand-in for a JSON value, equal exactly when JSON Schema calls the values equal:
    1 and 1.0 are equal, true and 1 are not, an object's key order does not matter."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(_json_key(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _json_key(item)) for key, item in value.items()))
    return (type(value).__name__, value)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    # jsonschema compares items pairwise when they cannot be sorted (objects, or
    # mixed types): a few thousand items from a client would hold a thread for
    # minutes. Hashing keeps it linear.
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _json_key(item)
        if key in seen:
            yield jsonschema.ValidationError("has repeated items")
            return
        seen.add(key)


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    # jsonschema divides an integer by a float divisor before its own overflow
    # guard, so 10**400 against "multipleOf": 0.5 raised OverflowError.
    if not validator.is_type(instance, "number"):
        return
    if isinstance(divisor, float) or isinstance(instance, float):
        try:
            quotient = instance / divisor
            failed = int(quotient) != quotient
        except OverflowError:
            failed = (fractions.Fraction(instance) / fractions.Fraction(divisor)).denominator != 1
    else:
        failed = instance % divisor != 0
    if failed:
        yield jsonschema.ValidationError("is not a multiple")


def _required(validator: Any, required: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    # As jsonschema's, but the message is the bare name, so ours can quote it.
    if not validator.is_type(instance, "object"):
        return
    for name in required:
        if name not in instance:
            yield jsonschema.ValidationError(name)


def _repaired(base: Any) -> Any:
    return jsonschema.validators.extend(
        base,
        validators={"uniqueItems": _unique_items, "multipleOf": _multiple_of, "required": _required},
        type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer),
    )


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    # jsonschema's default registry fetches a remote $ref over the network (with a
    # warning): a request to wherever a schema points. Ours never fetches.
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Dialect:
    """One JSON Schema dialect: its keywords by role, its repaired validator, its reference rules."""

    name: str  # as a message names it: "2020-12"
    uri: str
    validator: Any  # a jsonschema validator class
    specification: Any  # referencing's rules for $id, anchors and subresources
    subschema: frozenset[str]  # keyword -> one schema
    subschema_list: frozenset[str]  # keyword -> a list of schemas
    subschema_map: frozenset[str]  # keyword -> {name: schema}
    assertions: frozenset[str]  # keywords the validator enforces
    annotations: frozenset[str]  # keywords that only describe
    # draft-07 ignores every keyword beside `$ref`: those are refused, not ignored.
    ref_hides_siblings: bool = False
    # `items` may be a list of schemas (before 2020-12's `prefixItems`).
    items_may_be_list: bool = False
    # draft-07 `dependencies`: {name: schema or list of names}.
    dependencies: bool = False


_COMMON_ASSERTIONS = frozenset(
    {"const", "enum", "type", "required", "format", "pattern", "multipleOf", "$ref"}
    | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"}
    | {"minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties"}
)

_COMMON_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "readOnly", "writeOnly"}
    | {"deprecated"}
)

# `definitions` is no 2019-09/2020-12 keyword, but a JSON Pointer `$ref` reaches into it
# all the same; schemas written for older drafts keep their definitions there.
DRAFT_2020_12_DIALECT = Dialect(
    name="2020-12",
    uri=DRAFT_2020_12,
    validator=_repaired(jsonschema.Draft202012Validator),
    specification=referencing.jsonschema.DRAFT202012,
    subschema=frozenset(
        {"additionalProperties", "contains", "else", "if", "items", "not", "propertyNames", "then"}
        | {"unevaluatedItems", "unevaluatedProperties"}
    ),
    subschema_list=frozenset({"allOf", "anyOf", "oneOf", "prefixItems"}),
    subschema_map=frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"}),
    assertions=_COMMON_ASSERTIONS | {"dependentRequired", "minContains", "maxContains", "$dynamicRef"},
    annotations=_COMMON_ANNOTATIONS | {"$anchor", "$dynamicAnchor"},
)

DRAFT_2019_09_DIALECT = Dialect(
    name="2019-09",
    uri=DRAFT_2019_09,
    validator=_repaired(jsonschema.Draft201909Validator),
    specification=referencing.jsonschema.DRAFT201909,
    subschema=frozenset(
        {"additionalItems", "additionalProperties", "contains", "else", "if", "items", "not", "propertyNames"}
        | {"then", "unevaluatedItems", "unevaluatedProperties"}
    ),
    subschema_list=frozenset({"allOf", "anyOf", "oneOf"}),
    subschema_map=frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"}),
    assertions=_COMMON_ASSERTIONS | {"dependentRequired", "minContains", "maxContains", "$recursiveRef"},
    annotations=_COMMON_ANNOTATIONS | {"$anchor", "$recursiveAnchor"},
    items_may_be_list=True,
)

DRAFT_07_DIALECT = Dialect(
    name="draft-07",
    uri=DRAFT_07,
    validator=_repaired(jsonschema.Draft7Validator),
    specification=referencing.jsonschema.DRAFT7,
    subschema=frozenset(
        {"additionalItems", "additionalProperties", "contains", "else", "if", "items", "not", "propertyNames"}
        | {"then"}
    ),
    subschema_list=frozenset({"allOf", "anyOf", "oneOf"}),
    subschema_map=frozenset({"definitions", "patternProperties", "properties"}),
    assertions=_COMMON_ASSERTIONS | {"dependencies"},
    annotations=_COMMON_ANNOTATIONS,
    ref_hides_siblings=True,
    items_may_be_list=True,
    dependencies=True,
)

DIALECTS = (DRAFT_2020_12_DIALECT, DRAFT_2019_09_DIALECT, DRAFT_07_DIALECT)

# What draft-07 keeps beside `$ref`: words for people, and definitions a pointer reaches.
_BESIDE_REF = frozenset({"$schema", "$comment", "title", "description", "default", "examples", "definitions"})


def dialect_of(schema: Any, owner: str) -> Dialect:
    """The dialect `schema`'s `$schema` names (2020-12 without one); SchemaError for any other."""
    uri = schema.get("$schema", DRAFT_2020_12) if isinstance(schema, dict) else DRAFT_2020_12
    for dialect in DIALECTS:
        if uri in (dialect.uri, dialect.uri + "#"):
            return dialect
    supported = ", ".join(f"{d.name} ({d.uri})" for d in DIALECTS)
    shown = uri[:80] if isinstance(uri, str) else type(uri).__name__
    raise SchemaError(f"{owner}: $schema {shown!r} is not a JSON Schema dialect mcp_auth supports: {supported}")


def hidden_beside_ref(dialect: Dialect, schema: dict[str, Any]) -> list[str]:
    """The keywords next to a `$ref` that `dialect` ignores (draft-07 ignores all but a few)."""
    if not dialect.ref_hides_siblings or "$ref" not in schema:
        return []
    return [key for key in schema if key != "$ref" and key not in _BESIDE_REF and not key.startswith("x-")]


def is_applicator(dialect: Dialect, key: str) -> bool:
    """Whether `key` holds subschemas in `dialect`."""
    return (
        key in dialect.subschema
        or key in dialect.subschema_list
        or key in dialect.subschema_map
        or (key == "dependencies" and dialect.dependencies)
    )


def subschemas(dialect: Dialect, key: str, value: Any) -> list[tuple[str | int | None, Any]]:
    """The subschemas under keyword `key` in `dialect`, each with its step (None: the value itself)."""
    if key in dialect.subschema:
        if isinstance(value, list) and key == "items" and dialect.items_may_be_list:
            return list(enumerate(value))
        return [(None, value)]
    if key in dialect.subschema_list and isinstance(value, list):
        return list(enumerate(value))
    if key in dialect.subschema_map and isinstance(value, dict):
        return list(value.items())
    if key == "dependencies" and dialect.dependencies and isinstance(value, dict):
        return [(name, sub) for name, sub in value.items() if isinstance(sub, (dict, bool))]
    return []
