"""FailureRateLimiter (step 4) as a unit: an injected clock, so no test sleeps or races real time.

The limiter promises three things the pipeline relies on: a client gets
`capacity` failures per window and then a Retry-After (an integer >= 1) that
it can honour to the second; only failures spend from the bucket; and its
memory is bounded whatever the number of addresses. IPv6 clients share the
bucket of their /64.
"""

from __future__ import annotations

import ipaddress
import math

import pytest

from mcp_auth.network import IPAddress
from mcp_auth.ratelimit import IPV6_KEY_PREFIX, MAX_TRACKED_ADDRESSES, FailureRateLimiter


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


def fail(rate_limiter: FailureRateLimiter, address: IPAddress, times: int) -> None:
    for _ in range(times):
        rate_limiter.record_failure(address)


def test_a_fresh_address_may_try_and_asking_stores_nothing() -> None:
    rate_limiter, _ = limiter()
    assert rate_limiter.retry_after(CLIENT) == 0
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
def test_capacity_failures_then_retry_after(capacity: int, window: float, expected_wait: int) -> None:
    rate_limiter, _ = limiter(capacity, window)
    fail(rate_limiter, CLIENT, capacity - 1)
    assert rate_limiter.retry_after(CLIENT) == 0, "one failure short of the capacity must not be limited"
    rate_limiter.record_failure(CLIENT)
    wait = rate_limiter.retry_after(CLIENT)
    assert isinstance(wait, int)
    assert wait == expected_wait == max(1, math.ceil(window / capacity))


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
    fail(rate_limiter, CLIENT, capacity)
    wait = rate_limiter.retry_after(CLIENT)
    assert wait >= 1
    clock.advance(wait)
    assert rate_limiter.retry_after(CLIENT) == 0


def test_the_wait_shrinks_as_the_bucket_refills() -> None:
    rate_limiter, clock = limiter(3, 3600.0, start=0.0)
    fail(rate_limiter, CLIENT, 3)
    assert rate_limiter.retry_after(CLIENT) == 1200
    clock.advance(600)
    assert rate_limiter.retry_after(CLIENT) == 600
    clock.advance(599)
    assert rate_limiter.retry_after(CLIENT) == 1
    clock.advance(1)
    assert rate_limiter.retry_after(CLIENT) == 0


def test_one_refilled_failure_buys_exactly_one_attempt() -> None:
    rate_limiter, clock = limiter(3, 3600.0, start=0.0)
    fail(rate_limiter, CLIENT, 3)
    clock.advance(1200)
    assert rate_limiter.retry_after(CLIENT) == 0
    rate_limiter.record_failure(CLIENT)
    assert rate_limiter.retry_after(CLIENT) == 1200


def test_a_long_idle_client_gets_capacity_not_more() -> None:
    rate_limiter, clock = limiter(3, 60.0, start=0.0)
    rate_limiter.record_failure(CLIENT)
    clock.advance(100 * 60)
    fail(rate_limiter, CLIENT, 2)
    assert rate_limiter.retry_after(CLIENT) == 0
    rate_limiter.record_failure(CLIENT)
    assert rate_limiter.retry_after(CLIENT) == 20


def test_failures_while_limited_do_not_go_below_empty() -> None:
    rate_limiter, _clock = limiter(3, 3600.0, start=0.0)
    fail(rate_limiter, CLIENT, 50)
    # An empty bucket stays empty: the wait is one refill, not fifty.
    assert rate_limiter.retry_after(CLIENT) == 1200


def test_asking_does_not_spend() -> None:
    rate_limiter, _ = limiter(3)
    fail(rate_limiter, CLIENT, 2)
    for _ in range(100):
        assert rate_limiter.retry_after(CLIENT) == 0
    rate_limiter.record_failure(CLIENT)
    assert rate_limiter.retry_after(CLIENT) > 0


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
    fail(rate_limiter, ip(limited), 3)
    assert rate_limiter.retry_after(ip(limited)) > 0
    assert (rate_limiter.retry_after(ip(other)) > 0) is shared


def test_ipv6_key_prefix_is_a_64() -> None:
    assert IPV6_KEY_PREFIX == 64


def test_memory_is_bounded_and_the_least_recently_failing_address_is_forgotten() -> None:
    rate_limiter, _ = limiter(3)
    first, kept = ip("10.255.255.1"), ip("10.255.255.2")
    fail(rate_limiter, first, 3)
    fail(rate_limiter, kept, 3)
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    for n in range(MAX_TRACKED_ADDRESSES - 2):
        rate_limiter.record_failure(ipaddress.IPv4Address(base + n))
    assert len(rate_limiter) == MAX_TRACKED_ADDRESSES
    # `kept` fails again, so it is now the most recent; one more address evicts `first`.
    rate_limiter.record_failure(kept)
    rate_limiter.record_failure(ipaddress.IPv4Address(base + MAX_TRACKED_ADDRESSES))
    assert len(rate_limiter) == MAX_TRACKED_ADDRESSES
    assert rate_limiter.retry_after(first) == 0
    assert rate_limiter.retry_after(kept) > 0
