"""The Kafka client (:mod:`service.runtime.client`) against an in-memory cluster: no broker, fast.

:class:`FakeCluster` holds topics as lists of records per partition and hands the client its
producer, consumers and admin; ``tests/integration/test_client.py`` runs the client against the
real test broker. ``tests/unit/test_cli_runtime.py`` reuses the fakes for ``arvo dlq``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from service.arvo.event import ArvoEvent, create_arvo_event
from service.runtime.binding import RecordDecodeError, encode_event
from service.runtime.client import ArvoClient, answers, reply_topics
from service.runtime.dlq import DeadLetter
from service.runtime.producer import murmur2
from service.runtime.routing import RoutingError, TopicRouter
from service.runtime.settings import ServiceSettings, load_settings

Responder = Callable[["FakeCluster", ConsumerRecord[bytes, bytes]], None]


class FakeCluster:
    """Topics in memory, with the producer, consumers and admin an :class:`ArvoClient` is built from."""

    def __init__(self, *, partitions: int = 3) -> None:
        self.default_partitions = partitions
        self.logs: dict[str, list[list[ConsumerRecord[bytes, bytes]]]] = {}
        self.responders: list[Responder] = []
        self.ensured: list[list[str]] = []
        self.consumers: list[FakeConsumer] = []
        self.written: list[ConsumerRecord[bytes, bytes]] = []
        """Every record written, in order."""

    # ------------------------------------------------------------------ topics and records

    def create(self, topic: str, partitions: int | None = None) -> None:
        """Create ``topic`` (no-op when it exists)."""
        self.logs.setdefault(topic, [[] for _ in range(partitions or self.default_partitions)])

    def append(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> ConsumerRecord[bytes, bytes]:
        """Write one record (partition from the key as the service's partitioner picks it)."""
        self.create(topic)
        log = self.logs[topic]
        if partition is None:
            partition = (murmur2(key) & 0x7FFFFFFF) % len(log) if key is not None else 0
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=len(log[partition]),
            timestamp=int(time.time() * 1000),
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value or b""),
            headers=list(headers),
        )
        log[partition].append(record)
        self.written.append(record)
        for responder in list(self.responders):
            responder(self, record)
        return record

    def publish(self, event: ArvoEvent, topic: str) -> None:
        """Write ``event`` as the service encodes it."""
        message = encode_event(event)
        self.append(topic, key=message.key, value=message.value, headers=message.headers)

    def records(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of ``topic``, by partition then offset."""
        return [record for log in self.logs.get(topic, []) for record in log]

    # ------------------------------------------------------------------ the admin port

    async def list_topics(self) -> list[str]:
        return sorted(self.logs)

    async def partitions(self, topic: str) -> list[int]:
        return list(range(len(self.logs[topic]))) if topic in self.logs else []

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        self.ensured.append(list(topics))
        for topic in topics:
            self.create(topic)

    # ------------------------------------------------------------------ factories

    def consumer(self) -> FakeConsumer:
        consumer = FakeConsumer(self)
        self.consumers.append(consumer)
        return consumer

    def producer(self) -> FakeProducer:
        return FakeProducer(self)

    def client(self, settings: ServiceSettings, **kwargs: Any) -> ArvoClient:
        return ArvoClient(
            settings, producer_factory=self.producer, consumer_factory=self.consumer, admin=self, **kwargs
        )


class FakeConsumer:
    """A group-less consumer over a :class:`FakeCluster`; returns at most two records per partition a poll."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.positions: dict[TopicPartition, int] = {}
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(partitions, 0)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.cluster.logs[tp.topic][tp.partition]) for tp in partitions}

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        assert self.started
        assert not self.stopped
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
            for tp in partitions or tuple(self.positions):
                log = self.cluster.logs[tp.topic][tp.partition]
                records = log[self.positions[tp] : self.positions[tp] + 2]
                if records:
                    batch[tp] = records
                    self.positions[tp] += len(records)
            if batch or time.monotonic() >= deadline:
                return batch
            await asyncio.sleep(0.005)


