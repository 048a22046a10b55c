"""What the stateless revision (2026-07-28) adds to every answer, and `server/discover`.

A mixin of `Dispatcher` (`mcp_auth.mcp.dispatch`). A stateless result carries
`resultType` (required by the revision), the server's identity in `_meta`
(there is no initialize to tell it), and on the cacheable results (discover,
the four lists, resources/read) the caching hints `ttlMs` and `cacheScope`.
Handshake-era results never get any of these: they are validated against the
2025 schemas, which do not know them.

Caching is a security question here: a `"public"` answer may be kept by a
shared cache and handed to another caller. The lists are filtered by the
caller's scope, so a list is `"public"` only when every principal sees the
same one (no token can have a scope, `Call.same_view_for_all`) and the caller
itself is unscoped; otherwise `"private"`. A read is `"private"` and not
reused unless its resource declares otherwise (`@server.resource(...,
cache_scope="public", ttl_ms=...)`): its content may depend on who asks, and
whether a caller may read it at all does.
"""

from __future__ import annotations

from typing import Any

from .call import Call
from .jsonrpc import Request
from .modern import META_SERVER_INFO
from .protocol import SUPPORTED_PROTOCOL_VERSIONS

# How long a client may reuse an answer without asking again (milliseconds).
# Discover: capabilities and versions change only with a new deployment.
DISCOVER_TTL_MS = 300_000
# Lists: a minute, short enough that a tool added without a subscription
# (subscriptions/listen tells a listening client at once) shows up soon; the
# lists are the cheap requests, the point is sparing a round trip per call.
LIST_TTL_MS = 60_000
# Reads: not reused; resource content is the tool author's, who alone knows how long it stays true.
READ_TTL_MS = 0

# The results that carry caching hints, and how long each may be kept.
CACHEABLE_TTL_MS = {
    "server/discover": DISCOVER_TTL_MS,
    "tools/list": LIST_TTL_MS,
    "prompts/list": LIST_TTL_MS,
    "resources/list": LIST_TTL_MS,
    "resources/templates/list": LIST_TTL_MS,
    "resources/read": READ_TTL_MS,
}

PUBLIC = "public"
PRIVATE = "private"


def list_cache_scope(call: Call) -> str:
    """ "public" only when no principal can see a different list than this caller's."""
    return PUBLIC if call.same_view_for_all and call.principal.tool_patterns is None else PRIVATE


def read_cache_hints(declared_scope: str, ttl_ms: int, request: Request, call: Call) -> dict[str, Any]:
    """A read's hints: what its resource declared, but never "public" where a list would not be
    (a shared cache must not hand the content to a token whose scope does not reach it), and not
    cached at all when the read was answered through a multi round-trip: its content may hold this
    client's answers, and a cache keys on the method and URI alone (the revision's Cache Key rule)."""
    if "inputResponses" in request.params or "requestState" in request.params:
        return {"ttlMs": READ_TTL_MS, "cacheScope": PRIVATE}
    public = declared_scope == PUBLIC and list_cache_scope(call) == PUBLIC
    return {"ttlMs": ttl_ms, "cacheScope": PUBLIC if public else PRIVATE}


class ModernResults:
    """server/discover, the capabilities both eras announce, and the stateless result envelope."""

    # Provided by Dispatcher.
    name: str
    version: str
    instructions: str | None

    @staticmethod
    def _capabilities() -> dict[str, Any]:
        """What initialize and server/discover announce: every family is always served (an empty
        list when nothing is registered), so the answer never depends on the registry."""
        return {
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
            "logging": {},
            "completions": {},
        }

    def _discover(self, request: Request, call: Call) -> dict[str, Any]:
        # The same for every principal (nothing here depends on the token): publicly cacheable.
        result: dict[str, Any] = {
            "supportedVersions": list(SUPPORTED_PROTOCOL_VERSIONS),
            "capabilities": self._capabilities(),
            "cacheScope": PUBLIC,
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def _modern_result(self, method: str, result: dict[str, Any], call: Call) -> dict[str, Any]:
        """`result` with what every stateless result carries; a handler's own `_meta` and `resultType`
        (a later round's `input_required`) are kept. The caching hints are this front's to give,
        whoever produced the result (a bridged child knows nothing of token scopes): a list's are set
        here, and a read's (`read_cache_hints`) are kept only as far as they are safe."""
        out = dict(result)
        out.setdefault("resultType", "complete")
        meta = out.get("_meta")
        out["_meta"] = {**(meta if isinstance(meta, dict) else {}), META_SERVER_INFO: self._server_info()}
        ttl = CACHEABLE_TTL_MS.get(method)
        if ttl is not None and out["resultType"] == "complete":
            if method == "resources/read":
                given = out.get("ttlMs")
                valid = isinstance(given, int) and not isinstance(given, bool) and given >= 0
                out["ttlMs"] = given if valid else READ_TTL_MS
                if out.get("cacheScope") != PUBLIC or list_cache_scope(call) != PUBLIC:
                    out["cacheScope"] = PRIVATE
            elif method == "server/discover":
                out["ttlMs"] = ttl  # its cacheScope is `_discover`'s: the same for every principal
            else:
                out["ttlMs"] = ttl
                out["cacheScope"] = list_cache_scope(call)
        return out

    def _server_info(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}
