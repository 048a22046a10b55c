"""Bearer tokens as text: the ``Authorization`` header, token text checks, new tokens.

A header value is bounded in length, parsed once, and only ever compared as a
SHA-256 digest with `hmac.compare_digest`; non-ASCII or NUL input cannot raise.
Messages never quote a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets

from ...errors import ConfigError

logger = logging.getLogger("mcp_auth.tokens")  # the name operators and tests filter on


# A generated token is 43 characters; bearer tokens from other issuers (JWTs)
# fit in a few hundred. Anything longer is not a credential we could match, and
# refusing it before any work bounds what an unauthenticated client costs us.
MAX_AUTHORIZATION_HEADER_CHARS = 4096


# A configured token longer than this could never arrive inside an accepted
# header ("Bearer " + token), so it is refused at startup instead of silently
# never matching.
MAX_TOKEN_CHARS = MAX_AUTHORIZATION_HEADER_CHARS - len("Bearer ")


# 16 characters even from a small alphabet is ~95 bits: out of reach of online
# guessing behind the failed-auth rate limit. Shorter strings are passwords
# people reuse elsewhere: accepted, with a warning. Generated tokens are 43 characters.
MIN_TOKEN_CHARS = 16


_NAME_RULE = "[A-Za-z0-9._-]{1,64}"


_NAME_RE = re.compile(_NAME_RULE, re.ASCII)


_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)


# Visible ASCII: a token travels in an HTTP header, where anything else is
# either a separator or not portably sendable by clients.
_TOKEN_TEXT_RE = re.compile(r"[\x21-\x7e]+", re.ASCII)


# RFC 9110 credentials: scheme, then 1*SP (we also accept HTAB), then the
# token. With re.ASCII, \s is ASCII whitespace only, so NUL and non-ASCII
# characters stay inside the token and are rejected by the comparison.
_BEARER_RE = re.compile(r"\s*bearer[ \t]+(\S+)\s*", re.ASCII | re.IGNORECASE)


_GENERATE_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _same_id(a: str, b: str) -> bool:
    # Credential ids are digests, not secrets, but every credential comparison
    # in this module goes through compare_digest so none needs a second look.
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def generate_token() -> str:
    """A new random token: 32 bytes from `secrets`, URL-safe base64 (43 chars).

    Never one that starts with '-': pasted after `--token` it would read as an
    option. Drawing again (1 time in 64) costs about 0.02 bits of 256.
    """
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def parse_bearer(header: str | None) -> bytes | None:
    """The token bytes of an ``Authorization: Bearer`` value, else None.

    None for a missing, over-long, malformed or non-Bearer value; never raises.
    `header` is the WSGI string (latin-1 decoded), so encoding back to latin-1
    recovers the bytes the client sent.
    """
    if not isinstance(header, str) or len(header) > MAX_AUTHORIZATION_HEADER_CHARS:
        return None
    match = _BEARER_RE.fullmatch(header)
    if match is None:
        return None
    try:
        return match.group(1).encode("latin-1")
    except UnicodeEncodeError:  # not a WSGI string: no byte could be our token
        return None


def _check_token_text(token: str, where: str) -> bytes:
    """The token as bytes, or ConfigError; messages never quote the token."""
    if not token:
        raise ConfigError(f"{where}: the token is empty; {_GENERATE_HINT}")
    if not _TOKEN_TEXT_RE.fullmatch(token):
        raise ConfigError(
            f"{where}: the token contains whitespace, a control character or a "
            f"non-ASCII character; tokens travel in an HTTP header, so use visible "
            f"ASCII only; {_GENERATE_HINT}"
        )
    if len(token) < MIN_TOKEN_CHARS:
        # Allowed (a quick local experiment), but said loudly on every start.
        logger.warning(
            "%s: the token is shorter than %d characters, which is guessable; %s",
            where,
            MIN_TOKEN_CHARS,
            _GENERATE_HINT,
        )
    if len(token) > MAX_TOKEN_CHARS:
        raise ConfigError(
            f"{where}: the token is longer than {MAX_TOKEN_CHARS} characters and "
            f"could never fit in an accepted Authorization header; {_GENERATE_HINT}"
        )
    return token.encode("ascii")
