"""Findings of the hostile review of the built-in server's own request-head reader (issue 11),
each pinned over real sockets against the real built-in server.

- A request line whose version has a Latin-1 superscript digit ("HTTP/1.\\xb2": `str.isdigit`
  says yes, `int` says no) must get a 400 like any bad version, not an unhandled error that
  answers nothing.
- A Transfer-Encoding other than exactly one `chunked` leaves the body length unknown (RFC 9112
  section 6.3): the request must be refused with 400 and the connection closed, never read as
  "no body" with the body's bytes taken for the next request (a request smuggled past a front
  that frames it differently).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

import pytest
from nginx_support import Gunicorn, gunicorn_process
from support import TOKEN, initialize_body, live_server, raw_exchange

from mcp_auth import audit, media, network
from mcp_auth.mcp.validation import compile_schema

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with live_server() as live:
        yield live.port


def _read_to_close(port: int, data: bytes) -> bytes:
    """Send `data` on one connection and read everything the server writes until it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # what arrived before the reset is what the server answered
    return b"".join(chunks)


def _post_head(port: int, extra: bytes) -> bytes:
    return (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n%s\r\n"
    ) % (port, TOKEN.encode(), extra)


@pytest.mark.parametrize("version", [b"HTTP/1.\xb2", b"HTTP/\xb9.1", b"HTTP/1.\xb3"])
def test_a_version_with_a_superscript_digit_is_a_bad_version(port: int, version: bytes) -> None:
    response = raw_exchange(port, b"GET /mcp " + version + b"\r\nHost: 127.0.0.1\r\n\r\n", timeout=10)
    assert response.status == 400
    assert "Bad request version" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "coding",
    [
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: \x0bchunked\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding:\r\n",
    ],
)
def test_a_transfer_encoding_other_than_chunked_alone_is_refused_and_closes(port: int, coding: bytes) -> None:
    # The "body" is a whole second request: a server that reads this request as bodiless
    # answers that one too, on the same connection.
    raw = _read_to_close(port, _post_head(port, coding) + SMUGGLED)
    assert raw.count(b"HTTP/1.1 ") == 1, raw  # one answer; nothing smuggled was served
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"\r\nConnection: close" in head
    assert "Transfer-Encoding" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("name", [b"Transfer-Encoding", b"TRANSFER-ENCODING", b"transfer-encoding"])
def test_a_chunked_body_in_any_name_casing_still_reaches_the_app(port: int, name: bytes) -> None:
    body = json.dumps(initialize_body()).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    response = raw_exchange(port, _post_head(port, name + b": Chunked\r\n") + chunked, timeout=10)
    assert response.status == 200 and response.header("Mcp-Session-Id")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_audit_records_reach_an_embedders_filters_and_handlers_as_one_escaped_line(port: int) -> None:
    """The audit record is now built with makeRecord + handle: a logger filter still sees (and can
    drop) it, a root handler still gets it, and the text line stays one line with the value escaped."""
    collected = _Collect()
    dropped: list[str] = []

    def drop_health(record: logging.LogRecord) -> bool:
        if getattr(record, "audit", {}).get("client") == "drop-me":
            dropped.append(record.getMessage())
            return False
        return True

    root = logging.getLogger()
    root.addHandler(collected)
    audit.audit_logger.addFilter(drop_health)
    try:
        raw_exchange(port, _post_head(port, b"Authorization: Bearer wrong\r\nConnection: close\r\n"), timeout=10)
        audit.denial("drop-me", "auth", "nope")
        audit.denial("1.2.3.4\nforged=1", "auth", "x\r\ny")
    finally:
        audit.audit_logger.removeFilter(drop_health)
        root.removeHandler(collected)
    ours = [record for record in collected.records if record.name == audit.audit_logger.name]
    assert dropped and all(getattr(r, "audit", {}).get("client") != "drop-me" for r in ours)
    assert len(ours) >= 2 and all(record.levelno >= logging.INFO for record in ours)
    line = audit.TextFormatter().format(ours[-1])
    assert "\n" not in line and "\r" not in line and "forged" in line
    document = audit.JsonFormatter().format(ours[-1])
    assert "\n" not in document and json.loads(document)["client"] == "1.2.3.4\nforged=1"
    assert ours[-1].levelno == logging.getLevelName(line.split()[1].upper())  # the level the line says


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 10\r\nContent-Length: 11\r\n",
        b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
    ],
)
def test_a_refused_framing_is_refused_before_any_100_continue(port: int, framing: bytes) -> None:
    """A head the server will refuse must not first be told "100 Continue": that invites the client
    to send a body the server never reads, and the close that follows can reset the refusal away."""
    raw = _read_to_close(port, _post_head(port, framing + b"Expect: 100-continue\r\n"))
    assert raw.startswith(b"HTTP/1.1 400 "), raw
    assert b"100 Continue" not in raw


