"""The built-in server's reading of a request's header fields: strict (RFC 9112), and cheap.

http.server hands the header block to the `email` package's parser, which
is lenient (it takes a folded line, a line without a colon or a name with
spaces before its colon as it can) and costs more than the rest of the
request's handling outside the app. The built-in server reads the fields
with `read_fields` instead, and refuses with 400 what a request smuggler or
a broken client sends and a lenient reader would guess at:

- a field line that does not start with a field name (a token) followed
  at once by a colon: so no whitespace before the colon, as section 5.1
  requires a server to refuse, and no line without a colon;
- a continuation line (obs-fold: one starting with a space or a tab), which
  section 5.2 lets a server refuse;
- a field value containing a bare CR (section 2.2), which a reader further
  on may take as the end of the line. Other bytes, NUL among them, are the
  app's to judge (a token with a NUL in it gets the same 401 as any wrong token).

The bounds are http.server's: at most MAX_FIELD_LINES fields and
MAX_LINE_BYTES per line (431). A field value is trimmed of the spaces and
tabs around it and decoded as ISO-8859-1, as http.server did: every byte is
kept, none is rejected for being non-ASCII.

`RequestHeaders` offers what the handler, Werkzeug's `make_environ` and
http.server read of `self.headers`: `get`, `get_all`, `items`, `keys`,
`__contains__` and `__iter__`, with names matched without regard to case.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from http import HTTPStatus

# http.client's bounds, which http.server applied: 100 fields, 64 KiB a line.
MAX_FIELD_LINES = 100
MAX_LINE_BYTES = 65536

# RFC 9110 section 5.6.2: a field name is a token.
_FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):(.*?)\r?\n?", re.DOTALL)
# A CR that does not end the line.
_FORBIDDEN_IN_VALUE = re.compile(rb"\r")
_LINE_ENDS = (b"\r\n", b"\n", b"")
# The lines of a header block, each with its line end, as readline would return them one by one.
_LINES = re.compile(rb"[^\n]*\n")
# The end of a line followed by an empty line: where a header block ends.
_BLOCK_END = re.compile(rb"\n\r?\n")


class HeadError(Exception):
    """A header block refused: `status` and a message that tells the client what to fix."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestHeaders:
    """A request's header fields in the order they came; names match without regard to case."""

    __slots__ = ("_by_name", "_fields")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._by_name: dict[str, list[str]] = {}
        for name, value in fields:
            self._by_name.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of the field `name`, else `default`."""
        values = self._by_name.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        """Every value of the field `name`, in order, else `default`."""
        values = self._by_name.get(name.lower())
        return list(values) if values else default

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def keys(self) -> list[str]:
        return [name for name, _ in self._fields]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._fields)


def read_fields(readline: Callable[[int], bytes]) -> RequestHeaders:
    """Read header field lines with `readline` up to the empty line (or the end); HeadError if refused."""
    fields: list[tuple[str, str]] = []
    while True:
        line = readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "A header line is too long")
        if line in _LINE_ENDS:
            return RequestHeaders(fields)
        _add_field(fields, line)


def block_length(data: bytes) -> int | None:
    """How many bytes of `data` (the bytes after the request line) make the header block, through the
    first empty line (CRLF or a bare LF, as `read_fields` ends); None when that line is not in `data`."""
    if data.startswith(b"\r\n"):
        return 2
    if data.startswith(b"\n"):
        return 1
    end = _BLOCK_END.search(data)
    return None if end is None else end.end()


def fields_of_block(block: bytes) -> RequestHeaders:
    """The fields of a whole header block (`block_length` bytes), read exactly as `read_fields` reads them."""
    fields: list[tuple[str, str]] = []
    for line in _LINES.findall(block)[:-1]:  # the last line is the empty one
        if len(line) > MAX_LINE_BYTES:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "A header line is too long")
        _add_field(fields, line)
    return RequestHeaders(fields)


def _add_field(fields: list[tuple[str, str]], line: bytes) -> None:
    """Judge one field line (with its line end) and add its name and value to `fields`; HeadError if refused."""
    if len(fields) >= MAX_FIELD_LINES:
        raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"Too many headers; send at most {MAX_FIELD_LINES}")
    if line[:1] in (b" ", b"\t"):
        raise HeadError(HTTPStatus.BAD_REQUEST, "A header line is folded over two lines; send each header on one line")
    match = _FIELD_LINE.fullmatch(line)
    if match is None:
        raise HeadError(
            HTTPStatus.BAD_REQUEST, "A header line is malformed; send name: value, with no space before the colon"
        )
    raw_name, raw_value = match.groups()
    raw_value = raw_value.strip(b" \t")
    if _FORBIDDEN_IN_VALUE.search(raw_value):
        raise HeadError(HTTPStatus.BAD_REQUEST, "A header value contains a bare CR; remove it")
    fields.append((raw_name.decode("ascii"), raw_value.decode("iso-8859-1")))


class RequestLine:
    """What the request line says: the method, the target, the version, and whether the
    version lets the connection stay open (HTTP/1.1 and later, which this server speaks)."""

    __slots__ = ("method", "persistent", "target", "version")

    def __init__(self, method: str, target: str, version: str, persistent: bool) -> None:
        self.method, self.target, self.version, self.persistent = method, target, version, persistent


def parse_request_line(text: str) -> RequestLine:
    """Parse a request line (decoded as ISO-8859-1, line end removed) as http.server did; HeadError if refused.

    `METHOD TARGET HTTP/x.y`, or `GET TARGET` (HTTP/0.9). A version must be
    HTTP/ and two numbers of at most ten digits; 2.0 and later are refused
    with 505. A target starting with several slashes is reduced to one, so it
    is never read as a network-path reference.
    """
    words = text.split()
    version = "HTTP/0.9"
    persistent = False
    if len(words) >= 3:
        version = words[-1]
        numbers = version[5:].split(".") if version.startswith("HTTP/") else []
        # ASCII digits only: str.isdigit also says yes to the Latin-1 superscripts (b"\xb2"), which int() refuses.
        if len(numbers) != 2 or not all(part.isascii() and part.isdigit() and len(part) <= 10 for part in numbers):
            raise HeadError(HTTPStatus.BAD_REQUEST, "Bad request version")
        major, minor = int(numbers[0]), int(numbers[1])
        if (major, minor) >= (2, 0):
            raise HeadError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "Invalid HTTP version")
        persistent = (major, minor) >= (1, 1)
    if not 2 <= len(words) <= 3:
        raise HeadError(HTTPStatus.BAD_REQUEST, "Bad request syntax")
    method, target = words[:2]
    if len(words) == 2 and method != "GET":
        raise HeadError(HTTPStatus.BAD_REQUEST, "Bad HTTP/0.9 request type")
    if target.startswith("//"):
        target = "/" + target.lstrip("/")
    return RequestLine(method, target, version, persistent)
