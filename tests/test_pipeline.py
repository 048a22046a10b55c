"""The auth pipeline of DESIGN.md: every row of the table, in order.

Each step's refusals run over real sockets. The order (every combination of
failing steps: the first one answers) is a table against `Guard` on plain
environ dicts, with one combination per step confirmed over sockets.

For each step a request that fails it gets exactly the contract's status, JSON
error value and headers; a request that fails several steps is answered by the
first of them and by nothing later; every refusal is audited exactly once; no
log record holds a token or a prefix of one; nothing here is a 5xx.

Client addresses other than loopback are presented the way the contract says a
deployment presents them: `X-Forwarded-For` from a trusted proxy (the test
client itself, on 127.0.0.1). That doubles as the test of step 1's proxy rules.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import (
    ACCEPT_BOTH,
    TOKEN,
    Live,
    RawResponse,
    initialize_body,
    ipv6_loopback_available,
    live_server,
    open_session,
    request,
    rpc,
)

from mcp_auth.app import McpAuthApp
from mcp_auth.auth.tokens import Principal, StaticToken, TokenSource, add_token, revoke_token
from mcp_auth.config import AuthSetup, Config, open_token_source
from mcp_auth.diagnostics import build_diagnostics
from mcp_auth.embedded import EmbeddedServer
from mcp_auth.guard import ENVIRON_CLIENT_KEY, Guard
from mcp_auth.mcp.jsonrpc import FORBIDDEN
from mcp_auth.refusals import Refusal, Unauthorized
from mcp_auth.server import McpServer

# Presented tokens carry an ASCII marker, so the log scan can find them even
# when the rest of the token is bytes no formatter prints verbatim.
WRONG_TOKEN = "wrong-token-PRESENTED-5b1f0c2e9d7a"
XFF = "X-Forwarded-For"
WWW_AUTHENTICATE_401 = 'Bearer realm="mcp-auth"'
WWW_AUTHENTICATE_SCOPE = 'Bearer realm="mcp-auth", error="insufficient_scope"'

# The test client is the trusted proxy: X-Forwarded-For picks the client address.
VIA_PROXY: dict[str, Any] = {"trusted_proxies": ("127.0.0.1",)}
# Three failures per hour: nothing refills while a test runs.
RATE_LIMITED: dict[str, Any] = {**VIA_PROXY, "rate_limit_failures": 3, "rate_limit_window": 3600.0}
# Many failures allowed: for tests that send wrong tokens on purpose and must not hit 429.
NO_RATE_LIMIT: dict[str, Any] = {"rate_limit_failures": 100_000}


# --- logs: every record captured, none may hold a secret ---------------------------


class LogWatch:
    """The test's log records, the audit events among them, and the secrets none may contain."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.secrets: set[str] = {TOKEN, WRONG_TOKEN}

    def mark(self) -> int:
        return len(self.caplog.records)

    def audits(self, since: int = 0) -> list[dict[str, Any]]:
        records = self.caplog.records[since:]
        return [r.audit for r in records if r.name == "mcp_auth.audit"]  # type: ignore[attr-defined]

    def denials(self, since: int = 0) -> list[dict[str, Any]]:
        return [event for event in self.audits(since) if event["event"] == "denied"]

    def assert_clean(self) -> None:
        for when in ("setup", "call"):
            for record in self.caplog.get_records(when):
                text = record.getMessage() + " " + " ".join(str(value) for value in vars(record).values())
                if record.exc_info:
                    text += logging.Formatter().formatException(record.exc_info)
                for secret in self.secrets:
                    assert secret not in text, f"a token reached the log: {record.name} {record.getMessage()!r}"
                    if len(secret) >= 16:
                        assert secret[:12] not in text, f"a token prefix reached the log: {record.name}"
                assert record.levelno < logging.ERROR, f"server error logged: {record.getMessage()}"


@pytest.fixture(autouse=True)
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[LogWatch]:
    """Every logger at DEBUG into caplog; after the test, no record may contain a token."""
    # The CLI's configure_logging (run in-process by other tests) stops mcp_auth
    # records from propagating; undo it for this test so nothing escapes the scan.
    package_logger = logging.getLogger("mcp_auth")
    saved = (package_logger.propagate, package_logger.handlers[:], package_logger.level)
    package_logger.propagate, package_logger.handlers[:] = True, []
    package_logger.setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    watch = LogWatch(caplog)
    try:
        yield watch
    finally:
        package_logger.propagate, package_logger.handlers[:] = saved[0], saved[1]
        package_logger.setLevel(saved[2])
    watch.assert_clean()


# --- the table: each step's refusal -------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The contract's answer for a refusal, and the audit event it must produce."""

    status: int
    error: str | None  # the JSON "error" value; None for step 6's JSON-RPC error bodies
    step: str
    reason: str
    client: str = "127.0.0.1"
    token: str | None = None  # token name in the audit event: known only past step 5


def ip_refused(client: str = "127.0.0.1") -> Expect:
    return Expect(403, "ip_not_allowed", "client_address", "ip_not_allowed", client)


def host_invalid(client: str = "127.0.0.1") -> Expect:
    return Expect(400, "host_invalid", "host", "host_invalid", client)


def host_refused(client: str = "127.0.0.1") -> Expect:
    return Expect(403, "host_not_allowed", "host", "host_not_allowed", client)


def origin_refused(client: str = "127.0.0.1") -> Expect:
    return Expect(403, "origin_not_allowed", "origin", "origin_not_allowed", client)


def rate_limited(client: str = "127.0.0.1") -> Expect:
    return Expect(429, "rate_limited", "rate_limit", "rate_limited", client)


def unauthorized(reason: str, client: str = "127.0.0.1") -> Expect:
    return Expect(401, "unauthorized", "bearer_token", reason, client)


