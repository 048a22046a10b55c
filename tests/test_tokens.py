"""Tests for mcp_auth.auth.tokens: header parsing, matching, token files, rotation, first run.

Every file lives under tmp_path; the real home directory is never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from mcp_auth.auth.tokens import (
    ANONYMOUS,
    MAX_AUTHORIZATION_HEADER_CHARS,
    MAX_NAMED_TOKENS,
    MIN_TOKEN_CHARS,
    Principal,
    StaticToken,
    TokenFile,
    TokensFile,
    TokenSource,
    add_token,
    default_token_path,
    ensure_default_token,
    generate_token,
    list_tokens,
    parse_bearer,
    read_token_file,
    revoke_token,
)
from mcp_auth.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-0123456789abcdefghijklmnopqrstuvwxyz"  # visible ASCII, long enough
OTHER_TOKEN = "tok-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
POSIX = hasattr(os, "geteuid")
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX owner and mode bits")


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def assert_no_secret(text: str, *secrets: str) -> None:
    """No token, nor a recognisable piece of one (8+ chars), appears in `text`."""
    for secret in filter(None, secrets):
        for start in range(0, max(1, len(secret) - 7)):
            assert secret[start : start + 8] not in text


def write_private(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def tokens_doc(*entries: dict) -> str:
    return json.dumps({"version": 1, "tokens": list(entries)})


def entry(name: str = "ci", token: str = TOKEN, tools: list[str] | None = None) -> dict:
    return {"name": name, "sha256": sha256_hex(token), "tools": tools, "created": "2024-01-01T00:00:00Z"}


def rewrite_in_place(path: Path, content: str) -> None:
    """Same inode, typically same size and same mtime tick: the hard case for stat."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(content.encode())


def replace_atomically(path: Path, content: str) -> None:
    temp = path.with_name(path.name + ".new")
    write_private(temp, content)
    os.replace(temp, path)


# --- generate_token / parse_bearer ------------------------------------------


def test_generate_token_is_urlsafe_43_chars_and_unique() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(token) == 43
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("Bearer abc", b"abc", id="plain"),
        pytest.param("bearer abc", b"abc", id="lowercase-scheme"),
        pytest.param("BEARER abc", b"abc", id="uppercase-scheme"),
        pytest.param("bEaReR abc", b"abc", id="mixed-case-scheme"),
        pytest.param("Bearer\tabc", b"abc", id="tab-separator"),
        pytest.param("Bearer   \t abc", b"abc", id="several-spaces-and-tabs"),
        pytest.param("  Bearer abc", b"abc", id="leading-whitespace"),
        pytest.param("Bearer abc  \t", b"abc", id="trailing-whitespace"),
        pytest.param("Bearer abc\r\n", b"abc", id="trailing-crlf"),
        pytest.param("Bearer a.b-c_d~e+f/g==", b"a.b-c_d~e+f/g==", id="b64token-chars"),
        pytest.param("Bearer caf\xe9", b"caf\xe9", id="non-ascii-latin1-to-bytes"),
        pytest.param("Bearer \xc3\xa9t\xc3\xa9", b"\xc3\xa9t\xc3\xa9", id="utf8-bytes-roundtrip"),
        pytest.param("Bearer ab\x00cd", b"ab\x00cd", id="nul-inside-token"),
        pytest.param("Bearer a\xa0b", b"a\xa0b", id="latin1-nbsp-is-not-a-separator"),
        pytest.param(
            "Bearer " + "x" * (MAX_AUTHORIZATION_HEADER_CHARS - 7),
            b"x" * (MAX_AUTHORIZATION_HEADER_CHARS - 7),
            id="exactly-at-limit",
        ),
        pytest.param("Bearer " + "x" * (MAX_AUTHORIZATION_HEADER_CHARS - 6), None, id="one-over-limit"),
        pytest.param("Bearer " + "x" * 100_000, None, id="100kb-header"),
        pytest.param(None, None, id="missing"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="whitespace-only"),
        pytest.param("Bearer", None, id="scheme-alone"),
        pytest.param("Bearer ", None, id="scheme-and-space"),
        pytest.param("Bearer \t ", None, id="scheme-and-whitespace"),
        pytest.param("Bearer a b", None, id="two-tokens"),
        pytest.param("Bearer a\tb", None, id="tab-inside-token"),
        pytest.param("Bearerabc", None, id="no-separator"),
        pytest.param("Bearer\nabc", None, id="newline-separator"),
        pytest.param("Bearer\x0babc", None, id="vertical-tab-separator"),
        pytest.param("Basic dXNlcjpwYXNz", None, id="basic-scheme"),
        pytest.param("Token abc", None, id="other-scheme"),
        pytest.param("Bearer, abc", None, id="comma-after-scheme"),
        pytest.param("Bearer\u0130 abc", None, id="unicode-casefold-lookalike"),
        pytest.param("abc", None, id="token-without-scheme"),
    ],
)
def test_parse_bearer(header: str | None, expected: bytes | None) -> None:
    assert parse_bearer(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"Bearer abc", id="bytes"),
        pytest.param(42, id="int"),
        pytest.param(["Bearer abc"], id="list"),
        pytest.param("Bearer \u20ac\u20ac", id="char-above-latin1"),
        pytest.param("Bearer \ud800", id="lone-surrogate"),
        pytest.param("\x00" * 5000, id="nul-flood"),
    ],
)
def test_parse_bearer_never_raises(header: object) -> None:
    assert parse_bearer(header) is None  # type: ignore[arg-type]


# --- Principal --------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "tool", "allowed"),
    [
        pytest.param(None, "anything", True, id="unscoped"),
        pytest.param(("echo",), "echo", True, id="exact"),
        pytest.param(("echo",), "echo2", False, id="exact-no-prefix-match"),
        pytest.param(("read_*",), "read_file", True, id="glob"),
        pytest.param(("read_*",), "write_file", False, id="glob-miss"),
        pytest.param(("read_*",), "READ_file", False, id="case-sensitive"),
        pytest.param(("echo", "who?m?"), "whoami", True, id="second-pattern"),
        pytest.param((), "echo", False, id="empty-scope"),
        pytest.param(("[ab]*",), "beta", True, id="character-class"),
    ],
)
def test_principal_may_use(patterns: tuple[str, ...] | None, tool: str, allowed: bool) -> None:
    assert Principal("p", patterns, "0" * 64).may_use(tool) is allowed


