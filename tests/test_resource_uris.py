"""Resource URIs against the real server over real sockets: matching cost, walking out of scopes, forged log lines.

Each test here failed on the code before the fix it names (issue 9, findings 1, 5 and 7).
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import TOKEN, RawResponse, live_server, open_session, raw_exchange

from mcp_auth import Context, McpServer
from mcp_auth.audit import TextFormatter
from mcp_auth.auth.tokens import add_token
from mcp_auth.mcp.jsonrpc import INVALID_PARAMS
from mcp_auth.mcp.protocol import MAX_URI_LENGTH

# Finding 1 is about time, so its test has a time bound: generous (matching the
# URI below took 46 s before the fix; it now takes well under a millisecond).
PROMPT_SECONDS = 5.0


@dataclass(frozen=True)
class Tokens:
    path: Path
    full: str
    tools_only: str
    public_one_level: str
    public_tree: str


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    path = tmp_path / "tokens.json"
    return Tokens(
        path,
        full=add_token(path, "full", None),
        tools_only=add_token(path, "tools-only", ["echo"]),
        public_one_level=add_token(path, "public-one-level", ["resource:files://public/*"]),
        public_tree=add_token(path, "public-tree", ["resource:files://public/**"]),
    )


def _post(port: int, session_id: str, token: str, body: dict[str, Any], timeout: float = 30.0) -> RawResponse:
    data = json.dumps(body).encode()
    head = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\n"
        f"Mcp-Session-Id: {session_id}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return raw_exchange(port, head.encode() + data, timeout=timeout)


def _read(port: int, session_id: str, token: str, uri: str, *, method: str = "resources/read") -> RawResponse:
    return _post(port, session_id, token, {"jsonrpc": "2.0", "id": 9, "method": method, "params": {"uri": uri}})


def _error_code(response: RawResponse) -> int | None:
    if response.status != 200:
        return None
    messages = response.sse_messages() if response.body.startswith(b"id:") else [response.json()]
    error = messages[-1].get("error")
    return error["code"] if error else None


# --- finding 1: one request froze the process --------------------------------------------------


def _date_server() -> McpServer:
    server = McpServer("dates")

    @server.resource("date://{year}-{month}-{day}")
    def date(year: str, month: str, day: str) -> str:
        return f"{len(year)} {len(month)} {len(day)}"

    @server.resource("dated://{year}-{month}-{day}")
    def dated(year: str, month: str, day: str, ctx: Context) -> str:  # a handler that may stream
        return f"{len(year)} {len(month)} {len(day)}"

    return server


def _dashes(scheme: str, tail: str) -> str:
    """A URI of MAX_URI_LENGTH characters: the scheme, dashes, then `tail`."""
    head = f"{scheme}://"
    return head + "-" * (MAX_URI_LENGTH - len(head) - len(tail)) + tail


@pytest.mark.parametrize(
    ("scheme", "tail", "who", "expected"),
    [
        # A final '/' that no {var} may hold: the regex tried every split of the dashes (cubic), 10 s here.
        pytest.param("date", "/", "tools_only", 403, id="no-match-out-of-scope-token"),
        pytest.param("date", "/", "full", -32002, id="no-match-in-scope-token"),
        pytest.param("dated", "/", "tools_only", 403, id="no-match-out-of-scope-token-streaming-handler"),
        pytest.param("dated", "/", "full", -32002, id="no-match-in-scope-token-streaming-handler"),
        # Dashes only: one match, year and month one dash each (the first-occurrence rule).
        pytest.param("date", "", "full", "1 1 2037", id="match-in-scope-token"),
        pytest.param("dated", "", "full", "1 1 2036", id="match-in-scope-token-streaming-handler"),
    ],
)
def test_a_uri_of_dashes_is_answered_promptly_and_healthz_stays_up(
    tokens: Tokens, scheme: str, tail: str, who: str, expected: int | str
) -> None:
    token = getattr(tokens, who)
    uri = _dashes(scheme, tail)
    assert len(uri) == MAX_URI_LENGTH
    with live_server(_date_server(), tokens_file=str(tokens.path)) as live:
        session_id = open_session(live.port, token=token)
        outcome: dict[str, Any] = {}

        def hostile() -> None:
            started = time.monotonic()
            try:
                outcome["response"] = _read(live.port, session_id, token, uri)
            finally:
                outcome["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=hostile, daemon=True)
        thread.start()
        health_seconds: list[float] = []
        # /healthz is asked again and again while the hostile request is in flight.
        while (thread.is_alive() or not health_seconds) and sum(health_seconds) < PROMPT_SECONDS:
            started = time.monotonic()
            health = raw_exchange(
                live.port,
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                timeout=PROMPT_SECONDS,
            )
            health_seconds.append(time.monotonic() - started)
            assert health.status == 200
        thread.join(PROMPT_SECONDS)
        assert not thread.is_alive(), "the hostile request was not answered in time"
    assert outcome["seconds"] < PROMPT_SECONDS
    assert max(health_seconds) < PROMPT_SECONDS
    response = outcome["response"]
    if expected == 403:
        assert response.status == 403, response
        return
    assert response.status == 200, response
    message = (response.sse_messages() if response.body.startswith(b"id:") else [response.json()])[-1]
    if isinstance(expected, int):
        assert message["error"]["code"] == expected
    else:
        assert message["result"]["contents"][0]["text"] == expected


def test_subscribe_with_a_uri_of_dashes_is_refused_promptly_out_of_scope(tokens: Tokens) -> None:
    uri = _dashes("date", "/")
    with live_server(_date_server(), tokens_file=str(tokens.path)) as live:
        session_id = open_session(live.port, token=tokens.tools_only)
        started = time.monotonic()
        response = _read(live.port, session_id, tokens.tools_only, uri, method="resources/subscribe")
        assert time.monotonic() - started < PROMPT_SECONDS
        assert response.status == 403


# --- finding 5: walking out of resource scopes -------------------------------------------------


@pytest.fixture
def files_server() -> Iterator[tuple[McpServer, list[str]]]:
    server = McpServer("files")
    reached: list[str] = []

    @server.resource("files://{+path}")
    def file(path: str) -> str:
        reached.append(path)
        return f"contents of {path}"

    @server.resource("streamed://{+path}")
    def streamed(path: str, ctx: Context) -> str:  # runs on its own thread, may answer as SSE
        reached.append(path)
        return f"contents of {path}"

    yield server, reached


WALKS_OUT = [
    pytest.param("files://public/../secret/x", id="dot-dot-segment"),
    pytest.param("files://public/%2e%2e/%2e%2e/etc/passwd", id="encoded-dots"),
    pytest.param("files://public/%2E%2E/secret", id="encoded-dots-upper"),
    pytest.param("files://public/.%2e/secret", id="half-encoded-dots"),
    pytest.param("files://public/..", id="trailing-dot-dot"),
    pytest.param("files://public/./../secret", id="dot-then-dot-dot"),
    pytest.param("files://public/..%2fsecret", id="encoded-slash-after-dots"),
    pytest.param("files://public/..%2Fsecret", id="encoded-slash-upper"),
    pytest.param("files://public/..%5csecret", id="encoded-backslash"),
    pytest.param("files://public/..%5Csecret", id="encoded-backslash-upper"),
    pytest.param("files://public/..\\secret", id="raw-backslash"),
    pytest.param("files://public/%252e%252e/secret", id="double-encoded-dots"),
    pytest.param("files://public/%252f", id="double-encoded-slash"),
]


@pytest.mark.parametrize("uri", WALKS_OUT)
@pytest.mark.parametrize("who", ["public_one_level", "public_tree", "full"])
@pytest.mark.parametrize("method", ["resources/read", "resources/subscribe"])
def test_a_uri_that_walks_out_never_reaches_the_handler(
    tokens: Tokens, files_server: tuple[McpServer, list[str]], uri: str, who: str, method: str
) -> None:
    server, reached = files_server
    token = getattr(tokens, who)
    with live_server(server, tokens_file=str(tokens.path)) as live:
        session_id = open_session(live.port, token=token)
        response = _read(live.port, session_id, token, uri, method=method)
    assert reached == []
    # Refused: 403 when the raw URI is outside the scope too, else a clear -32602.
    assert response.status in (200, 403), response
    if response.status == 200:
        assert _error_code(response) == INVALID_PARAMS, response
        message = response.json()["error"]["message"]
        assert message.startswith("The value of {path} in files://{+path} ")
    else:
        assert who == "public_one_level"


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("streamed://public/../secret/x", id="dot-dot-segment"),
        pytest.param("streamed://public/%2e%2e/%2e%2e/etc/passwd", id="encoded-dots"),
        pytest.param("streamed://public/..%2fsecret", id="encoded-slash"),
    ],
)
def test_a_uri_that_walks_out_of_a_streaming_handler_is_refused_the_same_way(
    tokens: Tokens, files_server: tuple[McpServer, list[str]], uri: str
) -> None:
    server, reached = files_server
    with live_server(server, tokens_file=str(tokens.path)) as live:
        session_id = open_session(live.port, token=tokens.full)
        response = _read(live.port, session_id, tokens.full, uri)
    assert reached == []
    assert _error_code(response) == INVALID_PARAMS, response


@pytest.mark.parametrize(
    ("who", "uri", "handler_gets"),
    [
        pytest.param("public_one_level", "files://public/readme.txt", "public/readme.txt", id="one-level-file"),
        pytest.param("public_one_level", "files://public/a%20b", "public/a b", id="one-level-decoded"),
        pytest.param("public_one_level", "files://public/...", "public/...", id="three-dots-is-a-name"),
        pytest.param("public_tree", "files://public/docs/a.md", "public/docs/a.md", id="tree-deeper"),
        pytest.param("public_tree", "files://public/%41/b", "public/A/b", id="tree-decoded"),
        pytest.param("full", "files://anything/at/all", "anything/at/all", id="unscoped"),
    ],
)
def test_a_uri_inside_the_scope_reaches_the_handler_decoded(
    tokens: Tokens, files_server: tuple[McpServer, list[str]], who: str, uri: str, handler_gets: str
) -> None:
    server, reached = files_server
    token = getattr(tokens, who)
    with live_server(server, tokens_file=str(tokens.path)) as live:
        session_id = open_session(live.port, token=token)
        response = _read(live.port, session_id, token, uri)
    assert response.status == 200, response
    assert response.json()["result"]["contents"][0]["text"] == f"contents of {handler_gets}"
    assert reached == [handler_gets]


@pytest.mark.parametrize(
    ("who", "uri"),
    [
        pytest.param("public_one_level", "files://public/docs/a.md", id="star-stays-in-one-segment"),
        pytest.param("public_one_level", "files://secret/x", id="other-directory"),
        pytest.param("public_one_level", "files://public%2fx", id="encoded-slash-outside"),
        pytest.param("public_tree", "files://publicity/x", id="prefix-is-not-a-directory"),
        pytest.param("public_tree", "files://secret/public/x", id="public-further-down"),
        pytest.param("tools_only", "files://public/readme.txt", id="no-resource-scope"),
    ],
)
def test_a_uri_outside_the_scope_is_403(
    tokens: Tokens, files_server: tuple[McpServer, list[str]], who: str, uri: str
) -> None:
    server, reached = files_server
    token = getattr(tokens, who)
    with live_server(server, tokens_file=str(tokens.path)) as live:
        session_id = open_session(live.port, token=token)
        response = _read(live.port, session_id, token, uri)
    assert response.status == 403, response
    assert reached == []


# --- finding 7: forged log lines ---------------------------------------------------------------

RECORD_START = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (debug|info|warning|error|critical) ")
FORGED = "2026-12-01T00:00:00Z warning audit denied client=203.0.113.9 step=token reason=invalid"


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """mcp_auth's records as the command line writes them (`--log-format text`), into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(TextFormatter())
    root = logging.getLogger("mcp_auth")
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


