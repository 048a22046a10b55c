"""Interop: real MCP clients of the handshake generation against `python -m mcp_auth`, auth on.

Starts the built-in diagnostics server on 127.0.0.1 (a free port, a fresh
random token in the environment, a temporary HOME) and runs, one after
another, each a real client in its own process:

- `mcp` 1.30.0 (the newest 1.x; ClientSession over Streamable HTTP), from a
  venv this script creates under .ci-cache/ (git-ignored; reused when present);
- `mcp` 2.3.0 forced to mode="legacy" (this interpreter's, the test extras'),
  so the handshake era keeps a 2.x client run whatever the default mode does;
- the TypeScript SDK `@modelcontextprotocol/sdk` 1.32.2 (StreamableHTTPClientTransport
  with the header in `requestInit`), installed with npm into .ci-cache/, on the
  machine's Node.

Each client (scripts/interop_client.py, scripts/interop_client_ts.mjs) sends
`Authorization: Bearer`, initializes, lists the tools and calls `echo` and
`whoami`, then connects without a token and with a wrong one. This script
checks: a handshake-era protocol version was negotiated, the tools and both
answers are right, and each refusal shows what README.md's "Troubleshooting:
a refused client" table says that client shows. The TypeScript SDK's
WebSocketClientTransport cannot carry a token at all (a WHATWG WebSocket with
the fixed subprotocol `mcp`): it must be refused, never upgraded. The server's
audit log must hold exactly one bearer-step denial per refused attempt and never
the token; the server must exit 0 on SIGTERM. Exits non-zero on any failure.

    python scripts/client_interop.py [--node node]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conformance import CACHE, INSTALL_DEADLINE_SECONDS, ROOT, npm_install
from inspector_smoke import start_server, stop_server

# Pinned exactly: the newest 1.x and the newest 1.32.x when this was written (PyPI, npm).
MCP1_VERSION = "1.30.0"
TS_SDK_VERSION = "1.32.2"
MCP1_VENV = CACHE / f"mcp-{MCP1_VERSION}"
TS_SDK_PREFIX = CACHE / f"ts-sdk-{TS_SDK_VERSION}"
PYTHON_CLIENT = ROOT / "scripts" / "interop_client.py"
TS_CLIENT = ROOT / "scripts" / "interop_client_ts.mjs"
# Each client waits at most 60 s per step itself; this bounds a wedged process.
CLIENT_DEADLINE_SECONDS = 300
HANDSHAKE_VERSIONS = {"2025-03-26", "2025-06-18", "2025-11-25"}
ECHO_TEXT = "hello from a real client"  # what both client scripts send
REFUSAL_MESSAGE = "A valid bearer token is required"
DENIAL = re.compile(r" audit denied .* step=bearer_token ")


def reads_401_status(shown: str) -> bool:
    """`mcp` 1.x raises on the status before reading the body (README: 'the status is all it shows')."""
    return shown.startswith("HTTPStatusError: Client error '401 Unauthorized' for url ")


def shows_the_message(shown: str) -> bool:
    """`mcp` 2.x turns the 401's JSON-RPC error into MCPError with its message."""
    return shown.startswith(f"MCPError: {REFUSAL_MESSAGE}")


def shows_the_body(shown: str) -> bool:
    """The TypeScript SDK shows the whole 401 body after its own prefix."""
    return shown.startswith("StreamableHTTPError: Streamable HTTP error: Error POSTing to endpoint: {") and (
        REFUSAL_MESSAGE in shown
    )


def refused_upgrade(shown: str) -> bool:
    """A WHATWG WebSocket reports a refused handshake only as a network error."""
    return shown != "connected" and "no answer within" not in shown


def ensure_mcp1() -> Path:
    """The interpreter of a venv holding exactly mcp==MCP1_VERSION, created on first use."""
    python = MCP1_VENV / "bin" / "python"

    def installed() -> str | None:
        probe = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return probe.stdout.strip() if probe.returncode == 0 else None

    if not python.exists() or installed() != MCP1_VERSION:
        print(f"installing mcp=={MCP1_VERSION} into {MCP1_VENV.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(MCP1_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"mcp=={MCP1_VERSION}"],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=INSTALL_DEADLINE_SECONDS,
        )
        if installed() != MCP1_VERSION:
            raise SystemExit(f"pip did not install mcp=={MCP1_VERSION} into {MCP1_VENV}")
    return python


