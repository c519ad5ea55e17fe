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
                         the key and the diagnostics are kept, the value and the original headers
                         are not, and the letter's value is a small JSON object of the diagnostics
``arvo-dlq-key-synthetic`` ``1`` when the original record had no key (see below)
``arvo-dlq-key-dropped`` only when the payload was dropped and the original key alone was larger than
                         ``MAX_KEPT_KEY_BYTES``: its size
======================== ===========================================================================

A dead letter always has a key and a value, whatever the original record had (Kafka clients refuse a
record with neither): the key is the original key, or — for a keyless record, or a key dropped with
an oversized payload — the stable ``<origin topic>/<partition>/<offset>`` of the source record (its
``arvo-dlq-key-*`` header says so, and :class:`DeadLetterEntry` gives the original ``None`` back for
replay). The value is the original value, or, when the payload was dropped, the diagnostics as JSON
(the same ``arvo-dlq-*`` names and values as the headers), so the reason survives even a tool that
loses the headers. A letter without its payload cannot be replayed: :func:`replay` says so.

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

import orjson

if TYPE_CHECKING:
    from service.runtime.producer import EventProducer
    from service.runtime.settings import ServiceSettings

__all__ = [
    "DLQ_HEADER_PREFIX",
    "MAX_ERROR_MESSAGE_BYTES",
    "MAX_KEPT_KEY_BYTES",
    "DeadLetter",
    "DeadLetterEntry",
    "DeadLetterPublisher",
    "read_dead_letters",
    "replay",
]

DLQ_HEADER_PREFIX: Final = "arvo-dlq-"
MAX_ERROR_MESSAGE_BYTES: Final = 1024
MAX_KEPT_KEY_BYTES: Final = 16 * 1024
"""A letter whose payload is dropped keeps the original key only up to this size."""

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
H_KEY_SYNTHETIC: Final = "arvo-dlq-key-synthetic"
H_KEY_DROPPED: Final = "arvo-dlq-key-dropped"


