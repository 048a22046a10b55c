"""FailureRateLimiter (step 4) as a unit: an injected clock, so no test sleeps or races real time.

The limiter promises what the pipeline relies on: an address gets `capacity`
distinct guesses per window and then a Retry-After (an integer >= 1) that it
can honour to the second; nothing presented costs nothing, and a credential
presented again costs nothing more; a right credential never spends; the
check and the count are one atomic step; a presented credential is kept only
as a keyed digest; and memory is bounded per address and in addresses. IPv6
clients share the bucket of their /64.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time

import pytest

from mcp_auth.network import IPAddress
from mcp_auth.ratelimit import (
    CREDENTIAL_DIGEST_BYTES,
    IPV6_KEY_PREFIX,
    MAX_CREDENTIALS_PER_ADDRESS,
    MAX_TRACKED_ADDRESSES,
    FailureRateLimiter,
)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


CLIENT = ip("192.0.2.1")


def limiter(capacity: int = 3, window: float = 3600.0, start: float = 1000.0) -> tuple[FailureRateLimiter, FakeClock]:
    clock = FakeClock(start)
    return FailureRateLimiter(capacity, window, clock=clock), clock


class Guesser:
    """Presents credentials it has never presented before: each one a new guess."""

    def __init__(self, rate_limiter: FailureRateLimiter, address: IPAddress = CLIENT, prefix: str = "guess") -> None:
        self.rate_limiter, self.address, self.prefix, self.sent = rate_limiter, address, prefix, 0

    def credential(self, n: int) -> bytes:
        return self.rate_limiter.credential_key(f"{self.prefix}-{n}".encode())

    def guess(self, times: int = 1) -> list[int]:
        waits = []
        for _ in range(times):
            waits.append(self.rate_limiter.check_and_record(self.address, self.credential(self.sent)))
            self.sent += 1
        return waits


def test_a_fresh_address_may_try_and_asking_stores_nothing() -> None:
    rate_limiter, _ = limiter()
    assert rate_limiter.retry_after(CLIENT) == 0
    assert rate_limiter.check_and_record(CLIENT, None) == 0
    assert len(rate_limiter) == 0


@pytest.mark.parametrize(
    ("capacity", "window", "expected_wait"),
    [
        pytest.param(3, 3600.0, 1200, id="3-per-hour"),
        pytest.param(10, 60.0, 6, id="default-10-per-minute"),
        pytest.param(1, 30.0, 30, id="1-per-30s"),
        pytest.param(7, 100.0, 15, id="fractional-rounds-up"),
        pytest.param(1000, 0.5, 1, id="tiny-wait-is-at-least-1"),
    ],
)
def test_capacity_distinct_guesses_then_retry_after(capacity: int, window: float, expected_wait: int) -> None:
    rate_limiter, _ = limiter(capacity, window)
    guesser = Guesser(rate_limiter)
    assert guesser.guess(capacity) == [0] * capacity, "every guess of the budget may be judged"
    wait = rate_limiter.retry_after(CLIENT)
    assert isinstance(wait, int)
    assert wait == expected_wait == max(1, math.ceil(window / capacity))
    assert guesser.guess() == [expected_wait]


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(0.0, id="clock-0"),
        pytest.param(1000.0, id="clock-1000"),
        pytest.param(3.3, id="clock-3.3-not-a-binary-fraction"),
        pytest.param(12345.678, id="clock-12345.678"),
        pytest.param(987654.321, id="clock-987654.321"),
    ],
)
@pytest.mark.parametrize(
    ("capacity", "window"),
    [
        pytest.param(1, 30.0, id="1-per-30s"),
        pytest.param(3, 90.0, id="3-per-90s"),
        pytest.param(10, 300.0, id="10-per-300s"),
        pytest.param(3, 3600.0, id="3-per-hour"),
        pytest.param(10, 60.0, id="10-per-minute"),
    ],
)
def test_a_client_that_honours_retry_after_is_let_in(start: float, capacity: int, window: float) -> None:
    """Waiting exactly the advertised Retry-After must be enough, whatever the clock's value."""
    rate_limiter, clock = limiter(capacity, window, start)
    guesser = Guesser(rate_limiter)
    guesser.guess(capacity)
    wait = rate_limiter.retry_after(CLIENT)
    assert wait >= 1
    clock.advance(wait)
    assert rate_limiter.retry_after(CLIENT) == 0
    assert guesser.guess() == [0]


