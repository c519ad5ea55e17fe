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


def add_event(traceparent: str | None = TRACEPARENT):
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
