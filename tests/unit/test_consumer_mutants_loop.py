"""The consumer loop's lifecycle as an operator sees it: start and stop (log lines, tasks, topics),
rebalance logs, readiness (broker reachable, stalled partitions, lag), drains that time out, a
failing poll, a failure outside the handler, and a partition log replaced under the loop.

Driven over :mod:`tests.unit.fake_kafka` with a consumer that polls fast on demand and seeks like
aiokafka; time-based checks run on a manual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from service.arvo.memory import InMemoryMemory, Memory
from service.runtime.consumer import ConsumerLoop, Lane, LoopHooks, RecordContext, RecordLayer
from service.runtime.consumer.scope import RecordStep
from service.runtime.dlq import DeadLetterPublisher
from service.runtime.settings import ServiceSettings
from tests.unit.fake_kafka import FakeConsumer, FakeKafka, Record, fake_event_producer
from tests.unit.test_consumer_loop_unit import (
    DLQ,
    ECHO,
    P0,
    P1,
    SINK,
    EchoHandler,
    Rig,
    by_key,
    echo,
    make_settings,
    wait_until,
)

LOOP = sys.modules["service.runtime.consumer.loop"]
LANES = sys.modules["service.runtime.consumer.lanes"]
REPLACED = "partition log replaced (topic deleted and recreated, or truncated); restarting its lane"


class Consumer(FakeConsumer):
    """The fake consumer; ``poll_timeout_ms`` shortens every poll, ``seek_to_beginning`` as aiokafka's."""

    def __init__(self, kafka: FakeKafka) -> None:
        super().__init__(kafka)
        self.poll_timeout_ms: int | None = None
        self.seeks: list[TopicPartition] = []

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        if self.poll_timeout_ms is not None:
            timeout_ms = self.poll_timeout_ms
        return await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.seeks.append(tp)
            self._state(tp).position = 0


