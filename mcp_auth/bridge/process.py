"""One stdio child process: started without a shell, in its own process group, stopped without leaks.

A `ChildProcess` owns the OS side of a child and nothing of MCP: the argv and
environment it was given (`StdioCommand`), the pipes, one thread reading its
stdout line by line (each line handed to `on_line`), one thread copying its
stderr to the log with the child named, and the way it ends (`stop`).

What it guarantees, and how:

- No shell: the argv list goes to `execve` as given.
- Own process group (`start_new_session`): the front signals the child and
  whatever it started as one group, and a Ctrl-C meant for the front's
  terminal does not reach the children behind its back.
- No orphan when the front dies, however it dies: the child's stdin is a pipe
  whose only writer is the front, so a killed front means EOF on the child's
  stdin (the MCP stdio transport ends there). A child that ignores EOF is
  still ended: on Linux it is started with `PR_SET_PDEATHSIG` = SIGKILL.
  Linux sends that signal when the *thread* that forked the child ends, so
  every child is forked from one long-lived spawner thread (`_Spawner`), never
  from a request thread that is about to finish.
- No zombie: whoever sees the child end (the stdout reader at EOF, or `stop`)
  waits for it; `stop` signals the group with SIGTERM, then SIGKILL after the
  grace period, and always reaps.

It trusts the operator's command (it runs it) but not the child's output:
lines are bounded (`MAX_LINE_BYTES`); the caller decides what a line means.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger("mcp_auth.bridge")

# One message from the child, as one line: as large as one request body may be
# (4 MiB) plus room for a large tool result. A longer line is not JSON-RPC we can
# forward (the client's own limit is the same order), and it bounds memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
# Between SIGTERM and SIGKILL: enough for a server to flush and exit, short enough
# that stopping the front (systemd's default stop timeout is 90 s) is not held up.
STOP_GRACE_SECONDS = 5.0
# One stderr line in the log at most this long: a child printing a huge blob
# must not flood the log with one record.
MAX_STDERR_LINE_CHARS = 2000
# Linux prctl(2) option: the signal the kernel sends when the parent (thread) dies.
_PR_SET_PDEATHSIG = 1


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A preexec function setting PR_SET_PDEATHSIG=SIGKILL, or None off Linux (resolved before any fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    kill = ctypes.c_ulong(signal.SIGKILL)
    option = ctypes.c_int(_PR_SET_PDEATHSIG)

    def set_pdeathsig() -> None:
        # Runs in the forked child before exec: one C call, no Python locks taken.
        prctl(option, kill)

    return set_pdeathsig


_SET_PDEATHSIG = _pdeathsig_setter()


class _Spawner:
    """The one thread that forks children (PR_SET_PDEATHSIG is tied to the forking thread's life)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[tuple[bool, Any]]]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, job: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="mcp-bridge-spawner", daemon=True)
                self._thread.start()
        answer: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
        self._jobs.put((job, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return value

    def _loop(self) -> None:
        while True:
            job, answer = self._jobs.get()
            try:
                answer.put((True, job()))
            except BaseException as exc:  # handed to the caller, whose thread raises it
                answer.put((False, exc))


_SPAWNER = _Spawner()


class ChildProcess:
    """A started child: write lines to it, get its lines back, stop it. Thread-safe.

    `on_line(line)` is called on the reader thread for each stdout line (without
    its newline); `on_exit(reason)` once, when stdout ends or a line is too long
    (the child is then stopped), with a sentence saying what happened.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        label: str,
        on_line: Callable[[bytes], None],
        on_exit: Callable[[str], None],
        *,
        cwd: str | None = None,
        grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.label = label
        self._on_line = on_line
        self._on_exit = on_exit
        self._grace = grace_seconds
        self._write_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._stop_done = threading.Event()
        self._exit_reported = threading.Event()
        self.stderr_tail: list[str] = []  # the last lines of stderr, for error messages at startup
        self._proc: subprocess.Popen[bytes] = _SPAWNER.run(
            lambda: subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_SET_PDEATHSIG,  # one C call before exec; see _pdeathsig_setter
            )
        )
        self.pid = self._proc.pid
        self._stderr_thread = threading.Thread(
            target=self._copy_stderr, name=f"mcp-bridge-stderr-{self.pid}", daemon=True
        )
        self._stderr_thread.start()
        self._reader = threading.Thread(target=self._read, name=f"mcp-bridge-stdout-{self.pid}", daemon=True)
        self._reader.start()

    # --- writing ----------------------------------------------------------------

    def send(self, line: bytes) -> bool:
        """Write one line (a serialized message); False when the child's stdin is closed."""
        stdin = self._proc.stdin
        assert stdin is not None
        with self._write_lock:
            try:
                stdin.write(line + b"\n")
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return False
        return True

    # --- reading ----------------------------------------------------------------

    def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        reason = ""
        try:
            while True:
                line = stdout.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    reason = f"it wrote a line longer than {MAX_LINE_BYTES} bytes"
                    break
                line = line.rstrip(b"\r\n")
                if line.strip():
                    self._on_line(line)
        except (OSError, ValueError):
            pass  # the pipe was closed by stop()
        finally:
            try:
                stdout.close()
            except OSError:
                pass
            if not reason:
                status = self._reap_after_eof()
                reason = "it exited" if status is None else _describe_status(status)
            else:
                self.stop()
            self._exit_reported.set()
            self._on_exit(reason)

    def _reap_after_eof(self) -> int | None:
        """stdout ended: the child is exiting (or closed stdout itself); make sure it ends, and reap it."""
        try:
            return self._proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            self.stop()
            return self._proc.returncode

    def _copy_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        try:
            for raw in iter(lambda: stderr.readline(MAX_LINE_BYTES), b""):
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if len(text) > MAX_STDERR_LINE_CHARS:
                    text = text[:MAX_STDERR_LINE_CHARS] + "..."
                self.stderr_tail = [*self.stderr_tail[-19:], text]
                logger.info("stdio server %s: %s", self.label, _escape(text))
        except (OSError, ValueError):
            pass
        finally:
            try:
                stderr.close()
            except OSError:
                pass

    # --- ending -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def stop(self) -> None:
        """End the child and its process group: stdin closed, SIGTERM, SIGKILL after the grace period; reaped.

        Idempotent and safe from any thread (the reader thread calls it too).
        """
        with self._stop_lock:
            stopping_already = self._stopped
            self._stopped = True
        if stopping_already:
            # Another thread is stopping it: return when that is done (shutdown waits for every child).
            if threading.current_thread() is not self._reader:
                self._stop_done.wait(self._grace + 5)
            return
        with self._write_lock:
            try:
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            except OSError:
                pass
        if self._proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout=self._grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._proc.wait()
        else:
            # The child is gone (and reaped); what it started in its group may not be.
            self._signal_group(signal.SIGKILL)
        if threading.current_thread() is not self._stderr_thread:
            self._stderr_thread.join(timeout=self._grace)
        self._stop_done.set()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)  # the child leads its own group (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def wait_reported(self, timeout: float | None = None) -> bool:
        """Block until on_exit ran (tests and shutdown)."""
        return self._exit_reported.wait(timeout)


def _describe_status(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"it was killed by {name}"
    return f"it exited with status {status}"


def _escape(text: str) -> str:
    """A child's stderr in one log record: control characters shown, not obeyed."""
    return "".join(ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch):02x}" for ch in text)
