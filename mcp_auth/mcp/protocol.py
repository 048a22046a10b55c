"""The MCP revisions this server speaks, and the protocol's fixed limits and vocabularies.

Every number here bounds what one client can make the server hold or return;
each has its reason beside it. Revisions are compared by their
place in SUPPORTED_PROTOCOL_VERSIONS (`protocol_at_least`), never as strings.

Two families are served at one endpoint: the handshake revisions (`initialize`,
sessions) and the stateless ones (`mcp_auth.mcp.modern`: every request carries
its own version). Which family a request belongs to is decided per request
(`mcp_auth.mcp.ladder`).
"""

from __future__ import annotations

import re

from .modern import MODERN_PROTOCOL_VERSIONS

# The handshake revisions, newest first; initialize answers with the client's
# version when it is here, else with the newest of them.
HANDSHAKE_PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")

# Every revision served, newest first: the one list a client is told, both in
# an unsupported-version error (-32022 `data.supported`) and in
# server/discover's `supportedVersions`, so the two can never disagree.
SUPPORTED_PROTOCOL_VERSIONS = MODERN_PROTOCOL_VERSIONS + HANDSHAKE_PROTOCOL_VERSIONS

# What initialize answers when the client asks for a revision it cannot have.
LATEST_PROTOCOL_VERSION = HANDSHAKE_PROTOCOL_VERSIONS[0]

# Streams are resumable (priming events, Last-Event-ID) for sessions of this revision on.
RESUMABLE_SINCE = "2025-11-25"


def protocol_at_least(version: str | None, revision: str) -> bool:
    """Whether a session speaking `version` has what MCP revision `revision` added.

    Revisions are ordered by their place in SUPPORTED_PROTOCOL_VERSIONS, never as
    strings. A version that is not one of them (None before initialize) has
    nothing a later revision added; asking about an unknown revision is a bug.
    """
    if revision not in SUPPORTED_PROTOCOL_VERSIONS:
        raise ValueError(f"unknown MCP revision {revision!r}")
    if version not in SUPPORTED_PROTOCOL_VERSIONS:
        return False
    # Newest first: a smaller index is a later revision.
    return SUPPORTED_PROTOCOL_VERSIONS.index(version) <= SUPPORTED_PROTOCOL_VERSIONS.index(revision)


# Items per page of the list methods: small enough to keep responses small,
# large enough that ordinary servers answer in one page.
PAGE_SIZE = 100

# Resource subscriptions one session may hold: plenty for a client, bounded for the server.
MAX_SUBSCRIPTIONS = 100

# Longest resource URI accepted: far beyond real URIs (browsers and proxies
# commonly stop near 2,000 characters), and it bounds what a session stores
# per subscription and what an error message repeats. Matching templates is
# linear in the URI's length (uritemplate.py), so the bound is not what keeps
# matching cheap; it only keeps it small.
MAX_URI_LENGTH = 2048

# completion/complete returns at most this many values (spec).
MAX_COMPLETION_VALUES = 100


LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

_LOG_RANK = {name: rank for rank, name in enumerate(LOG_LEVELS)}


_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,128}", re.ASCII)
