"""MCP sessions: per-client protocol state, bound to the principal that made it.

A `Session` is what `initialize` negotiates (protocol version, client info,
log level) plus the requests in flight. Over Streamable HTTP sessions live in
a `SessionStore` keyed by an unguessable id; over WebSocket one session lives
as long as its socket. The store trusts nothing about a presented session id:
an id that is unknown, expired, or was created by a different principal gets
the same answer (None), so ids cannot be probed across principals.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .auth.tokens import Principal
from .capacity import Capacity, CapacityExhausted, Slot, principal_key
from .mcp.jsonrpc import ErrorResponse, Response
from .streams import EventStream

# Sessions are cheap (a few hundred bytes), but each is created by an
# authenticated client; this bounds memory if one misbehaves in a loop.
MAX_SESSIONS = 10_000
# One principal's sessions at most (its oldest goes first): far more than a client
# needs, and a tenth of the store, so one token cannot exhaust it for the others.
MAX_SESSIONS_PER_PRINCIPAL = 1000
# A session unused this long is forgotten; clients re-initialize on 404.
SESSION_IDLE_SECONDS = 3600.0
# Session ids are 32 random bytes, URL-safe: visible ASCII, as the spec requires.
SESSION_ID_BYTES = 32
# Notifications kept for a GET stream that nobody is reading; the oldest go first.
MAX_QUEUED_NOTIFICATIONS = 1000
# Finished answer streams of one session kept for resumption (Last-Event-ID): at most
# this many, the oldest first, and none longer than STREAM_RETENTION_SECONDS.
MAX_RESUMABLE_STREAMS = 32
STREAM_RETENTION_SECONDS = 300.0
# Idle sessions are swept at most this often (and whenever the store is full).
SWEEP_INTERVAL_SECONDS = 60.0
STANDALONE_STREAM_ID = "g"
# Server-to-client requests a session may have waiting at once (sampling,
# elicitation, roots): each holds a handler thread, so the number is bounded.
MAX_PENDING_CLIENT_REQUESTS = 64


class PendingReply:
    """One server-to-client request waiting for the client's answer."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.reply: Response | ErrorResponse | None = None


@dataclass(eq=False)
class Session:
    """State negotiated by `initialize`; shared by every request of one client."""

    principal: Principal
    session_id: str | None = None
    protocol_version: str | None = None
    client_info: dict[str, Any] = field(default_factory=dict)
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    initialized: bool = False
    log_level: str | None = None
    # Set from `clock` when the session is made; the store compares it with its idle time.
    last_used: float = field(init=False)
    # Requests now running, by id, so notifications/cancelled can reach them.
    in_flight: dict[Any, threading.Event] = field(default_factory=dict)
    # Server-to-client messages outside any request: the standalone GET stream.
    standalone: EventStream = field(default_factory=lambda: EventStream(STANDALONE_STREAM_ID, MAX_QUEUED_NOTIFICATIONS))
    # Answer streams of requests, kept so a client can resume them.
    streams: OrderedDict[str, EventStream] = field(default_factory=OrderedDict)
    # Where messages outside any request go when the transport has a standing
    # connection (a WebSocket); None means the standalone GET stream.
    outbound: Any = None
    # Resource URIs this client subscribed to (resources/subscribe).
    subscriptions: set[str] = field(default_factory=set)
    # Server-to-client requests awaiting answers, by the id we gave them.
    pending: dict[str, PendingReply] = field(default_factory=dict)
    closed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _request_ids: Iterator[int] = field(default_factory=itertools.count)
    _stream_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    # Where "now" comes from (monotonic seconds): idleness and stream retention. Tests pass their own.
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        self.last_used = self.clock()

    def new_stream(self) -> EventStream:
        """A resumable answer stream for one request.

        Finished streams are kept for a client to resume, within a count and a
        time; a stream whose handler still runs is never dropped (those are
        bounded by the transport's budget of streaming calls).
        """
        with self.lock:
            stream = EventStream(f"p{next(self._stream_ids)}", clock=self.clock)
            self.streams[stream.stream_id] = stream
            now = self.clock()
            finished = [s for s in self.streams.values() if s.finished_at is not None]
            excess = len(self.streams) - MAX_RESUMABLE_STREAMS
            for old in finished:
                expired = now - (old.finished_at or now) > STREAM_RETENTION_SECONDS
                if expired or excess > 0:
                    del self.streams[old.stream_id]
                    excess -= 1
        return stream

    def drop_stream(self, stream: EventStream) -> None:
        with self.lock:
            self.streams.pop(stream.stream_id, None)

    def find_stream(self, stream_id: str) -> EventStream | None:
        if stream_id == STANDALONE_STREAM_ID:
            return self.standalone
        with self.lock:
            return self.streams.get(stream_id)

    def expect_reply(self) -> tuple[str, PendingReply]:
        """A fresh id for a server-to-client request, and where its answer will land."""
        with self.lock:
            if len(self.pending) >= MAX_PENDING_CLIENT_REQUESTS:
                raise RuntimeError("too many requests to the client are waiting for answers")
            request_id = f"mcp-auth-{next(self._request_ids)}"
            pending = self.pending[request_id] = PendingReply()
        return request_id, pending

    def forget_reply(self, request_id: str) -> None:
        with self.lock:
            self.pending.pop(request_id, None)

    def deliver(self, reply: Response | ErrorResponse) -> bool:
        """Route a client's answer to the handler waiting for it; False when nobody is."""
        if not isinstance(reply.id, str):
            return False
        with self.lock:
            pending = self.pending.get(reply.id)
        if pending is None:
            return False
        pending.reply = reply
        pending.answered.set()
        return True

    def touch(self) -> None:
        self.last_used = self.clock()

    def close(self) -> None:
        """Mark the session ended and wake its stream readers so they end too."""
        self.closed.set()
        self.standalone.detach()
        with self.lock:
            streams = list(self.streams.values())
        for stream in streams:
            stream.detach()

    def push(self, message: dict[str, Any]) -> None:
        """Send a message outside any request: on the socket, or on the standalone GET stream
        (kept for a reader within a bound, oldest dropped first)."""
        if self.outbound is not None:
            self.outbound.send(message)
        else:
            self.standalone.send(message)


