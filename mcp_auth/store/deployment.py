"""Whether this process is one of several that would split sessions between them.

Under gunicorn with more than one worker and no session store, each worker
would keep its own sessions: a client's next request, served by another
worker, would get 404 session_not_found. That deployment is warned about at
start, in words that say how to fix it (`split_sessions_warning`). It is not
refused: the stateless 2026-07-28 era needs no shared session state, and a
deployment serving only it is right to run several workers without a store.

gunicorn's settings are read from the call that is loading the app: gunicorn
builds the app inside its worker's (or, with --preload, its arbiter's) own
method, whose `self.cfg` holds the parsed configuration. Nothing is parsed
from the command line or the environment, so what is read is what gunicorn
uses, however it was configured.
"""

from __future__ import annotations

import sys
from typing import Any

# How far up the stack gunicorn's loading frame can be: create_app, build_app and
# gunicorn's own import helpers sit between; a bound keeps a deep stack cheap.
MAX_FRAMES = 64


def gunicorn_settings() -> Any | None:
    """The gunicorn `Config` of the worker or arbiter loading this app, or None when not under gunicorn."""
    if "gunicorn" not in sys.modules:
        return None
    frame = sys._getframe(1)
    for _ in range(MAX_FRAMES):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        cfg = getattr(owner, "cfg", None) if owner is not None else None
        if cfg is not None and type(cfg).__module__.startswith("gunicorn"):
            return cfg
        frame = frame.f_back  # type: ignore[assignment]
    return None


def gunicorn_workers() -> int | None:
    """The number of gunicorn workers this app is loaded for, or None when not under gunicorn."""
    cfg = gunicorn_settings()
    if cfg is None:
        return None
    try:
        return int(cfg.workers)
    except (AttributeError, TypeError, ValueError):
        return None


def split_sessions_warning(workers: int | None, store_configured: bool) -> str | None:
    """What to say at start when several workers would split handshake-era sessions; None when fine."""
    if store_configured or workers is None or workers <= 1:
        return None
    return (
        f"gunicorn runs {workers} workers and no session store is configured: each worker keeps its own "
        "handshake-era sessions, so a client whose next request reaches another worker gets 404 "
        "session_not_found. Share them through Redis: set MCP_AUTH_SESSION_STORE=redis://HOST:6379/0 "
        "(pip install 'mcp-auth[redis]'), or run one worker (-w 1) with more --threads. "
        "Clients of the stateless 2026-07-28 revision are not affected."
    )
