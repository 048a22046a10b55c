"""Audit events: one structured record per refusal and per tool call.

Events go to the `mcp_auth.audit` logger as records carrying an `audit` dict
(time, event, client address, step, reason, token name, tool). The fields are
chosen by this module, never copied from request headers, so no token, no
Authorization header and no part of either can reach a log. `configure_logging`
installs a text or JSON formatter for the command line; embedders may attach
their own handlers to `mcp_auth.audit` instead.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

audit_logger = logging.getLogger("mcp_auth.audit")


def _emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if not audit_logger.isEnabledFor(level):
        return
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event}
    record.update({key: value for key, value in fields.items() if value is not None})
    audit_logger.log(level, event, extra={"audit": record})


def denial(client_address: str, step: str, reason: str, token_name: str | None = None) -> None:
    """A request refused at `step` (DESIGN.md table). Transport rules (step 6) are a
    client's mistake more often than an attack, so they are logged at INFO, the rest at WARNING."""
    level = logging.INFO if step == "transport" else logging.WARNING
    _emit("denied", level, client=client_address, step=step, reason=reason, token=token_name)


def tool_call(client_address: str, token_name: str, tool: str, outcome: str) -> None:
    """A tools/call that reached dispatch, and how it ended (ok, error, denied, invalid_arguments, invalid_output)."""
    _emit("tool_call", client=client_address, token=token_name, tool=tool, outcome=outcome)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; audit records keep their fields, others get a message."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = getattr(record, "audit", None) or {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "event": "log",
            "message": record.getMessage(),
        }
        payload = {**payload, "level": record.levelname.lower(), "logger": record.name}
        return json.dumps(payload, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        audit = getattr(record, "audit", None)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        if audit:
            fields = " ".join(
                f"{k}={json.dumps(v) if isinstance(v, str) and ' ' in v else v}"
                for k, v in audit.items()
                if k not in ("time", "event")
            )
            return f"{stamp} {record.levelname.lower()} audit {audit['event']} {fields}"
        text = f"{stamp} {record.levelname.lower()} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send mcp_auth's logs to stderr in `log_format` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("mcp_auth")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
