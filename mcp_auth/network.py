"""Who is the client, and which name did it use to reach us: steps 1-3 of the pipeline.

This module turns the network-facing strings of a request into typed values and
answers three questions about them: is the client address inside an allowed
network (step 1), is the ``Host`` header one we serve (step 2), and is the
``Origin`` one we accept (step 3). It also parses the operator's allowlists for
those checks. It is pure: strings and ``ipaddress`` objects in, values out; it
never touches a socket, a WSGI environ or DNS.

What it trusts:

- ``REMOTE_ADDR`` (the TCP peer) is the truth: the kernel put it there.
- ``X-Forwarded-For`` is believed only when that peer is a configured trusted
  proxy, and then only as far as the chain stays inside trusted proxies: the
  walk goes right to left and stops at the first address no trusted proxy
  vouches for, because everything to the left of it was written by the client.
  Trust is by proxy address, never by hop count, so a client that can also
  reach the server directly cannot spoof its way in. Trusting every peer
  (``*``, ``0.0.0.0/0``, ``::/0``, or networks that together cover every IPv4
  or every IPv6 address, such as ``0.0.0.0/1`` plus ``128.0.0.0/1``) would make
  the address allowlist decorative, so such configuration is refused. A
  malformed chain is refused, never guessed.
- ``Host`` and ``Origin`` are attacker-controlled strings. They are parsed with
  a strict ASCII grammar and compared as parsed values, never by prefix, so
  ``127.0.0.1:8080.evil`` is a malformed host rather than loopback. Checking
  them is what stops browser DNS rebinding: a page on ``evil.example`` that
  re-points its name at 127.0.0.1 still sends ``Host: evil.example``, and a
  cross-site page still sends its own ``Origin``.

IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are normalised to IPv4
everywhere, in client addresses and in configured networks alike, so a
dual-stack socket cannot slip a client past an IPv4 rule. IPv6 zone ids
(``fe80::1%eth0``) are dropped from client addresses.

Size: a little over the package's 450-line guide, because it holds every
parser of the network-facing headers (address, X-Forwarded-For, Host, Origin,
the request target's authority) and of the allowlists they are checked
against; they share one grammar and one canonical form, and splitting them
would scatter the trust rules above over several files.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import TypeAlias

from mcp_auth.errors import ConfigError

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# The longest textual IPv6 address with an embedded IPv4 part is 45 characters;
# brackets and a zone id fit comfortably in 100. Anything longer is not an
# address, and refusing it early keeps parsing cost flat for hostile input.
MAX_ADDRESS_LENGTH = 100

# Real proxy chains are a handful of hops, each at most ~45 characters. 8 KiB is
# also the common per-header limit of front proxies (nginx, gunicorn), so a chain
# longer than this did not come through a well-behaved proxy.
MAX_FORWARDED_FOR_LENGTH = 8 * 1024

# No real deployment chains more than a few proxies; 32 leaves a wide margin
# while bounding the walk over a client-padded header.
MAX_FORWARDED_FOR_HOPS = 32

# A server sees a bounded set of distinct clients in any short window; 4096
# addresses cost well under a megabyte and a flood of fresh addresses only
# evicts entries, it cannot grow memory.
ADDRESS_CACHE_SIZE = 4096
# Parsed Host header values kept (see `parse_host`); far more names than one server answers to.
HOST_CACHE_SIZE = 256

# RFC 1035: a name is at most 253 characters in text form, a label at most 63.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

# Longest legitimate Host value: a 253-character name, its optional trailing
# dot, ":" and a 5-digit port. Checked before any other parsing.
MAX_HOST_LENGTH = MAX_NAME_LENGTH + 1 + 1 + 5

# A host plus "://" and a scheme; 40 characters of room covers every scheme a
# browser sends (the longest common one is "chrome-extension").
MAX_ORIGIN_LENGTH = MAX_HOST_LENGTH + 40

# TCP ports are 16 bits; 0 is not a port a client can have connected to.
MIN_PORT = 1
MAX_PORT = 65535

# Attacker-controlled text quoted in an error message (and so in the audit log)
# is cut to this many characters: enough to recognise, too short to flood a log.
ERROR_EXCERPT_LENGTH = 64

_ANY = "*"

# Characters a CIDR or single-address entry may contain: hex digits, ":", "."
# and "/". Whitespace, brackets, zone ids ("%") and non-ASCII are refused here
# so that ipaddress never sees them.
_NETWORK_ENTRY = re.compile(r"[0-9A-Fa-f:./]+", re.ASCII)

# host = "[" IPv6 "]" / reg-name-or-IPv4, then an optional ":" and 1-5 digits.
# The port group demands digits only, so "127.0.0.1:8080.evil" cannot match.
_HOST = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::(?P<port>[0-9]{1,5}))?",
    re.ASCII,
)

# RFC 1123 labels, lowercased before matching. Underscore is allowed because
# container and service-discovery names use it; it cannot widen any match,
# since names are compared exactly.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?", re.ASCII)

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*", re.ASCII)

# A zone id is an interface name or number (RFC 6874: unreserved characters).
_ZONE_ID = re.compile(r"[A-Za-z0-9._~-]+", re.ASCII)
# An absolute-form request target: scheme "://" authority, then the path, query or fragment.
_ABSOLUTE_TARGET = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?P<authority>[^/?#]*)", re.ASCII)


def _excerpt(text: str) -> str:
    """Quote attacker-controlled text for an error message, bounded in length."""
    if len(text) <= ERROR_EXCERPT_LENGTH:
        return repr(text)
    return f"{text[:ERROR_EXCERPT_LENGTH]!r}... ({len(text)} characters)"


def _unmap(address: IPAddress) -> IPAddress:
    """Return the IPv4 address inside an IPv4-mapped IPv6 address, else the address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def address_text(address: IPAddress) -> str:
    """`str(address)`, cached: the ipaddress module formats it anew (octet by octet) on every call."""
    return str(address)


