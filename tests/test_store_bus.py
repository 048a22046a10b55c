"""The message bus between processes stops quietly, and logs a real outage once.

A process that closes its app (a test ending, SIGTERM) ends its listener and
waits for it, so the store stopping afterwards is no failure to report. While
it runs, a store that goes away is reported once, the listener reconnects
(with backoff) until the store is back, and says so once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from redis_support import redis_server
from support import live_server, open_session

from mcp_auth.store.bus import RECONNECT_SECONDS, MessageBus

# Generous: how long a test waits for something that must happen (never a pass/fail timing).
PATIENCE_SECONDS = 60.0
FAILED = "the session store's message channel failed"
BACK = "the session store's message channel is back"


def _bus(live: object) -> MessageBus:
    bus = live.app.sessions.bus  # type: ignore[attr-defined]
    assert isinstance(bus, MessageBus)
    return bus


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mcp_auth.store" and text in r.getMessage()]


def test_closing_the_app_ends_its_listener_so_the_store_stopping_later_is_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_auth.store")
    with redis_server(tmp_path / "redis") as store:
        with live_server(session_store=store.url) as live:
            open_session(live.port)
            bus = _bus(live)
            assert bus.wait_subscribed(PATIENCE_SECONDS)
            listener = bus._thread  # the thread this test must see end
            assert listener is not None and listener.is_alive()
        # The app is closed: its listener has ended before the store stops.
        assert not listener.is_alive()
    assert _lines(caplog, FAILED) == []


def test_an_outage_while_running_is_logged_once_and_the_listener_reconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_auth.store")
    with redis_server(tmp_path / "first") as store:
        port = store.port
        with live_server(session_store=store.url) as live:
            open_session(live.port)
            bus = _bus(live)
            assert bus.wait_subscribed(PATIENCE_SECONDS)
            store.stop()
            deadline = time.monotonic() + PATIENCE_SECONDS
            while bus.wait_subscribed(0):  # until the listener has noticed
                assert time.monotonic() < deadline, "the listener never noticed the outage"
                time.sleep(0.05)
            # Down through several reconnect attempts (0.5, 1, 2 s apart): one line, not one per attempt.
            # (However long this lasts, the right behaviour passes: it is no pass/fail timing.)
            time.sleep(4 * RECONNECT_SECONDS + 1.0)
            with redis_server(tmp_path / "second", port=port):
                assert bus.wait_subscribed(PATIENCE_SECONDS), "the listener did not reconnect"
                assert len(_lines(caplog, FAILED)) == 1, caplog.text
                assert len(_lines(caplog, BACK)) == 1, caplog.text
                open_session(live.port)  # and the process serves sessions again
