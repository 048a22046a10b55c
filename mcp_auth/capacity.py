"""Capacity: the one bound on what clients can make the server hold at once.

Everything an authenticated client can keep open or running (a WebSocket, an
SSE event stream, a handler thread, a session) takes a place from a
`Capacity`: a total, and a share of it that one token may hold. The share is
what keeps one token, however busy or hostile, from taking every place: past
its share the token is refused while places stay free for the others.

`acquire(key)` either returns a `Slot` or raises `CapacityExhausted`, which is
a `ServiceUnavailable` refusal (HTTP 503 with `Retry-After`) so a transport can
let it propagate as the answer; a transport that has no HTTP answer left to
give (a request on an open WebSocket) turns its message into a JSON-RPC error.
Nothing here blocks: a full capacity refuses at once instead of queueing,
because a queued client still holds the connection and thread it arrived on,
and a refusal with `Retry-After` tells it what to do.

A `Slot` is given back exactly once, however many paths try: `release()` is
idempotent and a slot is a context manager. When two owners must both be done
before the place returns (the thread running a handler and the response body
streaming its events), the first hands the second its own handle with
`share()`; the place returns when every handle is released.

Trust: the key is whatever the caller passes, normally `principal_key` of an
authenticated principal; this module never sees a request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from .refusals import ServiceUnavailable

if TYPE_CHECKING:
    from .auth.tokens import Principal

# A token may hold at most this fraction of a capacity unless told otherwise:
# half, so a single busy token always leaves the other half to everyone else,
# while a deployment with one token still gets half of the total without tuning.
DEFAULT_SHARE_DIVISOR = 2
# Seconds a refused client is told to wait (Retry-After) unless told otherwise:
# places free up as calls end, which is usually within seconds.
DEFAULT_RETRY_AFTER_SECONDS = 5


def principal_key(principal: Principal) -> tuple[str, str]:
    """The key a principal's places are counted under: its name and credential.

    A rotated token (a new credential under the same name) counts apart from
    the old one, as sessions do.
    """
    return principal.name, principal.credential_id


def default_share(total: int) -> int:
    """A token's share of `total` places when the caller does not choose one."""
    return max(1, total // DEFAULT_SHARE_DIVISOR)


class CapacityExhausted(ServiceUnavailable):
    """No place left: in total, or in the caller's share. The instance is a 503 answer."""

    def __init__(self, what: str, limit: int, *, share: bool, retry_after: int, scope: str = "on this server") -> None:
        where = "per token" if share else scope
        super().__init__(
            f"Too many {what}: at most {limit} {where}; try again later",
            headers=[("Retry-After", str(retry_after))],
        )
        self.what = what
        self.limit = limit
        self.share = share
        self.retry_after = retry_after


class _Place:
    """One taken place: handed back to its capacity when its last handle is released."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back = give_back
        self._duties: list[Callable[[], None]] = []
        self._handles = 1
        self._lock = threading.Lock()

    def add_handle(self) -> None:
        with self._lock:
            if self._handles == 0:
                raise RuntimeError("this place was already given back")
            self._handles += 1

    def add_duty(self, duty: Callable[[], None]) -> None:
        with self._lock:
            if self._handles == 0:
                raise RuntimeError("this place was already given back")
            self._duties.append(duty)

    def drop_handle(self) -> None:
        with self._lock:
            self._handles -= 1
            if self._handles:
                return
            duties, self._duties = self._duties, []
        try:
            for duty in duties:
                duty()
        finally:
            self._give_back()  # whatever a duty did, the place comes back


class Slot:
    """A handle on a taken place. `release()` gives it back; a second call does nothing."""

    def __init__(self, place: _Place) -> None:
        self._place = place
        self._released = False
        self._lock = threading.Lock()

    @property
    def released(self) -> bool:
        return self._released

    def share(self) -> Slot:
        """A second handle on the same place, for a second owner; the place returns when both are released."""
        with self._lock:
            if self._released:
                raise RuntimeError("a released slot cannot be shared")
            self._place.add_handle()
        return Slot(self._place)

    def also(self, duty: Callable[[], None]) -> None:
        """Run `duty` when the place is given back (before it returns to the capacity)."""
        self._place.add_duty(duty)

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._place.drop_handle()

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Capacity:
    """`total` places, at most `share` of them per key. Thread-safe; never blocks."""

    def __init__(
        self,
        what: str,
        total: int,
        share: int | None = None,
        *,
        retry_after: int = DEFAULT_RETRY_AFTER_SECONDS,
        scope: str = "on this server",
    ) -> None:
        share = default_share(total) if share is None else share
        if total < 1 or not 1 <= share <= total:
            raise ValueError(f"capacity for {what}: need total >= 1 and 1 <= share <= total, got {total}, {share}")
        self.what = what
        self.total = total
        self.share = share
        self.retry_after = retry_after
        self.scope = scope  # what the total is counted over, for the refusal's message
        self._used = 0
        self._by_key: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: Hashable) -> Slot:
        """A place for `key`, or `CapacityExhausted`.

        The share is checked first, since reaching it is the caller's own doing;
        a share equal to the total is no separate bound and is not named.
        """
        with self._lock:
            mine = self._by_key.get(key, 0)
            if mine >= self.share and self.share < self.total:
                raise CapacityExhausted(self.what, self.share, share=True, retry_after=self.retry_after)
            if self._used >= self.total:
                raise CapacityExhausted(
                    self.what, self.total, share=False, retry_after=self.retry_after, scope=self.scope
                )
            self._used += 1
            self._by_key[key] = mine + 1
        return Slot(_Place(lambda: self._give_back(key)))

    def in_use(self, key: Hashable | None = None) -> int:
        """Places taken, in total or by one key."""
        with self._lock:
            return self._used if key is None else self._by_key.get(key, 0)

    def _give_back(self, key: Hashable) -> None:
        with self._lock:
            self._used -= 1
            left = self._by_key[key] - 1
            if left:
                self._by_key[key] = left
            else:
                del self._by_key[key]  # keys do not pile up: only holders are remembered


class SlotBody:
    """A response body that releases its slot when it ends or is closed, even if never iterated.

    Released at the end of the iteration too: a WSGI server may fail after the
    body was sent (Werkzeug drains the socket before it calls close).
    """

    def __init__(self, body: Iterator[bytes], slot: Slot) -> None:
        self._body = body
        self._slot = slot
        self._released = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        finally:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._slot.release()

    def close(self) -> None:
        try:
            self._body.close()  # type: ignore[attr-defined]
        finally:
            self._release()