@pytest.mark.parametrize(
    ("patterns", "kind", "name", "allowed"),
    [
        # A tool glob never reaches into the other namespaces.
        pytest.param(("re*",), "resource", "resource://notes", False, id="tool-glob-re*-grants-no-resource"),
        pytest.param(("re*",), "resource", "res://x", False, id="tool-glob-re*-grants-no-re-uri"),
        pytest.param(("re*",), "tool", "read_file", True, id="tool-glob-re*-still-grants-tools"),
        pytest.param(("p*",), "prompt", "plan", False, id="tool-glob-p*-grants-no-prompt"),
        pytest.param(("p*",), "prompt", "prompt", False, id="tool-glob-p*-grants-no-prompt-named-prompt"),
        pytest.param(("*",), "tool", "echo", True, id="star-grants-every-tool"),
        pytest.param(("*",), "resource", "file:///etc/passwd", False, id="star-grants-no-resource"),
        pytest.param(("*",), "prompt", "review", False, id="star-grants-no-prompt"),
        pytest.param(("*",), "tool", "resource:file:///x", False, id="star-grants-no-old-style-resource-as-tool"),
        pytest.param(("*",), "tool", "prompt:review", False, id="star-grants-no-old-style-prompt-as-tool"),
        # Each prefix grants its own kind only, matched against the URI or name.
        pytest.param(("resource:**",), "resource", "file:///etc/passwd", True, id="resource-2star-grants-resources"),
        pytest.param(("resource:**",), "resource", "", True, id="resource-2star-grants-empty-uri"),
        # In a resource glob `*` stays within one path segment; `**` spans segments.
        pytest.param(("resource:*",), "resource", "file:///etc/passwd", False, id="resource-star-stops-at-slash"),
        pytest.param(("resource:*",), "resource", "urn:isbn:1", True, id="resource-star-one-segment"),
        pytest.param(("resource:files://public/*",), "resource", "files://public/a", True, id="star-segment-hit"),
        pytest.param(("resource:files://public/*",), "resource", "files://public/a/b", False, id="star-not-deeper"),
        pytest.param(("resource:files://public/*",), "resource", "files://public/", True, id="star-may-be-empty"),
        pytest.param(("resource:files://public/**",), "resource", "files://public/a/b", True, id="double-star-deeper"),
        pytest.param(("resource:files://public/**",), "resource", "files://publicity", False, id="double-star-prefix"),
        pytest.param(("resource:files://*/x",), "resource", "files://a/x", True, id="star-in-the-middle"),
        pytest.param(("resource:files://*/x",), "resource", "files://a/b/x", False, id="star-in-the-middle-one-seg"),
        pytest.param(("resource:files://**/x",), "resource", "files://a/b/x", True, id="double-star-in-the-middle"),
        pytest.param(("resource:notes://?",), "resource", "notes://1", True, id="question-one-char"),
        pytest.param(("resource:notes:/?1",), "resource", "notes://1", False, id="question-never-slash"),
        pytest.param(("resource:http://[::1]/*",), "resource", "http://[::1]/a", True, id="bracket-is-literal"),
        pytest.param(("resource:http://[::1]/*",), "resource", "http://:/a", False, id="bracket-no-class"),
        pytest.param(("resource:*",), "tool", "echo", False, id="resource-star-grants-no-tool"),
        pytest.param(("resource:*",), "prompt", "review", False, id="resource-star-grants-no-prompt"),
        pytest.param(("prompt:*",), "prompt", "review", True, id="prompt-star-grants-prompts"),
        pytest.param(("prompt:*",), "tool", "echo", False, id="prompt-star-grants-no-tool"),
        pytest.param(("prompt:*",), "resource", "file:///x", False, id="prompt-star-grants-no-resource"),
        pytest.param(("resource:file:///docs/*",), "resource", "file:///docs/a.md", True, id="resource-glob-hit"),
        pytest.param(("resource:file:///docs/*",), "resource", "file:///etc/passwd", False, id="resource-glob-miss"),
        pytest.param(("resource:notes://a",), "resource", "notes://A", False, id="resource-glob-case-sensitive"),
        pytest.param(("prompt:rev*",), "prompt", "review", True, id="prompt-glob-hit"),
        pytest.param(("prompt:rev*",), "prompt", "plan", False, id="prompt-glob-miss"),
        # "tool:" is the explicit spelling of a bare pattern.
        pytest.param(("tool:echo",), "tool", "echo", True, id="tool-prefix-exact"),
        pytest.param(("tool:echo",), "tool", "echo2", False, id="tool-prefix-no-prefix-match"),
        pytest.param(("tool:*",), "resource", "file:///x", False, id="tool-prefix-star-grants-no-resource"),
        pytest.param(("tool:*",), "prompt", "review", False, id="tool-prefix-star-grants-no-prompt"),
        # Prefixes are case-sensitive; a mistyped one is a tool pattern that matches nothing.
        pytest.param(("Resource:*",), "resource", "file:///x", False, id="prefix-case-Resource"),
        pytest.param(("PROMPT:*",), "prompt", "review", False, id="prefix-case-PROMPT"),
        pytest.param(("Tool:echo",), "tool", "echo", False, id="prefix-case-Tool"),
        pytest.param(("resources:*",), "resource", "file:///x", False, id="unknown-prefix"),
        # Mixed scopes and the unscoped principal.
        pytest.param(("echo", "resource:notes://*", "prompt:plan"), "resource", "notes://1", True, id="mixed-resource"),
        pytest.param(("echo", "resource:notes://*", "prompt:plan"), "prompt", "plan", True, id="mixed-prompt"),
        pytest.param(("echo", "resource:notes://*", "prompt:plan"), "tool", "echo", True, id="mixed-tool"),
        pytest.param(("echo", "resource:notes://*", "prompt:plan"), "tool", "plan", False, id="mixed-prompt-not-tool"),
        pytest.param((), "resource", "file:///x", False, id="empty-scope-resource"),
        pytest.param(None, "tool", "echo", True, id="unscoped-tool"),
        pytest.param(None, "resource", "file:///etc/passwd", True, id="unscoped-resource"),
        pytest.param(None, "prompt", "review", True, id="unscoped-prompt"),
    ],
)
def test_principal_may_use_by_kind(patterns: tuple[str, ...] | None, kind: str, name: str, allowed: bool) -> None:
    assert Principal("p", patterns, "0" * 64).may_use(name, kind) is allowed


