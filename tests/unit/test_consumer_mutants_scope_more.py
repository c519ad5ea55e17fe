"""Leaving a record's scope: the span ends and the trace context is restored at once, an error leaves
with its own message and traceback, nothing is logged for a record without trace context, and a
failed record's span names the exception it recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.runtime import otel
from service.runtime.consumer.scope import RecordScope, fail_span
from tests.unit.test_consumer_mutants_scope import Rec, event


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = otel.use_tracer_provider(provider)
    yield exporter
    otel.use_tracer_provider(previous)
    provider.shutdown()


def explode() -> None:
    raise KeyError("boom")


def test_leaving_the_scope_ends_the_span_and_restores_the_context_at_once(
    spans: InMemorySpanExporter,
) -> None:
    scope = RecordScope(Rec(), event())
    with scope as span:
        assert trace.get_current_span() is span
    # Still referenced: the span ended because the scope was left, not because it was collected.
    assert len(spans.get_finished_spans()) == 1
    assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.usefixtures("spans")
def test_an_error_leaves_the_traced_scope_with_its_message_and_traceback() -> None:
    with pytest.raises(KeyError, match="boom") as raised, RecordScope(Rec(), event()):
        explode()
    assert raised.traceback[-1].name == "explode"


def test_a_record_without_trace_context_logs_no_context_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="opentelemetry"), RecordScope(Rec(), event(traceparent=None)):
        pass
    assert caplog.records == []


def test_a_failed_span_records_the_exception_it_was_given(spans: InMemorySpanExporter) -> None:
    with otel.runtime_tracer().start_as_current_span("record") as span:
        fail_span(span, KeyError("k"), record_exception=True)
    [finished] = spans.get_finished_spans()
    [recorded] = finished.events
    attributes = dict(recorded.attributes or {})
    assert (attributes["exception.type"], attributes["exception.message"]) == ("KeyError", "'k'")
