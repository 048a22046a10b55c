"""Step 4 of the pipeline: a limit on guessing credentials, per client address.

What it limits is guessing, not mistakes. A guess is a distinct credential
presented from an address: a request without one guesses nothing, and the
same wrong credential sent again teaches its sender nothing new, so it costs
once. Each address gets a token bucket of `capacity` guesses that refills
over `window_seconds`; an empty bucket means 429 with Retry-After for every
request from that address until one guess is allowed again.

The check and the count are one step, taken under one lock before the
credential is judged (`check_and_record`): a new credential spends its guess
first and is judged after, so however many arrive at once, at most the
bucket's content of them is ever compared with a token. A credential that
turns out right gets its guess back (`accepted`) and is remembered as known,
so a client with the right token never spends anything, in parallel or not.

What it trusts and keeps: nothing a client sent. A presented credential is
remembered only as a keyed digest (BLAKE2b under a random key made for this
process and never shown), which tells two credentials apart and nothing more.
Memory is bounded twice: `MAX_CREDENTIALS_PER_ADDRESS` digests per address
(least recently presented forgotten first) and `MAX_TRACKED_ADDRESSES`
addresses (least recently active forgotten first). IPv6 clients are keyed by
their /64, since one host usually owns a whole /64 and could otherwise rotate
addresses to escape the limit.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .network import ADDRESS_CACHE_SIZE, IPAddress

# Distinct addresses remembered at once. An entry costs ~0.6 KB with one
# credential and ~3 KB with the full MAX_CREDENTIALS_PER_ADDRESS (measured with
# tracemalloc), so the table stays under ~30 MB even when a distributed guesser
# fills every entry, and at a few MB otherwise.
MAX_TRACKED_ADDRESSES = 10_000
# Credentials remembered per address. An honest address presents a handful
# (its clients' tokens, an old one left behind by a rotation); a guesser adds at
# most the budget per window. 32 keeps every honest credential remembered while
# a guesser on the same address spends a budget or two; the least recently
# presented is forgotten first, so a client that keeps retrying stays known.
MAX_CREDENTIALS_PER_ADDRESS = 32
# One IPv6 host typically controls a /64; key the limit on it.
IPV6_KEY_PREFIX = 64
# 128 bits tell credentials apart with no accidental collision in any table we
# keep; without the key nobody can make two collide on purpose.
CREDENTIAL_DIGEST_BYTES = 16
# BLAKE2b's largest key: the per-process secret the digests are keyed with.
CREDENTIAL_KEY_BYTES = 64
# (now - updated) * rate can come out a hair under one guess at the very
# second Retry-After named (29.999999999999996 s for 30 s); a billionth of a
# guess of slack lets a client that waited as told in, and buys a guesser nothing.
ROUNDING_SLACK = 1e-9


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def address_key(address: IPAddress) -> str:
    """What one bucket counts: the address, or an IPv6 client's /64 (cached: asked on every request)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # An IPv4 client on a dual-stack socket: keyed by its /64 it would share
        # the bucket ::/64 with every other such client, so one could lock out all.
        address = address.ipv4_mapped
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, IPV6_KEY_PREFIX), strict=False))
    return str(address)


@dataclass(slots=True)
class _Address:
    """One address's bucket and the credentials it has presented."""

    level: float  # guesses left at `updated`
    updated: float
    # digest -> whether its guess is still spent (False once it proved right)
    credentials: OrderedDict[bytes, bool] = field(default_factory=OrderedDict)


class FailureRateLimiter:
    """Token buckets of allowed guesses, one per client address; thread-safe."""

    def __init__(self, capacity: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(capacity)
        self.refill_per_second = capacity / window_seconds
        self._clock = clock
        self._digest_key = secrets.token_bytes(CREDENTIAL_KEY_BYTES)
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._lock = threading.Lock()

    def credential_key(self, presented: bytes) -> bytes:
        """What stands for a presented credential here: a keyed digest, never the credential."""
        return hashlib.blake2b(presented, digest_size=CREDENTIAL_DIGEST_BYTES, key=self._digest_key).digest()

    def _level(self, entry: _Address | None, now: float) -> float:
        if entry is None:
            return self.capacity
        return min(self.capacity, entry.level + (now - entry.updated) * self.refill_per_second)

    def _wait(self, level: float) -> int:
        return max(1, math.ceil((1.0 - level) / self.refill_per_second))

    def check_and_record(self, address: IPAddress, credential: bytes | None) -> int:
        """Step 4 for one request: 0 when its credential may be judged, else the seconds to wait.

        `credential` is `credential_key()` of what was presented, None when
        nothing was. A blocked address waits whatever it presents. Otherwise a
        credential this address presented before costs nothing, and a new one
        spends a guess now, in the same locked step as the check, so parallel
        requests cannot all pass the check before any is counted.
        """
        key = address_key(address)
        with self._lock:
            now = self._clock()
            entry = self._addresses.get(key)
            level = self._level(entry, now)
            if level < 1.0 - ROUNDING_SLACK:
                return self._wait(level)
            if credential is None:
                return 0
            if entry is None:
                entry = self._addresses[key] = _Address(level, now)
            else:
                entry.level, entry.updated = level, now
                self._addresses.move_to_end(key)
            if credential in entry.credentials:
                entry.credentials.move_to_end(credential)
                return 0
            entry.level = max(0.0, level - 1.0)
            entry.credentials[credential] = True
            if len(entry.credentials) > MAX_CREDENTIALS_PER_ADDRESS:
                entry.credentials.popitem(last=False)
            while len(self._addresses) > MAX_TRACKED_ADDRESSES:
                self._addresses.popitem(last=False)
            return 0

    def accepted(self, address: IPAddress, credential: bytes) -> None:
        """The credential passed by `check_and_record` was right: give its guess back.

        An address left with a full bucket and no wrong credential is
        forgotten, so clients that only ever present the right token leave
        nothing behind.
        """
        key = address_key(address)
        with self._lock:
            entry = self._addresses.get(key)
            if entry is None or credential not in entry.credentials:
                return
            now = self._clock()
            level = self._level(entry, now)
            if entry.credentials[credential]:
                level = min(self.capacity, level + 1.0)
                entry.credentials[credential] = False
            entry.level, entry.updated = level, now
            if level >= self.capacity - ROUNDING_SLACK and not any(entry.credentials.values()):
                del self._addresses[key]

    def retry_after(self, address: IPAddress) -> int:
        """Seconds until this address may present a credential again; 0 when it may now."""
        return self.check_and_record(address, None)

    def __len__(self) -> int:
        return len(self._addresses)
