"""A shared session's standalone GET stream, kept in Redis so `Last-Event-ID` resumes it on any process.

Without a store, a session's GET stream (messages outside any call:
resources/updated, list_changed, messages and requests sent outside a
request) is an in-memory queue of its one process. With one, its events are
a log in the store (the same sorted set an answer stream uses,
`store.events`), numbered by the store, so the event id `g_N` means the same
event on every process: a GET on any worker or host, with or without
`Last-Event-ID`, reads the log into this process's copy of the stream and
follows it (woken by the "events" message each append publishes, and reading
it again at each keepalive, since pub/sub is at most once).

Each event is written once. A message meant for this session only (one sent
outside a request by a handler or a bridged server) is written by the process
that sends it. A notification for every session (resources/updated,
list_changed) reaches every process that has a copy of the session (the one
where it was raised, and the others through the bus), so only one of them
writes it: the stream's writer, named in the log's meta hash and checked in
the same atomic script as the append. Whoever appends when there is none, or
when the writer has appended nothing for `WRITER_LEASE_SECONDS` (it may have
stopped), becomes the writer; so the same notification is written twice
only if it reaches two processes more than that lease apart.

Bounds are the in-memory ones: at most `MAX_QUEUED_NOTIFICATIONS` events (the
oldest go first), kept for the session's idle time after the latest. Where a
reader got to is kept too (`delivered`), so a GET without `Last-Event-ID` on
another process starts where the last reader stopped, and a new reader ends
the one on another process ("reader" on the bus), as in one process: the
newest wins.

What it trusts: like answer streams, the log's key is derived from the
session's record digest, so it is only found through the session, which is
only found by its principal; `g_N` of another session names this session's
own stream, after N.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..mcp.jsonrpc import dumps
from ..refusals import ServiceUnavailable
from ..sessions import MAX_QUEUED_NOTIFICATIONS, STANDALONE_STREAM_ID
from .bus import CHANNEL
from .connection import store_call
from .events import FollowedStream, RedisStreamLog, SessionStreams

if TYPE_CHECKING:
    from ..streams import EventStream
    from .events import StreamLogs

# The notifications every process with a copy of the session receives (`Dispatcher.notify_*`, relayed
# by the bus): written by the stream's writer only.
FOR_EVERY_SESSION = frozenset(
    {
        "notifications/resources/updated",
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
        "notifications/prompts/list_changed",
    }
)
# The hash beside a GET stream's log: the next sequence, the writer and its lease, where readers got to.
META_SUFFIX = ":meta"
# A writer that appended nothing for this long may have stopped: the next process to append takes over.
# Longer than a notification takes to reach every process over the bus (milliseconds), shorter
# than a client would wait for a notification.
WRITER_LEASE_SECONDS = 5.0

# KEYS: log, meta. ARGV: writer ('' when the message is for this session only), the message (JSON),
# most events, TTL ms, lease ms, bus channel, the bus message that wakes other processes' readers.
# Returns the event's sequence, or 0 when another process is the writer.
_APPEND = """
if ARGV[1] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local meta = redis.call('HMGET', KEYS[2], 'writer', 'lease')
  if meta[1] and meta[1] ~= ARGV[1] and tonumber(meta[2] or '0') > now then return 0 end
  redis.call('HSET', KEYS[2], 'writer', ARGV[1], 'lease', now + tonumber(ARGV[5]))
end
local seq = redis.call('HINCRBY', KEYS[2], 'next', 1)
redis.call('ZADD', KEYS[1], seq, '{"seq":' .. seq .. ',"final":false,"message":' .. ARGV[2] .. '}')
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return seq
"""


def for_every_session(message: dict[str, Any]) -> bool:
    return message.get("method") in FOR_EVERY_SESSION


class SharedStandaloneStream(FollowedStream):
    """The GET stream of a shared session on this process: written to the log, read from it."""

    def __init__(self, logs: StreamLogs, log: RedisStreamLog, clock: Callable[[], float]) -> None:
        super().__init__(STANDALONE_STREAM_ID, clock, log, logs, MAX_QUEUED_NOTIFICATIONS)
        self._meta = log.key + META_SUFFIX
        self._append_script = logs.client.register_script(_APPEND)

    def send(self, message: dict[str, Any]) -> None:
        """Append to the log (once, whichever processes send it), then wake this process's reader."""
        logs = self._logs
        writer = logs.bus.process_id if for_every_session(message) else ""
        wake = json.dumps({"kind": "events", "from": logs.bus.process_id, "stream": self.shared_log.key})
        args: list[str | int] = [
            writer,
            dumps(message).decode(),
            MAX_QUEUED_NOTIFICATIONS,
            logs.running_ms,
            int(WRITER_LEASE_SECONDS * 1000),
            CHANNEL,
            wake,
        ]
        keys = [self.shared_log.key, self._meta]
        try:
            store_call(lambda: self._append_script(keys=keys, args=args))
        except ServiceUnavailable:
            return  # logged by store_call; like a message to a dropped connection, it is lost
        self.wake()

    def attach(self) -> int:
        """A new reader here: as in one process, the newest reader wins, so a reader of this
        stream on another process ends (told over the bus; it never gets the same event twice)."""
        baseline = super().attach()
        try:
            self._logs.bus.publish("reader", stream=self.shared_log.key)
        except ServiceUnavailable:
            pass  # logged; the other reader ends with its connection
        return baseline

    @property
    def delivered(self) -> int:
        """Where the last reader of this stream, on any process, got to (asked when a GET opens it)."""
        try:
            stored = store_call(lambda: self._logs.client.hget(self._meta, "delivered"))
        except ServiceUnavailable:
            stored = None  # logged; this process's own count
        return max(self._delivered_here, int(stored or 0))

    @delivered.setter
    def delivered(self, value: int) -> None:
        self._delivered_here = value

    def _note_delivered(self, sequence: int) -> None:
        self._delivered_here = max(self._delivered_here, sequence)

    def read(
        self, after: int, keepalive_seconds: float, stop: Callable[[], bool], detachments: int = 0
    ) -> Iterator[tuple[int, dict[str, Any]] | None]:
        """The log's events after `after`; each one written to the client is recorded as delivered
        in the store too (outside the stream's lock), for a GET that opens it elsewhere next."""
        self._logs.follow(self)  # before the first read: an append in between still wakes it
        self.refresh()
        events = iter(super().read(after, keepalive_seconds, stop, detachments))
        try:
            for item in events:
                yield item
                if item is not None:
                    self._store_delivered(item[0])
        finally:
            close = getattr(events, "close", None)  # a generator: ends the inner read (its unfollow) now
            if close is not None:
                close()

    def _store_delivered(self, sequence: int) -> None:
        try:
            store_call(lambda: self._logs.client.hset(self._meta, "delivered", sequence))
        except ServiceUnavailable:
            pass  # logged; a GET opened elsewhere may get this event again


class SharedSessionStreams(SessionStreams):
    """The `StreamSharing` of one shared session: its answer streams and its GET stream in the store."""

    def standalone(self, clock: Callable[[], float]) -> EventStream:
        logs = self._logs
        return SharedStandaloneStream(logs, logs.log(self._session_digest, STANDALONE_STREAM_ID), clock)


def drop_standalone(logs: StreamLogs, session_digest: str) -> None:
    """The session ended: its GET stream's log and meta go (ServiceUnavailable when the store is down)."""
    key = logs.log(session_digest, STANDALONE_STREAM_ID).key
    store_call(lambda: logs.client.delete(key, key + META_SUFFIX))
