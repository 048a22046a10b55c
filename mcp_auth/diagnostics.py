"""The built-in diagnostics toolset: what `python -m mcp_auth` serves with no target.

It answers the questions a person asks while wiring a client to a protected
server: who does the server think I am, from which address, and what may I
call. It reveals nothing the caller does not already hold: never a token, a
hash of one, or the server's configuration.
"""

from __future__ import annotations

from typing import TypedDict

from ._version import __version__
from .server import Context, McpServer


class WhoAmI(TypedDict):
    token_name: str
    client_address: str
    tools: list[str]
    session_id: str | None


def build_diagnostics() -> McpServer:
    """A fresh McpServer with `whoami` and `echo`."""
    server = McpServer(
        "mcp-auth-diagnostics",
        __version__,
        instructions="Diagnostics for an mcp_auth server: call whoami to see how the server sees this client.",
    )

    @server.tool(annotations={"readOnlyHint": True, "idempotentHint": True})
    def whoami(ctx: Context) -> WhoAmI:
        """Who the server thinks is calling.

        The token's name, the client address the server resolved, and the tools this token may call.
        """
        return {
            "token_name": ctx.principal.name,
            "client_address": ctx.client_address,
            "tools": [name for name in server.tool_names if ctx.principal.may_use(name)],
            "session_id": ctx.session_id,
        }

    @server.tool(annotations={"readOnlyHint": True, "idempotentHint": True})
    def echo(text: str) -> str:
        """Return the text unchanged.

        Args:
            text: The text to send back.
        """
        return text

    return server
