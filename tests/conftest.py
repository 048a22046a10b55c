"""Shared fixtures. Every test runs with HOME and XDG_CONFIG_HOME in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis_profiles import load_profile
from support import Live, live_server

# Property tests run with a fixed budget and seed unless HYPOTHESIS_PROFILE names another profile.
load_profile()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the real home directory: tests, and the subprocesses they start, see a temporary one."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in (
        "MCP_AUTH_TOKEN",
        "MCP_AUTH_TOKEN_FILE",
        "MCP_AUTH_TOKENS_FILE",
        "MCP_AUTH_CONFIG",
        "MCP_AUTH_NO_AUTH",
        "MCP_AUTH_HOST",
        "MCP_AUTH_PORT",
        "MCP_AUTH_ALLOWED_IPS",
        "MCP_AUTH_ALLOWED_HOSTS",
        "MCP_AUTH_ALLOWED_ORIGINS",
        "MCP_AUTH_TRUSTED_PROXIES",
        "MCP_AUTH_TARGET",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def live() -> Iterator[Live]:
    """The diagnostics server with the test token, on 127.0.0.1:0."""
    with live_server() as server:
        yield server
