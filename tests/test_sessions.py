"""Sessions split by owner, and the one registry of live sessions.

Each part of a session is tested on its own, without a server: the MCP
layer's `ProtocolState` (a lifecycle table), `InFlight` and `PendingReplies`,
the HTTP transport's `HttpStreams`, and the `SessionStore` as the registry of
every transport's live sessions. Then, end to end, one notification reaches an
HTTP session's GET stream and a WebSocket session through that one registry,
and stops reaching each once it is deleted or closed.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import socket
import threading
import weakref
from typing import Any

import pytest
from support import TOKEN, ManualClock, initialize_body, live_server, open_session, request, rpc
from websockets.asyncio.client import connect
from ws_client import ws_url

from mcp_auth import McpServer
from mcp_auth.auth.tokens import ANONYMOUS
from mcp_auth.mcp.jsonrpc import ErrorResponse, Response
from mcp_auth.mcp.session_state import (
    MAX_PENDING_CLIENT_REQUESTS,
    AlreadyNegotiated,
    InFlight,
    PendingReplies,
    Phase,
    ProtocolState,
    TooManySubscriptions,
)
from mcp_auth.sessions import STANDALONE_STREAM_ID, HttpSession, HttpStreams, Session, SessionStore

AUTH = {"Authorization": f"Bearer {TOKEN}"}
URI = "note://watched"
UPDATED = {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": URI}}
# A generous bound for waiting on another thread in the live tests; they never sleep to pass.
WAIT_SECONDS = 30.0


class Sink:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def negotiated_session(store: SessionStore | None = None, outbound: Sink | None = None) -> Session:
    session = Session(ANONYMOUS, outbound or Sink())
    session.state.negotiate("2025-11-25", {}, {})
    if store is not None:
        store.register(session)
    return session


# --- ProtocolState: the lifecycle as a table ----------------------------------------------------


def test_the_lifecycle_goes_new_negotiated_initialized() -> None:
    state = ProtocolState()
    assert (state.phase, state.negotiated, state.initialized) == (Phase.NEW, False, False)
    state.negotiate("2025-06-18", {"name": "c"}, {"sampling": True})
    assert (state.phase, state.negotiated, state.initialized) == (Phase.NEGOTIATED, True, False)
    assert state.protocol_version == "2025-06-18"
    assert state.confirm_initialized() is True
    assert (state.phase, state.negotiated, state.initialized) == (Phase.INITIALIZED, True, True)
    assert state.confirm_initialized() is True  # a repeated notification changes nothing


@pytest.mark.parametrize("phase_after", [pytest.param(1, id="negotiated"), pytest.param(2, id="initialized")])
def test_a_second_negotiation_is_refused_and_changes_nothing(phase_after: int) -> None:
    state = ProtocolState()
    state.negotiate("2025-03-26", {"name": "first"}, {"roots": True})
    if phase_after == 2:
        state.confirm_initialized()
    with pytest.raises(AlreadyNegotiated):
        state.negotiate("2025-11-25", {"name": "second"}, {})
    assert (state.protocol_version, state.client_info, state.client_capabilities) == (
        "2025-03-26",
        {"name": "first"},
        {"roots": True},
    )


def test_initialized_before_initialize_changes_nothing() -> None:
    state = ProtocolState()
    assert state.confirm_initialized() is False
    assert state.phase is Phase.NEW


def test_what_was_negotiated_cannot_be_changed_through_what_is_read() -> None:
    state = ProtocolState()
    state.negotiate("2025-11-25", {"name": "c"}, {"sampling": True})
    state.client_info["name"] = "changed"
    state.client_capabilities["elicitation"] = True
    assert state.client_info == {"name": "c"}
    assert state.has_capability("sampling") and not state.has_capability("elicitation")


def test_subscriptions_are_bounded_and_a_repeat_takes_no_place() -> None:
    state = ProtocolState()
    state.subscribe("a://1", limit=2)
    state.subscribe("a://1", limit=2)
    state.subscribe("a://2", limit=2)
    with pytest.raises(TooManySubscriptions, match="at most 2"):
        state.subscribe("a://3", limit=2)
    state.subscribe("a://2", limit=2)  # already there: allowed at the bound
    state.unsubscribe("a://1")
    state.subscribe("a://3", limit=2)
    assert state.subscriptions == {"a://2", "a://3"}
    assert state.is_subscribed("a://3") and not state.is_subscribed("a://1")


# --- InFlight and PendingReplies ------------------------------------------------------------------


def test_a_call_in_flight_can_be_cancelled_until_it_ends() -> None:
    calls = InFlight()
    cancelled = calls.begin(7)
    assert len(calls) == 1 and calls.ids() == [7]
    assert calls.cancel("7") is False  # ids are compared as sent: "7" is another request
    assert calls.cancel(7) is True and cancelled.is_set()
    calls.end(7)
    assert not calls and calls.cancel(7) is False


def test_a_reply_reaches_the_request_that_awaits_it() -> None:
    replies = PendingReplies()
    request_id, pending = replies.expect_reply()
    other_id, other = replies.expect_reply()
    assert request_id != other_id and len(replies) == 2
    assert replies.deliver(Response(request_id, {"ok": True})) is True
    assert pending.answered.is_set() and pending.reply == Response(request_id, {"ok": True})
    assert not other.answered.is_set()
    replies.forget_reply(request_id)
    replies.forget_reply(other_id)
    assert len(replies) == 0


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Response("mcp-auth-999", {}), id="unknown-id"),
        pytest.param(Response(0, {}), id="number-id"),
        pytest.param(ErrorResponse(None, -32600, "bad"), id="null-id"),
    ],
)
def test_a_reply_nobody_awaits_is_dropped(reply: Response | ErrorResponse) -> None:
    replies = PendingReplies()
    _, pending = replies.expect_reply()
    assert replies.deliver(reply) is False
    assert not pending.answered.is_set()


def test_requests_to_the_client_are_bounded() -> None:
    replies = PendingReplies()
    ids = [replies.expect_reply()[0] for _ in range(MAX_PENDING_CLIENT_REQUESTS)]
    with pytest.raises(RuntimeError, match="too many requests"):
        replies.expect_reply()
    replies.forget_reply(ids[0])
    replies.expect_reply()  # a place came back


# --- HttpStreams ---------------------------------------------------------------------------------


def test_the_newest_reader_of_the_standalone_stream_wins() -> None:
    streams = HttpStreams(ManualClock())
    first = streams.open_standalone()
    second = streams.open_standalone()  # the first reader was detached
    assert second == first + 1 and streams.standalone.readers == 2
    streams.leave_standalone()
    streams.leave_standalone()
    assert streams.standalone.readers == 0
    assert streams.find_stream(STANDALONE_STREAM_ID) is streams.standalone


def test_an_answer_stream_is_found_until_dropped() -> None:
    streams = HttpStreams(ManualClock())
    stream = streams.new_stream()
    assert streams.find_stream(stream.stream_id) is stream
    streams.drop_stream(stream)
    assert streams.find_stream(stream.stream_id) is None
    assert streams.find_stream("p999") is None


def test_an_http_session_pushes_to_its_standalone_stream_and_closing_wakes_readers() -> None:
    session = HttpSession(ANONYMOUS, "id", ManualClock())
    baseline = session.streams.standalone.attach()
    session.push(UPDATED)
    session.close()
    assert session.closed.is_set()
    assert session.streams.standalone.attach() > baseline  # the reader was detached by close
    # The reader that was there gets what was written before the close, then its connection ends.
    assert list(session.streams.standalone.read(0, 60.0, lambda: False, baseline)) == [(1, UPDATED)]


# --- the session lifecycle and the one registry ---------------------------------------------------


def test_a_close_callback_runs_once_and_at_once_on_a_closed_session() -> None:
    session = Session(ANONYMOUS, Sink())
    seen: list[Session] = []
    session.on_close(seen.append)
    session.close()
    session.close()
    assert seen == [session]
    session.on_close(seen.append)
    assert seen == [session, session]


def test_the_registry_holds_both_kinds_and_offers_only_negotiated_open_ones() -> None:
    store = SessionStore(clock=ManualClock())
    http = store.create(ANONYMOUS)
    assert http is not None
    socket_session = negotiated_session(store)
    fresh = store.register(Session(ANONYMOUS, Sink()))  # no initialize answered yet
    assert store.each_negotiated() == [socket_session]
    http.state.negotiate("2025-11-25", {}, {})
    assert set(store.each_negotiated()) == {http, socket_session}
    fresh.state.negotiate("2025-11-25", {}, {})
    socket_session.close()
    assert http.session_id is not None and store.delete(http.session_id, ANONYMOUS)
    assert store.each_negotiated() == [fresh]


def test_anonymous_sessions_take_no_place_from_the_http_sessions() -> None:
    store = SessionStore(max_sessions=2, max_per_principal=2, clock=ManualClock())
    for _ in range(10):
        negotiated_session(store)
    assert len(store) == 0
    assert store.create(ANONYMOUS) is not None and store.create(ANONYMOUS) is not None
    assert len(store) == 2 and len(store.each_negotiated()) == 10


def test_a_closed_anonymous_session_is_forgotten_by_the_registry() -> None:
    store = SessionStore(clock=ManualClock())
    session = negotiated_session(store)
    gone = weakref.ref(session)
    session.close()
    del session
    gc.collect()
    assert gone() is None  # nothing in the registry holds it any more


def test_closing_the_registry_closes_every_session() -> None:
    store = SessionStore(clock=ManualClock())
    http = store.create(ANONYMOUS)
    socket_session = negotiated_session(store)
    store.close_all()
    assert http is not None and http.closed.is_set() and socket_session.closed.is_set()
    assert len(store) == 0 and store.each_negotiated() == []


def test_notifications_reach_the_sessions_of_the_registry_the_app_hands_over() -> None:
    server = McpServer("fan-out")
    store = SessionStore(clock=ManualClock())
    to_subscribed, to_other = Sink(), Sink()
    negotiated_session(store, to_subscribed).state.subscribe(URI, limit=10)
    negotiated_session(store, to_other)
    server.notify_resource_updated(URI)
    assert to_subscribed.messages == [] and to_other.messages == []  # the registry is not handed over yet
    server.dispatcher.attach_sessions(store)
    server.notify_resource_updated(URI)
    server.notify_list_changed("tools")
    listed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    assert to_subscribed.messages == [UPDATED, listed]
    assert to_other.messages == [listed]
    server.dispatcher.detach_sessions(store)
    server.notify_list_changed("tools")
    assert len(to_other.messages) == 1


# --- end to end: one notification, both transports, one registry -------------------------------


def _watched_server() -> McpServer:
    server = McpServer("watched")

    @server.resource(URI)
    def watched() -> str:
        return "content"

    return server


def _open_get_stream(port: int, session_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n\r\n"
        ).encode()
    )
    sock.settimeout(WAIT_SECONDS)
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = sock.recv(4096)
        if not chunk:
            break
        seen += chunk
    return seen


def _read_to_end(sock: socket.socket) -> bytes:
    """The rest of a chunked event stream: to its last chunk (the server may keep the connection), or the close."""
    rest = b""
    while not rest.endswith(b"0\r\n\r\n") and (chunk := sock.recv(4096)):
        rest += chunk
    return rest


def _wait_for(condition: Any) -> bool:
    """Poll, within a generous bound, for the server's own thread to reach a state (pass/fail never hangs on timing)."""
    done = threading.Event()
    for _ in range(int(WAIT_SECONDS * 20)):
        if condition():
            return True
        done.wait(0.05)
    return bool(condition())


