"""The README's examples, run as written, so the README cannot drift from the code.

Fenced blocks are extracted from README.md. Python blocks are compiled, and
the ones that stand alone are run: the tool module is served by the README's
own `serve` command and driven with the real `mcp` client; the client,
WebSocket and embedding snippets run against a live server. Shell blocks
that are safe run in bash with a temporary HOME, with `.venv/bin/python`
replaced by this interpreter and port 8765 by a free port: a first start,
the export line it prints, and the curl session. What cannot run here (the
first install, npx, gunicorn) is checked for the pieces that broke before.
"""

from __future__ import annotations

import ast
import asyncio
import configparser
import contextlib
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from support import TOKEN, live_server

from mcp_auth import McpServer
from mcp_auth.startup import print_summary

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SECURITY = (ROOT / "SECURITY.md").read_text()
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w+)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
# Upper bounds for waiting only; a healthy run takes a fraction of each.
START_TIMEOUT = 20.0
RUN_TIMEOUT = 30.0


def blocks(lang: str) -> list[str]:
    return [textwrap.dedent(m["body"]) for m in FENCE.finditer(README) if m["lang"] == lang]


def block(lang: str, containing: str) -> str:
    found = [text for text in blocks(lang) if containing in text]
    assert len(found) == 1, f"expected one {lang} block containing {containing!r}, found {len(found)}"
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_here(command: str, port: int) -> str:
    """A README command line for this checkout: this interpreter, a free port."""
    return command.replace(".venv/bin/python", sys.executable).replace("8765", str(port))


