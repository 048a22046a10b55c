"""Run a command as a child subreaper, like an init (tini, systemd) would, and reap everything.

    subreaper.py CMD ARGS...

Prints the command's pid on stdout, then waits for every process that ends up
its child (orphans of the command are reparented here) and exits with the
command's status once none is left: when it exits, nothing it adopted is left.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
command = subprocess.Popen(sys.argv[1:])
print(command.pid, flush=True)
status = 0
while True:
    try:
        pid, code = os.wait()
    except ChildProcessError:
        break
    if pid == command.pid:
        status = os.waitstatus_to_exitcode(code)
sys.exit(status if status >= 0 else 128 - status)
