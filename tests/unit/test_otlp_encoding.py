"""service.runtime.otlp_encoding: the fast OTLP span encoder sends what the SDK's encoder sends."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from contracts.bench import bench_machine_contract
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app
from service.runtime import otel
from service.runtime.otlp_encoding import FastOTLPSpanExporter, encode_spans_bytes
from tests.integration._otlp import OtlpHttpReceiver


def _assert_same_request(spans: Sequence[ReadableSpan]) -> None:
    reference = encode_spans(spans).SerializePartialToString()
    fast = encode_spans_bytes(spans)
    assert ExportTraceServiceRequest.FromString(fast) == ExportTraceServiceRequest.FromString(reference)
    assert fast == reference  # same field order too


def _provider(exporter: InMemorySpanExporter, service: str = "svc") -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "pid": 42}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def test_spans_of_the_bench_workflows_encode_to_the_reference_request() -> None:
    exporter = InMemorySpanExporter()
    provider = _provider(exporter)
    previous = otel.use_tracer_provider(provider)
    try:
        broker = InMemoryBroker(bench_app(InMemoryMemory()))
        factory = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0"))
        for index in range(5):
            await broker.publish(
                factory.init(source="com.test.client", data={"a": index, "b": 1, "parentSubject$$": None})
            )
    finally:
        otel.use_tracer_provider(previous)
    spans = exporter.get_finished_spans()
    assert len(spans) >= 5 * 8
    # Twice: the second pass answers from the caches.
    _assert_same_request(spans)
    _assert_same_request(spans)


def test_every_field_and_attribute_type_encodes_to_the_reference_request() -> None:
    exporter = InMemorySpanExporter()
    first, second = _provider(exporter, "first"), _provider(exporter, "second")
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
    )
    tracer = first.get_tracer("scope-a", "1.2.3", schema_url="https://schema/1", attributes={"scope.attr": 1})
    with tracer.start_as_current_span(
        "root",
        context=trace.set_span_in_context(trace.NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={
            "text": "héllo ✓",
            "empty": "",
            "flag": False,
            "count": 0,
            "negative": -5,
            "big": 2**62,
            "ratio": 0.25,
            "blob": b"\x00\x01",
            "strings": ["a", "b"],
            "numbers": (1, 2.5),
            "long": "x" * 300,
        },
        links=[Link(remote, {"link.attr": "v"})],
        record_exception=False,
        set_status_on_exception=False,
    ) as root:
        root.add_event("log", {"log.severity": "INFO", "log.timestamp": 1.5})
        root.add_event("bare")
        root.set_status(Status(StatusCode.ERROR, "failed"))
        with first.get_tracer("scope-b").start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.OK))
    for kind in (SpanKind.INTERNAL, SpanKind.PRODUCER, SpanKind.CONSUMER):
        second.get_tracer("scope-c").start_span("other", kind=kind).end()
    spans = exporter.get_finished_spans()
    _assert_same_request(spans)
    _assert_same_request(spans[:1])
    assert encode_spans_bytes([]) == encode_spans([]).SerializePartialToString()


def test_an_attribute_the_reference_cannot_encode_is_skipped_and_logged_as_there(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = InMemorySpanExporter()
    tracer = _provider(exporter).get_tracer("scope")
    tracer.start_span("huge", attributes={"ok": "yes", "too.big": 2**70, "after": 1}).end()
    with caplog.at_level(logging.ERROR):
        _assert_same_request(exporter.get_finished_spans())
    assert "too.big" in caplog.text


def test_the_fast_exporter_delivers_to_an_otlp_http_receiver() -> None:
    exporter = InMemorySpanExporter()
    tracer = _provider(exporter).get_tracer("scope")
    with tracer.start_as_current_span("delivered", attributes={"arvo.span.kind": "internal"}):
        pass
    with OtlpHttpReceiver() as receiver:
        fast = FastOTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        assert fast.export(exporter.get_finished_spans()) is SpanExportResult.SUCCESS
        fast.shutdown()  # type: ignore[no-untyped-call]
        (span,) = receiver.wait_for(lambda spans: len(spans) == 1)
    assert span.name == "delivered"
    assert span.attributes == {"arvo.span.kind": "internal"}
    assert span.resource["service.name"] == "svc"


def test_the_service_exports_otlp_http_with_the_fast_exporter_and_a_larger_queue() -> None:
    setup = otel.build_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert setup is not None
    (processor,) = setup.provider._active_span_processor._span_processors
    assert isinstance(processor, BatchSpanProcessor)
    assert isinstance(processor.span_exporter, FastOTLPSpanExporter)
    assert processor._batch_processor._max_queue_size == otel.BSP_DEFAULTS["OTEL_BSP_MAX_QUEUE_SIZE"]
    setup.provider.shutdown()


def test_a_set_otel_bsp_variable_wins_over_the_service_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "50")
    processor = otel.batch_span_processor(InMemorySpanExporter())
    assert processor._batch_processor._max_queue_size == 100  # type: ignore[attr-defined]
    assert processor._batch_processor._max_export_batch_size == 50  # type: ignore[attr-defined]
    processor.shutdown()


def test_a_string_that_is_not_utf8_encodable_is_skipped_as_the_reference_does() -> None:
    exporter = InMemorySpanExporter()
    tracer = _provider(exporter).get_tracer("scope")
    tracer.start_span("surrogate", attributes={"bad": "\udc80", "good": "fine"}).end()
    (span,) = exporter.get_finished_spans()
    _assert_same_request([span])
    decoded = ExportTraceServiceRequest.FromString(encode_spans_bytes([span]))
    (encoded,) = decoded.resource_spans[0].scope_spans[0].spans
    assert [attribute.key for attribute in encoded.attributes] == ["good"]