def test_the_wait_shrinks_as_the_bucket_refills() -> None:
    rate_limiter, clock = limiter(3, 3600.0, start=0.0)
    Guesser(rate_limiter).guess(3)
    assert rate_limiter.retry_after(CLIENT) == 1200
    clock.advance(600)
    assert rate_limiter.retry_after(CLIENT) == 600
    clock.advance(599)
    assert rate_limiter.retry_after(CLIENT) == 1
    clock.advance(1)
    assert rate_limiter.retry_after(CLIENT) == 0


def test_one_refilled_guess_buys_exactly_one_new_credential() -> None:
    rate_limiter, clock = limiter(3, 3600.0, start=0.0)
    guesser = Guesser(rate_limiter)
    guesser.guess(3)
    clock.advance(1200)
    assert guesser.guess(2) == [0, 1200]


def test_a_long_idle_client_gets_capacity_not_more() -> None:
    rate_limiter, clock = limiter(3, 60.0, start=0.0)
    guesser = Guesser(rate_limiter)
    guesser.guess()
    clock.advance(100 * 60)
    assert guesser.guess(4) == [0, 0, 0, 20]


def test_requests_while_blocked_are_not_counted_and_do_not_extend_the_wait() -> None:
    rate_limiter, _ = limiter(3, 3600.0, start=0.0)
    guesser = Guesser(rate_limiter)
    guesser.guess(3)
    # An empty bucket stays empty: fifty more guesses are refused, not counted, and the wait is one refill.
    assert guesser.guess(50) == [1200] * 50
    assert rate_limiter.retry_after(CLIENT) == 1200


def test_nothing_presented_is_no_guess() -> None:
    rate_limiter, _ = limiter(3)
    for _ in range(1000):
        assert rate_limiter.check_and_record(CLIENT, None) == 0
    assert len(rate_limiter) == 0
    assert Guesser(rate_limiter).guess(3) == [0, 0, 0]


def test_the_same_wrong_credential_again_is_the_same_guess() -> None:
    """A client left with an old token retries for ever; it spends one guess of the budget, once."""
    rate_limiter, clock = limiter(3, 60.0)
    stale = rate_limiter.credential_key(b"token\x00old-token")
    for _ in range(1000):
        assert rate_limiter.check_and_record(CLIENT, stale) == 0
    guesser = Guesser(rate_limiter)
    assert guesser.guess(2) == [0, 0], "the stale token took one guess of three, however often it came"
    assert rate_limiter.retry_after(CLIENT) == 20
    clock.advance(10 * 60)
    # Windows later it is still the same guess: it costs nothing, so three new guesses fit.
    assert rate_limiter.check_and_record(CLIENT, stale) == 0
    assert guesser.guess(4) == [0, 0, 0, 20]


def test_a_blocked_address_waits_whatever_it_presents() -> None:
    """No credential is judged while an address waits: else 429 against 200 would answer every guess."""
    rate_limiter, _ = limiter(3)
    right = rate_limiter.credential_key(b"token\x00right")
    assert rate_limiter.check_and_record(CLIENT, right) == 0
    rate_limiter.accepted(CLIENT, right)
    guesser = Guesser(rate_limiter)
    guesser.guess(3)
    assert rate_limiter.check_and_record(CLIENT, right) == 1200, "a known right credential waits too"
    assert rate_limiter.check_and_record(CLIENT, guesser.credential(0)) == 1200, "a known wrong one too"
    assert rate_limiter.check_and_record(CLIENT, None) == 1200, "and nothing at all"


