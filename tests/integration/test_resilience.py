"""Outages and shutdowns mid-run: work pauses, resumes by itself, and nothing is lost or diverges.

* Redis restart: the service runs against a private ``redis-server`` (append-only file, so a restart
  keeps the data as a production Redis does) that is stopped with workflows in flight and started
  again on the same port; more workflows are published while it is down.
* Broker outage: a private Tansu broker (never the shared one) is frozen with ``SIGSTOP`` for a few
  seconds mid-run and thawed with ``SIGCONT`` (Tansu keeps data only in memory, so a real stop would
  lose it).
* Graceful shutdown: SIGTERM during load drains and commits; a restarted service finishes the rest.

Every test checks the delivery promise on the client's reply topic: each workflow completes exactly
once (one distinct completion id), any duplicate is a byte-identical copy, and the results are right.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.arvo.event import ArvoEvent
from service.runtime.app import ArvoService
from service.runtime.dlq import read_dead_letters
from service.runtime.redis_memory import RedisMemory
from service.runtime.settings import ServiceSettings
from tests.integration._kafka import (
    KafkaNames,
    kafka_test_settings,
    read_topic,
    start_tansu,
    stop_process,
)
from tests.integration._redis import PrivateRedisServer, unique_prefix
from tests.integration._service import (
    CLIENT,
    TopicTail,
    bench_init,
    consumed,
    delete_redis_prefix,
    exactly_once,
    publish_events,
    running_service,
    wait_until,
)

pytestmark = pytest.mark.integration

BENCH_APP = "service.examples:bench_app"
CONSUMED_TOPICS = ("arvo.orc.bench", "arvo.orc.bench.resumable", "com.bench.add", "com.bench.double")
FREEZE_TIMEOUT_MS = 5_000
"""Kafka request timeout of the broker-outage test: above a group join, below the freeze."""
FREEZE_S = 6.0
RECORDS_PER_WORKFLOW = 5  # init, add call, add reply, double call, double reply (completion not consumed)


def _workflows(first: int, count: int) -> list[ArvoEvent]:
    return [bench_init(first + index, index % 3, resumable=index % 2 == 1) for index in range(count)]


async def _publish(service: ArvoService, events: list[ArvoEvent]) -> None:
    by_topic: dict[str, list[ArvoEvent]] = {}
    for event in events:
        by_topic.setdefault(service.router.route_event(event), []).append(event)
    for topic, batch in by_topic.items():
        await publish_events(service.settings.kafka_bootstrap_servers, topic, batch)


def _assert_results(replies: TopicTail, inits: list[ArvoEvent]) -> int:
    delivery = exactly_once(replies.records, inits)
    for init in inits:
        completion = delivery.completions[init.id]
        assert completion.type == f"{init.type}.done", completion.data
        assert completion.data == {"result": 2 * (init.data["a"] + init.data["b"])}
    return delivery.duplicates


# ----------------------------------------------------------------------------------- Redis restart


async def test_a_redis_restart_mid_run_pauses_work_and_loses_nothing(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> None:
    server = PrivateRedisServer(
        directory=tmp_path / "redis", extra_args=["--appendonly", "yes", "--appendfsync", "always"]
    )
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        app=BENCH_APP,
        redis_url=server.url,
        # Outlast the outage: ~2 s down plus a lease left behind by a commit the outage cut off.
        lease_ttl_ms=3_000,
        handler_timeout_s=2.0,
        retry_initial_ms=20,
        retry_max_ms=400,
        retry_max_attempts=100,
    )
    server.start()
    try:
        async with (
            TopicTail(kafka_bootstrap, kafka_names.topic(CLIENT)) as replies,
            running_service(settings) as service,
        ):
            before = _workflows(0, 20)
            await _publish(service, before)
            await wait_until(lambda: consumed(service) >= 20, what="work in flight")
            server.stop()
            during = _workflows(100, 20)
            await _publish(service, during)  # consumed while Redis is down: every lane waits
            await wait_until(
                lambda: bool(service.loop.stats.dependency_waits["redis"]),
                what="records waiting for the stopped Redis",
            )
            assert "redis" in service.loop.dependencies.outages  # /readyz names it
            await asyncio.sleep(1.5)
            server.start()
            await replies.wait_for_replies([init.id for init in before + during], timeout_s=90)
            assert service.loop.stats.parked == 0
            assert not service.loop.stats.dead_lettered
            await wait_until(lambda: not service.loop.dependencies.outages, what="the outage to end")
        _assert_results(replies, before + during)
        memory = RedisMemory.from_url(server.url, key_prefix=settings.redis_key_prefix)
        try:
            statuses = {row.status.value for row in await memory.list_instances(limit=1000)}
            assert statuses == {"done"}
        finally:
            await memory.close()
        assert not await read_dead_letters(settings)
    finally:
        server.stop()


# ---------------------------------------------------------------------------------- broker outage


@contextlib.contextmanager
def private_broker() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Tansu broker of this test only (freezing the session's broker would stall other tests)."""
    bootstrap, process = start_tansu()
    try:
        yield bootstrap, process
    finally:
        stop_process(process)


