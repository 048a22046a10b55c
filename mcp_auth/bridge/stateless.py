"""The stateless era (2026-07-28) through the bridge: pooled children, and their asks as `input_required`.

A modern request is served by a child of its token's pool (`pool`). When the
child asks the client something while serving it (sampling, elicitation,
roots), the request cannot send that to the client: the revision has no
server-to-client requests. The round is *parked* instead: the child keeps
waiting for its answer, holding its place, and the client gets
`input_required` with the child's asks as `inputRequests` (keys `ask-1`, ...)
and a `requestState`. The retry's `inputResponses` go to the waiting child
under the child's own ids, and the retry's connection waits for the child's
result (or its next asks: another round).

How the waiting child is found again: `requestState` is a fresh random id
(256 bits) per round, the key of the parked round in this process's table;
the table also binds it to the principal (token name and credential), the
method, the name or URI and the arguments, so a state is useless to another
token or for another call, and a state is good for one retry only. Parked
rounds expire after `PARKED_ROUND_SECONDS` (the child is told to cancel).

When the retry lands in a process that does not hold the round (the front
restarted, the round expired, or, against the README, several workers): the
id is unknown there, so the retry gets the revision's answer to a bad state,
-32602 "Invalid or expired requestState", and the client starts the request
over (without a state). No child is ever resumed by a state it was not given.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from ..mcp.call import Call, Channel
from ..mcp.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, ErrorResponse, JsonRpcError, Request, Response
from ..mcp.modern import MISSING_CLIENT_CAPABILITY
from ..mcp.protocol import _LOG_RANK
from .link import Pending
from .pool import PooledChild, Pools

logger = logging.getLogger("mcp_auth.bridge")

# The revision's default requestState lifetime: long enough for a person to answer an elicitation.
PARKED_ROUND_SECONDS = 600.0
# Parked rounds at once (each holds a child): the pools bound children; this bounds the table.
MAX_PARKED_ROUNDS = 256
MRTR_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
_ASK_CAPABILITY = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
_BAD_STATE = "Invalid or expired requestState"


class Round:
    """One modern request's wait for its child, over one or more client requests."""

    def __init__(self, child: PooledChild, binding: tuple[Any, ...]) -> None:
        self.child = child
        self.binding = binding
        self.pending: Pending | None = None
        self.asked = threading.Event()
        self._lock = threading.Lock()
        self._asks: dict[str, Request] = {}
        self._numbers = iter(range(1, 1 << 62))
        self.expires_at = 0.0

    def add_ask(self, request: Request) -> None:
        with self._lock:
            self._asks[f"ask-{next(self._numbers)}"] = request
        self.asked.set()

    def withdraw(self, request_id: Any) -> None:
        with self._lock:
            for key, ask in list(self._asks.items()):
                if ask.id == request_id:
                    del self._asks[key]

    def asks(self) -> dict[str, Request]:
        with self._lock:
            return dict(self._asks)

    def answer(self, key: str, reply: Response | ErrorResponse) -> None:
        with self._lock:
            ask = self._asks.pop(key, None)
            if not self._asks:
                self.asked.clear()
        if ask is not None:
            self.child.link.respond(ask.id, reply)


