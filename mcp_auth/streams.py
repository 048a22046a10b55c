"""Server-sent event streams that a client can resume (MCP 2025-11-25, SEP-1699).

An `EventStream` holds the messages of one SSE stream of one session: the
answer stream of a POST, or the session's standalone GET stream. Writers
(handler threads) append; readers (the HTTP connection that opened the
stream, or a later GET with `Last-Event-ID`) iterate. Events are kept, within
a bound, after they are written, so a client whose connection dropped, or
that the server asked to reconnect (`Context.close_stream`), resumes exactly
after the last event it saw, and only ever gets events of that stream.

Event ids are `<stream id>_<sequence>`; sequence 0 is the priming event (an
id and empty data) that tells the client the stream is resumable.

With a shared session store, a stream also writes its events to a `StreamLog`
(`store.events`), so a client resuming on another process gets them there: that
process reads them into a stream of its own (`replay`). It starts writing only
when a client is about to learn the stream's id (`start_log`: the answer goes
out as SSE, or a GET opens the stream): an answer sent as plain JSON names no
stream, so nothing of it is written. Without a store, nothing is written
anywhere else.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .mcp.jsonrpc import dumps

# Messages kept per stream for resumption. A POST stream carries a few
# notifications and one answer; the standalone stream is bounded here too.
MAX_EVENTS_PER_STREAM = 1000
# Detachments remembered per stream (each reconnect of a standalone GET adds one).
MAX_DETACH_POINTS = 16
# How long a client waits before reconnecting after the server closes a stream
# early, sent as the SSE `retry` field (milliseconds).
RETRY_MILLISECONDS = 1000


def event_id(stream_id: str, sequence: int) -> str:
    return f"{stream_id}_{sequence}"


def parse_event_id(value: str) -> tuple[str, int] | None:
    stream_id, _, sequence = value.strip().rpartition("_")
    # ASCII digits only: str.isdigit is also true for superscripts ("\xb2", which a
    # latin-1 header can carry) that int() refuses.
    if not stream_id or not (sequence.isascii() and sequence.isdigit()) or len(sequence) > 12:
        return None
    return stream_id, int(sequence)


def encode_event(stream_id: str, sequence: int, message: dict[str, Any]) -> bytes:
    return f"event: message\nid: {event_id(stream_id, sequence)}\ndata: ".encode() + dumps(message) + b"\n\n"


def priming_event(stream_id: str, position: int = 0) -> bytes:
    """An id and empty data: the client may resume from `position` of this stream."""
    return f"id: {event_id(stream_id, position)}\nretry: {RETRY_MILLISECONDS}\ndata: \n\n".encode()


class StreamLog(Protocol):
    """Where a stream's events are also kept, for another process (a shared store's)."""

    def append(self, sequence: int, message: dict[str, Any], final: bool) -> None: ...

    def drop(self) -> None: ...

    def kept(self) -> bool:
        """Whether the log still exists (another process may have delivered the stream and dropped it)."""
        ...


class EventStream:
    """The events of one SSE stream; also the Channel its handler sends through."""

    def __init__(
        self,
        stream_id: str,
        max_events: int = MAX_EVENTS_PER_STREAM,
        clock: Callable[[], float] = time.monotonic,
        log: StreamLog | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.log = log  # written in order, under the lock, as events are appended (after start_log)
        self._logging = False
        self._clock = clock  # monotonic seconds, for finished_at (the session's retention)
        self._events: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=max_events)
        self._next_sequence = 1
        self._condition = threading.Condition()
        # For each detach, the last sequence written before it: the connection
        # reading at that time ends after that event, whatever came later.
        self._detach_points: list[int] = []
        self._detach_base = 0  # detachments dropped from the front of _detach_points
        self.finished = False
        self.finished_at: float | None = None  # clock time of the final response
        self.refusal: BaseException | None = None
        # The highest sequence a reader has taken; a new reader without Last-Event-ID starts after it.
        self.delivered = 0
        # Connections reading now (the standalone stream keeps it at one).
        self.readers = 0
        # Set by `wake` until a reader has looked again: a wake-up is never lost.
        self._woken = False

    # --- writing ----------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Append a message (a notification or a server-to-client request)."""
        with self._condition:
            self._append(message, final=False)
            self._condition.notify_all()

    def finish(self, message: dict[str, Any]) -> None:
        """Append the final response; readers end after it."""
        with self._condition:
            self._append(message, final=True)
            self.finished = True
            self.finished_at = self._clock()
            self._condition.notify_all()

    def _append(self, message: dict[str, Any], final: bool) -> None:
        sequence = self._next_sequence
        self._events.append((sequence, message))
        self._next_sequence += 1
        if self._logging and self.log is not None:
            self.log.append(sequence, message, final)

    def start_log(self) -> None:
        """A client is about to learn this stream's id: write its events to the log from now on,
        those kept so far first (in order, under the lock the writers take)."""
        with self._condition:
            if self._logging or self.log is None:
                return
            self._logging = True
            last = self._next_sequence - 1
            for sequence, message in self._events:
                self.log.append(sequence, message, self.finished and self.refusal is None and sequence == last)

    def drop_log(self) -> None:
        """Nothing is left to resume, here or elsewhere: the log goes (if anything was written)."""
        with self._condition:
            logged, self._logging = self._logging, False
        if logged and self.log is not None:
            self.log.drop()

    def replay(self, events: list[tuple[int, dict[str, Any], bool]]) -> None:
        """Events another process wrote to this stream (read from its log), in order; those
        already here are skipped, so reading the log again only adds what is new."""
        with self._condition:
            for sequence, message, final in events:
                if sequence < self._next_sequence or self.finished:
                    continue
                self._events.append((sequence, message))
                self._next_sequence = sequence + 1
                if final:
                    self.finished = True
                    self.finished_at = self._clock()
            self._condition.notify_all()

    @property
    def last_sequence(self) -> int:
        with self._condition:
            return self._next_sequence - 1

    def refuse(self, refusal: BaseException) -> None:
        """The request was refused before anything was sent (answered as plain HTTP)."""
        with self._condition:
            self.refusal = refusal
            self.finished = True
            self.finished_at = self._clock()
            self._condition.notify_all()

    def detach(self) -> None:
        """End the current reader's connection after what was written so far; later events
        keep accumulating for a resuming client."""
        with self._condition:
            self._detach_points.append(self._next_sequence - 1)
            # Only the latest few matter: a reader older than those has been detached anyway.
            while len(self._detach_points) > MAX_DETACH_POINTS:
                self._detach_points.pop(0)
                self._detach_base += 1
            self._condition.notify_all()

    def wake(self) -> None:
        """Something outside this stream changed (another process's log grew): its reader yields
        None at once, so it can look again. Kept until it does: a reader that is writing an
        event when this comes, not waiting, must not wait for the next keepalive instead."""
        with self._condition:
            self._woken = True
            self._condition.notify_all()

    # --- reading ----------------------------------------------------------------

    def wait_started(self) -> None:
        """Block until the stream has an event, a refusal, is finished, or was detached."""
        with self._condition:
            self._condition.wait_for(lambda: bool(self._events) or self.finished or self._detachments() > 0)

    def only_final(self) -> dict[str, Any] | None:
        """The final response when it is all the stream ever carried (so it can be sent as plain JSON)."""
        with self._condition:
            if self.finished and self._detachments() == 0 and len(self._events) == 1 and self._next_sequence == 2:
                return self._events[0][1]
        return None

    def fully_sent(self, sequence: int) -> bool:
        """Whether a reader that sent up to `sequence` delivered the final response."""
        with self._condition:
            return self.finished and sequence == self._next_sequence - 1

    def attach(self) -> int:
        """For a reader that joins now: the detachments so far, which do not concern it."""
        with self._condition:
            return self._detachments()

    def _detachments(self) -> int:
        return self._detach_base + len(self._detach_points)

    def _pending(self, position: int, detachments: int) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """Events after `position` this reader may still send, and whether it ends after them."""
        if detachments < self._detach_base:
            limit: int | None = position  # detached long ago (its point was trimmed): send nothing more
        elif detachments - self._detach_base < len(self._detach_points):
            limit = self._detach_points[detachments - self._detach_base]
        else:
            limit = None
        batch = [event for event in self._events if event[0] > position and (limit is None or event[0] <= limit)]
        return batch, self.finished or limit is not None

    def read(
        self, after: int, keepalive_seconds: float, stop: Callable[[], bool], detachments: int = 0
    ) -> Iterator[tuple[int, dict[str, Any]] | None]:
        """Events with a sequence above `after`, as they come; None when `keepalive_seconds`
        pass without one, and after a `wake`. Ends when the stream is finished and drained,
        when it is detached (more than `detachments` times: the stream's first reader passes
        0, a later one `attach()`), or when `stop()` says so (checked at every event and keepalive)."""
        position = after
        while True:
            with self._condition:
                batch, ended = self._pending(position, detachments)
                if not batch and not ended:
                    if not self._woken:
                        self._condition.wait(keepalive_seconds)
                    batch, ended = self._pending(position, detachments)
                    if not batch and not ended:
                        self._woken = False  # the None yielded below is the reader's look again
                if not batch and ended:
                    return
            if stop():
                return
            if not batch:
                yield None
                continue
            for sequence, message in batch:
                yield sequence, message
                # Counted only once the yield returned, i.e. the event was written.
                position = sequence
                with self._condition:
                    self._note_delivered(sequence)

    def _note_delivered(self, sequence: int) -> None:
        self.delivered = max(self.delivered, sequence)


class StreamSharing(Protocol):
    """How one session's answer streams reach other processes (a shared store's; see `store.events`)."""

    def new_stream(self, clock: Callable[[], float]) -> EventStream:
        """A stream with an id no other process gives out, writing its events to a log."""
        ...

    def find(self, stream_id: str) -> EventStream | None:
        """A stream of this session that another process writes, read from its log; None when there is none."""
        ...

    def standalone(self, clock: Callable[[], float]) -> EventStream:
        """The session's GET stream, whose events every process can read (and resume)."""
        ...
