"""The store ports' contracts: the same assertions against both implementations of each.

``Memory`` (InMemoryMemory, RedisMemory) and ``EmissionOutbox`` (InMemoryOutbox, RedisOutbox).

Every test takes the ``harness`` fixture, parametrised over both implementations; the Redis cases
carry the ``integration`` marker (deselect with ``-m "not integration"``) and use the shared Redis
with a unique key prefix. Lease expiry is driven by the injected clock for InMemoryMemory and by
real time (short TTLs) for Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from service.arvo.errors import TransactionViolation
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.memory import (
    InMemoryMemory,
    InstanceStatus,
    Lease,
    LeaseLostError,
    Memory,
)
from service.runtime.outbox import EmissionOutbox, InMemoryOutbox
from service.runtime.redis_memory import RedisMemory
from service.runtime.redis_outbox import RedisOutbox
from tests.integration._redis import delete_keys_with_prefix, require_shared_redis, unique_prefix

SHORT_TTL_MS = 100  # long enough that a loaded machine still renews/commits before it runs out
LONG_TTL_MS = 30_000


class FakeClock:
    """Monotonic seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    memory: Memory
    clock: FakeClock | None

    @property
    def is_redis(self) -> bool:
        return isinstance(self.memory, RedisMemory)

    async def pass_time(self, ms: float) -> None:
        """Let ``ms`` pass for lease TTLs (fake clock, or real time for Redis)."""
        if self.clock is not None:
            self.clock.advance(ms / 1000)
        else:
            await asyncio.sleep(ms / 1000)

    async def expire(self, lease: Lease, ttl_ms: int = SHORT_TTL_MS) -> None:
        """Wait until ``lease`` (granted with ``ttl_ms``) has expired."""
        await self.pass_time(ttl_ms + 5)
        if isinstance(self.memory, RedisMemory):
            lock = self.memory.instance_keys(lease.key).lock
            for _ in range(200):
                if not await self.memory.client.exists(lock):
                    return
                await asyncio.sleep(0.005)
            pytest.fail(f"lock {lock} did not expire")

    async def lease(self, key: str, ttl_ms: int = LONG_TTL_MS) -> Lease:
        grant = await self.memory.lease_and_read(key, ttl_ms=ttl_ms)
        assert grant.acquired, f"lease on {key} unexpectedly denied"
        assert grant.lease is not None
        return grant.lease

    async def commit(
        self, key: str, record: dict[str, Any], status: InstanceStatus = InstanceStatus.ACTIVE
    ) -> None:
        lease = await self.lease(key)
        await self.memory.commit_and_release(lease, record, status=status)


async def next_millisecond() -> None:
    """Make sure the next write gets a later wall-clock millisecond (update-time ordering)."""
    start = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 <= start:
        await asyncio.sleep(0.001)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(params=["in_memory", pytest.param("redis", marks=pytest.mark.integration)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "in_memory":
        clock = FakeClock()
        yield Harness(memory=InMemoryMemory(clock=clock), clock=clock)
        return
    url = require_shared_redis()
    prefix = unique_prefix()
    memory = RedisMemory.from_url(url, key_prefix=prefix)
    try:
        yield Harness(memory=memory, clock=None)
    finally:
        await delete_keys_with_prefix(memory.client, prefix)  # type: ignore[arg-type]
        await memory.close()


KEY = "orc.checkout:exec-1"


# --- leases ------------------------------------------------------------------------------------


async def test_first_lease_is_granted_without_a_record(harness: Harness) -> None:
    grant = await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)
    assert grant.acquired
    assert grant.lease is not None
    assert grant.lease.key == KEY
    assert grant.lease.token
    assert grant.lease.fence >= 1
    assert grant.record is None
    assert grant.holder_ttl_ms is None


async def test_lease_is_denied_while_held_and_reports_holder_ttl(harness: Harness) -> None:
    await harness.lease(KEY, ttl_ms=LONG_TTL_MS)
    denied = await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)
    assert not denied.acquired
    assert denied.lease is None
    assert denied.record is None
    assert denied.holder_ttl_ms is not None
    assert 0 < denied.holder_ttl_ms <= LONG_TTL_MS


async def test_leases_on_different_instances_are_independent(harness: Harness) -> None:
    await harness.lease(KEY)
    other = await harness.memory.lease_and_read("orc.checkout:exec-2", ttl_ms=LONG_TTL_MS)
    assert other.acquired


async def test_lease_is_granted_again_after_expiry(harness: Harness) -> None:
    first = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    await harness.expire(first)
    second = await harness.lease(KEY)
    assert second.token != first.token