def _unmap_network(network: IPNetwork) -> IPNetwork:
    """Return a subnet of ::ffff:0:0/96 as the IPv4 network it maps, else the network."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _in_any(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    # An IPv4 address is never "in" an IPv6 network (and vice versa); ipaddress
    # answers False rather than raising, which is what a mixed list needs.
    return any(address in network for network in networks)


def _config_entries(values: Iterable[str], source: str) -> list[str]:
    """Trim each entry and drop the empty ones left by splitting ``"a, ,b"``."""
    if isinstance(values, str):
        # Iterating a str yields characters, which would produce baffling errors.
        raise TypeError(f"{source}: pass a sequence of entries, not one string")
    return [entry.strip() for entry in values if entry.strip()]


def parse_address(text: str) -> IPAddress | None:
    """Parse one client address as found in ``REMOTE_ADDR`` or an X-Forwarded-For hop.

    Cached (every request parses its peer's address, and most come from a few
    peers): a pure function with immutable answers, in a bounded cache that
    only ever holds strings of at most MAX_ADDRESS_LENGTH characters.

    Accepts surrounding whitespace, ``[v6]`` brackets and a zone id (dropped);
    returns IPv4-mapped IPv6 as IPv4. Returns None for anything else, including
    an address with a port, so a caller can refuse rather than guess.
    """
    if len(text) > MAX_ADDRESS_LENGTH or not text.isascii():
        return None
    return _parse_short_address(text)


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def _parse_short_address(text: str) -> IPAddress | None:
    candidate = text.strip()
    bracketed = candidate.startswith("[") and candidate.endswith("]")
    if bracketed:
        candidate = candidate[1:-1]
    candidate, percent, zone_id = candidate.partition("%")
    if percent and (":" not in candidate or not _ZONE_ID.fullmatch(zone_id)):
        return None
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if bracketed and address.version != 6:
        return None
    return _unmap(address)


def _parse_network_entry(entry: str, source: str) -> IPNetwork:
    """Parse one trimmed CIDR or single-address entry from the configuration."""
    usage = "write a CIDR network like 10.0.0.0/8 or 2001:db8::/32, or a single address like 192.0.2.7 or 2001:db8::7"
    if not _NETWORK_ENTRY.fullmatch(entry):
        raise ConfigError(f"{source}: {entry!r} is not an IP network; {usage}")
    try:
        return _unmap_network(ipaddress.ip_network(entry, strict=True))
    except ValueError:
        pass
    try:
        loose = _unmap_network(ipaddress.ip_network(entry, strict=False))
    except ValueError:
        raise ConfigError(f"{source}: {entry!r} is not an IP network; {usage}") from None
    raise ConfigError(
        f"{source}: {entry!r} has host bits set after the prefix; "
        f"write the network address {loose} (or the single address without a prefix)"
    )


def parse_networks(values: Iterable[str], source: str) -> tuple[IPNetwork, ...] | None:
    """Parse an address allowlist; None means any address (an entry ``*``).

    Every entry is validated even when ``*`` is present, so a typo next to a
    ``*`` is reported instead of hidden. ``source`` names where the values came
    from (a flag, a variable, a file key) for the error message.
    """
    networks: list[IPNetwork] = []
    allow_any = False
    for entry in _config_entries(values, source):
        if entry == _ANY:
            allow_any = True
        else:
            networks.append(_parse_network_entry(entry, source))
    return None if allow_any else tuple(networks)


# Client addresses in this range are unmapped to IPv4 before any comparison,
# so no IPv6 peer is ever inside it: a trusted-proxy list that covers the rest
# of the IPv6 space trusts every IPv6 peer.
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _covers_every_address(networks: list[IPNetwork], version: int) -> bool:
    """Whether `networks` of one address family together trust every peer of that family."""
    if version == 4:
        v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
        # collapse_addresses merges adjacent and nested networks into the
        # fewest; the union is the whole space exactly when that is one /0.
        return [n.prefixlen for n in ipaddress.collapse_addresses(v4)] == [0]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return [n.prefixlen for n in ipaddress.collapse_addresses([*v6, _IPV4_MAPPED])] == [0]


def parse_trusted_proxies(values: Iterable[str], source: str) -> tuple[IPNetwork, ...]:
    """Parse the networks whose X-Forwarded-For is believed; refuses "every peer".

    Refused: ``*``, an entry that covers every address, and a list whose
    networks together cover every IPv4 address or every IPv6 address.
    """
    refusal = (
        "trusting every peer's X-Forwarded-For lets any client choose its own address "
        "and makes the IP allowlist decorative; list the reverse proxy's own address "
        "instead, e.g. 127.0.0.1 or 10.0.0.5"
    )
    proxies: list[IPNetwork] = []
    entries: list[str] = []  # as written, for the message
    for entry in _config_entries(values, source):
        if entry == _ANY:
            raise ConfigError(f"{source}: {entry!r} is refused: {refusal}")
        network = _parse_network_entry(entry, source)
        # Checked after ::ffff:0:0/96 became 0.0.0.0/0, so "all IPv4" is caught too.
        if network.prefixlen == 0:
            raise ConfigError(f"{source}: {entry!r} covers every address: {refusal}")
        proxies.append(network)
        entries.append(entry)
    for version in (4, 6):
        if _covers_every_address(proxies, version):
            listed = ", ".join(e for e, n in zip(entries, proxies, strict=True) if n.version == version)
            raise ConfigError(
                f"{source}: the IPv{version} entries {_excerpt(listed)} together cover every "
                f"IPv{version} address: {refusal}"
            )
    return tuple(proxies)


class AddressAllowlist:
    """Step 1's predicate: is a client address inside the allowed networks?"""

    def __init__(self, networks: tuple[IPNetwork, ...] | None) -> None:
        """``networks`` as returned by `parse_networks`; None allows every address."""
        self._networks = networks
        # Per instance, so the cache dies with the allowlist (a class-level
        # lru_cache on a method would keep every instance alive).
        self._cached_allows: Callable[[IPAddress], bool] = functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)(self._allows)

    @property
    def allow_all(self) -> bool:
        return self._networks is None

    def allows(self, address: IPAddress) -> bool:
        return self._cached_allows(_unmap(address))

    def _allows(self, address: IPAddress) -> bool:
        return self._networks is None or _in_any(address, self._networks)


