"""JSON Schema checks at registration, and validation of what clients send and tools return.

`compile_schema` checks a schema (inferred or written by hand) once, when the
tool is registered, and builds its validator: the `jsonschema` package's Draft
2020-12 validator, with our own `format` checks, ECMA-262 `pattern` semantics
and a reference registry that never fetches. `CompiledSchema.problems` then
checks what a client sends (or what a tool returns) and says what is wrong in
short messages that name the path and the rule. Fail closed: a keyword, format
or reference that cannot be enforced is refused at registration, never ignored
at call time.

It trusts the schema's author (a pathological `pattern` is theirs to avoid),
not the values: nothing a client sends is evaluated, imported or fetched, and
messages quote a bounded part of it.
"""

from __future__ import annotations

import dataclasses
import fractions
import itertools
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jsonschema
import jsonschema.validators
import referencing
import referencing.exceptions
import referencing.jsonschema

from .formats import _FORMAT_CHECKER, FORMAT_CHECKS, ecma_pattern
from .schema import JsonSchema, SchemaError

logger = logging.getLogger("mcp_auth.schema")  # the name operators filter on


# --- validation --------------------------------------------------------------------------
#
# Arguments (and a tool's structured output) are checked by the `jsonschema`
# package's Draft 2020-12 validator, compiled once per tool when it is
# registered. Registration is where a schema that cannot be enforced as written
# is refused: one the meta-schema rejects, a `$ref` that does not resolve inside
# the schema (nothing is ever fetched), a `format` we cannot check, a keyword
# that 2020-12 does not define (a typo such as "minimun" would otherwise be
# ignored), a `$schema` naming another draft.
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


# Validation stops after this many problems: enough to fix a call, bounded work.
MAX_REPORTED_ERRORS = 10

# A message quotes at most this many characters of a value or a property name:
# enough to recognise it, while a megabyte argument is not echoed back whole.
MAX_QUOTED_CHARS = 60

# A message that is not built from the parts above (a rare keyword) is cut here.
MAX_MESSAGE_CHARS = 200


# Keywords whose value is a schema, a list of schemas, or a map of name to schema:
# the walk below descends into them.
_SUBSCHEMA = frozenset(
    {"additionalProperties", "contains", "else", "if", "items", "not", "propertyNames", "then"}
    | {"unevaluatedItems", "unevaluatedProperties"}
)

_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})

# `definitions` is not a 2020-12 keyword, but a JSON Pointer `$ref` reaches into it
# all the same; schemas written for older drafts keep their definitions there.
_SUBSCHEMA_MAP = frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"})

# Keywords the validator enforces (minContains/maxContains are enforced by `contains`).
_ASSERTIONS = frozenset(
    {"const", "enum", "type", "required", "dependentRequired", "format", "pattern", "multipleOf"}
    | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"}
    | {"minItems", "maxItems", "uniqueItems", "minContains", "maxContains", "minProperties", "maxProperties"}
    | {"$ref", "$dynamicRef"}
)

# Keywords that only describe: nobody expects them to refuse a value.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$anchor", "$dynamicAnchor", "$comment", "title", "description", "default", "examples"}
    | {"deprecated", "readOnly", "writeOnly"}
)

# An extension keyword (MCP's `x-mcp-header`, a vendor's `x-...`) is an annotation by name.
_EXTENSION_PREFIX = "x-"


# Where jsonschema says something better of `false` itself ("unexpected property").
_FALSE_KEPT = frozenset({"additionalProperties", "unevaluatedProperties", "unevaluatedItems", "items"})


def _prepare(schema: Any, patterns: dict[str, str]) -> Any:
    """A copy of `schema` for the validator: patterns in Python's syntax (`patterns` maps them back to
    what the author wrote), and `false` subschemas as `{"not": {}}`, whose refusals keep their path."""
    if schema is False:
        return {"not": {}}
    if not isinstance(schema, dict):
        return schema
    copy: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str):
            copy[key] = ecma_pattern(value)
            patterns[copy[key]] = value
        elif key == "patternProperties" and isinstance(value, dict):
            copy[key] = {ecma_pattern(name): _prepare(sub, patterns) for name, sub in value.items()}
        elif key in _SUBSCHEMA and key not in _FALSE_KEPT:
            copy[key] = _prepare(value, patterns)
        elif key in _SUBSCHEMA_LIST and isinstance(value, list):
            copy[key] = [_prepare(item, patterns) for item in value]
        elif key in _SUBSCHEMA_MAP and isinstance(value, dict):
            copy[key] = {name: _prepare(item, patterns) for name, item in value.items()}
        else:
            copy[key] = value  # a value (enum, const, default, ...), not a schema
    return copy


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


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"uniqueItems": _unique_items, "multipleOf": _multiple_of, "required": _required},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    # jsonschema's default registry fetches a remote $ref over the network (with a
    # warning): a request to wherever a schema points. Ours never fetches.
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


