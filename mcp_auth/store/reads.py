"""One round trip per request: the session record a request names, read in the same round trip as its step 4.

With a store, step 4 (the guessing limit, `store.ratelimit`) asks Redis at
every request that presents a credential, and a handshake-era request then
reads its session's record (`store.sessions`): two round trips, one waiting
for the other. Instead, while a request is being admitted, the record its
`Mcp-Session-Id` names is read in step 4's round trip (pipelined after the
check, so neither waits for the other), kept for that request only, and used
by the session registry in place of a read of its own.

What it trusts: the session id is the client's and is read before the request
is admitted, so it only ever becomes the digest key of a read; nothing is
written for it (a record's TTL is renewed by the registry, once the request
is admitted). What was read is used only by the request that named it (it
lives in a context variable set for that request and reset at its end), once,
and is judged as any read is (owner compared with the admitted principal). A
refused request's read is thrown away. The read is as fresh as a read of
its own would be: made at this request's step 4, not cached across requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any


class PendingRead:
    """A record key to read with this request's step 4, and, once read, its fields."""

    __slots__ = ("fields", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.fields: dict[bytes, bytes] | None = None


_current: ContextVar[PendingRead | None] = ContextVar("mcp_auth_store_pending_read", default=None)


@contextmanager
def reading_record(key: str) -> Iterator[None]:
    """For the request running in this context: read `key` with its step 4."""
    token = _current.set(PendingRead(key))
    try:
        yield
    finally:
        _current.reset(token)


def pending() -> PendingRead | None:
    """The read step 4 should make in its round trip (None: none, or made already)."""
    read = _current.get()
    return read if read is not None and read.fields is None else None


def take(key: str) -> Any:
    """The fields of `key` read in this request's step 4, once; None when nothing was read for it."""
    read = _current.get()
    if read is None or read.key != key or read.fields is None:
        return None
    fields, read.fields = read.fields, None
    _current.set(None)  # used: a second load in this request reads the store again
    return fields
