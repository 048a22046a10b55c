"""A stdio MCP server written with the `mcp` package's server API, for the bridge's tests.

Tools with progress and logs, a sampling request, a resource that changes (and
says so), a tool that adds a tool (list changed), and ways to misbehave on
purpose: crash, print garbage, hang. `pid` tells a test which process answers.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

server = MCPServer("test-child", instructions="a stdio server for the bridge's tests")
_counter = {"value": 0}


@server.tool()
def echo(text: str) -> str:
    """Echoes the text."""
    return text


@server.tool()
def pid() -> str:
    """The process id of this child (tests look for it in the process table)."""
    return str(os.getpid())


@server.tool()
def environment(name: str) -> str:
    """The value of an environment variable, or '<unset>'."""
    return os.environ.get(name, "<unset>")


@server.tool()
async def countdown(start: int, ctx: Context) -> str:
    """Counts down, reporting progress and logging each step."""
    for step in range(start):
        await ctx.info(f"step {step + 1}")
        await ctx.report_progress(step + 1, start, f"{start - step}...")
    return "liftoff"


@server.tool()
async def ask_model(question: str, ctx: Context) -> str:
    """Asks the client's model (sampling/createMessage)."""
    from mcp_types import SamplingMessage, TextContent

    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=question))], max_tokens=20
    )
    return f"model said: {result.content.text}"


@server.tool()
async def bump(ctx: Context) -> str:
    """Changes the counter resource and tells subscribers."""
    _counter["value"] += 1
    await ctx.session.send_resource_updated("counter://value")
    return str(_counter["value"])


@server.tool()
async def add_secret_tool(ctx: Context) -> str:
    """Adds the tool 'secret_added' and announces the change."""

    def secret_added() -> str:
        """Appeared later."""
        return "secret"

    server.add_tool(secret_added)
    await ctx.session.send_tool_list_changed()
    return "added"


@server.tool()
def crash() -> str:
    """Exits the process in the middle of the call."""
    sys.stderr.write("crashing on purpose\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
def garbage() -> str:
    """Writes a line that is not JSON-RPC to stdout."""
    # The mcp package points sys.stdout at stderr while it serves; the protocol's stdout is fd 1.
    os.write(1, b"this is not JSON-RPC\n")
    return "wrote garbage"


@server.tool()
async def hang() -> str:
    """Never answers; notes a cancellation in $CHILD_EVENTS (a file) when one arrives."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        if os.environ.get("CHILD_EVENTS"):
            with open(os.environ["CHILD_EVENTS"], "a") as events:
                events.write("hang cancelled\n")
        raise
    return "never"


@server.resource("counter://value")
def counter() -> str:
    """A number that bump() increases."""
    return str(_counter["value"])


@server.prompt()
def greet(name: str) -> str:
    """A greeting."""
    return f"Hello, {name}!"


if __name__ == "__main__":
    if os.environ.get("CHILD_PID_FILE"):
        with open(os.environ["CHILD_PID_FILE"], "a") as handle:
            handle.write(f"{os.getpid()}\n")
    server.run("stdio")
