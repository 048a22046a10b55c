"""The request pipeline: steps 1-5 of DESIGN.md, in that order, for every transport.

`Guard.admit(environ)` is the only way a request to the MCP endpoint gets a
`Principal`. It reads the WSGI environ once, runs each step as a pure check
from `network`, `ratelimit` and `tokens`, and raises the step's `Refusal` at
the first failure, so later steps never run. The HTTP transport and the
WebSocket handshake both call it; there is no second implementation.

What it trusts: `REMOTE_ADDR` as the WSGI server saw the peer; the
`X-Forwarded-For` header only when that peer is a configured trusted proxy.
Everything else in the environ is attacker-controlled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .auth.tokens import ANONYMOUS, Principal, parse_bearer
from .config import AuthSetup, Config
from .network import (
    ForwardedForError,
    HostError,
    IPAddress,
    address_text,
    is_trusted_proxy,
    parse_address,
    parse_host,
    request_target_authority,
    resolve_client_address,
)
from .ratelimit import FailureRateLimiter
from .refusals import HostInvalid, HostNotAllowed, IpNotAllowed, OriginNotAllowed, RateLimited, Unauthorized

ENVIRON_CLIENT_KEY = "mcp_auth.client_address"

_LOOPBACK_ONLY = (
    "This server runs without an explicit token (or with --no-auth) and serves loopback clients only; "
    "the operator can set MCP_AUTH_TOKEN, --token-file or --tokens-file"
)
_NOT_ALLOWED = "This client address is not in the server's allowed networks (--allowed-ip); ask the operator to add it"


class GuessLimiter(Protocol):
    """Step 4's counter (`ratelimit.FailureRateLimiter`, or the store's shared one)."""

    def credential_key(self, presented: bytes) -> bytes: ...

    def check_and_record(self, address: IPAddress, credential: bytes | None) -> int: ...

    def accepted(self, address: IPAddress, credential: bytes) -> None: ...

    def retry_after(self, address: IPAddress) -> int: ...


@dataclass(frozen=True)
class Admission:
    """A request that passed steps 1-5: who it is and where it came from."""

    principal: Principal
    client_address: IPAddress


class Guard:
    """Steps 1-5 of the pipeline over one frozen Config and one token source."""

    def __init__(self, config: Config, auth: AuthSetup, rate_limiter: GuessLimiter | None = None) -> None:
        """`rate_limiter` counts step 4 (default: in this process's memory; the shared store's
        `SharedFailureRateLimiter` when several processes must count together)."""
        self.config = config
        self.token_source = auth.source
        self.unauthorized_hint = auth.unauthorized_hint
        if self.token_source is None and not config.no_auth:
            raise ValueError("a token source is required unless no_auth is set")
        self.rate_limiter: GuessLimiter = rate_limiter or FailureRateLimiter(
            config.rate_limit_failures, config.rate_limit_window
        )
        # Without an explicit token (or with --no-auth) the contract allows loopback only. The
        # bind address is not always ours to see (gunicorn, embedding), the peer always is.
        self.loopback_peers_only = config.no_auth or not config.explicit_token_source

    # step 1
    def client_address(self, environ: dict[str, Any]) -> IPAddress:
        """The client's address, allowed by the network allowlist; else IpNotAllowed."""
        peer = parse_address(environ.get("REMOTE_ADDR") or "")
        if peer is None:
            raise IpNotAllowed("The server could not determine the client address")
        if self.loopback_peers_only and not peer.is_loopback:
            raise IpNotAllowed(_LOOPBACK_ONLY)
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        try:
            client = resolve_client_address(peer, [forwarded] if forwarded else [], self.config.proxy_networks)
        except ForwardedForError:
            environ[ENVIRON_CLIENT_KEY] = address_text(peer)
            raise IpNotAllowed("The X-Forwarded-For header from the proxy is malformed") from None
        environ[ENVIRON_CLIENT_KEY] = address_text(client)
        if not self.config.address_allowlist.allows(client):
            raise IpNotAllowed(_NOT_ALLOWED)
        return client

    def check_peer(self, peer: IPAddress) -> bool:
        """Step 1 as far as the TCP peer alone decides it, for a server that asks before reading a byte.

        Raises IpNotAllowed when `client_address` would refuse every request
        from this peer. Returns True when the peer is a trusted proxy (its
        clients are judged per request, from X-Forwarded-For), else False.
        """
        if self.loopback_peers_only and not peer.is_loopback:
            raise IpNotAllowed(_LOOPBACK_ONLY)
        if is_trusted_proxy(peer, self.config.proxy_networks):
            return True
        if not self.config.address_allowlist.allows(peer):
            raise IpNotAllowed(_NOT_ALLOWED)
        return False

    # steps 2 and 3
    def check_browser_headers(self, environ: dict[str, Any]) -> None:
        raw_host = environ.get("HTTP_HOST")
        if raw_host is None:
            raise HostInvalid("The Host header is missing")
        named = [("The Host header", raw_host)]
        # An absolute-form target (GET http://name/mcp) names a host of its own, which
        # RFC 9112 has a server prefer to Host: both must be hosts this server answers to.
        authority = request_target_authority(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
        if authority is not None:
            named.append(("The host in the request target", authority))
        for where, value in named:
            try:
                host, port = parse_host(value)
            except HostError:
                raise HostInvalid(f"{where} is malformed; send host or host:port") from None
            if not self.config.host_policy.allows(host, port):
                raise HostNotAllowed(
                    "This Host is not allowed: connect through localhost or 127.0.0.1, or ask the operator "
                    "to add the name with --allowed-host"
                )
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and not self.config.origin_policy.allows(origin):
            raise OriginNotAllowed(
                "Requests from this Origin are not allowed; the operator can add it with --allowed-origin"
            )

    def admit(self, environ: dict[str, Any], carried_token: bytes | None = None) -> Admission:
        """Run steps 1-5 in order; return the admission or raise the first step's Refusal.

        `carried_token` is a token that arrived some other way than the
        Authorization header (the opt-in WebSocket subprotocol carrier); it is
        used only when the header is absent, and judged exactly like it.
        """
        client = self.client_address(environ)
        self.check_browser_headers(environ)
        if self.token_source is None:
            return Admission(ANONYMOUS, client)  # no credential is judged, so nothing can be guessed
        header = environ.get("HTTP_AUTHORIZATION")
        presented = parse_bearer(header) if header is not None or carried_token is None else carried_token
        # step 4: checked, and a new credential counted, in one step before step 5 judges it
        credential = _credential_material(header, presented)
        credential_key = None if credential is None else self.rate_limiter.credential_key(credential)
        wait = self.rate_limiter.check_and_record(client, credential_key)
        if wait:
            raise RateLimited(wait)
        # step 5
        principal = self.token_source.authenticate(presented) if presented is not None else None
        if principal is None:
            if header is None and carried_token is None:
                reason = "missing"
            elif presented is None:
                reason = "malformed_or_not_bearer"
            else:
                reason = "invalid_token"
            raise Unauthorized(reason, self.unauthorized_hint)
        if credential_key is not None:
            self.rate_limiter.accepted(client, credential_key)
        return Admission(principal, client)

    def principal_is_current(self, principal: Principal) -> bool:
        """Step 7's question: does the principal's token still exist?"""
        if self.token_source is None:
            return principal is ANONYMOUS
        return self.token_source.is_current(principal)


def _credential_material(header: str | None, presented: bytes | None) -> bytes | None:
    """What step 4 counts as one guess: None when nothing was presented.

    A bearer token is counted by its bytes, however it was spelled or carried,
    so the same token sent again is the same guess. A header that is not a
    bearer token counts by its whole value: the 401 cannot tell malformed from
    wrong, and neither may the limit, or the point where 429 starts would tell.
    """
    if presented is not None:
        return b"token\x00" + presented
    if header is not None:
        return b"header\x00" + header.encode("utf-8", "surrogatepass")
    return None
