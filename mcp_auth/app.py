"""The WSGI application: route -> guard -> transport.

Every request to the MCP endpoint goes through `Guard.admit` (steps 1-5)
before the transport sees it; `/healthz` goes through step 1 only and says
nothing about tools or configuration; every other path is 404 after step 1.
Refusals are turned into responses here and nowhere else, and each is
audited once: those of steps 1-6 here, those of step 7 (dispatch) where
their outcome was mapped (`audit.dispatch_outcome`, for both transports).
An unexpected exception becomes a bare 500 with no traceback in the body;
the traceback goes to the server log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import audit
from .config import AuthSetup, Config
from .guard import ENVIRON_CLIENT_KEY, Admission, Guard
from .http import HttpTransport, json_response
from .mcp.dispatch import Dispatcher
from .refusals import (
    DISPATCH_STEP,
    SUBPROTOCOL_CARRIER_OFF_HINT,
    InternalError,
    NotFound,
    Refusal,
    Unauthorized,
    is_version_negotiation,
)
from .sessions import SessionStore
from .store.connection import close_store
from .store.ratelimit import SharedFailureRateLimiter
from .store.revocations import RevocationCheckedSource, RevocationList
from .store.sessions import SharedSessionStore
from .websocket import WebSocketDone, WebSocketTransport, is_upgrade, subprotocol_token

logger = logging.getLogger("mcp_auth.app")

MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
# Headers a browser page on an allowed origin may read from our responses.
_EXPOSED_HEADERS = "Mcp-Session-Id, Mcp-Protocol-Version, WWW-Authenticate, Retry-After"
_ALLOWED_REQUEST_HEADERS = (
    "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name"
)
_PREFLIGHT_MAX_AGE = "600"
# Where OAuth clients look after a 401 (RFC 9728 and RFC 8414 discovery, then the
# 2025-03-26 default endpoints). The MCP Inspector does this on any 401. mcp_auth
# serves no OAuth metadata (the spec would want an authorization server in it),
# so these stay 404s, but with a message the client shows its user.
_OAUTH_PATHS = ("/.well-known/oauth-", "/.well-known/openid-configuration", "/register", "/authorize", "/token")
NOT_OAUTH_MESSAGE = (
    "This server does not use OAuth: it takes a static bearer token in the Authorization header "
    "(Bearer scheme), and a client refused with 401 sent a wrong token or none."
)

StartResponse = Callable[..., Any]


class McpAuthApp:
    """A WSGI application serving one McpServer (its `Dispatcher`) behind the pipeline."""

    def __init__(
        self,
        server: Dispatcher,
        config: Config,
        auth: AuthSetup,
        *,
        clock: Callable[[], float] = time.monotonic,
        store: Any = None,
    ) -> None:
        """`auth` is the token source, already open: building the app does no I/O
        (`mcp_auth.startup.build_app` opens it and says what it did). So is `store`, the
        Redis client of the configured session store (`mcp_auth.store.connection.open_store`),
        or None: sessions in this process's memory. With a store, the guessing limit reads (or, the
        first time, makes) the deployment's digest key there: two commands, the only I/O here.

        `clock` (monotonic seconds) times session idleness, stream retention, socket
        idleness and body deadlines; tests pass one they advance by hand."""
        self.server = server
        self.config = config
        self.auth = auth
        # With a store, every process counts guesses together: N workers must not mean N budgets.
        limiter = None
        if store is not None and auth.source is not None:
            limiter = SharedFailureRateLimiter(store, config.rate_limit_failures, config.rate_limit_window)
        self.guard = Guard(config, auth, limiter)
        # With a store, a token revoked on any host (`token revoke --session-store`) is refused here too.
        self.revocations = None
        if store is not None and self.guard.token_source is not None:
            self.revocations = RevocationList(store)
            self.guard.token_source = RevocationCheckedSource(self.guard.token_source, self.revocations)
        # The one registry of live sessions, of both transports; the dispatcher's notifications reach them through it.
        self.store = store
        self.sessions = SessionStore(clock=clock) if store is None else SharedSessionStore(store, clock=clock)
        server.attach_sessions(self.sessions)
        self.shared_sessions = self.sessions if isinstance(self.sessions, SharedSessionStore) else None
        if self.shared_sessions is not None:
            self.shared_sessions.on_notification = server.notify_from_elsewhere
        self.shutdown_event = threading.Event()
        self.http = HttpTransport(
            server,
            self.sessions,
            self.guard.principal_is_current,
            config.max_body_bytes,
            self.shutdown_event,
            max_streams=config.max_streams,
            clock=clock,
            same_view_for_all=auth.same_view_for_all,
        )
        # subscriptions/listen on both transports, in the HTTP transport's event-stream budget.
        self.listens = self.http.listens
        self.websocket = WebSocketTransport(
            server,
            self.guard.principal_is_current,
            max_sockets=config.max_websockets,
            max_message_bytes=config.max_message_bytes,
            ping_interval=config.websocket_ping_interval,
            sessions=self.sessions,
            idle_timeout=config.websocket_idle_timeout,
            shutdown=self.shutdown_event,
            max_calls=config.max_streams,
            clock=clock,
            same_view_for_all=auth.same_view_for_all,
            listens=self.listens,
        )

    def begin_shutdown(self) -> None:
        """The first step of a graceful stop: what would hold a stopping server open ends now.

        Open WebSockets close with 1001 (going away) and standalone event
        streams (GET) end, so their clients reconnect elsewhere; requests in
        flight, and the event streams that carry their answers, go on until
        they are done or `close` cuts them. Subscription listens end with
        their final result. Safe to call from any thread, more than once.
        """
        self.listens.close_all()  # each listen ends with its result, before its socket closes
        self.websocket.close_all()
        for session in self.sessions.each_negotiated():
            streams = getattr(session, "streams", None)  # an HTTP session's: wake its GET reader, which ends
            if streams is not None:
                streams.standalone.detach()

    def close(self) -> None:
        """End open streams, sockets and sessions (called on server shutdown)."""
        self.shutdown_event.set()
        self.begin_shutdown()
        self.sessions.close_all()
        self.server.detach_sessions(self.sessions)
        self.server.close()  # async handlers still running are cancelled; the loop's thread ends
        if self.revocations is not None:
            self.revocations.close()
        if self.store is not None:
            close_store(self.store)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response = self._with_cors(environ, start_response)
        admission: Admission | None = None
        try:
            path = environ.get("PATH_INFO") or "/"
            if path in (MCP_PATH, MCP_PATH + "/"):
                if environ.get("REQUEST_METHOD") == "OPTIONS":
                    return self._preflight(environ, start_response)
                if is_upgrade(environ):
                    # The whole pipeline runs before the handshake: a refusal is plain HTTP, never a 101.
                    carried = subprotocol_token(environ)
                    if self.config.websocket_token_subprotocol:
                        admission = self.guard.admit(environ, carried)
                    else:
                        try:
                            admission = self.guard.admit(environ)
                        except Unauthorized as refused:
                            if carried is None:
                                raise
                            # The carried token was never looked at: the hint says only that the carrier is off.
                            raise Unauthorized(refused.audit_reason, SUBPROTOCOL_CARRIER_OFF_HINT) from None
                    return self.websocket(environ, start_response, admission)
                if self.shared_sessions is None:
                    admission = self.guard.admit(environ)
                    return self.http(environ, start_response, admission)
                # With a store, step 4's round trip also reads the session record (`store.reads`).
                with self.shared_sessions.reading(environ.get("HTTP_MCP_SESSION_ID")):
                    admission = self.guard.admit(environ)
                    return self.http(environ, start_response, admission)
            self.guard.client_address(environ)
            if path == HEALTH_PATH and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
                return json_response(start_response, "200 OK", {"status": "ok"})
            if path.startswith(_OAUTH_PATHS):
                raise NotFound(f"{NOT_OAUTH_MESSAGE} {self.guard.unauthorized_hint}")
            raise NotFound(f"Nothing is served at {path[:100]!r}; the MCP endpoint is {MCP_PATH}")
        except Refusal as refusal:
            if isinstance(refusal, Unauthorized) and refusal.hint is None:
                # A transport's 401 (a token revoked mid-session) reads exactly like the guard's.
                refusal = refusal.with_hint(self.guard.unauthorized_hint)
            if is_version_negotiation(refusal):
                # Every `mcp` 2.x connection starts with this probe: a debug line, not an audit denial.
                logger.debug(
                    "protocol version negotiation: %s asked for MCP-Protocol-Version %s; sent the supported list",
                    environ.get(ENVIRON_CLIENT_KEY) or environ.get("REMOTE_ADDR") or "?",
                    audit.escape_controls(str(environ.get("HTTP_MCP_PROTOCOL_VERSION", ""))[:100]),
                )
            elif refusal.step != DISPATCH_STEP:  # step 7 was audited with its outcome, by the transport
                # Past step 5 the token's name is known, and DESIGN.md wants it in the event.
                self._audit(environ, refusal, admission.principal.name if admission is not None else None)
            return refusal(environ, start_response)
        except (StopIteration, WebSocketDone):
            raise  # a finished WebSocket: the WSGI server must not write a response on it
        except Exception:
            # Method and path are the client's: escaped, so they cannot start a log line of their own.
            logger.exception(
                "unexpected error while handling %s %s",
                audit.escape_controls(str(environ.get("REQUEST_METHOD"))),
                audit.escape_controls(str(environ.get("PATH_INFO"))),
            )
            return InternalError("The server failed to handle this request")(environ, start_response)

    def _preflight(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """CORS preflight: steps 1-3 only (browsers never send credentials on it)."""
        self.guard.client_address(environ)
        self.guard.check_browser_headers(environ)
        start_response(
            "204 No Content",
            [
                ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
                ("Access-Control-Allow-Headers", _ALLOWED_REQUEST_HEADERS),
                ("Access-Control-Max-Age", _PREFLIGHT_MAX_AGE),
            ],
        )
        return []

    def _with_cors(self, environ: dict[str, Any], start_response: StartResponse) -> StartResponse:
        origin = environ.get("HTTP_ORIGIN")
        if origin is None or not self.config.origin_policy.allows(origin):
            return start_response
        cors = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", _EXPOSED_HEADERS),
            ("Vary", "Origin"),
        ]

        def start_with_cors(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, headers + cors, exc_info)

        return start_with_cors

    @staticmethod
    def _audit(environ: dict[str, Any], refusal: Refusal, token_name: str | None = None) -> None:
        client = environ.get(ENVIRON_CLIENT_KEY) or environ.get("REMOTE_ADDR") or "?"
        reason = refusal.audit_reason if isinstance(refusal, Unauthorized) else refusal.error
        audit.denial(str(client), refusal.step, reason, token_name)
