"""Finding 8 of the dependency-fault run: a reply forged by any producer on the bus was accepted.

With ``ARVO_REPLY_SOURCE_CHECK=addressed`` (the default) a reply from a source the orchestration did
not address is dead-lettered; with ``strict`` also one whose ``parentid`` is no event the instance
emitted.
"""

from __future__ import annotations

import pytest

from contracts.bench import add_contract
from service.arvo.factory import create_arvo_event_factory
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples.bench import bench_orchestrator
from service.runtime.binding import decode_record
from service.runtime.dlq import read_dead_letters
from service.runtime.redis_memory import RedisMemory
from tests.integration._kafka import KafkaNames, kafka_test_settings, read_topic
from tests.integration._service import (
    CLIENT,
    bench_init,
    consumed,
    order_init,
    publish_events,
    running_service,
    wait_until,
)

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


# ------------------------------------------------------------------------------------------------------
# ARVO_REPLY_SOURCE_CHECK=strict: the right source is not enough, the parentid must be an emitted event


@pytest.mark.parametrize("mode", ["strict", "addressed"])
async def test_a_forged_reply_with_the_right_source_and_a_made_up_parentid(
    mode: str, kafka_bootstrap: str, kafka_names: KafkaNames, redis_memory: RedisMemory
) -> None:
    """Strict: dead-lettered ``foreign_source`` and the real reply drives the workflow; addressed: taken."""
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, redis_key_prefix=redis_memory.key_prefix, reply_source_check=mode
    )
    orchestrator = bench_orchestrator(redis_memory)  # no add/double services: the workflow waits for us
    orchestrator.reply_source_check = settings.reply_source_check  # explicit handlers are used as given
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
            source="com.bench.add",  # the source the orchestrator addressed: only the parentid is wrong
            subject=init.subject,
            to=orchestrator.source,
            parentid="made-up-parent-id",
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
        await wait_until(lambda: consumed(service) >= 3, what="the three events consumed")
    [double] = [decode_record(r.value, r.headers, max_bytes=1 << 20) for r in doubles]
    letters = await read_dead_letters(settings)
    record = await redis_memory.inspect(ArvoOrchestrationSubject.parse(init.subject).instance_key)
    assert record is not None
    if mode == "strict":
        assert double.data == {"value": 5}  # the real sum, never the forged one
        [letter] = letters
        assert letter.reason == "foreign_source"
        assert decode_record(letter.value or b"", letter.original_headers, max_bytes=1 << 20).id == forged.id
        assert "made-up-parent-id" in letter.error_message
        assert record["emittedIds"] == [call.id, double.id]
    else:
        assert double.data == {"value": 1_000_000}  # addressed mode checks the source only
        assert letters == []
        assert "emittedIds" not in record


async def test_every_bench_and_demo_workflow_completes_in_strict_mode(
    kafka_bootstrap: str, kafka_names: KafkaNames, redis_key_prefix: str
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, redis_key_prefix=redis_key_prefix, reply_source_check="strict"
    )
    inits = [bench_init(index, resumable=index % 2 == 1) for index in range(10)]
    orders = [order_init("strict-ok"), order_init("strict-jp"), order_init("strict-sku", sku="sku-unknown")]
    orders[1] = orders[1].replace(data={**orders[1].data, "country": "JP"})  # the child shipment fails
    async with running_service(settings) as service:
        for init in [*inits, *orders]:
            await publish_events(kafka_bootstrap, service.router.route_event(init), [init])
        replies = await read_topic(
            kafka_bootstrap, service.router.handler_topic(CLIENT), min_records=len(inits) + 3, timeout_s=60
        )
        memory = service.memory
        records = [
            await memory.inspect(ArvoOrchestrationSubject.parse(init.subject).instance_key) for init in inits
        ]
    events = {
        event.parentid: event
        for event in (decode_record(r.value, r.headers, max_bytes=1 << 20) for r in replies)
    }
    for index, init in enumerate(inits):
        assert events[init.id].data == {"result": 2 * (index + 1)}
    assert events[orders[0].id].data["status"] == "fulfilled"
    assert events[orders[1].id].data["status"] == "shipping_failed"  # the child's system error accepted
    assert events[orders[2].id].type == "sys.arvo.orc.order.error"  # the system error to the initiator
    assert len(replies) == len(inits) + 3
    assert sum(service.loop.stats.dead_lettered.values()) == 0
    assert await read_dead_letters(settings) == []
    assert all(record is not None and len(record["emittedIds"]) == 3 for record in records)
