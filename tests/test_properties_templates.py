"""Property tests: URI templates and resource scopes, for any string a client can send.

Each input yields a match (and its values), no match, or the documented
refusal (`RefusedValue`, answered -32602; `ScopeDenied`, answered 403), and
nothing else. The suite runs a fixed budget with a fixed seed (profile "ci");
`HYPOTHESIS_PROFILE=deep` runs the same properties with a far larger budget
(`HYPOTHESIS_MAX_EXAMPLES` sets it).
"""

from __future__ import annotations

import os
import re
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from mcp_auth import McpServer
from mcp_auth.auth.tokens import Principal
from mcp_auth.auth.tokens.principal import uri_glob_match
from mcp_auth.mcp.context import Call
from mcp_auth.mcp.jsonrpc import INVALID_PARAMS, RESOURCE_NOT_FOUND, JsonRpcError, Request
from mcp_auth.mcp.outcome import ScopeDenied
from mcp_auth.mcp.uritemplate import RefusedValue, TemplateError, UriTemplate
from mcp_auth.sessions import Session

# --- profiles: "ci" (the suite's default) and "deep"; registered here only if no one else did ---

# Enough examples to reach every branch of the matcher and the glob, few enough for seconds.
CI_MAX_EXAMPLES = 200
# A deep run: a hundred times the suite's budget.
DEEP_MAX_EXAMPLES = 20_000


def _registered(name: str) -> bool:
    try:
        settings.get_profile(name)
    except InvalidArgument:
        return False
    return True


def _deep_budget() -> int:
    raw = os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else DEEP_MAX_EXAMPLES


# No deadline: time never decides a verdict on a loaded machine.
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
if not _registered("ci"):
    settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES, derandomize=True, **_COMMON)
if not _registered("deep"):
    settings.register_profile("deep", max_examples=_deep_budget(), derandomize=False, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "").strip() or "ci")


# --- strategies ----------------------------------------------------------------------------------

# Pieces that exercise every rule: separators, dot segments, escapes good and bad, controls.
# fmt: off
URI_PIECES = [
    "public", "a", "/", "-", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", "%25", "%252e",
    "%", "%4", "%41", "%c3%a9", "%ff", "?", "#", "{", "}", "*", "files://", "date://", "\n", "\u2028", " ",
    "//", "%2D", "%2d", "%3F", "%23", "2024", "12",
]
# fmt: on
uri_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(URI_PIECES), max_size=20).map("".join),
    st.lists(st.sampled_from(URI_PIECES), max_size=20).map(lambda parts: "files://" + "".join(parts)),
    st.lists(st.sampled_from(URI_PIECES), max_size=20).map(lambda parts: "date://" + "".join(parts)),
)

LITERAL_ALPHABET = "/-.:x"


# Templates as people write them, beside the generated ones.
REAL_TEMPLATES = [
    "date://{year}-{month}-{day}",
    "files://{+path}",
    "files://{name}.{ext}",
    "users://{user_id}/profile",
    "docs://{+dir}/{file}",
    "repo://{owner}/{repo}/blob/{+path}",
]


@st.composite
def templates(draw: st.DrawFn) -> UriTemplate:
    """Level 1-2 templates with a literal between every two variables (others are refused)."""
    if draw(st.booleans()):
        return UriTemplate.parse(draw(st.sampled_from(REAL_TEMPLATES)))
    count = draw(st.integers(min_value=0, max_value=4))
    text = "t:" + draw(st.text(LITERAL_ALPHABET, max_size=3))
    for index in range(count):
        reserved = draw(st.booleans())
        text += "{" + ("+" if reserved else "") + f"v{index}" + "}"
        minimum = 1 if index < count - 1 else 0
        text += draw(st.text(LITERAL_ALPHABET, min_size=minimum, max_size=3))
    return UriTemplate.parse(text)


def _uri_for(template: UriTemplate) -> st.SearchStrategy[str]:
    return st.one_of(
        uri_text.map(lambda rest: template.literals[0] + rest),
        uri_text.map(lambda rest: template.literals[0] + rest + template.literals[-1]),
        uri_text,
    )


# --- the matcher ---------------------------------------------------------------------------------


class CountingStr(str):
    """A URI that counts the searches made in it: the matcher's work, without a clock."""

    searches = 0

    def find(self, *args: Any) -> int:  # type: ignore[override]
        CountingStr.searches += 1
        return super().find(*args)

    def rfind(self, *args: Any) -> int:  # type: ignore[override]
        CountingStr.searches += 1
        return super().rfind(*args)


@given(st.data())
def test_match_yields_values_that_expand_back_to_the_uri(data: st.DataObject) -> None:
    template = data.draw(templates())
    uri = data.draw(_uri_for(template))
    CountingStr.searches = 0
    values = template.match(CountingStr(uri))
    # Linear by construction: at most one search per variable, never a retry with another split.
    assert CountingStr.searches <= max(len(template.variables) - 1, 0)
    if values is None:
        return
    assert list(values) == list(template.names)
    assert template.expand(values) == uri
    for variable in template.variables:
        value = values[variable.name]
        assert value, "every value has at least one character"
        if not variable.reserved:
            assert not set(value) & set("/?#")