def test_a_good_head_with_expect_still_gets_100_continue_then_the_answer(port: int) -> None:
    body = json.dumps(initialize_body()).encode()
    head = _post_head(port, b"Content-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 ") and b"Mcp-Session-Id" in rest


@pytest.mark.parametrize("empty", [b"Content-Length:\r\n", b"Content-Length: \t \r\n"])
def test_an_empty_content_length_is_refused_and_closes(port: int, empty: bytes) -> None:
    """An empty Content-Length is invalid framing (RFC 9112 section 6.3), not "no body": read as no
    body on a kept-alive connection, the bytes after the head would be served as the next request."""
    raw = _read_to_close(port, _post_head(port, empty) + SMUGGLED)
    assert raw.count(b"HTTP/1.1 ") == 1, raw
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"\r\nConnection: close" in head
    assert "Content-Length" in json.loads(body)["error"]["message"]


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    with gunicorn_process(tmp_path_factory.mktemp("gunicorn"), {"MCP_AUTH_TOKEN": TOKEN}) as server:
        yield server


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding:\r\n",
        b"Content-Length:\r\n",
        b"Content-Length: 10\r\nContent-Length: 11\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 5, 5\r\n",
        b"X-A: 1\r\r\n",
        b"X-A\t: 1\r\n",
    ],
)
def test_the_built_in_server_refuses_the_framings_gunicorn_refuses(
    port: int, gunicorn: Gunicorn, framing: bytes
) -> None:
    """Behind the same front, either server must see one request here, refused: the comparison
    that found the Transfer-Encoding and empty Content-Length cases above."""
    for server_port in (gunicorn.port, port):
        raw = _read_to_close(server_port, _post_head(server_port, framing) + SMUGGLED)
        assert raw.count(b"HTTP/1.1 ") == 1 and raw[9:10] in (b"4", b"5"), (server_port, raw)
        assert b"/smuggled" not in raw


WS_HEAD = (
    b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Protocol: mcp\r\n%sConnection: close\r\n\r\n"
)


@pytest.mark.parametrize("extra", [b"Upgrade: websocket\r\n", b"Upgrade: h2c\r\n"])
def test_a_second_upgrade_header_is_a_client_error_not_a_500(port: int, extra: bytes) -> None:
    raw = _read_to_close(port, WS_HEAD % (TOKEN.encode(), extra))
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:200]
    assert b"exactly one 'Upgrade: websocket' header" in raw


@pytest.mark.parametrize(
    "key",
    [b"", b"dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==", b"short", b"dGhlIHNhbXBsZSBub25jZQ", b"!" * 24],
    ids=["empty", "twice", "short", "unpadded", "not-base64"],
)
def test_a_sec_websocket_key_that_is_not_one_16_byte_value_is_refused(port: int, key: bytes) -> None:
    head = (WS_HEAD % (TOKEN.encode(), b"")).replace(b"dGhlIHNhbXBsZSBub25jZQ==", key)
    assert key in head or not key
    raw = _read_to_close(port, head)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:200]
    assert b"Sec-WebSocket-Key" in raw


