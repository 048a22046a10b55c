"""Tests for the command line: `python -m mcp_auth` in real subprocesses.

Every server listens on port 0 (127.0.0.1, or 0.0.0.0 reached through
127.0.0.1), announces its port on stderr, and is stopped in a fixture with a
bounded wait. Both pipes are drained by reader threads, so a chatty child can
never block on a full pipe. HOME and XDG_CONFIG_HOME point into a temporary
directory (conftest.py); subprocesses inherit that environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from support import TOKEN, RawResponse, initialize_body, open_session, request, rpc

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"mcp_auth: listening on http://(?P<host>\S+):(?P<port>\d+)/mcp")
GENERATED_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
OTHER_TOKEN = "other-token-zyxwvutsrqponmlkjihgfedcba"
WRONG_TOKEN = "wrong-token-0123456789abcdefghijklmn"

# Upper bounds for waiting only; a healthy run takes a fraction of each.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
RUN_TIMEOUT = 20.0


# --- helpers -----------------------------------------------------------------------


def cli_env(**overrides: str | None) -> dict[str, str]:
    """The test's environment (temporary HOME), without MCP_AUTH_*, importing mcp_auth from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_AUTH_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """A command that must finish by itself (subcommands, refusals); killed past RUN_TIMEOUT."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_auth", *args],
        cwd=cwd,
        env=env or cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


class Cli:
    """A running `python -m mcp_auth`; both pipes drained into line lists by reader threads."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mcp_auth", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._eof: set[str] = set()
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._drain, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self.process.stdout), ("stderr", self.process.stderr))
        ]
        for reader in self._readers:
            reader.start()
        self.port = 0
        self.host = ""

    def _drain(self, name: str, pipe: Any) -> None:
        for line in pipe:
            with self._changed:
                self._lines[name].append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof.add(name)
            self._changed.notify_all()

    @property
    def stdout(self) -> str:
        with self._changed:
            return "\n".join(self._lines["stdout"])

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self._lines["stderr"])

    @property
    def output(self) -> str:
        return self.stdout + "\n" + self.stderr

    def wait_listening(self, timeout: float = START_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines["stderr"]:
                    match = LISTENING.fullmatch(line)
                    if match:
                        self.host, self.port = match["host"], int(match["port"])
                        return self.port
                if "stderr" in self._eof:
                    raise AssertionError(
                        f"exited before listening ({self.process.poll()}):\n" + "\n".join(self._lines["stderr"])
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no listening line within the deadline:\n" + "\n".join(self._lines["stderr"]))
                self._changed.wait(remaining)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the server and wait (bounded) for it to exit; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"still running {timeout} s after signal {signum}:\n{self.stderr}") from None
        self._join_readers()
        return status

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        """Kill if still running; always leaves no process behind."""
        if self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self._join_readers()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


Start = Callable[..., Cli]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start `python -m mcp_auth ARGS` and wait for its listening line; every process is stopped afterwards."""
    started: list[Cli] = []

    def _start(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, wait: bool = True) -> Cli:
        cli = Cli(args, env or cli_env(), cwd)
        started.append(cli)
        if wait:
            cli.wait_listening()
        return cli

    try:
        yield _start
    finally:
        for cli in started:
            cli.close()


def default_token_file(home: Path) -> Path:
    return home / ".config" / "mcp-auth" / "token"


def initialize_status(port: int, token: str | None, host_header: str = "127.0.0.1") -> int:
    return request(port, body=initialize_body(), token=token, host_header=host_header).status


def messages(response: RawResponse) -> list[Any]:
    """The JSON-RPC messages of a POST answer, whether plain JSON or an event stream."""
    if response.header("Content-Type") == "text/event-stream":
        return response.sse_messages()
    return [response.json()]


def tool_names(port: int, token: str | None) -> list[str]:
    session_id = open_session(port, token=token)
    response = rpc(port, session_id, "tools/list", token=token)
    assert response.status == 200, response
    (message,) = messages(response)
    return sorted(tool["name"] for tool in message["result"]["tools"])


def summary_line(stderr: str, label: str) -> str:
    for line in stderr.splitlines():
        if line.startswith(f"  {label}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no '{label}' line in the startup summary:\n{stderr}")


def json_after(text: str, heading: str) -> Any:
    """The JSON document that follows `heading` in the first-run guidance."""
    at = text.index(heading)
    value, _ = json.JSONDecoder().raw_decode(text, text.index("{", at))
    return value


