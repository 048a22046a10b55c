"""The reference "everything server" of the MCP conformance suite, written with mcp_auth's public API.

It serves the tools, resources and prompts that the official conformance
suite (npm @modelcontextprotocol/conformance) expects, and doubles as the
richest example of the API: every kind of content, logging, progress,
sampling, elicitation (with defaults and enums), a hand-written JSON Schema
2020-12 input schema, an argument mirrored into an `Mcp-Param-*` header,
closing an SSE stream mid-call for the client to resume, resources with a
template, and prompts with embedded content.

    python -m mcp_auth serve scripts.conformance_server:server --no-auth --port 0
    npx @modelcontextprotocol/conformance@0.1.13 server --url http://127.0.0.1:PORT/mcp --suite all

(The suite sends no token, hence `--no-auth`, which mcp_auth allows on loopback only.)
"""

from __future__ import annotations

import base64
import json
import time
from typing import Annotated, Any

from mcp_auth import (
    Context,
    Elicitation,
    Header,
    McpServer,
    Roots,
    Sampling,
    audio_content,
    embedded_resource,
    image_content,
    text_content,
)

# A 1x1 PNG and a 44-byte WAV header: small, valid media for the content tests.
TEST_IMAGE = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
TEST_AUDIO = base64.b64decode("UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=")

server = McpServer("mcp-conformance-test-server", "1.0.0")


# --- tools: content of every kind ------------------------------------------------------


@server.tool()
def test_simple_text() -> str:
    """Tests simple text content response"""
    return "This is a simple text response for testing."


@server.tool()
def test_image_content() -> list[dict[str, Any]]:
    """Tests image content response"""
    return [image_content(TEST_IMAGE, "image/png")]


@server.tool()
def test_audio_content() -> list[dict[str, Any]]:
    """Tests audio content response"""
    return [audio_content(TEST_AUDIO, "audio/wav")]


@server.tool()
def test_embedded_resource() -> list[dict[str, Any]]:
    """Tests embedded resource content response"""
    return [embedded_resource("test://embedded-resource", "This is an embedded resource content.", "text/plain")]


@server.tool()
def test_multiple_content_types() -> list[dict[str, Any]]:
    """Tests response with multiple content types (text, image, resource)"""
    return [
        text_content("Multiple content types test:"),
        image_content(TEST_IMAGE, "image/png"),
        embedded_resource(
            "test://mixed-content-resource", json.dumps({"test": "data", "value": 123}), "application/json"
        ),
    ]


# --- tools: talking back during a call -------------------------------------------------------


@server.tool()
def test_tool_with_logging(ctx: Context) -> str:
    """Tests tool that emits log messages during execution"""
    ctx.info("Tool execution started")
    time.sleep(0.05)
    ctx.info("Tool processing data")
    time.sleep(0.05)
    ctx.info("Tool execution completed")
    return "Tool with logging executed successfully"


@server.tool()
def test_tool_with_progress(ctx: Context) -> str:
    """Tests tool that reports progress notifications"""
    for step in (0, 50, 100):
        ctx.report_progress(step, 100, f"Completed step {step} of 100")
        if step < 100:
            time.sleep(0.05)
    return str(ctx.progress_token)


@server.tool()
def test_error_handling() -> str:
    """Tests error response handling"""
    raise RuntimeError("This tool intentionally returns an error for testing")


@server.tool()
def test_reconnection(ctx: Context) -> str:
    """Tests SSE stream disconnection and client reconnection (SEP-1699). Server will close the stream
    mid-call and send the result after client reconnects."""
    ctx.close_stream()
    time.sleep(0.1)
    return (
        "Reconnection test completed successfully. If you received this, the client properly "
        "reconnected after stream closure."
    )


@server.tool()
def test_sampling(prompt: Annotated[str, "The prompt to send to the LLM"], ctx: Context) -> str:
    """Tests server-initiated sampling (LLM completion request)"""
    result = ctx.sample(prompt, max_tokens=100)
    content = result.get("content", {})
    text = content.get("text") if isinstance(content, dict) else None
    return f"LLM response: {text if text is not None else json.dumps(content)}"


@server.tool()
def test_elicitation(message: Annotated[str, "The message to show the user"], ctx: Context) -> str:
    """Tests server-initiated elicitation (user input request)"""
    answer = ctx.elicit(
        message,
        {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        },
    )
    return f"User response: action={answer.get('action')}, content={json.dumps(answer.get('content'))}"


