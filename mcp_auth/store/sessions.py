"""Handshake-era sessions shared by every worker and host through Redis.

A session's record lives in the store: who owns it, and its protocol state
(negotiated revision, client info and capabilities, phase, log level,
subscriptions). Every process that serves one of its requests loads the
record first (one round trip: the record, its subscriptions, and a TTL
refresh, pipelined), so a session made on one worker is valid on every
other, bound to the same principal, and sees the log level set elsewhere.
Changes are written through as they happen (`ProtocolState.observe`), one
field at a time. Expiry is Redis's: the record's TTL is the idle time, renewed
by each request and, at most once per `TOUCH_INTERVAL_SECONDS`, by a stream
that is sending. DELETE (and revocation, which ends a session through the
same `delete`) removes the record, so every process answers 404 from then on;
a GET stream on another process notices within `LIVENESS_CHECK_SECONDS`.

Each process also keeps a local copy of the sessions it serves (the in-memory
`SessionStore` it extends): what cannot be written to a store lives there (the
calls running here, the event streams this process writes (whose events are
also in the store, `store.events`, for a resumption elsewhere), the replies its
handlers await). A local copy is dropped when its record is gone, or when it
sits idle; the record stays for the other processes.

What it trusts and keeps: nothing a client sent is a key. Records are keyed by
the SHA-256 of the session id, so a reader of the store cannot take over a
session, and the owner is a digest of the principal's name and credential id
(itself a hash), compared in constant time.

Works with a standalone Redis (or a primary with replicas), not Redis Cluster:
the scripts touch keys they derive.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..auth.tokens import Principal
from ..mcp.jsonrpc import ErrorResponse, JsonRpcError, Response, dumps, parse_message
from ..refusals import ServiceUnavailable
from ..sessions import (
    MAX_SESSIONS,
    MAX_SESSIONS_PER_PRINCIPAL,
    SESSION_IDLE_SECONDS,
    HttpSession,
    SessionStore,
    same_principal,
)
from .bus import MessageBus
from .connection import store_call
from .events import StreamLogs

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("mcp_auth.store")

KEY_PREFIX = "mcp_auth:session:"
OWNER_PREFIX = "mcp_auth:owner:"
# A stream that keeps sending renews its session's TTL at most this often: the
# TTL is an hour by default, so once a minute is plenty and costs nothing.
TOUCH_INTERVAL_SECONDS = 60.0
# A GET stream on one process learns that another ended its session (DELETE,
# revocation) within this; each check is one EXISTS.
LIVENESS_CHECK_SECONDS = 2.0
# What a client is told to wait when this process has no room for one more local copy.
LOCAL_FULL_RETRY_AFTER_SECONDS = 60

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
    redis.call('DEL', ARGV[5] .. old[i], ARGV[5] .. old[i] .. ':subs')
  end
end
return 1
"""
# KEYS: record, subscriptions, owner index. ARGV: owner digest, record digest.
_DELETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""
# KEYS: record. ARGV: field, value, field, value...: only while the record exists, so a late
# write after a DELETE elsewhere never leaves an ownerless record without a TTL behind.
_SET_IF_LIVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
# KEYS: record, subscriptions. ARGV: 'add' or 'remove', URI.
_SUBSCRIBE_IF_LIVE = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
if ARGV[1] == 'add' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
"""


def record_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


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
        self.idle_ms = max(1, int(idle_seconds * 1000))
        self.max_per_principal = max_per_principal
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)
        self._set_if_live = client.register_script(_SET_IF_LIVE)
        self._subscribe_if_live = client.register_script(_SUBSCRIBE_IF_LIVE)

    @staticmethod
    def _keys(session_id: str) -> tuple[str, str, str]:
        digest = record_digest(session_id)
        return digest, KEY_PREFIX + digest, KEY_PREFIX + digest + ":subs"

    def create(self, session_id: str, principal: Principal) -> None:
        digest, key, _ = self._keys(session_id)
        owner = owner_digest(principal)
        keys = [key, OWNER_PREFIX + owner]
        args: list[str | int] = [owner, self.idle_ms, self.max_per_principal, digest, KEY_PREFIX]
        store_call(lambda: self._create(keys=keys, args=args))

    def load(self, session_id: str) -> SessionRecord | None:
        """The record, its TTL renewed; None when there is none (never made, expired, deleted)."""
        _, key, subs = self._keys(session_id)

        def load() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(key)
            pipe.smembers(subs)
            pipe.pexpire(key, self.idle_ms)
            pipe.pexpire(subs, self.idle_ms)
            return pipe.execute()

        fields, subscriptions, _, _ = store_call(load)
        owner = fields.get(b"owner")
        if owner is None:
            return None
        state = {
            "phase": _text(fields.get(b"phase")) or "new",
            "protocol_version": _text(fields.get(b"protocol_version")),
            "client_info": _json(fields.get(b"client_info")) or {},
            "client_capabilities": _json(fields.get(b"client_capabilities")) or {},
            "log_level": _text(fields.get(b"log_level")),
            "subscriptions": sorted(item.decode() for item in subscriptions),
        }
        return SessionRecord(owner.decode(), state)

    def exists(self, session_id: str) -> bool:
        _, key, _ = self._keys(session_id)
        return bool(store_call(lambda: self._client.exists(key)))

    def renew(self, session_id: str) -> None:
        _, key, subs = self._keys(session_id)

        def renew() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.pexpire(key, self.idle_ms)
            pipe.pexpire(subs, self.idle_ms)
            pipe.execute()

        store_call(renew)

    def delete(self, session_id: str, principal: Principal) -> bool:
        digest, key, subs = self._keys(session_id)
        owner = owner_digest(principal)
        keys = [key, subs, OWNER_PREFIX + owner]
        return bool(store_call(lambda: self._delete(keys=keys, args=[owner, digest])))

    def write(self, session_id: str, change: str, value: Any) -> None:
        """One change of a session's ProtocolState (see `ProtocolState.observe`)."""
        _, key, subs = self._keys(session_id)
        if change in ("subscribe", "unsubscribe"):
            action = "add" if change == "subscribe" else "remove"
            store_call(lambda: self._subscribe_if_live(keys=[key, subs], args=[action, value]))
            return
        if change == "negotiated":
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