class Clock:
    """A manual ``time`` module for the loop and its lanes (``monotonic`` only)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


def build(
    kafka: FakeKafka,
    settings: ServiceSettings,
    handler: Any,
    *,
    memory: Memory | None = None,
    layers: list[RecordLayer] | None = None,
    assign: set[TopicPartition] | None = None,
    metrics_hooks: LoopHooks | None = None,
) -> tuple[ConsumerLoop, Any, list[FakeConsumer]]:
    producer, client = fake_event_producer(kafka, settings)
    consumers: list[FakeConsumer] = []

    def factory() -> Consumer:
        consumer = Consumer(kafka)
        consumer.assign_on_start = assign
        kafka.consumers.append(consumer)
        consumers.append(consumer)
        return consumer

    extra: dict[str, Any] = {} if layers is None else {"layers": layers}
    loop = ConsumerLoop(
        settings=settings,
        handlers={ECHO: handler},
        producer=producer,
        router=producer.router,
        dlq=DeadLetterPublisher(producer=producer, topic=DLQ),
        memory=memory,
        consumer_factory=factory,
        metrics_hooks=metrics_hooks,
        **extra,
    )
    return loop, client, consumers


@contextlib.asynccontextmanager
async def rig(
    handler: Any = None,
    *,
    partitions: int = 1,
    memory: Memory | None = None,
    layers: list[RecordLayer] | None = None,
    assign: set[TopicPartition] | None = None,
    metrics_hooks: LoopHooks | None = None,
    **overrides: Any,
) -> AsyncIterator[Rig]:
    """The loop over the fake Kafka (``running`` of the loop tests, with layers, hooks and seeks)."""
    kafka = FakeKafka({ECHO: partitions, SINK: 1, DLQ: 1})
    settings = make_settings(**overrides)
    handler = handler or EchoHandler()
    loop, client, consumers = build(
        kafka, settings, handler, memory=memory, layers=layers, assign=assign, metrics_hooks=metrics_hooks
    )
    await loop._producer.start()
    try:
        await loop.start()
        await loop.wait_assigned(timeout_s=1)
        yield Rig(kafka, settings, handler, loop, client, memory, consumers)
    finally:
        await loop.stop()
        await loop._producer.stop()


def lines(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


# --- construction, start and stop ----------------------------------------------------------------


async def test_a_loop_without_handlers_is_refused_with_the_reason() -> None:
    kafka = FakeKafka()
    settings = make_settings()
    producer, _ = fake_event_producer(kafka, settings)
    with pytest.raises(ValueError, match=r"^ConsumerLoop needs at least one handler \(handlers is empty\)$"):
        ConsumerLoop(
            settings=settings,
            handlers={},
            producer=producer,
            router=producer.router,
            dlq=DeadLetterPublisher(producer=producer, topic=DLQ),
        )


async def test_a_loop_not_started_is_neither_running_nor_joined_nor_ready() -> None:
    loop, _, consumers = build(FakeKafka({ECHO: 1}), make_settings(), EchoHandler())
    assert loop.is_running is False
    assert loop.joined is False
    assert await loop.broker_reachable() is False
    assert loop.partition_lag() == {}
    await loop.stop()  # nothing to stop
    assert consumers == []


async def test_start_creates_the_handler_topics_and_the_dead_letter_topic_when_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[tuple[ServiceSettings, list[str]]] = []

    async def ensure_topics(settings: ServiceSettings, topics: list[str]) -> None:
        created.append((settings, list(topics)))

    monkeypatch.setattr(LOOP, "ensure_topics", ensure_topics)
    async with rig(create_topics=True) as r:
        assert created == [(r.settings, [ECHO, DLQ])]


async def test_start_logs_the_topics_and_group_and_stop_leaves_no_task_of_the_loop_behind() -> None:
    before = asyncio.all_tasks()
    with structlog.testing.capture_logs() as logs:
        async with rig() as r:
            started = asyncio.all_tasks() - before
            names = {task.get_name() for task in started}
            assert {"arvo-consumer-fetch", "arvo-consumer-commit", "arvo-lane-com.test.echo-0"} <= names
            assert r.loop.joined is True
    assert [
        task.get_name() for task in started if task.get_name().startswith("arvo-") and not task.done()
    ] == []
    [line] = lines(logs, "consumer started")
    assert line == {
        "event": "consumer started",
        "log_level": "info",
        "topics": [ECHO],
        "group": r.settings.consumer_group,
    }


async def test_a_consumer_that_fails_to_stop_is_logged_and_the_loop_stops_anyway() -> None:
    error = KafkaConnectionError("coordinator gone")

    async def broken_stop() -> None:
        raise error

    async with rig() as r:
        r.consumer.stop = broken_stop  # type: ignore[method-assign]
        with structlog.testing.capture_logs() as logs:
            await r.loop.stop()
        assert lines(logs, "consumer stop failed") == [
            {"event": "consumer stop failed", "log_level": "warning", "error": repr(error)}
        ]
        assert not r.loop.is_running


# --- rebalance -----------------------------------------------------------------------------------


async def test_assignments_and_revocations_are_logged_with_their_partitions() -> None:
    with structlog.testing.capture_logs() as logs:
        async with rig(partitions=2) as r:
            await r.consumer.rebalance({P1})
    assert [line["partitions"] for line in lines(logs, "partitions assigned")] == [
        ["com.test.echo/0", "com.test.echo/1"],
        ["com.test.echo/1"],
    ]
    revoked = lines(logs, "partitions revoked")  # the first join revokes nothing: no line
    assert revoked == [
        {
            "event": "partitions revoked",
            "log_level": "info",
            "partitions": ["com.test.echo/0", "com.test.echo/1"],
        }
    ]


async def test_a_partition_of_a_topic_no_handler_consumes_gets_no_lane() -> None:
    other = TopicPartition("com.test.other", 0)
    async with rig(assign={P0, other}) as r:
        assert r.loop.assignment == frozenset({P0})
        assert r.loop.stats.in_flight == {P0: 0}


async def test_a_revoked_partition_is_no_longer_counted_in_flight_or_paused() -> None:
    async with rig(partition_buffer_size=2, max_poll_records=1, drain_timeout_s=0.05) as r:
        for i in range(4):
            r.produce(echo("k", mode="gate", gate="g", n=i))
        await wait_until(lambda: r.loop.stats.paused == {P0})
        await r.consumer.rebalance(set())
        assert r.loop.stats.paused == set()
        assert r.loop.stats.in_flight == {}


async def test_a_stop_during_a_revoke_drains_the_partition_once_and_without_error() -> None:
    async with rig() as r:
        busy = echo("b", mode="gate", gate="g")
        r.produce(busy)
        await wait_until(lambda: busy.id in r.handler.attempts)
        revoke = asyncio.create_task(r.consumer.rebalance(set()))
        await asyncio.sleep(0.01)
        stopping = asyncio.create_task(r.loop.stop())
        await asyncio.sleep(0.01)
        assert not revoke.done()
        r.handler.gates["g"].set()
        await asyncio.wait_for(asyncio.gather(revoke, stopping), 1)
        assert r.consumer.listener_errors == []
        assert r.committed() == 1
        assert r.loop.assignment == frozenset()


# --- drain and commits ---------------------------------------------------------------------------


async def test_a_drain_that_times_out_abandons_the_unacknowledged_record_and_says_so() -> None:
    async with rig(drain_timeout_s=0.05) as r:
        release = r.client.hold(when=by_key("b"))
        done, held = echo("a", n=0), echo("b", n=1)
        r.produce(done)
        r.produce(held)
        await wait_until(lambda: r.committed() == 1 and held.id in r.handler.executed)
        with structlog.testing.capture_logs() as logs:
            await r.consumer.rebalance(set())
        assert lines(logs, "drain timed out; abandoning in-flight records") == [
            {"event": "drain timed out; abandoning in-flight records", "log_level": "warning", "lanes": 1}
        ]
        release.set()
        await asyncio.sleep(0.02)
        # The abandoned record is redelivered to the next owner: its late ack changes nothing here.
        assert r.sink() == [done.id]
        assert r.loop.stats.consumed.total() == 1
        assert r.committed() == 1


async def test_a_commit_the_coordinator_never_answers_gives_up_after_the_drain_timeout() -> None:
    async with rig(drain_timeout_s=0.05) as r:
        r.produce(echo("a", n=0))
        await wait_until(lambda: r.committed() == 1)
        r.consumer.commit_gate = asyncio.Event()  # the coordinator stops answering
        r.produce(echo("b", n=1))
        await wait_until(lambda: r.consumed() == 2)
        started = time.monotonic()
        await asyncio.wait_for(r.loop.stop(), 1)
        assert time.monotonic() - started < 0.5
        assert r.committed() == 1
        assert r.loop.last_commit_error == "TimeoutError: "


async def test_in_flight_counts_drop_to_zero_once_the_records_are_done() -> None:
    async with rig(partitions=2) as r:
        for i in range(3):
            r.produce(echo("a", n=i), 0)
        await wait_until(lambda: r.committed() == 3)
        assert r.loop.stats.in_flight == {P0: 0, P1: 0}


# --- readiness -----------------------------------------------------------------------------------


async def test_the_broker_is_reachable_while_the_cluster_answers_within_the_timeout() -> None:
    async with rig() as r:
        assert await r.loop.broker_reachable() is True

        async def refused() -> set[str]:
            raise KafkaConnectionError("refused")

        async def hanging() -> set[str]:
            await asyncio.Event().wait()
            return set()

        r.consumer.topics = refused  # type: ignore[method-assign]
        assert await r.loop.broker_reachable() is False
        r.consumer.topics = hanging  # type: ignore[method-assign]
        started = time.monotonic()
        assert await asyncio.wait_for(r.loop.broker_reachable(timeout_s=0.02), 1) is False
        assert time.monotonic() - started < 0.5
        del r.consumer.topics  # answers again
    assert await r.loop.broker_reachable() is False  # stopped


async def test_a_partition_with_nothing_done_yet_has_no_lag_figure() -> None:
    async with rig() as r:
        first = echo("s", mode="gate", gate="g")
        r.produce(first)
        await wait_until(lambda: first.id in r.handler.attempts)
        assert r.consumer.highwater(P0) == 1
        assert r.loop.partition_lag() == {}
        r.handler.gates["g"].set()
        await wait_until(lambda: r.loop.partition_lag() == {P0: 0})


async def test_a_partition_is_stalled_from_exactly_the_stall_timeout_without_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(LOOP, "time", clock)
    monkeypatch.setattr(LANES, "time", clock)
    async with rig(stall_timeout_s=30.0) as r:
        stuck = echo("s", mode="gate", gate="g")
        r.produce(stuck)
        await wait_until(lambda: stuck.id in r.handler.attempts)
        clock.now += 29.5
        assert r.loop.stalled_partitions() == {}
        clock.now += 0.5
        assert r.loop.stalled_partitions() == {P0: 30.0}
        r.handler.gates["g"].set()
        await wait_until(lambda: r.committed() == 1)
        assert r.loop.stalled_partitions() == {}


async def test_the_memory_store_is_probed_at_the_configured_interval_while_it_is_down() -> None:
    async with rig(memory=InMemoryMemory(), dependency_probe_interval_ms=10) as r:
        r.loop.dependencies.report_down("redis", ConnectionError("refused"))
        assert not r.loop.dependencies.is_up("redis")
        await wait_until(lambda: r.loop.dependencies.is_up("redis"), timeout_s=0.3)


# --- failures around the records -----------------------------------------------------------------


async def test_a_failed_poll_is_logged_and_polling_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LOOP, "_POLL_ERROR_BACKOFF_S", 0.01)
    error = KafkaConnectionError("fetch failed")
    async with rig() as r:
        consumer: Consumer = r.consumer  # type: ignore[assignment]
        consumer.poll_timeout_ms = 1
        original = consumer.getmany
        failures = [error]

        async def getmany(*partitions: TopicPartition, **kwargs: Any) -> dict[TopicPartition, list[Record]]:
            if failures:
                raise failures.pop()
            return await original(*partitions, **kwargs)

        with structlog.testing.capture_logs() as logs:
            consumer.getmany = getmany  # type: ignore[method-assign]
            await wait_until(lambda: not failures)
            event = echo("s")
            r.produce(event)
            await wait_until(lambda: r.committed() == 1)
        assert lines(logs, "poll failed; retrying") == [
            {"event": "poll failed; retrying", "log_level": "warning", "error": repr(error)}
        ]
        assert r.loop.is_running


async def test_a_failure_outside_the_handler_is_logged_and_the_record_retried_after_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    original = Lane.sleep

    async def sleep(self: Lane, delay_s: float) -> None:
        pauses.append(delay_s)
        await original(self, 0)

    monkeypatch.setattr(Lane, "sleep", sleep)
    failures = [RuntimeError("layer bug")]

    async def flaky(context: RecordContext, *, call_next: RecordStep) -> None:
        if failures:
            raise failures.pop()
        await call_next(context)

    with structlog.testing.capture_logs() as logs:
        async with rig(layers=[flaky]) as r:
            event = echo("s", n=1)
            r.produce(event)
            await wait_until(lambda: r.committed() == 1)
    [line] = lines(logs, "processing failed unexpectedly; retrying the record")
    assert (line["partition"], line["log_level"], line["exc_info"]) == (str(P0), "error", True)
    assert pauses == [1.0]  # the publish backoff's cap: at least a second, whatever the retry settings
    assert r.handler.executed == [event.id]


# --- a partition log replaced --------------------------------------------------------------------


async def test_offsets_that_go_back_restart_the_lane_and_abandon_its_buffered_records() -> None:
    async with rig(drain_timeout_s=0.05) as r:
        handler: EchoHandler = r.handler
        old = [echo("a", n=0), echo("a", mode="gate", gate="old", n=1), echo("a", n=2), echo("a", n=3)]
        for event in old:
            r.produce(event)
        await wait_until(lambda: r.committed() == 1 and old[1].id in handler.attempts)
        await wait_until(lambda: r.consumer.position(P0) == 4)
        # The topic is deleted and recreated: a new log, read from its beginning.
        r.kafka.logs[P0] = []
        consumer: Consumer = r.consumer  # type: ignore[assignment]
        await consumer.seek_to_beginning(P0)
        new = [echo("b", n=10), echo("b", n=11)]
        with structlog.testing.capture_logs() as logs:
            for event in new:
                r.produce(event)
            await wait_until(lambda: r.committed() == 2 and len(r.sink()) == 3)
        assert lines(logs, REPLACED) == [
            {
                "event": REPLACED,
                "log_level": "warning",
                "partition": "com.test.echo/0",
                "detail": "offsets went back from 3 to 0",
                "abandoned_records": 2,
            }
        ]
        assert handler.cancelled == [old[1].id]
        assert handler.executed == [old[0].id, *(event.id for event in new)]
        assert r.loop.assignment == frozenset({P0})


async def test_a_log_that_now_ends_before_the_position_is_read_again_from_its_beginning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(LOOP, "time", clock)
    async with rig() as r:
        consumer: Consumer = r.consumer  # type: ignore[assignment]
        consumer.poll_timeout_ms = 1
        for i in range(3):
            r.produce(echo("a", n=i))
        await wait_until(lambda: r.committed() == 3)
        with structlog.testing.capture_logs() as logs:
            # Idle at the end of its log: checked every 5 s, and nothing to do.
            clock.now += 5
            polls = consumer.getmany_calls
            await wait_until(lambda: consumer.getmany_calls > polls + 3)
            assert consumer.seeks == []
            # The topic is deleted and recreated: its log now ends before the position ...
            r.kafka.logs[P0] = []
            polls = consumer.getmany_calls
            await wait_until(lambda: consumer.getmany_calls > polls + 3)
            assert consumer.seeks == []  # ... which is only checked again 5 s later
            clock.now += 5
            await wait_until(lambda: consumer.seeks == [P0])
            fresh = echo("b", n=9)
            r.produce(fresh)
            await wait_until(lambda: fresh.id in r.handler.executed and r.committed() == 1)
        assert [(line["detail"], line["abandoned_records"]) for line in lines(logs, REPLACED)] == [
            ("the log ends at 0, before position 3", 0)
        ]
        assert r.loop.is_running
