"""Exceptions shared across mcp_auth.

`ConfigError` is raised for any configuration the server refuses; the CLI turns
it into exit status 2 with the message, which always names the bad value and
where it came from, and says how to fix it.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration value was refused; the message says which and why."""
