"""Finding 4 of the dependency-fault run: a consumed topic deleted and recreated under the service."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration._kafka import KafkaNames, kafka_test_settings, read_topic
from tests.integration._service import CLIENT, bench_init, publish_events, running_service, wait_until

pytestmark = pytest.mark.integration


async def test_a_consumed_topic_deleted_and_recreated_is_recovered_from(
    kafka_bootstrap: str, kafka_names: KafkaNames, redis_key_prefix: str
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        app="service.examples:bench_app",
        redis_key_prefix=redis_key_prefix,
        commit_interval_ms=50,
    )
    with structlog.testing.capture_logs() as logs:
        async with running_service(settings) as service:
            before = [bench_init(index) for index in range(12)]
            topic = service.router.route_event(before[0])
            await publish_events(kafka_bootstrap, topic, before)
            # Every workflow finished: deleting the topic loses nothing in flight.
            await read_topic(
                kafka_bootstrap, service.router.handler_topic(CLIENT), min_records=12, timeout_s=60
            )
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.delete_topics([topic])
                await asyncio.sleep(1.0)
                await admin.create_topics([NewTopic(topic, settings.topic_partitions, 1)])
            finally:
                await admin.close()
            await asyncio.sleep(3.0)
            # Counted before the new log's records exist: committing them needs a later commit
            # (counting after the replies arrive raced with the commit of the last record).
            commits = service.loop.stats.commits
            after = [bench_init(100 + index) for index in range(3)]
            await publish_events(kafka_bootstrap, topic, after)
            replies = await read_topic(
                kafka_bootstrap, service.router.handler_topic(CLIENT), min_records=15, timeout_s=60
            )
            assert len(replies) == 15
            await wait_until(lambda: service.loop.stats.commits > commits, what="a later commit")
            assert service.loop.commits_failing_for() == 0.0
    failures = [entry for entry in logs if entry["event"] == "offset commit failed; will retry"]
    assert len(failures) <= 2, failures
