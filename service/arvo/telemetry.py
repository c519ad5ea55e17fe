"""Arvo span catalogue helpers (spec section 13), on the OpenTelemetry *API* only.

Without an SDK every span is non-recording and these helpers cost next to nothing: attribute and
log work is skipped unless ``span.is_recording()``. With an SDK (see ``service.runtime.otel``) the
same calls produce the span names, kinds and attributes of the original, for dashboard parity.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, Mapping
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
    "exception_to_span",
    "handler_span",
    "log_to_span",
    "not_sampled",
    "parent_context_for",
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


@functools.lru_cache(maxsize=4096)
def _extract(traceparent: str, tracestate: str | None) -> otel_context.Context:
    # Cached: every hop of a sampled-out workflow passes the same traceparent on, and parsing one
    # costs more than the rest of the no-span path. Contexts are immutable, so sharing one is safe.
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
    # Not set yet: get_tracer_provider() reads OTEL_PYTHON_TRACER_PROVIDER (an environment lookup per
    # call), so it is only asked when nothing was installed in code.
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


@contextmanager
def handler_span(
    name: str,
    *,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    traceparent: str | None,
    tracestate: str | None,
    inherit_from: Literal["EVENT", "CONTEXT"],
) -> Iterator[tuple[Span, TraceHeaders]]:
    """The span of one handler execution and the trace headers its emitted events carry.

    With an SDK the span is a child of the event's ``traceparent`` (or the active context) and the
    headers are the span's own. Without one, no span is created at all: the headers are what the
    OpenTelemetry API would propagate anyway (the event's valid ``traceparent`` passes through), at a
    fraction of the cost.
    """
    if not tracing_enabled():
        if inherit_from == "EVENT" and traceparent and _TRACEPARENT_RE.fullmatch(traceparent):
            yield trace.INVALID_SPAN, (traceparent, tracestate or None)
        else:
            yield trace.INVALID_SPAN, current_trace_headers()
        return
    parent = parent_context_for(traceparent=traceparent, tracestate=tracestate, inherit_from=inherit_from)
    if not_sampled(parent):
        # Parent-based sampling would not record this span either: skip building it and pass the
        # (unsampled) parent's context on, as the no-SDK path does.
        if parent is not None:
            yield trace.INVALID_SPAN, (traceparent, tracestate or None)
        else:
            yield trace.INVALID_SPAN, current_trace_headers()
        return
    with start_span(name, kind=kind, attributes=attributes, parent=parent) as span:
        yield span, current_trace_headers()


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
    return _TRACER.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes={"arvo.span.kind": "internal", **(attributes or {})},
        record_exception=False,
        set_status_on_exception=False,
    )


def start_internal_span(
    name: str, *, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Span]:
    """An INTERNAL child span, or nothing when the active span does not record (no SDK, not sampled).

    A child of a non-recording span would not be recorded either (parent-based sampling), so the
    hot path skips creating it.
    """
    if not trace.get_current_span().is_recording():
        return nullcontext(trace.INVALID_SPAN)
    return start_span(name, attributes=attributes)


def set_event_attributes(span: Span, prefix: str, event: ArvoEvent) -> None:
    """Set ``<prefix>.<otel attribute>`` for every entry of ``event.otel_attributes``."""
    if span.is_recording():
        span.set_attributes({f"{prefix}.{key}": value for key, value in event.otel_attributes.items()})


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
