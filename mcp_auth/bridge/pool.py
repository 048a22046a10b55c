"""The stateless era's children: a bounded pool per token, one request per child at a time.

In the 2026-07-28 revision there is no session to own a child, so each token
has a pool. A pooled child serves one client request at a time: a stdio
server's own requests (sampling, elicitation, roots) carry no link to the
request that caused them, so a child asking something must be asking for the
one request it is serving. Ids are the link's own, so requests of the same
token that reach the same child one after another never meet.

The numbers:
- `POOL_PER_TOKEN` = 4 children per token: a client's parallel requests (the
  python client sends a round's retries concurrently) are served at once, and
  the places come out of the same `ChildBudget` as the handshake era's (a
  token's share there bounds both eras together);
- a request that finds all of its token's children busy waits up to
  `POOL_WAIT_SECONDS` (30) for one, then gets -32000 saying so;
- a child idle for `POOL_IDLE_SECONDS` (300) is stopped (the pool shrinks), at
  the next time the pools are used; starting one again costs about a second.

A pooled child is initialized by the front, with the sampling, elicitation and
roots capabilities declared (the requests' own capabilities decide, per
request, whether its asks reach the client: `stateless`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from .._version import __version__
from ..mcp.call import Channel
from ..mcp.jsonrpc import ErrorResponse, Request
from ..mcp.protocol import LATEST_PROTOCOL_VERSION
from .budget import ChildBudget, Place
from .command import StdioCommand
from .link import CHILD_UNAVAILABLE, ChildLink

POOL_PER_TOKEN = 4
POOL_WAIT_SECONDS = 30.0
POOL_IDLE_SECONDS = 300.0
_POOLED_CAPABILITIES = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": False}}


class PooledChild:
    """One pooled child and the request it serves now (`round`), as the child's `LinkOwner`."""

    def __init__(self, key: Hashable, label: str, notify: Callable[[Hashable, dict[str, Any]], None]) -> None:
        self.key = key
        self.label = label
        self._notify = notify
        self.link: ChildLink
        self.place: Place | None = None
        self.busy = False
        self.last_used = 0.0
        # The stateless round this child serves (set by `stateless`); it collects the child's asks.
        self.round: Any = None

    def push(self, message: dict[str, Any]) -> None:
        """A notification outside any request (list changed, resource updated): no session to reach in
        this era, so it goes to the open `subscriptions/listen`s of this child's token (`notify`)."""
        self._notify(self.key, message)

    def child_request(self, link: ChildLink, request: Request, channel: Channel | None) -> None:
        current = self.round
        if current is None:
            message = "no client request is being served, so nobody can answer"
            link.respond(request.id, ErrorResponse(request.id, CHILD_UNAVAILABLE, message))
            return
        current.add_ask(request)

    def child_cancelled(self, link: ChildLink, request_id: Any) -> None:
        current = self.round
        if current is not None:
            current.withdraw(request_id)

    def child_gone(self, link: ChildLink, reason: str) -> None:
        pass  # the round waiting on it gets ChildGone from the link; the pool drops it at release


class Pools:
    """Every token's pool; thread-safe. `take` a child for one request, `give_back` after."""

    def __init__(
        self,
        command: StdioCommand,
        budget: ChildBudget,
        *,
        grace_seconds: float,
        initialize_timeout: float,
        per_token: int = POOL_PER_TOKEN,
        idle_seconds: float = POOL_IDLE_SECONDS,
        wait_seconds: float = POOL_WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        notify: Callable[[Hashable, dict[str, Any]], None] = lambda key, message: None,
    ) -> None:
        self.command = command
        # Where a child's notifications outside a request go, with its token's key (the dispatcher's listens).
        self.notify = notify
        self.budget = budget
        self.grace_seconds = grace_seconds
        self.initialize_timeout = initialize_timeout
        self.per_token = per_token
        self.idle_seconds = idle_seconds
        self.wait_seconds = wait_seconds
        self._clock = clock
        self._lock = threading.Condition()
        self._children: dict[Hashable, list[PooledChild]] = {}
        self._numbers = iter(range(1, 1 << 62))
        self._closed = False

    def take(self, key: Hashable, token_name: str) -> PooledChild:
        """An idle child of the token's pool, a new one while the pool is below its bound, or -32000."""
        self.shrink()
        deadline = time.monotonic() + self.wait_seconds
        with self._lock:
            while True:
                if self._closed:
                    raise _unavailable("the server is shutting down")
                pool = self._children.setdefault(key, [])
                idle = [child for child in pool if not child.busy and child.link.gone is None]
                if idle:
                    child = max(idle, key=lambda c: c.last_used)  # the warmest
                    child.busy = True
                    return child
                if len(pool) < self.per_token:
                    child = PooledChild(key, f"pool #{next(self._numbers)} (token '{token_name}')", self.notify)
                    child.busy = True
                    pool.append(child)
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _unavailable(
                        f"all {self.per_token} stdio server processes of this token are busy; try again shortly"
                    )
                self._lock.wait(min(left, 1.0))
        try:
            self._start(child)
        except BaseException:
            self._drop(child)
            raise
        return child

    def _start(self, child: PooledChild) -> None:
        child.place = self.budget.take(
            child.key, busy=lambda: child.busy, end=lambda: self._drop(child), now=self._clock()
        )
        try:
            child.link = ChildLink(self.command, child.label, child, grace_seconds=self.grace_seconds)
        except OSError as exc:
            raise _unavailable(f"the stdio server '{self.command.display}' could not be started: {exc}") from None
        params = {
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": _POOLED_CAPABILITIES,
            "clientInfo": {"name": "mcp-auth-pool", "version": __version__},
        }
        child.link.request("initialize", params, timeout=self.initialize_timeout)
        child.link.notify("notifications/initialized")

    def give_back(self, child: PooledChild) -> None:
        """The request is done with `child`: idle again, or dropped when it ended."""
        if child.link.gone is not None:
            self._drop(child)
            return
        with self._lock:
            child.busy = False
            child.round = None
            child.last_used = self._clock()
            self._lock.notify_all()

    def shrink(self) -> None:
        """Stop the children idle longer than `idle_seconds`."""
        now = self._clock()
        with self._lock:
            stale = [
                child
                for pool in self._children.values()
                for child in pool
                if not child.busy and now - child.last_used > self.idle_seconds
            ]
        for child in stale:
            self._drop(child)

    def _drop(self, child: PooledChild) -> None:
        with self._lock:
            pool = self._children.get(child.key, [])
            if child in pool:
                pool.remove(child)
            self._lock.notify_all()
        if child.place is not None:
            self.budget.release(child.place)
        link = getattr(child, "link", None)
        if link is not None:
            threading.Thread(target=link.stop, name="mcp-bridge-pool-stop", daemon=True).start()

    def children(self) -> list[PooledChild]:
        with self._lock:
            return [child for pool in self._children.values() for child in pool]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            every = [child for pool in self._children.values() for child in pool]
            self._children.clear()
        for child in every:
            if child.place is not None:
                self.budget.release(child.place)
            link = getattr(child, "link", None)
            if link is not None:
                link.stop()


def _unavailable(message: str) -> Any:
    from ..mcp.jsonrpc import JsonRpcError

    return JsonRpcError(CHILD_UNAVAILABLE, message, {"retryAfter": 5})