def write_private(path: Path, content: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(content)
    os.chmod(path, mode)
    return path


def add_named_token(tokens_file: Path, name: str, *tools: str, env: dict[str, str] | None = None) -> str:
    args = ["token", "add", name, *(["--tools", *tools] if tools else []), "--tokens-file", str(tokens_file)]
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.splitlines()[-1]
    assert GENERATED_TOKEN.fullmatch(token)
    return token


def assert_env_configs(out: str, url: str) -> None:
    """Every printed configuration reads the token from the environment or a prompt, as each client spells it."""
    claude = json_after(out, "Claude Code")["mcpServers"]["mcp-auth"]
    assert claude == {"type": "http", "url": url, "headers": {"Authorization": "Bearer ${MCP_AUTH_CLIENT_TOKEN}"}}
    vscode = json_after(out, "VS Code")
    assert vscode["servers"]["mcp-auth"] == {
        "type": "http",
        "url": url,
        "headers": {"Authorization": "Bearer ${input:mcp-auth-token}"},
    }
    assert vscode["inputs"] == [
        {"type": "promptString", "id": "mcp-auth-token", "description": "mcp_auth bearer token", "password": True}
    ]
    cursor = json_after(out, "Cursor")["mcpServers"]["mcp-auth"]
    assert cursor == {"url": url, "headers": {"Authorization": "Bearer ${env:MCP_AUTH_CLIENT_TOKEN}"}}
    curl = next(line for line in out.splitlines() if line.startswith("curl "))
    assert url in curl and '"Authorization: Bearer $MCP_AUTH_CLIENT_TOKEN"' in curl
    assert "approve" in out  # Claude Code asks once before it uses a project's server


def assert_literal_configs(out: str, url: str, token: str) -> None:
    header = {"Authorization": f"Bearer {token}"}
    assert json_after(out, "Claude Code")["mcpServers"]["mcp-auth"] == {"type": "http", "url": url, "headers": header}
    assert json_after(out, "VS Code")["servers"]["mcp-auth"] == {"type": "http", "url": url, "headers": header}
    assert json_after(out, "Cursor")["mcpServers"]["mcp-auth"] == {"url": url, "headers": header}
    curl = next(line for line in out.splitlines() if line.startswith("curl "))
    assert f"Authorization: Bearer {token}" in curl


# --- first run and the default token file -------------------------------------------


def test_first_run_prints_literal_configs_when_asked(start: Start, isolated_home: Path) -> None:
    cli = start("--port", "0", "--print-config", "literal")
    token = default_token_file(isolated_home).read_text().strip()
    assert cli.stop() == 0
    assert_literal_configs(cli.stdout, f"http://127.0.0.1:{cli.port}/mcp", token)
    assert "export " not in cli.stdout


def test_token_show_config_prints_the_configurations_again(start: Start, isolated_home: Path) -> None:
    cli = start("--port", "0")
    assert cli.stop() == 0
    token = default_token_file(isolated_home).read_text().strip()
    url = "http://127.0.0.1:9999/mcp"

    shown = run_cli("token", "show", "--config", "--url", url)
    assert shown.returncode == 0, shown.stderr
    assert_env_configs(shown.stdout, url)
    assert shown.stdout.splitlines()[-1] == token and shown.stdout.count(token) == 1

    literal = run_cli("token", "show", "--config=literal", "--url", url)
    assert literal.returncode == 0, literal.stderr
    assert_literal_configs(literal.stdout, url, token)
    assert literal.stdout.splitlines()[-1] == token


def test_first_run_creates_prints_and_reuses_the_default_token(start: Start, isolated_home: Path) -> None:
    path = default_token_file(isolated_home)
    first = start("--port", "0")
    url = f"http://127.0.0.1:{first.port}/mcp"

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text().splitlines()[0]
    assert GENERATED_TOKEN.fullmatch(token)
    assert initialize_status(first.port, token) == 200
    assert initialize_status(first.port, None) == 401
    assert initialize_status(first.port, WRONG_TOKEN) == 401
    assert first.stop() == 0

    out = first.stdout
    assert "    " + token in out.splitlines()
    assert_env_configs(out, url)
    # The export line reads the token from the default token file: no token in shell history either.
    export = next(line.strip() for line in out.splitlines() if line.strip().startswith("export "))
    assert export == f'export MCP_AUTH_CLIENT_TOKEN="$({sys.executable} -m mcp_auth token show)"'
    assert out.count(token) == 1  # the token itself, once; never inside a configuration
    assert token not in first.stderr  # the summary never shows it

    before = path.stat()
    second = start("--port", "0")
    assert initialize_status(second.port, token) == 200
    assert second.stop() == 0
    assert token not in second.output
    assert "First run" not in second.output
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert str(path) in summary_line(second.stderr, "auth")

    shown = run_cli("token", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == token + "\n"


@pytest.mark.parametrize(
    "xdg",
    [
        pytest.param(None, id="unset"),
        pytest.param("", id="empty"),
        pytest.param("relative/config", id="relative-is-ignored"),
    ],
)
def test_default_token_file_falls_back_to_home_config(start: Start, isolated_home: Path, xdg: str | None) -> None:
    env = cli_env(XDG_CONFIG_HOME=xdg)
    cli = start("--port", "0", env=env)
    assert cli.stop() == 0
    path = isolated_home / ".config" / "mcp-auth" / "token"
    token = path.read_text().strip()
    assert token in cli.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = run_cli("token", "show", env=env)
    assert (shown.returncode, shown.stdout) == (0, token + "\n")


def test_racing_first_runs_print_one_token_and_share_it(start: Start, isolated_home: Path) -> None:
    clis = [start("--port", "0", wait=False) for _ in range(4)]
    for cli in clis:
        cli.wait_listening()
    token = default_token_file(isolated_home).read_text().strip()
    for cli in clis:
        assert initialize_status(cli.port, token) == 200
    for cli in clis:
        assert cli.stop() == 0
    printers = [cli for cli in clis if token in cli.stdout]
    assert len(printers) == 1
    assert sum("First run" in cli.output for cli in clis) == 1


def test_token_show_without_a_default_token(isolated_home: Path) -> None:
    result = run_cli("token", "show")
    assert result.returncode == 2
    assert "python -m mcp_auth" in result.stderr and result.stdout == ""
    assert not default_token_file(isolated_home).exists()


SERVE_AND_SHOW = [["--port", "0"], ["token", "show"]]


@pytest.mark.parametrize(
    ("content", "file_mode", "dir_mode", "fix", "commands"),
    [
        pytest.param("", 0o600, 0o700, "delete", SERVE_AND_SHOW, id="empty"),
        pytest.param(
            "\nsecond-line-token-0123456789abcdef\n", 0o600, 0o700, "delete", SERVE_AND_SHOW, id="blank-first-line"
        ),
        pytest.param(TOKEN + "\n", 0o644, 0o700, "chmod 600", SERVE_AND_SHOW, id="world-readable"),
        pytest.param(TOKEN + "\n", 0o640, 0o700, "chmod 600", SERVE_AND_SHOW, id="group-readable"),
        # `token show` may still read a 0600 file in an open directory; the server refuses it.
        pytest.param(TOKEN + "\n", 0o600, 0o755, "chmod 700", SERVE_AND_SHOW[:1], id="open-directory"),
    ],
)
def test_broken_default_token_file_is_an_error_not_regenerated(
    isolated_home: Path, content: str, file_mode: int, dir_mode: int, fix: str, commands: list[list[str]]
) -> None:
    path = write_private(default_token_file(isolated_home), content, file_mode)
    os.chmod(path.parent, dir_mode)
    # Written long ago: no racing creator is still writing it, so nobody waits for one.
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    before = path.stat()
    for args in commands:
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert fix in result.stderr and str(path.parent) in result.stderr
        assert result.stdout == ""
    after = path.stat()
    assert path.read_text() == content
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (before.st_ino, before.st_mode, before.st_mtime_ns)


# --- refusals -----------------------------------------------------------------------

MODULE_TEXT = '''
from mcp_auth import McpServer

server = McpServer("mine")


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


def make_server() -> McpServer:
    made = McpServer("made")

    @made.tool()
    def whisper(text: str) -> str:
        """Lower-case the text."""
        return text.lower()

    return made


def make_with_argument(name):
    return McpServer(name)


def make_nothing():
    return 42


not_a_server = "hello"
'''


def write_module(directory: Path, name: str = "mymod") -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(MODULE_TEXT))
    return path


def write_toml(directory: Path, text: str, name: str = "config.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param(["--host", "0.0.0.0"], {}, ["0.0.0.0", "MCP_AUTH_TOKEN", "--token-file"], id="any-ipv4-no-token"),
        pytest.param(["--host", "::"], {}, ["'::'", "MCP_AUTH_TOKEN"], id="any-ipv6-no-token"),
        pytest.param(["--host", "192.0.2.7"], {}, ["MCP_AUTH_TOKEN"], id="lan-address-no-token"),
        pytest.param(["--host", "mcp.example.test"], {}, ["MCP_AUTH_TOKEN"], id="name-not-resolved-no-token"),
        pytest.param([], {"MCP_AUTH_HOST": "0.0.0.0"}, ["MCP_AUTH_TOKEN"], id="env-host-no-token"),
        pytest.param(
            ["--no-auth", "--host", "0.0.0.0"],
            {"MCP_AUTH_TOKEN": TOKEN},
            ["--no-auth", "127.0.0.1"],
            id="no-auth-off-loopback-with-token",
        ),
        pytest.param(
            ["--host", "0.0.0.0"],
            {"MCP_AUTH_NO_AUTH": "1", "MCP_AUTH_TOKEN": TOKEN},
            ["--no-auth"],
            id="env-no-auth-off-loopback",
        ),
        pytest.param(
            ["--no-auth"], {"MCP_AUTH_TOKEN": TOKEN}, ["--no-auth", "MCP_AUTH_TOKEN"], id="no-auth-contradicts-token"
        ),
        pytest.param(["--allowed-ip", "10.0.0.300"], {}, ["'10.0.0.300'", "--allowed-ip"], id="bad-allowed-ip"),
        pytest.param(
            ["--allowed-ip", "127.0.0.1", "--allowed-ip", "nonsense"],
            {},
            ["'nonsense'", "--allowed-ip"],
            id="second-allowed-ip-bad",
        ),
        pytest.param(
            [],
            {"MCP_AUTH_ALLOWED_IPS": "10.0.0.0/8, nonsense"},
            ["'nonsense'", "MCP_AUTH_ALLOWED_IPS"],
            id="bad-env-allowed-ips",
        ),
        pytest.param(["--trusted-proxy", "*"], {}, ["--trusted-proxy"], id="wildcard-trusted-proxy"),
        pytest.param(
            [],
            {"MCP_AUTH_TRUSTED_PROXIES": "0.0.0.0/0"},
            ["MCP_AUTH_TRUSTED_PROXIES"],
            id="everything-trusted-proxy-env",
        ),
        pytest.param(["--port", "70000"], {}, ["70000", "--port"], id="port-out-of-range"),
        pytest.param([], {"MCP_AUTH_PORT": "eighty"}, ["MCP_AUTH_PORT"], id="env-port-not-a-number"),
        pytest.param([], {"MCP_AUTH_NO_AUTH": "maybe"}, ["MCP_AUTH_NO_AUTH"], id="env-bool-unclear"),
        pytest.param([], {"MCP_AUTH_TOKEN": "   "}, ["MCP_AUTH_TOKEN", "empty"], id="env-token-blank"),
        pytest.param(
            ["--token-file", "{tmp}/missing"], {}, ["--token-file", "does not exist"], id="token-file-missing"
        ),
        pytest.param(["--tokens-file", "{tmp}/missing.json"], {}, ["token add"], id="tokens-file-missing"),
    ],
)
def test_refused_configuration_exits_2_with_the_fix(
    tmp_path: Path, isolated_home: Path, args: list[str], env: dict[str, str], expected: list[str]
) -> None:
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    if "--port" not in args:
        args += ["--port", "0"]  # should the refusal fail to happen, the server at least starts
    result = run_cli(*args, env=cli_env(**env))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mcp_auth: error: ") or "\nmcp_auth: error: " in result.stderr
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert TOKEN not in result.stderr
    assert not default_token_file(isolated_home).exists()  # a refused start creates nothing


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        pytest.param(
            'port = 0\nallowed_ip = ["10.0.0.0/8"]\n',
            ["unknown setting", "'allowed_ip'", "allowed_ips"],
            id="unknown-key",
        ),
        pytest.param(f'port = 0\ntoken = "{TOKEN}"\n', ["token_file", "MCP_AUTH_TOKEN"], id="token-key"),
        pytest.param(f'[mcp_auth]\nport = 0\ntoken = "{TOKEN}"\n', ["token_file"], id="token-key-in-table"),
        pytest.param('port = 0\nallowed_ips = ["10.0.0.0/8"\n', ["not valid TOML"], id="bad-toml"),
        pytest.param('port = "zero"\n', ["port", "int"], id="wrong-type"),
        pytest.param(
            'port = 0\nallowed_ips = ["10.0.0.0/33"]\n',
            ["'10.0.0.0/33'", "config.toml"],
            id="bad-network-names-the-file",
        ),
        pytest.param('port = 0\nhost = "0.0.0.0"\n', ["MCP_AUTH_TOKEN"], id="toml-host-needs-a-token"),
        pytest.param(
            "allowed_ips = " + "[" * 1000 + "]" * 1000 + "\n", ["config.toml", "too deeply"], id="deep-nesting"
        ),
    ],
)
def test_refused_toml_config_exits_2(tmp_path: Path, isolated_home: Path, toml: str, expected: list[str]) -> None:
    path = write_toml(tmp_path, toml)
    for args, env in (
        (["--config", str(path)], cli_env()),
        ([], cli_env(MCP_AUTH_CONFIG=str(path))),
    ):
        result = run_cli(*args, env=env)
        assert result.returncode == 2, result.stderr
        for text in expected:
            assert text in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert TOKEN not in result.stderr
    assert not default_token_file(isolated_home).exists()


