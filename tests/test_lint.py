"""The codebase stays clean: ruff (lint and format) and mypy, as configured in pyproject.toml and setup.cfg."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["ruff", "check", "mcp_auth", "scripts", "tests"], id="ruff-check"),
        pytest.param(["ruff", "format", "--check", "mcp_auth", "scripts", "tests"], id="ruff-format"),
        pytest.param(["mypy"], id="mypy"),
    ],
)
def test_clean(command: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
