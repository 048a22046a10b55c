"""Bearer tokens: header parsing, matching, and the files that hold tokens.

Responsible for
- turning an ``Authorization`` header value into token bytes (`parse_bearer`,
  pipeline step 5),
- deciding which configured credential, if any, those bytes are
  (`TokenSource.authenticate`) and whether a principal's credential still
  exists with the same scope (`TokenSource.is_current`, pipeline step 7),
- the token files: the default token file created on first run, a
  ``--token-file``, and the tokens file of named, hashed, scoped tokens that
  the ``token add|list|revoke`` subcommands edit; rotation by re-reading them
  when they change.

What it trusts
- Nothing in a request. A header value is bounded in length, parsed once, and
  only ever compared as a SHA-256 digest with `hmac.compare_digest`, so neither
  the content nor the length of a configured token shows in response timing,
  and non-ASCII or NUL input cannot raise.
- A token file only when it is a regular file, owned by the user this process
  runs as (or by root, who could replace it anyway), that no one else may
  write (the default token file: that no one else may access at all).
  Otherwise startup fails with a `ConfigError` that names the file and the fix.
  A ``--token-file`` that others may read is accepted (Docker secrets are
  0444) with a warning that names the file and the fix.
  A file that turns bad after startup makes its source refuse every token
  (fail closed) while the server keeps running; a fixed or rotated file takes
  effect at the next call, without a restart.
- Its own memory, and no further: configured tokens are kept only as SHA-256
  digests. No token, nor any part of one, is logged, printed, put into an
  exception message or shown by a repr. Plaintext leaves this module only as
  a newly generated token returned to the caller that asked for it (first run,
  ``token add``) and through `read_token_file` for ``token show``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Generic, TypeVar

from mcp_auth.errors import ConfigError
from mcp_auth.uritemplate import uri_glob_match

try:  # flock serialises concurrent `token add`/`revoke`; absent on Windows.
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ANONYMOUS",
    "FIRST_RUN_WAIT_SECONDS",
    "MAX_AUTHORIZATION_HEADER_CHARS",
    "MAX_NAMED_TOKENS",
    "MAX_TOKEN_CHARS",
    "MIN_TOKEN_CHARS",
    "SCOPE_KINDS",
    "Principal",
    "StaticToken",
    "TokenFile",
    "TokenSource",
    "TokensFile",
    "add_token",
    "default_token_path",
    "ensure_default_token",
    "generate_token",
    "list_tokens",
    "parse_bearer",
    "read_token_file",
    "revoke_token",
]

logger = logging.getLogger(__name__)

# --- limits -----------------------------------------------------------------

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

# A token file holds one line; 64 KiB is far beyond any token plus comments and
# stops a wrong path (a log file, an image) from being read into memory.
MAX_TOKEN_FILE_BYTES = 64 * 1024

# Each entry is ~200 bytes of JSON, so 1 MiB holds MAX_NAMED_TOKENS with room to
# spare; the bound keeps a wrong path from being parsed as JSON at every change.
MAX_TOKENS_FILE_BYTES = 1024 * 1024

# authenticate() compares against every stored hash on every request, so the
# number of named tokens is per-request work; a thousand is ~1 ms at most.
MAX_NAMED_TOKENS = 1000

# The process that wins the first-run create race writes the token right after
# creating the file, within microseconds; 2 s covers a loaded machine or a slow
# disk without making a genuinely broken file wait long to be reported.
FIRST_RUN_WAIT_SECONDS = 2.0
# Short enough that a loser starts almost as soon as the winner has written.
_FIRST_RUN_POLL_SECONDS = 0.01

# File timestamps are coarse (FAT: 2 s; many kernels: a clock tick), so a file
# rewritten in place with a same-length token within one tick of our read keeps
# the same stat signature. A file modified less than this long before we read
# it is re-read at every call until it has aged past it ("racy" entries, as in
# git's index); after that a stat comparison is enough.
_MTIME_TRUST_AGE_NS = 3 * 1_000_000_000

# --- small helpers ----------------------------------------------------------

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
_POSIX_PERMISSIONS = hasattr(os, "geteuid")
_UTF8_BOM = b"\xef\xbb\xbf"


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _same_id(a: str, b: str) -> bool:
    # Credential ids are digests, not secrets, but every credential comparison
    # in this module goes through compare_digest so none needs a second look.
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _still_the_same(principal: Principal, configured: Principal) -> bool:
    """Whether `principal` is what the configuration now says: same name, credential and scope.

    The scope counts too: a token whose patterns were edited in the file must
    not keep its old (perhaps wider) scope in an open session or WebSocket.
    """
    return (
        principal.name == configured.name
        and _same_id(principal.credential_id, configured.credential_id)
        and principal.tool_patterns == configured.tool_patterns
    )


def _where(description: str, path: Path) -> str:
    """How messages name a file: its source, and its path if not already in it."""
    return description if str(path) in description else f"{description} ({path})"


def _effective_uid(expected_uid: int | None) -> int | None:
    if expected_uid is not None:
        return expected_uid
    return os.geteuid() if _POSIX_PERMISSIONS else None


# --- tokens and principals --------------------------------------------------


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


@dataclass(frozen=True)
class _Credential:
    digest: bytes = field(repr=False)  # SHA-256 of the token
    principal: Principal


def _credential(token: bytes, name: str, tool_patterns: tuple[str, ...] | None) -> _Credential:
    digest = _sha256(token)
    return _Credential(digest, Principal(name, tool_patterns, digest.hex()))


class TokenSource(abc.ABC):
    """Where the configured tokens come from; one per running server."""

    # Names the source in the startup summary, e.g. "MCP_AUTH_TOKEN"; never a token.
    description: str

    @abc.abstractmethod
    def authenticate(self, presented: bytes) -> Principal | None:
        """The principal whose token is `presented`, or None."""

    @abc.abstractmethod
    def is_current(self, principal: Principal) -> bool:
        """Whether `principal` is still valid (step 7): its credential not revoked, its scope not changed."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(description={self.description!r})"


