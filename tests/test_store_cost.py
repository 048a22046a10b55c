"""What a call in a shared session costs the store: counted by a real redis-server (INFO).

A `tools/call` in an existing handshake-era session, answered as plain JSON,
must cost one round trip to Redis: step 4's guessing-limit check with the
session record read in the same pipeline (`store.reads`). Nothing is written
for events no stream will ever resume (a handler that may send before its
answer, but did not, answers as plain JSON: no stream log, no publish, no
delete), and an idle process sends nothing (no polling).

Round trips are counted as the server's socket reads (`total_reads_processed`):
a pipeline arrives in one read, two sequential requests in two.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis_support import RedisServer, module_redis
from support import Live, live_server, open_session, request, rpc

from mcp_auth import Context, McpServer
from mcp_auth.store.bus import POLL_SECONDS
from mcp_auth.store.records import record_key

CALLS = 20
# Commands per call, the guessing limit's script included (9 of them: it counts inside Redis).
MAX_COMMANDS_PER_CALL = 12
# The test's own reads between the counts: CONFIG RESETSTAT and the two INFOs.
OWN_READS = 3
# What the test sends at the end of an idle window, to find it in MONITOR's output.
IDLE_END = "mcp-auth-test-idle-window-end"
# Written only when a stream's events are kept or announced: never for a plain JSON answer.
EVENT_WRITES = ("cmdstat_publish", "cmdstat_del", "cmdstat_zremrangebyrank", "cmdstat_smembers")


def _server() -> McpServer:
    server = McpServer("store-cost")

    @server.tool()
    def echo(text: str) -> str:
        """Sends the text back.

        Args:
            text: What to send back.
        """
        return text

    @server.tool()
    def echo_with_context(text: str, ctx: Context) -> str:
        """Sends the text back; may send before its answer (it takes a Context), but does not.

        Args:
            text: What to send back.
        """
        return text

    return server


store = module_redis("store")


@pytest.fixture
def served(store: RedisServer) -> Iterator[Live]:
    with live_server(_server(), session_store=store.url) as live:
        yield live


def _call(live: Live, session_id: str, tool: str, n: int) -> None:
    params = {"name": tool, "arguments": {"text": f"call {n}"}}
    response = rpc(live.port, session_id, "tools/call", params, request_id=100 + n)
    assert response.status == 200 and response.header("Content-Type") == "application/json", response
    assert response.json()["result"]["content"][0]["text"] == f"call {n}"


def _counts(client: redis.Redis) -> tuple[dict[str, Any], int]:
    commands: dict[str, Any] = client.info("commandstats")
    reads = int(client.info("stats")["total_reads_processed"])
    return commands, reads


@pytest.mark.parametrize("tool", [pytest.param("echo", id="plain"), pytest.param("echo_with_context", id="context")])
def test_a_plain_json_call_costs_one_round_trip_and_writes_no_events(
    served: Live, store: RedisServer, tool: str
) -> None:
    session_id = open_session(served.port)
    _call(served, session_id, tool, 0)  # this process's copy of the session, its TTL renewed, scripts loaded
    with store.client() as client:
        client.config_resetstat()
        for n in range(1, CALLS + 1):
            _call(served, session_id, tool, n)
        commands, reads = _counts(client)
    ours = ("cmdstat_info", "cmdstat_config|resetstat")
    total = sum(stat["calls"] for name, stat in commands.items() if name not in ours)
    assert reads - OWN_READS <= CALLS, f"{reads - OWN_READS} round trips for {CALLS} calls: {commands}"
    assert total <= MAX_COMMANDS_PER_CALL * CALLS, f"{total} commands for {CALLS} calls: {commands}"
    assert commands["cmdstat_hgetall"]["calls"] == CALLS  # the record is read at every call, never cached
    assert not [name for name in EVENT_WRITES if name in commands], commands


def test_the_record_is_read_at_every_call_so_a_delete_elsewhere_is_seen_at_once(
    served: Live, store: RedisServer
) -> None:
    """The read rides on step 4's round trip but is never kept past its request."""
    session_id = open_session(served.port)
    _call(served, session_id, "echo", 0)
    with store.client() as client:
        with live_server(_server(), session_store=store.url) as other:
            assert rpc(other.port, session_id, "ping").status == 200  # served there: the record is shared
            gone = request(other.port, "DELETE", headers={"Mcp-Session-Id": session_id})
            assert gone.status == 204, gone
        assert not client.exists(record_key(session_id))
    refused = rpc(served.port, session_id, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
    assert refused.status == 404, refused


def test_an_idle_process_sends_nothing_but_its_revocation_poll(served: Live, store: RedisServer) -> None:
    """No polling by the sessions or their bus: between requests, the bus listener waits on its socket
    without a command. (The revocation list is polled once a second on purpose: `store.revocations`.)"""
    session_id = open_session(served.port)
    _call(served, session_id, "echo", 0)
    bus = served.app.sessions.bus  # type: ignore[attr-defined]
    assert bus.wait_subscribed(30)
    with store.client() as client, store.client() as marker:
        marker.ping()  # connected before the window: its handshake is not in it
        with client.monitor() as monitor:
            # Through several of the listener's wake-ups (it checks every POLL_SECONDS whether to
            # stop). Whatever the machine's speed, a process that sends nothing passes; one that
            # polls fails.
            time.sleep(4 * POLL_SECONDS)
            marker.echo(IDLE_END)
            sent = [entry["command"] for entry in _until_marker(monitor)]
    revocation_poll = ("MULTI", "EXEC")  # its transaction's brackets; its commands name mcp_auth:revoked
    assert [c for c in sent if "mcp_auth:revoked" not in c and c not in revocation_poll] == []


def _until_marker(monitor: Any) -> Iterator[dict[str, Any]]:
    for entry in monitor.listen():
        if IDLE_END in entry["command"]:
            return
        yield entry


def test_a_store_that_lost_its_scripts_still_answers_in_one_trip(served: Live, store: RedisServer) -> None:
    """A restarted Redis keeps no scripts: the pipelined check finds none, loads it, and goes on."""
    session_id = open_session(served.port)
    _call(served, session_id, "echo", 0)
    with store.client() as client:
        client.script_flush()
    _call(served, session_id, "echo", 1)  # not a 503: the script is loaded again
    _call(served, session_id, "echo", 2)