def _pointer(where: str, key: str | int) -> str:
    return f"{where}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _pattern_problems(patterns: list[Any], at: str, problems: list[str]) -> None:
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue  # the meta-schema check reports it
        try:
            re.compile(ecma_pattern(pattern))
        except SchemaError as exc:
            problems.append(f"{at}: {exc}")
        except re.error as exc:
            problems.append(f"{at}: pattern {_quote(pattern)} is not a regular expression we can run: {exc}")


def _schema_problems(schema: Any, where: str, resolver: Any, problems: list[str]) -> None:
    """What keeps `schema` from being enforced as written, as messages naming the place (a JSON Pointer)."""
    if not isinstance(schema, dict):
        return  # true/false, or a shape the meta-schema check has already reported
    resolver = resolver.in_subresource(referencing.jsonschema.DRAFT202012.create_resource(schema))
    for key, value in schema.items():
        at = _pointer(where, key)
        if key in _SUBSCHEMA:
            _schema_problems(value, at, resolver, problems)
        elif key in _SUBSCHEMA_LIST and isinstance(value, list):
            for index, item in enumerate(value):
                _schema_problems(item, _pointer(at, index), resolver, problems)
        elif key in _SUBSCHEMA_MAP and isinstance(value, dict):
            if key == "patternProperties":
                _pattern_problems(list(value), at, problems)
            for name, item in value.items():
                _schema_problems(item, _pointer(at, name), resolver, problems)
        elif key == "pattern":
            _pattern_problems([value], at, problems)
        elif key in ("$ref", "$dynamicRef"):
            try:
                resolver.lookup(value)
            except referencing.exceptions.Unresolvable:
                problems.append(
                    f"{at}: {key} {_quote(value)} does not resolve within the schema "
                    "(references to other documents are never fetched)"
                )
        elif key == "format" and value not in FORMAT_CHECKS:
            problems.append(
                f"{at}: format {_quote(value)} cannot be checked; checked formats: {', '.join(FORMAT_CHECKS)}"
            )
        elif key == "$schema" and value not in (DRAFT_2020_12, DRAFT_2020_12 + "#"):
            problems.append(f"{at}: only JSON Schema 2020-12 ({DRAFT_2020_12}) is supported")
        elif key not in _ASSERTIONS and key not in _ANNOTATIONS and not key.startswith(_EXTENSION_PREFIX):
            problems.append(
                f"{at}: {_quote(key)} is not a JSON Schema 2020-12 keyword mcp_auth enforces "
                f"(a typo? an annotation of your own must start with {_EXTENSION_PREFIX!r})"
            )


@dataclasses.dataclass(frozen=True)
class CompiledSchema:
    """A schema checked once and ready to validate many values."""

    schema: JsonSchema
    _validator: Any = dataclasses.field(repr=False)
    _patterns: Mapping[str, str] = dataclasses.field(repr=False)  # translated -> as written

    def problems(self, value: Any, root: str = "arguments") -> list[str]:
        """Problems with `value`, as messages naming the path under `root`; [] when valid."""
        try:
            errors = list(itertools.islice(self._validator.iter_errors(value), MAX_REPORTED_ERRORS))
            # A value of the wrong type fails its other keywords too; the type says it best.
            mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
            kept = [e for e in errors if e.validator == "type" or tuple(e.absolute_path) not in mistyped]
            return [self._describe(error, root) for error in kept]
        except RecursionError:
            # A schema whose $refs loop without descending into the value; fail closed.
            return [f"{root}: cannot be validated (the schema refers to itself without end)"]
        except Exception as exc:  # a validator failure refuses the value; it never becomes a 5xx
            logger.warning("validating %s raised %s", root, type(exc).__name__)
            logger.debug("validating %s raised", root, exc_info=exc)
            return [f"{root}: cannot be validated ({type(exc).__name__})"]

    def _describe(self, error: jsonschema.ValidationError, root: str) -> str:
        if error.validator in ("anyOf", "oneOf"):
            explaining = _explaining_alternative(error)
            if explaining is not None:
                return self._describe(explaining, root)
        return f"{_path(root, error.absolute_path)}: {self._rule(error)}"

    def _rule(self, error: jsonschema.ValidationError) -> str:
        keyword, expected, value = error.validator, error.validator_value, error.instance
        if keyword == "type":
            allowed = expected if isinstance(expected, list) else [expected]
            return f"expected {' or '.join(allowed)}, got {_json_type_name(value)}"
        if keyword == "enum":
            return f"{_quote(value)} is not one of {_truncate(', '.join(_quote(v) for v in expected))}"
        if keyword == "const":
            return f"{_quote(value)} is not {_quote(expected)}"
        if keyword in _BOUNDS:
            return f"{_quote(value)} is {_BOUNDS[keyword]} {_quote(expected)}"
        if keyword == "multipleOf":
            return f"{_quote(value)} is not a multiple of {_quote(expected)}"
        if keyword in _SIZES:
            noun, comparison = _SIZES[keyword]
            return f"{_quote(value)} has {len(value)} {noun}, {comparison} the {keyword} of {expected}"
        if keyword == "pattern":
            return f"{_quote(value)} does not match the pattern {_quote(self._patterns.get(expected, expected))}"
        if keyword == "format":
            return f"{_quote(value)} is not a valid {expected}"
        if keyword == "uniqueItems":
            return "has repeated items (uniqueItems)"
        if keyword == "required":
            return f"missing required property {_quote(error.message)}"  # the message is the name (_required)
        if keyword == "additionalProperties":
            extra = [key for key in value if key not in error.schema.get("properties", {})]
            patterns = list(error.schema.get("patternProperties", {}))
            extra = [key for key in extra if not any(re.search(pattern, key) for pattern in patterns)]
            shown = ", ".join(_quote(key) for key in extra[:3]) + (", ..." if len(extra) > 3 else "")
            return f"unexpected property {shown}"
        if keyword in ("anyOf", "oneOf"):
            return _alternatives(error)
        if keyword == "not":
            if expected == {}:  # a `false` schema
                return "no value is allowed here"
            return f"{_quote(value)} matches the schema under 'not'"
        return _truncate(error.message, MAX_MESSAGE_CHARS)


