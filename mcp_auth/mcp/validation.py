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
import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from .dialects import NO_RETRIEVAL, Dialect, dialect_of, hidden_beside_ref, is_applicator, subschemas
from .formats import _FORMAT_CHECKER, FORMAT_CHECKS, ecma_pattern
from .quickcheck import Predicate, quick_accept
from .schema import JsonSchema, SchemaError

logger = logging.getLogger("mcp_auth.schema")  # the name operators filter on


# --- validation --------------------------------------------------------------------------
#
# Arguments (and a tool's structured output) are checked by the `jsonschema`
# package's validator for the schema's dialect (`mcp_auth.mcp.dialects`),
# compiled once per tool when it is registered. Registration is where a schema
# that cannot be enforced as written is refused: one the meta-schema rejects,
# a `$ref` that does not resolve inside the schema (nothing is ever fetched), a
# `format` we cannot check, a keyword its dialect does not define (a typo such
# as "minimun" would otherwise be ignored), a `$schema` we do not serve, and a
# schema too deep or too composed to validate in bounded time.


# Validation stops after this many problems: enough to fix a call, bounded work.
MAX_REPORTED_ERRORS = 10

# A message quotes at most this many characters of a value or a property name:
# enough to recognise it, while a megabyte argument is not echoed back whole.
MAX_QUOTED_CHARS = 60

# A message that is not built from the parts above (a rare keyword) is cut here.
MAX_MESSAGE_CHARS = 200

# Composition bounds (the spec's "Composition-Keyword Resource Use"): nested
# anyOf/oneOf over shared $defs cost exponential time on every call, and deep
# nesting exhausts the stack. Only the server's own schemas are compiled, so
# they are measured once, here. Subschema levels, counting each $ref followed:
# deeper than any hand-written or inferred schema goes.
MAX_SUBSCHEMA_DEPTH = 64

# The subschemas one value may be checked against once every $ref is followed
# (a recursive $ref counts once: it descends into the value, which is bounded).
MAX_EXPANDED_SUBSCHEMAS = 10_000

# JSON nesting of the schema document itself, checked before anything recurses over it.
MAX_SCHEMA_NESTING = 2 * MAX_SUBSCHEMA_DEPTH


# Where jsonschema says something better of `false` itself ("unexpected property").
_FALSE_KEPT = frozenset({"additionalProperties", "unevaluatedProperties", "unevaluatedItems", "items"})

_REFS = ("$ref", "$dynamicRef", "$recursiveRef")

# An extension keyword (MCP's `x-mcp-header`, a vendor's `x-...`) is an annotation by name.
_EXTENSION_PREFIX = "x-"


def _prepare(schema: Any, patterns: dict[str, str], dialect: Dialect) -> Any:
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
            copy[key] = {ecma_pattern(name): _prepare(sub, patterns, dialect) for name, sub in value.items()}
        elif not subschemas(dialect, key, value) or (key in _FALSE_KEPT and value is False):
            copy[key] = value  # a value (enum, const, default, ...), not a schema
        elif isinstance(value, list):
            copy[key] = [_prepare(item, patterns, dialect) for item in value]
        elif key in dialect.subschema:
            copy[key] = _prepare(value, patterns, dialect)
        else:  # a map of schemas (draft-07 `dependencies` may map to lists of names: kept)
            copy[key] = {name: _prepare(item, patterns, dialect) for name, item in value.items()}
    return copy


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


def _schema_problems(schema: Any, where: str, resolver: Any, problems: list[str], dialect: Dialect) -> None:
    """What keeps `schema` from being enforced as written, as messages naming the place (a JSON Pointer)."""
    if not isinstance(schema, dict):
        return  # true/false, or a shape the meta-schema check has already reported
    resolver = resolver.in_subresource(dialect.specification.create_resource(schema))
    hidden = hidden_beside_ref(dialect, schema)
    if hidden:
        problems.append(
            f"{where}: {dialect.name} ignores the keywords beside $ref ({', '.join(_quote(k) for k in hidden)}); "
            'write {"allOf": [{"$ref": ...}, {...}]} instead'
        )
    for key, value in schema.items():
        at = _pointer(where, key)
        if key == "patternProperties" and isinstance(value, dict):
            _pattern_problems(list(value), at, problems)
        if is_applicator(dialect, key):
            for step, item in subschemas(dialect, key, value):
                _schema_problems(item, at if step is None else _pointer(at, step), resolver, problems, dialect)
        elif key == "pattern":
            _pattern_problems([value], at, problems)
        elif key in _REFS and key in dialect.assertions:
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
        elif key == "$schema" and value not in (dialect.uri, dialect.uri + "#"):
            problems.append(f"{at}: the whole schema must be one dialect ({dialect.name}, as its root says)")
        elif key not in dialect.assertions and key not in dialect.annotations and not key.startswith(_EXTENSION_PREFIX):
            problems.append(
                f"{at}: {_quote(key)} is not a JSON Schema {dialect.name} keyword mcp_auth enforces "
                f"(a typo? an annotation of your own must start with {_EXTENSION_PREFIX!r})"
            )


