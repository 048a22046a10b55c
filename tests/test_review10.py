"""Findings of the hostile review of the 2026-07-28 era (issue 10), each pinned over real sockets.

The server here has one token and no scopes (`same_view_for_all`), the one
setting in which a resource's declared `cache_scope="public"` is sent as
"public" at all: where a wrong hint would matter most.
"""

from __future__ import annotations

from typing import Any

import pytest
from bridge_support import RAW_CHILD_ARGV
from support import Live, live_server
from test_stateless import ENVELOPE, stateless

from mcp_auth import Context, McpServer
from mcp_auth.auth.tokens.principal import Principal
from mcp_auth.bridge import StdioCommand, StdioServer
from mcp_auth.mcp.context import Call, StatelessSession
from mcp_auth.mcp.jsonrpc import Request
from mcp_auth.mcp.modern import META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, ModernRequest
from mcp_auth.mcp.outcome import Answered

ELICITING = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}
SCOPED = Principal("scoped", ("pid",), "s" * 64)
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


def test_a_bridged_childs_own_caching_hints_never_make_a_scoped_list_public() -> None:
    """The front filters a child's list by the token's scope, so the front alone decides how it may be
    cached: a child that calls its (unfiltered) list "public" must not make a scoped view shareable."""
    server = StdioServer(StdioCommand.of([*RAW_CHILD_ARGV, "--cache-hints"]))
    try:
        envelope = ModernRequest("2026-07-28", {})
        meta = {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {}}
        session = StatelessSession()
        call = Call(session, SCOPED, session, "127.0.0.1", lambda principal: True, envelope)
        listed = server.dispatcher.outcome(Request(3, "tools/list", {"_meta": meta}), call)
        assert isinstance(listed, Answered)
        assert [tool["name"] for tool in listed.result["tools"]] == ["pid"]
        assert (listed.result["cacheScope"], listed.result["ttlMs"]) == ("private", 60_000)
    finally:
        server.close()
