"""A stdio command as a served server: checked at startup, then one child per session behind the front.

`StdioServer` is what `build_app` serves (the `ServedServer` protocol): its
name and counts come from a probe run at startup, and its dispatcher is the
bridge's. The probe runs the command once and initializes it, so that a wrong
command, a command that exits, or one that does not speak MCP on stdout is
an error at startup (`ConfigError`, exit status 2 on the command line) that
names the command and shows its stderr, not a surprise for the first client.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .._version import __version__
from ..errors import ConfigError
from ..mcp.call import Channel
from ..mcp.jsonrpc import ErrorResponse, JsonRpcError, Request
from ..mcp.protocol import LATEST_PROTOCOL_VERSION
from .budget import ChildBudget
from .command import StdioCommand
from .dispatcher import INITIALIZE_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS, BridgeDispatcher
from .link import CHILD_UNAVAILABLE, ChildLink
from .process import STOP_GRACE_SECONDS
from .session_child import DEAD_SESSION_CLOSE_SECONDS

logger = logging.getLogger("mcp_auth.bridge")

# The lists the startup summary counts, when the child offers them.
_COUNTED = (
    ("tool", "tools", "tools/list", "tools"),
    ("resource", "resources", "resources/list", "resources"),
    ("resource template", "resources", "resources/templates/list", "resourceTemplates"),
    ("prompt", "prompts", "prompts/list", "prompts"),
)
# Stderr lines of a failed probe shown in the error.
_STDERR_LINES_SHOWN = 20


class _ProbeOwner:
    """The probe's child has no client: it cannot ask one anything, and its notifications go nowhere."""

    def __init__(self) -> None:
        self.gone: str | None = None
        self.ended = threading.Event()

    def push(self, message: dict[str, Any]) -> None:
        pass

    def child_request(self, link: ChildLink, request: Request, channel: Channel | None) -> None:
        link.respond(request.id, ErrorResponse(request.id, CHILD_UNAVAILABLE, "no client is connected yet"))

    def child_cancelled(self, link: ChildLink, request_id: Any) -> None:
        pass

    def child_gone(self, link: ChildLink, reason: str) -> None:
        self.gone = reason
        self.ended.set()


def probe(command: StdioCommand, timeout: float = INITIALIZE_TIMEOUT_SECONDS) -> tuple[dict[str, Any], dict[str, int]]:
    """Run the command once and initialize it: (its initialize result, counts of what it offers); ConfigError."""
    owner = _ProbeOwner()
    try:
        link = ChildLink(command, "(startup check)", owner, grace_seconds=STOP_GRACE_SECONDS)
    except OSError as exc:
        raise ConfigError(f"cannot run the stdio command '{command.display}': {exc.strerror or exc}") from None
    counts: dict[str, int] = {}
    try:
        params = {
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-auth-startup-check", "version": __version__},
        }
        result = link.request("initialize", params, timeout=timeout)
        link.notify("notifications/initialized")
        capabilities = result.get("capabilities")
        capabilities = capabilities if isinstance(capabilities, dict) else {}
        for kind, capability, method, field in _COUNTED:
            if capability in capabilities:
                try:
                    items = link.request(method, {}, timeout=timeout).get(field)
                except JsonRpcError:
                    continue  # counting is a courtesy: a server without templates may refuse the method
                counts[kind] = len(items) if isinstance(items, list) else 0
    except JsonRpcError as exc:
        link.stop()
        raise ConfigError(_failure(command, exc.message, link)) from None
    link.stop()
    counts.setdefault("tool", 0)
    return result, counts


def _failure(command: StdioCommand, reason: str, link: ChildLink) -> str:
    tail = [line for line in link.process.stderr_tail if line.strip()][-_STDERR_LINES_SHOWN:]
    stderr = "\n".join(f"    {line}" for line in tail) if tail else "    (nothing)"
    return (
        f"the stdio command '{command.display}' did not start as an MCP server: {reason}.\n"
        f"  Its standard error said:\n{stderr}\n"
        "  Check the command by running it yourself; it must speak MCP (JSON-RPC, one message per line) "
        "on stdin/stdout."
    )


class StdioServer:
    """A stdio MCP server behind the front: what `build_app` serves. Probes the command when made."""

    def __init__(
        self,
        command: StdioCommand,
        *,
        max_children: int | None = None,
        max_children_per_token: int | None = None,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        initialize_timeout: float = INITIALIZE_TIMEOUT_SECONDS,
        grace_seconds: float = STOP_GRACE_SECONDS,
        dead_session_seconds: float = DEAD_SESSION_CLOSE_SECONDS,
        check: bool = True,
    ) -> None:
        self.command = command
        info: dict[str, Any] = {}
        result: dict[str, Any] = {}
        self._counts: dict[str, int] = {"tool": 0}
        if check:
            result, self._counts = probe(command, initialize_timeout)
            server_info = result.get("serverInfo")
            info = server_info if isinstance(server_info, dict) else {}
        budget = (
            ChildBudget(max_children, max_children_per_token)
            if max_children
            else ChildBudget(per_token=max_children_per_token)
        )
        self.dispatcher = BridgeDispatcher(
            command,
            name=str(info.get("name") or command.argv[0]),
            version=str(info.get("version") or "?"),
            budget=budget,
            request_timeout=request_timeout,
            initialize_timeout=initialize_timeout,
            grace_seconds=grace_seconds,
            dead_session_seconds=dead_session_seconds,
        )
        capabilities = result.get("capabilities") if check else None
        self.dispatcher.child_capabilities = capabilities if isinstance(capabilities, dict) else {}

    @property
    def name(self) -> str:
        return f"{self.dispatcher.name} (stdio: {self.command.display})"

    @property
    def tool_names(self) -> list[str]:
        return []  # known per session (the child's lists are filtered per token)

    @property
    def offer_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def close(self) -> None:
        self.dispatcher.close()
