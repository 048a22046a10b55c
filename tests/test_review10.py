"""Findings of the hostile review of the 2026-07-28 era (issue 10), each pinned over real sockets.

The server here has one token and no scopes (`same_view_for_all`), the one
setting in which a resource's declared `cache_scope="public"` is sent as
"public" at all: where a wrong hint would matter most.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import Live, live_server
from test_stateless import ENVELOPE, stateless

from mcp_auth import Context, McpServer

ELICITING = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}
ASK_SCHEMA = {"type": "object", "properties": {"team": {"type": "string"}}}


def _server() -> McpServer:
    server = McpServer("review10", version="1")

    @server.resource("board://plain", cache_scope="public", ttl_ms=5000)
    def plain() -> str:
        return "the same for everyone"

    @server.resource("board://asked", cache_scope="public", ttl_ms=5000)
    def asked(ctx: Context) -> str:
        answer = ctx.elicit("Which team?", ASK_SCHEMA, key="team")
        return f"board of {answer['content']['team']}"

    return server


@pytest.fixture(scope="module")
def live() -> Any:
    with live_server(_server()) as running:
        yield running


def test_a_declared_public_read_stays_public_without_a_round_trip(live: Live) -> None:
    read = stateless(live, "resources/read", {"uri": "board://plain"}).json()["result"]
    assert (read["cacheScope"], read["ttlMs"]) == ("public", 5000)


@pytest.mark.parametrize("with_state", [True, False], ids=["retry-with-state", "answers-up-front"])
def test_a_read_answered_through_input_responses_is_never_cached(live: Live, with_state: bool) -> None:
    """Its content depends on what this client answered, and a cache keys on the method and URI
    alone: a "public" hint would let a shared cache hand one user's answers to every later reader."""
    params: dict[str, Any] = {"uri": "board://asked"}
    if with_state:
        first = stateless(live, "resources/read", params, meta=ELICITING).json()["result"]
        assert first["resultType"] == "input_required" and "cacheScope" not in first
        params["requestState"] = first["requestState"]
    params["inputResponses"] = {"team": {"action": "accept", "content": {"team": "red"}}}
    read = stateless(live, "resources/read", params, meta=ELICITING).json()["result"]
    assert read["contents"][0]["text"] == "board of red"
    assert (read["resultType"], read["cacheScope"], read["ttlMs"]) == ("complete", "private", 0)
