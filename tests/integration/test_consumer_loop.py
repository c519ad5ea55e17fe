"""The consumer loop on a real Kafka-protocol broker, with a fake handler (no Arvo engine involved)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from service.arvo.errors import ContractViolation, TransactionViolation, TransactionViolationCause
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.execution import ArvoHandler, ExecutionResult, InheritFrom
from service.arvo.memory import InMemoryMemory, InstanceStatus, Memory
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.binding import STRUCTURED_CONTENT_TYPE, encode_event, header_value
from service.runtime.consumer import ConsumerLoop, LoopHooks, run_until_signal
from service.runtime.dlq import DeadLetterPublisher, read_dead_letters, replay
from service.runtime.producer import EventProducer
from service.runtime.routing import TopicRouter
from service.runtime.settings import ServiceSettings
from tests.integration._kafka import (
    KafkaNames,
    create_test_topics,
    kafka_test_settings,
    produce_records,
    read_topic,
)

pytestmark = pytest.mark.integration

ECHO = "com.test.echo"
SINK = "com.test.sink"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class EchoHandler:
    """Consumes ``com.test.echo`` and emits one ``com.test.sink`` event per input (same subject).

    ``data["mode"]`` picks a failure: ``contract`` raises ContractViolation; ``flaky`` raises
    TransactionViolation on the first ``data["failures"]`` attempts; ``down`` always raises it;
    ``bug`` always raises RuntimeError; ``cancelled`` leaks a CancelledError.
    """

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.attempts: Counter[str] = Counter()
        self.executed: list[str] = []

    @property
    def source(self) -> str:
        return ECHO

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        self.attempts[event.id] += 1
        mode = event.data.get("mode")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if mode == "contract":
            raise ContractViolation(f"data of {event.id} breaks the contract")
        if mode == "bug":
            raise RuntimeError("engine bug")
        if mode == "cancelled":
            raise asyncio.CancelledError
        if mode == "down" or (mode == "flaky" and self.attempts[event.id] <= event.data["failures"]):
            raise TransactionViolation(
                cause=TransactionViolationCause.LOCK_UNACQUIRED, message=f"{event.subject} is locked"
            )
        self.executed.append(event.id)
        reply = create_arvo_event(
            id=f"{event.id}.echo",
            source=ECHO,
            type=SINK,
            to=SINK,
            subject=event.subject,
            data={"echo": event.data, "consumed": event.id},
            traceparent=event.traceparent,
        )
        return ExecutionResult(events=[reply])


def echo_event(subject: str, **data: Any) -> ArvoEvent:
    return create_arvo_event(
        source="com.test.client", type=ECHO, subject=subject, data=data, traceparent=TRACEPARENT
    )


async def produce_events(settings: ServiceSettings, events: list[ArvoEvent]) -> None:
    messages = [encode_event(event) for event in events]
    await produce_records(
        settings.kafka_bootstrap_servers,
        settings.topic_prefix + ECHO,
        [(message.key, message.value, message.headers) for message in messages],
    )


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


def consumed_total(loop: ConsumerLoop) -> int:
    return sum(loop.stats.consumed.values())


@pytest.fixture
async def settings(kafka_bootstrap: str, kafka_names: KafkaNames) -> ServiceSettings:
    settings = kafka_test_settings(kafka_bootstrap, kafka_names)
    await create_test_topics(
        settings, [kafka_names.topic(ECHO), kafka_names.topic(SINK), settings.dead_letter_topic_name]
    )
    return settings


def build_loop(
    settings: ServiceSettings,
    handler: ArvoHandler,
    producer: EventProducer,
    *,
    memory: Memory | None = None,
    hooks: LoopHooks | None = None,
) -> ConsumerLoop:
    router = producer.router
    return ConsumerLoop(
        settings=settings,
        handlers={router.handler_topic(handler.source): handler},
        producer=producer,
        router=router,
        dlq=DeadLetterPublisher(producer=producer, topic=settings.dead_letter_topic_name),
        memory=memory,
        metrics_hooks=hooks,
    )


@contextlib.asynccontextmanager
async def running_loop(
    settings: ServiceSettings,
    handler: ArvoHandler,
    *,
    memory: Memory | None = None,
    hooks: LoopHooks | None = None,
    producer_class: type[EventProducer] = EventProducer,
) -> AsyncIterator[ConsumerLoop]:
    producer = producer_class(settings=settings, router=TopicRouter.from_settings(settings))
    await producer.start()
    loop = build_loop(settings, handler, producer, memory=memory, hooks=hooks)
    try:
        await loop.start()
        await loop.wait_assigned(timeout_s=30)
        yield loop
    finally:
        await loop.stop()
        await producer.stop()


def sink_events(records: list[Any]) -> list[ArvoEvent]:
    return [ArvoEvent.from_json(record.value) for record in records]


async def test_events_flow_end_to_end_to_the_routed_topic_keyed_by_subject(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    handler = EchoHandler()
    inputs = [echo_event(f"subject-{i % 5}", n=i) for i in range(30)]
    async with running_loop(settings, handler) as loop:
        await produce_events(settings, inputs)
        await wait_until(lambda: consumed_total(loop) == len(inputs))
        assert loop.stats.produced[(kafka_names.topic(SINK), SINK)] == len(inputs)
    records = await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK))
    assert len(records) == len(inputs)
    by_consumed = {
        event.data["consumed"]: (record, event)
        for record, event in zip(records, sink_events(records), strict=True)
    }
    for source_event in inputs:
        record, event = by_consumed[source_event.id]
        assert record.key == source_event.subject.encode()
        assert header_value(record.headers, "content-type") == STRUCTURED_CONTENT_TYPE.encode()
        assert header_value(record.headers, "ce_id") == event.id.encode()
        assert header_value(record.headers, "ce_type") == SINK.encode()
        assert header_value(record.headers, "traceparent") == TRACEPARENT.encode()
        assert event.id == f"{source_event.id}.echo"
        assert event.data["echo"] == source_event.data
    assert sorted(handler.executed) == sorted(event.id for event in inputs)
    assert not await read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic_name)


async def test_poison_records_are_dead_lettered_while_later_records_still_flow(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    settings = kafka_test_settings(kafka_bootstrap, kafka_names, max_event_bytes=4_096)
    await create_test_topics(
        settings, [kafka_names.topic(ECHO), kafka_names.topic(SINK), settings.dead_letter_topic_name]
    )
    first, last = echo_event("same-key", n=1), echo_event("same-key", n=2)
    invalid = orjson.loads(echo_event("same-key").to_json())
    invalid["type"] = "Not A Type"
    headers = [("origin", b"test"), ("content-type", b"application/cloudevents+json")]
    poison: list[tuple[str, bytes]] = [
        ("not_json", b"this is not json"),
        ("not_cloudevent", b'{"hello": "world"}'),
        ("invalid_event", orjson.dumps(invalid)),
        ("oversized", b"x" * (settings.max_event_bytes + 1)),
    ]
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
        (b"same-key", encode_event(first).value, encode_event(first).headers),
        *[(b"same-key", value, headers) for _, value in poison],
        (b"same-key", encode_event(last).value, encode_event(last).headers),
    ]
    async with running_loop(settings, EchoHandler()) as loop:
        await produce_records(settings.kafka_bootstrap_servers, kafka_names.topic(ECHO), records, partition=0)
        await wait_until(lambda: consumed_total(loop) == len(records))
    outputs = sink_events(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK)))
    assert [event.data["consumed"] for event in outputs] == [first.id, last.id]
    letters = await read_dead_letters(settings)
    assert [letter.reason for letter in letters] == [reason for reason, _ in poison]
    for letter, (_, value) in zip(letters, poison, strict=True):
        assert letter.key == b"same-key"
        assert letter.value == value
        assert letter.original_headers == headers
        assert letter.origin_topic == kafka_names.topic(ECHO)
        assert letter.origin_partition == 0
        assert letter.error_class == "RecordDecodeError"
        assert letter.attempts == 1
    assert [letter.origin_offset for letter in letters] == [1, 2, 3, 4]


async def test_contract_violation_is_dead_lettered_and_replay_returns_it_to_its_topic(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    bad, good = echo_event("s1", mode="contract"), echo_event("s1", n=1)
    handler = EchoHandler()
    async with running_loop(settings, handler) as loop:
        await produce_events(settings, [bad, good])
        await wait_until(lambda: consumed_total(loop) == 2)
        [letter] = await read_dead_letters(settings)
        assert letter.reason == "contract"
        assert letter.error_class == "ContractViolation"
        assert "breaks the contract" in letter.error_message
        assert letter.value == encode_event(bad).value
        assert handler.attempts[bad.id] == 1  # permanent: never retried
        await replay(letter, producer=loop._producer)
        await wait_until(lambda: consumed_total(loop) == 3)
    letters = await read_dead_letters(settings)
    assert [entry.reason for entry in letters] == ["contract", "contract"]
    replayed = letters[1]
    assert replayed.original_headers == letters[0].original_headers  # dlq headers replaced, not stacked
    assert sum(1 for name, _ in replayed.original_headers if name.startswith("arvo-dlq-")) == 0
    outputs = await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK))
    assert len(outputs) == 1


async def test_transient_failures_are_retried_in_place_and_processed_once(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    flaky = echo_event("s-flaky", mode="flaky", failures=2)
    handler = EchoHandler()
    async with running_loop(settings, handler) as loop:
        await produce_events(settings, [flaky])
        await wait_until(lambda: consumed_total(loop) == 1)
        assert loop.stats.retries[(kafka_names.topic(ECHO), "TransactionViolation")] == 2
    assert handler.attempts[flaky.id] == 3
    assert handler.executed == [flaky.id]
    outputs = sink_events(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK)))
    assert [event.data["consumed"] for event in outputs] == [flaky.id]
    assert not await read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic_name)


async def test_always_failing_transient_error_parks_the_record_and_the_instance(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    subject = ArvoOrchestrationSubject.new(orchestrator=ECHO, initiator="com.test.client", version="1.0.0")
    stuck, after = echo_event(subject, mode="down"), echo_event(subject, n=2)
    memory = InMemoryMemory()
    handler = EchoHandler()
    async with running_loop(settings, handler, memory=memory) as loop:
        await produce_events(settings, [stuck, after])
        await wait_until(lambda: consumed_total(loop) == 2)
        assert loop.stats.parked == 1
    assert handler.attempts[stuck.id] == settings.retry_max_attempts
    [letter] = await read_dead_letters(settings)
    assert letter.reason == "parked"
    assert letter.error_class == "TransactionViolation"
    assert letter.attempts == settings.retry_max_attempts
    assert letter.value == encode_event(stuck).value
    parked = await memory.list_instances(status=InstanceStatus.PARKED)
    assert [row.key for row in parked] == [ArvoOrchestrationSubject.parse(subject).instance_key]
    outputs = sink_events(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK)))
    assert [event.data["consumed"] for event in outputs] == [after.id]


async def test_unexpected_handler_errors_are_retried_then_parked_and_the_loop_survives(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    bug, leak, fine = echo_event("s", mode="bug"), echo_event("s", mode="cancelled"), echo_event("s", n=3)
    memory = InMemoryMemory()
    handler = EchoHandler()
    async with running_loop(settings, handler, memory=memory) as loop:
        await produce_events(settings, [bug, leak, fine])
        await wait_until(lambda: consumed_total(loop) == 3)
        assert loop.is_running
    letters = await read_dead_letters(settings)
    assert [(entry.reason, entry.error_class) for entry in letters] == [
        ("parked", "RuntimeError"),
        ("parked", "HandlerCancelledError"),
    ]
    assert handler.attempts[bug.id] == handler.attempts[leak.id] == settings.retry_max_attempts
    assert await memory.list_instances() == []  # "s" is no orchestration subject: nothing to mark
    outputs = sink_events(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK)))
    assert [event.data["consumed"] for event in outputs] == [fine.id]


class FlakyProducer(EventProducer):
    """Fails the first two publishes as if the broker were unreachable."""

    failures = 2

    async def publish(self, events: Any) -> None:
        if FlakyProducer.failures > 0:
            FlakyProducer.failures -= 1
            raise KafkaConnectionError("broker unreachable (simulated)")
        await super().publish(events)


async def test_publish_failures_are_retried_and_the_offset_waits_for_the_ack(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    event = echo_event("s-publish", n=1)
    handler = EchoHandler()
    async with running_loop(settings, handler, producer_class=FlakyProducer) as loop:
        await produce_events(settings, [event])
        await wait_until(lambda: consumed_total(loop) == 1)
        assert loop.stats.publish_retries == 2
    assert handler.executed == [event.id]  # the handler ran once; only the publish was retried
    outputs = await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK))
    assert len(outputs) == 1


async def test_committed_offsets_survive_a_restart_without_loss_or_reprocessing(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    before = [echo_event(f"k{i % 4}", phase=1, n=i) for i in range(20)]
    after = [echo_event(f"k{i % 4}", phase=2, n=i) for i in range(15)]
    async with running_loop(settings, EchoHandler()) as loop:
        await produce_events(settings, before)
        await wait_until(lambda: consumed_total(loop) == len(before))
    second = EchoHandler()
    async with running_loop(settings, second) as loop:
        await produce_events(settings, after)
        await wait_until(lambda: consumed_total(loop) == len(after))
    assert sorted(second.executed) == sorted(event.id for event in after)
    outputs = sink_events(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK)))
    consumed = Counter(event.data["consumed"] for event in outputs)
    assert consumed == Counter(event.id for event in before + after)


async def test_graceful_stop_under_load_loses_and_duplicates_nothing(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    inputs = [echo_event(f"k{i % 7}", n=i) for i in range(300)]
    first = EchoHandler(delay_s=0.002)
    async with running_loop(settings, first) as loop:
        await produce_events(settings, inputs)
        await wait_until(lambda: consumed_total(loop) >= 40)
    stopped_after = len(first.executed)
    assert stopped_after < len(inputs)  # the stop really happened mid-stream
    second = EchoHandler()
    async with running_loop(settings, second) as loop:
        await wait_until(lambda: stopped_after + consumed_total(loop) >= len(inputs))
    outputs = sink_events(
        await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK), min_records=len(inputs))
    )
    consumed = Counter(event.data["consumed"] for event in outputs)
    assert set(consumed) == {event.id for event in inputs}  # nothing lost
    assert max(consumed.values()) == 1  # drained and committed: nothing processed twice
    assert not set(first.executed) & set(second.executed)


class PauseRecorder(LoopHooks):
    def __init__(self, loop_ref: list[ConsumerLoop]) -> None:
        self.loop_ref = loop_ref
        self.max_paused = 0
        self.max_in_flight = 0

    def on_consumed(self, topic: str, event_type: str, outcome: str, duration_s: float) -> None:
        stats = self.loop_ref[0].stats
        self.max_paused = max(self.max_paused, len(stats.paused))
        self.max_in_flight = max(self.max_in_flight, *stats.in_flight.values(), 0)


async def test_backpressure_pauses_a_full_partition_and_keeps_order_per_key(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    settings = kafka_test_settings(kafka_bootstrap, kafka_names, partition_buffer_size=2, max_poll_records=4)
    await create_test_topics(
        settings, [kafka_names.topic(ECHO), kafka_names.topic(SINK), settings.dead_letter_topic_name]
    )
    inputs = [echo_event(f"key-{i % 3}", seq=i // 3) for i in range(60)]
    loop_ref: list[ConsumerLoop] = []
    hooks = PauseRecorder(loop_ref)
    async with running_loop(settings, EchoHandler(delay_s=0.003), hooks=hooks) as loop:
        loop_ref.append(loop)
        await produce_events(settings, inputs)
        await wait_until(lambda: consumed_total(loop) == len(inputs))
    assert hooks.max_paused >= 1
    assert hooks.max_in_flight <= settings.partition_buffer_size + settings.max_poll_records
    outputs = await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK))
    sequences: dict[bytes, list[int]] = defaultdict(list)
    for record in sorted(outputs, key=lambda record: (record.partition, record.offset)):
        assert record.key is not None
        sequences[record.key].append(ArvoEvent.from_json(record.value).data["echo"]["seq"])
    assert dict(sequences) == {f"key-{k}".encode(): list(range(20)) for k in range(3)}


async def test_a_rebalance_hands_partitions_over_without_loss_or_duplicates(
    settings: ServiceSettings, kafka_names: KafkaNames
) -> None:
    inputs = [echo_event(f"k{i % 9}", n=i) for i in range(300)]
    # Slow enough (~1 s of work per lane) that the second member joins mid-stream: publishing no
    # longer holds a lane, so the handler's own time is all that paces it.
    first, second = EchoHandler(delay_s=0.01), EchoHandler(delay_s=0.01)
    async with running_loop(settings, first) as loop_a:
        await produce_events(settings, inputs)
        await wait_until(lambda: consumed_total(loop_a) >= 30)
        async with running_loop(settings, second) as loop_b:
            assert loop_b.assignment
            await wait_until(lambda: len(first.executed) + len(second.executed) >= len(inputs))
            assert loop_a.stats.rebalances >= 2
            assert loop_a.assignment.isdisjoint(loop_b.assignment)
    outputs = sink_events(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK)))
    consumed = Counter(event.data["consumed"] for event in outputs)
    assert set(consumed) == {event.id for event in inputs}
    assert max(consumed.values()) == 1  # revoked lanes drained and committed before the handover
    assert second.executed  # the second member really took partitions over


async def test_a_handler_slower_than_max_poll_interval_does_not_get_the_member_evicted(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    settings = kafka_test_settings(kafka_bootstrap, kafka_names, max_poll_interval_ms=1_000)
    await create_test_topics(
        settings, [kafka_names.topic(ECHO), kafka_names.topic(SINK), settings.dead_letter_topic_name]
    )
    handler = EchoHandler(delay_s=1.5)
    async with running_loop(settings, handler) as loop:
        rebalances = loop.stats.rebalances
        await produce_events(settings, [echo_event("slow-1", n=1), echo_event("slow-1", n=2)])
        await wait_until(lambda: consumed_total(loop) == 2)
        assert loop.stats.rebalances == rebalances  # polling went on while the handler slept
        assert loop.stats.commits >= 1
    assert len(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK))) == 2


async def test_sigterm_stops_the_loop_gracefully(settings: ServiceSettings, kafka_names: KafkaNames) -> None:
    handler = EchoHandler()
    producer = EventProducer(settings=settings, router=TopicRouter.from_settings(settings))
    await producer.start()
    loop = build_loop(settings, handler, producer)
    try:
        runner = asyncio.create_task(run_until_signal(loop))
        await loop.wait_assigned(timeout_s=30)
        await produce_events(settings, [echo_event("sig", n=1)])
        await wait_until(lambda: consumed_total(loop) == 1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(runner, timeout=30) is None
        assert not loop.is_running
    finally:
        await producer.stop()
    assert len(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK))) == 1