def test_a_config_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"port = 0 # caf\xe9\n")  # latin-1, as some editors save it
    result = run_cli("--config", str(path))
    assert result.returncode == 2, result.stderr
    assert "config.toml" in result.stderr and "UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_toml_config_exits_2(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and "does not exist" in result.stderr


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("nosuchmodule_xyz:server", ["cannot import", "'nosuchmodule_xyz'"], id="not-importable"),
        pytest.param("mymod:missing", ["no attribute", "'missing'"], id="no-such-attribute"),
        pytest.param("mymod:not_a_server", ["str", "McpServer"], id="not-a-server"),
        pytest.param("mymod:make_nothing", ["int", "McpServer"], id="factory-returns-other"),
        pytest.param("mymod:make_with_argument", ["mymod:make_with_argument"], id="factory-needs-arguments"),
        pytest.param("json:dumps", ["json:dumps"], id="stdlib-function-needs-arguments"),
        pytest.param("mymod", ["module:server"], id="no-colon"),
        pytest.param("mymod:", ["module:server"], id="empty-attribute"),
        pytest.param(":server", ["module:server"], id="empty-module"),
    ],
)
def test_bad_target_exits_2(tmp_path: Path, isolated_home: Path, target: str, expected: list[str]) -> None:
    write_module(tmp_path)
    result = run_cli("serve", target, "--port", "0", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- serving ------------------------------------------------------------------------


def test_non_loopback_bind_with_a_token_starts(start: Start, isolated_home: Path) -> None:
    cli = start("--host", "0.0.0.0", "--port", "0", env=cli_env(MCP_AUTH_TOKEN=TOKEN))
    assert cli.host == "0.0.0.0"
    assert initialize_status(cli.port, TOKEN) == 200
    assert initialize_status(cli.port, None) == 401
    assert summary_line(cli.stderr, "auth") == "bearer token from MCP_AUTH_TOKEN"
    assert cli.stop() == 0
    assert TOKEN not in cli.output
    assert not default_token_file(isolated_home).exists()


def test_token_on_the_command_line_works_with_a_warning(start: Start, isolated_home: Path) -> None:
    cli = start("--port", "0", "--token", TOKEN)
    assert initialize_status(cli.port, TOKEN) == 200
    assert initialize_status(cli.port, WRONG_TOKEN) == 401
    assert cli.stop() == 0
    assert "shell history" in cli.stderr and "'ps'" in cli.stderr
    assert summary_line(cli.stderr, "auth") == "bearer token from --token"
    assert TOKEN not in cli.output
    assert not default_token_file(isolated_home).exists()


def test_a_short_token_works_with_a_warning(start: Start) -> None:
    cli = start("--port", "0", env=cli_env(MCP_AUTH_TOKEN="secret-token"))
    assert initialize_status(cli.port, "secret-token") == 200
    assert initialize_status(cli.port, "secret-tokex") == 401
    assert cli.stop() == 0
    assert "shorter than 16 characters" in cli.stderr
    assert "secret-token" not in cli.output


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(["--no-auth"], {}, id="flag"),
        pytest.param([], {"MCP_AUTH_NO_AUTH": "1"}, id="env"),
    ],
)
def test_no_auth_on_loopback_warns_and_needs_no_token(
    start: Start, isolated_home: Path, args: list[str], env: dict[str, str]
) -> None:
    cli = start("--port", "0", *args, env=cli_env(**env))
    assert "authentication is OFF" in cli.stderr
    assert summary_line(cli.stderr, "auth").startswith("OFF")
    assert tool_names(cli.port, None) == ["echo", "whoami"]
    # Host and Origin checks still apply without auth.
    assert initialize_status(cli.port, None, host_header="evil.example") == 403
    assert cli.stop() == 0
    assert not default_token_file(isolated_home).exists()


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("env-token", id="MCP_AUTH_TOKEN"),
        pytest.param("token-file", id="--token-file"),
        pytest.param("env-token-file", id="MCP_AUTH_TOKEN_FILE"),
        pytest.param("tokens-file", id="--tokens-file"),
    ],
)
def test_startup_summary_lists_everything_but_the_token(
    start: Start, tmp_path: Path, isolated_home: Path, source: str
) -> None:
    env = cli_env()
    args = [
        "--port",
        "0",
        "--allowed-ip",
        "127.0.0.0/8",
        "--allowed-ip",
        "10.0.0.0/8",
        "--allowed-host",
        "mcp.example.test",
        "--allowed-origin",
        "https://app.example.test",
        "--trusted-proxy",
        "10.1.2.3",
    ]
    if source == "env-token":
        token, auth = TOKEN, "bearer token from MCP_AUTH_TOKEN"
        env["MCP_AUTH_TOKEN"] = token
    elif source in ("token-file", "env-token-file"):
        token = TOKEN
        path = write_private(tmp_path / "secret" / "token", token + "\n")
        if source == "token-file":
            args += ["--token-file", str(path)]
            auth = f"bearer token from token file {path} (--token-file)"
        else:
            env["MCP_AUTH_TOKEN_FILE"] = str(path)
            auth = f"bearer token from token file {path} (MCP_AUTH_TOKEN_FILE)"
    else:
        path = tmp_path / "tokens.json"
        token = add_named_token(path, "ci")
        args += ["--tokens-file", str(path)]
        auth = f"bearer token from tokens file {path} (--tokens-file)"

    cli = start(*args, env=env)
    assert initialize_status(cli.port, token, host_header="mcp.example.test:8080") == 200
    assert initialize_status(cli.port, WRONG_TOKEN) == 401
    assert cli.stop() == 0

    stderr = cli.stderr
    assert f"at http://127.0.0.1:{cli.port}/mcp" in stderr
    assert summary_line(stderr, "auth") == auth
    assert summary_line(stderr, "allowed networks") == "127.0.0.0/8, 10.0.0.0/8"
    assert summary_line(stderr, "allowed hosts") == "localhost, 127.0.0.1, [::1], mcp.example.test"
    assert "https://app.example.test" in summary_line(stderr, "allowed origins")
    assert summary_line(stderr, "trusted proxies") == "10.1.2.3"
    for secret in (token, WRONG_TOKEN, hashlib.sha256(token.encode()).hexdigest()):
        assert secret not in cli.output
    assert not default_token_file(isolated_home).exists()


