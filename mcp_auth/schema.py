"""JSON Schema from Python type hints, schema checks at registration, and validation.

`function_schema` turns a tool's signature into the `inputSchema` that
`tools/list` publishes. `compile_schema` checks a schema (inferred or written
by hand) once, when the tool is registered, and builds its validator: the
`jsonschema` package's Draft 2020-12 validator, with our own `format` checks,
ECMA-262 `pattern` semantics and a reference registry that never fetches.
`CompiledSchema.problems` then checks what a client sends (or what a tool
returns) and says what is wrong in short messages that name the path and the
rule. Fail closed: a keyword, format or reference that cannot be enforced is
refused at registration, never ignored at call time.

It trusts the schema's author (a pathological `pattern` is theirs to avoid),
not the values: nothing a client sends is evaluated, imported or fetched, and
messages quote a bounded part of it. Over 400 lines because type inference and
validation share the one schema vocabulary; they could be split along the
`# --- validation` line.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import enum
import fractions
import functools
import inspect
import ipaddress
import itertools
import json
import logging
import re
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jsonschema
import jsonschema.validators
import referencing
import referencing.exceptions
import referencing.jsonschema

JsonSchema = dict[str, Any]

logger = logging.getLogger(__name__)

_PRIMITIVES: dict[Any, JsonSchema] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _typeddict_key_required(tp: Any, hint: Any) -> bool:
    # Read from the resolved hints, not __required_keys__: under
    # `from __future__ import annotations` Python 3.11 cannot see NotRequired there.
    origin = typing.get_origin(hint)
    if origin is typing.NotRequired:
        return False
    if origin is typing.Required:
        return True
    return bool(getattr(tp, "__total__", True))


def type_schema(tp: Any) -> JsonSchema:
    """The JSON Schema for one annotation; raises TypeError for what JSON cannot carry."""
    if tp is inspect.Parameter.empty or tp is Any:
        return {}
    if tp in _PRIMITIVES:
        return dict(_PRIMITIVES[tp])
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.NotRequired, typing.Required):
        return type_schema(args[0])  # requiredness is the TypedDict's __required_keys__
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        for extra in args[1:]:
            if isinstance(extra, str):
                schema["description"] = extra
        return schema
    if origin is typing.Literal:
        schema = {"enum": list(args)}
        kinds = {type(a) for a in args}
        if len(kinds) == 1 and next(iter(kinds)) in _PRIMITIVES:
            schema["type"] = _PRIMITIVES[next(iter(kinds))]["type"]
        return schema
    if origin in (typing.Union, types.UnionType):
        members = [type_schema(a) for a in args]
        return {"anyOf": members}
    if tp in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset, Sequence):
        item_types = [a for a in args if a is not Ellipsis]
        schema = {"type": "array"}
        if len(set(item_types)) == 1:
            schema["items"] = type_schema(item_types[0])
        elif item_types:
            schema["items"] = {"anyOf": [type_schema(a) for a in item_types]}
        return schema
    if tp is dict or origin in (dict, Mapping):
        schema = {"type": "object"}
        if args:
            if args[0] is not str:
                raise TypeError(f"dict keys must be str to be JSON, not {args[0]!r}")
            value_schema = type_schema(args[1])
            if value_schema:  # dict[str, Any] constrains nothing; say so by omission
                schema["additionalProperties"] = value_schema
        return schema
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if _is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {
            "type": "object",
            "properties": {name: type_schema(hint) for name, hint in hints.items()},
            "required": sorted(name for name, hint in hints.items() if _typeddict_key_required(tp, hint)),
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = dataclasses.fields(tp)
        return {
            "type": "object",
            "properties": {f.name: type_schema(hints[f.name]) for f in fields},
            "required": [
                f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ],
        }
    raise TypeError(
        f"cannot describe {tp!r} as JSON Schema; use str, int, float, bool, list, dict, Literal or Optional"
    )


_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


def split_docstring(fn: Callable[..., Any]) -> tuple[str | None, dict[str, str]]:
    """The description and a Google-style `Args:` section's parameter texts."""
    doc = inspect.getdoc(fn)
    if not doc:
        return None, {}
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if _ARGS_HEADER.match(line):
            description = "\n".join(lines[:index]).strip() or None
            params: dict[str, str] = {}
            current = None
            for arg_line in lines[index + 1 :]:
                if arg_line and not arg_line[0].isspace():
                    break  # the next section ("Returns:")
                match = _ARG_LINE.match(arg_line)
                if match and (current is None or len(arg_line) - len(arg_line.lstrip()) <= 4):
                    current = match.group(1)
                    params[current] = match.group(2).strip()
                elif current and arg_line.strip():
                    params[current] = f"{params[current]} {arg_line.strip()}".strip()
            return description, params
    return doc.strip(), {}


