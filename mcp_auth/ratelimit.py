"""Step 4 of the pipeline: a limit on failed authentications per client address.

Each address gets a token bucket of `capacity` failures that refills over
`window_seconds`; an empty bucket means 429 with Retry-After until one failure
is allowed again. Only failures spend from the bucket, so a client presenting
a good token is never slowed down by its own traffic. IPv6 clients are keyed
by their /64, since one host usually owns a whole /64 and could otherwise
rotate addresses to escape the limit. Memory is bounded: past
`MAX_TRACKED_ADDRESSES` the least recently failing address is forgotten.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict

from .network import IPAddress

# Distinct failing addresses remembered at once: each entry is ~200 bytes,
# so the table stays around 2 MB even under a distributed guessing attempt.
MAX_TRACKED_ADDRESSES = 10_000
# One IPv6 host typically controls a /64; key the limit on it.
IPV6_KEY_PREFIX = 64
# (now - updated) * rate can come out a hair under one failure at the very
# second Retry-After named (29.999999999999996 s for 30 s); a billionth of a
# failure of slack lets a client that waited as told in, and buys a guesser nothing.
ROUNDING_SLACK = 1e-9


def _key(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # An IPv4 client on a dual-stack socket: keyed by its /64 it would share
        # the bucket ::/64 with every other such client, so one could lock out all.
        address = address.ipv4_mapped
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, IPV6_KEY_PREFIX), strict=False))
    return str(address)


class FailureRateLimiter:
    """Token buckets of allowed authentication failures, one per client address."""

    def __init__(self, capacity: int, window_seconds: float, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.capacity = float(capacity)
        self.refill_per_second = capacity / window_seconds
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - updated) * self.refill_per_second)

    def retry_after(self, address: IPAddress) -> int:
        """Seconds until this address may try again; 0 when it may try now."""
        key = _key(address)
        with self._lock:
            if key not in self._buckets:
                return 0
            level = self._level(key, self._clock())
        if level >= 1.0 - ROUNDING_SLACK:
            return 0
        return max(1, math.ceil((1.0 - level) / self.refill_per_second))

    def record_failure(self, address: IPAddress) -> None:
        key = _key(address)
        with self._lock:
            now = self._clock()
            level = self._level(key, now)
            self._buckets[key] = (max(0.0, level - 1.0), now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > MAX_TRACKED_ADDRESSES:
                self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
