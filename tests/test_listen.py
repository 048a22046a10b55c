"""subscriptions/listen (MCP 2026-07-28) over HTTP: the acknowledgment, tagging, the filter, scope,
revocation, the stream budget, shutdown, and a client that goes away. Real server, real sockets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from support import ACCEPT_BOTH, TOKEN, Live, live_server, open_session, request, rpc

from mcp_auth import Context, McpServer
from mcp_auth.auth.tokens import add_token, revoke_token, rotate_token
from mcp_auth.mcp.modern import META_SUBSCRIPTION_ID

MODERN = "2026-07-28"
# Generous: a waiting read fails the test only when something is really wrong.
READ_TIMEOUT_SECONDS = 30.0


@contextmanager
def listening(server: McpServer, **settings: Any) -> Iterator[Live]:
    """A live server whose listen streams send no keep-alive during a test: a stream that stays
    quiet when it should not fails with a read timeout instead of waiting forever."""
    with live_server(server, **settings) as live:
        live.app.http.listens.keepalive_seconds = 3600.0
        yield live


def listen_server() -> McpServer:
    server = McpServer("listening")

    @server.tool()
    def echo(text: str) -> str:
        return text

    @server.prompt()
    def review(topic: str) -> str:
        return f"Review {topic}"

    @server.resource("file:///public/a")
    def public_a() -> str:
        return "a"

    @server.resource("file:///secret/b")
    def secret_b() -> str:
        return "b"

    @server.resource("notes://{note_id}")
    def note(note_id: str) -> str:
        return note_id

    return server


def listen_body(notifications: Any, request_id: Any = "listen-1") -> dict[str, Any]:
    params: dict[str, Any] = {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    }
    if notifications is not None:
        params["notifications"] = notifications
    return {"jsonrpc": "2.0", "id": request_id, "method": "subscriptions/listen", "params": params}


def modern_headers(token: str | None = TOKEN) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": ACCEPT_BOTH,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "subscriptions/listen",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class ListenStream:
    """One open listen answer, read event by event (SSE lines; comments are counted, not returned)."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()
        self.comments = 0

    def next(self) -> dict[str, Any] | None:
        """The next message, or None when the stream ended."""
        for line in self._lines:
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("data:"):
                return json.loads(line[5:])  # type: ignore[no-any-return]
        return None

    def next_comment(self) -> str | None:
        """The next comment line (a keep-alive), skipping messages; None when the stream ended."""
        for line in self._lines:
            if line.startswith(":"):
                self.comments += 1
                return line
        return None

    def rest(self) -> list[dict[str, Any]]:
        messages = []
        while (message := self.next()) is not None:
            messages.append(message)
        return messages


@contextmanager
def open_listen(
    live: Live, notifications: Any, token: str | None = TOKEN, request_id: Any = "listen-1"
) -> Iterator[ListenStream]:
    timeout = httpx2.Timeout(READ_TIMEOUT_SECONDS)
    with httpx2.Client(timeout=timeout) as client:
        with client.stream(
            "POST", live.url, headers=modern_headers(token), content=json.dumps(listen_body(notifications, request_id))
        ) as response:
            yield ListenStream(response)


def post_listen(live: Live, notifications: Any, token: str | None = TOKEN, request_id: Any = 7) -> Any:
    """A listen that is expected to be refused: the plain HTTP answer."""
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "subscriptions/listen"}
    return request(live.port, body=listen_body(notifications, request_id), headers=headers, token=token)


