"""Properties of every parser that sees client bytes: a value or the documented refusal, nothing else.

The table tests elsewhere pin the cases someone thought of; these let Hypothesis
look for the ones nobody did. Each parser is fed four kinds of input:

- any text, and any bytes decoded as latin-1 the way WSGI hands header values over;
- near-valid input: a valid form with one mutation (a character inserted,
  deleted or replaced by a Unicode lookalike or a control character, a case
  change, whitespace, a huge repetition);
- structured input built to be valid, for the round trips (format(parse(x)) is
  the canonical form, parse(format(v)) == v);
- the bounds themselves (depth around 64, lengths around each limit).

Each property states what must hold for every input: the result type, or the
one exception type the function documents, plus the semantic rule where there
is one (an accepted Host is an allowed one; X-Forwarded-For from an untrusted
peer is ignored; a parsed message re-serialises to equivalent JSON).

Budget and seed come from the Hypothesis profile in tests/hypothesis_profiles.py
("ci": fixed seed, 200 examples); scripts/fuzz.py runs the same properties with
the "deep" profile. URI templates and resource scopes have their own file.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis_profiles import CI_MAX_EXAMPLES, DEFAULT_PROFILE, PROFILE_VARIABLE

from mcp_auth.auth.tokens import MAX_AUTHORIZATION_HEADER_CHARS, Principal, parse_bearer
from mcp_auth.config import _SETTINGS, Config, ConfigError, open_token_source
from mcp_auth.guard import Admission, Guard
from mcp_auth.http import HttpTransport
from mcp_auth.mcp.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_JSON_DEPTH,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    BatchNotSupported,
    ErrorResponse,
    JsonRpcError,
    Notification,
    Request,
    Response,
    dumps,
    loads,
    parse_message,
)
from mcp_auth.mcp.ladder import is_modern_http, modern_request
from mcp_auth.mcp.protocol import HANDSHAKE_PROTOCOL_VERSIONS, SUPPORTED_PROTOCOL_VERSIONS
from mcp_auth.mcp.results import _decode_cursor, _encode_cursor
from mcp_auth.media import acceptable as _acceptable
from mcp_auth.media import accepts as _accepts
from mcp_auth.media import media_type as _media_type
from mcp_auth.network import (
    MAX_FORWARDED_FOR_HOPS,
    MAX_FORWARDED_FOR_LENGTH,
    MAX_HOST_LENGTH,
    AddressAllowlist,
    ForwardedForError,
    HostError,
    HostPolicy,
    OriginError,
    OriginPolicy,
    parse_address,
    parse_host,
    parse_networks,
    parse_origin,
    parse_trusted_proxies,
    resolve_client_address,
)
from mcp_auth.refusals import BadRequest, PayloadTooLarge, Refusal
from mcp_auth.server import McpServer
from mcp_auth.sessions import SessionStore
from mcp_auth.streams import event_id, parse_event_id
from mcp_auth.websocket import TOKEN_SUBPROTOCOL_PREFIX, subprotocol_token

# --- input generators ------------------------------------------------------------------

# Characters that have broken parsers elsewhere: ASCII and Unicode whitespace and
# line breaks, NUL, zero-width and byte-order marks, Unicode lookalikes of the
# letters, digits, dots and colons that the grammars care about (IDNA maps the
# ideographic and fullwidth full stops to "."; str.lower maps the Kelvin sign to
# "k"; str.isdigit is true for superscripts and Arabic-Indic digits, int() is not
# for all of them), and the ASCII punctuation each grammar splits on.
TRICKY_CHARACTERS = (
    "\x00",
    "\t",
    "\n",
    "\r",
    " ",
    "\x0b",
    "\x0c",
    "\x1f",
    "\x7f",
    "\x85",
    "\xa0",
    "\xb2",
    "\xb9",
    "\xbd",
    "\xff",
    "\u0130",
    "\u0131",
    "\u017f",
    "\u0430",
    "\u03bf",
    "\u0661",
    "\u200b",
    "\u2028",
    "\u212a",
    "\u217c",
    "\u3002",
    "\ufeff",
    "\uff0e",
    "\uff11",
    "\uff1a",
    "\uff4c",
    "\ud800",
    "%",
    "[",
    "]",
    ":",
    ".",
    ",",
    ";",
    "_",
    "/",
    "@",
    "\\",
    "#",
    "?",
    "*",
    '"',
    "=",
    "-",
    "0",
    "9",
)

# Long enough to cross every length bound under test (the largest is the 8 KiB
# X-Forwarded-For limit), short enough that a few hundred examples stay cheap.
HUGE_REPEAT = 10_000

tricky = st.sampled_from(TRICKY_CHARACTERS)
# Any Unicode text, lone surrogates included (a str from a WebSocket frame or json can hold them).
any_text = st.text(st.characters(exclude_categories=()), max_size=300)
# What a WSGI server puts in the environ: the raw header bytes decoded as latin-1.
wsgi_text = st.binary(max_size=300).map(lambda raw: raw.decode("latin-1"))
noise = st.one_of(any_text, wsgi_text, st.text(tricky, max_size=40))


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> str:
    """A valid form with one mutation: the near-misses a parser must refuse or read right."""
    text = draw(valid)
    where = draw(st.integers(0, len(text)))
    kind = draw(
        st.sampled_from(
            ["insert", "delete", "replace", "swapcase", "upper", "pad", "repeat", "truncate", "double", "none"]
        )
    )
    if kind == "insert":
        return text[:where] + draw(st.one_of(tricky, st.characters(exclude_categories=()))) + text[where:]
    if kind == "delete":
        return text[:where] + text[where + 1 :]
    if kind == "replace":
        return text[:where] + draw(tricky) + text[where + 1 :]
    if kind == "swapcase":
        return text.swapcase()
    if kind == "upper":
        return text.upper()
    if kind == "pad":
        pad = draw(st.text(st.sampled_from(" \t\r\n\x0b\x0c\x85\xa0\u2028"), min_size=1, max_size=4))
        return draw(st.sampled_from([pad + text, text + pad, pad + text + pad]))
    if kind == "repeat":
        return text[:where] + text[where : where + 1] * draw(st.integers(2, HUGE_REPEAT)) + text[where + 1 :]
    if kind == "truncate":
        return text[:where]
    if kind == "double":
        return text + draw(st.sampled_from(["", ",", " ", ":", "."])) + text
    return text


def near(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid forms, their one-mutation neighbours, and plain noise."""
    return st.one_of(valid, mutated(valid), noise)


