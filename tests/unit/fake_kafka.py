"""An in-memory Kafka for unit tests of the consumer loop: a cluster, a consumer, a producer client.

* :class:`FakeKafka` — the "cluster": per-partition logs and the group's committed offsets.
* :class:`FakeConsumer` — what ``ConsumerLoop(consumer_factory=kafka.consumer)`` drives, with
  aiokafka's semantics where the loop depends on them: the listener is called on the first join
  (revoked ``set()``, then assigned) and on every :meth:`FakeConsumer.rebalance` (eager protocol:
  every owned partition revoked while the old assignment is still current, then the new one
  assigned); a (re)assigned partition starts at the group's committed offset with pause state
  cleared; ``getmany`` waits while a rebalance is in progress, skips paused partitions and honours
  ``max_records`` over all partitions; ``pause``/``resume``/``commit``/``highwater`` of an unassigned
  partition fail like aiokafka's (``IllegalStateError``/``AssertionError``).
* :class:`FakeProducerClient` — an ``AIOKafkaProducer`` stand-in for the real
  :class:`~service.runtime.producer.EventProducer` (so :class:`~service.runtime.dlq.DeadLetterPublisher`
  works unchanged): ``send`` returns the delivery future, resolved when the "broker" acks. Faults
  are scripted per sent record: fail N times (transient), fail always (permanent), hold the ack until
  released. Acknowledged records are appended to the cluster's logs.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    ConsumerStoppedError,
    IllegalStateError,
    KafkaConnectionError,
    MessageSizeTooLargeError,
)
from aiokafka.structs import ConsumerRecord

from service.arvo.event import ArvoEvent
from service.runtime.binding import decode_record, encode_event
from service.runtime.dlq import DeadLetterEntry
from service.runtime.producer import EventProducer, murmur2
from service.runtime.routing import TopicRouter
from service.runtime.settings import ServiceSettings

__all__ = [
    "FakeConsumer",
    "FakeKafka",
    "FakeProducerClient",
    "Fault",
    "Record",
    "SentRecord",
    "fake_event_producer",
]

Record = ConsumerRecord[bytes, bytes]
Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class SentRecord:
    """A record handed to :meth:`FakeProducerClient.send`."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def event(self) -> ArvoEvent:
        """The ArvoEvent the record carries."""
        return decode_record(self.value, self.headers, max_bytes=10_000_000)


class FakeKafka:
    """Partitions per topic, their logs, and one consumer group's committed offsets.

    Args:
        topics: Partition count of each topic (more appear with :meth:`create_topic`, or on first
            produce with one partition).

    """

    def __init__(self, topics: Mapping[str, int] | None = None) -> None:
        self.partitions: dict[str, int] = dict(topics or {})
        self.logs: defaultdict[TopicPartition, list[Record]] = defaultdict(list)
        self.committed: dict[TopicPartition, int] = {}
        """The group's committed position (next offset to consume) per partition."""
        self.consumers: list[FakeConsumer] = []
        self.unreachable = False
        """While ``True``, metadata requests fail (the broker does not answer)."""

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Add ``topic`` with ``partitions`` partitions (idempotent)."""
        self.partitions.setdefault(topic, partitions)

    def topic_partitions(self, topic: str) -> list[TopicPartition]:
        """The partitions of ``topic``."""
        return [TopicPartition(topic, p) for p in range(self.partitions.get(topic, 0))]

    def append(
        self,
        topic: str,
        partition: int,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = (),
    ) -> Record:
        """Write one record at the end of ``topic``/``partition``; return it (with its offset)."""
        self.create_topic(topic, partition + 1)
        if partition >= self.partitions[topic]:
            raise ValueError(f"{topic} has {self.partitions[topic]} partitions; no partition {partition}")
        tp = TopicPartition(topic, partition)
        log = self.logs[tp]
        record: Record = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=len(log),
            timestamp=int(time.time() * 1000),
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key) if key is not None else -1,
            serialized_value_size=len(value) if value is not None else -1,
            headers=list(headers),
        )
        log.append(record)
        for consumer in self.consumers:
            consumer.wake()
        return record

    def append_event(self, topic: str, partition: int, event: ArvoEvent) -> Record:
        """Write ``event`` as the producer would (structured mode, keyed by subject)."""
        message = encode_event(event)
        return self.append(topic, partition, key=message.key, value=message.value, headers=message.headers)

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, by partition then offset."""
        return [record for tp in self.topic_partitions(topic) for record in self.logs.get(tp, [])]

    def events(self, topic: str) -> list[ArvoEvent]:
        """The events of ``topic``, by partition then offset."""
        return [decode_record(r.value, r.headers, max_bytes=10_000_000) for r in self.records(topic)]

    def dead_letters(self, topic: str) -> list[DeadLetterEntry]:
        """The dead letters written to ``topic``, parsed as the operator tools read them."""
        return [
            DeadLetterEntry.from_record(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value,
                headers=r.headers,
            )
            for r in self.records(topic)
        ]

    def consumer(self) -> FakeConsumer:
        """A new consumer of the group (pass ``kafka.consumer`` as the loop's ``consumer_factory``)."""
        consumer = FakeConsumer(self)
        self.consumers.append(consumer)
        return consumer


