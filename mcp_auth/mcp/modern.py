"""The stateless revision (2026-07-28): what one request says about itself, and its header codec.

In the modern era there is no session: every request carries its protocol
version, the client's capabilities, optionally the client's identity and the
log level it wants, in `params._meta` under the keys below. The transport
checks the envelope and the routing headers (`Mcp-Method`, `Mcp-Name`,
`Mcp-Param-*`), builds a `ModernRequest` and hands it to the dispatcher on
the `Call` (`Call.modern`); a handshake-era call has `Call.modern is None`.

`decode_header_value` is the revision's value encoding for `Mcp-Name` and
`Mcp-Param-*`: a value of the form `=?base64?<standard base64>?=` carries
UTF-8 text that a header cannot (non-ASCII, control characters, edge
whitespace); any other value is literal.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The stateless revisions served, newest first.
MODERN_PROTOCOL_VERSIONS = ("2026-07-28",)

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"

# JSON-RPC codes the revision adds.
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022


@dataclass(frozen=True)
class ModernRequest:
    """One modern request's own description of its client, checked by the transport."""

    protocol_version: str
    client_capabilities: Mapping[str, Any]
    client_info: Mapping[str, Any] | None = None
    # The lowest level of notifications/message this request asked for; None: send none.
    log_level: str | None = None
    # The HTTP request's headers, names lower-cased (None on WebSocket, which has none per message).
    headers: Mapping[str, str] | None = field(default=None, repr=False)

    def supports(self, capability: str) -> bool:
        """Whether this request's client declared `capability` (e.g. "sampling", "elicitation", "roots")."""
        return isinstance(self.client_capabilities.get(capability), dict)


_SENTINEL = re.compile(r"=\?base64\?(.*)\?=", re.DOTALL)


def decode_header_value(value: str) -> str:
    """The text a `Mcp-Name` or `Mcp-Param-*` header carries; ValueError when it cannot be decoded.

    Surrounding spaces and tabs are not part of the value. A sentinel-wrapped
    value must be canonical standard base64 of UTF-8 text: anything else is
    refused rather than compared, so a corrupt header never matches by accident.
    A header value with bytes outside visible ASCII is refused too.
    """
    value = value.strip(" \t")
    if any(not (0x20 <= ord(ch) < 0x7F) and ch != "\t" for ch in value):
        raise ValueError("header value has characters outside visible ASCII; send it base64-encoded")
    match = _SENTINEL.fullmatch(value)
    if match is None:
        return value
    payload = match.group(1)
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("header value is not valid base64 inside =?base64?...?=") from None
    if base64.b64encode(raw).decode("ascii") != payload:
        raise ValueError("header value is not canonical base64 inside =?base64?...?=")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("header value's base64 does not decode to UTF-8 text") from None
