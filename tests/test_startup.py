"""Building the app: one construction path, no I/O it does not announce, whoever creates a token prints it.

`mcp_auth.startup.build_app` is what the command line, `create_app()` and
`McpServer.wsgi_app()` all call; `McpAuthApp` takes an open token source and
touches nothing. The library entry point never imports the command line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import live_server

from mcp_auth import Config, McpServer
from mcp_auth.app import McpAuthApp
from mcp_auth.auth.tokens import StaticToken, default_token_path
from mcp_auth.config import AuthSetup, open_token_source
from mcp_auth.startup import build_app, print_client_configs, print_summary

TOKEN = "startup-token-0123456789abcdefghijklmnop"
# A subprocess that only imports mcp_auth and builds an app: seconds on a loaded machine at worst.
SUBPROCESS_TIMEOUT_SECONDS = 60


def _server() -> McpServer:
    server = McpServer("startup")

    @server.tool()
    def echo(text: str) -> str:
        """Echo."""
        return text

    return server


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )


_MODULES_AFTER = """
import json, sys
import mcp_auth
{call}
print(json.dumps(sorted(name for name in sys.modules if name.startswith("mcp_auth"))))
"""


@pytest.mark.parametrize(
    "call",
    [
        pytest.param("", id="import"),
        pytest.param("mcp_auth.create_app()", id="create_app"),
        pytest.param("mcp_auth.McpServer('x').wsgi_app()", id="wsgi_app"),
    ],
)
def test_the_library_entry_points_never_import_the_cli(call: str) -> None:
    env = {**os.environ, "MCP_AUTH_TOKEN": TOKEN}
    done = _python(_MODULES_AFTER.format(call=call), env)
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.splitlines()[-1])
    assert "mcp_auth" in modules
    assert "mcp_auth.cli" not in modules
    assert "mcp_auth.embedded" not in modules  # nor the built-in server


def test_wsgi_app_prints_a_token_it_created_once_and_nothing_else(
    isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = default_token_path(os.environ)
    assert not path.exists()
    app = _server().wsgi_app(Config())
    printed = capsys.readouterr()
    token = path.read_text().strip()
    assert isinstance(app, McpAuthApp)
    # The library user sees the token once, on stdout, with the first-run guidance...
    assert "First run: generated a bearer token" in printed.out
    assert f"    {token}\n" in printed.out
    assert printed.err == ""  # ...and no startup summary: wsgi_app() is a library call
    # The second build finds the file: nothing is printed at all.
    _server().wsgi_app(Config())
    again = capsys.readouterr()
    assert (again.out, again.err) == ("", "")
    assert path.read_text().strip() == token


def test_create_app_prints_the_summary_and_a_first_run_token(isolated_home: Path) -> None:
    done = _python("import mcp_auth; mcp_auth.create_app()", dict(os.environ))
    assert done.returncode == 0, done.stderr
    token = default_token_path(os.environ).read_text().strip()
    assert "First run: generated a bearer token" in done.stdout
    assert f"    {token}\n" in done.stdout
    assert "serving 'mcp-auth-diagnostics'" in done.stderr  # the startup summary
    assert token not in done.stderr  # the summary never shows the token


def test_build_app_announces_exactly_what_it_did() -> None:
    out, err = io.StringIO(), io.StringIO()
    build_app(_server(), Config(token=TOKEN), summary=False, out=out, err=err)
    assert (out.getvalue(), err.getvalue()) == ("", "")  # an explicit token: nothing created, nothing said
    build_app(_server(), Config(token=TOKEN), url="http://127.0.0.1:1/mcp", out=out, err=err)
    assert out.getvalue() == ""
    assert err.getvalue().startswith("mcp_auth ") and "at http://127.0.0.1:1/mcp" in err.getvalue()
    assert TOKEN not in err.getvalue()


def test_build_app_logs_ignored_token_sources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mcp_auth"):
        build_app(_server(), Config(token=TOKEN, token_file=str(tmp_path / "unused")), summary=False)
    assert any("is ignored" in record.getMessage() for record in caplog.records)


def test_the_app_constructor_does_no_io(isolated_home: Path) -> None:
    before = sorted(isolated_home.rglob("*"))
    app = McpAuthApp(_server().dispatcher, Config(), AuthSetup(StaticToken(TOKEN, "a test")))
    assert sorted(isolated_home.rglob("*")) == before  # no default token file, no directory
    assert app.auth.generated_token is None
    app.close()


@pytest.mark.parametrize("form", ["env", "literal"])
def test_the_printed_curl_command_shows_the_session_id(form: str) -> None:
    """The summary's curl initialize, run as printed, shows the Mcp-Session-Id header that names the session."""
    with live_server(token=TOKEN) as live:
        out = io.StringIO()
        print_client_configs(live.url, TOKEN, form, out)
        curl = next(line for line in out.getvalue().splitlines() if line.startswith("curl "))
        result = subprocess.run(
            ["sh", "-c", curl],
            env={**os.environ, "MCP_AUTH_CLIENT_TOKEN": TOKEN},
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_SECONDS,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200")
    headers = [line.lower() for line in result.stdout.split("\r\n\r\n", 1)[0].splitlines()]
    assert any(line.startswith("mcp-session-id: ") and len(line) > len("mcp-session-id: ") for line in headers)


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        pytest.param({"tool": 1}, "(1 tool)", id="one-tool"),
        pytest.param({"tool": 2}, "(2 tools)", id="two-tools"),
        pytest.param({"prompt": 1}, "(0 tools, 1 prompt)", id="prompt-only"),
        pytest.param(
            {"tool": 1, "resource": 2, "template": 1, "prompt": 3},
            "(1 tool, 2 resources, 1 resource template, 3 prompts)",
            id="everything",
        ),
    ],
)
def test_the_summary_counts_what_the_server_offers_in_good_english(kinds: dict[str, int], expected: str) -> None:
    server = McpServer("counted")
    for n in range(kinds.get("tool", 0)):
        server.tool(f"tool{n}")(lambda: "x")
    for n in range(kinds.get("resource", 0)):
        server.resource(f"notes://fixed{n}")(lambda: "x")
    for _ in range(kinds.get("template", 0)):
        server.resource("notes://{name}")(lambda name: name)
    for n in range(kinds.get("prompt", 0)):
        server.prompt(f"prompt{n}")(lambda: "x")
    config = Config(token=TOKEN)
    auth, _ = open_token_source(config, {})
    out = io.StringIO()
    print_summary(config, auth, server, "http://127.0.0.1:8765/mcp", out)
    assert out.getvalue().startswith("mcp_auth ") and f"serving 'counted' {expected} at " in out.getvalue()
