"""How a dispatched request ends (`Outcome`), and what each outcome looks like on each wire.

First a table of dispatch situations and the outcome each one is (no server).
Then, on a real server with real sockets, each outcome's wire form over HTTP
(answered inline as JSON, and streamed as the final SSE event) and over
WebSocket, with the audit events it writes: step-7 denials and tool calls are
audited exactly once, whichever transport answered.

Revocation is the case that matters most: it ends the HTTP session on every
path (a call answered inline, a streamed call, a call's event stream and the
session's GET stream that notice it) and closes the socket with 4401, the
same way, and is audited once as a dispatch/revoked denial. The token source
here lets a test revoke a principal for step 7 while step 5 still accepts its
token: that is a revocation landing between the two checks, and it lets the
test show that the session is gone (404) and not merely refused (401).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import RawResponse, initialize_body, live_server, request
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from mcp_auth import Context, McpServer
from mcp_auth.app import McpAuthApp
from mcp_auth.auth.tokens import Principal, add_token, revoke_token
from mcp_auth.auth.tokens.sources import TokenSource
from mcp_auth.config import AuthSetup, Config
from mcp_auth.embedded import EmbeddedServer
from mcp_auth.mcp.context import Call
from mcp_auth.mcp.jsonrpc import (
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    Notification,
    Request,
)
from mcp_auth.mcp.outcome import (
    Answered,
    Crashed,
    Failed,
    Outcome,
    RequestCancelled,
    Revoked,
    ScopeRefused,
    ToolCallRecord,
)
from mcp_auth.mcp.protocol import LATEST_PROTOCOL_VERSION
from mcp_auth.sessions import Session
from mcp_auth.websocket import CLOSE_REVOKED

FULL_TOKEN = "outcome-full-token-0123456789abcdefgh"
SCOPED_TOKEN = "outcome-scoped-token-0123456789abcdef"
WRONG_TOKEN = "outcome-wrong-token-0123456789abcdefg"
FULL = Principal(name="full", tool_patterns=None, credential_id="f" * 64)
SCOPED = Principal(name="echo-only", tool_patterns=("echo",), credential_id="e" * 64)
# Generous bounds for a reply or a close that is due now: only a broken server reaches them.
REPLY_TIMEOUT_SECONDS = 30.0


class Revocable(TokenSource):
    """Two tokens; `revoked` decides step 7 only (`is_current`), step 5 still accepts the token."""

    def __init__(self) -> None:
        self.description = "test tokens"
        self._principals = {FULL_TOKEN.encode(): FULL, SCOPED_TOKEN.encode(): SCOPED}
        self.revoked: Callable[[Principal], bool] = lambda principal: False

    def authenticate(self, presented: bytes) -> Principal | None:
        for token, principal in self._principals.items():
            if hmac.compare_digest(token, presented):
                return principal
        return None

    def is_current(self, principal: Principal) -> bool:
        return not self.revoked(principal)


def _build_server(gate: threading.Event) -> McpServer:
    server = McpServer("outcomes")

    @server.tool()
    def echo(text: str) -> str:
        """Inline: no Context, so the answer is plain JSON."""
        return text

    @server.tool()
    def fails() -> str:
        raise ValueError("the tool's own failure")

    @server.tool()
    def exits() -> str:
        raise SystemExit(3)  # not an Exception: dispatch cannot make it a tool result

    @server.tool()
    def gives_up() -> str:
        raise RequestCancelled("the call was cancelled")

    @server.tool()
    def streamed(text: str, ctx: Context) -> str:
        """Streamed: a log message first, so the answer is the SSE stream's final event."""
        ctx.info("working")
        return text

    @server.tool()
    def streamed_exits(ctx: Context) -> str:
        ctx.info("working")
        raise SystemExit(3)

    @server.tool()
    def streamed_gives_up(ctx: Context) -> str:
        ctx.info("working")
        raise RequestCancelled("the call was cancelled")

    @server.tool()
    def waits(ctx: Context) -> str:
        """Sends one message, waits for the test, sends another: the stream loop sees both."""
        ctx.info("first")
        gate.wait(REPLY_TIMEOUT_SECONDS)
        ctx.info("second")
        return "done"

    return server


# --- the table: dispatch situations -> Outcome (no server) ------------------------------------


def _call(principal: Principal = FULL, current: bool = True) -> Call:
    return Call(
        session=Session(principal=principal, outbound=_Discard(), session_id="s-1"),
        principal=principal,
        channel=_Discard(),
        client_address="127.0.0.1",
        principal_is_current=lambda p: current,
    )


