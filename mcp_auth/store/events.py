"""Answer streams resumable on any process: their events kept in Redis (Last-Event-ID on another worker or host).

A handshake-era request whose handler sends something before its answer gets
an SSE answer stream; its events are kept in memory for a client that resumes
with `Last-Event-ID`. With a shared store they are also written here, in
order, as they are appended, so a resumption that reaches another process
finds them: that process reads the log into a stream of its own, replays what
the client missed, and follows the log until the answer (woken by an "events"
message on the bus at each append, and reading the log again at each
keepalive in case a wake-up was lost: pub/sub is at most once).

Bounds are the in-memory ones: at most `MAX_EVENTS_PER_STREAM` events per
stream (the oldest go first); a running stream's log lives as long as an idle
session (renewed at each event), a finished one `STREAM_RETENTION_SECONDS`,
and a log whose answer was delivered is deleted, as the in-memory stream is
dropped.

What it trusts: a stream id comes from the client, so it is never a key by
itself. A log's key is the digest of the session's record digest and the
stream id, so a stream is only ever found under the session (and so the
principal) it belongs to; another session's event ids name nothing here and
are refused as in one process. Stream ids are random, so no two processes
give out the same one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..mcp.jsonrpc import dumps
from ..refusals import ServiceUnavailable
from ..sessions import STREAM_RETENTION_SECONDS
from ..streams import MAX_EVENTS_PER_STREAM, EventStream
from .bus import MessageBus
from .connection import store_call

if TYPE_CHECKING:
    import redis

EVENTS_PREFIX = "mcp_auth:events:"
# Random bytes of a shared answer stream's id (hex): unique across processes, unguessable.
STREAM_ID_BYTES = 12
# Longer ids were not made here: not worth a store round trip.
MAX_STREAM_ID_LENGTH = 64

Event = tuple[int, dict[str, Any], bool]


class RedisStreamLog:
    """One answer stream's events in Redis: a sorted set scored by sequence."""

    def __init__(self, logs: StreamLogs, key: str) -> None:
        self._logs = logs
        self.key = key

    def append(self, sequence: int, message: dict[str, Any], final: bool) -> None:
        """Called in order, under the stream's lock; a store that is down loses only resumability elsewhere."""
        entry = dumps({"seq": sequence, "final": final, "message": message})
        ttl = self._logs.retention_ms if final else self._logs.running_ms
        client, key = self._logs.client, self.key

        def write() -> None:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(key, {entry: sequence})
            pipe.zremrangebyrank(key, 0, -(self._logs.max_events + 1))
            pipe.pexpire(key, ttl)
            pipe.execute()

        try:
            store_call(write)
            self._logs.bus.publish("events", stream=key)
        except ServiceUnavailable:
            pass  # logged by store_call; the client can still resume on this process

    def read(self, after: int) -> list[Event]:
        """The events after sequence `after`, in order."""
        raw: list[Any] = store_call(lambda: self._logs.client.zrangebyscore(self.key, f"({after}", "+inf"))
        events: list[Event] = []
        for item in raw:
            try:
                entry = json.loads(item)
                events.append((int(entry["seq"]), dict(entry["message"]), bool(entry["final"])))
            except (ValueError, TypeError, KeyError):
                continue  # not written by this program
        return events

    def kept(self) -> bool:
        try:
            return bool(store_call(lambda: self._logs.client.exists(self.key)))
        except ServiceUnavailable:
            return True  # logged; the stream is still here to resume

    def drop(self) -> None:
        try:
            store_call(lambda: self._logs.client.delete(self.key))
        except ServiceUnavailable:
            pass  # logged; the TTL removes it


