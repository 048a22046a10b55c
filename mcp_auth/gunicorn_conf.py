"""gunicorn integration: the startup summary once, with the address gunicorn really binds, and a
graceful stop that closes WebSockets with 1001.

Use it as gunicorn's configuration module (it sets nothing else):

    gunicorn -c python:mcp_auth.gunicorn_conf -k gthread --threads 16 -b 0.0.0.0:8000 'mcp_auth:create_app()'

`when_ready` runs once in gunicorn's master after it has bound its sockets and
before any worker starts: it opens the token source (so a first run creates
the default token file there, and its guidance names the real address) and
prints the summary, once for all workers; the workers' `create_app()` then
prints nothing. Without this module, `create_app()` prints the summary in each
worker and finds the bound address from the worker's listening sockets.

SIGTERM (gunicorn's graceful stop): gunicorn's master closes its copy of the
listening sockets and passes SIGTERM on to the workers; each worker stops
polling its listeners and gives the requests in flight `--graceful-timeout`
seconds. It knows nothing of an open WebSocket or event stream, which would
hold the worker for all of that time; `stop_with_the_worker` (installed by
`create_app()` in each worker) makes the app close WebSockets with 1001 and
end its GET streams at once, while requests in flight finish.

A listening socket stays open while any process holds it, and gunicorn's
gthread worker (27.x) keeps its inherited copies until its drain is over: the
kernel goes on completing handshakes into the backlog, nobody accepts them,
and a proxy's request sent there waits until the worker exits, then is reset.
So `stop_with_the_worker` also makes the worker close its copies as soon as
it has stopped polling them: once the master and every worker have, the port
refuses new connections (a proxy moves on to another upstream at once) while
the requests in flight finish. Closing, not `shutdown()`: a shutdown would end
the listener for every process sharing it, and a worker gunicorn retires on
its own (`--max-requests`, fewer workers) must leave its siblings listening.

What it trusts: gunicorn's own objects (the arbiter and its listeners) and the
operator's environment, as `create_app()` does.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from typing import Any

from .app import MCP_PATH
from .network import format_url_host

# Set in the environment by `when_ready` (workers inherit it): the served URLs, and that the summary was printed.
URLS_VARIABLE = "MCP_AUTH_GUNICORN_URLS"
# The first descriptors a worker holds are gunicorn's listeners; looked for among these.
_MAX_LISTENER_FD = 256


def under_gunicorn() -> bool:
    """Whether this process was started by gunicorn (its arbiter sets SERVER_SOFTWARE for the whole tree)."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")


def _url(host: str, port: int) -> str:
    return f"http://{format_url_host(host)}:{port}{MCP_PATH}"


def listening_urls() -> list[str]:
    """The MCP URL of each TCP socket this process listens on: in a gunicorn worker, gunicorn's binds."""
    urls = []
    for fd in range(3, _MAX_LISTENER_FD):
        try:
            duplicate = os.dup(fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            continue
        with sock:
            try:
                listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(
                    socket.SOL_SOCKET, getattr(socket, "SO_ACCEPTCONN", 30)
                )
                address = sock.getsockname() if listening else None
            except OSError:
                continue
        if isinstance(address, tuple):
            urls.append(_url(str(address[0]), int(address[1])))
    return urls


def served_urls() -> list[str]:
    """Where gunicorn serves this app: what `when_ready` recorded, else this worker's listening sockets."""
    recorded = os.environ.get(URLS_VARIABLE)
    if recorded:
        return recorded.split(" ")
    return listening_urls() if under_gunicorn() else []


def summary_printed() -> bool:
    return bool(os.environ.get(URLS_VARIABLE))


def when_ready(server: Any) -> None:
    """gunicorn server hook (master, sockets bound, no worker yet): open the token source, print the summary once."""
    from .config import Config, open_token_source
    from .startup import print_first_run, print_summary_lines

    urls = []
    for listener in server.LISTENERS:
        address = listener.getsockname()
        if isinstance(address, tuple):
            urls.append(_url(str(address[0]), int(address[1])))
    config = Config.from_sources({}, os.environ)
    auth, warnings = open_token_source(config, os.environ)
    for warning in warnings:
        server.log.warning(warning)
    target = os.environ.get("MCP_AUTH_TARGET") or "the built-in diagnostics toolset"
    workers, threads = server.cfg.workers, server.cfg.threads
    heading = (
        f"serving {target} at {', '.join(urls) or '(no TCP bind)'} "
        f"(gunicorn, {workers} worker{'s' if workers != 1 else ''} x {threads} threads)"
    )
    print_summary_lines(config, auth, heading, urls, sys.stderr)
    if auth.generated_token is not None and urls:
        print_first_run(auth.generated_token, auth.description, urls[0], sys.stdout)
    os.environ[URLS_VARIABLE] = " ".join(urls)


def stop_with_the_worker(app: Any) -> bool:
    """In a gunicorn worker: on SIGTERM, also begin the app's shutdown (WebSockets 1001, GET streams end).

    Chains gunicorn's own handler, which stops accepting and waits for the
    requests in flight. False (nothing installed) outside a worker's main
    thread, or where SIGTERM has no handler yet (a preloaded app, in the master).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return False

    def on_sigterm(signum: int, frame: Any) -> None:
        threading.Thread(target=app.begin_shutdown, name="mcp-auth-stop", daemon=True).start()
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it: SIGTERM must not break system calls
    # gunicorn's handler is the worker's bound `handle_exit`: the worker whose listeners to close.
    close_listeners_when_stopping(getattr(previous, "__self__", None))
    return True


def close_listeners_when_stopping(worker: Any) -> bool:
    """Make a stopping gthread worker close its listening sockets once it no longer polls them.

    gunicorn's gthread worker calls `set_accept_enabled(False)` on its main
    thread when it leaves its serving loop (and when it is full); after that,
    while the worker is no longer alive, nothing of it touches its listeners
    but their final close, so closing them there is safe: no poller still
    holds them, no `accept` can run on a closed socket. Wrapped on the
    instance, on the thread gunicorn runs it on; no signal handler closes
    anything. False (nothing done) for a worker without that method (another
    worker class, another gunicorn), which keeps gunicorn's own behaviour.
    """
    original = getattr(worker, "set_accept_enabled", None)
    if not callable(original) or not isinstance(getattr(worker, "sockets", None), list):
        return False

    def set_accept_enabled(enabled: bool) -> None:
        original(enabled)
        if not enabled and not worker.alive:
            for listener in worker.sockets:
                inner = getattr(listener, "sock", listener)  # gunicorn's wrapper, or a socket
                if inner is not None:
                    try:
                        inner.close()  # this process's copy; gunicorn's own close later is a no-op
                    except OSError:
                        pass

    worker.set_accept_enabled = set_accept_enabled
    return True


def post_worker_init(worker: Any) -> None:
    """gunicorn server hook: with `--preload` the app was built in the master, before the worker's signals."""
    app = getattr(worker, "wsgi", None)
    if hasattr(app, "begin_shutdown"):
        stop_with_the_worker(app)