async def test_fence_strictly_increases_with_every_granted_lease(harness: Harness) -> None:
    fences = []
    lease = await harness.lease(KEY)
    fences.append(lease.fence)
    assert await harness.memory.release(lease)
    lease = await harness.lease(KEY)
    fences.append(lease.fence)
    await harness.memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.ACTIVE)
    lease = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    fences.append(lease.fence)
    await harness.expire(lease)
    denied_then_granted = await harness.lease(KEY)
    fences.append(denied_then_granted.fence)
    assert fences == sorted(set(fences)), fences


async def test_denied_lease_does_not_advance_the_fence(harness: Harness) -> None:
    lease = await harness.lease(KEY)
    for _ in range(3):
        assert not (await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)).acquired
    await harness.memory.release(lease)
    assert (await harness.lease(KEY)).fence == lease.fence + 1


async def test_lease_rejects_a_key_without_orchestrator_and_execution_id(harness: Harness) -> None:
    with pytest.raises(ValueError, match="instance key"):
        await harness.memory.lease_and_read("no-separator", ttl_ms=LONG_TTL_MS)


# --- commit ------------------------------------------------------------------------------------


async def test_commit_with_a_valid_lease_writes_the_record_and_releases(harness: Harness) -> None:
    lease = await harness.lease(KEY)
    await harness.memory.commit_and_release(
        lease, {"schemaVersion": 1, "step": 1}, status=InstanceStatus.ACTIVE
    )
    assert await harness.memory.inspect(KEY) == {"schemaVersion": 1, "step": 1}
    again = await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)
    assert again.acquired, "commit must release the lease"
    assert again.record == {"schemaVersion": 1, "step": 1}


async def test_commit_after_expiry_raises_lease_lost_and_writes_nothing(harness: Harness) -> None:
    await harness.commit(KEY, {"step": 1})
    lease = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    await harness.expire(lease)
    with pytest.raises(LeaseLostError, match=KEY):
        await harness.memory.commit_and_release(lease, {"step": 2}, status=InstanceStatus.DONE)
    assert await harness.memory.inspect(KEY) == {"step": 1}
    assert [row.status for row in await harness.memory.list_instances()] == [InstanceStatus.ACTIVE]


async def test_zombie_commit_after_takeover_is_rejected_and_the_new_record_stands(harness: Harness) -> None:
    zombie = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    await harness.expire(zombie)
    successor = await harness.lease(KEY)
    assert successor.fence > zombie.fence
    await harness.memory.commit_and_release(successor, {"writer": "B"}, status=InstanceStatus.DONE)
    with pytest.raises(LeaseLostError):
        await harness.memory.commit_and_release(zombie, {"writer": "A"}, status=InstanceStatus.ACTIVE)
    assert await harness.memory.inspect(KEY) == {"writer": "B"}
    rows = await harness.memory.list_instances()
    assert [(row.key, row.status) for row in rows] == [(KEY, InstanceStatus.DONE)]


async def test_zombie_commit_while_the_successor_still_holds_is_rejected(harness: Harness) -> None:
    zombie = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    await harness.expire(zombie)
    successor = await harness.lease(KEY)
    with pytest.raises(LeaseLostError):
        await harness.memory.commit_and_release(zombie, {"writer": "A"}, status=InstanceStatus.ACTIVE)
    assert await harness.memory.inspect(KEY) is None
    await harness.memory.commit_and_release(successor, {"writer": "B"}, status=InstanceStatus.ACTIVE)
    assert await harness.memory.inspect(KEY) == {"writer": "B"}


async def test_zombie_commit_after_successor_released_without_writing_is_rejected(harness: Harness) -> None:
    await harness.commit(KEY, {"writer": "origin"})
    zombie = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    await harness.expire(zombie)
    successor = await harness.lease(KEY)
    assert await harness.memory.release(successor)
    with pytest.raises(LeaseLostError):
        await harness.memory.commit_and_release(zombie, {"writer": "A"}, status=InstanceStatus.DONE)
    assert await harness.memory.inspect(KEY) == {"writer": "origin"}
    later = await harness.lease(KEY)
    assert later.fence > successor.fence


async def test_second_commit_with_the_same_lease_is_rejected(harness: Harness) -> None:
    lease = await harness.lease(KEY)
    await harness.memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.ACTIVE)
    with pytest.raises(LeaseLostError):
        await harness.memory.commit_and_release(lease, {"n": 2}, status=InstanceStatus.ACTIVE)
    assert await harness.memory.inspect(KEY) == {"n": 1}


async def test_commit_preserves_json_values_exactly(harness: Harness) -> None:
    record = {
        "schemaVersion": 1,
        "empty_list": [],
        "empty_object": {},
        "nested": {"list": [1, 2.5, "x", None, True, False, {"deep": []}]},
        "big": 9_007_199_254_740_993,
        "negative": -12,
        "float": 0.1,
        "text": 'ünïcødé ✓ "quoted" \n newline',
        "zero": 0,
    }
    await harness.commit(KEY, record)
    assert await harness.memory.inspect(KEY) == record
    grant = await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)
    assert grant.record == record


