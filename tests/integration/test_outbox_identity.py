"""Finding 5 of the dependency-fault run: two requests sharing an event id from different sources.

CloudEvents makes ``id`` unique per ``source`` only. Before the outbox keyed by the CloudEvents
identity, the second requester got nothing and the first got the second's call answered with the
first's data.
"""

from __future__ import annotations

import pytest

from contracts.bench import add_contract
from service.arvo.factory import create_arvo_event_factory
from service.runtime.app import ArvoService
from service.runtime.binding import decode_record, encode_event
from tests.integration._kafka import KafkaNames, kafka_test_settings, produce_records, read_topic

pytestmark = pytest.mark.integration


async def test_two_events_sharing_an_id_from_different_sources_each_get_their_own_reply(
    kafka_bootstrap: str, kafka_names: KafkaNames, redis_key_prefix: str
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, app="service.examples:bench_app", redis_key_prefix=redis_key_prefix
    )
    factory = create_arvo_event_factory(add_contract.version("1.0.0"))
    one = factory.accepts(id="shared-id", source="com.src.one", subject="same", data={"a": 1, "b": 2})
    two = factory.accepts(id="shared-id", source="com.src.two", subject="same", data={"a": 10, "b": 20})
    service = ArvoService.from_settings(settings)
    await service.start()
    try:
        await service.loop.wait_assigned(timeout_s=30)
        topic = service.router.route_event(one)
        for event in (one, two):
            message = encode_event(event)
            await produce_records(kafka_bootstrap, topic, [(message.key, message.value, message.headers)])
        replies = {}
        for requester in ("com.src.one", "com.src.two"):
            records = await read_topic(
                kafka_bootstrap, service.router.handler_topic(requester), min_records=1, timeout_s=60
            )
            replies[requester] = [decode_record(r.value, r.headers, max_bytes=1 << 20) for r in records]
    finally:
        await service.stop()
    assert [event.data for event in replies["com.src.one"]] == [{"sum": 3}]
    assert [event.data for event in replies["com.src.two"]] == [{"sum": 30}]
    # Their ids derive from the CloudEvents identity too: downstream dedupe keeps both.
    assert replies["com.src.one"][0].id != replies["com.src.two"][0].id
