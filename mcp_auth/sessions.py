"""MCP sessions: a composite of owner parts, bound to the principal that made it, and the one registry of live ones.

A `Session` is the lifecycle (id, principal, last use, closed) plus parts,
each with its own lock and changed only by its owner:

- `state` (`mcp.session_state.ProtocolState`): what initialize negotiated,
  log level, subscriptions; the MCP layer's.
- `in_flight` (`InFlight`): the calls running; the MCP layer's.
- `replies` (`PendingReplies`): server-to-client requests awaiting the
  client's answers; the MCP layer's (transports only `deliver`).
- `streams` (`HttpStreams`, on an `HttpSession` only): the answer streams kept
  for resumption and the standalone GET stream; the HTTP transport's.

`SessionStore` is the one registry of live sessions of every transport:
Streamable HTTP sessions by an unguessable id (bounded by a `Capacity`),
and WebSocket sessions registered anonymously for the socket's life (bounded
by the socket capacity, not this one). Notification fan-out asks it for every
negotiated session (`each_negotiated`). The store trusts nothing about a
presented session id: an id that is unknown, expired, or was created by a
different principal gets the same answer (None), so ids cannot be probed
across principals.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .auth.tokens import Principal
from .capacity import Capacity, CapacityExhausted, Slot, principal_key
from .mcp.context import Channel, McpSession
from .mcp.session_state import InFlight, PendingReplies, ProtocolState
from .streams import EventStream, StreamSharing

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


class HttpStreams:
    """The event streams of one HTTP session; the HTTP transport's part. Thread-safe.

    The standalone GET stream (messages outside any request, one reader at a
    time, the newest wins) and the answer streams of requests, kept after they
    finish so a client can resume them, within a count and a time.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, sharing: StreamSharing | None = None) -> None:
        self._lock = threading.Lock()
        # With a shared store: answer streams other processes can resume (ids unique across them).
        self._sharing = sharing
        # Monotonic seconds: when a finished answer stream is past its retention.
        self._clock = clock
        # With a shared store, the GET stream's events are in the store too: resumable on any process.
        if sharing is None:
            self.standalone = EventStream(STANDALONE_STREAM_ID, MAX_QUEUED_NOTIFICATIONS)
        else:
            self.standalone = sharing.standalone(clock)
        self._streams: OrderedDict[str, EventStream] = OrderedDict()
        self._ids = itertools.count(1)

    def new_stream(self) -> EventStream:
        """A resumable answer stream for one request.

        Finished streams are kept for a client to resume, within a count and a
        time; a stream whose handler still runs is never dropped (those are
        bounded by the transport's budget of streaming calls).
        """
        with self._lock:
            if self._sharing is not None:
                stream = self._sharing.new_stream(self._clock)
            else:
                stream = EventStream(f"p{next(self._ids)}", clock=self._clock)
            self._streams[stream.stream_id] = stream
            now = self._clock()
            finished = [s for s in self._streams.values() if s.finished_at is not None]
            excess = len(self._streams) - MAX_RESUMABLE_STREAMS
            for old in finished:
                expired = now - (old.finished_at or now) > STREAM_RETENTION_SECONDS
                if expired or excess > 0:
                    del self._streams[old.stream_id]
                    excess -= 1
        return stream

    def drop_stream(self, stream: EventStream) -> None:
        with self._lock:
            self._streams.pop(stream.stream_id, None)
        stream.drop_log()  # nothing left to resume, here or elsewhere

    def find_stream(self, stream_id: str) -> EventStream | None:
        """The stream a Last-Event-ID names: an answer stream still kept, or the standalone one;
        with a shared store, also an answer stream of this session that another process writes."""
        if stream_id == STANDALONE_STREAM_ID:
            return self.standalone
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is not None and stream.finished and stream.log is not None and not stream.log.kept():
            self.drop_stream(stream)  # its answer was delivered by another process
            return None
        if stream is None and self._sharing is not None:
            return self._sharing.find(stream_id)
        return stream

    def open_standalone(self) -> int:
        """A new reader of the standalone stream; its detach baseline.

        One reader at a time, and the newest wins: a client reconnecting after
        a network drop must not be locked out by its own dead connection. The
        new reader's baseline is taken with the old one's detach, under one lock.
        """
        with self._lock:
            if self.standalone.readers > 0:
                self.standalone.detach()
            self.standalone.readers += 1
            return self.standalone.attach()

    def leave_standalone(self) -> None:
        with self._lock:
            self.standalone.readers -= 1

    def close(self) -> None:
        """Wake every reader, so its connection ends."""
        self.standalone.detach()
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.detach()