def test_default_summary(start: Start) -> None:
    cli = start("--port", "0", env=cli_env(MCP_AUTH_TOKEN=TOKEN))
    assert cli.stop() == 0
    assert summary_line(cli.stderr, "allowed networks") == "any (*)"
    assert summary_line(cli.stderr, "allowed hosts") == "localhost, 127.0.0.1, [::1]"
    assert summary_line(cli.stderr, "trusted proxies").startswith("none")


# --- precedence ---------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on for the whole test: binding it fails."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("toml_port", "env_port", "flag_port"),
    [
        pytest.param(None, "busy", "0", id="flag-over-env"),
        pytest.param("busy", None, "0", id="flag-over-toml"),
        pytest.param("busy", "0", None, id="env-over-toml"),
    ],
)
def test_port_precedence(
    start: Start, tmp_path: Path, busy_port: int, toml_port: str | None, env_port: str | None, flag_port: str | None
) -> None:
    def value(setting: str | None) -> str | None:
        return str(busy_port) if setting == "busy" else setting

    env = cli_env(MCP_AUTH_TOKEN=TOKEN, MCP_AUTH_PORT=value(env_port))
    args = ["--port", flag_port] if flag_port is not None else []
    if toml_port is not None:
        args += ["--config", str(write_toml(tmp_path, f"port = {value(toml_port)}\n"))]
    cli = start(*args, env=env)  # the busy port would fail to bind
    assert cli.port != busy_port
    assert initialize_status(cli.port, TOKEN) == 200
    assert cli.stop() == 0


