"""`Mcp-Param-*` headers: which tool arguments a client mirrors into HTTP headers, and checking they agree.

In the 2026-07-28 revision a tool may mark a property of its `inputSchema`
with `"x-mcp-header": "<Name>"`; a client then sends the argument's value
again as the header `Mcp-Param-<Name>` on every `tools/call`, so a load
balancer or gateway can route on it without reading the body. The danger is
two sources of truth: an intermediary that trusts the header while the tool
acts on the body. So the server refuses a call whose header and argument do
not say the same thing (-32020), and refuses at registration an annotation a
client could not follow.

`find_param_headers` reads (and checks) the annotations of a schema the
server's own author wrote; `check_param_headers` compares one modern request's
headers with its arguments. The header values are untrusted client input:
they are decoded with the revision's codec, compared, and never echoed.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .modern import decode_header_value
from .schema import JsonSchema, SchemaError

X_MCP_HEADER = "x-mcp-header"
PARAM_HEADER_PREFIX = "Mcp-Param-"

# RFC 9110 §5.6.2 token (1*tchar), minus '_': Werkzeug's server, gunicorn (by
# default) and nginx (by default) drop a header whose name has an underscore,
# so the server would never see it and every call would be refused as
# "header missing". Tool authors choose the name; '-' does the same job.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^`|~0-9A-Za-z]+", re.ASCII)

# The argument types a header can carry (the spec leaves out `number`: float
# to text is not the same in every language).
HEADER_TYPES = frozenset({"string", "integer", "boolean"})

# The spec's bound on an integer sent as a header: what a JavaScript client
# holds exactly (Number.MAX_SAFE_INTEGER).
MAX_SAFE_INTEGER = 2**53 - 1

# Header values the spec lets a server compare as numbers ("42.0" is 42); no
# exponents, which languages render differently.
_CANONICAL_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)

# Longer header text is no safe integer; int() of it would be wasted work.
_MAX_DECIMAL_CHARS = 64

# Keywords whose values are data, not schemas: an "x-mcp-header" key in a
# default or an example annotates nothing.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})

# Keywords whose values map names to schemas (in some dialect; draft-07's
# `dependencies` may also hold lists of names, which the walk skips).
_SCHEMA_MAPS = frozenset({"$defs", "definitions", "patternProperties", "dependentSchemas", "dependencies"})


@dataclass(frozen=True)
class ParamHeader:
    """One annotated argument: where it sits in the arguments, the header that mirrors it, its JSON type."""

    path: tuple[str, ...]  # the chain of `properties` names from the root
    name: str  # as the author wrote it; the header is PARAM_HEADER_PREFIX + name
    type: str  # "string", "integer" or "boolean"

    @property
    def header(self) -> str:
        return PARAM_HEADER_PREFIX + self.name

    @property
    def argument(self) -> str:
        return ".".join(self.path)


def _positions(schema: Any) -> Iterator[tuple[tuple[str, ...] | None, dict[str, Any]]]:
    """Every schema object in `schema` with its `properties` path, None once another keyword was crossed.

    Walks by shape rather than by a dialect's keyword list, so an annotation is
    found (and refused) wherever it hides: under `items`, `$defs`, `anyOf`, a
    draft-07 `dependencies`, or a keyword yet to be invented. Iterative, so a
    deep schema cannot exhaust the stack.
    """
    stack: collections.deque[tuple[tuple[str, ...] | None, Any]] = collections.deque([((), schema)])
    while stack:
        path, node = stack.popleft()  # breadth first, in the author's order: errors name the later duplicate
        if not isinstance(node, dict):
            continue
        yield path, node
        for key, value in node.items():
            if key in _DATA_KEYWORDS or key.startswith("x-"):
                continue
            if key == "properties" and isinstance(value, dict):
                stack.extend(((*path, name) if path is not None else None, sub) for name, sub in value.items())
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                stack.extend((None, sub) for sub in value.values())
            elif isinstance(value, dict):  # a schema: `items`, `not`, `additionalProperties`, ...
                stack.append((None, value))
            elif isinstance(value, list):
                stack.extend((None, sub) for sub in value if isinstance(sub, dict))


def find_param_headers(schema: JsonSchema, owner: str) -> tuple[ParamHeader, ...]:
    """The `x-mcp-header` annotations of a tool's inputSchema; SchemaError naming `owner` and the property.

    A client drops a tool whose annotations break the spec's rules (it
    vanishes from the model's tool list without a word), so they are checked
    here, when the tool is registered: a non-empty header-name token, unique
    ignoring case, on a property of type string, integer or boolean, reached
    from the root through `properties` alone.
    """
    found: list[ParamHeader] = []
    seen: dict[str, str] = {}
    for path, node in _positions(schema):
        if X_MCP_HEADER not in node:
            continue
        name = node[X_MCP_HEADER]
        if not path:
            where = "the schema root" if path == () else "a subschema that is not a plain chain of 'properties'"
            raise SchemaError(
                f"{owner}: {X_MCP_HEADER} is only allowed on a property reached through 'properties' alone "
                f"(not under items, $defs, anyOf, if/then, $ref, ...); found one at {where}"
            )
        argument = ".".join(path)
        if not isinstance(name, str):
            raise SchemaError(f"{owner}: property {argument!r}: {X_MCP_HEADER} must be a string header name")
        if "_" in name and _HEADER_NAME.fullmatch(name.replace("_", "-")):
            raise SchemaError(
                f"{owner}: property {argument!r}: {X_MCP_HEADER} {name!r}: use '-' instead of '_' "
                "(WSGI servers and nginx drop request headers whose names contain '_')"
            )
        if not _HEADER_NAME.fullmatch(name):
            raise SchemaError(
                f"{owner}: property {argument!r}: {X_MCP_HEADER} {name[:60]!r} is not an HTTP header name "
                "(use letters, digits and ! # $ % & ' * + - . ^ ` | ~)"
            )
        kind = node.get("type")
        if not isinstance(kind, str) or kind not in HEADER_TYPES:
            hint = " (an Optional parameter has none: give it a default value instead)" if "anyOf" in node else ""
            raise SchemaError(
                f'{owner}: property {argument!r}: {X_MCP_HEADER} needs "type": "string", "integer" or "boolean"'
                f", not {kind!r}{hint}"
            )
        if name.lower() in seen:
            raise SchemaError(
                f"{owner}: property {argument!r}: {X_MCP_HEADER} {name!r} is already used by property "
                f"{seen[name.lower()]!r} (header names ignore case)"
            )
        seen[name.lower()] = argument
        found.append(ParamHeader(path, name, kind))
    return tuple(sorted(found, key=lambda header: header.path))


def _argument_at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path`, or None when it is absent, null, or a step is not an object."""
    node: Any = arguments
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _agrees(param: ParamHeader, value: Any, text: str) -> bool:
    """Whether the decoded header `text` is how a client renders the argument `value`."""
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, str):
        return text == value
    if not isinstance(value, (int, float)) or abs(value) > MAX_SAFE_INTEGER or not float(value).is_integer():
        return False  # an object, array, fraction or huge number has no header form
    if param.type != "integer":
        return text == str(int(value)) and isinstance(value, int)
    # Numerically, as the spec recommends: "42.0" and "42" are the same integer.
    if not _CANONICAL_DECIMAL.fullmatch(text) or len(text) > _MAX_DECIMAL_CHARS:
        return False
    whole, _, fraction = text.partition(".")
    return fraction.strip("0") == "" and int(whole) == int(value)


