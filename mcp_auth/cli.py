"""`python -m mcp_auth`: serve (the default) and token management.

    python -m mcp_auth [serve] [TARGET] [options]
    python -m mcp_auth token show [--config [literal]] [--url URL]
    python -m mcp_auth token add NAME [--tools PATTERN ...] --tokens-file PATH
    python -m mcp_auth token rotate NAME --tokens-file PATH [--session-store URL]
    python -m mcp_auth token list|revoke NAME --tokens-file PATH [--session-store URL]

Exit status 2 for a configuration the server refuses (the message says how to
fix it), 0 after a clean shutdown on SIGINT or SIGTERM. The token is printed
only on the first run that generates it, and by `token show` / `token add` /
`token rotate`. The printed client configurations read the token from the
environment (or prompt for it) unless the literal form is asked for, so that
project files such as `.mcp.json` can be committed without it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .app import MCP_PATH
from .audit import configure_logging
from .auth.tokens import add_token, default_token_path, list_tokens, read_token_file, revoke_token, rotate_token
from .bridge.options import add_stdio_options, split_stdio, stdio_server
from .config import LOG_LEVELS, Config
from .errors import ConfigError
from .network import format_url_host
from .startup import CLIENT_TOKEN_VARIABLE, CONFIG_FORMS, build_app, print_client_configs
from .store.revocations import recorder as revocation_recorder
from .target import load_target

logger = logging.getLogger("mcp_auth.cli")

EXIT_CONFIG = 2
DEFAULT_URL = "http://127.0.0.1:8765/mcp"
USAGE = """python -m mcp_auth [serve] [TARGET] [options]
       python -m mcp_auth [serve] [options] --stdio -- CMD ARGS...
       python -m mcp_auth token {show,add,rotate,list,revoke} ...   (python -m mcp_auth token --help)"""
# Options that take a value: a value that starts with '-' (a token, say) is
# joined to its option so argparse does not read it as another option.
_VALUE_OPTIONS = frozenset(
    {
        "--token",
        "--token-file",
        "--tokens-file",
        "--config",
        "--host",
        "--allowed-ip",
        "--allowed-host",
        "--allowed-origin",
        "--trusted-proxy",
        "--session-store",
        "--state-key-file",
        "--url",
        "--stdio-env",
    }
)


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcp_auth",
        usage=USAGE,
        description="Serve MCP over Streamable HTTP behind bearer-token auth, IP allowlists and Host/Origin checks.",
        epilog="Subcommand 'token' manages tokens: python -m mcp_auth token --help",
    )
    parser.add_argument(
        "target", nargs="?", help="module:attribute of an McpServer (default: built-in diagnostics) [MCP_AUTH_TARGET]"
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1) [MCP_AUTH_HOST]")
    parser.add_argument("--port", type=int, help="port (default 8765; 0 picks a free one) [MCP_AUTH_PORT]")
    parser.add_argument("--token", help="bearer token; prefer MCP_AUTH_TOKEN or --token-file [MCP_AUTH_TOKEN]")
    parser.add_argument("--token-file", help="file holding the bearer token [MCP_AUTH_TOKEN_FILE]")
    parser.add_argument("--tokens-file", help="named, hashed, scoped tokens [MCP_AUTH_TOKENS_FILE]")
    parser.add_argument(
        "--no-auth", action="store_true", default=None, help="no token; loopback binds only [MCP_AUTH_NO_AUTH=1]"
    )
    parser.add_argument(
        "--allowed-ip", dest="allowed_ips", action="append", metavar="CIDR", help="repeatable [MCP_AUTH_ALLOWED_IPS]"
    )
    parser.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="NAME",
        help="repeatable [MCP_AUTH_ALLOWED_HOSTS]",
    )
    parser.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        metavar="ORIGIN",
        help="repeatable [MCP_AUTH_ALLOWED_ORIGINS]",
    )
    parser.add_argument(
        "--trusted-proxy",
        dest="trusted_proxies",
        action="append",
        metavar="CIDR",
        help="repeatable [MCP_AUTH_TRUSTED_PROXIES]",
    )
    parser.add_argument(
        "--max-websockets",
        type=int,
        metavar="N",
        help="open WebSockets at most (default 256) [MCP_AUTH_MAX_WEBSOCKETS]",
    )
    parser.add_argument(
        "--websocket-token-subprotocol",
        action="store_true",
        default=None,
        help="accept the token as a 'mcp.auth.<token>' WebSocket subprotocol, for browsers; see SECURITY.md "
        "[MCP_AUTH_WEBSOCKET_TOKEN_SUBPROTOCOL=1]",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        metavar="SECONDS",
        help="how long an idle connection is kept open for its next request (default 5; 0 closes after "
        "every answer) [MCP_AUTH_KEEPALIVE_TIMEOUT]",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long requests in flight get to finish (default 10) [MCP_AUTH_SHUTDOWN_TIMEOUT]",
    )
    parser.add_argument(
        "--state-key-file",
        metavar="PATH",
        help="key ring sealing multi round-trip requestState; the same file on every host "
        "(default: generated next to the default token file) [MCP_AUTH_STATE_KEY_FILE]",
    )
    parser.add_argument(
        "--request-state-ttl",
        type=float,
        metavar="SECONDS",
        help="how long a requestState stays valid (default 600) [MCP_AUTH_REQUEST_STATE_TTL]",
    )
    parser.add_argument("--config", help="TOML config file [MCP_AUTH_CONFIG]")
    parser.add_argument(
        "--session-store",
        metavar="redis://HOST:PORT/DB",
        help="share sessions, revocation and the guessing limit between processes and hosts through Redis "
        "(needs mcp-auth[redis]) [MCP_AUTH_SESSION_STORE]",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="log format (default text) [MCP_AUTH_LOG_FORMAT]"
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        help="least severe log record shown (default info: audit events and your tools' logging.info) "
        "[MCP_AUTH_LOG_LEVEL]",
    )
    parser.add_argument(
        "--print-config",
        choices=CONFIG_FORMS,
        default="env",
        help=f"how the first run prints client configurations: 'env' (default) reads the token from "
        f"${CLIENT_TOKEN_VARIABLE}, 'literal' writes the token into them",
    )
    add_stdio_options(parser)
    parser.add_argument("--version", action="version", version=f"mcp_auth {__version__}")
    return parser


def _token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mcp_auth token", description="Manage bearer tokens.")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser(
        "show", help="print the default token file's token (with --config: client configurations for it)"
    )
    _config_options(show)
    # Accepted only to answer them clearly: named tokens are stored hashed, there is nothing to show.
    show.add_argument("name", nargs="?", help=argparse.SUPPRESS)
    show.add_argument("--tokens-file", help=argparse.SUPPRESS)
    add = commands.add_parser("add", help="add a named token to a tokens file; prints it once, on the last line")
    add.add_argument("name", nargs="?", help="the token's name (letters, digits, '.', '_', '-')")
    add.add_argument(
        "--tools",
        nargs="+",
        metavar="PATTERN",
        help="what this token may use (default: everything): tool name globs, 'resource:<uri glob>', "
        "'prompt:<name glob>'. Give NAME before --tools (or end the patterns with --)",
    )
    add.add_argument("--tokens-file", help="[MCP_AUTH_TOKENS_FILE]")
    _config_options(add)
    rotate = commands.add_parser(
        "rotate", help="replace a named token with a new one of the same scope; prints it once, on the last line"
    )
    rotate.add_argument("name")
    rotate.add_argument("--tokens-file", help="[MCP_AUTH_TOKENS_FILE]")
    rotate.add_argument("--session-store", help=_REVOCATION_STORE_HELP)
    _config_options(rotate)
    listing = commands.add_parser("list", help="list the tokens in a tokens file (names and scopes, never tokens)")
    listing.add_argument("--tokens-file", help="[MCP_AUTH_TOKENS_FILE]")
    revoke = commands.add_parser("revoke", help="remove a named token; running servers refuse it at the next request")
    revoke.add_argument("name")
    revoke.add_argument("--tokens-file", help="[MCP_AUTH_TOKENS_FILE]")
    revoke.add_argument("--session-store", help=_REVOCATION_STORE_HELP)
    return parser


_REVOCATION_STORE_HELP = (
    "also record the old token's digest in this session store: every host using it refuses the token "
    "within 5 s, whatever its copy of the tokens file says [MCP_AUTH_SESSION_STORE]"
)


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        dest="print_config",
        nargs="?",
        const="env",
        choices=CONFIG_FORMS,
        help=f"also print client configurations (Claude Code, VS Code, Cursor, curl); 'env' (default) reads the "
        f"token from ${CLIENT_TOKEN_VARIABLE}, 'literal' writes it into them",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server's MCP URL (default {DEFAULT_URL})")


def _join_dash_values(args: list[str]) -> list[str]:
    """`--token -abc` as `--token=-abc`: a value may start with '-' (argparse would take it for an option)."""
    joined: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            joined.extend(args[index:])
            break
        following = args[index + 1] if index + 1 < len(args) else None
        if arg in _VALUE_OPTIONS and following is not None and following.startswith("-") and following != "--":
            option = following.split("=", 1)[0]
            if option not in _VALUE_OPTIONS and not option.startswith("--"):
                joined.append(f"{arg}={following}")
                index += 2
                continue
        joined.append(arg)
        index += 1
    return joined


# `token add`'s own options: after `--` (which ends --tools) they still count as options.
_TOKEN_ADD_VALUE_OPTIONS = ("--tokens-file", "--url")


def _token_add_options_after_dashes(args: list[str]) -> list[str]:
    """`token add --tools echo -- NAME --tokens-file F`: `--` ends the patterns, not the options.
    argparse would take every word after `--` as positional; move the command's options before it."""
    if "--" not in args:
        return args
    split = args.index("--")
    head, tail = args[:split], args[split + 1 :]
    rest: list[str] = []
    index = 0
    while index < len(tail):
        arg = tail[index]
        option = arg.split("=", 1)[0]
        if option in _TOKEN_ADD_VALUE_OPTIONS:
            if "=" in arg or index + 1 == len(tail):
                head.append(arg)  # a missing value is argparse's to report
                index += 1
            else:
                head.append(f"{arg}={tail[index + 1]}")
                index += 2
            continue
        if option == "--config":
            if "=" not in arg and index + 1 < len(tail) and tail[index + 1] in CONFIG_FORMS:
                head.append(f"{arg}={tail[index + 1]}")
                index += 2
            else:
                head.append(arg)
                index += 1
            continue
        rest.append(arg)
        index += 1
    return [*head, "--", *rest]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["token"]:
            args = _join_dash_values(args)
            if args[1:2] == ["add"]:
                args = _token_add_options_after_dashes(args)
            return _token_command(_token_parser().parse_args(args[1:]))
        if args[:1] == ["serve"]:
            args = args[1:]
        options, command = split_stdio(args)
        parsed = _serve_parser().parse_args(_join_dash_values(options))
        parsed.stdio_command = command
        return serve(parsed)
    except ConfigError as exc:
        print(f"mcp_auth: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


# --- token ---------------------------------------------------------------------


def _tokens_path(args: argparse.Namespace) -> Path:
    value = args.tokens_file or os.environ.get("MCP_AUTH_TOKENS_FILE")
    if not value:
        raise ConfigError("name the tokens file with --tokens-file PATH (or MCP_AUTH_TOKENS_FILE)")
    return Path(value)


def _token_command(args: argparse.Namespace) -> int:
    if args.command == "show":
        if args.name is not None or args.tokens_file is not None:
            name = shlex.quote(args.name) if args.name else "NAME"
            tokens_file = shlex.quote(args.tokens_file) if args.tokens_file else "PATH"
            raise ConfigError(
                "token show prints only the default token file's token: named tokens are stored hashed and cannot "
                f"be shown. 'python -m mcp_auth token rotate {name} --tokens-file {tokens_file} --config' prints a "
                "new one with its client configurations (the old one stops working)"
            )
        path = default_token_path(os.environ)
        if not path.exists():
            raise ConfigError(f"there is no default token yet at {path}; run 'python -m mcp_auth' once to create it")
        token = read_token_file(path, default_file=True).decode()
        if args.print_config:
            print_client_configs(args.url, token, args.print_config, sys.stdout, from_default_file=True)
        print(token)
        return 0
    path = _tokens_path(args)
    if args.command == "add":
        if args.name is None and args.tools and len(args.tools) > 1:
            # `token add --tools echo NAME`: --tools took every word after it, NAME too.
            args.name = args.tools.pop()
        if args.name is None:
            raise ConfigError("token add needs a NAME: python -m mcp_auth token add NAME [--tools PATTERN ...]")
        token = add_token(path, args.name, args.tools)
        scope = ", ".join(args.tools) if args.tools else "all tools"
        if args.print_config:
            print_client_configs(args.url, token, args.print_config, sys.stdout)
        print(f"Added token '{args.name}' ({scope}) to {path}. It is shown once; store it now:", file=sys.stderr)
        print(token)
    elif args.command == "rotate":
        with _revocation_recorder(args) as record:
            token = rotate_token(path, args.name, before_write=record)
        if args.print_config:
            print_client_configs(args.url, token, args.print_config, sys.stdout)
        print(
            f"Rotated token '{args.name}' in {path} (same scope); running servers refuse the old one from the next "
            "request. The new token is shown once; store it now:",
            file=sys.stderr,
        )
        print(token)
    elif args.command == "list":
        entries = list_tokens(path)
        if not entries:
            print(f"No tokens in {path}", file=sys.stderr)
        for entry in entries:
            tools = "all tools" if entry["tools"] is None else ", ".join(entry["tools"]) or "no tools"
            print(f"{entry['name']}\t{tools}\t{entry['created'] or ''}")
    elif args.command == "revoke":
        with _revocation_recorder(args) as record:
            revoke_token(path, args.name, before_write=record)
        print(
            f"Revoked token '{args.name}' in {path}; running servers refuse it from the next request", file=sys.stderr
        )
    return 0


def _revocation_recorder(args: argparse.Namespace) -> Any:
    """`--session-store` (or MCP_AUTH_SESSION_STORE), opened before the tokens file is touched; None without."""
    if args.session_store:
        return revocation_recorder(args.session_store, "--session-store")
    return revocation_recorder(os.environ.get("MCP_AUTH_SESSION_STORE"), "MCP_AUTH_SESSION_STORE")


# --- serve ---------------------------------------------------------------------


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "host",
        "port",
        "token",
        "token_file",
        "tokens_file",
        "no_auth",
        "allowed_ips",
        "allowed_hosts",
        "allowed_origins",
        "trusted_proxies",
        "log_format",
        "log_level",
        "max_websockets",
        "websocket_token_subprotocol",
        "session_store",
        "keepalive_timeout",
        "shutdown_timeout",
        "state_key_file",
        "request_state_ttl",
    )
    return {name: getattr(args, name) for name in names}


