"""The assembled service through the real broker and Redis: workflows complete end to end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts.bench import bench_machine_contract, bench_resumable_contract
from contracts.demo import order_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.runtime.app import ArvoService
from service.runtime.binding import decode_record, encode_event
from tests.integration._kafka import KafkaNames, kafka_test_settings, produce_records, read_topic

pytestmark = pytest.mark.integration
CLIENT = "com.kafka.test.client"


def bench_init(contract: Any, a: int) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(contract.version("1.0.0")).init(
        source=CLIENT, data={"a": a, "b": 1, "parentSubject$$": None}
    )


async def publish(bootstrap: str, topic: str, events: list[ArvoEvent]) -> None:
    messages = [encode_event(event) for event in events]
    await produce_records(bootstrap, topic, [(m.key, m.value, m.headers) for m in messages])


async def test_bench_and_demo_workflows_complete_through_kafka_in_one_process(
    kafka_bootstrap: str, kafka_names: KafkaNames, redis_key_prefix: str
) -> None:
    settings = kafka_test_settings(kafka_bootstrap, kafka_names, redis_key_prefix=redis_key_prefix)
    service = ArvoService.from_settings(settings)
    await service.start()
    try:
        await service.loop.wait_assigned(timeout_s=30)
        inits = [bench_init(bench_machine_contract, index) for index in range(5)]
        inits += [bench_init(bench_resumable_contract, index) for index in range(5, 10)]
        for init in inits:
            await publish(kafka_bootstrap, service.router.route_event(init), [init])
        order = create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
            source=CLIENT,
            data={
                "parentSubject$$": None,
                "orderId": "k-1",
                "customerId": "c",
                "country": "NL",
                "items": [{"sku": "sku-widget", "quantity": 1, "unitPriceCents": 100}],
            },
        )
        await publish(kafka_bootstrap, service.router.route_event(order), [order])
        replies = await read_topic(
            kafka_bootstrap, service.router.handler_topic(CLIENT), min_records=11, timeout_s=60
        )
    finally:
        await service.stop()
    events = [decode_record(record.value, record.headers, max_bytes=1 << 20) for record in replies]
    results = {event.parentid: event for event in events}
    for index, init in enumerate(inits):
        assert results[init.id].data == {"result": 2 * (index + 1)}
    assert results[order.id].type == "arvo.orc.order.done"
    assert results[order.id].data["status"] == "fulfilled"
    assert len(events) == 11, "exactly one reply per workflow"
    await asyncio.sleep(0)