@pytest.mark.parametrize(
    ("toml_host", "env_host", "flag_host"),
    [
        pytest.param(None, "0.0.0.0", "127.0.0.1", id="flag-over-env"),
        pytest.param("0.0.0.0", None, "127.0.0.1", id="flag-over-toml"),
        pytest.param("0.0.0.0", "127.0.0.1", None, id="env-over-toml"),
    ],
)
def test_host_precedence(
    start: Start, tmp_path: Path, toml_host: str | None, env_host: str | None, flag_host: str | None
) -> None:
    # With no token, a 0.0.0.0 that won would be refused with exit status 2.
    args = ["--port", "0"] + (["--host", flag_host] if flag_host else [])
    if toml_host is not None:
        args += ["--config", str(write_toml(tmp_path, f'host = "{toml_host}"\n'))]
    cli = start(*args, env=cli_env(MCP_AUTH_HOST=env_host))
    assert cli.host == "127.0.0.1"
    assert cli.stop() == 0


@pytest.mark.parametrize(
    ("toml_ips", "env_ips", "flag_ips", "networks", "status"),
    [
        pytest.param(["10.0.0.0/8"], None, [], "10.0.0.0/8", 403, id="toml-over-default"),
        pytest.param(["10.0.0.0/8"], "127.0.0.1", [], "127.0.0.1", 200, id="env-over-toml"),
        pytest.param(["127.0.0.1"], "10.0.0.0/8", [], "10.0.0.0/8", 403, id="env-over-toml-refusing"),
        pytest.param(None, "10.0.0.0/8", ["127.0.0.0/8"], "127.0.0.0/8", 200, id="flag-over-env"),
        pytest.param(["127.0.0.1"], None, ["10.0.0.0/8"], "10.0.0.0/8", 403, id="flag-over-toml"),
    ],
)
def test_allowed_ips_precedence(
    start: Start,
    tmp_path: Path,
    toml_ips: list[str] | None,
    env_ips: str | None,
    flag_ips: list[str],
    networks: str,
    status: int,
) -> None:
    args = ["--port", "0"]
    for network in flag_ips:
        args += ["--allowed-ip", network]
    if toml_ips is not None:
        args += ["--config", str(write_toml(tmp_path, f"[mcp_auth]\nallowed_ips = {json.dumps(toml_ips)}\n"))]
    cli = start(*args, env=cli_env(MCP_AUTH_TOKEN=TOKEN, MCP_AUTH_ALLOWED_IPS=env_ips))
    assert summary_line(cli.stderr, "allowed networks") == networks
    response = request(cli.port, body=initialize_body(), token=TOKEN)
    assert response.status == status
    if status == 403:
        assert response.json()["error"]["data"]["reason"] == "ip_not_allowed"
    assert cli.stop() == 0


def test_config_flag_over_config_variable(start: Start, tmp_path: Path) -> None:
    good = write_toml(tmp_path, 'allowed_hosts = ["mcp.example.test"]\n', "good.toml")
    bad = write_toml(tmp_path, "this is not toml\n", "bad.toml")
    cli = start("--port", "0", "--config", str(good), env=cli_env(MCP_AUTH_TOKEN=TOKEN, MCP_AUTH_CONFIG=str(bad)))
    assert initialize_status(cli.port, TOKEN, host_header="mcp.example.test") == 200
    assert cli.stop() == 0


def test_bind_failure_on_first_run_does_not_swallow_the_token(
    start: Start, isolated_home: Path, busy_port: int
) -> None:
    failed = run_cli("--port", str(busy_port))
    assert failed.returncode != 0
    assert str(busy_port) in failed.stderr
    # The token of the next, successful first run must be printed once by someone.
    cli = start("--port", "0")
    assert cli.stop() == 0
    token = default_token_file(isolated_home).read_text().strip()
    assert token in failed.stdout + cli.stdout


# --- signals ------------------------------------------------------------------------

STOP_SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_signal_stops_cleanly(start: Start, signum: int) -> None:
    cli = start("--port", "0", env=cli_env(MCP_AUTH_TOKEN=TOKEN))
    assert initialize_status(cli.port, TOKEN) == 200
    assert cli.stop(signum) == 0
    assert cli.stderr.splitlines()[-1] == "mcp_auth: stopped"
    assert "Traceback" not in cli.stderr


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_signal_stops_with_an_open_event_stream(start: Start, signum: int) -> None:
    cli = start("--port", "0", env=cli_env(MCP_AUTH_TOKEN=TOKEN))
    session_id = open_session(cli.port, token=TOKEN)
    with socket.create_connection(("127.0.0.1", cli.port), timeout=STOP_TIMEOUT) as stream:
        stream.sendall(
            (
                f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n\r\n"
            ).encode()
        )
        received = b""
        while b"\r\n\r\n" not in received:  # the stream is open once its head arrived
            chunk = stream.recv(4096)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        assert cli.stop(signum) == 0  # bounded: STOP_TIMEOUT
    assert cli.stderr.splitlines()[-1] == "mcp_auth: stopped"
    assert "Traceback" not in cli.stderr


# --- serve TARGET -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "name", "tools"),
    [
        pytest.param(["serve", "mymod:server"], "mine", ["shout"], id="serve-server"),
        pytest.param(["mymod:server"], "mine", ["shout"], id="target-without-serve"),
        pytest.param(["serve", "mymod:make_server"], "made", ["whisper"], id="factory"),
    ],
)
def test_serve_target(start: Start, tmp_path: Path, args: list[str], name: str, tools: list[str]) -> None:
    write_module(tmp_path)
    cli = start(*args, "--port", "0", env=cli_env(MCP_AUTH_TOKEN=TOKEN), cwd=tmp_path)
    assert f"serving '{name}' (1 tool) at" in cli.stderr
    assert tool_names(cli.port, TOKEN) == tools
    session_id = open_session(cli.port, token=TOKEN)
    call = rpc(cli.port, session_id, "tools/call", {"name": tools[0], "arguments": {"text": "MiXed"}}, token=TOKEN)
    assert call.status == 200
    (message,) = messages(call)
    assert message["result"]["content"][0]["text"] in ("MIXED", "mixed")
    assert cli.stop() == 0