def unsupported_media_type(client: str = "127.0.0.1") -> Expect:
    return Expect(415, None, "transport", "unsupported_media_type", client, token="default")


@dataclass(frozen=True)
class Case:
    """One refused request: the server's settings, what is sent, what must come back."""

    expect: Expect
    settings: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str | None] = field(default_factory=dict)
    token: str | None = TOKEN
    host_header: str | None = "127.0.0.1"
    # A client address (sent as X-Forwarded-For) whose failure budget is spent first.
    exhaust: str | None = None
    method: str = "POST"
    path: str = "/mcp"


def spend_failure_budget(live: Live, client: str, failures: int = 3) -> None:
    """Distinct wrong tokens: the same one again would be the same guess, counted once."""
    for n in range(failures):
        spent = request(live.port, body=initialize_body(), token=f"{WRONG_TOKEN}-{n}", headers={XFF: client})
        assert spent.status == 401, spent


def assert_refusal(response: RawResponse, expect: Expect) -> None:
    """Status, JSON error value and headers exactly as the contract says."""
    assert response.status == expect.status, response
    assert response.header("Content-Type") == "application/json"
    body = response.json()
    if expect.error is None:  # step 6: a JSON-RPC error object that MCP clients surface
        assert body["jsonrpc"] == "2.0" and isinstance(body["error"]["code"], int)
    else:  # steps 1-5: a JSON-RPC error too (what MCP clients show), the refusal code in error.data.reason
        assert set(body) == {"jsonrpc", "id", "error"} and body["id"] is None
        assert body["error"]["data"] == {"reason": expect.error}
        assert isinstance(body["error"]["code"], int)
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        assert response.header("Cache-Control") == "no-store"
    assert response.header("WWW-Authenticate") == (WWW_AUTHENTICATE_401 if expect.status == 401 else None)
    retry_after = response.header("Retry-After")
    if expect.status == 429:
        assert retry_after is not None and retry_after.isdigit(), retry_after
        assert 1 <= int(retry_after) <= 3600
    else:
        assert retry_after is None
    assert response.header("Mcp-Session-Id") is None
    assert b"result" not in response.body


def assert_audited_once(logs: LogWatch, since: int, expect: Expect) -> None:
    """Exactly one audit event for the refusal, with the step, reason and client of the contract."""
    events = logs.audits(since)
    assert len(events) == 1, events
    event = events[0]
    assert event["event"] == "denied"
    assert (event["step"], event["reason"], event["client"]) == (expect.step, expect.reason, expect.client)
    assert event.get("token") == expect.token
    assert event["time"]


def run_case(case: Case, logs: LogWatch) -> RawResponse:
    with live_server(**case.settings) as live:
        if case.exhaust is not None:
            spend_failure_budget(live, case.exhaust)
        since = logs.mark()
        response = request(
            live.port,
            case.method,
            body=initialize_body() if case.method == "POST" else None,
            headers=dict(case.headers),  # type: ignore[arg-type]
            token=case.token,
            host_header=case.host_header,
            path=case.path,
        )
        assert response.status < 500, response
        assert_refusal(response, case.expect)
        assert_audited_once(logs, since, case.expect)
        return response


ONLY_TEST_NET: dict[str, Any] = {"allowed_ips": ("192.0.2.0/24",)}
BEHIND_PROXY: dict[str, Any] = {**VIA_PROXY, "allowed_ips": ("203.0.113.0/24",)}
APP_ORIGIN: dict[str, Any] = {"allowed_origins": ("https://app.example.com",)}
APP_HOST: dict[str, Any] = {"allowed_hosts": ("mcp.example.com:8443",)}

STEP_1 = [
    pytest.param(Case(ip_refused(), ONLY_TEST_NET), id="1-ip-not-allowed"),
    pytest.param(Case(ip_refused(), {"allowed_ips": ("::1", "10.0.0.0/8")}), id="1-ipv6-and-other-nets-only"),
    pytest.param(Case(ip_refused(), ONLY_TEST_NET, token=WRONG_TOKEN), id="1-bad-ip-and-wrong-token-is-403-not-401"),
    pytest.param(Case(ip_refused(), ONLY_TEST_NET, token=None), id="1-bad-ip-and-no-token"),
    pytest.param(
        Case(ip_refused(), ONLY_TEST_NET, {"Origin": "http://evil.example"}, token=None, host_header="evil.example"),
        id="1-bad-ip-host-origin-and-token",
    ),
    pytest.param(Case(ip_refused(), ONLY_TEST_NET, method="GET", path="/healthz", token=None), id="1-healthz"),
    pytest.param(Case(ip_refused(), ONLY_TEST_NET, method="GET", path="/elsewhere"), id="1-before-404-elsewhere"),
    pytest.param(Case(ip_refused(), ONLY_TEST_NET, method="OPTIONS", token=None), id="1-cors-preflight"),
    pytest.param(
        Case(ip_refused("198.51.100.7"), BEHIND_PROXY, {XFF: "198.51.100.7"}), id="1-xff-from-trusted-proxy-outside"
    ),
    pytest.param(
        Case(ip_refused("198.51.100.7"), BEHIND_PROXY, {XFF: "203.0.113.7, 198.51.100.7"}),
        id="1-xff-rightmost-untrusted-hop-decides",
    ),
    pytest.param(
        Case(ip_refused("198.51.100.7"), BEHIND_PROXY, {XFF: "::ffff:198.51.100.7"}), id="1-xff-ipv4-mapped-normalised"
    ),
    pytest.param(Case(ip_refused(), BEHIND_PROXY), id="1-trusted-proxy-without-xff-is-itself-the-client"),
    pytest.param(
        Case(
            ip_refused(), {"trusted_proxies": ("10.0.0.1",), "allowed_ips": ("203.0.113.0/24",)}, {XFF: "203.0.113.7"}
        ),
        id="1-xff-from-untrusted-peer-is-ignored",
    ),
    pytest.param(
        Case(ip_refused(), {"allowed_ips": ("203.0.113.0/24",)}, {XFF: "203.0.113.7"}),
        id="1-xff-ignored-without-trusted-proxies",
    ),
    pytest.param(
        Case(
            ip_refused("198.51.100.7"), BEHIND_PROXY, {XFF: "198.51.100.7"}, method="GET", path="/healthz", token=None
        ),
        id="1-healthz-behind-proxy",
    ),
    *[
        pytest.param(Case(ip_refused(), VIA_PROXY, {XFF: chain}), id=f"1-malformed-xff-{name}")
        for name, chain in [
            ("not-an-ip", "not-an-ip"),
            ("with-port", "203.0.113.7:443"),
            ("garbage-rightmost", "203.0.113.7, garbage"),
            ("trailing-comma", "203.0.113.7,"),
            ("only-commas", " , "),
            ("bracketed-ipv4", "[203.0.113.7]"),
            ("space-separated", "203.0.113.7 198.51.100.7"),
            ("too-many-hops", "203.0.113.7," * 40 + "203.0.113.8"),
            ("over-long", "1" * 9000),
            ("non-ascii", "203.0.113.\u00e9"),
            ("host-name", "proxy.example"),
        ]
    ],
    pytest.param(
        Case(ip_refused(), VIA_PROXY, {XFF: "not-an-ip"}, method="GET", path="/healthz", token=None),
        id="1-malformed-xff-on-healthz",
    ),
]

