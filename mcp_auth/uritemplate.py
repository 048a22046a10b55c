"""Resource URIs: matching URI templates, the values handlers get, and resource scope globs.

Responsible for
- matching a client's URI against a resource template (`UriTemplate.match`) in
  one left-to-right pass, without backtracking, so the cost is linear in the
  URI's length whatever the template;
- turning the matched text of each variable into the value its handler
  receives (`UriTemplate.resolve`): percent-decoded, and refused
  (`RefusedValue`) when it could walk out of the place the template names;
- matching a resource scope pattern (`resource:<glob>`) against a URI
  (`uri_glob_match`), also without backtracking.

What it trusts
- Templates and scope patterns: they come from the developer and the
  operator. Only their shape is checked (`TemplateError`).
- Nothing in a URI. Whatever a client sends, these functions return a match,
  no match, or `RefusedValue`, and never look at a character twice per
  variable or per pattern position.

Matching rule (RFC 6570 defines expansion, not matching, so this is ours):
the text before the first variable must begin the URI and the text after the
last variable must end it; between them, variables are filled from left to
right. A `{var}` ends at the first place where the text that follows it in
the template appears, and can never contain `/`, `?` or `#`; a `{+var}` ends at
the last such place before the template's tail, and may contain `/`. The last
variable takes everything up to the tail. Every value has at least one
character. There is no second attempt with another split: when the rest does
not fit, the URI does not match. Two variables with nothing between them
(`{a}{b}`) would make every split equally right, so such a template is refused
at registration.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from dataclasses import dataclass

_VARIABLE = re.compile(r"\{(\+?)([A-Za-z_][A-Za-z0-9_]*)\}", re.ASCII)
# A {var} stops at these (RFC 3986 path, query and fragment delimiters).
_SIMPLE_STOPS = frozenset("/?#")
# "%2f" and "%5c" (any case) are a separator hidden from the template's structure.
_ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c)", re.IGNORECASE | re.ASCII)
# A '%' that does not start a %XX escape: a URI no one encoded, or one crafted.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})", re.ASCII)
# After one decoding, an escape of '.', '/' or '\' left over was encoded twice,
# for a handler that decodes again: refused, like the once-encoded kind.
_STILL_ENCODED = re.compile(r"%(?:2e|2f|5c)", re.IGNORECASE | re.ASCII)
_DOT_SEGMENTS = frozenset((".", ".."))


class TemplateError(ValueError):
    """A resource template that cannot be matched unambiguously (a developer's mistake)."""


class RefusedValue(ValueError):
    """A URI that matches a template but whose value a handler must not get.

    The message names the variable and the rule, never the value, so it can
    be sent back to the client as it is.
    """

    def __init__(self, template: str, variable: str, rule: str) -> None:
        super().__init__(f"The value of {{{variable}}} in {template} {rule}")
        self.template = template
        self.variable = variable


@dataclass(frozen=True)
class Variable:
    name: str
    reserved: bool  # {+name}: may span '/'


@dataclass(frozen=True)
class Resolved:
    """A matched URI: the decoded values, and the URI that scopes are matched against."""

    arguments: dict[str, str]
    # The template with each variable replaced by its decoded value: what the
    # handler is asked for, so the scope is judged on the same thing.
    effective_uri: str


@dataclass(frozen=True)
class UriTemplate:
    """A level 1-2 URI template: literal text with `{name}` and `{+name}` variables."""

    text: str
    # literals[i] comes before variables[i]; literals[-1] is the tail.
    literals: tuple[str, ...]
    variables: tuple[Variable, ...]

    @classmethod
    def parse(cls, text: str) -> UriTemplate:
        literals: list[str] = []
        variables: list[Variable] = []
        position = 0
        for found in _VARIABLE.finditer(text):
            literals.append(text[position : found.start()])
            reserved, name = found.groups()
            if any(v.name == name for v in variables):
                raise TemplateError(f"resource template {text!r} names {{{name}}} twice")
            variables.append(Variable(name, bool(reserved)))
            position = found.end()
        literals.append(text[position:])
        for index in range(1, len(variables)):
            if not literals[index]:
                raise TemplateError(
                    f"resource template {text!r}: {{{variables[index - 1].name}}} and {{{variables[index].name}}} "
                    "have nothing between them, so no URI could say where one ends; put a character between them"
                )
        return cls(text, tuple(literals), tuple(variables))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    def could_match(self, uri: str) -> bool:
        """A check of the template's head and tail only: cheap, and never wrong when it says no."""
        head, tail = self.literals[0], self.literals[-1]
        return len(uri) >= len(head) + len(tail) + len(self.variables) and uri.startswith(head) and uri.endswith(tail)

    def match(self, uri: str) -> dict[str, str] | None:
        """The raw (still percent-encoded) text of each variable, or None; see the module's rule."""
        if not self.variables:
            return {} if uri == self.literals[0] else None
        if not self.could_match(uri):
            return None
        end = len(uri) - len(self.literals[-1])
        position = len(self.literals[0])
        values: dict[str, str] = {}
        last = len(self.variables) - 1
        for index, variable in enumerate(self.variables):
            if index == last:
                stop = end
            else:
                following = self.literals[index + 1]
                # At least one character for this value, and room for the ones after it.
                if variable.reserved:
                    stop = uri.rfind(following, position + 1, end)
                else:
                    stop = uri.find(following, position + 1, end)
                if stop < 0:
                    return None
            value = uri[position:stop]
            if not value or (not variable.reserved and not _SIMPLE_STOPS.isdisjoint(value)):
                return None
            values[variable.name] = value
            if index != last:
                position = stop + len(self.literals[index + 1])
        return values

    def expand(self, values: dict[str, str]) -> str:
        """The template with each variable replaced by `values[name]` as given (no encoding)."""
        parts = [self.literals[0]]
        for variable, literal in zip(self.variables, self.literals[1:], strict=True):
            parts.append(values[variable.name])
            parts.append(literal)
        return "".join(parts)

    def resolve(self, uri: str) -> Resolved | None:
        """Match and decode: None when the URI does not match, RefusedValue when a value is refused."""
        raw = self.match(uri)
        if raw is None:
            return None
        arguments = {name: self._decode(name, value) for name, value in raw.items()}
        return Resolved(arguments, self.expand(arguments))

    def _decode(self, name: str, raw: str) -> str:
        if _ENCODED_SEPARATOR.search(raw):
            raise RefusedValue(self.text, name, "contains an encoded '/' or '\\' (%2F, %5C)")
        if _BAD_ESCAPE.search(raw):
            raise RefusedValue(self.text, name, "contains a '%' that does not start a %XX escape")
        try:
            value = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise RefusedValue(self.text, name, "contains %XX escapes that are not UTF-8") from None
        if "\\" in value:
            raise RefusedValue(self.text, name, "contains '\\', a path separator on some systems")
        if _STILL_ENCODED.search(value):
            raise RefusedValue(self.text, name, "contains a doubly encoded '.', '/' or '\\'")
        if not _DOT_SEGMENTS.isdisjoint(value.split("/")):
            raise RefusedValue(self.text, name, "contains a '.' or '..' path segment")
        return value


# --- resource scope globs ------------------------------------------------------------------

# Token kinds of a compiled glob.
_ANY_RUN = 0  # "**": any characters, '/' included
_SEGMENT_RUN = 1  # "*": any characters but '/'
_ONE = 2  # "?": one character but '/'
_LITERAL = 3
_RUNS = (_ANY_RUN, _SEGMENT_RUN)
# Compiled patterns kept: far more than a tokens file holds, small in memory.
_GLOB_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_GLOB_CACHE_SIZE)
def _compile_glob(pattern: str) -> tuple[tuple[int, str], ...]:
    tokens: list[tuple[int, str]] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            run = 2 if pattern.startswith("**", index) else 1
            while pattern.startswith("*", index):  # "***" is "**": any run of stars spans '/' from two on
                index += 1
            tokens.append((_ANY_RUN if run == 2 else _SEGMENT_RUN, ""))
            continue
        tokens.append((_ONE, "") if char == "?" else (_LITERAL, char))
        index += 1
    return tuple(tokens)


