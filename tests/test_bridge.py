"""The stdio bridge with the real `mcp` client: a stdio server written with the `mcp` package behind the front.

Both transports (Streamable HTTP, WebSocket) and both client modes; the token
required; progress, logs, sampling and change notifications through the
bridge; scopes on the child's tools; a child that crashes, writes garbage or
hangs; the startup check of the command; the bounds on children.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from bridge_support import CHILD_ARGV, RAW_CHILD_ARGV, bridged, wait_gone
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from support import TOKEN, initialize_body, open_session, request, rpc
from test_mcp_client import MODES, run_client
from ws_client import websocket_client, ws_url

from mcp_auth.auth.tokens import add_token

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parent.parent


def _http(url: str, headers: dict[str, str]) -> Any:
    class Transport:
        async def __aenter__(self) -> Any:
            self._http = httpx2.AsyncClient(headers=headers, timeout=60)
            await self._http.__aenter__()
            self._inner = streamable_http_client(url, http_client=self._http)
            return await self._inner.__aenter__()

        async def __aexit__(self, *exc: Any) -> None:
            await self._inner.__aexit__(*exc)
            await self._http.__aexit__(*exc)

    return Transport()


TRANSPORTS: list[Any] = [
    pytest.param(lambda url, headers=AUTH: _http(url, headers), id="http"),
    pytest.param(lambda url, headers=AUTH: websocket_client(ws_url(url), headers), id="websocket"),
]


async def _sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    question = params.messages[0].content.text  # type: ignore[union-attr]
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"answer to {question}"), model="m"
    )


@pytest.mark.parametrize("mode", MODES)
def test_the_client_lists_and_calls_the_childs_tools_with_the_token(mode: str) -> None:
    async def body(client: Client) -> Any:
        tools = await client.list_tools()
        echo = await client.call_tool("echo", {"text": "through the bridge"})
        prompt = await client.get_prompt("greet", {"name": "Ada"})
        resource = await client.read_resource("counter://value")
        return tools, echo, prompt, resource

    with bridged() as live:
        tools, echo, prompt, resource = run_client(live.url, TOKEN, mode, body)
    names = {tool.name for tool in tools.tools}
    assert {"echo", "countdown", "ask_model", "crash"} <= names
    assert echo.content[0].text == "through the bridge"
    assert prompt.messages[0].content.text == "Hello, Ada!"
    assert resource.contents[0].text == "0"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("token", [pytest.param(None, id="no-token"), pytest.param("wrong-" + "x" * 30, id="wrong")])
def test_without_the_token_no_child_is_started(mode: str, token: str | None) -> None:
    async def body(client: Client) -> Any:
        return await client.list_tools()

    with bridged() as live:
        with pytest.raises((MCPError, httpx2.HTTPError, ExceptionGroup)):
            run_client(live.url, token, mode, body)
        assert live.app.server.children() == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_progress_logs_and_sampling_reach_the_client(transport: Callable[..., Any]) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(params: Any) -> None:
        logs.append(params.data)

    async def main(url: str) -> Any:
        async with Client(
            transport(url), mode="legacy", sampling_callback=_sampling, logging_callback=on_log
        ) as client:
            counted = await client.call_tool("countdown", {"start": 3}, progress_callback=on_progress)
            sampled = await client.call_tool("ask_model", {"question": "2+2"})
            return counted, sampled

    with bridged() as live:
        counted, sampled = asyncio.run(main(live.url))
    assert counted.content[0].text == "liftoff"
    assert [p[0] for p in progress] == [1, 2, 3]
    assert progress[0] == (1, 3, "3...")
    assert logs == ["step 1", "step 2", "step 3"]
    assert sampled.content[0].text == "model said: answer to 2+2"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_change_notifications_reach_the_client_and_new_tools_are_filtered(
    transport: Callable[..., Any], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.toml"
    full = add_token(tokens, "full", None)
    scoped = add_token(tokens, "scoped", ["echo", "add_secret_tool", "bump", "resource:counter://*"])
    seen: list[str] = []

    async def main(url: str, token: str) -> list[str]:
        changed = asyncio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                seen.append("tools changed")
                changed.set()
            elif isinstance(message, types.ResourceUpdatedNotification):
                seen.append(f"updated {message.params.uri}")

        async with Client(
            transport(url, {"Authorization": f"Bearer {token}"}), mode="legacy", message_handler=on_message
        ) as client:
            await client.call_tool("bump", {})
            await client.call_tool("add_secret_tool", {})
            await asyncio.wait_for(changed.wait(), 30)
            return sorted(tool.name for tool in (await client.list_tools()).tools)

    with bridged(settings={"tokens_file": str(tokens), "token": None}) as live:
        full_tools = asyncio.run(main(live.url, full))
        scoped_tools = asyncio.run(main(live.url, scoped))
    assert "secret_added" in full_tools
    assert scoped_tools == ["add_secret_tool", "bump", "echo"]
    assert "updated counter://value" in seen and "tools changed" in seen


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_scoped_token_sees_only_its_tools_and_out_of_scope_calls_never_reach_the_child(
    transport: Callable[..., Any], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.toml"
    scoped = add_token(tokens, "echo-only", ["echo", "pid"])

    async def main(url: str) -> Any:
        async with Client(transport(url, {"Authorization": f"Bearer {scoped}"}), mode="legacy") as client:
            tools = await client.list_tools()
            prompts = await client.list_prompts()
            resources = await client.list_resources()
            before = (await client.call_tool("pid", {})).content[0].text
            refused = []
            for call in (
                client.call_tool("crash", {}),  # would end the child if it got there
                client.read_resource("counter://value"),
                client.get_prompt("greet", {"name": "x"}),
            ):
                try:
                    await call
                except (MCPError, httpx2.HTTPStatusError, ExceptionGroup) as exc:
                    refused.append(str(exc))
            after = (await client.call_tool("pid", {})).content[0].text
            return tools, prompts, resources, before, after, refused

    with bridged(settings={"tokens_file": str(tokens), "token": None}) as live:
        tools, prompts, resources, before, after, refused = asyncio.run(main(live.url))
    assert sorted(tool.name for tool in tools.tools) == ["echo", "pid"]
    assert prompts.prompts == [] and resources.resources == []
    assert len(refused) == 3
    assert before == after  # the same child served both: the refused calls never reached it
    assert wait_gone(int(after))


def _call(port: int, session_id: str, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    response = rpc(port, session_id, "tools/call", {"name": name, "arguments": arguments or {}})
    assert response.status == 200, response
    if response.header("Content-Type") == "application/json":
        return dict(response.json())
    return response.sse_messages()[-1]


@pytest.mark.parametrize(
    ("argv", "tool", "expected"),
    [
        pytest.param(CHILD_ARGV, "crash", "ended: it exited with status 3", id="crash"),
        pytest.param(RAW_CHILD_ARGV, "garbage", "wrote something that is not JSON-RPC", id="garbage"),
    ],
)
def test_a_broken_child_answers_at_once_and_ends_the_session(
    argv: list[str], tool: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcp_auth.bridge")
    with bridged(argv, dead_session_seconds=0.1) as live:
        session_id = open_session(live.port)
        pid = int(_call(live.port, session_id, "pid")["result"]["content"][0]["text"])
        answer = _call(live.port, session_id, tool)
        assert answer["error"]["code"] == -32000
        assert expected in answer["error"]["message"]
        assert wait_gone(pid)
        # The session is over (not silently restarted): its id is unknown now, a new session works.
        for _ in range(600):
            if rpc(live.port, session_id, "tools/list", {}).status == 404:
                break
            time.sleep(0.05)
        assert rpc(live.port, session_id, "tools/list", {}).status == 404
        fresh = open_session(live.port)
        assert int(_call(live.port, fresh, "pid")["result"]["content"][0]["text"]) != pid
    records = [r.getMessage() for r in caplog.records if r.name == "mcp_auth.bridge"]
    if tool == "crash":
        assert any("crashing on purpose" in line and "token 'default'" in line for line in records), records
    else:
        assert any("Server started! Listening" in line for line in records), records


def test_a_child_that_does_not_answer_gets_the_client_an_error_and_is_told_to_cancel() -> None:
    with bridged(request_timeout=1.0) as live:
        session_id = open_session(live.port)
        answer = _call(live.port, session_id, "hang")
        assert answer["error"]["code"] == -32000
        assert "did not answer tools/call within 1 seconds" in answer["error"]["message"]
        # The session goes on: a slow call is not a dead child.
        assert _call(live.port, session_id, "echo", {"text": "still here"})["result"]["content"][0]["text"]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def test_a_websocket_whose_child_crashes_is_answered_then_closed() -> None:
    async def main(url: str) -> Any:
        async with Client(websocket_client(ws_url(url), AUTH), mode="legacy") as client:
            return await client.call_tool("crash", {})

    with bridged(dead_session_seconds=0.1) as live:
        with pytest.raises((MCPError, ExceptionGroup)) as raised:
            asyncio.run(main(live.url))
    messages = [str(leaf) for leaf in _leaves(raised.value)]
    assert any("(token 'default', WebSocket) ended: it exited with status 3" in m for m in messages), messages


def test_the_childs_environment_is_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_AUTH_TOKEN_SHOULD_NOT_LEAK", "secret")
    monkeypatch.setenv("PASSED_BY_NAME", "by-name")
    with bridged(env=["PASSED_BY_NAME", "SET_HERE=value"]) as live:
        session_id = open_session(live.port)

        def env(name: str) -> str:
            return str(_call(live.port, session_id, "environment", {"name": name})["result"]["content"][0]["text"])

        assert env("MCP_AUTH_TOKEN_SHOULD_NOT_LEAK") == "<unset>"
        assert env("PASSED_BY_NAME") == "by-name"
        assert env("SET_HERE") == "value"
        assert env("PATH") != "<unset>"


def test_children_are_bounded_per_token_and_the_tokens_idle_child_makes_room() -> None:
    with bridged(max_children=2, max_children_per_token=1) as live:
        first = open_session(live.port)
        first_pid = int(_call(live.port, first, "pid")["result"]["content"][0]["text"])
        second = open_session(live.port)  # the token's share is 1: the idle first child is ended
        assert wait_gone(first_pid)
        assert rpc(live.port, first, "tools/list", {}).status == 404
        assert _call(live.port, second, "echo", {"text": "ok"})["result"]["content"][0]["text"] == "ok"


def test_past_the_total_a_new_session_is_refused_clearly(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    a = add_token(tokens, "a", None)
    b = add_token(tokens, "b", None)
    with bridged(max_children=1, settings={"tokens_file": str(tokens), "token": None}) as live:
        open_session(live.port, token=a)
        refused = request(live.port, body=initialize_body(), token=b)
        assert refused.status == 200
        body = refused.json() if refused.header("Content-Type") == "application/json" else refused.sse_messages()[-1]
        assert body["error"]["code"] == -32000
        assert "1 stdio server processes, its limit" in body["error"]["message"]
        assert refused.header("Mcp-Session-Id") is None or rpc(
            live.port, str(refused.header("Mcp-Session-Id")), "tools/list", {}, token=b
        ).status in (400, 404)


# --- the startup check, on the command line ------------------------------------------


def _serve(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_auth", "serve", "--port", "0", "--token", TOKEN, "--stdio", "--", *command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param(["/nonexistent/mcp-server"], "No such file or directory", id="missing"),
        pytest.param(
            [sys.executable, "-c", "import sys; sys.stderr.write('no config found\\n'); sys.exit(4)"],
            "no config found",
            id="exits",
        ),
        pytest.param([sys.executable, "-c", "print('hello, I am a banner'); input()"], "not JSON-RPC", id="banner"),
    ],
)
def test_a_wrong_command_fails_at_startup_with_status_2_naming_it(command: list[str], expected: str) -> None:
    done = _serve(*command)
    assert done.returncode == 2, done.stderr
    assert command[0] in done.stderr
    assert expected in done.stderr
    assert "listening on" not in done.stderr


def test_the_startup_check_counts_what_the_child_offers() -> None:
    from mcp_auth.bridge import StdioCommand, StdioServer

    server = StdioServer(StdioCommand.of(CHILD_ARGV))
    assert server.offer_counts["tool"] >= 10 and server.offer_counts["prompt"] == 1
    assert server.dispatcher.name == "test-child"
    server.close()


def test_the_command_is_not_run_through_a_shell(tmp_path: Path) -> None:
    from mcp_auth.bridge import StdioCommand, StdioServer
    from mcp_auth.errors import ConfigError

    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match="cannot run"):
        StdioServer(StdioCommand.of([f"true; touch {marker}"]))
    assert not marker.exists()
    with pytest.raises(ConfigError, match="list of words"):
        StdioCommand.of("python server.py")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "environ", "refused"),
    [
        pytest.param(["/usr/bin/gunicorn", "-w", "4", "app"], {}, True, id="-w 4"),
        pytest.param(["/usr/bin/gunicorn", "--workers=2", "app"], {}, True, id="--workers=2"),
        pytest.param(["/x/gunicorn/__main__.py", "-w2", "app"], {}, True, id="python -m gunicorn -w2"),
        pytest.param(["/usr/bin/gunicorn", "app"], {"WEB_CONCURRENCY": "3"}, True, id="WEB_CONCURRENCY"),
        pytest.param(["/usr/bin/gunicorn", "app"], {"GUNICORN_CMD_ARGS": "--workers 2"}, True, id="CMD_ARGS"),
        pytest.param(["/usr/bin/gunicorn", "-w", "1", "app"], {"WEB_CONCURRENCY": "3"}, False, id="-w 1 wins"),
        pytest.param(["/usr/bin/gunicorn", "app"], {}, False, id="default one worker"),
        pytest.param(["server.py", "-w", "4"], {}, False, id="not gunicorn"),
    ],
)
def test_several_gunicorn_workers_are_refused(argv: list[str], environ: dict[str, str], refused: bool) -> None:
    from mcp_auth.bridge import one_process_check
    from mcp_auth.errors import ConfigError

    if refused:
        with pytest.raises(ConfigError, match="-w 1"):
            one_process_check(argv, environ)
    else:
        one_process_check(argv, environ)


def test_json_lines_only() -> None:
    # The child's messages are one per line: the front writes compact JSON, never a newline inside.
    from mcp_auth.mcp.jsonrpc import dumps

    assert b"\n" not in dumps({"jsonrpc": "2.0", "method": "x", "params": {"text": "a\nb"}})
    assert json.loads(dumps({"a": "\u2028"}))["a"] == "\u2028"


# --- the README's commands --------------------------------------------------------


def test_the_readme_stdio_command_serves_a_stdio_server(tmp_path: Path) -> None:
    """The README's one command, with the npm server swapped for the test child (npx is for .ci/run)."""
    readme = (ROOT / "README.md").read_text()
    line = next(text.strip() for text in readme.splitlines() if "mcp_auth serve --stdio --" in text)
    assert line.startswith(
        ".venv/bin/python -m mcp_auth serve --stdio -- npx -y @modelcontextprotocol/server-everything"
    )
    words = line.split()
    words[0] = sys.executable
    command = words[: words.index("--") + 1] + CHILD_ARGV
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MCP_AUTH_")},
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
        "MCP_AUTH_PORT": "0",
        "MCP_AUTH_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT),
    }
    front = subprocess.Popen(
        command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert front.stderr is not None
        port = 0
        deadline = time.monotonic() + 120
        while not port and time.monotonic() < deadline:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/mcp", front.stderr.readline())
            port = int(found.group(1)) if found else 0
        assert port

        async def body(client: Client) -> Any:
            return await client.call_tool("echo", {"text": "from the README"})

        assert run_client(f"http://127.0.0.1:{port}/mcp", TOKEN, "auto", body).content[0].text == "from the README"
    finally:
        front.terminate()
        assert front.wait(60) == 0
        if front.stderr is not None:
            front.stderr.close()


def test_the_readme_stdio_app_snippet_compiles_and_names_the_api() -> None:
    import mcp_auth

    readme = (ROOT / "README.md").read_text()
    assert "mcp_auth.stdio_app([" in readme and "create_app(stdio=[" in readme
    assert callable(mcp_auth.stdio_app) and "stdio_app" in mcp_auth.__all__


def test_a_cancelled_call_is_cancelled_in_the_child_too(tmp_path: Path) -> None:
    import threading

    events = tmp_path / "events"
    with bridged(env=[f"CHILD_EVENTS={events}"]) as live:
        session_id = open_session(live.port)
        answers: list[dict[str, Any]] = []
        caller = threading.Thread(target=lambda: answers.append(_call(live.port, session_id, "hang")))
        caller.start()
        deadline = time.monotonic() + 60
        child = live.app.server.children()[0]  # type: ignore[attr-defined]
        while child.link.in_flight() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # until the call reached the child
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "no"}}
        assert request(live.port, body=note, headers={"Mcp-Session-Id": session_id}).status == 202
        caller.join(60)
        assert answers and answers[0]["error"]["code"] == -32800
        while not events.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events.read_text() == "hang cancelled\n"