STEP_2 = [
    pytest.param(Case(host_invalid(), host_header=None, token=None), id="2-missing-host-no-token-is-400-not-401"),
    pytest.param(Case(host_invalid(), host_header=None), id="2-missing-host-good-token"),
    *[
        pytest.param(Case(host_invalid(), host_header=host, token=None), id=f"2-malformed-{name}")
        for name, host in [
            ("port-suffix-trick", "127.0.0.1:8080.evil"),
            ("unclosed-bracket", "[::1"),
            ("space", "a b"),
            ("port-out-of-range", "host:99999"),
            ("port-zero", "localhost:0"),
            ("empty-port", "localhost:"),
            ("two-ports", "127.0.0.1:80:80"),
            ("short-ipv4", "127.1"),
            ("empty", ""),
            ("junk-after-bracket", "[::1]x"),
            ("zone-id", "[::1%25lo]"),
            ("non-ascii", "\u00e9vil.example"),
            ("userinfo", "user@localhost"),
        ]
    ],
    *[
        pytest.param(Case(host_refused(), host_header=host, token=None), id=f"2-not-allowed-{name}")
        for name, host in [
            ("evil", "evil.example"),
            ("loopback-prefix", "localhost.evil.example"),
            ("ipv4-prefix", "127.0.0.1.nip.io"),
            ("evil-with-port", "evil.example:8765"),
            ("other-ipv6", "[::2]"),
            ("any-address", "0.0.0.0"),
            ("subdomain-of-localhost", "www.localhost"),
        ]
    ],
    pytest.param(Case(host_refused(), APP_HOST, host_header="mcp.example.com"), id="2-entry-with-port-needs-the-port"),
    pytest.param(Case(host_refused(), APP_HOST, host_header="mcp.example.com:443"), id="2-entry-with-port-other-port"),
    pytest.param(Case(host_refused(), APP_HOST, host_header="sub.mcp.example.com:8443"), id="2-no-implicit-subdomains"),
    pytest.param(
        Case(host_refused(), headers={"Origin": "http://evil.example"}, host_header="evil.example", token=None),
        id="2-bad-host-bad-origin-no-token-is-host",
    ),
]

STEP_3 = [
    *[
        pytest.param(Case(origin_refused(), headers={"Origin": origin}), id=f"3-{name}-with-good-token")
        for name, origin in [
            ("null", "null"),
            ("file", "file://"),
            ("evil", "http://evil.example"),
            ("loopback-prefix", "http://localhost.evil.example"),
            ("ipv4-prefix", "https://127.0.0.1.evil"),
            ("trailing-slash", "http://localhost:3000/"),
            ("websocket-scheme", "ws://localhost"),
            ("empty", ""),
            ("bad-port", "http://localhost:99999"),
            ("userinfo", "http://evil@localhost"),
            ("extension", "chrome-extension://abcdefghijklmnop"),
        ]
    ],
    *[
        pytest.param(Case(origin_refused(), APP_ORIGIN, {"Origin": origin}), id=f"3-configured-exact-only-{name}")
        for name, origin in [
            ("explicit-default-port", "https://app.example.com:443"),
            ("other-scheme", "http://app.example.com"),
            ("other-port", "https://app.example.com:8443"),
            ("suffix", "https://app.example.com.evil"),
            ("subdomain", "https://sub.app.example.com"),
            ("path", "https://app.example.com/app"),
        ]
    ],
    pytest.param(Case(origin_refused(), headers={"Origin": "null"}, token=WRONG_TOKEN), id="3-bad-origin-wrong-token"),
    pytest.param(Case(origin_refused(), headers={"Origin": "null"}, token=None), id="3-bad-origin-no-token"),
]