def wait_until(condition: Callable[[], bool], timeout: float = READ_TIMEOUT_SECONDS) -> bool:
    """Whether `condition` became true within a generous timeout (checked often; never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.02)
    return True


def tag(message: dict[str, Any]) -> Any:
    return message["params"]["_meta"][META_SUBSCRIPTION_ID]


@pytest.fixture
def scoped(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "tokens.json"
    full = add_token(path, "full", None)
    narrow = add_token(path, "narrow", ["echo", "resource:file:///public/*", "resource:notes://{note_id}"])
    return path, full, narrow


# --- the acknowledgment and tagging ------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id", [pytest.param("listen-1", id="string-id"), pytest.param(1733000000000, id="number-id")]
)
def test_the_acknowledgment_comes_first_tagged_with_the_listen_id(request_id: Any) -> None:
    server = listen_server()
    with listening(server) as live, open_listen(live, {"toolsListChanged": True}, request_id=request_id) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["x-accel-buffering"] == "no"
        ack = stream.next()
        assert ack == {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {META_SUBSCRIPTION_ID: request_id}, "notifications": {"toolsListChanged": True}},
        }
        server.notify_list_changed("tools")
        changed = stream.next()
        assert changed is not None and changed["method"] == "notifications/tools/list_changed"
        assert tag(changed) == request_id and type(tag(changed)) is type(request_id)


def test_the_acknowledgment_omits_what_is_not_honoured() -> None:
    wanted = {
        "toolsListChanged": True,
        "promptsListChanged": False,
        "resourcesListChanged": True,
        "resourceSubscriptions": ["file:///public/a", "file:///nowhere", "notes://n1", "file:///public/a"],
        "somethingNew": True,
    }
    with listening(listen_server()) as live, open_listen(live, wanted) as stream:
        ack = stream.next()
    assert ack is not None
    assert ack["params"]["notifications"] == {
        "toolsListChanged": True,
        "resourcesListChanged": True,
        "resourceSubscriptions": ["file:///public/a", "notes://n1"],
    }


def test_only_the_opted_in_notifications_arrive() -> None:
    server = listen_server()
    with listening(server) as live:
        with open_listen(live, {"promptsListChanged": True, "resourceSubscriptions": ["notes://n1"]}) as stream:
            assert stream.next() is not None  # the acknowledgment
            server.notify_list_changed("tools")  # not opted in
            server.notify_list_changed("resources")  # not opted in
            server.notify_resource_updated("notes://n2")  # another URI
            server.notify_resource_updated("notes://n1")
            server.notify_list_changed("prompts")
            first, second = stream.next(), stream.next()
    assert first is not None and second is not None
    assert (first["method"], first["params"]["uri"]) == ("notifications/resources/updated", "notes://n1")
    assert second["method"] == "notifications/prompts/list_changed"
    assert tag(first) == tag(second) == "listen-1"


def test_tool_progress_and_log_messages_never_reach_a_listen_stream() -> None:
    server = listen_server()

    @server.tool()
    def chatty(ctx: Context) -> str:
        ctx.info("a log message")
        ctx.report_progress(1, 2)
        server.notify_list_changed("tools")
        return "done"

    with listening(server) as live, open_listen(live, {"toolsListChanged": True}) as stream:
        assert stream.next() is not None
        session = open_session(live.port)
        reply = rpc(
            live.port, session, "tools/call", {"name": "chatty", "arguments": {}, "_meta": {"progressToken": 1}}
        )
        assert reply.status == 200
        changed = stream.next()
    assert changed is not None and changed["method"] == "notifications/tools/list_changed"


# --- refusals before the stream opens ----------------------------------------------------------


@pytest.mark.parametrize(
    ("notifications", "fix"),
    [
        pytest.param(None, "params.notifications", id="missing"),
        pytest.param(["toolsListChanged"], "params.notifications", id="not-an-object"),
        pytest.param({"toolsListChanged": "yes"}, "true or false", id="not-a-boolean"),
        pytest.param({"resourceSubscriptions": "file:///public/a"}, "array of resource URIs", id="uris-not-a-list"),
        pytest.param({"resourceSubscriptions": [f"notes://{n}" for n in range(101)]}, "at most 100", id="too-many"),
    ],
)
def test_a_malformed_filter_is_400_with_the_request_id(notifications: Any, fix: str) -> None:
    with listening(listen_server()) as live:
        response = post_listen(live, notifications, request_id=7)
        assert response.status == 400
        body = response.json()
        assert body["id"] == 7 and body["error"]["code"] == -32602
        assert fix in body["error"]["message"]
        assert len(live.app.server.subscriptions) == 0


def test_a_listen_without_a_valid_token_is_401(scoped: tuple[Path, str, str]) -> None:
    path, _full, _narrow = scoped
    with listening(listen_server(), tokens_file=str(path)) as live:
        response = post_listen(live, {"toolsListChanged": True}, token="not-a-token")
    assert response.status == 401


# --- scope ---------------------------------------------------------------------------------------


def test_a_scoped_token_never_hears_of_what_lies_outside_its_scope(scoped: tuple[Path, str, str]) -> None:
    path, full, narrow = scoped
    server = listen_server()
    wanted = {
        "toolsListChanged": True,
        "promptsListChanged": True,  # "narrow" has no prompt patterns: not honoured
        "resourceSubscriptions": ["file:///secret/b", "file:///public/a"],
    }
    with listening(server, tokens_file=str(path)) as live:
        with open_listen(live, wanted, token=narrow) as mine, open_listen(live, wanted, token=full) as theirs:
            my_ack, their_ack = mine.next(), theirs.next()
            server.notify_resource_updated("file:///secret/b")
            server.notify_list_changed("prompts")
            server.notify_resource_updated("file:///public/a")
            mine_first = mine.next()
            theirs_seen = [theirs.next(), theirs.next(), theirs.next()]
    assert my_ack is not None and their_ack is not None
    assert my_ack["params"]["notifications"] == {
        "toolsListChanged": True,
        "resourceSubscriptions": ["file:///public/a"],
    }
    assert their_ack["params"]["notifications"] == wanted
    # The first thing the scoped token hears of is the resource it may read.
    assert mine_first is not None and mine_first["params"]["uri"] == "file:///public/a"
    assert [m["method"] for m in theirs_seen if m] == [
        "notifications/resources/updated",
        "notifications/prompts/list_changed",
        "notifications/resources/updated",
    ]


# --- revocation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["revoke", "rotate"])
def test_a_revoked_token_ends_its_listen_without_a_result(scoped: tuple[Path, str, str], how: str) -> None:
    path, full, narrow = scoped
    server = listen_server()
    with listening(server, tokens_file=str(path)) as live:
        with (
            open_listen(live, {"toolsListChanged": True}, token=narrow) as doomed,
            open_listen(live, {"toolsListChanged": True}, token=full) as other,
        ):
            assert doomed.next() is not None and other.next() is not None
            if how == "revoke":
                revoke_token(path, "narrow")
            else:
                rotate_token(path, "narrow")
            server.notify_list_changed("tools")  # the next event: step 7 is asked before it is sent
            ended = doomed.next()
            still = other.next()
        assert ended is None  # no notification and no result: an abrupt end
        assert still is not None and still["method"] == "notifications/tools/list_changed"
        # The place and the subscription are given back.
        assert live.app.http.event_streams.in_use() == 1
        response = post_listen(live, {"toolsListChanged": True}, token=narrow)
        assert response.status == 401


# --- the budget ----------------------------------------------------------------------------------


def test_listens_count_against_the_stream_budget_with_get_streams() -> None:
    # max_streams 2: a token's share is 1.
    with listening(listen_server(), max_streams=2) as live:
        with open_listen(live, {"toolsListChanged": True}) as first:
            assert first.next() is not None
            refused = post_listen(live, {"toolsListChanged": True})
            assert refused.status == 503
            assert refused.header("Retry-After")
            assert "at most 1 per token" in refused.json()["error"]["message"]
            # A handshake session's GET stream takes from the same share.
            session = open_session(live.port)
            get = request(live.port, "GET", headers={"Mcp-Session-Id": session, "Accept": "text/event-stream"})
            assert get.status == 503
        # Closed: the server notices within its poll, and the place is free again.
        assert wait_until(lambda: live.app.http.event_streams.in_use() == 0)
        with open_listen(live, {"toolsListChanged": True}) as again:
            assert again.next() is not None


def test_a_client_that_goes_away_is_forgotten() -> None:
    server = listen_server()
    with listening(server) as live:
        with open_listen(live, {"toolsListChanged": True}) as stream:
            assert stream.next() is not None
            assert len(server.dispatcher.subscriptions) == 1
        # The client closed its connection, and nothing was sent since: the server still notices.
        assert wait_until(
            lambda: len(server.dispatcher.subscriptions) == 0 and live.app.http.event_streams.in_use() == 0
        )


# --- shutdown ------------------------------------------------------------------------------------


def test_shutdown_ends_a_listen_with_its_result() -> None:
    server = listen_server()
    with listening(server) as live, open_listen(live, {"toolsListChanged": True}, request_id="listen-9") as stream:
        assert stream.next() is not None
        live.app.close()
        rest = stream.rest()
    assert rest[-1]["id"] == "listen-9"
    assert rest[-1]["result"]["resultType"] == "complete"
    assert rest[-1]["result"]["_meta"][META_SUBSCRIPTION_ID] == "listen-9"
    assert "error" not in rest[-1]


def test_keepalive_comments_flow_on_a_quiet_stream() -> None:
    with live_server(listen_server()) as live:
        live.app.http.listens.keepalive_seconds = 0.05
        with open_listen(live, {"toolsListChanged": True}) as stream:
            assert stream.next() is not None
            assert stream.next_comment() == ": keepalive"
            assert stream.next_comment() == ": keepalive"
