"""Findings of the review of the issue-9 fixes, each pinned by a test that failed before its fix.

Resource templates: a value with an empty path segment, and a value whose decoded
text splits the URI differently from what the handler receives, are refused
(-32602). The transport: a body shorter than its Content-Length, and a chunked body
gunicorn cannot parse, are a 400, never a 200 or a 500. The built-in server: a head
with differing Content-Lengths, or with Transfer-Encoding and Content-Length, is
refused before the app; a request line with a third word gets an HTTP/1.x answer.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from nginx_support import Gunicorn, gunicorn_process
from support import TOKEN, RawResponse, initialize_body, live_server, raw_exchange

from mcp_auth import McpServer
from mcp_auth.auth.tokens import Principal
from mcp_auth.mcp.context import Call
from mcp_auth.mcp.jsonrpc import INVALID_PARAMS, JsonRpcError, Request
from mcp_auth.mcp.outcome import ScopeDenied
from mcp_auth.sessions import Session

# Generous: a refusal comes back at once; only a broken server would take this long.
PATIENCE_SECONDS = 30.0


# --- resource templates (items 1 and 2) ----------------------------------------------------------


class _Sink:
    def send(self, message: dict[str, Any]) -> None:
        pass


def _read_as(scope: str, uri: str) -> tuple[list[Any], JsonRpcError | ScopeDenied | None]:
    """resources/read of `uri` by a token scoped `resource:<scope>`: what the handlers got, and the error."""
    reached: list[Any] = []
    server = McpServer("files")

    @server.resource("files://public/{+path}")
    def public(path: str) -> str:
        reached.append(path)
        return path

    @server.resource("date://{year}-{month}-{day}")
    def date(year: str, month: str, day: str) -> str:
        reached.append((year, month, day))
        return "date"

    principal = Principal("scoped", (f"resource:{scope}",), "x")
    call = Call(Session(principal, _Sink()), principal, _Sink(), "127.0.0.1", lambda p: True)
    server.dispatcher.dispatch(Request(0, "initialize", {"protocolVersion": "2025-11-25"}), call)
    try:
        server.dispatcher.dispatch(Request(1, "resources/read", {"uri": uri}), call)
    except (JsonRpcError, ScopeDenied) as exc:
        return reached, exc
    return reached, None


@pytest.mark.parametrize(
    "uri",
    [
        "files://public//etc/passwd",
        "files://public/a//b",
        "files://public/a/",
        "files://public/%2Fetc",  # refused before this rule, as an encoded separator
    ],
)
def test_a_template_value_with_an_empty_path_segment_is_refused(uri: str) -> None:
    reached, error = _read_as("files://public/**", uri)
    assert reached == []
    assert isinstance(error, JsonRpcError) and error.code == INVALID_PARAMS
    assert str(error).startswith("The value of {path} in files://public/{+path} "), error


def test_a_template_value_without_empty_segments_still_reaches_the_handler() -> None:
    reached, error = _read_as("files://public/**", "files://public/docs/readme.md")
    assert error is None
    assert reached == ["docs/readme.md"]


def test_a_decoded_value_cannot_move_the_split_the_scope_judged() -> None:
    # Before the fix: year='2024-12', month='01' reached the handler, judged as date://2024-12-01-05.
    reached, error = _read_as("date://2024-12-*", "date://2024%2D12-01-05")
    assert reached == []
    assert isinstance(error, ScopeDenied)  # the URI as sent is outside the scope: that refusal is told
    # A scope that covers the URI as sent is told why the value is refused.
    reached, error = _read_as("date://**", "date://2024%2D12-01-05")
    assert reached == []
    assert isinstance(error, JsonRpcError) and error.code == INVALID_PARAMS
    assert str(error) == (
        "The value of {year} in date://{year}-{month}-{day} contains a %XX escape that, once decoded, "
        "would split the URI differently"
    )
    reached, error = _read_as("date://2024-12-*", "date://2024-12-05")
    assert error is None
    assert reached == [("2024", "12", "05")]


# --- the wire: both servers ----------------------------------------------------------------------


def _head(port: int, extra: str) -> bytes:
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode()


def _send_then_shut_write(port: int, data: bytes) -> RawResponse:
    """Send `data`, close the sending side (the body ends there), and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_SECONDS) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return RawResponse(status, "", headers, body, head)


