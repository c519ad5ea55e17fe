"""The Kafka client (:mod:`service.runtime.client`) against the real test broker.

``tests/unit/test_client.py`` covers the same behaviour on an in-memory cluster; here the reads, the
tail, the publish-and-wait round trip and the dead-letter tools run over the Kafka protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.arvo.event import ArvoEvent, create_arvo_event
from service.runtime.binding import RecordDecodeError, decode_record, encode_event
from service.runtime.client import ArvoClient, answers
from service.runtime.dlq import DeadLetter
from tests.integration._kafka import KafkaNames, kafka_test_settings

pytestmark = pytest.mark.integration

WORK = "com.test.client.work"
CLIENT = "com.test.client"


@pytest.fixture
async def client(kafka_bootstrap: str, kafka_names: KafkaNames) -> AsyncIterator[ArvoClient]:
    async with ArvoClient(kafka_test_settings(kafka_bootstrap, kafka_names)) as client:
        yield client


def work(index: int) -> ArvoEvent:
    return create_arvo_event(source=CLIENT, type=WORK, subject=f"subject-{index}", data={"index": index})


async def test_published_events_are_read_back_from_every_partition_and_empty_topics_read_empty(
    client: ArvoClient, kafka_names: KafkaNames
) -> None:
    events = [work(index) for index in range(12)]
    await client.publish(events)  # creates the topic: ARVO_CREATE_TOPICS is on
    topic = client.router.route_event(events[0])
    assert topic == kafka_names.topic(WORK)

    records = await client.read_topic(topic)
    assert sorted(record.key for record in records) == sorted(event.subject.encode() for event in events)
    assert len({record.partition for record in records}) > 1
    by_id = {record.value: record for record in records}
    for event in events:
        message = encode_event(event)
        assert [tuple(header) for header in by_id[message.value].headers] == message.headers
    decoded = await client.read_events(topic)
    assert sorted(decoded, key=lambda event: event.data["index"]) == events

    empty = kafka_names.topic("com.test.client.empty")
    await client.ensure_topics([empty])
    assert await client.read_topic(empty) == []
    missing = kafka_names.topic("com.test.client.missing")
    assert await client.read_topic(missing) == []
    assert await client.list_topics(kafka_names.prefix) == sorted([topic, empty])  # not auto-created


async def test_read_topic_waits_for_records_written_while_it_reads(
    client: ArvoClient, kafka_names: KafkaNames
) -> None:
    topic = kafka_names.topic(WORK)
    await client.ensure_topics([topic])

    async def later() -> None:
        await asyncio.sleep(0.3)
        await client.publish([work(1), work(2)])

    writing = asyncio.create_task(later())
    records = await client.read_topic(topic, min_records=2, timeout_s=20)
    await writing
    assert len(records) == 2
    with pytest.raises(TimeoutError):
        await client.read_topic(topic, min_records=3, timeout_s=0.5)


async def _answer_one(responder: ArvoClient, topic: str, ready: asyncio.Event) -> None:
    """Follow ``topic``; answer the first event on it with a completion to its source."""
    async with responder.tail([topic]) as tail:
        ready.set()
        while True:
            for record in await tail.poll(0.2):
                try:
                    event = decode_record(record.value, record.headers, max_bytes=1_048_576)
                except RecordDecodeError:
                    continue
                completion = create_arvo_event(
                    source=WORK,
                    type="evt.test.client.work.done",
                    subject=event.subject,
                    data={"index": event.data["index"] * 2},
                    to=event.source,
                    parentid=event.id,
                )
                await responder.publish([completion])
                return


async def test_publish_and_wait_returns_the_completion_of_the_published_event(
    client: ArvoClient, kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    topic = kafka_names.topic(WORK)
    await client.ensure_topics([topic])
    ready = asyncio.Event()
    async with ArvoClient(kafka_test_settings(kafka_bootstrap, kafka_names)) as responder:
        answering = asyncio.create_task(_answer_one(responder, topic, ready))
        await ready.wait()
        event = work(21)
        published: list[bool] = []
        reply = await client.publish_and_wait(
            event, timeout_s=20, on_published=lambda: published.append(True)
        )
        await answering
    assert published == [True]
    assert reply is not None
    assert (reply.type, reply.parentid, reply.data) == ("evt.test.client.work.done", event.id, {"index": 42})
    assert answers(reply, event) is True


async def test_publish_and_wait_returns_none_when_nobody_answers(client: ArvoClient) -> None:
    assert await client.publish_and_wait(work(1), timeout_s=1) is None


async def test_dead_letters_are_listed_and_replayed_to_their_topic(
    client: ArvoClient, kafka_names: KafkaNames
) -> None:
    origin = kafka_names.topic(WORK)
    dead_letter_topic = client.settings.dead_letter_topic_name
    await client.ensure_topics([origin, dead_letter_topic])
    for reason in ("not_json", "contract"):
        letter = DeadLetter.from_error(
            key=reason.encode(),
            value=b"original value",
            headers=[("h", b"1")],
            topic=origin,
            partition=0,
            offset=3,
            timestamp=None,
            reason=reason,
            error=ValueError("bad input"),
        )
        await client.publish_raw(
            dead_letter_topic, key=letter.key, value=letter.value, headers=letter.headers_out()
        )

    entries = await client.dead_letters()
    assert sorted(entry.reason for entry in entries) == ["contract", "not_json"]
    [entry] = await client.dead_letters(reason="contract")
    assert (entry.origin_topic, entry.origin_offset, entry.error_class) == (origin, 3, "ValueError")
    assert await client.replay([entry]) == [(entry, None)]
    [record] = await client.read_topic(origin)
    assert (record.key, record.value, list(record.headers)) == (b"contract", b"original value", [("h", b"1")])
