"""The first run: the default token file, created once, in a private directory.

`ensure_default_token` creates it when missing (and only then returns the new
token, for the caller to print); concurrent first runs agree on one token.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from ...errors import ConfigError
from .bearer import generate_token
from .files import _POSIX_PERMISSIONS, MAX_TOKEN_FILE_BYTES, _effective_uid, _fsync_dir, _make_private_dir
from .sources import TokenFile

# The process that wins the first-run create race writes the token right after
# creating the file, within microseconds; 2 s covers a loaded machine or a slow
# disk without making a genuinely broken file wait long to be reported.
FIRST_RUN_WAIT_SECONDS = 2.0


# Short enough that a loser starts almost as soon as the winner has written.
_FIRST_RUN_POLL_SECONDS = 0.01


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


def create_private_file(path: Path, content: str, what: str, *, expected_uid: int | None = None) -> bool:
    """Create `path` holding `content` (one line), mode 0600 in a 0700 directory; True if this call did.

    O_CREAT|O_EXCL decides the race between processes starting together (gunicorn
    workers, a first run): exactly one creates and writes the file, fsynced; the
    others return False once the winner's line is there, and read it as theirs.
    `what` names the file in messages ("default token file").
    """
    path = Path(path)
    _make_private_dir(path.parent)
    _check_private_dir(path.parent, expected_uid)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        _wait_for_winner(path)
        return False
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {path} ({exc.strerror})") from None
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # the umask may have removed owner bits
            os.write(fd, (content + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # Leave no empty file behind: it would need a person to delete it.
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise ConfigError(f"cannot write {what} {path} ({exc.strerror})") from None
    _fsync_dir(path.parent)
    return True


def ensure_default_token(path: Path, *, expected_uid: int | None = None) -> tuple[TokenFile, str | None]:
    """The default token file as a source, creating it on first run.

    Returns the new plaintext token only to the process that created the file
    (it prints the first-run guidance); every other caller gets None, also one
    that lost a concurrent create race, which reads the winner's token.
    """
    token = generate_token()
    created = create_private_file(path, token, "default token file", expected_uid=expected_uid)
    source = TokenFile(path, f"default token file {path}", default_file=True, expected_uid=expected_uid)
    return source, token if created else None
