"""Arvo span catalogue helpers (spec section 13), on the OpenTelemetry *API* only.

Without an SDK every span is non-recording and these helpers cost next to nothing: attribute and
log work is skipped unless ``span.is_recording()``. With an SDK (see ``service.runtime.otel``) the
same calls produce the span names, kinds and attributes of the original, for dashboard parity.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent

__all__ = [
    "OTEL_NULL",
    "LogLevel",
    "TraceHeaders",
    "arvo_tracer",
    "current_trace_headers",
    "event_attributes",
    "exception_to_span",
    "handler_span",
    "log_to_span",
    "not_sampled",
    "parent_context_for",
    "set_emittables_attributes",
    "set_event_attributes",
    "start_internal_span",
    "start_span",
    "tracing_enabled",
    "use_tracer",
]

OTEL_NULL = "N/A"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
TraceHeaders = tuple[str | None, str | None]
"""``(traceparent, tracestate)``; ``None`` where there is no valid span context."""

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "arvo-instrumentation"
_TRACER_VERSION = "1.0.0"


# A proxy until a provider is installed, then the real tracer: safe to create once at import.
_GLOBAL_TRACER = trace.get_tracer(_TRACER_NAME, _TRACER_VERSION)
_TRACER: trace.Tracer = _GLOBAL_TRACER
_TRACER_OVERRIDE: trace.Tracer | None = None


def use_tracer(tracer: trace.Tracer | None) -> trace.Tracer | None:
    """Make Arvo spans use ``tracer`` (``None``: the global provider's again); returns the previous override.

    A seam for tests and embedders that keep their own tracer provider instead of the process-wide
    one (which OpenTelemetry lets a process set only once).
    """
    global _TRACER, _TRACER_OVERRIDE  # noqa: PLW0603 - the module's single tracer switch
    previous = _TRACER_OVERRIDE
    _TRACER_OVERRIDE = tracer
    _TRACER = tracer if tracer is not None else _GLOBAL_TRACER
    return previous


def arvo_tracer() -> trace.Tracer:
    """The tracer of the original (``arvo-instrumentation`` 1.0.0); follows the global provider."""
    return _TRACER


def parent_context_for(
    *, traceparent: str | None, tracestate: str | None, inherit_from: Literal["EVENT", "CONTEXT"]
) -> otel_context.Context | None:
    """The parent context of a handler span: the event's trace headers, else the active context."""
    if inherit_from == "EVENT" and traceparent:
        return _extract(traceparent, tracestate or None)
    return None


_TRACEPARENT_PARTS_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@functools.lru_cache(maxsize=4096)
def _extract(traceparent: str, tracestate: str | None) -> otel_context.Context:
    # Cached: every hop of a sampled-out workflow passes the same traceparent on, and parsing one
    # costs more than the rest of the no-span path. Contexts are immutable, so sharing one is safe.
    if tracestate is None:
        # A recorded workflow has a new traceparent at every hop (the cache misses): the common
        # version-00 header without tracestate is parsed here as the propagator would, ~4x faster.
        match = _TRACEPARENT_PARTS_RE.fullmatch(traceparent)
        if match is not None:
            trace_id = int(match.group(1), 16)
            span_id = int(match.group(2), 16)
            if trace_id and span_id:
                span_context = trace.SpanContext(
                    trace_id=trace_id,
                    span_id=span_id,
                    is_remote=True,
                    trace_flags=trace.TraceFlags(int(match.group(3), 16)),
                    trace_state=None,
                )
                return trace.set_span_in_context(trace.NonRecordingSpan(span_context), otel_context.Context())
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier)


_TRACEPARENT_RE = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def tracing_enabled() -> bool:
    """Whether spans are recorded at all: an SDK provider is installed, or a real tracer was given."""
    if _TRACER_OVERRIDE is not None:
        return not isinstance(_TRACER_OVERRIDE, trace.NoOpTracer)
    if getattr(trace, "_TRACER_PROVIDER", None) is not None:
        return True
    # Nothing installed in code. get_tracer_provider() would read OTEL_PYTHON_TRACER_PROVIDER (an
    # environment lookup, several per consumed record); it is read once per process instead — a
    # provider named there is installed by the first call, after which the check above answers.
    if not _env_names_a_provider():
        return False
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


@functools.cache
def _env_names_a_provider() -> bool:
    return bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))