class ForwardedForError(ValueError):
    """A trusted proxy passed an X-Forwarded-For chain that cannot be read safely."""


def resolve_client_address(
    peer: IPAddress,
    forwarded_for: list[str],
    trusted_proxies: tuple[IPNetwork, ...],
) -> IPAddress:
    """Return the address of the client, looking through trusted proxies only.

    ``forwarded_for`` holds the raw value of each X-Forwarded-For header line in
    order; several lines form one comma-separated list. From an untrusted peer
    the header is ignored. From a trusted one the list is walked from the right,
    skipping trusted proxies; the first other address is the client. If every
    hop is a trusted proxy the leftmost one is the client.

    Raises ForwardedForError when the header is over-long, has too many hops,
    or a hop reached by the walk is not an address.
    """
    peer = _unmap(peer)
    if not forwarded_for or not _in_any(peer, trusted_proxies):
        return peer
    total_length = sum(len(line) for line in forwarded_for) + len(forwarded_for) - 1
    if total_length > MAX_FORWARDED_FOR_LENGTH:
        raise ForwardedForError(
            f"X-Forwarded-For is {total_length} characters, over the limit of {MAX_FORWARDED_FOR_LENGTH}"
        )
    hops = ",".join(forwarded_for).split(",")
    if len(hops) > MAX_FORWARDED_FOR_HOPS:
        raise ForwardedForError(f"X-Forwarded-For has {len(hops)} hops, over the limit of {MAX_FORWARDED_FOR_HOPS}")
    client = peer
    for position, hop in reversed(list(enumerate(hops, start=1))):
        address = parse_address(hop)
        if address is None:
            raise ForwardedForError(
                f"X-Forwarded-For hop {position} of {len(hops)}, {_excerpt(hop)}, is not an IP address"
            )
        client = address
        if not _in_any(address, trusted_proxies):
            break
    return client