def _failing_server() -> McpServer:
    server = McpServer("failing")

    @server.resource("notes://{+id}")
    def note(id: str) -> str:
        raise ValueError(f"no note {id}")

    return server


@pytest.mark.parametrize(
    "separator",
    [
        pytest.param("\n", id="LF"),
        pytest.param("\r\n", id="CRLF"),
        pytest.param("\r", id="CR"),
        pytest.param("\u2028", id="LINE-SEPARATOR"),
        pytest.param("\u2029", id="PARAGRAPH-SEPARATOR"),
        pytest.param("\x85", id="NEL"),
        pytest.param("\x0b", id="VT"),
        pytest.param("\x1b[2K\r", id="terminal-escape"),
    ],
)
def test_a_uri_with_a_forged_audit_line_is_logged_as_one_line(text_log: io.StringIO, separator: str) -> None:
    uri = f"notes://x{separator}{FORGED}"
    with live_server(_failing_server()) as live:
        session_id = open_session(live.port, token=TOKEN)
        response = _read(live.port, session_id, TOKEN, uri)
    assert _error_code(response) == -32603  # the handler ran and raised
    lines = text_log.getvalue().splitlines()
    records = [line for line in lines if "resource notes://x" in line and "raised ValueError" in line]
    assert len(records) == 1, lines
    assert not any(line.startswith(FORGED[:20]) for line in lines), lines
    # Only a record's first line starts at column 0; a traceback's lines (debug level here) are indented.
    assert all(RECORD_START.match(line) or line.startswith("    ") for line in lines), lines
    assert not any(ch in text_log.getvalue() for ch in "\r\x0b\x1b\x85\u2028\u2029")


