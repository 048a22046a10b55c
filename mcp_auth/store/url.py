"""The `--session-store` setting: a Redis URL, parsed and checked without connecting.

Accepted: `redis://HOST[:PORT][/DB]` and `rediss://` (TLS), with an optional
`user:password@` before the host. The password is the only secret in the
setting: it is never shown (`StoreUrl.display` leaves it out, and so does
every ConfigError raised here).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from ..errors import ConfigError

SCHEMES = ("redis", "rediss")
DEFAULT_REDIS_PORT = 6379
# Redis numbers its databases from 0; a server has 16 unless configured otherwise.
MAX_DB_DIGITS = 5
EXAMPLE = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class StoreUrl:
    """A parsed session-store URL. `url` (with the password) is for the client only."""

    url: str = field(repr=False)
    scheme: str
    host: str
    port: int
    db: int
    has_password: bool

    @property
    def display(self) -> str:
        """The URL as it may be shown: never the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        secret = " (with a password)" if self.has_password else ""
        return f"{self.scheme}://{host}:{self.port}/{self.db}{secret}"


def parse_store_url(raw: str, source: str) -> StoreUrl:
    """A StoreUrl, or ConfigError naming `source` and what to fix (never quoting a password)."""
    value = raw.strip()
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # ValueError for a port out of range or not a number
    except ValueError:
        raise ConfigError(
            f"the session store URL (from {source}) is malformed (a bad port?); use the form {EXAMPLE}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = scheme or "none"
        raise ConfigError(
            f"the session store URL (from {source}) has the scheme {shown!r}; "
            f"only a Redis URL is supported: {EXAMPLE} (or rediss:// for TLS)"
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"the session store URL (from {source}) names no host; use the form {EXAMPLE}")
    if parts.query or parts.fragment:
        raise ConfigError(
            f"the session store URL (from {source}) has a query or fragment, which mcp_auth does not read; "
            f"use the form {EXAMPLE}"
        )
    path = parts.path.strip("/")
    if not path:
        db = 0
    elif path.isascii() and path.isdigit() and len(path) <= MAX_DB_DIGITS:
        db = int(path)
    else:
        raise ConfigError(
            f"the session store URL (from {source}) must end in a database number (/0, /1, ...), "
            f"not {'/' + path[:40]!r}; use the form {EXAMPLE}"
        )
    return StoreUrl(
        url=value,
        scheme=scheme,
        host=host,
        port=port if port is not None else DEFAULT_REDIS_PORT,
        db=db,
        has_password=parts.password is not None,
    )
