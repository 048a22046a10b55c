"""What a server offers: its tools, resources (and templates), prompts and completions.

`Registry.add_tool` and its siblings do what the `McpServer` decorators
promise: infer the schemas from type hints, check and compile them (a bad
schema is an error at decoration time, naming the tool), check names and
template variables, and file the handler.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .context import _CallContext
from .param_headers import X_MCP_HEADER, ParamHeader, find_param_headers
from .protocol import _NAME
from .schema import JsonSchema, SchemaError, Signature, function_schema, return_schema
from .uritemplate import UriTemplate
from .validation import CompiledSchema, compile_schema


def _default_name(fn: Callable[..., Any]) -> str:
    """A handler's name when none is given: its function's, through partials."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__name__", type(fn).__name__))


def _is_coroutine_callable(fn: Callable[..., Any]) -> bool:
    """`async def` functions, partials of them, their functools.wraps wrappers, objects with async __call__."""
    if inspect.iscoroutinefunction(fn):
        return True
    try:
        if inspect.iscoroutinefunction(inspect.unwrap(fn)):
            return True
    except ValueError:  # a __wrapped__ cycle
        return False
    return callable(fn) and not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


@dataclass
class _Tool:
    name: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]
    output_schema: JsonSchema | None
    arguments: CompiledSchema  # built once, at registration
    output: CompiledSchema | None
    param_headers: tuple[ParamHeader, ...] = ()  # the arguments a modern client mirrors into Mcp-Param-*

    def structured_in(self, modern: bool) -> bool:
        """Whether this era's clients get `outputSchema` and `structuredContent`.

        2026-07-28 allows any output schema and any JSON as structured
        content; 2025-11-25 and earlier only objects. A tool whose output
        schema is not an object is still listed and callable in the handshake
        era, without `outputSchema`, its result as JSON text in `content`
        (what those revisions tell a tool without a schema to do), rather
        than hidden from older clients or shown a schema they cannot hold.
        """
        if self.output_schema is None:
            return False
        return modern or self.output_schema.get("type") == "object"

    def listed(self, modern: bool) -> dict[str, Any]:
        """The tool as `tools/list` shows it to a request of this era."""
        if "outputSchema" in self.definition and not self.structured_in(modern):
            return {key: value for key, value in self.definition.items() if key != "outputSchema"}
        return self.definition


@dataclass
class _Resource:
    uri: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]
    mime_type: str | None
    template: UriTemplate | None = None  # set for URI templates
    # The caching hints of a stateless read (`mcp.handlers_modern`): private and not reused unless declared.
    cache_scope: str = "private"
    ttl_ms: int = 0


@dataclass(frozen=True)
class _Target:
    """A resource a URI resolved to, with its handler's arguments and the URI scopes are judged on."""

    resource: _Resource
    arguments: dict[str, str]
    effective_uri: str


@dataclass
class _Prompt:
    name: str
    fn: Callable[..., Any]
    signature: Signature
    definition: dict[str, Any]
    arguments: CompiledSchema