def is_trusted_proxy(peer: IPAddress, trusted_proxies: tuple[IPNetwork, ...]) -> bool:
    """Whether the TCP peer is a configured trusted proxy (whose X-Forwarded-For is believed)."""
    return _in_any(_unmap(peer), trusted_proxies)


class HostError(ValueError):
    """A Host header value (or host in an Origin) does not follow the grammar."""


def _normalise_name(name: str, value: str) -> str:
    """Lowercase a name or dotted-quad IPv4 address and check its labels."""
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_NAME_LENGTH:
        raise HostError(f"host {_excerpt(value)} has an empty or over-long name")
    labels = name.split(".")
    # A numeric last label cannot be a DNS name (no top-level domain is all
    # digits), so the whole name must be an IPv4 address in canonical form.
    if labels[-1].isdigit():
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise HostError(f"host {_excerpt(value)} is not a valid IPv4 address") from None
    for label in labels:
        if len(label) > MAX_LABEL_LENGTH or not _LABEL.fullmatch(label):
            raise HostError(f"host {_excerpt(value)} has an invalid label {_excerpt(label)}")
    return name


def parse_host(value: str) -> tuple[str, int | None]:
    """Parse a Host header value (or a host allowlist entry) into (host, port).

    Cached like `parse_address` (every request's Host is parsed; a server is
    reached by a few names): pure, bounded input and cache. A malformed value
    raises each time, so refusals are never cached.

    The host is lowercased; IPv4 is canonical; IPv6 is compressed and kept in
    brackets (``[::1]``); one trailing dot is dropped. The port is None when
    absent. Raises HostError for anything outside that grammar.
    """
    if len(value) > MAX_HOST_LENGTH:
        raise HostError(f"host is {len(value)} characters, over the limit of {MAX_HOST_LENGTH}")
    return _parse_short_host(value)


@functools.lru_cache(maxsize=HOST_CACHE_SIZE)
def _parse_short_host(value: str) -> tuple[str, int | None]:
    match = _HOST.fullmatch(value)
    if match is None:
        raise HostError(f"host {_excerpt(value)} is not host[:port] with an ASCII name")
    ipv6, name, port_text = match.group("ipv6", "name", "port")
    if ipv6 is not None:
        try:
            host = f"[{ipaddress.IPv6Address(ipv6)}]"
        except ValueError:
            raise HostError(f"host {_excerpt(value)} has an invalid IPv6 literal") from None
    else:
        host = _normalise_name(name, value)
    if port_text is None:
        return host, None
    port = int(port_text)
    if not MIN_PORT <= port <= MAX_PORT:
        raise HostError(f"host {_excerpt(value)} has port {port}, outside {MIN_PORT}-{MAX_PORT}")
    return host, port


def request_target_authority(target: str) -> str | None:
    """The authority of an absolute-form request target (``http://name:port/path``), else None.

    Origin-form (``/path``) and asterisk-form (``*``) targets name no host. An
    absolute-form one does, and RFC 9112 section 3.2.2 tells an origin server to
    prefer it to the Host header, so a proxy in front that judged only Host
    would be bypassed unless the target's authority is judged as a Host too.
    The authority is returned raw (it may hold userinfo, or be empty): the
    caller parses it with `parse_host`, which refuses anything but host[:port].
    """
    match = _ABSOLUTE_TARGET.match(target)
    return match.group("authority") if match else None


