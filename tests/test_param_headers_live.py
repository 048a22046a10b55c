"""`Mcp-Param-*` end to end: a live server, raw HTTP for every case, and the real `mcp` 2.3.0 client.

The server is the README's "Arguments in HTTP headers" example, run as
written. Raw requests carry the full 2026-07-28 envelope (`_meta`,
`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) so that only the
`Mcp-Param-*` header decides the answer; the `mcp` client in its default
mode negotiates 2026-07-28 and mirrors the argument from the listed tool's
`x-mcp-header` by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from support import live_server, request

from mcp_auth import McpServer
from mcp_auth.auth.tokens import add_token

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
MODERN = "2026-07-28"
_ids = itertools.count(100)


def readme_server() -> McpServer:
    """The README's Header example, executed as written."""
    section = README.split("### Arguments in HTTP headers", 1)[1]
    source = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert source is not None
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(source.group(1)), "README.md", "exec"), namespace)  # the README's own example
    server = namespace["server"]
    assert isinstance(server, McpServer)
    return server


@dataclass(frozen=True)
class Served:
    live: Served
    admin: str  # may call every tool
    scoped: str  # may call `usage` only

    @property
    def port(self) -> int:
        return self.live.port


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.json"
    admin, scoped = add_token(tokens, "admin", None), add_token(tokens, "scoped", ["usage"])
    with live_server(readme_server(), tokens_file=str(tokens)) as server:
        yield Served(server, admin, scoped)


def call(
    live: Served, arguments: dict[str, Any], param_headers: dict[str, str], *, scoped: bool = False
) -> tuple[int, dict[str, Any]]:
    request_id = next(_ids)
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": "execute_sql",
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "execute_sql", **param_headers}
    response = request(live.port, body=body, headers=headers, token=live.scoped if scoped else live.admin)
    text = response.body.decode()
    if "text/event-stream" in (response.header("Content-Type") or ""):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:") and line[5:].strip())
    answer = json.loads(text)
    assert answer["id"] == request_id  # every answer, refusals too, carries the request's id
    return response.status, answer


@pytest.mark.parametrize(
    ("region", "header"),
    [
        pytest.param("us-west1", "us-west1", id="plain"),
        pytest.param("Hello", "=?base64?SGVsbG8=?=", id="base64"),
        pytest.param("SGVsbG8=", "SGVsbG8=", id="literal-missing-prefix"),
        pytest.param("=?base64?SGVsbG8=", "=?base64?SGVsbG8=", id="literal-missing-suffix"),
        pytest.param("us-west1", "  us-west1  ", id="surrounding-whitespace"),
    ],
)
def test_agreeing_header_runs_the_tool(live: Served, region: str, header: str) -> None:
    status, answer = call(live, {"region": region, "query": "q"}, {"Mcp-Param-Region": header})
    assert status == 200, answer
    assert answer["result"]["content"][0]["text"] == f"ran in {region}: q"


@pytest.mark.parametrize(
    ("region", "headers", "fragment"),
    [
        pytest.param("test-value", {}, "without its Mcp-Param-Region header", id="missing"),
        pytest.param("Hello", {"Mcp-Param-Region": "=?base64?SGVsbG8?="}, "not valid base64", id="bad-padding"),
        pytest.param("Hello", {"Mcp-Param-Region": "=?base64?SGVs!!!bG8=?="}, "not valid base64", id="bad-chars"),
        pytest.param("eu", {"Mcp-Param-Region": "us"}, "does not match the argument 'region'", id="mismatch"),
        pytest.param("eu", {"mcp-param-region": "us"}, "does not match", id="lower-case-name-still-checked"),
    ],
)
def test_disagreeing_header_is_400_header_mismatch(
    live: Served, region: str, headers: dict[str, str], fragment: str
) -> None:
    status, answer = call(live, {"region": region, "query": "q"}, headers)
    assert status == 400
    assert answer["error"]["code"] == -32020
    assert fragment in answer["error"]["message"]


def test_header_without_the_argument_is_refused(live: Served) -> None:
    status, answer = call(live, {"query": "q"}, {"Mcp-Param-Region": "eu"})
    assert (status, answer["error"]["code"]) == (400, -32020)


def test_scope_refusal_comes_before_the_header_check(live: Served) -> None:
    status, answer = call(live, {"region": "eu", "query": "q"}, {}, scoped=True)
    assert status == 403, answer


def test_handshake_era_is_not_checked(live: Served) -> None:
    # 2025-11-25 had no Mcp-Param-* headers: a session's call without one runs.
    async def drive() -> str:
        # Closed with the client: its pooled connections stay open (keep-alive) until then.
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {live.admin}"}) as http:
            transport = streamable_http_client(f"http://127.0.0.1:{live.port}/mcp", http_client=http)
            async with Client(transport, mode="legacy") as client:
                assert client.protocol_version != MODERN
                result = await client.call_tool("execute_sql", {"region": "eu", "query": "q"})
                return result.content[0].text

    assert asyncio.run(drive()) == "ran in eu: q"


def test_the_mcp_client_mirrors_the_argument_by_itself(live: Served) -> None:
    """The real client, default mode: it negotiates 2026-07-28 and sends Mcp-Param-* from tools/list."""

    async def drive() -> tuple[str | None, dict[str, Any], list[str]]:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {live.admin}"}) as http,
            Client(streamable_http_client(f"http://127.0.0.1:{live.port}/mcp", http_client=http)) as client,
        ):
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
            texts = []
            for region in ("us-west1", "Zürich", " padded ", "=?base64?literal?="):  # the last three go base64
                result = await client.call_tool("execute_sql", {"region": region, "query": "q"})
                assert not result.is_error, result
                texts.append(result.content[0].text)
            usage = await client.call_tool("usage", {"tenant": "acme"})
            return client.protocol_version, listed["execute_sql"].input_schema, [*texts, usage.content[0].text]

    version, schema, texts = asyncio.run(drive())
    assert version == MODERN
    assert schema["properties"]["region"]["x-mcp-header"] == "Region"
    assert texts[:4] == [f"ran in {r}: q" for r in ("us-west1", "Zürich", " padded ", "=?base64?literal?=")]
    assert json.loads(texts[4]) == {"tenant": "acme", "month": 1}
