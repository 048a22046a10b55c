"""The tokens file: its JSON format of named, hashed, scoped tokens, and editing it.

`add_token`, `rotate_token`, `list_tokens` and `revoke_token` (the ``token``
subcommands) read, change and atomically replace the file under a lock, so two
concurrent edits keep both. Only SHA-256 digests are stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from .bearer import _NAME_RE, _NAME_RULE, _SHA256_HEX_RE, generate_token
from .files import _FileRules, _fsync_dir, _make_private_dir, _read_checked

try:  # flock serialises concurrent `token add`/`revoke`; absent on Windows.
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]


# Each entry is ~200 bytes of JSON, so 1 MiB holds MAX_NAMED_TOKENS with room to
# spare; the bound keeps a wrong path from being parsed as JSON at every change.
MAX_TOKENS_FILE_BYTES = 1024 * 1024


# authenticate() compares against every stored hash on every request, so the
# number of named tokens is per-request work; a thousand is ~1 ms at most.
MAX_NAMED_TOKENS = 1000


@dataclass(frozen=True)
class _NamedToken:
    name: str
    sha256: str = field(repr=False)  # hex digest; the plaintext is never stored
    tools: tuple[str, ...] | None
    created: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "tools": None if self.tools is None else list(self.tools),
            "created": self.created,
        }


_ENTRY_KEYS = frozenset({"name", "sha256", "tools", "created"})


_REQUIRED_ENTRY_KEYS = frozenset({"name", "sha256", "tools"})


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicates, json keeps the last silently: {"tools": null, "tools": [..]}
    # must not be read differently by a person and by the server.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey
        result[key] = value
    return result


def _parse_tokens_document(data: bytes, where: str) -> tuple[_NamedToken, ...]:
    """Validated entries; ConfigError quoting no hash and no invalid value."""
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey:
        raise ConfigError(f"{where}: an object has the same key twice; remove one") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}); fix it "
            f"or recreate it with: python -m mcp_auth token add NAME --tokens-file PATH"
        ) from None
    except ValueError:  # undecodable bytes
        raise ConfigError(f"{where}: not UTF-8 JSON; recreate it with `token add`") from None

    if not isinstance(doc, dict) or set(doc) != {"version", "tokens"}:
        raise ConfigError(f'{where}: expected an object with exactly "version" and "tokens"')
    version = doc["version"]
    if type(version) is not int or version != 1:
        raise ConfigError(f'{where}: unsupported "version"; this mcp_auth reads version 1')
    entries = doc["tokens"]
    if not isinstance(entries, list):
        raise ConfigError(f'{where}: "tokens" must be a list')
    if len(entries) > MAX_NAMED_TOKENS:
        raise ConfigError(f"{where}: more than {MAX_NAMED_TOKENS} tokens; revoke unused ones")

    tokens: list[_NamedToken] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for index, entry in enumerate(entries):
        at = f"{where}: tokens[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at} must be an object")
        if not _REQUIRED_ENTRY_KEYS <= set(entry) <= _ENTRY_KEYS:
            # A typo such as "tool" must not turn a scoped token into an unscoped one.
            raise ConfigError(
                f'{at} must have "name", "sha256" and "tools" (null for every tool), '
                f'optionally "created", and no other keys'
            )
        name = entry["name"]
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(f'{at}: "name" must match {_NAME_RULE}')
        if name in names:
            raise ConfigError(f"{at}: the name {name!r} is used twice; names must be unique")
        digest_hex = entry["sha256"]
        if not isinstance(digest_hex, str) or not _SHA256_HEX_RE.fullmatch(digest_hex):
            raise ConfigError(f'{at} ({name}): "sha256" must be 64 lowercase hex characters')
        if digest_hex in hashes:
            raise ConfigError(
                f"{at} ({name}): the same token hash appears under two names, so the "
                f"token's name and scope would be ambiguous; revoke one of them"
            )
        tools = entry["tools"]
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, str) and t for t in tools)):
            raise ConfigError(
                f'{at} ({name}): "tools" must be null (every tool) or a list of non-empty tool-name patterns'
            )
        created = entry.get("created")
        if created is not None and not isinstance(created, str):
            raise ConfigError(f'{at} ({name}): "created" must be an ISO-8601 string')
        names.add(name)
        hashes.add(digest_hex)
        tokens.append(_NamedToken(name, digest_hex, None if tools is None else tuple(tools), created))
    return tuple(tokens)


def _tokens_file_rules(path: Path) -> _FileRules:
    return _FileRules(
        MAX_TOKENS_FILE_BYTES,
        owner_only=False,
        missing_fix=f"create it with: python -m mcp_auth token add NAME --tokens-file {path}",
        # It holds hashes, not tokens, but a readable copy still shows names and
        # scopes and lets anyone guess weak (operator-chosen) tokens offline.
        warn_if_readable=True,
        readable_exposes="its token names, scopes and hashes (weak tokens can be guessed offline from a hash); "
        "accepted",
    )


@contextlib.contextmanager
def _edit_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of a tokens file, so two `token add`s keep both tokens.

    The lock is on the directory, which outlives the file's atomic replacements.
    """
    if fcntl is None:  # pragma: no cover - non-POSIX
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        raise ConfigError(f"tokens file {path}: does not exist; {_tokens_file_rules(path).missing_fix}") from None
    except OSError as exc:
        raise ConfigError(f"cannot open directory {path.parent} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _load_for_edit(path: Path, expected_uid: int | None, missing_ok: bool) -> list[_NamedToken]:
    where = f"tokens file {path}"
    if missing_ok and not os.path.lexists(path):
        return []
    data, _ = _read_checked(path, where, _tokens_file_rules(path), expected_uid)
    return list(_parse_tokens_document(data, where))


def _write_tokens(path: Path, tokens: list[_NamedToken]) -> None:
    """Replace the tokens file atomically: temp file (0600) in the same dir, fsync, rename."""
    document = {"version": 1, "tokens": [t.to_json() for t in tokens]}
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    try:
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write in {path.parent} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as temp:
            if hasattr(os, "fchmod"):
                os.fchmod(temp.fileno(), 0o600)  # mkstemp's 0600, whatever the umask
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        if isinstance(exc, OSError):
            raise ConfigError(f"cannot write {path} ({exc.strerror})") from None
        raise
    _fsync_dir(path.parent)


def _check_tool_patterns(tool_patterns: list[str] | None) -> tuple[str, ...] | None:
    if tool_patterns is None:
        return None
    if isinstance(tool_patterns, str) or not all(isinstance(t, str) and t for t in tool_patterns):
        raise ConfigError("--tools: each tool pattern must be a non-empty string")
    return tuple(tool_patterns)


def add_token(path: Path, name: str, tool_patterns: list[str] | None, *, expected_uid: int | None = None) -> str:
    """Add a named token to the tokens file (created 0600 if absent); return its plaintext.

    The plaintext is returned once, to the caller, and stored only as SHA-256.
    """
    path = Path(path)
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(f"token add: the token name must match {_NAME_RULE}")
    tools = _check_tool_patterns(tool_patterns)
    _make_private_dir(path.parent)
    with _edit_lock(path):
        tokens = _load_for_edit(path, expected_uid, missing_ok=True)
        if any(t.name == name for t in tokens):
            raise ConfigError(
                f"tokens file {path}: a token named {name!r} exists; to replace it, rotate it "
                f"(python -m mcp_auth token rotate {name} --tokens-file {path}: a new token, same scope) "
                f"or pick another name"
            )
        if len(tokens) >= MAX_NAMED_TOKENS:
            raise ConfigError(f"tokens file {path}: already {MAX_NAMED_TOKENS} tokens; revoke unused ones")
        token = generate_token()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tokens.append(_NamedToken(name, hashlib.sha256(token.encode("ascii")).hexdigest(), tools, created))
        _write_tokens(path, tokens)
    return token


def rotate_token(
    path: Path, name: str, *, expected_uid: int | None = None, before_write: Callable[[str], None] | None = None
) -> str:
    """Replace the named token with a new one of the same scope in one edit; return its plaintext.

    The old token stops working at the next request of a running server, as
    after `revoke`; there is no moment when the name is missing from the file.
    `before_write` gets the old token's hex digest under the edit lock, before
    the file changes (the session store's revocation list); if it raises, the
    file is left as it was.
    """
    path = Path(path)
    with _edit_lock(path):
        tokens = _load_for_edit(path, expected_uid, missing_ok=False)
        index = next((i for i, entry in enumerate(tokens) if entry.name == name), None)
        if index is None:
            shown = repr(name) if isinstance(name, str) and _NAME_RE.fullmatch(name) else "given"
            raise ConfigError(
                f"tokens file {path}: no token named {shown}; see: python -m mcp_auth token list --tokens-file {path}"
            )
        token = generate_token()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hashlib.sha256(token.encode("ascii")).hexdigest()
        if before_write is not None:
            before_write(tokens[index].sha256)
        tokens[index] = _NamedToken(name, digest, tokens[index].tools, created)
        _write_tokens(path, tokens)
    return token


def list_tokens(path: Path, *, expected_uid: int | None = None) -> list[dict[str, Any]]:
    """Name, tools and created time of each token; never a hash."""
    tokens = _load_for_edit(Path(path), expected_uid, missing_ok=False)
    return [{"name": t.name, "tools": None if t.tools is None else list(t.tools), "created": t.created} for t in tokens]


def revoke_token(
    path: Path, name: str, *, expected_uid: int | None = None, before_write: Callable[[str], None] | None = None
) -> None:
    """Remove the named token; running servers refuse it from their next call.

    `before_write` gets the token's hex digest under the edit lock, before the
    file changes; if it raises, the file is left as it was.
    """
    path = Path(path)
    with _edit_lock(path):
        tokens = _load_for_edit(path, expected_uid, missing_ok=False)
        kept = [t for t in tokens if t.name != name]
        if len(kept) == len(tokens):
            shown = repr(name) if isinstance(name, str) and _NAME_RE.fullmatch(name) else "given"
            raise ConfigError(
                f"tokens file {path}: no token named {shown}; see: python -m mcp_auth token list --tokens-file {path}"
            )
        if before_write is not None:
            for entry in tokens:
                if entry.name == name:
                    before_write(entry.sha256)
        _write_tokens(path, kept)
