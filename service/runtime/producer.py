"""Publishing ArvoEvents to Kafka: routed by ``to``/``domain``, keyed by subject, structured mode.

:meth:`EventProducer.publish` hands every event of a batch to the client first and only then awaits
the delivery futures together, so one execution's emissions travel as one batch (one flush, one
round of acks) and the call returns only when every record is acknowledged (``acks=all`` by
default). It raises on the first failed delivery; the caller retries the whole batch, which is safe
because emitted event ids are deterministic and consumers dedupe by id.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)

from service.runtime.binding import encode_event

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent
    from service.runtime.routing import TopicRouter
    from service.runtime.settings import ServiceSettings

__all__ = ["EventProducer", "is_permanent_publish_error"]

_PERMANENT_PUBLISH_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    UnsupportedForMessageFormatError,
    ValueError,  # includes RoutingError: the event names no legal topic
    TypeError,
)


def is_permanent_publish_error(error: BaseException) -> bool:
    """Whether retrying a failed publish cannot help (record too large, illegal topic, bad input).

    Everything else (timeouts, connection loss, leader changes, authorization) is treated as broker
    trouble worth waiting out: aiokafka's ``retriable`` flag is not used because it is ``False`` on
    ``KafkaTimeoutError``, which is exactly what an unreachable broker produces.
    """
    return isinstance(error, _PERMANENT_PUBLISH_ERRORS)


class EventProducer:
    """aiokafka producer wrapper for ArvoEvents and raw (dead-letter, replay) records.

    Args:
        settings: Connection, acks, idempotence and batching settings.
        router: Maps each event to its topic.
        producer: An already built client (tests); built from ``settings`` when omitted.

    """

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        router: TopicRouter,
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        self._settings = settings
        self._router = router
        self._producer = producer
        self._started = False
        self.produced: Counter[tuple[str, str]] = Counter()
        """Acknowledged events by ``(topic, type)`` (for metrics)."""

    @property
    def router(self) -> TopicRouter:
        """The topic router used by :meth:`publish`."""
        return self._router

    async def start(self) -> None:
        """Connect to the cluster (idempotent)."""
        if self._started:
            return
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self._settings.producer_kwargs())
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        """Flush pending records and disconnect."""
        if self._producer is not None and self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _client(self) -> AIOKafkaProducer:
        if self._producer is None or not self._started:
            raise RuntimeError("EventProducer is not started; call 'await producer.start()' first")
        return self._producer

    async def publish(self, events: Sequence[ArvoEvent]) -> None:
        """Send ``events`` in order and wait until the broker acknowledged all of them.

        Raises:
            RoutingError: an event cannot be routed (nothing was sent).
            KafkaError: a delivery failed (some records of the batch may have been written).

        """
        if not events:
            return
        client = self._client()
        routed = [(self._router.route_event(event), event) for event in events]
        futures: list[asyncio.Future[Any]] = []
        try:
            for topic, event in routed:
                message = encode_event(event)
                futures.append(
                    await client.send(topic, value=message.value, key=message.key, headers=message.headers)
                )
        finally:
            # Never leave a delivery future un-awaited (its failure would be logged as unretrieved).
            results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for topic, event in routed:
            self.produced[(topic, event.type)] += 1

    async def publish_raw(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        """Send one record as given and wait for its acknowledgement (dead letters, replays)."""
        client = self._client()
        future = await client.send(topic, value=value, key=key, headers=list(headers))
        await future
