"""mcp_auth: MCP over Streamable HTTP behind one auth pipeline.

The public API is what this module exports; everything else may change.

    from mcp_auth import McpServer, Context

    server = McpServer("notes")

    @server.tool()
    def add(a: int, b: int) -> int:
        '''Add two numbers.'''
        return a + b

    app = server.wsgi_app(Config(token_file="/run/secrets/mcp-token"))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .audit import configure_logging
from .auth.tokens import Principal
from .config import Config
from .errors import ConfigError
from .mcp.content import (
    ToolResult,
    audio_content,
    embedded_resource,
    image_content,
    resource_contents,
    resource_link,
    text_content,
)
from .mcp.mrtr import Elicitation, Roots, Sampling
from .server import AsyncContext, Context, Header, McpServer


def stdio_app(argv: Sequence[str], config: Config | None = None, **options: Any) -> Any:
    """A WSGI app serving an existing stdio MCP server (argv, run without a shell) behind the pipeline.

    See `mcp_auth.bridge.stdio_app` for the options (env, cwd, max_children, ...).
    """
    from .bridge import stdio_app as build

    return build(argv, config, **options)


__all__ = [
    "AsyncContext",
    "Config",
    "ConfigError",
    "Context",
    "Elicitation",
    "Header",
    "McpServer",
    "Principal",
    "Roots",
    "Sampling",
    "ToolResult",
    "__version__",
    "audio_content",
    "configure_logging",
    "create_app",
    "embedded_resource",
    "image_content",
    "resource_contents",
    "resource_link",
    "stdio_app",
    "text_content",
]


def create_app(target: str | None = None, *, stdio: Sequence[str] | None = None, stdio_env: Sequence[str] = ()) -> Any:
    """A WSGI app configured from MCP_AUTH_* variables (and MCP_AUTH_CONFIG), for gunicorn.

    `target` (or MCP_AUTH_TARGET) is `module:attribute` of an McpServer; without
    one the built-in diagnostics toolset is served. `stdio` (an argv list) serves
    an existing stdio MCP server instead, `stdio_env` adds to its environment
    (see `stdio_app`); it needs one gunicorn worker (`-w 1`).

        gunicorn -k gthread --threads 16 'mcp_auth:create_app()'
        gunicorn -w 1 -k gthread --threads 16 'mcp_auth:create_app(stdio=["python", "server.py"])'
    """
    from .audit import configure_logging, logging_configured
    from .diagnostics import build_diagnostics
    from .startup import build_app
    from .target import load_target

    config = Config.from_sources({}, os.environ)
    if not logging_configured():  # the host has not set up logging: audit (and tools' logs) to stderr
        configure_logging(config.log_format, config.log_level)
    if stdio is not None:
        if target:
            raise ConfigError("create_app: give a target or stdio=[...], not both")
        return stdio_app(stdio, config, env=stdio_env, summary=True)
    target = target or os.environ.get("MCP_AUTH_TARGET")
    server = load_target(target) if target else build_diagnostics()
    # The WSGI server owns the bind; say what we know, and refuse non-loopback
    # clients when there is no explicit token (the guard does, per request).
    from .gunicorn_conf import served_urls, stop_with_the_worker, summary_printed, under_gunicorn

    if not under_gunicorn():
        return build_app(server, config)
    # Under gunicorn: the real bind address; the summary once when mcp_auth.gunicorn_conf printed it already.
    urls = served_urls()
    app = build_app(server, config, url=" ".join(urls) or None, summary=not summary_printed())
    stop_with_the_worker(app)  # SIGTERM also closes WebSockets with 1001
    return app