# --- release and renew -------------------------------------------------------------------------


async def test_release_only_by_the_holder_token(harness: Harness) -> None:
    lease = await harness.lease(KEY)
    forged = Lease(key=KEY, token="not-the-token", fence=lease.fence)
    assert not await harness.memory.release(forged)
    assert not (await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)).acquired
    with pytest.raises(LeaseLostError):
        await harness.memory.commit_and_release(forged, {"forged": True}, status=InstanceStatus.ACTIVE)
    assert await harness.memory.release(lease)
    assert not await harness.memory.release(lease), "a second release finds nothing to release"
    assert (await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)).acquired
    assert await harness.memory.inspect(KEY) is None


async def test_release_after_expiry_and_takeover_does_not_free_the_successor(harness: Harness) -> None:
    zombie = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    await harness.expire(zombie)
    await harness.lease(KEY)
    assert not await harness.memory.release(zombie)
    assert not (await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)).acquired


async def test_renew_extends_the_lease_beyond_its_first_ttl(harness: Harness) -> None:
    lease = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    assert await harness.memory.renew(lease, ttl_ms=LONG_TTL_MS)
    await harness.pass_time(SHORT_TTL_MS * 2)
    denied = await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)
    assert not denied.acquired
    assert denied.holder_ttl_ms is not None
    assert denied.holder_ttl_ms > SHORT_TTL_MS
    await harness.memory.commit_and_release(lease, {"renewed": True}, status=InstanceStatus.ACTIVE)
    assert await harness.memory.inspect(KEY) == {"renewed": True}


async def test_renew_fails_after_the_lease_was_lost(harness: Harness) -> None:
    lease = await harness.lease(KEY, ttl_ms=SHORT_TTL_MS)
    await harness.expire(lease)
    assert not await harness.memory.renew(lease, ttl_ms=LONG_TTL_MS)
    successor = await harness.lease(KEY)
    assert not await harness.memory.renew(lease, ttl_ms=LONG_TTL_MS)
    assert await harness.memory.renew(successor, ttl_ms=LONG_TTL_MS)


async def test_renew_fails_after_release(harness: Harness) -> None:
    lease = await harness.lease(KEY)
    assert await harness.memory.release(lease)
    assert not await harness.memory.renew(lease, ttl_ms=LONG_TTL_MS)
    assert (await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)).acquired


# --- inspect -----------------------------------------------------------------------------------


async def test_inspect_of_an_unknown_instance_is_none(harness: Harness) -> None:
    assert await harness.memory.inspect("orc.checkout:missing") is None


async def test_inspect_returns_a_copy(harness: Harness) -> None:
    record: dict[str, Any] = {"nested": {"list": [1]}, "flag": False}
    lease = await harness.lease(KEY)
    await harness.memory.commit_and_release(lease, record, status=InstanceStatus.ACTIVE)
    record["nested"]["list"].append("mutated after commit")
    seen = await harness.memory.inspect(KEY)
    assert seen == {"nested": {"list": [1]}, "flag": False}
    assert seen is not None
    seen["nested"]["list"].append(2)
    seen["flag"] = True
    assert await harness.memory.inspect(KEY) == {"nested": {"list": [1]}, "flag": False}


async def test_leased_record_is_a_copy(harness: Harness) -> None:
    await harness.commit(KEY, {"items": [1]})
    grant = await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)
    assert grant.record is not None
    grant.record["items"].append(2)
    assert await harness.memory.inspect(KEY) == {"items": [1]}


async def test_inspect_does_not_take_the_lease(harness: Harness) -> None:
    await harness.commit(KEY, {"n": 1})
    await harness.memory.inspect(KEY)
    assert (await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)).acquired


# --- listing and status ------------------------------------------------------------------------


async def _populate(harness: Harness) -> None:
    """o1:a active, o1:b done, o2:c active, o1:d active — written in that order."""
    for key, status in [
        ("o1:a", InstanceStatus.ACTIVE),
        ("o1:b", InstanceStatus.DONE),
        ("o2:c", InstanceStatus.ACTIVE),
        ("o1:d", InstanceStatus.ACTIVE),
    ]:
        await harness.commit(key, {"key": key}, status)
        await next_millisecond()


async def test_list_instances_most_recently_updated_first(harness: Harness) -> None:
    await _populate(harness)
    rows = await harness.memory.list_instances()
    assert [row.key for row in rows] == ["o1:d", "o2:c", "o1:b", "o1:a"]
    assert [row.updated_at_ms for row in rows] == sorted((row.updated_at_ms for row in rows), reverse=True)
    first = rows[0]
    assert (first.orchestrator, first.execution_id, first.status) == ("o1", "d", InstanceStatus.ACTIVE)
    assert abs(first.updated_at_ms - time.time() * 1000) < 60_000


