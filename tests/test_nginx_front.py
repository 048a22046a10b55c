"""The documented nginx front (deploy/nginx.conf) in front of a real gunicorn gthread worker.

gunicorn reads request heads on its worker threads with no deadline: with
`--threads N`, N connections that never finish their head stall the worker.
nginx holds such connections itself (and drops them after client_header_timeout)
and passes on complete requests only. Both halves are shown here over real
sockets: directly against gunicorn the stall happens; through nginx an
authenticated request is still answered.

Skipped when nginx is not installed, and a failure then if CI is set.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp.client.client import Client
from nginx_support import NGINX_CONF, ROOT, Gunicorn, Nginx, gunicorn_process, nginx_front, require_nginx
from support import TOKEN, initialize_body, raw_exchange, request
from test_mcp_client import run_client
from ws_client import websocket_client

THREADS = 4  # gunicorn -k gthread --threads 4
# Generous: "answered" is the assertion, and a loaded machine may be slow to answer.
ANSWER_SECONDS = 30.0
# How long the direct-to-gunicorn request is given to show that it is stuck; the
# stall is indefinite, so a slow machine only makes this more certain.
STALL_PROBE_SECONDS = 3.0
# nginx keeps a client connection open for the next request; the raw client reads until it closes.
CLOSE = {"Connection": "close"}
HALF_A_HEAD = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthoriz"


@dataclass
class Deployment:
    app: Gunicorn
    front: Nginx


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    require_nginx()
    workdir = tmp_path / "app"
    workdir.mkdir()
    env = {"MCP_AUTH_TOKEN": TOKEN, "MCP_AUTH_TRUSTED_PROXIES": "127.0.0.1", "MCP_AUTH_ALLOWED_IPS": "127.0.0.1"}
    with (
        gunicorn_process(workdir, env, threads=THREADS) as app,
        nginx_front(tmp_path / "nginx", [app.port]) as front,
    ):
        yield Deployment(app, front)
    assert TOKEN not in app.log
    assert "Traceback" not in app.log, app.log


def stalled_heads(stack: ExitStack, port: int, count: int) -> None:
    """`count` connections that send half a request head and then nothing, closed when `stack` ends."""
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=ANSWER_SECONDS))
        sock.sendall(HALF_A_HEAD)


def initialize_request() -> bytes:
    body = json.dumps(initialize_body()).encode()
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def test_stalled_heads_do_not_stall_gunicorn_behind_nginx(deployment: Deployment) -> None:
    with ExitStack() as stack:
        stalled_heads(stack, deployment.front.port, 4 * THREADS)
        response = raw_exchange(deployment.front.port, initialize_request(), timeout=ANSWER_SECONDS)
        assert response.status == 200, response
        assert response.json()["result"]["serverInfo"]["name"] == "mcp-auth-diagnostics"
        assert request(deployment.front.port, body=initialize_body(), token=None, headers=CLOSE).status == 401


def test_stalled_heads_do_stall_gunicorn_without_the_front(deployment: Deployment) -> None:
    """The contrast: the same heads sent to gunicorn directly hold every thread."""
    with ExitStack() as stack:
        stalled_heads(stack, deployment.app.port, THREADS)
        with socket.create_connection(("127.0.0.1", deployment.app.port), timeout=STALL_PROBE_SECONDS) as probe:
            probe.sendall(initialize_request())
            with pytest.raises(TimeoutError):
                probe.recv(65536)
            # Once the stalled connections go, the waiting request is served.
            stack.close()
            probe.settimeout(ANSWER_SECONDS)
            assert probe.recv(65536).startswith(b"HTTP/1.1 200")


def test_the_front_replaces_a_client_forwarded_for(deployment: Deployment) -> None:
    """nginx sends its own X-Forwarded-For: a client cannot pass itself off as an allowed address."""
    port = deployment.front.port
    forged = {"X-Forwarded-For": "192.0.2.1", **CLOSE}
    assert request(port, body=initialize_body(), headers=forged).status == 200
    # Sent to gunicorn directly from 127.0.0.1 (the trusted proxy's own address) the header is
    # believed, and 192.0.2.1 is refused: why nginx must replace the header, not append to it,
    # and why gunicorn must listen where only nginx can reach it.
    direct = request(deployment.app.port, body=initialize_body(), headers={"X-Forwarded-For": "192.0.2.1"})
    assert direct.status == 403


def test_host_and_absolute_form_are_judged_through_the_front(deployment: Deployment) -> None:
    port = deployment.front.port
    assert request(port, body=initialize_body(), host_header="evil.example", headers=CLOSE).status == 403
    # nginx passes on the host of an absolute-form target ($host), and mcp_auth judges it.
    body = json.dumps(initialize_body()).encode()
    head = (
        "POST http://evil.example/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    assert raw_exchange(port, head.encode() + body).status == 403


def test_a_body_over_the_limit_is_refused_by_the_front(deployment: Deployment) -> None:
    response = request(deployment.front.port, body=b"x" * (4 * 1024 * 1024 + 1), headers=CLOSE)
    assert response.status == 413


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_mcp_client_through_the_front(deployment: Deployment, mode: str) -> None:
    async def body(client: Client) -> Any:
        return await client.call_tool("echo", {"text": "through nginx"})

    result = run_client(f"http://127.0.0.1:{deployment.front.port}/mcp", TOKEN, mode, body)
    assert result.content[0].text == "through nginx"


def test_a_websocket_through_the_front(deployment: Deployment) -> None:
    async def main() -> Any:
        url = f"ws://127.0.0.1:{deployment.front.port}/mcp"
        async with Client(websocket_client(url, {"Authorization": f"Bearer {TOKEN}"}), mode="legacy") as client:  # type: ignore[arg-type]
            return await client.call_tool("echo", {"text": "over a websocket"})

    assert asyncio.run(main()).content[0].text == "over a websocket"


def _statements(text: str) -> set[str]:
    """nginx directives, comments dropped, whitespace normalised, split at `;`, `{` and `}`."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return {" ".join(part.split()) for part in re.split(r"[;{}]", code) if part.strip()}


def test_the_readme_nginx_core_is_the_tested_configuration() -> None:
    """Every directive the README shows is in deploy/nginx.conf, which the tests run as written."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", readme, re.DOTALL)
    assert blocks, "README.md has no nginx block"
    tested = _statements(NGINX_CONF.read_text())
    shown = set().union(*(_statements(block) for block in blocks))
    assert "limit_conn mcp_auth_per_address 16" in shown and "proxy_next_upstream error timeout" in shown
    missing = sorted(statement for statement in shown if statement not in tested)
    assert not missing, f"README nginx lines not in deploy/nginx.conf: {missing}"