class StatelessBridge:
    """Serves modern requests from the pools; parks and resumes rounds."""

    def __init__(
        self,
        pools: Pools,
        *,
        request_timeout: float,
        server_info: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.monotonic,
        parked_seconds: float = PARKED_ROUND_SECONDS,
    ) -> None:
        self.pools = pools
        self.request_timeout = request_timeout
        self._server_info = server_info
        self._clock = clock
        self.parked_seconds = parked_seconds
        self._lock = threading.Lock()
        self._parked: dict[str, Round] = {}

    def answer(self, request: Request, call: Call, channel: Channel) -> dict[str, Any]:
        """The result of a modern request (`resultType` complete or input_required); JsonRpcError otherwise."""
        assert call.modern is not None
        params = dict(request.params)
        state = params.pop("requestState", None)
        responses = params.pop("inputResponses", None)
        if responses is not None and not isinstance(responses, dict):
            raise JsonRpcError(INVALID_PARAMS, "inputResponses must be an object")
        binding = _binding(request, call)
        channel = _LogLevelChannel(channel, call.modern.log_level)
        if state is not None:
            current = self._claim(state, binding)
            current.child.link.rebind(_pending(current), channel, request.id)
            self._feed(current, responses or {})
        else:
            child = self.pools.take(binding[0], call.principal.name)
            current = Round(child, binding)
            child.round = current
            try:
                current.pending = child.link.begin(
                    request.method, _child_params(params), channel=channel, client_id=request.id
                )
            except BaseException:
                self.pools.give_back(child)
                raise
        return self._run(current, request, call)

    def _run(self, current: Round, request: Request, call: Call) -> dict[str, Any]:
        link, pending = current.child.link, _pending(current)

        def gone() -> str | None:  # the request's connection ended (the revision's cancellation)
            return "the client went away" if call.session.closed.is_set() else None

        try:
            while True:
                result = link.wait(pending, timeout=self.request_timeout, wake=current.asked, stop=gone)
                if result is not None:
                    break
                open_asks = self._screen(current, request, call)
                if open_asks:
                    return self._park(current, open_asks)
        except BaseException:
            link.end(pending)
            self.pools.give_back(current.child)
            raise
        link.end(pending)
        self.pools.give_back(current.child)
        return result  # the dispatcher adds the revision's envelope

    def _screen(self, current: Round, request: Request, call: Call) -> dict[str, Request]:
        """The asks that may go to the client; the others are answered to the child with an error now."""
        assert call.modern is not None
        allowed: dict[str, Request] = {}
        for key, ask in current.asks().items():
            capability = _ASK_CAPABILITY.get(ask.method)
            if request.method not in MRTR_METHODS or capability is None:
                why = f"{ask.method} cannot reach the client during {request.method} in the stateless revision"
                current.answer(key, ErrorResponse(ask.id, METHOD_NOT_FOUND, why))
            elif not call.modern.supports(capability):
                why = f"the client did not declare the '{capability}' capability, so it cannot answer {ask.method}"
                current.answer(key, ErrorResponse(ask.id, MISSING_CLIENT_CAPABILITY, why))
            else:
                allowed[key] = ask
        return allowed

    def _park(self, current: Round, asks: dict[str, Request]) -> dict[str, Any]:
        state = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            expired = [key for key, parked in self._parked.items() if parked.expires_at <= now]
            stale = [self._parked.pop(key) for key in expired]
            if len(self._parked) >= MAX_PARKED_ROUNDS:
                stale.append(current)
                full = True
            else:
                current.expires_at = now + self.parked_seconds
                self._parked[state] = current
                full = False
        for old in stale:
            self._abandon(old)
        if full:
            raise JsonRpcError(-32000, "too many requests are waiting for client input; try again later")
        return {
            "resultType": "input_required",
            "inputRequests": {key: {"method": ask.method, "params": ask.params} for key, ask in asks.items()},
            "requestState": state,
        }

    def _claim(self, state: Any, binding: tuple[Any, ...]) -> Round:
        expired: Round | None = None
        with self._lock:
            current = self._parked.get(state) if isinstance(state, str) else None
            if current is not None and current.expires_at <= self._clock():
                expired = self._parked.pop(state)  # its child is freed below
                current = None
            if current is None or current.binding != binding:
                reason = "unknown (expired, used, or issued by another process)" if current is None else "mismatch"
            else:
                del self._parked[state]  # one retry per state
                return current
        if expired is not None:
            self._abandon(expired)
        logger.info("a retry's requestState was refused: %s", reason)
        raise JsonRpcError(INVALID_PARAMS, _BAD_STATE, {"reason": "invalid_request_state"})

    @staticmethod
    def _feed(current: Round, responses: dict[str, Any]) -> None:
        for key in current.asks():
            answer = responses.get(key)
            if isinstance(answer, dict):
                current.answer(key, Response(0, answer))
            # missing: asked again in the next input_required (the child still waits)

    def _abandon(self, current: Round) -> None:
        """A parked round nobody retried: the child is told to cancel, and its place is freed."""
        link, pending = current.child.link, _pending(current)
        for key, ask in current.asks().items():
            current.answer(key, ErrorResponse(ask.id, -32000, "the client did not answer in time"))
        link.notify("notifications/cancelled", {"requestId": pending.child_id, "reason": "input never arrived"})
        link.end(pending)
        self.pools.give_back(current.child)

    def close(self) -> None:
        with self._lock:
            parked, self._parked = list(self._parked.values()), {}
        for current in parked:
            self._abandon(current)


class _LogLevelChannel:
    """A request's channel that passes the child's log messages only at or above the level the request
    asked for (`io.modelcontextprotocol/logLevel`), and none when it asked for none."""

    def __init__(self, channel: Channel, level: str | None) -> None:
        self._channel = channel
        self._threshold = _LOG_RANK.get(level) if level is not None else None

    def send(self, message: dict[str, Any]) -> None:
        if message.get("method") == "notifications/message":
            params = message.get("params")
            level = params.get("level") if isinstance(params, dict) else None
            rank = _LOG_RANK.get(level) if isinstance(level, str) else None
            if self._threshold is None or rank is None or rank < self._threshold:
                return
        self._channel.send(message)


def _pending(current: Round) -> Pending:
    assert current.pending is not None
    return current.pending


def _child_params(params: dict[str, Any]) -> dict[str, Any]:
    """What the child (a handshake-era server) gets: the request without the revision's envelope keys."""
    meta = params.get("_meta")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if not k.startswith("io.modelcontextprotocol/")}
        params = {**params, "_meta": kept} if kept else {k: v for k, v in params.items() if k != "_meta"}
    return params


def _binding(request: Request, call: Call) -> tuple[Any, ...]:
    """What a requestState is bound to: the token (name and credential), the method, its name or URI and
    its arguments (canonical JSON)."""
    from ..capacity import principal_key

    params = request.params
    target = params.get("name") if request.method != "resources/read" else params.get("uri")
    arguments = json.dumps(params.get("arguments"), sort_keys=True, separators=(",", ":"), default=str)
    return (principal_key(call.principal), request.method, target, arguments)