class _TooComplex(Exception):
    pass


def _nesting_problem(schema: Any) -> str | None:
    """Whether the document nests deeper than MAX_SCHEMA_NESTING, found without recursion."""
    stack = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_NESTING:
            return f"the schema nests deeper than {MAX_SCHEMA_NESTING} levels; flatten it with $defs"
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return None


def _expanded(schema: Any, dialect: Dialect, resolver: Any, depth: int, active: set[int], memo: dict[int, int]) -> int:
    """How many subschemas one value meets under `schema`, each $ref followed; _TooComplex past the bounds."""
    if not isinstance(schema, dict) or id(schema) in active:
        return 1  # a boolean schema, or a recursive $ref (it descends into the value)
    if id(schema) in memo:
        return memo[id(schema)]
    if depth > MAX_SUBSCHEMA_DEPTH:
        raise _TooComplex(f"subschemas nest deeper than {MAX_SUBSCHEMA_DEPTH} levels, counting each $ref followed")
    active.add(id(schema))
    resolver = resolver.in_subresource(dialect.specification.create_resource(schema))
    total = 1
    for key, value in schema.items():
        for _, item in subschemas(dialect, key, value):
            total += _expanded(item, dialect, resolver, depth + 1, active, memo)
        if key in _REFS and isinstance(value, str):
            try:
                resolved = resolver.lookup(value)
            except referencing.exceptions.Unresolvable:
                continue  # reported by _schema_problems
            total += _expanded(resolved.contents, dialect, resolved.resolver, depth + 1, active, memo)
        if total > MAX_EXPANDED_SUBSCHEMAS:
            raise _TooComplex(
                f"following its $refs, one value would be checked against more than {MAX_EXPANDED_SUBSCHEMAS} "
                "subschemas (anyOf/oneOf over shared $defs multiply); simplify it"
            )
    active.discard(id(schema))
    memo[id(schema)] = total
    return total


@dataclasses.dataclass(frozen=True)
class CompiledSchema:
    """A schema checked once and ready to validate many values."""

    schema: JsonSchema
    _validator: Any = dataclasses.field(repr=False)
    _patterns: Mapping[str, str] = dataclasses.field(repr=False)  # translated -> as written
    # True only for values the validator accepts (`mcp_auth.mcp.quickcheck`); None for schemas beyond it.
    _quick: Predicate | None = dataclasses.field(default=None, repr=False)

    def problems(self, value: Any, root: str = "arguments") -> list[str]:
        """Problems with `value`, as messages naming the path under `root`; [] when valid."""
        if self._quick is not None and self._quick(value):
            return []
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
    dialect = dialect_of(schema, owner)
    nesting = _nesting_problem(schema)
    if nesting:
        raise SchemaError(f"{owner}: {nesting}")
    try:
        dialect.validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "#" + "".join(f"/{part}" for part in exc.absolute_path)
        raise SchemaError(
            f"{owner}: not a valid JSON Schema {dialect.name} at {where}: {_truncate(exc.message, MAX_MESSAGE_CHARS)}"
        ) from None
    problems: list[str] = []
    root = NO_RETRIEVAL.resolver_with_root(dialect.specification.create_resource(schema))
    _schema_problems(schema, "#", root, problems, dialect)
    if problems:
        raise SchemaError(f"{owner}: the schema cannot be enforced as written: " + "; ".join(problems))
    try:
        _expanded(schema, dialect, root, 0, set(), {})
    except _TooComplex as exc:
        raise SchemaError(f"{owner}: the schema is too complex to check every call in bounded time: {exc}") from None
    patterns: dict[str, str] = {}
    prepared = _prepare(schema, patterns, dialect)
    validator = dialect.validator(prepared, registry=NO_RETRIEVAL, format_checker=_FORMAT_CHECKER)
    return CompiledSchema(schema, validator, patterns, quick_accept(schema))


def validate(value: Any, schema: JsonSchema) -> list[str]:
    """Problems with `value` against `schema` (compiled on each call: registration compiles once)."""
    return compile_schema(schema, "schema").problems(value)