STEP_4 = [
    pytest.param(
        Case(rate_limited("198.51.100.1"), RATE_LIMITED, {XFF: "198.51.100.1"}, exhaust="198.51.100.1"),
        id="4-rate-limited-with-the-right-token",
    ),
    pytest.param(
        Case(
            rate_limited("198.51.100.1"), RATE_LIMITED, {XFF: "198.51.100.1"}, token=WRONG_TOKEN, exhaust="198.51.100.1"
        ),
        id="4-rate-limited-with-a-wrong-token",
    ),
    pytest.param(
        Case(rate_limited("198.51.100.1"), RATE_LIMITED, {XFF: "198.51.100.1"}, token=None, exhaust="198.51.100.1"),
        id="4-rate-limited-without-token",
    ),
    pytest.param(
        Case(rate_limited("2001:db8::2"), RATE_LIMITED, {XFF: "2001:db8::2"}, exhaust="2001:db8::1"),
        id="4-same-ipv6-64-shares-the-limit",
    ),
    pytest.param(
        Case(
            rate_limited("198.51.100.1"),
            RATE_LIMITED,
            {XFF: "198.51.100.1", "Content-Type": "text/plain"},
            exhaust="198.51.100.1",
        ),
        id="4-before-transport-rules",
    ),
]

STEP_5 = [
    pytest.param(Case(unauthorized("missing"), token=None), id="5-missing"),
    pytest.param(
        Case(unauthorized("malformed_or_not_bearer"), headers={"Authorization": "Basic dXNlcjpwYXNz"}, token=None),
        id="5-not-bearer",
    ),
    pytest.param(Case(unauthorized("invalid_token"), token=WRONG_TOKEN), id="5-wrong-token"),
    pytest.param(
        Case(unauthorized("missing"), headers={"Content-Type": "text/plain"}, token=None), id="5-before-transport-rules"
    ),
    pytest.param(Case(unauthorized("missing"), method="DELETE", token=None), id="5-delete"),
    pytest.param(Case(unauthorized("missing"), method="GET", token=None), id="5-get"),
]

STEP_6 = [
    pytest.param(Case(unsupported_media_type(), headers={"Content-Type": "text/plain"}), id="6-content-type"),
]


@pytest.mark.parametrize("case", STEP_1 + STEP_2 + STEP_3 + STEP_4 + STEP_5 + STEP_6)
def test_each_step_refuses_with_the_contract_answer(case: Case, logs: LogWatch) -> None:
    run_case(case, logs)


# --- the order: the first failing step answers, whatever else is wrong -------------

# 2001:db8::1 is allowed and its /64 can be rate-limited; 2001:db8::2 shares that
# /64 but is not allowed: so a request can fail step 1 and step 4 at once.
ORDER_SETTINGS: dict[str, Any] = {**RATE_LIMITED, "allowed_ips": ("2001:db8::1", "203.0.113.0/24")}


def _order_case(failing: tuple[int, ...]) -> Case:
    if 1 in failing:
        client = "2001:db8::2"
    elif 4 in failing:
        client = "2001:db8::1"
    else:
        client = "203.0.113.9"
    headers: dict[str, str | None] = {XFF: client}
    if 3 in failing:
        headers["Origin"] = "http://evil.example"
    if 6 in failing:
        headers["Content-Type"] = "text/plain"
    expect = {
        1: ip_refused,
        2: host_refused,
        3: origin_refused,
        4: rate_limited,
        5: lambda c: unauthorized("invalid_token", c),
        6: unsupported_media_type,
    }[min(failing)](client)
    return Case(
        expect,
        ORDER_SETTINGS,
        headers,
        token=WRONG_TOKEN if 5 in failing else TOKEN,
        host_header="evil.example" if 2 in failing else "127.0.0.1",
        exhaust="2001:db8::1" if 4 in failing else None,
    )


ORDER_CASES = [
    pytest.param(_order_case(failing), id=f"first-{min(failing)}-of-{'+'.join(map(str, failing))}")
    for size in range(1, 7)
    for failing in itertools.combinations(range(1, 7), size)
]