@server.tool()
def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Tests elicitation with default values per SEP-1034"""
    answer = ctx.elicit(
        "Please review and update the form fields with defaults",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verification status", "default": True},
            },
            "required": [],
        },
    )
    return f"Elicitation completed: action={answer.get('action')}, content={json.dumps(answer.get('content'))}"


@server.tool()
def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Tests elicitation with enum schema improvements per SEP-1330"""

    def titled(*pairs: tuple[str, str]) -> list[dict[str, str]]:
        return [{"const": value, "title": title} for value, title in pairs]

    answer = ctx.elicit(
        "Please select options from the enum fields",
        {
            "type": "object",
            "properties": {
                "untitledSingle": {
                    "type": "string",
                    "description": "Select one option",
                    "enum": ["option1", "option2", "option3"],
                },
                "titledSingle": {
                    "type": "string",
                    "description": "Select one option with titles",
                    "oneOf": titled(
                        ("value1", "First Option"), ("value2", "Second Option"), ("value3", "Third Option")
                    ),
                },
                "legacyEnum": {
                    "type": "string",
                    "description": "Select one option (legacy)",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "description": "Select multiple options",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "description": "Select multiple options with titles",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {
                        "anyOf": titled(
                            ("value1", "First Choice"), ("value2", "Second Choice"), ("value3", "Third Choice")
                        )
                    },
                },
            },
            "required": [],
        },
    )
    return f"Elicitation completed: action={answer.get('action')}, content={json.dumps(answer.get('content'))}"


# --- tools the 2026-07-28 scenarios call (server-stateless) ---------------------------------------


@server.tool()
def test_logging_tool(ctx: Context) -> str:
    """Logs at info, then answers: a 2026-07-28 request that did not ask for a logLevel gets no log message"""
    ctx.info("test_logging_tool ran")
    return "Logged (only to a request that asked for a logLevel)"


@server.tool()
def test_trigger_tool_change() -> str:
    """Announces that the tool list changed (to sessions and subscriptions/listen streams that opted in)"""
    server.notify_list_changed("tools")
    return "tools/list_changed sent"


@server.tool()
def test_trigger_prompt_change() -> str:
    """Announces that the prompt list changed (to sessions and subscriptions/listen streams that opted in)"""
    server.notify_list_changed("prompts")
    return "prompts/list_changed sent"


# A schema written by hand is published exactly as given (SEP-1613: JSON Schema 2020-12).
JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


@server.tool(input_schema=JSON_SCHEMA_2020_12)
def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> str:
    """Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)"""
    arguments = {k: v for k, v in (("name", name), ("address", address)) if v is not None}
    return f"JSON Schema 2020-12 tool called with: {json.dumps(arguments)}"


# MCP 2026-07-28 `x-mcp-header`: clients mirror `region` into the header `Mcp-Param-Region`, and the
# server refuses a call whose header and argument disagree. Any string is accepted (the suite sends
# literal look-alikes of the base64 form), and it is the only required argument.
@server.tool()
def test_header_param(region: Annotated[str, Header("Region"), "Where to run"]) -> str:
    """Tool whose argument is mirrored into the Mcp-Param-Region header (SEP-2243)"""
    return f"region={region}"


# --- resources ---------------------------------------------------------------------------------


@server.resource("test://static-text", name="static-text", title="Static Text Resource", mime_type="text/plain")
def static_text() -> str:
    """A static text resource for testing"""
    return "This is the content of the static text resource."


