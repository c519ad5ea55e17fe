"""Section 13: span names, kinds, attributes and trace-context inheritance of the three handler kinds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from contracts.bench import bench_machine_contract, bench_resumable_contract
from service.arvo import telemetry
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app
from service.examples.bench import bench_add_handler

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = telemetry.use_tracer(provider.get_tracer("arvo-instrumentation", "1.0.0"))
    yield exporter
    telemetry.use_tracer(previous)
    provider.shutdown()


@pytest.fixture
def no_sdk() -> Iterator[None]:
    previous = telemetry.use_tracer(trace.NoOpTracer())
    yield
    telemetry.use_tracer(previous)


def add_event(traceparent: str | None = TRACEPARENT) -> ArvoEvent:
    from contracts.bench import add_contract

    return create_arvo_event_factory(add_contract.version("1.0.0")).accepts(
        source="com.test.client", data={"a": 1, "b": 2}, traceparent=traceparent
    )


async def test_handler_span_is_a_consumer_child_of_the_event_traceparent(spans: InMemorySpanExporter) -> None:
    result = await bench_add_handler().execute(add_event())
    (span,) = [s for s in spans.get_finished_spans() if s.name == "Handler<#/bench/add>"]
    assert span.kind is SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    attributes = dict(span.attributes or {})
    assert attributes["arvo.span.kind"] == "handler.simple"
    assert attributes["openinference.span.kind"] == "CHAIN"
    assert attributes["arvo.handler.source"] == "com.bench.add"
    assert attributes["arvo.contract.uri"] == "#/bench/add"
    assert attributes["arvo.handler.execution.status"] == "normal"
    assert attributes["consumable.0.cloudevents.event_type"] == "com.bench.add"
    assert attributes["emittables.0.cloudevents.event_type"] == "evt.bench.add.success"
    assert span.status.status_code is StatusCode.OK
    emitted = result.events[0]
    assert emitted.traceparent == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"


async def test_orchestrator_and_resumable_spans_are_producers_named_after_uri_and_event(
    spans: InMemorySpanExporter,
) -> None:
    broker = InMemoryBroker(bench_app(InMemoryMemory()))
    for contract in (bench_machine_contract, bench_resumable_contract):
        init = create_arvo_orchestrator_event_factory(contract.version("1.0.0")).init(
            source="com.test.client", data={"a": 1, "b": 2, "parentSubject$$": None}, traceparent=TRACEPARENT
        )
        await broker.resolve(init)
    names = {span.name: span for span in spans.get_finished_spans()}
    orchestrator = names["Orchestrator<#/bench/orchestrator>@<arvo.orc.bench>"]
    resumable = names["Resumable<#/bench/resumable>@<arvo.orc.bench.resumable>"]
    assert orchestrator.kind is SpanKind.PRODUCER
    assert dict(orchestrator.attributes or {})["arvo.span.kind"] == "handler.orchestrator.statemachine"
    assert dict(resumable.attributes or {})["arvo.span.kind"] == "handler.orchestrator.imperative"
    assert dict(orchestrator.attributes or {})["arvo.parsed.subject.orchestrator.name"] == "arvo.orc.bench"
    assert "Execute Machine" in names
    # Every hop of both workflows belongs to the one trace started by the client.
    handled = [
        span for span in spans.get_finished_spans() if not span.name.startswith("OrchestratorEventFactory")
    ]
    assert {format(span.context.trace_id, "032x") for span in handled} == {TRACE_ID}


async def test_handler_system_error_marks_the_span_as_error(spans: InMemorySpanExporter) -> None:
    from contracts.bench import add_contract
    from service.arvo.handler import ArvoEventHandler

    async def broken(_context: object) -> None:
        raise RuntimeError("boom")

    handler = ArvoEventHandler(contract=add_contract, executionunits=1, handler={"1.0.0": broken})
    await handler.execute(add_event())
    (span,) = [s for s in spans.get_finished_spans() if s.name == "Handler<#/bench/add>"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Event processing failed: boom"
    assert any(event.name == "exception" for event in span.events)


async def test_without_an_sdk_the_incoming_traceparent_passes_through(no_sdk: None) -> None:
    result = await bench_add_handler().execute(add_event())
    assert result.events[0].traceparent == TRACEPARENT


async def test_without_an_sdk_an_invalid_traceparent_is_not_propagated(no_sdk: None) -> None:
    result = await bench_add_handler().execute(add_event(traceparent="not-a-traceparent"))
    assert result.events[0].traceparent is None


async def test_orchestrator_system_error_leaves_the_span_in_error(spans: InMemorySpanExporter) -> None:
    from contracts.demo import order_contract
    from service.examples import demo_app

    broker = InMemoryBroker(demo_app(InMemoryMemory()))
    init = create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source="com.test.client",
        data={
            "parentSubject$$": None,
            "orderId": "o-9",
            "customerId": "c",
            "country": "NL",
            "items": [{"sku": "unknown-sku", "quantity": 1, "unitPriceCents": 1}],
        },
    )
    final = await broker.resolve(init)
    assert final is not None
    assert final.type == "sys.arvo.orc.order.error"
    failing = [
        span
        for span in spans.get_finished_spans()
        if span.name == "Orchestrator<#/demo/order>@<sys.com.inventory.reserve.error>"
    ]
    assert len(failing) == 1
    assert failing[0].status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in failing[0].events)


EVENT_ATTRIBUTE_KEYS = (
    "cloudevents.event_id",
    "cloudevents.event_source",
    "cloudevents.event_spec_version",
    "cloudevents.event_subject",
    "cloudevents.event_type",
    "cloudevents.event_time",
    "cloudevents.event_datacontenttype",
    "cloudevents.event_dataschema",
    "cloudevents.arvo.event_redirectto",
    "cloudevents.arvo.event_to",
    "cloudevents.arvo.event_executionunits",
    "cloudevents.arvo.event_parentid",
    "cloudevents.arvo.event_domain",
)


async def test_handler_span_carries_the_whole_catalogue_with_the_events_values(
    spans: InMemorySpanExporter,
) -> None:
    event = add_event()
    result = await bench_add_handler().execute(event)
    (span,) = [s for s in spans.get_finished_spans() if s.name == "Handler<#/bench/add>"]
    attributes = dict(span.attributes or {})
    assert list(attributes) == [
        "arvo.span.kind",
        "openinference.span.kind",
        "arvo.handler.source",
        "arvo.contract.uri",
        "arvo.handler.execution.status",
        "arvo.handler.execution.type",
        *(f"consumable.0.{key}" for key in EVENT_ATTRIBUTE_KEYS),
        *(f"emittables.0.{key}" for key in EVENT_ATTRIBUTE_KEYS),
    ]
    assert {k: v for k, v in attributes.items() if k.startswith("consumable.0.")} == {
        f"consumable.0.{key}": value for key, value in event.otel_attributes.items()
    }
    assert {k: v for k, v in attributes.items() if k.startswith("emittables.0.")} == {
        f"emittables.0.{key}": value for key, value in result.events[0].otel_attributes.items()
    }
    assert [dict(log.attributes or {})["log.message"] for log in span.events] == [
        "Execution completed and emitted 1 events"
    ]


async def test_orchestrator_span_keeps_the_messages_that_carry_information(
    spans: InMemorySpanExporter,
) -> None:
    broker = InMemoryBroker(bench_app(InMemoryMemory()))
    init = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0")).init(
        source="com.test.client", data={"a": 1, "b": 2, "parentSubject$$": None}
    )
    await broker.resolve(init)
    orchestrator = next(
        span
        for span in spans.get_finished_spans()
        if span.name == "Orchestrator<#/bench/orchestrator>@<arvo.orc.bench>"
    )
    messages = [str(dict(log.attributes or {})["log.message"]) for log in orchestrator.events]
    # "Starting execution for <type> on subject <subject>" repeats consumable.0.* and the span start.
    assert not any(message.startswith("Starting execution") for message in messages)
    assert messages[-1] == "Execution ok and emitted 1 events"
    execute = next(span for span in spans.get_finished_spans() if span.name == "Execute Machine")
    assert list(dict(execute.attributes or {})) == [
        "arvo.span.kind",
        "arvo.machine.type",
        "arvo.machine.version",
        *EVENT_ATTRIBUTE_KEYS,
    ]


@pytest.mark.parametrize(
    ("traceparent", "tracestate"),
    [
        (TRACEPARENT, None),
        (f"00-{TRACE_ID}-{PARENT_SPAN_ID}-00", None),
        (TRACEPARENT, "vendor=value"),
        (f"00-{'0' * 32}-{PARENT_SPAN_ID}-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"01-{TRACE_ID}-{PARENT_SPAN_ID}-01-extra", None),
        (f"00-{TRACE_ID.upper()}-{PARENT_SPAN_ID}-01", None),
        ("garbage", None),
    ],
)
def test_parent_context_parses_traceparent_as_the_w3c_propagator_does(
    traceparent: str, tracestate: str | None
) -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})}
    expected = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    parent = telemetry.parent_context_for(
        traceparent=traceparent, tracestate=tracestate, inherit_from="EVENT"
    )
    actual = trace.get_current_span(parent).get_span_context()
    assert actual == expected
    assert (actual.is_remote, actual.trace_state) == (expected.is_remote, expected.trace_state)


def test_event_attributes_are_stored_as_set_attributes_would_store_them() -> None:
    event = add_event()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "fast", attributes={"consumable.0.cloudevents.event_id": "first"}
    ) as fast:
        telemetry.set_emittables_attributes(fast, [event])
        telemetry._set_event_derived_attributes(fast, telemetry.event_attributes("consumable.0", event))
    with tracer.start_as_current_span(
        "sdk", attributes={"consumable.0.cloudevents.event_id": "first"}
    ) as sdk:
        sdk.set_attributes(telemetry.event_attributes("emittables.0", event))
        sdk.set_attributes(telemetry.event_attributes("consumable.0", event))
    stored = {span.name: span for span in exporter.get_finished_spans()}
    assert list((stored["fast"].attributes or {}).items()) == list((stored["sdk"].attributes or {}).items())
    provider.shutdown()


def test_event_attributes_take_the_sdk_path_when_limits_could_truncate() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=4, max_span_attributes=3))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("limited") as span:
        telemetry._set_event_derived_attributes(span, telemetry.event_attributes("consumable.0", add_event()))
    (limited,) = exporter.get_finished_spans()
    assert len(limited.attributes or {}) == 3
    assert limited.dropped_attributes == 10
    assert all(len(str(value)) <= 4 for value in (limited.attributes or {}).values())
    provider.shutdown()