def as_environ(case: Case) -> dict[str, Any]:
    """The WSGI environ a server would build for the case's request, from the test client on loopback."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": case.method,
        "PATH_INFO": case.path,
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "HTTP_ACCEPT": ACCEPT_BOTH,
    }
    if case.host_header is not None:
        environ["HTTP_HOST"] = case.host_header
    if case.token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {case.token}"
    for name, value in case.headers.items():
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


def order_guard() -> Guard:
    """The guard of a server with ORDER_SETTINGS, built the way the app builds it."""
    config = Config(token=TOKEN, **ORDER_SETTINGS)
    auth, _warnings = open_token_source(config, {})
    return Guard(config, auth)


@pytest.mark.parametrize("case", ORDER_CASES)
def test_the_first_failing_step_answers(case: Case) -> None:
    """The guard on plain environ dicts: steps 1-5 in order, the first failure raised and no later
    step run. (Each step's refusal on the wire, and its audit, are confirmed over sockets below.)"""
    guard = order_guard()
    if case.exhaust is not None:
        for n in range(RATE_LIMITED["rate_limit_failures"]):  # distinct wrong tokens: each one a guess
            spend = Case(
                unauthorized("invalid_token", case.exhaust), headers={XFF: case.exhaust}, token=f"{WRONG_TOKEN}-{n}"
            )
            with pytest.raises(Unauthorized):
                guard.admit(as_environ(spend))
    environ = as_environ(case)
    expect = case.expect
    if expect.step == "transport":  # only step 6 fails: the guard admits, the transport refuses
        assert guard.admit(environ).principal.name == expect.token
        return
    with pytest.raises(Refusal) as info:
        guard.admit(environ)
    refusal = info.value
    reason = refusal.audit_reason if isinstance(refusal, Unauthorized) else refusal.error
    assert (refusal.status, refusal.error, refusal.step, reason) == (
        expect.status,
        expect.error,
        expect.step,
        expect.reason,
    )
    assert environ[ENVIRON_CLIENT_KEY] == expect.client


# Over real sockets, for each step: that step and every later one fail, and that step answers
# (status, body, headers, one audit event).
ORDER_OVER_SOCKETS = [
    pytest.param(_order_case(tuple(range(first, 7))), id=f"first-{first}-of-{'+'.join(map(str, range(first, 7)))}")
    for first in range(1, 7)
]


@pytest.mark.parametrize("case", ORDER_OVER_SOCKETS)
def test_the_first_failing_step_answers_over_sockets(case: Case, logs: LogWatch) -> None:
    run_case(case, logs)


# --- step 1: who the client is ------------------------------------------------------


def call_tool(
    port: int,
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    token: str | None = TOKEN,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """initialize, initialized, tools/call: each request with the same headers (and from `host`)."""
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    common: dict[str, Any] = {"token": token, "host": host, "host_header": host_header}
    init = request(port, body=initialize_body(), headers=headers, **common)
    assert init.status == 200, init
    session = {"Mcp-Session-Id": init.header("Mcp-Session-Id") or "", **(headers or {})}
    note = request(port, body={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session, **common)
    assert note.status == 202, note
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}
    return request(port, body=body, headers=session, **common)


def whoami_address(response: RawResponse) -> str:
    assert response.status == 200, response
    return str(response.json()["result"]["structuredContent"]["client_address"])


@pytest.mark.parametrize(
    "allowed_ips",
    [
        pytest.param(("127.0.0.1",), id="single-address"),
        pytest.param(("127.0.0.0/8",), id="cidr"),
        pytest.param(("10.0.0.0/8", "127.0.0.1"), id="one-of-several"),
        pytest.param(("::ffff:127.0.0.1",), id="ipv4-mapped-entry"),
        pytest.param(("*",), id="any"),
    ],
)
def test_an_allowed_client_passes_step_1(allowed_ips: tuple[str, ...]) -> None:
    with live_server(allowed_ips=allowed_ips) as live:
        assert whoami_address(call_tool(live.port, "whoami")) == "127.0.0.1"


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        pytest.param("203.0.113.7", "203.0.113.7", id="one-hop"),
        pytest.param("198.51.100.1, 203.0.113.7", "203.0.113.7", id="rightmost-untrusted-hop"),
        pytest.param("203.0.113.7, 127.0.0.1", "203.0.113.7", id="trusted-hops-skipped"),
        pytest.param("::ffff:203.0.113.7", "203.0.113.7", id="ipv4-mapped"),
        pytest.param("[2001:db8::7]", "2001:db8::7", id="bracketed-ipv6"),
        pytest.param("2001:db8::7%eth0", "2001:db8::7", id="zone-id-dropped"),
        pytest.param("garbage, 203.0.113.7", "203.0.113.7", id="client-written-left-part-not-read"),
    ],
)
def test_from_a_trusted_proxy_x_forwarded_for_decides_the_client(chain: str, client: str) -> None:
    with live_server(**VIA_PROXY, allowed_ips=("203.0.113.0/24", "2001:db8::/32")) as live:
        assert whoami_address(call_tool(live.port, "whoami", headers={XFF: chain})) == client


def test_from_an_untrusted_peer_x_forwarded_for_changes_nothing() -> None:
    with live_server(trusted_proxies=("10.0.0.1",), allowed_ips=("127.0.0.1",)) as live:
        assert whoami_address(call_tool(live.port, "whoami", headers={XFF: "198.51.100.7"})) == "127.0.0.1"


def test_healthz_needs_no_token_but_goes_through_step_1() -> None:
    with live_server(**VIA_PROXY, allowed_ips=("203.0.113.0/24",)) as live:
        health = request(live.port, "GET", path="/healthz", token=None, headers={XFF: "203.0.113.7"})
        assert (health.status, health.json()) == (200, {"status": "ok"})
        refused = request(live.port, "GET", path="/healthz", token=None, headers={XFF: "198.51.100.7"})
        assert (refused.status, refused.json()["error"]["data"]["reason"]) == (403, "ip_not_allowed")


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="this machine has no IPv6 loopback")


@needs_ipv6
@pytest.mark.parametrize("allowed_ips", [("::1",), ("::1/128",), ("::/0",), ("*",)])
def test_an_ipv6_loopback_client_is_allowed(allowed_ips: tuple[str, ...]) -> None:
    with live_server(host="::1", allowed_ips=allowed_ips) as live:
        assert whoami_address(call_tool(live.port, "whoami", host="::1")) == "::1"


@needs_ipv6
@pytest.mark.parametrize("allowed_ips", [("127.0.0.0/8",), ("::2",), ("2001:db8::/32",)])
def test_an_ipv6_loopback_client_is_refused(allowed_ips: tuple[str, ...], logs: LogWatch) -> None:
    with live_server(host="::1", allowed_ips=allowed_ips) as live:
        since = logs.mark()
        response = request(live.port, body=initialize_body(), host="::1", host_header=f"[::1]:{live.port}", token=None)
        assert_refusal(response, ip_refused("::1"))
        assert_audited_once(logs, since, ip_refused("::1"))


# --- steps 2 and 3: the names a browser sends ------------------------------------------


@pytest.mark.parametrize(
    ("settings", "host_header"),
    [
        pytest.param({}, "localhost", id="localhost"),
        pytest.param({}, "localhost:8765", id="localhost-any-port"),
        pytest.param({}, "LocalHost:1", id="case-insensitive"),
        pytest.param({}, "localhost.", id="trailing-dot"),
        pytest.param({}, "127.0.0.1:65535", id="ipv4-loopback"),
        pytest.param({}, "[::1]:1234", id="ipv6-loopback-with-port"),
        pytest.param({}, "[::1]", id="ipv6-loopback"),
        pytest.param({}, "[0:0:0:0:0:0:0:1]:80", id="ipv6-loopback-uncompressed"),
        pytest.param(APP_HOST, "mcp.example.com:8443", id="configured-with-its-port"),
        pytest.param(APP_HOST, "MCP.Example.COM:8443", id="configured-case-insensitive"),
        pytest.param(APP_HOST, "localhost:9", id="configured-adds-to-defaults"),
        pytest.param(
            {"allowed_hosts": ("Other.Example",)}, "other.example:4444", id="configured-without-port-any-port"
        ),
    ],
)
def test_allowed_hosts_pass_step_2(settings: dict[str, Any], host_header: str) -> None:
    with live_server(**settings) as live:
        assert request(live.port, body=initialize_body(), host_header=host_header).status == 200