def test_a_right_credential_spends_nothing() -> None:
    rate_limiter, _ = limiter(3)
    right = rate_limiter.credential_key(b"token\x00right")
    for _ in range(100):
        assert rate_limiter.check_and_record(CLIENT, right) == 0
        rate_limiter.accepted(CLIENT, right)
    assert len(rate_limiter) == 0, "an address that only presents the right token leaves nothing behind"
    assert Guesser(rate_limiter).guess(4) == [0, 0, 0, 1200]


def test_a_right_credential_in_flight_many_times_holds_one_guess_at_most() -> None:
    """Parallel requests with the same right token: the first holds a guess until judged, the rest ride on it."""
    rate_limiter, _ = limiter(3)
    right = rate_limiter.credential_key(b"token\x00right")
    assert [rate_limiter.check_and_record(CLIENT, right) for _ in range(50)] == [0] * 50
    guesser = Guesser(rate_limiter)
    assert guesser.guess(2) == [0, 0]
    rate_limiter.accepted(CLIENT, right)
    for _ in range(50):
        rate_limiter.accepted(CLIENT, right)
    # The right token's guess came back exactly once: one new guess left, then the wait.
    assert guesser.guess(2) == [0, 1200]


def test_a_known_right_credential_stays_free_while_guesses_are_left() -> None:
    rate_limiter, _ = limiter(3)
    right = rate_limiter.credential_key(b"token\x00right")
    guesser = Guesser(rate_limiter)
    guesser.guess(2)
    assert rate_limiter.check_and_record(CLIENT, right) == 0
    rate_limiter.accepted(CLIENT, right)
    for _ in range(20):
        assert rate_limiter.check_and_record(CLIENT, right) == 0
        rate_limiter.accepted(CLIENT, right)
    assert guesser.guess(2) == [0, 1200]


def test_accepting_what_was_never_recorded_changes_nothing() -> None:
    rate_limiter, _ = limiter(3)
    guesser = Guesser(rate_limiter)
    guesser.guess(3)
    rate_limiter.accepted(CLIENT, rate_limiter.credential_key(b"token\x00never-seen"))
    rate_limiter.accepted(ip("192.0.2.99"), guesser.credential(0))
    assert rate_limiter.retry_after(CLIENT) == 1200


class YieldingCredential(bytes):
    """A credential digest that hands the GIL to other threads whenever it is hashed.

    The limiter hashes it between reading the bucket and writing it back, the
    window where a check that is not atomic with its count lets parallel
    guesses through; time.sleep(0) waits for nothing, it only lets the other
    threads run there.
    """

    def __hash__(self) -> int:
        time.sleep(0)
        return bytes.__hash__(self)


@pytest.mark.parametrize("parallel", [pytest.param(300, id="300-threads")])
def test_check_and_record_is_atomic(parallel: int) -> None:
    capacity = 10
    rate_limiter, _ = limiter(capacity, 60.0)
    barrier = threading.Barrier(parallel)
    waits: list[int] = [-1] * parallel

    def guess(n: int) -> None:
        credential = YieldingCredential(rate_limiter.credential_key(f"guess-{n}".encode()))
        barrier.wait(timeout=60)
        waits[n] = rate_limiter.check_and_record(CLIENT, credential)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert waits.count(0) == capacity
    assert waits.count(6) == parallel - capacity


@pytest.mark.parametrize(
    ("limited", "other", "shared"),
    [
        pytest.param("192.0.2.1", "192.0.2.2", False, id="ipv4-neighbours-are-separate"),
        pytest.param("192.0.2.1", "2001:db8::1", False, id="ipv4-and-ipv6-are-separate"),
        pytest.param("2001:db8::1", "2001:db8::ffff:1", True, id="same-ipv6-64-is-shared"),
        pytest.param("2001:db8:0:0:1::1", "2001:db8::2", True, id="anywhere-in-the-64"),
        pytest.param("2001:db8::1", "2001:db8:0:1::1", False, id="next-ipv6-64-is-separate"),
        pytest.param("::ffff:192.0.2.1", "192.0.2.1", True, id="ipv4-mapped-is-its-ipv4-address"),
        pytest.param("::ffff:192.0.2.1", "::ffff:192.0.2.2", False, id="ipv4-mapped-neighbours-are-separate"),
        pytest.param("::ffff:192.0.2.1", "198.51.100.1", False, id="ipv4-mapped-does-not-lock-out-ipv4"),
    ],
)
def test_buckets_are_per_address_and_per_ipv6_64(limited: str, other: str, shared: bool) -> None:
    rate_limiter, _ = limiter(3)
    Guesser(rate_limiter, ip(limited)).guess(3)
    assert rate_limiter.retry_after(ip(limited)) > 0
    assert (rate_limiter.retry_after(ip(other)) > 0) is shared