@given(st.data())
def test_resolve_yields_a_value_or_the_refusal_and_nothing_else(data: st.DataObject) -> None:
    template = data.draw(templates())
    uri = data.draw(_uri_for(template))
    try:
        resolved = template.resolve(uri)
    except RefusedValue as exc:
        assert str(exc).startswith(f"The value of {{{exc.variable}}} in {template.text} ")
        return
    if resolved is None:
        assert template.match(uri) is None
        return
    assert resolved.effective_uri == template.expand(resolved.arguments)
    # The scope is judged on effective_uri, the handler gets the arguments: the same split.
    assert template.match(resolved.effective_uri) == resolved.arguments
    for value in resolved.arguments.values():
        assert "\\" not in value
        assert not {".", ".."} & set(value.split("/"))
        assert "" not in value.split("/"), "no empty path segment (leading, trailing or doubled '/')"
        assert not re.search(r"%(2e|2f|5c)", value, re.IGNORECASE)


VALUE_ALPHABET = "abcAB019_~é"


@given(st.data())
def test_values_without_the_templates_characters_round_trip(data: st.DataObject) -> None:
    template = data.draw(templates())
    # A {+var} ends at the last place its following text appears (the documented rule),
    # so the values come back as given only when that text does not recur further on.
    for index, variable in enumerate(template.variables[:-1]):
        if variable.reserved:
            following = template.literals[index + 1]
            assume(not any(following in literal for literal in template.literals[index + 2 : -1]))
    values = {name: data.draw(st.text(VALUE_ALPHABET, min_size=1, max_size=8)) for name in template.names}
    uri = template.expand(values)
    assert template.match(uri) == values
    resolved = template.resolve(uri)
    assert resolved is not None
    assert resolved.arguments == values
    assert resolved.effective_uri == uri


@given(st.text(max_size=40))
def test_parse_yields_a_template_or_a_template_error(text: str) -> None:
    try:
        template = UriTemplate.parse(text)
    except TemplateError:
        return
    assert "".join(template.literals) == re.sub(r"\{\+?[A-Za-z_][A-Za-z0-9_]*\}", "", text, flags=re.ASCII)


# --- resource scope globs ------------------------------------------------------------------------


def _reference_glob(pattern: str) -> re.Pattern[str]:
    """The documented meaning of a resource glob as a regex: an oracle for short inputs only."""
    parts = []
    for token in re.findall(r"\*\*+|\*|\?|[^*?]", pattern):
        if token.startswith("**"):
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts), re.DOTALL)


glob_text = st.lists(st.sampled_from(["*", "**", "?", "/", "a", "b", ".", "[", "]", "files://"]), max_size=8).map(
    "".join
)
glob_subject = st.lists(st.sampled_from(["/", "a", "b", ".", "[", "]", "files://", "\n"]), max_size=10).map("".join)


@given(glob_text, glob_subject)
def test_glob_agrees_with_its_documented_meaning(pattern: str, uri: str) -> None:
    assert uri_glob_match(pattern, uri) is bool(_reference_glob(pattern).fullmatch(uri))


@given(st.text(max_size=20), st.text(max_size=60))
def test_glob_answers_a_bool_for_any_pattern_and_uri(pattern: str, uri: str) -> None:
    assert uri_glob_match(pattern, uri) in (True, False)


# --- scopes through dispatch: whatever the URI, the handler only sees what the scope allows --------

SCOPES = ["files://public/*", "files://public/**", "files://*", "date://*-*-*", "date://2024-12-*"]


def _files_server(reached: list[str]) -> McpServer:
    server = McpServer("files")

    @server.resource("files://{+path}")
    def file(path: str) -> str:
        reached.append(path)
        return path

    @server.resource("date://{year}-{month}-{day}")
    def date(year: str, month: str, day: str) -> str:
        reached.append(f"{year}-{month}-{day}")
        # The scope judged this split: the same text must split back into the same values.
        assert UriTemplate.parse("date://{year}-{month}-{day}").match(f"date://{year}-{month}-{day}") == {
            "year": year,
            "month": month,
            "day": day,
        }
        return "date"

    return server


@given(st.sampled_from(SCOPES), uri_text, st.sampled_from(["resources/read", "resources/subscribe"]))
def test_a_scoped_read_reaches_the_handler_only_inside_the_scope(scope: str, uri: str, method: str) -> None:
    reached: list[str] = []
    server = _files_server(reached)
    principal = Principal("scoped", (f"resource:{scope}",), "x")
    call = Call(Session(principal, _Sink()), principal, _Sink(), "127.0.0.1", lambda p: True)
    server.dispatcher.dispatch(Request(0, "initialize", {"protocolVersion": "2025-11-25"}), call)
    try:
        server.dispatcher.dispatch(Request(1, method, {"uri": uri}), call)
    except ScopeDenied:
        assert reached == []
        return
    except JsonRpcError as exc:
        assert exc.code in (INVALID_PARAMS, RESOURCE_NOT_FOUND), exc
        assert reached == []
        return
    if method == "resources/subscribe" or not reached:
        return
    (value,) = reached
    effective = ("files://" if uri.startswith("files://") else "date://") + value
    assert uri_glob_match(scope, effective)
    assert not {".", ".."} & set(value.split("/"))
    assert "\\" not in value


class _Sink:
    def send(self, message: dict[str, Any]) -> None:
        pass