@server.resource("test://static-binary", name="static-binary", title="Static Binary Resource", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (image) for testing"""
    return TEST_IMAGE


@server.resource("test://watched-resource", name="watched-resource", title="Watched Resource", mime_type="text/plain")
def watched_resource() -> str:
    """A resource clients may subscribe to; server.notify_resource_updated() tells them it changed"""
    return f"Watched resource content at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"


@server.resource("test://template/{id}/data", name="template", title="Resource Template", mime_type="application/json")
def template(id: str) -> str:
    """A resource template with parameter substitution"""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


# --- prompts -------------------------------------------------------------------------------------


@server.prompt(title="Simple Test Prompt")
def test_simple_prompt() -> str:
    """A simple prompt without arguments"""
    return "This is a simple prompt for testing."


@server.prompt(title="Prompt With Arguments")
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    """A prompt with required arguments

    Args:
        arg1: First test argument
        arg2: Second test argument
    """
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@server.prompt(title="Prompt With Embedded Resource")
def test_prompt_with_embedded_resource(resourceUri: str) -> list[Any]:
    """A prompt that includes an embedded resource

    Args:
        resourceUri: URI of the resource to embed
    """
    return [
        embedded_resource(resourceUri, "Embedded resource content for testing.", "text/plain"),
        "Please process the embedded resource above.",
    ]


@server.prompt(title="Prompt With Image")
def test_prompt_with_image() -> list[Any]:
    """A prompt that includes image content"""
    return [image_content(TEST_IMAGE, "image/png"), "Please analyze the image above."]


@server.completion(prompt="test_prompt_with_arguments")
def complete_prompt_arguments(argument: str, value: str, context: dict[str, str]) -> list[str]:
    """Suggestions for the prompt's arguments: values that start with what was typed."""
    suggestions = {"arg1": ["test", "testValue1"], "arg2": ["test", "testValue2"]}
    return [s for s in suggestions.get(argument, []) if s.startswith(value)]


# --- multi round-trip requests (2026-07-28: input_required, requestState) ------------------------
#
# One handler serves both eras: in the handshake era each ask is a server-to-client request the
# tool waits for; in the stateless era the tool is replayed each round and an unanswered ask ends
# the round with input_required. The keys are the inputRequests keys the suite looks for.

NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
CONFIRM_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def _sampled_text(result: dict[str, Any]) -> str:
    content = result.get("content")
    if isinstance(content, list):
        content = content[0] if content else {}
    return str(content.get("text", "")) if isinstance(content, dict) else ""


@server.tool()
def test_input_required_result_elicitation(ctx: Context) -> str:
    """Asks the user's name (key user_name), then greets them"""
    answer = ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
    return f"Hello, {(answer.get('content') or {}).get('name', 'stranger')}!"


@server.tool()
def test_input_required_result_sampling(ctx: Context) -> str:
    """Asks the client's model a question (key capital_question)"""
    result = ctx.sample("What is the capital of France?", max_tokens=100, key="capital_question")
    return f"The model answered: {_sampled_text(result)}"


@server.tool()
def test_input_required_result_list_roots(ctx: Context) -> str:
    """Lists the client's roots (key client_roots)"""
    return f"Found {len(ctx.list_roots(key='client_roots'))} root(s)"


@server.tool()
def test_input_required_result_request_state(ctx: Context) -> str:
    """Asks for a confirmation carried across rounds in requestState (key confirm)"""
    answer = ctx.elicit("Please confirm", CONFIRM_SCHEMA, key="confirm")
    return f"state-ok: confirmed={(answer.get('content') or {}).get('ok')}"


@server.tool()
def test_input_required_result_multiple_inputs(ctx: Context) -> str:
    """Asks for an elicitation, a sampling and the roots in one round"""
    got = ctx.ask(
        {
            "user_name": Elicitation("What is your name?", NAME_SCHEMA),
            "greeting": Sampling("Generate a greeting", 50),
            "client_roots": Roots(),
        }
    )
    name = (got["user_name"].get("content") or {}).get("name")
    return f"{_sampled_text(got['greeting'])}, {name}; {len(got['client_roots'])} root(s)"


@server.tool()
def test_input_required_result_multi_round(ctx: Context) -> str:
    """Asks a name (step1), then a favourite colour (step2): two rounds"""
    name = (ctx.elicit("Step 1: What is your name?", NAME_SCHEMA, key="step1").get("content") or {}).get("name")
    color_schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
    color = (ctx.elicit("Step 2: What is your favorite color?", color_schema, key="step2").get("content") or {}).get(
        "color"
    )
    return f"Multi-round complete for {name} who likes {color}"


@server.tool()
def test_input_required_result_tampered_state(ctx: Context) -> str:
    """Asks for a confirmation; a retry with a changed requestState is refused"""
    ctx.elicit("Please confirm", CONFIRM_SCHEMA, key="confirm")
    return "state-ok"


@server.tool()
def test_input_required_result_capabilities(ctx: Context) -> str:
    """Asks only for what the request's client capabilities declare"""
    asks: dict[str, Elicitation | Sampling] = {}
    if ctx.supports("elicitation"):
        asks["elicit_input"] = Elicitation("What is your name?", NAME_SCHEMA)
    if ctx.supports("sampling"):
        asks["sample_input"] = Sampling("Say hello", 20)
    if not asks:
        return "No supported capabilities declared"
    return f"Answered: {', '.join(sorted(ctx.ask(asks)))}"


@server.tool()
def test_missing_capability(ctx: Context) -> str:
    """Needs sampling: a request that does not declare it gets -32021"""
    ctx.sample("Say hello", max_tokens=20)
    return "Success"


@server.tool()
def test_streaming_elicitation(ctx: Context) -> str:
    """Elicits once (in the stateless era: an input_required round, never a request on the stream)"""
    answer = ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
    return f"Streaming elicitation: {answer.get('action')}"


@server.prompt(title="Prompt With Input Required")
def test_input_required_result_prompt(ctx: Context) -> str:
    """A prompt that asks the user for context before it is built (key user_context)"""
    schema = {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}
    answer = ctx.elicit("What context should the prompt use?", schema, key="user_context")
    return f"Prompt with context: {(answer.get('content') or {}).get('context')}"
