"""The bridge in the stateless revision (2026-07-28), at the dispatcher: pooled children, asks as rounds.

The transports' era selection is another branch's work; these tests hand the
bridge's dispatcher the `Call` a transport builds for a modern request
(`Call.modern`), with a real session object and a channel that records what
would go on the wire, and real children.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from bridge_support import CHILD_ARGV, alive, wait_gone
from support import ManualClock

from mcp_auth.auth.tokens.principal import Principal
from mcp_auth.bridge import StdioCommand, StdioServer
from mcp_auth.bridge.dispatcher import BridgeDispatcher
from mcp_auth.mcp.context import Call
from mcp_auth.mcp.jsonrpc import Request
from mcp_auth.mcp.modern import META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, ModernRequest
from mcp_auth.mcp.outcome import Answered, Failed, ScopeRefused
from mcp_auth.sessions import Session

ALICE = Principal("alice", None, "a" * 64)
MALLORY = Principal("mallory", None, "m" * 64)
SCOPED = Principal("scoped", ("echo", "pid"), "s" * 64)


class Recorder:
    """What a transport would put on the wire for this request, outside its answer."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.sent.append(message)


@pytest.fixture
def bridge() -> Iterator[BridgeDispatcher]:
    server = StdioServer(StdioCommand.of(CHILD_ARGV))
    yield server.dispatcher
    server.close()


def modern_call(principal: Principal = ALICE, capabilities: dict[str, Any] | None = None) -> tuple[Call, Recorder]:
    recorder = Recorder()
    caps = {"sampling": {}} if capabilities is None else capabilities
    envelope = ModernRequest("2026-07-28", caps)
    session = Session(principal, recorder)
    return Call(session, principal, recorder, "127.0.0.1", lambda p: True, modern=envelope), recorder


def ask(bridge: BridgeDispatcher, method: str, params: dict[str, Any], **call: Any) -> Any:
    meta = {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {"sampling": {}}}
    the_call, _ = modern_call(**call)
    return bridge.outcome(Request(9, method, {**params, "_meta": meta}), the_call)


def test_discover_and_a_call_are_answered_in_the_revisions_shape(bridge: BridgeDispatcher) -> None:
    discovered = ask(bridge, "server/discover", {})
    assert isinstance(discovered, Answered)
    assert discovered.result["supportedVersions"][0] == "2026-07-28"
    assert "tools" in discovered.result["capabilities"]
    echoed = ask(bridge, "tools/call", {"name": "echo", "arguments": {"text": "stateless"}})
    assert isinstance(echoed, Answered)
    assert echoed.result["resultType"] == "complete"
    assert echoed.result["content"][0]["text"] == "stateless"
    assert echoed.result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "test-child"


def test_a_scoped_token_sees_its_tools_and_cannot_call_others(bridge: BridgeDispatcher) -> None:
    listed = ask(bridge, "tools/list", {}, principal=SCOPED)
    assert isinstance(listed, Answered)
    assert sorted(tool["name"] for tool in listed.result["tools"]) == ["echo", "pid"]
    assert listed.result["cacheScope"] == "private"
    assert isinstance(ask(bridge, "tools/call", {"name": "crash", "arguments": {}}, principal=SCOPED), ScopeRefused)