async def test_list_instances_by_orchestrator_and_status(harness: Harness) -> None:
    await _populate(harness)
    memory = harness.memory
    assert [r.key for r in await memory.list_instances(orchestrator="o1")] == ["o1:d", "o1:b", "o1:a"]
    assert [r.key for r in await memory.list_instances(status=InstanceStatus.ACTIVE)] == [
        "o1:d",
        "o2:c",
        "o1:a",
    ]
    assert [r.key for r in await memory.list_instances(orchestrator="o1", status=InstanceStatus.ACTIVE)] == [
        "o1:d",
        "o1:a",
    ]
    assert [r.key for r in await memory.list_instances(status=InstanceStatus.DONE)] == ["o1:b"]
    assert await memory.list_instances(status=InstanceStatus.PARKED) == []
    assert await memory.list_instances(orchestrator="unknown") == []


async def test_list_instances_limit(harness: Harness) -> None:
    await _populate(harness)
    assert [r.key for r in await harness.memory.list_instances(limit=2)] == ["o1:d", "o2:c"]
    assert [r.key for r in await harness.memory.list_instances(orchestrator="o1", limit=1)] == ["o1:d"]
    assert await harness.memory.list_instances(limit=0) == []


async def test_leased_but_never_committed_instance_is_not_listed(harness: Harness) -> None:
    await harness.lease(KEY)
    assert await harness.memory.list_instances() == []


async def test_commit_moves_the_instance_between_status_indexes(harness: Harness) -> None:
    await harness.commit(KEY, {"step": 1}, InstanceStatus.ACTIVE)
    await harness.commit(KEY, {"step": 2}, InstanceStatus.DONE)
    assert await harness.memory.list_instances(status=InstanceStatus.ACTIVE) == []
    rows = await harness.memory.list_instances()
    assert [(r.key, r.status) for r in rows] == [(KEY, InstanceStatus.DONE)]


async def test_set_status_moves_between_indexes_and_records_the_reason(harness: Harness) -> None:
    await harness.commit(KEY, {"step": 1}, InstanceStatus.ACTIVE)
    await harness.memory.set_status(KEY, InstanceStatus.PARKED, reason="poison message")
    assert await harness.memory.list_instances(status=InstanceStatus.ACTIVE) == []
    assert [r.key for r in await harness.memory.list_instances(status=InstanceStatus.PARKED)] == [KEY]
    assert await harness.memory.inspect(KEY) == {"step": 1, "parkedReason": "poison message"}

    await harness.memory.set_status(KEY, InstanceStatus.FAILED, reason="operator gave up")
    assert await harness.memory.list_instances(status=InstanceStatus.PARKED) == []
    assert [r.status for r in await harness.memory.list_instances()] == [InstanceStatus.FAILED]
    assert await harness.memory.inspect(KEY) == {
        "step": 1,
        "parkedReason": "poison message",
        "statusReason": "operator gave up",
    }

    await harness.memory.set_status(KEY, InstanceStatus.ACTIVE)
    assert [r.status for r in await harness.memory.list_instances()] == [InstanceStatus.ACTIVE]
    assert (await harness.memory.inspect(KEY) or {}).get("statusReason") == "operator gave up"


async def test_set_status_refreshes_the_update_time(harness: Harness) -> None:
    await _populate(harness)
    await harness.memory.set_status("o1:a", InstanceStatus.PARKED)
    rows = await harness.memory.list_instances()
    assert (rows[0].key, rows[0].status) == ("o1:a", InstanceStatus.PARKED)


async def test_set_status_without_a_record_lists_the_instance(harness: Harness) -> None:
    await harness.memory.set_status(KEY, InstanceStatus.PARKED, reason="never started")
    assert [(r.key, r.status) for r in await harness.memory.list_instances()] == [
        (KEY, InstanceStatus.PARKED)
    ]
    assert await harness.memory.inspect(KEY) is None


async def test_set_status_does_not_touch_the_lease(harness: Harness) -> None:
    lease = await harness.lease(KEY)
    await harness.memory.set_status(KEY, InstanceStatus.PARKED)
    assert not (await harness.memory.lease_and_read(KEY, ttl_ms=LONG_TTL_MS)).acquired
    await harness.memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.ACTIVE)
    assert [r.status for r in await harness.memory.list_instances()] == [InstanceStatus.ACTIVE]


# --- readiness and lifecycle (the health server's check) ----------------------------------------


