"""Support for the stdio bridge's tests: the test child's command, the process table, a bridged live server."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support import Live, live_server

from mcp_auth.bridge import StdioCommand, StdioServer

CHILD = Path(__file__).resolve().parent / "stdio_servers" / "mcp_child.py"
CHILD_ARGV = [sys.executable, str(CHILD)]
RAW_CHILD_ARGV = [sys.executable, str(CHILD.parent / "raw_child.py")]
# Waiting for a process to end: generous (the machine is shared), never a pass/fail clock.
GONE_DEADLINE_SECONDS = 60.0


def process_state(pid: int) -> str | None:
    """The process's state letter from /proc (R, S, Z, ...), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def alive(pid: int) -> bool:
    """Running or sleeping: in the process table and not a zombie."""
    state = process_state(pid)
    return state is not None and state != "Z"


def wait_gone(pid: int, *, reaped: bool = True, deadline: float = GONE_DEADLINE_SECONDS) -> bool:
    """Wait until `pid` is out of the process table (`reaped`), or at least dead (a zombie); True if so."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        state = process_state(pid)
        if state is None or (not reaped and state == "Z"):
            return True
        time.sleep(0.05)
    return False


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid` (the child leads its own group)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def stdio_server(argv: list[str] | None = None, **options: Any) -> StdioServer:
    env = options.pop("env", ())
    options.setdefault("check", False)
    return StdioServer(StdioCommand.of(argv or CHILD_ARGV, env), **options)


@contextmanager
def bridged(argv: list[str] | None = None, *, settings: dict[str, Any] | None = None, **options: Any) -> Iterator[Live]:
    """A live front serving the test child (or `argv`); every child stopped at the end."""
    server = stdio_server(argv, **options)
    with live_server(server, **(settings or {})) as live:  # type: ignore[arg-type]
        yield live
    assert not server.dispatcher.children(), "a child outlived the front"
