"""A faster OTLP span encoder: ``ExportTraceServiceRequest`` bytes written directly, no message objects.

The exporters of ``opentelemetry-exporter-otlp`` build one protobuf object per span, attribute,
``KeyValue`` and ``AnyValue`` in Python (``encode_spans``) and serialise the tree: ~150 µs per span
of the Arvo catalogue (~30 attributes), on the exporter thread, holding the GIL the service needs.
:func:`encode_spans_bytes` writes the same request in the protobuf wire format straight into bytes:

* the ``KeyValue`` of a string attribute is cached by ``(key, value)`` (``arvo.span.kind``,
  ``openinference.span.kind``, contract URIs, sources, types, ``N/A``… repeat on every span); the
  cache is bounded and simply cleared when full, so unique values (ids, times) cannot grow it;
* a resource's and an instrumentation scope's encodings are cached per object;
* everything else is appended to one list of byte strings per message and joined once.

The bytes decode to a request equal to ``encode_spans(spans)``'s (same fields, values and order,
proto3 defaults left out the same way; the unit tests compare the two). An attribute the reference
encoder cannot encode is skipped and logged, as there.

:class:`FastOTLPSpanExporter` is the OTLP/HTTP exporter with this encoder (same endpoint, headers,
compression, timeout, retries, size limit and self-metrics: only the encoding step differs).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

__all__ = ["FastOTLPSpanExporter", "encode_spans_bytes"]

_logger = logging.getLogger(__name__)

_ONE_BYTE: Final = tuple(bytes((n,)) for n in range(128))
_PACK_DOUBLE: Final = struct.Struct("<d").pack
_PACK_FIXED64: Final = struct.Struct("<Q").pack
_PACK_FIXED32: Final = struct.Struct("<I").pack
_INT64_MIN: Final = -(1 << 63)
_INT64_LIMIT: Final = 1 << 63
_KIND: Final = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
_FLAG_HAS_IS_REMOTE: Final = 0x100
_FLAG_IS_REMOTE: Final = 0x200
_LOCAL_PARENT_FLAGS: Final = b"\x85\x01" + _PACK_FIXED32(_FLAG_HAS_IS_REMOTE)
_REMOTE_PARENT_FLAGS: Final = b"\x85\x01" + _PACK_FIXED32(_FLAG_HAS_IS_REMOTE | _FLAG_IS_REMOTE)
_CACHE_LIMIT: Final = 8192

# (tag, key, string value) -> tag + varint(len(KeyValue)) + KeyValue; cleared when full.
_pairs: dict[tuple[bytes, str, str], bytes] = {}
# Misses per key since the last clear: a key with more distinct values than _KEY_MISS_LIMIT (an id,
# a timestamp) is not cached at all, so unique values neither cost an insert nor evict the rest.
_key_misses: dict[str, int] = {}
_uncached_keys: set[str] = set()
_KEY_MISS_LIMIT: Final = 512
_keys: dict[str, bytes] = {}
_resources: dict[int, tuple[Resource, bytes]] = {}
_scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    size = len(payload)
    return tag + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + payload


def _string_field(tag: bytes, value: str) -> bytes:
    return _length_delimited(tag, value.encode("utf-8"))


def _encoded_key(key: str) -> bytes:
    encoded = _keys.get(key)
    if encoded is None:
        if len(_keys) >= _CACHE_LIMIT:
            _keys.clear()
        encoded = _keys[key] = _string_field(b"\x0a", key)
    return encoded


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message body (as ``_encode_value`` of the reference encoder)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _string_field(b"\x0a", value)
    if isinstance(value, int):
        if not _INT64_MIN <= value < _INT64_LIMIT:
            raise ValueError(f"Value out of range: {value}")
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _PACK_DOUBLE(value)
    if isinstance(value, bytes):
        return _length_delimited(b"\x3a", value)
    if isinstance(value, Sequence):
        array = b"".join(_length_delimited(b"\x0a", _any_value(item)) for item in value)
        return _length_delimited(b"\x2a", array)
    if isinstance(value, Mapping):
        pairs = b"".join(b"\x0a" + _key_value(str(key), item) for key, item in value.items())
        return _length_delimited(b"\x32", pairs)
    raise Exception(f"Invalid type {type(value)} of value {value}")  # noqa: TRY002 - as the reference


def _key_value(key: str, value: Any) -> bytes:
    """``varint(length) + KeyValue`` (the caller prepends the field tag)."""
    if type(value) is str:
        body = _encoded_key(key) + _length_delimited(b"\x12", _string_field(b"\x0a", value))
    else:
        body = _encoded_key(key) + _length_delimited(b"\x12", _any_value(value))
    size = len(body)
    return (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + body


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None, parts: list[bytes]) -> None:
    """Append ``tag + KeyValue`` for every attribute (those that fail to encode are logged, skipped)."""
    if not attributes:
        return
    # BoundedAttributes (behind the span's MappingProxyType) iterate in Python; their copy() is a
    # plain dict copy in C, much cheaper to walk.
    copy = getattr(attributes, "copy", None)
    items = copy().items() if copy is not None else attributes.items()
    append = parts.append
    cached_pairs = _pairs
    for key, value in items:
        pair = None
        if type(value) is str:
            pair = (tag, key, value)
            cached = cached_pairs.get(pair)
            if cached is not None:
                append(cached)
                continue
        try:
            encoded = tag + _key_value(key, value)
        except Exception:  # skipped and logged, as the reference encoder does
            _logger.exception("Failed to encode key %s", key)
            continue
        if pair is not None and key not in _uncached_keys:
            _remember(pair, encoded)
        append(encoded)


def _remember(pair: tuple[bytes, str, str], encoded: bytes) -> None:
    """Cache ``encoded``; a key that keeps missing (ids, times) stops being cached."""
    key = pair[1]
    misses = _key_misses.get(key, 0) + 1
    _key_misses[key] = misses
    if misses > _KEY_MISS_LIMIT:
        if len(_uncached_keys) >= _CACHE_LIMIT:
            _uncached_keys.clear()
        _uncached_keys.add(key)
        return
    if len(_pairs) >= _CACHE_LIMIT:
        _pairs.clear()
        _key_misses.clear()
    _pairs[pair] = encoded


def _resource(resource: Resource) -> bytes:
    """``ResourceSpans.resource`` (field 1) for ``resource``, cached per object."""
    cached = _resources.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    parts: list[bytes] = []
    _attributes(b"\x0a", resource.attributes, parts)
    encoded = _length_delimited(b"\x0a", b"".join(parts))
    if len(_resources) >= 64:
        _resources.clear()
    _resources[id(resource)] = (resource, encoded)
    return encoded


def _scope(scope: InstrumentationScope | None) -> bytes:
    """``ScopeSpans.scope`` (field 1) for ``scope``, cached per object."""
    cached = _scopes.get(id(scope))
    if cached is not None and cached[0] is scope:
        return cached[1]
    parts: list[bytes] = []
    if scope is not None:
        if scope.name:
            parts.append(_string_field(b"\x0a", scope.name))
        if scope.version:
            parts.append(_string_field(b"\x12", scope.version))
        _attributes(b"\x1a", scope.attributes, parts)
    encoded = _length_delimited(b"\x0a", b"".join(parts))
    if len(_scopes) >= 256:
        _scopes.clear()
    _scopes[id(scope)] = (scope, encoded)
    return encoded


def _flags(parent: SpanContext | None) -> bytes:
    return _REMOTE_PARENT_FLAGS if parent is not None and parent.is_remote else _LOCAL_PARENT_FLAGS


def _trace_state(context: SpanContext) -> str:
    state = context.trace_state
    return "" if state is None else ",".join([f"{key}={value}" for key, value in state.items()])


def _span(span: ReadableSpan) -> bytes:
    """One ``Span`` message body (as ``_encode_span`` of the reference encoder)."""
    context = span.get_span_context()
    assert context is not None
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    trace_state = _trace_state(context)
    if trace_state:
        parts.append(_string_field(b"\x1a", trace_state))
    parent = span.parent
    if parent:
        parts.append(b"\x22\x08")
        parts.append(parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_string_field(b"\x2a", span.name))
    parts.append(_KIND[span.kind])
    if span.start_time:
        parts.append(b"\x39" + _PACK_FIXED64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _PACK_FIXED64(span.end_time))
    _attributes(b"\x4a", span.attributes, parts)
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        event_parts = [b"\x09", _PACK_FIXED64(event.timestamp)] if event.timestamp else []
        if event.name:
            event_parts.append(_string_field(b"\x12", event.name))
        _attributes(b"\x1a", event.attributes, event_parts)
        if event.dropped_attributes:
            event_parts.append(b"\x20" + _varint(event.dropped_attributes))
        parts.append(_length_delimited(b"\x5a", b"".join(event_parts)))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        link_context = link.context
        link_parts = [
            b"\x0a\x10",
            link_context.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            link_context.span_id.to_bytes(8, "big"),
        ]
        _attributes(b"\x22", link.attributes, link_parts)
        if link.dropped_attributes:
            link_parts.append(b"\x28" + _varint(link.dropped_attributes))
        remote = _FLAG_IS_REMOTE if link_context.is_remote else 0
        link_parts.append(b"\x35" + _PACK_FIXED32(_FLAG_HAS_IS_REMOTE | remote))
        parts.append(_length_delimited(b"\x6a", b"".join(link_parts)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    if status is not None:
        status_parts = []
        if status.description:
            status_parts.append(_string_field(b"\x12", status.description))
        if status.status_code.value:
            status_parts.append(b"\x18" + _varint(status.status_code.value))
        parts.append(_length_delimited(b"\x7a", b"".join(status_parts)))
    parts.append(_flags(parent))
    return b"".join(parts)


def encode_spans_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialised ``ExportTraceServiceRequest`` of ``spans`` (what ``encode_spans`` builds)."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    # Grouped by equality as the reference encoder does; hashing a Resource serialises its
    # attributes to JSON, so each distinct object is hashed once per call.
    groups: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, list[bytes]]] = {}
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope or None
        group = groups.get((id(resource), id(scope)))
        if group is None:
            by_scope = grouped.setdefault(resource, {})
            encoded = by_scope.get(scope)
            if encoded is None:
                encoded = by_scope[scope] = []
            group = groups[(id(resource), id(scope))] = (resource, scope, encoded)
        group[2].append(_length_delimited(b"\x12", _span(span)))
    request: list[bytes] = []
    for resource, by_scope in grouped.items():
        resource_parts = [_resource(resource)]
        for scope, encoded_spans in by_scope.items():
            scope_parts = [_scope(scope), *encoded_spans]
            if scope is not None and scope.schema_url:
                scope_parts.append(_string_field(b"\x1a", scope.schema_url))
            resource_parts.append(_length_delimited(b"\x12", b"".join(scope_parts)))
        if resource.schema_url:
            resource_parts.append(_string_field(b"\x1a", resource.schema_url))
        request.append(_length_delimited(b"\x0a", b"".join(resource_parts)))
    return b"".join(request)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The OTLP/HTTP span exporter, encoding with :func:`encode_spans_bytes`.

    Takes the arguments of ``OTLPSpanExporter`` and reads the same ``OTEL_EXPORTER_OTLP_*``
    variables; only the encoding step of :meth:`export` differs.
    """

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode ``spans`` and send them (as the base class does, with the faster encoder)."""
        if self._shutdown:
            return super().export(spans)  # logs and fails as the base class does
        from opentelemetry.exporter.otlp.proto.http._common import (
            RequestPayloadTooLargeError,
            _is_request_too_large,
        )

        with self._metrics.export_operation(len(spans)) as result:
            try:
                serialized = encode_spans_bytes(spans)
            except Exception as error:
                _logger.error("Failed to encode span batch: %s", error)  # noqa: TRY400 - as the base class
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(serialized, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    len(serialized),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(serialized)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            exported = self._client.export(serialized)
            if not exported.success:
                result.error = exported.error
                result.error_attrs = (
                    {"http.response.status_code": exported.status_code}
                    if exported.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