class FollowedStream(EventStream):
    """Another process's answer stream, read from its log, followed while a client reads it here."""

    def __init__(
        self,
        stream_id: str,
        clock: Callable[[], float],
        log: RedisStreamLog,
        logs: StreamLogs,
        max_events: int = MAX_EVENTS_PER_STREAM,
    ) -> None:
        super().__init__(stream_id, max_events, clock=clock, log=log)
        self.start_log()  # the log exists (its writer started it), so delivering the answer here drops it
        self.shared_log = log
        self._logs = logs

    def refresh(self) -> None:
        try:
            events = self.shared_log.read(self.last_sequence)
        except ServiceUnavailable:
            return  # logged; tried again at the next wake-up or keepalive
        self.replay(events)

    def read(
        self, after: int, keepalive_seconds: float, stop: Callable[[], bool], detachments: int = 0
    ) -> Iterator[tuple[int, dict[str, Any]] | None]:
        try:
            for item in super().read(after, keepalive_seconds, stop, detachments):
                # Woken (`wake`: the log grew, read here on the reader's thread, not the bus
                # listener's), or a keepalive: the log may have grown meanwhile.
                if item is None:
                    self.refresh()
                yield item
        finally:
            self._logs.unfollow(self)


class SessionStreams:
    """The `StreamSharing` of one shared session (see `sessions.HttpStreams`)."""

    def __init__(self, logs: StreamLogs, session_digest: str) -> None:
        self._logs = logs
        self._session_digest = session_digest

    def new_stream(self, clock: Callable[[], float]) -> EventStream:
        stream_id = "p" + secrets.token_hex(STREAM_ID_BYTES)
        return EventStream(stream_id, clock=clock, log=self._logs.log(self._session_digest, stream_id))

    def find(self, stream_id: str) -> EventStream | None:
        if len(stream_id) > MAX_STREAM_ID_LENGTH:
            return None
        log = self._logs.log(self._session_digest, stream_id)
        stream = FollowedStream(stream_id, self._logs.clock, log, self._logs)
        self._logs.follow(stream)  # before the first read: an append in between still wakes it
        try:
            events = log.read(0)
        except BaseException:
            self._logs.unfollow(stream)
            raise
        if not events:
            self._logs.unfollow(stream)
            return None  # expired, delivered, or never a stream of this session
        stream.replay(events)
        return stream


class StreamLogs:
    """Every answer stream log of this process's shared sessions, and the streams followed here."""

    def __init__(
        self,
        client: redis.Redis,
        bus: MessageBus,
        running_seconds: float,
        clock: Callable[[], float],
        max_events: int = MAX_EVENTS_PER_STREAM,
        retention_seconds: float = STREAM_RETENTION_SECONDS,
    ) -> None:
        self.client = client
        self.bus = bus
        self.clock = clock
        self.max_events = max_events
        self.running_ms = max(1, int(running_seconds * 1000))
        self.retention_ms = max(1, int(retention_seconds * 1000))
        self._lock = threading.Lock()
        self._followed: dict[str, weakref.WeakSet[FollowedStream]] = {}

    def log(self, session_digest: str, stream_id: str) -> RedisStreamLog:
        material = f"{session_digest}\x00{stream_id}".encode("utf-8", "surrogatepass")
        return RedisStreamLog(self, EVENTS_PREFIX + hashlib.sha256(material).hexdigest())

    def follow(self, stream: FollowedStream) -> None:
        with self._lock:
            self._followed.setdefault(stream.shared_log.key, weakref.WeakSet()).add(stream)

    def unfollow(self, stream: FollowedStream) -> None:
        key = stream.shared_log.key
        with self._lock:
            followers = self._followed.get(key)
            if followers is not None:
                followers.discard(stream)
                if not followers:
                    del self._followed[key]

    def detach(self, key: Any) -> None:
        """A "reader" message: a client opened this stream on another process, so readers here end."""
        with self._lock:
            followers = list(self._followed.get(str(key), ()))
        for stream in followers:
            stream.detach()

    def wake(self, key: Any) -> None:
        """An "events" message from another process: the streams following that log read it again."""
        with self._lock:
            followers = list(self._followed.get(str(key), ()))
        for stream in followers:
            stream.wake()
