"""Multi round-trip requests: what a handler asks the client, and the replay that answers it.

One handler API serves both eras. A handler asks with `ctx.elicit`,
`ctx.sample`, `ctx.list_roots` or a batch `ctx.ask({key: Elicitation(...), ...})`.

- Handshake era: each ask is a server-to-client request on the call's stream,
  and the handler blocks until the client answers (the `Context` does that).
- Stateless era (2026-07-28): the server may not send requests, and the retry
  that carries the answers is a new HTTP request that may land on another
  worker or host, where no suspended thread exists. So each round re-runs the
  handler from the top (replay). `Replay.ask` returns at once for every key
  already answered (the verified `requestState` first, then the retry's
  `inputResponses`); the first ask with a key still unanswered ends the run
  with `InputRequired`, which the dispatcher turns into an `input_required`
  result asking for exactly those keys, with a fresh sealed state carrying
  every answer so far.

The signals derive from `BaseException`, like `asyncio.CancelledError`, so a
tool's `except Exception:` cannot swallow the pause and turn it into a tool
error. Consequence for tool authors (README): code before an ask runs once per
round, and the path to each ask must be deterministic given the answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .content import text_content
from .jsonrpc import INVALID_PARAMS, Request
from .modern import MISSING_CLIENT_CAPABILITY, ModernRequest
from .request_state import (
    REQUEST_STATE_REFUSED,
    REQUEST_STATE_REFUSED_DATA,
    OpenedState,
    RequestStateCodec,
    StateBinding,
    StateRefused,
    digest,
)

# The requests that may answer input_required (the revision's MRTR page); no other.
MRTR_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
# An inputRequests key is server-chosen; a bound keeps a handler's mistake from bloating the state.
MAX_ASK_KEY_CHARS = 128
_ELICIT_ACTIONS = ("accept", "decline", "cancel")


class Ask:
    """One question for the client: a request method, its params, and the capability it needs."""

    METHOD: ClassVar[str]
    CAPABILITY: ClassVar[str]

    @property
    def method(self) -> str:
        return self.METHOD

    @property
    def capability(self) -> str:
        """The client capability (a key of clientCapabilities) that answering needs."""
        return self.CAPABILITY

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def problem(self, answer: Any) -> str | None:
        """Why `answer` (from a client) is not a result of this request; None when it is."""
        raise NotImplementedError

    def result(self, answer: dict[str, Any]) -> Any:
        """What the handler gets back: the answer, in the shape the single-ask methods return."""
        return answer


@dataclass(frozen=True)
class Elicitation(Ask):
    """elicitation/create in form mode; the handler gets {"action": ..., "content": ...}."""

    message: str
    requested_schema: dict[str, Any]
    METHOD: ClassVar[str] = "elicitation/create"
    CAPABILITY: ClassVar[str] = "elicitation"

    def params(self) -> dict[str, Any]:
        # No "mode": form is the default, and the 2025-06-18 handshake revision has no such field.
        return {"message": self.message, "requestedSchema": self.requested_schema}

    def problem(self, answer: Any) -> str | None:
        if not isinstance(answer, dict) or answer.get("action") not in _ELICIT_ACTIONS:
            return "an elicitation result is an object with action accept, decline or cancel"
        content = answer.get("content")
        if content is not None and not isinstance(content, dict):
            return "an elicitation result's content is an object"
        if answer["action"] == "accept" and not isinstance(content, dict):
            return "an accepted elicitation result carries its content (an object)"
        return None


@dataclass(frozen=True)
class Sampling(Ask):
    """sampling/createMessage; the handler gets the CreateMessageResult ({"role", "content", "model", ...})."""

    messages: str | list[dict[str, Any]]
    max_tokens: int
    system_prompt: str | None = None
    temperature: float | None = None
    stop_sequences: list[str] | None = None
    model_preferences: dict[str, Any] | None = None
    METHOD: ClassVar[str] = "sampling/createMessage"
    CAPABILITY: ClassVar[str] = "sampling"

    def params(self) -> dict[str, Any]:
        messages = self.messages
        if isinstance(messages, str):  # one user text message
            messages = [{"role": "user", "content": text_content(messages)}]
        params: dict[str, Any] = {"messages": messages, "maxTokens": self.max_tokens}
        optional = {
            "systemPrompt": self.system_prompt,
            "temperature": self.temperature,
            "stopSequences": self.stop_sequences,
            "modelPreferences": self.model_preferences,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params

    def problem(self, answer: Any) -> str | None:
        if not isinstance(answer, dict) or not isinstance(answer.get("role"), str):
            return "a sampling result is an object with a role"
        if not isinstance(answer.get("content"), (dict, list)) or not isinstance(answer.get("model"), str):
            return "a sampling result carries content and model"
        return None


@dataclass(frozen=True)
class Roots(Ask):
    """roots/list; the handler gets the list of roots ({"uri", "name"?})."""

    METHOD: ClassVar[str] = "roots/list"
    CAPABILITY: ClassVar[str] = "roots"

    def params(self) -> dict[str, Any]:
        return {}

    def problem(self, answer: Any) -> str | None:
        roots = answer.get("roots") if isinstance(answer, dict) else None
        if not isinstance(roots, list) or not all(isinstance(r, dict) and isinstance(r.get("uri"), str) for r in roots):
            return "a roots result is an object whose roots are objects with a uri"
        return None

    def result(self, answer: dict[str, Any]) -> Any:
        roots = answer.get("roots", [])
        return roots if isinstance(roots, list) else []


@dataclass(frozen=True)
class RawAsk(Ask):
    """`ctx.request(method, params)` for one of the three methods; the handler gets the raw result."""

    raw_method: str
    raw_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.raw_method not in _CHECKERS:
            raise RuntimeError(
                f"{self.raw_method} cannot be asked in the stateless revision (2026-07-28): "
                "only elicitation/create, sampling/createMessage and roots/list"
            )

    @property
    def method(self) -> str:
        return self.raw_method

    @property
    def capability(self) -> str:
        return _CHECKERS[self.raw_method].capability

    def params(self) -> dict[str, Any]:
        return dict(self.raw_params)

    def problem(self, answer: Any) -> str | None:
        return _CHECKERS[self.raw_method].problem(answer)


# One ask of each kind: what a raw ask's method needs and how its answer is checked.
_CHECKERS: dict[str, Ask] = {
    "elicitation/create": Elicitation("", {}),
    "sampling/createMessage": Sampling("", 1),
    "roots/list": Roots(),
}


class ReplayStop(BaseException):
    """Ends a modern round early; BaseException, so a handler's `except Exception` lets it through."""


