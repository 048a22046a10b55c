"""JSON Schema from Python type hints: what `tools/list` publishes for a function.

`function_schema` turns a tool's signature into its `inputSchema` (and the
`Signature` that binds arguments back to parameters); `return_schema` turns its
return annotation into an `outputSchema`. Checking and enforcing a schema is
`mcp_auth.mcp.validation`'s job.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

JsonSchema = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Header:
    """Mirror this tool argument into the HTTP header `Mcp-Param-<name>` (MCP 2026-07-28 `x-mcp-header`).

        @server.tool()
        def query(region: Annotated[str, Header("Region")], sql: str) -> str: ...

    A client then sends `Mcp-Param-Region: <region>` with each call, so a
    proxy can route on it; the server refuses a call whose header and
    argument disagree. For str, int and bool parameters.
    """

    name: str


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
            elif isinstance(extra, Header):
                schema["x-mcp-header"] = extra.name
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


class SchemaError(ValueError):
    """A schema that cannot be enforced as written; raised when the tool is registered."""