def same_principal(a: Principal, b: Principal) -> bool:
    return a.name == b.name and hmac.compare_digest(a.credential_id.encode(), b.credential_id.encode())


class SessionStore:
    """Session ids to sessions, bounded in number (a `Capacity`: a total and a
    per-principal share) and in idle time. Thread-safe."""

    def __init__(
        self,
        max_sessions: int = MAX_SESSIONS,
        idle_seconds: float = SESSION_IDLE_SECONDS,
        max_per_principal: int = MAX_SESSIONS_PER_PRINCIPAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions: dict[str, Session] = {}
        # The places sessions take, counted by the same mechanism as sockets and
        # streams; a session gives its place back when it is dropped.
        self._capacity = Capacity("sessions", max_sessions, min(max_per_principal, max_sessions))
        self._places: dict[str, Slot] = {}
        self._lock = threading.Lock()
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.max_per_principal = max_per_principal
        # Monotonic seconds for idle expiry and sweeps (and the sessions' streams); injectable for tests.
        self._clock = clock
        self._last_sweep = clock()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal) -> Session | None:
        """A new session, or None when the store is full even after expiry.

        A principal at its quota loses its own least recently used session
        instead: one token in a loop cannot crowd out the others.
        """
        with self._lock:
            if self._clock() - self._last_sweep > SWEEP_INTERVAL_SECONDS:
                self._expire_locked()
            place = self._take_place_locked(principal)
            if place is None:
                return None
            session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
            session = Session(principal=principal, session_id=session_id, clock=self._clock)
            self._sessions[session_id] = session
            self._places[session_id] = place
            return session

    def _take_place_locked(self, principal: Principal) -> Slot | None:
        """A place for one more session: past the principal's share its own least
        recently used session goes; past the total, idle sessions are swept first."""
        key = principal_key(principal)
        try:
            return self._capacity.acquire(key)
        except CapacityExhausted:
            if self._capacity.in_use(key) >= self._capacity.share:
                own = [s for s in self._sessions.values() if same_principal(s.principal, principal)]
                oldest = min(own, key=lambda s: s.last_used)
                assert oldest.session_id is not None
                self._drop_locked(oldest.session_id)
            else:
                self._expire_locked()
        try:
            return self._capacity.acquire(key)
        except CapacityExhausted:
            return None

    def get(self, session_id: str, principal: Principal) -> Session | None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._idle(session, self._clock()):
                self._drop_locked(session_id)
                return None
        if not same_principal(session.principal, principal):
            return None
        session.touch()
        return session

    def delete(self, session_id: str, principal: Principal) -> bool:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or not same_principal(session.principal, principal):
                return False
            self._drop_locked(session_id)
            return True

    def close_all(self) -> None:
        with self._lock:
            for session_id in list(self._sessions):
                self._drop_locked(session_id)

    def _drop_locked(self, session_id: str) -> None:
        session = self._sessions.pop(session_id)
        self._places.pop(session_id).release()
        session.close()

    def _idle(self, session: Session, now: float) -> bool:
        # A session with a call running is in use, however long the call takes.
        return now - session.last_used > self.idle_seconds and not session.in_flight

    def _expire_locked(self) -> None:
        now = self._clock()
        self._last_sweep = now
        for session_id, session in list(self._sessions.items()):
            if self._idle(session, now):
                self._drop_locked(session_id)
