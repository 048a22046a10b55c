"""The `requestState` of a multi round-trip request: sealed by the server, opened on the retry.

In the stateless revision a handler that needs input from the client ends its
round with `input_required` and a `requestState`; the client retries the same
request with its answers and echoes the state byte for byte. The retry may
land on another worker or host, so the state carries what the server must
remember between rounds (the answers gathered so far), and it comes back
through the client: it is attacker-controlled input. This module is the one
owner of its format and its checks.

Format (`v1`): ``v1.<payload>.<tag>``, both parts base64url without padding.
The payload is compact JSON: format version, issued-at and expiry (seconds),
the method, a digest of the request's salient params (its name or URI and its
arguments), a keyed digest of the principal (specific to the token: two tokens
with the same scope get different digests; the digest is keyed, so the state
shows neither the token's hash nor its name), a nonce (every round's state is
distinct), the round number and the answers so far. The tag is HMAC-SHA256
over the payload with the deployment's key; a ring of keys lets an operator
rotate: the first key signs, every key verifies.

What it protects: integrity (a changed byte fails the tag), binding (another
token, another method, tool or argument fails), expiry. What it does not: the
payload is readable by whoever holds the state (signed, not encrypted), so
answers are visible to the client that gave them and nothing secret may go in.

Every failure raises `StateRefused` with a reason for the audit log; what the
client is told is the same for every cause (`REQUEST_STATE_REFUSED`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..auth.tokens.principal import Principal

FORMAT_PREFIX = "v1."
_TAG_DOMAIN = b"mcp-auth/request-state/v1."
_PRINCIPAL_DOMAIN = b"mcp-auth/request-state/principal\x00"

# The spec's and the python SDK's default: long enough for a person to answer an
# elicitation, short enough that a leaked state is soon worthless.
DEFAULT_REQUEST_STATE_TTL_SECONDS = 600.0
# A state issued this far in the future is still accepted: the clocks of the hosts
# of one deployment may disagree a little (the host that verifies may be behind).
CLOCK_SKEW_SECONDS = 60
# The encoded state, either way: far beyond a few rounds of answers, far below the
# 4 MiB body limit, so a handler that piles up answers fails visibly (a tool error)
# rather than producing a state that a client or proxy truncates.
MAX_REQUEST_STATE_CHARS = 64 * 1024
# A key shorter than this is refused at startup (ConfigError): HMAC-SHA256 wants 256 bits.
MIN_KEY_BYTES = 32

# The one message a client gets for every refusal; the cause goes to the audit log only.
REQUEST_STATE_REFUSED = "Invalid or expired requestState"
REQUEST_STATE_REFUSED_DATA = {"reason": "invalid_request_state"}

_B64URL = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)


class StateRefused(Exception):
    """A requestState that cannot be used; `reason` is for the audit log, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict, canonical base64url without padding; ValueError for anything else.

    Canonical means one encoding per byte string: unused low bits of the last
    character must be zero, so no two distinct strings verify as the same state.
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value (sorted keys, no spaces), for digests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def digest(value: Any) -> str:
    """A short, unkeyed digest of a JSON value (128 bits): what a state binds without carrying it."""
    return b64url_encode(hashlib.sha256(canonical_json(value)).digest()[:16])


@dataclass(frozen=True)
class StateBinding:
    """What a state belongs to: this request (method and salient params) by this principal."""

    method: str
    params_digest: str
    principal: Principal

    @classmethod
    def of(cls, method: str, params: Mapping[str, Any], principal: Principal) -> StateBinding:
        """The binding of a request; `_meta` and the retry's own fields are not part of what it asks."""
        salient = {k: v for k, v in params.items() if k not in ("_meta", "inputResponses", "requestState")}
        return cls(method, digest(salient), principal)


@dataclass(frozen=True)
class OpenedState:
    """A verified state: the round it ended and the answers gathered by then (key -> {"q", "a"})."""

    round: int
    answers: dict[str, dict[str, Any]]


def _principal_claim(key: bytes, principal: Principal) -> str:
    # The credential id is the SHA-256 of the token: specific to the token, not to its scope.
    material = _PRINCIPAL_DOMAIN + f"{principal.name}\x00{principal.credential_id}".encode()
    return b64url_encode(hmac.new(key, material, hashlib.sha256).digest()[:16])