class SharedHttpSession(HttpSession):
    """A local copy of a shared session: its state changes are written to the store, and a
    stream that keeps it in use renews the record's TTL."""

    def __init__(
        self,
        principal: Principal,
        session_id: str,
        records: SessionRecords,
        clock: Callable[[], float],
        changed: Callable[[str], None],
        logs: StreamLogs,
    ) -> None:
        self.digest = record_digest(session_id)
        super().__init__(principal, session_id, clock, logs.for_session(self.digest))
        self._records = records
        self._renewed = self.checked_live = clock()

        def write_through(change: str, value: Any) -> None:
            records.write(session_id, change, value)
            changed(self.digest)  # other processes' copies reload it

        self.state.observe(write_through)

    def touch(self) -> None:
        super().touch()
        now = self.clock()
        if now - self._renewed < TOUCH_INTERVAL_SECONDS:
            return
        self._renewed = now
        assert self.session_id is not None
        try:
            self._records.renew(self.session_id)
        except ServiceUnavailable:
            pass  # logged by store_call; the next request renews it, or finds it gone


class SharedSessionStore(SessionStore):
    """The SessionStore of a process that shares its HTTP sessions through Redis.

    WebSocket sessions stay local (a socket is one connection to one
    process); HTTP sessions are records in the store with a local copy here.
    """

    def __init__(
        self,
        client: redis.Redis,
        max_sessions: int = MAX_SESSIONS,
        idle_seconds: float = SESSION_IDLE_SECONDS,
        max_per_principal: int = MAX_SESSIONS_PER_PRINCIPAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_sessions, idle_seconds, max_per_principal, clock)
        self.records = SessionRecords(client, idle_seconds, max_per_principal)
        self.bus = MessageBus(client, self._from_elsewhere)
        # Answer streams' events, so a Last-Event-ID reaching this process resumes one written by another.
        self.stream_logs = StreamLogs(client, self.bus, idle_seconds, clock)
        # Local copies by record digest: what messages from other processes name.
        self._by_digest: dict[str, SharedHttpSession] = {}
        # Set by the app: a notification another process raised, for this process's sessions.
        self.on_notification: Callable[[str, Any], None] | None = None

    def _new_session(self, principal: Principal, session_id: str) -> HttpSession:
        session = SharedHttpSession(
            principal, session_id, self.records, self._clock, self._state_changed, self.stream_logs
        )
        self._by_digest[session.digest] = session  # under the store's lock (`_add`)
        return session

    def _drop_locked(self, session_id: str) -> None:
        self._by_digest.pop(record_digest(session_id), None)
        super()._drop_locked(session_id)

    def close_all(self) -> None:
        self.bus.close()
        super().close_all()

    # --- messages to and from the other processes ---------------------------------------

    def _state_changed(self, digest: str) -> None:
        self.bus.publish("state", session=digest)

    def relay_reply(self, session: HttpSession, message: dict[str, Any]) -> None:
        if isinstance(session, SharedHttpSession):
            self.bus.publish("reply", session=session.digest, message=message)

    def relay_cancel(self, session: HttpSession, request_id: Any) -> None:
        if isinstance(session, SharedHttpSession) and isinstance(request_id, (str, int)):
            self.bus.publish("cancel", session=session.digest, request_id=request_id)

    def relay(self, event: str, value: Any) -> None:
        try:
            self.bus.publish("notify", event=event, value=value)
        except ServiceUnavailable:
            pass  # logged by store_call; this process's sessions were told

    def _from_elsewhere(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "notify":
            if self.on_notification is not None:
                self.on_notification(str(message.get("event")), message.get("value"))
            return
        if kind == "events":
            self.stream_logs.wake(message.get("stream"))
            return
        with self._lock:
            session = self._by_digest.get(str(message.get("session")))
        if session is None or session.closed.is_set():
            return  # not a session this process has a copy of
        if kind == "reply":
            raw = message.get("message")
            if not isinstance(raw, dict):
                return
            try:
                reply = parse_message(dumps(raw))
            except JsonRpcError:
                return
            if isinstance(reply, (Response, ErrorResponse)):
                session.replies.deliver(reply)
        elif kind == "cancel":
            session.in_flight.cancel(message.get("request_id"))
        elif kind == "state" and session.session_id is not None:
            record = self.records.load(session.session_id)
            if record is None:
                self._forget_local(session.session_id)
            else:
                session.state.restore(record.state)
        elif kind == "ended" and session.session_id is not None:
            self._forget_local(session.session_id)

    # --- the registry ----------------------------------------------------------------------

    def create(self, principal: Principal) -> HttpSession | None:
        self.bus.start()
        session = super().create(principal)
        if session is None:
            return None
        assert session.session_id is not None
        try:
            self.records.create(session.session_id, principal)
        except ServiceUnavailable:
            self._forget_local(session.session_id)
            raise
        return session

    def get(self, session_id: str, principal: Principal) -> HttpSession | None:
        self.bus.start()
        record = self.records.load(session_id)
        if record is None:
            self._forget_local(session_id)  # ended elsewhere, or expired
            return None
        if not record.owned_by(principal):
            return None  # the same answer as an unknown id; the owner's copy stays
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or not same_principal(session.principal, principal):
            session = self._add(principal, session_id)
            if session is None:
                raise ServiceUnavailable(
                    "This server process has too many open sessions; try again later",
                    headers=[("Retry-After", str(LOCAL_FULL_RETRY_AFTER_SECONDS))],
                )
        session.state.restore(record.state)
        session.touch()
        return session

    def delete(self, session_id: str, principal: Principal) -> bool:
        deleted = self.records.delete(session_id, principal)
        if deleted:
            self._forget_local(session_id)
            try:
                self.bus.publish("ended", session=record_digest(session_id))  # their streams end now
            except ServiceUnavailable:
                pass  # logged; their streams end at their next liveness check
        else:
            super().delete(session_id, principal)  # a local copy whose record is already gone
        return deleted

    def is_live(self, session: HttpSession) -> bool:
        if session.closed.is_set():
            return False
        if not isinstance(session, SharedHttpSession) or session.session_id is None:
            return True
        now = self._clock()
        if now - session.checked_live < LIVENESS_CHECK_SECONDS:
            return True
        session.checked_live = now
        try:
            live = self.records.exists(session.session_id)
        except ServiceUnavailable:
            return True  # a store that is down ends no stream; its requests get 503
        if not live:
            self._forget_local(session.session_id)
        return live

    def _forget_local(self, session_id: str) -> None:
        with self._lock:
            if session_id in self._sessions:
                self._drop_locked(session_id)