class InputRequired(ReplayStop):
    """The handler asked for what the client has not answered yet: `result` is the input_required result."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("input required")
        self.result = result


class ReplayRefused(ReplayStop):
    """The round cannot go on: a JSON-RPC error (bad inputResponses, a refused state, a missing capability).

    `audit_reason` is set for a refused requestState: the cause, for the audit log only.
    """

    def __init__(self, code: int, message: str, data: Any = None, audit_reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.audit_reason = audit_reason


def _ask_digest(ask: Ask) -> str:
    return digest({"method": ask.method, "params": ask.params()})


class Replay:
    """One modern round of one request: the answers it may use and the asks it makes.

    Built by the dispatcher before the handler runs; the constructor verifies
    the retry's `inputResponses` (an object, else -32602) and its
    `requestState` (ReplayRefused with the frozen message otherwise).
    """

    def __init__(self, request: Request, modern: ModernRequest, binding: StateBinding, codec: RequestStateCodec):
        self._modern = modern
        self._binding = binding
        self._codec = codec
        params = request.params
        responses = params.get("inputResponses", {})
        if not isinstance(responses, dict):
            raise ReplayRefused(INVALID_PARAMS, "params.inputResponses must be an object keyed like inputRequests")
        self._responses: dict[str, Any] = responses
        opened = OpenedState(0, {})
        if "requestState" in params:
            try:
                opened = codec.open(params["requestState"], binding)
            except StateRefused as exc:
                raise ReplayRefused(
                    INVALID_PARAMS, REQUEST_STATE_REFUSED, dict(REQUEST_STATE_REFUSED_DATA), audit_reason=exc.reason
                ) from None
        self._carried: dict[str, dict[str, Any]] = dict(opened.answers)
        self.round = opened.round + 1
        self._asked: dict[str, str] = {}  # key -> digest of the question, this run

    def supports(self, capability: str) -> bool:
        return self._modern.supports(capability)

    def ask(self, asks: Mapping[str, Ask]) -> dict[str, Any]:
        """The answers to `asks`, or InputRequired for those still unanswered (see the module docstring)."""
        self._check_keys(asks)
        missing = [ask.capability for ask in asks.values() if not self._modern.supports(ask.capability)]
        if missing:
            names = ", ".join(sorted(set(missing)))
            raise ReplayRefused(
                MISSING_CLIENT_CAPABILITY,
                f"This request needs the client capabilities it did not declare: {names}",
                {"requiredCapabilities": {name: {} for name in sorted(set(missing))}},
            )
        answers: dict[str, Any] = {}
        unanswered: dict[str, Ask] = {}
        for key, ask in asks.items():
            question = self._asked[key]
            carried = self._carried.get(key)
            if carried is not None and carried["q"] == question:
                answers[key] = carried["a"]
            elif key in self._responses:
                answer = self._responses[key]
                why = ask.problem(answer)
                if why is not None:
                    raise ReplayRefused(INVALID_PARAMS, f"inputResponses.{key} does not answer {ask.method}: {why}")
                self._carried[key] = {"q": question, "a": answer}
                answers[key] = answer
            else:
                unanswered[key] = ask
        if unanswered:
            raise InputRequired(self._input_required(unanswered))
        return {key: ask.result(answers[key]) for key, ask in asks.items()}

    def _check_keys(self, asks: Mapping[str, Ask]) -> None:
        if not asks:
            raise ValueError("ask() needs at least one question")
        for key, ask in asks.items():
            if not isinstance(key, str) or not key or len(key) > MAX_ASK_KEY_CHARS:
                raise ValueError(f"an ask key is a non-empty string of at most {MAX_ASK_KEY_CHARS} characters")
            if not isinstance(ask, Ask):
                raise TypeError(f"ask {key!r}: use Elicitation(...), Sampling(...) or Roots()")
            question = _ask_digest(ask)
            if self._asked.setdefault(key, question) != question:
                raise ValueError(f"the key {key!r} was already used for a different question in this call")

    def _input_required(self, unanswered: Mapping[str, Ask]) -> dict[str, Any]:
        state = self._codec.seal(self._binding, self.round, self._carried)
        return {
            "resultType": "input_required",
            "inputRequests": {key: {"method": ask.method, "params": ask.params()} for key, ask in unanswered.items()},
            "requestState": state,
        }