class HostPolicy:
    """Step 2's predicate: is a parsed Host one this server answers to?

    Loopback names are always allowed on any port; extra entries are added to
    them. An entry with a port matches only that port; an entry without one
    matches any port. Names match exactly: no implicit subdomains.
    """

    DEFAULT_HOSTS = ("localhost", "127.0.0.1", "[::1]")

    def __init__(self, extra_entries: Iterable[str] = (), source: str = "--allowed-host") -> None:
        self._allow_any = False
        allowed: set[tuple[str, int | None]] = {(host, None) for host in self.DEFAULT_HOSTS}
        for entry in _config_entries(extra_entries, source):
            if entry == _ANY:
                # The operator's explicit choice, e.g. behind a proxy that
                # already checks Host; DNS rebinding protection is then theirs.
                self._allow_any = True
                continue
            try:
                allowed.add(parse_host(entry))
            except HostError as exc:
                raise ConfigError(
                    f"{source}: {entry!r} is not a host ({exc}); write a name like "
                    "example.com, an address like 192.0.2.7 or [2001:db8::1], "
                    "optionally followed by :PORT, or * for any host"
                ) from None
        self._allowed = frozenset(allowed)

    def allows(self, host: str, port: int | None) -> bool:
        """``host`` and ``port`` as returned by `parse_host` for the request's Host."""
        return self._allow_any or (host, None) in self._allowed or (port is not None and (host, port) in self._allowed)


class OriginError(ValueError):
    """An Origin header value (or origin allowlist entry) is not scheme://host[:port]."""


def parse_origin(value: str) -> tuple[str, str, int | None]:
    """Parse a serialised origin into (scheme, host, port) as browsers send it.

    No path, query, userinfo or trailing slash is allowed. The host follows
    `parse_host`. Default ports are not filled in: ``https://a`` and
    ``https://a:443`` are different origins here, compared exactly.
    """
    if len(value) > MAX_ORIGIN_LENGTH:
        raise OriginError(f"origin is {len(value)} characters, over the limit of {MAX_ORIGIN_LENGTH}")
    if not value.isascii():
        # Checked before lowercasing: str.lower() maps some non-ASCII letters
        # (the Kelvin sign) onto ASCII ones.
        raise OriginError(f"origin {_excerpt(value)} contains non-ASCII characters")
    if value == "null":
        # Sent by sandboxed frames, file: pages and some redirects: it names no
        # one, so any of those pages could claim it.
        raise OriginError("origin 'null' is opaque and identifies no site")
    scheme, separator, authority = value.partition("://")
    scheme = scheme.lower()
    if not separator or not _SCHEME.fullmatch(scheme):
        raise OriginError(f"origin {_excerpt(value)} is not scheme://host[:port]")
    if not authority:
        raise OriginError(f"origin {_excerpt(value)} has no host")
    try:
        host, port = parse_host(authority)
    except HostError as exc:
        raise OriginError(f"origin {_excerpt(value)}: {exc}") from None
    return scheme, host, port


class OriginPolicy:
    """Step 3's predicate: is a present Origin header one we accept?

    http and https on the loopback names are allowed on any port; extra entries
    are exact (scheme, host, port) triples, and one without a port matches only
    an Origin without a port. Whether an absent Origin passes is the caller's
    decision; this class only judges a value that was sent.
    """

    DEFAULT_SCHEMES = ("http", "https")

    def __init__(self, extra_entries: Iterable[str] = (), source: str = "--allowed-origin") -> None:
        self._any_port = frozenset(
            (scheme, host) for scheme in self.DEFAULT_SCHEMES for host in HostPolicy.DEFAULT_HOSTS
        )
        exact: set[tuple[str, str, int | None]] = set()
        for entry in _config_entries(extra_entries, source):
            try:
                exact.add(parse_origin(entry))
            except OriginError as exc:
                raise ConfigError(
                    f"{source}: {entry!r} is not an allowed origin ({exc}); write it "
                    "exactly as a browser sends it, scheme://host[:port] with no path "
                    "or trailing slash, e.g. https://app.example.com or http://localhost:3000"
                ) from None
        self._exact = frozenset(exact)

    def allows(self, origin: str) -> bool:
        """``origin`` is the raw header value; a malformed one is not allowed."""
        try:
            scheme, host, port = parse_origin(origin)
        except OriginError:
            return False
        return (scheme, host) in self._any_port or (scheme, host, port) in self._exact


def is_loopback_host(name: str) -> bool:
    """True for ``localhost`` or a loopback address literal; never consults DNS.

    Used to decide whether a bind address is loopback-only. ``0.0.0.0`` and
    ``::`` listen on every interface and so are not loopback.
    """
    if name.lower().removesuffix(".") == "localhost":
        return True
    address = parse_address(name)
    return address is not None and address.is_loopback


def format_url_host(host: str) -> str:
    """Return ``host`` as it must appear in a URL: IPv6 literals in brackets."""
    if ":" in host and not host.startswith("["):
        # RFC 6874: a zone id's "%" must itself be percent-encoded in a URL.
        return f"[{host.replace('%', '%25')}]"
    return host