@pytest.mark.parametrize(
    ("settings", "origin"),
    [
        pytest.param({}, None, id="absent"),
        pytest.param({}, "http://localhost:3000", id="localhost-3000"),
        pytest.param({}, "https://localhost", id="https-localhost"),
        pytest.param({}, "http://127.0.0.1:8080", id="ipv4-loopback"),
        pytest.param({}, "http://[::1]:5173", id="ipv6-loopback"),
        pytest.param({}, "HTTP://LOCALHOST:3000", id="case-insensitive"),
        pytest.param(APP_ORIGIN, "https://app.example.com", id="configured-exact"),
    ],
)
def test_allowed_origins_pass_step_3(settings: dict[str, Any], origin: str | None) -> None:
    with live_server(**settings) as live:
        response = request(live.port, body=initialize_body(), headers={"Origin": origin})  # type: ignore[dict-item]
        assert response.status == 200
        assert response.header("Access-Control-Allow-Origin") == origin


# --- step 4: failed authentication is rate limited per client ---------------------------


def test_rate_limit_is_per_client_address(logs: LogWatch) -> None:
    with live_server(**RATE_LIMITED) as live:
        spend_failure_budget(live, "198.51.100.1")
        limited = request(live.port, body=initialize_body(), headers={XFF: "198.51.100.1"})
        assert_refusal(limited, rate_limited("198.51.100.1"))
        # Other clients, and the proxy itself, still authenticate normally.
        assert request(live.port, body=initialize_body(), headers={XFF: "198.51.100.2"}).status == 200
        assert request(live.port, body=initialize_body(), headers={XFF: "2001:db8:1::1"}).status == 200
        assert request(live.port, body=initialize_body()).status == 200
        # ...and have their own budget.
        wrong = request(live.port, body=initialize_body(), headers={XFF: "198.51.100.2"}, token=WRONG_TOKEN)
        assert wrong.status == 401
        assert request(live.port, body=initialize_body(), headers={XFF: "198.51.100.2"}).status == 200


def test_successful_requests_never_count() -> None:
    client = {XFF: "198.51.100.3"}
    with live_server(**RATE_LIMITED) as live:
        session_id = open_session(live.port)  # a different client; does not matter
        for _ in range(10):
            assert request(live.port, body=initialize_body(), headers=client).status == 200
            assert rpc(live.port, session_id, "ping").status == 200
        for n in range(3):
            assert request(live.port, body=initialize_body(), headers=client, token=f"{WRONG_TOKEN}-{n}").status == 401
            assert request(live.port, body=initialize_body(), headers=client).status == (200 if n < 2 else 429)


def test_refusals_before_step_4_do_not_count() -> None:
    client = {XFF: "198.51.100.4"}
    with live_server(**RATE_LIMITED) as live:
        for _ in range(5):
            assert (
                request(
                    live.port, body=initialize_body(), headers=client, token=WRONG_TOKEN, host_header="evil.example"
                ).status
                == 403
            )
            assert (
                request(
                    live.port, body=initialize_body(), headers={**client, "Origin": "null"}, token=WRONG_TOKEN
                ).status
                == 403
            )
        assert request(live.port, body=initialize_body(), headers=client).status == 200


# --- step 5: one 401 for every way of not having the token --------------------------------


