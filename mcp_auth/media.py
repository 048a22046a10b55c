"""Media types of the Content-Type and Accept headers, as the transports judge them (step 6).

Parsed with Werkzeug's header parsers, and cached: clients send a handful of
distinct values, each on every request. Only values up to
MAX_CACHED_HEADER_LENGTH characters are cached, so the caches never hold much
of what clients send; longer ones are parsed every time.
"""

from __future__ import annotations

import functools

from werkzeug.http import parse_accept_header, parse_options_header

# Distinct Content-Type and Accept values kept parsed: clients send a handful, each on every request.
HEADER_CACHE_SIZE = 256
# Longer values are parsed every time, so the caches never hold much of what clients send.
MAX_CACHED_HEADER_LENGTH = 512


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lowercased, without parameters ("" when absent)."""
    if content_type is not None and len(content_type) <= MAX_CACHED_HEADER_LENGTH:
        return _cached_media_type(content_type)
    return _parse_media_type(content_type)


def _parse_media_type(content_type: str | None) -> str:
    return parse_options_header(content_type)[0].lower()


def acceptable(accept: str | None) -> frozenset[str]:
    """The media types an Accept header lists, lowercased, without parameters; those weighted q=0
    (not acceptable) left out. Matched by media type only: parameters never make a type unacceptable."""
    if accept is not None and len(accept) <= MAX_CACHED_HEADER_LENGTH:
        return _cached_acceptable(accept)
    return _parse_acceptable(accept)


def _parse_acceptable(accept: str | None) -> frozenset[str]:
    return frozenset(
        {parse_options_header(value)[0].lower() for value, quality in parse_accept_header(accept) if quality > 0}
    )


_cached_media_type = functools.lru_cache(maxsize=HEADER_CACHE_SIZE)(_parse_media_type)
_cached_acceptable = functools.lru_cache(maxsize=HEADER_CACHE_SIZE)(_parse_acceptable)


def accepts(accepted: frozenset[str], wanted: str) -> bool:
    """Whether `wanted` (a bare media type) is among `accepted`, directly or by a wildcard."""
    major = wanted.split("/", 1)[0]
    return bool(accepted & {wanted, f"{major}/*", "*/*"})