class _Discard:
    def send(self, message: dict[str, Any]) -> None:
        pass


def _initialized(server: McpServer, call: Call) -> Call:
    server.dispatcher.outcome(Request(0, "initialize", {"protocolVersion": LATEST_PROTOCOL_VERSION}), call)
    server.dispatcher.handle_notification(Notification("notifications/initialized"), call)
    return call


def _tool(request_id: int, name: str, arguments: dict[str, Any] | None = None) -> Request:
    return Request(request_id, "tools/call", {"name": name, "arguments": arguments or {}})


@dataclass(frozen=True)
class Situation:
    request: Request
    principal: Principal = FULL
    current: bool = True
    initialized: bool = True


SITUATIONS = [
    pytest.param(Situation(Request(1, "ping")), Answered(1, {}), id="ping"),
    pytest.param(
        Situation(_tool(2, "echo", {"text": "hi"})),
        Answered(2, {"content": [{"type": "text", "text": "hi"}]}, ToolCallRecord("echo", "ok")),
        id="tool-ok",
    ),
    pytest.param(
        Situation(Request(3, "no/such")), Failed(3, METHOD_NOT_FOUND, "Method not found: no/such"), id="unknown"
    ),
    pytest.param(
        Situation(Request(4, "tools/list"), initialized=False),
        Failed(4, INVALID_REQUEST, "Send initialize before other requests"),
        id="before-initialize",
    ),
    pytest.param(
        Situation(_tool(5, "nothing-here")), Failed(5, INVALID_PARAMS, "Unknown tool: nothing-here"), id="unknown-tool"
    ),
    pytest.param(
        Situation(_tool(6, "gives_up")),
        Failed(6, REQUEST_CANCELLED, "the call was cancelled", tool_call=ToolCallRecord("gives_up", "cancelled")),
        id="tool-cancelled",
    ),
    pytest.param(
        Situation(_tool(7, "echo_secret"), principal=SCOPED),
        ScopeRefused(7, "the token 'echo-only' is not allowed to call the tool 'echo_secret'"),
        id="tool-outside-scope",
    ),
    pytest.param(
        Situation(Request(8, "prompts/get", {"name": "p"}), principal=SCOPED),
        ScopeRefused(8, "the token 'echo-only' is not allowed to get the prompt 'p'"),
        id="prompt-outside-scope",
    ),
    pytest.param(Situation(_tool(9, "echo", {"text": "x"}), current=False), Revoked(9), id="revoked"),
    pytest.param(Situation(Request(10, "ping"), current=False), Revoked(10), id="revoked-even-for-ping"),
    pytest.param(Situation(_tool(11, "exits")), Crashed(11), id="crashed"),
]


@pytest.mark.parametrize(("situation", "expected"), SITUATIONS)
def test_dispatch_situation_is_one_outcome(
    situation: Situation, expected: Outcome, caplog: pytest.LogCaptureFixture
) -> None:
    server = _build_server(threading.Event())
    call = _call(situation.principal)
    if situation.initialized:
        _initialized(server, call)
    call.principal_is_current = lambda p: situation.current
    caplog.set_level(logging.DEBUG)
    assert server.dispatcher.outcome(situation.request, call) == expected
    # Dispatch audits nothing itself (the transport that answers does, once) and logs
    # only the unexpected, once, with its traceback.
    assert [r for r in caplog.records if r.name == "mcp_auth.audit"] == []
    unexpected = [r for r in caplog.records if r.getMessage().startswith("unexpected error")]
    assert len(unexpected) == (1 if isinstance(expected, Crashed) else 0)
    assert all(r.exc_info for r in unexpected)


@pytest.mark.parametrize(
    ("name", "record"),
    [
        pytest.param("fails", ToolCallRecord("fails", "error"), id="tool-raised"),
        pytest.param("echo", ToolCallRecord("echo", "invalid_arguments"), id="invalid-arguments"),
    ],
)
def test_a_tools_failure_is_an_answer_with_its_record(name: str, record: ToolCallRecord) -> None:
    server = _build_server(threading.Event())
    outcome = server.dispatcher.outcome(_tool(1, name, {}), _initialized(server, _call()))
    assert isinstance(outcome, Answered)
    assert outcome.result["isError"] is True
    assert outcome.tool_call == record