def mostly(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Like `near`, but valid seven times in ten: for inputs with several fields that must all pass."""
    return st.integers(0, 9).flatmap(lambda roll: valid if roll < 7 else mutated(valid) if roll < 9 else noise)


ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
addresses = st.ip_addresses()
# One letter at least (an all-digit last label would make the name an IPv4 address),
# and a hyphen only inside.
label = st.from_regex(r"[a-zA-Z0-9_]{0,8}[a-zA-Z_][a-zA-Z0-9_]{0,8}(?:-[a-zA-Z0-9_]{1,5})?", fullmatch=True)
dns_name = st.builds(
    lambda labels, dot: ".".join(labels) + dot, st.lists(label, min_size=1, max_size=4), st.sampled_from(["", "."])
)
ports = st.integers(1, 65535)


def canonical_host(host: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> str:
    if isinstance(host, ipaddress.IPv6Address):
        return f"[{host}]"
    if isinstance(host, ipaddress.IPv4Address):
        return str(host)
    return host.lower().removesuffix(".")


@st.composite
def host_forms(draw: st.DrawFn) -> tuple[str, str, int | None]:
    """(Host header as a client may write it, canonical host, port)."""
    kind = draw(st.sampled_from(["name", "ipv4", "ipv6", "loopback"]))
    if kind == "name":
        host: Any = draw(dns_name)
        text = host
    elif kind == "ipv4":
        host = draw(ipv4)
        text = str(host)
    elif kind == "ipv6":
        host = draw(ipv6)
        # Every textual form ipaddress accepts: exploded, compressed, upper case.
        text = "[" + draw(st.sampled_from([host.exploded, host.compressed, host.compressed.upper()])) + "]"
    else:
        text = draw(st.sampled_from(["localhost", "LocalHost", "localhost.", "127.0.0.1", "[::1]", "[0:0::1]"]))
        host = {"[::1]": ipaddress.IPv6Address("::1"), "[0:0::1]": ipaddress.IPv6Address("::1")}.get(text, text)
        if text == "127.0.0.1":
            host = ipaddress.IPv4Address(text)
    port = draw(st.none() | ports)
    if port is not None:
        # Leading zeros are allowed (the port is 1-5 digits) and read as the same number.
        text += ":" + str(port).zfill(draw(st.integers(len(str(port)), 5)))
    return text, canonical_host(host), port


def format_host(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


# --- Authorization: parse_bearer --------------------------------------------------------

token_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f\x85\xa0"), min_size=1
)
scheme_spellings = st.builds(
    lambda flips: "".join(c.upper() if flip else c for c, flip in zip("bearer", flips, strict=True)),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
ascii_space = st.text(st.sampled_from(" \t\r\n\x0b\x0c"), max_size=3)


@st.composite
def bearer_headers(draw: st.DrawFn) -> tuple[str, str]:
    """(Authorization value in any accepted spelling, the token it carries)."""
    token = draw(token_text)
    separator = draw(st.text(st.sampled_from(" \t"), min_size=1, max_size=3))
    return draw(ascii_space) + draw(scheme_spellings) + separator + token + draw(ascii_space), token


@given(near(st.builds(lambda pair: pair[0], bearer_headers())) | st.none())
@example("Bearer\xa0secret-token")
@example("Bearer " + "x" * MAX_AUTHORIZATION_HEADER_CHARS)
def test_parse_bearer_yields_bytes_or_none(header: str | None) -> None:
    token = parse_bearer(header)
    assert token is None or isinstance(token, bytes)
    if token is not None:
        assert header is not None and len(header) <= MAX_AUTHORIZATION_HEADER_CHARS
        assert token and not any(byte in b" \t\r\n\x0b\x0c" for byte in token)
        # The token is the bytes the client sent, never a transformation of them.
        assert token in header.encode("latin-1")
        assert header.strip(" \t\r\n\x0b\x0c")[:6].lower() == "bearer"


@given(bearer_headers())
def test_parse_bearer_round_trips_every_accepted_spelling(case: tuple[str, str]) -> None:
    header, token = case
    assume(len(header) <= MAX_AUTHORIZATION_HEADER_CHARS)
    assert parse_bearer(header) == token.encode("latin-1")


@given(
    scheme=st.one_of(
        mutated(st.just("Bearer")).filter(lambda s: s.strip(" \t\r\n\x0b\x0c").lower() != "bearer"),
        st.sampled_from(["Basic", "Digest", "Token", "Bearer:", "B\u0435arer", "Bearer\u200b", "\u212aearer"]),
    ),
    token=token_text,
)
def test_parse_bearer_refuses_every_other_scheme(scheme: str, token: str) -> None:
    assert parse_bearer(f"{scheme} {token}") is None


@given(bearer_headers(), token_text)
def test_parse_bearer_refuses_two_words(case: tuple[str, str], second: str) -> None:
    header, _ = case
    assert parse_bearer(header.rstrip() + " " + second) is None


@given(st.sampled_from(["mcp", "other", ""]), near(st.builds(lambda t: TOKEN_SUBPROTOCOL_PREFIX + t, token_text)))
def test_websocket_subprotocol_token_yields_bytes_or_none(first: str, entry: str) -> None:
    token = subprotocol_token({"HTTP_SEC_WEBSOCKET_PROTOCOL": f"{first}, {entry}"})
    assert token is None or (isinstance(token, bytes) and len(token) > 0)


# --- client addresses: parse_address, allowlists, X-Forwarded-For -----------------------


def address_forms(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    forms = [str(address), f" {address}\t"]
    if isinstance(address, ipaddress.IPv6Address):
        forms += [f"[{address}]", address.exploded, address.exploded.upper(), f"{address}%eth0", f"[{address}%25]"]
    else:
        mapped = ipaddress.IPv6Address(f"::ffff:{address}")
        forms += [f"::ffff:{address}", f"[{mapped}]", mapped.exploded]
    return st.sampled_from(forms)


written_addresses = addresses.flatmap(address_forms)


def unmapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@given(near(written_addresses))
@example("::ffff:127.0.0.1%eth0")
@example("1.2.3.4%eth0")
@example("[127.0.0.1]")
@example("\uff11.2.3.4")
def test_parse_address_yields_a_normalised_address_or_none(text: str) -> None:
    address = parse_address(text)
    assert address is None or isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
    if address is not None:
        assert text.isascii()
        # IPv4-mapped IPv6 never survives, and no zone id is left behind.
        assert not (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None)
        assert not (isinstance(address, ipaddress.IPv6Address) and address.scope_id)
        assert parse_address(str(address)) == address


@given(addresses, st.data())
def test_parse_address_reads_every_written_form(address: Any, data: st.DataObject) -> None:
    assert parse_address(data.draw(address_forms(address))) == unmapped(address)


NETWORK_ENTRIES = ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "::ffff:198.51.100.0/120", "127.0.0.1", "fe80::/10"]


@given(st.lists(st.sampled_from(NETWORK_ENTRIES), max_size=4), addresses)
def test_allowlist_treats_a_mapped_address_like_its_ipv4(entries: list[str], address: Any) -> None:
    allowlist = AddressAllowlist(parse_networks(entries, "test"))
    if isinstance(address, ipaddress.IPv4Address):
        assert allowlist.allows(ipaddress.IPv6Address(f"::ffff:{address}")) == allowlist.allows(address)
    assert isinstance(allowlist.allows(address), bool)


TRUSTED = parse_trusted_proxies(["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"], "test")


def is_trusted(address: Any) -> bool:
    return any(unmapped(address) in network for network in TRUSTED)


trusted_addresses = st.one_of(
    st.ip_addresses(network="10.0.0.0/8"),
    st.ip_addresses(network="2001:db8::/32"),
    st.just(ipaddress.ip_address("127.0.0.1")),
)
untrusted_addresses = addresses.filter(lambda a: not is_trusted(a))
header_lines = st.lists(near(st.lists(written_addresses, max_size=4).map(", ".join)), max_size=3)


@given(untrusted_addresses, header_lines)
def test_xff_from_an_untrusted_peer_is_ignored(peer: Any, lines: list[str]) -> None:
    assert resolve_client_address(peer, lines, TRUSTED) == unmapped(peer)


@given(trusted_addresses, header_lines)
@example(ipaddress.ip_address("127.0.0.1"), ["1.2.3.4, " * (MAX_FORWARDED_FOR_HOPS + 1)])
@example(ipaddress.ip_address("127.0.0.1"), ["1" * (MAX_FORWARDED_FOR_LENGTH + 1)])
def test_xff_from_a_trusted_peer_yields_a_listed_address_or_forwarded_for_error(peer: Any, lines: list[str]) -> None:
    try:
        client = resolve_client_address(peer, lines, TRUSTED)
    except ForwardedForError:
        return
    hops = [parse_address(hop) for hop in ",".join(lines).split(",")] if lines else []
    assert client == unmapped(peer) or client in hops
    assert not (isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None)


@given(
    claimed=st.lists(st.one_of(written_addresses, noise.filter(lambda t: "," not in t)), max_size=6),
    client=untrusted_addresses,
    client_form=st.data(),
    proxies=st.lists(trusted_addresses.flatmap(address_forms), max_size=4),
    peer=trusted_addresses,
    splits=st.lists(st.booleans(), max_size=12),
)
def test_xff_never_believes_what_the_client_wrote(
    claimed: list[str], client: Any, client_form: st.DataObject, proxies: list[str], peer: Any, splits: list[bool]
) -> None:
    """Whatever a client claims to the left of itself, the first untrusted hop from the right is the client."""
    hops = [*claimed, client_form.draw(address_forms(client)), *proxies]
    # The same list split over several header lines is the same list.
    lines: list[str] = [hops[0]]
    for hop, split in zip(hops[1:], splits + [False] * len(hops), strict=False):
        if split:
            lines.append(hop)
        else:
            lines[-1] += "," + hop
    length = sum(len(line) for line in lines) + len(lines) - 1
    if length > MAX_FORWARDED_FOR_LENGTH or len(hops) > MAX_FORWARDED_FOR_HOPS:
        with pytest.raises(ForwardedForError):
            resolve_client_address(peer, lines, TRUSTED)
        return
    assert resolve_client_address(peer, lines, TRUSTED) == unmapped(client)


# --- Host ----------------------------------------------------------------------------------


@given(near(host_forms().map(lambda form: form[0])))
@example("localhost:8080.evil")
@example("127.0.0.1:0")
@example("127.1")
@example("0x7f.0.0.1")
@example("[::ffff:127.0.0.1]")
@example("localhost\u3002")
@example("\u217cocalhost")
@example("[::1%25eth0]")
@example("a" * (MAX_HOST_LENGTH + 1))
def test_parse_host_yields_a_canonical_host_or_host_error(value: str) -> None:
    try:
        host, port = parse_host(value)
    except HostError:
        event("refused")
        return
    event("accepted")
    assert value.isascii()
    assert host == host.lower() and host.isascii() and host
    assert port is None or 1 <= port <= 65535
    # Canonical: parsing the canonical form again changes nothing.
    assert parse_host(format_host(host, port)) == (host, port)


@given(host_forms())
def test_parse_host_reads_every_valid_form(form: tuple[str, str, int | None]) -> None:
    text, host, port = form
    assume(len(text) <= MAX_HOST_LENGTH and len(host) <= 253)
    assert parse_host(text) == (host, port)


allowed_host_entries = st.lists(host_forms().map(lambda form: form[0]), max_size=3)


@given(allowed_host_entries, near(host_forms().map(lambda form: form[0])))
def test_an_accepted_host_is_in_the_allowed_set(entries: list[str], value: str) -> None:
    try:
        policy = HostPolicy(entries)
    except ConfigError:
        return
    try:
        host, port = parse_host(value)
    except HostError:
        return
    allowed = {(h, None) for h in HostPolicy.DEFAULT_HOSTS} | {parse_host(e) for e in entries}
    if policy.allows(host, port):
        assert (host, None) in allowed or (host, port) in allowed
    else:
        assert (host, None) not in allowed and (host, port) not in allowed


@given(mutated(st.sampled_from(["localhost", "127.0.0.1", "[::1]", "localhost:8765", "127.0.0.1:8765"])))
def test_a_loopback_lookalike_is_loopback_or_refused(value: str) -> None:
    """With only the defaults, a Host is accepted exactly when it canonicalises to a loopback name."""
    try:
        host, port = parse_host(value)
    except HostError:
        return
    assert HostPolicy().allows(host, port) == (host in HostPolicy.DEFAULT_HOSTS)


# --- Origin --------------------------------------------------------------------------------

schemes = st.one_of(
    st.sampled_from(["http", "https", "HTTP", "chrome-extension", "file"]),
    st.from_regex(r"[a-z][a-z0-9+.-]{0,10}", fullmatch=True),
)


@st.composite
def origin_forms(draw: st.DrawFn) -> tuple[str, tuple[str, str, int | None]]:
    scheme = draw(schemes)
    text, host, port = draw(host_forms())
    return f"{scheme}://{text}", (scheme.lower(), host, port)


@given(near(origin_forms().map(lambda form: form[0])))
@example("null")
@example("http://localhost/")
@example("http://user@localhost")
@example("http://localhost:80:80")
@example("http://\u212aocalhost")
@example("file://")
def test_parse_origin_yields_a_triple_or_origin_error(value: str) -> None:
    try:
        scheme, host, port = parse_origin(value)
    except OriginError:
        return
    assert value.isascii() and value != "null"
    assert scheme == scheme.lower() and host == host.lower()
    assert parse_origin(f"{scheme}://{format_host(host, port)}") == (scheme, host, port)


@given(origin_forms())
def test_parse_origin_reads_every_valid_form(form: tuple[str, tuple[str, str, int | None]]) -> None:
    text, expected = form
    assume(len(text) <= MAX_HOST_LENGTH + 40 and len(expected[1]) <= 253)
    assert parse_origin(text) == expected


@given(st.lists(origin_forms().map(lambda form: form[0]), max_size=3), near(origin_forms().map(lambda form: form[0])))
def test_an_accepted_origin_is_a_default_or_an_exact_entry(entries: list[str], value: str) -> None:
    try:
        policy = OriginPolicy(entries)
    except ConfigError:
        return
    accepted = policy.allows(value)
    assert isinstance(accepted, bool)
    if accepted:
        # The app echoes an accepted Origin in Access-Control-Allow-Origin: it must be header-safe.
        assert value.isascii() and value.isprintable() and " " not in value
        scheme, host, port = parse_origin(value)
        exact = {parse_origin(entry) for entry in entries}
        default = scheme in OriginPolicy.DEFAULT_SCHEMES and host in HostPolicy.DEFAULT_HOSTS
        assert default or (scheme, host, port) in exact


# --- the guard: steps 1-5 over a whole environ ----------------------------------------------

GUARD_TOKEN = "property-token-0123456789abcdef"


def make_guard() -> Guard:
    config = Config(
        token=GUARD_TOKEN,
        allowed_ips=("127.0.0.0/8", "10.0.0.0/8", "::1"),
        allowed_hosts=("mcp.example.com",),
        allowed_origins=("https://app.example.com",),
        trusted_proxies=("127.0.0.2",),
        # Failures are recorded per address; the properties must not meet step 4.
        rate_limit_failures=1_000_000,
    )
    auth, _ = open_token_source(config, environ={})
    return Guard(config, auth)


GUARD = make_guard()

environs = st.fixed_dictionaries(
    {
        "REMOTE_ADDR": mostly(st.sampled_from(["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "192.0.2.1"])),
        "HTTP_HOST": mostly(st.sampled_from(["localhost:8765", "mcp.example.com", "[::1]", "evil.example"])),
        "HTTP_AUTHORIZATION": mostly(st.sampled_from([f"Bearer {GUARD_TOKEN}", "Bearer wrong", "Basic x"])),
    },
    optional={
        "HTTP_ORIGIN": mostly(st.sampled_from(["http://localhost:3000", "https://app.example.com", "null"])),
        "HTTP_X_FORWARDED_FOR": mostly(st.sampled_from(["10.1.2.3", "192.0.2.1, 127.0.0.2", "::ffff:10.0.0.1"])),
    },
)


@given(environs)
def test_the_guard_admits_or_refuses_and_nothing_else(environ: dict[str, str]) -> None:
    try:
        admission = GUARD.admit(dict(environ))
    except Refusal as refusal:
        event(f"refused: {type(refusal).__name__}")
        return
    event("admitted")
    assert isinstance(admission, Admission)
    # Admitted means every step saw a value it allows.
    assert parse_bearer(environ["HTTP_AUTHORIZATION"]) == GUARD_TOKEN.encode()
    assert GUARD.config.host_policy.allows(*parse_host(environ["HTTP_HOST"]))
    assert "HTTP_ORIGIN" not in environ or GUARD.config.origin_policy.allows(environ["HTTP_ORIGIN"])
    assert GUARD.config.address_allowlist.allows(admission.client_address)


# --- session ids --------------------------------------------------------------------------

ALICE = Principal(name="alice", tool_patterns=None, credential_id="alice-credential")
MALLORY = Principal(name="mallory", tool_patterns=None, credential_id="mallory-credential")


@pytest.fixture(scope="module")
def session_store() -> SessionStore:
    return SessionStore()


@given(st.data())
def test_a_session_id_finds_its_own_session_and_nothing_else(session_store: SessionStore, data: st.DataObject) -> None:
    session = session_store.create(ALICE)
    assert session is not None and session.session_id is not None
    session_id = session.session_id
    # Ids are visible ASCII (MCP: 0x21-0x7E), so they survive every header path.
    assert all(0x21 <= ord(c) <= 0x7E for c in session_id)
    presented = data.draw(near(st.just(session_id)))
    found = session_store.get(presented, ALICE)
    assert found is (session if presented == session_id else None)
    # Another principal holding the exact id gets what an unknown id gets.
    assert session_store.get(session_id, MALLORY) is None
    assert session_store.delete(session_id, MALLORY) is False
    assert session_store.delete(session_id, ALICE) is True


# --- Last-Event-ID ------------------------------------------------------------------------

stream_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", fullmatch=True)
sequences = st.integers(0, 10**12 - 1)


@given(near(st.builds(event_id, stream_ids, sequences)))
@example("g_\xb2")
@example("g_\u0661")
@example("_1")
@example("g_")
@example("g_" + "9" * 13)
def test_parse_event_id_yields_a_position_or_none(value: str) -> None:
    parsed = parse_event_id(value)
    if parsed is None:
        return
    stream_id, sequence = parsed
    assert stream_id and isinstance(sequence, int) and 0 <= sequence < 10**12
    # Only ASCII digits are a sequence number: what was parsed is what was sent.
    digits = value.strip().rpartition("_")[2]
    assert digits.isascii() and digits.isdigit() and int(digits) == sequence


@given(stream_ids, sequences)
def test_parse_event_id_round_trips(stream_id: str, sequence: int) -> None:
    assert parse_event_id(event_id(stream_id, sequence)) == (stream_id, sequence)


# --- transport headers: Accept, Content-Type, MCP-Protocol-Version, Content-Length ----------

media_types = st.sampled_from(["application/json", "text/event-stream", "*/*", "application/*", "text/html"])


@st.composite
def accept_headers(draw: st.DrawFn) -> str:
    parts = []
    for media in draw(st.lists(media_types, min_size=1, max_size=4)):
        spelled = draw(st.sampled_from([media, media.upper(), f" {media} "]))
        params = draw(st.sampled_from(["", ";q=0.5", "; charset=utf-8", ";q=0", "; q=0.000", ";level=1;q=1"]))
        parts.append(spelled + params)
    return ",".join(parts)


@given(near(accept_headers()) | st.none())
def test_media_types_yields_a_set_of_bare_lowercase_types(header: str | None) -> None:
    found = _acceptable(header)
    assert isinstance(found, frozenset)
    for media in found:
        # HTTP's whitespace is SP and HTAB (RFC 9110 OWS); other characters are simply not a known type.
        assert media and media == media.strip(" \t") and "," not in media and ";" not in media
        assert media == media.lower()
    assert isinstance(_accepts(found, "application/json"), bool)


@given(st.lists(st.tuples(media_types, st.sampled_from(["", ";q=0.5", ";q=0", "; Q=0.0"])), min_size=1, max_size=4))
def test_accept_lists_exactly_the_types_not_refused_with_q0(entries: list[tuple[str, str]]) -> None:
    header = ", ".join(media + params for media, params in entries)
    wanted = {media for media, params in entries if params.replace(" ", "").lower() not in (";q=0", ";q=0.0")}
    assert _acceptable(header) == wanted


@given(near(accept_headers()) | st.none())
def test_content_type_yields_one_bare_lowercase_type(header: str | None) -> None:
    media = _media_type(header)
    assert isinstance(media, str)
    assert media == media.lower() and ";" not in media and media == media.strip(" \t")


@given(near(st.sampled_from(SUPPORTED_PROTOCOL_VERSIONS)))
def test_protocol_version_picks_the_era_or_is_refused_with_the_supported_list(version: str) -> None:
    """A handshake revision keeps the handshake era; any other header value is served statelessly,
    where a request without the envelope is refused: -32602 for the stateless revision itself, else
    -32022 with the supported list and the value asked for. Never anything else."""
    request = Request(5, "tools/list", {})
    if not is_modern_http(version, False, request.params):
        assert version.strip(" \t") in HANDSHAKE_PROTOCOL_VERSIONS
        return
    with pytest.raises(JsonRpcError) as info:
        modern_request(request, {"mcp-protocol-version": version, "mcp-method": "tools/list"})
    assert info.value.request_id == 5
    if version.strip(" \t") in SUPPORTED_PROTOCOL_VERSIONS:
        assert info.value.code == INVALID_PARAMS
    else:
        assert info.value.code == UNSUPPORTED_PROTOCOL_VERSION
        assert info.value.data == {"supported": list(SUPPORTED_PROTOCOL_VERSIONS), "requested": version.strip(" \t")}


BODY_LIMIT = 4096
TRANSPORT = HttpTransport(McpServer().dispatcher, SessionStore(), lambda principal: True, BODY_LIMIT, threading.Event())


@given(near(st.integers(0, 2 * BODY_LIMIT).map(str)))
@example("\xb2")
@example("1\xb9")
@example("\u0661")
@example("9" * 20)
@example("-1")
@example("+5")
@example("1_0")
def test_content_length_yields_the_body_or_a_refusal(raw_length: str) -> None:
    body = b"x" * BODY_LIMIT
    environ = {"CONTENT_LENGTH": raw_length, "wsgi.input": io.BytesIO(body)}
    try:
        read = TRANSPORT._read_body(environ)
    except (BadRequest, PayloadTooLarge):
        return
    stripped = raw_length.strip()
    if stripped:
        assert stripped.isascii() and stripped.isdigit()
        assert read == body[: int(stripped)]
    else:
        assert read == b""


# --- JSON-RPC messages ------------------------------------------------------------------------

# JSON values, with the parts that trip parsers: lone surrogates, big and tiny
# numbers, deep-ish nesting, duplicate-looking keys.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(any_text, json_values, max_size=4)
request_ids = st.one_of(st.integers(), st.text(st.characters(exclude_categories=()), max_size=20))
methods = st.one_of(st.sampled_from(["tools/call", "ping", "initialize"]), any_text.filter(bool))


@st.composite
def valid_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["request", "notification", "response", "error"]))
    message: dict[str, Any] = {"jsonrpc": "2.0"}
    if kind in ("request", "notification"):
        message["method"] = draw(methods)
        if draw(st.booleans()):
            message["params"] = draw(json_objects)
    if kind != "notification":
        message["id"] = draw(request_ids)
    if kind == "response":
        message["result"] = draw(json_objects)
    if kind == "error":
        error: dict[str, Any] = {"code": draw(st.integers(-(2**31), 2**31)), "message": draw(any_text)}
        if draw(st.booleans()):
            error["data"] = draw(json_values)
        message["error"] = error
    return message


def encoded(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def body_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


json_bodies = st.one_of(
    valid_messages().map(encoded),
    mutated(valid_messages().map(encoded)),
    json_values.map(encoded),
    noise,
)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_parse(data: bytes | str) -> None:
    try:
        message = parse_message(data)
    except BatchNotSupported:
        event("batch")
        return
    except JsonRpcError as exc:
        event(f"refused: {exc.code}")
        assert exc.code in (PARSE_ERROR, INVALID_REQUEST)
        assert exc.request_id is None or isinstance(exc.request_id, str | int)
        assert not isinstance(exc.request_id, bool)
        # An error answer always serialises (ASCII, surrogates escaped).
        dumps(exc.to_message()).decode("ascii")
        return
    event(f"accepted: {type(message).__name__}")
    assert isinstance(message, Request | Notification | Response | ErrorResponse)
    serialised = dumps(message)
    assert serialised.isascii()
    # Canonical: what we would send parses back to the same message.
    assert dumps(parse_message(serialised)) == serialised


@given(json_bodies)
@example('{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":NaN}}')
@example('{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":-Infinity}}')
@example('{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":1e400}}')
@example('{"jsonrpc":"2.0","id":' + "9" * 5000 + ',"method":"m"}')
@example('{"jsonrpc":"2.0","id":"\\ud800","method":"\\udfff"}')
@example('{"jsonrpc":"2.0","id":true,"method":"m"}')
@example("\ufeff{}")
def test_parse_message_of_text_yields_a_message_or_json_rpc_error(text: str) -> None:
    check_parse(text)


@given(st.one_of(json_bodies.map(body_bytes), st.binary(max_size=300)))
@example(b'{"jsonrpc":"2.0","id":1,"method":"\xed\xa0\x80"}')
@example(b"\xef\xbb\xbf{}")
def test_parse_message_of_bytes_yields_a_message_or_json_rpc_error(data: bytes) -> None:
    check_parse(data)


@given(valid_messages())
def test_a_parsed_message_reserialises_to_equivalent_json(value: dict[str, Any]) -> None:
    message = parse_message(encoded(value))
    expected = dict(value)
    if not expected.get("params", True):
        del expected["params"]  # empty params and no params are the same message
    if "error" in expected and expected["error"].get("data", 0) is None:
        expected["error"] = {k: v for k, v in expected["error"].items() if k != "data"}  # null data is no data
    assert canonical_json(json.loads(dumps(message))) == canonical_json(expected)


@st.composite
def nested(draw: st.DrawFn, depth: int) -> str:
    """A JSON value whose containers nest exactly `depth` levels, mixing arrays and objects."""
    text = draw(json_scalars.map(json.dumps))
    for _ in range(depth):
        if draw(st.booleans()):
            text = "[" + text + "]"
        else:
            # Keys holding brackets: depth is counted on the parsed value, not on the characters.
            text = "{" + json.dumps(draw(st.sampled_from(["", "k", "[", "{{"]))) + ":" + text + "}"
    return text


@given(st.integers(1, 2 * MAX_JSON_DEPTH).flatmap(lambda depth: st.tuples(st.just(depth), nested(depth))))
@example((MAX_JSON_DEPTH, "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH))
@example((MAX_JSON_DEPTH + 1, "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)))
@example((5_000, "[" * 5_000 + "]" * 5_000))  # past the interpreter's recursion limit
def test_json_deeper_than_the_limit_is_always_refused(case: tuple[int, str]) -> None:
    depth, text = case
    if depth <= MAX_JSON_DEPTH:
        loads(text)
        return
    with pytest.raises(JsonRpcError) as refused:
        loads(text)
    assert refused.value.code == PARSE_ERROR


@given(st.integers(1, 6000), st.sampled_from(["", "-"]), st.sampled_from(["", ".5", "e5", "e400", "e-400"]))
def test_numbers_of_any_size_are_a_value_or_a_parse_error(digits: int, sign: str, tail: str) -> None:
    number = sign + "7" * digits + tail
    try:
        value = loads('{"n":' + number + "}")["n"]
    except JsonRpcError as exc:
        assert exc.code == PARSE_ERROR
        return
    assert value == value and value not in (float("inf"), float("-inf"))


# --- pagination cursors (a client echoes them back) -----------------------------------------


@given(st.one_of(json_values, near(st.integers(0, 10**6).map(_encode_cursor))))
def test_a_cursor_is_an_offset_or_invalid_params(cursor: Any) -> None:
    try:
        offset = _decode_cursor(cursor)
    except JsonRpcError as exc:
        assert exc.code == INVALID_PARAMS
        return
    assert isinstance(offset, int) and offset >= 0


@given(st.integers(0, 10**12))
def test_a_cursor_round_trips(offset: int) -> None:
    assert _decode_cursor(_encode_cursor(offset)) == offset


# --- configuration values ----------------------------------------------------------------------

network_texts = st.one_of(
    st.builds(lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)), ipv4, st.integers(0, 32)),
    st.builds(lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)), ipv6, st.integers(0, 128)),
    addresses.map(str),
    st.just("*"),
)
entry_lists = st.lists(near(network_texts), max_size=5)


@given(entry_lists)
def test_parse_networks_yields_networks_or_config_error(entries: list[str]) -> None:
    try:
        networks = parse_networks(entries, "MCP_AUTH_ALLOWED_IPS")
    except ConfigError as exc:
        assert "MCP_AUTH_ALLOWED_IPS" in str(exc)
        return
    if networks is not None:
        for network in networks:
            assert isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network)
            # Mapped networks become IPv4 networks, like mapped addresses.
            assert not (
                isinstance(network, ipaddress.IPv6Network) and network.subnet_of(ipaddress.IPv6Network("::ffff:0:0/96"))
            )
            assert parse_networks([str(network)], "again") == (network,)


@given(entry_lists)
@example(["0.0.0.0/1", "128.0.0.0/1"])
@example(["::/1", "8000::/1"])
@example(["::ffff:0:0/96"])
def test_trusted_proxies_never_trust_every_peer(entries: list[str]) -> None:
    try:
        proxies = parse_trusted_proxies(entries, "--trusted-proxy")
    except ConfigError:
        return
    v4 = [n for n in proxies if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in proxies if isinstance(n, ipaddress.IPv6Network)]
    assert [n.prefixlen for n in ipaddress.collapse_addresses(v4)] != [0]
    everything6 = list(ipaddress.collapse_addresses([*v6, ipaddress.IPv6Network("::ffff:0:0/96")]))
    assert [n.prefixlen for n in everything6] != [0]


@given(st.lists(near(host_forms().map(lambda f: f[0]) | st.just("*")), max_size=4))
def test_allowed_hosts_config_is_a_policy_or_config_error(entries: list[str]) -> None:
    try:
        HostPolicy(entries, "MCP_AUTH_ALLOWED_HOSTS")
    except ConfigError as exc:
        assert "MCP_AUTH_ALLOWED_HOSTS" in str(exc)


@given(st.lists(near(origin_forms().map(lambda f: f[0])), max_size=4))
def test_allowed_origins_config_is_a_policy_or_config_error(entries: list[str]) -> None:
    try:
        OriginPolicy(entries, "MCP_AUTH_ALLOWED_ORIGINS")
    except ConfigError as exc:
        assert "MCP_AUTH_ALLOWED_ORIGINS" in str(exc)


# Near-valid text for each kind of setting, plus noise.
VALID_TEXT_BY_KIND: dict[str, st.SearchStrategy[str]] = {
    "int": st.integers(-10, 10**7).map(str),
    "float": st.floats(allow_nan=True, allow_infinity=True).map(str),
    "bool": st.sampled_from(["1", "0", "true", "false", "yes", "no", "on", "off"]),
    "list": st.lists(network_texts, max_size=3).map(",".join),
    "str": st.sampled_from(["127.0.0.1", "::1", "localhost", "0.0.0.0", "text", "json"]),
}
ENV_SETTINGS = {name: spec for name, spec in _SETTINGS.items() if name != "token"}


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    names = draw(st.lists(st.sampled_from(sorted(ENV_SETTINGS)), max_size=4, unique=True))
    return {ENV_SETTINGS[name][0]: draw(near(VALID_TEXT_BY_KIND[ENV_SETTINGS[name][1]])) for name in names}


@given(environments())
def test_environment_settings_are_a_config_or_config_error(environ: dict[str, str]) -> None:
    try:
        config = Config.from_sources(environ=environ)
    except ConfigError:
        return
    for name, (_, kind) in _SETTINGS.items():
        value = getattr(config, name)
        if kind == "bool":
            assert isinstance(value, bool)
        if kind == "int":
            assert isinstance(value, int) and not isinstance(value, bool)
        if kind == "float":
            assert isinstance(value, int | float) and value == value and abs(value) != float("inf")
    assert 0 <= config.port <= 65535


@given(
    st.sampled_from(sorted(n for n, (_, kind) in ENV_SETTINGS.items() if kind == "bool")),
    st.sampled_from(["1", "true", "yes", "on", "0", "false", "no", "off"]),
    st.data(),
)
def test_boolean_words_read_the_same_in_any_case_and_padding(name: str, word: str, data: st.DataObject) -> None:
    spelled = data.draw(st.sampled_from([word, word.upper(), word.title(), f" {word}\t"]))
    config = Config.from_sources(environ={ENV_SETTINGS[name][0]: spelled})
    assert getattr(config, name) is (word in ("1", "true", "yes", "on"))


def toml_value(value: Any) -> str:
    """Render a JSON-like value as TOML (strings as JSON strings, which TOML reads the same)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value).replace("Infinity", "inf")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return '""'


