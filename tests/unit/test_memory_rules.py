"""The exact rules of :class:`InMemoryMemory`, pinned with an injected clock (mutation-testing bar).

``test_memory_contract.py`` checks the behaviour every Memory shares; these tests pin the numbers:
where a lease's expiry lies to the microsecond, how ``renew`` scales its TTL, what a stale token may
do, how fences count. Plus the deprecated ``MemoryError`` alias.
"""

from __future__ import annotations

import time
import warnings

import pytest

import service.arvo.memory as memory_module
from service.arvo.memory import (
    InMemoryMemory,
    InstanceStatus,
    InstanceSummary,
    Lease,
    LeaseLostError,
    MemoryStoreError,
    StateReadError,
    split_instance_key,
)

KEY = "arvo.orc.rules:exec-1"
START = 1_000.0


class FakeClock:
    """Monotonic seconds that only move when told to (binary-exact steps keep the sums exact)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> InMemoryMemory:
    return InMemoryMemory(clock=clock)


async def take(memory: InMemoryMemory, key: str = KEY, ttl_ms: int = 1_000) -> Lease:
    grant = await memory.lease_and_read(key, ttl_ms=ttl_ms)
    assert grant.acquired
    assert grant.lease is not None
    return grant.lease


# --- lease expiry ----------------------------------------------------------------------------------


async def test_a_lease_is_held_until_just_before_its_expiry(memory: InMemoryMemory, clock: FakeClock) -> None:
    await take(memory, ttl_ms=500)
    clock.now = START + 0.25
    denied = await memory.lease_and_read(KEY, ttl_ms=500)
    assert denied.acquired is False
    assert denied.lease is None
    assert denied.record is None
    assert denied.holder_ttl_ms == 250


async def test_a_lease_has_expired_at_exactly_its_expiry_instant(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    first = await take(memory, ttl_ms=500)
    clock.now = START + 0.5  # expires_at == now: no longer held (``>``, not ``>=``)
    second = await take(memory, ttl_ms=500)
    assert second.fence == first.fence + 1
    assert second.token != first.token


async def test_commit_at_the_expiry_instant_is_refused(memory: InMemoryMemory, clock: FakeClock) -> None:
    lease = await take(memory, ttl_ms=500)
    clock.now = START + 0.5
    with pytest.raises(LeaseLostError, match=r"is no longer held; the commit was discarded"):
        await memory.commit_and_release(lease, {"late": True}, status=InstanceStatus.ACTIVE)
    assert await memory.inspect(KEY) is None


async def test_commit_just_before_expiry_succeeds(memory: InMemoryMemory, clock: FakeClock) -> None:
    lease = await take(memory, ttl_ms=500)
    clock.now = START + 0.4990234375  # one binary-exact step before expiry
    await memory.commit_and_release(lease, {"in_time": True}, status=InstanceStatus.ACTIVE)
    assert await memory.inspect(KEY) == {"in_time": True}


async def test_the_denied_holder_ttl_is_the_exact_remainder_in_milliseconds(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    await take(memory, ttl_ms=2_000)
    assert (await memory.lease_and_read(KEY, ttl_ms=10)).holder_ttl_ms == 2_000
    clock.now = START + 1.5
    assert (await memory.lease_and_read(KEY, ttl_ms=10)).holder_ttl_ms == 500


# --- renew ---------------------------------------------------------------------------------------


async def test_renew_sets_the_expiry_to_now_plus_the_ttl_in_seconds(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    lease = await take(memory, ttl_ms=500)
    clock.now = START + 0.25
    assert await memory.renew(lease, ttl_ms=2_000) is True
    # Expiry is START + 0.25 + 2.0: the holder's remainder is exactly the renewed TTL.
    assert (await memory.lease_and_read(KEY, ttl_ms=10)).holder_ttl_ms == 2_000
    clock.now = START + 2.0
    assert (await memory.lease_and_read(KEY, ttl_ms=10)).holder_ttl_ms == 250
    clock.now = START + 2.25
    successor = await take(memory, ttl_ms=10)
    assert successor.fence == lease.fence + 1


async def test_renew_can_shorten_a_lease(memory: InMemoryMemory, clock: FakeClock) -> None:
    lease = await take(memory, ttl_ms=60_000)
    assert await memory.renew(lease, ttl_ms=250) is True
    assert (await memory.lease_and_read(KEY, ttl_ms=10)).holder_ttl_ms == 250


async def test_renew_of_an_expired_lease_is_refused_and_changes_nothing(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    lease = await take(memory, ttl_ms=500)
    clock.now = START + 0.5
    assert await memory.renew(lease, ttl_ms=60_000) is False
    assert (await memory.lease_and_read(KEY, ttl_ms=500)).acquired is True


async def test_renew_with_a_stale_token_is_refused_and_keeps_the_holders_expiry(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    stale = await take(memory, ttl_ms=500)
    clock.now = START + 0.5
    await take(memory, ttl_ms=1_000)
    assert await memory.renew(stale, ttl_ms=60_000) is False
    assert (await memory.lease_and_read(KEY, ttl_ms=10)).holder_ttl_ms == 1_000


# --- stale tokens --------------------------------------------------------------------------------


async def test_release_with_a_stale_token_is_refused_and_keeps_the_holders_lease(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    stale = await take(memory, ttl_ms=500)
    clock.now = START + 0.5
    holder = await take(memory, ttl_ms=1_000)
    assert await memory.release(stale) is False
    assert (await memory.lease_and_read(KEY, ttl_ms=10)).holder_ttl_ms == 1_000
    await memory.commit_and_release(holder, {"holder": True}, status=InstanceStatus.ACTIVE)
    assert await memory.inspect(KEY) == {"holder": True}


async def test_commit_with_a_stale_token_writes_nothing_and_keeps_the_holders_lease(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    first = await take(memory, ttl_ms=500)
    await memory.commit_and_release(first, {"n": 1}, status=InstanceStatus.ACTIVE)
    stale = await take(memory, ttl_ms=500)
    clock.now = START + 0.5
    holder = await take(memory, ttl_ms=1_000)
    with pytest.raises(LeaseLostError) as caught:
        await memory.commit_and_release(stale, {"n": "zombie"}, status=InstanceStatus.FAILED)
    assert str(caught.value) == (
        f"lease on {KEY!r} (fence {stale.fence}) is no longer held; the commit was discarded"
    )
    assert await memory.inspect(KEY) == {"n": 1}
    assert [row.status for row in await memory.list_instances()] == [InstanceStatus.ACTIVE]
    assert (await memory.lease_and_read(KEY, ttl_ms=10)).holder_ttl_ms == 1_000
    assert await memory.release(holder) is True


async def test_release_and_commit_of_an_unknown_key_are_refused(memory: InMemoryMemory) -> None:
    ghost = Lease(key="arvo.orc.rules:ghost", token="nobody", fence=1)
    assert await memory.release(ghost) is False
    assert await memory.renew(ghost, ttl_ms=1_000) is False
    with pytest.raises(LeaseLostError):
        await memory.commit_and_release(ghost, {}, status=InstanceStatus.ACTIVE)


async def test_release_frees_the_lease_at_once(memory: InMemoryMemory) -> None:
    lease = await take(memory, ttl_ms=60_000)
    assert await memory.release(lease) is True
    assert await memory.release(lease) is False
    assert (await take(memory)).fence == lease.fence + 1


async def test_commit_frees_the_lease_at_once_and_a_lease_cannot_commit_twice(memory: InMemoryMemory) -> None:
    lease = await take(memory, ttl_ms=60_000)
    await memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.DONE)
    with pytest.raises(LeaseLostError):
        await memory.commit_and_release(lease, {"n": 2}, status=InstanceStatus.DONE)
    grant = await memory.lease_and_read(KEY, ttl_ms=60_000)
    assert grant.acquired is True
    assert grant.record == {"n": 1}


# --- fences and tokens ---------------------------------------------------------------------------


async def test_fences_count_up_by_one_per_grant_and_not_per_denial(memory: InMemoryMemory) -> None:
    first = await take(memory)
    assert first.fence == 1
    assert (await memory.lease_and_read(KEY, ttl_ms=1_000)).acquired is False
    await memory.release(first)
    second = await take(memory)
    assert second.fence == 2
    await memory.commit_and_release(second, {}, status=InstanceStatus.ACTIVE)
    assert (await take(memory)).fence == 3


async def test_fences_are_per_instance(memory: InMemoryMemory) -> None:
    assert (await take(memory, "arvo.orc.rules:a")).fence == 1
    assert (await take(memory, "arvo.orc.rules:b")).fence == 1


async def test_force_lock_takes_a_fence_and_blocks_for_its_ttl(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    memory.force_lock(KEY, ttl_ms=250)
    denied = await memory.lease_and_read(KEY, ttl_ms=1_000)
    assert denied.acquired is False
    assert denied.holder_ttl_ms == 250
    clock.now = START + 0.25
    assert (await take(memory)).fence == 2


async def test_force_lock_counts_on_from_the_current_fence(memory: InMemoryMemory, clock: FakeClock) -> None:
    await memory.release(await take(memory))  # fence 1
    memory.force_lock(KEY, ttl_ms=250)  # fence 2
    clock.now = START + 0.25
    assert (await take(memory)).fence == 3


async def test_tokens_differ_between_memories() -> None:
    first = await take(InMemoryMemory())
    second = await take(InMemoryMemory())
    assert first.token != second.token


async def test_every_grant_has_a_fresh_token(memory: InMemoryMemory) -> None:
    tokens = set()
    for _ in range(5):
        lease = await take(memory)
        tokens.add(lease.token)
        await memory.release(lease)
    assert len(tokens) == 5


async def test_lease_and_read_rejects_a_malformed_key(memory: InMemoryMemory) -> None:
    with pytest.raises(ValueError, match="instance key is not"):
        await memory.lease_and_read("no-separator", ttl_ms=1_000)


@pytest.mark.parametrize("key", ["no-separator", ":id", "name:", ""])
def test_split_instance_key_rejects_malformed_keys(key: str) -> None:
    with pytest.raises(ValueError, match="instance key is not '<orchestrator>:<execution id>'"):
        split_instance_key(key)


def test_split_instance_key_splits_at_the_first_colon() -> None:
    assert split_instance_key("arvo.orc.x:a:b") == ("arvo.orc.x", "a:b")


# --- records, statuses, listing ------------------------------------------------------------------


async def test_records_are_fresh_copies(memory: InMemoryMemory) -> None:
    lease = await take(memory)
    await memory.commit_and_release(lease, {"nested": {"n": 1}}, status=InstanceStatus.ACTIVE)
    copy = await memory.inspect(KEY)
    assert copy is not None
    copy["nested"]["n"] = 2
    grant = await memory.lease_and_read(KEY, ttl_ms=1_000)
    assert grant.record == {"nested": {"n": 1}}
    assert grant.record is not None
    grant.record["nested"]["n"] = 3
    assert await memory.inspect(KEY) == {"nested": {"n": 1}}


@pytest.mark.parametrize(
    ("status", "field"),
    [(InstanceStatus.PARKED, "parkedReason"), (InstanceStatus.FAILED, "statusReason")],
)
async def test_set_status_stores_the_reason_under_its_field(
    memory: InMemoryMemory, status: InstanceStatus, field: str
) -> None:
    lease = await take(memory)
    await memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.ACTIVE)
    await memory.set_status(KEY, status, reason="because")
    assert await memory.inspect(KEY) == {"n": 1, field: "because"}
    assert [(row.key, row.status) for row in await memory.list_instances()] == [(KEY, status)]


async def test_set_status_stamps_the_update_time_in_milliseconds(
    memory: InMemoryMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_234.5)
    await memory.set_status(KEY, InstanceStatus.PARKED)
    monkeypatch.undo()
    assert [row.updated_at_ms for row in await memory.list_instances()] == [1_234_500]


async def test_list_instances_returns_at_most_1000_by_default(memory: InMemoryMemory) -> None:
    for number in range(1_001):
        await memory.set_status(f"arvo.orc.many:{number}", InstanceStatus.ACTIVE)
    assert len(await memory.list_instances()) == 1_000


async def test_set_status_without_a_reason_or_record_writes_no_record(memory: InMemoryMemory) -> None:
    await memory.set_status(KEY, InstanceStatus.PARKED, reason="no record yet")
    assert await memory.inspect(KEY) is None
    lease = await take(memory)
    await memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.ACTIVE)
    await memory.set_status(KEY, InstanceStatus.PARKED)
    assert await memory.inspect(KEY) == {"n": 1}


async def test_list_instances_filters_orders_and_limits(
    memory: InMemoryMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    now_ms = iter([1_000.0, 2_000.0, 3_000.0, 4_000.0])
    monkeypatch.setattr(time, "time", lambda: next(now_ms))
    for key, status in [
        ("arvo.orc.a:1", InstanceStatus.ACTIVE),
        ("arvo.orc.b:1", InstanceStatus.DONE),
        ("arvo.orc.a:2", InstanceStatus.DONE),
    ]:
        await memory.commit_and_release(await take(memory, key), {}, status=status)
    await take(memory, "arvo.orc.a:leased-only")  # no status yet: not listed
    monkeypatch.undo()

    assert await memory.list_instances() == [
        InstanceSummary("arvo.orc.a:2", "arvo.orc.a", "2", InstanceStatus.DONE, 3_000_000),
        InstanceSummary("arvo.orc.b:1", "arvo.orc.b", "1", InstanceStatus.DONE, 2_000_000),
        InstanceSummary("arvo.orc.a:1", "arvo.orc.a", "1", InstanceStatus.ACTIVE, 1_000_000),
    ]
    assert [row.key for row in await memory.list_instances(orchestrator="arvo.orc.a")] == [
        "arvo.orc.a:2",
        "arvo.orc.a:1",
    ]
    assert [row.key for row in await memory.list_instances(status=InstanceStatus.DONE)] == [
        "arvo.orc.a:2",
        "arvo.orc.b:1",
    ]
    assert [
        row.key for row in await memory.list_instances(orchestrator="arvo.orc.a", status=InstanceStatus.DONE)
    ] == ["arvo.orc.a:2"]
    assert [row.key for row in await memory.list_instances(limit=1)] == ["arvo.orc.a:2"]


async def test_clear_forgets_records_and_leases(memory: InMemoryMemory) -> None:
    lease = await take(memory)
    await memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.ACTIVE)
    await take(memory)
    memory.clear()
    assert await memory.inspect(KEY) is None
    assert await memory.list_instances() == []
    assert (await take(memory)).fence == 1


async def test_ping_and_close(memory: InMemoryMemory) -> None:
    assert await memory.ping() is True
    await memory.close()


# --- the deprecated MemoryError alias --------------------------------------------------------------


def test_the_error_hierarchy_hangs_off_memory_store_error() -> None:
    assert issubclass(StateReadError, MemoryStoreError)
    assert issubclass(LeaseLostError, MemoryStoreError)
    assert not issubclass(MemoryStoreError, MemoryError)  # the builtin is no longer shadowed


def test_the_old_memory_error_name_still_works_and_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_module, "_warned_aliases", set())
    with pytest.warns(
        DeprecationWarning, match=r"service\.arvo\.memory\.MemoryError is deprecated; use"
    ) as caught:
        from service.arvo.memory import MemoryError as OldName
    assert caught[0].filename == __file__  # attributed to the importer, not to memory.py
    assert OldName is MemoryStoreError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert memory_module.MemoryError is MemoryStoreError  # second use: no warning
    assert "MemoryError" not in memory_module.__all__


def test_unknown_module_attributes_still_raise() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        _ = memory_module.NoSuchThing
