"""The per-record scope of the consumer: the ``process <topic>`` span, its trace parent, the log context.

What an operator relies on when reading a trace or a log line of one record: the span's name, kind,
messaging attributes and parent; the outcome attribute; the failure status; the log fields bound while
the record is processed (and unbound afterwards); a sampled-out trace building nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime import otel
from service.runtime.consumer.scope import (
    LOG_FIELDS,
    RecordContext,
    RecordScope,
    compose,
    fail_span,
    record_fields,
    record_scope_layer,
    short_subject,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
UNSAMPLED = f"00-{TRACE_ID}-{PARENT_SPAN}-00"
HEADER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADER_TRACEPARENT = f"00-{HEADER_TRACE_ID}-00f067aa0ba902b7-01"


@dataclass
class Rec:
    topic: str = "com.test.echo"
    partition: int = 3
    offset: int = 41
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = otel.use_tracer_provider(provider)
    yield exporter
    otel.use_tracer_provider(previous)
    provider.shutdown()


@pytest.fixture(params=["first_use", "cached"])
def log_vars(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways RecordScope binds the log fields: the first ``bind_contextvars``, then the cached vars."""
    if request.param == "first_use":
        monkeypatch.setattr(RecordScope, "log_vars", ())
    else:
        with RecordScope(Rec(), None):
            pass


def event(subject: str = "plain-subject", traceparent: str | None = TRACEPARENT, **extra: Any) -> ArvoEvent:
    return create_arvo_event(
        source="com.test.client",
        type="com.test.echo",
        subject=subject,
        data={},
        traceparent=traceparent,
        **extra,
    )


def hex_trace(span_context: trace.SpanContext) -> str:
    return format(span_context.trace_id, "032x")


async def run_layer(record: Rec, evt: ArvoEvent | None, outcome: str | None = "ok") -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def core(context: RecordContext) -> None:
        seen["span"] = context.span
        seen["current"] = trace.get_current_span()
        seen["log"] = structlog.contextvars.get_contextvars()
        seen["instrumented"] = is_instrumentation_enabled()
        context.outcome = outcome

    context = RecordContext(lane=None, record=record, event=evt, decode_error=None, started=0.0)  # type: ignore[arg-type]
    await compose([record_scope_layer], core)(context)
    return seen


async def test_a_record_gets_a_consumer_span_named_after_its_topic_with_the_messaging_attributes(
    spans: InMemorySpanExporter,
) -> None:
    evt = event()
    seen = await run_layer(Rec(), evt, outcome="processed")
    [span] = spans.get_finished_spans()
    assert span.name == "process com.test.echo"
    assert span.kind is SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "com.test.echo",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 41,
        "messaging.message.id": evt.id,
        "cloudevents.event_type": "com.test.echo",
        "arvo.consumer.outcome": "processed",
    }
    assert span.parent is not None
    assert hex_trace(span.context) == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_SPAN
    assert seen["span"] is seen["current"]
    assert seen["span"].get_span_context() == span.context
    assert seen["instrumented"]


async def test_an_undecoded_record_continues_the_trace_of_its_header(spans: InMemorySpanExporter) -> None:
    record = Rec(headers=[("traceparent", HEADER_TRACEPARENT.encode()), ("tracestate", b"k=v")])
    await run_layer(record, None, outcome="dead_lettered")
    [span] = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert "messaging.message.id" not in attributes
    assert "cloudevents.event_type" not in attributes
    assert attributes["arvo.consumer.outcome"] == "dead_lettered"
    assert hex_trace(span.context) == HEADER_TRACE_ID
    assert span.parent is not None
    assert span.context.trace_state.get("k") == "v"


async def test_the_events_trace_context_wins_over_the_record_header(spans: InMemorySpanExporter) -> None:
    record = Rec(headers=[("traceparent", HEADER_TRACEPARENT.encode())])
    await run_layer(record, event(tracestate="a=b"))
    [span] = spans.get_finished_spans()
    assert hex_trace(span.context) == TRACE_ID
    assert span.context.trace_state.get("a") == "b"


async def test_an_event_without_traceparent_falls_back_to_the_header_and_its_tracestate(
    spans: InMemorySpanExporter,
) -> None:
    record = Rec(headers=[("traceparent", HEADER_TRACEPARENT.encode()), ("tracestate", b"h=1")])
    await run_layer(record, event(traceparent=None))
    [span] = spans.get_finished_spans()
    assert hex_trace(span.context) == HEADER_TRACE_ID
    assert span.context.trace_state.get("h") == "1"


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe"], ids=["empty", "not_utf8"])
async def test_an_empty_or_undecodable_traceparent_header_starts_a_new_trace(
    spans: InMemorySpanExporter, raw: bytes
) -> None:
    await run_layer(Rec(headers=[("traceparent", raw)]), None)
    [span] = spans.get_finished_spans()
    assert span.parent is None


async def test_without_an_outcome_the_span_has_no_outcome_attribute(spans: InMemorySpanExporter) -> None:
    await run_layer(Rec(), event(), outcome=None)
    [span] = spans.get_finished_spans()
    assert "arvo.consumer.outcome" not in dict(span.attributes or {})