def test_a_childs_sampling_request_becomes_a_round_and_the_retry_resumes_the_waiting_child(
    bridge: BridgeDispatcher,
) -> None:
    params = {"name": "ask_model", "arguments": {"question": "2+2"}}
    first = ask(bridge, "tools/call", params)
    assert isinstance(first, Answered) and first.result["resultType"] == "input_required"
    [(key, asked)] = first.result["inputRequests"].items()
    assert asked["method"] == "sampling/createMessage"
    assert asked["params"]["messages"][0]["content"]["text"] == "2+2"
    state = first.result["requestState"]
    waiting = [child for child in bridge.pools.children() if child.busy]
    assert len(waiting) == 1  # the child that asked keeps waiting, holding its place

    # Another token cannot use the state, nor can the same token for other arguments.
    answer = {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"}
    for stranger in (
        ask(
            bridge, "tools/call", {**params, "requestState": state, "inputResponses": {key: answer}}, principal=MALLORY
        ),
    ):
        assert isinstance(stranger, Failed) and stranger.code == -32602
    # (the state is used up by a refused claim only when it matched: the owner's retry still works)
    done = ask(bridge, "tools/call", {**params, "requestState": state, "inputResponses": {key: answer}})
    assert isinstance(done, Answered), done
    assert done.result["resultType"] == "complete"
    assert done.result["content"][0]["text"] == "model said: 4"
    assert waiting[0].busy is False and waiting[0].link.gone is None  # back in the pool

    again = ask(bridge, "tools/call", {**params, "requestState": state, "inputResponses": {key: answer}})
    assert (
        isinstance(again, Failed) and again.code == -32602 and again.error_message == "Invalid or expired requestState"
    )


def test_an_ask_the_client_cannot_answer_is_refused_to_the_child_with_32021(bridge: BridgeDispatcher) -> None:
    the_call, _ = modern_call(capabilities={})
    outcome = bridge.outcome(Request(3, "tools/call", {"name": "ask_model", "arguments": {"question": "x"}}), the_call)
    # The child got -32021 for its ask, and passed it on as its answer.
    assert isinstance(outcome, Failed) and outcome.code == -32021
    assert "did not declare the 'sampling' capability" in outcome.error_message


def test_an_unknown_state_is_refused_like_a_tampered_one(bridge: BridgeDispatcher) -> None:
    refused = ask(bridge, "tools/call", {"name": "ask_model", "arguments": {"question": "x"}, "requestState": "nope"})
    assert isinstance(refused, Failed) and refused.code == -32602
    assert refused.data == {"reason": "invalid_request_state"}


def test_the_pool_shrinks_when_its_children_are_idle() -> None:
    clock = ManualClock()
    dispatcher = BridgeDispatcher(StdioCommand.of(CHILD_ARGV), name="t", version="1", clock=clock)
    try:
        the_call, _ = modern_call()
        first = dispatcher.outcome(Request(1, "tools/call", {"name": "pid", "arguments": {}}), the_call)
        assert isinstance(first, Answered)
        pid = int(first.result["content"][0]["text"])
        assert alive(pid)
        clock.advance(dispatcher.pools.idle_seconds + 1)
        second = dispatcher.outcome(Request(2, "tools/call", {"name": "pid", "arguments": {}}), the_call)
        assert isinstance(second, Answered)
        assert wait_gone(pid), "an idle pooled child was not stopped"
        assert int(second.result["content"][0]["text"]) != pid
    finally:
        dispatcher.close()
    assert dispatcher.pools.children() == []


def test_an_expired_round_frees_its_child_and_its_state_is_refused() -> None:
    clock = ManualClock()
    dispatcher = BridgeDispatcher(StdioCommand.of(CHILD_ARGV), name="t", version="1", clock=clock)
    try:
        params = {"name": "ask_model", "arguments": {"question": "late"}}
        the_call, _ = modern_call()
        first = dispatcher.outcome(Request(1, "tools/call", params), the_call)
        assert isinstance(first, Answered) and first.result["resultType"] == "input_required"
        [child] = dispatcher.pools.children()
        assert child.busy
        clock.advance(dispatcher.stateless.parked_seconds + 1)
        answer = {"role": "assistant", "content": {"type": "text", "text": "x"}, "model": "m"}
        retry = {**params, "requestState": first.result["requestState"], "inputResponses": {"ask-1": answer}}
        late = dispatcher.outcome(Request(2, "tools/call", retry), the_call)
        assert isinstance(late, Failed) and late.code == -32602
        assert child.busy is False  # the waiting child was told to cancel and went back to the pool
    finally:
        dispatcher.close()