def _record(message: str, *args: Any, audit: dict[str, Any] | None = None) -> logging.LogRecord:
    record = logging.LogRecord("mcp_auth.server", logging.WARNING, __file__, 1, message, args, None)
    if audit is not None:
        record.audit = audit
    return record


@pytest.mark.parametrize(
    ("record", "expected_tail"),
    [
        pytest.param(
            _record("%s %s raised %s", "resource", "notes://x\n" + FORGED, "ValueError"),
            "mcp_auth.server: resource notes://x\\n" + FORGED + " raised ValueError",
            id="message-value-with-newline",
        ),
        pytest.param(
            _record("tab\there", audit={"time": "t", "event": "tool_call", "tool": "a\tb", "outcome": "ok"}),
            'audit tool_call tool="a\\tb" outcome=ok',
            id="audit-field-tab",
        ),
        pytest.param(
            _record("x", audit={"time": "t", "event": "denied", "reason": "bad\r\nstep=ok", "client": "1.2.3.4"}),
            'audit denied reason="bad\\r\\nstep=ok" client=1.2.3.4',
            id="audit-field-posing-as-a-pair-is-quoted",
        ),
        pytest.param(
            _record("x", audit={"time": "t", "event": "denied", "reason": 'say "hi" \x1b[31m\x7f\x85\u2028\u2029'}),
            'audit denied reason="say \\"hi\\" \\x1b[31m\\x7f\\x85\\u2028\\u2029"',
            id="audit-field-quotes-escape-del-c1-separators",
        ),
        pytest.param(
            _record("x", audit={"time": "t", "event": "denied", "reason": 'ends in \\" step=ok'}),
            'audit denied reason="ends in \\\\\\" step=ok"',
            id="audit-field-backslash-cannot-end-the-quotes",
        ),
        pytest.param(
            _record("x", audit={"time": "t", "event": "denied", "reason": ""}),
            'audit denied reason=""',
            id="audit-field-empty-is-visible",
        ),
    ],
)
def test_the_text_format_writes_one_line_per_record(record: logging.LogRecord, expected_tail: str) -> None:
    line = TextFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert line.endswith(expected_tail), line


def test_escaping_is_idempotent() -> None:
    from mcp_auth.audit import escape_controls

    once = escape_controls("a\nb\x00c\u2028d\\ne")
    assert once == "a\\nb\\x00c\\u2028d\\ne"
    assert escape_controls(once) == once


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        pytest.param("x://{a}{b}", "nothing between them", id="adjacent-variables"),
        pytest.param("x://{a}{+b}", "nothing between them", id="adjacent-reserved"),
        pytest.param("x://{a}/{a}", "twice", id="same-name-twice"),
    ],
)
def test_an_ambiguous_template_is_refused_at_registration(template: str, fragment: str) -> None:
    server = McpServer("ambiguous")

    def handler(a: str, b: str = "") -> str:
        return a + b

    with pytest.raises(ValueError, match=fragment):
        server.resource(template)(handler)