async def test_a_sampled_out_trace_builds_no_span_and_keeps_instrumentation_quiet(
    spans: InMemorySpanExporter,
) -> None:
    seen = await run_layer(Rec(), event(traceparent=UNSAMPLED))
    assert spans.get_finished_spans() == ()
    assert seen["span"] is trace.INVALID_SPAN
    assert not seen["instrumented"]
    # The event's context is current (handlers pass the traceparent on) ...
    assert hex_trace(seen["current"].get_span_context()) == TRACE_ID
    # ... and only while the record is processed.
    assert not trace.get_current_span().get_span_context().is_valid


async def test_without_tracing_the_events_trace_context_is_current_while_the_record_is_processed() -> None:
    seen = await run_layer(Rec(), event())
    assert seen["span"] is trace.INVALID_SPAN
    assert hex_trace(seen["current"].get_span_context()) == TRACE_ID
    assert format(seen["current"].get_span_context().span_id, "016x") == PARENT_SPAN
    assert not trace.get_current_span().get_span_context().is_valid


async def test_without_tracing_or_trace_context_nothing_is_attached() -> None:
    seen = await run_layer(Rec(), event(traceparent=None))
    assert not seen["current"].get_span_context().is_valid


async def test_an_error_inside_the_span_propagates_and_the_span_still_ends(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(KeyError), RecordScope(Rec(), event()):
        raise KeyError("boom")
    [span] = spans.get_finished_spans()
    assert span.events == ()  # failures are recorded by the processing (fail_span), not twice
    assert span.status.status_code is StatusCode.UNSET
    assert structlog.contextvars.get_contextvars() == {}


@pytest.mark.usefixtures("log_vars")
def test_log_lines_of_a_record_carry_its_coordinates_and_event_then_nothing() -> None:
    subject = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.x", version="1.0.0", initiator="com.test.client"
    )
    evt = event(subject=subject)
    with RecordScope(Rec(), evt):
        bound = structlog.contextvars.get_contextvars()
    assert bound == {
        "topic": "com.test.echo",
        "partition": 3,
        "offset": 41,
        "event_id": evt.id,
        "event_type": "com.test.echo",
        "subject": ArvoOrchestrationSubject.parse(subject).instance_key,
    }
    assert structlog.contextvars.get_contextvars() == {}


@pytest.mark.usefixtures("log_vars")
def test_log_lines_of_an_undecoded_record_carry_its_coordinates_only() -> None:
    with RecordScope(Rec(offset=7), None):
        bound = structlog.contextvars.get_contextvars()
    assert bound == {"topic": "com.test.echo", "partition": 3, "offset": 7}
    assert structlog.contextvars.get_contextvars() == {}


def test_the_log_fields_are_bound_in_the_documented_order() -> None:
    assert LOG_FIELDS == ("topic", "partition", "offset", "event_id", "event_type", "subject")


@pytest.mark.usefixtures("log_vars")
def test_a_record_scope_restores_the_fields_bound_before_it() -> None:
    structlog.contextvars.bind_contextvars(topic="outer", offset=1)
    try:
        with RecordScope(Rec(), None):
            assert structlog.contextvars.get_contextvars()["topic"] == "com.test.echo"
        assert structlog.contextvars.get_contextvars() == {"topic": "outer", "offset": 1}
    finally:
        structlog.contextvars.clear_contextvars()


def test_short_subject_is_the_instance_key_or_a_bounded_prefix() -> None:
    subject = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.x", version="1.0.0", initiator="com.test.client"
    )
    assert short_subject(subject) == ArvoOrchestrationSubject.parse(subject).instance_key
    assert short_subject("s" * 64) == "s" * 64
    assert short_subject("s" * 65) == "s" * 64 + "…"


def test_record_fields_name_the_record_and_its_full_subject() -> None:
    evt = event(subject="x" * 80)
    assert record_fields(Rec(), evt) == {
        "topic": "com.test.echo",
        "partition": 3,
        "offset": 41,
        "event_id": evt.id,
        "event_type": "com.test.echo",
        "subject": "x" * 80,
    }


def test_fail_span_sets_an_error_status_naming_the_error_and_records_it_only_when_asked(
    spans: InMemorySpanExporter,
) -> None:
    tracer = otel.runtime_tracer()
    with tracer.start_as_current_span("a") as quiet:
        fail_span(quiet, ValueError("x" * 300))
    with tracer.start_as_current_span("b") as loud:
        fail_span(loud, KeyError("k"), record_exception=True)
    a, b = spans.get_finished_spans()
    assert a.status.status_code is StatusCode.ERROR
    assert a.status.description == "ValueError: " + "x" * 200
    assert a.events == ()
    assert b.status.description == "KeyError: 'k'"
    assert [e.name for e in b.events] == ["exception"]


def test_fail_span_on_a_span_that_does_not_record_does_nothing() -> None:
    fail_span(trace.INVALID_SPAN, ValueError("x"), record_exception=True)  # no error


async def test_compose_runs_the_layers_outermost_first_around_the_core() -> None:
    order: list[str] = []

    def layer(name: str) -> Any:
        async def wrap(context: RecordContext, *, call_next: Any) -> None:
            order.append(f"{name}>")
            await call_next(context)
            order.append(f"<{name}")

        return wrap

    async def core(context: RecordContext) -> None:
        order.append("core")

    context = RecordContext(lane=None, record=Rec(), event=None, decode_error=None, started=0.0)  # type: ignore[arg-type]
    await compose([layer("a"), layer("b")], core)(context)
    assert order == ["a>", "b>", "core", "<b", "<a"]