class StaticToken(TokenSource):
    """One token given at startup: ``--token`` or ``MCP_AUTH_TOKEN``."""

    def __init__(self, token: str, description: str, name: str = "default") -> None:
        self.description = description
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{description}: the token name must match {_NAME_RULE}")
        # Only the digest is kept: the plaintext is not needed after this line.
        self._credential = _credential(_check_token_text(token.strip(), description), name, None)

    def authenticate(self, presented: bytes) -> Principal | None:
        if hmac.compare_digest(_sha256(presented), self._credential.digest):
            return self._credential.principal
        return None

    def is_current(self, principal: Principal) -> bool:
        return _still_the_same(principal, self._credential.principal)


# --- reading token files ----------------------------------------------------


@dataclass(frozen=True)
class _FileRules:
    """What a token-bearing file must satisfy, and how messages advise fixing it."""

    max_bytes: int
    owner_only: bool  # True: no group/other access at all; False: no group/other write
    missing_fix: str
    # Accepted, but said once: others can read a plaintext token in the file.
    warn_if_readable: bool = False


def _check_file_stat(st: os.stat_result, where: str, path: Path, rules: _FileRules, expected_uid: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where}: not a regular file; point it at a file holding the token")
    if not _POSIX_PERMISSIONS:  # Windows: no POSIX owner or mode bits to check
        return
    uid = _effective_uid(expected_uid)
    # Root can replace any file already, so trusting root-owned files (as sshd
    # does) adds no one; it lets a root-managed secret be read by a service.
    if uid is not None and st.st_uid not in (uid, 0):
        raise ConfigError(
            f"{where}: owned by uid {st.st_uid}, not by uid {uid} that this "
            f"process runs as, so someone else controls its token; run as its owner "
            f"or chown it to uid {uid}"
        )
    if rules.owner_only and st.st_mode & 0o077:
        raise ConfigError(
            f"{where}: has mode {stat.S_IMODE(st.st_mode):04o}, so other users "
            f"can read or change the token; run: chmod 600 {path}"
        )
    if st.st_mode & 0o022:
        raise ConfigError(
            f"{where}: has mode {stat.S_IMODE(st.st_mode):04o}, so other users "
            f"can change the token; run: chmod go-w {path} (or chmod 600 {path})"
        )


