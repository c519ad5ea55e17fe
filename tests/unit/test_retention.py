"""Retention of finished instances: the setting, its way into the stores, InMemoryMemory's exact rules.

The behaviour both memories share is pinned by ``test_memory_contract.py`` (``retained`` fixture);
real workflows on real Redis by ``tests/integration/test_retention.py``.
"""

from __future__ import annotations

import pytest

from contracts.bench import bench_machine_contract
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import FINISHED_STATUSES, InMemoryMemory, InstanceStatus, Lease
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app
from service.runtime.redis_memory import RedisMemory
from service.runtime.settings import SettingsError, load_settings
from service.runtime.stores import open_memory

KEY = "arvo.orc.retention:exec-1"
RETENTION_S = 100.0
CLIENT = "com.test.retention.client"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> InMemoryMemory:
    return InMemoryMemory(clock=clock, instance_retention_s=RETENTION_S)


async def take(memory: InMemoryMemory, key: str = KEY, ttl_ms: int = 1_000) -> Lease:
    grant = await memory.lease_and_read(key, ttl_ms=ttl_ms)
    assert grant.acquired
    assert grant.lease is not None
    return grant.lease


async def commit(memory: InMemoryMemory, status: InstanceStatus, key: str = KEY) -> Lease:
    lease = await take(memory, key)
    await memory.commit_and_release(lease, {"status": status.value}, status=status)
    return lease


# --- the setting and the stores ---------------------------------------------------------------------


def test_finished_statuses_are_done_failed_cancelled_and_timed_out() -> None:
    assert (
        frozenset(
            {InstanceStatus.DONE, InstanceStatus.FAILED, InstanceStatus.CANCELLED, InstanceStatus.TIMED_OUT}
        )
        == FINISHED_STATUSES
    )


def test_the_setting_defaults_to_seven_days_and_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(env_file=None).instance_retention_s == 7 * 86_400
    monkeypatch.setenv("ARVO_INSTANCE_RETENTION_S", "0")
    assert load_settings(env_file=None).instance_retention_s == 0
    monkeypatch.setenv("ARVO_INSTANCE_RETENTION_S", "-1")
    with pytest.raises(SettingsError, match="ARVO_INSTANCE_RETENTION_S"):
        load_settings(env_file=None)


async def test_open_memory_gives_the_redis_memory_the_retention_of_the_settings() -> None:
    memory = open_memory(load_settings(env_file=None, instance_retention_s=3_600))
    try:
        assert isinstance(memory, RedisMemory)
        assert memory.instance_retention_s == 3_600
    finally:
        await memory.close()


async def test_memories_built_without_a_retention_keep_finished_instances_forever() -> None:
    assert InMemoryMemory().instance_retention_s == 0
    memory = RedisMemory.from_url("redis://127.0.0.1:1/0")
    try:
        assert memory.instance_retention_s == 0
    finally:
        await memory.close()


# --- InMemoryMemory's exact rules -------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(FINISHED_STATUSES))
async def test_a_finished_record_vanishes_exactly_at_the_retention(
    memory: InMemoryMemory, clock: FakeClock, status: InstanceStatus
) -> None:
    await commit(memory, status)
    clock.now += RETENTION_S - 0.001
    assert await memory.inspect(KEY) is not None
    assert len(await memory.list_instances()) == 1
    clock.now += 0.001
    assert await memory.inspect(KEY) is None
    assert await memory.list_instances() == []
    assert (await take(memory)).fence == 1, "fence gone with the record"


async def test_a_lease_held_across_the_expiry_still_holds(memory: InMemoryMemory, clock: FakeClock) -> None:
    await commit(memory, InstanceStatus.DONE)
    lease = await take(memory, ttl_ms=int(2 * RETENTION_S * 1000))
    clock.now += RETENTION_S
    assert await memory.inspect(KEY) is None
    assert not (await memory.lease_and_read(KEY, ttl_ms=1_000)).acquired, "the lock has its own TTL"
    assert await memory.renew(lease, ttl_ms=1_000)
    await memory.commit_and_release(lease, {"again": True}, status=InstanceStatus.ACTIVE)
    clock.now += 10 * RETENTION_S
    assert await memory.inspect(KEY) == {"again": True}
    assert (await take(memory)).fence == lease.fence + 1, "the commit restored the fence"


@pytest.mark.parametrize(
    ("ttl_ms", "elapsed_s", "fence"),
    [
        (1_000, RETENTION_S - 0.001, 2),
        (1_000, RETENTION_S, 1),
        (300_000, 300 - 0.001, 2),
        (300_000, 300, 1),
    ],
)
async def test_the_fence_of_an_instance_without_a_record_expires(
    memory: InMemoryMemory, clock: FakeClock, ttl_ms: int, elapsed_s: float, fence: int
) -> None:
    # After the longer of the lease TTL and the retention (Redis: PEXPIRE in the lease script).
    lease = await take(memory, ttl_ms=ttl_ms)
    assert await memory.release(lease)
    clock.now += elapsed_s
    assert (await take(memory)).fence == fence


async def test_a_parked_instance_without_a_record_stays_listed_while_its_fence_expires(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    await memory.set_status(KEY, InstanceStatus.PARKED, reason="never started")
    await memory.release(await take(memory))
    clock.now += 10 * RETENTION_S
    assert [(row.key, row.status) for row in await memory.list_instances()] == [(KEY, InstanceStatus.PARKED)]


async def test_force_lock_and_clear_still_work_with_a_retention(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    await commit(memory, InstanceStatus.DONE)
    clock.now += RETENTION_S
    memory.force_lock(KEY)
    assert not (await memory.lease_and_read(KEY, ttl_ms=1_000)).acquired
    memory.clear()
    assert (await take(memory)).fence == 1


# --- a workflow ------------------------------------------------------------------------------------


async def test_a_late_event_for_an_expired_workflow_meets_no_state(
    memory: InMemoryMemory, clock: FakeClock
) -> None:
    handlers = bench_app(memory)
    broker = InMemoryBroker(handlers)
    done: list[ArvoEvent] = []

    async def collect(event: ArvoEvent, _broker: InMemoryBroker) -> None:
        done.append(event)

    broker.subscribe(CLIENT, collect)
    init = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0")).init(
        source=CLIENT, data={"a": 2, "b": 3, "parentSubject$$": None}
    )
    await broker.publish(init)
    assert [event.data for event in done] == [{"result": 10}]
    [row] = await memory.list_instances()
    assert row.status is InstanceStatus.DONE
    orchestrator = next(h for h in handlers if h.source == bench_machine_contract.type)
    late = next(e for e in broker.events if e.to == orchestrator.source and e.type != init.type)

    within = await orchestrator.execute(late)
    assert within.outcome is not ExecutionOutcome.IGNORED_NO_STATE
    assert within.events == []

    clock.now += RETENTION_S
    assert await memory.list_instances() == []
    after = await orchestrator.execute(late)
    assert after.outcome is ExecutionOutcome.IGNORED_NO_STATE
    assert after.events == []
