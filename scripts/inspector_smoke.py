"""Interop smoke test: the MCP Inspector CLI (npm) against `python -m mcp_auth serve`.

Starts the server as a subprocess on 127.0.0.1 with a fresh random token (in
the environment, never on a command line) and a temporary HOME, then drives it
with the Inspector CLI: tools/list and tools/call with the token must succeed,
without it the Inspector must get nothing, and with a wrong token (and
--stored-auth-only, so it does not start OAuth) it must show the server's
401 message. Stops the server with SIGTERM and requires exit status 0. Exits
non-zero on any failure.

    python scripts/inspector_smoke.py [--inspector-version 2.12.0]

The Inspector is pinned: an unpinned `npx @modelcontextprotocol/inspector`
resolves 0.15.0 on Node 20, whose CLI refuses `--header`. 2.12.0 runs on
Node 20 (tested with 20.20) and 22 through `npx -y`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE_SECONDS = 30
INSPECTOR_DEADLINE_SECONDS = 300  # the first npx run downloads the package
# The version the README names; see the module docstring for why it is pinned.
INSPECTOR_VERSION = "2.12.0"


def start_server(
    env: dict[str, str], arguments: list[str] | None = None
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Start `python -m mcp_auth` (default: `serve`) on a free port; returns it, its MCP URL and its log lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_auth", *(arguments or ["serve"]), "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    found = threading.Event()
    url_holder: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found.is_set():
                url_holder.append(match.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(STARTUP_DEADLINE_SECONDS):
        process.kill()
        raise SystemExit("server did not start:\n" + "".join(lines))
    return process, url_holder[0], lines


def stop_server(process: subprocess.Popen[str]) -> int:
    """SIGTERM, then the exit status (-1 if it had to be killed)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -1


def inspector(version: str, url: str, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    command = ["npx", "-y", f"@modelcontextprotocol/inspector@{version}", "--cli", url, "--transport", "http"]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    command += list(args)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=INSPECTOR_DEADLINE_SECONDS, stdin=subprocess.DEVNULL
    )


def last_json(output: str) -> dict:
    """The Inspector prints its result as JSON, possibly after npm notices."""
    start = output.find("{")
    if start < 0:
        raise ValueError(f"no JSON in: {output!r}")
    return json.loads(output[start:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inspector-version", default=INSPECTOR_VERSION)
    options = parser.parse_args()

    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "HOME": home,
            "XDG_CONFIG_HOME": f"{home}/.config",
            "MCP_AUTH_TOKEN": token,
            "PYTHONPATH": str(ROOT),
        }
        env.pop("MCP_AUTH_NO_AUTH", None)
        server, url, log = start_server(env)
        failures: list[str] = []
        try:
            started = time.monotonic()
            listed = inspector(options.inspector_version, url, "--method", "tools/list", token=token)
            names = sorted(tool["name"] for tool in last_json(listed.stdout).get("tools", []))
            print(f"tools/list -> {names} ({time.monotonic() - started:.1f}s)")
            if listed.returncode != 0 or names != ["echo", "whoami"]:
                failures.append(
                    f"tools/list: rc={listed.returncode} stdout={listed.stdout!r} stderr={listed.stderr[-2000:]!r}"
                )

            called = inspector(
                options.inspector_version,
                url,
                "--method",
                "tools/call",
                "--tool-name",
                "echo",
                "--tool-arg",
                "text=hello from the inspector",
                "--format",
                "json",
                token=token,
            )
            result = last_json(called.stdout)
            text = result.get("result", result).get("content", [{}])[0].get("text")
            print(f"tools/call echo -> {text!r}")
            if called.returncode != 0 or text != "hello from the inspector":
                failures.append(f"tools/call: rc={called.returncode} stdout={called.stdout!r}")

            refused = inspector(options.inspector_version, url, "--method", "tools/list", token=None)
            print(f"tools/list without a token -> rc={refused.returncode}")
            if refused.returncode == 0 or '"echo"' in refused.stdout:
                failures.append(f"without a token the Inspector got an answer: {refused.stdout!r}")
            wrong = inspector(
                options.inspector_version, url, "--stored-auth-only", "--method", "tools/list", token="wrong-" + token
            )
            print(f"tools/list with a wrong token -> rc={wrong.returncode}")
            if wrong.returncode == 0 or "A valid bearer token is required" not in wrong.stdout + wrong.stderr:
                failures.append(f"with a wrong token the Inspector did not show the 401 message: {wrong.stdout!r}")
            if token in "".join(log):
                failures.append("the token appeared in the server's log")
        finally:
            code = stop_server(server)
        if code != 0:
            failures.append(f"server exit status after SIGTERM: {code}")
    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    print("inspector smoke:", "1 passed, 0 failed" if not failures else f"0 passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