@pytest.mark.parametrize("kind", ["tools", "Tool", "", "resource_template"])
def test_principal_may_use_refuses_unknown_kind(kind: str) -> None:
    with pytest.raises(ValueError, match="kind"):
        Principal("p", None, "0" * 64).may_use("echo", kind)


def test_principal_repr_hides_credential_id_and_anonymous_is_unscoped() -> None:
    principal = Principal("ci", ("echo",), sha256_hex(TOKEN))
    assert sha256_hex(TOKEN) not in repr(principal)
    assert "ci" in repr(principal)
    assert ANONYMOUS.name == "anonymous"
    assert ANONYMOUS.tool_patterns is None
    assert ANONYMOUS.may_use("whatever")
    assert ANONYMOUS.may_use("file:///etc/passwd", "resource") and ANONYMOUS.may_use("review", "prompt")


# --- sources: authentication ------------------------------------------------


def make_static(tmp_path: Path) -> TokenSource:
    return StaticToken(TOKEN, "MCP_AUTH_TOKEN")


def make_token_file(tmp_path: Path) -> TokenSource:
    return TokenFile(write_private(tmp_path / "token", TOKEN + "\n"), "--token-file")


def make_default_token_file(tmp_path: Path) -> TokenSource:
    directory = tmp_path / "mcp-auth"
    directory.mkdir(mode=0o700)
    write_private(directory / "token", TOKEN + "\n")
    source, created = ensure_default_token(directory / "token")
    assert created is None
    return source


def make_tokens_file(tmp_path: Path) -> TokenSource:
    path = write_private(tmp_path / "tokens.json", tokens_doc(entry("other", OTHER_TOKEN), entry("ci", TOKEN)))
    return TokensFile(path, "--tokens-file")


SOURCES = [
    pytest.param(make_static, id="static"),
    pytest.param(make_token_file, id="token-file"),
    pytest.param(make_default_token_file, id="default-token-file"),
    pytest.param(make_tokens_file, id="tokens-file"),
]

PRESENTED = [
    pytest.param(TOKEN.encode(), True, id="right"),
    pytest.param(b"tok-0123456789abcdefghijklmnopqrstuvwxyZ", False, id="last-char-differs"),
    pytest.param(TOKEN.encode()[:-1], False, id="prefix"),
    pytest.param(TOKEN.encode() + b"x", False, id="extended"),
    pytest.param(TOKEN.upper().encode(), False, id="case-differs"),
    pytest.param(b"", False, id="empty"),
    pytest.param("tök-0123456789abcdefghijklmnopqrstuvwxyz".encode(), False, id="non-ascii-utf8"),
    pytest.param("tök-0123456789abcdefghijklmnopqrstuvwxyz".encode("latin-1"), False, id="non-ascii-latin1"),
    pytest.param(TOKEN.encode() + b"\x00", False, id="nul-suffix"),
    pytest.param(b"\xff" * 43, False, id="high-bytes"),
]


@pytest.mark.parametrize("make_source", SOURCES)
@pytest.mark.parametrize(("presented", "accepted"), PRESENTED)
def test_authenticate(
    tmp_path: Path, make_source: Callable[[Path], TokenSource], presented: bytes, accepted: bool
) -> None:
    source = make_source(tmp_path)
    principal = source.authenticate(presented)
    assert (principal is not None) is accepted
    if principal is not None:
        assert principal.credential_id == sha256_hex(TOKEN)
        assert source.is_current(principal)


@pytest.mark.parametrize("make_source", SOURCES)
def test_header_to_principal_end_to_end(tmp_path: Path, make_source: Callable[[Path], TokenSource]) -> None:
    source = make_source(tmp_path)
    presented = parse_bearer(f"bearer\t{TOKEN}  ")
    assert presented is not None
    assert source.authenticate(presented) is not None
    assert source.authenticate(parse_bearer("Bearer caf\xe9" + TOKEN) or b"") is None


@pytest.mark.parametrize("make_source", SOURCES)
@pytest.mark.parametrize(
    "principal",
    [
        pytest.param(ANONYMOUS, id="anonymous"),
        pytest.param(Principal("default", None, "0" * 64), id="forged-default"),
        pytest.param(Principal("ci", None, "0" * 64), id="forged-ci"),
        pytest.param(Principal("ci", None, sha256_hex(OTHER_TOKEN)), id="other-tokens-id"),
    ],
)
def test_is_current_refuses_foreign_principals(
    tmp_path: Path, make_source: Callable[[Path], TokenSource], principal: Principal
) -> None:
    assert make_source(tmp_path).is_current(principal) is False


@pytest.mark.parametrize("make_source", SOURCES)
@pytest.mark.parametrize(
    "scope",
    [pytest.param(("echo",), id="narrower"), pytest.param((), id="empty"), pytest.param(("*",), id="star")],
)
def test_is_current_refuses_the_right_credential_with_another_scope(
    tmp_path: Path, make_source: Callable[[Path], TokenSource], scope: tuple[str, ...]
) -> None:
    source = make_source(tmp_path)
    principal = source.authenticate(TOKEN.encode())
    assert principal is not None and source.is_current(principal)
    assert source.is_current(replace(principal, tool_patterns=scope)) is False


@pytest.mark.parametrize("make_source", SOURCES)
def test_repr_of_source_and_principal_holds_no_secret(
    tmp_path: Path, make_source: Callable[[Path], TokenSource]
) -> None:
    source = make_source(tmp_path)
    principal = source.authenticate(TOKEN.encode())
    assert principal is not None
    shown = repr(source) + repr(principal) + str(vars(source))
    assert_no_secret(shown, TOKEN, sha256_hex(TOKEN))


def test_tokens_file_scopes_and_names(tmp_path: Path) -> None:
    path = write_private(
        tmp_path / "tokens.json", tokens_doc(entry("ci", TOKEN, ["echo", "read_*"]), entry("admin", OTHER_TOKEN, None))
    )
    source = TokensFile(path, "--tokens-file")
    ci = source.authenticate(TOKEN.encode())
    admin = source.authenticate(OTHER_TOKEN.encode())
    assert ci is not None and admin is not None
    assert (ci.name, ci.tool_patterns) == ("ci", ("echo", "read_*"))
    assert (admin.name, admin.tool_patterns) == ("admin", None)
    assert ci.may_use("read_file") and not ci.may_use("write_file")


