"""The command line's `--stdio` options: parsed here, so the CLI module stays about serving and tokens.

`split_stdio` takes the command off the argument list before any option
parsing (the command's own words, `-y` or `--port`, are its, not ours);
`stdio_server` checks the command and builds what `serve` serves.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger("mcp_auth.cli")

STDIO_FLAG = "--stdio"


def add_stdio_options(parser: argparse.ArgumentParser) -> None:
    stdio = parser.add_argument_group("an existing stdio MCP server behind the front (see README, 'stdio')")
    stdio.add_argument(
        STDIO_FLAG,
        action="store_true",
        help="-- CMD ARGS...: serve this stdio MCP server (run without a shell, one child per session); "
        "must come last, after the other options",
    )
    stdio.add_argument(
        "--stdio-env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="add a variable to the command's environment (NAME copies it from here); repeatable. "
        "Without it the command gets only PATH, HOME, USER, LOGNAME, LANG, LANGUAGE, LC_ALL, LC_CTYPE, "
        "LC_MESSAGES, TZ, TMPDIR",
    )
    stdio.add_argument(
        "--stdio-max-children",
        type=int,
        metavar="N",
        help="stdio server processes at most (default 32; a token may hold a quarter)",
    )
    stdio.add_argument(
        "--stdio-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a request waits for the stdio server's answer (default 300)",
    )


def split_stdio(args: list[str]) -> tuple[list[str], list[str] | None]:
    """The options before `--stdio`, and the command after it (the `--` after --stdio is optional).

    Split before any option parsing: the command's own words (`-y`, `--port`) are its, not ours.
    """
    if STDIO_FLAG not in args:
        return args, None
    index = args.index(STDIO_FLAG)
    command = args[index + 1 :]
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigError("--stdio needs a command after it: python -m mcp_auth serve --stdio -- CMD ARGS...")
    return args[:index], command


def stdio_server(args: argparse.Namespace) -> Any:
    """The stdio command behind the front, checked now (a wrong command is exit status 2, with its stderr)."""
    from . import StdioCommand, StdioServer

    if args.target:
        raise ConfigError(f"give a TARGET ({args.target}) or --stdio -- CMD, not both")
    command = StdioCommand.of(args.stdio_command, args.stdio_env)
    options: dict[str, Any] = {"max_children": args.stdio_max_children}
    if args.stdio_timeout is not None:
        if args.stdio_timeout <= 0:
            raise ConfigError(f"--stdio-timeout {args.stdio_timeout:g}: give a number of seconds above 0")
        options["request_timeout"] = args.stdio_timeout
    if args.stdio_max_children is not None and args.stdio_max_children < 1:
        raise ConfigError(f"--stdio-max-children {args.stdio_max_children}: give at least 1")
    logger.info("checking the stdio command %s", command.display)
    return StdioServer(command, **options)
