"""A crashed worker's lease delays its instance until the lease runs out; it never parks the record."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.bench import bench_machine_contract, bench_resumable_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.orchestrator import ArvoOrchestrator
from service.arvo.resumable import ArvoResumable
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.app import ArvoService
from service.runtime.binding import decode_record, encode_event
from service.runtime.redis_memory import RedisMemory
from tests.integration._kafka import KafkaNames, kafka_test_settings, produce_records, read_topic

CLIENT = "com.lease.test.client"


def bench_init(contract: Any, a: int) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(contract.version("1.0.0")).init(
        source=CLIENT, data={"a": a, "b": 1, "parentSubject$$": None}
    )


async def test_the_service_applies_its_lease_ttl_to_the_apps_orchestrators_and_resumables() -> None:
    settings = kafka_test_settings(
        "127.0.0.1:9", KafkaNames(prefix="p.", group="g"), lease_ttl_ms=4_321, handler_timeout_s=2.0
    )
    service = ArvoService.from_settings(
        settings, memory=RedisMemory.from_url("redis://127.0.0.1:9/0", key_prefix="unused")
    )
    await service.memory.close()
    stateful = [h for h in service.handlers if isinstance(h, ArvoOrchestrator | ArvoResumable)]
    assert len(stateful) >= 2
    assert {handler.lease_ttl_ms for handler in stateful} == {4_321}


@pytest.mark.integration
async def test_a_lease_left_by_a_crashed_worker_is_waited_out_not_parked(
    kafka_bootstrap: str, kafka_names: KafkaNames, shared_redis_url: str, redis_key_prefix: str
) -> None:
    # Three quick attempts would park the record in ~0.1 s; the dead holder's lease runs 1.5 s.
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        redis_url=shared_redis_url,
        redis_key_prefix=redis_key_prefix,
        retry_max_attempts=3,
        retry_initial_ms=5,
        retry_max_ms=50,
        lease_ttl_ms=1_500,
        handler_timeout_s=1.0,
    )
    inits = [bench_init(bench_machine_contract, 1), bench_init(bench_resumable_contract, 2)]
    crashed = RedisMemory.from_url(shared_redis_url, key_prefix=redis_key_prefix)
    try:
        for init in inits:  # what a worker killed between lease and commit leaves behind
            key = ArvoOrchestrationSubject.parse(init.subject).instance_key
            assert (await crashed.lease_and_read(key, ttl_ms=1_500)).acquired
    finally:
        await crashed.close()
    service = ArvoService.from_settings(settings)
    await service.start()
    try:
        await service.loop.wait_assigned(timeout_s=30)
        for init in inits:
            message = encode_event(init)
            await produce_records(
                kafka_bootstrap,
                service.router.route_event(init),
                [(message.key, message.value, message.headers)],
            )
        replies = await read_topic(
            kafka_bootstrap, service.router.handler_topic(CLIENT), min_records=2, timeout_s=30
        )
    finally:
        await service.stop()
    results = {
        event.parentid: event.data
        for event in (decode_record(r.value, r.headers, max_bytes=1 << 20) for r in replies)
    }
    assert results == {inits[0].id: {"result": 4}, inits[1].id: {"result": 6}}
    assert service.loop.stats.parked == 0
    assert service.loop.stats.retries[(service.router.route_event(inits[0]), "LeaseDeniedViolation")] >= 1
    assert not await read_topic(kafka_bootstrap, settings.dead_letter_topic_name)