def test_static_token_strips_surrounding_whitespace_and_takes_a_name() -> None:
    source = StaticToken(f"  {TOKEN}\n", "MCP_AUTH_TOKEN", name="env")
    principal = source.authenticate(TOKEN.encode())
    assert principal is not None and principal.name == "env"


@pytest.mark.parametrize(
    ("token", "message_part"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param(" \t\n", "empty", id="whitespace-only"),
        pytest.param("tok-0123456789 abcdefghij", "whitespace", id="inner-space"),
        pytest.param("tok-0123456789\tabcdefghij", "whitespace", id="inner-tab"),
        pytest.param("tok-0123456789\x00abcdefghij", "control", id="nul"),
        pytest.param("tok-0123456789\x7fabcdefghij", "control", id="del"),
        pytest.param("tök-0123456789abcdefghij", "non-ASCII", id="non-ascii"),
        pytest.param("x" * 5000, "longer", id="too-long-for-a-header"),
    ],
)
def test_static_token_rejects(token: str, message_part: str) -> None:
    with pytest.raises(ConfigError) as info:
        StaticToken(token, "MCP_AUTH_TOKEN")
    message = str(info.value)
    assert "MCP_AUTH_TOKEN" in message and message_part in message
    assert_no_secret(message + repr(info.value), token.strip())


def test_static_token_minimum_length_is_accepted() -> None:
    assert StaticToken("x" * MIN_TOKEN_CHARS, "--token").authenticate(b"x" * MIN_TOKEN_CHARS)


def test_a_short_token_works_but_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    short = "x" * (MIN_TOKEN_CHARS - 1)
    with caplog.at_level(logging.WARNING, logger="mcp_auth.tokens"):
        source = StaticToken(short, "--token")
    assert source.authenticate(short.encode()) is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "shorter than 16" in warnings[0] and "--token" in warnings[0]
    assert short not in warnings[0]


def test_static_token_rejects_bad_name() -> None:
    with pytest.raises(ConfigError, match="name must match"):
        StaticToken(TOKEN, "--token", name="has space")


# --- token file: contents ---------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(TOKEN, id="no-newline"),
        pytest.param(TOKEN + "\n", id="newline"),
        pytest.param(TOKEN + "\r\n", id="crlf"),
        pytest.param(f"  {TOKEN}\t\n", id="surrounding-whitespace"),
        pytest.param(f"{TOKEN}\n# rotated 2024-01-01\nsecond line ignored\n", id="later-lines"),
        pytest.param("\ufeff" + TOKEN + "\n", id="utf8-bom"),
    ],
)
def test_token_file_reads_first_line(tmp_path: Path, content: str) -> None:
    path = write_private(tmp_path / "token", content)
    assert TokenFile(path, "--token-file").authenticate(TOKEN.encode()) is not None
    assert read_token_file(path) == TOKEN.encode()


@pytest.mark.parametrize(
    ("content", "message_part"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"\n" + TOKEN.encode(), "blank", id="blank-first-line"),
        pytest.param(b"   \n", "empty", id="spaces"),
        pytest.param(b"tok-0123456789 abcdefghij\n", "whitespace", id="inner-space"),
        pytest.param("tök-0123456789abcdefghij\n".encode(), "non-ASCII", id="non-ascii"),
        pytest.param(b"tok-0123456789\xffabcdefghij\n", "non-ASCII", id="invalid-utf8"),
        pytest.param(b"x" * (64 * 1024 + 1), "larger than", id="too-large"),
    ],
)
def test_token_file_rejects_content(tmp_path: Path, content: bytes, message_part: str) -> None:
    path = write_private(tmp_path / "token", content)
    with pytest.raises(ConfigError) as info:
        TokenFile(path, "--token-file")
    message = str(info.value)
    assert str(path) in message and message_part in message
    # No chained exception (e.g. a UnicodeDecodeError) carrying the file's bytes.
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert_no_secret(message, content.decode("latin-1").strip())


def test_token_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        TokenFile(tmp_path / "nope", "--token-file")
    assert str(tmp_path / "nope") in str(info.value)


def test_token_file_rejects_directory_and_fifo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        TokenFile(tmp_path, "--token-file")
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo, 0o600)
        with pytest.raises(ConfigError, match="not a regular file"):
            TokenFile(fifo, "--token-file")  # must not block waiting for a writer


@posix_only
@pytest.mark.parametrize(
    ("mode", "accepted"),
    [
        pytest.param(0o600, True, id="0600"),
        pytest.param(0o400, True, id="0400"),
        pytest.param(0o640, True, id="0640-group-readable-ok"),
        pytest.param(0o644, True, id="0644-world-readable-ok"),
        pytest.param(0o620, False, id="0620-group-writable"),
        pytest.param(0o602, False, id="0602-world-writable"),
        pytest.param(0o666, False, id="0666"),
    ],
)
def test_token_file_modes(tmp_path: Path, mode: int, accepted: bool) -> None:
    path = write_private(tmp_path / "token", TOKEN + "\n", mode)
    if accepted:
        TokenFile(path, "--token-file")
    else:
        with pytest.raises(ConfigError, match=f"chmod go-w {path}") as info:
            TokenFile(path, "--token-file")
        assert_no_secret(str(info.value), TOKEN)


def readable_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mcp_auth.tokens" and r.levelno == logging.WARNING and "can read the token" in r.getMessage()
    ]


@posix_only
@pytest.mark.parametrize(
    ("mode", "warned"),
    [
        pytest.param(0o600, False, id="0600"),
        pytest.param(0o400, False, id="0400"),
        pytest.param(0o700, False, id="0700"),
        pytest.param(0o640, True, id="0640-group-readable"),
        pytest.param(0o604, True, id="0604-other-readable"),
        pytest.param(0o644, True, id="0644"),
        pytest.param(0o444, True, id="0444-docker-secret"),
    ],
)
def test_token_file_readable_by_others_is_accepted_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    path = write_private(tmp_path / "token", TOKEN + "\n", mode)
    with caplog.at_level(logging.WARNING, logger="mcp_auth.tokens"):
        source = TokenFile(path, "--token-file")
        for _ in range(3):  # fresh file: re-read at every call, still said once
            assert source.authenticate(TOKEN.encode()) is not None
    warnings = readable_warnings(caplog)
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert str(path) in warnings[0] and f"chmod 600 {path}" in warnings[0]
        assert f"{mode:04o}" in warnings[0]
    assert_no_secret(caplog.text, TOKEN, sha256_hex(TOKEN))