def ensure_ts_sdk() -> Path:
    """The npm prefix holding exactly @modelcontextprotocol/sdk@TS_SDK_VERSION, installed on first use."""
    manifest = TS_SDK_PREFIX / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"

    def installed() -> str | None:
        try:
            return str(json.loads(manifest.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None

    if installed() != TS_SDK_VERSION:
        npm_install(TS_SDK_PREFIX, f"@modelcontextprotocol/sdk@{TS_SDK_VERSION}")
        if installed() != TS_SDK_VERSION:
            raise SystemExit(f"npm did not install @modelcontextprotocol/sdk@{TS_SDK_VERSION} into {TS_SDK_PREFIX}")
    return TS_SDK_PREFIX


def run_client(label: str, command: list[str], env: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Run one client process; its JSON report (or an `error`), plus any failure to run it."""
    started = time.monotonic()
    try:
        run = subprocess.run(
            command, capture_output=True, text=True, timeout=CLIENT_DEADLINE_SECONDS, stdin=subprocess.DEVNULL, env=env
        )
    except subprocess.TimeoutExpired:
        return {}, [f"{label}: did not finish within {CLIENT_DEADLINE_SECONDS}s"]
    print(f"{label}: {time.monotonic() - started:.1f}s")
    lines = run.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if run.returncode != 0 or not isinstance(report, dict):
        return {}, [f"{label}: exit {run.returncode}, stdout={run.stdout[-2000:]!r} stderr={run.stderr[-2000:]!r}"]
    return report, []


def check(label: str, report: dict[str, Any], refusals: dict[str, Callable[[str], bool]]) -> list[str]:
    """What the README promises for a handshake-era client with the right token and without one."""
    failures = []
    print(f"  negotiated {report.get('protocolVersion')}, tools {report.get('tools')}")
    if "error" in report:
        failures.append(f"{label}: with the token the client failed: {report['error']}")
    else:
        whoami = report.get("whoami") or {}
        expected = {
            "protocolVersion": report.get("protocolVersion") in HANDSHAKE_VERSIONS,
            "serverName": report.get("serverName") == "mcp-auth-diagnostics",
            "tools": report.get("tools") == ["echo", "whoami"],
            "echo": report.get("echo") == ECHO_TEXT,
            "whoami": whoami.get("token_name") == "default"
            and whoami.get("client_address") == "127.0.0.1"
            and sorted(whoami.get("tools", [])) == ["echo", "whoami"],
        }
        failures += [f"{label}: unexpected {key}: {report.get(key)!r}" for key, ok in expected.items() if not ok]
    for case, shows_expected in refusals.items():
        shown = report.get("refusals", {}).get(case, "(not tried)")
        print(f"  {case}: {' '.join(shown.split())[:200]}")
        if not shows_expected(shown):
            failures.append(f"{label}: {case}: the client showed {shown!r}, not what README.md's table says")
    return failures


def wait_for_line(log: list[str], text: str, seconds: float) -> bool:
    """The server's stderr is read by a thread: wait until it has read `text` (or the deadline passes)."""
    deadline = time.monotonic() + seconds
    while not any(text in line for line in log):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", default="node", help="Node 20+ for the TypeScript SDK client (default: node)")
    options = parser.parse_args()
    node = shutil.which(options.node)
    if node is None:
        raise SystemExit(f"--node {options.node}: no such executable")

    started = time.monotonic()
    mcp1_python = ensure_mcp1()
    ts_sdk = ensure_ts_sdk()
    print(f"clients installed ({time.monotonic() - started:.1f}s)")

    token = secrets.token_urlsafe(32)
    clients: list[tuple[str, list[str], dict[str, Callable[[str], bool]]]] = [
        (
            f"mcp {MCP1_VERSION}",
            [str(mcp1_python), str(PYTHON_CLIENT)],
            {"no-token": reads_401_status, "wrong-token": reads_401_status},
        ),
        (
            "mcp 2.3.0 mode=legacy",
            [sys.executable, str(PYTHON_CLIENT)],
            {"no-token": shows_the_message, "wrong-token": shows_the_message},
        ),
        (
            f"@modelcontextprotocol/sdk {TS_SDK_VERSION}",
            [node, "--experimental-websocket", str(TS_CLIENT)],
            {"no-token": shows_the_body, "wrong-token": shows_the_body, "websocket-transport": refused_upgrade},
        ),
    ]
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/.config", "PYTHONPATH": str(ROOT)}
        for name in ("MCP_AUTH_TOKEN", "MCP_AUTH_TOKEN_FILE", "MCP_AUTH_TOKENS_FILE", "MCP_AUTH_NO_AUTH"):
            env.pop(name, None)
        server, url, log = start_server({**env, "MCP_AUTH_TOKEN": token})
        client_env = {**env, "MCP_INTEROP_URL": url, "MCP_INTEROP_TOKEN": token, "MCP_INTEROP_TS_SDK": str(ts_sdk)}
        client_env.pop("NODE_OPTIONS", None)
        try:
            for label, command, refusals in clients:
                report, ran = run_client(label, command, client_env)
                failures += ran or check(label, report, refusals)
        finally:
            code = stop_server(server)
        if code != 0:
            failures.append(f"server exit status after SIGTERM: {code}")
        if not wait_for_line(log, "mcp_auth: stopped", 30):
            failures.append("the server's log did not end with 'mcp_auth: stopped'")
        denials = sum(1 for line in log if DENIAL.search(line))
        attempts = sum(len(refusals) for _, _, refusals in clients)
        if denials != attempts:
            failures.append(f"{denials} bearer-token denials in the audit log for {attempts} refused attempts")
        if token in "".join(log):
            failures.append("the token appeared in the server's log")
        if any("Traceback" in line for line in log):
            failures.append("the server logged a traceback:\n" + "".join(log)[-4000:])

    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    print(
        f"client interop: {len(clients)} clients, {len(failures)} failures; wall time {time.monotonic() - started:.1f}s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
