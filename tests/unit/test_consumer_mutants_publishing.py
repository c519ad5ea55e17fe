"""Publishing emissions and dead letters, as the operator sees it: what is given up and why, the log
lines and their fields, the broker's outage state, the retry metric, the in-flight bound per lane.

:class:`EmissionPublisher` is driven directly with scripted collaborators (a producer and a
dead-letter topic that fail as told, a lane that records its waits), so every retry is immediate.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, MutableMapping
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, UnknownTopicOrPartitionError

from service.arvo.event import ArvoEvent, create_arvo_event
from service.runtime.consumer import LaneStopping, LoopHooks, LoopStats
from service.runtime.consumer.dependencies import DependencyMonitor
from service.runtime.consumer.lanes import Lane
from service.runtime.consumer.publishing import (
    UNPUBLISHABLE,
    UNROUTABLE,
    EmissionPublisher,
    GiveUp,
    Handoff,
    UnroutableError,
)
from service.runtime.dlq import DeadLetter
from service.runtime.retry import RetryPolicy
from tests.unit.fake_kafka import FakeKafka, Record
from tests.unit.test_consumer_loop_unit import by_key, echo, running, wait_until

TP = TopicPartition("com.test.echo", 2)
DLQ = "arvo.dlq"


class Hooks(LoopHooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def on_produced(self, topic: str, event_type: str) -> None:
        self.calls.append(("on_produced", (topic, event_type)))

    def on_dead_letter(self, topic: str, reason: str) -> None:
        self.calls.append(("on_dead_letter", (topic, reason)))

    def on_publish_retry(self, error_class: str) -> None:
        self.calls.append(("on_publish_retry", (error_class,)))


class Producer:
    """Fails ``publish`` with the scripted errors, in order, then acknowledges."""

    def __init__(self, *errors: BaseException, missing: list[str] | None = None) -> None:
        self.errors = deque(errors)
        self.missing = missing
        self.published: list[list[ArvoEvent]] = []
        self.asked: list[list[str]] = []

    async def publish(self, events: Iterable[ArvoEvent]) -> None:
        if self.errors:
            raise self.errors.popleft()
        self.published.append(list(events))

    async def missing_topics(self, topics: list[str]) -> list[str] | None:
        self.asked.append(list(topics))
        return self.missing


class Router:
    def route_event(self, event: ArvoEvent) -> str:
        return f"topic.{event.type}"


class DeadLetters:
    """The dead-letter topic: fails the scripted errors (``None``: every attempt), records every attempt."""

    topic = DLQ

    def __init__(self, *errors: BaseException, always: BaseException | None = None) -> None:
        self.errors = deque(errors)
        self.always = always
        self.attempts: list[DeadLetter] = []

    async def publish(self, letter: DeadLetter) -> None:
        self.attempts.append(letter)
        if self.always is not None:
            raise self.always
        if self.errors:
            raise self.errors.popleft()


class RecordingLane(Lane):
    """A lane whose waits are recorded and take no time."""

    def __init__(self, tp: TopicPartition = TP) -> None:
        super().__init__(tp)
        self.sleeps: list[float] = []

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        await super().sleep(0)


class Rig:
    def __init__(
        self,
        producer: Producer | None = None,
        dlq: DeadLetters | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_inflight: int = 8,
        **kwargs: Any,
    ) -> None:
        self.producer = producer or Producer()
        self.dlq = dlq or DeadLetters()
        self.stats = LoopStats()
        self.hooks = Hooks()
        self.dependencies = DependencyMonitor(hooks=LoopHooks())
        self.finished: list[tuple[Lane, Any, str, str, float]] = []
        self.finish_errors: list[Exception] = []
        self.publisher = EmissionPublisher(
            producer=self.producer,  # type: ignore[arg-type]
            router=Router(),  # type: ignore[arg-type]
            dlq=self.dlq,  # type: ignore[arg-type]
            stats=self.stats,
            hooks=self.hooks,
            retry=retry or RetryPolicy(initial_ms=1, max_ms=8, max_attempts=1, jitter=0.0),
            max_inflight_per_lane=max_inflight,
            finish=self.finish,
            dependencies=self.dependencies,
            **kwargs,
        )
        self.lane = RecordingLane()

    def finish(self, lane: Lane, record: Any, event_type: str, outcome: str, started: float) -> None:
        if self.finish_errors:
            raise self.finish_errors.pop(0)
        self.finished.append((lane, record, event_type, outcome, started))


def record(offset: int = 7, value_size: int = 10) -> Record:
    kafka = FakeKafka({TP.topic: TP.partition + 1})
    for _ in range(offset):
        kafka.append(TP.topic, TP.partition, key=b"k", value=b"-")
    return kafka.append(TP.topic, TP.partition, key=b"k", value=b"v" * value_size, headers=[("h", b"1")])


def emission(type_: str = "com.test.sink", subject: str = "s") -> ArvoEvent:
    return create_arvo_event(source="com.test.echo", type=type_, subject=subject, data={})


def lines(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


# --- publishing emissions -------------------------------------------------------------------------


async def test_acknowledged_emissions_are_counted_per_topic_and_type_and_the_broker_is_up() -> None:
    rig = Rig(Producer(KafkaConnectionError("refused")))
    events = [emission("com.a.one"), emission("com.a.two"), emission("com.a.one")]
    with structlog.testing.capture_logs() as logs:
        assert await rig.publisher.publish(rig.lane, events) is None
    assert rig.producer.published == [events]
    assert rig.stats.produced == {("topic.com.a.one", "com.a.one"): 2, ("topic.com.a.two", "com.a.two"): 1}
    assert rig.dependencies.is_up("kafka")
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "dependency unavailable; records wait for it (no retry budget spent, nothing dead-lettered)",
        "dependency available again; waiting records resume",
    ]


async def test_nothing_to_publish_is_done_at_once() -> None:
    rig = Rig(Producer(KafkaConnectionError("never asked")))
    assert await rig.publisher.publish(rig.lane, []) is None
    assert rig.lane.sleeps == []
    assert len(rig.producer.errors) == 1


async def test_broker_trouble_is_retried_with_backoff_counted_reported_and_logged() -> None:
    error = KafkaConnectionError("broker refused")
    rig = Rig(Producer(error, KafkaConnectionError("again")))
    events = [emission(), emission()]
    with structlog.testing.capture_logs() as logs:
        await rig.publisher.publish(rig.lane, events)
    [down] = lines(
        logs, "dependency unavailable; records wait for it (no retry budget spent, nothing dead-lettered)"
    )
    assert (down["dependency"], down["error"]) == ("kafka", f"KafkaConnectionError: {error}")
    assert rig.stats.publish_retries == 2
    assert rig.hooks.calls[:2] == [("on_publish_retry", ("KafkaConnectionError",))] * 2
    assert rig.lane.sleeps == [0.001, 0.002]
    retries = lines(logs, "publish failed; retrying")
    assert [(entry["error"], entry["events"], entry["log_level"]) for entry in retries] == [
        (repr(error), 2, "debug"),
        ("KafkaConnectionError('again')", 2, "debug"),
    ]
    assert rig.dependencies.is_up("kafka")


async def test_a_missing_topic_while_the_broker_does_not_answer_is_an_outage_not_the_records_fault() -> None:
    error = UnknownTopicOrPartitionError("no such topic")
    rig = Rig(Producer(*[error] * 7, missing=None), give_up_attempts=2)
    assert await rig.publisher.publish(rig.lane, [emission()]) is None
    assert rig.stats.publish_retries == 7
    assert rig.hooks.calls[0] == ("on_publish_retry", ("UnknownTopicOrPartitionError",))
    assert rig.producer.asked == [["topic.com.test.sink"]] * 7


async def test_topics_missing_from_the_cluster_give_up_as_unroutable_after_the_attempts() -> None:
    error = UnknownTopicOrPartitionError("no such topic")
    rig = Rig(Producer(*[error] * 10, missing=["topic.com.t.b", "topic.com.t.c"]), give_up_attempts=3)
    events = [emission("com.t.c"), emission("com.t.b"), emission("com.t.c")]
    with structlog.testing.capture_logs() as logs:
        gave_up = await rig.publisher.publish(rig.lane, events)
    assert isinstance(gave_up, GiveUp)
    assert gave_up.reason == UNROUTABLE == "unroutable"
    assert isinstance(gave_up.error, UnroutableError)
    assert gave_up.error.topics == ["topic.com.t.b", "topic.com.t.c"]
    assert str(gave_up.error) == (
        "topics topic.com.t.b, topic.com.t.c do not exist in the cluster (after 3 attempts): create them (or enable"
        " auto-creation), then replay this letter"
    )
    assert rig.producer.asked == [["topic.com.t.b", "topic.com.t.c"]] * 3  # sorted, once per topic
    assert rig.stats.publish_retries == 0
    assert rig.lane.sleeps == [0.001, 0.002]
    # One warning line, the repeats held back (and counted) within the interval.
    assert lines(logs, "emissions name topics that do not exist; retrying") == [
        {
            "event": "emissions name topics that do not exist; retrying",
            "log_level": "warning",
            "missing": ["topic.com.t.b", "topic.com.t.c"],
            "suppressed_since_last": 0,
        }
    ]


async def test_an_unexpected_error_gives_up_as_unpublishable_after_five_attempts_by_default() -> None:
    errors = [RuntimeError(f"odd {i}") for i in range(5)]
    rig = Rig(Producer(*errors))
    with structlog.testing.capture_logs() as logs:
        gave_up = await rig.publisher.publish(rig.lane, [emission()])
    assert gave_up == GiveUp(UNPUBLISHABLE, errors[4])
    assert len(rig.lane.sleeps) == 4
    assert rig.stats.publish_retries == 0
    assert rig.dependencies.is_up("kafka")
    assert lines(logs, "publish failed with an unexpected error; retrying") == [
        {
            "event": "publish failed with an unexpected error; retrying",
            "log_level": "warning",
            "error": repr(errors[0]),
            "suppressed_since_last": 0,
        }
    ]


async def test_four_unexpected_errors_are_retried_and_the_fifth_attempt_publishes() -> None:
    rig = Rig(Producer(*[RuntimeError("odd")] * 4))
    assert await rig.publisher.publish(rig.lane, [emission()]) is None
    assert len(rig.producer.published) == 1


async def test_each_kind_of_publish_warning_is_rate_limited_on_its_own() -> None:
    rig = Rig(
        Producer(
            RuntimeError("odd"),
            UnknownTopicOrPartitionError("gone"),
            RuntimeError("odd"),
            missing=["topic.com.test.sink"],
        )
    )
    with structlog.testing.capture_logs() as logs:
        await rig.publisher.publish(rig.lane, [emission()])
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "publish failed with an unexpected error; retrying",
        "emissions name topics that do not exist; retrying",
    ]


async def test_a_permanent_error_gives_up_at_once() -> None:
    error = MessageSizeTooLargeError("too large")
    rig = Rig(Producer(error))
    assert await rig.publisher.publish(rig.lane, [emission()]) == GiveUp(UNPUBLISHABLE, error)
    assert rig.lane.sleeps == []


# --- handing off ----------------------------------------------------------------------------------


async def test_emissions_that_can_never_be_published_dead_letter_the_record_and_tell_the_processor() -> None:
    error = MessageSizeTooLargeError("too large")
    rig = Rig(Producer(error))
    told: list[tuple[Any, ...]] = []

    async def on_gave_up(*args: Any) -> None:
        told.append(args)

    rig.publisher.on_gave_up = on_gave_up
    rec, consumed = record(), echo("s")
    rig.publisher.hand_off(rig.lane, rec, consumed, Handoff("s", [emission()], "executed", 2, "com.h"), 1.5)
    await rig.publisher.drain(rig.lane)
    assert told == [(rec, consumed, "com.h", GiveUp(UNPUBLISHABLE, error))]
    [letter] = rig.dlq.attempts
    assert (letter.reason, letter.attempts, letter.error_class) == (
        "unpublishable",
        2,
        "MessageSizeTooLargeError",
    )
    assert rig.finished == [(rig.lane, rec, consumed.type, "dead_lettered", 1.5)]


async def test_an_unexpected_failure_while_finishing_is_logged_and_retried_after_the_longest_backoff() -> (
    None
):
    rig = Rig()
    rig.finish_errors.append(RuntimeError("finish broke"))
    rec, consumed = record(), echo("s")
    with structlog.testing.capture_logs() as logs:
        rig.publisher.hand_off(rig.lane, rec, consumed, Handoff("s", [emission()], "executed", 1, "h"), 0.0)
        await rig.publisher.drain(rig.lane)
    [line] = lines(logs, "publishing failed unexpectedly; retrying")
    assert line["partition"] == str(TP)
    assert line["log_level"] == "error"
    assert line["exc_info"] is True
    assert rig.lane.sleeps == [0.008]
    assert len(rig.finished) == 1
    assert len(rig.producer.published) == 2  # published again: the acks of the first try are not known


async def test_a_record_handed_off_while_its_lane_closes_is_abandoned_without_finishing() -> None:
    rig = Rig(Producer(*[KafkaConnectionError("down")] * 1000))
    rig.publisher.hand_off(rig.lane, record(), echo("s"), Handoff("s", [emission()], "executed", 1, "h"), 0.0)
    await wait_until(lambda: len(rig.lane.sleeps) >= 2)
    rig.lane.close()
    await rig.publisher.drain(rig.lane)
    assert rig.finished == []
    assert rig.lane.publishing == {}


async def test_abandon_cancels_the_lanes_unacknowledged_records_and_waits_for_them() -> None:
    rig = Rig()
    waiting = asyncio.Event()
    cancelled: list[str] = []

    async def publish(events: Iterable[ArvoEvent]) -> None:
        try:
            await waiting.wait()
        except asyncio.CancelledError:
            cancelled.append("publish")
            raise

    rig.producer.publish = publish  # type: ignore[method-assign]
    for instance in ("a", "b"):
        rig.publisher.hand_off(
            rig.lane, record(), echo(instance), Handoff(instance, [emission()], "executed", 1, "h"), 0.0
        )
    await asyncio.sleep(0)
    await rig.publisher.abandon(rig.lane)
    assert cancelled == ["publish", "publish"]
    assert rig.lane.publishing == {}
    assert rig.finished == []
    await rig.publisher.abandon(rig.lane)  # nothing left: returns at once


async def test_an_instance_whose_previous_record_was_abandoned_does_not_run() -> None:
    rig = Rig()
    abandoned = asyncio.create_task(asyncio.Event().wait())
    rig.lane.publishing["a"] = abandoned
    abandoned.cancel()
    with pytest.raises(LaneStopping):
        await rig.publisher.wait_for_instance(rig.lane, "a")


async def test_a_lane_at_its_in_flight_bound_waits_for_the_first_ack_of_any_instance() -> None:
    async with running(partitions=1, max_inflight_publishes_per_partition=2) as rig:
        release_a = rig.client.hold(when=by_key("a"))
        release_b = rig.client.hold(when=by_key("b"))
        a, b, c = echo("a", n=1), echo("b", n=2), echo("c", n=3)
        for event in (a, b, c):
            rig.produce(event)
        await wait_until(lambda: {a.id, b.id} <= set(rig.handler.executed))
        await asyncio.sleep(0.02)
        assert c.id not in rig.handler.attempts  # two records await acks: the lane is full
        release_a.set()
        # At once (not after a pause for a failure): b is still held.
        await wait_until(lambda: rig.sink() == [a.id, c.id], timeout_s=0.5)
        release_b.set()
        await wait_until(lambda: rig.committed() == 3)


# --- dead letters ---------------------------------------------------------------------------------


async def test_a_dead_letter_is_counted_reported_and_logged_with_its_coordinates() -> None:
    rig = Rig(dlq=DeadLetters(KafkaConnectionError("dlq down")))
    rec = record(offset=3)
    error = ValueError("e" * 600)
    with structlog.testing.capture_logs() as logs:
        await rig.publisher.dead_letter(
            rig.lane, rec, reason="contract", error=error, attempts=4, handler="com.h"
        )
    assert rig.stats.dead_lettered == {(TP.topic, "contract"): 1}
    assert ("on_dead_letter", (TP.topic, "contract")) in rig.hooks.calls
    assert rig.dependencies.is_up("kafka")  # reported down by the failure, up by the success
    [retry] = lines(logs, "dead-letter publish failed; retrying")
    assert (retry["error"], retry["log_level"]) == ("KafkaConnectionError('dlq down')", "debug")
    assert lines(logs, "record dead-lettered") == [
        {
            "event": "record dead-lettered",
            "log_level": "warning",
            "topic": TP.topic,
            "partition": TP.partition,
            "offset": 3,
            "reason": "contract",
            "error_class": "ValueError",
            "error": "e" * 500,
            "handler": "com.h",
            "attempts": 4,
        }
    ]
    assert lines(logs, "dependency available again; waiting records resume")[0]["dependency"] == "kafka"


async def test_a_missing_dead_letter_topic_is_waited_for_with_one_warning() -> None:
    rig = Rig(dlq=DeadLetters(*[UnknownTopicOrPartitionError("no dlq")] * 3))
    with structlog.testing.capture_logs() as logs:
        await rig.publisher.dead_letter(
            rig.lane, record(), reason="contract", error=ValueError("x"), attempts=1
        )
    assert len(rig.dlq.attempts) == 4
    assert lines(logs, "the dead-letter topic does not exist; waiting for it") == [
        {
            "event": "the dead-letter topic does not exist; waiting for it",
            "log_level": "warning",
            "topic": DLQ,
            "suppressed_since_last": 0,
        }
    ]


async def test_unexpected_dead_letter_errors_drop_the_payload_then_the_letter_after_the_attempts() -> None:
    error = RuntimeError("dlq refuses")
    rig = Rig(dlq=DeadLetters(always=error), give_up_attempts=2)
    rec = record(offset=5)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(2):
            await rig.publisher.dead_letter(rig.lane, rec, reason="parked", error=ValueError("x"), attempts=3)
    # Twice with the payload, twice without it (the count starts again), then given up.
    assert [letter.payload_dropped_bytes is not None for letter in rig.dlq.attempts] == [
        False,
        False,
        True,
        True,
    ]
    assert lines(logs, "dead-letter publish failed with an unexpected error; retrying") == [
        {
            "event": "dead-letter publish failed with an unexpected error; retrying",
            "log_level": "warning",
            "error": repr(error),
            "suppressed_since_last": 0,
        }
    ]
    assert lines(logs, "dead letter cannot be written even without its payload; dropping it") == [
        {
            "event": "dead letter cannot be written even without its payload; dropping it",
            "log_level": "error",
            "error": repr(error),
            "topic": TP.topic,
            "partition": TP.partition,
            "offset": 5,
            "reason": "parked",
        }
    ]
    # The record still counts as dead-lettered (the decision was made; the line says it was dropped).
    assert rig.stats.dead_lettered == {(TP.topic, "parked"): 1}
    assert len(lines(logs, "record dead-lettered")) == 1
    assert rig.stats.publish_retries == 0


async def test_one_unexpected_dead_letter_error_below_the_attempts_is_retried_with_the_payload() -> None:
    rig = Rig(dlq=DeadLetters(RuntimeError("once")), give_up_attempts=2)
    await rig.publisher.dead_letter(rig.lane, record(), reason="contract", error=ValueError("x"), attempts=1)
    assert [letter.payload_dropped_bytes for letter in rig.dlq.attempts] == [None, None]


async def test_broker_trouble_on_the_dead_letter_topic_never_drops_the_payload() -> None:
    rig = Rig(dlq=DeadLetters(*[KafkaConnectionError("down")] * 3), give_up_attempts=2)
    await rig.publisher.dead_letter(rig.lane, record(), reason="contract", error=ValueError("x"), attempts=1)
    assert [letter.payload_dropped_bytes for letter in rig.dlq.attempts] == [None] * 4
    assert rig.stats.publish_retries == 3
