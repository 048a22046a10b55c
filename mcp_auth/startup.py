"""Building the app: the one construction path, for the command line, `create_app()` and `wsgi_app()`.

Building an app opens its token source and its request-state key, and that
is the only I/O it does: reading a token file and the key file, or on a first
run creating the default ones (the key silently: it is never shown). Whoever
creates a token prints it, once: when the default token file is created here,
the first-run guidance (the token and client configurations) goes to stdout,
whichever entry point asked for the app, so a token never exists that nobody
was shown. Nothing else is printed unless the caller asks for the startup
summary (the command line and `create_app()` do; `wsgi_app()`, a library call
inside someone else's program, does not). Warnings about ignored token
sources are logged. `McpAuthApp` itself takes an open `AuthSetup` and does no I/O.

This module trusts its caller (the operator's configuration and target); it
never sees a client.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TextIO

from ._version import __version__
from .app import MCP_PATH, McpAuthApp
from .auth.statekey import StateKeyFile, open_state_key
from .config import AuthSetup, Config, open_token_source
from .mcp.dispatch import Dispatcher
from .mcp.request_state import RequestStateCodec
from .network import format_url_host
from .store.connection import close_store, open_store
from .store.deployment import gunicorn_workers, split_sessions_warning

logger = logging.getLogger("mcp_auth.startup")

# The variable the printed client configurations read the token from. Not
# MCP_AUTH_TOKEN: a server started from the same shell would take that as its own.
CLIENT_TOKEN_VARIABLE = "MCP_AUTH_CLIENT_TOKEN"
CONFIG_FORMS = ("env", "literal")


class ServedServer(Protocol):
    """What building an app needs of an McpServer (a Protocol, so this module does not import the
    facade, which builds its own app through here)."""

    @property
    def name(self) -> str: ...

    @property
    def tool_names(self) -> list[str]: ...

    @property
    def offer_counts(self) -> dict[str, int]: ...

    @property
    def dispatcher(self) -> Dispatcher: ...


def build_app(
    server: ServedServer,
    config: Config,
    *,
    environ: Mapping[str, str] | None = None,
    url: str | None = None,
    summary: bool = True,
    config_form: str = "env",
    out: TextIO | None = None,
    err: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> McpAuthApp:
    """Open the token source, say what was done, and return the app.

    `environ` (default `os.environ`) locates the default token file. `url` is
    where the app is served, when the caller knows it (the command line, after
    binding). With `summary` the startup summary goes to `err` (default
    stderr). The first-run guidance goes to `out` (default stdout) whenever
    this call created the default token, whatever `summary` says. `clock` is
    the app's (see `McpAuthApp`).
    """
    environ = os.environ if environ is None else environ
    # The store first: a store that cannot be reached must not leave a first-run token behind that nobody saw.
    store = None if config.store_url is None else open_store(config.store_url, config.source_of("session_store"))
    try:
        auth, warnings = open_token_source(config, environ)
        # After the token: a first run that cannot create its token leaves no key behind either.
        state_key, _ = open_state_key(config.state_key_file, config.source_of("state_key_file"), environ)
    except BaseException:
        if store is not None:
            close_store(store)
        raise
    split = split_sessions_warning(gunicorn_workers(), config.store_url is not None)
    for warning in [*warnings, *([split] if split else [])]:
        logger.warning(warning)
    server.dispatcher.use_request_state(RequestStateCodec(state_key.keys, config.request_state_ttl))
    if config.no_auth:
        logger.warning(
            "authentication is OFF (--no-auth): any local process and any allowed browser page can call every tool"
        )
    app = McpAuthApp(server.dispatcher, config, auth, clock=clock, store=store)
    shown_url = (
        url or f"http://{format_url_host(config.host)}:{config.port}{MCP_PATH} (or wherever the WSGI server binds)"
    )
    if summary:
        print_summary(config, auth, server, shown_url, sys.stderr if err is None else err, state_key)
    if auth.generated_token is not None:
        print_first_run(
            auth.generated_token,
            auth.description,
            (url or shown_url).split(" ")[0],
            sys.stdout if out is None else out,
            config_form,
        )
    return app


def _offers(counts: dict[str, int]) -> str:
    """`1 tool`, `2 tools, 1 resource, 3 prompts`: tools always, the other kinds when there are any."""
    parts = [f"{count} {kind}{'' if count == 1 else 's'}" for kind, count in counts.items() if count or kind == "tool"]
    return ", ".join(parts)


def print_summary(
    config: Config,
    auth: AuthSetup,
    server: ServedServer,
    url: str,
    out: TextIO,
    state_key: StateKeyFile | None = None,
) -> None:
    """The one startup summary: everything but the token (and the request-state key)."""
    heading = f"serving '{server.name}' ({_offers(server.offer_counts)}) at {url}"
    print_summary_lines(config, auth, heading, [url.split(" ")[0]], out, state_key)


def print_summary_lines(
    config: Config, auth: AuthSetup, heading: str, urls: list[str], out: TextIO, state_key: StateKeyFile | None = None
) -> None:
    """The summary under `heading` ("serving ... at URL"); `urls` are where clients connect."""
    networks = "any (*)" if config.address_allowlist.allow_all else ", ".join(config.allowed_ips)
    hosts = ", ".join(("localhost", "127.0.0.1", "[::1]", *config.allowed_hosts))
    origins = ", ".join(("http(s)://localhost, 127.0.0.1, [::1] on any port", *config.allowed_origins))
    proxies = ", ".join(config.trusted_proxies) or "none (X-Forwarded-For is ignored)"
    auth_state = "OFF (--no-auth)" if auth.source is None else f"bearer token from {auth.description}"
    websocket = urls[0].replace("http://", "ws://", 1) if urls else "the same address, ws://"
    lines = [
        f"mcp_auth {__version__}: {heading}",
        f"  auth:             {auth_state}",
        f"  allowed networks: {networks}",
        f"  allowed hosts:    {hosts}",
        f"  allowed origins:  {origins}",
        f"  trusted proxies:  {proxies}",
        f"  sessions:         {_sessions_line(config)}",
        f"  websocket:        {websocket} "
        f"(subprotocol mcp; at most {config.max_websockets} open; "
        f"token as subprotocol: {'ON' if config.websocket_token_subprotocol else 'off'})",
    ]
    if config.no_auth or not config.explicit_token_source:
        # The guard then refuses every peer that is not loopback (DESIGN.md, Tokens): say so where it matters.
        lines.append(
            "  clients:          loopback only (no explicit token); to serve other machines set "
            "MCP_AUTH_TOKEN, --token-file or --tokens-file"
        )
    if state_key is not None:
        lines.append(
            f"  request state:    key from {state_key.description}; valid {config.request_state_ttl:g} s "
            "(every worker and host must use the same key file)"
        )
    print("\n".join(lines), file=out, flush=True)


def _sessions_line(config: Config) -> str:
    if config.store_url is None:
        return "in this process's memory (one process; see --session-store for several)"
    return f"shared through the store at {config.store_url.display}"


def print_first_run(token: str, where: str, url: str, out: TextIO, config_form: str = "env") -> None:
    """First run only: the new token and ready-to-paste client configurations."""
    print(
        f"""