async def test_a_reachable_store_answers_ping(harness: Harness) -> None:
    assert await harness.memory.ping() is True


async def test_ping_of_an_unreachable_redis_is_false_and_does_not_raise() -> None:
    memory = RedisMemory.from_url(f"redis://127.0.0.1:{_closed_port()}", key_prefix=unique_prefix())
    try:
        assert await memory.ping() is False
    finally:
        await memory.close()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the stateless outbox port ------------------------------------------------------------------


@dataclass
class OutboxHarness:
    outbox: EmissionOutbox
    clock: FakeClock | None
    redis: RedisMemory | None


@pytest.fixture(params=["in_memory", pytest.param("redis", marks=pytest.mark.integration)])
async def outbox_harness(request: pytest.FixtureRequest) -> AsyncIterator[OutboxHarness]:
    if request.param == "in_memory":
        clock = FakeClock()
        yield OutboxHarness(outbox=InMemoryOutbox(ttl_s=OUTBOX_TTL_S, clock=clock), clock=clock, redis=None)
        return
    url = require_shared_redis()
    prefix = unique_prefix()
    memory = RedisMemory.from_url(url, key_prefix=prefix)
    outbox = RedisOutbox(
        client=memory.client, key_prefix=prefix, ttl_s=OUTBOX_TTL_S, hot_client=memory.hot_client
    )
    try:
        yield OutboxHarness(outbox=outbox, clock=None, redis=memory)
    finally:
        await delete_keys_with_prefix(memory.client, prefix)  # type: ignore[arg-type]
        await memory.close()


OUTBOX_TTL_S = 60


def _consumed(event_id: str = "consumed-1", *, domain: str | None = None) -> ArvoEvent:
    return create_arvo_event(
        id=event_id,
        source="com.test.requester",
        type="com.test.add",
        subject="subject-1",
        data={"a": 1},
        domain=domain,
    )


def _emitted(value: int) -> list[ArvoEvent]:
    return [
        create_arvo_event(
            id=f"emitted-{value}",
            source="com.test.add",
            type="evt.test.add.success",
            subject="subject-1",
            data={"value": value},
        )
    ]


async def test_outbox_first_settle_stores_and_later_ones_get_the_first_emissions(
    outbox_harness: OutboxHarness,
) -> None:
    outbox = outbox_harness.outbox
    first = _emitted(1)
    assert await outbox.settle("com.test.add", _consumed(), first) is None
    again = await outbox.settle("com.test.add", _consumed(), _emitted(2))
    assert again is not None
    assert [event.to_dict() for event in again] == [event.to_dict() for event in first]


async def test_outbox_entries_are_per_handler_event_and_domain(outbox_harness: OutboxHarness) -> None:
    outbox = outbox_harness.outbox
    assert await outbox.settle("com.test.add", _consumed("a"), _emitted(1)) is None
    assert await outbox.settle("com.test.add", _consumed("b"), _emitted(2)) is None
    assert await outbox.settle("com.test.other", _consumed("a"), _emitted(3)) is None
    assert await outbox.settle("com.test.add", _consumed("a", domain="audit"), _emitted(4)) is None
    stored = await outbox.settle("com.test.add", _consumed("b"), _emitted(5))
    assert stored is not None
    assert stored[0].data == {"value": 2}


async def test_outbox_entries_expire_after_the_ttl(outbox_harness: OutboxHarness) -> None:
    outbox = outbox_harness.outbox
    assert await outbox.settle("com.test.add", _consumed(), _emitted(1)) is None
    if outbox_harness.clock is not None:
        outbox_harness.clock.advance(OUTBOX_TTL_S - 0.001)
        assert await outbox.settle("com.test.add", _consumed(), _emitted(2)) is not None
        outbox_harness.clock.advance(0.002)
        assert await outbox.settle("com.test.add", _consumed(), _emitted(3)) is None
        return
    assert isinstance(outbox, RedisOutbox)
    assert outbox_harness.redis is not None
    ttl = await outbox_harness.redis.client.ttl(outbox.key("com.test.add", _consumed()))
    assert 0 < ttl <= OUTBOX_TTL_S


async def test_an_unreachable_redis_outbox_raises_a_transaction_violation() -> None:
    memory = RedisMemory.from_url(f"redis://127.0.0.1:{_closed_port()}", key_prefix=unique_prefix())
    outbox = RedisOutbox(client=memory.client, key_prefix="arvotest", ttl_s=OUTBOX_TTL_S)
    try:
        with pytest.raises(TransactionViolation):
            await outbox.settle("com.test.add", _consumed(), _emitted(1))
    finally:
        await memory.close()


def test_the_in_memory_outbox_rejects_a_non_positive_ttl() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        InMemoryOutbox(ttl_s=0)


