"""Interop: the npm-published `@modelcontextprotocol/server-everything` (stdio) behind `serve --stdio`.

Installs the pinned server with npm (cached in .ci-cache, git-ignored), starts
`python -m mcp_auth serve --tokens-file F --stdio -- node .../mcp-server-everything stdio`
on a free port, and drives it with the real `mcp` client over Streamable HTTP
and over WebSocket, in both eras (mode legacy: the handshake revisions, a child
per session; mode auto: the 2026-07-28 revision, a pool of children per token):

- with the full token: tools listed and called, progress of
  `trigger-long-running-operation` reaches the client;
- with a token scoped to `echo` and `get-sum`: only those are listed, and a
  call to another tool is refused;
- without a token: nothing;
- SIGTERM: the front exits 0 and no server-everything process is left.

    python scripts/stdio_bridge_smoke.py [--version 2026.8.31]

Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# Pinned: the smoke test checks tool names of this release.
EVERYTHING_VERSION = "2026.8.31"
STARTUP_DEADLINE_SECONDS = 120
GONE_DEADLINE_SECONDS = 60


def install(version: str) -> Path:
    prefix = ROOT / ".ci-cache" / f"server-everything-{version}"
    binary = prefix / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    if not binary.exists():
        subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                f"@modelcontextprotocol/server-everything@{version}",
            ],
            check=True,
        )
    return binary


def start_front(binary: Path, tokens: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    front = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_auth",
            "serve",
            "--port",
            "0",
            "--tokens-file",
            str(tokens),
            "--stdio",
            "--",
            "node",
            str(binary),
            "stdio",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert front.stderr is not None
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        line = front.stderr.readline()
        if not line:
            break
        print("  front:", line.rstrip())
        if "listening on http://127.0.0.1:" in line:
            return front, int(line.rsplit(":", 1)[1].split("/")[0])
    front.kill()
    raise SystemExit("the front did not start")


def everything_pids(binary: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if str(binary).encode() in cmdline and state != "Z" and b"mcp_auth" not in cmdline:
                found.append(int(entry))
    return found


async def exercise(url: str, token: str | None, transport: str, mode: str) -> dict[str, Any]:
    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client
    from ws_client import websocket_client, ws_url

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        streams = (
            websocket_client(ws_url(url), headers)
            if transport == "websocket"
            else streamable_http_client(url, http_client=http)
        )
        async with Client(streams, mode=mode) as client:  # type: ignore[arg-type]
            names = sorted(tool.name for tool in (await client.list_tools()).tools)
            echo = (await client.call_tool("echo", {"message": "through the bridge"})).content[0].text  # type: ignore[union-attr]
            out: dict[str, Any] = {"tools": names, "echo": echo}
            if "trigger-long-running-operation" in names:
                await client.call_tool(
                    "trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=on_progress
                )
                out["progress"] = progress
            else:
                try:
                    await client.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 3})
                    out["refused"] = False
                except Exception:
                    out["refused"] = True
            return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default=EVERYTHING_VERSION)
    args = parser.parse_args()
    binary = install(args.version)
    from mcp_auth.auth.tokens import add_token

    failures: list[str] = []
    with tempfile.TemporaryDirectory() as home:
        tokens = Path(home) / "tokens.toml"
        full = add_token(tokens, "full", None)
        scoped = add_token(tokens, "scoped", ["echo", "get-sum"])
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": home, "PYTHONPATH": str(ROOT)}
        env.pop("MCP_AUTH_TOKEN", None)
        front, port = start_front(binary, tokens, env)
        url = f"http://127.0.0.1:{port}/mcp"
        try:
            # legacy: the handshake era (a child per session); auto: mcp 2.3.0 speaks 2026-07-28 (pooled children).
            for transport, mode in (
                ("http", "legacy"),
                ("http", "auto"),
                ("websocket", "legacy"),
                ("websocket", "auto"),
            ):
                label = f"{transport}/{mode}"
                got = asyncio.run(exercise(url, full, transport, mode))
                print(
                    f"{label} full token: {len(got['tools'])} tools, echo {got['echo']!r}, progress {got['progress']}"
                )
                if "get-sum" not in got["tools"] or "through the bridge" not in got["echo"]:
                    failures.append(f"{label}: full token did not list/call the tools: {got}")
                if got.get("progress") != [1, 2, 3]:
                    failures.append(f"{label}: progress did not reach the client: {got.get('progress')}")
                got = asyncio.run(exercise(url, scoped, transport, mode))
                print(f"{label} scoped token: {got['tools']}, other tool refused: {got.get('refused')}")
                if got["tools"] != ["echo", "get-sum"] or got.get("refused") is not True:
                    failures.append(f"{label}: the scoped token saw or called more than its tools: {got}")
                try:
                    asyncio.run(exercise(url, None, transport, mode))
                    failures.append(f"{label}: a client without a token was served")
                except BaseException as exc:  # any refusal will do
                    print(f"{label} no token: refused ({type(exc).__name__})")
            running = everything_pids(binary)
            print(f"server-everything processes while sessions may be open: {running}")
        finally:
            front.send_signal(signal.SIGTERM)
            status = front.wait(STARTUP_DEADLINE_SECONDS)
            if front.stderr is not None:
                front.stderr.close()
        if status != 0:
            failures.append(f"the front exited with status {status} after SIGTERM")
        deadline = time.monotonic() + GONE_DEADLINE_SECONDS
        while everything_pids(binary) and time.monotonic() < deadline:
            time.sleep(0.1)
        if everything_pids(binary):
            failures.append(f"server-everything processes left after the front stopped: {everything_pids(binary)}")
    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    print("stdio bridge smoke test:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
