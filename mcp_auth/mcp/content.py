"""Builders for MCP content blocks, for tools and prompts that return more than text.

Each returns the plain dict MCP puts on the wire; a tool may return one of
these, a list of them, or a `ToolResult` that adds structured content or marks
an error.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

CONTENT_TYPES = frozenset({"text", "image", "audio", "resource", "resource_link"})


def text_content(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_content(data: bytes, mime_type: str) -> dict[str, Any]:
    return {"type": "image", "data": base64.b64encode(data).decode("ascii"), "mimeType": mime_type}


def audio_content(data: bytes, mime_type: str) -> dict[str, Any]:
    return {"type": "audio", "data": base64.b64encode(data).decode("ascii"), "mimeType": mime_type}


def resource_contents(uri: str, value: str | bytes, mime_type: str | None = None) -> dict[str, Any]:
    """One entry of `resources/read` contents: text for str, base64 blob for bytes."""
    if isinstance(value, bytes):
        return {
            "uri": uri,
            "mimeType": mime_type or "application/octet-stream",
            "blob": base64.b64encode(value).decode("ascii"),
        }
    return {"uri": uri, "mimeType": mime_type or "text/plain", "text": value}


def embedded_resource(uri: str, value: str | bytes, mime_type: str | None = None) -> dict[str, Any]:
    return {"type": "resource", "resource": resource_contents(uri, value, mime_type)}


def resource_link(
    uri: str, name: str, *, mime_type: str | None = None, description: str | None = None
) -> dict[str, Any]:
    link: dict[str, Any] = {"type": "resource_link", "uri": uri, "name": name}
    if mime_type:
        link["mimeType"] = mime_type
    if description:
        link["description"] = description
    return link


def is_content(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in CONTENT_TYPES


@dataclass
class ToolResult:
    """A tool's full answer: content blocks, optional structured content, error flag."""

    content: list[dict[str, Any]]
    # An object; in 2026-07-28 any JSON value (dropped for older clients when not an object).
    structured: Any = None
    is_error: bool = False

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"content": self.content}
        if self.structured is not None:
            result["structuredContent"] = self.structured
        if self.is_error:
            result["isError"] = True
        return result
