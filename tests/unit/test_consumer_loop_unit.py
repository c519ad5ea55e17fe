"""The consumer loop over the in-memory Kafka of :mod:`tests.unit.fake_kafka`: ordering, the commit
watermark, backpressure, rebalance, drain and the failure decisions, each in well under a second.

The broker-based tests (``tests/integration/test_consumer_loop.py``, ``test_publish_pipelining.py``)
stay as integration tests of the same behaviour against a real Kafka-protocol broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from service.arvo.errors import (
    ConfigViolation,
    ContractViolation,
    ExecutionViolation,
    TransactionViolation,
    TransactionViolationCause,
)
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.execution import ExecutionResult, InheritFrom
from service.arvo.factory import create_arvo_event_factory
from service.arvo.memory import InMemoryMemory, InstanceStatus, Memory
from service.arvo.orchestration.pipeline import LeaseDeniedViolation
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.consumer import ConsumerLoop
from service.runtime.dlq import H_PAYLOAD_DROPPED, DeadLetterPublisher
from service.runtime.settings import ServiceSettings, load_settings
from tests.unit.arvo_fixtures import increment_contract, increment_handler
from tests.unit.fake_kafka import FakeConsumer, FakeKafka, FakeProducerClient, SentRecord, fake_event_producer

ECHO = "com.test.echo"
SINK = "com.test.sink"
DLQ = "arvo.dlq"
CLIENT = "com.test.client"
P0 = TopicPartition(ECHO, 0)
P1 = TopicPartition(ECHO, 1)


def make_settings(**overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "create_topics": False,
        "commit_interval_ms": 5,
        "drain_timeout_s": 0.5,
        "retry_initial_ms": 1,
        "retry_max_ms": 4,
        "retry_max_attempts": 3,
        "retry_jitter": 0.0,
        "lease_ttl_ms": 2_000,
        "handler_timeout_s": 1.0,
        "partition_buffer_size": 64,
        "max_poll_records": 100,
        "max_inflight_publishes_per_partition": 8,
        "health_port": 0,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


class EchoHandler:
    """Consumes ``com.test.echo``, emits one ``com.test.sink`` event per input (same subject).

    ``data["mode"]``: ``contract``/``config``/``execution`` raise that violation; ``flaky`` raises a
    TransactionViolation on the first ``data["failures"]`` attempts, ``down`` on every one; ``bug``
    raises RuntimeError, ``cancelled`` leaks a CancelledError; ``lease``
    raises a lease denial with ``holder_ttl_ms=data["ttl"]`` on the first ``data["failures"]``
    attempts; ``gate`` waits for :attr:`gates` ``[data["gate"]]`` first; ``stuck`` never returns.
    """

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.started: list[str] = []
        self.executed: list[str] = []
        self.cancelled: list[str] = []
        self.gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    @property
    def source(self) -> str:
        return ECHO

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        self.attempts[event.id] += 1
        self.started.append(event.id)
        mode = event.data.get("mode")
        failing = self.attempts[event.id] <= event.data.get("failures", 0)
        try:
            if mode == "gate":
                await self.gates[event.data["gate"]].wait()
            if mode == "stuck":
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(event.id)
            raise
        if mode == "bug":
            raise RuntimeError("engine bug")
        if mode == "cancelled":
            raise asyncio.CancelledError  # leaked from the handler's own tasks; nobody cancelled it
        if mode == "contract":
            raise ContractViolation(f"data of {event.id} breaks the contract")
        if mode == "config":
            raise ConfigViolation(f"{event.id} is misconfigured")
        if mode == "execution":
            raise ExecutionViolation(f"{event.id} cannot execute")
        if mode == "down" or (mode == "flaky" and failing):
            raise TransactionViolation(
                cause=TransactionViolationCause.LOCK_UNACQUIRED, message=f"{event.subject} is locked"
            )
        if mode == "lease" and failing:
            raise LeaseDeniedViolation(message=f"{event.subject} is leased", holder_ttl_ms=event.data["ttl"])
        self.executed.append(event.id)
        reply = create_arvo_event(
            id=f"{event.id}.echo",
            source=ECHO,
            type=SINK,
            to=SINK,
            subject=event.subject,
            data={"consumed": event.id},
        )
        return ExecutionResult(events=[reply])


def echo(subject: str = "s", **data: Any) -> ArvoEvent:
    return create_arvo_event(source=CLIENT, type=ECHO, subject=subject, data=data)


@dataclass
class Rig:
    kafka: FakeKafka
    settings: ServiceSettings
    handler: Any
    loop: ConsumerLoop
    client: FakeProducerClient
    memory: Memory | None = None
    consumers: list[FakeConsumer] = field(default_factory=list)

    @property
    def consumer(self) -> FakeConsumer:
        consumer: FakeConsumer = self.loop._consumer
        return consumer

    def produce(self, event: ArvoEvent, partition: int = 0, topic: str = ECHO) -> int:
        return self.kafka.append_event(topic, partition, event).offset

    def consumed(self) -> int:
        return sum(self.loop.stats.consumed.values())

    def sink(self) -> list[str]:
        return [record.event.data["consumed"] for record in self.client.acked_to(SINK)]

    def committed(self, tp: TopicPartition = P0) -> int | None:
        return self.kafka.committed.get(tp)


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


async def settle(rig: Rig, rounds: int = 5) -> None:
    """Let the fetch, lanes and several commit intervals run."""
    await asyncio.sleep(rounds * rig.settings.commit_interval_ms / 1000)


@contextlib.asynccontextmanager
async def running(
    handler: Any = None,
    *,
    partitions: int = 2,
    memory: Memory | None = None,
    assign: set[TopicPartition] | None = None,
    topic: str = ECHO,
    dead_letters_written: bool = True,
    **overrides: Any,
) -> AsyncIterator[Rig]:
    kafka = FakeKafka({topic: partitions, SINK: 1, DLQ: 1})
    settings = make_settings(**overrides)
    producer, client = fake_event_producer(kafka, settings)
    handler = handler or EchoHandler()
    consumers: list[FakeConsumer] = []

    def factory() -> FakeConsumer:
        consumer = kafka.consumer()
        consumer.assign_on_start = assign
        consumers.append(consumer)
        return consumer

    await producer.start()
    loop = ConsumerLoop(
        settings=settings,
        handlers={topic: handler},
        producer=producer,
        router=producer.router,
        dlq=DeadLetterPublisher(producer=producer, topic=DLQ),
        memory=memory,
        consumer_factory=factory,
    )
    rig = Rig(kafka, settings, handler, loop, client, memory, consumers)
    try:
        await loop.start()
        if assign is None or assign:
            await loop.wait_assigned(timeout_s=1)
        yield rig
    finally:
        await loop.stop()
        await producer.stop()
    for consumer in consumers:
        assert consumer.listener_errors == []
    if dead_letters_written:
        assert loop.stats.dead_lettered.total() == len(kafka.records(DLQ))


def by_key(key: str) -> Callable[[SentRecord], bool]:
    return lambda record: record.topic == SINK and record.key == key.encode()


# --- ordering ---------------------------------------------------------------------------------------


async def test_a_partition_runs_its_records_in_order_while_other_partitions_go_on() -> None:
    async with running() as rig:
        handler: EchoHandler = rig.handler
        first = echo("k0", mode="gate", gate="p0")
        p0 = [first, *(echo(f"k{i % 3}", n=i) for i in range(5))]
        p1 = [echo(f"k{i % 3}", n=i) for i in range(5)]
        for event in p0:
            rig.produce(event, 0)
        for event in p1:
            rig.produce(event, 1)
        await wait_until(lambda: rig.committed(P1) == len(p1))
        # Partition 1 finished while partition 0's head record still holds its lane.
        assert [event_id for event_id in handler.started if event_id in {e.id for e in p0}] == [first.id]
        assert rig.committed(P0) is None
        handler.gates["p0"].set()
        await wait_until(lambda: rig.committed(P0) == len(p0))
        assert [i for i in handler.executed if i in {e.id for e in p0}] == [e.id for e in p0]
        assert [i for i in handler.executed if i in {e.id for e in p1}] == [e.id for e in p1]
        assert sorted(rig.sink()) == sorted(event.id for event in p0 + p1)
        assert rig.kafka.records(DLQ) == []


async def test_emissions_are_published_keyed_by_subject_to_the_routed_topic() -> None:
    async with running(partitions=1) as rig:
        event = echo("subject-1", n=1)
        rig.produce(event)
        await wait_until(lambda: rig.committed() == 1)
        [record] = rig.kafka.records(SINK)
        assert record.key == b"subject-1"
        assert rig.kafka.events(SINK)[0].id == f"{event.id}.echo"
        assert rig.loop.stats.produced[(SINK, SINK)] == 1
        assert rig.loop.stats.consumed[(ECHO, ECHO, "ok")] == 1


async def test_a_real_arvo_event_handler_runs_through_the_fake() -> None:
    topic = increment_contract.type
    async with running(increment_handler(), partitions=1, topic=topic) as rig:
        event = create_arvo_event_factory(increment_contract.version("0.0.1")).accepts(
            source=CLIENT, data={"init": 1, "increment": 2}
        )
        rig.produce(event, topic=topic)
        await wait_until(lambda: rig.committed(TopicPartition(topic, 0)) == 1)
        [reply] = rig.kafka.events(CLIENT)
        assert reply.type == "evt.increment.number.success"
        assert reply.data == {"result": 3}
        assert reply.subject == event.subject


# --- the commit watermark ---------------------------------------------------------------------------


async def test_a_held_publish_blocks_the_commit_of_later_records_until_it_is_acked() -> None:
    async with running(partitions=1) as rig:
        release = rig.client.hold(when=by_key("instance-a"))
        before, held = echo("instance-x", n=0), echo("instance-a", n=1)
        later = [echo("instance-b", n=2), echo("instance-c", n=3)]
        for event in [before, held, *later]:
            rig.produce(event)
        # The later records of other instances run and are acked past the held one ...
        await wait_until(lambda: set(rig.sink()) == {before.id, *(e.id for e in later)})
        await settle(rig)
        # ... but the commit stops at the first record not done.
        assert rig.committed() == 1
        assert rig.loop._lanes[P0].tracker.committable == 1
        release.set()
        await wait_until(lambda: rig.committed() == 4)
        assert rig.sink()[-1] == held.id


async def test_nothing_is_committed_before_the_emissions_are_acked() -> None:
    async with running(partitions=1) as rig:
        release = rig.client.hold()
        event = echo("s", n=1)
        rig.produce(event)
        await wait_until(lambda: event.id in rig.handler.executed)
        await settle(rig)
        assert rig.consumed() == 0  # executed, not done
        assert rig.committed() is None
        assert rig.consumer.commits == []
        release.set()
        await wait_until(lambda: rig.committed() == 1)
        assert rig.consumed() == 1


async def test_the_same_instance_waits_for_its_previous_acks_before_running_again() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        release = rig.client.hold(when=by_key("instance-a"))
        first_a, other, second_a = echo("instance-a", n=1), echo("instance-b", n=2), echo("instance-a", n=3)
        for event in (first_a, other, second_a):
            rig.produce(event)
        await wait_until(lambda: rig.sink() == [other.id])
        await settle(rig)
        assert second_a.id not in handler.attempts
        release.set()
        await wait_until(lambda: rig.committed() == 3)
        assert handler.executed == [first_a.id, other.id, second_a.id]


async def test_a_failed_commit_is_retried_on_the_next_interval() -> None:
    async with running(partitions=1) as rig:
        rig.consumer.fail_commits = 2
        rig.produce(echo("s", n=1))
        await wait_until(lambda: rig.committed() == 1)
        assert rig.consumer.fail_commits == 0
        assert rig.loop.stats.commits == len(rig.consumer.commits) == 1


async def test_partition_lag_is_the_distance_from_the_committable_position_to_the_end() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        rig.produce(echo("s", n=0))
        for i in range(1, 4):
            rig.produce(echo("s", mode="gate", gate="g", n=i))
        await wait_until(lambda: rig.consumer.highwater(P0) == 4 and rig.consumed() == 1)
        assert rig.loop.partition_lag() == {P0: 3}
        handler.gates["g"].set()
        await wait_until(lambda: rig.loop.partition_lag() == {P0: 0})


# --- backpressure -----------------------------------------------------------------------------------


async def test_a_full_lane_pauses_its_partition_resumes_at_half_and_others_keep_flowing() -> None:
    async with running(partition_buffer_size=4, max_poll_records=1) as rig:
        handler: EchoHandler = rig.handler
        sizes_at_resume: list[int] = []
        consumer = rig.consumer
        resume = consumer.resume

        def recording_resume(*partitions: TopicPartition) -> None:
            sizes_at_resume.extend(rig.loop._lanes[tp].size for tp in partitions if tp == P0)
            resume(*partitions)

        consumer.resume = recording_resume  # type: ignore[method-assign]
        slow = [echo("k", mode="gate", gate="slow", n=i) for i in range(10)]
        for event in slow:
            rig.produce(event, 0)
        await wait_until(lambda: P0 in consumer.pause_calls)
        await settle(rig)
        # Paused exactly when the lane held buffer_size records (one in the handler, three queued).
        assert consumer.position(P0) == 4
        assert rig.loop._lanes[P0].size == 4
        assert rig.loop.stats.paused == {P0}
        assert consumer.paused() == {P0}
        # The other partition is not held back.
        fast = [echo("other", n=i) for i in range(6)]
        for event in fast:
            rig.produce(event, 1)
        await wait_until(lambda: rig.committed(P1) == len(fast))
        assert consumer.position(P0) == 4
        assert P0 not in consumer.resume_calls
        handler.gates["slow"].set()
        await wait_until(lambda: rig.committed(P0) == len(slow))
        # Every pause was resumed, each time once the lane drained to buffer_size // 2.
        assert consumer.pause_calls.count(P0) == consumer.resume_calls.count(P0) >= 1
        assert set(sizes_at_resume) == {2}
        assert [i for i in handler.executed if i in {e.id for e in slow}] == [e.id for e in slow]
        assert rig.loop.stats.paused == set()


# --- rebalance --------------------------------------------------------------------------------------


async def test_revoke_drains_the_record_in_the_handler_commits_it_and_leaves_buffered_records() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        consumer = rig.consumer
        done, busy = echo("a", n=0), echo("b", mode="gate", gate="busy", n=1)
        buffered = [echo("b", n=2), echo("c", n=3)]
        for event in (done, busy, *buffered):
            rig.produce(event)
        lane = rig.loop._lanes[P0]
        await wait_until(lambda: rig.committed() == 1 and len(lane.records) == 2 and lane.busy)
        assert busy.id in handler.attempts
        revoke = asyncio.create_task(consumer.rebalance(set()))
        await wait_until(lambda: lane.closing)
        await asyncio.sleep(0.02)
        assert not revoke.done()  # the revoke waits for the in-flight record
        handler.gates["busy"].set()
        await asyncio.wait_for(revoke, timeout=1)
        assert rig.committed() == 2  # the in-flight record finished and was committed
        assert rig.loop.assignment == frozenset()
        assert consumer.assignment() == set()
        assert not {event.id for event in buffered} & set(handler.attempts)
        # Re-assigned: a new lane starts at the committed offset and processes the rest.
        await consumer.rebalance({P0})
        assert rig.loop._lanes[P0] is not lane
        await wait_until(lambda: rig.committed() == 4)
        assert handler.executed == [done.id, busy.id, *(event.id for event in buffered)]
        assert rig.loop.stats.rebalances == 3  # the first join, the revoke (empty), the re-assignment


async def test_revoke_waits_for_unacknowledged_emissions_before_committing() -> None:
    async with running(partitions=1) as rig:
        consumer = rig.consumer
        release = rig.client.hold(when=by_key("b"))
        done, held = echo("a", n=0), echo("b", n=1)
        rig.produce(done)
        rig.produce(held)
        lane = rig.loop._lanes[P0]
        await wait_until(lambda: rig.committed() == 1 and bool(lane.publishing))
        revoke = asyncio.create_task(consumer.rebalance(set()))
        await wait_until(lambda: lane.closing)
        await asyncio.sleep(0.02)
        assert not revoke.done()
        release.set()
        await asyncio.wait_for(revoke, timeout=1)
        assert rig.committed() == 2
        assert rig.sink() == [done.id, held.id]


async def test_a_record_waiting_for_its_instances_acks_is_not_executed_once_the_lane_closes() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        release = rig.client.hold(when=by_key("b"))
        first, waiting = echo("b", n=1), echo("b", n=2)
        rig.produce(first)
        rig.produce(waiting)
        lane = rig.loop._lanes[P0]
        await wait_until(lambda: bool(lane.publishing) and lane.busy and not lane.records)
        revoke = asyncio.create_task(rig.consumer.rebalance(set()))
        await wait_until(lambda: lane.closing)
        release.set()
        await asyncio.wait_for(revoke, timeout=1)
        # Not started once the lane closed (it would stretch the drain and the group's rebalance).
        assert rig.committed() == 1
        assert waiting.id not in handler.attempts  # to be fetched again by the next owner


async def test_a_partition_moves_to_another_member_from_the_committed_offset() -> None:
    async with running(partitions=2, drain_timeout_s=0.1) as rig_a:
        handler_a: EchoHandler = rig_a.handler
        first, blocked, last = echo("k", n=0), echo("k", mode="gate", gate="g", n=1), echo("k", n=2)
        for event in (first, blocked, last):
            rig_a.produce(event, 0)
        await wait_until(lambda: rig_a.committed(P0) == 1 and blocked.id in handler_a.attempts)
        # P0 goes to another member while its record is stuck: the drain gives up after drain_timeout_s.
        await rig_a.consumer.rebalance({P1})
        assert rig_a.committed(P0) == 1
        assert handler_a.cancelled == [blocked.id]
        assert rig_a.loop.assignment == frozenset({P1})

        def member_b() -> FakeConsumer:
            consumer = rig_a.kafka.consumer()
            consumer.assign_on_start = {P0}
            return consumer

        handler_b = EchoHandler()
        handler_b.gates["g"].set()
        producer = rig_a.loop._producer
        loop_b = ConsumerLoop(
            settings=rig_a.settings,
            handlers={ECHO: handler_b},
            producer=producer,
            router=producer.router,
            dlq=DeadLetterPublisher(producer=producer, topic=DLQ),
            consumer_factory=member_b,
        )
        async with loop_b:
            await wait_until(lambda: rig_a.committed(P0) == 3)
        # B starts at A's committed offset: the abandoned record is redelivered, nothing before it.
        assert handler_a.executed == [first.id]
        assert handler_b.executed == [blocked.id, last.id]


# --- drain on stop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stuck", ["handler", "ack"])
async def test_stop_abandons_work_stuck_beyond_the_drain_timeout_and_does_not_commit_it(stuck: str) -> None:
    drain_timeout_s = 0.1
    async with running(partitions=1, drain_timeout_s=drain_timeout_s) as rig:
        handler: EchoHandler = rig.handler
        if stuck == "handler":
            blocked = echo("b", mode="stuck", n=1)
        else:
            blocked = echo("b", n=1)
            rig.client.hold(when=by_key("b"))
        rig.produce(echo("a", n=0))
        rig.produce(blocked)
        rig.produce(echo("c", n=2))
        await wait_until(lambda: rig.committed() == 1 and blocked.id in handler.attempts)
        started = time.monotonic()
        await rig.loop.stop()
        elapsed = time.monotonic() - started
        assert drain_timeout_s <= elapsed < drain_timeout_s + 1.0
        assert rig.committed() == 1
        assert not rig.loop.is_running
        if stuck == "handler":
            assert handler.cancelled == [blocked.id]
        else:
            assert blocked.id not in rig.sink()


async def test_stop_waits_for_in_flight_work_that_finishes_within_the_drain_timeout() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        busy = echo("b", mode="gate", gate="g", n=0)
        rig.produce(busy)
        await wait_until(lambda: busy.id in handler.attempts)
        stopping = asyncio.create_task(rig.loop.stop())
        await asyncio.sleep(0.02)
        handler.gates["g"].set()
        await asyncio.wait_for(stopping, timeout=1)
        assert rig.committed() == 1
        assert rig.sink() == [busy.id]


# --- failure decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason", "error_class"),
    [
        ("contract", "contract", "ContractViolation"),
        ("config", "config", "ConfigViolation"),
        ("execution", "execution", "ExecutionViolation"),
    ],
)
async def test_a_permanent_violation_is_dead_lettered_at_once(
    mode: str, reason: str, error_class: str
) -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        bad, good = echo("s", mode=mode), echo("s", n=1)
        rig.produce(bad)
        rig.produce(good)
        await wait_until(lambda: rig.committed() == 2)
        [letter] = rig.kafka.dead_letters(DLQ)
        assert (letter.reason, letter.error_class, letter.attempts) == (reason, error_class, 1)
        assert letter.origin_topic == ECHO
        assert letter.origin_offset == 0
        assert letter.key == b"s"
        assert handler.attempts[bad.id] == 1  # never retried
        assert rig.sink() == [good.id]
        assert rig.loop.stats.consumed[(ECHO, ECHO, "dead_lettered")] == 1


async def test_a_transient_error_is_retried_in_place_and_processed_once() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        flaky = echo("s", mode="flaky", failures=2)
        rig.produce(flaky)
        await wait_until(lambda: rig.committed() == 1)
        assert handler.attempts[flaky.id] == 3
        assert handler.executed == [flaky.id]
        assert rig.loop.stats.retries[(ECHO, "TransactionViolation")] == 2
        assert rig.sink() == [flaky.id]
        assert rig.kafka.records(DLQ) == []


async def test_a_transient_error_that_persists_parks_the_record_and_the_owned_instance() -> None:
    memory = InMemoryMemory()
    subject = ArvoOrchestrationSubject.new(orchestrator=ECHO, initiator=CLIENT, version="1.0.0")
    async with running(partitions=1, memory=memory) as rig:
        handler: EchoHandler = rig.handler
        stuck, after = echo(subject, mode="down"), echo(subject, n=2)
        rig.produce(stuck)
        rig.produce(after)
        await wait_until(lambda: rig.committed() == 2)
        assert handler.attempts[stuck.id] == rig.settings.retry_max_attempts
        [letter] = rig.kafka.dead_letters(DLQ)
        assert (letter.reason, letter.error_class) == ("parked", "TransactionViolation")
        assert letter.attempts == rig.settings.retry_max_attempts
        assert rig.loop.stats.parked == 1
        assert rig.sink() == [after.id]
    parked = await memory.list_instances(status=InstanceStatus.PARKED)
    assert [row.key for row in parked] == [ArvoOrchestrationSubject.parse(subject).instance_key]


async def test_parking_a_subject_the_handler_does_not_own_marks_no_instance() -> None:
    memory = InMemoryMemory()
    foreign = ArvoOrchestrationSubject.new(orchestrator="com.other.flow", initiator=CLIENT, version="1.0.0")
    async with running(partitions=1, memory=memory) as rig:
        rig.produce(echo(foreign, mode="down"))
        await wait_until(lambda: rig.committed() == 1)
        assert [letter.reason for letter in rig.kafka.dead_letters(DLQ)] == ["parked"]
    assert await memory.list_instances() == []


async def test_a_lease_denial_by_an_expiring_holder_waits_without_spending_the_budget() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        failures = 2 * rig.settings.retry_max_attempts  # more denials than the park budget allows
        leased = echo("s", mode="lease", failures=failures, ttl=1)
        rig.produce(leased)
        await wait_until(lambda: rig.committed() == 1)
        assert handler.attempts[leased.id] == failures + 1
        assert handler.executed == [leased.id]
        assert rig.loop.stats.parked == 0
        assert rig.kafka.records(DLQ) == []


async def test_lease_denials_beyond_the_wait_budget_count_and_park() -> None:
    # lease_ttl_ms=100: denials are waited out for 2 x 100 ms, then they count towards parking.
    async with running(partitions=1, lease_ttl_ms=100, handler_timeout_s=0.05) as rig:
        handler: EchoHandler = rig.handler
        leased = echo("s", mode="lease", failures=10**6, ttl=5)
        rig.produce(leased)
        await wait_until(lambda: rig.committed() == 1)
        [letter] = rig.kafka.dead_letters(DLQ)
        assert (letter.reason, letter.error_class) == ("parked", "LeaseDeniedViolation")
        assert letter.attempts == rig.settings.retry_max_attempts
        assert handler.attempts[leased.id] > rig.settings.retry_max_attempts


@pytest.mark.parametrize(
    ("value", "reason"),
    [(b"this is not json", "not_json"), (b'{"hello": "world"}', "not_cloudevent")],
)
async def test_an_undecodable_record_is_dead_lettered_and_later_records_flow(
    value: bytes, reason: str
) -> None:
    async with running(partitions=1) as rig:
        headers = [("origin", b"test")]
        rig.kafka.append(ECHO, 0, key=b"poison", value=value, headers=headers)
        good = echo("s", n=1)
        rig.produce(good)
        await wait_until(lambda: rig.committed() == 2)
        [letter] = rig.kafka.dead_letters(DLQ)
        assert (letter.reason, letter.error_class, letter.attempts) == (reason, "RecordDecodeError", 1)
        assert letter.value == value
        assert letter.original_headers == headers
        assert rig.sink() == [good.id]


async def test_a_transient_publish_failure_is_retried_until_acked_without_re_executing() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        rig.client.fail(2, when=lambda record: record.topic == SINK)
        event = echo("s", n=1)
        rig.produce(event)
        await wait_until(lambda: rig.committed() == 1)
        assert rig.loop.stats.publish_retries == 2
        assert handler.attempts[event.id] == 1
        assert rig.sink() == [event.id]
        assert rig.kafka.records(DLQ) == []


async def test_a_permanent_publish_error_dead_letters_the_record_as_unpublishable() -> None:
    async with running(partitions=1) as rig:
        rig.client.fail_permanently(when=lambda record: record.topic == SINK)
        event, after = echo("s", n=1), echo("t", n=2)
        rig.produce(event)
        rig.produce(after)
        await wait_until(lambda: rig.committed() == 2)
        letters = rig.kafka.dead_letters(DLQ)
        assert [(letter.reason, letter.error_class) for letter in letters] == [
            ("unpublishable", "MessageSizeTooLargeError"),
            ("unpublishable", "MessageSizeTooLargeError"),
        ]
        assert [letter.origin_offset for letter in letters] == [0, 1]
        assert rig.kafka.records(SINK) == []
        assert rig.loop.stats.consumed[(ECHO, ECHO, "dead_lettered")] == 2


def _payload_dropped(record: SentRecord) -> bool:
    return any(name == H_PAYLOAD_DROPPED for name, _ in record.headers)


async def test_a_dead_letter_too_large_for_its_topic_is_written_without_its_payload() -> None:
    async with running(partitions=1) as rig:
        rig.client.fail_permanently(when=lambda record: record.topic == DLQ and not _payload_dropped(record))
        bad = echo("s", mode="contract")
        rig.produce(bad)
        await wait_until(lambda: rig.committed() == 1)
        [letter] = rig.kafka.dead_letters(DLQ)
        assert (letter.reason, letter.error_class) == ("contract", "ContractViolation")
        assert letter.value is None  # the original value is gone; the record carries the diagnostics
        assert letter.original_headers == []
        assert letter.payload_dropped_bytes is not None
        assert letter.payload_dropped_bytes > 0
        assert letter.key == b"s"


async def test_a_dead_letter_that_can_never_be_written_is_dropped_and_the_loop_moves_on() -> None:
    async with running(partitions=1, dead_letters_written=False) as rig:
        rig.client.fail_permanently(when=lambda record: record.topic == DLQ)
        bad, good = echo("s", mode="contract"), echo("s", n=1)
        rig.produce(bad)
        rig.produce(good)
        await wait_until(lambda: rig.committed() == 2)
        # Tried with its payload, then without; then given up (logged), the record committed.
        attempts = [record for record in rig.client.sent if record.topic == DLQ]
        assert [_payload_dropped(record) for record in attempts] == [False, True]
        assert rig.kafka.records(DLQ) == []
        assert rig.sink() == [good.id]


async def test_a_dead_letter_publish_failure_is_retried_until_written() -> None:
    async with running(partitions=1) as rig:
        rig.client.fail(2, when=lambda record: record.topic == DLQ)
        rig.produce(echo("s", mode="contract"))
        await wait_until(lambda: rig.committed() == 1)
        assert [letter.reason for letter in rig.kafka.dead_letters(DLQ)] == ["contract"]
        assert rig.loop.stats.publish_retries == 2


@pytest.mark.parametrize(
    ("mode", "error_class"), [("bug", "RuntimeError"), ("cancelled", "HandlerCancelledError")]
)
async def test_unexpected_handler_errors_are_retried_then_parked_and_the_loop_survives(
    mode: str, error_class: str
) -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        bad, fine = echo("s", mode=mode), echo("s", n=1)
        rig.produce(bad)
        rig.produce(fine)
        await wait_until(lambda: rig.committed() == 2)
        assert [(letter.reason, letter.error_class) for letter in rig.kafka.dead_letters(DLQ)] == [
            ("parked", error_class)
        ]
        assert handler.attempts[bad.id] == rig.settings.retry_max_attempts
        assert rig.sink() == [fine.id]
        assert rig.loop.is_running


async def test_a_handler_over_its_timeout_is_cancelled_retried_and_parked() -> None:
    async with running(partitions=1, handler_timeout_s=0.02) as rig:
        handler: EchoHandler = rig.handler
        slow = echo("s", mode="stuck")
        rig.produce(slow)
        await wait_until(lambda: rig.committed() == 1)
        [letter] = rig.kafka.dead_letters(DLQ)
        assert (letter.reason, letter.error_class) == ("parked", "HandlerTimeoutError")
        assert handler.cancelled == [slow.id] * rig.settings.retry_max_attempts


@pytest.mark.parametrize("waiting_for", ["retry", "publish", "dead_letter"])
async def test_a_revoke_gives_up_a_record_waiting_to_retry_at_once_and_does_not_commit_it(
    waiting_for: str,
) -> None:
    # Backoffs far longer than the drain timeout: the revoke must not sit them out.
    async with running(
        partitions=1, retry_initial_ms=10_000, retry_max_ms=10_000, drain_timeout_s=5.0
    ) as rig:
        handler: EchoHandler = rig.handler
        if waiting_for == "retry":
            record = echo("s", mode="down")
        elif waiting_for == "publish":
            record = echo("s", n=1)
            rig.client.fail(None, when=by_key("s"))
        else:
            record = echo("s", mode="contract")
            rig.client.fail(None, when=lambda sent: sent.topic == DLQ)
        rig.produce(echo("a", n=0))
        rig.produce(record)
        await wait_until(lambda: rig.committed() == 1 and record.id in handler.attempts)
        await wait_until(lambda: bool(rig.loop.stats.retries) or rig.loop.stats.publish_retries > 0)
        started = time.monotonic()
        await rig.consumer.rebalance(set())
        assert time.monotonic() - started < 1.0
        assert rig.committed() == 1
        assert rig.kafka.records(DLQ) == []
        assert record.id not in rig.sink()
        assert rig.loop.stats.consumed.total() == 1


async def test_a_restarted_loop_continues_from_the_committed_offsets() -> None:
    async with running(partitions=1) as rig:
        handler: EchoHandler = rig.handler
        before = [echo(f"k{i}", n=i) for i in range(3)]
        for event in before:
            rig.produce(event)
        await wait_until(lambda: rig.committed() == 3)
        await rig.loop.stop()
        after = [echo(f"k{i}", n=i) for i in range(3, 5)]
        for event in after:
            rig.produce(event)
        await rig.loop.start()
        await rig.loop.wait_assigned(timeout_s=1)
        await wait_until(lambda: rig.committed() == 5)
        assert handler.executed == [event.id for event in before + after]  # nothing processed twice
        assert len(rig.consumers) == 2