def normalised(response: RawResponse) -> bytes:
    """Status line, every header but Date, and the body: what must be byte-identical."""
    lines = [line for line in response.raw_head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + response.body


UNAUTHORIZED_VARIANTS = [
    pytest.param(None, "missing", id="no-authorization"),
    pytest.param("Bearer", "malformed_or_not_bearer", id="bearer-without-token"),
    pytest.param("Bearer  ", "malformed_or_not_bearer", id="bearer-and-spaces"),
    pytest.param("Basic dXNlcjpQUkVTRU5URUQtQkFTSUM=", "malformed_or_not_bearer", id="basic"),
    pytest.param("Basic abc", "malformed_or_not_bearer", id="basic-abc"),
    pytest.param(f"Token {TOKEN}", "malformed_or_not_bearer", id="other-scheme-right-token"),
    pytest.param(TOKEN, "malformed_or_not_bearer", id="no-scheme-right-token"),
    pytest.param(f"Bearer {WRONG_TOKEN}", "invalid_token", id="bearer-wrong"),
    pytest.param(f"bearer {TOKEN}x", "invalid_token", id="right-token-plus-x"),
    pytest.param(f"Bearer {TOKEN[:-1]}", "invalid_token", id="right-token-prefix"),
    pytest.param(f"Bearer {TOKEN} {TOKEN}", "malformed_or_not_bearer", id="two-tokens"),
    pytest.param("Bearer PRESENTED-LATIN1-t\u00f6k\u00e9n-1a2b", "invalid_token", id="non-ascii-latin1"),
    pytest.param(
        "Bearer " + "PRESENTED-UTF8-t\u00f6k\u00e9n-3c4d".encode().decode("latin-1"),
        "invalid_token",
        id="non-ascii-utf8",
    ),
    pytest.param("Bearer PRESENTED-NUL\x00-5e6f", "invalid_token", id="nul"),
    pytest.param("Bearer PRESENTED-DEL\x7f-7a8b", "invalid_token", id="del"),
    pytest.param("Bearer " + "PRESENTED-5KB-" + "A" * 5000, "malformed_or_not_bearer", id="5kb-over-app-limit"),
    pytest.param("Bearer " + "PRESENTED-60KB-" + "A" * 60_000, "malformed_or_not_bearer", id="60kb"),
]


def test_a_header_line_over_64kib_is_refused_before_the_pipeline() -> None:
    """http.server refuses header lines over 64 KiB with 431 before the app runs; nothing is echoed."""
    with live_server(**NO_RATE_LIMIT) as live:
        presented = "PRESENTED-100KB-" + "A" * 100_000
        response = request(
            live.port, body=initialize_body(), token=None, headers={"Authorization": f"Bearer {presented}"}
        )
        assert response.status == 431
        assert presented[:24].encode() not in response.raw_head + response.body
        assert request(live.port, body=initialize_body()).status == 200


def _presented(authorization: str | None) -> str:
    if authorization is None:
        return ""
    scheme, _, rest = authorization.partition(" ")
    return rest.strip() or (scheme if scheme.lower() != "bearer" else "")


@pytest.mark.parametrize(("authorization", "reason"), UNAUTHORIZED_VARIANTS)
def test_every_failed_token_gets_the_same_401(authorization: str | None, reason: str, logs: LogWatch) -> None:
    presented = _presented(authorization)
    if "PRESENTED-" in presented:
        logs.secrets.add(presented[presented.index("PRESENTED-") :][:24])
    with live_server(**NO_RATE_LIMIT) as live:
        reference = request(live.port, body=initialize_body(), token=None)
        since = logs.mark()
        headers: dict[str, Any] = {"Authorization": authorization}
        response = request(live.port, body=initialize_body(), token=None, headers=headers)
        assert response.status == 401, response
        assert normalised(response) == normalised(reference)
        assert response.header("WWW-Authenticate") == WWW_AUTHENTICATE_401
        assert_refusal(response, unauthorized(reason))
        assert_audited_once(logs, since, unauthorized(reason))
        everything = response.raw_head + response.body
        assert TOKEN.encode() not in everything
        if len(presented) >= 4:
            assert presented.encode("latin-1") not in everything


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Bearer {TOKEN}", id="canonical"),
        pytest.param(f"bearer {TOKEN}", id="lowercase"),
        pytest.param(f"BEARER {TOKEN}", id="uppercase"),
        pytest.param(f"bEaReR {TOKEN}", id="mixed-case"),
        pytest.param(f"Bearer\t{TOKEN}", id="tab"),
        pytest.param(f"Bearer  \t {TOKEN}", id="spaces-and-tab"),
        pytest.param(f"Bearer {TOKEN} \t", id="trailing-whitespace"),
    ],
)
def test_the_right_token_is_accepted_in_every_allowed_spelling(authorization: str) -> None:
    with live_server() as live:
        response = request(live.port, body=initialize_body(), token=None, headers={"Authorization": authorization})
        assert response.status == 200, response


# --- step 7 and sessions: scopes and revocation ---------------------------------------------


@dataclass(frozen=True)
class ScopedTokens:
    path: Path
    full: str
    echo_only: str


@pytest.fixture
def scoped(tmp_path: Path, logs: LogWatch) -> ScopedTokens:
    path = tmp_path / "tokens.json"
    tokens = ScopedTokens(path, add_token(path, "full", None), add_token(path, "echo-only", ["echo"]))
    logs.secrets |= {tokens.full, tokens.echo_only}
    return tokens


def tool_names(response: RawResponse) -> list[str]:
    assert response.status == 200, response
    return sorted(tool["name"] for tool in response.json()["result"]["tools"])


def test_tools_list_shows_only_what_the_token_may_call(scoped: ScopedTokens) -> None:
    with live_server(tokens_file=str(scoped.path)) as live:
        full = open_session(live.port, token=scoped.full)
        echo_only = open_session(live.port, token=scoped.echo_only)
        assert tool_names(rpc(live.port, full, "tools/list", token=scoped.full)) == ["echo", "whoami"]
        assert tool_names(rpc(live.port, echo_only, "tools/list", token=scoped.echo_only)) == ["echo"]


def test_a_tool_outside_the_scope_is_403_insufficient_scope(scoped: ScopedTokens, logs: LogWatch) -> None:
    with live_server(tokens_file=str(scoped.path)) as live:
        session_id = open_session(live.port, token=scoped.echo_only)
        since = logs.mark()
        response = rpc(live.port, session_id, "tools/call", {"name": "whoami", "arguments": {}}, token=scoped.echo_only)
        assert (response.status, response.reason) == (403, "Forbidden")
        assert response.header("WWW-Authenticate") == WWW_AUTHENTICATE_SCOPE
        assert response.header("Content-Type") == "application/json"
        body = response.json()
        assert set(body) == {"jsonrpc", "id", "error"}
        assert (body["jsonrpc"], body["id"], body["error"]["code"]) == ("2.0", 7, FORBIDDEN)
        assert "whoami" in body["error"]["message"]
        # One denial event, with the token's name now that it is known. (The
        # dispatcher also records the attempt as a tool_call with outcome "denied".)
        denials = logs.denials(since)
        assert len(denials) == 1, denials
        assert (denials[0]["step"], denials[0]["reason"], denials[0]["client"]) == (
            "dispatch",
            "insufficient_scope",
            "127.0.0.1",
        )
        assert denials[0]["token"] == "echo-only"
        assert all(event["outcome"] == "denied" for event in logs.audits(since) if event["event"] == "tool_call")
        # The same session may still call what it is allowed to.
        echo_call = {"name": "echo", "arguments": {"text": "hi"}}
        echo = rpc(live.port, session_id, "tools/call", echo_call, token=scoped.echo_only)
        assert echo.json()["result"]["content"] == [{"type": "text", "text": "hi"}]


