"""The consumer's timer scheduler over the in-memory Kafka: a statechart's ``after`` fires through
the consumer loop (scheduled after the commit, published on the orchestrator's own partition, fired
by the record), and only for the partitions the member owns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from contracts.bench import add_contract, bench_machine_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.machine.arvo_machine import setup_arvo_machine
from service.arvo.machine.statechart import emit
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.orchestration.timers import TIMER_EVENT_TYPE, timer_event_id
from service.arvo.orchestrator import ArvoOrchestrator, create_arvo_orchestrator
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.consumer import ConsumerLoop
from service.runtime.dlq import DeadLetterPublisher
from service.runtime.timer_index import InMemoryTimerIndex, ScheduledTimer, partition_key
from tests.unit.fake_kafka import FakeKafka, FakeProducerClient, fake_event_producer
from tests.unit.test_consumer_loop_unit import make_settings, wait_until

ORCHESTRATOR = "arvo.orc.bench"
ADD = "com.bench.add"
CLIENT = "com.test.client"
DLQ = "arvo.dlq"
DELAY_MS = 30


def impatient(memory: InMemoryMemory) -> ArvoOrchestrator:
    """Asks ``add`` and gives up after ``DELAY_MS`` (nobody serves ``add`` here)."""
    machine = setup_arvo_machine(
        contracts={
            "self": bench_machine_contract.version("1.0.0"),
            "services": {"add": add_contract.version("1.0.0")},
        },
    ).create_machine(
        {
            "id": "impatient",
            "initial": "adding",
            "states": {
                "adding": {
                    "entry": emit({"type": ADD, "data": {"a": 1, "b": 2}}),
                    "after": {DELAY_MS: "gave_up"},
                },
                "gave_up": {"type": "final"},
            },
            "output": {"result": -1},
        }
    )
    return create_arvo_orchestrator(executionunits=1, memory=memory, machines=[machine])


def init_event() -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0")).init(
        source=CLIENT, data={"parentSubject$$": None, "a": 1, "b": 2}
    )


@dataclass
class TimerRig:
    kafka: FakeKafka
    loop: ConsumerLoop
    client: FakeProducerClient
    memory: InMemoryMemory
    index: InMemoryTimerIndex

    def produce(self, event: ArvoEvent, partition: int = 0) -> None:
        self.kafka.append_event(ORCHESTRATOR, partition, event)

    def sent(self, topic: str) -> list[ArvoEvent]:
        return [record.event for record in self.client.acked_to(topic)]


@contextlib.asynccontextmanager
async def running(assign: set[TopicPartition] | None = None, **overrides: Any) -> AsyncIterator[TimerRig]:
    kafka = FakeKafka({ORCHESTRATOR: 2, ADD: 1, CLIENT: 1, DLQ: 1})
    settings = make_settings(timer_poll_interval_ms=10, **overrides)
    producer, client = fake_event_producer(kafka, settings)
    memory = InMemoryMemory()
    index = InMemoryTimerIndex()

    def factory() -> Any:
        consumer = kafka.consumer()
        consumer.assign_on_start = assign
        return consumer

    await producer.start()
    loop = ConsumerLoop(
        settings=settings,
        handlers={ORCHESTRATOR: impatient(memory)},
        producer=producer,
        router=producer.router,
        dlq=DeadLetterPublisher(producer=producer, topic=DLQ),
        memory=memory,
        consumer_factory=factory,
        timers=index,
    )
    try:
        await loop.start()
        await loop.wait_assigned(timeout_s=1)
        yield TimerRig(kafka, loop, client, memory, index)
    finally:
        await loop.stop()
        await producer.stop()


async def test_a_delayed_transition_fires_through_the_consumer_and_completes_the_workflow() -> None:
    async with running() as rig:
        init = init_event()
        rig.produce(init)
        await wait_until(lambda: len(rig.sent(CLIENT)) == 1)
        [completion] = rig.sent(CLIENT)
        assert completion.type == "arvo.orc.bench.done"
        assert completion.data["result"] == -1
        # The timer went through the orchestrator's own topic, keyed by the subject (same partition).
        [fired] = [event for event in rig.sent(ORCHESTRATOR) if event.type == TIMER_EVENT_TYPE]
        assert fired.subject == init.subject
        assert fired.id == timer_event_id(init.subject, fired.data["timerId"])
        assert rig.loop.stats.timers_fired == 1
        # Fired hints are removed; the record keeps no timer once done.
        assert await rig.index.count(partition_key(ORCHESTRATOR, 0)) == 0
        key = ArvoOrchestrationSubject.parse(init.subject).instance_key
        [row] = await rig.memory.list_instances()
        assert (row.key, row.status) == (key, InstanceStatus.DONE)


async def test_a_stale_hint_fires_without_effect_and_is_removed() -> None:
    async with running() as rig:
        init = init_event()
        # A hint whose timer the instance never had (e.g. a hint left by a crash before the commit).
        await rig.index.schedule(
            partition_key(ORCHESTRATOR, 0), [ScheduledTimer(init.subject, "xstate.after.1.nope#9", 1)]
        )
        await wait_until(lambda: rig.loop.stats.timers_fired == 1)
        await wait_until(
            lambda: (
                sum(
                    n
                    for (_t, _e, outcome), n in rig.loop.stats.consumed.items()
                    if outcome == "ignored_stale_timer"
                )
                == 1
            )
        )
        assert await rig.index.count(partition_key(ORCHESTRATOR, 0)) == 0
        assert rig.sent(CLIENT) == []


async def test_only_the_owned_partitions_timers_are_fired() -> None:
    owned = TopicPartition(ORCHESTRATOR, 0)
    async with running(assign={owned}) as rig:
        await rig.index.schedule(partition_key(ORCHESTRATOR, 1), [ScheduledTimer("s", "t#1", 1)])
        await rig.index.schedule(partition_key(ORCHESTRATOR, 0), [ScheduledTimer("s", "t#2", 1)])
        await wait_until(lambda: rig.loop.stats.timers_fired == 1)
        await asyncio.sleep(0.05)
        assert rig.loop.stats.timers_fired == 1
        assert await rig.index.count(partition_key(ORCHESTRATOR, 1)) == 1  # waits for its owner


async def test_a_failing_schedule_keeps_its_hints_and_is_retried() -> None:
    async with running() as rig:
        calls = 0
        real_due = rig.index.due

        async def flaky_due(partition: str, *, now_ms: int, limit: int) -> list[ScheduledTimer]:
            nonlocal calls
            calls += 1
            if calls <= 3:
                raise ConnectionError("redis down (test)")
            return await real_due(partition, now_ms=now_ms, limit=limit)

        rig.index.due = flaky_due  # type: ignore[method-assign]
        await rig.index.schedule(partition_key(ORCHESTRATOR, 0), [ScheduledTimer("s", "t#1", 1)])
        await wait_until(lambda: rig.loop.stats.timers_fired == 1)
        assert calls > 3


async def test_an_entry_that_is_not_a_valid_timer_is_dropped_without_holding_up_the_others() -> None:
    async with running() as rig:
        bad = ScheduledTimer("", "t#0", 1)  # no subject: no event can carry it
        await rig.index.schedule(partition_key(ORCHESTRATOR, 0), [bad, ScheduledTimer("s", "t#1", 2)])
        await wait_until(lambda: rig.loop.stats.timers_fired == 1)
        await wait_until(lambda: rig.index._members[partition_key(ORCHESTRATOR, 0)] == set())
        fired = [event.data["timerId"] for event in rig.sent(ORCHESTRATOR) if event.type == TIMER_EVENT_TYPE]
        assert fired == ["t#1"]
