"""The shared fixtures keep the developer's environment out of every test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 120.0  # an upper bound for a one-test pytest run


def test_no_mcp_auth_variable_reaches_a_test() -> None:
    assert [name for name in os.environ if name.startswith("MCP_AUTH_")] == []


def test_every_mcp_auth_variable_of_the_shell_is_cleared() -> None:
    """Variables the old fixed list missed (log format, limits, a future one) are cleared too."""
    shell = {
        **os.environ,
        "MCP_AUTH_LOG_FORMAT": "json",
        "MCP_AUTH_MAX_STREAMS": "3",
        "MCP_AUTH_WEBSOCKET_TOKEN_SUBPROTOCOL": "1",
        "MCP_AUTH_SOME_FUTURE_SETTING": "x",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            f"{Path(__file__).name}::test_no_mcp_auth_variable_reaches_a_test",
        ],
        cwd=ROOT / "tests",
        env=shell,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
