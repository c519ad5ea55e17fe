"""Durable timers on Redis and the test broker: a statechart's ``after`` fires through the service,
its timers survive a restart, move with their partition to another member, and fire exactly once in
effect."""

from __future__ import annotations

import pytest
import structlog

from contracts.bench import bench_timeout_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.runtime.app import ArvoService
from service.runtime.binding import decode_record
from service.runtime.redis_memory import RedisMemory
from service.runtime.redis_timer_index import RedisTimerIndex
from service.runtime.settings import ServiceSettings
from service.runtime.timer_index import partition_key
from tests.integration._kafka import KafkaNames, kafka_test_settings, read_topic
from tests.integration._service import CLIENT, exactly_once, publish_events, running_service, wait_until

pytestmark = pytest.mark.integration

APP = "service.examples.timers:timers_app"


def timeout_init(a: int, b: int, timeout_ms: int) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(bench_timeout_contract.version("1.0.0")).init(
        source=CLIENT, data={"parentSubject$$": None, "a": a, "b": b, "timeoutMs": timeout_ms}
    )


async def pending_hints(settings: ServiceSettings, topic: str) -> int:
    memory = RedisMemory.from_url(settings.redis_url.get_secret_value(), key_prefix=settings.redis_key_prefix)
    try:
        index = RedisTimerIndex(client=memory.client, key_prefix=settings.redis_key_prefix)
        counts = [await index.count(partition_key(topic, p)) for p in range(settings.topic_partitions)]
    finally:
        await memory.close()
    return sum(counts)


def settings_for(kafka_bootstrap: str, kafka_names: KafkaNames, redis_key_prefix: str) -> ServiceSettings:
    return kafka_test_settings(
        kafka_bootstrap, kafka_names, app=APP, redis_key_prefix=redis_key_prefix, timer_poll_interval_ms=50
    )


async def test_timers_fire_after_a_restart_and_answered_workflows_ignore_theirs(
    kafka_bootstrap: str, kafka_names: KafkaNames, redis_key_prefix: str
) -> None:
    settings = settings_for(kafka_bootstrap, kafka_names, redis_key_prefix)
    inits = [timeout_init(index, b, 4_000) for index, b in enumerate((1, 2, 3, 4, 5, 6))]
    replies_topic = ""
    async with running_service(settings) as first:
        topic = first.router.route_event(inits[0])
        replies_topic = first.router.handler_topic(CLIENT)
        await publish_events(kafka_bootstrap, topic, inits)
        answered = await read_topic(kafka_bootstrap, replies_topic, min_records=3, timeout_s=30)
        assert sorted(
            decode_record(r.value, r.headers, max_bytes=1 << 20).data["result"] for r in answered
        ) == [1, 5, 9]
        await wait_until(lambda: first.loop.stats.consumed.total() >= 6 + 6 + 3, what="every call made")
    # The service is gone before any timer was due: the six timers wait in Redis (three are stale).
    assert await pending_hints(settings, topic) == 6
    with structlog.testing.capture_logs():
        async with running_service(settings) as second:
            records = await read_topic(kafka_bootstrap, replies_topic, min_records=6, timeout_s=30)
            await wait_until(lambda: second.loop.stats.timers_fired >= 6, what="every timer fired")
    delivery = exactly_once(records, inits)
    outcomes = {init.data["b"]: delivery.completions[init.id].data for init in inits}
    assert outcomes == {
        1: {"result": 1, "timedOut": False},
        2: {"result": -1, "timedOut": True},
        3: {"result": 5, "timedOut": False},
        4: {"result": -1, "timedOut": True},
        5: {"result": 9, "timedOut": False},
        6: {"result": -1, "timedOut": True},
    }
    assert await pending_hints(settings, topic) == 0


async def test_a_partitions_timers_move_with_it_to_another_member(
    kafka_bootstrap: str, kafka_names: KafkaNames, redis_key_prefix: str
) -> None:
    settings = settings_for(kafka_bootstrap, kafka_names, redis_key_prefix)
    inits = [timeout_init(index, 2, 5_000) for index in range(9)]  # nobody answers: all time out
    first = ArvoService.from_settings(settings)
    await first.start()
    second: ArvoService | None = None
    try:
        await first.loop.wait_assigned(timeout_s=30)
        topic = first.router.route_event(inits[0])
        await publish_events(kafka_bootstrap, topic, inits)
        await wait_until(lambda: first.loop.stats.consumed.total() >= 18, what="every call made")
        second = ArvoService.from_settings(settings)
        await second.start()
        await second.loop.wait_assigned(timeout_s=30)
        await first.stop()  # its partitions, and their timers, go to the second member
        await wait_until(
            lambda: second is not None and len(second.loop.assignment) == 3 * 2, what="all partitions moved"
        )
        records = await read_topic(
            kafka_bootstrap, second.router.handler_topic(CLIENT), min_records=9, timeout_s=40
        )
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
    delivery = exactly_once(records, inits)
    assert {completion.data["timedOut"] for completion in delivery.completions.values()} == {True}
