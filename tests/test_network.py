"""Tables for mcp_auth.network: client address, proxies, allowlists, Host, Origin."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest

from mcp_auth.errors import ConfigError
from mcp_auth.network import (
    MAX_FORWARDED_FOR_HOPS,
    MAX_FORWARDED_FOR_LENGTH,
    AddressAllowlist,
    ForwardedForError,
    HostError,
    HostPolicy,
    OriginError,
    OriginPolicy,
    format_url_host,
    is_loopback_host,
    parse_address,
    parse_host,
    parse_networks,
    parse_origin,
    parse_trusted_proxies,
    resolve_client_address,
)

HUGE = "a" * 100_000


# --- parse_address ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("127.0.0.1", IPv4Address("127.0.0.1"), id="ipv4"),
        pytest.param("  203.0.113.5\t", IPv4Address("203.0.113.5"), id="whitespace-trimmed"),
        pytest.param("::1", IPv6Address("::1"), id="ipv6"),
        pytest.param("[::1]", IPv6Address("::1"), id="ipv6-brackets"),
        pytest.param("2001:DB8::A", IPv6Address("2001:db8::a"), id="ipv6-uppercase"),
        pytest.param("fe80::1%eth0", IPv6Address("fe80::1"), id="zone-id-dropped"),
        pytest.param("[fe80::1%25]", IPv6Address("fe80::1"), id="zone-id-in-brackets"),
        pytest.param("::ffff:127.0.0.1", IPv4Address("127.0.0.1"), id="v4-mapped-to-v4"),
        pytest.param("[::ffff:7f00:1]", IPv4Address("127.0.0.1"), id="v4-mapped-hex-brackets"),
    ],
)
def test_parse_address_accepts(text: str, expected: IPv4Address | IPv6Address) -> None:
    result = parse_address(text)
    assert result == expected
    assert type(result) is type(expected)
    assert str(result) == str(expected)  # no scope id left behind


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("unknown", id="unknown"),
        pytest.param("1.2.3.4:80", id="ipv4-with-port"),
        pytest.param("[::1]:8080", id="ipv6-with-port"),
        pytest.param("[::1", id="unclosed-bracket"),
        pytest.param("[127.0.0.1]", id="ipv4-in-brackets"),
        pytest.param("1.2.3.4%eth0", id="zone-on-ipv4"),
        pytest.param("fe80::1%", id="empty-zone"),
        pytest.param("fe80::1%eth 0", id="zone-with-space"),
        pytest.param("127.000.0.1", id="leading-zeros"),
        pytest.param("1.2.3", id="three-octets"),
        pytest.param("256.0.0.1", id="octet-out-of-range"),
        pytest.param("127.0.0.1\x00", id="nul"),
        pytest.param("١٢٧.0.0.1", id="non-ascii-digits"),
        pytest.param("1.2.3.4, 5.6.7.8", id="list-not-one-address"),
        pytest.param(" " * 99 + "1.2.3.4", id="over-100-chars-even-if-trimmable"),
        pytest.param(HUGE, id="100kb"),
    ],
)
def test_parse_address_refuses(text: str) -> None:
    assert parse_address(text) is None


# --- parse_networks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(["10.0.0.0/8"], (IPv4Network("10.0.0.0/8"),), id="ipv4-cidr"),
        pytest.param(["2001:db8::/32"], (IPv6Network("2001:db8::/32"),), id="ipv6-cidr"),
        pytest.param(["192.0.2.7"], (IPv4Network("192.0.2.7/32"),), id="single-v4"),
        pytest.param(["2001:db8::7"], (IPv6Network("2001:db8::7/128"),), id="single-v6"),
        pytest.param(
            ["10.0.0.0/8", "2001:db8::/32"],
            (IPv4Network("10.0.0.0/8"), IPv6Network("2001:db8::/32")),
            id="mixed-v4-v6",
        ),
        pytest.param(
            [" 10.0.0.0/8", " ", "", "192.168.0.0/16 "],
            (IPv4Network("10.0.0.0/8"), IPv4Network("192.168.0.0/16")),
            id="blanks-skipped-whitespace-trimmed",
        ),
        pytest.param(["::ffff:10.0.0.0/104"], (IPv4Network("10.0.0.0/8"),), id="v4-mapped-network-to-v4"),
        pytest.param(["::ffff:127.0.0.1"], (IPv4Network("127.0.0.1/32"),), id="v4-mapped-single"),
        pytest.param([], (), id="empty"),
    ],
)
def test_parse_networks(values: list[str], expected: tuple[object, ...]) -> None:
    assert parse_networks(values, "--allowed-ip") == expected


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(["*"], id="star"),
        pytest.param(["10.0.0.0/8", " * "], id="star-anywhere"),
    ],
)
def test_parse_networks_star_means_any(values: list[str]) -> None:
    assert parse_networks(values, "--allowed-ip") is None


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        pytest.param("10.0.0.1/8", ["'10.0.0.1/8'", "host bits", "10.0.0.0/8"], id="host-bits-v4"),
        pytest.param("2001:db8::1/32", ["'2001:db8::1/32'", "host bits", "2001:db8::/32"], id="host-bits-v6"),
        pytest.param("::ffff:10.0.0.1/104", ["host bits", "10.0.0.0/8"], id="host-bits-mapped-suggests-v4"),
        pytest.param("10.0.0.0/33", ["'10.0.0.0/33'", "CIDR"], id="prefix-too-long"),
        pytest.param("example.com", ["'example.com'"], id="hostname"),
        pytest.param("10.0.0.0 /8", ["'10.0.0.0 /8'"], id="space-inside"),
        pytest.param("fe80::%eth0/64", ["'fe80::%eth0/64'"], id="zone-id"),
        pytest.param("[::1]", ["'[::1]'"], id="brackets"),
        pytest.param("10.0.0.0/8\x00", ["'10.0.0.0/8\\x00'"], id="nul"),
        pytest.param("\uff11\uff10.0.0.0/8", ["'\uff11\uff10.0.0.0/8'"], id="fullwidth-digits"),
    ],
)
@pytest.mark.parametrize("source", ["--allowed-ip", "MCP_AUTH_ALLOWED_IPS", "config.toml [server] allowed_ips"])
def test_parse_networks_refuses(entry: str, fragments: list[str], source: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_networks(["192.0.2.0/24", entry], source)
    message = str(caught.value)
    assert source in message
    for fragment in fragments:
        assert fragment in message


def test_parse_networks_validates_entries_beside_star() -> None:
    with pytest.raises(ConfigError, match=re.escape("'10.0.0.1/8'")):
        parse_networks(["*", "10.0.0.1/8"], "--allowed-ip")


def test_parse_networks_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError, match="MCP_AUTH_ALLOWED_IPS"):
        parse_networks("10.0.0.0/8", "MCP_AUTH_ALLOWED_IPS")


# --- parse_trusted_proxies --------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(["127.0.0.1"], (IPv4Network("127.0.0.1/32"),), id="single"),
        pytest.param(
            ["10.0.0.0/24", "", "fd00::/8"],
            (IPv4Network("10.0.0.0/24"), IPv6Network("fd00::/8")),
            id="mixed",
        ),
        pytest.param(["::ffff:10.0.0.5"], (IPv4Network("10.0.0.5/32"),), id="mapped-to-v4"),
        pytest.param([], (), id="none"),
    ],
)
def test_parse_trusted_proxies(values: list[str], expected: tuple[object, ...]) -> None:
    assert parse_trusted_proxies(values, "--trusted-proxy") == expected


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("*", id="star"),
        pytest.param("0.0.0.0/0", id="all-ipv4"),
        pytest.param("::/0", id="all-ipv6"),
        pytest.param("::ffff:0:0/96", id="all-ipv4-mapped"),
    ],
)
@pytest.mark.parametrize("source", ["--trusted-proxy", "MCP_AUTH_TRUSTED_PROXIES"])
def test_parse_trusted_proxies_refuses_every_peer(entry: str, source: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_trusted_proxies(["127.0.0.1", entry], source)
    message = str(caught.value)
    assert source in message
    assert repr(entry) in message
    assert "decorative" in message
    assert "proxy's own address" in message


def _all_but(space: str, hole: str) -> list[str]:
    """Entries covering `space` except `hole`: the largest list that is still not everything."""
    whole, excluded = ip_network(space), ip_network(hole)
    return [str(n) for n in whole.address_exclude(excluded)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "version"),
    [
        pytest.param(["0.0.0.0/1", "128.0.0.0/1"], 4, id="v4-halves"),
        pytest.param(["128.0.0.0/1", "10.0.0.5", "0.0.0.0/1"], 4, id="v4-halves-unordered-with-a-proxy"),
        pytest.param(["192.0.0.0/2", "0.0.0.0/2", "128.0.0.0/2", "64.0.0.0/2"], 4, id="v4-quarters"),
        pytest.param(["0.0.0.0/1", "64.0.0.0/2", "128.0.0.0/1"], 4, id="v4-overlapping"),
        pytest.param(["::ffff:0:0/97", "::ffff:128.0.0.0/97"], 4, id="v4-halves-written-as-mapped"),
        pytest.param(["0.0.0.0/1", "::ffff:128.0.0.0/97"], 4, id="v4-halves-one-mapped"),
        pytest.param(["0.0.0.0/1", "128.0.0.0/1", "fd00::/8"], 4, id="v4-halves-beside-v6"),
        pytest.param(["::/1", "8000::/1"], 6, id="v6-halves"),
        pytest.param(["8000::/1", "::/2", "4000::/2"], 6, id="v6-half-and-quarters"),
        pytest.param(["::/1", "8000::/1", "10.0.0.5"], 6, id="v6-halves-beside-v4"),
        # Client addresses in ::ffff:0:0/96 are compared as IPv4, so the rest
        # of the IPv6 space is every IPv6 peer there can be.
        pytest.param(_all_but("::/0", "::ffff:0:0/96"), 6, id="v6-all-but-the-mapped-range"),
    ],
)
@pytest.mark.parametrize("source", ["--trusted-proxy", "MCP_AUTH_TRUSTED_PROXIES"])
def test_parse_trusted_proxies_refuses_networks_that_together_cover_a_family(
    values: list[str], version: int, source: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_trusted_proxies(values, source)
    message = str(caught.value)
    assert message.startswith(f"{source}: ")
    assert f"together cover every IPv{version} address" in message
    assert "decorative" in message and "proxy's own address" in message


def test_parse_trusted_proxies_names_the_covering_entries() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_trusted_proxies(["10.0.0.5", "0.0.0.0/1", "fd00::/8", "128.0.0.0/1"], "--trusted-proxy")
    assert "'10.0.0.5, 0.0.0.0/1, 128.0.0.0/1'" in str(caught.value)
    assert "fd00::/8" not in str(caught.value)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(["0.0.0.0/1"], id="v4-one-half"),
        pytest.param(["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3"], id="v4-all-but-224/3"),
        pytest.param(_all_but("0.0.0.0/0", "203.0.113.7/32"), id="v4-all-but-one-address"),
        pytest.param(["0.0.0.0/1", "8000::/1"], id="halves-of-different-families"),
        pytest.param(["::/1"], id="v6-one-half"),
        pytest.param(_all_but("::/0", "2001:db8::/32"), id="v6-all-but-a-/32"),
        pytest.param(_all_but("::/0", "::fffe:0:0/95"), id="v6-all-but-more-than-the-mapped-range"),
        pytest.param(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"], id="private-ranges"),
    ],
)
def test_parse_trusted_proxies_accepts_large_lists_that_leave_addresses_out(values: list[str]) -> None:
    assert parse_trusted_proxies(values, "--trusted-proxy") == tuple(ip_network(v) for v in values)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        pytest.param("10.0.0.1/8", "10.0.0.0/8", id="host-bits"),
        pytest.param("proxy.internal", "'proxy.internal'", id="name"),
    ],
)
def test_parse_trusted_proxies_refuses_bad_entries(entry: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_trusted_proxies([entry], "config.toml [server] trusted_proxies")
    assert "config.toml [server] trusted_proxies" in str(caught.value)
    assert fragment in str(caught.value)


# --- AddressAllowlist -------------------------------------------------------------

MIXED = parse_networks(["127.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"], "test")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("127.0.0.1", True, id="v4-inside"),
        pytest.param("127.255.0.9", True, id="v4-inside-edge"),
        pytest.param("10.1.255.255", True, id="v4-second-network"),
        pytest.param("10.2.0.1", False, id="v4-outside"),
        pytest.param("2001:db8::5", True, id="v6-inside"),
        pytest.param("2001:db9::5", False, id="v6-outside"),
        pytest.param("::1", False, id="v6-loopback-not-listed"),
        pytest.param("::ffff:127.0.0.1", True, id="mapped-matches-v4-network"),
        pytest.param("::ffff:10.2.0.1", False, id="mapped-outside"),
    ],
)
def test_allowlist_mixed(address: str, expected: bool) -> None:
    allowlist = AddressAllowlist(MIXED)
    assert allowlist.allow_all is False
    parsed = parse_address(address)
    assert parsed is not None
    assert allowlist.allows(parsed) is expected
    assert allowlist.allows(parsed) is expected  # second answer comes from the cache


def test_allowlist_unmaps_an_address_the_caller_did_not_normalise() -> None:
    allowlist = AddressAllowlist((IPv4Network("127.0.0.0/8"),))
    assert allowlist.allows(IPv6Address("::ffff:127.0.0.1")) is True


@pytest.mark.parametrize("address", ["203.0.113.9", "2001:db8::1", "::ffff:1.2.3.4"])
def test_allowlist_none_allows_all(address: str) -> None:
    allowlist = AddressAllowlist(None)
    assert allowlist.allow_all is True
    assert allowlist.allows(ip_address(address)) is True


def test_allowlist_empty_allows_nothing() -> None:
    allowlist = AddressAllowlist(())
    assert allowlist.allow_all is False
    assert allowlist.allows(IPv4Address("127.0.0.1")) is False


# --- resolve_client_address -------------------------------------------------------

PROXIES = (IPv4Network("10.0.0.0/24"), IPv6Network("fd00::/64"))
PROXY = IPv4Address("10.0.0.2")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        pytest.param("203.0.113.9", ["1.1.1.1"], "203.0.113.9", id="untrusted-peer-xff-ignored"),
        pytest.param("203.0.113.9", ["garbage", HUGE], "203.0.113.9", id="untrusted-peer-garbage-ignored"),
        pytest.param("10.0.0.2", [], "10.0.0.2", id="trusted-peer-no-xff"),
        pytest.param("10.0.0.2", ["198.51.100.7"], "198.51.100.7", id="one-hop"),
        pytest.param("10.0.0.2", ["6.6.6.6, 198.51.100.7"], "198.51.100.7", id="spoofed-left-hop-ignored"),
        pytest.param(
            "10.0.0.2",
            ["6.6.6.6, 198.51.100.7, 10.0.0.3"],
            "198.51.100.7",
            id="skips-trusted-hops-from-right",
        ),
        pytest.param(
            "10.0.0.2",
            ["6.6.6.6", "198.51.100.7", "10.0.0.3"],
            "198.51.100.7",
            id="duplicate-header-lines-joined-in-order",
        ),
        pytest.param("10.0.0.2", ["10.0.0.5, 10.0.0.4", "fd00::9"], "10.0.0.5", id="all-trusted-leftmost"),
        pytest.param(
            "10.0.0.2",
            ["not-an-ip, 198.51.100.7"],
            "198.51.100.7",
            id="garbage-left-of-client-never-reached",
        ),
        pytest.param("10.0.0.2", ["[2001:db8::1], 10.0.0.3"], "2001:db8::1", id="bracketed-v6-hop"),
        pytest.param("10.0.0.2", ["::ffff:198.51.100.7"], "198.51.100.7", id="mapped-hop-unmapped"),
        pytest.param("::ffff:10.0.0.2", ["198.51.100.7"], "198.51.100.7", id="mapped-peer-is-trusted"),
        pytest.param("fd00::1", ["fe80::1%eth0"], "fe80::1", id="v6-proxy-zone-id-dropped"),
        pytest.param(
            "10.0.0.2",
            [", ".join(["10.0.0.1"] * (MAX_FORWARDED_FOR_HOPS - 1) + ["198.51.100.7"])],
            "198.51.100.7",
            id="exactly-max-hops",
        ),
    ],
)
def test_resolve_client_address(peer: str, forwarded_for: list[str], expected: str) -> None:
    assert resolve_client_address(ip_address(peer), forwarded_for, PROXIES) == ip_address(expected)


@pytest.mark.parametrize(
    ("forwarded_for", "fragment"),
    [
        pytest.param(["198.51.100.7, garbage"], "hop 2 of 2, ' garbage'", id="garbage-hop"),
        pytest.param(["198.51.100.7,"], "hop 2 of 2", id="trailing-comma"),
        pytest.param(["198.51.100.7,,10.0.0.3"], "hop 2 of 3", id="empty-element"),
        pytest.param([""], "hop 1 of 1", id="empty-header"),
        pytest.param(["198.51.100.7", ""], "hop 2 of 2", id="empty-second-line"),
        pytest.param(["198.51.100.7:4711"], "is not an IP address", id="hop-with-port"),
        pytest.param(["unknown"], "'unknown'", id="unknown"),
        pytest.param(["198.51.100.7\x00"], "\\x00", id="nul"),
        pytest.param([HUGE], "over the limit", id="100kb-header"),
        pytest.param(
            ["1.1.1.1"] * (MAX_FORWARDED_FOR_HOPS + 1),
            f"{MAX_FORWARDED_FOR_HOPS + 1} hops",
            id="too-many-hops",
        ),
        pytest.param(
            ["1.1.1.1", "2" * MAX_FORWARDED_FOR_LENGTH],
            "over the limit",
            id="lines-together-too-long",
        ),
    ],
)
def test_resolve_client_address_refuses(forwarded_for: list[str], fragment: str) -> None:
    with pytest.raises(ForwardedForError) as caught:
        resolve_client_address(PROXY, forwarded_for, PROXIES)
    assert fragment in str(caught.value)


def test_resolve_client_address_bounds_quoted_garbage() -> None:
    hop = "x" * 1000
    with pytest.raises(ForwardedForError) as caught:
        resolve_client_address(PROXY, [hop], PROXIES)
    assert len(str(caught.value)) < 200


def test_resolve_client_address_without_trusted_proxies_uses_peer() -> None:
    peer = IPv4Address("10.0.0.2")
    assert resolve_client_address(peer, ["198.51.100.7"], ()) == peer


# --- parse_host -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("localhost", ("localhost", None), id="name"),
        pytest.param("LocalHost:8765", ("localhost", 8765), id="uppercase-with-port"),
        pytest.param("localhost.", ("localhost", None), id="trailing-dot"),
        pytest.param("Example.COM.:443", ("example.com", 443), id="trailing-dot-and-port"),
        pytest.param("127.0.0.1", ("127.0.0.1", None), id="ipv4"),
        pytest.param("127.0.0.1:8080", ("127.0.0.1", 8080), id="ipv4-port"),
        pytest.param("[::1]", ("[::1]", None), id="ipv6"),
        pytest.param("[::1]:8080", ("[::1]", 8080), id="ipv6-port"),
        pytest.param("[0:0::1]", ("[::1]", None), id="ipv6-normalised"),
        pytest.param("[2001:DB8::A]:1", ("[2001:db8::a]", 1), id="ipv6-uppercase-port-1"),
        pytest.param("[::ffff:127.0.0.1]", ("[::ffff:7f00:1]", None), id="ipv6-mapped-kept-v6"),
        pytest.param("my_service:80", ("my_service", 80), id="underscore-container-name"),
        pytest.param("a-b.c-d.example", ("a-b.c-d.example", None), id="hyphens"),
        pytest.param("x:65535", ("x", 65535), id="max-port"),
        pytest.param("x:00080", ("x", 80), id="five-digit-port"),
        pytest.param("a" * 63 + ".com", ("a" * 63 + ".com", None), id="63-char-label"),
        pytest.param(
            ".".join(["a" * 63] * 3 + ["a" * 61]),
            (".".join(["a" * 63] * 3 + ["a" * 61]), None),
            id="253-char-name",
        ),
    ],
)
def test_parse_host(value: str, expected: tuple[str, int | None]) -> None:
    assert parse_host(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(" localhost", id="leading-space"),
        pytest.param("local host", id="space-inside"),
        pytest.param("localhost\t", id="tab"),
        pytest.param("user@localhost", id="userinfo"),
        pytest.param("localhost/", id="slash"),
        pytest.param("localhost/path", id="path"),
        pytest.param("localhost?x", id="query"),
        pytest.param("localhost#x", id="fragment"),
        pytest.param("[::1", id="unclosed-bracket"),
        pytest.param("::1]", id="unopened-bracket"),
        pytest.param("::1", id="bare-ipv6"),
        pytest.param("fe80::1", id="bare-ipv6-looks-like-port"),
        pytest.param("[::1]8080", id="ipv6-port-without-colon"),
        pytest.param("[fe80::1%eth0]", id="ipv6-zone-id"),
        pytest.param("[127.0.0.1]", id="ipv4-in-brackets"),
        pytest.param("[]", id="empty-brackets"),
        pytest.param("127.0.0.1:8080.evil", id="port-suffix-attack"),
        pytest.param("localhost:8080:80", id="two-ports"),
        pytest.param("host:", id="empty-port"),
        pytest.param(":80", id="empty-host"),
        pytest.param("host:0", id="port-0"),
        pytest.param("host:65536", id="port-65536"),
        pytest.param("host:99999", id="port-99999"),
        pytest.param("host:123456", id="six-digit-port"),
        pytest.param("host:000080", id="six-digit-port-in-range"),
        pytest.param("host:+80", id="signed-port"),
        pytest.param("host: 80", id="space-before-port"),
        pytest.param("host:\uff18\uff10", id="fullwidth-port"),
        pytest.param("localhost..", id="two-trailing-dots"),
        pytest.param(".", id="only-dot"),
        pytest.param(".localhost", id="leading-dot"),
        pytest.param("a..b", id="empty-label"),
        pytest.param("-a.example", id="label-leading-hyphen"),
        pytest.param("a-.example", id="label-trailing-hyphen"),
        pytest.param("a" * 64 + ".com", id="64-char-label"),
        pytest.param(".".join(["a" * 63] * 3 + ["a" * 62]), id="254-char-name"),
        pytest.param("127.1", id="short-ipv4"),
        pytest.param("127.000.0.1", id="ipv4-leading-zeros"),
        pytest.param("256.0.0.1", id="ipv4-out-of-range"),
        pytest.param("0x7f.0.0.1", id="ipv4-hex"),
        pytest.param("localhost\x00", id="nul"),
        pytest.param("localhost\x00.evil", id="nul-inside"),
        pytest.param("bücher.example", id="non-ascii"),
        pytest.param("\uff4cocalhost", id="fullwidth-letter"),
        pytest.param("localhost\r\nX: y", id="crlf"),
        pytest.param(HUGE, id="100kb"),
    ],
)
def test_parse_host_refuses(value: str) -> None:
    with pytest.raises(HostError):
        parse_host(value)


def test_parse_host_refuses_over_long_before_parsing() -> None:
    with pytest.raises(HostError, match=r"^host is 100000 characters, over the limit"):
        parse_host(HUGE)


def test_parse_host_error_quotes_value_safely() -> None:
    with pytest.raises(HostError) as caught:
        parse_host("evil\x00host")
    assert "'evil\\x00host'" in str(caught.value)


# --- HostPolicy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "host_header", "expected"),
    [
        pytest.param((), "localhost", True, id="default-localhost"),
        pytest.param((), "localhost:8765", True, id="default-any-port"),
        pytest.param((), "LOCALHOST.:1", True, id="default-case-and-dot"),
        pytest.param((), "127.0.0.1:65535", True, id="default-ipv4"),
        pytest.param((), "[::1]:8080", True, id="default-ipv6"),
        pytest.param((), "[0::1]", True, id="default-ipv6-normalised"),
        pytest.param((), "127.0.0.2", False, id="other-loopback-address-not-listed"),
        pytest.param((), "evil.example", False, id="rebinding-name"),
        pytest.param((), "localhost.evil.example", False, id="localhost-prefix-name"),
        pytest.param((), "[::ffff:127.0.0.1]", False, id="mapped-literal-not-listed"),
        pytest.param(["example.com"], "example.com:443", True, id="extra-any-port"),
        pytest.param(["example.com"], "localhost", True, id="extra-adds-to-defaults"),
        pytest.param(["example.com"], "api.example.com", False, id="no-implicit-subdomain"),
        pytest.param(["Example.COM."], "example.com", True, id="entry-normalised"),
        pytest.param(["example.com:8443"], "example.com:8443", True, id="port-entry-same-port"),
        pytest.param(["example.com:8443"], "example.com:443", False, id="port-entry-other-port"),
        pytest.param(["example.com:8443"], "example.com", False, id="port-entry-no-port"),
        pytest.param(["[2001:db8::1]:80"], "[2001:db8:0::1]:80", True, id="ipv6-entry"),
        pytest.param([" ", "", "api.internal "], "api.internal", True, id="blank-entries-skipped"),
        pytest.param(["*"], "anything.example:1", True, id="star-allows-any"),
    ],
)
def test_host_policy(extra: list[str], host_header: str, expected: bool) -> None:
    policy = HostPolicy(extra)
    host, port = parse_host(host_header)
    assert policy.allows(host, port) is expected


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("127.0.0.1:*", id="port-wildcard"),
        pytest.param("*.example.com", id="subdomain-wildcard"),
        pytest.param("https://example.com", id="url"),
        pytest.param("::1", id="bare-ipv6"),
        pytest.param("example.com:0", id="port-0"),
        pytest.param("exa mple.com", id="space"),
    ],
)
@pytest.mark.parametrize("source", ["--allowed-host", "MCP_AUTH_ALLOWED_HOSTS"])
def test_host_policy_refuses_bad_entries(entry: str, source: str) -> None:
    with pytest.raises(ConfigError) as caught:
        HostPolicy(["example.org", entry], source)
    message = str(caught.value)
    assert source in message
    assert repr(entry) in message
    assert "example.com" in message  # the fix: what a valid entry looks like


def test_host_policy_default_source_named() -> None:
    with pytest.raises(ConfigError, match=r"^--allowed-host: "):
        HostPolicy(["bad host"])


# --- parse_origin -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("http://localhost", ("http", "localhost", None), id="no-port"),
        pytest.param("https://localhost:8765", ("https", "localhost", 8765), id="port"),
        pytest.param("HTTPS://LocalHost:443", ("https", "localhost", 443), id="uppercase"),
        pytest.param("http://[::1]:3000", ("http", "[::1]", 3000), id="ipv6"),
        pytest.param("http://localhost.", ("http", "localhost", None), id="trailing-dot"),
        pytest.param(
            "chrome-extension://abcdefghijklmnop",
            ("chrome-extension", "abcdefghijklmnop", None),
            id="extension-scheme",
        ),
        pytest.param("git+ssh://h", ("git+ssh", "h", None), id="scheme-with-plus"),
    ],
)
def test_parse_origin(value: str, expected: tuple[str, str, int | None]) -> None:
    assert parse_origin(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("null", id="null"),
        pytest.param("NULL", id="null-uppercase"),
        pytest.param("", id="empty"),
        pytest.param("file://", id="file-empty-host"),
        pytest.param("http://", id="empty-host"),
        pytest.param("http://localhost/", id="trailing-slash"),
        pytest.param("http://localhost/path", id="path"),
        pytest.param("http://localhost?q=1", id="query"),
        pytest.param("http://localhost#f", id="fragment"),
        pytest.param("http://user@localhost", id="userinfo"),
        pytest.param("http://localhost:", id="empty-port"),
        pytest.param("http://localhost:0", id="port-0"),
        pytest.param("http://localhost:65536", id="port-65536"),
        pytest.param("http://127.0.0.1:8080.evil", id="port-suffix-attack"),
        pytest.param("http://::1", id="bare-ipv6"),
        pytest.param("http://[::1", id="unclosed-bracket"),
        pytest.param("localhost", id="no-scheme"),
        pytest.param("//localhost", id="scheme-relative"),
        pytest.param("http:/localhost", id="one-slash"),
        pytest.param("1http://localhost", id="scheme-starts-with-digit"),
        pytest.param("ht_tp://localhost", id="scheme-underscore"),
        pytest.param(" http://localhost", id="leading-space"),
        pytest.param("http://localhost ", id="trailing-space"),
        pytest.param("http://localhost\x00", id="nul"),
        pytest.param("http://bücher.example", id="non-ascii-host"),
        pytest.param("\u212aa://localhost", id="kelvin-sign-scheme"),
        pytest.param("http://" + HUGE, id="100kb"),
    ],
)
def test_parse_origin_refuses(value: str) -> None:
    with pytest.raises(OriginError):
        parse_origin(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("null", "'null' is opaque", id="null"),
        pytest.param("file://", "'file://' has no host", id="file"),
        pytest.param("http://localhost/", "'localhost/'", id="path-names-host-part"),
        pytest.param("http://" + HUGE, "origin is 100007 characters", id="100kb"),
    ],
)
def test_parse_origin_error_says_why(value: str, fragment: str) -> None:
    with pytest.raises(OriginError) as caught:
        parse_origin(value)
    assert fragment in str(caught.value)


# --- OriginPolicy -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "origin", "expected"),
    [
        pytest.param((), "http://localhost", True, id="default-http"),
        pytest.param((), "https://localhost:8765", True, id="default-https-any-port"),
        pytest.param((), "http://127.0.0.1:3000", True, id="default-ipv4"),
        pytest.param((), "http://[::1]:3000", True, id="default-ipv6"),
        pytest.param((), "HTTP://LOCALHOST:1", True, id="default-uppercase"),
        pytest.param((), "ws://localhost", False, id="default-other-scheme"),
        pytest.param((), "https://evil.example", False, id="cross-site"),
        pytest.param((), "http://localhost.evil.example", False, id="localhost-prefix-name"),
        pytest.param((), "null", False, id="null"),
        pytest.param((), "file://", False, id="file"),
        pytest.param((), "http://localhost/", False, id="malformed-trailing-slash"),
        pytest.param((), "http://127.0.0.1:8080.evil", False, id="port-suffix-attack"),
        pytest.param((), "http://" + HUGE, False, id="100kb"),
        pytest.param(["https://app.example"], "https://app.example", True, id="extra-exact"),
        pytest.param(["https://app.example"], "http://localhost", True, id="extra-adds"),
        pytest.param(["https://app.example"], "http://app.example", False, id="extra-scheme"),
        pytest.param(["https://app.example"], "https://app.example:443", False, id="extra-no-port-only"),
        pytest.param(["https://app.example"], "https://api.app.example", False, id="no-implicit-subdomain"),
        pytest.param(["http://app.example:3000"], "http://app.example:3000", True, id="extra-port-exact"),
        pytest.param(["http://app.example:3000"], "http://app.example:3001", False, id="extra-other-port"),
        pytest.param(["http://app.example:3000"], "http://app.example", False, id="extra-port-vs-none"),
        pytest.param(["HTTPS://App.Example."], "https://app.example", True, id="extra-normalised"),
    ],
)
def test_origin_policy(extra: list[str], origin: str, expected: bool) -> None:
    assert OriginPolicy(extra).allows(origin) is expected


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("null", id="null"),
        pytest.param("file://", id="file"),
        pytest.param("https://app.example/", id="trailing-slash"),
        pytest.param("app.example", id="no-scheme"),
        pytest.param("*", id="star"),
    ],
)
@pytest.mark.parametrize("source", ["--allowed-origin", "config.toml [server] allowed_origins"])
def test_origin_policy_refuses_bad_entries(entry: str, source: str) -> None:
    with pytest.raises(ConfigError) as caught:
        OriginPolicy(["https://ok.example", entry], source)
    message = str(caught.value)
    assert source in message
    assert repr(entry) in message
    assert "scheme://host[:port]" in message


# --- is_loopback_host / format_url_host ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("localhost", True, id="localhost"),
        pytest.param("LOCALHOST.", True, id="localhost-upper-dot"),
        pytest.param("127.0.0.1", True, id="ipv4-loopback"),
        pytest.param("127.8.9.10", True, id="ipv4-loopback-range"),
        pytest.param("::1", True, id="ipv6-loopback"),
        pytest.param("[::1]", True, id="ipv6-loopback-bracketed"),
        pytest.param("::ffff:127.0.0.1", True, id="mapped-loopback"),
        pytest.param("0.0.0.0", False, id="all-ipv4"),
        pytest.param("::", False, id="all-ipv6"),
        pytest.param("192.0.2.1", False, id="other-address"),
        pytest.param("localhost.localdomain", False, id="other-name"),
        pytest.param("foo.localhost", False, id="localhost-subdomain"),
        pytest.param("localhost:8080", False, id="with-port"),
        pytest.param("localhost..", False, id="two-dots"),
        pytest.param("", False, id="empty"),
        pytest.param("\uff4cocalhost", False, id="fullwidth"),
    ],
)
def test_is_loopback_host(name: str, expected: bool) -> None:
    assert is_loopback_host(name) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("::1", "[::1]", id="ipv6"),
        pytest.param("[::1]", "[::1]", id="already-bracketed"),
        pytest.param("fe80::1%eth0", "[fe80::1%25eth0]", id="zone-id-encoded"),
        pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"),
        pytest.param("localhost", "localhost", id="name"),
    ],
)
def test_format_url_host(host: str, expected: str) -> None:
    assert format_url_host(host) == expected
