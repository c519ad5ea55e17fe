"""Redelivery: the same record twice makes one state transition and only byte-identical duplicates.

The module's service runs the bench orchestrator and the ``com.bench.add`` service, but not
``com.bench.double``, so a workflow stops after its second step and every emission stays on its topic
for inspection. Identical bytes are produced twice (same key, hence same partition, one after the
other), as Kafka re-delivers a record after a crash before its offset was committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiokafka.structs import ConsumerRecord

from contracts.bench import add_contract
from service.arvo.execution import ArvoHandler
from service.arvo.factory import create_arvo_event_factory
from service.arvo.orchestration.pipeline import consumed_key
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples.bench import bench_add_handler, bench_orchestrator
from service.runtime.app import ArvoService
from service.runtime.binding import decode_record, encode_event
from service.runtime.redis_memory import RedisMemory
from tests.integration._kafka import KafkaNames, kafka_test_settings, produce_records, read_topic, unique_name
from tests.integration._redis import unique_prefix
from tests.integration._service import bench_init, delete_redis_prefix, running_service, wait_until

pytestmark = pytest.mark.integration

ORCHESTRATOR = "arvo.orc.bench"
ADD = "com.bench.add"
DOUBLE = "com.bench.double"


@dataclass
class Harness:
    service: ArvoService
    memory: RedisMemory
    bootstrap: str

    def topic(self, name: str) -> str:
        return self.service.router.handler_topic(name)

    def outcomes(self, name: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (topic, _type, outcome), count in self.service.loop.stats.consumed.items():
            if topic == self.topic(name):
                counts[outcome] += count
        return counts


@pytest.fixture(scope="module")
async def harness(kafka_bootstrap: str, shared_redis_url: str) -> AsyncIterator[Harness]:
    names = KafkaNames(prefix=f"{unique_name()}.", group=unique_name("g"))
    prefix = unique_prefix()
    settings = kafka_test_settings(
        kafka_bootstrap, names, redis_url=shared_redis_url, redis_key_prefix=prefix
    )
    memory = RedisMemory.from_url(shared_redis_url, key_prefix=prefix)
    handlers: list[ArvoHandler] = [bench_orchestrator(memory), bench_add_handler()]
    try:
        async with running_service(settings, handlers=handlers, memory=memory) as service:
            yield Harness(service=service, memory=memory, bootstrap=kafka_bootstrap)
    finally:
        await delete_redis_prefix(shared_redis_url, prefix)


def _same_bytes(records: list[ConsumerRecord[bytes, bytes]]) -> None:
    first = records[0]
    for record in records[1:]:
        assert (record.key, record.value, list(record.headers)) == (
            first.key,
            first.value,
            list(first.headers),
        )


async def test_an_orchestrator_record_delivered_twice_transitions_once_and_replays_identical_events(
    harness: Harness,
) -> None:
    before = {name: harness.outcomes(name) for name in (ORCHESTRATOR, ADD)}
    init = bench_init(20, 1)
    message = encode_event(init)
    await produce_records(
        harness.bootstrap, harness.topic(ORCHESTRATOR), [(message.key, message.value, message.headers)] * 2
    )

    # Both add calls (the second one replayed) are served; both add replies reach the orchestrator,
    # the second one replayed again; the double calls wait on a topic nobody consumes.
    doubles = await read_topic(harness.bootstrap, harness.topic(DOUBLE), min_records=2, timeout_s=60)
    await wait_until(
        lambda: (
            sum((harness.outcomes(ORCHESTRATOR) - before[ORCHESTRATOR]).values()) == 4
            and sum((harness.outcomes(ADD) - before[ADD]).values()) == 2
        ),
        what="4 orchestrator and 2 add records finished",
    )
    assert harness.outcomes(ORCHESTRATOR) - before[ORCHESTRATOR] == Counter({"ok": 2, "replayed": 2})
    assert harness.outcomes(ADD) - before[ADD] == Counter({"ok": 1, "replayed": 1})

    adds = await read_topic(harness.bootstrap, harness.topic(ADD))
    doubles = await read_topic(harness.bootstrap, harness.topic(DOUBLE))
    assert len(adds) == len(doubles) == 2
    _same_bytes(adds)
    _same_bytes(doubles)
    add_call = decode_record(adds[0].value, adds[0].headers, max_bytes=1 << 20)
    assert (add_call.parentid, add_call.data) == (init.id, {"a": 20, "b": 1})

    inbound = await read_topic(harness.bootstrap, harness.topic(ORCHESTRATOR))
    events = [decode_record(record.value, record.headers, max_bytes=1 << 20) for record in inbound]
    replies = [record for record, event in zip(inbound, events, strict=True) if event.parentid == add_call.id]
    assert len(replies) == 2
    _same_bytes(replies)  # the add service's outbox made its second execution publish the same bytes
    reply = decode_record(replies[0].value, replies[0].headers, max_bytes=1 << 20)

    record = await harness.memory.inspect(ArvoOrchestrationSubject.parse(init.subject).instance_key)
    assert record is not None
    assert record["consumedIds"] == [consumed_key(init), consumed_key(reply)]  # one transition each
    assert record["value"] == "doubling"
    assert record["state"]["context"]["sum"] == 21
    assert record["events"]["consumed"]["id"] == reply.id
    assert [item["id"] for item in record["events"]["produced"]] == [
        decode_record(doubles[0].value, doubles[0].headers, max_bytes=1 << 20).id
    ]


async def test_a_stateless_service_record_delivered_twice_publishes_byte_identical_outputs(
    harness: Harness,
) -> None:
    client = f"com.redelivery.{unique_name('c')}"
    before = harness.outcomes(ADD)
    call = create_arvo_event_factory(add_contract.version("1.0.0")).accepts(
        source=client, data={"a": 4, "b": 5}
    )
    message = encode_event(call)
    await produce_records(
        harness.bootstrap, harness.topic(ADD), [(message.key, message.value, message.headers)] * 2
    )

    outputs = await read_topic(harness.bootstrap, harness.topic(client), min_records=2, timeout_s=60)
    await wait_until(
        lambda: sum((harness.outcomes(ADD) - before).values()) == 2, what="2 add records finished"
    )
    assert harness.outcomes(ADD) - before == Counter({"ok": 1, "replayed": 1})
    outputs = await read_topic(harness.bootstrap, harness.topic(client))
    assert len(outputs) == 2
    _same_bytes(outputs)
    reply = decode_record(outputs[0].value, outputs[0].headers, max_bytes=1 << 20)
    assert (reply.type, reply.parentid, reply.data) == ("evt.bench.add.success", call.id, {"sum": 9})
