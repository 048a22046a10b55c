"""Notifications outside a request: the Dispatcher's fan-out to every live session.

An app hands the dispatcher its registry of live sessions (`attach_sessions`);
`notify_resource_updated` and `notify_list_changed` reach every negotiated
session in it and every open `subscriptions/listen` that wants them, and,
through the registry's `relay`, the sessions and listens of the other
processes of a deployment that shares them (a registry alone in its process
relays nothing). What another process relays arrives at `notify_from_elsewhere`,
which tells this process's sessions and listens only, so nothing goes round in circles.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .call import LiveSessions, McpSession
from .jsonrpc import Notification
from .subscriptions import Subscriptions

_LIST_KINDS = ("tools", "resources", "prompts")


class SessionNotifications:
    """The fan-out part of the Dispatcher (a mixin: it holds the registries of live sessions)."""

    def __init__(self) -> None:
        # The registries of live sessions (one per app serving this dispatcher, usually
        # one), for notifications outside a request. Weak: an app dropped without
        # close() takes its sessions with it.
        self._registries: weakref.WeakSet[LiveSessions] = weakref.WeakSet()
        self._registries_lock = threading.Lock()
        # The open subscriptions/listen streams of the stateless revision, of every transport:
        # they hear of a change made here and of one relayed from another process.
        self.subscriptions = Subscriptions()

    def attach_sessions(self, live: LiveSessions) -> None:
        """Reach the sessions of `live` with notifications (the app does this once, at construction)."""
        with self._registries_lock:
            self._registries.add(live)

    def detach_sessions(self, live: LiveSessions) -> None:
        with self._registries_lock:
            self._registries.discard(live)

    def _sessions(self) -> list[McpSession]:
        with self._registries_lock:
            registries = list(self._registries)
        return [session for live in registries for session in live.each_negotiated()]

    def notify_resource_updated(self, uri: str) -> None:
        """Tell every session subscribed to `uri` that it changed (notifications/resources/updated),
        here and in the other processes of a deployment that shares its sessions."""
        self._resource_updated(uri)
        self._relay("resource_updated", uri)

    def notify_list_changed(self, kind: str) -> None:
        """Tell every session that the tools, resources or prompts changed (in every process)."""
        if kind not in _LIST_KINDS:
            raise ValueError("kind is 'tools', 'resources' or 'prompts'")
        self._list_changed(kind)
        self._relay("list_changed", kind)

    def notify_from_elsewhere(self, event: str, value: Any) -> None:
        """A notification another process raised (`_relay`), for the sessions of this one only."""
        if event == "resource_updated" and isinstance(value, str):
            self._resource_updated(value)
        elif event == "list_changed" and value in _LIST_KINDS:
            self._list_changed(value)

    def _resource_updated(self, uri: str) -> None:
        message = Notification("notifications/resources/updated", {"uri": uri}).to_dict()
        for session in self._sessions():
            if session.state.is_subscribed(uri):
                session.push(message)
        self.subscriptions.resource_updated(uri)

    def _list_changed(self, kind: str) -> None:
        message = Notification(f"notifications/{kind}/list_changed").to_dict()
        for session in self._sessions():
            session.push(message)
        self.subscriptions.list_changed(kind)

    def _relay(self, event: str, value: Any) -> None:
        with self._registries_lock:
            registries = list(self._registries)
        for live in registries:
            live.relay(event, value)