# --- token subcommands --------------------------------------------------------------


def test_token_add_list_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "tokens.json"
    added = run_cli("token", "add", "alice", "--tools", "echo", "who*", "--tokens-file", str(path))
    assert added.returncode == 0, added.stderr
    token = added.stdout.splitlines()[-1]
    assert GENERATED_TOKEN.fullmatch(token)
    assert added.stdout == token + "\n"
    assert token not in added.stderr and "alice" in added.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_text()
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert token not in stored and digest in stored

    bob = add_named_token(path, "bob")
    assert bob != token and bob not in path.read_text()

    listed = run_cli("token", "list", "--tokens-file", str(path))
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["alice", "echo, who*"], ["bob", "all tools"]]
    for secret in (token, bob, digest, hashlib.sha256(bob.encode()).hexdigest()):
        assert secret not in listed.stdout + listed.stderr

    duplicate = run_cli("token", "add", "alice", "--tokens-file", str(path))
    assert duplicate.returncode == 2
    assert "'alice'" in duplicate.stderr and duplicate.stdout == ""
    assert f"token rotate alice --tokens-file {path}" in duplicate.stderr and "revoke it first" not in duplicate.stderr
    unknown = run_cli("token", "revoke", "carol", "--tokens-file", str(path))
    assert unknown.returncode == 2
    assert "'carol'" in unknown.stderr and "token list" in unknown.stderr
    bad_name = run_cli("token", "add", "no spaces", "--tokens-file", str(path))
    assert bad_name.returncode == 2 and bad_name.stdout == ""
    no_file = run_cli("token", "list")
    assert no_file.returncode == 2 and "--tokens-file" in no_file.stderr
    missing = run_cli("token", "list", "--tokens-file", str(tmp_path / "missing.json"))
    assert missing.returncode == 2 and "token add" in missing.stderr
    # None of the refusals changed the file.
    assert [
        row[0]
        for row in (
            line.split("\t") for line in run_cli("token", "list", "--tokens-file", str(path)).stdout.splitlines()
        )
    ] == ["alice", "bob"]


def test_token_revoke_reaches_a_running_server(start: Start, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    alice = add_named_token(path, "alice", "echo")
    bob = add_named_token(path, "bob")
    cli = start("--port", "0", "--tokens-file", str(path))
    assert tool_names(cli.port, alice) == ["echo"]
    assert tool_names(cli.port, bob) == ["echo", "whoami"]
    alice_session = open_session(cli.port, token=alice)
    bob_session = open_session(cli.port, token=bob)

    revoked = run_cli("token", "revoke", "alice", "--tokens-file", str(path))
    assert revoked.returncode == 0, revoked.stderr

    assert initialize_status(cli.port, alice) == 401
    assert rpc(cli.port, alice_session, "tools/list", token=alice).status == 401
    assert initialize_status(cli.port, bob) == 200
    assert rpc(cli.port, bob_session, "tools/list", token=bob).status == 200
    assert cli.process.poll() is None  # no restart
    assert cli.stop() == 0
    listed = run_cli("token", "list", "--tokens-file", str(path))
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["bob"]


def test_tokens_file_variable_replaces_the_flag(start: Start, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    env = cli_env(MCP_AUTH_TOKENS_FILE=str(path))
    first = add_named_token(path, "first", env=env)
    second_add = run_cli("token", "add", "second", env=env)
    assert second_add.returncode == 0, second_add.stderr
    second = second_add.stdout.splitlines()[-1]
    listed = run_cli("token", "list", env=env)
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["first", "second"]

    cli = start("--port", "0", env=env)
    assert summary_line(cli.stderr, "auth") == f"bearer token from tokens file {path} (MCP_AUTH_TOKENS_FILE)"
    assert initialize_status(cli.port, first) == 200
    assert initialize_status(cli.port, second) == 200
    assert run_cli("token", "revoke", "first", env=env).returncode == 0
    assert initialize_status(cli.port, first) == 401
    assert initialize_status(cli.port, second) == 200
    assert cli.stop() == 0
    assert first not in cli.output and second not in cli.output


# --- logging ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(["--log-format", "json"], {}, id="flag"),
        pytest.param([], {"MCP_AUTH_LOG_FORMAT": "json"}, id="env"),
    ],
)
def test_json_log_format_one_object_per_refusal(start: Start, args: list[str], env: dict[str, str]) -> None:
    cli = start("--port", "0", "--token", TOKEN, *args, env=cli_env(**env))
    assert initialize_status(cli.port, None) == 401
    assert initialize_status(cli.port, WRONG_TOKEN) == 401
    assert initialize_status(cli.port, TOKEN, host_header="evil.example") == 403
    origin = request(cli.port, body=initialize_body(), token=TOKEN, headers={"Origin": "https://evil.example"})
    assert origin.status == 403
    assert cli.stop() == 0

    records = []
    for line in cli.stderr.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        else:  # everything that is not a log record: the summary and the lifecycle lines
            lifecycle = ("mcp_auth: listening", "mcp_auth: stopping", "mcp_auth: stopped")
            assert line.startswith(("mcp_auth ", "  ", *lifecycle)), line
    denials = [(r["client"], r["step"], r["reason"]) for r in records if r.get("event") == "denied"]
    assert denials == [
        ("127.0.0.1", "bearer_token", "missing"),
        ("127.0.0.1", "bearer_token", "invalid_token"),
        ("127.0.0.1", "host", "host_not_allowed"),
        ("127.0.0.1", "origin", "origin_not_allowed"),
    ]
    warnings = [r for r in records if r.get("level") == "warning" and r.get("event") != "denied"]
    assert any("shell history" in r["message"] for r in warnings)
    assert TOKEN not in cli.output and WRONG_TOKEN not in cli.output


# --- the first hour: traps, rotation, logging -------------------------------------------

TOOL_MODULE = """
import logging

from mcp_auth import McpServer

log = logging.getLogger(__name__)
server = McpServer("notes")


@server.tool()
def add_note(title: str) -> str:
    '''Store a note.'''
    log.info("storing note %s", title)
    return title


@server.tool()
def broken() -> str:
    '''Always fails.'''
    raise ValueError("the tool's own bug")
"""


