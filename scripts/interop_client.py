"""One real Python MCP client run against a live mcp_auth server, reported as JSON on stdout.

scripts/client_interop.py runs this file with the interpreter of a venv that holds
the `mcp` release under test: `mcp` 1.x (its `ClientSession` over Streamable
HTTP, the only era 1.x speaks) or `mcp` 2.x (its `Client` in mode="legacy",
forcing the handshake era). It reads the server's URL from MCP_INTEROP_URL and
the token from MCP_INTEROP_TOKEN (never a command line), and does what a user's
client does: initialize, list the tools, call `echo` and `whoami`; then it
connects once without a token and once with a wrong one and records what each
refusal looked like to the client's caller. It asserts nothing: the driver
compares the report with what the README promises, in one place for every client.

The report: {"client", "protocolVersion", "serverName", "tools", "echo",
"whoami", "refusals": {"no-token": "...", "wrong-token": "..."}}, each refusal
the exception's type name and message as the caller sees it (an exception
group is unwrapped to the exception inside it).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sys
from typing import Any

# A refused connection must fail, never hang: fail the run instead of waiting forever.
STEP_DEADLINE_SECONDS = 60
ECHO_TEXT = "hello from a real client"


def innermost(error: BaseException) -> BaseException:
    """The first leaf of nested exception groups: what actually went wrong."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def describe(error: BaseException) -> str:
    leaf = innermost(error)
    return f"{type(leaf).__name__}: {leaf}"


def text_of(result: Any) -> str | None:
    content = result.content[0] if result.content else None
    return getattr(content, "text", None)


async def session_v1(url: str, token: str | None) -> dict[str, Any]:
    """mcp 1.x: ClientSession over `streamable_http_client` with a header-carrying httpx client."""
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, _session_id):
            async with ClientSession(read, write) as session:
                initialized = await session.initialize()
                tools = await session.list_tools()
                echo = await session.call_tool("echo", {"text": ECHO_TEXT})
                whoami = await session.call_tool("whoami", {})
                return {
                    "protocolVersion": initialized.protocolVersion,
                    "serverName": initialized.serverInfo.name,
                    "tools": sorted(tool.name for tool in tools.tools),
                    "echo": text_of(echo),
                    "whoami": whoami.structuredContent,
                }


async def session_v2(url: str, token: str | None) -> dict[str, Any]:
    """mcp 2.x: `Client` in mode="legacy" (the initialize handshake, never the 2026-07-28 probe)."""
    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            tools = await client.list_tools()
            echo = await client.call_tool("echo", {"text": ECHO_TEXT})
            whoami = await client.call_tool("whoami", {})
            return {
                "protocolVersion": client.protocol_version,
                "serverName": client.server_info.name if client.server_info else None,
                "tools": sorted(tool.name for tool in tools.tools),
                "echo": text_of(echo),
                "whoami": whoami.structured_content,
            }


async def refusal(session: Any, url: str, token: str | None) -> str:
    try:
        await asyncio.wait_for(session(url, token), STEP_DEADLINE_SECONDS)
    except TimeoutError:
        return f"no answer within {STEP_DEADLINE_SECONDS}s"
    except Exception as error:
        return describe(error)
    return "connected"


async def main() -> dict[str, Any]:
    url, token = os.environ["MCP_INTEROP_URL"], os.environ["MCP_INTEROP_TOKEN"]
    version = importlib.metadata.version("mcp")
    session = session_v1 if version.startswith("1.") else session_v2
    report: dict[str, Any] = {"client": f"mcp {version}" + ("" if version.startswith("1.") else " (mode=legacy)")}
    try:
        report.update(await asyncio.wait_for(session(url, token), STEP_DEADLINE_SECONDS))
    except Exception as error:
        report["error"] = describe(error)
    report["refusals"] = {
        "no-token": await refusal(session, url, None),
        "wrong-token": await refusal(session, url, "wrong-" + token),
    }
    return report


if __name__ == "__main__":
    json.dump(asyncio.run(main()), sys.stdout)
    print()