@posix_only
def test_token_file_readable_warning_once_per_change_of_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_private(tmp_path / "token", TOKEN + "\n")
    with caplog.at_level(logging.WARNING, logger="mcp_auth.tokens"):
        source = TokenFile(path, "--token-file")
        assert source.authenticate(TOKEN.encode()) is not None
        assert readable_warnings(caplog) == []

        os.chmod(path, 0o644)  # loosened while running: said at the re-read
        for _ in range(3):
            assert source.authenticate(TOKEN.encode()) is not None
        assert len(readable_warnings(caplog)) == 1

        replace_atomically(path, OTHER_TOKEN + "\n")  # rotated: 0600 again, quiet
        assert source.authenticate(OTHER_TOKEN.encode()) is not None
        assert len(readable_warnings(caplog)) == 1
        os.chmod(path, 0o444)  # and loosened again: said again
        for _ in range(3):
            assert source.authenticate(OTHER_TOKEN.encode()) is not None
        os.chmod(path, 0o440)  # still readable by others: no new warning
        assert source.authenticate(OTHER_TOKEN.encode()) is not None
    warnings = readable_warnings(caplog)
    assert len(warnings) == 2 and all(f"chmod 600 {path}" in w for w in warnings)
    assert_no_secret(caplog.text, TOKEN, OTHER_TOKEN)


@posix_only
@pytest.mark.parametrize(
    ("mode", "warned"),
    [
        pytest.param(0o600, False, id="0600"),
        pytest.param(0o640, True, id="0640-group-readable"),
        pytest.param(0o644, True, id="0644"),
        pytest.param(0o444, True, id="0444"),
    ],
)
def test_readable_tokens_file_is_accepted_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    # Hashes, not tokens: but others can read names and scopes and guess weak tokens offline.
    tokens_path = write_private(tmp_path / "tokens.json", tokens_doc(entry("ci", TOKEN)), mode)
    with caplog.at_level(logging.WARNING, logger="mcp_auth.tokens"):
        source = TokensFile(tokens_path, "--tokens-file")
        for _ in range(3):
            assert source.authenticate(TOKEN.encode()) is not None
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "mcp_auth.tokens" and r.levelno == logging.WARNING and "other users can read" in r.getMessage()
    ]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert f"{mode:04o}" in warnings[0] and f"chmod 600 {tokens_path}" in warnings[0]
        assert "names, scopes and hashes" in warnings[0] and "guessed offline" in warnings[0]
    assert_no_secret(caplog.text, TOKEN, sha256_hex(TOKEN))


@posix_only
def test_token_show_reading_a_readable_file_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # `token show` reads but serves nothing.
    token_path = write_private(tmp_path / "token", TOKEN + "\n", 0o644)
    with caplog.at_level(logging.WARNING, logger="mcp_auth.tokens"):
        assert read_token_file(token_path) == TOKEN.encode()
    assert readable_warnings(caplog) == []


def wrong_owner_setup(path: Path) -> dict[str, int]:
    """Make `path` belong to someone else; keyword arguments to pass to the loader.

    As root: chown to another uid and keep the default expected owner. Otherwise
    (cannot chown): keep the file, and expect an owner it does not have.
    """
    if RUNNING_AS_ROOT:
        os.chown(path, 4242, 4242)
        return {}
    return {"expected_uid": os.geteuid() + 1}


@posix_only
def test_token_file_wrong_owner(tmp_path: Path) -> None:
    path = write_private(tmp_path / "token", TOKEN + "\n")
    kwargs = wrong_owner_setup(path)
    with pytest.raises(ConfigError, match="owned by uid") as info:
        TokenFile(path, "--token-file", **kwargs)
    assert "chown" in str(info.value)
    assert_no_secret(str(info.value), TOKEN)


@posix_only
def test_root_owned_file_is_trusted_for_any_expected_owner(tmp_path: Path) -> None:
    if not RUNNING_AS_ROOT:
        pytest.skip("needs a root-owned file")
    path = write_private(tmp_path / "token", TOKEN + "\n")
    assert TokenFile(path, "--token-file", expected_uid=4242).authenticate(TOKEN.encode())


@posix_only
@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root reads files whatever their mode")
def test_token_file_unreadable(tmp_path: Path) -> None:
    path = write_private(tmp_path / "token", TOKEN + "\n", 0o000)
    with pytest.raises(ConfigError, match="cannot be opened"):
        TokenFile(path, "--token-file")


# --- rotation and fail-closed -----------------------------------------------


@pytest.mark.parametrize(
    "rewrite",
    [pytest.param(rewrite_in_place, id="in-place-same-size"), pytest.param(replace_atomically, id="atomic-replace")],
)
def test_token_file_rotation(tmp_path: Path, rewrite: Callable[[Path, str], None]) -> None:
    assert len(TOKEN) == len(OTHER_TOKEN)  # same size: stat size cannot tell them apart
    path = write_private(tmp_path / "token", TOKEN + "\n")
    source = TokenFile(path, "--token-file")
    old = source.authenticate(TOKEN.encode())
    assert old is not None
    rewrite(path, OTHER_TOKEN + "\n")
    assert source.authenticate(TOKEN.encode()) is None
    new = source.authenticate(OTHER_TOKEN.encode())
    assert new is not None and source.is_current(new)
    assert not source.is_current(old)


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda p: p.unlink(), id="deleted"),
        pytest.param(lambda p: rewrite_in_place(p, ""), id="emptied"),
        pytest.param(lambda p: os.chmod(p, 0o666), id="made-world-writable", marks=posix_only),
        pytest.param(lambda p: (p.unlink(), p.mkdir()), id="replaced-by-directory"),
    ],
)
def test_token_file_fails_closed_after_start(tmp_path: Path, breakage: Callable[[Path], object]) -> None:
    path = write_private(tmp_path / "token", TOKEN + "\n")
    source = TokenFile(path, "--token-file")
    principal = source.authenticate(TOKEN.encode())
    assert principal is not None
    breakage(path)
    for _ in range(3):  # repeated calls keep refusing, never raise
        assert source.authenticate(TOKEN.encode()) is None
        assert source.is_current(principal) is False


