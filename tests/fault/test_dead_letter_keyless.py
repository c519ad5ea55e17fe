"""A keyless record too large to dead-letter still becomes a dead letter, with a key and its diagnostics.

The finding (issue 11): a keyless record over ~1.1 MB is ``oversized``; its dead letter is too large
for the producer, so the payload is dropped — which left key = value = null, and aiokafka refused the
record (``AssertionError('Need at least one: key or value')``). Against the real broker and the
whole service: the letter is written with the source record's ``topic/partition/offset`` as key and
the diagnostics as value, the partition keeps flowing, and the tools read it and refuse to replay it.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from service.runtime.binding import encode_event
from service.runtime.client import ArvoClient
from tests.integration._kafka import KafkaNames, kafka_test_settings, unique_name
from tests.integration._redis import unique_prefix
from tests.integration._service import CLIENT, TopicTail, bench_init, delete_redis_prefix, running_service

pytestmark = pytest.mark.integration

PARTITION = 0
BIG = 1_200_000


async def test_a_keyless_record_too_large_to_dead_letter_is_dead_lettered_with_a_key_and_diagnostics(
    kafka_bootstrap: str, shared_redis_url: str
) -> None:
    names = KafkaNames(prefix=f"{unique_name()}.", group=unique_name("g"))
    prefix = unique_prefix()
    settings = kafka_test_settings(
        kafka_bootstrap,
        names,
        app="service.examples:bench_app",
        redis_url=shared_redis_url,
        redis_key_prefix=prefix,
    )
    padding = uuid.uuid4().hex
    poison = b'{"pad": "' + padding.encode() + b"x" * BIG + b'"}'
    good = bench_init(4, 5)
    message = encode_event(good)
    try:
        async with (
            TopicTail(kafka_bootstrap, names.topic(CLIENT)) as replies,
            running_service(settings) as service,
        ):
            topic = service.router.handler_topic("arvo.orc.bench")
            producer = AIOKafkaProducer(
                bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=4 * BIG
            )
            await producer.start()
            try:
                sent = await (await producer.send(topic, key=None, value=poison, partition=PARTITION))
                await asyncio.gather(
                    await producer.send(
                        topic,
                        key=message.key,
                        value=message.value,
                        headers=list(message.headers),
                        partition=PARTITION,
                    )
                )
            finally:
                await producer.stop()
            # The partition keeps flowing past the poison.
            completed = await replies.wait_for_replies([good.id], timeout_s=60)
            assert completed[good.id].data == {"result": 18}
            async with ArvoClient(settings) as client:
                records = await client.read_topic(settings.dead_letter_topic_name, min_records=1)
                letters = await client.dead_letters()
                outcomes = await client.replay(letters)
    finally:
        await delete_redis_prefix(shared_redis_url, prefix)

    [record] = records
    assert record.key == f"{topic}/{PARTITION}/{sent.offset}".encode()
    assert record.value is not None
    diagnostics = orjson.loads(record.value)
    assert diagnostics["arvo-dlq-reason"] == "oversized"
    assert diagnostics["arvo-dlq-origin-offset"] == str(sent.offset)
    [letter] = letters
    assert (letter.reason, letter.error_class) == ("oversized", "RecordDecodeError")
    assert (letter.origin_topic, letter.origin_partition, letter.origin_offset) == (
        topic,
        PARTITION,
        sent.offset,
    )
    assert (letter.key, letter.value) == (None, None)
    assert letter.payload_dropped_bytes is not None
    assert letter.payload_dropped_bytes >= BIG
    [(_, problem)] = outcomes
    assert problem is not None
    assert "lost its payload" in problem
    assert "cannot be replayed" in problem
