"""One Kafka client for the tools around the service: the CLI, the DLQ tooling, tests and benchmarks.

:class:`ArvoClient` is built from :class:`~service.runtime.settings.ServiceSettings` and offers:

* **publish** events through the runtime's :class:`~service.runtime.producer.EventProducer` and
  :class:`~service.runtime.routing.TopicRouter`, so topics, keys and headers are exactly the service's
  (:meth:`ArvoClient.publish`, :meth:`ArvoClient.publish_raw`);
* **publish and wait** for the completion or system error of a workflow
  (:meth:`ArvoClient.publish_and_wait`, what ``arvo publish --wait`` does);
* **read topics to their end** (:meth:`ArvoClient.read_topic`, :meth:`ArvoClient.read_topics`,
  :meth:`ArvoClient.read_events`): every partition from its beginning up to the end offsets, with a
  group-less consumer (manual assignment: it joins no group and commits nothing); empty and missing
  topics read as empty;
* **follow topics** from their current end (:meth:`ArvoClient.tail`);
* **the dead-letter topic**: list (:meth:`ArvoClient.dead_letters`) and replay
  (:meth:`ArvoClient.replay`).

Nothing connects until it is needed: the producer starts on the first publish, and every read opens
a consumer of its own for its duration. Unit tests inject fakes through ``producer_factory``,
``consumer_factory`` and ``admin``; :class:`RecordConsumer` and :class:`TopicAdmin` are what the client
needs of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiokafka import TopicPartition

from service.runtime import dlq
from service.runtime.binding import RecordDecodeError, decode_record
from service.runtime.producer import EventProducer
from service.runtime.routing import TopicRouter

if TYPE_CHECKING:
    from types import TracebackType

    from service.arvo.event import ArvoEvent
    from service.runtime.dlq import DeadLetterEntry
    from service.runtime.settings import ServiceSettings

__all__ = [
    "ArvoClient",
    "ConsumerFactory",
    "KafkaTopicAdmin",
    "ProducerFactory",
    "RecordConsumer",
    "Tail",
    "TopicAdmin",
    "answers",
    "reply_topics",
]

DEFAULT_READ_TIMEOUT_S: Final = 30.0
_POLL_S: Final = 0.1
_REPLY_POLL_S: Final = 0.2
_TOPIC_RECHECK_S: Final = 0.05


class RecordConsumer(Protocol):
    """What the client needs of a consumer (an ``AIOKafkaConsumer`` without a group)."""

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Disconnect."""

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read exactly ``partitions`` (replaces the previous assignment)."""

    async def seek_to_beginning(self, *partitions: TopicPartition) -> Any:
        """Position ``partitions`` at their first offset."""

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Position ``partition`` at ``offset``."""

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition."""

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record this consumer returns for ``partition``."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0) -> dict[TopicPartition, Any]:
        """Fetched records of ``partitions`` (all when none is named), waiting up to ``timeout_ms``."""


class TopicAdmin(Protocol):
    """What the client needs of the cluster's metadata: topic names, partitions and topic creation."""

    async def list_topics(self) -> list[str]:
        """Every topic name."""

    async def partitions(self, topic: str) -> list[int]:
        """The partition ids of ``topic`` (sorted), ``[]`` when it does not exist."""

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the missing ``topics`` with the settings' partitions and replication."""


ConsumerFactory = Callable[[], RecordConsumer]
"""Builds a group-less consumer (not yet started)."""
ProducerFactory = Callable[[], Any]
"""Builds the ``AIOKafkaProducer``-like client an :class:`EventProducer` sends with (not yet started)."""


