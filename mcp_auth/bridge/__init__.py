"""An existing stdio MCP server behind the authenticated front.

    python -m mcp_auth serve --stdio -- npx -y @modelcontextprotocol/server-everything
    app = mcp_auth.stdio_app(["python", "my_server.py"])          # any WSGI server, one process
    gunicorn -w 1 -k gthread --threads 32 'mcp_auth:create_app(stdio=["python", "my_server.py"])'

The parts: `command` (argv and explicit environment), `process` (one child:
process group, death signal, reaping), `link` (JSON-RPC with it, ids of our
own), `scope` (step 7 for a child), `budget` (how many children), `session_child`
(the handshake era: a child per session), `dispatcher` (what the transports
call), `server` (the startup check and what `build_app` serves).

The children live in the front's process, so the bridge runs in one process:
`one_process_check` refuses a gunicorn configuration with several workers.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import Config
from ..errors import ConfigError
from .command import DEFAULT_ENV_PASSTHROUGH, StdioCommand
from .server import StdioServer

__all__ = ["DEFAULT_ENV_PASSTHROUGH", "StdioCommand", "StdioServer", "one_process_check", "stdio_app"]


def stdio_app(
    argv: Sequence[str],
    config: Config | None = None,
    *,
    env: Sequence[str] = (),
    cwd: str | None = None,
    max_children: int | None = None,
    max_children_per_token: int | None = None,
    request_timeout: float | None = None,
    summary: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """A WSGI app serving the stdio MCP server `argv` behind the auth pipeline.

    `env` adds variables to the child's environment: NAME (copied from this
    process's environment) or NAME=VALUE; see DEFAULT_ENV_PASSTHROUGH for what
    passes without asking. The command is run and initialized once now: a
    wrong command raises ConfigError with its stderr. Call `app.close()` to stop
    every child (the command line does on SIGINT/SIGTERM).
    """
    from ..startup import build_app

    one_process_check()
    command = StdioCommand.of(argv, env, cwd=cwd)
    options: dict[str, Any] = {"max_children": max_children, "max_children_per_token": max_children_per_token}
    if request_timeout is not None:
        options["request_timeout"] = request_timeout
    server = StdioServer(command, **options)
    return build_app(server, config if config is not None else Config.from_sources(), summary=summary, clock=clock)


def one_process_check(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to run the bridge under gunicorn with more than one worker (ConfigError).

    Each worker would start its own children and hold its own sessions, so one
    client's requests would land on processes that do not hold its child. The
    worker count is read the way gunicorn reads it: `-w`/`--workers` on its
    command line, GUNICORN_CMD_ARGS, WEB_CONCURRENCY. (A `workers` setting in a
    gunicorn config file is not seen here: keep it at 1.)
    """
    args = list(sys.argv if argv is None else argv)
    source = os.environ if environ is None else environ
    # `gunicorn ...` and `python -m gunicorn ...` (argv[0] is then gunicorn/__main__.py).
    if not args or "gunicorn" not in args[0]:
        return
    workers = _int(source.get("WEB_CONCURRENCY"), 1)
    words = shlex.split(source.get("GUNICORN_CMD_ARGS", "")) + args[1:]
    for index, word in enumerate(words):
        value: str | None = None
        if word in ("-w", "--workers") and index + 1 < len(words):
            value = words[index + 1]
        elif word.startswith("--workers="):
            value = word.partition("=")[2]
        elif word.startswith("-w") and len(word) > 2:
            value = word[2:]
        if value is not None:
            workers = _int(value, workers)
    if workers > 1:
        raise ConfigError(
            f"the stdio bridge runs its servers inside one process, and gunicorn was asked for {workers} workers: "
            "each would hold its own sessions and children, and a client's requests would land on a worker that "
            "does not hold its child. Run gunicorn with -w 1 (and --threads for concurrency)"
        )


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