def _read_checked(path: Path, where: str, rules: _FileRules, expected_uid: int | None) -> tuple[bytes, os.stat_result]:
    """The file's bytes, checked on the open descriptor (no check-then-open race)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: a FIFO at the path must not hang us
    except FileNotFoundError:
        raise ConfigError(f"{where}: does not exist; {rules.missing_fix}") from None
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot be opened ({exc.strerror}); make it readable by the user this server runs as"
        ) from None
    try:
        st = os.fstat(fd)
        _check_file_stat(st, where, path, rules, expected_uid)
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, 65536):
            total += len(chunk)
            if total > rules.max_bytes:
                raise ConfigError(f"{where}: larger than {rules.max_bytes} bytes; is this the right file?")
            chunks.append(chunk)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    return b"".join(chunks), st


_Signature = tuple[int, int, int, int, int, int, int]


def _signature(st: os.stat_result) -> _Signature:
    # mtime/size/inode catch rewrites and replacements; ctime, mode and owner
    # catch chmod/chown, so a file made world-writable is re-checked too.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)


def _trusted_signature(st: os.stat_result) -> _Signature | None:
    """The signature, or None when the file is too fresh for stat to show a rewrite."""
    if time.time_ns() - st.st_mtime_ns < _MTIME_TRUST_AGE_NS:
        return None
    return _signature(st)


_State = TypeVar("_State")


class _WatchedFile(Generic[_State]):
    """A file parsed into a state, re-read when it changes; None while unusable.

    Construction is strict (ConfigError). Afterwards a missing or bad file gives
    None, logged once per change of condition, never an exception.
    """

    def __init__(
        self, path: Path, where: str, rules: _FileRules, parse: Callable[[bytes], _State], expected_uid: int | None
    ) -> None:
        self._path = path
        self._where = where
        self._rules = rules
        self._parse = parse
        self._expected_uid = expected_uid
        self._lock = threading.Lock()
        data, st = _read_checked(path, where, rules, expected_uid)
        state = parse(data)
        self.state_at_start = state  # for checks that apply only at startup
        self._state: _State | None = state
        self._signature = _trusted_signature(st)
        self._problem: str | None = None
        self._readable_by_others = False
        self._note_mode(st)

    def current(self) -> _State | None:
        with self._lock:
            try:
                st = os.stat(self._path)
            except OSError as exc:
                self._signature = None
                self._fail(f"{self._where}: cannot be read ({exc.strerror})")
                return None
            if self._signature is not None and _signature(st) == self._signature:
                return self._state
            try:
                data, st = _read_checked(self._path, self._where, self._rules, self._expected_uid)
                state = self._parse(data)
            except ConfigError as exc:
                # Remember what we saw so an unchanged broken file is not re-read.
                self._signature = _trusted_signature(st)
                self._fail(str(exc))
                return None
            self._signature = _trusted_signature(st)
            self._state = state
            self._note_mode(st)
            if self._problem is not None:
                logger.warning("%s: usable again; accepting its tokens", self._where)
                self._problem = None
            return state

    def _note_mode(self, st: os.stat_result) -> None:
        """Warn once each time an accepted file becomes readable by group or others."""
        readable = _POSIX_PERMISSIONS and bool(st.st_mode & 0o044)
        if readable and self._rules.warn_if_readable and not self._readable_by_others:
            logger.warning(
                "%s: has mode %04o, so other users can read the token; accepted (a Docker secret "
                "is 0444), but unless they should, run: chmod 600 %s",
                self._where,
                stat.S_IMODE(st.st_mode),
                self._path,
            )
        self._readable_by_others = readable

    def _fail(self, problem: str) -> None:
        self._state = None
        if problem != self._problem:
            # The problem text names the file and the fix, never file content.
            logger.warning("refusing every token until this is fixed: %s", problem)
            self._problem = problem


def _first_line_token(data: bytes, where: str, empty_fix: str) -> bytes:
    line = data.split(b"\n", 1)[0]
    if line.startswith(_UTF8_BOM):  # some editors add one; it is not part of a token
        line = line[len(_UTF8_BOM) :]
    line = line.strip(b" \t\r")
    if not line:
        raise ConfigError(f"{where}: the file is empty or its first line is blank; {empty_fix}")
    # latin-1 maps each byte to one character, so non-ASCII bytes fail the
    # visible-ASCII rule instead of raising a decode error that quotes them.
    return _check_token_text(line.decode("latin-1"), where)


def _token_file_rules(path: Path, default_file: bool) -> tuple[_FileRules, str]:
    if default_file:
        fix = f"delete {path} and start mcp_auth on a loopback address to generate a new one"
        missing = "start mcp_auth on a loopback address to generate it"
    else:
        fix = f"write a token to its first line; {_GENERATE_HINT}"
        missing = f"create it with a token on its first line; {_GENERATE_HINT}"
    # The default file stays strict (owner_only refuses it); an explicit file
    # others may read is accepted with a warning, for Docker secrets (0444).
    rules = _FileRules(
        MAX_TOKEN_FILE_BYTES, owner_only=default_file, missing_fix=missing, warn_if_readable=not default_file
    )
    return rules, fix


def read_token_file(path: Path, *, default_file: bool = False, expected_uid: int | None = None) -> bytes:
    """The plaintext token of a token file (ASCII bytes), with every check of `TokenFile`.

    For ``python -m mcp_auth token show``; the one reader that returns plaintext.
    """
    where = f"{'default token file' if default_file else 'token file'} {path}"
    rules, empty_fix = _token_file_rules(path, default_file)
    data, _ = _read_checked(path, where, rules, expected_uid)
    return _first_line_token(data, where, empty_fix)


class TokenFile(TokenSource):
    """One token: the first line of a file (``--token-file`` or the default token file).

    `default_file` applies the default token file's rules: no group or other
    access at all, and "delete it to regenerate" as the fix for an empty file.
    `expected_uid` is the owner the file must have (default: this process's
    effective uid; root-owned files are accepted too).
    """

    def __init__(
        self, path: Path, description: str, *, default_file: bool = False, expected_uid: int | None = None
    ) -> None:
        self.description = description
        self.path = Path(path)
        self.default_file = default_file
        where = _where(description, self.path)
        rules, empty_fix = _token_file_rules(self.path, default_file)

        def parse(data: bytes) -> _Credential:
            return _credential(_first_line_token(data, where, empty_fix), "default", None)

        self._file = _WatchedFile(self.path, where, rules, parse, expected_uid)

    def authenticate(self, presented: bytes) -> Principal | None:
        digest = _sha256(presented)
        credential = self._file.current()
        if credential is not None and hmac.compare_digest(digest, credential.digest):
            return credential.principal
        return None

    def is_current(self, principal: Principal) -> bool:
        credential = self._file.current()
        return credential is not None and _still_the_same(principal, credential.principal)


# --- the tokens file: named, hashed, scoped ---------------------------------


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
    )


@dataclass(frozen=True)
class _NamedCredentials:
    credentials: tuple[_Credential, ...]
    principal_by_name: Mapping[str, Principal]


class TokensFile(TokenSource):
    """Named tokens stored as SHA-256 hashes with optional tool scopes (``--tokens-file``)."""

    def __init__(self, path: Path, description: str, *, expected_uid: int | None = None) -> None:
        self.description = description
        self.path = Path(path)
        where = _where(description, self.path)

        def parse(data: bytes) -> _NamedCredentials:
            credentials = tuple(
                _Credential(bytes.fromhex(t.sha256), Principal(t.name, t.tools, t.sha256))
                for t in _parse_tokens_document(data, where)
            )
            return _NamedCredentials(credentials, {c.principal.name: c.principal for c in credentials})

        self._file = _WatchedFile(self.path, where, _tokens_file_rules(self.path), parse, expected_uid)
        # Emptied by revocation while running, the file just refuses everyone;
        # empty at startup, the server could never be used, which is a mistake.
        if not self._file.state_at_start.credentials:
            raise ConfigError(
                f"{where}: has no tokens; add one with: python -m mcp_auth token add NAME --tokens-file {self.path}"
            )

    def authenticate(self, presented: bytes) -> Principal | None:
        digest = _sha256(presented)
        state = self._file.current()
        if state is None:
            return None
        found: Principal | None = None
        for credential in state.credentials:
            # Compare against every entry, match or not: the time taken must not
            # depend on where (or whether) the token sits in the list.
            if hmac.compare_digest(digest, credential.digest) and found is None:
                found = credential.principal
        return found

    def is_current(self, principal: Principal) -> bool:
        state = self._file.current()
        if state is None:
            return False
        configured = state.principal_by_name.get(principal.name)
        return configured is not None and _still_the_same(principal, configured)


# --- editing the tokens file (the `token` subcommands) ----------------------


def _fsync_dir(directory: Path) -> None:
    """Make a create/rename in `directory` durable; a no-op where dirs can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the data is fsynced
        pass
    finally:
        os.close(fd)