class KafkaTopicAdmin:
    """:class:`TopicAdmin` of a real cluster: an aiokafka admin client per call (see ``kafka_admin``)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings

    async def list_topics(self) -> list[str]:
        """Every topic name (sorted)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self._settings.admin_kwargs())
        await admin.start()
        try:
            return sorted(await admin.list_topics())
        finally:
            await admin.close()

    async def partitions(self, topic: str) -> list[int]:
        """The partition ids of ``topic`` (sorted), ``[]`` when it does not exist (never creates it)."""
        from service.runtime.kafka_admin import topic_partitions

        return await topic_partitions(self._settings, topic)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the missing ``topics`` (idempotent)."""
        from service.runtime.kafka_admin import ensure_topics

        await ensure_topics(self._settings, topics)


def reply_topics(
    router: TopicRouter, *, source: str, redirectto: str | None, domain: str | None
) -> list[str]:
    """Where replies to an event from ``source`` can arrive: ``source`` (or ``redirectto``), any domain.

    Sorted, without repeats: the local topics of ``source`` and ``redirectto`` and, with a ``domain``,
    their topics in that domain too.
    """
    targets = [target for target in (source, redirectto) if target]
    return sorted({router.route(target, item) for target in targets for item in (None, domain)})


def answers(candidate: ArvoEvent, event: ArvoEvent) -> bool | None:
    """``True`` for a completion of ``event``, ``False`` for its system error, else ``None``.

    A completion is a child of ``event`` (``parentid`` is its id); a system error is a
    ``sys.<...>.error`` event that is its child or carries its subject.
    """
    is_error = candidate.type.startswith("sys.") and candidate.type.endswith(".error")
    if candidate.parentid == event.id:
        return not is_error
    if is_error and candidate.subject == event.subject:
        return False
    return None


class Tail:
    """The records arriving on some topics after it was opened (see :meth:`ArvoClient.tail`)."""

    def __init__(self, consumer: RecordConsumer, *, max_event_bytes: int, followed: bool) -> None:
        self._consumer = consumer
        self._max_event_bytes = max_event_bytes
        self._followed = followed

    async def poll(self, timeout_s: float) -> list[Any]:
        """The records that arrived since the last poll, waiting up to ``timeout_s`` for the first.

        Records are aiokafka ``ConsumerRecord`` s (topic, partition, offset, key, value, headers).
        """
        if not self._followed:  # none of the topics exists
            await asyncio.sleep(timeout_s)
            return []
        batch = await self._consumer.getmany(timeout_ms=max(1, int(timeout_s * 1000)))
        return [record for records in batch.values() for record in records]

    async def wait_for_reply(
        self,
        event: ArvoEvent,
        *,
        timeout_s: float,
        on_tick: Callable[[float], None] | None = None,
    ) -> ArvoEvent | None:
        """The first completion or system error of ``event`` (:func:`answers`); ``None`` after ``timeout_s``.

        Records that are not ArvoEvents, and events answering something else, are skipped.
        ``on_tick`` is called with the seconds waited so far before every poll (a progress display).
        """
        started = time.monotonic()
        while (remaining := started + timeout_s - time.monotonic()) > 0:
            if on_tick is not None:
                on_tick(time.monotonic() - started)
            for record in await self.poll(min(remaining, _REPLY_POLL_S)):
                try:
                    candidate = decode_record(record.value, record.headers, max_bytes=self._max_event_bytes)
                except RecordDecodeError:
                    continue
                if answers(candidate, event) is not None:
                    return candidate
        return None


class ArvoClient:
    """Publishes events and reads topics the way the service does (see the module docstring).

    Use it as an async context manager (``async with ArvoClient(settings) as client``), or call
    :meth:`stop` when done; it connects lazily.

    Args:
        settings: Connection, producer and consumer settings; also the topic prefix and router, the
            dead-letter topic, ``create_topics`` and ``max_event_bytes``.
        router: The topic router (default: the one of ``settings``, as the service builds it).
        producer_factory: Builds the producer client (default: the :class:`EventProducer`'s own, built
            from ``settings`` with the key partitioner).
        consumer_factory: Builds the group-less consumers of reads and tails (default: an
            ``AIOKafkaConsumer`` from ``settings``).
        admin: Topic metadata and creation (default: :class:`KafkaTopicAdmin`).

    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        router: TopicRouter | None = None,
        producer_factory: ProducerFactory | None = None,
        consumer_factory: ConsumerFactory | None = None,
        admin: TopicAdmin | None = None,
    ) -> None:
        self._settings = settings
        self._router = router if router is not None else TopicRouter.from_settings(settings)
        self._producer_factory = producer_factory
        self._consumer_factory = consumer_factory or self._kafka_consumer
        self._admin: TopicAdmin = admin if admin is not None else KafkaTopicAdmin(settings)
        self._producer: EventProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._ensured: set[str] = set()

    # --------------------------------------------------------------------------- life cycle

    @property
    def settings(self) -> ServiceSettings:
        """The settings the client was built from."""
        return self._settings

    @property
    def router(self) -> TopicRouter:
        """The topic router of :meth:`publish`."""
        return self._router

    async def __aenter__(self) -> ArvoClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop the producer (when one was started); the client can be used again afterwards."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def _kafka_consumer(self) -> RecordConsumer:
        from aiokafka import AIOKafkaConsumer

        consumer: RecordConsumer = AIOKafkaConsumer(
            **self._settings.kafka_common_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
            max_partition_fetch_bytes=max(1_048_576, self._settings.max_event_bytes + 65_536),
        )
        return consumer

    async def _event_producer(self) -> EventProducer:
        if self._producer is not None:
            return self._producer
        async with self._producer_lock:  # concurrent first publishes start one producer
            if self._producer is None:
                client = self._producer_factory() if self._producer_factory is not None else None
                producer = EventProducer(settings=self._settings, router=self._router, producer=client)
                await producer.start()
                self._producer = producer
            return self._producer

    # --------------------------------------------------------------------------- topics

    async def list_topics(self, prefix: str = "") -> list[str]:
        """The topics whose names start with ``prefix`` (sorted)."""
        return sorted(topic for topic in await self._admin.list_topics() if topic.startswith(prefix))

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the missing ``topics`` (settings' partitions and replication); each is checked once."""
        missing = sorted(set(topics) - self._ensured)
        if missing:
            await self._admin.ensure_topics(missing)
            self._ensured.update(missing)

    # --------------------------------------------------------------------------- publishing

    async def publish(self, events: Sequence[ArvoEvent]) -> None:
        """Publish ``events`` as the service does (routed, keyed by subject) and wait for every ack.

        Their topics are created first when ``settings.create_topics`` is on.

        Raises:
            RoutingError: an event cannot be routed (nothing was sent).
            KafkaError: a delivery failed.

        """
        if not events:
            return
        targets = [self._router.route_event(event) for event in events]
        if self._settings.create_topics:
            await self.ensure_topics(targets)
        producer = await self._event_producer()
        await producer.publish(events)

    async def publish_raw(
        self, topic: str, *, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Send one record as given (key, value, headers) to ``topic`` and wait for its ack."""
        producer = await self._event_producer()
        await producer.publish_raw(topic, key=key, value=value, headers=headers)

    def reply_topics(self, event: ArvoEvent) -> list[str]:
        """Where the completion or system error of ``event`` can arrive (see :func:`reply_topics`)."""
        return reply_topics(
            self._router, source=event.source, redirectto=event.redirectto, domain=event.domain
        )

    async def publish_and_wait(
        self,
        event: ArvoEvent,
        *,
        timeout_s: float,
        reply_topics: Sequence[str] | None = None,
        on_published: Callable[[], Awaitable[None] | None] | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> ArvoEvent | None:
        """Publish ``event`` and return its first completion or system error (``None`` after ``timeout_s``).

        The reply topics (and the event's topic, with ``create_topics``) are created when missing, and
        followed from their current end *before* the event is published, so a reply cannot be missed.
        Tell a completion from a system error with :func:`answers`.

        Args:
            event: The event to publish (usually a workflow's init event).
            timeout_s: How long to wait for the reply once the event was acknowledged.
            reply_topics: Where to look for the reply (default: :meth:`reply_topics` of ``event``).
            on_published: Called (and awaited when it returns an awaitable) once the event is
                acknowledged, before the wait.
            on_tick: Called with the seconds waited so far before every poll.

        Raises:
            RoutingError: the event cannot be routed (nothing was sent).

        """
        target = self._router.route_event(event)
        replies = list(reply_topics) if reply_topics is not None else self.reply_topics(event)
        await self.ensure_topics([*replies, *([target] if self._settings.create_topics else [])])
        async with self.tail(replies) as tail:
            await self.publish([event])
            if on_published is not None:
                result = on_published()
                if inspect.isawaitable(result):
                    await result
            return await tail.wait_for_reply(event, timeout_s=timeout_s, on_tick=on_tick)

    # --------------------------------------------------------------------------- reading

    @contextlib.asynccontextmanager
    async def tail(self, topics: Sequence[str]) -> AsyncIterator[Tail]:
        """Follow every partition of ``topics`` from its current end (missing topics are skipped).

        The end offsets are resolved before this returns: whatever is written afterwards is seen.
        """
        consumer = self._consumer_factory()
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, partition)
                for topic in topics
                for partition in await self._admin.partitions(topic)
            ]
            if partitions:
                consumer.assign(partitions)
                ends = await consumer.end_offsets(partitions)
                for partition in partitions:
                    consumer.seek(partition, ends[partition])
            yield Tail(consumer, max_event_bytes=self._settings.max_event_bytes, followed=bool(partitions))
        finally:
            await consumer.stop()

    async def read_topic(
        self,
        topic: str,
        *,
        min_records: int = 0,
        timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        must_exist: bool = False,
    ) -> list[Any]:
        """Every record of ``topic``, from the beginning to its end (see :meth:`read_topics`)."""
        records = await self.read_topics(
            [topic], min_records=min_records, timeout_s=timeout_s, must_exist=must_exist
        )
        return records[topic]

    async def read_topics(
        self,
        topics: Sequence[str],
        *,
        min_records: int = 0,
        timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        must_exist: bool = False,
    ) -> dict[str, list[Any]]:
        """Every record of ``topics``: all partitions, from their beginning at least to their end offsets.

        Reads with manual assignment (no group, nothing committed). The end offsets are taken when
        the read starts, so once the producers have stopped the result is exact. A topic that does
        not exist reads as empty.

        Args:
            topics: The topics to read.
            min_records: Keep reading (new records, new topics) until there are at least this many.
            timeout_s: Bound of the whole read.
            must_exist: Wait for every topic to exist instead of reading a missing one as empty.

        Returns:
            The records of each topic, each partition's in offset order.

        Raises:
            TimeoutError: the end (or ``min_records``, or the topics with ``must_exist``) was not
                reached within ``timeout_s``.

        """
        deadline = time.monotonic() + timeout_s
        result: dict[str, list[Any]] = {topic: [] for topic in topics}
        consumer: RecordConsumer | None = None
        assigned: list[TopicPartition] = []
        partitions: list[TopicPartition] = []
        missing = list(topics)
        try:
            while True:
                if missing:  # look again only while a topic is missing
                    partitions, missing = await self._partitions_of(topics)
                if must_exist and missing:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"topic {missing[0]!r} does not exist after {timeout_s:g} s")
                    await asyncio.sleep(_TOPIC_RECHECK_S)
                    continue
                if partitions and partitions != assigned:
                    # New topics or partitions: read everything again from the beginning.
                    if consumer is None:
                        consumer = self._consumer_factory()
                        await consumer.start()
                    consumer.assign(partitions)
                    await consumer.seek_to_beginning(*partitions)
                    assigned = partitions
                    for records in result.values():
                        records.clear()
                if consumer is not None:
                    await self._read_to_end(consumer, assigned, result, deadline)
                count = sum(len(records) for records in result.values())
                if count >= min_records:
                    return result
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{', '.join(topics)}: {count} of {min_records} records after {timeout_s:g} s"
                    )
                await asyncio.sleep(_TOPIC_RECHECK_S)
        finally:
            if consumer is not None:
                await consumer.stop()

    async def _partitions_of(self, topics: Sequence[str]) -> tuple[list[TopicPartition], list[str]]:
        partitions: list[TopicPartition] = []
        missing: list[str] = []
        for topic in topics:
            ids = await self._admin.partitions(topic)
            if not ids:
                missing.append(topic)
            partitions.extend(TopicPartition(topic, partition) for partition in ids)
        return partitions, missing

    @staticmethod
    async def _read_to_end(
        consumer: RecordConsumer,
        partitions: list[TopicPartition],
        into: dict[str, list[Any]],
        deadline: float,
    ) -> None:
        """Fetch until every partition's position reached the end offset taken now."""
        end = await consumer.end_offsets(partitions)
        pending = [tp for tp in partitions if await consumer.position(tp) < end[tp]]
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                behind = ", ".join(f"{tp.topic}/{tp.partition}" for tp in pending)
                raise TimeoutError(f"reading did not reach the end of {behind} in time")
            batch = await consumer.getmany(*pending, timeout_ms=max(1, int(min(remaining, _POLL_S) * 1000)))
            for tp, records in batch.items():
                into[tp.topic].extend(records)
            pending = [tp for tp in pending if await consumer.position(tp) < end[tp]]

    async def read_events(
        self,
        topic: str,
        *,
        min_records: int = 0,
        timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        must_exist: bool = False,
        skip_undecodable: bool = False,
    ) -> list[ArvoEvent]:
        """The records of ``topic`` (as :meth:`read_topic` reads them) decoded to ArvoEvents.

        Raises:
            RecordDecodeError: a record is not an ArvoEvent (unless ``skip_undecodable``).

        """
        events: list[ArvoEvent] = []
        for record in await self.read_topic(
            topic, min_records=min_records, timeout_s=timeout_s, must_exist=must_exist
        ):
            try:
                events.append(
                    decode_record(record.value, record.headers, max_bytes=self._settings.max_event_bytes)
                )
            except RecordDecodeError:
                if not skip_undecodable:
                    raise
        return events

    # --------------------------------------------------------------------------- dead letters

    async def dead_letters(
        self,
        *,
        topic: str | None = None,
        limit: int | None = None,
        reason: str | None = None,
        timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> list[DeadLetterEntry]:
        """The dead letters, read to the end of the dead-letter topic.

        Args:
            topic: Another dead-letter topic (default ``settings.dead_letter_topic_name``).
            limit: At most this many (the oldest: lowest partition, then offset).
            reason: Only those with this ``arvo-dlq-reason``.
            timeout_s: Bound of the read.

        Returns:
            Entries ordered by partition, then offset.

        """
        records = await self.read_topic(topic or self._settings.dead_letter_topic_name, timeout_s=timeout_s)
        entries = [
            dlq.DeadLetterEntry.from_record(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                headers=record.headers,
            )
            for record in records
        ]
        chosen = sorted(
            (entry for entry in entries if reason is None or entry.reason == reason),
            key=lambda entry: (entry.partition, entry.offset),
        )
        return chosen if limit is None else chosen[:limit]

    async def replay(self, entries: Sequence[DeadLetterEntry]) -> list[tuple[DeadLetterEntry, str | None]]:
        """Re-publish each entry's original record to its origin topic (see :func:`dlq.replay`).

        Returns:
            ``(entry, None)`` for each replayed entry, ``(entry, why)`` for each that cannot be
            replayed (its payload was dropped, or it names no origin topic).

        """
        outcomes: list[tuple[DeadLetterEntry, str | None]] = []
        if not entries:
            return outcomes
        producer = await self._event_producer()
        for entry in entries:
            try:
                await dlq.replay(entry, producer=producer)
            except ValueError as error:
                outcomes.append((entry, str(error)))
            else:
                outcomes.append((entry, None))
        return outcomes