@dataclass(eq=False)
class Session:
    """One client's session: its lifecycle, and the MCP layer's parts (see the module docstring)."""

    principal: Principal
    # Where messages outside any request go: the socket of a WebSocket session,
    # the standalone GET stream of an HTTP one.
    outbound: Channel
    session_id: str | None = None
    # Where "now" comes from (monotonic seconds): idleness and stream retention. Tests pass their own.
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    state: ProtocolState = field(default_factory=ProtocolState, init=False)
    in_flight: InFlight = field(default_factory=InFlight, init=False)
    replies: PendingReplies = field(default_factory=PendingReplies, init=False)
    closed: threading.Event = field(default_factory=threading.Event, init=False)
    # Set from `clock` when the session is made; the store compares it with its idle time.
    last_used: float = field(init=False)
    # Run once when the session closes (the registry forgetting an anonymous session).
    _closing: list[Callable[[Session], None]] = field(default_factory=list, init=False, repr=False)
    _lifecycle_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.last_used = self.clock()

    def touch(self) -> None:
        self.last_used = self.clock()

    def on_close(self, callback: Callable[[Session], None]) -> None:
        """Call `callback(session)` when the session closes; at once when it is closed already."""
        with self._lifecycle_lock:
            if not self.closed.is_set():
                self._closing.append(callback)
                return
        callback(self)

    def close(self) -> None:
        """Mark the session ended: handlers waiting on the client give up, notifications stop."""
        with self._lifecycle_lock:
            self.closed.set()
            closing, self._closing = self._closing, []
        for callback in closing:
            callback(self)

    def push(self, message: dict[str, Any]) -> None:
        """Send a message outside any request (kept for a GET reader within a bound, oldest dropped first)."""
        self.outbound.send(message)


class HttpSession(Session):
    """A Streamable HTTP session: a Session with the HTTP transport's part, `streams`."""

    def __init__(
        self,
        principal: Principal,
        session_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sharing: StreamSharing | None = None,
    ) -> None:
        streams = HttpStreams(clock, sharing)
        super().__init__(principal, streams.standalone, session_id, clock)
        self.streams = streams

    def close(self) -> None:
        """Mark the session ended and wake its stream readers so they end too."""
        super().close()
        self.streams.close()


def same_principal(a: Principal, b: Principal) -> bool:
    return a.name == b.name and hmac.compare_digest(a.credential_id.encode(), b.credential_id.encode())


class SessionStore:
    """The one registry of live sessions, of every transport. Thread-safe.

    HTTP sessions by id, bounded in number (a `Capacity`: a total and a
    per-principal share) and in idle time; WebSocket sessions anonymously, for
    as long as their socket is open (`register`; they take no place here, the
    socket capacity bounds them). The app creates one and hands it to the
    dispatcher (notifications: `each_negotiated`) and both transports.
    """

    def __init__(
        self,
        max_sessions: int = MAX_SESSIONS,
        idle_seconds: float = SESSION_IDLE_SECONDS,
        max_per_principal: int = MAX_SESSIONS_PER_PRINCIPAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions: dict[str, HttpSession] = {}
        # Sessions without an id (one per open WebSocket), until they close.
        self._anonymous: set[Session] = set()
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
        """The sessions that hold a place: those with an id (HTTP)."""
        return len(self._sessions)

    def register(self, session: Session) -> Session:
        """Keep an anonymous session (a WebSocket's) until it closes: it gets notifications
        like any other. It takes no place: the transport bounds its own."""
        with self._lock:
            self._anonymous.add(session)
        session.on_close(self._forget_anonymous)
        return session

    def _forget_anonymous(self, session: Session) -> None:
        with self._lock:
            self._anonymous.discard(session)

    def each_negotiated(self) -> list[McpSession]:
        """Every open session of every transport whose initialize was answered."""
        with self._lock:
            live: list[Session] = [*self._sessions.values(), *self._anonymous]
        return [s for s in live if s.state.negotiated and not s.closed.is_set()]

    def create(self, principal: Principal) -> HttpSession | None:
        """A new session, or None when the store is full even after expiry.

        A principal at its quota loses its own least recently used session
        instead: one token in a loop cannot crowd out the others.
        """
        return self._add(principal, secrets.token_urlsafe(SESSION_ID_BYTES))

    def _add(self, principal: Principal, session_id: str) -> HttpSession | None:
        """Keep a session under `session_id` (new here, or known to a shared store), if it gets a place."""
        with self._lock:
            if self._clock() - self._last_sweep > SWEEP_INTERVAL_SECONDS:
                self._expire_locked()
            place = self._take_place_locked(principal)
            if place is None:
                return None
            session = self._new_session(principal, session_id)
            self._sessions[session_id] = session
            self._places[session_id] = place
            return session

    def _new_session(self, principal: Principal, session_id: str) -> HttpSession:
        """The session object kept here (a shared store keeps one that writes through to it)."""
        return HttpSession(principal, session_id, self._clock)

    # --- what other processes must hear (a shared store's; one process has no one to tell) ---

    def relay_reply(self, session: HttpSession, message: dict[str, Any]) -> None:
        """A client's answer that no handler here waits for: perhaps one in another process does."""

    def relay_cancel(self, session: HttpSession, request_id: Any) -> None:
        """notifications/cancelled: the call may run in another process."""

    def relay(self, event: str, value: Any) -> None:
        """A notification for every session (`Dispatcher.notify_*`): other processes have sessions too."""

    def is_live(self, session: HttpSession) -> bool:
        """Whether a session a stream is reading still exists (asked at every event and keepalive).

        In memory, a session that ends is closed, which the reader sees anyway; a
        shared store also asks the store, since another process may have ended it.
        """
        return not session.closed.is_set()

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

    def get(self, session_id: str, principal: Principal) -> HttpSession | None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            # A session closed by what serves it (a stdio bridge whose child ended) is gone too.
            if self._idle(session, self._clock()) or session.closed.is_set():
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
        """Close every live session (server shutdown): HTTP ones are forgotten, anonymous ones leave as they close."""
        with self._lock:
            for session_id in list(self._sessions):
                self._drop_locked(session_id)
            anonymous = list(self._anonymous)
        for session in anonymous:
            session.close()

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