def _type_misses(error: jsonschema.ValidationError) -> dict[Any, jsonschema.ValidationError]:
    """The anyOf/oneOf alternatives the value fails by its type, by alternative."""
    misses: dict[Any, jsonschema.ValidationError] = {}
    for sub in error.context or []:
        if sub.validator == "type" and not sub.relative_path and sub.schema_path:
            misses.setdefault(sub.schema_path[0], sub)
    return misses


def _explaining_alternative(error: jsonschema.ValidationError) -> jsonschema.ValidationError | None:
    """When the value's type fits exactly one alternative, that one's first error explains the refusal best."""
    misses = _type_misses(error)
    fitting = {sub.schema_path[0] for sub in error.context or [] if sub.schema_path} - set(misses)
    if len(fitting) != 1:
        return None
    (alternative,) = fitting
    return next(sub for sub in error.context or [] if sub.schema_path and sub.schema_path[0] == alternative)


def _alternatives(error: jsonschema.ValidationError) -> str:
    if error.validator == "oneOf" and not error.context:
        return f"{_quote(error.instance)} matches more than one of the oneOf schemas"
    misses = _type_misses(error)
    alternatives = {sub.schema_path[0] for sub in error.context or [] if sub.schema_path}
    if misses and set(misses) == alternatives:
        allowed: list[str] = []
        for sub in misses.values():
            allowed += sub.validator_value if isinstance(sub.validator_value, list) else [sub.validator_value]
        return f"expected {' or '.join(dict.fromkeys(allowed))}, got {_json_type_name(error.instance)}"
    return f"{_quote(error.instance)} matches none of the {error.validator} schemas"


_BOUNDS = {
    "minimum": "less than the minimum of",
    "maximum": "greater than the maximum of",
    "exclusiveMinimum": "less than or equal to the exclusiveMinimum of",
    "exclusiveMaximum": "greater than or equal to the exclusiveMaximum of",
}

_SIZES = {
    "minLength": ("characters", "fewer than"),
    "maxLength": ("characters", "more than"),
    "minItems": ("items", "fewer than"),
    "maxItems": ("items", "more than"),
    "minProperties": ("properties", "fewer than"),
    "maxProperties": ("properties", "more than"),
}

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)


def _truncate(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(value: Any) -> str:
    """`value` as JSON, cut short: a message names a value, it does not carry it back."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON (a tool's output may hold anything): name its type only
        text = f"<{type(value).__name__}>"
    return _truncate(text)


def _path(root: str, parts: Iterable[str | int]) -> str:
    path = root
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_NAME.fullmatch(part) and len(part) <= MAX_QUOTED_CHARS:
            path += f".{part}"
        else:  # quoted, so a name with a newline or a ';' cannot pose as another message
            path += f"[{_quote(part)}]"
    return path


def _json_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def compile_schema(schema: Any, owner: str) -> CompiledSchema:
    """Check `schema` and build its validator once; SchemaError naming `owner` when it cannot be enforced."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{owner}: the schema must be a JSON object, not {type(schema).__name__}")
    try:
        _Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "#" + "".join(f"/{part}" for part in exc.absolute_path)
        raise SchemaError(
            f"{owner}: not a valid JSON Schema 2020-12 at {where}: {_truncate(exc.message, MAX_MESSAGE_CHARS)}"
        ) from None
    problems: list[str] = []
    resource = referencing.jsonschema.DRAFT202012.create_resource(schema)
    _schema_problems(schema, "#", _NO_RETRIEVAL.resolver_with_root(resource), problems)
    if problems:
        raise SchemaError(f"{owner}: the schema cannot be enforced as written: " + "; ".join(problems))
    patterns: dict[str, str] = {}
    prepared = _prepare(schema, patterns)
    validator = _Validator(prepared, registry=_NO_RETRIEVAL, format_checker=_FORMAT_CHECKER)
    return CompiledSchema(schema, validator, patterns)


def validate(value: Any, schema: JsonSchema) -> list[str]:
    """Problems with `value` against `schema` (compiled on each call: registration compiles once)."""
    return compile_schema(schema, "schema").problems(value)
