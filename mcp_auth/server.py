"""McpServer: the public way to write tools, resources and prompts, and to serve them.

Tool authors decorate plain or `async def` functions. This module is the
facade only: the decorators file handlers in a `Registry`
(`mcp_auth.mcp.registry`, which infers and checks their schemas), and the
`Dispatcher` (`mcp_auth.mcp.dispatch`) answers the MCP methods, runs the
step-7 check and reaches live sessions. `wsgi_app` puts the dispatcher behind
the auth pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import audit
from ._version import __version__ as _package_version
from .config import Config
from .mcp.context import AsyncContext, Context
from .mcp.dispatch import Dispatcher
from .mcp.registry import Registry
from .mcp.schema import Header, JsonSchema
from .startup import build_app

__all__ = ["AsyncContext", "Context", "Header", "McpServer"]


class McpServer:
    """A set of tools, resources and prompts, served by `wsgi_app` behind the auth pipeline.

    >>> server = McpServer("notes")
    >>> @server.tool()
    ... def add(a: int, b: int) -> int:
    ...     '''Add two numbers.'''
    ...     return a + b
    """

    def __init__(self, name: str = "mcp-auth", version: str = _package_version, *, instructions: str | None = None):
        self._registry = Registry()
        self.dispatcher = Dispatcher(self._registry, audit, name, version, instructions)

    # What initialize tells clients; the dispatcher answers it, so it holds them.

    @property
    def name(self) -> str:
        return self.dispatcher.name

    @name.setter
    def name(self, value: str) -> None:
        self.dispatcher.name = value

    @property
    def version(self) -> str:
        return self.dispatcher.version

    @version.setter
    def version(self, value: str) -> None:
        self.dispatcher.version = value

    @property
    def instructions(self) -> str | None:
        return self.dispatcher.instructions

    @instructions.setter
    def instructions(self, value: str | None) -> None:
        self.dispatcher.instructions = value

    # --- registration -----------------------------------------------------

    def tool(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        annotations: dict[str, Any] | None = None,
        input_schema: JsonSchema | None = None,
        output_schema: JsonSchema | None = None,
        structured_output: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Register a tool. Its input schema comes from the type hints, its description from the docstring.

        Use it as `@server.tool`, `@server.tool()` or `@server.tool("name", ...)`.

        A return annotation that is an object (dict, TypedDict, dataclass) adds
        an `outputSchema` and `structuredContent`; `structured_output=False`
        turns that off, `output_schema=` sets it by hand.

        `headers={"region": "Region"}` has clients mirror the argument
        `region` into the HTTP header `Mcp-Param-Region` (as
        `Annotated[str, Header("Region")]` on the parameter does).
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._registry.add_tool(
                fn,
                tool_name,
                title=title,
                description=description,
                annotations=annotations,
                input_schema=input_schema,
                output_schema=output_schema,
                structured_output=structured_output,
                headers=headers,
            )
            self.notify_list_changed("tools")
            return fn

        if callable(name):  # bare `@server.tool`: the function itself is the argument
            tool_name = None
            return register(name)
        tool_name = name
        return register

    def resource(
        self,
        uri: str,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
        cache_scope: str = "private",
        ttl_ms: int = 0,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a resource; a URI with `{variables}` is a template whose values become arguments.

        `cache_scope` and `ttl_ms` are the caching hints a 2026-07-28 client gets with each read:
        by default "private" and 0 (not reused). Declare "public" only for content that is the
        same for everyone; it is still sent as "private" when tokens may have scopes.
        """
        if callable(uri):  # bare `@server.resource`: there is no URI to register it under
            raise TypeError('use @server.resource("uri")')

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._registry.add_resource(
                fn,
                uri,
                name=name,
                title=title,
                description=description,
                mime_type=mime_type,
                cache_scope=cache_scope,
                ttl_ms=ttl_ms,
            )
            self.notify_list_changed("resources")
            return fn

        return register

    def prompt(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
    ) -> Any:
        """Register a prompt; its parameters are the prompt's (string) arguments.

        Use it as `@server.prompt`, `@server.prompt()` or `@server.prompt("name", ...)`.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._registry.add_prompt(fn, prompt_name, title=title, description=description)
            self.notify_list_changed("prompts")
            return fn

        if callable(name):  # bare `@server.prompt`
            prompt_name = None
            return register(name)
        prompt_name = name
        return register

    def completion(
        self, *, prompt: str | None = None, resource_template: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register argument completion for a prompt or a resource template.

        The function is called as `fn(argument_name, partial_value, context_arguments)`
        and returns a list of suggested values.
        """
        key = Registry.completion_key(prompt, resource_template)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._registry.add_completion(key, fn)
            return fn

        return register

    @property
    def tool_names(self) -> list[str]:
        return list(self._registry.tools)

    @property
    def offer_counts(self) -> dict[str, int]:
        """How many of each kind this server offers, for the startup summary."""
        registry = self._registry
        return {
            "tool": len(registry.tools),
            "resource": len(registry.resources),
            "resource template": len(registry.templates),
            "prompt": len(registry.prompts),
        }

    # --- notifications outside a request -----------------------------------

    def notify_resource_updated(self, uri: str) -> None:
        """Tell every session subscribed to `uri` that it changed (notifications/resources/updated)."""
        self.dispatcher.notify_resource_updated(uri)

    def notify_list_changed(self, kind: str) -> None:
        """Tell every session that the tools, resources or prompts changed."""
        self.dispatcher.notify_list_changed(kind)

    # --- serving ----------------------------------------------------------

    def wsgi_app(self, config: Any = None) -> Any:
        """The WSGI application serving this server behind the auth pipeline.

        Prints nothing, except on a first run that creates the default token
        file: then the token and client configurations go to stdout, once
        (a token nobody was shown is no use; a log would keep a secret).
        """
        return build_app(self, config if config is not None else Config.from_sources(), summary=False)

    def close(self) -> None:
        """Stop the event loop of async handlers, cancelling those still running.

        The app calls this when it closes. Plain handlers are not affected, and
        a later async call starts the loop again.
        """
        self.dispatcher.close()
