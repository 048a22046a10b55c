"""MCP 2026-07-28 (the stateless revision) beside the handshake era, over real sockets.

Every rung of the request ladder has a case here that fails without it; the
era choice, server/discover, the result envelope (resultType, serverInfo,
caching hints), the removed methods, the 405s, step 7 per request, and the
stateless era over WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import TOKEN, Live, live_server, open_session, raw_exchange, request, rpc
from websockets.asyncio.client import connect
from ws_client import ws_url

from mcp_auth import Context, McpServer
from mcp_auth.auth.tokens import ANONYMOUS, Principal, add_token, revoke_token
from mcp_auth.mcp.context import Call, StatelessSession
from mcp_auth.mcp.jsonrpc import Request
from mcp_auth.mcp.modern import ModernRequest

VERSION = "2026-07-28"
HANDSHAKE_AND_MODERN = ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"]
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}
SERVER_INFO = "io.modelcontextprotocol/serverInfo"


def body(method: str, params: dict[str, Any] | None = None, request_id: Any = 11, meta: Any = ENVELOPE) -> Any:
    params = dict(params or {})
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def routing(method: str, name: str | None = None, version: str = VERSION) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": version, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def stateless(
    live: Live,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    headers: dict[str, Any] | None = None,
    meta: Any = ENVELOPE,
    token: str | None = TOKEN,
    request_id: Any = 11,
) -> Any:
    """One stateless POST with conformant routing headers unless `headers` overrides them."""
    if name is None and method in ("tools/call", "prompts/get"):
        name = (params or {}).get("name")
    if name is None and method == "resources/read":
        name = (params or {}).get("uri")
    merged = {**routing(method, name), **(headers or {})}
    return request(live.port, body=body(method, params, request_id, meta), headers=merged, token=token)


def _server() -> McpServer:
    server = McpServer("stateless-test", version="9.9")

    @server.tool()
    def echo(text: str) -> str:
        """Echoes."""
        return text

    @server.tool()
    def countdown(start: int, ctx: Context) -> str:
        """Progress, then a log line, then the answer."""
        for n in range(start):
            ctx.report_progress(n + 1, start)
        ctx.info("counted")
        ctx.debug("details")
        return "done"

    @server.tool()
    def elicits(ctx: Context) -> str:
        """Asks the user: statelessly, an input_required round (multi round-trip requests)."""
        return str(ctx.elicit("name?", {"type": "object", "properties": {"n": {"type": "string"}}}))

    @server.resource("notes://first")
    def first() -> str:
        return "the first note"

    @server.resource("notes://shared", cache_scope="public", ttl_ms=5000)
    def shared() -> str:
        return "the same for everyone"

    @server.prompt()
    def greet(name: str) -> str:
        return f"Hello {name}"

    return server


@pytest.fixture(scope="module")
def live() -> Any:
    with live_server(_server()) as running:
        yield running


# --- era choice and the version -------------------------------------------------------------


def test_server_discover_describes_the_server(live: Live) -> None:
    response = stateless(live, "server/discover")
    assert response.status == 200 and response.header("Mcp-Session-Id") is None
    message = response.json()
    assert message["id"] == 11
    result = message["result"]
    assert result["resultType"] == "complete"
    assert result["supportedVersions"] == HANDSHAKE_AND_MODERN
    assert set(result["capabilities"]) == {"tools", "resources", "prompts", "logging", "completions"}
    assert result["_meta"][SERVER_INFO] == {"name": "stateless-test", "version": "9.9"}
    # Nothing in discover depends on the token: publicly cacheable, for a while.
    assert result["cacheScope"] == "public" and isinstance(result["ttlMs"], int) and result["ttlMs"] > 0
    assert "serverInfo" not in result and "protocolVersion" not in result


def test_discover_needs_no_client_info(live: Live) -> None:
    meta = {k: v for k, v in ENVELOPE.items() if not k.endswith("clientInfo")}
    assert stateless(live, "server/discover", meta=meta).status == 200


def test_unsupported_version_names_supported_and_requested_with_the_id(live: Live) -> None:
    meta = {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "v999.0.0"}
    response = stateless(live, "server/discover", meta=meta, headers={"MCP-Protocol-Version": "v999.0.0"})
    assert response.status == 400
    message = response.json()
    assert message["id"] == 11
    assert message["error"]["code"] == -32022
    assert message["error"]["data"] == {"supported": HANDSHAKE_AND_MODERN, "requested": "v999.0.0"}


def test_a_handshake_era_request_never_gets_stateless_results(live: Live) -> None:
    session_id = open_session(live.port)
    result = rpc(live.port, session_id, "tools/list").json()["result"]
    assert set(result) == {"tools"}  # no resultType, no caching hints, no _meta
    discover = rpc(live.port, session_id, "server/discover", {"_meta": ENVELOPE}).json()
    assert discover["error"]["code"] == -32601


def test_both_eras_interleave_on_one_server(live: Live) -> None:
    session_id = open_session(live.port)
    for _ in range(2):
        legacy = rpc(live.port, session_id, "tools/call", {"name": "echo", "arguments": {"text": "old"}}).json()
        modern = stateless(live, "tools/call", {"name": "echo", "arguments": {"text": "new"}}).json()
        assert legacy["result"]["content"][0]["text"] == "old" and "resultType" not in legacy["result"]
        assert modern["result"]["content"][0]["text"] == "new" and modern["result"]["resultType"] == "complete"
        assert modern["result"]["_meta"][SERVER_INFO]["name"] == "stateless-test"


def test_a_stateless_request_ignores_a_session_id_and_never_gets_one(live: Live) -> None:
    response = stateless(live, "tools/list", headers={"Mcp-Session-Id": "made-up", "Last-Event-ID": "p1_3"})
    assert response.status == 200 and response.header("Mcp-Session-Id") is None
    assert response.json()["result"]["resultType"] == "complete"


# --- the ladder, rung by rung ---------------------------------------------------------------

_no_version = {k: v for k, v in ENVELOPE.items() if not k.endswith("protocolVersion")}
_no_capabilities = {k: v for k, v in ENVELOPE.items() if not k.endswith("clientCapabilities")}


@pytest.mark.parametrize(
    ("method", "params", "meta", "headers", "status", "code"),
    [
        pytest.param("server/discover", {}, None, {}, 400, -32602, id="no-meta"),
        pytest.param("server/discover", {}, _no_version, {}, 400, -32602, id="no-protocol-version"),
        pytest.param("server/discover", {}, _no_capabilities, {}, 400, -32602, id="no-client-capabilities"),
        pytest.param(
            "server/discover",
            {},
            {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": []},
            {},
            400,
            -32602,
            id="capabilities-not-an-object",
        ),
        pytest.param(
            "server/discover",
            {},
            {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "v999.0.0"},
            {},
            400,
            -32020,
            id="header-and-meta-versions-differ",
        ),
        pytest.param(
            "server/discover", {}, ENVELOPE, {"MCP-Protocol-Version": None}, 400, -32020, id="no-version-header"
        ),
        pytest.param("tools/list", {}, ENVELOPE, {"Mcp-Method": None}, 400, -32020, id="no-method-header"),
        pytest.param("tools/list", {}, ENVELOPE, {"Mcp-Method": "prompts/list"}, 400, -32020, id="method-differs"),
        pytest.param("tools/list", {}, ENVELOPE, {"Mcp-Method": "TOOLS/LIST"}, 400, -32020, id="method-case"),
        pytest.param(
            "tools/call",
            {"name": "echo", "arguments": {"text": "x"}},
            ENVELOPE,
            {"Mcp-Name": None},
            400,
            -32020,
            id="no-name-header",
        ),
        pytest.param(
            "tools/call",
            {"name": "echo", "arguments": {"text": "x"}},
            ENVELOPE,
            {"Mcp-Name": "whoami"},
            400,
            -32020,
            id="name-differs",
        ),
        pytest.param(
            "tools/call",
            {"name": "echo", "arguments": {"text": "x"}},
            ENVELOPE,
            {"Mcp-Name": "=?base64?ZWNobw?="},
            400,
            -32020,
            id="name-bad-base64",
        ),
        pytest.param(
            "resources/read",
            {"uri": "notes://first"},
            ENVELOPE,
            {"Mcp-Name": "notes://second"},
            400,
            -32020,
            id="uri-differs",
        ),
        pytest.param(
            "prompts/get",
            {"name": "greet", "arguments": {"name": "A"}},
            ENVELOPE,
            {"Mcp-Name": "other"},
            400,
            -32020,
            id="prompt-name-differs",
        ),
        pytest.param(
            "tools/list",
            {},
            {**ENVELOPE, "io.modelcontextprotocol/logLevel": "loud"},
            {},
            400,
            -32602,
            id="bad-log-level",
        ),
        pytest.param(
            "tools/call",
            {"name": "ech\u00f6", "arguments": {}},
            ENVELOPE,
            {"Mcp-Name": "ech\u00f6"},  # a raw byte past ASCII: only the base64 form may carry it
            400,
            -32020,
            id="name-raw-non-ascii",
        ),
        pytest.param("unknown/method", {}, ENVELOPE, {}, 404, -32601, id="unknown-method"),
    ],
)
def test_the_ladder_refuses_with_the_request_id(
    live: Live, method: str, params: dict[str, Any], meta: Any, headers: dict[str, Any], status: int, code: int
) -> None:
    response = stateless(live, method, params, meta=meta, headers=headers, request_id="req-7")
    assert response.status == status, response.body
    message = response.json()
    assert message["id"] == "req-7"
    assert message["error"]["code"] == code
    assert response.header("Content-Type") == "application/json"


def test_a_duplicated_routing_header_is_a_mismatch(live: Live) -> None:
    message = json.dumps(body("tools/list"))
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"MCP-Protocol-Version: {VERSION}\r\nMcp-Method: tools/list\r\nMcp-Method: tools/list\r\n"
        f"Content-Length: {len(message)}\r\nConnection: close\r\n\r\n"
    )
    response = raw_exchange(live.port, head.encode() + message.encode())
    assert response.status == 400 and response.json()["error"]["code"] == -32020


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"mcp-method": "tools/call", "mcp-name": "echo"}, id="lower-case-names"),
        pytest.param({"MCP-METHOD": "tools/call", "MCP-NAME": "echo"}, id="upper-case-names"),
        pytest.param({"Mcp-Method": " tools/call\t", "Mcp-Name": "  echo  "}, id="surrounding-whitespace"),
        pytest.param(
            {"Mcp-Method": "tools/call", "Mcp-Name": "=?base64?" + base64.b64encode(b"echo").decode() + "?="},
            id="base64-name",
        ),
    ],
)
def test_routing_headers_that_say_the_same_as_the_body_are_accepted(live: Live, headers: dict[str, str]) -> None:
    merged = {"Mcp-Method": None, "Mcp-Name": None, **headers}
    response = stateless(live, "tools/call", {"name": "echo", "arguments": {"text": "ok"}}, headers=merged)
    assert response.status == 200, response.body
    assert response.json()["result"]["content"][0]["text"] == "ok"


@pytest.mark.parametrize(
    "method", ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"]
)
def test_removed_methods_are_404_statelessly_only(live: Live, method: str) -> None:
    params = {"uri": "notes://first"} if "subscribe" in method else {}
    if method == "logging/setLevel":
        params = {"level": "info"}
    response = stateless(live, method, params, request_id=500)
    assert response.status == 404
    assert response.json()["id"] == 500 and response.json()["error"]["code"] == -32601
    # The handshake era keeps every one of them.
    if method != "initialize":
        session_id = open_session(live.port)
        assert "result" in rpc(live.port, session_id, method, params).json()


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
def test_get_and_delete_are_405_with_a_stateless_version(live: Live, verb: str) -> None:
    response = request(live.port, verb, headers={"MCP-Protocol-Version": VERSION, "Accept": "text/event-stream"})
    assert response.status == 405
    assert response.header("Allow") == "POST"
    # Without it they keep their handshake meaning (a session is required).
    assert request(live.port, verb, headers={"Accept": "text/event-stream"}).status == 400


@pytest.mark.parametrize(
    ("method", "status"),
    [
        pytest.param("notifications/cancelled", 202, id="cancelled-accepted"),
        pytest.param("notifications/initialized", 400, id="initialized-refused"),
        pytest.param("notifications/roots/list_changed", 400, id="roots-list-changed-refused"),
    ],
)
def test_stateless_notifications(live: Live, method: str, status: int) -> None:
    message = {"jsonrpc": "2.0", "method": method, "params": {"_meta": ENVELOPE, "requestId": 1}}
    response = request(live.port, body=message, headers=routing(method))
    assert response.status == status
    if status == 400:
        assert response.json()["error"]["code"] == -32601


def test_a_response_posted_by_a_stateless_client_is_refused(live: Live) -> None:
    message = {"jsonrpc": "2.0", "id": 3, "result": {}}
    response = request(live.port, body=message, headers=routing("tools/list"))
    assert response.status == 400 and response.json()["error"]["code"] == -32600


# --- results --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "key"),
    [
        pytest.param("tools/list", "tools", id="tools"),
        pytest.param("prompts/list", "prompts", id="prompts"),
        pytest.param("resources/list", "resources", id="resources"),
        pytest.param("resources/templates/list", "resourceTemplates", id="templates"),
    ],
)
def test_lists_carry_result_type_server_info_and_caching_hints(live: Live, method: str, key: str) -> None:
    result = stateless(live, method).json()["result"]
    assert isinstance(result[key], list)
    assert result["resultType"] == "complete"
    assert result["_meta"][SERVER_INFO]["version"] == "9.9"
    assert isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0
    # A single-token server: every principal sees the same lists.
    assert result["cacheScope"] == "public"


def test_a_read_is_private_and_a_missing_resource_is_invalid_params(live: Live) -> None:
    read = stateless(live, "resources/read", {"uri": "notes://first"}).json()["result"]
    assert read["contents"][0]["text"] == "the first note"
    assert read["cacheScope"] == "private" and read["ttlMs"] == 0 and read["resultType"] == "complete"
    missing = "test://nonexistent"
    response = stateless(live, "resources/read", {"uri": missing}, request_id=5)
    assert response.status == 400
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 5,
        "error": {"code": -32602, "message": f"Resource not found: {missing}", "data": {"uri": missing}},
    }
    # The handshake era keeps its own code for the same thing.
    session_id = open_session(live.port)
    assert rpc(live.port, session_id, "resources/read", {"uri": missing}).json()["error"]["code"] == -32002


def test_call_prompt_and_completion_results_carry_result_type_but_no_caching_hints(live: Live) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("tools/call", {"name": "echo", "arguments": {"text": "x"}}),
        ("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}}),
        ("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "n"}}),
    ]
    for method, params in calls:
        result = stateless(live, method, params).json()["result"]
        assert result["resultType"] == "complete" and SERVER_INFO in result["_meta"], method
        assert "ttlMs" not in result and "cacheScope" not in result, method


def test_unknown_tool_is_invalid_params_400(live: Live) -> None:
    response = stateless(live, "tools/call", {"name": "nope", "arguments": {}})
    assert response.status == 400 and response.json()["error"]["code"] == -32602


# --- per-request logging and progress ---------------------------------------------------------


def test_no_log_message_unless_the_request_asked(live: Live) -> None:
    response = stateless(live, "tools/call", {"name": "countdown", "arguments": {"start": 2}})
    # Nothing asked for: the answer is plain JSON, nothing before it.
    assert response.header("Content-Type") == "application/json"
    assert response.json()["result"]["content"][0]["text"] == "done"


def test_log_level_and_progress_token_stream_what_was_asked_for(live: Live) -> None:
    meta = {**ENVELOPE, "io.modelcontextprotocol/logLevel": "info", "progressToken": "p"}
    response = stateless(live, "tools/call", {"name": "countdown", "arguments": {"start": 2}}, meta=meta)
    assert response.status == 200 and response.header("Content-Type") == "text/event-stream"
    assert b"id:" not in response.body and b"retry:" not in response.body  # not resumable: no ids, no priming
    messages = response.sse_messages()
    assert [m.get("method") for m in messages[:-1]] == [
        "notifications/progress",
        "notifications/progress",
        "notifications/message",  # info, not debug: the request asked for info and above
    ]
    assert messages[-1]["id"] == 11 and messages[-1]["result"]["resultType"] == "complete"


def test_progress_alone_sends_no_log_message(live: Live) -> None:
    meta = {**ENVELOPE, "progressToken": 9}
    response = stateless(live, "tools/call", {"name": "countdown", "arguments": {"start": 1}}, meta=meta)
    methods = [m.get("method") for m in response.sse_messages()]
    assert methods == ["notifications/progress", None]


def test_an_ask_is_an_input_required_round_never_a_request_on_the_stream(live: Live) -> None:
    meta = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}
    response = stateless(live, "tools/call", {"name": "elicits", "arguments": {}}, meta=meta)
    messages = [response.json()] if response.header("Content-Type") == "application/json" else response.sse_messages()
    assert [m.get("method") for m in messages] == [None]  # the answer only: no server-to-client request
    result = messages[0]["result"]
    assert result["resultType"] == "input_required" and isinstance(result["requestState"], str)
    assert result["inputRequests"]["elicitation-1"]["method"] == "elicitation/create"


# --- step 7 per request, and caching with scoped tokens ---------------------------------------


@pytest.fixture
def tokens(tmp_path: Path) -> Any:
    path = tmp_path / "tokens.toml"
    scoped = add_token(path, "echo-only", ["echo"])
    full = add_token(path, "full", None)
    with live_server(_server(), tokens_file=str(path)) as running:
        yield running, path, scoped, full


def test_a_resource_may_declare_its_reads_public(live: Live) -> None:
    read = stateless(live, "resources/read", {"uri": "notes://shared"}).json()["result"]
    assert (read["cacheScope"], read["ttlMs"]) == ("public", 5000)


@pytest.mark.parametrize(
    "declaration",
    [
        pytest.param({"cache_scope": "shared"}, id="unknown-scope"),
        pytest.param({"ttl_ms": -1}, id="negative-ttl"),
        pytest.param({"ttl_ms": 1.5}, id="fractional-ttl"),
    ],
)
def test_a_bad_cache_declaration_is_refused_at_registration(declaration: dict[str, Any]) -> None:
    server = McpServer("bad")
    with pytest.raises(ValueError, match=r"cache_scope|ttl_ms"):
        server.resource("notes://x", **declaration)(lambda: "x")


def test_with_scoped_tokens_lists_are_never_public(tokens: Any) -> None:
    live, _, scoped, full = tokens
    for token in (scoped, full):
        for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
            result = stateless(live, method, token=token).json()["result"]
            assert result["cacheScope"] == "private", (method, token == scoped)
    # A read the resource declared public stays private too: a shared cache must not hand it on.
    read = stateless(live, "resources/read", {"uri": "notes://shared"}, token=full).json()["result"]
    assert read["cacheScope"] == "private" and read["contents"][0]["text"] == "the same for everyone"
    assert [t["name"] for t in stateless(live, "tools/list", token=scoped).json()["result"]["tools"]] == ["echo"]


def test_a_scoped_token_out_of_scope_is_refused_statelessly(tokens: Any) -> None:
    live, _, scoped, _ = tokens
    response = stateless(live, "tools/call", {"name": "countdown", "arguments": {"start": 1}}, token=scoped)
    assert response.status == 403
    assert "insufficient_scope" in (response.header("WWW-Authenticate") or "")
    assert response.json()["id"] == 11


def test_a_revoked_token_is_refused_at_its_next_stateless_request(tokens: Any) -> None:
    live, path, scoped, _ = tokens
    assert stateless(live, "tools/list", token=scoped).status == 200
    revoke_token(path, "echo-only")
    assert stateless(live, "tools/list", token=scoped).status == 401
    assert stateless(live, "server/discover", token=None).status == 401


# --- WebSocket --------------------------------------------------------------------------------


def test_stateless_messages_and_a_handshake_session_share_one_socket(live: Live) -> None:
    async def main() -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with connect(ws_url(live.url), subprotocols=["mcp"], additional_headers=headers) as ws:  # type: ignore[list-item]
            replies = []
            for message in [
                body("server/discover", request_id=1),
                body("tools/call", {"name": "echo", "arguments": {"text": "ws"}}, request_id=2),
                body("ping", request_id=3),
                body("tools/list", meta={**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "v9"}, request_id=4),
                body("tools/list", meta=_no_capabilities, request_id=5),
                {"jsonrpc": "2.0", "id": 6, "method": "tools/list"},  # handshake era: initialize first
                {
                    "jsonrpc": "2.0",
                    "id": 7,
                    "method": "initialize",
                    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "w"}},
                },
                {"jsonrpc": "2.0", "id": 8, "method": "tools/list"},
            ]:
                await ws.send(json.dumps(message))
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            return replies

    replies = asyncio.run(main())
    by_id = {reply["id"]: reply for reply in replies}
    assert by_id[1]["result"]["supportedVersions"] == HANDSHAKE_AND_MODERN
    assert by_id[2]["result"]["content"][0]["text"] == "ws" and by_id[2]["result"]["resultType"] == "complete"
    assert by_id[3]["error"]["code"] == -32601
    assert by_id[4]["error"]["code"] == -32022 and by_id[4]["error"]["data"]["requested"] == "v9"
    assert by_id[5]["error"]["code"] == -32602
    assert by_id[6]["error"]["code"] == -32600
    assert by_id[7]["result"]["protocolVersion"] == "2025-11-25"
    assert "resultType" not in by_id[8]["result"] and by_id[8]["result"]["tools"]


# --- streaming calls: one budget with the handshake era, and closing the stream cancels ---------


def _blocking_server(release: threading.Event, entered: threading.Semaphore, cancelled: threading.Event) -> McpServer:
    server = McpServer("blocking")

    @server.tool()
    def wait(ctx: Context) -> str:
        """Holds its streaming place until released (or cancelled)."""
        entered.release()
        ctx.report_progress(0, 1)
        while not release.is_set():
            if ctx.cancelled:
                cancelled.set()
                return "cancelled"
            ctx.report_progress(0, 1)  # a write: how the server learns the client went away
            release.wait(0.05)
        return "released"

    return server


def test_stateless_streaming_calls_share_the_stream_budget() -> None:
    release, entered, cancelled = threading.Event(), threading.Semaphore(0), threading.Event()
    meta = {**ENVELOPE, "progressToken": "p"}
    with live_server(_blocking_server(release, entered, cancelled), max_streams=1) as live:
        session_id = open_session(live.port)
        first: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: first.update(reply=rpc(live.port, session_id, "tools/call", {"name": "wait"}))
        )
        worker.start()
        assert entered.acquire(timeout=30)
        # The handshake call holds the only place: a stateless streaming call is refused, not queued.
        busy = stateless(live, "tools/call", {"name": "wait", "arguments": {}}, meta=meta)
        assert busy.status == 503 and busy.header("Retry-After")
        # A stateless call that streams nothing needs no place.
        assert stateless(live, "tools/list").status == 200
        release.set()
        worker.join(timeout=30)
        assert first["reply"].status == 200
        # The place came back, and the stateless era can take it.
        done = stateless(live, "tools/call", {"name": "wait", "arguments": {}}, meta=meta)
        assert done.sse_messages()[-1]["result"]["content"][0]["text"] == "released"


def test_closing_a_stateless_stream_cancels_its_call() -> None:
    release, entered, cancelled = threading.Event(), threading.Semaphore(0), threading.Event()
    message = json.dumps(body("tools/call", {"name": "wait", "arguments": {}}, meta={**ENVELOPE, "progressToken": 1}))
    with live_server(_blocking_server(release, entered, cancelled)) as live:
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"MCP-Protocol-Version: {VERSION}\r\nMcp-Method: tools/call\r\nMcp-Name: wait\r\n"
            f"Content-Length: {len(message)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(head.encode() + message.encode())
            assert entered.acquire(timeout=30)
            assert b"text/event-stream" in sock.recv(4096)
        try:
            assert cancelled.wait(timeout=30), "the handler never saw its call cancelled"
        finally:
            release.set()
        _wait_until(lambda: live.app.http.calls.in_use() == 0, "the call's place came back")


def _wait_until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Generous: ends as soon as the server has noticed; the bound only keeps a broken build from hanging."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds:g} s: {what}")
        time.sleep(0.02)


def test_a_scoped_principal_never_gets_a_public_list_whatever_the_transport_says() -> None:
    """Belt and braces: even a transport that claims every principal sees the same lists cannot
    make a scoped principal's filtered list publicly cacheable."""
    server = _server()
    scoped = Principal("scoped", ("echo",), "credential")
    modern = ModernRequest("2026-07-28", {})
    for principal, expected in [(scoped, "private"), (ANONYMOUS, "public")]:
        session = StatelessSession()
        call = Call(session, principal, session, "127.0.0.1", lambda p: True, modern, same_view_for_all=True)
        result = server.dispatcher.dispatch(Request(1, "tools/list", {}), call)
        assert result["cacheScope"] == expected, principal.name


def test_over_websocket_log_messages_reach_only_a_request_that_asked(live: Live) -> None:
    async def frames_until_answer(ws: Any, message: dict[str, Any]) -> list[dict[str, Any]]:
        await ws.send(json.dumps(message))
        frames: list[dict[str, Any]] = []
        while not frames or "id" not in frames[-1]:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        return frames

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with connect(ws_url(live.url), subprotocols=["mcp"], additional_headers=headers) as ws:  # type: ignore[list-item]
            arguments = {"name": "countdown", "arguments": {"start": 1}}
            silent = await frames_until_answer(ws, body("tools/call", arguments, request_id=1))
            asked = {**ENVELOPE, "io.modelcontextprotocol/logLevel": "debug"}
            chatty = await frames_until_answer(ws, body("tools/call", arguments, request_id=2, meta=asked))
            return silent, chatty

    silent, chatty = asyncio.run(main())
    assert [f.get("method") for f in silent] == [None] and silent[0]["result"]["resultType"] == "complete"
    assert [f.get("method") for f in chatty] == ["notifications/message", "notifications/message", None]
