"""Messages between the processes of a deployment, over Redis pub/sub.

What one process learns that another must act on travels here: a client's
answer to a server-to-client request (sampling, elicitation, roots) that
reached a process other than the one whose handler waits for it; a
notifications/cancelled for a call running elsewhere; a notification for
every session (resources/updated, list_changed) raised by a call served
elsewhere; and "this session's state changed", so local copies reload it.

One channel, every process subscribed, each ignoring its own messages: a
message costs one publish and reaches every process (a deployment has a
handful). Delivery is at most once, as pub/sub is: a process that is not
listening at that moment misses it, which is the same as a dropped connection
to a client. A message names its session by the digest of its id (never the
id) and carries only what the client sent or what is sent to the client.

The listener is a daemon thread, started at the first use in each process
(after gunicorn forks its workers, never before). It sends nothing while it
waits (it wakes every `POLL_SECONDS` only to see whether it should stop). A
store failure while it runs is logged once, and it reconnects (with backoff)
until the store answers again, which is logged too. `close` stops it and
waits for it, so a process that stops (or a test whose store stops after its
app) ends it quietly.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .connection import store_call

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("mcp_auth.store")

CHANNEL = "mcp_auth:bus"
# How long the listener waits for a message before it checks whether it should stop: a wait
# on its socket, no command, so short is cheap; it bounds how long `close` waits.
POLL_SECONDS = 0.25
# How long `close` waits for the listener beyond one poll (a reconnect in progress during an
# outage may take longer: the thread then ends on its own, silently, when that attempt ends).
CLOSE_WAIT_SECONDS = 2.0
# After a store failure the listener reconnects after this, doubling up to the maximum.
RECONNECT_SECONDS = 0.5
MAX_RECONNECT_SECONDS = 10.0

Handler = Callable[[dict[str, Any]], None]


class MessageBus:
    """Publish to every other process; hand what they publish to `handler`."""

    def __init__(self, client: redis.Redis, handler: Handler) -> None:
        self._client = client
        self._handler = handler
        self.process_id = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._started_in: int | None = None  # the pid whose listener runs
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, kind: str, **fields: Any) -> None:
        payload = json.dumps({"kind": kind, "from": self.process_id, **fields}, separators=(",", ":"))
        store_call(lambda: self._client.publish(CHANNEL, payload))

    def start(self) -> None:
        """Listen in this process (once per process: a forked worker starts its own)."""
        with self._lock:
            if self._started_in == os.getpid() or self._stop.is_set():
                return
            self._started_in = os.getpid()
            self.process_id = secrets.token_hex(8)  # a forked child is another process
            self._subscribed.clear()
            self._thread = threading.Thread(target=self._listen, name="mcp-auth-bus", daemon=True)
            self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the listener is subscribed (tests wait on it before they publish)."""
        return self._subscribed.wait(timeout)

    def close(self) -> None:
        """Stop listening, and wait (within a bound) until the listener has ended."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(POLL_SECONDS + CLOSE_WAIT_SECONDS)

    def _listen(self) -> None:
        delay = RECONNECT_SECONDS
        failing = False  # within an outage: logged when it began, and when it ends
        while not self._stop.is_set():
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                try:
                    pubsub.subscribe(CHANNEL)
                    self._subscribed.set()
                    if failing:
                        logger.warning("the session store's message channel is back")
                        failing = False
                    delay = RECONNECT_SECONDS
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=POLL_SECONDS)
                        if message is not None:
                            self._deliver(message.get("data"))
                finally:
                    pubsub.close()
            except Exception as exc:  # the store went away: reconnect, never end the thread
                self._subscribed.clear()
                if self._stop.is_set():
                    return  # closed meanwhile: the client or its store is gone on purpose
                if not failing:
                    logger.warning("the session store's message channel failed (%s); reconnecting", type(exc).__name__)
                    failing = True
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_RECONNECT_SECONDS)

    def _deliver(self, data: Any) -> None:
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            return  # not ours: another program on the channel
        if not isinstance(message, dict) or message.get("from") == self.process_id:
            return
        try:
            self._handler(message)
        except Exception:
            logger.exception("handling a message from another process failed")