def test_notifications_change_nothing_for_a_revoked_principal() -> None:
    server = _build_server(threading.Event())
    call = _call()
    server.dispatcher.outcome(Request(0, "initialize", {"protocolVersion": LATEST_PROTOCOL_VERSION}), call)
    call.principal_is_current = lambda p: False
    server.dispatcher.handle_notification(Notification("notifications/initialized"), call)
    assert call.session.state.initialized is False


# --- a live server ---------------------------------------------------------------------------


@dataclass
class Served:
    app: McpAuthApp
    port: int
    tokens: Revocable
    gate: threading.Event

    @property
    def dispatcher_sessions(self) -> int:
        """Sessions of either transport still open (initialized and not closed)."""
        return len(self.app.server._sessions())


@contextmanager
def _serving() -> Iterator[Served]:
    gate = threading.Event()
    tokens = Revocable()
    app = McpAuthApp(_build_server(gate).dispatcher, Config(token=FULL_TOKEN), auth=AuthSetup(tokens))
    embedded = EmbeddedServer(app, "127.0.0.1", 0)
    thread = threading.Thread(target=embedded.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(app, embedded.port, tokens, gate)
    finally:
        gate.set()
        app.close()
        embedded.shutdown()
        embedded.close()
        thread.join(timeout=10)


@pytest.fixture
def audits(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The audit events written so far in this test."""
    # Another test's configure_logging may have stopped mcp_auth records from propagating.
    package_logger = logging.getLogger("mcp_auth")
    saved = (package_logger.propagate, package_logger.handlers[:], package_logger.level)
    package_logger.propagate, package_logger.handlers[:] = True, []
    package_logger.setLevel(logging.NOTSET)
    caplog.set_level(logging.INFO, logger="mcp_auth.audit")
    try:
        yield lambda: [r.audit for r in caplog.records if r.name == "mcp_auth.audit"]  # type: ignore[attr-defined]
    finally:
        package_logger.propagate, package_logger.handlers[:] = saved[0], saved[1]
        package_logger.setLevel(saved[2])


def _open_session(port: int, token: str) -> str:
    opened = request(port, body=initialize_body(), token=token)
    assert opened.status == 200, opened
    session_id = opened.header("Mcp-Session-Id")
    assert session_id
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert request(port, body=note, headers={"Mcp-Session-Id": session_id}, token=token).status == 202
    return session_id


def _tool_call(port: int, session_id: str, token: str, name: str, arguments: dict[str, Any]) -> RawResponse:
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    return request(port, body=body, headers={"Mcp-Session-Id": session_id}, token=token)


def _final(response: RawResponse) -> dict[str, Any]:
    """The answer: the JSON body, or the last event of an SSE body."""
    if response.header("Content-Type") == "text/event-stream":
        return response.sse_messages()[-1]
    return response.json()


def _denials(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(e["step"], e["reason"], e.get("token")) for e in events if e["event"] == "denied"]


def _tool_calls(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["tool"], e["outcome"]) for e in events if e["event"] == "tool_call"]


@dataclass(frozen=True)
class HttpCase:
    tool: str
    arguments: dict[str, Any]
    token: str
    content_type: str  # how the answer came: inline JSON, or the SSE stream's final event
    check: Callable[[dict[str, Any]], bool]
    tool_calls: list[tuple[str, str]]


def _text(expected: str) -> Callable[[dict[str, Any]], bool]:
    return lambda answer: answer["result"]["content"] == [{"type": "text", "text": expected}]


def _error(code: int, message: str) -> Callable[[dict[str, Any]], bool]:
    return lambda answer: (answer["id"], answer["error"]["code"], answer["error"]["message"]) == (7, code, message)


JSON, SSE = "application/json", "text/event-stream"
CANCELLED = _error(REQUEST_CANCELLED, "the call was cancelled")
INTERNAL = _error(INTERNAL_ERROR, "Internal error")
HTTP_CASES = [
    pytest.param(
        HttpCase("echo", {"text": "hi"}, FULL_TOKEN, JSON, _text("hi"), [("echo", "ok")]), id="answered-inline"
    ),
    pytest.param(
        HttpCase("streamed", {"text": "hi"}, FULL_TOKEN, SSE, _text("hi"), [("streamed", "ok")]), id="answered-streamed"
    ),
    pytest.param(
        HttpCase("fails", {}, FULL_TOKEN, JSON, lambda a: a["result"]["isError"] is True, [("fails", "error")]),
        id="tool-error-inline",
    ),
    pytest.param(
        HttpCase(
            "gives_up",
            {},
            FULL_TOKEN,
            JSON,
            _error(REQUEST_CANCELLED, "the call was cancelled"),
            [("gives_up", "cancelled")],
        ),
        id="failed-inline",
    ),
    pytest.param(
        HttpCase(
            "streamed_gives_up",
            {},
            FULL_TOKEN,
            SSE,
            _error(REQUEST_CANCELLED, "the call was cancelled"),
            [("streamed_gives_up", "cancelled")],
        ),
        id="failed-streamed",
    ),
    pytest.param(
        HttpCase("nothing-here", {}, FULL_TOKEN, JSON, _error(INVALID_PARAMS, "Unknown tool: nothing-here"), []),
        id="failed-no-tool",
    ),
    pytest.param(
        HttpCase("exits", {}, FULL_TOKEN, JSON, _error(INTERNAL_ERROR, "Internal error"), []), id="crashed-inline"
    ),
    pytest.param(
        HttpCase("streamed_exits", {}, FULL_TOKEN, SSE, _error(INTERNAL_ERROR, "Internal error"), []),
        id="crashed-streamed",
    ),
]


@pytest.mark.parametrize("case", HTTP_CASES)
def test_http_answers(case: HttpCase, audits: Callable[[], list[dict[str, Any]]]) -> None:
    with _serving() as served:
        session_id = _open_session(served.port, case.token)
        response = _tool_call(served.port, session_id, case.token, case.tool, case.arguments)
        assert response.status == 200, response
        assert response.header("Content-Type") == case.content_type
        assert case.check(_final(response)), _final(response)
        events = audits()
    assert _tool_calls(events) == case.tool_calls
    assert _denials(events) == []


@pytest.mark.parametrize("tool", [pytest.param("fails", id="inline"), pytest.param("streamed", id="streamed")])
def test_http_scope_refused_is_403_audited_once(tool: str, audits: Callable[[], list[dict[str, Any]]]) -> None:
    with _serving() as served:
        session_id = _open_session(served.port, SCOPED_TOKEN)
        response = _tool_call(served.port, session_id, SCOPED_TOKEN, tool, {"text": "x"})
        assert (response.status, response.header("WWW-Authenticate")) == (
            403,
            'Bearer realm="mcp-auth", error="insufficient_scope"',
        )
        body = response.json()
        assert (body["id"], body["error"]["code"]) == (7, FORBIDDEN)
        assert f"'{tool}'" in body["error"]["message"]
        # The session goes on: only the call was refused.
        assert _tool_call(served.port, session_id, SCOPED_TOKEN, "echo", {"text": "still"}).status == 200
        events = audits()
    assert _denials(events) == [("dispatch", "insufficient_scope", "echo-only")]
    assert _tool_calls(events) == [("echo", "ok")]


def _assert_session_ended(served: Served, session_id: str) -> None:
    """The session is gone, not just refused: with step 7 passing again, its id is unknown."""
    served.tokens.revoked = lambda principal: False
    again = _tool_call(served.port, session_id, FULL_TOKEN, "echo", {"text": "after"})
    assert again.status == 404, again
    assert again.json()["error"]["message"].startswith("Session not found")
    assert served.dispatcher_sessions == 0


@pytest.mark.parametrize("tool", [pytest.param("echo", id="inline"), pytest.param("streamed", id="streamed")])
def test_http_revoked_call_is_401_and_ends_the_session(tool: str, audits: Callable[[], list[dict[str, Any]]]) -> None:
    with _serving() as served:
        session_id = _open_session(served.port, FULL_TOKEN)
        never_valid = request(served.port, body=initialize_body(), token=WRONG_TOKEN)
        served.tokens.revoked = lambda principal: True
        before = len(audits())
        refused = _tool_call(served.port, session_id, FULL_TOKEN, tool, {"text": "x"})
        assert refused.status == 401
        # Byte for byte the 401 of a token that was never valid: nothing tells revoked from wrong.
        assert (refused.body, refused.header("WWW-Authenticate")) == (never_valid.body, 'Bearer realm="mcp-auth"')
        events = audits()[before:]
        _assert_session_ended(served, session_id)
    assert _denials(events) == [("dispatch", "revoked", "full")]
    assert _tool_calls(events) == []


def test_http_revoked_initialize_leaves_no_session(audits: Callable[[], list[dict[str, Any]]]) -> None:
    with _serving() as served:
        served.tokens.revoked = lambda principal: True
        refused = request(served.port, body=initialize_body(), token=FULL_TOKEN)
        assert refused.status == 401 and refused.header("Mcp-Session-Id") is None
        assert len(served.app.sessions) == 0
    assert _denials(audits()) == [("dispatch", "revoked", "full")]


class _Stream:
    """An HTTP request whose response (an SSE stream) is read as it arrives."""

    def __init__(self, port: int, head: str, body: bytes = b"") -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT_SECONDS)
        self._sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        self.received = b""

    def read_until(self, marker: bytes) -> None:
        while marker not in self.received:
            chunk = self._sock.recv(65536)
            assert chunk, f"the stream ended before {marker!r}: {self.received!r}"
            self.received += chunk

    def read_to_end(self) -> None:
        """Until the server closes, or ends the chunked body (the connection may stay open)."""
        while not self.received.endswith(b"\r\n0\r\n\r\n"):
            chunk = self._sock.recv(65536)
            if not chunk:
                return
            self.received += chunk

    def close(self) -> None:
        self._sock.close()


def _head(method: str, session_id: str, extra: dict[str, str]) -> str:
    headers = {"Host": "127.0.0.1", "Authorization": f"Bearer {FULL_TOKEN}", "Mcp-Session-Id": session_id, **extra}
    return f"{method} /mcp HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())


def test_http_revocation_noticed_by_the_get_stream_ends_the_session(
    audits: Callable[[], list[dict[str, Any]]],
) -> None:
    with _serving() as served:
        session_id = _open_session(served.port, FULL_TOKEN)
        stream = _Stream(served.port, _head("GET", session_id, {"Accept": "text/event-stream"}))
        try:
            stream.read_until(b"retry:")  # the priming event: the stream is attached and reading
            served.tokens.revoked = lambda principal: True
            before = len(audits())
            served.app.server.notify_list_changed("tools")  # wakes the stream loop, which asks step 7
            stream.read_to_end()
        finally:
            stream.close()
        assert b"list_changed" not in stream.received, "an event reached a revoked principal"
        events = audits()[before:]
        _assert_session_ended(served, session_id)
    assert _denials(events) == [("dispatch", "revoked", "full")]


def test_http_revocation_during_a_streamed_call_ends_the_session(audits: Callable[[], list[dict[str, Any]]]) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "waits", "arguments": {}}}
    ).encode()
    extra = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Content-Length": str(len(body)),
    }
    with _serving() as served:
        session_id = _open_session(served.port, FULL_TOKEN)
        stream = _Stream(served.port, _head("POST", session_id, extra), body)
        try:
            stream.read_until(b'"first"')  # the call is running and its stream is being read
            served.tokens.revoked = lambda principal: True
            before = len(audits())
            served.gate.set()  # the tool sends "second": the stream loop asks step 7 before sending it
            stream.read_to_end()
        finally:
            stream.close()
        assert b'"second"' not in stream.received and b'"done"' not in stream.received
        events = audits()[before:]
        _assert_session_ended(served, session_id)
    assert _denials(events) == [("dispatch", "revoked", "full")]


# --- WebSocket ----------------------------------------------------------------------------------


def _ws_call(request_id: int, name: str, arguments: dict[str, Any] | None = None) -> str:
    params = {"name": name, "arguments": arguments or {}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})


async def _socket(served: Served, token: str) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"}
    ws = await connect(
        f"ws://127.0.0.1:{served.port}/mcp", subprotocols=[Subprotocol("mcp")], additional_headers=headers
    )
    await ws.send(json.dumps(initialize_body()))
    assert "result" in json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_SECONDS))
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return ws


async def _exchange(ws: ClientConnection, frame: str) -> dict[str, Any]:
    await ws.send(frame)
    return json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_SECONDS))


WS_CASES = [
    pytest.param(FULL_TOKEN, "echo", {"text": "hi"}, _text("hi"), [("echo", "ok")], [], id="answered"),
    pytest.param(FULL_TOKEN, "streamed", {"text": "hi"}, _text("hi"), [("streamed", "ok")], [], id="answered-ctx"),
    pytest.param(
        FULL_TOKEN,
        "gives_up",
        {},
        _error(REQUEST_CANCELLED, "the call was cancelled"),
        [("gives_up", "cancelled")],
        [],
        id="failed",
    ),
    pytest.param(FULL_TOKEN, "exits", {}, _error(INTERNAL_ERROR, "Internal error"), [], [], id="crashed"),
    pytest.param(
        SCOPED_TOKEN,
        "fails",
        {},
        _error(FORBIDDEN, "the token 'echo-only' is not allowed to call the tool 'fails'"),
        [],
        [("dispatch", "insufficient_scope", "echo-only")],
        id="scope-refused",
    ),
]


@pytest.mark.parametrize(("token", "tool", "arguments", "check", "tool_calls", "denials"), WS_CASES)
def test_websocket_answers(
    token: str,
    tool: str,
    arguments: dict[str, Any],
    check: Callable[[dict[str, Any]], bool],
    tool_calls: list[tuple[str, str]],
    denials: list[tuple[str, str, str]],
    audits: Callable[[], list[dict[str, Any]]],
) -> None:
    async def main(served: Served) -> dict[str, Any]:
        ws = await _socket(served, token)
        answer = await _exchange(ws, _ws_call(7, tool, arguments))
        while "method" in answer:  # a log message before the answer
            answer = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_SECONDS))
        # The socket goes on after every one of these.
        assert "result" in await _exchange(ws, json.dumps({"jsonrpc": "2.0", "id": 8, "method": "ping"}))
        await ws.close()
        return answer

    with _serving() as served:
        answer = asyncio.run(main(served))
        events = audits()
    assert check(answer), answer
    assert _tool_calls(events) == tool_calls
    assert _denials(events) == denials


def _in_a_request_thread(principal: Principal) -> bool:
    # Revoked only where dispatch asks (a socket's request thread), not where the socket loop
    # asks: so it is dispatch's Revoked outcome that closes the socket.
    return threading.current_thread().name == "mcp-ws-call"


@pytest.mark.parametrize(
    ("revoke", "send"),
    [
        pytest.param(lambda p: True, True, id="at-the-next-message"),
        pytest.param(lambda p: True, False, id="between-messages"),
        pytest.param(_in_a_request_thread, True, id="in-dispatch"),
    ],
)
def test_websocket_revocation_closes_4401_audited_once(
    revoke: Callable[[Principal], bool], send: bool, audits: Callable[[], list[dict[str, Any]]]
) -> None:
    async def main(served: Served) -> tuple[int | None, list[str | bytes]]:
        ws = await _socket(served, FULL_TOKEN)
        other = await _socket(served, SCOPED_TOKEN)
        assert "result" in await _exchange(ws, _ws_call(2, "echo", {"text": "before"}))
        served.tokens.revoked = lambda p: p.name == "full" and revoke(p)
        frames: list[str | bytes] = []
        with pytest.raises(ConnectionClosed):
            if send:
                # Two calls at once: however many paths notice, one close and one audit event.
                await ws.send(_ws_call(3, "echo", {"text": "after"}))
                await ws.send(_ws_call(4, "echo", {"text": "after"}))
            while True:
                frames.append(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_SECONDS))
        still = await _exchange(other, _ws_call(5, "echo", {"text": "other token"}))
        assert still["result"]["content"][0]["text"] == "other token"
        await other.close()
        return ws.close_code, frames

    with _serving() as served:
        code, frames = asyncio.run(main(served))
        events = audits()
    assert code == CLOSE_REVOKED
    assert frames == [], "a revoked principal got an answer"
    assert _denials(events) == [("dispatch", "revoked", "full")]
    assert ("echo", "ok") in _tool_calls(events) and len(_tool_calls(events)) == 2  # "before", and the other token


def test_a_token_revoked_in_its_file_ends_its_open_get_stream_and_session(
    tmp_path: Path, audits: Callable[[], list[dict[str, Any]]]
) -> None:
    # The real thing, end to end: `token revoke` on the tokens file while a GET stream is open.
    path = tmp_path / "tokens.json"
    full = add_token(path, "full", None)
    with live_server(tokens_file=str(path)) as live:
        session_id = _open_session(live.port, full)
        head = _head("GET", session_id, {"Accept": "text/event-stream"}).replace(FULL_TOKEN, full)
        stream = _Stream(live.port, head)
        try:
            stream.read_until(b"retry:")
            revoke_token(path, "full")
            before = len(audits())
            live.app.server.notify_list_changed("tools")
            stream.read_to_end()
        finally:
            stream.close()
        assert b"list_changed" not in stream.received
        assert len(live.app.sessions) == 0
        revoked_events = audits()[before:]
        # The revoked token itself is refused at step 5 from now on, before any session lookup.
        again = _tool_call(live.port, session_id, full, "echo", {"text": "x"})
        assert again.status == 401
    assert _denials(revoked_events) == [("dispatch", "revoked", "full")]
    assert _denials(audits()[before:])[1:] == [("bearer_token", "invalid_token", None)]
