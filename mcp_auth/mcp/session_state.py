"""The MCP layer's parts of a session: protocol state, calls in flight, replies awaited from the client.

A session is a composite of parts, each with its own lock and each changed
only by its owner. The parts here are owned by the MCP layer (the
dispatcher and the handler contexts); transports read them through the
`McpSession` protocol (`context.py`) and only ever call `PendingReplies.deliver`
with an answer the client sent. Nothing here touches a socket, so every part
is tested without a server.

`ProtocolState` keeps the negotiation's lifecycle as data (h11-style): a
phase, and a table of which event moves it where; anything else is refused
rather than silently applied.

A session shared between processes (the Redis store) keeps its `ProtocolState`
in the store: each change is told to an observer (`observe`), which writes it
there, and a process that serves the session's next request loads the
store's copy first (`restore`). Changes are told one by one, so two processes
changing different things at once (a log level here, a subscription there)
lose neither.
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .jsonrpc import ErrorResponse, Response

# Server-to-client requests a session may have waiting at once (sampling,
# elicitation, roots): each holds a handler thread, so the number is bounded.
MAX_PENDING_CLIENT_REQUESTS = 64


class Phase(enum.Enum):
    """Where a session is in the MCP lifecycle."""

    NEW = "new"  # no initialize answered yet: only initialize and ping are served
    NEGOTIATED = "negotiated"  # initialize answered: a revision is agreed, requests are served
    INITIALIZED = "initialized"  # the client sent notifications/initialized too


class LifecycleEvent(enum.Enum):
    """What the client does that may move a session to another phase."""

    INITIALIZE = "initialize"
    INITIALIZED_NOTIFICATION = "notifications/initialized"


# (phase, event) -> next phase; a pair not listed is not a transition. A
# notifications/initialized before initialize (or a second one) changes nothing.
_TRANSITIONS: dict[tuple[Phase, LifecycleEvent], Phase] = {
    (Phase.NEW, LifecycleEvent.INITIALIZE): Phase.NEGOTIATED,
    (Phase.NEGOTIATED, LifecycleEvent.INITIALIZED_NOTIFICATION): Phase.INITIALIZED,
    (Phase.INITIALIZED, LifecycleEvent.INITIALIZED_NOTIFICATION): Phase.INITIALIZED,
}


class AlreadyNegotiated(Exception):
    """initialize on a session that has a revision already."""


class TooManySubscriptions(Exception):
    """resources/subscribe past the session's bound."""


# Told each change of a ProtocolState: (what changed, its new value). What changed is one of
# "negotiated" (value: the snapshot), "initialized" (None), "log_level" (the level),
# "subscribe" and "unsubscribe" (the URI).
StateObserver = Callable[[str, Any], None]