def write_tool_module(directory: Path) -> None:
    (directory / "mytools.py").write_text(textwrap.dedent(TOOL_MODULE))


def call_tool(port: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    session_id = open_session(port)
    response = rpc(port, session_id, "tools/call", {"name": name, "arguments": arguments})
    assert response.status == 200, response
    return messages(response)[-1]


def wait_for_text(cli: Cli, text: str) -> None:
    """The child logs asynchronously to our reader threads: wait (bounded) for a line to arrive."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while text not in cli.stderr:
        assert time.monotonic() < deadline, f"{text!r} never reached stderr:\n{cli.stderr}"
        time.sleep(0.02)


def test_tool_authors_see_their_logging_and_their_tracebacks(start: Start, tmp_path: Path) -> None:
    write_tool_module(tmp_path)
    cli = start("serve", "mytools:server", "--port", "0", cwd=tmp_path, env=cli_env(MCP_AUTH_TOKEN=TOKEN))
    assert call_tool(cli.port, "add_note", {"title": "groceries"})["result"].get("isError", False) is False
    assert call_tool(cli.port, "broken", {})["result"]["isError"] is True
    wait_for_text(cli, "ValueError: the tool's own bug")
    assert cli.stop() == 0
    lines = cli.stderr.splitlines()
    assert any(" info mytools: storing note groceries" in line for line in lines), cli.stderr
    failure = next(i for i, line in enumerate(lines) if "tool broken raised ValueError" in line)
    assert " warning " in lines[failure]
    assert "Traceback (most recent call last):" in lines[failure + 1]


def test_json_log_format_keeps_a_tools_traceback_in_one_record(start: Start, tmp_path: Path) -> None:
    write_tool_module(tmp_path)
    cli = start(
        "serve",
        "mytools:server",
        "--port",
        "0",
        "--log-format",
        "json",
        cwd=tmp_path,
        env=cli_env(MCP_AUTH_TOKEN=TOKEN),
    )
    assert call_tool(cli.port, "broken", {})["result"]["isError"] is True
    wait_for_text(cli, "tool broken raised ValueError")
    assert cli.stop() == 0
    records = [json.loads(line) for line in cli.stderr.splitlines() if line.startswith("{")]
    failure = next(r for r in records if "tool broken raised ValueError" in r.get("message", ""))
    assert failure["level"] == "warning"
    assert failure["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: the tool's own bug" in failure["exception"]
    # every line of the traceback is inside that one JSON record, none is a line of its own
    assert not any(line.startswith(("Traceback", "  File", "ValueError")) for line in cli.stderr.splitlines())


OTHER_TOOL_MODULE = """
from mcp_auth import McpServer

server = McpServer("other")


@server.tool
def other() -> str:
    '''Other.'''
    return "other"
"""


def test_the_target_can_come_from_the_environment_and_the_flag_wins(start: Start, tmp_path: Path) -> None:
    write_tool_module(tmp_path)
    (tmp_path / "othertools.py").write_text(textwrap.dedent(OTHER_TOOL_MODULE))
    env = cli_env(MCP_AUTH_TOKEN=TOKEN, MCP_AUTH_TARGET="mytools:server")
    cli = start("--port", "0", cwd=tmp_path, env=env)
    assert call_tool(cli.port, "add_note", {"title": "from the environment"})["result"].get("isError", False) is False
    assert cli.stop() == 0
    cli = start("othertools:server", "--port", "0", cwd=tmp_path, env=env)
    assert call_tool(cli.port, "other", {})["result"]["content"][0]["text"] == "other"
    assert cli.stop() == 0


@pytest.mark.parametrize(
    ("args", "env", "toml"),
    [
        pytest.param(["--log-level", "warning"], {}, None, id="flag"),
        pytest.param(["--log-level", "WARNING"], {}, None, id="flag-upper-case"),
        pytest.param([], {"MCP_AUTH_LOG_LEVEL": "warning"}, None, id="environment"),
        pytest.param([], {}, 'log_level = "warning"\n', id="toml"),
    ],
)
def test_log_level_setting(
    start: Start, tmp_path: Path, args: list[str], env: dict[str, str], toml: str | None
) -> None:
    write_tool_module(tmp_path)
    if toml is not None:
        args = [*args, "--config", str(write_toml(tmp_path, toml))]
    cli = start("serve", "mytools:server", "--port", "0", *args, cwd=tmp_path, env=cli_env(MCP_AUTH_TOKEN=TOKEN, **env))
    call_tool(cli.port, "add_note", {"title": "groceries"})
    call_tool(cli.port, "broken", {})
    wait_for_text(cli, "tool broken raised ValueError")  # warnings still show
    assert cli.stop() == 0
    assert "storing note" not in cli.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(["--log-level", "loud"], {}, id="flag"),
        pytest.param([], {"MCP_AUTH_LOG_LEVEL": "loud"}, id="environment"),
    ],
)
def test_bad_log_level_exits_2(args: list[str], env: dict[str, str]) -> None:
    result = run_cli("--port", "0", *args, env=cli_env(**env))
    assert result.returncode == 2, result.stderr
    assert "loud" in result.stderr and "warning" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_add_with_tools_before_the_name(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    added = run_cli("token", "add", "--tools", "echo", "ci", "--tokens-file", str(path))
    assert added.returncode == 0, added.stderr
    assert GENERATED_TOKEN.fullmatch(added.stdout.splitlines()[-1])
    listed = run_cli("token", "list", "--tokens-file", str(path))
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [["ci", "echo"]]
    # The usual order, and patterns ended with --, still mean what they say.
    both = run_cli("token", "add", "--tools", "echo", "who*", "--tokens-file", str(path), "--", "ops")
    assert both.returncode == 0, both.stderr
    listed = run_cli("token", "list", "--tokens-file", str(path))
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()][1] == ["ops", "echo, who*"]
    nameless = run_cli("token", "add", "--tools", "echo", "--tokens-file", str(path))
    assert nameless.returncode == 2 and "NAME" in nameless.stderr


@pytest.mark.parametrize(
    ("args", "command"),
    [
        pytest.param(["--tokens-file", "{path}"], "token rotate NAME --tokens-file {path} --config", id="file"),
        pytest.param(["dave", "--tokens-file", "{path}"], "token rotate dave --tokens-file {path} --config", id="name"),
        pytest.param(["dave"], "token rotate dave --tokens-file PATH --config", id="name-only"),
    ],
)
def test_token_show_of_a_named_token_says_why_not_and_what_to_do(tmp_path: Path, args: list[str], command: str) -> None:
    path = tmp_path / "tokens.json"
    assert run_cli("token", "add", "dave", "--tokens-file", str(path)).returncode == 0
    shown = run_cli("token", "show", *(word.format(path=path) for word in args))
    assert shown.returncode == 2 and shown.stdout == ""
    assert "usage:" not in shown.stderr  # not argparse's bare error
    assert "named tokens are stored hashed and cannot be shown" in shown.stderr
    assert command.format(path=path) in shown.stderr


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(["--tokens-file", "{path}"], id="separate-value"),
        pytest.param(["--tokens-file={path}"], id="equals-form"),
        pytest.param(["--tokens-file", "{path}", "--config", "literal", "--url", "http://h:1/mcp"], id="with-config"),
    ],
)
def test_token_add_options_after_the_patterns_ended_with_dashes(tmp_path: Path, tail: list[str]) -> None:
    """The README's form: patterns ended with `--`, then NAME, then --tokens-file (and the other options)."""
    path = tmp_path / "tokens.json"
    options = [word.format(path=path) for word in tail]
    added = run_cli("token", "add", "--tools", "echo", "who*", "--", "dave", *options)
    assert added.returncode == 0, added.stderr
    assert GENERATED_TOKEN.fullmatch(added.stdout.splitlines()[-1])
    if "--config" in options:
        assert "http://h:1/mcp" in added.stdout and f"Bearer {added.stdout.splitlines()[-1]}" in added.stdout
    listed = run_cli("token", "list", "--tokens-file", str(path))
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [["dave", "echo, who*"]]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--token", "-abcdefghijklmnop0123456789"], id="separate-value"),
        pytest.param(["--token=-abcdefghijklmnop0123456789"], id="equals-form"),
    ],
)
def test_a_token_that_starts_with_a_dash(start: Start, args: list[str]) -> None:
    cli = start("--port", "0", *args)
    assert initialize_status(cli.port, "-abcdefghijklmnop0123456789") == 200
    assert cli.stop() == 0


