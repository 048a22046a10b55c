"""How many children may run: a total, and a share per token, with the token's idle ones given up first.

A child is a whole process (an interpreter, its libraries, its state): tens of
megabytes each for a typical Python or Node server. The numbers bound memory
and process count, not threads:

- `DEFAULT_MAX_CHILDREN` = 32 in all: about 1-2 GB of typical servers, which a
  small machine holds, and far more than the handful of clients that usually
  share one wrapped server.
- a quarter of that per token (`per_token`, 8 by default): one token (one
  client in a loop, or a leaked session per restart) cannot take every place.

Past a token's share, the token's own least recently used child that is not
serving a request is ended to make room (its session ends; the client gets 404
and starts over): clients that never send DELETE must not lock themselves out
for the session idle time. Past the total, or when every child of the token is
busy, the new session is refused with a message saying so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from ..mcp.jsonrpc import JsonRpcError
from .link import CHILD_UNAVAILABLE

DEFAULT_MAX_CHILDREN = 32
PER_TOKEN_DIVISOR = 4


class TooManyChildren(JsonRpcError):
    """No place for another child; the message says which bound and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(CHILD_UNAVAILABLE, message, {"retryAfter": 30})


@dataclass(eq=False)
class Place:
    """One child's place: whose it is, when it was last used, how to tell it is busy, how to end it."""

    key: Hashable
    busy: Callable[[], bool]
    end: Callable[[], None]
    last_used: float = 0.0
    released: bool = field(default=False)


class ChildBudget:
    """Places for children; thread-safe. `take` a place before starting a child, `release` it after it ends."""

    def __init__(self, max_children: int = DEFAULT_MAX_CHILDREN, per_token: int | None = None) -> None:
        if max_children < 1:
            raise ValueError("max_children must be at least 1")
        self.max_children = max_children
        self.per_token = per_token if per_token is not None else max(1, max_children // PER_TOKEN_DIVISOR)
        self._lock = threading.Lock()
        self._places: list[Place] = []

    def take(self, key: Hashable, busy: Callable[[], bool], end: Callable[[], None], now: float) -> Place:
        """A place for `key`, ending the key's least recently used idle child when its share is full."""
        victim: Place | None = None
        with self._lock:
            own = [p for p in self._places if p.key == key]
            if len(own) >= self.per_token:
                idle = [p for p in own if not p.busy()]
                if not idle:
                    raise TooManyChildren(
                        f"this token already has {len(own)} stdio server processes busy (at most {self.per_token} "
                        "per token); wait for a call to finish or end a session (DELETE), then try again"
                    )
                victim = min(idle, key=lambda p: p.last_used)
                self._places.remove(victim)
                victim.released = True
            elif len(self._places) >= self.max_children:
                raise TooManyChildren(
                    f"the server runs {len(self._places)} stdio server processes, its limit; try again later"
                )
            place = Place(key, busy, end, now)
            self._places.append(place)
        if victim is not None:
            victim.end()  # outside the lock: ending a child waits for it
        return place

    def release(self, place: Place) -> None:
        with self._lock:
            if not place.released:
                place.released = True
                self._places.remove(place)

    def __len__(self) -> int:
        with self._lock:
            return len(self._places)

    def count(self, key: Hashable) -> int:
        with self._lock:
            return sum(1 for p in self._places if p.key == key)
