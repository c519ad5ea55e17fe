"""CloudEvents Kafka protocol binding (v1.0.2) for :class:`~service.arvo.event.ArvoEvent`.

Encoding always uses **structured mode**: the value is the event's JSON (spec 1.12) and the
``content-type`` header is ``application/cloudevents+json; charset=UTF-8``. The binding spec (3.3.3)
lets structured messages carry the binary-mode ``ce_`` headers as well; we add the ones that let
brokers' tooling, metrics and dedupe work without parsing the value: ``ce_specversion``, ``ce_id``,
``ce_type``, ``ce_source``. They are copies: a receiver in structured mode ignores them. Trace context
goes into the plain W3C ``traceparent``/``tracestate`` headers (what OpenTelemetry's Kafka
propagation reads), copied from the event. The record key is the event's subject (UTF-8) so that every
event of one orchestration lands on one partition, in order.

Decoding accepts both modes, chosen by the spec's rule (3): a ``content-type`` starting with
``application/cloudevents`` (case-insensitive) means structured; otherwise binary, where every
attribute comes from a ``ce_<name>`` header and ``data`` is the JSON value. A record without
``content-type`` and without ``ce_`` headers is read as structured if its value is a JSON object
with ``specversion`` (lenient towards producers that omit the header).

Every failure raises :class:`RecordDecodeError` with a stable :attr:`~RecordDecodeError.reason`
(used as the dead-letter reason) and never any other exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from service.arvo.event import ArvoEvent

__all__ = [
    "CE_HEADER_PREFIX",
    "CONTENT_TYPE_HEADER",
    "STRUCTURED_CONTENT_TYPE",
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "DecodeReason",
    "KafkaMessage",
    "RecordDecodeError",
    "decode_record",
    "encode_event",
    "header_value",
]

CONTENT_TYPE_HEADER: Final = "content-type"
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json; charset=UTF-8"
CE_HEADER_PREFIX: Final = "ce_"
TRACEPARENT_HEADER: Final = "traceparent"
TRACESTATE_HEADER: Final = "tracestate"

_CLOUDEVENTS_MEDIA: Final = "application/cloudevents"
_STRUCTURED_JSON_MEDIA: Final = "application/cloudevents+json"
_MAX_MESSAGE_CHARS: Final = 300


class DecodeReason:
    """Reason codes of :class:`RecordDecodeError` (also the ``arvo-dlq-reason`` header)."""

    OVERSIZED: Final = "oversized"
    """The value (plus headers) is larger than ``max_event_bytes``; it was not parsed."""
    NOT_JSON: Final = "not_json"
    """The value (or binary-mode data) is not UTF-8 JSON."""
    NOT_CLOUDEVENT: Final = "not_cloudevent"
    """JSON but not a CloudEvent: not an object, or no ``specversion``; or no CloudEvents headers."""
    UNSUPPORTED_FORMAT: Final = "unsupported_format"
    """A structured CloudEvents format other than JSON (e.g. ``application/cloudevents+avro``)."""
    INVALID_EVENT: Final = "invalid_event"
    """A CloudEvent that is not a valid ArvoEvent (spec 1.1-1.7)."""


class RecordDecodeError(Exception):
    """A Kafka record cannot be turned into an ArvoEvent (permanent: dead-letter it).

    Attributes:
        reason: One of the :class:`DecodeReason` codes.
        message: What was wrong, naming the offending part (truncated).

    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message if len(message) <= _MAX_MESSAGE_CHARS else message[:_MAX_MESSAGE_CHARS] + "…"
        super().__init__(f"[{reason}] {self.message}")


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    """Key, value and headers of one record to produce."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_event(event: ArvoEvent) -> KafkaMessage:
    """Encode ``event`` in structured mode (see the module docstring for the headers)."""
    headers: list[tuple[str, bytes]] = [
        (CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE.encode()),
        ("ce_specversion", event.specversion.encode()),
        ("ce_id", event.id.encode()),
        ("ce_type", event.type.encode()),
        ("ce_source", event.source.encode()),
    ]
    if event.traceparent:
        headers.append((TRACEPARENT_HEADER, event.traceparent.encode()))
    if event.tracestate:
        headers.append((TRACESTATE_HEADER, event.tracestate.encode()))
    return KafkaMessage(key=event.subject.encode(), value=event.to_json(), headers=headers)


def header_value(headers: Sequence[tuple[str, bytes | None]], name: str) -> bytes | None:
    """The value of the last header called ``name`` (Kafka allows repeats; the last one wins)."""
    found: bytes | None = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordDecodeError(DecodeReason.NOT_JSON, f"{what} is not UTF-8: {exc}") from None


def _json(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordDecodeError(DecodeReason.NOT_JSON, f"{what} is not JSON: {exc}") from None


def _build(attributes: Mapping[str, Any], *, max_bytes: int) -> ArvoEvent:
    try:
        return ArvoEvent.from_json(attributes, max_bytes=max_bytes)
    except Exception as exc:  # the contract is: only RecordDecodeError escapes
        raise RecordDecodeError(DecodeReason.INVALID_EVENT, f"not a valid ArvoEvent: {exc}") from None


def _decode_structured(value: bytes | None, *, max_bytes: int) -> ArvoEvent:
    if not value:
        raise RecordDecodeError(DecodeReason.NOT_CLOUDEVENT, "structured-mode record has an empty value")
    try:
        # One parse on the happy path; ArvoEvent.from_json also checks integer range and nesting depth.
        return ArvoEvent.from_json(value, max_bytes=max_bytes)
    except Exception as exc:  # the contract is: only RecordDecodeError escapes
        raise _structured_failure(value, exc) from None


def _structured_failure(value: bytes, error: Exception) -> RecordDecodeError:
    rules = {getattr(problem, "rule", "") for problem in getattr(error, "problems", ())}
    if "json-syntax" in rules:
        return RecordDecodeError(DecodeReason.NOT_JSON, f"record value is not JSON: {error}")
    if "max-bytes" in rules:
        return RecordDecodeError(DecodeReason.OVERSIZED, str(error))
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        document = None
    if "json-object" in rules or (document is not None and not isinstance(document, dict)):
        kind = type(document).__name__ if document is not None else "value"
        return RecordDecodeError(
            DecodeReason.NOT_CLOUDEVENT, f"record value is JSON {kind}, expected a CloudEvent object"
        )
    if isinstance(document, dict) and "specversion" not in document:
        return RecordDecodeError(DecodeReason.NOT_CLOUDEVENT, "record value has no 'specversion' attribute")
    return RecordDecodeError(DecodeReason.INVALID_EVENT, f"not a valid ArvoEvent: {error}")


def _number(text: str) -> int | float:
    parsed: object
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, bool) or not isinstance(parsed, int | float):
        raise RecordDecodeError(
            DecodeReason.INVALID_EVENT, f"header ce_executionunits={text[:40]!r} is not a JSON number"
        )
    return parsed


def _decode_binary(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    content_type: str | None,
    *,
    max_bytes: int,
) -> ArvoEvent:
    attributes: dict[str, Any] = {}
    for key, raw in headers:
        if not key.startswith(CE_HEADER_PREFIX) or raw is None:
            continue
        name = key[len(CE_HEADER_PREFIX) :]
        text = _text(raw, f"header {key!r}")
        attributes[name] = _number(text) if name == "executionunits" else text
    if "data" in attributes:
        raise RecordDecodeError(DecodeReason.INVALID_EVENT, "binary-mode record has a 'ce_data' header")
    if content_type is not None:
        attributes["datacontenttype"] = content_type
        media = content_type.split(";", 1)[0].strip().lower()
        if not (media == "application/json" or media.endswith("+json")):
            raise RecordDecodeError(
                DecodeReason.NOT_JSON,
                f"binary-mode data has content-type {content_type[:80]!r}; only JSON data is supported",
            )
    if value:
        attributes["data"] = _json(value, "binary-mode data")
    return _build(attributes, max_bytes=max_bytes)


def decode_record(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    *,
    max_bytes: int,
) -> ArvoEvent:
    """Decode one Kafka record (structured or binary mode) into an ArvoEvent.

    Args:
        value: The record value.
        headers: The record headers as ``(name, value)`` pairs.
        max_bytes: Largest accepted size of value plus headers; checked before anything is parsed.

    Raises:
        RecordDecodeError: for every failure, with a :class:`DecodeReason` code.

    """
    try:
        return _decode(value, headers, max_bytes=max_bytes)
    except RecordDecodeError:
        raise
    except Exception as exc:  # defensive: malformed input must never crash the caller
        raise RecordDecodeError(DecodeReason.NOT_CLOUDEVENT, f"undecodable record: {exc!r}") from None


def _decode(value: bytes | None, headers: Sequence[tuple[str, bytes | None]], *, max_bytes: int) -> ArvoEvent:
    size = len(value or b"") + sum(len(key) + len(raw or b"") for key, raw in headers)
    if size > max_bytes:
        raise RecordDecodeError(
            DecodeReason.OVERSIZED, f"record is {size} bytes (value plus headers), the limit is {max_bytes}"
        )
    raw_type = header_value(headers, CONTENT_TYPE_HEADER)
    content_type = _text(raw_type, "header 'content-type'") if raw_type is not None else None
    if content_type is not None and content_type.strip().lower().startswith(_CLOUDEVENTS_MEDIA):
        media = content_type.split(";", 1)[0].strip().lower()
        if media != _STRUCTURED_JSON_MEDIA:
            raise RecordDecodeError(
                DecodeReason.UNSUPPORTED_FORMAT,
                f"structured-mode format {media[:80]!r} is not supported (only {_STRUCTURED_JSON_MEDIA})",
            )
        return _decode_structured(value, max_bytes=max_bytes)
    if any(key.startswith(CE_HEADER_PREFIX) for key, _ in headers):
        return _decode_binary(value, headers, content_type, max_bytes=max_bytes)
    if content_type is None:
        return _decode_structured(value, max_bytes=max_bytes)
    raise RecordDecodeError(
        DecodeReason.NOT_CLOUDEVENT,
        f"record has content-type {content_type[:80]!r} and no ce_ headers: not a CloudEvent",
    )
