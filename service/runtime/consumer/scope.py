"""The per-record scope as layers around the record's processing: log context, trace span.

A :data:`RecordLayer` is middleware in the manner of ASGI/faststream: it receives the record's
:class:`RecordContext` and the next step, and wraps it. :func:`compose` builds the chain once; the
default chain is :func:`record_scope_layer` — the record's log context bound and its CONSUMER span
``process <topic>`` current — so tracing is a layer, not code inside the processing (metrics are the
loop's :class:`~service.runtime.consumer.hooks.LoopHooks`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from service.arvo.subject import ArvoOrchestrationSubject, ParsedSubject
from service.arvo.telemetry import not_sampled, parent_context_for
from service.runtime.binding import TRACEPARENT_HEADER, TRACESTATE_HEADER, header_value
from service.runtime.otel import runtime_tracer, tracing_enabled, untraced

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent
    from service.runtime.binding import RecordDecodeError
    from service.runtime.consumer.lanes import Lane

__all__ = [
    "LOG_FIELDS",
    "RecordContext",
    "RecordLayer",
    "RecordScope",
    "RecordStep",
    "compose",
    "fail_span",
    "orchestration_subject",
    "record_fields",
    "record_scope_layer",
    "short_subject",
]

_SHORT_SUBJECT_CHARS: Final = 64


@dataclass(slots=True)
class RecordContext:
    """One consumed record on its way through the layers.

    Attributes:
        lane: The lane of the record's partition.
        record: The Kafka record.
        event: The decoded event, ``None`` when it could not be decoded.
        decode_error: Why it could not be decoded.
        started: ``time.perf_counter()`` when processing began.
        span: The record's span (``INVALID_SPAN`` when not traced), set by the tracing layer.
        outcome: The record's outcome label, set by the processing (for a handed-off record, its
            execution's outcome; the record finishes once its emissions are acknowledged).
        handed_off: The emissions were handed to the producer; the record finishes later.

    """

    lane: Lane
    record: Any
    event: ArvoEvent | None
    decode_error: RecordDecodeError | None
    started: float
    span: Span = trace.INVALID_SPAN
    outcome: str | None = None
    handed_off: bool = False


RecordStep = Callable[[RecordContext], Awaitable[None]]
"""A step of the chain: process the record in ``context``."""


class RecordLayer(Protocol):
    """Middleware around the processing of one record: do something, ``await call_next(context)``."""

    def __call__(self, context: RecordContext, *, call_next: RecordStep) -> Awaitable[None]:
        """Wrap ``call_next``."""
        ...


def compose(layers: Sequence[RecordLayer], core: RecordStep) -> RecordStep:
    """The chain ``layers[0](layers[1](… core))``, built once."""
    step = core
    for layer in reversed(layers):
        step = functools.partial(layer, call_next=step)
    return step


async def record_scope_layer(context: RecordContext, *, call_next: RecordStep) -> None:
    """The record's log context and ``process <topic>`` span around the rest of the chain.

    The span covers everything done for the record (retries, publishing, dead-lettering), so the
    ``send`` spans of its emissions are its children; the handler span inherits from it. The outcome
    becomes the span attribute ``arvo.consumer.outcome``.
    """
    with RecordScope(context.record, context.event) as span:
        context.span = span
        await call_next(context)
        if context.outcome is not None and span.is_recording():
            span.set_attribute("arvo.consumer.outcome", context.outcome)


def _header_text(headers: Any, name: str) -> str | None:
    raw = header_value(headers, name)
    if not raw:
        return None
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _parent_context(record: Any, event: ArvoEvent | None) -> otel_context.Context | None:
    """The trace context a record continues: the event's ``traceparent``, else the record header's."""
    traceparent = (event.traceparent if event is not None else None) or _header_text(
        record.headers, TRACEPARENT_HEADER
    )
    if not traceparent:
        return None
    tracestate = (event.tracestate if event is not None else None) or _header_text(
        record.headers, TRACESTATE_HEADER
    )
    return parent_context_for(traceparent=traceparent, tracestate=tracestate, inherit_from="EVENT")


@contextlib.contextmanager
def _record_span(record: Any, event: ArvoEvent | None) -> Iterator[Span]:
    """The CONSUMER span ``process <topic>`` of one record, active while the record is processed.

    Its parent is the event's trace context. Without tracing no span is built: the parent context
    is made current instead, so the handler still passes the event's ``traceparent`` on. In a trace
    that is sampled out, instrumented clients (Redis) are kept quiet too: their spans would not be
    recorded, but building them is most of what an unsampled record costs.
    """
    parent = _parent_context(record, event)
    enabled = tracing_enabled()
    if not enabled or not_sampled(parent):
        # Off, or the event's trace was sampled out (its children would not record either).
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with untraced() if enabled else contextlib.nullcontext():
                yield trace.INVALID_SPAN
        finally:
            if token is not None:
                otel_context.detach(token)
        return
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": int(record.offset),
    }
    if event is not None:
        attributes["messaging.message.id"] = event.id
        attributes["cloudevents.event_type"] = event.type
    with runtime_tracer().start_as_current_span(
        f"process {record.topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if span.is_recording():
            yield span
        else:  # sampled out here, at the root of the trace
            with untraced():
                yield span


def fail_span(span: Span, error: BaseException, *, record_exception: bool = False) -> None:
    """Mark a record's span as failed (ERROR status), recording ``error`` unless it already was."""
    if span.is_recording():
        if record_exception:
            span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {str(error)[:200]}"))