def test_credentials_are_remembered_per_address() -> None:
    """Another address presenting the same wrong credential makes its own guess."""
    rate_limiter, _ = limiter(3)
    first, second = Guesser(rate_limiter, ip("192.0.2.1")), Guesser(rate_limiter, ip("192.0.2.2"))
    first.guess(2)
    assert second.guess(3) == [0, 0, 0]
    assert rate_limiter.retry_after(second.address) == 1200
    assert rate_limiter.retry_after(first.address) == 0


def test_ipv6_key_prefix_is_a_64() -> None:
    assert IPV6_KEY_PREFIX == 64


def test_a_credential_is_kept_only_as_a_keyed_digest() -> None:
    presented = b"token\x00PRESENTED-secret-0123456789abcdef"
    rate_limiter, _ = limiter(3)
    other, _ = limiter(3)
    digest = rate_limiter.credential_key(presented)
    assert len(digest) == CREDENTIAL_DIGEST_BYTES
    assert digest == rate_limiter.credential_key(presented), "the same credential is the same guess"
    assert digest != other.credential_key(presented), "keyed per limiter (per process): not a plain hash"
    assert digest != rate_limiter.credential_key(presented + b"x")
    rate_limiter.check_and_record(CLIENT, digest)
    kept = [credential for entry in rate_limiter._addresses.values() for credential in entry.credentials]
    assert kept == [digest]
    assert b"PRESENTED" not in b"".join(kept)


def test_memory_per_address_is_bounded_and_the_least_recently_presented_is_forgotten() -> None:
    rate_limiter, _ = limiter(MAX_CREDENTIALS_PER_ADDRESS + 2)
    guesser = Guesser(rate_limiter)
    guesser.guess(MAX_CREDENTIALS_PER_ADDRESS)
    assert rate_limiter.check_and_record(CLIENT, guesser.credential(0)) == 0  # now the most recent
    guesser.guess()  # one more than the address may remember: guess 1 is forgotten
    (entry,) = rate_limiter._addresses.values()
    assert len(entry.credentials) == MAX_CREDENTIALS_PER_ADDRESS
    # Guess 0 is still known and free; guess 1 was forgotten and costs again, spending the last guess.
    assert rate_limiter.check_and_record(CLIENT, guesser.credential(0)) == 0
    assert rate_limiter.check_and_record(CLIENT, guesser.credential(1)) == 0
    assert rate_limiter.retry_after(CLIENT) > 0


def test_memory_is_bounded_and_the_least_recently_guessing_address_is_forgotten() -> None:
    rate_limiter, _ = limiter(3)
    first, kept = Guesser(rate_limiter, ip("10.255.255.1")), Guesser(rate_limiter, ip("10.255.255.2"))
    first.guess(3)
    kept.guess(2)
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    for n in range(MAX_TRACKED_ADDRESSES - 2):
        Guesser(rate_limiter, ipaddress.IPv4Address(base + n)).guess()
    assert len(rate_limiter) == MAX_TRACKED_ADDRESSES
    # `kept` guesses again, so it is now the most recent; one more address evicts `first`.
    kept.guess()
    Guesser(rate_limiter, ipaddress.IPv4Address(base + MAX_TRACKED_ADDRESSES)).guess()
    assert len(rate_limiter) == MAX_TRACKED_ADDRESSES
    assert rate_limiter.retry_after(first.address) == 0
    assert rate_limiter.retry_after(kept.address) > 0