def test_token_file_recovers_when_restored(tmp_path: Path) -> None:
    path = write_private(tmp_path / "token", TOKEN + "\n")
    source = TokenFile(path, "--token-file")
    path.unlink()
    assert source.authenticate(TOKEN.encode()) is None
    write_private(path, OTHER_TOKEN + "\n")
    assert source.authenticate(OTHER_TOKEN.encode()) is not None
    assert source.authenticate(TOKEN.encode()) is None


def test_fail_closed_logs_without_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_private(tmp_path / "token", TOKEN + "\n")
    source = TokenFile(path, "--token-file")
    rewrite_in_place(path, "Br0ken t0ken-0123456789\n")
    with caplog.at_level("WARNING", logger="mcp_auth.tokens"):
        assert source.authenticate(TOKEN.encode()) is None
        assert source.authenticate(b"Br0ken") is None
    assert str(path) in caplog.text and "whitespace" in caplog.text
    assert len(caplog.records) == 1  # once per change of condition, not per request
    assert_no_secret(caplog.text, TOKEN)
    assert "Br0ken" not in caplog.text and "t0ken-0123456789" not in caplog.text


def test_tokens_file_revoke_reaches_running_source(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    ci_token = add_token(path, "ci", ["echo"])
    admin_token = add_token(path, "admin", None)
    source = TokensFile(path, "--tokens-file")
    ci = source.authenticate(ci_token.encode())
    admin = source.authenticate(admin_token.encode())
    assert ci is not None and admin is not None

    revoke_token(path, "ci")
    assert source.is_current(ci) is False
    assert source.authenticate(ci_token.encode()) is None
    assert source.is_current(admin) and source.authenticate(admin_token.encode()) == admin

    # Same name, new token: the old session's credential is not current.
    new_ci_token = add_token(path, "ci", None)
    assert source.is_current(ci) is False
    assert source.authenticate(ci_token.encode()) is None
    new_ci = source.authenticate(new_ci_token.encode())
    assert new_ci is not None and new_ci.name == "ci" and source.is_current(new_ci)

    # Revoking the last tokens leaves a running source refusing everyone.
    revoke_token(path, "ci")
    revoke_token(path, "admin")
    assert source.authenticate(admin_token.encode()) is None
    assert source.is_current(admin) is False


@pytest.mark.parametrize(
    "rewrite",
    [pytest.param(rewrite_in_place, id="in-place"), pytest.param(replace_atomically, id="atomic-replace")],
)
@pytest.mark.parametrize(
    ("new_tools", "still_current"),
    [
        pytest.param(["echo"], False, id="narrowed"),
        pytest.param(["echo", "read_*", "write_*"], False, id="widened"),
        pytest.param([], False, id="emptied"),
        pytest.param(None, False, id="made-unscoped"),
        pytest.param(["echo", "read_*"], True, id="unchanged"),
    ],
)
def test_tokens_file_scope_change_reaches_running_source(
    tmp_path: Path, rewrite: Callable[[Path, str], None], new_tools: list[str] | None, still_current: bool
) -> None:
    path = write_private(
        tmp_path / "tokens.json", tokens_doc(entry("ci", TOKEN, ["echo", "read_*"]), entry("admin", OTHER_TOKEN))
    )
    source = TokensFile(path, "--tokens-file")
    ci = source.authenticate(TOKEN.encode())
    admin = source.authenticate(OTHER_TOKEN.encode())
    assert ci is not None and admin is not None and source.is_current(ci)

    # Same name, same hash: only the "tools" list is edited.
    rewrite(path, tokens_doc(entry("ci", TOKEN, new_tools), entry("admin", OTHER_TOKEN)))
    assert source.is_current(ci) is still_current
    assert source.is_current(admin)  # the untouched entry stays current
    fresh = source.authenticate(TOKEN.encode())
    assert fresh is not None and source.is_current(fresh)
    assert fresh.tool_patterns == (None if new_tools is None else tuple(new_tools))
    assert (fresh == ci) is still_current


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda p: p.unlink(), id="deleted"),
        pytest.param(lambda p: p.write_text("{not json"), id="invalid-json"),
        pytest.param(lambda p: os.chmod(p, 0o622), id="made-group-writable", marks=posix_only),
    ],
)
def test_tokens_file_fails_closed_after_start(tmp_path: Path, breakage: Callable[[Path], object]) -> None:
    path = tmp_path / "tokens.json"
    token = add_token(path, "ci", None)
    source = TokensFile(path, "--tokens-file")
    principal = source.authenticate(token.encode())
    assert principal is not None
    breakage(path)
    assert source.authenticate(token.encode()) is None
    assert source.is_current(principal) is False


def test_token_file_concurrent_authenticate(tmp_path: Path) -> None:
    source = TokenFile(write_private(tmp_path / "token", TOKEN + "\n"), "--token-file")
    failures: list[object] = []

    def worker() -> None:
        for _ in range(200):
            try:
                if source.authenticate(TOKEN.encode()) is None:
                    failures.append("refused")
            except Exception as exc:  # collected, reported below
                failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# --- tokens file: format, CLI functions -------------------------------------


def test_add_token_creates_private_file_without_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "tokens.json"
    token = add_token(path, "ci", ["echo", "read_*"])
    assert len(token) == 43
    if POSIX:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert token not in text
    doc = json.loads(text)
    assert doc["version"] == 1
    [stored] = doc["tokens"]
    assert stored["name"] == "ci" and stored["tools"] == ["echo", "read_*"]
    assert stored["sha256"] == sha256_hex(token)
    assert stored["created"].endswith("Z")
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]  # no temp file left

    add_token(path, "second", None)
    if POSIX:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_add_token_refuses_duplicate_and_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "ci", None)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="'ci' exists"):
        add_token(path, "ci", ["echo"])
    with pytest.raises(ConfigError, match="must match"):
        add_token(path, "bad name", None)
    with pytest.raises(ConfigError, match="must match"):
        add_token(path, "x" * 65, None)
    with pytest.raises(ConfigError, match="non-empty"):
        add_token(path, "ok", [""])
    assert path.read_bytes() == before


def test_invalid_name_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "ci", None)
    pasted = TOKEN + " oops"
    for call in (lambda: add_token(path, pasted, None), lambda: revoke_token(path, pasted)):
        with pytest.raises(ConfigError) as info:
            call()
        assert_no_secret(str(info.value), TOKEN)


