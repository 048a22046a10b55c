"""Shared fixtures. Every test runs with HOME and XDG_CONFIG_HOME in a temporary directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis_profiles import load_profile
from support import Live, live_server

ENV_PREFIX = "MCP_AUTH_"

# Property tests run with a fixed budget and seed unless HYPOTHESIS_PROFILE names another profile.
load_profile()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the real home directory: tests, and the subprocesses they start, see a temporary one."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    # The whole prefix, not a list: a variable added later must not leak in from the developer's shell.
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def live() -> Iterator[Live]:
    """The diagnostics server with the test token, on 127.0.0.1:0."""
    with live_server() as server:
        yield server