@dataclass
class Registry:
    """The handlers a server offers, by kind; filled by the `McpServer` decorators through `add_*`."""

    tools: dict[str, _Tool] = field(default_factory=dict)
    resources: dict[str, _Resource] = field(default_factory=dict)
    templates: dict[str, _Resource] = field(default_factory=dict)
    prompts: dict[str, _Prompt] = field(default_factory=dict)
    completions: dict[tuple[str, str], Callable[..., Any]] = field(default_factory=dict)

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        annotations: dict[str, Any] | None = None,
        input_schema: JsonSchema | None = None,
        output_schema: JsonSchema | None = None,
        structured_output: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """File a tool: its schemas inferred (or given), checked and compiled; SchemaError names the tool.

        `headers` maps top-level argument names to `Mcp-Param-*` header names
        (`x-mcp-header`), for a schema the author did not write by hand.
        """
        tool_name = self._check_name(name or _default_name(fn), "tool", self.tools)
        signature = function_schema(fn, _CallContext)
        schema = input_schema if input_schema is not None else signature.input_schema
        if headers:
            schema = _with_headers(schema, headers, f"tool {tool_name!r}")
        out_schema = output_schema
        if out_schema is None and structured_output is not False:
            out_schema = return_schema(fn)
        arguments = _compile_object_schema(schema, f"tool {tool_name!r}: inputSchema")
        param_headers = find_param_headers(schema, f"tool {tool_name!r}: inputSchema")
        output = None
        if out_schema is not None:
            if not isinstance(out_schema, dict):
                raise SchemaError(f"tool {tool_name!r}: outputSchema: must be a JSON Schema object")
            output = compile_schema(out_schema, f"tool {tool_name!r}: outputSchema")
        definition: dict[str, Any] = {"name": tool_name, "inputSchema": schema}
        if title:
            definition["title"] = title
        if description or signature.description:
            definition["description"] = description or signature.description
        if out_schema is not None:
            definition["outputSchema"] = out_schema
        if annotations:
            definition["annotations"] = annotations
        self.tools[tool_name] = _Tool(
            tool_name,
            fn,
            replace(signature, input_schema=schema),
            definition,
            out_schema,
            arguments,
            output,
            param_headers,
        )

    def add_resource(
        self,
        fn: Callable[..., Any],
        uri: str,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
        cache_scope: str = "private",
        ttl_ms: int = 0,
    ) -> None:
        """File a resource; a URI with `{variables}` is a template whose variables must be `fn`'s parameters."""
        if cache_scope not in ("public", "private"):
            raise ValueError(f"resource {uri!r}: cache_scope is 'public' or 'private', not {cache_scope!r}")
        if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool) or ttl_ms < 0:
            raise ValueError(f"resource {uri!r}: ttl_ms is a whole number of milliseconds, 0 or more")
        signature = function_schema(fn, _CallContext)
        parsed = UriTemplate.parse(uri)  # TemplateError (a ValueError) for an ambiguous template
        is_template = bool(parsed.variables)
        table = self.templates if is_template else self.resources
        if uri in table:
            raise ValueError(f"resource {uri!r} is already registered")
        definition: dict[str, Any] = {
            "uriTemplate" if is_template else "uri": uri,
            "name": name or _default_name(fn),
        }
        if title:
            definition["title"] = title
        if description or signature.description:
            definition["description"] = description or signature.description
        if mime_type:
            definition["mimeType"] = mime_type
        template = None
        if is_template:
            template = parsed
            variables = set(template.names)
            if variables != set(signature.parameters):
                raise TypeError(
                    f"resource template {uri!r} has variables {sorted(variables)} but "
                    f"{fn.__qualname__} takes {sorted(signature.parameters)}; they must match"
                )
        elif signature.parameters:
            raise TypeError(f"{fn.__qualname__}: a resource without {{variables}} takes no arguments")
        table[uri] = _Resource(uri, fn, signature, definition, mime_type, template, cache_scope, ttl_ms)

    def add_prompt(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
    ) -> None:
        """File a prompt; its parameters are the prompt's (string) arguments."""
        prompt_name = self._check_name(name or _default_name(fn), "prompt", self.prompts)
        signature = function_schema(fn, _CallContext)
        required = set(signature.input_schema.get("required", []))
        arguments = []
        for parameter in signature.parameters:
            argument: dict[str, Any] = {"name": parameter, "required": parameter in required}
            if parameter in signature.parameter_descriptions:
                argument["description"] = signature.parameter_descriptions[parameter]
            arguments.append(argument)
        definition: dict[str, Any] = {"name": prompt_name, "arguments": arguments}
        if title:
            definition["title"] = title
        if description or signature.description:
            definition["description"] = description or signature.description
        validator = compile_schema(signature.input_schema, f"prompt {prompt_name!r}")
        self.prompts[prompt_name] = _Prompt(prompt_name, fn, signature, definition, validator)

    @staticmethod
    def completion_key(prompt: str | None, resource_template: str | None) -> tuple[str, str]:
        """Which completions table entry `completion(prompt=...)` or `completion(resource_template=...)` names."""
        if (prompt is None) == (resource_template is None):
            raise TypeError("completion() takes exactly one of prompt= or resource_template=")
        return ("ref/prompt", prompt) if prompt is not None else ("ref/resource", resource_template)  # type: ignore[return-value]

    def add_completion(self, key: tuple[str, str], fn: Callable[..., Any]) -> None:
        """File argument completion for the prompt or resource template `key` names."""
        self.completions[key] = fn

    @staticmethod
    def _check_name(name: str, kind: str, table: dict[str, Any]) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{kind} name {name!r}: use 1-128 of A-Z a-z 0-9 _ - . /")
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        return name


def _with_headers(schema: JsonSchema, headers: Mapping[str, str], owner: str) -> JsonSchema:
    """A copy of `schema` whose top-level properties named in `headers` carry `x-mcp-header`."""
    schema = copy.deepcopy(schema)
    properties = schema.get("properties") if isinstance(schema, dict) else None
    for argument, header in headers.items():
        if not isinstance(properties, dict) or not isinstance(properties.get(argument), dict):
            raise SchemaError(f"{owner}: headers= names {argument!r}, which is not one of the tool's arguments")
        properties[argument][X_MCP_HEADER] = header
    return schema


def _compile_object_schema(schema: Any, owner: str) -> CompiledSchema:
    # MCP says a tool's arguments are an object (its output may be any JSON in 2026-07-28).
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise SchemaError(f'{owner}: must be a JSON Schema with "type": "object"')
    return compile_schema(schema, owner)
