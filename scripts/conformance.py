"""Run the official MCP conformance suite against scripts/conformance_server.py.

Starts `python -m mcp_auth serve scripts.conformance_server:server --no-auth`
on 127.0.0.1 with a free port (the suite sends no token, and --no-auth is
allowed on loopback only), runs `npx @modelcontextprotocol/conformance@0.1.13
server --url ... --suite all`, and fails on any failed check or scenario. No
expected-failures baseline. Also measures the suite's wall time.

    python scripts/conformance.py [--suite all|active] [--version 0.1.13]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inspector_smoke import start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
SUITE_DEADLINE_SECONDS = 600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", default="all")
    parser.add_argument("--version", default="0.1.13")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/.config", "PYTHONPATH": str(ROOT)}
        for name in ("MCP_AUTH_TOKEN", "MCP_AUTH_TOKEN_FILE", "MCP_AUTH_TOKENS_FILE"):
            env.pop(name, None)
        server, url, log = start_server(env, ["serve", "scripts.conformance_server:server", "--no-auth"])
        try:
            started = time.monotonic()
            run = subprocess.run(
                [
                    "npx",
                    "-y",
                    f"@modelcontextprotocol/conformance@{options.version}",
                    "server",
                    "--url",
                    url,
                    "--suite",
                    options.suite,
                ],
                capture_output=True,
                text=True,
                timeout=SUITE_DEADLINE_SECONDS,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
            elapsed = time.monotonic() - started
        finally:
            code = stop_server(server)
    summary = (
        run.stdout[run.stdout.find("=== SUMMARY ===") :] if "=== SUMMARY ===" in run.stdout else run.stdout[-4000:]
    )
    print(summary)
    total = re.search(r"Total: (\d+) passed, (\d+) failed", run.stdout)
    scenarios = re.findall(r"^([✓✗]) ", run.stdout, flags=re.MULTILINE)
    failures = []
    if run.returncode != 0:
        failures.append(f"the suite exited {run.returncode}: {run.stderr[-2000:]}")
    if total is None:
        failures.append("the suite printed no total")
    elif int(total.group(2)) != 0:
        failures.append(f"{total.group(2)} checks failed")
    if "✗" in scenarios:
        failures.append(f"{scenarios.count('✗')} scenarios failed")
    if code != 0:
        failures.append(f"server exit status after SIGTERM: {code}")
    if any("Traceback" in line for line in log):
        failures.append("the server logged a traceback:\n" + "".join(log)[-4000:])
    passed_scenarios = scenarios.count("✓")
    print(f"conformance: {passed_scenarios} scenarios passed, {scenarios.count('✗')} failed, in {elapsed:.1f}s")
    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
