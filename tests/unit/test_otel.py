"""service.runtime.otel: OTEL_* configuration, the OTLP exporters end to end, and the tracer seam."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis.asyncio
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

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