def test_list_tokens_shows_no_hashes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "ci", ["echo"])
    add_token(path, "admin", None)
    listed = list_tokens(path)
    assert [(t["name"], t["tools"]) for t in listed] == [("ci", ["echo"]), ("admin", None)]
    for item in listed:
        assert set(item) == {"name", "tools", "created"}
        assert "sha256" not in json.dumps(item)


def test_revoke_unknown_name_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "ci", None)
    with pytest.raises(ConfigError, match="no token named 'nope'"):
        revoke_token(path, "nope")
    for call in (
        lambda: revoke_token(tmp_path / "absent.json", "ci"),
        lambda: revoke_token(tmp_path / "no" / "dir.json", "ci"),
        lambda: list_tokens(tmp_path / "absent.json"),
        lambda: TokensFile(tmp_path / "absent.json", "--tokens-file"),
    ):
        with pytest.raises(ConfigError, match=r"does not exist.*token add"):
            call()


def test_concurrent_add_token_keeps_every_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "seed", None)
    errors: list[Exception] = []

    def worker(index: int) -> None:
        try:
            add_token(path, f"t{index}", None)
        except Exception as exc:  # collected, reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(t["name"] for t in list_tokens(path)) == sorted(["seed"] + [f"t{i}" for i in range(8)])


@pytest.mark.parametrize(
    ("content", "message_part"),
    [
        pytest.param("{not json", "not valid JSON", id="invalid-json"),
        pytest.param(b"\xff\xfe{", "JSON", id="not-utf8"),
        pytest.param("[]", "exactly", id="not-an-object"),
        pytest.param('{"version": 1}', "exactly", id="no-tokens-key"),
        pytest.param('{"version": 1, "tokens": [], "extra": 1}', "exactly", id="extra-key"),
        pytest.param('{"version": 2, "tokens": []}', "version 1", id="version-2"),
        pytest.param('{"version": true, "tokens": []}', "version 1", id="version-bool"),
        pytest.param('{"version": "1", "tokens": []}', "version 1", id="version-str"),
        pytest.param('{"version": 1, "tokens": {}}', "must be a list", id="tokens-not-list"),
        pytest.param('{"version": 1, "tokens": []}', "has no tokens", id="no-tokens"),
        pytest.param('{"version": 1, "tokens": ["x"]}', "must be an object", id="entry-not-object"),
        pytest.param(tokens_doc(dict(entry(), name="bad name")), "must match", id="bad-name"),
        pytest.param(tokens_doc(dict(entry(), name="")), "must match", id="empty-name"),
        pytest.param(tokens_doc(dict(entry(), name="x" * 65)), "must match", id="long-name"),
        pytest.param(tokens_doc(dict(entry(), name=7)), "must match", id="name-not-str"),
        pytest.param(tokens_doc(entry("ci", TOKEN), entry("ci", OTHER_TOKEN)), "used twice", id="duplicate-name"),
        pytest.param(tokens_doc(entry("a", TOKEN), entry("b", TOKEN)), "two names", id="duplicate-hash"),
        pytest.param(tokens_doc(dict(entry(), sha256=sha256_hex(TOKEN).upper())), "lowercase hex", id="uppercase-sha"),
        pytest.param(tokens_doc(dict(entry(), sha256=sha256_hex(TOKEN)[:63])), "lowercase hex", id="short-sha"),
        pytest.param(tokens_doc(dict(entry(), sha256=TOKEN)), "lowercase hex", id="plaintext-instead-of-hash"),
        pytest.param(tokens_doc(dict(entry(), tools="echo")), '"tools"', id="tools-str"),
        pytest.param(tokens_doc(dict(entry(), tools=[""])), '"tools"', id="tools-empty-pattern"),
        pytest.param(tokens_doc(dict(entry(), tools=[1])), '"tools"', id="tools-non-str"),
        pytest.param(tokens_doc({k: v for k, v in entry().items() if k != "tools"}), '"tools"', id="tools-missing"),
        pytest.param(tokens_doc(dict(entry(), tool=["echo"])), "no other keys", id="typo-key"),
        pytest.param(tokens_doc(dict(entry(), created=5)), "ISO-8601", id="created-not-str"),
        pytest.param(
            '{"version": 1, "tokens": [{"name": "a", "name": "b", "sha256": "'
            + sha256_hex(TOKEN)
            + '", "tools": null}]}',
            "same key twice",
            id="duplicate-key",
        ),
        pytest.param(
            tokens_doc(*[entry(f"t{i}", f"token-number-{i:08d}") for i in range(MAX_NAMED_TOKENS + 1)]),
            f"more than {MAX_NAMED_TOKENS}",
            id="too-many",
        ),
    ],
)
def test_tokens_file_rejects(tmp_path: Path, content: str | bytes, message_part: str) -> None:
    path = write_private(tmp_path / "tokens.json", content)
    with pytest.raises(ConfigError) as info:
        TokensFile(path, "--tokens-file")
    message = str(info.value)
    assert message_part in message and str(path) in message
    assert_no_secret(message, TOKEN, sha256_hex(TOKEN))


def test_tokens_file_created_is_optional_and_empty_scope_allowed(tmp_path: Path) -> None:
    bare = {"name": "ci", "sha256": sha256_hex(TOKEN), "tools": []}
    source = TokensFile(write_private(tmp_path / "tokens.json", tokens_doc(bare)), "--tokens-file")
    principal = source.authenticate(TOKEN.encode())
    assert principal is not None and principal.tool_patterns == ()
    assert not principal.may_use("echo")


@posix_only
def test_tokens_file_owner_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "ci", None)
    os.chmod(path, 0o602)
    with pytest.raises(ConfigError, match="chmod go-w"):
        TokensFile(path, "--tokens-file")
    with pytest.raises(ConfigError, match="chmod go-w"):
        add_token(path, "more", None)
    os.chmod(path, 0o600)
    kwargs = wrong_owner_setup(path)
    with pytest.raises(ConfigError, match="owned by uid"):
        TokensFile(path, "--tokens-file", **kwargs)
    with pytest.raises(ConfigError, match="owned by uid"):
        list_tokens(path, **kwargs)