toml_settings = st.sampled_from([*sorted(ENV_SETTINGS), "token", "unknown_setting"])
toml_values = st.one_of(
    # Each kind's near-valid text, bare (a TOML number or boolean) or quoted (a TOML string).
    st.sampled_from(sorted(VALID_TEXT_BY_KIND))
    .flatmap(lambda kind: VALID_TEXT_BY_KIND[kind])
    .flatmap(lambda text: st.sampled_from([text, json.dumps(text)])),
    json_values.map(toml_value),
    st.builds(lambda entries: toml_value(entries), st.lists(near(network_texts), max_size=3)),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.just("nan"),
    st.just("inf"),
)


@st.composite
def toml_documents(draw: st.DrawFn) -> bytes:
    lines = [f"{draw(toml_settings)} = {draw(toml_values)}" for _ in range(draw(st.integers(0, 4)))]
    if draw(st.booleans()):
        lines.insert(0, "[mcp_auth]")
    text = "\n".join(lines) + "\n"
    return draw(st.one_of(st.just(text), mutated(st.just(text)))).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config") / "mcp-auth.toml"


@given(document=st.one_of(toml_documents(), st.binary(max_size=200)))
@example(b"port = 1 # \xff\n")
@example(b"allowed_ips = " + b"[" * 1000 + b"]" * 1000 + b"\n")
@example(b"allowed_ips = " + b"{a=" * 1000 + b"1" + b"}" * 1000 + b"\n")
def test_a_config_file_is_a_config_or_config_error(config_path: Path, document: bytes) -> None:
    config_path.write_bytes(document)
    try:
        config = Config.from_sources(environ={}, config_path=str(config_path))
    except ConfigError as exc:
        event("refused")
        assert str(exc)  # a message for the operator, whichever check refused
        return
    event("accepted")
    assert isinstance(config, Config)


# --- the settings themselves ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
# A one-example run of one property: seconds; this only stops a hung run.
FUZZ_DEADLINE_SECONDS = 120


def test_the_suite_runs_the_profile_the_environment_names() -> None:
    name = os.environ.get(PROFILE_VARIABLE, "").strip() or DEFAULT_PROFILE
    loaded = settings.default
    expected = settings.get_profile(name)
    assert (loaded.max_examples, loaded.derandomize, loaded.deadline) == (
        expected.max_examples,
        expected.derandomize,
        expected.deadline,
    )
    if name == DEFAULT_PROFILE:
        assert loaded.max_examples == CI_MAX_EXAMPLES and loaded.derandomize and loaded.deadline is None


def test_the_fuzz_script_runs_the_properties_with_the_deep_profile() -> None:
    run = subprocess.run(
        [sys.executable, "scripts/fuzz.py", "--examples", "3", "-k", "test_a_cursor_round_trips"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=FUZZ_DEADLINE_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "fuzz: 3 examples per property" in run.stderr
    assert "1 passed" in run.stdout and "max_examples=3" in run.stdout