# --- retention of finished instances (instance_retention_s) --------------------------------------

RETENTION_S = 1
RETENTION_MS = RETENTION_S * 1000
FINISHED = [InstanceStatus.DONE, InstanceStatus.FAILED]
LIVE = [InstanceStatus.ACTIVE, InstanceStatus.PARKED]


@pytest.fixture(params=["in_memory", pytest.param("redis", marks=pytest.mark.integration)])
async def retained(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """Like ``harness``, with a retention of ``RETENTION_S`` (real time for Redis)."""
    if request.param == "in_memory":
        clock = FakeClock()
        yield Harness(memory=InMemoryMemory(clock=clock, instance_retention_s=RETENTION_S), clock=clock)
        return
    url = require_shared_redis()
    prefix = unique_prefix()
    memory = RedisMemory.from_url(url, key_prefix=prefix, instance_retention_s=RETENTION_S)
    try:
        yield Harness(memory=memory, clock=None)
    finally:
        await delete_keys_with_prefix(memory.client, prefix)  # type: ignore[arg-type]
        await memory.close()


async def key_ttls(harness: Harness, key: str) -> dict[str, int] | None:
    """``PTTL`` (ms; -1 none, -2 absent) of state, fence, wfence and lock of ``key``; None in memory."""
    if not isinstance(harness.memory, RedisMemory):
        return None
    keys = harness.memory.instance_keys(key)
    client = harness.memory.client
    return {
        "state": await client.pttl(keys.state),
        "fence": await client.pttl(keys.fence),
        "wfence": await client.pttl(keys.wfence),
        "lock": await client.pttl(keys.lock),
    }


async def assert_expiring_together(harness: Harness, key: str) -> None:
    """Every key of ``key`` carries the retention TTL, the same one (set by one script)."""
    ttls = await key_ttls(harness, key)
    if ttls is None:
        return
    assert ttls["lock"] == -2, ttls
    kept = [ttls["state"], ttls["fence"], ttls["wfence"]]
    assert all(RETENTION_MS - 500 < ttl <= RETENTION_MS for ttl in kept), ttls
    assert isinstance(harness.memory, RedisMemory)
    keys = harness.memory.instance_keys(key)
    client = harness.memory.client
    expiry = {name: await client.pexpiretime(name) for name in (keys.state, keys.fence, keys.wfence)}
    assert len(set(expiry.values())) == 1, f"not one expiry time (PEXPIRETIME): {expiry}"


async def assert_kept_forever(harness: Harness, key: str) -> None:
    ttls = await key_ttls(harness, key)
    if ttls is None:
        return
    assert (ttls["state"], ttls["fence"], ttls["wfence"]) == (-1, -1, -1), ttls


async def pass_retention(harness: Harness) -> None:
    await harness.pass_time(RETENTION_MS + 60)


@pytest.mark.parametrize("status", FINISHED)
async def test_a_finished_instance_expires_with_all_its_keys_after_the_retention(
    retained: Harness, status: InstanceStatus
) -> None:
    await retained.commit(KEY, {"step": 1}, InstanceStatus.ACTIVE)
    await retained.commit(KEY, {"step": 2}, status)
    await assert_expiring_together(retained, KEY)
    await retained.pass_time(RETENTION_MS / 2)
    assert await retained.memory.inspect(KEY) == {"step": 2}
    assert [r.status for r in await retained.memory.list_instances()] == [status]

    await pass_retention(retained)
    assert await retained.memory.inspect(KEY) is None
    assert await retained.memory.list_instances() == []
    ttls = await key_ttls(retained, KEY)
    assert ttls is None or set(ttls.values()) == {-2}, ttls


@pytest.mark.parametrize("status", LIVE)
async def test_a_live_instance_never_expires(retained: Harness, status: InstanceStatus) -> None:
    await retained.commit(KEY, {"step": 1}, status)
    await assert_kept_forever(retained, KEY)
    await pass_retention(retained)
    assert await retained.memory.inspect(KEY) == {"step": 1}
    assert [r.status for r in await retained.memory.list_instances()] == [status]


@pytest.mark.parametrize("how", ["commit", "set_status active", "set_status parked"])
async def test_moving_a_finished_instance_back_to_a_live_status_keeps_it_forever(
    retained: Harness, how: str
) -> None:
    await retained.commit(KEY, {"step": 1}, InstanceStatus.DONE)
    await assert_expiring_together(retained, KEY)
    if how == "commit":
        await retained.commit(KEY, {"step": 2}, InstanceStatus.ACTIVE)
    else:
        status = InstanceStatus.ACTIVE if how.endswith("active") else InstanceStatus.PARKED
        await retained.memory.set_status(KEY, status, reason="operator")
    await assert_kept_forever(retained, KEY)
    await pass_retention(retained)
    assert await retained.memory.inspect(KEY) is not None
    assert len(await retained.memory.list_instances()) == 1


async def test_set_status_to_a_finished_status_starts_the_retention(retained: Harness) -> None:
    await retained.commit(KEY, {"step": 1}, InstanceStatus.ACTIVE)
    await retained.memory.set_status(KEY, InstanceStatus.FAILED, reason="operator gave up")
    await assert_expiring_together(retained, KEY)
    await pass_retention(retained)
    assert await retained.memory.inspect(KEY) is None
    assert await retained.memory.list_instances() == []


async def test_a_new_commit_of_a_finished_instance_restarts_its_retention(retained: Harness) -> None:
    await retained.commit(KEY, {"step": 1}, InstanceStatus.DONE)
    await retained.pass_time(RETENTION_MS * 0.6)
    await retained.commit(KEY, {"step": 2}, InstanceStatus.DONE)
    await assert_expiring_together(retained, KEY)
    await retained.pass_time(RETENTION_MS * 0.6)
    assert await retained.memory.inspect(KEY) == {"step": 2}


async def test_retention_zero_keeps_finished_instances_forever(harness: Harness) -> None:
    # ``harness`` builds the memories without a retention: the backward-compatible default.
    await harness.commit(KEY, {"step": 1}, InstanceStatus.DONE)
    await assert_kept_forever(harness, KEY)
    if harness.clock is not None:
        harness.clock.advance(10 * 365 * 86_400)
    assert await harness.memory.inspect(KEY) == {"step": 1}
    assert [r.status for r in await harness.memory.list_instances()] == [InstanceStatus.DONE]


async def test_finished_index_entries_past_the_retention_are_pruned(retained: Harness) -> None:
    await retained.commit("o1:old-done", {"n": 1}, InstanceStatus.DONE)
    await retained.commit("o1:old-failed", {"n": 2}, InstanceStatus.FAILED)
    await retained.commit("o1:live", {"n": 3}, InstanceStatus.ACTIVE)
    await pass_retention(retained)
    # Not listed any more, even before a commit prunes them.
    assert [r.key for r in await retained.memory.list_instances()] == ["o1:live"]
    assert await retained.memory.list_instances(status=InstanceStatus.DONE) == []

    await next_millisecond()
    await retained.commit("o1:new", {"n": 4}, InstanceStatus.DONE)
    rows = await retained.memory.list_instances()
    assert [(r.key, r.status) for r in rows] == [
        ("o1:new", InstanceStatus.DONE),
        ("o1:live", InstanceStatus.ACTIVE),
    ]
    if isinstance(retained.memory, RedisMemory):
        client = retained.memory.client
        done = await client.zrange(retained.memory.index_key("o1", InstanceStatus.DONE), 0, -1)
        failed = await client.zrange(retained.memory.index_key("o1", InstanceStatus.FAILED), 0, -1)
        assert (done, failed) == ([b"new"], []), "the commit pruned the expired entries"


async def test_a_late_event_after_the_retention_finds_no_state_and_leaves_nothing_forever(
    retained: Harness,
) -> None:
    await retained.commit(KEY, {"step": 1}, InstanceStatus.DONE)
    await pass_retention(retained)
    grant = await retained.memory.lease_and_read(KEY, ttl_ms=SHORT_TTL_MS)
    assert grant.acquired
    assert grant.record is None, "the late event meets no state (the consumer dead-letters it: no_state)"
    assert grant.lease is not None
    assert await retained.memory.release(grant.lease)
    ttls = await key_ttls(retained, KEY)
    if ttls is not None:
        assert ttls["state"] == ttls["wfence"] == ttls["lock"] == -2, ttls
        assert 0 < ttls["fence"] <= RETENTION_MS, "the fence made by the late lease expires too"
    await pass_retention(retained)
    ttls = await key_ttls(retained, KEY)
    assert ttls is None or set(ttls.values()) == {-2}, ttls
    assert (await retained.lease(KEY)).fence == 1


async def test_the_first_commit_of_a_new_instance_keeps_its_fence_forever(retained: Harness) -> None:
    lease = await retained.lease(KEY)
    await retained.memory.commit_and_release(lease, {"step": 1}, status=InstanceStatus.ACTIVE)
    await assert_kept_forever(retained, KEY)
    await pass_retention(retained)
    assert (await retained.lease(KEY)).fence == lease.fence + 1


async def test_a_commit_under_a_lease_that_outlived_the_instance_restores_its_fence(
    retained: Harness,
) -> None:
    await retained.commit(KEY, {"step": 1}, InstanceStatus.DONE)
    lease = await retained.lease(KEY, ttl_ms=LONG_TTL_MS)
    await pass_retention(retained)  # the instance's keys expire; the lease (30 s) does not
    await retained.memory.commit_and_release(lease, {"step": 2}, status=InstanceStatus.ACTIVE)
    assert await retained.memory.inspect(KEY) == {"step": 2}
    await assert_kept_forever(retained, KEY)
    # Without the fence restored the next lease would count from 1, below the written fence, and
    # every later commit would be fenced out.
    following = await retained.lease(KEY)
    assert following.fence == lease.fence + 1
    await retained.memory.commit_and_release(following, {"step": 3}, status=InstanceStatus.DONE)
    assert await retained.memory.inspect(KEY) == {"step": 3}


def test_the_retention_must_be_a_non_negative_number() -> None:
    for bad in (-1, float("inf"), float("nan"), 0.0001):
        with pytest.raises(ValueError, match="instance_retention_s"):
            InMemoryMemory(instance_retention_s=bad)
    with pytest.raises(TypeError, match="instance_retention_s"):
        InMemoryMemory(instance_retention_s="7d")  # type: ignore[arg-type]
    assert InMemoryMemory(instance_retention_s=2.5).instance_retention_s == 2.5


# --- the cancelled status (issue 13) ------------------------------------------------------------------


async def index_members(harness: Harness, orchestrator: str) -> dict[str, list[bytes]] | None:
    """Redis only: the members of each status index of ``orchestrator`` (``None`` in memory)."""
    if not isinstance(harness.memory, RedisMemory):
        return None
    client = harness.memory.client
    return {
        status.value: await client.zrange(harness.memory.index_key(orchestrator, status), 0, -1)
        for status in InstanceStatus
    }


async def test_the_cancelled_status_is_indexed_listed_and_left_like_any_other(harness: Harness) -> None:
    await harness.commit("o1:a", {"n": 1}, InstanceStatus.ACTIVE)
    await harness.commit("o1:b", {"n": 1}, InstanceStatus.DONE)
    await next_millisecond()
    await harness.commit("o1:a", {"n": 2}, InstanceStatus.CANCELLED)
    memory = harness.memory
    assert [(r.key, r.status) for r in await memory.list_instances(status=InstanceStatus.CANCELLED)] == [
        ("o1:a", InstanceStatus.CANCELLED)
    ]
    assert await memory.list_instances(status=InstanceStatus.ACTIVE) == []
    assert [(r.key, r.status) for r in await memory.list_instances()] == [
        ("o1:a", InstanceStatus.CANCELLED),
        ("o1:b", InstanceStatus.DONE),
    ]
    members = await index_members(harness, "o1")
    assert members is None or members == {
        "active": [],
        "done": [b"b"],
        "failed": [],
        "parked": [],
        "cancelled": [b"a"],
        "timed_out": [],
    }, "a commit moves the instance out of every other index, the cancelled one included"

    await harness.commit("o1:a", {"n": 3}, InstanceStatus.ACTIVE)
    assert await memory.list_instances(status=InstanceStatus.CANCELLED) == []
    members = await index_members(harness, "o1")
    assert members is None or (members["cancelled"], members["active"]) == ([], [b"a"])


async def test_set_status_cancelled_records_the_reason_and_moves_the_index(harness: Harness) -> None:
    await harness.commit(KEY, {"step": 1}, InstanceStatus.ACTIVE)
    await harness.memory.set_status(KEY, InstanceStatus.CANCELLED, reason="operator")
    assert [r.status for r in await harness.memory.list_instances()] == [InstanceStatus.CANCELLED]
    assert await harness.memory.inspect(KEY) == {"step": 1, "statusReason": "operator"}
    await harness.memory.set_status(KEY, InstanceStatus.PARKED)
    assert await harness.memory.list_instances(status=InstanceStatus.CANCELLED) == []


async def test_a_cancelled_instance_expires_after_the_retention_like_a_finished_one(
    retained: Harness,
) -> None:
    await retained.commit("o1:old", {"step": 1}, InstanceStatus.ACTIVE)
    await retained.commit("o1:old", {"step": 2}, InstanceStatus.CANCELLED)
    await assert_expiring_together(retained, "o1:old")
    await retained.pass_time(RETENTION_MS / 2)
    assert await retained.memory.inspect("o1:old") == {"step": 2}
    await pass_retention(retained)
    assert await retained.memory.inspect("o1:old") is None
    assert await retained.memory.list_instances(status=InstanceStatus.CANCELLED) == []

    await next_millisecond()
    await retained.commit("o1:new", {"n": 1}, InstanceStatus.CANCELLED)
    assert [r.key for r in await retained.memory.list_instances()] == ["o1:new"]
    members = await index_members(retained, "o1")
    assert members is None or members["cancelled"] == [b"new"], "the commit pruned the expired entry"