def test_a_flood_of_distinct_hosts_and_accepts_stays_within_the_caches(port: int) -> None:
    """Attacker-chosen Host and Accept values fill bounded caches and evict, never grow; a malformed
    Host is refused every time (a refusal is never cached as an answer)."""
    for n in range(network.HOST_CACHE_SIZE + 40):
        accept = b"application/json, text/event-stream, x/y%d" % n
        head = b"GET /mcp HTTP/1.1\r\nHost: h%d.example\r\nAccept: %s\r\nConnection: close\r\n\r\n" % (n, accept)
        assert raw_exchange(port, head, timeout=10).status == 403  # not an allowed Host
    assert network._parse_short_host.cache_info().currsize <= network.HOST_CACHE_SIZE
    assert media._cached_acceptable.cache_info().currsize <= media.HEADER_CACHE_SIZE
    for _ in range(2):
        bad = raw_exchange(port, b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:99999\r\nConnection: close\r\n\r\n")
        assert bad.status == 400
    with pytest.raises(network.HostError):
        network.parse_host("127.0.0.1:99999")
    long_accept = "text/event-stream, " + "a/b, " * 200
    assert media.acceptable(long_accept) == media.acceptable(long_accept)  # parsed, not cached
    assert isinstance(media.acceptable("application/json"), frozenset)  # shared answers are immutable


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "object", "properties": {"n": {"type": "integer"}}}, {"n": True}),
        ({"type": "object", "properties": {"n": {"type": "number"}}}, {"n": False}),
        ({"type": "object", "properties": {"n": {"type": "integer"}}}, {"n": 1.5}),
        ({"type": "object", "properties": {"n": {"type": "boolean"}}}, {"n": 0}),
        ({"type": "array", "items": {"type": "array", "items": {"type": "string"}}}, [["a"], ["b", 1]]),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}, {"a": "", "b": 1}),
        ({"type": "object", "required": ["a"], "properties": {"a": {"type": "null"}}}, {}),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, 1.0 + 0.5),
        ({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]}, [1, True]),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, {"x": [1]}),
    ],
)
def test_the_quick_predicate_never_passes_what_jsonschema_refuses(schema: dict[str, object], value: object) -> None:
    compiled = compile_schema(schema, "review11")
    assert compiled._quick is not None  # the quick path is really the one under test
    assert not compiled._quick(value)
    assert compiled.problems(value) and list(compiled._validator.iter_errors(value))


@pytest.mark.parametrize("digits", [4301, 5000, 60000])
def test_a_content_length_too_long_for_int_is_a_400_not_a_500(port: int, digits: int) -> None:
    """Python refuses to convert more than 4300 digits (int_max_str_digits): the built-in server's
    own reading of Content-Length must not turn that ValueError into a 500."""
    head = _post_head(port, b"Content-Length: %s\r\nConnection: close\r\n" % (b"1" * digits))
    response = raw_exchange(port, head, timeout=10)
    assert response.status == 400
    assert "Content-Length" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("hosts", "status"),
    [
        (b"host: evil.example\r\n", 403),  # the name matched without regard to case
        (b"Host: 127.0.0.1\r\nhost: evil.example\r\n", 400),  # two Host lines stay a malformed Host
        (b"HOST: evil.example\r\nHost: 127.0.0.1\r\n", 400),
        (b"Ho_st: 127.0.0.1\r\n", 400),  # dropped as Werkzeug drops every underscore name: no Host
        (b"Host: 127.0.0.1\r\nX_Forwarded_Host: evil.example\r\n", 401),  # dropped, so only the token is wrong
    ],
)
def test_the_host_check_reads_every_host_line_the_reader_kept(port: int, hosts: bytes, status: int) -> None:
    head = b"GET /mcp HTTP/1.1\r\n%sAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n" % hosts
    assert raw_exchange(port, head, timeout=10).status == status


def test_an_absolute_target_cannot_stand_in_for_the_host_header(port: int) -> None:
    head = b"GET http://127.0.0.1/mcp HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    assert raw_exchange(port, head, timeout=10).status == 403