@pytest.fixture(scope="module")
def builtin_port() -> Iterator[int]:
    with live_server() as live:
        yield live.port


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    with gunicorn_process(tmp_path_factory.mktemp("gunicorn"), {"MCP_AUTH_TOKEN": TOKEN}) as server:
        yield server


def _truncated_body_case(port: int) -> None:
    body = json.dumps(initialize_body()).encode()
    declared = 1000  # far more than the initialize sent; the client then shuts its write side
    assert len(body) < declared
    response = _send_then_shut_write(port, _head(port, f"Content-Length: {declared}\r\n") + body)
    assert response.status == 400, response
    assert response.header("Mcp-Session-Id") is None
    assert json.loads(response.body)["error"]["message"] == "The request body ended before Content-Length bytes"


def test_a_body_shorter_than_content_length_is_refused_by_the_builtin_server(builtin_port: int) -> None:
    _truncated_body_case(builtin_port)


def test_a_body_shorter_than_content_length_is_refused_under_gunicorn(gunicorn: Gunicorn) -> None:
    _truncated_body_case(gunicorn.port)
    assert "Traceback" not in gunicorn.log


MALFORMED_CHUNKED = [
    pytest.param(b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", id="underscore-in-size"),
    pytest.param(b"2\r\n{}XX0\r\n\r\n", id="no-crlf-after-chunk"),
    pytest.param(b"2;a\x00b\r\n{}\r\n0\r\n\r\n", id="nul-in-extension"),
]


@pytest.mark.parametrize("body", MALFORMED_CHUNKED)
def test_a_malformed_chunked_body_is_a_400_under_gunicorn(gunicorn: Gunicorn, body: bytes) -> None:
    response = raw_exchange(gunicorn.port, _head(gunicorn.port, "Transfer-Encoding: chunked\r\n") + body)
    assert response.status == 400, response
    assert response.json()["error"]["message"].startswith("The request body could not be read")
    assert "Traceback" not in gunicorn.log and "Error handling request" not in gunicorn.log, gunicorn.log


# --- the built-in server's head (items 5 and 6) --------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "message"),
    [
        pytest.param(
            "Content-Length: 2\r\nContent-Length: 200\r\n",
            "The request has Content-Length headers that differ; send one",
            id="differing-content-lengths",
        ),
        pytest.param(
            "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
            "The request has both Transfer-Encoding and Content-Length; send only one",
            id="transfer-encoding-and-content-length",
        ),
    ],
)
def test_ambiguous_body_framing_is_refused_before_the_app(builtin_port: int, framing: str, message: str) -> None:
    response = raw_exchange(builtin_port, _head(builtin_port, framing) + b"{}\r\n0\r\n\r\n")
    assert response.status == 400, response
    assert response.json()["error"]["message"] == message


def test_repeated_equal_content_lengths_are_accepted(builtin_port: int) -> None:
    body = json.dumps(initialize_body()).encode()
    length = f"Content-Length: {len(body)}\r\n"
    response = raw_exchange(builtin_port, _head(builtin_port, length + length) + body)
    assert response.status == 200, response


@pytest.mark.parametrize(
    ("version", "status"),
    [("HTTP/9.9", 505), ("HTTP/2.0", 505), ("HTTP/1.1.1", 400), ("HTTP/x.y", 400), ("HTTPS/1.1", 400)],
)
def test_a_bad_version_gets_a_status_line(builtin_port: int, version: str, status: int) -> None:
    response = raw_exchange(builtin_port, f"GET /mcp {version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert response.raw_head.startswith(b"HTTP/1.1 "), response  # before the fix: a bare body, no head
    assert response.status == status, response
    assert response.header("Content-Type") == "application/json"
    document = response.json()
    assert set(document) == {"jsonrpc", "id", "error"}
    assert document["error"]["data"]["reason"] == ("http_version_not_supported" if status == 505 else "bad_request")


def test_a_two_word_request_line_is_still_answered_http_0_9_style(builtin_port: int) -> None:
    response = raw_exchange(builtin_port, b"POST /mcp\r\n\r\n")  # HTTP/0.9 knows only GET
    assert response.status == 0  # HTTP/0.9 has no status line: the body alone
    assert set(json.loads(response.body)) == {"jsonrpc", "id", "error"}