class ProtocolState:
    """What initialize negotiated and what the client set since: revision, client info and
    capabilities, log level, subscriptions. Changed by the dispatcher only; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phase = Phase.NEW
        self._protocol_version: str | None = None
        self._client_info: dict[str, Any] = {}
        self._client_capabilities: dict[str, Any] = {}
        self._log_level: str | None = None
        self._subscriptions: set[str] = set()
        self._observer: StateObserver | None = None

    # --- sharing between processes ------------------------------------------------

    def observe(self, observer: StateObserver) -> None:
        """Tell `observer` every change from now on (after it is made, outside the lock)."""
        self._observer = observer

    def _told(self, change: str, value: Any) -> None:
        if self._observer is not None:
            self._observer(change, value)

    def snapshot(self) -> dict[str, Any]:
        """Everything as plain JSON values (what `restore` takes)."""
        with self._lock:
            return {
                "phase": self._phase.value,
                "protocol_version": self._protocol_version,
                "client_info": dict(self._client_info),
                "client_capabilities": dict(self._client_capabilities),
                "log_level": self._log_level,
                "subscriptions": sorted(self._subscriptions),
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take the values of a snapshot (another process's changes); the observer is not told."""
        with self._lock:
            self._phase = Phase(snapshot.get("phase", Phase.NEW.value))
            self._protocol_version = snapshot.get("protocol_version")
            self._client_info = dict(snapshot.get("client_info") or {})
            self._client_capabilities = dict(snapshot.get("client_capabilities") or {})
            self._log_level = snapshot.get("log_level")
            self._subscriptions = set(snapshot.get("subscriptions") or ())

    # --- the lifecycle ----------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def negotiated(self) -> bool:
        """initialize was answered: the session serves requests and gets notifications."""
        return self._phase is not Phase.NEW

    @property
    def initialized(self) -> bool:
        """The client confirmed with notifications/initialized."""
        return self._phase is Phase.INITIALIZED

    def negotiate(self, version: str, client_info: dict[str, Any], client_capabilities: dict[str, Any]) -> None:
        """Record a successful initialize; AlreadyNegotiated when the session has one."""
        with self._lock:
            self._phase = self._next(LifecycleEvent.INITIALIZE, AlreadyNegotiated)
            self._protocol_version = version
            self._client_info = client_info
            self._client_capabilities = client_capabilities
        self._told("negotiated", self.snapshot())

    def confirm_initialized(self) -> bool:
        """notifications/initialized; False (and no change) when initialize was not answered yet."""
        with self._lock:
            following = _TRANSITIONS.get((self._phase, LifecycleEvent.INITIALIZED_NOTIFICATION))
            if following is None:
                return False
            self._phase = following
        self._told("initialized", None)
        return True

    def _next(self, event: LifecycleEvent, refusal: type[Exception]) -> Phase:
        following = _TRANSITIONS.get((self._phase, event))
        if following is None:
            raise refusal(f"{event.value} is not allowed in phase {self._phase.value}")
        return following

    # --- what was negotiated ------------------------------------------------------

    @property
    def protocol_version(self) -> str | None:
        return self._protocol_version

    @property
    def client_info(self) -> dict[str, Any]:
        return dict(self._client_info)

    @property
    def client_capabilities(self) -> dict[str, Any]:
        return dict(self._client_capabilities)

    def has_capability(self, name: str) -> bool:
        return name in self._client_capabilities

    # --- logging/setLevel ---------------------------------------------------------

    @property
    def log_level(self) -> str | None:
        return self._log_level

    def set_log_level(self, level: str) -> None:
        with self._lock:
            self._log_level = level
        self._told("log_level", level)

    # --- resources/subscribe --------------------------------------------------------

    def subscribe(self, uri: str, limit: int) -> None:
        """Subscribe to `uri`; TooManySubscriptions when that would pass `limit` (a repeat never does)."""
        with self._lock:
            if uri not in self._subscriptions and len(self._subscriptions) >= limit:
                raise TooManySubscriptions(f"A session may subscribe to at most {limit} resources")
            self._subscriptions.add(uri)
        self._told("subscribe", uri)

    def unsubscribe(self, uri: str) -> None:
        with self._lock:
            self._subscriptions.discard(uri)
        self._told("unsubscribe", uri)

    def is_subscribed(self, uri: str) -> bool:
        with self._lock:
            return uri in self._subscriptions

    @property
    def subscriptions(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._subscriptions)


class InFlight:
    """The session's requests now running, by JSON-RPC id, so notifications/cancelled can reach
    them and idleness can see them. Changed by the dispatcher only; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Any, threading.Event] = {}

    def begin(self, request_id: Any) -> threading.Event:
        """A call starts: the event its handler watches for cancellation."""
        cancelled = threading.Event()
        with self._lock:
            self._calls[request_id] = cancelled
        return cancelled

    def end(self, request_id: Any) -> None:
        with self._lock:
            self._calls.pop(request_id, None)

    def cancel(self, request_id: Any) -> bool:
        """notifications/cancelled: tell the running call; False when no call has that id."""
        with self._lock:
            cancelled = self._calls.get(request_id)
        if cancelled is None:
            return False
        cancelled.set()
        return True

    def ids(self) -> list[Any]:
        with self._lock:
            return list(self._calls)

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.ids())


class PendingReply:
    """One server-to-client request waiting for the client's answer."""

    def __init__(self) -> None:
        # Set by the transport thread that delivers `reply`; an async handler swaps in
        # an event that also wakes its loop before it sends the request.
        self.answered: threading.Event = threading.Event()
        self.reply: Response | ErrorResponse | None = None


class PendingReplies:
    """Server-to-client requests (sampling, elicitation, roots) awaiting the client's answers.

    Handler contexts `expect_reply` and `forget_reply`; transports `deliver`
    what the client sent. Bounded (MAX_PENDING_CLIENT_REQUESTS); thread-safe.
    """

    def __init__(self, limit: int = MAX_PENDING_CLIENT_REQUESTS) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._waiting: dict[str, PendingReply] = {}
        self._ids = itertools.count()

    def expect_reply(self) -> tuple[str, PendingReply]:
        """A fresh id for a server-to-client request, and where its answer will land."""
        with self._lock:
            if len(self._waiting) >= self._limit:
                raise RuntimeError("too many requests to the client are waiting for answers")
            request_id = f"mcp-auth-{next(self._ids)}"
            pending = self._waiting[request_id] = PendingReply()
        return request_id, pending

    def forget_reply(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    def deliver(self, reply: Response | ErrorResponse) -> bool:
        """Route a client's answer to the handler waiting for it; False when nobody is."""
        if not isinstance(reply.id, str):
            return False
        with self._lock:
            pending = self._waiting.get(reply.id)
        if pending is None:
            return False
        pending.reply = reply
        pending.answered.set()
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)
