"""service.runtime.otel: OTEL_* configuration, the OTLP exporters end to end, the tracer seam, dropped spans."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from structlog.testing import capture_logs

from contracts.bench import add_contract
from service.arvo import telemetry
from service.arvo.factory import create_arvo_event_factory
from service.examples.bench import bench_add_handler
from service.runtime import otel
from tests.integration._otlp import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* variable of the machine leaks into these tests; the tracer seam is restored."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    previous = otel.use_tracer_provider(None)
    yield
    otel.use_tracer_provider(previous)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "svc"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
    ],
)
def test_tracing_is_on_only_when_an_exporter_or_endpoint_is_configured(
    environ: dict[str, str], expected: bool
) -> None:
    assert otel.tracing_requested(environ) is expected


def test_nothing_configured_installs_no_sdk() -> None:
    assert otel.build_tracing({}) is None
    assert otel.configure_tracing() is None
    assert not otel.tracing_enabled()


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_unsupported_values_are_refused_naming_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(otel.TracingConfigError, match=variable):
        otel.build_tracing(environ)


def test_http_protobuf_is_the_default_and_the_signal_path_is_appended() -> None:
    setup = otel.build_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert setup is not None
    assert (setup.protocol, setup.endpoint) == ("http/protobuf", "http://collector:4318/v1/traces")
    (processor,) = setup.provider._active_span_processor._span_processors  # type: ignore[attr-defined]
    assert isinstance(processor.span_exporter, HttpExporter)
    setup.provider.shutdown()


def test_traces_specific_protocol_and_endpoint_win_over_the_general_ones() -> None:
    setup = otel.build_tracing(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4317",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        }
    )
    assert setup is not None
    assert (setup.protocol, setup.endpoint) == ("grpc", "http://jaeger:4317")
    (processor,) = setup.provider._active_span_processor._span_processors  # type: ignore[attr-defined]
    assert isinstance(processor.span_exporter, GrpcExporter)
    setup.provider.shutdown()


def test_service_name_defaults_to_arvo_service_and_the_environment_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console"}
    setup = otel.build_tracing(environ)
    assert setup is not None
    assert setup.provider.resource.attributes["service.name"] == "arvo-service"
    setup.provider.shutdown()

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,team=payments")
    setup = otel.build_tracing(environ)
    assert setup is not None
    assert setup.provider.resource.attributes["service.name"] == "from-attributes"
    assert setup.provider.resource.attributes["team"] == "payments"
    setup.provider.shutdown()

    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders")
    setup = otel.build_tracing({**environ, "OTEL_SERVICE_NAME": "orders"})
    assert setup is not None
    assert setup.provider.resource.attributes["service.name"] == "orders"
    setup.provider.shutdown()


def test_the_sampler_comes_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    setup = otel.build_tracing({"OTEL_TRACES_EXPORTER": "console"})
    assert setup is not None
    sampler = setup.provider.sampler
    assert isinstance(sampler, ParentBased)
    assert isinstance(sampler._root, TraceIdRatioBased)  # type: ignore[attr-defined]
    assert sampler._root.rate == 0.25  # type: ignore[attr-defined]
    setup.provider.shutdown()


async def _one_handler_span(setup: otel.TracingSetup) -> None:
    """Run the add handler on an event continuing TRACEPARENT, then flush (shutdown) the provider."""
    otel.use_tracer_provider(setup.provider)
    event = create_arvo_event_factory(add_contract.version("1.0.0")).accepts(
        source="com.test.client", data={"a": 1, "b": 2}, traceparent=TRACEPARENT
    )
    await bench_add_handler().execute(event)
    setup.provider.shutdown()


def _handler_span(spans: list[ReceivedSpan]) -> ReceivedSpan:
    (span,) = [span for span in spans if span.name == "Handler<#/bench/add>"]
    return span


async def test_the_otlp_http_exporter_delivers_spans_with_the_configured_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with OtlpHttpReceiver() as receiver:
        monkeypatch.setenv("OTEL_SERVICE_NAME", "arvo-otlp-http-test")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
        setup = otel.build_tracing(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        )
        assert setup is not None
        await _one_handler_span(setup)
        span = _handler_span(
            receiver.wait_for(lambda spans: any(s.name.startswith("Handler") for s in spans))
        )
    assert span.resource["service.name"] == "arvo-otlp-http-test"
    assert span.resource["deployment.environment.name"] == "test"
    assert span.trace_id == TRACE_ID
    assert span.parent_span_id == PARENT_SPAN_ID
    assert span.attributes["arvo.handler.source"] == "com.bench.add"


async def test_the_otlp_grpc_exporter_delivers_spans_with_the_configured_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with OtlpGrpcReceiver() as receiver:
        monkeypatch.setenv("OTEL_SERVICE_NAME", "arvo-otlp-grpc-test")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        setup = otel.build_tracing(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )
        assert setup is not None
        await _one_handler_span(setup)
        span = _handler_span(
            receiver.wait_for(lambda spans: any(s.name.startswith("Handler") for s in spans))
        )
    assert span.resource["service.name"] == "arvo-otlp-grpc-test"
    assert span.trace_id == TRACE_ID


def test_use_tracer_provider_points_arvo_and_runtime_spans_at_one_provider() -> None:
    provider = TracerProvider()
    assert not otel.tracing_enabled()
    previous = otel.use_tracer_provider(provider)
    try:
        assert otel.tracing_enabled()
        assert telemetry.tracing_enabled()
        with otel.runtime_tracer().start_as_current_span("runtime") as runtime:
            assert runtime.is_recording()
            with telemetry.arvo_tracer().start_as_current_span("arvo") as arvo:
                assert arvo.get_span_context().trace_id == runtime.get_span_context().trace_id
    finally:
        otel.use_tracer_provider(previous)
    assert not otel.tracing_enabled()


async def test_redis_is_not_instrumented_without_tracing() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:9/0")
    try:
        assert otel.instrument_redis(client) is False
        assert not getattr(client, "_is_instrumented_by_opentelemetry", False)
    finally:
        await client.aclose()


# --------------------------------------------------------------------------------------------------
# Spans dropped by a full batch queue: counted, logged once per interval, the SDK's line silenced


class _GatedExporter(SpanExporter):
    """Holds every export until ``gate`` opens, so the processor's queue fills; counts what it got."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.exporting = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.gate.wait(30)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.gate.set()