def _make_private_dir(directory: Path) -> None:
    """Create `directory` with mode 0700 (parents with defaults) if it is missing."""
    if directory.exists():
        return
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    except FileExistsError:  # created concurrently: it is checked by the caller
        return
    except OSError as exc:
        raise ConfigError(f"cannot create directory {directory} ({exc.strerror})") from None
    # mkdir's mode is filtered by the umask; make it exactly 0700.
    os.chmod(directory, 0o700)


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
                f"tokens file {path}: a token named {name!r} exists; revoke it first "
                f"(python -m mcp_auth token revoke {name} --tokens-file {path}) or pick "
                f"another name"
            )
        if len(tokens) >= MAX_NAMED_TOKENS:
            raise ConfigError(f"tokens file {path}: already {MAX_NAMED_TOKENS} tokens; revoke unused ones")
        token = generate_token()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tokens.append(_NamedToken(name, hashlib.sha256(token.encode("ascii")).hexdigest(), tools, created))
        _write_tokens(path, tokens)
    return token


def rotate_token(path: Path, name: str, *, expected_uid: int | None = None) -> str:
    """Replace the named token with a new one of the same scope in one edit; return its plaintext.

    The old token stops working at the next request of a running server, as
    after `revoke`; there is no moment when the name is missing from the file.
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
        tokens[index] = _NamedToken(name, digest, tokens[index].tools, created)
        _write_tokens(path, tokens)
    return token


def list_tokens(path: Path, *, expected_uid: int | None = None) -> list[dict[str, Any]]:
    """Name, tools and created time of each token; never a hash."""
    tokens = _load_for_edit(Path(path), expected_uid, missing_ok=False)
    return [{"name": t.name, "tools": None if t.tools is None else list(t.tools), "created": t.created} for t in tokens]


def revoke_token(path: Path, name: str, *, expected_uid: int | None = None) -> None:
    """Remove the named token; running servers refuse it from their next call."""
    path = Path(path)
    with _edit_lock(path):
        tokens = _load_for_edit(path, expected_uid, missing_ok=False)
        kept = [t for t in tokens if t.name != name]
        if len(kept) == len(tokens):
            shown = repr(name) if isinstance(name, str) and _NAME_RE.fullmatch(name) else "given"
            raise ConfigError(
                f"tokens file {path}: no token named {shown}; see: python -m mcp_auth token list --tokens-file {path}"
            )
        _write_tokens(path, kept)


# --- the default token file (first run) -------------------------------------


def default_token_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/mcp-auth/token``, else ``~/.config/mcp-auth/token``."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec: a relative path in these variables is invalid and ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "mcp-auth" / "token"
    home = environ.get("HOME", "")
    base = Path(home) if home and os.path.isabs(home) else Path.home()
    return base / ".config" / "mcp-auth" / "token"


def _check_private_dir(directory: Path, expected_uid: int | None) -> None:
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise ConfigError(f"cannot use directory {directory} ({exc.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{directory} is not a directory; move it away so mcp_auth can create it")
    if not _POSIX_PERMISSIONS:
        return
    uid = _effective_uid(expected_uid)
    if uid is not None and st.st_uid not in (uid, 0):
        raise ConfigError(
            f"directory {directory} is owned by uid {st.st_uid}, not uid {uid} that this "
            f"process runs as; chown it to uid {uid}"
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"directory {directory} has mode {stat.S_IMODE(st.st_mode):04o}, so other users "
            f"can reach the token file; run: chmod 700 {directory}"
        )


def _wait_for_winner(path: Path) -> None:
    """Wait until the racing creator has written its token line (or it cannot be)."""
    deadline = time.monotonic() + FIRST_RUN_WAIT_SECONDS
    while True:
        try:
            with open(path, "rb") as f:
                if b"\n" in f.read(MAX_TOKEN_FILE_BYTES):
                    return
                st = os.fstat(f.fileno())
        except OSError:
            return  # TokenFile reports why
        # Modified long ago: nobody is writing it now; an empty file is an error.
        if time.time_ns() - st.st_mtime_ns > FIRST_RUN_WAIT_SECONDS * 1e9:
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(_FIRST_RUN_POLL_SECONDS)


def ensure_default_token(path: Path, *, expected_uid: int | None = None) -> tuple[TokenFile, str | None]:
    """The default token file as a source, creating it on first run.

    Returns the new plaintext token only to the process that created the file
    (it prints the first-run guidance); every other caller gets None, also one
    that lost a concurrent create race, which reads the winner's token.
    """
    path = Path(path)
    _make_private_dir(path.parent)
    _check_private_dir(path.parent, expected_uid)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    new_token: str | None = None
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        _wait_for_winner(path)
    except OSError as exc:
        raise ConfigError(f"cannot create default token file {path} ({exc.strerror})") from None
    else:
        token = generate_token()
        try:
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o600)  # the umask may have removed owner bits
                os.write(fd, (token + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            # Leave no empty file behind: it would need a person to delete it.
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise ConfigError(f"cannot write default token file {path} ({exc.strerror})") from None
        _fsync_dir(path.parent)
        new_token = token
    source = TokenFile(path, f"default token file {path}", default_file=True, expected_uid=expected_uid)
    return source, new_token
