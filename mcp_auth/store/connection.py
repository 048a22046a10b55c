"""Opening the Redis client of a configured session store, and what a store failure looks like to a client.

Opened once at startup (`open_store`), which checks that the server answers:
a wrong URL or a store that is down is a `ConfigError` at start, with the
fix, never a surprise at the first request. Later, a store that stops
answering makes the request that needed it a 503 with Retry-After
(`store_call`), never a 500 or a hung thread: every command has a timeout.

The `redis` client is imported here and only here, and only when a store is
configured (`pip install 'mcp-auth[redis]'`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError
from ..refusals import ServiceUnavailable
from .url import StoreUrl

if TYPE_CHECKING:
    import redis

# Connecting to a store on the same network takes milliseconds; a store that
# does not answer within this is down, and the request should say so soon.
CONNECT_TIMEOUT_SECONDS = 5.0
# Every command is a few keys: this bounds how long a request thread can wait on a stuck store.
COMMAND_TIMEOUT_SECONDS = 5.0
# Connections idle this long are checked with PING before use (a store restarted meanwhile).
HEALTH_CHECK_SECONDS = 30
# What a client refused because the store did not answer waits before trying again.
STORE_RETRY_AFTER_SECONDS = 5

_T = TypeVar("_T")

logger = logging.getLogger("mcp_auth.store")


def open_store(store: StoreUrl, source: str) -> redis.Redis:
    """A client of the store, after one PING; ConfigError (with the fix, never the password) otherwise."""
    try:
        import redis
    except ImportError:
        raise ConfigError(
            f"the session store (from {source}) needs the redis client: pip install 'mcp-auth[redis]'"
        ) from None
    client = redis.Redis.from_url(
        store.url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=COMMAND_TIMEOUT_SECONDS,
        health_check_interval=HEALTH_CHECK_SECONDS,
    )
    try:
        client.ping()
    except redis.AuthenticationError:
        client.close()
        raise ConfigError(
            f"the session store at {store.display} (from {source}) refused the credentials in the URL; "
            "fix the user or password"
        ) from None
    except redis.ResponseError as exc:
        client.close()
        raise ConfigError(
            f"the session store at {store.display} (from {source}) refused PING ({_first_word(exc)}); "
            "check that it is a Redis server and the URL's user may use it"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        client.close()
        raise ConfigError(
            f"cannot reach the session store at {store.display} (from {source}): {_reason(exc)}; "
            "start redis-server there, or fix the URL"
        ) from None
    return client


def _reason(exc: BaseException) -> str:
    # redis-py's connection errors name the host and port and the OS error; never the password.
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _first_word(exc: BaseException) -> str:
    words = str(exc).split()
    return words[0] if words else type(exc).__name__


def store_call(action: Callable[[], _T]) -> _T:
    """Run one store operation; a store that fails becomes 503 with Retry-After for this request."""
    import redis

    try:
        return action()
    except redis.RedisError as exc:
        # The class only: a Redis error's text may quote a command, and commands carry session keys.
        logger.warning("the session store failed (%s); the request is answered 503", type(exc).__name__)
        raise StoreUnavailable(type(exc).__name__) from None


class StoreUnavailable(ServiceUnavailable):
    """The shared store did not answer: the request cannot be served now, anywhere."""

    def __init__(self, what: str) -> None:
        super().__init__(
            "The server's session store is not answering; try again shortly",
            headers=[("Retry-After", str(STORE_RETRY_AFTER_SECONDS))],
        )
        self.what = what


def close_store(client: Any) -> None:
    try:
        client.close()
    except Exception:  # closing a client whose server is gone: nothing left to release
        pass
