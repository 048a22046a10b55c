"""Config: every setting, where it came from, validated once.

Precedence, per setting: command-line flag > environment variable
(`MCP_AUTH_*`) > TOML file (`--config` or `MCP_AUTH_CONFIG`) > default. The
result is one frozen `Config` whose derived policies (networks, hosts,
origins, proxies) are parsed at construction, so a bad value is a
`ConfigError` at startup naming the value and its source, never a surprise at
the first request.

This module also decides the auth state (DESIGN.md, Tokens): which token
source wins, and the refusals that keep a server from starting insecurely
(no token off loopback, `--no-auth` off loopback, a token in a config file).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .auth.tokens import (
    StaticToken,
    TokenFile,
    TokensFile,
    TokenSource,
    default_token_path,
    ensure_default_token,
)
from .errors import ConfigError
from .keepalive import KEEPALIVE_SECONDS, MAX_KEEPALIVE_SECONDS
from .network import (
    AddressAllowlist,
    HostPolicy,
    OriginPolicy,
    is_loopback_host,
    parse_networks,
    parse_trusted_proxies,
)
from .refusals import UNAUTHORIZED_HINT
from .store.url import StoreUrl, parse_store_url

__all__ = ["AuthSetup", "Config", "ConfigError", "open_token_source"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# A request body larger than any sane JSON-RPC message, small enough that a
# thread buffering it costs little (DESIGN.md: 4 MiB, 413 past it).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Failed authentications from one address tolerated per window before 429:
# generous for a person mistyping, useless for guessing a 256-bit token.
DEFAULT_RATE_LIMIT_FAILURES = 10
DEFAULT_RATE_LIMIT_WINDOW_SECONDS = 60.0
# Each open WebSocket holds two threads (its request's and simple-websocket's
# reader); 256 sockets is ~512 threads, comfortable on a small machine.
DEFAULT_MAX_WEBSOCKETS = 256
# Handler threads (HTTP tool calls that may stream, WebSocket requests) and open
# event streams at once, each a thread: 256 is comfortable on a small machine.
# Each kind is counted apart, a token may hold half of each (503 / -32000 past it).
DEFAULT_MAX_STREAMS = 256
# One WebSocket message, like one HTTP body (close 1009 past it).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A socket with no message this long is closed; long calls in flight do not count.
DEFAULT_WEBSOCKET_IDLE_SECONDS = 300.0
# Ping this often; a peer that has not answered the previous ping by the next is closed.
DEFAULT_WEBSOCKET_PING_SECONDS = 25.0

# The built-in server, on SIGTERM/SIGINT: how long requests in flight get to finish.
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 10.0
# How long a multi round-trip request's requestState stays valid: the SDK's default,
# time for a person to answer an elicitation; a day at most, so a leaked state dies.
DEFAULT_REQUEST_STATE_TTL_SECONDS = 600.0
MAX_REQUEST_STATE_TTL_SECONDS = 86400.0

DEFAULT_LOG_LEVEL = "info"
LOG_LEVELS = ("debug", "info", "warning", "error")

# setting -> (environment variable, kind); kind drives parsing from env and TOML.
_SETTINGS: dict[str, tuple[str, str]] = {
    "host": ("MCP_AUTH_HOST", "str"),
    "port": ("MCP_AUTH_PORT", "int"),
    "token": ("MCP_AUTH_TOKEN", "str"),
    "token_file": ("MCP_AUTH_TOKEN_FILE", "str"),
    "tokens_file": ("MCP_AUTH_TOKENS_FILE", "str"),
    "no_auth": ("MCP_AUTH_NO_AUTH", "bool"),
    "allowed_ips": ("MCP_AUTH_ALLOWED_IPS", "list"),
    "allowed_hosts": ("MCP_AUTH_ALLOWED_HOSTS", "list"),
    "allowed_origins": ("MCP_AUTH_ALLOWED_ORIGINS", "list"),
    "trusted_proxies": ("MCP_AUTH_TRUSTED_PROXIES", "list"),
    "log_format": ("MCP_AUTH_LOG_FORMAT", "str"),
    "log_level": ("MCP_AUTH_LOG_LEVEL", "str"),
    "max_body_bytes": ("MCP_AUTH_MAX_BODY_BYTES", "int"),
    "rate_limit_failures": ("MCP_AUTH_RATE_LIMIT_FAILURES", "int"),
    "rate_limit_window": ("MCP_AUTH_RATE_LIMIT_WINDOW", "float"),
    "max_websockets": ("MCP_AUTH_MAX_WEBSOCKETS", "int"),
    "max_streams": ("MCP_AUTH_MAX_STREAMS", "int"),
    "max_message_bytes": ("MCP_AUTH_MAX_MESSAGE_BYTES", "int"),
    "websocket_idle_timeout": ("MCP_AUTH_WEBSOCKET_IDLE_TIMEOUT", "float"),
    "websocket_ping_interval": ("MCP_AUTH_WEBSOCKET_PING_INTERVAL", "float"),
    "websocket_token_subprotocol": ("MCP_AUTH_WEBSOCKET_TOKEN_SUBPROTOCOL", "bool"),
    "session_store": ("MCP_AUTH_SESSION_STORE", "str"),
    "keepalive_timeout": ("MCP_AUTH_KEEPALIVE_TIMEOUT", "float"),
    "shutdown_timeout": ("MCP_AUTH_SHUTDOWN_TIMEOUT", "float"),
    "state_key_file": ("MCP_AUTH_STATE_KEY_FILE", "str"),
    "request_state_ttl": ("MCP_AUTH_REQUEST_STATE_TTL", "float"),
}
_FLAG_NAMES = {
    "allowed_ips": "--allowed-ip",
    "allowed_hosts": "--allowed-host",
    "allowed_origins": "--allowed-origin",
    "trusted_proxies": "--trusted-proxy",
}


def _flag(name: str) -> str:
    return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


@dataclass(frozen=True)
class Config:
    """All settings of one server. Construct directly when embedding, or via `from_sources`."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    tokens_file: str | None = None
    no_auth: bool = False
    allowed_ips: tuple[str, ...] = ("*",)
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    log_format: str = "text"
    # INFO by default: audit events, and a tool author's own logging.info lines.
    log_level: str = DEFAULT_LOG_LEVEL
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    rate_limit_failures: int = DEFAULT_RATE_LIMIT_FAILURES
    rate_limit_window: float = DEFAULT_RATE_LIMIT_WINDOW_SECONDS
    max_websockets: int = DEFAULT_MAX_WEBSOCKETS
    max_streams: int = DEFAULT_MAX_STREAMS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    websocket_idle_timeout: float = DEFAULT_WEBSOCKET_IDLE_SECONDS
    websocket_ping_interval: float = DEFAULT_WEBSOCKET_PING_SECONDS
    # Off by default: a token in Sec-WebSocket-Protocol can end up in proxy logs (SECURITY.md).
    websocket_token_subprotocol: bool = False
    # redis://HOST:PORT/DB shared by every worker and host (DESIGN.md, Many processes); None: this
    # process keeps its sessions and guessing limit in memory. Holds a password when the URL does.
    session_store: str | None = field(default=None, repr=False)
    # The built-in server only (gunicorn has --keep-alive and --graceful-timeout): the wait for a
    # kept-alive connection's next request (0: close after every answer), and the stop's grace.
    keepalive_timeout: float = KEEPALIVE_SECONDS
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
    # The key ring that seals requestState (mcp_auth.auth.statekey); None: the default
    # key file next to the default token file, created on the first run.
    state_key_file: str | None = None
    request_state_ttl: float = DEFAULT_REQUEST_STATE_TTL_SECONDS
    # Where each setting came from ("--port", "MCP_AUTH_PORT", "config.toml"), for messages.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Derived in __post_init__.
    address_allowlist: AddressAllowlist = field(init=False, compare=False, repr=False)
    proxy_networks: tuple[Any, ...] = field(init=False, compare=False, repr=False)
    host_policy: HostPolicy = field(init=False, compare=False, repr=False)
    origin_policy: OriginPolicy = field(init=False, compare=False, repr=False)
    store_url: StoreUrl | None = field(init=False, compare=False, repr=False)

    def source_of(self, name: str) -> str:
        return self.sources.get(name, f"Config({name}=...)")

    def __post_init__(self) -> None:
        integers = (
            "port",
            "max_body_bytes",
            "rate_limit_failures",
            "max_websockets",
            "max_streams",
            "max_message_bytes",
        )
        for name, kind in ((n, int) for n in integers):
            value = getattr(self, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r} (from {self.source_of(name)})")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 0-65535 (from {self.source_of('port')})")
        if self.max_body_bytes < 1024:
            raise ConfigError(
                f"max_body_bytes {self.max_body_bytes} is below 1024 (from {self.source_of('max_body_bytes')})"
            )
        seconds = ("rate_limit_window", "websocket_idle_timeout", "websocket_ping_interval", "request_state_ttl")
        for name in (*seconds, "keepalive_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(
                    f"{name} must be a finite number of seconds, got {value!r} (from {self.source_of(name)})"
                )
        if self.max_message_bytes < 1024:
            raise ConfigError(
                f"max_message_bytes {self.max_message_bytes} is below 1024 (from {self.source_of('max_message_bytes')})"
            )
        for name in ("max_websockets", "max_streams"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 (from {self.source_of(name)})")
        if self.websocket_idle_timeout <= 0 or self.websocket_ping_interval < 0:
            raise ConfigError("websocket_idle_timeout must be > 0 and websocket_ping_interval >= 0 (0 disables pings)")
        if not 0 <= self.keepalive_timeout <= MAX_KEEPALIVE_SECONDS:
            raise ConfigError(
                f"keepalive_timeout must be from 0 (no keep-alive) to {MAX_KEEPALIVE_SECONDS:g} seconds, "
                f"got {self.keepalive_timeout!r} (from {self.source_of('keepalive_timeout')})"
            )
        if self.shutdown_timeout < 0:
            raise ConfigError(
                f"shutdown_timeout must be 0 or more seconds, got {self.shutdown_timeout!r} "
                f"(from {self.source_of('shutdown_timeout')})"
            )
        if not 1 <= self.request_state_ttl <= MAX_REQUEST_STATE_TTL_SECONDS:
            raise ConfigError(
                f"request_state_ttl {self.request_state_ttl:g} is outside 1-{MAX_REQUEST_STATE_TTL_SECONDS:g} "
                f"seconds (from {self.source_of('request_state_ttl')})"
            )
        if self.rate_limit_failures < 1 or self.rate_limit_window <= 0:
            raise ConfigError("rate_limit_failures must be >= 1 and rate_limit_window > 0")
        if self.log_format not in ("text", "json"):
            raise ConfigError(
                f"log_format must be 'text' or 'json', got {self.log_format!r} (from {self.source_of('log_format')})"
            )
        if not isinstance(self.log_level, str) or self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r} "
                f"(from {self.source_of('log_level')})"
            )
        object.__setattr__(self, "log_level", self.log_level.lower())
        if not self.host:
            raise ConfigError(f"host is empty (from {self.source_of('host')}); use 127.0.0.1 for local use")
        set_ = object.__setattr__
        set_(
            self, "address_allowlist", AddressAllowlist(parse_networks(self.allowed_ips, self.source_of("allowed_ips")))
        )
        set_(self, "proxy_networks", parse_trusted_proxies(self.trusted_proxies, self.source_of("trusted_proxies")))
        set_(self, "host_policy", HostPolicy(self.allowed_hosts, self.source_of("allowed_hosts")))
        set_(self, "origin_policy", OriginPolicy(self.allowed_origins, self.source_of("allowed_origins")))
        if self.session_store is not None and not isinstance(self.session_store, str):
            raise ConfigError(f"session_store must be a redis:// URL (from {self.source_of('session_store')})")
        store = self.session_store.strip() if self.session_store else ""
        set_(self, "store_url", parse_store_url(store, self.source_of("session_store")) if store else None)
        self._check_auth_state()

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def explicit_token_source(self) -> bool:
        return bool(self.token or self.token_file or self.tokens_file)

    def _check_auth_state(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ConfigError(f"the token from {self.source_of('token')} is empty; set a token or unset it")
        if self.no_auth:
            if not self.loopback:
                raise ConfigError(
                    f"--no-auth is refused on the non-loopback bind {self.host!r}: anyone who can reach the port "
                    "could call every tool. Bind 127.0.0.1 (--host 127.0.0.1) or drop --no-auth and set a token"
                )
            if self.explicit_token_source:
                given = [self.source_of(n) for n in ("token", "token_file", "tokens_file") if getattr(self, n)]
                raise ConfigError(f"--no-auth contradicts the token source given by {', '.join(given)}; choose one")
        elif not self.loopback and not self.explicit_token_source:
            raise ConfigError(
                f"refusing to serve on the non-loopback address {self.host!r} without an explicit token: set "
                "MCP_AUTH_TOKEN (environment), --token-file PATH or --tokens-file PATH "
                "(create one with 'python -m mcp_auth token add NAME --tokens-file PATH')"
            )

    @classmethod
    def from_sources(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        config_path: str | None = None,
    ) -> Config:
        """Build from flags (already parsed; None means not given), the environment and a TOML file."""
        flags = {k: v for k, v in (flags or {}).items() if v is not None and v != [] and v is not False}
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}

        path = config_path or environ.get("MCP_AUTH_CONFIG") or None
        if path:
            origin = "--config" if config_path else "MCP_AUTH_CONFIG"
            for name, value in _read_toml(path, origin).items():
                values[name] = value
                sources[name] = f"{path}: {name}"
        for name, (variable, kind) in _SETTINGS.items():
            raw = environ.get(variable)
            if raw is not None and raw != "":
                values[name] = _parse_text(raw, kind, variable)
                sources[name] = variable
        for name, value in flags.items():
            if name not in _SETTINGS:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = tuple(value) if isinstance(value, list) else value
            sources[name] = _flag(name)
        return cls(**values, sources=sources)