def test_a_notification_reaches_an_http_stream_and_a_websocket_until_each_ends() -> None:
    server = _watched_server()
    with live_server(server) as live:
        session_id = open_session(live.port)
        assert rpc(live.port, session_id, "resources/subscribe", {"uri": URI}).status == 200
        stream = _open_get_stream(live.port, session_id)
        assert b"HTTP/1.1 200" in _read_until(stream, b"\r\n\r\n")

        async def over_websocket() -> list[dict[str, Any]]:
            async with connect(ws_url(live.url), subprotocols=["mcp"], additional_headers=AUTH) as ws:
                await ws.send(json.dumps(initialize_body()))
                assert "result" in json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
                await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                subscribe = {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": URI}}
                await ws.send(json.dumps(subscribe))
                assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS)) == {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "result": {},
                }
                # Both sessions are in the one registry now: one call reaches both.
                await asyncio.get_running_loop().run_in_executor(None, server.notify_resource_updated, URI)
                return [json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))]

        assert asyncio.run(over_websocket()) == [UPDATED]
        assert json.dumps(UPDATED, separators=(",", ":")).encode() in _read_until(stream, b"resources/updated")

        # The socket closed: its session left the registry (the server notices on its own thread).
        assert _wait_for(lambda: len(live.app.sessions.each_negotiated()) == 1)
        [held] = live.app.sessions.each_negotiated()
        assert isinstance(held, HttpSession) and held.session_id == session_id
        # Deleted: the HTTP session leaves too, and its GET stream ends.
        assert request(live.port, "DELETE", headers={"Mcp-Session-Id": session_id}).status == 204
        assert live.app.sessions.each_negotiated() == []
        _read_to_end(stream)
        stream.close()
        server.notify_resource_updated(URI)
        # Its standalone stream holds the first notification only; a reader finds nothing after it.
        standalone = held.streams.standalone
        assert list(itertools.islice(standalone.read(0, 0.0, lambda: False, standalone.attach()), 2)) == [
            (1, UPDATED),
            None,
        ]