def _tag(key: bytes, payload: str) -> bytes:
    return hmac.new(key, _TAG_DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()


class RequestStateCodec:
    """Seals and opens requestState with the deployment's key ring.

    `keys` is asked at every use, so a key file rotated on disk takes effect
    without a restart; it returns the ring (first signs, all verify), or None
    while no key is usable (then nothing is sealed and every state is refused).
    `clock` returns seconds since the epoch (injected by tests).
    """

    def __init__(
        self,
        keys: Callable[[], Sequence[bytes] | None],
        ttl_seconds: float = DEFAULT_REQUEST_STATE_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    @classmethod
    def ephemeral(cls) -> RequestStateCodec:
        """A codec with a random key of this process only: a retry must come back to this process.

        For a dispatcher used without an app (tests, an embedder calling `dispatch`);
        an app built by `mcp_auth` hands its dispatcher the deployment's key instead.
        """
        key = secrets.token_bytes(MIN_KEY_BYTES)
        return cls(lambda: (key,))

    def seal(self, binding: StateBinding, round_number: int, answers: Mapping[str, Any]) -> str:
        """A new state for `binding`; RuntimeError when there is no key or it would be too large."""
        ring = self._keys()
        if not ring:
            raise RuntimeError("the request-state key is unavailable (see the server log); cannot pause this request")
        key = ring[0]
        now = int(self._clock())
        claims = {
            "v": 1,
            "iat": now,
            "exp": now + int(self.ttl_seconds),
            "m": binding.method,
            "a": binding.params_digest,
            "p": _principal_claim(key, binding.principal),
            "n": b64url_encode(secrets.token_bytes(8)),
            "rd": round_number,
            "r": dict(answers),
        }
        payload = b64url_encode(canonical_json(claims))
        token = f"{FORMAT_PREFIX}{payload}.{b64url_encode(_tag(key, payload))}"
        if len(token) > MAX_REQUEST_STATE_CHARS:
            raise RuntimeError(
                f"the answers gathered so far exceed the request state limit of {MAX_REQUEST_STATE_CHARS} "
                "characters; ask for less in one request"
            )
        return token

    def open(self, token: object, binding: StateBinding) -> OpenedState:
        """The verified contents of `token` for `binding`; StateRefused(reason) otherwise."""
        if not isinstance(token, str) or not token.startswith(FORMAT_PREFIX):
            raise StateRefused("malformed")
        if len(token) > MAX_REQUEST_STATE_CHARS:
            raise StateRefused("oversize")
        payload, dot, tag_text = token[len(FORMAT_PREFIX) :].partition(".")
        try:
            tag = b64url_decode(tag_text)
            raw = b64url_decode(payload)
        except ValueError:
            raise StateRefused("malformed") from None
        if not dot:
            raise StateRefused("malformed")
        ring = self._keys()
        if not ring:
            raise StateRefused("key_unavailable")
        # Every key is tried (no early exit), so timing does not say which one matched.
        matched: bytes | None = None
        for key in ring:
            if hmac.compare_digest(_tag(key, payload), tag) and matched is None:
                matched = key
        if matched is None:
            raise StateRefused("signature")
        claims = self._claims(raw)
        now = self._clock()
        if claims["iat"] > now + CLOCK_SKEW_SECONDS:
            raise StateRefused("issued_in_future")
        if now >= claims["exp"]:
            raise StateRefused("expired")
        same_request = hmac.compare_digest(str(claims["m"]).encode(), binding.method.encode()) and (
            hmac.compare_digest(str(claims["a"]).encode(), binding.params_digest.encode())
        )
        if not same_request:
            raise StateRefused("request_binding")
        if not hmac.compare_digest(str(claims["p"]).encode(), _principal_claim(matched, binding.principal).encode()):
            raise StateRefused("principal")
        return OpenedState(claims["rd"], claims["r"])

    @staticmethod
    def _claims(raw: bytes) -> dict[str, Any]:
        # Signed by us, so well formed unless the format changed under a running deployment: still checked.
        try:
            claims = json.loads(raw)
        except ValueError:
            raise StateRefused("malformed") from None
        if not isinstance(claims, dict) or claims.get("v") != 1:
            raise StateRefused("version")
        ints = all(isinstance(claims.get(k), int) and not isinstance(claims.get(k), bool) for k in ("iat", "exp", "rd"))
        strings = all(isinstance(claims.get(k), str) for k in ("m", "a", "p"))
        answers = claims.get("r")
        if not ints or not strings or not isinstance(answers, dict):
            raise StateRefused("malformed")
        if not all(isinstance(v, dict) and isinstance(v.get("q"), str) and "a" in v for v in answers.values()):
            raise StateRefused("malformed")
        return claims
