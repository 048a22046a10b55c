"""Resource URIs: matching URI templates and the values handlers get.

Responsible for
- matching a client's URI against a resource template (`UriTemplate.match`) in
  one left-to-right pass, without backtracking, so the cost is linear in the
  URI's length whatever the template;
- turning the matched text of each variable into the value its handler
  receives (`UriTemplate.resolve`): percent-decoded, and refused
  (`RefusedValue`) when it could walk out of the place the template names.
Resource scope globs (`resource:<glob>`) are matched, also without
backtracking, by `mcp_auth.auth.tokens.principal.uri_glob_match`.

What it trusts
- Templates: they come from the developer. Only their shape is checked
  (`TemplateError`).
- Nothing in a URI. Whatever a client sends, these functions return a match,
  no match, or `RefusedValue`, and never look at a character twice per
  variable.

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
        effective_uri = self.expand(arguments)
        # The scope is judged on effective_uri and the handler gets `arguments`: they
        # must be the same split. A decoded value holding the literal that follows it
        # (say '-' from "%2D") would make effective_uri split elsewhere; refuse it.
        again = self.match(effective_uri)
        if again != arguments:
            changed = next(
                (name for name in self.names if again is None or again.get(name) != arguments[name]), self.names[0]
            )
            raise RefusedValue(
                self.text, changed, "contains a %XX escape that, once decoded, would split the URI differently"
            )
        return Resolved(arguments, effective_uri)

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
        segments = value.split("/")
        if not _DOT_SEGMENTS.isdisjoint(segments):
            raise RefusedValue(self.text, name, "contains a '.' or '..' path segment")
        # "/etc/passwd" in files://public/{+path} would make files://public//etc/passwd:
        # a handler joining it to a directory gets an absolute path.
        if "" in segments:
            raise RefusedValue(self.text, name, "contains an empty path segment (a leading or trailing '/', or '//')")
        return value