def run_async_snippet(source: str, namespace: dict[str, Any]) -> Any:
    """Run a README snippet that uses top-level `await` / `async with`, as a REPL would."""
    code = compile(source, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # the README's own example
    if asyncio.iscoroutine(result):
        return asyncio.run(result)
    return result


class Background:
    """A README command running in bash; stdout and stderr in files; stopped with SIGTERM."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.out, self.err = cwd / "stdout.txt", cwd / "stderr.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while text not in self.err.read_text():
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.err.read_text()}"
            assert time.monotonic() < deadline, f"{text!r} never appeared:\n{self.err.read_text()}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def env(isolated_home: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCP_AUTH_")}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), environment.get("PYTHONPATH", "")) if p)
    return environment


@contextlib.contextmanager
def background(command: str, cwd: Path, env: dict[str, str]) -> Iterator[Background]:
    running = Background(command, cwd, env)
    try:
        yield running
    finally:
        running.stop()


# --- python blocks ---------------------------------------------------------------------


def test_every_python_block_compiles() -> None:
    python = blocks("python")
    assert len(python) >= 5
    for source in python:
        compile(source, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_tool_module_is_served_by_the_readme_command(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "mytools.py").write_text(block("python", "# mytools.py"))
    command = block("sh", "serve mytools:server").strip()
    port = free_port()
    env["MCP_AUTH_TOKEN"] = TOKEN

    async def drive() -> tuple[list[str], Any, Any]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client:
                tools = await client.list_tools()
                note = await client.call_tool("add_note", {"title": "t", "body": "b"})
                job = await client.call_tool("long_job", {"steps": 2})
                return sorted(tool.name for tool in tools.tools), note, job

    with background(as_here(command, port) + f" --port {port}", tmp_path, env) as server:
        server.wait_for("listening on")
        names, note, job = asyncio.run(drive())
    assert names == ["add_note", "long_job"]
    assert note.structured_content == {"id": "n1", "title": "t"}
    assert job.content[0].text == "default ran 2 steps"


def test_the_python_client_snippet_runs(tmp_path: Path) -> None:
    """The snippet is a whole script: run as pasted (only the port changed), token from the environment."""
    script = tmp_path / "client.py"
    with live_server() as live:
        script.write_text(as_here(block("python", "streamable_http_client("), live.port))
        result = subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "MCP_AUTH_CLIENT_TOKEN": TOKEN},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert '"token_name": "default"' in result.stdout and "is_error=False" in result.stdout


def test_the_websocket_snippet_connects() -> None:
    source = block("python", "websockets.asyncio.client")
    with live_server() as live:

        async def main() -> str:
            namespace: dict[str, Any] = {"token": TOKEN}
            code = compile(as_here(source, live.port), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            await eval(code, namespace)  # the README's own example
            ws = namespace["ws"]
            try:
                return str(ws.subprotocol)
            finally:
                await ws.close()

        assert asyncio.run(main()) == "mcp"


def test_the_embedding_snippet_builds_an_app(tmp_path: Path) -> None:
    source = block("python", "server.wsgi_app(")
    token_file = tmp_path / "mcp-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        namespace: dict[str, Any] = {"server": McpServer("embedded")}
        exec(source.replace("/run/secrets/mcp-token", str(token_file)), namespace)  # the README's own example
        app = namespace["app"]
        assert app.auth.description.startswith("token file")
        assert any(getattr(h, "_mcp_auth_handler", False) for h in root.handlers)  # configure_logging ran
    finally:
        root.handlers[:], root.level = saved


def test_the_toml_example_is_valid(tmp_path: Path) -> None:
    from mcp_auth.config import Config

    path = tmp_path / "config.toml"
    path.write_text(block("toml", "tokens_file"))
    config = Config.from_sources({}, {}, str(path))
    assert (config.host, config.log_format, config.log_level) == ("0.0.0.0", "json", "info")


# --- shell blocks ----------------------------------------------------------------------


def test_first_start_export_line_and_curl_session(tmp_path: Path, env: dict[str, str]) -> None:
    """The README's start command, the export line it prints, then the README's curl session."""
    install, start = blocks("sh")[:2]
    assert "pip install" in install and "-m mcp_auth" not in install  # the install is separate from the start
    assert start.strip() == ".venv/bin/python -m mcp_auth"
    port = free_port()
    env["MCP_AUTH_PORT"] = str(port)  # the command as written; its port from the environment
    with background(as_here(start.strip(), port), tmp_path, env) as server:
        server.wait_for("listening on")
        printed = server.out.read_text()
        export = next(line.strip() for line in printed.splitlines() if line.strip().startswith("export "))
        session = as_here(block("sh", "SESSION=$(curl"), port)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{export}\n{session}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    assert result.returncode == 0, result.stderr
    assert '"text":"hi"' in result.stdout.replace(" ", "")
    token = (Path(env["XDG_CONFIG_HOME"]) / "mcp-auth" / "token").read_text().strip()
    assert printed.count(token) == 1  # shown once; no configuration and no export line carries it


def test_the_sample_summary_has_every_line_the_real_one_prints(tmp_path: Path) -> None:
    from mcp_auth.auth.statekey import open_state_key
    from mcp_auth.config import Config, open_token_source
    from mcp_auth.diagnostics import build_diagnostics

    config = Config()
    auth, _ = open_token_source(config, os.environ)
    state_key, _ = open_state_key(None, "default", os.environ)
    out = io.StringIO()
    print_summary(config, auth, build_diagnostics(), "http://127.0.0.1:8765/mcp", out, state_key)
    labels = [line.split(":", 1)[0].strip() for line in out.getvalue().splitlines()[1:]]
    sample = README.split("every start prints one summary (never the token):", 1)[1].split("mcp_auth: listening", 1)[0]
    readme_labels = [line.split(":", 1)[0].strip() for line in sample.strip().splitlines()[1:]]
    assert readme_labels == labels
    assert "websocket" in readme_labels


def test_the_inspector_command_is_pinned_like_the_interop_script() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import inspector_smoke
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    command = block("sh", "@modelcontextprotocol/inspector")
    assert f"npx -y @modelcontextprotocol/inspector@{inspector_smoke.INSPECTOR_VERSION} --cli" in command
    assert "Node 20" in README


def test_the_real_client_versions_are_the_ones_the_interop_script_pins() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import client_interop
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert "scripts/client_interop.py" in block("sh", "client_interop")
    section = README.split("**Real clients.**", 1)[1].split("**Logging.**", 1)[0]
    assert f"`mcp` {client_interop.MCP1_VERSION} (the newest 1.x)" in section
    assert f"`@modelcontextprotocol/sdk` {client_interop.TS_SDK_VERSION}" in section
    table = README.split("What each client shows with a wrong token", 1)[1].split("So: a client", 1)[0]
    assert f"| Python `mcp` 1.x ({client_interop.MCP1_VERSION}) |" in table
    assert f"| TypeScript SDK {client_interop.TS_SDK_VERSION} (`StreamableHTTPClientTransport`) |" in table
    assert client_interop.ECHO_TEXT in (ROOT / "scripts" / "interop_client.py").read_text()
    assert client_interop.ECHO_TEXT in (ROOT / "scripts" / "interop_client_ts.mjs").read_text()


def test_the_gunicorn_command_has_an_extra_that_installs_it() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "gunicorn" in setup["options.extras_require"]["gunicorn"]
    assert "'.[gunicorn]'" in README and "'mcp-auth[gunicorn]'" in README


@pytest.mark.parametrize("document", ["README", "SECURITY"])
def test_the_documents_stand_alone(document: str) -> None:
    text = README if document == "README" else SECURITY
    assert "DESIGN.md" not in text and "PROTOCOL.md" not in text