@dataclasses.dataclass(frozen=True)
class Signature:
    """What dispatch needs to call a handler: its schema and where the context goes."""

    input_schema: JsonSchema
    parameters: tuple[str, ...]
    context_parameter: str | None
    description: str | None
    parameter_descriptions: Mapping[str, str]
    context_type: type | None = None  # the context parameter's annotation (a subclass of context_type)


def _without_partials(fn: Callable[..., Any]) -> Callable[..., Any]:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _annotated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What carries `fn`'s annotations: the function under partials, or a callable object's __call__."""
    fn = _without_partials(fn)
    if inspect.isroutine(fn) or isinstance(fn, type) or not callable(fn):
        return fn
    return type(fn).__call__


def _bound_keywords(fn: Callable[..., Any]) -> set[str]:
    # Python lets a call override a partial's keywords; a client must not: they are not parameters.
    names: set[str] = set()
    while isinstance(fn, functools.partial):
        names.update(fn.keywords)
        fn = fn.func
    return names


def function_schema(fn: Callable[..., Any], context_type: type) -> Signature:
    """Describe `fn`'s parameters; the one annotated with `context_type` (or a subclass) is left out.

    `fn` may be a function (plain or `async def`), a functools.partial of one
    (the bound arguments are not parameters), or an object with `__call__`.
    """
    hints = typing.get_type_hints(_annotated(fn), include_extras=True)
    description, arg_docs = split_docstring(_without_partials(fn))
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    parameters: list[str] = []
    context_parameter = None
    context_annotation = None
    bound = _bound_keywords(fn)
    for name, param in inspect.signature(fn).parameters.items():
        if name in bound:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            qualname = getattr(_annotated(fn), "__qualname__", repr(fn))
            raise TypeError(f"{qualname}: *args and **kwargs cannot be described as tool arguments")
        hint = hints.get(name, inspect.Parameter.empty)
        if isinstance(hint, type) and issubclass(hint, context_type):
            context_parameter, context_annotation = name, hint
            continue
        schema = type_schema(hint)
        if name in arg_docs and "description" not in schema:
            schema["description"] = arg_docs[name]
        if param.default is param.empty:
            required.append(name)
        elif _json_value(param.default):
            schema["default"] = param.default.value if isinstance(param.default, enum.Enum) else param.default
        properties[name] = schema
        parameters.append(name)
    input_schema: JsonSchema = {"type": "object", "properties": properties}
    if required:
        input_schema["required"] = required
    return Signature(input_schema, tuple(parameters), context_parameter, description, arg_docs, context_annotation)


def _json_value(value: Any) -> bool:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v) for k, v in value.items())
    return False


def return_schema(fn: Callable[..., Any]) -> JsonSchema | None:
    """An output schema when the return annotation is an object (dict, TypedDict, dataclass).

    For an `async def` the annotation already is what the call produces; a
    plain callable annotated `Awaitable[T]` or `Coroutine[..., T]` produces T.
    """
    hint = typing.get_type_hints(_annotated(fn), include_extras=True).get("return", inspect.Parameter.empty)
    if hint is inspect.Parameter.empty:
        return None
    if typing.get_origin(hint) in (collections.abc.Awaitable, collections.abc.Coroutine):
        produced = typing.get_args(hint)
        if not produced:
            return None  # a bare Awaitable says nothing about what it produces
        hint = produced[-1]
    try:
        schema = type_schema(hint)
    except TypeError:
        return None
    return schema if schema.get("type") == "object" else None


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


class SchemaError(ValueError):
    """A schema that cannot be enforced as written; raised when the tool is registered."""


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


# --- formats: checked by our own stdlib code, so what is checked does not depend on
# which optional packages happen to be installed (jsonschema's own checker does).

_RFC3339_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_RFC3339_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*", re.ASCII)
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*", re.ASCII)
# RFC 3986 characters: unreserved, reserved, and '%' (which must start a %XX escape).
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*", re.ASCII)
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}", re.ASCII)
_JSON_POINTER = re.compile(r"(?:/(?:[^~/]|~[01])*)*")
# RFC 1035: a name of at most 253 characters in labels of at most 63.
MAX_HOSTNAME_CHARS = 253
# RFC 5321: a local part of at most 64 characters.
MAX_EMAIL_LOCAL_CHARS = 64


def _is_date(text: str) -> bool:
    match = _RFC3339_DATE.fullmatch(text)
    if not match:
        return False
    try:
        datetime.date(*(int(part) for part in match.groups()))
    except ValueError:
        return False
    return True


def _is_time(text: str) -> bool:
    match = _RFC3339_TIME.fullmatch(text)
    if not match:
        return False
    hour, minute, second = (int(part) for part in match.groups()[:3])
    offset = match.group(5)
    if offset not in ("Z", "z") and (int(offset[1:3]) > 23 or int(offset[4:6]) > 59):
        return False
    # RFC 3339 allows a leap second (60); whether one happened that day is not ours to know.
    return hour <= 23 and minute <= 59 and second <= 60


def _is_date_time(text: str) -> bool:
    date, separator, time = text[:10], text[10:11], text[11:]
    return separator in ("T", "t") and _is_date(date) and _is_time(time)


def _is_hostname(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= MAX_HOSTNAME_CHARS and all(_HOSTNAME_LABEL.fullmatch(label) for label in name.split("."))


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_ipv6(text: str) -> bool:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return address.scope_id is None  # a zone id names this machine's interface, not an address


def _is_email(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    if not at or len(local) > MAX_EMAIL_LOCAL_CHARS or not _EMAIL_LOCAL.fullmatch(local):
        return False
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        return _is_ipv6(literal[5:]) if literal[:5].lower() == "ipv6:" else _is_ipv4(literal)
    return _is_hostname(domain) and not domain.endswith(".")


def _is_uri_reference(text: str) -> bool:
    if not _URI_CHARS.fullmatch(text):
        return False
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return True


def _is_uri(text: str) -> bool:
    scheme, colon, _ = text.partition(":")
    return bool(colon) and bool(_URI_SCHEME.fullmatch(scheme)) and _is_uri_reference(text)


# The formats we check. Any other `format` is refused at registration: under
# 2020-12 an unchecked format is only an annotation, and a tool author who
# writes "format": "credit-card" expects a check, not a comment.
FORMAT_CHECKS: Mapping[str, Callable[[str], bool]] = {
    "date-time": _is_date_time,
    "date": _is_date,
    "time": _is_time,
    "email": _is_email,
    "hostname": _is_hostname,
    "ipv4": _is_ipv4,
    "ipv6": _is_ipv6,
    "uri": _is_uri,
    "uri-reference": _is_uri_reference,
    "uuid": lambda text: bool(_UUID.fullmatch(text)),
    "json-pointer": lambda text: bool(_JSON_POINTER.fullmatch(text)),
}

_FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
for _name, _check in FORMAT_CHECKS.items():
    # A format constrains strings only; other types pass (the `type` keyword is for them).
    _FORMAT_CHECKER.checks(_name)(lambda value, check=_check: not isinstance(value, str) or check(value))


# --- patterns: JSON Schema patterns are ECMA-262 regular expressions; Python's `re`
# differs where it matters for validation: `$` also matches before a final newline
# ("^[a-z]+$" would accept "abc\n"), `\d` and `\w` match any Unicode digit or letter,
# and `.` matches "\r". Each pattern is rewritten to the ECMA-262 meaning before
# the validator sees it.

_ECMA_ESCAPES = {"d": "[0-9]", "D": "[^0-9]", "w": "[A-Za-z0-9_]", "W": "[^A-Za-z0-9_]"}
_ECMA_CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_"}
_ECMA_DOT = "[^\\n\\r\\u2028\\u2029]"


def ecma_pattern(pattern: str) -> str:
    """`pattern` (ECMA-262) as a Python regular expression with the same meaning; SchemaError if we cannot say."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            escaped = pattern[index + 1]
            if in_class and escaped in ("D", "W"):
                raise SchemaError(
                    f"pattern {pattern!r}: \\{escaped} inside [...] is not supported; spell the class out"
                )
            table = _ECMA_CLASS_ESCAPES if in_class else _ECMA_ESCAPES
            out.append(table.get(escaped, char + escaped))
            index += 2
            continue
        if in_class:
            # In ECMA-262 a ']' always ends the class, and '[' inside one is a plain
            # character (Python would warn of a nested set); '&', '~', '|' doubled
            # are set operations to Python's future parser, so they are escaped.
            in_class = char != "]"
            if char in "[&~|":
                char = "\\" + char
        elif pattern.startswith("[]", index):
            char, index = "(?!)", index + 1  # the empty class matches nothing
        elif pattern.startswith("[^]", index):
            char, index = "(?s:.)", index + 2  # its negation matches anything
        elif char == "[":
            in_class = True
            if pattern.startswith("[^", index):
                char, index = "[^", index + 1
        elif char == "$":
            char = r"\Z"
        elif char == ".":
            char = _ECMA_DOT
        out.append(char)
        index += 1
    return "".join(out)


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
