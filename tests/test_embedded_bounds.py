"""The built-in server's own bounds on a request body, as the app sees them: a read that may time out.

`_BodyWithin` is what the built-in server puts in `wsgi.input`; its deadline
is enforced by the server's watchdog on the connection. Real sockets (a
socketpair) and a real watchdog; only the test about the deadline itself
waits, with a generous bound.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from mcp_auth.embedded import _BodyWithin, _HeadWatch

# The watchdog's tick in these tests, and the body deadline: short, so the one test about time is quick.
TICK_SECONDS = 0.05
DEADLINE_SECONDS = 0.2
# How long a read may wait for the watchdog before the test gives up (it should take about 0.25 s).
PATIENCE_SECONDS = 10.0


@pytest.fixture
def watch() -> Iterator[_HeadWatch]:
    watch = _HeadWatch(TICK_SECONDS)
    watch.start("test body deadline")
    try:
        yield watch
    finally:
        watch.stop()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server_side, client_side = socket.socketpair()
    server_side.settimeout(PATIENCE_SECONDS)
    try:
        yield server_side, client_side
    finally:
        for file in _opened:
            file.close()
        _opened.clear()
        server_side.close()
        client_side.close()


_opened: list[BinaryIO] = []


def _body(watch: _HeadWatch, connection: socket.socket, length: int | None) -> _BodyWithin:
    """The body reader over `connection`, as Werkzeug's rfile would be (closed by the `pair` fixture)."""
    reader = connection.makefile("rb")
    _opened.append(reader)
    return _BodyWithin(reader, watch, connection, DEADLINE_SECONDS, length)


def test_a_body_read_to_its_length_lifts_the_deadline(
    watch: _HeadWatch, pair: tuple[socket.socket, socket.socket]
) -> None:
    server_side, client_side = pair
    client_side.sendall(b"hello, and the next request")
    body = _body(watch, server_side, 5)
    assert body.read1(65536) == b"hello"  # never past the declared length
    assert body.read(10) == b""
    # Nothing is armed any more: an answer streamed for longer than the deadline is not cut.
    assert watch.disarm(server_side) is False


def test_a_body_never_read_arms_nothing(watch: _HeadWatch, pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, _ = pair
    _body(watch, server_side, 100)
    assert watch.disarm(server_side) is False


def test_a_chunked_body_read_to_its_end_lifts_the_deadline(
    watch: _HeadWatch, pair: tuple[socket.socket, socket.socket]
) -> None:
    server_side, client_side = pair
    client_side.sendall(b"all of it")
    client_side.shutdown(socket.SHUT_WR)
    body = _body(watch, server_side, None)
    assert body.read() == b"all of it"
    assert watch.disarm(server_side) is False


def test_a_body_still_arriving_at_the_deadline_is_a_timeout(
    watch: _HeadWatch, pair: tuple[socket.socket, socket.socket]
) -> None:
    """About time: the read that waits past the deadline raises TimeoutError (an OSError, which the
    transport answers as any unreadable body) instead of returning a truncated body."""
    server_side, client_side = pair
    client_side.sendall(b"par")
    body = _body(watch, server_side, 10)
    assert body.read1(10) == b"par"
    with pytest.raises(TimeoutError, match=r"not sent within 0\.2 seconds"):
        body.read1(10)  # the rest never comes: the watchdog shuts the connection down
    assert isinstance(TimeoutError(), OSError)
