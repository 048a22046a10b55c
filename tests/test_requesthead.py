"""The built-in server reads request heads strictly (RFC 9112) with `mcp_auth.requesthead`.

Unit tests of the reader, and the same refusals over a real socket against
the built-in server: each malformed head gets its status and a JSON message
that says what to fix, and never reaches the app (no tools/call, no audit
line of a call).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import TOKEN, initialize_body, live_server, raw_exchange

from mcp_auth.requesthead import (
    MAX_FIELD_LINES,
    HeadError,
    RequestHeaders,
    block_length,
    fields_of_block,
    parse_request_line,
    read_fields,
)


def fields(block: bytes) -> RequestHeaders:
    return read_fields(io.BytesIO(block).readline)


def test_fields_keep_order_and_match_names_without_case() -> None:
    headers = fields(b"Host: a\r\nX-Two: 1\r\nx-two: 2\r\nEmpty:\r\nSpaced:  \t v  w \t\r\n\r\nbody")
    assert headers.items() == [("Host", "a"), ("X-Two", "1"), ("x-two", "2"), ("Empty", ""), ("Spaced", "v  w")]
    assert headers.get("HOST") == "a" and headers.get_all("X-TWO") == ["1", "2"]
    assert headers.get("missing") is None and headers.get_all("missing") is None
    assert "x-Two" in headers and "other" not in headers
    assert list(headers) == ["Host", "X-Two", "x-two", "Empty", "Spaced"] and len(headers) == 5


def test_bare_lf_line_ends_and_the_end_of_input_end_the_head() -> None:
    assert fields(b"A: 1\nB: 2\n\n").items() == [("A", "1"), ("B", "2")]
    assert fields(b"A: 1\r\n").items() == [("A", "1")]


def test_values_keep_every_byte_but_a_bare_cr_as_latin_1() -> None:
    assert fields(b"X: caf\xe9 \x7f\x00\r\n\r\n").get("X") == "caf\xe9 \x7f\x00"


@pytest.mark.parametrize(
    ("block", "status", "words"),
    [
        (b"Host: a\r\n folded\r\n\r\n", HTTPStatus.BAD_REQUEST, "folded"),
        (b"Host: a\r\n\tfolded\r\n\r\n", HTTPStatus.BAD_REQUEST, "folded"),
        (b"Host : a\r\n\r\n", HTTPStatus.BAD_REQUEST, "no space before the colon"),
        (b"Host\r\n\r\n", HTTPStatus.BAD_REQUEST, "malformed"),
        (b": a\r\n\r\n", HTTPStatus.BAD_REQUEST, "malformed"),
        (b"Ho(st: a\r\n\r\n", HTTPStatus.BAD_REQUEST, "malformed"),
        (b"X: a\rb\r\n\r\n", HTTPStatus.BAD_REQUEST, "bare CR"),
        (b"".join(b"X%d: 1\r\n" % n for n in range(MAX_FIELD_LINES + 1)) + b"\r\n", 431, "Too many headers"),
        (b"X: " + b"a" * 70000 + b"\r\n\r\n", 431, "too long"),
    ],
)
def test_malformed_field_lines_are_refused(block: bytes, status: int, words: str) -> None:
    with pytest.raises(HeadError) as refused:
        fields(block)
    assert refused.value.status == status and words in refused.value.message


def test_exactly_the_maximum_number_of_fields_is_read() -> None:
    block = b"".join(b"X%d: 1\r\n" % n for n in range(MAX_FIELD_LINES)) + b"\r\n"
    assert len(fields(block)) == MAX_FIELD_LINES


@pytest.mark.parametrize(
    ("line", "method", "target", "version", "persistent"),
    [
        ("POST /mcp HTTP/1.1", "POST", "/mcp", "HTTP/1.1", True),
        ("GET /mcp HTTP/1.0", "GET", "/mcp", "HTTP/1.0", False),
        ("GET //evil.example/x HTTP/1.1", "GET", "/evil.example/x", "HTTP/1.1", True),
        ("GET /mcp", "GET", "/mcp", "HTTP/0.9", False),
        ("GET /mcp HTTP/01.01", "GET", "/mcp", "HTTP/01.01", True),
    ],
)
def test_request_lines(line: str, method: str, target: str, version: str, persistent: bool) -> None:
    parsed = parse_request_line(line)
    assert (parsed.method, parsed.target, parsed.version, parsed.persistent) == (method, target, version, persistent)


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("GET /mcp HTTP/2.0", 505),
        ("GET /mcp HTTP/1.1.1", 400),
        ("GET /mcp HTTPS/1.1", 400),
        ("GET /mcp HTTP/1.x", 400),
        ("GET /mcp HTTP/11111111111.1", 400),
        ("POST /mcp", 400),
        ("GET", 400),
        ("A B C HTTP/1.1", 400),
    ],
)
def test_bad_request_lines(line: str, status: int) -> None:
    with pytest.raises(HeadError) as refused:
        parse_request_line(line)
    assert refused.value.status == status


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with live_server() as live:
        yield live.port


def _post(port: int, extra: bytes) -> bytes:
    body = json.dumps(initialize_body()).encode()
    return (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        b"Connection: close\r\n%sContent-Length: %d\r\n\r\n%s"
    ) % (port, TOKEN.encode(), extra, len(body), body)


def test_a_well_formed_head_reaches_the_app(port: int) -> None:
    response = raw_exchange(port, _post(port, b"X-Extra:\tvalue \r\n"))
    assert response.status == 200 and response.header("Mcp-Session-Id")


@pytest.mark.parametrize(
    ("extra", "status", "words"),
    [
        (b"X-Folded: a\r\n b\r\n", 400, "send each header on one line"),
        (b"Authorization : Bearer x\r\n", 400, "no space before the colon"),
        (b"no colon here\r\n", 400, "malformed"),
        (b"X-Cr: a\rb\r\n", 400, "bare CR"),
        (b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_FIELD_LINES)), 431, "Too many headers"),
    ],
)
def test_malformed_heads_are_refused_over_the_wire_with_a_message(
    port: int, extra: bytes, status: int, words: str
) -> None:
    response = raw_exchange(port, _post(port, extra))
    assert response.status == status
    assert response.header("Connection") == "close"
    document = json.loads(response.body)
    assert words in document["error"]["message"]
    assert response.header("Mcp-Session-Id") is None  # the app never saw it


# --- the whole-block reading gives what line-by-line reading gives ---------------------------------

_pieces = st.sampled_from(
    [b"Host: a", b"X-A: 1", b"x-a:2", b"Bad Line", b" folded", b"\tfolded", b"N : v", b"V: a\rb", b"E:", b"X: \xe9\x00"]
)
_ends = st.sampled_from([b"\r\n", b"\n"])


def _outcome(read: Any) -> Any:
    try:
        return ("fields", read().items())
    except HeadError as refused:
        return ("refused", refused.status, refused.message)


@given(st.lists(st.tuples(_pieces, _ends), max_size=8), _ends, st.binary(max_size=20))
def test_a_buffered_block_reads_as_line_by_line(lines: list[tuple[bytes, bytes]], last: bytes, after: bytes) -> None:
    data = b"".join(piece + end for piece, end in lines) + last + after
    stream = io.BytesIO(data)
    by_lines = _outcome(lambda: read_fields(stream.readline))
    length = block_length(data)
    assert length is not None  # the block's empty line is in the data
    by_block = _outcome(lambda: fields_of_block(data[:length]))
    assert by_block == by_lines
    if by_lines[0] == "fields":
        assert stream.tell() == length  # the body starts where both say the head ended


def test_a_block_whose_empty_line_has_not_arrived_is_read_line_by_line() -> None:
    assert block_length(b"Host: a\r\nX: 1\r\n") is None
    assert block_length(b"Host: a\r\nX: 1\r\n\r\nbody") == len(b"Host: a\r\nX: 1\r\n\r\n")
    assert block_length(b"\r\nbody") == 2 and block_length(b"\nbody") == 1