def test_a_session_answers_only_its_own_principal(scoped: ScopedTokens) -> None:
    with live_server(tokens_file=str(scoped.path)) as live:
        session_id = open_session(live.port, token=scoped.full)
        unknown = rpc(live.port, "no-such-session", "tools/list", token=scoped.echo_only)
        borrowed = rpc(live.port, session_id, "tools/list", token=scoped.echo_only)
        assert borrowed.status == 404
        assert normalised(borrowed) == normalised(unknown)
        stream_headers = {"Mcp-Session-Id": session_id, "Accept": "text/event-stream"}
        assert request(live.port, "GET", headers=stream_headers, token=scoped.echo_only).status == 404
        delete = request(live.port, "DELETE", headers={"Mcp-Session-Id": session_id}, token=scoped.echo_only)
        assert delete.status == 404
        # The attempts neither ended nor took over the session.
        assert tool_names(rpc(live.port, session_id, "tools/list", token=scoped.full)) == ["echo", "whoami"]


def _counting_server(calls: list[str]) -> McpServer:
    server = build_diagnostics()

    @server.tool()
    def touch() -> str:
        """Record that the tool ran."""
        calls.append("touch")
        return "touched"

    return server


def test_a_revoked_token_is_refused_at_its_next_request(scoped: ScopedTokens, logs: LogWatch) -> None:
    calls: list[str] = []
    with live_server(_counting_server(calls), tokens_file=str(scoped.path)) as live:
        session_id = open_session(live.port, token=scoped.full)
        touch = {"name": "touch", "arguments": {}}
        assert rpc(live.port, session_id, "tools/call", touch, token=scoped.full).status == 200
        assert calls == ["touch"]
        never_valid = request(live.port, body=initialize_body(), token=WRONG_TOKEN)

        revoke_token(scoped.path, "full")
        since = logs.mark()
        refused = rpc(live.port, session_id, "tools/call", touch, token=scoped.full)
        assert refused.status == 401
        assert normalised(refused) == normalised(never_valid)
        assert calls == ["touch"], "the tool ran for a revoked token"
        assert_audited_once(logs, since, unauthorized("invalid_token"))
        stream_headers = {"Mcp-Session-Id": session_id, "Accept": "text/event-stream"}
        assert request(live.port, "GET", headers=stream_headers, token=scoped.full).status == 401
        assert request(live.port, body=initialize_body(), token=scoped.full).status == 401
        # The other token is untouched.
        other = open_session(live.port, token=scoped.echo_only)
        assert tool_names(rpc(live.port, other, "tools/list", token=scoped.echo_only)) == ["echo"]


class _RevokedAfterStep5(TokenSource):
    """A token that still authenticates but is no longer current: revocation landing between steps 5 and 7."""

    def __init__(self) -> None:
        self.description = "test source"
        self._inner = StaticToken(TOKEN, "test source", name="full")
        self.current = True

    def authenticate(self, presented: bytes) -> Principal | None:
        return self._inner.authenticate(presented)

    def is_current(self, principal: Principal) -> bool:
        return self.current and self._inner.is_current(principal)


@contextmanager
def _serve(app: McpAuthApp) -> Iterator[int]:
    embedded = EmbeddedServer(app, "127.0.0.1", 0)
    thread = threading.Thread(target=embedded.serve_forever, daemon=True)
    thread.start()
    try:
        yield embedded.port
    finally:
        app.close()
        embedded.shutdown()
        embedded.close()
        thread.join(timeout=10)


def test_step_7_refuses_a_principal_revoked_after_step_5(logs: LogWatch) -> None:
    calls: list[str] = []
    source = _RevokedAfterStep5()
    app = McpAuthApp(_counting_server(calls).dispatcher, Config(token=TOKEN), auth=AuthSetup(source))
    with _serve(app) as port:
        session_id = open_session(port)
        source.current = False
        since = logs.mark()
        refused = rpc(port, session_id, "tools/call", {"name": "touch", "arguments": {}})
        assert calls == []
        assert refused.status == 401
        assert refused.header("WWW-Authenticate") == WWW_AUTHENTICATE_401
        assert refused.json()["error"]["data"]["reason"] == "unauthorized"
        denials = logs.denials(since)
        assert len(denials) == 1, denials
        assert (denials[0]["step"], denials[0]["reason"], denials[0]["token"]) == ("dispatch", "revoked", "full")


# --- audit: the events themselves -----------------------------------------------------------


def test_audit_events_are_structured_and_hold_no_request_text(logs: LogWatch) -> None:
    with live_server(**VIA_PROXY, allowed_ips=("203.0.113.0/24",)) as live:
        since = logs.mark()
        request(
            live.port,
            body=initialize_body(),
            token=WRONG_TOKEN,
            headers={XFF: "198.51.100.9", "Origin": "http://evil.example"},
            host_header="evil.example",
        )
        request(
            live.port,
            body=initialize_body(),
            token=WRONG_TOKEN,
            headers={XFF: "203.0.113.9"},
            host_header="evil.example",
        )
        request(live.port, body=initialize_body(), token=WRONG_TOKEN, headers={XFF: "203.0.113.9"})
        events = logs.audits(since)
        assert [(e["step"], e["reason"], e["client"]) for e in events] == [
            ("client_address", "ip_not_allowed", "198.51.100.9"),
            ("host", "host_not_allowed", "203.0.113.9"),
            ("bearer_token", "invalid_token", "203.0.113.9"),
        ]
        for event in events:
            assert set(event) == {"time", "event", "client", "step", "reason"}
            assert "evil" not in json.dumps(event)
        records = [r for r in logs.caplog.records[since:] if r.name == "mcp_auth.audit"]
        assert all(r.levelno == logging.WARNING for r in records)
