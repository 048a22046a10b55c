"""What a transport hands the dispatcher with each message: `Call`, and the session it belongs to.

`Call` carries the session, the principal that passed the bearer check, the
channel for server-to-client messages, the step-7 check and, for a
stateless (2026-07-28) request, its checked envelope (`Call.modern`).
`McpSession` says what this layer needs of a session (its parts are in
`session_state`); the transports' `sessions.Session` provides it for the
handshake era, and `StatelessSession` stands in for one in the stateless era,
where there is none: a fresh one per request, negotiated nothing, registered
nowhere, so no notification outside the request ever reaches it.
`LiveSessions` is the registry of live sessions as notification fan-out sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..auth.tokens.principal import Principal
from .modern import ModernRequest
from .session_state import InFlight, PendingReplies, ProtocolState


class McpSession(Protocol):
    """What the MCP layer needs of a session; `mcp_auth.sessions.Session` provides it.

    The parts the MCP layer owns and changes (`state`: what initialize
    negotiated, log level, subscriptions; `in_flight`: the calls running;
    `replies`: server-to-client requests awaiting the client's answer), and of
    the session's lifecycle only what it reads: its id, whether it is closed,
    and the way to reach the client outside a request (`push`); and `close`, for
    a dispatcher whose backend ended (the stdio bridge's child).
    """

    @property
    def session_id(self) -> str | None: ...

    @property
    def state(self) -> ProtocolState: ...

    @property
    def in_flight(self) -> InFlight: ...

    @property
    def replies(self) -> PendingReplies: ...

    @property
    def closed(self) -> threading.Event: ...

    def push(self, message: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """End the session (what serves its calls may end it: a stdio bridge whose child ended)."""
        ...


class LiveSessions(Protocol):
    """The one registry of live sessions of every transport, as notification fan-out sees it."""

    def each_negotiated(self) -> list[McpSession]:
        """Every open session whose initialize was answered, whatever its transport."""
        ...

    def relay(self, event: str, value: Any) -> None:
        """Pass a notification for every session on to other processes serving sessions (if any)."""
        ...


class Channel(Protocol):
    """Where a call's server-to-client messages go (an SSE stream, a socket)."""

    def send(self, message: dict[str, Any]) -> None: ...


# How long a handler waits for the client to answer a server-to-client request
# (sampling, elicitation, roots) by default: elicitation waits for a person.
CLIENT_REQUEST_TIMEOUT_SECONDS = 300.0


class ClientError(Exception):
    """The client answered a server-to-client request with an error, or cannot be asked."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass
class Call:
    """What a transport hands the dispatcher with each message."""

    session: McpSession
    principal: Principal
    channel: Channel
    client_address: str
    principal_is_current: Callable[[Principal], bool]
    # The stateless revision's per-request envelope; None for a handshake-era call.
    modern: ModernRequest | None = None
    # Whether every principal sees the same lists (no token can have a scope, e.g. a
    # single token or --no-auth): only then may a list be cached as "public".
    same_view_for_all: bool = field(default=False, kw_only=True)

    def is_current(self) -> bool:
        """Step 7, the second lock: is the principal that passed the bearer check still valid?

        The one question every path asks before it acts for the principal:
        dispatch (before any handler), client notifications, the HTTP event
        stream loop (at every event and keepalive) and the WebSocket loops
        (per message and between messages). A new path asks it here too.
        """
        return self.principal_is_current(self.principal)


class StatelessSession:
    """The session of one stateless request: its own calls in flight (so the request can be
    cancelled), nothing negotiated, nothing kept. `closed` is set when the request's
    connection ends, which cancels a handler still running for it."""

    def __init__(self) -> None:
        self.state = ProtocolState()
        self.in_flight = InFlight()
        self.replies = PendingReplies()
        self.closed = threading.Event()

    @property
    def session_id(self) -> str | None:
        return None

    def close(self) -> None:
        """The request's connection ended: what still runs for it is cancelled (`ctx.cancelled`)."""
        self.closed.set()
        for request_id in self.in_flight.ids():
            self.in_flight.cancel(request_id)

    def push(self, message: dict[str, Any]) -> None:
        """Nothing outside the request reaches a stateless client (no GET stream): dropped."""

    def send(self, message: dict[str, Any]) -> None:
        """The channel of a request whose answer is plain JSON: nothing else can go out, dropped."""
