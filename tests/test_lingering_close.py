"""A refused connection is closed "lingering": its answer survives a client that sends after it.

The built-in server answers a refused peer (step 1 at accept time, or past the
connection caps) at once, often before the client has sent its request. Closing
the socket when that request arrives would reset the connection, and a reset
destroys an answer the client has not read yet (the real `mcp` client then
shows a connection error instead of the refusal). `_LingeringCloser` shuts the
write side and drops what still comes, within bounds, before closing.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from mcp_auth import embedded
from mcp_auth.embedded import LINGER_MAX_BYTES, _LingeringCloser

# An upper bound on something that must happen (the closer thread noticing); never reached when it works.
PATIENCE_SECONDS = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def closer_and_clock() -> Iterator[tuple[_LingeringCloser, Clock]]:
    clock = Clock()
    closer = _LingeringCloser(clock)
    try:
        yield closer, clock
    finally:
        closer.stop()


def until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def refused_pair() -> tuple[socket.socket, socket.socket]:
    server_side, client_side = socket.socketpair()
    server_side.setblocking(False)
    server_side.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}")
    return server_side, client_side


def test_the_answer_survives_a_request_sent_after_it(closer_and_clock: tuple[_LingeringCloser, Clock]) -> None:
    closer, _clock = closer_and_clock
    server_side, client_side = refused_pair()
    closer.close_later(server_side)
    client_side.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\n\r\n")  # the request, after the answer
    client_side.settimeout(PATIENCE_SECONDS)
    received = b""
    while chunk := client_side.recv(4096):  # a reset would raise here; a lingering close ends with EOF
        received += chunk
    assert received.endswith(b"\r\n\r\n{}")
    client_side.close()
    until(lambda: closer.lingering == 0, "the socket is closed once its client has closed")


def test_a_client_that_keeps_sending_is_cut_off(closer_and_clock: tuple[_LingeringCloser, Clock]) -> None:
    closer, _clock = closer_and_clock
    server_side, client_side = refused_pair()
    closer.close_later(server_side)
    client_side.setblocking(False)
    sent = 0
    try:
        while sent <= LINGER_MAX_BYTES:
            sent += client_side.send(b"x" * 4096)
    except BlockingIOError:
        pass  # the buffers are full: the closer has more than enough to read
    except (BrokenPipeError, ConnectionResetError):
        pass  # the closer already cut it off, which is what this test waits for
    until(lambda: closer.lingering == 0, "more than LINGER_MAX_BYTES ends the linger")
    client_side.close()


def test_a_silent_client_is_closed_at_the_deadline(closer_and_clock: tuple[_LingeringCloser, Clock]) -> None:
    closer, clock = closer_and_clock
    first, first_client = refused_pair()
    closer.close_later(first)
    assert closer.lingering == 1
    clock.now += embedded.LINGER_SECONDS  # the injected clock passes the deadline ...
    second, second_client = refused_pair()
    closer.close_later(second)  # ... and the next arrival wakes the thread
    until(lambda: closer.lingering == 1, "the first socket is closed at its deadline, the second kept")
    first_client.settimeout(PATIENCE_SECONDS)
    assert first_client.recv(4096).startswith(b"HTTP/1.1 403")
    assert first_client.recv(4096) == b""  # closed cleanly, not reset
    first_client.close()
    second_client.close()


def test_past_the_bound_a_refused_socket_is_closed_at_once(
    closer_and_clock: tuple[_LingeringCloser, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    closer, _clock = closer_and_clock
    monkeypatch.setattr(embedded, "MAX_LINGERING", 1)
    kept, kept_client = refused_pair()
    extra, extra_client = refused_pair()
    closer.close_later(kept)
    closer.close_later(extra)
    assert closer.lingering == 1
    assert extra.fileno() == -1  # closed at once
    for client in (kept_client, extra_client):
        client.close()


def test_stop_closes_every_lingering_socket() -> None:
    closer = _LingeringCloser(Clock())
    sockets = [refused_pair() for _ in range(3)]
    for server_side, _client in sockets:
        closer.close_later(server_side)
    closer.stop()
    assert closer.lingering == 0
    assert all(server_side.fileno() == -1 for server_side, _client in sockets)
    for _server_side, client in sockets:
        client.close()