@dataclass
class _PartitionState:
    position: int
    paused: bool = False
    highwater: int | None = None


class FakeConsumer:
    """An ``AIOKafkaConsumer`` in a group of one, over a :class:`FakeKafka` (see the module docstring).

    Attributes:
        assign_on_start: Partitions the first join assigns (default: every partition of the
            subscribed topics); ``set()`` to join with nothing and :meth:`rebalance` later.
        commits: Every successful ``commit`` call's offsets, in order.
        pause_calls / resume_calls: Every ``pause``/``resume`` call's partition, in order.
        fail_commits: How many next ``commit`` calls raise ``commit_error``.
        commit_gate: When set, ``commit`` waits for it first (a coordinator that does not answer).
        listener_errors: Exceptions the listener raised (aiokafka logs and swallows them).

    """

    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self.topics_subscribed: list[str] = []
        self.listener: ConsumerRebalanceListener | None = None
        self.assign_on_start: set[TopicPartition] | None = None
        self.started = False
        self.closed = False
        self.commits: list[dict[TopicPartition, int]] = []
        self.pause_calls: list[TopicPartition] = []
        self.resume_calls: list[TopicPartition] = []
        self.getmany_calls = 0
        self.fail_commits = 0
        self.commit_error: Exception = KafkaConnectionError("coordinator unreachable (fake)")
        self.commit_gate: asyncio.Event | None = None
        self.listener_errors: list[BaseException] = []
        self.join_task: asyncio.Task[None] | None = None
        self._assignment: dict[TopicPartition, _PartitionState] = {}
        self._reassigning = True  # until the first join completes
        self._assigned = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._rebalance_lock = asyncio.Lock()
        self._next_first = 0

    # --- the seam the loop uses -----------------------------------------------------------------

    def subscribe(self, topics: Iterable[str] = (), pattern: str | None = None, listener: Any = None) -> None:
        """Subscribe to ``topics``; ``listener`` gets the rebalance callbacks."""
        self.topics_subscribed = list(topics)
        self.listener = listener

    async def start(self) -> None:
        """Connect; the first group join (and its listener calls) runs in the background."""
        self.started = True
        targets = self.assign_on_start
        if targets is None:
            targets = {tp for topic in self.topics_subscribed for tp in self.kafka.topic_partitions(topic)}
        self.join_task = asyncio.create_task(self.rebalance(targets), name="fake-consumer-join")

    async def stop(self) -> None:
        """Leave the group (no listener call, as aiokafka); later ``getmany`` raises."""
        self.closed = True
        self.wake()
        if self.join_task is not None and not self.join_task.done():
            self.join_task.cancel()

    def assignment(self) -> set[TopicPartition]:
        """The current assignment (the old one while a revoke callback runs)."""
        return set(self._assignment)

    def paused(self) -> set[TopicPartition]:
        """Paused partitions."""
        return {tp for tp, state in self._assignment.items() if state.paused}

    def position(self, tp: TopicPartition) -> int:
        """The next offset ``getmany`` returns for ``tp``."""
        return self._state(tp).position

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition end seen by the last fetch of ``tp`` (``None`` before one)."""
        assert tp in self._assignment, "Partition is not assigned"
        return self._assignment[tp].highwater

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop returning records of ``partitions``."""
        for tp in partitions:
            self._state(tp).paused = True
            self.pause_calls.append(tp)

    def resume(self, *partitions: TopicPartition) -> None:
        """Return records of ``partitions`` again."""
        for tp in partitions:
            self._state(tp).paused = False
            self.resume_calls.append(tp)
        self.wake()

    async def topics(self) -> set[str]:
        """Every topic of the cluster."""
        return set(self.kafka.partitions)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Records past each assigned, unpaused partition's position; wait up to ``timeout_ms`` for some."""
        if self.closed:
            raise ConsumerStoppedError
        if max_records is not None and max_records < 1:
            raise ValueError("`max_records` must be a positive Integer")
        self.getmany_calls += 1
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        while True:
            while self._reassigning:  # aiokafka returns nothing that may belong to another member
                self._wakeup.clear()
                await self._assigned.wait()
                if self.closed:
                    raise ConsumerStoppedError
            self._wakeup.clear()
            batch = self._drain(partitions, max_records)
            remaining = deadline - asyncio.get_running_loop().time()
            if batch or remaining <= 0:
                return batch
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return {}
            if self.closed:
                raise ConsumerStoppedError

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (next offsets to consume) for the group."""
        for tp in offsets:
            if tp not in self._assignment:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        if self.commit_gate is not None:
            await self.commit_gate.wait()
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise self.commit_error
        self.commits.append(dict(offsets))
        self.kafka.committed.update(offsets)

    # --- driving it from a test -----------------------------------------------------------------

    async def rebalance(self, assignment: Iterable[TopicPartition]) -> None:
        """A group rebalance giving this member ``assignment`` (eager: everything revoked first)."""
        async with self._rebalance_lock:
            self._reassigning = True
            self._assigned.clear()
            revoked = set(self._assignment)
            await self._call_listener("on_partitions_revoked", revoked)
            new = set(assignment)
            self._assignment = {tp: _PartitionState(position=self.kafka.committed.get(tp, 0)) for tp in new}
            self._reassigning = False
            self._assigned.set()
            self.wake()
            await self._call_listener("on_partitions_assigned", new)

    def wake(self) -> None:
        """Wake a waiting ``getmany`` (new records, resume, stop)."""
        self._wakeup.set()
        if self.closed:
            self._assigned.set()

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed position of ``tp``."""
        return self.kafka.committed.get(tp)

    # --- internals --------------------------------------------------------------------------------

    def _state(self, tp: TopicPartition) -> _PartitionState:
        state = self._assignment.get(tp)
        if state is None:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        return state

    def _drain(
        self, partitions: Sequence[TopicPartition], max_records: int | None
    ) -> dict[TopicPartition, list[Record]]:
        batch: dict[TopicPartition, list[Record]] = {}
        budget = max_records
        order = list(self._assignment.items())
        if order:  # round robin, so that max_records starves no partition
            self._next_first = (self._next_first + 1) % len(order)
            order = order[self._next_first :] + order[: self._next_first]
        for tp, state in order:
            if partitions and tp not in partitions:
                continue
            if state.paused:
                continue
            log = self.kafka.logs.get(tp, [])
            state.highwater = len(log)
            if budget == 0:
                continue
            end = len(log) if budget is None else min(len(log), state.position + budget)
            records = log[state.position : end]
            if records:
                batch[tp] = records
                state.position = end
                if budget is not None:
                    budget -= len(records)
        return batch

    async def _call_listener(self, name: str, partitions: set[TopicPartition]) -> None:
        if self.listener is None:
            return
        try:
            result = getattr(self.listener, name)(partitions)
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:  # aiokafka logs a failing listener and carries on
            self.listener_errors.append(exc)


