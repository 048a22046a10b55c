"""Multi round-trip requests over real sockets, with the real `mcp` client, in both protocol eras.

The handlers are the README's `asking.py` example, unchanged: the same code
asks the client over the handshake era's stream (the client answers
server-to-client requests) and through the stateless era's input_required
rounds (the client retries with inputResponses and the sealed requestState).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import mcp_types as types
import pytest
from mcp.client.client import Client
from support import TOKEN, live_server
from test_client_requests import TRANSPORTS
from test_readme import block

from mcp_auth import McpServer


def readme_asking_server() -> McpServer:
    namespace: dict[str, Any] = {}
    exec(block("python", "# asking.py"), namespace)  # the README's own example
    server: McpServer = namespace["server"]
    return server


class Answers:
    """The client's side: what the callbacks answered, and how often each ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.calls.append("elicitation")
        if "name" in str(params.requested_schema):
            return types.ElicitResult(action="accept", content={"name": "Ada"})
        return types.ElicitResult(action="accept", content={"city": "Lyon"})

    async def sample(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.calls.append("sampling")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="pack light"), model="test-model"
        )

    async def roots(self, context: Any) -> types.ListRootsResult:
        self.calls.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri="file:///work")])

    def callbacks(self) -> dict[str, Any]:
        return {
            "elicitation_callback": self.elicit,
            "sampling_callback": self.sample,
            "list_roots_callback": self.roots,
        }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_handshake_era_asks_over_the_stream_with_the_same_handlers(transport: Callable[[str], Any]) -> None:
    answers = Answers()

    async def main(url: str) -> tuple[Any, Any, str | None]:
        async with Client(transport(url), mode="legacy", **answers.callbacks()) as client:
            greeted = await client.call_tool("greet", {})
            trip = await client.call_tool("plan_trip", {})
            return greeted, trip, client.protocol_version

    with live_server(readme_asking_server(), token=TOKEN) as live:
        greeted, trip, version = asyncio.run(main(live.url))
    assert version == "2025-11-25"
    assert greeted.content[0].text == "Hello, Ada!"
    # One run, three requests sent one after another on the stream: round 1.
    assert trip.content[0].text == "Lyon: pack light (1 root(s), round 1)"
    assert answers.calls == ["elicitation", "elicitation", "sampling", "roots"]
