"""The request-state key: the secret that seals the stateless era's `requestState`.

A multi round-trip request's retry may land on any worker or host of a
deployment, and each must verify the state another one sealed, so every
process of one deployment must hold the same key. Where it comes from:

- `--state-key-file PATH` / `MCP_AUTH_STATE_KEY_FILE` / TOML `state_key_file`:
  a file the operator provides (the same file on every host);
- else the default key file next to the default token file
  (`$XDG_CONFIG_HOME/mcp-auth/state-key`), created on the first run exactly as
  the token file is (O_CREAT|O_EXCL, 0600, fsync, a 0700 directory; the
  processes that lose the create race read the winner's key), so the gunicorn
  workers of one host agree without any setup.

File format, a key ring: one key per line, each the base64url (or standard
base64) text of at least 32 random bytes; blank lines and `#` comments are
ignored. The first key seals, every key verifies: to rotate, put a new key on
the first line and remove the old one after the state lifetime has passed
(600 s by default). The file is re-read when it changes, without a restart; a
file that turns bad makes the server refuse every state (and pause no request)
until fixed. A key is never logged, printed or shown by a repr; the startup
summary names the file only.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError
from .tokens.files import _FileRules, _WatchedFile, _where
from .tokens.firstrun import create_private_file, default_token_path

# HMAC-SHA256 wants a 256-bit key; a shorter one is refused at startup.
MIN_STATE_KEY_BYTES = 32
# A ring is for rotation: two or three keys at a time; 16 leaves room and bounds the work per verification.
MAX_STATE_KEYS = 16
# Far beyond 16 keys with comments, small enough that a wrong path is not read into memory.
MAX_STATE_KEY_FILE_BYTES = 64 * 1024
DEFAULT_STATE_KEY_NAME = "state-key"
GENERATE_KEY_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def generate_state_key() -> str:
    """A new key line: 32 random bytes, base64url."""
    return secrets.token_urlsafe(MIN_STATE_KEY_BYTES)


def default_state_key_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/mcp-auth/state-key``, next to the default token file."""
    return default_token_path(environ).parent / DEFAULT_STATE_KEY_NAME


def _decode_key(line: str) -> bytes:
    text = line.replace("+", "-").replace("/", "_").rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise ValueError("not base64")
    return raw


def parse_key_ring(data: bytes, where: str) -> tuple[bytes, ...]:
    """The keys of a key file, first (sealing) key first; ConfigError naming the line and the fix.

    Error messages name line numbers and lengths, never a key's text.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not ASCII text; each line is one base64 key ({GENERATE_KEY_HINT})") from None
    keys: list[bytes] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = _decode_key(line)
        except ValueError:
            raise ConfigError(f"{where}: line {number} is not base64 text; {GENERATE_KEY_HINT}") from None
        if len(key) < MIN_STATE_KEY_BYTES:
            raise ConfigError(
                f"{where}: the key on line {number} is {len(key)} bytes; a key is at least "
                f"{MIN_STATE_KEY_BYTES} random bytes; {GENERATE_KEY_HINT}"
            )
        keys.append(key)
    if not keys:
        raise ConfigError(f"{where}: holds no key; write one key per line ({GENERATE_KEY_HINT})")
    if len(keys) > MAX_STATE_KEYS:
        raise ConfigError(f"{where}: holds {len(keys)} keys, more than {MAX_STATE_KEYS}; remove retired keys")
    return tuple(keys)


class StateKeyFile:
    """The deployment's key ring, read from its file and re-read when it changes."""

    def __init__(self, path: Path, description: str, *, default_file: bool, expected_uid: int | None = None) -> None:
        self.path = path
        self.description = description
        where = _where(description, path)
        missing = (
            "start mcp_auth again to generate it"
            if default_file
            else f"create it with one key per line ({GENERATE_KEY_HINT}), the same file on every host"
        )
        rules = _FileRules(
            MAX_STATE_KEY_FILE_BYTES,
            owner_only=default_file,
            missing_fix=missing,
            # Readable by others (a 0444 Docker secret) is accepted for an explicit file, with a warning.
            warn_if_readable=not default_file,
            readable_exposes="the request-state key; accepted (a Docker secret is 0444)",
            secret="the request-state key",
            failing="refusing every requestState until this is fixed",
            recovered="usable again; accepting its keys",
        )
        self._file = _WatchedFile(path, where, rules, lambda data: parse_key_ring(data, where), expected_uid)

    def keys(self) -> tuple[bytes, ...] | None:
        """The ring now (first seals, all verify), or None while the file is unusable."""
        return self._file.current()

    def __repr__(self) -> str:
        return f"StateKeyFile(description={self.description!r})"


def open_state_key(
    path: str | None, origin: str, environ: Mapping[str, str], *, expected_uid: int | None = None
) -> tuple[StateKeyFile, bool]:
    """The configured key file, or the default one (created now if missing); True when this call created it."""
    if path:
        return StateKeyFile(Path(path), f"state key file {path} ({origin})", default_file=False), False
    default = default_state_key_path(environ)
    created = create_private_file(default, generate_state_key(), "default state key file", expected_uid=expected_uid)
    source = StateKeyFile(default, f"default state key file {default}", default_file=True, expected_uid=expected_uid)
    return source, created
