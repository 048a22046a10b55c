"""Multi round-trip requests in the stateless era, in process: replay, `ctx.ask`, and the sealed requestState.

Every test builds a modern `Call` by hand (`Call.modern` set, as the transport
does after checking the envelope) and drives the dispatcher round by round,
the way a client retries: same method and params, a new id, `inputResponses`
and the echoed `requestState`. The codec's clock is injected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from mcp_auth import AsyncContext, Context, Elicitation, McpServer, Roots, Sampling
from mcp_auth.audit import dispatch_outcome
from mcp_auth.auth.tokens import Principal
from mcp_auth.mcp.context import Call
from mcp_auth.mcp.jsonrpc import INVALID_PARAMS, Request
from mcp_auth.mcp.modern import MISSING_CLIENT_CAPABILITY, ModernRequest
from mcp_auth.mcp.outcome import Answered, Failed
from mcp_auth.mcp.request_state import (
    MAX_REQUEST_STATE_CHARS,
    REQUEST_STATE_REFUSED,
    RequestStateCodec,
    StateBinding,
    StateRefused,
    b64url_decode,
    b64url_encode,
)
from mcp_auth.sessions import Session

ALICE = Principal(name="alice", tool_patterns=None, credential_id="a" * 64)
# Same name and scope, another token: a state must not pass from one to the other.
ALICE_OTHER_TOKEN = Principal(name="alice", tool_patterns=None, credential_id="b" * 64)
BOB = Principal(name="bob", tool_patterns=None, credential_id="c" * 64)
ALL_CAPABILITIES = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}
NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
ACCEPT_ALICE = {"action": "accept", "content": {"name": "Alice"}}
SAMPLED = {"role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "test-model"}
ROOTS = {"roots": [{"uri": "file:///test/root", "name": "Test Root"}]}
KEY = b"k" * 32


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Channel:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def modern_call(principal: Principal = ALICE, capabilities: dict[str, Any] | None = None) -> Call:
    caps = ALL_CAPABILITIES if capabilities is None else capabilities
    return Call(
        session=Session(principal=principal, outbound=Channel(), session_id=None),
        principal=principal,
        channel=Channel(),
        client_address="127.0.0.1",
        principal_is_current=lambda p: True,
        modern=ModernRequest("2026-07-28", caps),
    )


def build_server(clock: Clock, keys: tuple[bytes, ...] = (KEY,)) -> tuple[McpServer, list[str]]:
    server = McpServer("mrtr")
    server.dispatcher.use_request_state(RequestStateCodec(lambda: keys, ttl_seconds=600, clock=clock))
    side_effects: list[str] = []

    @server.tool()
    def greet(ctx: Context) -> str:
        answer = ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
        return f"Hello, {answer['content']['name']}!"

    @server.tool()
    def two_steps(ctx: Context) -> str:
        side_effects.append(f"round {ctx.round}")
        name = ctx.elicit("Step 1: name?", NAME_SCHEMA, key="step1")["content"]["name"]
        color = ctx.elicit(
            "Step 2: color?", {"type": "object", "properties": {"color": {"type": "string"}}}, key="step2"
        )
        return f"{name} likes {color['content']['color']}"

    @server.tool()
    def everything(ctx: Context) -> str:
        got = ctx.ask(
            {
                "user_name": Elicitation("Name?", NAME_SCHEMA),
                "capital": Sampling("Capital of France?", 50),
                "where": Roots(),
            }
        )
        return f"{got['user_name']['content']['name']} {got['capital']['content']['text']} {got['where'][0]['uri']}"

    @server.tool()
    def swallow(ctx: Context) -> str:
        try:
            return ctx.sample("anything", 10)["model"]
        except Exception:  # the pause must not be caught here
            return "swallowed"

    @server.tool()
    def polite(ctx: Context) -> str:
        if not ctx.supports("elicitation"):
            return "no elicitation declared"
        return ctx.elicit("Name?", NAME_SCHEMA)["content"]["name"]

    @server.tool()
    def echo(text: str) -> str:
        return text

    @server.tool()
    async def async_greet(ctx: AsyncContext) -> str:
        answer = await ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
        roots = await ctx.list_roots()
        return f"{answer['content']['name']} with {len(roots)} root(s)"

    @server.prompt()
    def context_prompt(ctx: Context) -> str:
        answer = ctx.elicit("Context?", {"type": "object", "properties": {"context": {"type": "string"}}})
        return f"Prompt with context: {answer['content']['context']}"

    @server.resource("notes://mine")
    def notes(ctx: Context) -> str:
        return "notes of " + ctx.elicit("Who?", NAME_SCHEMA, key="who")["content"]["name"]

    return server, side_effects


Send = Callable[..., Any]


def sender(server: McpServer) -> Send:
    ids = iter(range(1, 1000))

    def send(
        method: str,
        params: dict[str, Any],
        *,
        responses: Any = None,
        state: Any = None,
        call: Call | None = None,
    ) -> Any:
        params = dict(params)
        if responses is not None:
            params["inputResponses"] = responses
        if state is not None:
            params["requestState"] = state
        return server.dispatcher.outcome(Request(next(ids), method, params), call or modern_call())

    return send


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fx(clock: Clock) -> tuple[McpServer, list[str], Send]:
    server, effects = build_server(clock)
    return server, effects, sender(server)


def paused(outcome: Any) -> dict[str, Any]:
    assert isinstance(outcome, Answered), outcome
    assert outcome.result["resultType"] == "input_required"
    assert isinstance(outcome.result["requestState"], str)
    return outcome.result


def text(outcome: Any) -> str:
    assert isinstance(outcome, Answered), outcome
    assert "resultType" not in outcome.result or outcome.result["resultType"] != "input_required"
    if "messages" in outcome.result:
        return str(outcome.result["messages"][0]["content"]["text"])
    if "contents" in outcome.result:
        return str(outcome.result["contents"][0]["text"])
    return str(outcome.result["content"][0]["text"])


def refused(outcome: Any) -> Failed:
    assert isinstance(outcome, Failed), outcome
    assert (outcome.code, outcome.error_message) == (INVALID_PARAMS, REQUEST_STATE_REFUSED)
    assert outcome.data == {"reason": "invalid_request_state"}
    return outcome


CALL_GREET = ("tools/call", {"name": "greet", "arguments": {}})


def test_an_elicitation_pauses_with_input_required_then_completes(fx: Any) -> None:
    _, _, send = fx
    first = paused(send(*CALL_GREET))
    assert first["inputRequests"] == {
        "user_name": {
            "method": "elicitation/create",
            "params": {"message": "What is your name?", "requestedSchema": NAME_SCHEMA},
        }
    }
    assert "ttlMs" not in first and "cacheScope" not in first  # no caching hints on a pause
    assert (
        text(send(*CALL_GREET, responses={"user_name": ACCEPT_ALICE}, state=first["requestState"])) == "Hello, Alice!"
    )


def test_rounds_replay_the_handler_and_carry_answers_in_a_fresh_state(fx: Any) -> None:
    _, effects, send = fx
    call = ("tools/call", {"name": "two_steps", "arguments": {}})
    r1 = paused(send(*call))
    assert list(r1["inputRequests"]) == ["step1"]
    r2 = paused(send(*call, responses={"step1": ACCEPT_ALICE}, state=r1["requestState"]))
    assert list(r2["inputRequests"]) == ["step2"] and r2["requestState"] != r1["requestState"]
    # Round 3 answers only step2: step1's answer comes from the state.
    r3 = send(*call, responses={"step2": {"action": "accept", "content": {"color": "blue"}}}, state=r2["requestState"])
    assert text(r3) == "Alice likes blue"
    assert effects == ["round 1", "round 2", "round 3"]  # code before an ask runs once per round


def test_one_round_asks_every_missing_key_of_a_batch(fx: Any) -> None:
    _, _, send = fx
    call = ("tools/call", {"name": "everything", "arguments": {}})
    r1 = paused(send(*call))
    assert {k: v["method"] for k, v in r1["inputRequests"].items()} == {
        "user_name": "elicitation/create",
        "capital": "sampling/createMessage",
        "where": "roots/list",
    }
    assert r1["inputRequests"]["capital"]["params"]["maxTokens"] == 50
    # Two of three answered: the third is asked again, alone; the answers travel in the state.
    r2 = paused(send(*call, responses={"user_name": ACCEPT_ALICE, "capital": SAMPLED}, state=r1["requestState"]))
    assert list(r2["inputRequests"]) == ["where"]
    assert text(send(*call, responses={"where": ROOTS}, state=r2["requestState"])) == "Alice Paris file:///test/root"


def test_unknown_keys_are_ignored_and_answers_without_state_are_input(fx: Any) -> None:
    _, _, send = fx
    responses = {"user_name": ACCEPT_ALICE, "unknown_extra_key": {"x": 1}, "another": None}
    assert text(send(*CALL_GREET, responses=responses)) == "Hello, Alice!"
    # A missing answer is asked for again, not an error.
    assert list(paused(send(*CALL_GREET, responses={"wrong_key": ACCEPT_ALICE}))["inputRequests"]) == ["user_name"]


@pytest.mark.parametrize(
    ("responses", "problem"),
    [
        pytest.param(None, "params.inputResponses must be an object", id="null"),
        pytest.param([], "params.inputResponses must be an object", id="array"),
        pytest.param({"user_name": 12345}, "inputResponses.user_name does not answer elicitation/create", id="number"),
        pytest.param({"user_name": {"action": "maybe"}}, "does not answer elicitation/create", id="bad-action"),
        pytest.param({"user_name": {"action": "accept"}}, "carries its content", id="accept-without-content"),
    ],
)
def test_invalid_input_responses_are_invalid_params(fx: Any, responses: Any, problem: str) -> None:
    params = {"name": "greet", "arguments": {}, "inputResponses": responses}
    outcome = fx[0].dispatcher.outcome(Request(7, "tools/call", params), modern_call())
    assert isinstance(outcome, Failed) and outcome.code == INVALID_PARAMS and problem in outcome.error_message


def test_an_undeclared_capability_is_missing_client_capability(fx: Any) -> None:
    _, _, send = fx
    outcome = send("tools/call", {"name": "swallow", "arguments": {}}, call=modern_call(capabilities={}))
    assert isinstance(outcome, Failed) and outcome.code == MISSING_CLIENT_CAPABILITY
    assert outcome.data == {"requiredCapabilities": {"sampling": {}}}


def test_a_handler_that_checks_supports_asks_nothing_it_cannot(fx: Any) -> None:
    _, _, send = fx
    call = ("tools/call", {"name": "polite", "arguments": {}})
    assert text(send(*call, call=modern_call(capabilities={"sampling": {}}))) == "no elicitation declared"
    assert list(paused(send(*call))["inputRequests"]) == ["elicitation-1"]  # default keys follow call order


def test_except_exception_in_a_tool_does_not_swallow_the_pause(fx: Any) -> None:
    _, _, send = fx
    r1 = paused(send("tools/call", {"name": "swallow", "arguments": {}}))
    assert list(r1["inputRequests"]) == ["sampling-1"]


def test_async_tools_prompts_and_resources_pause_and_resume(fx: Any) -> None:
    _, _, send = fx
    call = ("tools/call", {"name": "async_greet", "arguments": {}})
    r1 = paused(send(*call))
    r2 = paused(send(*call, responses={"user_name": ACCEPT_ALICE}, state=r1["requestState"]))
    assert list(r2["inputRequests"]) == ["roots-2"]
    assert text(send(*call, responses={"roots-2": ROOTS}, state=r2["requestState"])) == "Alice with 1 root(s)"

    prompt = ("prompts/get", {"name": "context_prompt"})
    p1 = paused(send(*prompt))
    answer = {"elicitation-1": {"action": "accept", "content": {"context": "tests"}}}
    assert text(send(*prompt, responses=answer, state=p1["requestState"])) == "Prompt with context: tests"

    read = ("resources/read", {"uri": "notes://mine"})
    n1 = paused(send(*read))
    assert text(send(*read, responses={"who": ACCEPT_ALICE}, state=n1["requestState"])) == "notes of Alice"


def test_list_methods_never_answer_input_required(fx: Any) -> None:
    _, _, send = fx
    for method in ("tools/list", "prompts/list", "resources/list"):
        outcome = send(method, {})
        assert isinstance(outcome, Answered) and outcome.result.get("resultType") != "input_required"


# --- the requestState: refused for every kind of misuse, with one message ---------


def first_state(send: Send, call: Call | None = None) -> str:
    return str(paused(send(*CALL_GREET, call=call))["requestState"])


def retry(send: Send, state: Any, call: Call | None = None) -> Any:
    return send(*CALL_GREET, responses={"user_name": ACCEPT_ALICE}, state=state, call=call)


def flip_last_payload_char(state: str) -> str:
    prefix, payload, tag = state.split(".")
    raw = bytearray(b64url_decode(payload))
    raw[-2] ^= 0x01
    return f"{prefix}.{b64url_encode(bytes(raw))}.{tag}"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        pytest.param(lambda s: s + "-TAMPERED", "signature", id="suffix"),
        pytest.param(flip_last_payload_char, "signature", id="payload-bit"),
        pytest.param(lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"), "signature", id="tag"),
        pytest.param(lambda s: "v2" + s[2:], "malformed", id="version-prefix"),
        pytest.param(lambda s: s.rsplit(".", 1)[0] + "=." + s.rsplit(".", 1)[1], "malformed", id="padding"),
        pytest.param(lambda s: 12345, "malformed", id="not-a-string"),
        pytest.param(lambda s: "", "malformed", id="empty"),
        pytest.param(lambda s: "v1." + "A" * MAX_REQUEST_STATE_CHARS, "oversize", id="oversize"),
    ],
)
def test_a_tampered_state_is_refused(fx: Any, mutate: Callable[[str], Any], reason: str) -> None:
    _, _, send = fx
    outcome = refused(retry(send, mutate(first_state(send))))
    assert outcome.state_refusal == reason


def test_non_canonical_base64_is_refused() -> None:
    # "QQ" and "QR" decode to the same byte; only the canonical one is accepted.
    assert b64url_decode("QQ") == b64url_decode("QR".replace("R", "Q"))
    with pytest.raises(ValueError):
        b64url_decode("QR")


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        pytest.param(BOB, "principal", id="another-token"),
        pytest.param(ALICE_OTHER_TOKEN, "principal", id="same-name-and-scope-another-token"),
    ],
)
def test_a_state_minted_for_one_token_is_refused_for_another(fx: Any, other: Principal, reason: str) -> None:
    _, _, send = fx
    state = first_state(send, modern_call(ALICE))
    assert refused(retry(send, state, modern_call(other))).state_refusal == reason
    assert text(retry(send, state, modern_call(ALICE))) == "Hello, Alice!"


def test_a_state_is_bound_to_its_request(fx: Any) -> None:
    _, _, send = fx
    state = paused(send("tools/call", {"name": "polite", "arguments": {}}))["requestState"]
    assert refused(retry(send, state)).state_refusal == "request_binding"


def test_an_expired_state_is_refused(fx: Any, clock: Clock) -> None:
    _, _, send = fx
    state = first_state(send)
    clock.now += 599
    assert text(retry(send, state)) == "Hello, Alice!"
    clock.now += 1
    assert refused(retry(send, state)).state_refusal == "expired"


def test_a_state_from_the_future_is_refused(clock: Clock) -> None:
    server, _ = build_server(Clock(clock.now + 3600))
    state = first_state(sender(server))
    assert refused(retry(sender(build_server(clock)[0]), state)).state_refusal == "issued_in_future"


def test_another_key_refuses_and_a_key_ring_rotates(clock: Clock) -> None:
    old, new = b"o" * 32, b"n" * 32
    state = first_state(sender(build_server(clock, (old,))[0]))
    assert refused(retry(sender(build_server(clock, (new,))[0]), state)).state_refusal == "signature"
    # Rotation: the new key signs, the old one still verifies until it is removed.
    assert text(retry(sender(build_server(clock, (new, old))[0]), state)) == "Hello, Alice!"


def test_no_usable_key_refuses_states_and_cannot_pause(clock: Clock) -> None:
    state = first_state(sender(build_server(clock)[0]))
    server, _ = build_server(clock, ())
    send = sender(server)
    assert refused(retry(send, state)).state_refusal == "key_unavailable"
    outcome = send(*CALL_GREET)  # pausing needs a key: a tool error that says so, never an unsigned state
    assert isinstance(outcome, Answered) and outcome.result["isError"]
    assert "request-state key is unavailable" in text(outcome)


def test_a_tool_that_takes_no_context_still_refuses_a_bad_state(fx: Any) -> None:
    _, _, send = fx
    outcome = send("tools/call", {"name": "echo", "arguments": {"text": "hi"}}, state="v1.bogus.state")
    refused(outcome)


def test_codec_open_checks_binding_directly(clock: Clock) -> None:
    codec = RequestStateCodec(lambda: (KEY,), clock=clock)
    binding = StateBinding.of("tools/call", {"name": "t", "arguments": {"a": 1}}, ALICE)
    state = codec.seal(binding, 1, {})
    # The retry's own fields and _meta are not part of the binding.
    same = StateBinding.of(
        "tools/call", {"name": "t", "arguments": {"a": 1}, "_meta": {"x": 1}, "inputResponses": {}}, ALICE
    )
    assert codec.open(state, same).round == 1
    with pytest.raises(StateRefused, match="request_binding"):
        codec.open(state, StateBinding.of("tools/call", {"name": "t", "arguments": {"a": 2}}, ALICE))


def test_refusals_are_audited_with_the_cause_and_token_never_the_state(
    fx: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, send = fx
    caplog.set_level(logging.INFO, logger="mcp_auth.audit")
    state = first_state(send)
    outcome = retry(send, state, modern_call(BOB))
    dispatch_outcome(outcome, "127.0.0.1", BOB.name)
    first_pause = send(*CALL_GREET)
    dispatch_outcome(first_pause, "127.0.0.1", ALICE.name)
    events = [r.audit for r in caplog.records if r.name == "mcp_auth.audit"]  # type: ignore[attr-defined]
    assert {"event": "denied", "step": "request_state", "reason": "principal", "token": "bob"}.items() <= events[
        0
    ].items()
    assert {"event": "tool_call", "tool": "greet", "outcome": "input_required", "token": "alice"}.items() <= events[
        1
    ].items()
    assert all(state not in r.getMessage() and state not in str(getattr(r, "audit", "")) for r in caplog.records)


def test_the_readme_asking_example_runs_in_both_shapes(clock: Clock) -> None:
    from test_readme import block

    namespace: dict[str, Any] = {}
    exec(block("python", "# asking.py"), namespace)  # the README's own example
    server: McpServer = namespace["server"]
    server.dispatcher.use_request_state(RequestStateCodec(lambda: (KEY,), clock=clock))
    send = sender(server)
    trip = ("tools/call", {"name": "plan_trip", "arguments": {}})
    r1 = paused(send(*trip))
    assert set(r1["inputRequests"]) == {"city", "tip", "roots"}
    answers = {"city": {"action": "accept", "content": {"city": "Lyon"}}, "tip": SAMPLED, "roots": ROOTS}
    assert text(send(*trip, responses=answers, state=r1["requestState"])) == "Lyon: Paris (1 root(s), round 2)"
    assert text(send(*trip, call=modern_call(capabilities={"elicitation": {}}))).startswith("This tool needs")
    g1 = paused(send("tools/call", {"name": "greet", "arguments": {}}))
    declined = send("tools/call", {"name": "greet", "arguments": {}}, responses={"user_name": {"action": "decline"}})
    assert list(g1["inputRequests"]) == ["user_name"] and text(declined) == "Maybe another time."


def test_the_context_tells_the_era_apart(clock: Clock) -> None:
    server = McpServer("era")
    server.dispatcher.use_request_state(RequestStateCodec(lambda: (KEY,), clock=clock))
    seen: list[Any] = []

    @server.tool()
    def look(ctx: Context) -> str:
        seen.append((ctx.round, ctx.supports("sampling"), ctx.supports("roots"), ctx.client_capabilities))
        return "ok"

    @server.tool()
    def ping_client(ctx: Context) -> str:
        return str(ctx.request("ping", {}))

    send = sender(server)
    assert text(send("tools/call", {"name": "look", "arguments": {}}, call=modern_call(capabilities={"roots": {}})))
    assert seen == [(1, False, True, {"roots": {}})]
    # Only the three asks exist in the stateless era: anything else is the tool's error, named.
    outcome = send("tools/call", {"name": "ping_client", "arguments": {}})
    assert isinstance(outcome, Answered) and outcome.result["isError"]
    assert "ping cannot be asked in the stateless revision" in text(outcome)
