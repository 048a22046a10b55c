"""Step 4 across processes: the guessing limit of `mcp_auth.ratelimit`, counted in the shared store.

Without a store each process counts on its own, so a guesser spread over N
workers (or hosts) would get N budgets. With one, every process spends from
the same bucket per client address: the same rules as the in-memory limiter
(a distinct credential is one guess, a repeat is free, a right one gets its
guess back, an IPv6 client is keyed by its /64), each check-and-count one
atomic script in Redis, on Redis's clock, so parallel requests on different
processes cannot all pass the check before any is counted.

What it keeps: keyed digests of presented credentials, never a credential.
The digest key is made once per deployment (random, kept in the store) so
that every process computes the same digest for the same credential; a
reader of the store learns which digests were presented, which tells it
nothing about a token. Entries expire on their own (`ENTRY_TTL_FACTOR`
windows after their last use), so the store holds no more than the addresses
active in the last windows; a right credential stays known until then, so a
client that keeps using it costs one round trip per request (the check), not two.
That round trip also reads the session record the request names
(`store.reads`), so a call in a session costs one round trip in all.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from typing import TYPE_CHECKING, Any

from ..network import IPAddress
from ..ratelimit import (
    CREDENTIAL_DIGEST_BYTES,
    CREDENTIAL_KEY_BYTES,
    MAX_CREDENTIALS_PER_ADDRESS,
    ROUNDING_SLACK,
    address_key,
)
from . import reads
from .connection import store_call

if TYPE_CHECKING:
    import redis

PREFIX = "mcp_auth:guesses:"
DIGEST_KEY = "mcp_auth:guess-digest-key"
# An address's entry outlives its last use by this many windows: an emptied bucket is
# full again after one window, so two keep every limit and forget idle addresses.
ENTRY_TTL_FACTOR = 2

# KEYS: bucket (level, updated), credentials (digest -> last presented), spent (digest -> 1|0).
# ARGV: capacity, refill per second, credential digest ('' for none), TTL ms, most credentials, slack.
# Returns the seconds to wait; else 0 when the credential may be judged, -1 when it may and spent a guess.
_CHECK_AND_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, rate, slack = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[6])
local level = cap
local saved = redis.call('HMGET', KEYS[1], 'level', 'updated')
if saved[1] then level = math.min(cap, tonumber(saved[1]) + (now - tonumber(saved[2])) * rate) end
if level < 1.0 - slack then return math.max(1, math.ceil((1.0 - level) / rate)) end
local credential = ARGV[3]
if credential == '' then return 0 end
local spent = 0
if not redis.call('ZSCORE', KEYS[2], credential) then
  level = math.max(0, level - 1)
  redis.call('HSET', KEYS[3], credential, '1')
  spent = -1
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'updated', tostring(now))
redis.call('ZADD', KEYS[2], now, credential)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #old, 2 do redis.call('HDEL', KEYS[3], old[i]) end
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return spent
"""
# KEYS as above. ARGV: capacity, refill per second, credential digest, slack.
_ACCEPTED = """
if redis.call('HGET', KEYS[3], ARGV[3]) == false then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, rate, slack = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local level = cap
local saved = redis.call('HMGET', KEYS[1], 'level', 'updated')
if saved[1] then level = math.min(cap, tonumber(saved[1]) + (now - tonumber(saved[2])) * rate) end
if redis.call('HGET', KEYS[3], ARGV[3]) == '1' then
  level = math.min(cap, level + 1)
  redis.call('HSET', KEYS[3], ARGV[3], '0')
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'updated', tostring(now))
return 1
"""


def deployment_digest_key(client: redis.Redis) -> bytes:
    """The digest key every process of the deployment shares: made by the first, read by the rest."""
    store_call(lambda: client.set(DIGEST_KEY, secrets.token_bytes(CREDENTIAL_KEY_BYTES), nx=True))
    key = store_call(lambda: client.get(DIGEST_KEY))
    if not isinstance(key, bytes) or len(key) != CREDENTIAL_KEY_BYTES:
        raise RuntimeError(f"{DIGEST_KEY} in the session store is not a key mcp_auth made; delete it")
    return key


class SharedFailureRateLimiter:
    """`FailureRateLimiter`'s interface, counted in the store for every process of the deployment."""

    def __init__(self, client: redis.Redis, capacity: int, window_seconds: float) -> None:
        self.capacity = float(capacity)
        self.refill_per_second = capacity / window_seconds
        self._ttl_ms = max(1000, math.ceil(window_seconds * ENTRY_TTL_FACTOR * 1000))
        self._client = client
        self._digest_key = deployment_digest_key(client)
        self._check = client.register_script(_CHECK_AND_RECORD)
        self._accepted = client.register_script(_ACCEPTED)
        # Whether this thread's last check spent a guess, and on what: only then has `accepted` work to do.
        self._last_spent = threading.local()

    def credential_key(self, presented: bytes) -> bytes:
        """What stands for a presented credential: a digest keyed by the deployment's key, never the credential."""
        return hashlib.blake2b(presented, digest_size=CREDENTIAL_DIGEST_BYTES, key=self._digest_key).digest()

    @staticmethod
    def _keys(address: IPAddress) -> list[str]:
        base = PREFIX + address_key(address)
        return [base, base + ":credentials", base + ":spent"]

    def check_and_record(self, address: IPAddress, credential: bytes | None) -> int:
        """Step 4 for one request, as `FailureRateLimiter.check_and_record`, in one atomic script."""
        args: list[str | int] = [
            repr(self.capacity),
            repr(self.refill_per_second),
            "" if credential is None else credential.hex(),
            self._ttl_ms,
            MAX_CREDENTIALS_PER_ADDRESS,
            repr(ROUNDING_SLACK),
        ]
        keys = self._keys(address)
        read = reads.pending()
        if read is None:
            wait = int(store_call(lambda: self._check(keys=keys, args=args)))
        else:
            wait = int(store_call(lambda: self._check_reading(keys, args, read)))
        self._last_spent.on = (address, credential) if wait < 0 else None
        return max(wait, 0)

    def _check_reading(self, keys: list[str], args: list[str | int], read: reads.PendingRead) -> Any:
        """The check, and the request's session record read after it, in one round trip."""
        import redis

        pipe = self._client.pipeline(transaction=False)
        pipe.evalsha(self._check.sha, len(keys), *keys, *args)
        pipe.hgetall(read.key)
        try:
            wait, fields = pipe.execute()
        except redis.exceptions.NoScriptError:  # the store restarted (scripts are not kept): load it again
            wait = self._check(keys=keys, args=args)
            fields = self._client.hgetall(read.key)
        read.fields = fields
        return wait

    def accepted(self, address: IPAddress, credential: bytes) -> None:
        """The credential was right: give its guess back (and forget an address left with nothing spent)."""
        if getattr(self._last_spent, "on", None) != (address, credential):
            return  # a credential known here already cost nothing: nothing to give back
        self._last_spent.on = None
        args = [repr(self.capacity), repr(self.refill_per_second), credential.hex(), repr(ROUNDING_SLACK)]
        keys = self._keys(address)
        store_call(lambda: self._accepted(keys=keys, args=args))

    def retry_after(self, address: IPAddress) -> int:
        return self.check_and_record(address, None)