def _dropped_lines(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "spans dropped"]


def _wait_for_lines(logs: Sequence[MutableMapping[str, Any]], count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_dropped_lines(logs)) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_full_queue_is_counted_and_logged_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    drops = otel.SpanDrops(interval_s=0.5)
    exporter = _GatedExporter()
    provider = TracerProvider()
    provider.add_span_processor(otel.batch_span_processor(exporter, drops=drops))
    tracer = provider.get_tracer("test")
    caplog.set_level(logging.INFO)
    with capture_logs() as logs:
        for _ in range(4):  # one batch: the worker takes it and is held in export
            tracer.start_span("first batch").end()
        assert exporter.exporting.wait(10)
        # (Not before: the SDK counts a drop when it finds the queue full, then appends; a worker
        # taking a batch in between makes that count one too many.)
        for _ in range(46):  # 8 fill the queue, 38 are dropped
            tracer.start_span("burst").end()
        first_burst = drops.total
        assert first_burst == 38
        _wait_for_lines(logs, 1)
        time.sleep(0.6)  # a quiet interval: no line for it
        (line,) = _dropped_lines(logs)
        assert line["log_level"] == "warning"
        assert (line["dropped"], line["dropped_total"]) == (first_burst, first_burst)

        for _ in range(30):  # the exporter is still held: every one of these is dropped
            tracer.start_span("second burst").end()
        assert drops.total == first_burst + 30
        _wait_for_lines(logs, 2)
        lines = _dropped_lines(logs)
        assert [(line["dropped"], line["dropped_total"]) for line in lines] == [
            (first_burst, first_burst),
            (30, first_burst + 30),
        ]
        exporter.gate.set()
        provider.shutdown()
    # Every span ended was either exported or counted as dropped.
    assert exporter.exported + drops.total == 80
    assert not [record for record in caplog.records if "Queue full" in record.getMessage()]
    assert "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED" not in os.environ


def test_the_pending_count_is_logged_at_once_by_report() -> None:
    drops = otel.SpanDrops(interval_s=3600)
    with capture_logs() as logs:
        drops.report()  # nothing dropped: no line
        drops.add(3)
        drops.add(2)
        drops.report()
        drops.report()
    assert [(line["dropped"], line["dropped_total"]) for line in _dropped_lines(logs)] == [(5, 5)]


def test_the_sdk_still_reports_drops_through_its_processor_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook of batch_span_processor: if the SDK changes, this says so (and the service logs it)."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "false")  # the user's, kept
    with capture_logs() as logs:
        processor = otel.batch_span_processor(_GatedExporter(), drops=otel.SpanDrops())
    processor.shutdown()
    assert not [line for line in logs if "cannot be counted" in line["event"]]
    assert os.environ["OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"] == "false"


def test_the_drop_counter_is_served_on_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.runtime.metrics import ServiceMetrics

    drops = otel.SpanDrops(interval_s=3600)
    monkeypatch.setattr(otel, "_span_drops", drops)
    metrics = ServiceMetrics(process_metrics=False)
    assert b"arvo_spans_dropped_total 0.0" in metrics.render()
    drops.add(7)
    assert b"arvo_spans_dropped_total 7.0" in metrics.render()


def _sizing_table() -> dict[str, int]:
    """The ``OTEL_BSP_*`` rows of the sizing table in docs/performance.md: variable → our default."""
    text = (Path(__file__).parents[2] / "docs" / "performance.md").read_text()
    section = text.split("### Sizing the batch processor")[1].split("\n#")[0]
    rows = re.findall(r"^\| `(OTEL_BSP_[A-Z_]+)` \| ([\d,]+)", section, flags=re.MULTILINE)
    return {variable: int(value.replace(",", "")) for variable, value in rows}


def test_the_default_sizing_is_what_the_docs_say(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _sizing_table() == dict(otel.BSP_DEFAULTS)
    processor = otel.batch_span_processor(_GatedExporter(), {})
    batch = processor._batch_processor  # type: ignore[attr-defined]
    effective = {
        "OTEL_BSP_MAX_QUEUE_SIZE": batch._max_queue_size,
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": batch._max_export_batch_size,
        "OTEL_BSP_SCHEDULE_DELAY": batch._schedule_delay_millis,
    }
    processor.shutdown()
    assert effective == dict(otel.BSP_DEFAULTS)

    # A standard variable that is set wins (read by the SDK).
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1000")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    processor = otel.batch_span_processor(_GatedExporter())
    batch = processor._batch_processor  # type: ignore[attr-defined]
    assert (batch._max_queue_size, batch._schedule_delay_millis, batch._max_export_batch_size) == (
        1000,
        250,
        512,
    )
    processor.shutdown()