def handler_span(
    name: str,
    *,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    traceparent: str | None,
    tracestate: str | None,
    inherit_from: Literal["EVENT", "CONTEXT"],
    execution: Mapping[str, Any] | None = None,
    consumable: ArvoEvent | None = None,
) -> AbstractContextManager[tuple[Span, TraceHeaders]]:
    """The span of one handler execution and the trace headers its emitted events carry.

    With an SDK the span is a child of the event's ``traceparent`` (or the active context) and the
    headers are the span's own. Without one, no span is created at all: the headers are what the
    OpenTelemetry API would propagate anyway (the event's valid ``traceparent`` passes through), at a
    fraction of the cost.

    The span starts with all its initial attributes at once (the SDK validates each attribute
    call's values, so one call is the cheap way): ``attributes``, then ``execution``, then
    ``consumable.0.*`` of ``consumable``.
    """
    if not tracing_enabled():
        # No span: a plain context manager holding the headers (no generator per execution).
        if inherit_from == "EVENT" and traceparent and _TRACEPARENT_RE.fullmatch(traceparent):
            return nullcontext((trace.INVALID_SPAN, (traceparent, tracestate or None)))
        return nullcontext((trace.INVALID_SPAN, current_trace_headers()))
    return _recorded_handler_span(
        name,
        kind=kind,
        attributes=attributes,
        traceparent=traceparent,
        tracestate=tracestate,
        inherit_from=inherit_from,
        execution=execution,
        consumable=consumable,
    )


@contextmanager
def _recorded_handler_span(
    name: str,
    *,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    traceparent: str | None,
    tracestate: str | None,
    inherit_from: Literal["EVENT", "CONTEXT"],
    execution: Mapping[str, Any] | None,
    consumable: ArvoEvent | None,
) -> Iterator[tuple[Span, TraceHeaders]]:
    """:func:`handler_span` with an SDK installed."""
    parent = parent_context_for(traceparent=traceparent, tracestate=tracestate, inherit_from=inherit_from)
    if not_sampled(parent):
        # Parent-based sampling would not record this span either: skip building it and pass the
        # (unsampled) parent's context on, as the no-SDK path does.
        if parent is not None:
            yield trace.INVALID_SPAN, (traceparent, tracestate or None)
        else:
            yield trace.INVALID_SPAN, current_trace_headers()
        return
    initial = {"arvo.span.kind": "internal", **attributes}
    if execution:
        initial.update(execution)
    event_attributes: dict[str, Any] | None = None
    if consumable is not None:
        event_attributes = {}
        _add_event_attributes(event_attributes, "consumable.0", consumable)
    with _ActiveSpan(name, kind, initial, parent, event_attributes) as span:
        yield span, _span_headers(span)


def _span_headers(span: Span) -> TraceHeaders:
    """What :func:`current_trace_headers` returns while ``span`` is active, without the propagator."""
    context = span.get_span_context()
    if not context.is_valid:
        return current_trace_headers()
    state = context.trace_state.to_header() if context.trace_state else ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}", state or None


class _ActiveSpan:
    """``start_as_current_span`` without its generator layers: start, activate, deactivate, end.

    Exceptions are neither recorded nor turned into a status (callers do both), as with
    ``record_exception=False, set_status_on_exception=False``.
    """

    __slots__ = ("_attributes", "_event_attributes", "_kind", "_name", "_parent", "_span", "_token")

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        parent: otel_context.Context | None,
        event_attributes: dict[str, Any] | None = None,
    ) -> None:
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._parent = parent
        self._event_attributes = event_attributes

    def __enter__(self) -> Span:
        span = _TRACER.start_span(
            self._name,
            context=self._parent,
            kind=self._kind,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        if self._event_attributes:
            _set_event_derived_attributes(span, self._event_attributes)
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, *_exc: object) -> None:
        try:
            otel_context.detach(self._token)
        finally:
            self._span.end()


