"""Handshake-era sessions shared by every worker and host through Redis.

A session's record lives in the store (`store.records`): who owns it and its
protocol state. Every process that serves one of its requests reads the
record first, so a session made on one worker is valid on every other, bound
to the same principal, and sees the log level set elsewhere; changes are
written through as they happen (`ProtocolState.observe`). DELETE (and
revocation, which ends a session through the same `delete`) removes the
record, so every process answers 404 from then on; a GET stream on another
process notices within `LIVENESS_CHECK_SECONDS`, or at once through the
"ended" message.

Each process also keeps a local copy of the sessions it serves (the in-memory
`SessionStore` it extends): what cannot be written to a store lives there (the
calls running here, the event streams this process writes (whose events are
also in the store, `store.events`, for a resumption elsewhere), the replies its
handlers await). A local copy is dropped when its record is gone, or when it
sits idle; the record stays for the other processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
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
from . import reads
from .bus import MessageBus
from .events import StreamLogs
from .records import SessionRecords, record_digest, record_key
from .standalone import SharedSessionStreams, drop_standalone

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("mcp_auth.store")

# A GET stream on one process learns that another ended its session (DELETE,
# revocation) within this; each check is one EXISTS.
LIVENESS_CHECK_SECONDS = 2.0
# What a client is told to wait when this process has no room for one more local copy.
LOCAL_FULL_RETRY_AFTER_SECONDS = 60


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
        super().__init__(principal, session_id, clock, SharedSessionStreams(logs, self.digest))
        self._records = records
        self._renewed = self.checked_live = clock()

        def write_through(change: str, value: Any) -> None:
            records.write(session_id, change, value)
            changed(self.digest)  # other processes' copies reload it

        self.state.observe(write_through)

    def renew_due(self) -> bool:
        """Whether this process should renew the record's TTL at its next use of it."""
        return self.clock() - self._renewed >= self._records.renew_interval

    def renewed(self) -> None:
        self._renewed = self.clock()

    def touch(self) -> None:
        super().touch()
        if not self.renew_due():
            return
        self.renewed()
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
        if kind == "reader":
            self.stream_logs.detach(message.get("stream"))
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
            record = self.records.load(session.session_id, renew=False)  # a message is no use of it
            if record is None:
                self._forget_local(session.session_id)
            else:
                session.state.restore(record.state)
        elif kind == "ended" and session.session_id is not None:
            self._forget_local(session.session_id)

    # --- the registry ----------------------------------------------------------------------

    def reading(self, session_id: str | None) -> AbstractContextManager[None]:
        """Around one request's admission and handling: the record `session_id` names is read
        in the round trip of its step 4, and `get` uses that read (`store.reads`)."""
        if not session_id:
            return nullcontext()
        return reads.reading_record(record_key(session_id.strip()))

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
        with self._lock:
            local = self._sessions.get(session_id)
        # Read at every request (validity is never cached); the TTL renewed with it when due.
        renew = not isinstance(local, SharedHttpSession) or local.renew_due()
        record = self.records.load(session_id, renew)
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
        if renew and isinstance(session, SharedHttpSession):
            session.renewed()
        session.state.restore(record.state)
        session.touch()
        return session

    def delete(self, session_id: str, principal: Principal) -> bool:
        deleted = self.records.delete(session_id, principal)
        if deleted:
            self._forget_local(session_id)
            digest = record_digest(session_id)
            try:
                self.bus.publish("ended", session=digest)  # their streams end now
                drop_standalone(self.stream_logs, digest)  # nothing of its GET stream stays behind
            except ServiceUnavailable:
                pass  # logged; their streams end at their next liveness check, the GET log with its TTL
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
