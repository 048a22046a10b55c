"""A stdio MCP server written by hand (no library), misbehaving on request, for the bridge's tests.

    raw_child.py [--ignore-eof] [--ignore-sigterm] [--pid-file PATH] [--cache-hints]

Tools: `pid`, `garbage` (writes a line that is not JSON-RPC to stdout),
`spawn_grandchild` (starts a `sleep` in its process group and returns its pid).
--ignore-eof keeps running after stdin closes (only a signal ends it);
--ignore-sigterm ignores SIGTERM (only SIGKILL ends it).
--cache-hints adds its own 2026-07-28 caching hints ("public", an hour) to its tools/list result,
as a child unaware of the front's token scopes might.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

TOOLS = [
    {"name": name, "description": name, "inputSchema": {"type": "object"}}
    for name in ("pid", "garbage", "spawn_grandchild")
]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def text(value: str) -> dict:
    return {"content": [{"type": "text", "text": value}]}


def main() -> None:
    if "--ignore-sigterm" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--pid-file" in sys.argv:
        with open(sys.argv[sys.argv.index("--pid-file") + 1], "a") as handle:
            handle.write(f"{os.getpid()}\n")
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "raw-child", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": TOOLS}
            if "--cache-hints" in sys.argv:
                result.update({"ttlMs": 3_600_000, "cacheScope": "public"})
        elif method == "tools/call" and message["params"]["name"] == "pid":
            result = text(str(os.getpid()))
        elif method == "tools/call" and message["params"]["name"] == "garbage":
            sys.stdout.write("Server started! Listening on stdio...\n")
            sys.stdout.flush()
            continue
        elif method == "tools/call" and message["params"]["name"] == "spawn_grandchild":
            grandchild = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)
            result = text(str(grandchild.pid))
        else:
            send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "no such method"}})
            continue
        send({"jsonrpc": "2.0", "id": request_id, "result": result})
    if "--ignore-eof" in sys.argv:
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
