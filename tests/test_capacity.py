"""The capacity object on its own: totals, per-token shares, slots that come back exactly once (no sockets).

And the session store, which counts its sessions with one.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from mcp_auth.auth.tokens import Principal
from mcp_auth.capacity import DEFAULT_SHARE_DIVISOR, Capacity, CapacityExhausted, default_share, principal_key
from mcp_auth.refusals import ServiceUnavailable
from mcp_auth.sessions import SessionStore


@pytest.mark.parametrize(
    ("total", "share"),
    [
        pytest.param(1, 1, id="one-place"),
        pytest.param(2, 1, id="two-places-half-each"),
        pytest.param(4, 2, id="four-places"),
        pytest.param(5, 2, id="odd-total-rounds-down"),
        pytest.param(256, 128, id="the-defaults"),
    ],
)
def test_the_default_share_is_half_of_the_total_and_never_zero(total: int, share: int) -> None:
    assert DEFAULT_SHARE_DIVISOR == 2
    assert default_share(total) == share
    assert Capacity("things", total).share == share


@pytest.mark.parametrize(
    ("total", "share"),
    [
        pytest.param(0, None, id="no-places"),
        pytest.param(4, 0, id="zero-share"),
        pytest.param(4, 5, id="share-over-total"),
        pytest.param(-1, None, id="negative"),
    ],
)
def test_a_capacity_that_could_never_admit_anyone_is_refused(total: int, share: int | None) -> None:
    with pytest.raises(ValueError, match="things"):
        Capacity("things", total, share)


def test_one_key_is_refused_past_its_share_while_another_still_gets_in() -> None:
    capacity = Capacity("sockets", 4)
    mine = [capacity.acquire("a"), capacity.acquire("a")]
    with pytest.raises(CapacityExhausted) as refused:
        capacity.acquire("a")
    assert refused.value.share is True
    assert refused.value.limit == 2
    assert "at most 2 per token" in refused.value.message
    theirs = capacity.acquire("b")
    assert capacity.in_use() == 3 and capacity.in_use("a") == 2 and capacity.in_use("b") == 1
    for slot in [*mine, theirs]:
        slot.release()
    assert capacity.in_use() == 0


def test_past_the_total_everyone_is_refused_and_the_message_says_which_bound() -> None:
    capacity = Capacity("sockets", 4, retry_after=30)
    slots = [capacity.acquire(key) for key in ("a", "a", "b", "b")]
    with pytest.raises(CapacityExhausted) as refused:
        capacity.acquire("c")
    assert refused.value.share is False
    assert refused.value.limit == 4
    assert "at most 4 on this server" in refused.value.message
    slots[0].release()
    capacity.acquire("c").release()  # a freed place is there for the next comer


def test_a_scope_names_what_the_total_is_counted_over() -> None:
    capacity = Capacity("requests in flight", 1, 1, scope="on this socket")
    with capacity.acquire(None), pytest.raises(CapacityExhausted, match="at most 1 on this socket"):
        capacity.acquire(None)


def test_the_refusal_is_a_503_with_retry_after_and_a_json_body() -> None:
    capacity = Capacity("event streams", 1, retry_after=7)
    with capacity.acquire("a"):
        try:
            capacity.acquire("a")
        except CapacityExhausted as exc:
            refusal = exc
    assert isinstance(refusal, ServiceUnavailable)
    started: list[Any] = []
    body = b"".join(refusal({"REQUEST_METHOD": "GET"}, lambda status, headers: started.append((status, headers))))
    status, headers = started[0]
    assert status == "503 Service Unavailable"
    assert ("Retry-After", "7") in headers
    assert ("Content-Type", "application/json") in headers
    assert "event streams" in json.loads(body)["error"]["message"]


def test_release_is_idempotent_and_a_slot_is_a_context_manager() -> None:
    capacity = Capacity("things", 2, 2)
    slot = capacity.acquire("a")
    other = capacity.acquire("a")
    slot.release()
    slot.release()  # a second release must not give back someone else's place
    assert capacity.in_use("a") == 1 and slot.released
    other.release()
    with pytest.raises(RuntimeError, match="boom"), capacity.acquire("a"):
        raise RuntimeError("boom")
    assert capacity.in_use() == 0


def test_a_shared_slot_returns_only_when_every_handle_is_released() -> None:
    capacity = Capacity("calls", 2, 1)
    response = capacity.acquire("a")
    handler = response.share()
    response.release()
    response.release()  # the same handle twice still counts once
    assert capacity.in_use("a") == 1
    handler.release()
    assert capacity.in_use("a") == 0
    with pytest.raises(RuntimeError, match="released"):
        handler.share()


def test_duties_run_once_when_the_place_is_given_back_even_if_one_fails() -> None:
    capacity = Capacity("streams", 1)
    ran: list[str] = []

    def failing() -> None:
        ran.append("failing")
        raise RuntimeError("duty failed")

    slot = capacity.acquire("a")
    extra = slot.share()
    slot.also(lambda: ran.append("first"))
    slot.also(failing)
    slot.release()
    assert ran == []  # the other handle still holds the place
    with pytest.raises(RuntimeError, match="duty failed"):
        extra.release()
    extra.release()
    assert ran == ["first", "failing"]
    assert capacity.in_use() == 0  # the place came back although a duty raised
    with pytest.raises(RuntimeError, match="given back"):
        slot.also(lambda: None)  # a duty added too late would never run


def test_keys_are_forgotten_when_they_hold_nothing() -> None:
    capacity = Capacity("things", 10_000)
    for n in range(1000):
        capacity.acquire(f"key-{n}").release()
    assert capacity.in_use() == 0
    assert capacity._by_key == {}  # a stream of one-off keys does not grow memory


def test_principals_count_by_name_and_credential() -> None:
    old = Principal(name="ci", tool_patterns=None, credential_id="old-digest")
    rotated = Principal(name="ci", tool_patterns=None, credential_id="new-digest")
    assert principal_key(old) == ("ci", "old-digest")
    assert principal_key(old) != principal_key(rotated)


def test_concurrent_takers_never_exceed_the_total_or_a_share() -> None:
    """32 threads released together against 8 places, 4 keys with a share of 3 each."""
    capacity = Capacity("things", 8, 3)
    start = threading.Barrier(32)
    taken: list[Any] = []
    refused: list[CapacityExhausted] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        start.wait()
        try:
            slot = capacity.acquire(n % 4)
        except CapacityExhausted as exc:
            with lock:
                refused.append(exc)
        else:
            with lock:
                taken.append((n % 4, slot))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(taken) == 8 and len(refused) == 24
    assert all(capacity.in_use(key) <= 3 for key in range(4))
    assert capacity.in_use() == 8

    release = threading.Barrier(8)

    def give_back(slot: Any) -> None:
        release.wait()
        slot.release()
        slot.release()

    releasers = [threading.Thread(target=give_back, args=(slot,)) for _, slot in taken]
    for thread in releasers:
        thread.start()
    for thread in releasers:
        thread.join(timeout=30)
    assert capacity.in_use() == 0


# --- sessions take places from a capacity too ----------------------------------------------------


def test_sessions_past_the_total_are_refused_and_deleted_ones_give_their_place_back() -> None:
    store = SessionStore(max_sessions=4, max_per_principal=2)
    a, b, c = (Principal(name, None, name * 64) for name in "abc")
    held = [store.create(p) for p in (a, a, b, b)]
    assert all(s is not None for s in held)
    assert store.create(c) is None  # every place is held by others, none idle: refused
    first = held[0]
    assert first is not None and first.session_id is not None
    assert store.delete(first.session_id, a)
    assert store.create(c) is not None  # the deleted session's place came back
    store.close_all()
    assert len(store) == 0 and store._capacity.in_use() == 0


def test_a_principal_at_its_share_of_sessions_replaces_its_own_oldest() -> None:
    store = SessionStore(max_sessions=4, max_per_principal=2)
    a, b = Principal("a", None, "a" * 64), Principal("b", None, "b" * 64)
    first, second, third = (store.create(a) for _ in range(3))
    assert first is not None and second is not None and third is not None
    assert first.closed.is_set() and not second.closed.is_set()
    assert store.get(first.session_id or "", a) is None
    assert store._capacity.in_use(principal_key(a)) == 2
    assert store.create(b) is not None and store.create(b) is not None  # a left b its share
