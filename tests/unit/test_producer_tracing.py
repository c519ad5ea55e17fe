"""PRODUCER spans of EventProducer: one ``send <topic>`` per record, trace context for client events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from contracts.bench import add_contract, bench_machine_contract
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.runtime import otel
from service.runtime.producer import EventProducer
from service.runtime.routing import TopicRouter
from service.runtime.settings import load_settings

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class FakeClient:
    """The part of AIOKafkaProducer that EventProducer uses; ``fail_topic`` deliveries fail."""

    def __init__(self, fail_topic: str | None = None) -> None:
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
        self.fail_topic = fail_topic

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self.sent.append((topic, value, headers))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic == self.fail_topic:
            future.set_exception(ConnectionError("broker gone"))
        else:
            future.set_result(None)
        return future


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = otel.use_tracer_provider(provider)
    yield exporter
    otel.use_tracer_provider(previous)
    provider.shutdown()


async def producer(client: FakeClient) -> EventProducer:
    settings = load_settings(env_file=None, topic_prefix="p.")
    events = EventProducer(settings=settings, router=TopicRouter.from_settings(settings), producer=client)  # type: ignore[arg-type]
    await events.start()
    return events


def sends(spans: InMemorySpanExporter) -> list[Any]:
    return [span for span in spans.get_finished_spans() if span.name.startswith("send ")]


def init_event() -> Any:
    """A client's init event without trace context (as ``arvo publish`` builds it: before tracing)."""
    event = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0")).init(
        source="com.test.client", data={"a": 1, "b": 2, "parentSubject$$": None}
    )
    return event.replace(traceparent=None, tracestate=None)


def add_event() -> Any:
    return create_arvo_event_factory(add_contract.version("1.0.0")).accepts(
        source="com.test.client", data={"a": 1, "b": 2}, traceparent=TRACEPARENT
    )


async def test_every_record_gets_a_send_span_and_a_client_event_continues_it(
    spans: InMemorySpanExporter,
) -> None:
    client = FakeClient()
    init, call = init_event(), add_event()
    await (await producer(client)).publish([init, call])
    send_init, send_call = sends(spans)
    assert (send_init.name, send_call.name) == ("send p.arvo.orc.bench", "send p.com.bench.add")
    assert send_init.kind is SpanKind.PRODUCER
    assert dict(send_init.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "p.arvo.orc.bench",
        "messaging.message.id": init.id,
    }
    sent_init = orjson.loads(client.sent[0][1])
    context = send_init.context
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    # The init event had no trace context: it carries its publish span's (value and header).
    assert sent_init["traceparent"] == expected
    assert sent_init["id"] == init.id
    assert ("traceparent", sent_init["traceparent"].encode()) in client.sent[0][2]
    # An event that has one keeps it: the next hop continues the span that emitted it.
    assert orjson.loads(client.sent[1][1])["traceparent"] == TRACEPARENT


async def test_a_failed_delivery_is_an_error_span_and_raises(spans: InMemorySpanExporter) -> None:
    client = FakeClient(fail_topic="p.com.bench.add")
    with pytest.raises(ConnectionError, match="broker gone"):
        await (await producer(client)).publish([init_event(), add_event()])
    ok, failed = sends(spans)
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]


async def test_raw_records_get_a_send_span_named_by_their_ce_id_header(spans: InMemorySpanExporter) -> None:
    client = FakeClient()
    events = await producer(client)
    await events.publish_raw("p.dlq", key=b"k", value=b"v", headers=[("ce_id", b"abc")])
    (span,) = sends(spans)
    assert (span.name, span.kind) == ("send p.dlq", SpanKind.PRODUCER)
    assert dict(span.attributes or {})["messaging.message.id"] == "abc"


async def test_without_tracing_nothing_is_added_to_the_events() -> None:
    client = FakeClient()
    init = init_event()
    await (await producer(client)).publish([init])
    assert client.sent[0][1] == init.to_json()


async def test_a_sampled_out_trace_gets_no_send_spans_but_a_client_event_still_joins_it(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    unsampled = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(0),
    )
    client = FakeClient()
    with trace.use_span(NonRecordingSpan(unsampled)):
        await (await producer(client)).publish([init_event()])
    assert sends(spans) == []
    sent = orjson.loads(client.sent[0][1])
    assert sent["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


async def test_a_handler_continuing_a_sampled_out_trace_records_nothing_and_passes_it_on(
    spans: InMemorySpanExporter,
) -> None:
    from service.examples.bench import bench_add_handler

    unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    event = create_arvo_event_factory(add_contract.version("1.0.0")).accepts(
        source="com.test.client", data={"a": 1, "b": 2}, traceparent=unsampled
    )
    result = await bench_add_handler().execute(event)
    assert [span for span in spans.get_finished_spans() if span.name.startswith("Handler")] == []
    assert result.events[0].traceparent == unsampled
