"""Streamable HTTP transport rules over real sockets: every status code of step 6, and the happy paths."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest
from support import ACCEPT_BOTH, TOKEN, Live, initialize_body, live_server, open_session, raw_exchange, request, rpc

from mcp_auth import Context, McpServer
from mcp_auth.mcp.jsonrpc import INVALID_REQUEST, PARSE_ERROR, UNSUPPORTED_PROTOCOL_VERSION
from mcp_auth.mcp.protocol import protocol_at_least

LIST = {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}


def test_initialize_issues_a_visible_ascii_session_id(live: Live) -> None:
    response = request(live.port, body=initialize_body())
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    session_id = response.header("Mcp-Session-Id")
    assert session_id is not None and re.fullmatch(r"[\x21-\x7e]{32,}", session_id)
    result = response.json()["result"]
    assert result["protocolVersion"] == "2025-11-25"
    assert result["serverInfo"]["name"] == "mcp-auth-diagnostics"


@pytest.mark.parametrize(
    "version",
    [
        pytest.param("2025-11-25", id="2025-11-25"),
        pytest.param("2025-06-18", id="2025-06-18"),
        pytest.param("2025-03-26", id="2025-03-26"),
        pytest.param("2024-01-01", id="unknown->newest"),
    ],
)
def test_version_negotiation(live: Live, version: str) -> None:
    result = request(live.port, body=initialize_body(version=version)).json()["result"]
    expected = version if version != "2024-01-01" else "2025-11-25"
    assert result["protocolVersion"] == expected


def test_list_and_call_in_a_session(live: Live) -> None:
    session_id = open_session(live.port)
    tools = rpc(live.port, session_id, "tools/list").json()["result"]["tools"]
    assert sorted(t["name"] for t in tools) == ["echo", "whoami"]
    reply = rpc(live.port, session_id, "tools/call", {"name": "echo", "arguments": {"text": "héllo \ud83d\ude00"}})
    assert reply.status == 200
    assert reply.json()["result"]["content"] == [{"type": "text", "text": "héllo \U0001f600"}]


@pytest.mark.parametrize(
    ("headers", "status", "fragment"),
    [
        pytest.param({"Content-Type": "text/plain"}, 415, "Content-Type", id="content-type-text"),
        pytest.param({"Content-Type": None}, 415, "Content-Type", id="content-type-missing"),
        pytest.param({"Content-Type": "application/jsonx"}, 415, "Content-Type", id="content-type-lookalike"),
        pytest.param({"Accept": "application/json"}, 406, "Accept", id="accept-json-only"),
        pytest.param({"Accept": "text/event-stream"}, 406, "Accept", id="accept-sse-only"),
        pytest.param({"Accept": None}, 406, "Accept", id="accept-missing"),
        pytest.param({"Accept": "application/json, text/event-stream;q=0"}, 406, "Accept", id="accept-q0"),
        pytest.param({"Accept": "application/json;q=0.000, text/event-stream"}, 406, "Accept", id="accept-q0-000"),
        pytest.param({"Accept": "application/json, text/event-stream;Q=0"}, 406, "Accept", id="accept-q0-upper"),
        pytest.param({"Content-Type": "text/plain, application/json"}, 415, "Content-Type", id="content-type-list"),
        pytest.param({"Content-Type": "application/json-seq"}, 415, "Content-Type", id="content-type-json-seq"),
        pytest.param({"MCP-Protocol-Version": "1999-01-01"}, 400, "Unsupported MCP-Protocol-Version", id="bad-version"),
    ],
)
def test_post_header_rules(live: Live, headers: dict[str, str | None], status: int, fragment: str) -> None:
    response = request(live.port, body=initialize_body(), headers=headers)  # type: ignore[arg-type]
    assert response.status == status
    assert fragment in response.json()["error"]["message"]
    assert response.header("Mcp-Session-Id") is None


@pytest.mark.parametrize(
    "accept",
    [
        pytest.param("*/*", id="wildcard"),
        pytest.param("application/*, text/*", id="major-wildcards"),
        pytest.param("text/event-stream; q=0.5, APPLICATION/JSON", id="params-and-case"),
        pytest.param("application/json;charset=utf-8, text/event-stream;level=1", id="media-params-ignored"),
        pytest.param("application/json;q=0.001, text/event-stream;q=1.0", id="small-weight-is-acceptable"),
        pytest.param("*/*;q=0, application/json, text/event-stream", id="listed-types-beat-refused-wildcard"),
    ],
)
def test_accept_matches_by_media_type(live: Live, accept: str) -> None:
    assert request(live.port, body=initialize_body(), headers={"Accept": accept}).status == 200


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("Application/JSON; charset=utf-8", id="case-and-charset"),
        pytest.param(" application/json ", id="spaces"),
    ],
)
def test_content_type_matches_by_media_type(live: Live, content_type: str) -> None:
    assert request(live.port, body=initialize_body(), headers={"Content-Type": content_type}).status == 200


@pytest.mark.parametrize(
    ("version", "revision", "expected"),
    [
        pytest.param("2025-11-25", "2025-11-25", True, id="same"),
        pytest.param("2025-11-25", "2025-03-26", True, id="later"),
        pytest.param("2025-06-18", "2025-11-25", False, id="earlier"),
        pytest.param("2025-03-26", "2025-06-18", False, id="oldest"),
        pytest.param(None, "2025-03-26", False, id="before-initialize"),
        pytest.param("2026-01-01", "2025-11-25", False, id="unknown-sorts-later-as-a-string"),
        pytest.param("DRAFT-2026-v1", "2025-03-26", False, id="unknown-spelling"),
    ],
)
def test_protocol_revisions_compare_by_their_order(version: str | None, revision: str, expected: bool) -> None:
    assert protocol_at_least(version, revision) is expected


def test_asking_about_an_unknown_revision_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown MCP revision"):
        protocol_at_least("2025-11-25", "2026-01-01")


def test_unsupported_protocol_version_carries_the_supported_list(live: Live) -> None:
    session_id = open_session(live.port)
    response = rpc(live.port, session_id, "tools/list", headers={"MCP-Protocol-Version": "2099-01-01"})
    assert response.status == 400
    assert response.json()["id"] == 7  # the body is read first: the error answers this request
    error = response.json()["error"]
    assert error["code"] == UNSUPPORTED_PROTOCOL_VERSION
    assert error["data"] == {
        "supported": ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"],
        "requested": "2099-01-01",
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"{not json", PARSE_ERROR, id="bad-json"),
        pytest.param(b"", PARSE_ERROR, id="empty"),
        pytest.param(b"\xff\xfe", PARSE_ERROR, id="not-utf8"),
        pytest.param(b"[" * 100 + b"]" * 100, PARSE_ERROR, id="deep-array-too-deep"),
        pytest.param(b'{"a":' * 100 + b"1" + b"}" * 100, PARSE_ERROR, id="too-deep"),
        pytest.param(json.dumps([LIST, LIST]).encode(), INVALID_REQUEST, id="batch"),
        pytest.param(b'"hello"', INVALID_REQUEST, id="not-an-object"),
        pytest.param(b'{"jsonrpc":"1.0","id":1,"method":"ping"}', INVALID_REQUEST, id="wrong-jsonrpc"),
        pytest.param(b'{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST, id="bool-id"),
    ],
)
def test_bad_bodies_are_400_with_a_jsonrpc_error(live: Live, body: bytes, code: int) -> None:
    response = request(live.port, body=body)
    assert response.status == 400
    assert response.json()["error"]["code"] == code


def test_body_over_the_limit_is_413_without_reading_it(live: Live) -> None:
    head = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: {ACCEPT_BOTH}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {5 * 1024 * 1024}\r\n\r\n"
    )
    response = raw_exchange(live.port, head.encode())
    assert response.status == 413
    assert "4194304" in response.json()["error"]["message"]


def test_body_just_under_the_limit_is_read() -> None:
    with live_server(max_body_bytes=4096) as live:
        padding = "x" * (4096 - 200)
        body = json.dumps({**initialize_body(), "params": {**initialize_body()["params"], "pad": padding}}).encode()
        assert len(body) <= 4096
        assert request(live.port, body=body).status == 200
        assert request(live.port, body=body + b" " * 300).status == 413


@pytest.mark.parametrize(
    "length",
    [
        pytest.param("abc", id="letters"),
        pytest.param("-5", id="negative"),
        pytest.param("9" * 40, id="huge"),
        # str.isdigit is true for superscripts that int() refuses; the header is read as latin-1.
        pytest.param("\xb2", id="superscript-digit"),
        pytest.param("1\xb9", id="trailing-superscript"),
    ],
)
def test_malformed_content_length_is_400_or_413(live: Live, length: str) -> None:
    head = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: {ACCEPT_BOTH}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n"
    )
    assert raw_exchange(live.port, head.encode("latin-1")).status in (400, 413)


def test_chunked_body_is_accepted(live: Live) -> None:
    body = json.dumps(initialize_body()).encode()
    head = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: {ACCEPT_BOTH}\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    response = raw_exchange(live.port, head.encode() + chunked)
    assert response.status == 200
    assert response.header("Mcp-Session-Id")


def test_session_rules(live: Live) -> None:
    missing = request(live.port, body=LIST)
    assert missing.status == 400
    assert "Mcp-Session-Id" in missing.json()["error"]["message"]
    unknown = request(live.port, body=LIST, headers={"Mcp-Session-Id": "no-such-session"})
    assert unknown.status == 404
    session_id = open_session(live.port)
    assert rpc(live.port, session_id, "tools/list").status == 200
    deleted = request(live.port, "DELETE", headers={"Mcp-Session-Id": session_id})
    assert deleted.status == 204
    assert rpc(live.port, session_id, "tools/list").status == 404
    assert request(live.port, "DELETE", headers={"Mcp-Session-Id": session_id}).status == 404


def test_notifications_and_responses_get_202_without_body(live: Live) -> None:
    session_id = open_session(live.port)
    for body in (
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}},
        {"jsonrpc": "2.0", "id": 3, "result": {}},
        {"jsonrpc": "2.0", "id": 4, "error": {"code": -1, "message": "no"}},
    ):
        response = request(live.port, body=body, headers={"Mcp-Session-Id": session_id})
        assert (response.status, response.body) == (202, b"")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "HEAD"])
def test_other_methods_are_405_with_allow(live: Live, method: str) -> None:
    response = request(live.port, method)
    assert response.status == 405
    assert response.header("Allow") == "GET, POST, DELETE"


def test_unknown_method_is_a_jsonrpc_error_with_the_id(live: Live) -> None:
    session_id = open_session(live.port)
    reply = rpc(live.port, session_id, "no/such/method", request_id=42).json()
    assert reply["id"] == 42 and reply["error"]["code"] == -32601


def _open_get_stream(port: int, session_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n\r\n"
        ).encode()
    )
    sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    return sock


def _read_to_end(sock: socket.socket) -> bytes:
    """The rest of a chunked event stream: to its last chunk (the server may keep the connection), or the close."""
    rest = b""
    while not rest.endswith(b"0\r\n\r\n") and (chunk := sock.recv(4096)):
        rest += chunk
    return rest


def test_get_stream_rules(live: Live) -> None:
    session_id = open_session(live.port)
    assert request(live.port, "GET", headers={"Mcp-Session-Id": session_id, "Accept": "application/json"}).status == 406
    assert request(live.port, "GET", headers={"Accept": "text/event-stream"}).status == 400
    first = _open_get_stream(live.port, session_id)
    with first:
        # A second GET stream takes over (a reconnecting client must not be locked out by its
        # own dead connection); the first one ends.
        second = _open_get_stream(live.port, session_id)
        with second:
            assert _read_to_end(first).endswith(b"0\r\n\r\n")
            # Ending the session ends the stream.
            assert request(live.port, "DELETE", headers={"Mcp-Session-Id": session_id}).status == 204
            assert _read_to_end(second).endswith(b"0\r\n\r\n")


def _progress_server() -> McpServer:
    server = McpServer("progress")

    @server.tool()
    def slow(steps: int, ctx: Context) -> str:
        """Reports progress."""
        for step in range(steps):
            ctx.report_progress(step + 1, steps, f"step {step + 1}")
        ctx.info("done")
        return "finished"

    return server


def test_a_handler_that_notifies_gets_an_sse_response() -> None:
    with live_server(_progress_server()) as live:
        session_id = open_session(live.port)
        response = rpc(
            live.port,
            session_id,
            "tools/call",
            {"name": "slow", "arguments": {"steps": 3}, "_meta": {"progressToken": "p1"}},
            request_id=9,
        )
        assert response.status == 200
        assert response.header("Content-Type") == "text/event-stream"
        messages = response.sse_messages()
        assert [m.get("method") for m in messages] == [
            "notifications/progress",
            "notifications/progress",
            "notifications/progress",
            "notifications/message",
            None,
        ]
        assert [m["params"]["progress"] for m in messages[:3]] == [1, 2, 3]
        assert messages[-1] == {
            "jsonrpc": "2.0",
            "id": 9,
            "result": {"content": [{"type": "text", "text": "finished"}]},
        }


def test_without_notifications_the_answer_is_plain_json() -> None:
    with live_server(_progress_server()) as live:
        session_id = open_session(live.port)
        rpc(live.port, session_id, "logging/setLevel", {"level": "error"})
        response = rpc(live.port, session_id, "tools/call", {"name": "slow", "arguments": {"steps": 0}})
        assert response.header("Content-Type") == "application/json"
        assert response.json()["result"]["content"][0]["text"] == "finished"


def test_healthz_and_unknown_paths(live: Live) -> None:
    health = request(live.port, "GET", path="/healthz", token=None)
    assert (health.status, health.json()) == (200, {"status": "ok"})
    assert request(live.port, "GET", path="/elsewhere").status == 404


def test_concurrent_sessions_do_not_interfere(live: Live) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        try:
            session_id = open_session(live.port)
            reply = rpc(live.port, session_id, "tools/call", {"name": "echo", "arguments": {"text": f"w{n}"}})
            if reply.json()["result"]["content"][0]["text"] != f"w{n}":
                errors.append(f"worker {n}: {reply.body!r}")
        except Exception as exc:  # collected and asserted below
            errors.append(f"worker {n}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


GARBAGE = [
    pytest.param(b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", id="binary-method"),
    pytest.param(b"GET /mcp\x00 HTTP/1.1 extra\r\n\r\n", id="bad-request-line"),
    pytest.param(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", id="100kb-header"),
    pytest.param(b"GET " + b"/" * 70_000 + b" HTTP/1.1\r\n\r\n", id="70kb-path"),
    pytest.param(b"POST /mcp HTTP/1.1\r\nHost: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}", id="non-ascii-host"),
    pytest.param(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n", id="two-hosts"),
    pytest.param(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \x00\xff\r\n\r\n", id="nul-token"),
    pytest.param(b"GET /mcp?x=%ff%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="odd-query"),
    pytest.param(b"BREW /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="unknown-method"),
    pytest.param(b"GET /mcp HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", id="bad-version"),
]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_never_gets_a_5xx(live: Live, data: bytes) -> None:
    response = raw_exchange(live.port, data)
    if response.status == 0:  # an HTTP/0.9-style refusal of an unparsable request line
        assert json.loads(response.body)["error"]["data"]["reason"] == "bad_request"
    else:
        # 505 answers a well-formed HTTP version this server does not speak: the client's doing.
        assert 400 <= response.status < 500 or response.status == 505, response
    assert b"Traceback" not in response.body
    # And the server still serves.
    assert request(live.port, body=initialize_body()).status == 200
