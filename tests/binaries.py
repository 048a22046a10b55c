"""Finding the Debian-packaged servers the tests start (nginx, redis-server), and free loopback ports.

A missing binary skips its tests on a developer's machine and fails them under
CI (`CI` set), which installs every one of them (.ci/run).
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def find_binary(name: str, directories: tuple[str, ...]) -> str | None:
    """`name` on PATH, else in one of `directories` (sbin is often off a user's PATH)."""
    candidates = (os.path.join(directory, name) for directory in directories)
    return shutil.which(name) or next((path for path in candidates if os.access(path, os.X_OK)), None)


def require_binary(binary: str | None, package: str, tests: str) -> str:
    """The binary found; else skip, or fail when CI is set (CI installs it: see .ci/run)."""
    if binary is None:
        message = f"{package} is not installed (Debian: apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the {tests} tests")
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