def serve(args: argparse.Namespace) -> int:
    from .embedded import EmbeddedServer, serve_until_signalled

    config = Config.from_sources(_flags(args), os.environ, args.config)
    configure_logging(config.log_format, config.log_level)
    if args.token:
        logger.warning(
            "--token puts the token in your shell history and in 'ps' output for every local user; "
            "prefer MCP_AUTH_TOKEN or --token-file"
        )
    target = args.target or os.environ.get("MCP_AUTH_TARGET")  # flag > environment, as create_app() reads it
    server: Any
    if args.stdio_command is not None:
        server = stdio_server(args)
    elif target:
        server = load_target(target)
    else:
        from .diagnostics import build_diagnostics

        server = build_diagnostics()
    # Bind before the default token file may be created: a first run that cannot
    # listen must not leave behind a token whose first-run guidance nobody saw.
    embedded = EmbeddedServer(None, config.host, config.port, keepalive=config.keepalive_timeout)
    url = f"http://{format_url_host(config.host)}:{embedded.port}{MCP_PATH}"
    try:
        app = build_app(server, config, url=url, config_form=args.print_config)
    except BaseException:
        embedded.close()
        raise
    embedded.app = app  # before serve_forever: no request can arrive earlier

    return serve_until_signalled(embedded, app, url, config.shutdown_timeout)
