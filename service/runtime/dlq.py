"""Dead-letter topic: records that cannot (or could not, after retries) be processed.

A dead letter is the original record, byte for byte (key, value, headers), plus diagnostic headers:

======================== ===========================================================================
``arvo-dlq-reason``      why: a decode reason (``not_json``, ``oversized``...), ``contract``, ``config``,
                         ``execution``, ``parked`` (transient failures exhausted), ``unpublishable``
                         (emissions too large or unroutable) or ``no_handler``
``arvo-dlq-error-class`` the exception class (e.g. ``ContractViolation``)
``arvo-dlq-error-message`` its message, truncated to 1 KiB of UTF-8
``arvo-dlq-origin-topic`` / ``-partition`` / ``-offset`` / ``-timestamp``  where the record came from
``arvo-dlq-attempts``    how many times processing was attempted
``arvo-dlq-time``        when it was dead-lettered (ms since the epoch)
``arvo-dlq-payload-dropped`` only when the original record was too large to dead-letter: its size;
                         key and diagnostics are kept, value and original headers are not
======================== ===========================================================================

Earlier ``arvo-dlq-*`` headers (a replayed record that failed again) are replaced, not repeated.
:func:`replay` re-publishes one entry; reading the topic is
:meth:`ArvoClient.dead_letters <service.runtime.client.ArvoClient.dead_letters>` (and
:func:`read_dead_letters`, its shortcut). Both are the operator tools behind ``arvo dlq``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from service.runtime.producer import EventProducer
    from service.runtime.settings import ServiceSettings

__all__ = [
    "DLQ_HEADER_PREFIX",
    "MAX_ERROR_MESSAGE_BYTES",
    "DeadLetter",
    "DeadLetterEntry",
    "DeadLetterPublisher",
    "read_dead_letters",
    "replay",
]

DLQ_HEADER_PREFIX: Final = "arvo-dlq-"
MAX_ERROR_MESSAGE_BYTES: Final = 1024

H_REASON: Final = "arvo-dlq-reason"
H_ERROR_CLASS: Final = "arvo-dlq-error-class"
H_ERROR_MESSAGE: Final = "arvo-dlq-error-message"
H_ORIGIN_TOPIC: Final = "arvo-dlq-origin-topic"
H_ORIGIN_PARTITION: Final = "arvo-dlq-origin-partition"
H_ORIGIN_OFFSET: Final = "arvo-dlq-origin-offset"
H_ORIGIN_TIMESTAMP: Final = "arvo-dlq-origin-timestamp"
H_ATTEMPTS: Final = "arvo-dlq-attempts"
H_TIME: Final = "arvo-dlq-time"
H_PAYLOAD_DROPPED: Final = "arvo-dlq-payload-dropped"


def _truncate_utf8(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return raw
    return raw[: limit - 3].decode("utf-8", errors="ignore").encode() + "…".encode()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record to dead-letter and why; :meth:`headers` builds the outgoing headers."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    reason: str
    error_class: str
    error_message: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    origin_timestamp: int | None
    attempts: int = 1
    dead_lettered_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    payload_dropped_bytes: int | None = None

    @classmethod
    def from_error(
        cls,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        topic: str,
        partition: int,
        offset: int,
        timestamp: int | None,
        reason: str,
        error: BaseException,
        attempts: int = 1,
    ) -> DeadLetter:
        """Build a dead letter for ``error`` raised while processing the given record."""
        return cls(
            key=key,
            value=value,
            headers=headers,
            reason=reason,
            error_class=type(error).__name__,
            error_message=str(error),
            origin_topic=topic,
            origin_partition=partition,
            origin_offset=offset,
            origin_timestamp=timestamp,
            attempts=attempts,
        )

    def headers_out(self) -> list[tuple[str, bytes]]:
        """Original headers (earlier ``arvo-dlq-*`` ones dropped) followed by the diagnostic headers."""
        kept = [
            (name, raw if raw is not None else b"")
            for name, raw in self.headers
            if not name.startswith(DLQ_HEADER_PREFIX)
        ]
        diagnostic = [
            (H_REASON, self.reason.encode()),
            (H_ERROR_CLASS, self.error_class.encode()),
            (H_ERROR_MESSAGE, _truncate_utf8(self.error_message, MAX_ERROR_MESSAGE_BYTES)),
            (H_ORIGIN_TOPIC, self.origin_topic.encode()),
            (H_ORIGIN_PARTITION, str(self.origin_partition).encode()),
            (H_ORIGIN_OFFSET, str(self.origin_offset).encode()),
            (H_ATTEMPTS, str(self.attempts).encode()),
            (H_TIME, str(self.dead_lettered_at_ms).encode()),
        ]
        if self.origin_timestamp is not None:
            diagnostic.append((H_ORIGIN_TIMESTAMP, str(self.origin_timestamp).encode()))
        if self.payload_dropped_bytes is not None:
            diagnostic.append((H_PAYLOAD_DROPPED, str(self.payload_dropped_bytes).encode()))
        return kept + diagnostic

    def without_payload(self) -> DeadLetter:
        """A copy without value and original headers, for records too large to dead-letter."""
        size = len(self.value or b"") + sum(len(name) + len(raw or b"") for name, raw in self.headers)
        return dataclasses.replace(self, value=None, headers=(), payload_dropped_bytes=size)


class DeadLetterPublisher:
    """Publishes :class:`DeadLetter` records to the dead-letter topic through an :class:`EventProducer`."""

    def __init__(self, *, producer: EventProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    @property
    def topic(self) -> str:
        """The dead-letter topic."""
        return self._topic

    async def publish(self, letter: DeadLetter) -> None:
        """Write ``letter`` (original key, so it lands beside its siblings) and wait for the ack."""
        await self._producer.publish_raw(
            self._topic, key=letter.key, value=letter.value, headers=letter.headers_out()
        )


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """A dead letter read back from the topic (for listing and replay)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    original_headers: list[tuple[str, bytes]]
    """Headers of the original record (without the ``arvo-dlq-*`` ones)."""
    reason: str
    error_class: str
    error_message: str
    origin_topic: str
    origin_partition: int | None
    origin_offset: int | None
    origin_timestamp: int | None
    attempts: int | None
    dead_lettered_at_ms: int | None
    payload_dropped_bytes: int | None = None
    """Set when the original was too large to keep: its size (value and headers are missing)."""

    @classmethod
    def from_record(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
    ) -> DeadLetterEntry:
        """Parse a record of the dead-letter topic (missing diagnostic headers become empty/None)."""
        diagnostic: dict[str, str] = {}
        original: list[tuple[str, bytes]] = []
        for name, raw in headers:
            if name.startswith(DLQ_HEADER_PREFIX):
                diagnostic[name] = (raw or b"").decode("utf-8", errors="replace")
            else:
                original.append((name, raw or b""))

        def number(name: str) -> int | None:
            text = diagnostic.get(name, "")
            return int(text) if text.lstrip("-").isdigit() else None

        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            original_headers=original,
            reason=diagnostic.get(H_REASON, ""),
            error_class=diagnostic.get(H_ERROR_CLASS, ""),
            error_message=diagnostic.get(H_ERROR_MESSAGE, ""),
            origin_topic=diagnostic.get(H_ORIGIN_TOPIC, ""),
            origin_partition=number(H_ORIGIN_PARTITION),
            origin_offset=number(H_ORIGIN_OFFSET),
            origin_timestamp=number(H_ORIGIN_TIMESTAMP),
            attempts=number(H_ATTEMPTS),
            dead_lettered_at_ms=number(H_TIME),
            payload_dropped_bytes=number(H_PAYLOAD_DROPPED),
        )


