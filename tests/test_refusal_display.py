"""What a client shows its user when it is refused, and the 401's hint for each token source.

The refusal bodies are JSON-RPC error responses so that real MCP clients show
their message (the `mcp` client reads a non-2xx body only when it is one); the
refusal code stays machine-readable as `error.data.reason`. The 401's hint
fits the server's token source and never depends on what the client sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from support import TOKEN, Live, initialize_body, live_server, open_session, raw_exchange, request, rpc

from mcp_auth.auth.tokens import add_token, revoke_token
from mcp_auth.config import Config, open_token_source
from mcp_auth.guard import Guard
from mcp_auth.refusals import Unauthorized

WRONG_TOKEN = "wrong-token-0123456789abcdefghijklmn"
# What the old 401 said whatever the token source was.
OLD_HINT = "'python -m mcp_auth token show' prints the default token"


def client_error(url: str, token: str | None) -> str:
    """The message the `mcp` 2.3.0 client raises when it cannot get the tool list."""

    async def main() -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                await client.list_tools()

    try:
        asyncio.run(main())
    except BaseException as exc:  # the client wraps its error in exception groups
        pending: list[BaseException] = [exc]
        while pending:
            current = pending.pop()
            if isinstance(current, MCPError):
                return str(current)
            if isinstance(current, BaseExceptionGroup):
                pending.extend(current.exceptions)
        raise
    raise AssertionError("the client was not refused")


@pytest.mark.parametrize(
    ("settings", "token", "expected"),
    [
        pytest.param(
            {}, None, ["A valid bearer token is required", "token this server was started with"], id="401-none"
        ),
        pytest.param({}, WRONG_TOKEN, ["A valid bearer token is required"], id="401-wrong"),
        pytest.param({"allowed_ips": ("10.0.0.0/8",)}, TOKEN, ["allowed networks", "--allowed-ip"], id="403-ip"),
    ],
)
def test_the_mcp_client_shows_the_refusal_message(
    settings: dict[str, Any], token: str | None, expected: list[str]
) -> None:
    with live_server(**settings) as live:
        message = client_error(live.url, token)
    for text in expected:
        assert text in message, message
    assert "Server returned an error response" not in message


def test_refusal_body_is_a_jsonrpc_error_with_the_reason(live: Live) -> None:
    refused = request(live.port, body=initialize_body(), token=WRONG_TOKEN)
    assert refused.status == 401
    assert refused.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32001, "message": refused.json()["error"]["message"], "data": {"reason": "unauthorized"}},
    }


# --- the 401 hint fits the token source -------------------------------------------------


def _guard(config: Config) -> Guard:
    auth, _ = open_token_source(config, os.environ)
    return Guard(config, auth)


def _environ(authorization: str | None) -> dict[str, Any]:
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8765", "REQUEST_METHOD": "POST"}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    return environ


def _answer(guard: Guard, authorization: str | None) -> tuple[str, list[tuple[str, str]], bytes]:
    with pytest.raises(Unauthorized) as refused:
        guard.admit(_environ(authorization))
    captured: list[Any] = []
    body = refused.value(_environ(authorization), lambda status, headers: captured.extend([status, headers]))
    return captured[0], captured[1], b"".join(body)


BAD_AUTHORIZATIONS = [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer " + WRONG_TOKEN, "bearer\t" + WRONG_TOKEN + "x"]


def _sources(tmp_path: Path) -> dict[str, tuple[Config, list[str], list[str]]]:
    """source -> (config, texts the hint must contain, secrets it must not)."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    tokens_file = tmp_path / "tokens.json"
    named = add_token(tokens_file, "ci", ["echo"])
    environment: Mapping[str, str] = {"MCP_AUTH_TOKEN": TOKEN}
    return {
        "default-file": (Config(), ["'python -m mcp_auth token show' prints the token"], []),
        "token-file": (Config(token_file=str(token_file)), [f"the token in the file {token_file}"], [TOKEN]),
        "tokens-file": (
            Config(tokens_file=str(tokens_file)),
            [f"tokens file {tokens_file}", f"token list --tokens-file {tokens_file}"],
            [named, "ci"],
        ),
        "environment": (Config.from_sources({}, environment), ["started with (MCP_AUTH_TOKEN)"], [TOKEN]),
        "flag": (Config.from_sources({"token": TOKEN}, {}), ["started with (--token)"], [TOKEN]),
    }