@pytest.mark.parametrize("workers", [pytest.param("2", id="two-workers"), pytest.param("1", id="one-worker")])
def test_gunicorn_runs_the_bridge_with_one_worker_only(workers: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = f"mcp_auth:create_app(stdio={CHILD_ARGV!r})"
    env = {**os.environ, "MCP_AUTH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", workers, "-k", "gthread", "--threads", "4",
         "-b", f"127.0.0.1:{port}", app],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert gunicorn.stderr is not None
        if workers == "2":
            status = gunicorn.wait(120)
            output = gunicorn.stderr.read()
            assert status != 0
            assert "gunicorn was asked for 2 workers" in output and "-w 1" in output
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = gunicorn.stderr.readline()
            if "serving '" in line or not line:  # the startup summary: the app is built
                break
        for _ in range(600):
            try:
                session_id = open_session(port)
                break
            except (OSError, AssertionError):
                time.sleep(0.1)
        assert _call(port, session_id, "echo", {"text": "gunicorn"})["result"]["content"][0]["text"] == "gunicorn"
    finally:
        if gunicorn.poll() is None:
            gunicorn.terminate()
            gunicorn.wait(60)
        if gunicorn.stderr is not None:
            gunicorn.stderr.close()


def test_the_stateless_revision_through_the_bridge_with_the_real_client() -> None:
    """mcp 2.3.0's default mode speaks 2026-07-28: a pooled child, progress, and sampling as a round."""
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def body(client: Client) -> Any:
        counted = await client.call_tool("countdown", {"start": 3}, progress_callback=on_progress)
        sampled = await client.call_tool("ask_model", {"question": "2+2"})
        tools = await client.list_tools()
        return counted, sampled, tools

    with bridged() as live:
        counted, sampled, tools = run_client(live.url, TOKEN, "auto", body, sampling_callback=_sampling)
        dispatcher = live.app.server  # type: ignore[attr-defined]
        assert dispatcher.children() == [] and dispatcher.pools.children()  # no session: the token's pool
    assert counted.content[0].text == "liftoff" and progress == [1, 2, 3]
    assert sampled.content[0].text == "model said: answer to 2+2"  # the round resumed the waiting child
    assert "echo" in {tool.name for tool in tools.tools}