def check_param_headers(
    params: Sequence[ParamHeader], arguments: Mapping[str, Any], headers: Mapping[str, str | Sequence[str]]
) -> str | None:
    """None when a modern `tools/call`'s `Mcp-Param-*` headers agree with its arguments, else the -32020 message.

    `headers` maps lower-cased header names to the value, or to the list of
    values when the transport sees each copy. Under WSGI a repeated header
    arrives as one value, the copies joined by ',', so it can only match an
    argument that is that joined text. Rules, per annotated argument:
    absent (or null) and no header: fine; a header without the argument, or
    the argument without its header: refused; a value that does not decode
    (bad base64, raw non-ASCII): refused; otherwise the decoded header must
    be the argument's rendering (text as is, true/false, the integer in
    decimal, compared as a number). Headers no annotation declares are
    ignored. Messages name the header and the argument, never the values.
    """
    for param in params:
        raw = headers.get(param.header.lower())
        if raw is not None and not isinstance(raw, str):
            if len(raw) != 1:
                return f"the {param.header} header is sent more than once; send it once"
            raw = raw[0]
        value = _argument_at(arguments, param.path)
        if value is None:
            if raw is not None:
                return (
                    f"the {param.header} header is sent but the argument {param.argument!r} is not; "
                    "send both or neither"
                )
            continue
        if raw is None:
            return (
                f"the argument {param.argument!r} is sent without its {param.header} header; "
                "send the argument's value in that header too (see the tool's x-mcp-header)"
            )
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if param.type == "integer" and number and abs(value) > MAX_SAFE_INTEGER:
            return f"the argument {param.argument!r} is beyond ±(2^53-1), which {param.header} cannot carry"
        try:
            text = decode_header_value(raw)
        except ValueError as exc:
            return f"the {param.header} header: {exc}"
        if not _agrees(param, value, text):
            return f"the {param.header} header does not match the argument {param.argument!r}"
    return None
