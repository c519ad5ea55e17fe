"""Publishing off a lane's critical path: other instances go ahead, the same instance waits for acks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka import TopicPartition

from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionResult, InheritFrom
from service.runtime.binding import encode_event
from service.runtime.producer import EventProducer
from service.runtime.settings import ServiceSettings
from tests.integration._kafka import (
    KafkaNames,
    create_test_topics,
    kafka_test_settings,
    produce_records,
    read_topic,
)
from tests.integration.test_consumer_loop import (
    ECHO,
    SINK,
    EchoHandler,
    consumed_total,
    echo_event,
    running_loop,
    sink_events,
    wait_until,
)

pytestmark = pytest.mark.integration

HELD_SUBJECT = "instance-a"


class HeldProducer(EventProducer):
    """Holds back the first publish of ``instance-a``'s emissions until :attr:`release` is set."""

    release: asyncio.Event
    acknowledged: set[str]

    async def publish(self, events: Sequence[ArvoEvent]) -> None:
        if any(event.subject == HELD_SUBJECT for event in events) and not HeldProducer.release.is_set():
            await HeldProducer.release.wait()
        await super().publish(events)
        HeldProducer.acknowledged.update(event.data["consumed"] for event in events)


class AckCheckingHandler(EchoHandler):
    """Echo handler that notes, for each execution, which consumed events' echoes were acked by then."""

    def __init__(self) -> None:
        super().__init__()
        self.acked_before: dict[str, frozenset[str]] = {}

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        self.acked_before[event.id] = frozenset(HeldProducer.acknowledged)
        return await super().execute(event, inherit_from=inherit_from)


@pytest.fixture
async def one_partition(kafka_bootstrap: str, kafka_names: KafkaNames) -> ServiceSettings:
    settings = kafka_test_settings(kafka_bootstrap, kafka_names, max_inflight_publishes_per_partition=8)
    await create_test_topics(
        settings,
        [kafka_names.topic(ECHO), kafka_names.topic(SINK), settings.dead_letter_topic_name],
        partitions=1,
    )
    return settings


async def test_a_lane_runs_other_instances_while_a_publish_is_pending_and_holds_back_the_same_instance(
    one_partition: ServiceSettings, kafka_names: KafkaNames
) -> None:
    settings = one_partition
    HeldProducer.release = asyncio.Event()
    HeldProducer.acknowledged = set()
    first_a = echo_event(HELD_SUBJECT, n=1)
    others = [echo_event("instance-b", n=2), echo_event("instance-c", n=3)]
    second_a = echo_event(HELD_SUBJECT, n=4)
    inputs = [first_a, *others, second_a]
    handler = AckCheckingHandler()
    async with running_loop(settings, handler, producer_class=HeldProducer) as loop:
        messages = [encode_event(event) for event in inputs]
        await produce_records(
            settings.kafka_bootstrap_servers,
            kafka_names.topic(ECHO),
            [(message.key, message.value, message.headers) for message in messages],
            partition=0,
        )
        lane = loop._lanes[TopicPartition(kafka_names.topic(ECHO), 0)]
        # The lane got past the held publish: both other instances ran and were acknowledged, and it
        # now waits (busy, nothing left in its queue) before running instance-a's second event.
        await wait_until(lambda: consumed_total(loop) == 2 and lane.busy and not lane.records)
        assert handler.executed == [first_a.id, *(event.id for event in others)]
        assert HeldProducer.acknowledged == {event.id for event in others}
        assert second_a.id not in handler.attempts
        assert lane.tracker.committable is None  # the held record blocks the commit of the later ones
        HeldProducer.release.set()
        await wait_until(lambda: consumed_total(loop) == len(inputs))
    assert handler.executed == [event.id for event in inputs]
    assert first_a.id in handler.acked_before[second_a.id]  # ran only once the first one's acks came
    outputs = sink_events(await read_topic(settings.kafka_bootstrap_servers, kafka_names.topic(SINK)))
    assert [event.data["consumed"] for event in outputs] == [
        *(event.id for event in others),
        first_a.id,
        second_a.id,
    ]


async def test_with_one_publish_in_flight_a_lane_waits_for_every_ack(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    settings = kafka_test_settings(kafka_bootstrap, kafka_names, max_inflight_publishes_per_partition=1)
    await create_test_topics(
        settings,
        [kafka_names.topic(ECHO), kafka_names.topic(SINK), settings.dead_letter_topic_name],
        partitions=1,
    )
    HeldProducer.release = asyncio.Event()
    HeldProducer.acknowledged = set()
    inputs = [echo_event(HELD_SUBJECT, n=1), echo_event("instance-b", n=2)]
    handler = AckCheckingHandler()
    async with running_loop(settings, handler, producer_class=HeldProducer) as loop:
        messages = [encode_event(event) for event in inputs]
        await produce_records(
            settings.kafka_bootstrap_servers,
            kafka_names.topic(ECHO),
            [(message.key, message.value, message.headers) for message in messages],
            partition=0,
        )
        lane = loop._lanes[TopicPartition(kafka_names.topic(ECHO), 0)]
        await wait_until(lambda: handler.executed == [inputs[0].id] and lane.busy and not lane.records)
        assert inputs[1].id not in handler.attempts
        HeldProducer.release.set()
        await wait_until(lambda: consumed_total(loop) == len(inputs))
    assert inputs[0].id in handler.acked_before[inputs[1].id]
