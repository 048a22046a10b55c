"""Stateless-era multi round-trip requests across real server processes, and with the real `mcp` client.

A retry may land on any worker or host of a deployment, so the requestState
one process seals must open in another that was given the same key file, and
in no process with another key. Every server here is a real `python -m
mcp_auth` subprocess (tests/test_cli.py's `start` fixture) serving the README's
`asking.py` example, behind a tokens file with two named tokens; requests are
raw HTTP over real sockets, shaped as the 2026-07-28 revision says (headers
and the `_meta` envelope on every request).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from support import RawResponse, live_server, request
from test_cli import Start, add_named_token, cli_env, start  # noqa: F401  (the `start` fixture)
from test_mrtr_live import Answers, readme_asking_server
from test_readme import block

from mcp_auth.auth.statekey import generate_state_key

MODERN = "2026-07-28"
ACCEPT_ADA = {"action": "accept", "content": {"name": "Ada"}}


def final_message(response: RawResponse, request_id: int) -> dict[str, Any]:
    """The JSON-RPC answer to `request_id`, from a JSON body or the event stream."""
    if (response.header("Content-Type") or "").startswith("application/json"):
        message: dict[str, Any] = response.json()
        return message
    return next(m for m in response.sse_messages() if m.get("id") == request_id)


class ModernClient:
    """Raw 2026-07-28 requests: the envelope in `_meta`, the routing headers, a new id each time."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.next_id = 100

    def call(self, tool: str, **retry: Any) -> tuple[int, dict[str, Any]]:
        self.next_id += 1
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        }
        params = {"name": tool, "arguments": {}, **retry, "_meta": meta}
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": params}
        headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool}
        response = request(self.port, body=body, headers=headers, token=self.token)
        return response.status, final_message(response, self.next_id)


@pytest.fixture
def deployment(tmp_path: Path, start: Start) -> Any:  # noqa: F811
    """A tokens file with alice and bob, the README's module, and a way to start servers with a key file."""
    (tmp_path / "asking.py").write_text(block("python", "# asking.py"))
    tokens = tmp_path / "tokens.json"
    env = cli_env()
    alice = add_named_token(tokens, "alice", env=env)
    bob = add_named_token(tokens, "bob", env=env)

    def key_file(name: str) -> Path:
        path = tmp_path / name
        path.write_text(generate_state_key() + "\n")
        path.chmod(0o600)
        return path

    def serve(key: Path) -> int:
        cli = start(
            "serve",
            "asking:server",
            "--port",
            "0",
            "--tokens-file",
            str(tokens),
            "--state-key-file",
            str(key),
            env=cli_env(PYTHONPATH=f"{tmp_path}:{cli_env()['PYTHONPATH']}"),
        )
        return cli.port

    return alice, bob, key_file, serve


def test_a_retry_served_by_another_process_with_the_same_key_file_completes(deployment: Any) -> None:
    alice, bob, key_file, serve = deployment
    shared, other = key_file("shared-key"), key_file("other-key")
    first, second, foreign = serve(shared), serve(shared), serve(other)

    status, paused = ModernClient(first, alice).call("greet")
    assert status == 200, paused
    result = paused["result"]
    assert result["resultType"] == "input_required" and list(result["inputRequests"]) == ["user_name"]
    state = result["requestState"]
    answer = {"inputResponses": {"user_name": ACCEPT_ADA}, "requestState": state}

    # Another process, the same key file: the retry completes there.
    status, done = ModernClient(second, alice).call("greet", **answer)
    assert status == 200 and done["result"]["resultType"] == "complete", done
    assert done["result"]["content"][0]["text"] == "Hello, Ada!"

    refusal = {
        "code": -32602,
        "message": "Invalid or expired requestState",
        "data": {"reason": "invalid_request_state"},
    }
    # Another token presenting alice's state, anywhere: refused.
    status, refused = ModernClient(second, bob).call("greet", **answer)
    assert (status, refused["error"]) == (400, refusal)
    # A process with another key: refused.
    status, refused = ModernClient(foreign, alice).call("greet", **answer)
    assert (status, refused["error"]) == (400, refusal)
    # A tampered state: refused, never a new round.
    tampered = {**answer, "requestState": state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")}
    status, refused = ModernClient(first, alice).call("greet", **tampered)
    assert (status, refused["error"]) == (400, refusal)
    assert state not in json.dumps(refused)


def test_the_default_mcp_client_runs_multi_round_trips_on_2026_07_28() -> None:
    answers = Answers()

    async def main(url: str, token: str) -> tuple[Any, Any, str | None]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), **answers.callbacks()) as client:
                greeted = await client.call_tool("greet", {})
                trip = await client.call_tool("plan_trip", {})
                return greeted, trip, client.protocol_version

    with live_server(readme_asking_server()) as live:
        assert live.token is not None
        greeted, trip, version = asyncio.run(main(live.url, live.token))
    assert version == MODERN
    assert greeted.content[0].text == "Hello, Ada!"
    # The batch went out in one input_required round; the handler completed on its second run.
    assert trip.content[0].text == "Lyon: pack light (1 root(s), round 2)"
    assert sorted(answers.calls) == ["elicitation", "elicitation", "roots", "sampling"]


def test_a_round_started_over_http_may_finish_over_websocket() -> None:
    """Both transports serve the stateless era; a state is bound to its token, not to a transport."""
    from websockets.asyncio.client import connect
    from ws_client import ws_url

    async def over_socket(url: str, token: str, params: dict[str, Any]) -> dict[str, Any]:
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        }
        message = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {**params, "_meta": meta}}
        async with connect(url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(json.dumps(message))
            while True:
                reply: dict[str, Any] = json.loads(await ws.recv(decode=True))
                if reply.get("id") == 9:
                    return reply

    with live_server(readme_asking_server()) as live:
        assert live.token is not None
        status, paused = ModernClient(live.port, live.token).call("greet")
        state = paused["result"]["requestState"]
        retry = {"name": "greet", "arguments": {}, "inputResponses": {"user_name": ACCEPT_ADA}, "requestState": state}
        done = asyncio.run(over_socket(ws_url(live.url), live.token, retry))
        # And a fresh round over the socket pauses there too.
        again = asyncio.run(over_socket(ws_url(live.url), live.token, {"name": "greet", "arguments": {}}))
    assert status == 200
    assert done["result"]["content"][0]["text"] == "Hello, Ada!"
    assert done["result"]["resultType"] == "complete"
    assert again["result"]["resultType"] == "input_required"
