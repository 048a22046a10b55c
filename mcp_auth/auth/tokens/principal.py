"""Who a request acts as: `Principal`, its scope patterns and their globs.

Imports nothing from mcp_auth (`errors` at most), so the MCP layer may use
`Principal` without depending on how tokens are read. Resource scope globs
(`uri_glob_match`) match without backtracking: linear in the URI's length,
whatever the pattern; they come from the operator, and only a URI is untrusted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

# What a scope pattern can grant. Each kind is its own namespace: a pattern
# names its kind with a prefix ("resource:file:///*", "prompt:review*"), and a
# pattern without one of these prefixes is a tool pattern, so the tool glob
# "re*" or "*" can never reach a resource or a prompt.
SCOPE_KINDS = ("tool", "resource", "prompt")


def _split_pattern(pattern: str) -> tuple[str, str]:
    """(kind, glob) of one scope pattern; the prefix is case-sensitive."""
    prefix, colon, glob = pattern.partition(":")
    if colon and prefix in SCOPE_KINDS:
        return prefix, glob
    # Tool names never contain ":", so "Resource:*" or "x:y" matches no tool:
    # a mistyped prefix narrows the scope, it never widens it.
    return "tool", pattern


@dataclass(frozen=True)
class Principal:
    """Who a request acts as, after step 5: a token's name and its scope."""

    name: str
    # None: every tool, resource and prompt; else globs, matched
    # case-sensitively, each for the kind its prefix names (see SCOPE_KINDS):
    # fnmatch-style for tools and prompts; for resources `uri_glob_match`, whose
    # `*` stays within one path segment and `**` spans them.
    tool_patterns: tuple[str, ...] | None
    # SHA-256 hex of the token: which credential, for revocation checks.
    credential_id: str = field(repr=False)

    def may_use(self, name: str, kind: str = "tool") -> bool:
        """Whether the scope allows the tool, resource (by URI) or prompt `name`."""
        if kind not in SCOPE_KINDS:
            raise ValueError(f"kind is one of {', '.join(SCOPE_KINDS)}, not {kind!r}")
        if self.tool_patterns is None:
            return True
        if kind == "tool" and ":" in name:
            # Not a tool name: a caller still asking for "resource:<uri>" as a
            # tool must not be granted it by the tool glob "*".
            return False
        for pattern in self.tool_patterns:
            pattern_kind, glob = _split_pattern(pattern)
            if pattern_kind != kind:
                continue
            if uri_glob_match(glob, name) if kind == "resource" else fnmatchcase(name, glob):
                return True
        return False

    def may_use_some(self, kind: str) -> bool:
        """Whether the scope has any pattern for `kind`: if not, no work for that kind need be done."""
        if self.tool_patterns is None:
            return True
        return any(_split_pattern(pattern)[0] == kind for pattern in self.tool_patterns)

    def names_exactly(self, name: str, kind: str) -> bool:
        """Whether one of the scope's patterns for `kind` is `name` itself (a resource template's text)."""
        if self.tool_patterns is None:
            return True
        return any(_split_pattern(pattern) == (kind, name) for pattern in self.tool_patterns)


# --no-auth: no credential (an empty id matches no source), every tool, resource and prompt.
ANONYMOUS = Principal(name="anonymous", tool_patterns=None, credential_id="")


# --- resource scope globs ---

_ANY_RUN = 0  # "**": any characters, '/' included
_SEGMENT_RUN = 1  # "*": any characters but '/'
_ONE = 2  # "?": one character but '/'
_LITERAL = 3
_RUNS = (_ANY_RUN, _SEGMENT_RUN)
# Compiled patterns kept: far more than a tokens file holds, small in memory.
_GLOB_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_GLOB_CACHE_SIZE)
def _compile_glob(pattern: str) -> tuple[tuple[int, str], ...]:
    tokens: list[tuple[int, str]] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            run = 2 if pattern.startswith("**", index) else 1
            while pattern.startswith("*", index):  # "***" is "**": any run of stars spans '/' from two on
                index += 1
            tokens.append((_ANY_RUN if run == 2 else _SEGMENT_RUN, ""))
            continue
        tokens.append((_ONE, "") if char == "?" else (_LITERAL, char))
        index += 1
    return tuple(tokens)


def _closure(states: set[int], tokens: tuple[tuple[int, str], ...]) -> set[int]:
    """Add the states reachable by letting a run match nothing."""
    out = set(states)
    for state in states:
        while state < len(tokens) and tokens[state][0] in _RUNS:
            state += 1
            out.add(state)
    return out


def uri_glob_match(pattern: str, uri: str) -> bool:
    """Whether a resource scope glob matches `uri`, case-sensitively.

    `*` matches any run of characters without '/', `**` any run including
    '/', `?` one character other than '/'; everything else, `[` included (URIs
    hold IPv6 literals), matches itself. The pattern is run as a set of
    positions over the URI, one character at a time: no backtracking, so the
    cost is at most len(uri) x len(pattern) steps whatever both contain.
    """
    tokens = _compile_glob(pattern)
    if all(kind == _LITERAL for kind, _ in tokens):
        return pattern == uri
    # The usual shapes, "prefix/**" and "prefix/*", without the general loop.
    if tokens[-1][0] in _RUNS and all(kind == _LITERAL for kind, _ in tokens[:-1]):
        prefix = pattern.rstrip("*")
        if not uri.startswith(prefix):
            return False
        return tokens[-1][0] == _ANY_RUN or "/" not in uri[len(prefix) :]
    accept = len(tokens)
    states = _closure({0}, tokens)
    for char in uri:
        following: set[int] = set()
        for state in states:
            if state == accept:
                continue
            kind, literal = tokens[state]
            if kind == _ANY_RUN or (kind == _SEGMENT_RUN and char != "/"):
                following.add(state)
            elif (kind == _ONE and char != "/") or (kind == _LITERAL and char == literal):
                following.add(state + 1)
        if not following:
            return False
        states = _closure(following, tokens)
    return accept in states