_TOML_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "list": list,
}


def _read_toml(path: str, origin: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} (from {origin}) does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} (from {origin}) cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} (from {origin}) is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        # tomllib decodes the bytes itself and lets this escape: TOML files are UTF-8.
        raise ConfigError(
            f"config file {path} (from {origin}) is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively; no setting nests at all.
        raise ConfigError(f"config file {path} (from {origin}) nests arrays or tables too deeply to read") from None
    # Settings may sit at the top level or in an [mcp_auth] table.
    table: Any = data.get("mcp_auth", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [mcp_auth] must be a table")
    result: dict[str, Any] = {}
    for name, value in table.items():
        if name == "token":
            raise ConfigError(
                f"config file {path}: a token does not belong in a config file; "
                'set token_file = "PATH" (a 0600 file) or MCP_AUTH_TOKEN instead'
            )
        if name not in _SETTINGS:
            known = ", ".join(sorted(n for n in _SETTINGS if n != "token"))
            raise ConfigError(f"config file {path}: unknown setting {name!r}; known settings: {known}")
        kind = _SETTINGS[name][1]
        if not isinstance(value, _TOML_TYPES[kind]) or (kind in ("int", "float") and isinstance(value, bool)):
            raise ConfigError(f"config file {path}: {name} must be a {kind}, got {value!r}")
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise ConfigError(f"config file {path}: {name} must be a list of strings")
            value = tuple(value)
        result[name] = value
    return result


def _parse_text(raw: str, kind: str, variable: str) -> Any:
    if kind == "str":
        return raw
    if kind == "int":
        try:
            return int(raw.strip())
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not an integer") from None
    if kind == "float":
        try:
            return float(raw.strip())
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not a number") from None
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{variable}={raw!r}: use 1 or 0")
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class AuthSetup:
    """The token source in force, and the token just generated on a first run (creator only)."""

    source: TokenSource | None  # None only under --no-auth
    generated_token: str | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        return self.source.description if self.source is not None else "disabled (--no-auth)"

    @property
    def same_view_for_all(self) -> bool:
        """Whether every principal sees the same tools, resources and prompts: no token can have a
        scope (a single token, or --no-auth). A tokens file may hold scoped tokens, now or after
        the next edit, so with one the lists are never cacheable as "public"."""
        return not isinstance(self.source, TokensFile)

    @property
    def unauthorized_hint(self) -> str:
        """Where an honest client finds the right token, for the 401 (never a token, nor part of one)."""
        source = self.source
        if isinstance(source, TokenFile) and source.default_file:
            return "On the server, 'python -m mcp_auth token show' prints the token."
        if isinstance(source, TokenFile):
            return f"This server accepts the token in the file {source.path} on the server."
        if isinstance(source, TokensFile):
            return (
                f"This server accepts the tokens in the tokens file {source.path} "
                f"('python -m mcp_auth token list --tokens-file {source.path}' shows their names)."
            )
        if isinstance(source, StaticToken):
            return f"Use the token this server was started with ({source.description})."
        return UNAUTHORIZED_HINT


def open_token_source(config: Config, environ: Mapping[str, str] | None = None) -> tuple[AuthSetup, list[str]]:
    """Open the highest-precedence token source; returns it and warnings for ignored sources.

    Order (DESIGN.md): --token, MCP_AUTH_TOKEN, --token-file, --tokens-file,
    then on loopback the default token file, created on first run.
    """
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    if config.no_auth:
        return AuthSetup(None), warnings
    candidates = [(n, getattr(config, n)) for n in ("token", "token_file", "tokens_file") if getattr(config, n)]
    for name, _ in candidates[1:]:
        warnings.append(f"{config.source_of(name)} is ignored: {config.source_of(candidates[0][0])} takes precedence")
    if candidates:
        name, value = candidates[0]
        origin = config.source_of(name)
        if name == "token":
            return AuthSetup(StaticToken(value, description=origin)), warnings
        if name == "token_file":
            return AuthSetup(TokenFile(Path(value), description=f"token file {value} ({origin})")), warnings
        return AuthSetup(TokensFile(Path(value), description=f"tokens file {value} ({origin})")), warnings
    path = default_token_path(environ)
    source, generated = ensure_default_token(path)
    return AuthSetup(source, generated), warnings
