"""`subscriptions/listen` (2026-07-28): what a client opted in to, and who hears of a change.

In the stateless revision there is no session to remember subscriptions: a
client opens a long-lived `subscriptions/listen` request whose params carry a
filter (`notifications`: `toolsListChanged`, `promptsListChanged`,
`resourcesListChanged`, `resourceSubscriptions`), the server acknowledges the
part of it that it honours, and from then on that one request's response
stream (HTTP) or socket (WebSocket) carries only the change notifications the
filter wants, each tagged with the listen request's id
(`params._meta["io.modelcontextprotocol/subscriptionId"]`).

This module is sans-IO: `SubscriptionFilter` parses and renders the filter,
`Subscription` is one open listen (its id, what it honours, the function that
delivers to its transport), and `Subscriptions` is the registry the
dispatcher's `notify_*` fan out through. What a principal is allowed to hear
is decided once, when the filter is honoured (`Dispatcher.honoured_filter`):
a resource URI outside the token's scope, or one that names no resource, is
never acknowledged and so never delivered; a list-changed kind is honoured
only when the token's scope has patterns for that kind (a token that can see
no prompt would only learn that someone else's prompts changed). The
transports own the stream's life: its budget, keep-alives, revocation and
shutdown.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from .jsonrpc import INVALID_PARAMS, JsonRpcError, Notification, RequestId, Response
from .modern import META_SERVER_INFO, META_SUBSCRIPTION_ID

LISTEN_METHOD = "subscriptions/listen"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
CANCELLED = "notifications/cancelled"

# The filter's list-changed members: wire name -> (the kind `notify_list_changed` takes, its scope kind).
LIST_CHANGED_MEMBERS = {
    "toolsListChanged": ("tools", "tool"),
    "promptsListChanged": ("prompts", "prompt"),
    "resourcesListChanged": ("resources", "resource"),
}
RESOURCE_SUBSCRIPTIONS = "resourceSubscriptions"

# URIs one listen may name: the same bound as a handshake session's subscriptions
# (`protocol.MAX_SUBSCRIPTIONS`), so a client cannot make one request hold more.
MAX_LISTEN_URIS = 100


@dataclass(frozen=True)
class SubscriptionFilter:
    """What a listen asks for, or what the server honours of it."""

    # Kinds whose list_changed is wanted: a subset of "tools", "prompts", "resources".
    list_changed: frozenset[str] = frozenset()
    # Resource URIs whose notifications/resources/updated is wanted, in the client's order, no repeats.
    resources: tuple[str, ...] = ()

    @classmethod
    def parse(cls, params: dict[str, Any], request_id: RequestId | None = None) -> SubscriptionFilter:
        """The filter of a listen request's params; JsonRpcError (-32602) saying what to fix.

        Members this revision does not define are ignored (a later revision
        may add kinds; the acknowledgment tells the client they were not honoured).
        """
        wanted = params.get("notifications")
        if not isinstance(wanted, dict):
            raise JsonRpcError(
                INVALID_PARAMS,
                "subscriptions/listen needs params.notifications, an object such as "
                '{"toolsListChanged": true, "resourceSubscriptions": ["file:///a"]}',
                request_id=request_id,
            )
        kinds = set()
        for member, (kind, _scope) in LIST_CHANGED_MEMBERS.items():
            value = wanted.get(member)
            if value is None:
                continue
            if not isinstance(value, bool):
                raise JsonRpcError(
                    INVALID_PARAMS, f"params.notifications.{member} must be true or false", request_id=request_id
                )
            if value:
                kinds.add(kind)
        uris = wanted.get(RESOURCE_SUBSCRIPTIONS)
        if uris is None:
            uris = []
        if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
            raise JsonRpcError(
                INVALID_PARAMS,
                f"params.notifications.{RESOURCE_SUBSCRIPTIONS} must be an array of resource URIs (strings)",
                request_id=request_id,
            )
        if len(uris) > MAX_LISTEN_URIS:
            raise JsonRpcError(
                INVALID_PARAMS,
                f"params.notifications.{RESOURCE_SUBSCRIPTIONS} names {len(uris)} URIs; "
                f"one listen may name at most {MAX_LISTEN_URIS}",
                request_id=request_id,
            )
        return cls(frozenset(kinds), tuple(dict.fromkeys(uris)))

    def to_wire(self) -> dict[str, Any]:
        """The filter as the acknowledgment echoes it: members not honoured are omitted."""
        out: dict[str, Any] = {
            member: True for member, (kind, _scope) in LIST_CHANGED_MEMBERS.items() if kind in self.list_changed
        }
        if self.resources:
            out[RESOURCE_SUBSCRIPTIONS] = list(self.resources)
        return out


class Subscription:
    """One open listen: its id, the filter it honours, and where its messages go.

    `deliver` is the transport's: it sends one tagged message on the listen's
    stream or socket, and is where the transport asks step 7 (is the token
    still current?) before anything goes out. `owner` is the key of the token
    that opened it (`capacity.principal_key`): a change that concerns one
    token only (a bridged stdio server's child runs per token) reaches only
    that token's listens.
    """

    def __init__(
        self,
        subscription_id: RequestId,
        honoured: SubscriptionFilter,
        deliver: Callable[[dict[str, Any]], None],
        owner: Hashable = None,
    ) -> None:
        self.subscription_id = subscription_id
        self.honoured = honoured
        self._deliver = deliver
        self.owner = owner

    def _tagged(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        # The id as the client sent it (string or number): clients match it by value and type.
        body = {"_meta": {META_SUBSCRIPTION_ID: self.subscription_id}, **(params or {})}
        return Notification(method, body).to_dict()

    def acknowledgment(self) -> dict[str, Any]:
        """The first message of the stream: the honoured subset of the filter."""
        return self._tagged(ACKNOWLEDGED, {"notifications": self.honoured.to_wire()})

    def final_result(self, server_info: dict[str, Any] | None = None) -> dict[str, Any]:
        """The graceful end (server shutdown): the listen request's result."""
        meta: dict[str, Any] = {META_SUBSCRIPTION_ID: self.subscription_id}
        if server_info is not None:
            meta[META_SERVER_INFO] = server_info
        return Response(self.subscription_id, {"resultType": "complete", "_meta": meta}).to_dict()

    def cancelled(self, reason: str) -> dict[str, Any]:
        """Where a listen is not a stream (WebSocket): the server tearing it down tells the client why."""
        return Notification(CANCELLED, {"requestId": self.subscription_id, "reason": reason}).to_dict()

    def list_changed(self, kind: str) -> None:
        if kind in self.honoured.list_changed:
            self._deliver(self._tagged(f"notifications/{kind}/list_changed"))

    def resource_updated(self, uri: str) -> None:
        if uri in self.honoured.resources:
            self._deliver(self._tagged("notifications/resources/updated", {"uri": uri}))


class Subscriptions:
    """The open listens of one dispatcher, whatever their transport; thread-safe.

    Bounded by the transports (each open listen holds a place of their
    stream budget), so the registry itself keeps no count.
    """

    def __init__(self) -> None:
        self._open: set[Subscription] = set()
        self._lock = threading.Lock()

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            self._open.add(subscription)

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            self._open.discard(subscription)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def _snapshot(self, owner: Hashable) -> Iterable[Subscription]:
        # Delivered outside the lock: a transport's send may take its own locks.
        with self._lock:
            return [s for s in self._open if owner is None or s.owner == owner]

    def list_changed(self, kind: str, owner: Hashable = None) -> None:
        """Tell the listens that want it that `kind`'s list changed: every listen, or with `owner`
        only the listens of that token (a change another token's listens must never hear of)."""
        for subscription in self._snapshot(owner):
            subscription.list_changed(kind)

    def resource_updated(self, uri: str, owner: Hashable = None) -> None:
        """Tell the listens that named `uri` (and were allowed to) that it changed; `owner` as above."""
        for subscription in self._snapshot(owner):
            subscription.resource_updated(uri)