async def read_dead_letters(
    settings: ServiceSettings,
    *,
    topic: str | None = None,
    limit: int | None = None,
    reason: str | None = None,
    timeout_s: float = 30.0,
) -> list[DeadLetterEntry]:
    """Read the dead-letter topic from the beginning up to its current end (no consumer group).

    A shortcut for :meth:`ArvoClient.dead_letters <service.runtime.client.ArvoClient.dead_letters>`:
    manual partition assignment, so it neither joins nor disturbs any group and commits nothing.

    Args:
        settings: Connection settings; the topic defaults to ``settings.dead_letter_topic_name``.
        topic: Another dead-letter topic to read.
        limit: At most this many (matching) entries, the first by partition and offset.
        reason: Only entries with this ``arvo-dlq-reason``.
        timeout_s: Bound of the read (``TimeoutError`` after it).

    Returns:
        Entries ordered by partition, then offset (``[]`` when the topic does not exist).

    """
    from service.runtime.client import ArvoClient

    async with ArvoClient(settings) as client:
        return await client.dead_letters(topic=topic, limit=limit, reason=reason, timeout_s=timeout_s)


async def replay(entry: DeadLetterEntry, *, producer: EventProducer) -> None:
    """Re-publish ``entry``'s original key, value and headers to its origin topic.

    Raises:
        ValueError: the entry has no origin topic header, or its payload was dropped.

    """
    if entry.payload_dropped_bytes is not None:
        raise ValueError(
            f"dead letter {entry.topic}/{entry.partition}@{entry.offset} lost its payload "
            f"({entry.payload_dropped_bytes} bytes were too large to dead-letter); nothing to replay"
        )
    if not entry.origin_topic:
        raise ValueError(
            f"dead letter {entry.topic}/{entry.partition}@{entry.offset} has no "
            f"'{H_ORIGIN_TOPIC}' header; cannot tell where to replay it"
        )
    await producer.publish_raw(
        entry.origin_topic, key=entry.key, value=entry.value, headers=entry.original_headers
    )
