"""A bridged stdio server's change notifications in the stateless era reach `subscriptions/listen`.

Pooled children run per token, so what one of them announces (its tools
changed, a resource it serves was updated) reaches the open listens of that
token only, each still limited to what its token's scope lets it hear. Real
front, real HTTP listens, real child processes (`tests/stdio_servers/mcp_child.py`:
`add_secret_tool` announces tools/list_changed, `bump` a resources/updated for
`counter://value`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge_support import bridged
from support import request
from test_listen import open_listen, tag

from mcp_auth.auth.tokens import add_token

MODERN = "2026-07-28"
COUNTER = "counter://value"
WANTED = {"toolsListChanged": True, "resourceSubscriptions": [COUNTER]}


def call_tool(port: int, token: str, name: str) -> dict[str, Any]:
    """A stateless tools/call through the front; its result (the child's answer) once the child is done."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name, "arguments": {}, "_meta": meta}}
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": name}
    response = request(port, body=body, headers=headers, token=token)
    assert response.status == 200, response
    answer = response.json()
    assert "result" in answer, answer
    return answer["result"]  # type: ignore[no-any-return]


def tokens(tmp_path: Path) -> tuple[str, str, str, str]:
    path = tmp_path / "tokens.json"
    alice = add_token(path, "alice", None)
    bob = add_token(path, "bob", None)
    # May call both tools, but may read no counter:// resource.
    narrow = add_token(path, "narrow", ["add_secret_tool", "bump", "resource:file:///public/*"])
    return str(path), alice, bob, narrow


def test_a_pooled_childs_changes_reach_only_the_listens_of_its_token(tmp_path: Path) -> None:
    path, alice, bob, _ = tokens(tmp_path)
    with bridged(settings={"tokens_file": path}) as live:
        with open_listen(live, WANTED, token=alice) as hers, open_listen(live, WANTED, token=bob) as his:
            her_ack, his_ack = hers.next(), his.next()
            call_tool(live.port, alice, "add_secret_tool")
            call_tool(live.port, alice, "bump")
            hers_seen = [hers.next(), hers.next()]
            # Bob's own child's change: the first (and only) thing bob's listen hears.
            call_tool(live.port, bob, "bump")
            his_first = his.next()
    assert her_ack is not None and his_ack is not None
    assert her_ack["params"]["notifications"] == WANTED
    assert [(m["method"], tag(m)) for m in hers_seen if m] == [
        ("notifications/tools/list_changed", "listen-1"),
        ("notifications/resources/updated", "listen-1"),
    ]
    assert hers_seen[1] is not None and hers_seen[1]["params"]["uri"] == COUNTER
    # Alice's tools/list_changed and resources/updated never reached bob's listen.
    assert his_first is not None
    assert his_first["method"] == "notifications/resources/updated", his_first


def test_a_resource_update_outside_the_tokens_scope_is_never_delivered(tmp_path: Path) -> None:
    path, _, _, narrow = tokens(tmp_path)
    with bridged(settings={"tokens_file": path}) as live:
        with open_listen(live, WANTED, token=narrow) as mine:
            ack = mine.next()
            call_tool(live.port, narrow, "bump")  # the child announces counter://value: outside the scope
            call_tool(live.port, narrow, "add_secret_tool")
            first = mine.next()
    assert ack is not None
    assert ack["params"]["notifications"] == {"toolsListChanged": True}
    assert first is not None and first["method"] == "notifications/tools/list_changed", first


def test_discover_mirrors_the_child_and_a_listen_is_honoured(tmp_path: Path) -> None:
    path, alice, _, _ = tokens(tmp_path)
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}
    with bridged(settings={"tokens_file": path}, check=True) as live:
        headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "server/discover"}
        discovered = request(live.port, body=body, headers=headers, token=alice).json()["result"]
        with open_listen(live, WANTED, token=alice) as hers:
            ack = hers.next()
        child_capabilities = live.app.server.child_capabilities  # type: ignore[attr-defined]
    # The child's own declaration (the front adds nothing), and listen works whatever it declares.
    assert discovered["capabilities"] == child_capabilities
    assert "tools" in discovered["capabilities"]
    assert ack is not None and ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"] == WANTED