def orchestration_subject(subject: str) -> ParsedSubject | None:
    """``subject`` parsed as an orchestration subject (parses are cached), else ``None``."""
    try:
        return ArvoOrchestrationSubject.parse(subject)
    except Exception:  # not an orchestration subject (stateless handlers' subjects are free text)
        return None


def short_subject(subject: str) -> str:
    """The instance key of an orchestration subject (``<orchestrator>:<execution id>``), else a prefix."""
    parsed = orchestration_subject(subject)
    if parsed is not None:
        return parsed.instance_key
    return subject if len(subject) <= _SHORT_SUBJECT_CHARS else f"{subject[:_SHORT_SUBJECT_CHARS]}…"


LOG_FIELDS: Final = ("topic", "partition", "offset", "event_id", "event_type", "subject")
"""The keys bound to every log line written while a record is processed, in order (the last three
only with a decoded event; ``subject`` is the instance key of an orchestration subject)."""


class RecordScope:
    """While a record is processed: its log context bound and its ``process`` span current.

    Equal to ``structlog.contextvars.bound_contextvars(**fields)`` (:data:`LOG_FIELDS`) around
    the record's span, without most of their per-record cost when tracing is off (17 → 9 µs): the
    structlog context variables are set and reset directly (``Token.var`` of a first
    ``bind_contextvars``), and without an SDK the event's trace context is attached without building
    a generator-based context manager.
    """

    __slots__ = ("_event", "_log_tokens", "_otel_token", "_record", "_span_scope")

    log_vars: ClassVar[tuple[contextvars.ContextVar[Any], ...]] = ()
    """structlog's context variables of :data:`LOG_FIELDS` (found on first use, then reused)."""

    def __init__(self, record: Any, event: ArvoEvent | None) -> None:
        self._record = record
        self._event = event
        self._log_tokens: list[contextvars.Token[Any]] = []
        self._otel_token: contextvars.Token[Any] | None = None
        self._span_scope: contextlib.AbstractContextManager[Span] | None = None

    def __enter__(self) -> Span:
        record, event = self._record, self._event
        values: tuple[Any, ...] = (record.topic, record.partition, record.offset)
        if event is not None:
            values += (event.id, event.type, short_subject(event.subject))
        log_vars = RecordScope.log_vars
        if not log_vars:
            tokens = structlog.contextvars.bind_contextvars(**dict(zip(LOG_FIELDS, values, strict=False)))
            if len(tokens) == len(LOG_FIELDS):
                RecordScope.log_vars = tuple(tokens[name].var for name in LOG_FIELDS)
            self._log_tokens = list(tokens.values())
        else:
            self._log_tokens = [var.set(value) for var, value in zip(log_vars, values, strict=False)]
        try:
            if tracing_enabled():
                self._span_scope = _record_span(record, event)
                return self._span_scope.__enter__()
            parent = _parent_context(record, event)
            if parent is not None:
                self._otel_token = otel_context.attach(parent)
        except BaseException:
            self._reset_log_context()
            raise
        return trace.INVALID_SPAN

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            if self._span_scope is not None:
                return bool(self._span_scope.__exit__(exc_type, exc, tb))
            if self._otel_token is not None:
                otel_context.detach(self._otel_token)
            return False
        finally:
            self._reset_log_context()

    def _reset_log_context(self) -> None:
        for token in reversed(self._log_tokens):
            token.var.reset(token)
        self._log_tokens = []


def record_fields(record: Any, event: ArvoEvent) -> dict[str, Any]:
    """Log fields naming ``record`` and its event (for lines written outside its scope)."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "event_id": event.id,
        "event_type": event.type,
        "subject": event.subject,
    }
