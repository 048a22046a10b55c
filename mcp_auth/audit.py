"""Audit events: one structured record per refusal and per tool call.

Events go to the `mcp_auth.audit` logger as records carrying an `audit` dict
(time, event, client address, step, reason, token name, tool). The fields are
chosen by this module, never copied from request headers, so no token, no
Authorization header and no part of either can reach a log. `configure_logging`
installs a text or JSON formatter for the command line; embedders may attach
their own handlers to `mcp_auth.audit` instead.

Some values do come from a client (a tool name, a resource URI, a request
path). One log record is one line, whatever they contain: the JSON format
escapes everything by construction, and the text format escapes control
characters (`escape_controls`) in every audit field and in every message
(its values included), and indents the lines of a traceback, so that no client can start
a line that reads as a record of its own.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from .mcp.outcome import Answered, Failed, Outcome, Revoked, ScopeRefused

audit_logger = logging.getLogger("mcp_auth.audit")

# C0 controls (\n, \r, \t and the rest), DEL, C1 controls (NEL among them) and
# the Unicode line and paragraph separators: everything a terminal, a log
# shipper or `str.splitlines` may take as the end of a line or as a command.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Continuation lines of a record (a traceback) start with this, so only a record's first line starts at column 0.
_CONTINUATION_INDENT = "    "


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"


def escape_controls(value: str) -> str:
    """`value` with each control or line-separator character written as an escape (`\\n`, `\\x1b`, `\\u2028`).

    Idempotent: the result contains no such character, so escaping it again
    changes nothing (a value escaped where it is logged and again by the text
    formatter reads the same). A backslash the client sent stays as it is.
    """
    return _CONTROLS.sub(_escape_one, value)


# A text-format value is written bare only when none of these is in it; else it is quoted.
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|' + _CONTROLS.pattern)


def _text_field(value: Any) -> str:
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    # Quoted as JSON would be ('\\' and '"' escaped, then controls), so a value cannot
    # pose as `key=value` pairs of its own, nor end its quotes early.
    return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


# The last second formatted by `utc_stamp`, and its text: one audit line per call asks for the
# same second many times. A tuple, replaced whole, so threads never see half of an update.
_last_stamp: tuple[int, str] = (-1, "")


def utc_stamp(seconds: float) -> str:
    """`seconds` since the epoch as ISO 8601 UTC to the second (`2026-12-01T13:16:10Z`)."""
    global _last_stamp
    whole = int(seconds)
    cached = _last_stamp
    if cached[0] == whole:
        return cached[1]
    text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole))
    _last_stamp = (whole, text)
    return text


def _emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if not audit_logger.isEnabledFor(level):
        return
    # Built and handled directly rather than through `audit_logger.log`: the same record reaches the
    # same handlers and filters, without the walk up the stack that finds the calling line (always
    # this one), which costs more than the rest of the record on every tool call.
    record = audit_logger.makeRecord(audit_logger.name, level, __file__, 0, event, (), None, func="_emit")
    record.audit = {"time": utc_stamp(record.created), "event": event} | {
        key: value for key, value in fields.items() if value is not None
    }
    audit_logger.handle(record)


def denial(client_address: str, step: str, reason: str, token_name: str | None = None) -> None:
    """A request refused at `step` (DESIGN.md table). Transport rules (step 6) are a
    client's mistake more often than an attack, so they are logged at INFO, the rest at WARNING."""
    level = logging.INFO if step == "transport" else logging.WARNING
    _emit("denied", level, client=client_address, step=step, reason=reason, token=token_name)


def tool_call(client_address: str, token_name: str, tool: str, outcome: str) -> None:
    """A tools/call that reached its tool, and how it ended
    (ok, error, cancelled, invalid_arguments, invalid_output)."""
    _emit("tool_call", client=client_address, token=token_name, tool=tool, outcome=outcome)


def dispatch_outcome(outcome: Outcome, client_address: str, token_name: str) -> None:
    """The audit event of one dispatch outcome, if it has one: the one place step-7 denials and
    tool calls are audited. Both transports call it from the function that maps an outcome to
    the wire, once per outcome (a revocation: once per session or socket it ends)."""
    if isinstance(outcome, ScopeRefused):
        denial(client_address, "dispatch", "insufficient_scope", token_name)
    elif isinstance(outcome, Revoked):
        denial(client_address, "dispatch", "revoked", token_name)
    elif isinstance(outcome, (Answered, Failed)) and outcome.tool_call is not None:
        tool_call(client_address, token_name, outcome.tool_call.tool, outcome.tool_call.outcome)
    if isinstance(outcome, Failed) and outcome.state_refusal is not None:
        # The client is told only "Invalid or expired requestState"; the cause is here, never the state.
        denial(client_address, "request_state", outcome.state_refusal, token_name)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; audit records keep their fields, others get a message."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = getattr(record, "audit", None) or {
            "time": utc_stamp(record.created),
            "event": "log",
            "message": record.getMessage(),
        }
        payload = {**payload, "level": record.levelname.lower(), "logger": record.name}
        if record.exc_info:
            # One JSON string: json.dumps escapes its newlines, so the record stays one line.
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        audit = getattr(record, "audit", None)
        stamp = utc_stamp(record.created)
        if audit:
            fields = " ".join(f"{k}={_text_field(v)}" for k, v in audit.items() if k not in ("time", "event"))
            return f"{stamp} {record.levelname.lower()} audit {_text_field(audit['event'])} {fields}"
        text = f"{stamp} {record.levelname.lower()} {record.name}: {escape_controls(record.getMessage())}"
        if record.exc_info:
            # The exception's message may quote a client; its lines are indented, never a record's start.
            trace = self.formatException(record.exc_info)
            text += "\n" + "\n".join(_CONTINUATION_INDENT + escape_controls(line) for line in trace.splitlines())
        return text


_HANDLER_MARK = "_mcp_auth_handler"


def configure_logging(log_format: str = "text", level: int | str = logging.INFO) -> None:
    """Send logs at `level` and above to stderr in `log_format` ("text" or "json").

    The handler sits on the root logger, so a tool author's own
    `logging.getLogger(__name__).info(...)` lines appear beside mcp_auth's
    audit events without any setup of their own. Calling it again replaces
    the handler it installed; other handlers on the root logger stay.
    """
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, _HANDLER_MARK, False)] + [handler]
    root.setLevel(level)
    ours = logging.getLogger("mcp_auth")
    ours.handlers[:] = [h for h in ours.handlers if not getattr(h, _HANDLER_MARK, False)]
    ours.setLevel(logging.NOTSET)
    ours.propagate = True


def logging_configured() -> bool:
    """Whether anyone (configure_logging, the host application) has set up logging."""
    return bool(logging.getLogger().handlers or logging.getLogger("mcp_auth").handlers)