def test_token_file_value_that_starts_with_a_dash(start: Start, tmp_path: Path) -> None:
    path = write_private(tmp_path / "-token", TOKEN + "\n")
    cli = start("--port", "0", "--token-file", "-token", cwd=path.parent)
    assert initialize_status(cli.port, TOKEN) == 200
    assert cli.stop() == 0


def test_generated_tokens_never_start_with_a_dash() -> None:
    from mcp_auth.auth.tokens import generate_token

    # 1 in 64 of secrets.token_urlsafe(32) starts with '-': 10,000 draws without a check would hit one.
    tokens = [generate_token() for _ in range(10_000)]
    assert not [token for token in tokens if token.startswith("-")]
    assert all(GENERATED_TOKEN.fullmatch(token) for token in tokens)


def test_serving_a_tool_function_says_it_is_not_a_server(tmp_path: Path) -> None:
    write_tool_module(tmp_path)
    result = run_cli("serve", "mytools:add_note", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "not an mcp_auth.McpServer" in result.stderr
    assert "mytools:server" in result.stderr  # the server the module does have
    assert "Traceback" not in result.stderr


def test_usage_mentions_serve_and_token() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    usage = result.stdout.split("\n\n", 1)[0]
    assert "[serve] [TARGET]" in usage and "token {" in usage and "rotate" in usage
    bad = run_cli("--no-such-option")
    assert bad.returncode == 2 and "[serve]" in bad.stderr


def test_token_rotate_replaces_a_named_token_in_one_step(start: Start, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    old = add_named_token(path, "ci", "echo")
    before = run_cli("token", "list", "--tokens-file", str(path)).stdout.split("\t")
    cli = start("--port", "0", "--tokens-file", str(path))
    assert tool_names(cli.port, old) == ["echo"]

    rotated = run_cli("token", "rotate", "ci", "--tokens-file", str(path))
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.splitlines()[-1]
    assert GENERATED_TOKEN.fullmatch(new) and new != old
    assert rotated.stdout == new + "\n"  # the new token alone
    assert old not in rotated.stdout + rotated.stderr

    assert initialize_status(cli.port, old) == 401
    assert tool_names(cli.port, new) == ["echo"]  # the same scope
    assert cli.stop() == 0
    after = run_cli("token", "list", "--tokens-file", str(path)).stdout.split("\t")
    assert after[:2] == before[:2] == ["ci", "echo"]

    missing = run_cli("token", "rotate", "nobody", "--tokens-file", str(path))
    assert missing.returncode == 2 and "no token named 'nobody'" in missing.stderr


def test_token_add_and_rotate_print_configurations_with_the_token_alone_last(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    url = "http://127.0.0.1:9999/mcp"
    added = run_cli("token", "add", "ci", "--tokens-file", str(path), "--config", "--url", url)
    assert added.returncode == 0, added.stderr
    token = added.stdout.splitlines()[-1]
    assert_env_configs(added.stdout, url)
    assert f"export MCP_AUTH_CLIENT_TOKEN={token}" in added.stdout
    rotated = run_cli("token", "rotate", "ci", "--tokens-file", str(path), "--config", "literal", "--url", url)
    assert rotated.returncode == 0, rotated.stderr
    assert_literal_configs(rotated.stdout, url, rotated.stdout.splitlines()[-1])


def test_the_mcp_client_default_mode_speaks_2026_07_28_with_python_m_mcp_auth(start: Start) -> None:
    """`mcp` 2.3.0 in its default mode asks server/discover first and, answered, stays on the
    stateless revision: no initialize, no session. Asserted on the version the client used."""
    cli = start("--port", "0", env=cli_env(MCP_AUTH_TOKEN=TOKEN))

    async def drive() -> tuple[str | None, list[str], Any]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            async with Client(streamable_http_client(f"http://127.0.0.1:{cli.port}/mcp", http_client=http)) as client:
                tools = await client.list_tools()
                echoed = await client.call_tool("echo", {"text": "stateless"})
                return client.protocol_version, sorted(t.name for t in tools.tools), echoed

    version, names, echoed = asyncio.run(drive())
    assert version == "2026-07-28"
    assert names == ["echo", "whoami"]
    assert echoed.is_error is False and echoed.content[0].text == "stateless"
