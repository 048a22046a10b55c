"""Turning what handlers return into MCP results; paging of the list methods; bounded client strings."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from .content import ToolResult, is_content, resource_contents, text_content
from .jsonrpc import (
    INVALID_PARAMS,
    JsonRpcError,
)
from .protocol import PAGE_SIZE
from .schema import JsonSchema

# What a session keeps of the client's initialize: a few short strings, not
# whatever a client chooses to send (a session must stay small).
MAX_CLIENT_FIELDS = 32

MAX_CLIENT_STRING = 256


def _bounded_strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {
        key: item[:MAX_CLIENT_STRING]
        for key, item in list(value.items())[:MAX_CLIENT_FIELDS]
        if isinstance(key, str) and len(key) <= MAX_CLIENT_STRING and isinstance(item, str)
    }


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(str(cursor).encode()).decode().partition(":")
        offset = int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        offset = -1
        kind = ""
    if kind != "offset" or offset < 0:
        raise JsonRpcError(INVALID_PARAMS, "Invalid cursor: pass back the nextCursor of the previous page unchanged")
    return offset


def _page(items: Sequence[dict[str, Any]], params: dict[str, Any], key: str) -> dict[str, Any]:
    offset = _decode_cursor(params.get("cursor"))
    result: dict[str, Any] = {key: list(items[offset : offset + PAGE_SIZE])}
    if offset + PAGE_SIZE < len(items):
        result["nextCursor"] = _encode_cursor(offset + PAGE_SIZE)
    return result


def _to_json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the tool returned a value that is not JSON: {exc}") from None


def tool_result(value: Any, output_schema: JsonSchema | None, *, modern: bool = False) -> dict[str, Any]:
    """Turn what a tool returned into a CallToolResult.

    `structuredContent` is any JSON value for a `modern` (2026-07-28)
    request, an object only in the handshake era, whose `CallToolResult`
    cannot hold anything else.
    """
    if isinstance(value, ToolResult):
        result = value.to_dict()
        if not modern and not isinstance(result.get("structuredContent", {}), dict):
            del result["structuredContent"]
        return result
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if value is None:
        return {"content": []}
    any_json = modern and output_schema is not None and output_schema.get("type") != "object"
    if any_json and not is_content(value) and not _is_content_list(value):
        text = value if isinstance(value, str) else _to_json_text(value)
        return {"content": [text_content(text)], "structuredContent": value}
    if isinstance(value, str):
        return {"content": [text_content(value)]}
    if is_content(value):
        return {"content": [value]}
    if _is_content_list(value):
        return {"content": value}
    result = {"content": [text_content(_to_json_text(value))]}
    if output_schema is not None and isinstance(value, dict):
        result["structuredContent"] = value
    return result


def _is_content_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(is_content(item) for item in value)


def _prompt_messages(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    messages = []
    for item in items:
        if isinstance(item, str):
            messages.append({"role": "user", "content": text_content(item)})
        elif is_content(item):
            messages.append({"role": "user", "content": item})
        elif isinstance(item, dict) and item.get("role") in ("user", "assistant") and is_content(item.get("content")):
            messages.append(item)
        else:
            raise TypeError("a prompt returns a str, a content block, a {role, content} message, or a list of these")
    return messages


def _read_contents(uri: str, value: Any, mime_type: str | None) -> list[dict[str, Any]]:
    if isinstance(value, (str, bytes)):
        return [resource_contents(uri, value, mime_type)]
    if isinstance(value, dict) and "uri" in value:
        return [value]
    if isinstance(value, list) and all(isinstance(item, dict) and "uri" in item for item in value):
        return value
    raise TypeError("a resource returns str, bytes, a contents dict with 'uri', or a list of those")