class FakeProducer:
    """The ``AIOKafkaProducer`` calls of :class:`EventProducer`, writing to a :class:`FakeCluster`."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.started = self.stopped = False

    async def start(self) -> None:
        await asyncio.sleep(0)  # connecting takes a while: other tasks run meanwhile
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        assert self.started
        assert not self.stopped
        self.cluster.append(topic, key=key, value=value, headers=headers or [])
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def client_settings(**overrides: Any) -> ServiceSettings:
    """Settings of a client in these tests (no ``.env``, a topic prefix)."""
    values: dict[str, Any] = {"topic_prefix": "p.", "kafka_bootstrap_servers": "unused:9092"} | overrides
    return load_settings(env_file=None, **values)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    for name in list(__import__("os").environ):
        if name.startswith("ARVO_"):
            monkeypatch.delenv(name)
    return client_settings()


def init_event(**overrides: Any) -> ArvoEvent:
    values: dict[str, Any] = {
        "source": "com.arvo.cli",
        "type": "com.test.work",
        "subject": "subject-1",
        "data": {"n": 1},
    } | overrides
    return create_arvo_event(**values)


def completion(event: ArvoEvent, **overrides: Any) -> ArvoEvent:
    values: dict[str, Any] = {
        "source": event.type,
        "type": "evt.test.work.done",
        "subject": event.subject,
        "data": {"result": 42},
        "to": event.source,
        "parentid": event.id,
    } | overrides
    return create_arvo_event(**values)


def system_error(event: ArvoEvent) -> ArvoEvent:
    return create_arvo_event(
        source=event.type,
        type=f"sys.{event.type}.error",
        subject=event.subject,
        data={"errorName": "Boom", "errorMessage": "it broke", "errorStack": None},
        to=event.source,
        parentid="not-the-init",
    )


# ----------------------------------------------------------------------------------- reading


async def test_read_topic_returns_every_record_of_every_partition_up_to_the_end(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    for index in range(11):
        cluster.append("p.t", key=f"k{index}".encode(), value=f"v{index}".encode())
    cluster.create("p.empty")
    async with cluster.client(settings) as client:
        records = await client.read_topic("p.t")
        assert await client.read_topic("p.empty") == []
        assert await client.read_topic("p.missing") == []
    assert sorted(record.value for record in records) == sorted(f"v{i}".encode() for i in range(11))
    assert len({record.partition for record in records}) > 1
    for partition in {record.partition for record in records}:
        offsets = [record.offset for record in records if record.partition == partition]
        assert offsets == list(range(len(offsets)))
    assert all(consumer.stopped for consumer in cluster.consumers)


async def test_read_topics_reads_several_topics_and_list_topics_filters_by_prefix(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    cluster.append("p.a", key=b"1", value=b"a1")
    cluster.append("p.b", key=b"2", value=b"b1")
    cluster.append("other.c", key=b"3", value=b"c1")
    async with cluster.client(settings) as client:
        topics = await client.list_topics("p.")
        assert topics == ["p.a", "p.b"]
        records = await client.read_topics(topics)
    assert {topic: [record.value for record in items] for topic, items in records.items()} == {
        "p.a": [b"a1"],
        "p.b": [b"b1"],
    }


async def test_read_topic_waits_for_min_records_and_for_a_topic_that_must_exist(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, lambda: cluster.append("p.late", key=b"k", value=b"first"))
    loop.call_later(0.2, lambda: cluster.append("p.late", key=b"k", value=b"second"))
    async with cluster.client(settings) as client:
        records = await client.read_topic("p.late", min_records=2, timeout_s=5)
        assert [record.value for record in records] == [b"first", b"second"]
        with pytest.raises(TimeoutError, match="2 of 3 records"):
            await client.read_topic("p.late", min_records=3, timeout_s=0.2)
        with pytest.raises(TimeoutError, match=r"topic 'p\.never' does not exist"):
            await client.read_topic("p.never", must_exist=True, timeout_s=0.2)


async def test_read_events_decodes_records_and_skips_or_raises_on_undecodable_ones(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    event = init_event()
    cluster.publish(event, "p.t")
    cluster.append("p.t", key=event.subject.encode(), value=b"not json")
    async with cluster.client(settings) as client:
        assert await client.read_events("p.t", skip_undecodable=True) == [event]
        with pytest.raises(RecordDecodeError):
            await client.read_events("p.t")


async def test_tail_sees_only_what_arrives_after_it_was_opened(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    cluster.append("p.t", key=b"k", value=b"before")
    async with cluster.client(settings) as client, client.tail(["p.t", "p.missing"]) as tail:
        assert await tail.poll(0.01) == []
        cluster.append("p.t", key=b"k", value=b"after")
        assert [record.value for record in await tail.poll(1)] == [b"after"]
    async with cluster.client(settings) as client, client.tail(["p.missing"]) as tail:
        assert await tail.poll(0.01) == []


# ----------------------------------------------------------------------------------- publishing


async def test_publish_routes_keys_and_encodes_events_as_the_service_does(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    local, remote = init_event(), init_event(domain="ext", subject="subject-2")
    async with cluster.client(settings) as client:
        await client.publish([local, remote])
    [record] = cluster.records("p.com.test.work")
    message = encode_event(local)
    assert (record.key, record.value, record.headers) == (message.key, message.value, message.headers)
    assert [r.key for r in cluster.records("p.ext-com.test.work")] == [b"subject-2"]
    assert sorted(topic for batch in cluster.ensured for topic in batch) == [
        "p.com.test.work",
        "p.ext-com.test.work",
    ]


async def test_publish_creates_no_topic_without_create_topics_and_refuses_unroutable_events(
    cluster: FakeCluster,
) -> None:
    async with cluster.client(client_settings(create_topics=False)) as client:
        await client.publish([init_event()])
        with pytest.raises(RoutingError):
            await client.publish([init_event(to="bad-to")])
    assert cluster.ensured == []
    assert len(cluster.records("p.com.test.work")) == 1


async def test_publish_raw_sends_the_record_as_given(cluster: FakeCluster, settings: ServiceSettings) -> None:
    async with cluster.client(settings) as client:
        await client.publish_raw("p.raw", key=None, value=b"v", headers=[("h", b"1")])
    [record] = cluster.records("p.raw")
    assert (record.key, record.value, record.headers) == (None, b"v", [("h", b"1")])


def _reply_with(build: Callable[[ArvoEvent], ArvoEvent], *, delay_s: float = 0.05) -> Responder:
    """A responder answering every init on ``p.com.test.work`` a little later, on the routed reply topic."""

    def respond(cluster: FakeCluster, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.topic != "p.com.test.work":
            return
        event = ArvoEvent.from_json(record.value or b"")
        reply = build(event)
        topic = TopicRouter(prefix="p.").route_event(reply)
        asyncio.get_running_loop().call_later(delay_s, cluster.publish, reply, topic)

    return respond


async def test_publish_and_wait_returns_the_completion_and_ignores_what_came_before(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    event = init_event()
    # A completion of the same event already on the reply topic: from before, never returned.
    cluster.publish(completion(event, data={"result": -1}), "p.com.arvo.cli")
    cluster.responders.append(
        _reply_with(lambda init: init_event(type="com.unrelated.thing", subject="x", to="com.arvo.cli"))
    )
    cluster.responders.append(_reply_with(completion, delay_s=0.1))
    seen: list[str] = []
    ticks: list[float] = []

    async def published() -> None:
        seen.append("published")

    async with cluster.client(settings) as client:
        reply = await client.publish_and_wait(
            event, timeout_s=5, on_published=published, on_tick=ticks.append
        )
    assert reply is not None
    assert (reply.type, reply.parentid, reply.data) == ("evt.test.work.done", event.id, {"result": 42})
    assert answers(reply, event) is True
    assert seen == ["published"]
    assert ticks[0] == pytest.approx(0, abs=0.05)
    assert ["p.com.arvo.cli", "p.com.test.work"] in cluster.ensured


async def test_publish_and_wait_returns_a_system_error_on_the_subject(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    cluster.responders.append(_reply_with(system_error))
    event = init_event()
    calls: list[str] = []
    async with cluster.client(settings) as client:
        reply = await client.publish_and_wait(
            event, timeout_s=5, reply_topics=["p.com.arvo.cli"], on_published=lambda: calls.append("x")
        )
    assert reply is not None
    assert answers(reply, event) is False
    assert calls == ["x"]


async def test_publish_and_wait_returns_none_when_nothing_answers_in_time(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    started = time.monotonic()
    async with cluster.client(settings) as client:
        assert await client.publish_and_wait(init_event(), timeout_s=0.3) is None
    assert 0.3 <= time.monotonic() - started < 2


def test_reply_topics_cover_the_source_and_redirect_target_in_every_domain() -> None:
    router = TopicRouter(prefix="p.")
    assert reply_topics(router, source="com.a.b", redirectto=None, domain=None) == ["p.com.a.b"]
    assert reply_topics(router, source="com.a.b", redirectto="com.c.d", domain="ext") == [
        "p.com.a.b",
        "p.com.c.d",
        "p.ext-com.a.b",
        "p.ext-com.c.d",
    ]


def test_a_reply_is_a_child_of_the_published_event_or_a_system_error_on_its_subject() -> None:
    event = init_event()
    assert answers(completion(event), event) is True
    assert answers(system_error(event), event) is False
    stray_error = create_arvo_event(
        source="x.y.z", type="sys.x.y.z.error", subject=event.subject, data={}, parentid="other"
    )
    assert answers(stray_error, event) is False
    unrelated = create_arvo_event(
        source="x.y.z", type="evt.x.done", subject=event.subject, data={}, parentid="o"
    )
    assert answers(unrelated, event) is None


# ----------------------------------------------------------------------------------- dead letters


def write_dead_letter(
    cluster: FakeCluster,
    *,
    partition: int,
    reason: str = "not_json",
    origin: str = "p.com.test.work",
    dropped: bool = False,
) -> None:
    """Write a dead letter to ``p.arvo.dlq`` as the consumer loop does."""
    letter = DeadLetter.from_error(
        key=b"k",
        value=b"garbage",
        headers=[("content-type", b"application/json")],
        topic=origin,
        partition=1,
        offset=len(cluster.records("p.arvo.dlq")),
        timestamp=None,
        reason=reason,
        error=RecordDecodeError(reason, "record value is not JSON"),
    )
    if dropped:
        letter = letter.without_payload()
    cluster.append(
        "p.arvo.dlq", key=letter.key, value=letter.value, headers=letter.headers_out(), partition=partition
    )


async def test_dead_letters_are_filtered_ordered_by_partition_and_offset_and_limited(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    for partition, reason in [(2, "not_json"), (0, "contract"), (0, "not_json"), (1, "not_json")]:
        write_dead_letter(cluster, partition=partition, reason=reason)
    async with cluster.client(settings) as client:
        every = await client.dead_letters()
        chosen = await client.dead_letters(reason="not_json", limit=2)
        assert await client.dead_letters(topic="p.other.dlq") == []
    assert [(entry.partition, entry.offset) for entry in every] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert [(entry.partition, entry.offset, entry.reason) for entry in chosen] == [
        (0, 1, "not_json"),
        (1, 0, "not_json"),
    ]
    assert every[0].origin_topic == "p.com.test.work"
    assert every[0].original_headers == [("content-type", b"application/json")]


async def test_replay_sends_the_originals_back_and_reports_letters_that_cannot_be(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    write_dead_letter(cluster, partition=0)
    write_dead_letter(cluster, partition=1, dropped=True)
    async with cluster.client(settings) as client:
        entries = await client.dead_letters()
        outcomes = await client.replay(entries)
        assert await client.replay([]) == []
    assert (outcomes[0][0].partition, outcomes[0][1]) == (0, None)
    problem = outcomes[1][1]
    assert problem is not None
    assert problem.startswith("dead letter p.arvo.dlq/1@0 lost its payload")
    [replayed] = cluster.records("p.com.test.work")
    assert (replayed.key, replayed.value, replayed.headers) == (
        b"k",
        b"garbage",
        [("content-type", b"application/json")],
    )


async def test_the_producer_starts_on_first_use_and_stops_with_the_client(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    producers: list[FakeProducer] = []

    def factory() -> FakeProducer:
        producers.append(FakeProducer(cluster))
        return producers[-1]

    client = ArvoClient(settings, producer_factory=factory, consumer_factory=cluster.consumer, admin=cluster)
    async with client:
        await client.read_topic("p.t")
        assert producers == []
        await client.publish([init_event()])
        await client.publish([init_event()])
        assert len(producers) == 1
    assert producers[0].stopped
    assert client.router.prefix == "p."
    assert client.settings is settings


async def test_concurrent_first_publishes_start_one_producer(
    cluster: FakeCluster, settings: ServiceSettings
) -> None:
    producers: list[FakeProducer] = []

    def factory() -> FakeProducer:
        producers.append(FakeProducer(cluster))
        return producers[-1]

    async with ArvoClient(
        settings, producer_factory=factory, consumer_factory=cluster.consumer, admin=cluster
    ) as client:
        await asyncio.gather(*(client.publish([init_event(subject=f"s{index}")]) for index in range(5)))
    assert len(producers) == 1
    assert len(cluster.records("p.com.test.work")) == 5
