"""The stdio command the operator names: its argv, fixed at startup, and its explicit environment.

The argv is a list and is never given to a shell, so nothing a client sends
(or a space in a path) can become a second command. The environment is built
from an allowlist, not inherited: the front's own secrets (`MCP_AUTH_TOKEN`,
anything in the operator's shell) never reach the child unless the operator
names them with `--stdio-env`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError

# What a program needs to find its interpreter, its home and its locale, and nothing
# that usually carries a secret. Everything else is added by name (--stdio-env).
DEFAULT_ENV_PASSTHROUGH = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
    "SYSTEMROOT",
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


@dataclass(frozen=True)
class StdioCommand:
    """An argv list and the environment it runs with (see DEFAULT_ENV_PASSTHROUGH)."""

    argv: tuple[str, ...]
    # NAME (copied from the front's environment when set there) or NAME=VALUE.
    extra_env: tuple[str, ...] = ()
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        argv: Sequence[str],
        extra_env: Sequence[str] = (),
        *,
        cwd: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> StdioCommand:
        """Check the command and build its environment from `environ` (default os.environ); ConfigError if wrong."""
        if isinstance(argv, str):
            raise ConfigError("the stdio command is a list of words (argv), not a string: it is run without a shell")
        words = tuple(argv)
        if not words or not words[0]:
            raise ConfigError("--stdio needs a command: python -m mcp_auth serve --stdio -- CMD ARGS...")
        if any(not isinstance(word, str) or "\x00" in word for word in words):
            raise ConfigError("every word of the stdio command must be a string without NUL characters")
        source = os.environ if environ is None else environ
        env = {name: source[name] for name in DEFAULT_ENV_PASSTHROUGH if name in source}
        for entry in extra_env:
            name, equals, value = entry.partition("=")
            if not _ENV_NAME.fullmatch(name):
                raise ConfigError(
                    f"--stdio-env {entry.partition('=')[0]!r}: give NAME (copied from this environment) or NAME=VALUE"
                )
            if equals:
                env[name] = value
            elif name in source:
                env[name] = source[name]
        return cls(words, tuple(extra_env), cwd, env)

    @property
    def display(self) -> str:
        """The command as the operator would type it, for messages."""
        import shlex

        return shlex.join(self.argv)