First run: generated a bearer token and saved it (mode 0600) in the {where}.
It is printed this once; 'python -m mcp_auth token show' prints it again
('token show --config' with these client configurations).

    {token}
""",
        file=out,
        flush=True,
    )
    print_client_configs(url, token, config_form, out, from_default_file=True)


def _invocation() -> str:
    """How to run this mcp_auth again from any shell: this interpreter, by absolute path."""
    return f"{shlex.quote(sys.executable)} -m mcp_auth"


def print_client_configs(url: str, token: str, form: str, out: TextIO, *, from_default_file: bool = False) -> None:
    """Claude Code, VS Code, Cursor and curl configurations for `url`.

    form "env": the configurations read the token from $MCP_AUTH_CLIENT_TOKEN
    (VS Code prompts for it once and keeps it in its secret storage), so the
    files can be committed; the export line to set it comes first. form
    "literal": the token is written into each configuration.
    """
    variable = CLIENT_TOKEN_VARIABLE
    if form == "literal":
        claude_value = vscode_value = cursor_value = f"Bearer {token}"
        curl_header = shlex.quote(f"Authorization: Bearer {token}")
        preface = "Client configurations (the token is written into them: keep these files out of version control):"
        vscode_inputs: list[dict[str, Any]] = []
    else:
        claude_value = f"Bearer ${{{variable}}}"  # Claude Code expands ${VAR} in headers
        cursor_value = f"Bearer ${{env:{variable}}}"  # Cursor's spelling
        vscode_value = "Bearer ${input:mcp-auth-token}"  # VS Code prompts once, keeps it in secret storage
        curl_header = f'"Authorization: Bearer ${variable}"'
        source = f'"$({_invocation()} token show)"' if from_default_file else shlex.quote(token)
        preface = (
            f"Client configurations: they read the token from ${variable}, so they can be committed.\n"
            f"Set it in the shell that starts your client:\n\n"
            f"    export {variable}={source}"
        )
        vscode_inputs = [
            {"type": "promptString", "id": "mcp-auth-token", "description": "mcp_auth bearer token", "password": True}
        ]
    claude = {"mcpServers": {"mcp-auth": {"type": "http", "url": url, "headers": {"Authorization": claude_value}}}}
    vscode: dict[str, Any] = {
        "servers": {"mcp-auth": {"type": "http", "url": url, "headers": {"Authorization": vscode_value}}}
    }
    if vscode_inputs:
        vscode = {"inputs": vscode_inputs, **vscode}
    cursor = {"mcpServers": {"mcp-auth": {"url": url, "headers": {"Authorization": cursor_value}}}}
    curl = (
        f"curl -sS -i {url} -H {curl_header} -H 'Content-Type: application/json' "
        "-H 'Accept: application/json, text/event-stream' "
        '-d \'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
        '"capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}\''
    )
    text = f"""{preface}

Claude Code (.mcp.json; Claude Code asks once to approve a project's server):
{json.dumps(claude, indent=2)}

VS Code (.vscode/mcp.json{"" if form == "literal" else "; asks for the token once"}):
{json.dumps(vscode, indent=2)}

Cursor (.cursor/mcp.json):
{json.dumps(cursor, indent=2)}

The initialize request with curl (-i shows the answer's Mcp-Session-Id header, which names the session):
{curl}
"""
    print(text, file=out, flush=True)