async def test_a_frozen_broker_pauses_work_which_resumes_by_itself_when_it_returns(
    kafka_names: KafkaNames, shared_redis_url: str
) -> None:
    prefix = unique_prefix()
    try:
        with private_broker() as (bootstrap, broker):
            settings = kafka_test_settings(
                bootstrap,
                kafka_names,
                app=BENCH_APP,
                redis_url=shared_redis_url,
                redis_key_prefix=prefix,
                # Requests time out during the freeze (longer than this): publishing, fetching and
                # committing fail and are retried, and the member's session expires, so it rejoins.
                kafka_request_timeout_ms=FREEZE_TIMEOUT_MS,
            )
            async with (
                TopicTail(bootstrap, kafka_names.topic(CLIENT)) as replies,
                running_service(settings) as service,
            ):
                inits = _workflows(0, 30)
                await _publish(service, inits)
                await wait_until(lambda: consumed(service) >= 30, what="work in flight")
                broker.send_signal(signal.SIGSTOP)
                try:
                    at_stop = consumed(service)
                    await asyncio.sleep(FREEZE_S)
                finally:
                    broker.send_signal(signal.SIGCONT)
                assert at_stop < RECORDS_PER_WORKFLOW * len(inits)  # the outage really hit mid-run
                await replies.wait_for_replies([init.id for init in inits], timeout_s=90)
                assert service.loop.stats.parked == 0
            _assert_results(replies, inits)
            assert not await read_dead_letters(settings)
    finally:
        await delete_redis_prefix(shared_redis_url, prefix)


# ------------------------------------------------------------------------------- graceful shutdown


async def _total_records(settings: ServiceSettings, service: ArvoService) -> int:
    total = 0
    for name in CONSUMED_TOPICS:
        total += len(await read_topic(settings.kafka_bootstrap_servers, service.router.handler_topic(name)))
    return total


async def _sigterm_mid_run(settings: ServiceSettings, inits: list[ArvoEvent]) -> int:
    """Run a service as ``arvo run`` does, publish ``inits``, SIGTERM it under load; records it consumed."""
    first = ArvoService.from_settings(settings)
    runner = asyncio.create_task(first.run_until_signal())
    await first.loop.wait_assigned(timeout_s=30)
    await _publish(first, inits)
    await wait_until(lambda: consumed(first) >= 60, what="load")
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(runner, timeout=30) is None  # graceful: no loop failure
    done_by_first = consumed(first)
    assert done_by_first < RECORDS_PER_WORKFLOW * len(inits)  # stopped mid-run
    assert first.loop.stats.parked == 0
    return done_by_first


async def test_sigterm_under_load_commits_what_was_done_and_a_restart_finishes_the_rest_once(
    kafka_bootstrap: str, kafka_names: KafkaNames, shared_redis_url: str
) -> None:
    prefix = unique_prefix()
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, app=BENCH_APP, redis_url=shared_redis_url, redis_key_prefix=prefix
    )
    inits = _workflows(0, 60)
    try:
        async with TopicTail(kafka_bootstrap, kafka_names.topic(CLIENT)) as replies:
            done_by_first = await _sigterm_mid_run(settings, inits)

            async with running_service(settings) as second:
                await replies.wait_for_replies([init.id for init in inits], timeout_s=90)
                total = await _total_records(settings, second)
                # Everything the first service did was committed: the second one starts exactly
                # where it stopped, so no record is processed twice.
                await wait_until(lambda: done_by_first + consumed(second) >= total, what="all records")
                assert done_by_first + consumed(second) == total
                assert total == RECORDS_PER_WORKFLOW * len(inits)
        assert _assert_results(replies, inits) == 0
    finally:
        await delete_redis_prefix(shared_redis_url, prefix)


async def test_sigterm_with_admission_redelivers_what_was_done_above_a_waiting_init_and_loses_nothing(
    kafka_bootstrap: str, kafka_names: KafkaNames, shared_redis_url: str
) -> None:
    """Admission (opt-in) holds the commit at the first waiting init: a graceful stop commits less
    than was done, the restart processes those records again, and every workflow still completes
    once with its result (the replays are deduplicated: byte-identical copies at most)."""
    prefix = unique_prefix()
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        app=BENCH_APP,
        redis_url=shared_redis_url,
        redis_key_prefix=prefix,
        admission_backlog=1_000,
    )
    inits = _workflows(0, 60)
    try:
        async with TopicTail(kafka_bootstrap, kafka_names.topic(CLIENT)) as replies:
            done_by_first = await _sigterm_mid_run(settings, inits)

            async with running_service(settings) as second:
                await replies.wait_for_replies([init.id for init in inits], timeout_s=90)
                total = await _total_records(settings, second)
                await wait_until(lambda: done_by_first + consumed(second) >= total, what="all records")
                # Replayed records may emit again: copies of the same events (same ids, same bytes).
                assert total >= RECORDS_PER_WORKFLOW * len(inits)
                assert second.loop.stats.parked == 0
        _assert_results(replies, inits)
        assert not await read_dead_letters(settings)
    finally:
        await delete_redis_prefix(shared_redis_url, prefix)
