"""The string rules of JSON Schema as we enforce them: `format` checkers and ECMA-262 patterns.

`FORMAT_CHECKS` holds one strict checker per supported `format` (RFC 3339
dates and times, hostnames, IP addresses, e-mail, URIs, UUIDs, JSON pointers);
a format not listed is refused at registration by `mcp_auth.mcp.validation`.
`ecma_pattern` rewrites a `pattern` so Python's `re` gives it its ECMA-262
meaning. Values are never evaluated or fetched; every check is bounded.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Mapping

import jsonschema
import jsonschema.validators

from .schema import SchemaError

# --- formats: checked by our own stdlib code, so what is checked does not depend on
# which optional packages happen to be installed (jsonschema's own checker does).
_RFC3339_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)

_RFC3339_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)

_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)

_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*", re.ASCII)

_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*", re.ASCII)

# RFC 3986 characters: unreserved, reserved, and '%' (which must start a %XX escape).
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*", re.ASCII)

_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}", re.ASCII)

_JSON_POINTER = re.compile(r"(?:/(?:[^~/]|~[01])*)*")

# RFC 1035: a name of at most 253 characters in labels of at most 63.
MAX_HOSTNAME_CHARS = 253

# RFC 5321: a local part of at most 64 characters.
MAX_EMAIL_LOCAL_CHARS = 64


def _is_date(text: str) -> bool:
    match = _RFC3339_DATE.fullmatch(text)
    if not match:
        return False
    try:
        datetime.date(*(int(part) for part in match.groups()))
    except ValueError:
        return False
    return True


def _is_time(text: str) -> bool:
    match = _RFC3339_TIME.fullmatch(text)
    if not match:
        return False
    hour, minute, second = (int(part) for part in match.groups()[:3])
    offset = match.group(5)
    if offset not in ("Z", "z") and (int(offset[1:3]) > 23 or int(offset[4:6]) > 59):
        return False
    # RFC 3339 allows a leap second (60); whether one happened that day is not ours to know.
    return hour <= 23 and minute <= 59 and second <= 60


def _is_date_time(text: str) -> bool:
    date, separator, time = text[:10], text[10:11], text[11:]
    return separator in ("T", "t") and _is_date(date) and _is_time(time)


def _is_hostname(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= MAX_HOSTNAME_CHARS and all(_HOSTNAME_LABEL.fullmatch(label) for label in name.split("."))


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_ipv6(text: str) -> bool:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return address.scope_id is None  # a zone id names this machine's interface, not an address


def _is_email(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    if not at or len(local) > MAX_EMAIL_LOCAL_CHARS or not _EMAIL_LOCAL.fullmatch(local):
        return False
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        return _is_ipv6(literal[5:]) if literal[:5].lower() == "ipv6:" else _is_ipv4(literal)
    return _is_hostname(domain) and not domain.endswith(".")


def _is_uri_reference(text: str) -> bool:
    if not _URI_CHARS.fullmatch(text):
        return False
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return True


def _is_uri(text: str) -> bool:
    scheme, colon, _ = text.partition(":")
    return bool(colon) and bool(_URI_SCHEME.fullmatch(scheme)) and _is_uri_reference(text)


# The formats we check. Any other `format` is refused at registration: under
# 2020-12 an unchecked format is only an annotation, and a tool author who
# writes "format": "credit-card" expects a check, not a comment.
FORMAT_CHECKS: Mapping[str, Callable[[str], bool]] = {
    "date-time": _is_date_time,
    "date": _is_date,
    "time": _is_time,
    "email": _is_email,
    "hostname": _is_hostname,
    "ipv4": _is_ipv4,
    "ipv6": _is_ipv6,
    "uri": _is_uri,
    "uri-reference": _is_uri_reference,
    "uuid": lambda text: bool(_UUID.fullmatch(text)),
    "json-pointer": lambda text: bool(_JSON_POINTER.fullmatch(text)),
}


_FORMAT_CHECKER = jsonschema.FormatChecker(formats=())

for _name, _check in FORMAT_CHECKS.items():
    # A format constrains strings only; other types pass (the `type` keyword is for them).
    _FORMAT_CHECKER.checks(_name)(lambda value, check=_check: not isinstance(value, str) or check(value))


# --- patterns: JSON Schema patterns are ECMA-262 regular expressions; Python's `re`
# differs where it matters for validation: `$` also matches before a final newline
# ("^[a-z]+$" would accept "abc\n"), `\d` and `\w` match any Unicode digit or letter,
# and `.` matches "\r". Each pattern is rewritten to the ECMA-262 meaning before
# the validator sees it.
_ECMA_ESCAPES = {"d": "[0-9]", "D": "[^0-9]", "w": "[A-Za-z0-9_]", "W": "[^A-Za-z0-9_]"}

_ECMA_CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_"}

_ECMA_DOT = "[^\\n\\r\\u2028\\u2029]"


def ecma_pattern(pattern: str) -> str:
    """`pattern` (ECMA-262) as a Python regular expression with the same meaning; SchemaError if we cannot say."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            escaped = pattern[index + 1]
            if in_class and escaped in ("D", "W"):
                raise SchemaError(
                    f"pattern {pattern!r}: \\{escaped} inside [...] is not supported; spell the class out"
                )
            table = _ECMA_CLASS_ESCAPES if in_class else _ECMA_ESCAPES
            out.append(table.get(escaped, char + escaped))
            index += 2
            continue
        if in_class:
            # In ECMA-262 a ']' always ends the class, and '[' inside one is a plain
            # character (Python would warn of a nested set); '&', '~', '|' doubled
            # are set operations to Python's future parser, so they are escaped.
            in_class = char != "]"
            if char in "[&~|":
                char = "\\" + char
        elif pattern.startswith("[]", index):
            char, index = "(?!)", index + 1  # the empty class matches nothing
        elif pattern.startswith("[^]", index):
            char, index = "(?s:.)", index + 2  # its negation matches anything
        elif char == "[":
            in_class = True
            if pattern.startswith("[^", index):
                char, index = "[^", index + 1
        elif char == "$":
            char = r"\Z"
        elif char == ".":
            char = _ECMA_DOT
        out.append(char)
        index += 1
    return "".join(out)
