"""The session records of a shared store (Redis): one hash per handshake-era session.

A record holds who owns the session, and its protocol state (negotiated
revision, client info and capabilities, phase, log level, and one field per
subscription): one key, one TTL, one read. It is read at every request
(never cached: a session deleted anywhere is 404 everywhere at its next
request), and usually in the round trip of that request's step 4
(`store.reads`). Changes are written through one field at a time, only while
the record exists. Expiry is Redis's: the TTL is the idle time plus
`renew_interval`, and a process that uses the session renews it at most once
per `renew_interval` (with that request's read when it reads it itself), so a
session expires between its idle time and `renew_interval` later after its
last use, never earlier.

What it trusts and keeps: nothing a client sent is a key. Records are keyed
by the SHA-256 of the session id, so a reader of the store cannot take over a
session, and the owner is a digest of the principal's name and credential id
(itself a hash), compared in constant time. Works with a standalone Redis
(or a primary with replicas), not Redis Cluster: the scripts touch keys they
derive.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..auth.tokens import Principal
from . import reads
from .connection import store_call

if TYPE_CHECKING:
    import redis

KEY_PREFIX = "mcp_auth:session:"
OWNER_PREFIX = "mcp_auth:owner:"
# A subscription is the record's field SUBSCRIPTION_FIELD + URI: one key, one TTL, one read.
SUBSCRIPTION_FIELD = "sub:"
# A process renews a session's TTL (requests, a stream that keeps sending) at most this often,
# and at most every RENEW_FRACTION of the idle time: the TTL is an hour by default, so once a
# minute is plenty, and it saves a command per request.
TOUCH_INTERVAL_SECONDS = 60.0
RENEW_FRACTION = 0.1

# KEYS: record, owner index. ARGV: owner digest, TTL ms, most sessions per owner, record digest, key prefix.
# The owner index (creation time, microseconds, from the store's clock) bounds one principal's sessions
# across every process: past the bound its oldest go.
_CREATE = """
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'phase', 'new')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #old, 2 do
    redis.call('DEL', ARGV[5] .. old[i])
  end
end
return 1
"""
# KEYS: record, owner index. ARGV: owner digest, record digest.
_DELETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""
# KEYS: record. ARGV: field, value, field, value...: only while the record exists, so a late
# write after a DELETE elsewhere never leaves an ownerless record without a TTL behind.
_SET_IF_LIVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def record_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def record_key(session_id: str) -> str:
    return KEY_PREFIX + record_digest(session_id)


def owner_digest(principal: Principal) -> str:
    material = f"mcp_auth session owner\x00{principal.name}\x00{principal.credential_id}"
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class SessionRecord:
    owner: str
    state: dict[str, Any]

    def owned_by(self, principal: Principal) -> bool:
        return hmac.compare_digest(self.owner.encode(), owner_digest(principal).encode())


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _json(value: bytes | None) -> Any:
    return None if value is None else json.loads(value)


class SessionRecords:
    """The session records in Redis: create, load (renewing the TTL), change, delete."""

    def __init__(self, client: redis.Redis, idle_seconds: float, max_per_principal: int) -> None:
        self._client = client
        # How often a process renews a record it uses; the TTL covers the idle time past that.
        self.renew_interval = min(TOUCH_INTERVAL_SECONDS, idle_seconds * RENEW_FRACTION)
        self.ttl_ms = max(1, int((idle_seconds + self.renew_interval) * 1000))
        self.max_per_principal = max_per_principal
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)
        self._set_if_live = client.register_script(_SET_IF_LIVE)

    @staticmethod
    def _keys(session_id: str) -> tuple[str, str]:
        digest = record_digest(session_id)
        return digest, KEY_PREFIX + digest

    def create(self, session_id: str, principal: Principal) -> None:
        digest, key = self._keys(session_id)
        owner = owner_digest(principal)
        keys = [key, OWNER_PREFIX + owner]
        args: list[str | int] = [owner, self.ttl_ms, self.max_per_principal, digest, KEY_PREFIX]
        store_call(lambda: self._create(keys=keys, args=args))

    def load(self, session_id: str, renew: bool = True) -> SessionRecord | None:
        """The record (and, when `renew`, its TTL renewed in the same round trip); None when
        there is none (never made, expired, deleted)."""
        _, key = self._keys(session_id)
        fields = reads.take(key)  # read with this request's step 4 (`store.reads`)
        if fields is None and renew:

            def load() -> Any:
                pipe = self._client.pipeline(transaction=False)
                pipe.hgetall(key)
                pipe.pexpire(key, self.ttl_ms)
                return pipe.execute()[0]

            fields = store_call(load)
        elif fields is None:
            fields = store_call(lambda: self._client.hgetall(key))
        elif renew and fields:
            store_call(lambda: self._client.pexpire(key, self.ttl_ms))
        owner = fields.get(b"owner")
        if owner is None:
            return None
        prefix = SUBSCRIPTION_FIELD.encode()
        state = {
            "phase": _text(fields.get(b"phase")) or "new",
            "protocol_version": _text(fields.get(b"protocol_version")),
            "client_info": _json(fields.get(b"client_info")) or {},
            "client_capabilities": _json(fields.get(b"client_capabilities")) or {},
            "log_level": _text(fields.get(b"log_level")),
            "subscriptions": sorted(name[len(prefix) :].decode() for name in fields if name.startswith(prefix)),
        }
        return SessionRecord(owner.decode(), state)

    def exists(self, session_id: str) -> bool:
        _, key = self._keys(session_id)
        return bool(store_call(lambda: self._client.exists(key)))

    def renew(self, session_id: str) -> None:
        _, key = self._keys(session_id)
        store_call(lambda: self._client.pexpire(key, self.ttl_ms))

    def delete(self, session_id: str, principal: Principal) -> bool:
        digest, key = self._keys(session_id)
        owner = owner_digest(principal)
        keys = [key, OWNER_PREFIX + owner]
        return bool(store_call(lambda: self._delete(keys=keys, args=[owner, digest])))

    def write(self, session_id: str, change: str, value: Any) -> None:
        """One change of a session's ProtocolState (see `ProtocolState.observe`)."""
        _, key = self._keys(session_id)
        if change == "unsubscribe":
            # HDEL on a record that is gone creates nothing: no script needed.
            store_call(lambda: self._client.hdel(key, SUBSCRIPTION_FIELD + value))
            return
        if change == "subscribe":
            fields = [SUBSCRIPTION_FIELD + value, "1"]
        elif change == "negotiated":
            fields = [
                "phase",
                value["phase"],
                "protocol_version",
                value["protocol_version"] or "",
                "client_info",
                json.dumps(value["client_info"]),
                "client_capabilities",
                json.dumps(value["client_capabilities"]),
            ]
        elif change == "initialized":
            fields = ["phase", "initialized"]
        elif change == "log_level":
            fields = ["log_level", value]
        else:
            raise ValueError(f"unknown change {change!r}")
        store_call(lambda: self._set_if_live(keys=[key], args=fields))