@dataclass
class Fault:
    """What :class:`FakeProducerClient` does to the sent records ``when`` matches.

    Attributes:
        when: Which records it applies to (all when ``None``).
        error: What the delivery fails with.
        times: How many matching records fail (``None``: all of them).
        gate: When set, matching records are acked only once it is set (released).

    """

    when: Callable[[SentRecord], bool] | None = None
    error: BaseException | None = None
    times: int | None = None
    gate: asyncio.Event | None = None
    hits: int = 0

    def matches(self, record: SentRecord) -> bool:
        return self.when is None or self.when(record)


@dataclass
class FakeProducerClient:
    """An ``AIOKafkaProducer`` stand-in: ``send`` returns the delivery future (see the module docstring).

    Attributes:
        sent: Every record handed to ``send``, acknowledged or not.
        acked: Records the "broker" acknowledged, in ack order (also appended to ``kafka``).

    """

    kafka: FakeKafka
    sent: list[SentRecord] = field(default_factory=list)
    acked: list[SentRecord] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    started: bool = False
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    # --- scripting --------------------------------------------------------------------------------

    def fail(
        self,
        times: int | None,
        *,
        error: BaseException | None = None,
        when: Callable[[SentRecord], bool] | None = None,
    ) -> Fault:
        """Fail the next ``times`` matching deliveries (all with ``None``), transiently by default."""
        fault = Fault(
            when=when, error=error or KafkaConnectionError("broker unreachable (fake)"), times=times
        )
        self.faults.append(fault)
        return fault

    def fail_permanently(self, *, when: Callable[[SentRecord], bool] | None = None) -> Fault:
        """Fail every matching delivery with an error no retry can fix (record too large)."""
        return self.fail(None, error=MessageSizeTooLargeError("record too large (fake)"), when=when)

    def hold(self, *, when: Callable[[SentRecord], bool] | None = None) -> asyncio.Event:
        """Hold the acks of matching records until the returned event is set."""
        gate = asyncio.Event()
        self.faults.append(Fault(when=when, gate=gate))
        return gate

    def acked_to(self, topic: str) -> list[SentRecord]:
        """Acknowledged records of ``topic``."""
        return [record for record in self.acked if record.topic == topic]

    @property
    def client(self) -> FakeClusterClient:
        """aiokafka's ``producer.client``: the cluster metadata (what ``missing_topics`` asks)."""
        return FakeClusterClient(self.kafka)

    # --- AIOKafkaProducer ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        """Disconnect; deliveries still held are cancelled (their futures with them)."""
        self.started = False
        pending = list(self._pending)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[None]:
        record = SentRecord(topic=topic, key=key, value=value, headers=tuple(headers or ()))
        self.sent.append(record)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        error: BaseException | None = None
        gates: list[asyncio.Event] = []
        for fault in list(self.faults):
            if not fault.matches(record):
                continue
            if fault.gate is not None and not fault.gate.is_set():
                gates.append(fault.gate)
            if (
                fault.error is not None
                and error is None
                and (fault.times is None or fault.hits < fault.times)
            ):
                fault.hits += 1
                error = fault.error
        task = asyncio.create_task(self._deliver(record, future, gates, error, partition))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return future

    async def _deliver(
        self,
        record: SentRecord,
        future: asyncio.Future[None],
        gates: list[asyncio.Event],
        error: BaseException | None,
        partition: int | None,
    ) -> None:
        try:
            for gate in gates:
                await gate.wait()
        except asyncio.CancelledError:
            future.cancel()
            raise
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
            return
        partitions = self.kafka.partitions.get(record.topic, 1)
        chosen = partition if partition is not None else _partition_of(record.key, partitions)
        self.kafka.append(record.topic, chosen, key=record.key, value=record.value, headers=record.headers)
        self.acked.append(record)
        future.set_result(None)


@dataclass
class FakeClusterMetadata:
    names: set[str]

    def topics(self) -> set[str]:
        return set(self.names)


@dataclass
class FakeClusterClient:
    """``AIOKafkaClient.fetch_all_metadata``: the topics of ``kafka`` (fails while it is unreachable)."""

    kafka: FakeKafka

    async def fetch_all_metadata(self) -> FakeClusterMetadata:
        if self.kafka.unreachable:
            raise KafkaConnectionError("broker unreachable (fake)")
        return FakeClusterMetadata(set(self.kafka.partitions))


def _partition_of(key: bytes | None, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key); partition 0 without a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions if key is not None else 0


def fake_event_producer(
    kafka: FakeKafka, settings: ServiceSettings, *, router: TopicRouter | None = None
) -> tuple[EventProducer, FakeProducerClient]:
    """The real :class:`EventProducer` over a :class:`FakeProducerClient` (start it before use)."""
    client = FakeProducerClient(kafka)
    producer = EventProducer(
        settings=settings,
        router=router or TopicRouter.from_settings(settings),
        producer=client,  # type: ignore[arg-type]
    )
    return producer, client
