"""Reading token files securely and noticing when they change (rotation).

A file is trusted only when it is a regular file owned by this user (or root)
that no one else may write; `_WatchedFile` re-reads it when its stat signature
changes, so a rotated file takes effect without a restart and a file that
turns bad makes its source refuse every token (fail closed).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ...errors import ConfigError
from .bearer import _GENERATE_HINT, _check_token_text

logger = logging.getLogger("mcp_auth.tokens")  # the name operators and tests filter on


# A token file holds one line; 64 KiB is far beyond any token plus comments and
# stops a wrong path (a log file, an image) from being read into memory.
MAX_TOKEN_FILE_BYTES = 64 * 1024


# File timestamps are coarse (FAT: 2 s; many kernels: a clock tick), so a file
# rewritten in place with a same-length token within one tick of our read keeps
# the same stat signature. A file modified less than this long before we read
# it is re-read at every call until it has aged past it ("racy" entries, as in
# git's index); after that a stat comparison is enough.
_MTIME_TRUST_AGE_NS = 3 * 1_000_000_000


_POSIX_PERMISSIONS = hasattr(os, "geteuid")


_UTF8_BOM = b"\xef\xbb\xbf"


def _where(description: str, path: Path) -> str:
    """How messages name a file: its source, and its path if not already in it."""
    return description if str(path) in description else f"{description} ({path})"


def _effective_uid(expected_uid: int | None) -> int | None:
    if expected_uid is not None:
        return expected_uid
    return os.geteuid() if _POSIX_PERMISSIONS else None


@dataclass(frozen=True)
class _FileRules:
    """What a token-bearing file must satisfy, and how messages advise fixing it."""

    max_bytes: int
    owner_only: bool  # True: no group/other access at all; False: no group/other write
    missing_fix: str
    # Accepted, but said once: others can read what the file holds (readable_exposes).
    warn_if_readable: bool = False
    # What others can read, and why it is accepted, for that warning.
    readable_exposes: str = "the token; accepted (a Docker secret is 0444)"
    # What the file holds, for messages ("the token", "the request-state key").
    secret: str = "the token"
    # What the server does while the file is unusable after startup, and once it is usable again.
    failing: str = "refusing every token until this is fixed"
    recovered: str = "usable again; accepting its tokens"


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
            f"process runs as, so someone else controls {rules.secret}; run as its owner "
            f"or chown it to uid {uid}"
        )
    if rules.owner_only and st.st_mode & 0o077:
        raise ConfigError(
            f"{where}: has mode {stat.S_IMODE(st.st_mode):04o}, so other users "
            f"can read or change {rules.secret}; run: chmod 600 {path}"
        )
    if st.st_mode & 0o022:
        raise ConfigError(
            f"{where}: has mode {stat.S_IMODE(st.st_mode):04o}, so other users "
            f"can change {rules.secret}; run: chmod go-w {path} (or chmod 600 {path})"
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
                logger.warning("%s: %s", self._where, self._rules.recovered)
                self._problem = None
            return state

    def _note_mode(self, st: os.stat_result) -> None:
        """Warn once each time an accepted file becomes readable by group or others."""
        readable = _POSIX_PERMISSIONS and bool(st.st_mode & 0o044)
        if readable and self._rules.warn_if_readable and not self._readable_by_others:
            logger.warning(
                "%s: has mode %04o, so other users can read %s, but unless they should, run: chmod 600 %s",
                self._where,
                stat.S_IMODE(st.st_mode),
                self._rules.readable_exposes,
                self._path,
            )
        self._readable_by_others = readable

    def _fail(self, problem: str) -> None:
        self._state = None
        if problem != self._problem:
            # The problem text names the file and the fix, never file content.
            logger.warning("%s: %s", self._rules.failing, problem)
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
