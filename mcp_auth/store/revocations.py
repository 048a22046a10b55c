"""Revoked tokens across hosts: `token revoke` and `token rotate` record the old token's digest in the
session store, and every worker of every host refuses it within `REVOCATION_SECONDS`.

Tokens live in token files, re-read by each process when they change. Hosts
that keep their own copy of the file learn of a revocation only when their
copy is edited; with a store configured, the command that edits one copy
also appends the token's SHA-256 digest (the hex digest the tokens file
holds, never the token) to one Redis list, `REVOKED_KEY`, and each process
refuses every digest on it.

How a process learns the list, without a Redis round trip per request: a
local set, filled once when first used and then refreshed by one thread per
process every `REFRESH_SECONDS` (one pipeline: the list's generation, its
length and the entries after the last one read; usually an empty answer). A request only looks the digest up in
the set. Polling rather than pub/sub: a missed message would be a revocation
never seen, a poll cannot miss one, and one small command a second per process
is nothing to the store. If the store stops answering, the set stays as it
was; once it is older than `STALE_SECONDS`, authentication answers 503 (as a
request needing the store does) rather than admit a token that may have been
revoked meanwhile, while requests already admitted (open streams,
WebSockets) go on judged by the last set known.

The list is as durable as the Redis it is in: the token files stay the
record (the command edits them too), the store is how the news travels.
Entries are never removed: a revoked token stays refused, and a digest is
64 bytes per revocation.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..auth.tokens.principal import Principal
from ..auth.tokens.sources import TokenSource
from ..errors import ConfigError
from .connection import StoreUnavailable, close_store, open_store, store_call
from .url import parse_store_url

if TYPE_CHECKING:
    import redis

REVOKED_KEY = "mcp_auth:revoked"
GENERATION_KEY = "mcp_auth:revoked:generation"
# DESIGN: a revoked token is refused by every worker of every host within this.
REVOCATION_SECONDS = 5.0
# How often each process asks the store for new entries: well inside REVOCATION_SECONDS.
REFRESH_SECONDS = 1.0
# A set not refreshed for this long may miss a revocation: new requests get 503 until it is again.
STALE_SECONDS = REVOCATION_SECONDS - REFRESH_SECONDS

logger = logging.getLogger("mcp_auth.store")

# Every list of this process, told when it forks: a thread does not survive into the child.
_LISTS: weakref.WeakSet[RevocationList] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for revocations in list(_LISTS):
        revocations._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def record_revocation(client: redis.Redis, digest_hex: str) -> None:
    """Append one revoked token's digest (hex SHA-256, as in the tokens file) to the store's list.

    The list's generation (random, made with its first entry) tells readers
    that the list they were reading by position was emptied and begun again.
    """
    pipe = client.pipeline(transaction=True)
    pipe.set(GENERATION_KEY, secrets.token_hex(16), nx=True)
    pipe.rpush(REVOKED_KEY, digest_hex)
    pipe.execute()


@contextmanager
def recorder(raw_url: str | None, source: str) -> Iterator[Callable[[str], None] | None]:
    """For `token revoke`/`rotate`: a function recording a digest in the store at `raw_url` (None: no store).

    The store is opened (and PINGed) here, before the tokens file is touched:
    a store that cannot be reached is a ConfigError, and nothing is changed.
    Once the edit is done, says on stderr that the store has it.
    """
    if not raw_url:
        yield None
        return
    store = parse_store_url(raw_url, source)
    client = open_store(store, source)  # a ConfigError with the fix when the redis client is missing
    import redis

    recorded: list[str] = []

    def record(digest_hex: str) -> None:
        try:
            record_revocation(client, digest_hex)
        except redis.RedisError as exc:  # the class only: the text may quote the command
            raise ConfigError(
                f"the session store at {store.display} did not record the revocation ({type(exc).__name__}); "
                "the tokens file was not changed: try again"
            ) from None
        recorded.append(digest_hex)

    try:
        yield record
    finally:
        close_store(client)
    if recorded:
        print(
            f"Recorded in the session store at {store.display}: every host using it refuses the old token "
            f"within {REVOCATION_SECONDS:g} s",
            file=sys.stderr,
        )


class RevocationList:
    """The digests revoked in the store, as this process last read them (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        stale_seconds: float = STALE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._refresh_seconds = refresh_seconds
        self._stale_seconds = stale_seconds
        self._clock = clock
        self._digests: frozenset[str] = frozenset()
        self._known = 0  # entries of the store's list already in _digests
        self._generation: bytes | None = None
        self._refreshed_at: float | None = None
        self._lock = threading.Lock()  # one refresh at a time
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._running = False  # this process's refresh thread is started (reset in a forked child)
        _LISTS.add(self)

    def refresh(self) -> None:
        """Read the entries added since the last refresh (all of them if the list got shorter)."""
        with self._lock:
            asked_at = self._clock()  # what is read is as old as the question, not the answer
            pipe = self._client.pipeline(transaction=True)
            pipe.get(GENERATION_KEY)
            pipe.llen(REVOKED_KEY)
            pipe.lrange(REVOKED_KEY, self._known, -1)
            generation, length, added = pipe.execute()
            if generation != self._generation:  # emptied and begun again (or first read): all of it
                added = self._client.lrange(REVOKED_KEY, 0, length - 1) if length else []
                self._generation = generation
            if added:
                # What this process saw stays refused, even if the store forgets it.
                self._digests = self._digests | {entry.decode("ascii", "replace") for entry in added}
            self._known = int(length)
            self._refreshed_at = asked_at

    def _ensure_running(self) -> None:
        """The first use in a process reads the list (its answer is needed now) and starts the thread."""
        if self._running or self._stop.is_set():
            return
        with self._start_lock:
            if self._running:
                return
            if self._refreshed_at is None:
                store_call(self.refresh)  # fails as 503; the next request tries again
            threading.Thread(target=self._run, name="mcp-auth-revocations", daemon=True).start()
            self._running = True

    def _forked(self) -> None:
        """In a new child process (a gunicorn worker of a --preload app): no thread came along."""
        self._running = False
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()

    def _run(self) -> None:
        import redis

        failing = False
        while not self._stop.wait(self._refresh_seconds):
            try:
                self.refresh()
            except redis.RedisError as exc:
                if not failing:  # once per outage, and the error's class only (its text may quote a command)
                    logger.warning("the session store did not answer the revocation refresh (%s)", type(exc).__name__)
                failing = True
            else:
                failing = False

    def is_revoked(self, digest_hex: str, *, strict: bool) -> bool:
        """Whether the digest is on the list; `strict`: StoreUnavailable (503) when the list is stale."""
        try:
            self._ensure_running()
        except StoreUnavailable:
            if strict:
                raise
        refreshed_at = self._refreshed_at
        if strict and (refreshed_at is None or self._clock() - refreshed_at > self._stale_seconds):
            raise StoreUnavailable("revocations")
        return digest_hex in self._digests

    def close(self) -> None:
        self._stop.set()


class RevocationCheckedSource(TokenSource):
    """A token source that also refuses every token whose digest the store lists as revoked."""

    def __init__(self, inner: TokenSource, revocations: RevocationList) -> None:
        self.inner = inner
        self.description = inner.description
        self.revocations = revocations

    def authenticate(self, presented: bytes) -> Principal | None:
        principal = self.inner.authenticate(presented)
        if principal is None or self.revocations.is_revoked(principal.credential_id, strict=True):
            return None
        return principal

    def is_current(self, principal: Principal) -> bool:
        # Not strict: a store that stops answering must not end every open stream and WebSocket.
        return self.inner.is_current(principal) and not self.revocations.is_revoked(
            principal.credential_id, strict=False
        )