def synthetic_key(topic: str, partition: int | None, offset: int | None) -> bytes:
    """The key of a dead letter whose original key is missing: ``<topic>/<partition>/<offset>``."""
    return f"{topic}/{'?' if partition is None else partition}/{'?' if offset is None else offset}".encode()


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
    key_dropped_bytes: int | None = None

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

    @property
    def record_key(self) -> bytes:
        """The dead letter's key: the original key, else the source record's ``topic/partition/offset``."""
        if self.key is None or self.key_dropped_bytes is not None:
            return synthetic_key(self.origin_topic, self.origin_partition, self.origin_offset)
        return self.key

    @property
    def record_value(self) -> bytes | None:
        """The dead letter's value: the original value, or the diagnostics as JSON when it was dropped.

        With the payload dropped the letter carries the diagnostics (the ``arvo-dlq-*`` headers as one
        JSON object) instead, never ``None``; otherwise the original value, byte for byte (``None``
        for a tombstone: the key is never ``None``, so the record is still valid).
        """
        if self.payload_dropped_bytes is None:
            return self.value
        return orjson.dumps(
            {name: raw.decode("utf-8", errors="replace") for name, raw in self._diagnostics()}
        )

    def _diagnostics(self) -> list[tuple[str, bytes]]:
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
        if self.key is None:
            diagnostic.append((H_KEY_SYNTHETIC, b"1"))
        if self.key_dropped_bytes is not None:
            diagnostic.append((H_KEY_DROPPED, str(self.key_dropped_bytes).encode()))
        return diagnostic

    def headers_out(self) -> list[tuple[str, bytes]]:
        """Original headers (earlier ``arvo-dlq-*`` ones dropped) followed by the diagnostic headers."""
        kept = [
            (name, raw if raw is not None else b"")
            for name, raw in self.headers
            if not name.startswith(DLQ_HEADER_PREFIX)
        ]
        return kept + self._diagnostics()

    def without_payload(self) -> DeadLetter:
        """A copy without value and original headers, for records too large to dead-letter.

        The diagnostics stay (headers and, as JSON, the value); the key too, unless it alone is
        larger than :data:`MAX_KEPT_KEY_BYTES` (then the letter's key is the synthetic one).
        """
        size = len(self.value or b"") + sum(len(name) + len(raw or b"") for name, raw in self.headers)
        key_dropped = len(self.key) if self.key is not None and len(self.key) > MAX_KEPT_KEY_BYTES else None
        return dataclasses.replace(
            self, value=None, headers=(), payload_dropped_bytes=size, key_dropped_bytes=key_dropped
        )


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
        """Write ``letter`` (original key, so it lands beside its siblings) and wait for the ack.

        Key and value are never ``None`` (:attr:`DeadLetter.record_key`, :attr:`DeadLetter.record_value`).
        """
        await self._producer.publish_raw(
            self._topic, key=letter.record_key, value=letter.record_value, headers=letter.headers_out()
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
    record_key: bytes | None = None
    """The dead letter's own key (``key`` is the original's: ``None`` when it had none or it was dropped)."""
    key_dropped_bytes: int | None = None
    """Set when the original key was dropped with the payload: its size."""

    @property
    def replayable(self) -> bool:
        """Whether :func:`replay` can re-publish the original record (its payload was kept)."""
        return self.replay_problem() is None

    def replay_problem(self) -> str | None:
        """Why this letter cannot be replayed, or ``None`` when it can."""
        where = f"dead letter {self.topic}/{self.partition}@{self.offset}"
        if self.payload_dropped_bytes is not None:
            origin = (
                f"{self.origin_topic or '?'}/{_or_unknown(self.origin_partition)}"
                f"@{_or_unknown(self.origin_offset)}"
            )
            return (
                f"{where} lost its payload ({self.payload_dropped_bytes} bytes were too large to "
                f"dead-letter; only the diagnostics were kept): it cannot be replayed; the original "
                f"record is {origin} for as long as that topic retains it"
            )
        if not self.origin_topic:
            return f"{where} has no '{H_ORIGIN_TOPIC}' header; cannot tell where to replay it"
        if self.key is None and self.value is None:
            return f"{where} cannot be replayed: the original record had neither key nor value"
        return None

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
        """Parse a record of the dead-letter topic (missing diagnostic headers become empty/None).

        ``key`` and ``value`` of the entry are the original record's: a synthetic key (the original
        had none, or it was dropped) becomes ``None``, and so does the diagnostics value of a letter
        whose payload was dropped. When the diagnostic headers are missing but the value is such a
        diagnostics object, the diagnostics are read from it.
        """
        diagnostic: dict[str, str] = {}
        original: list[tuple[str, bytes]] = []
        for name, raw in headers:
            if name.startswith(DLQ_HEADER_PREFIX):
                diagnostic[name] = (raw or b"").decode("utf-8", errors="replace")
            else:
                original.append((name, raw or b""))
        if H_REASON not in diagnostic:
            diagnostic.update(_diagnostics_in(value))

        def number(name: str) -> int | None:
            text = diagnostic.get(name, "")
            return int(text) if text.lstrip("-").isdigit() else None

        payload_dropped = number(H_PAYLOAD_DROPPED)
        key_dropped = number(H_KEY_DROPPED)
        synthetic = key_dropped is not None or diagnostic.get(H_KEY_SYNTHETIC) == "1"
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=None if synthetic else key,
            value=None if payload_dropped is not None else value,
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
            payload_dropped_bytes=payload_dropped,
            record_key=key,
            key_dropped_bytes=key_dropped,
        )


def _or_unknown(number: int | None) -> str:
    return "?" if number is None else str(number)


def _diagnostics_in(value: bytes | None) -> dict[str, str]:
    """The ``arvo-dlq-*`` fields of a diagnostics value (a letter without payload), else ``{}``."""
    if not value or not value.startswith(b"{") or len(value) > 64 * 1024:
        return {}
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict) or not isinstance(parsed.get(H_PAYLOAD_DROPPED), str):
        return {}
    return {
        name: text
        for name, text in parsed.items()
        if isinstance(name, str) and name.startswith(DLQ_HEADER_PREFIX) and isinstance(text, str)
    }


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
        ValueError: the entry cannot be replayed (:meth:`DeadLetterEntry.replay_problem` says why):
            its payload was dropped, it has no origin topic header, or the original had neither key
            nor value.

    """
    problem = entry.replay_problem()
    if problem is not None:
        raise ValueError(problem)
    await producer.publish_raw(
        entry.origin_topic, key=entry.key, value=entry.value, headers=entry.original_headers
    )