# --- default token file: path and first run ---------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/mcp-auth/token", id="xdg"),
        pytest.param({"HOME": "/home/u"}, "/home/u/.config/mcp-auth/token", id="home"),
        pytest.param({"XDG_CONFIG_HOME": "", "HOME": "/home/u"}, "/home/u/.config/mcp-auth/token", id="xdg-empty"),
        pytest.param(
            {"XDG_CONFIG_HOME": "rel/xdg", "HOME": "/home/u"},
            "/home/u/.config/mcp-auth/token",
            id="xdg-relative-ignored",
        ),
    ],
)
def test_default_token_path(environ: dict[str, str], expected: str) -> None:
    assert default_token_path(environ) == Path(expected)


def test_default_token_path_without_home_falls_back_to_path_home() -> None:
    assert default_token_path({}) == Path.home() / ".config" / "mcp-auth" / "token"


def test_first_run_creates_private_file_and_dir(tmp_path: Path) -> None:
    path = tmp_path / "config" / "mcp-auth" / "token"
    source, token = ensure_default_token(path)
    assert token is not None and len(token) == 43
    assert path.read_text() == token + "\n"
    if POSIX:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert source.authenticate(token.encode()) is not None
    assert_no_secret(repr(source) + str(vars(source)), token)
    assert read_token_file(path, default_file=True) == token.encode()

    again, second = ensure_default_token(path)  # second start: no new token
    assert second is None
    assert again.authenticate(token.encode()) is not None
    assert path.read_text() == token + "\n"


def test_first_run_under_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        source, token = ensure_default_token(tmp_path / "mcp-auth" / "token")
    finally:
        os.umask(old)
    assert token is not None and source.authenticate(token.encode()) is not None
    if POSIX:
        assert stat.S_IMODE((tmp_path / "mcp-auth" / "token").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "mcp-auth").stat().st_mode) == 0o700


def make_old(path: Path) -> None:
    """Pretend the file was left by an earlier run, not by a process racing us now."""
    os.utime(path, (1_000_000_000, 1_000_000_000))


def existing_default(tmp_path: Path, content: bytes, mode: int = 0o600, dir_mode: int = 0o700) -> Path:
    directory = tmp_path / "mcp-auth"
    directory.mkdir()
    path = write_private(directory / "token", content, mode)
    make_old(path)
    os.chmod(directory, dir_mode)
    return path


@pytest.mark.parametrize(
    ("content", "mode", "dir_mode", "message_part"),
    [
        pytest.param(b"", 0o600, 0o700, "delete", id="empty"),
        pytest.param(b"\n\n", 0o600, 0o700, "delete", id="blank"),
        pytest.param(TOKEN.encode() + b"\n", 0o644, 0o700, "chmod 600", id="world-readable", marks=posix_only),
        pytest.param(TOKEN.encode() + b"\n", 0o640, 0o700, "chmod 600", id="group-readable", marks=posix_only),
        pytest.param(TOKEN.encode() + b"\n", 0o604, 0o700, "chmod 600", id="other-readable", marks=posix_only),
        pytest.param(TOKEN.encode() + b"\n", 0o600, 0o755, "chmod 700", id="dir-0755", marks=posix_only),
        pytest.param(TOKEN.encode() + b"\n", 0o600, 0o710, "chmod 700", id="dir-group-x", marks=posix_only),
    ],
)
def test_existing_default_file_errors_are_never_regenerated(
    tmp_path: Path, content: bytes, mode: int, dir_mode: int, message_part: str
) -> None:
    path = existing_default(tmp_path, content, mode, dir_mode)
    with pytest.raises(ConfigError) as info:
        ensure_default_token(path)
    message = str(info.value)
    assert message_part in message and str(path.parent) in message
    assert_no_secret(message, TOKEN)
    assert path.read_bytes() == content  # untouched
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_fresh_empty_default_file_is_an_error_after_waiting(tmp_path: Path) -> None:
    # A racing creator that never writes: wait the bounded time, then report it.
    directory = tmp_path / "mcp-auth"
    directory.mkdir(mode=0o700)
    path = write_private(directory / "token", b"")
    with pytest.raises(ConfigError, match="delete"):
        ensure_default_token(path)
    assert path.read_bytes() == b""


@posix_only
def test_default_file_wrong_owner(tmp_path: Path) -> None:
    path = existing_default(tmp_path, TOKEN.encode() + b"\n")
    if RUNNING_AS_ROOT:
        kwargs = wrong_owner_setup(path)
    else:  # the directory is ours too, so it must be root-owned for the file check to be reached
        pytest.skip("needs root: an expected uid would first refuse our own directory")
    with pytest.raises(ConfigError, match="mcp-auth/token: owned by uid") as info:
        ensure_default_token(path, **kwargs)
    assert_no_secret(str(info.value), TOKEN)


@posix_only
def test_default_dir_wrong_owner(tmp_path: Path) -> None:
    directory = tmp_path / "mcp-auth"
    directory.mkdir(mode=0o700)
    kwargs = wrong_owner_setup(directory)
    with pytest.raises(ConfigError, match=f"directory {directory} is owned by uid"):
        ensure_default_token(directory / "token", **kwargs)


def test_default_path_is_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "mcp-auth"
    (directory / "token").mkdir(parents=True)
    os.chmod(directory, 0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        ensure_default_token(directory / "token")


RACE_CHILD = r"""
import hashlib, json, os, sys
from pathlib import Path
from mcp_auth.auth.tokens import ensure_default_token
path = Path(sys.argv[1])
sys.stdin.readline()   # blocks until the parent says go: start together, to make the create race real
source, token = ensure_default_token(path)
line = path.read_bytes().split(b"\n")[0]
principal = source.authenticate(line)
print(json.dumps({"created": token is not None,
                  "token": token,
                  "credential_id": principal.credential_id if principal else None}))
"""


@pytest.mark.parametrize("round_", [pytest.param(i, id=f"round-{i}") for i in range(3)])
def test_first_run_race_has_one_creator(tmp_path: Path, round_: int) -> None:
    path = tmp_path / "config" / "mcp-auth" / "token"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HOME=str(tmp_path))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_CHILD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
            text=True,
        )
        for _ in range(8)
    ]
    for child in children:  # every child is waiting on its stdin (or about to): release them all at once
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    creators = [r for r in results if r["created"]]
    assert len(creators) == 1
    token = creators[0]["token"]
    assert path.read_text() == token + "\n"
    assert {r["credential_id"] for r in results} == {sha256_hex(token)}
    assert all(r["token"] is None for r in results if not r["created"])
    if POSIX:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
