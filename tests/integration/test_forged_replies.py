"""Finding 8 of the dependency-fault run: a reply forged by any producer on the bus was accepted."""

from __future__ import annotations

import pytest

from contracts.bench import add_contract
from service.arvo.factory import create_arvo_event_factory
from service.examples.bench import bench_orchestrator
from service.runtime.binding import decode_record
from service.runtime.dlq import read_dead_letters
from service.runtime.redis_memory import RedisMemory
from tests.integration._kafka import KafkaNames, kafka_test_settings, read_topic
from tests.integration._service import bench_init, publish_events, running_service, wait_until

pytestmark = pytest.mark.integration


async def test_a_forged_reply_is_dead_lettered_and_the_real_one_drives_the_workflow(
    kafka_bootstrap: str, kafka_names: KafkaNames, redis_memory: RedisMemory
) -> None:
    settings = kafka_test_settings(kafka_bootstrap, kafka_names, redis_key_prefix=redis_memory.key_prefix)
    orchestrator = bench_orchestrator(redis_memory)  # no add/double services: the workflow waits for us
    replies = create_arvo_event_factory(add_contract.version("1.0.0"))
    async with running_service(settings, handlers=[orchestrator], memory=redis_memory) as service:
        init = bench_init(2, 3)
        topic = service.router.route_event(init)
        await publish_events(kafka_bootstrap, topic, [init])
        [call] = [
            decode_record(r.value, r.headers, max_bytes=1 << 20)
            for r in await read_topic(kafka_bootstrap, kafka_names.topic("com.bench.add"), min_records=1)
        ]
        forged = replies.emits(
            type="evt.bench.add.success",
            source="com.evil.actor",
            subject=init.subject,
            to=orchestrator.source,
            parentid=call.id,
            data={"sum": 1_000_000},
        )
        real = replies.emits(
            type="evt.bench.add.success",
            source="com.bench.add",
            subject=init.subject,
            to=orchestrator.source,
            parentid=call.id,
            data={"sum": 5},
        )
        await publish_events(kafka_bootstrap, topic, [forged, real])
        doubles = await read_topic(kafka_bootstrap, kafka_names.topic("com.bench.double"), min_records=1)
        await wait_until(lambda: sum(service.loop.stats.dead_lettered.values()) == 1, what="the dead letter")
    [double] = [decode_record(r.value, r.headers, max_bytes=1 << 20) for r in doubles]
    assert double.data == {"value": 5}  # the real sum, never the forged one
    [letter] = await read_dead_letters(settings)
    assert letter.reason == "foreign_source"
    assert decode_record(letter.value or b"", letter.original_headers, max_bytes=1 << 20).id == forged.id
    assert "com.evil.actor" in letter.error_message
    instances = await redis_memory.list_instances()
    assert [row.status.value for row in instances] == ["active"]  # a forged reply does not park it