def _closure(states: set[int], tokens: tuple[tuple[int, str], ...]) -> set[int]:
    """Add the states reachable by letting a run match nothing."""
    out = set(states)
    for state in states:
        while state < len(tokens) and tokens[state][0] in _RUNS:
            state += 1
            out.add(state)
    return out


def uri_glob_match(pattern: str, uri: str) -> bool:
    """Whether a resource scope glob matches `uri`, case-sensitively.

    `*` matches any run of characters without '/', `**` any run including
    '/', `?` one character other than '/'; everything else, `[` included (URIs
    hold IPv6 literals), matches itself. The pattern is run as a set of
    positions over the URI, one character at a time: no backtracking, so the
    cost is at most len(uri) x len(pattern) steps whatever both contain.
    """
    tokens = _compile_glob(pattern)
    if all(kind == _LITERAL for kind, _ in tokens):
        return pattern == uri
    # The usual shapes, "prefix/**" and "prefix/*", without the general loop.
    if tokens[-1][0] in _RUNS and all(kind == _LITERAL for kind, _ in tokens[:-1]):
        prefix = pattern.rstrip("*")
        if not uri.startswith(prefix):
            return False
        return tokens[-1][0] == _ANY_RUN or "/" not in uri[len(prefix) :]
    accept = len(tokens)
    states = _closure({0}, tokens)
    for char in uri:
        following: set[int] = set()
        for state in states:
            if state == accept:
                continue
            kind, literal = tokens[state]
            if kind == _ANY_RUN or (kind == _SEGMENT_RUN and char != "/"):
                following.add(state)
            elif (kind == _ONE and char != "/") or (kind == _LITERAL and char == literal):
                following.add(state + 1)
        if not following:
            return False
        states = _closure(following, tokens)
    return accept in states