@pytest.mark.parametrize("source", ["default-file", "token-file", "tokens-file", "environment", "flag"])
def test_401_hint_fits_the_token_source_and_is_byte_identical(tmp_path: Path, source: str) -> None:
    config, expected, secrets = _sources(tmp_path)[source]
    guard = _guard(config)
    answers = {repr(_answer(guard, authorization)) for authorization in BAD_AUTHORIZATIONS}
    assert len(answers) == 1, answers  # missing, malformed, non-Bearer, wrong: the same status, headers, bytes
    status, _, body = _answer(guard, None)
    assert status == "401 Unauthorized"
    message = json.loads(body)["error"]["message"]
    for text in expected:
        assert text in message, message
    assert message.startswith("A valid bearer token is required: send it in the Authorization header")
    # Log redactors (Claude Code's) replace what follows "Authorization: Bearer": the message must not contain it.
    assert not re.search(r"authorization:\s*bearer", body.decode(), re.IGNORECASE), message
    if source != "default-file":
        assert OLD_HINT not in message and "token show" not in message
    for secret in secrets:
        assert secret not in body.decode()


def test_a_revoked_token_gets_the_same_401_as_a_wrong_one(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    alice = add_token(tokens_file, "alice", None)
    with live_server(tokens_file=str(tokens_file)) as live:
        session_id = open_session(live.port, token=alice)
        revoke_token(tokens_file, "alice")
        revoked = rpc(live.port, session_id, "tools/list", token=alice)
        wrong = request(live.port, body=initialize_body(), token=WRONG_TOKEN)
    assert (revoked.status, wrong.status) == (401, 401)
    assert revoked.body == wrong.body
    assert "tokens file" in revoked.json()["error"]["message"]


# --- a browser-style WebSocket while the subprotocol carrier is off ---------------------


def _upgrade(port: int, protocols: str, authorization: str | None = None) -> Any:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /mcp HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Protocol: {protocols}",
        *([f"Authorization: {authorization}"] if authorization else []),
    ]
    return raw_exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode())


def test_subprotocol_token_while_the_carrier_is_off_gets_a_hint(live: Live) -> None:
    right = _upgrade(live.port, f"mcp, mcp.auth.{TOKEN}")
    wrong = _upgrade(live.port, f"mcp, mcp.auth.{WRONG_TOKEN}")
    plain = _upgrade(live.port, "mcp")
    assert (right.status, wrong.status, plain.status) == (401, 401, 401)
    assert "--websocket-token-subprotocol" in right.json()["error"]["message"]
    assert right.body == wrong.body  # says nothing about the carried token
    assert TOKEN.encode() not in right.body
    assert "--websocket-token-subprotocol" not in plain.json()["error"]["message"]
    assert right.json()["error"]["data"] == {"reason": "unauthorized"}


def test_subprotocol_carrier_on_still_refuses_a_wrong_token_plainly() -> None:
    with live_server(websocket_token_subprotocol=True) as live:
        wrong = _upgrade(live.port, f"mcp, mcp.auth.{WRONG_TOKEN}")
    assert wrong.status == 401
    assert "--websocket-token-subprotocol" not in wrong.json()["error"]["message"]


# --- OAuth discovery finds a message, not metadata ---------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/.well-known/oauth-protected-resource/mcp", id="protected-resource"),
        pytest.param("GET", "/.well-known/oauth-authorization-server", id="authorization-server"),
        pytest.param("GET", "/.well-known/openid-configuration", id="openid"),
        pytest.param("POST", "/register", id="dynamic-registration"),
    ],
)
def test_oauth_discovery_is_told_this_server_uses_a_static_token(live: Live, method: str, path: str) -> None:
    answer = request(live.port, method=method, path=path, body={} if method == "POST" else None, token=None)
    assert answer.status == 404
    message = answer.json()["error"]["message"]
    assert "does not use OAuth" in message and "static bearer token in the Authorization header" in message
    assert not re.search(r"authorization:\s*bearer", message, re.IGNORECASE), message  # redactors mangle it
    assert "authorization_servers" not in answer.body.decode()


# --- the unexpected ---------------------------------------------------------------------


def test_an_unexpected_error_is_a_500_with_the_json_rpc_error_shape(caplog: pytest.LogCaptureFixture) -> None:
    """A bug behind the auth pipeline (here: a transport that raises) answers like every refusal,
    error.data.reason "internal_error", and tells the client nothing of the exception."""

    def broken_transport(environ: dict[str, Any], start_response: Any, admission: Any) -> Any:
        raise RuntimeError("secret detail of a bug")

    with live_server() as live, caplog.at_level(logging.ERROR, logger="mcp_auth"):
        live.app.http = broken_transport  # type: ignore[assignment]
        answer = request(live.port, body=initialize_body(), token=TOKEN)
    assert answer.status == 500
    assert answer.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": -32603,
            "message": "The server failed to handle this request",
            "data": {"reason": "internal_error"},
        },
    }
    assert "secret detail" not in answer.body.decode()
    logged = [r for r in caplog.records if r.getMessage().startswith("unexpected error")]
    assert len(logged) == 1 and logged[0].exc_info is not None