def current_trace_headers(context: otel_context.Context | None = None) -> TraceHeaders:
    """W3C headers of the active span (or of ``context``'s; the propagated parent when nothing records)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier.get("traceparent"), carrier.get("tracestate")


def not_sampled(context: otel_context.Context | None = None) -> bool:
    """Whether the span of ``context`` (default: the active one) belongs to a trace sampled out.

    Its children are not recorded under parent-based sampling (the default sampler, and
    ``parentbased_*``/``traceidratio`` ones), so callers skip building them.
    """
    span_context = trace.get_current_span(context).get_span_context()
    return span_context.is_valid and not span_context.trace_flags.sampled


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    parent: otel_context.Context | None = None,
) -> AbstractContextManager[Span]:
    """Start ``name`` as the active span; the caller records errors and sets the status."""
    return _ActiveSpan(name, kind, {"arvo.span.kind": "internal", **(attributes or {})}, parent)


def start_internal_span(
    name: str, *, attributes: Mapping[str, Any] | None = None, event: ArvoEvent | None = None
) -> AbstractContextManager[Span]:
    """An INTERNAL child span, or nothing when the active span does not record (no SDK, not sampled).

    A child of a non-recording span would not be recorded either (parent-based sampling), so the
    hot path skips creating it. ``event``'s ``otel_attributes`` follow ``attributes`` (unprefixed),
    all set when the span starts.
    """
    if not trace.get_current_span().is_recording():
        return nullcontext(trace.INVALID_SPAN)
    initial = {"arvo.span.kind": "internal", **(attributes or {})}
    return _ActiveSpan(
        name, SpanKind.INTERNAL, initial, None, event.otel_attributes if event is not None else None
    )


# prefix -> (the keys of ``ArvoEvent.otel_attributes``, the same keys prefixed), built once per prefix.
_PREFIXED_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _add_event_attributes(target: dict[str, Any], prefix: str, event: ArvoEvent) -> None:
    attributes = event.otel_attributes
    keys = tuple(attributes)
    cached = _PREFIXED_KEYS.get(prefix)
    if cached is None or cached[0] != keys:
        if len(_PREFIXED_KEYS) >= 1024:
            _PREFIXED_KEYS.clear()
        cached = _PREFIXED_KEYS[prefix] = (keys, tuple(f"{prefix}.{key}" for key in keys))
    target.update(zip(cached[1], attributes.values(), strict=True))


def event_attributes(prefix: str, event: ArvoEvent) -> dict[str, Any]:
    """``<prefix>.<otel attribute>`` for every entry of ``event.otel_attributes`` (keys cached per prefix)."""
    target: dict[str, Any] = {}
    _add_event_attributes(target, prefix, event)
    return target


def set_event_attributes(span: Span, prefix: str, event: ArvoEvent) -> None:
    """Set ``<prefix>.<otel attribute>`` for every entry of ``event.otel_attributes``."""
    if span.is_recording():
        span.set_attributes(event_attributes(prefix, event))


def set_emittables_attributes(
    span: Span, events: Iterable[ArvoEvent], extra: Mapping[str, Any] | None = None
) -> None:
    """Set ``emittables.<i>.*`` of every event (and ``extra``) in one call: the span's closing attributes."""
    if span.is_recording():
        if extra:
            span.set_attributes(extra)
        attributes: dict[str, Any] = {}
        for index, event in enumerate(events):
            _add_event_attributes(attributes, _emittables_prefix(index), event)
        if attributes:
            _set_event_derived_attributes(span, attributes)


def _set_event_derived_attributes(span: Span, attributes: dict[str, Any]) -> None:
    """Set the attributes derived from an event's ``otel_attributes`` in one call (public API only)."""
    span.set_attributes(attributes)


_EMITTABLES_PREFIXES = tuple(f"emittables.{index}" for index in range(64))


def _emittables_prefix(index: int) -> str:
    return _EMITTABLES_PREFIXES[index] if index < len(_EMITTABLES_PREFIXES) else f"emittables.{index}"


def log_to_span(span: Span, level: LogLevel, message: str, **attributes: str) -> None:
    """Add a span event named ``log`` as the original does (wall-clock ``log.timestamp``, fixing 15.35)."""
    if span.is_recording():
        span.add_event(
            "log",
            {
                "log.severity": level,
                "log.message": message,
                "log.timestamp": time.time() * 1000,
                **attributes,
            },
        )


def exception_to_span(span: Span, error: BaseException, *, status_message: str | None = None) -> None:
    """Record ``error`` on ``span`` and set its status to ERROR."""
    if span.is_recording():
        span.set_attributes(
            {
                "exception.type": getattr(error, "name", type(error).__name__),
                "exception.message": str(error),
            }
        )
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, status_message or str(error)))
