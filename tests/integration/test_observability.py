"""Issue 5 through the real broker and Redis: one workflow is one trace; errors, logs, metrics, probes.

Spans are recorded by an SDK provider with an in-memory exporter that every service of a test shares
(:func:`service.runtime.otel.use_tracer_provider`: Arvo handler spans, consumer/producer spans and the
Redis client's spans all go to it), as one Jaeger would see the spans of several processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from contracts.bench import add_contract, double_contract
from service.arvo.event import ArvoEvent
from service.arvo.execution import ArvoHandler
from service.arvo.factory import create_arvo_event_factory
from service.arvo.handler import ArvoEventHandler, HandlerContext, HandlerOutput
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples import bench_app
from service.examples.bench import bench_add_handler, bench_double_handler, bench_orchestrator
from service.runtime import otel
from service.runtime.app import ArvoService
from service.runtime.logging import add_trace_context
from service.runtime.producer import EventProducer
from service.runtime.redis_memory import RedisMemory
from service.runtime.settings import ServiceSettings
from tests.integration._kafka import KafkaNames, kafka_test_settings
from tests.integration._redis import PrivateRedisServer, free_port
from tests.integration._service import CLIENT, TopicTail, bench_init, publish_events, wait_until

pytestmark = pytest.mark.integration

ORCHESTRATOR = "Orchestrator<#/bench/orchestrator>"


@contextlib.contextmanager
def recording() -> Iterator[InMemorySpanExporter]:
    """An SDK provider with an in-memory exporter for every span of every service in this process."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = otel.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        otel.use_tracer_provider(previous)
        provider.shutdown()


def untraced(event: ArvoEvent) -> ArvoEvent:
    """``event`` as ``arvo publish`` sends it: built before tracing is set up, so without trace context."""
    return event.replace(traceparent=None, tracestate=None)


@contextlib.asynccontextmanager
async def services(
    settings: Sequence[ServiceSettings],
    handlers: Sequence[Sequence[ArvoHandler]],
    memories: Sequence[RedisMemory],
) -> AsyncIterator[list[ArvoService]]:
    """Start one service per settings (different groups, so concurrently) and wait for their partitions."""
    started = [
        ArvoService.from_settings(item, handlers=list(served), memory=memory)
        for item, served, memory in zip(settings, handlers, memories, strict=True)
    ]
    try:
        await asyncio.gather(*(service.start() for service in started))
        await asyncio.gather(*(service.loop.wait_assigned(timeout_s=30) for service in started))
        yield started
    finally:
        await asyncio.gather(*(service.stop() for service in started))


def hex_id(span: ReadableSpan, *, trace: bool = False) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}" if trace else f"{span.context.span_id:016x}"


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def only(spans: Sequence[ReadableSpan], what: str) -> ReadableSpan:
    assert len(spans) == 1, f"expected one {what}, found {[s.name for s in spans]}"
    return spans[0]


async def test_a_bench_workflow_across_an_orchestrator_and_two_services_is_one_trace(
    kafka_bootstrap: str, kafka_names: KafkaNames, shared_redis_url: str, redis_key_prefix: str
) -> None:
    init = untraced(bench_init(3))
    with recording() as exporter:
        parts = ("orchestrator", "add", "double")
        settings = [
            kafka_test_settings(
                kafka_bootstrap,
                KafkaNames(prefix=kafka_names.prefix, group=f"{kafka_names.group}-{part}"),
                redis_url=shared_redis_url,
                redis_key_prefix=redis_key_prefix,
            )
            for part in parts
        ]
        memories = [RedisMemory.from_url(shared_redis_url, key_prefix=redis_key_prefix) for _ in parts]
        handlers = [[bench_orchestrator(memories[0])], [bench_add_handler()], [bench_double_handler()]]
        async with services(settings, handlers, memories) as (orchestrator, adder, doubler):
            router = orchestrator.router
            async with TopicTail(kafka_bootstrap, router.handler_topic(CLIENT)) as tail:
                client = EventProducer(settings=settings[0], router=router)
                async with client:
                    await client.publish([init])  # the client's publish starts the trace
                completion = (await tail.wait_for_replies([init.id], timeout_s=30))[init.id]

            def processed() -> int:
                return sum(1 for s in exporter.get_finished_spans() if s.name.startswith("process "))

            await wait_until(lambda: processed() == 5, timeout_s=10, what="five finished process spans")
        topics = {
            "orchestrator": router.handler_topic("arvo.orc.bench"),
            "add": router.handler_topic("com.bench.add"),
            "double": router.handler_topic("com.bench.double"),
            "client": router.handler_topic(CLIENT),
        }
        assert {len(s.topics) for s in (orchestrator, adder, doubler)} == {1}
    finished = exporter.get_finished_spans()

    # Exactly one trace, rooted at the client's PRODUCER span.
    assert len({hex_id(span, trace=True) for span in finished}) == 1
    children: defaultdict[int, list[ReadableSpan]] = defaultdict(list)
    for span in finished:
        if span.parent is not None:
            children[span.parent.span_id].append(span)
    carrier = only([span for span in finished if span.parent is None], "root span")
    assert (carrier.name, carrier.kind) == (f"send {topics['orchestrator']}", SpanKind.PRODUCER)
    assert attributes(carrier) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topics["orchestrator"],
        "messaging.message.id": init.id,
    }

    hops = [
        ("orchestrator", f"{ORCHESTRATOR}@<arvo.orc.bench>", SpanKind.PRODUCER, "add"),
        ("add", "Handler<#/bench/add>", SpanKind.CONSUMER, "orchestrator"),
        ("orchestrator", f"{ORCHESTRATOR}@<evt.bench.add.success>", SpanKind.PRODUCER, "double"),
        ("double", "Handler<#/bench/double>", SpanKind.CONSUMER, "orchestrator"),
        ("orchestrator", f"{ORCHESTRATOR}@<evt.bench.double.success>", SpanKind.PRODUCER, "client"),
    ]
    message_id = init.id
    for topic, handler_name, handler_kind, next_topic in hops:
        # CONSUMER "process <topic>": a child of the span whose context the event carried.
        process = only(
            [span for span in children[carrier.context.span_id] if span.kind is SpanKind.CONSUMER],
            f"process span under {carrier.name}",
        )
        assert process.name == f"process {topics[topic]}"
        consumed = attributes(process)
        assert consumed["messaging.system"] == "kafka"
        assert consumed["messaging.operation.type"] == "process"
        assert consumed["messaging.destination.name"] == topics[topic]
        assert consumed["messaging.message.id"] == message_id
        assert consumed["messaging.destination.partition.id"].isdigit()
        assert isinstance(consumed["messaging.kafka.offset"], int)
        assert consumed["arvo.consumer.outcome"] == "ok"
        # Inside it, the Arvo handler span of spec 13 (name, kind, attributes).
        handler = only([s for s in children[process.context.span_id] if s.name == handler_name], handler_name)
        assert handler.kind is handler_kind
        assert handler.status.status_code is StatusCode.OK
        handled = attributes(handler)
        assert handled["consumable.0.cloudevents.event_id"] == message_id
        assert handled["arvo.handler.execution.status"] == "normal"
        assert handled["openinference.span.kind"] == "CHAIN"
        # PRODUCER "send <topic>" of its one emission, also a child of the process span.
        send = only(
            [s for s in children[process.context.span_id] if s.name.startswith("send ")],
            f"send span of {handler_name}",
        )
        assert send.name == f"send {topics[next_topic]}"
        emitted = attributes(send)["messaging.message.id"]
        assert handled["emittables.0.cloudevents.event_id"] == emitted
        # Redis calls are CLIENT child spans: lease + commit of the orchestrator, the outbox of services.
        if handler_kind is SpanKind.PRODUCER:
            assert handled["arvo.span.kind"] == "handler.orchestrator.statemachine"
            redis_calls = [s for s in children[handler.context.span_id] if s.kind is SpanKind.CLIENT]
            assert [s.name for s in redis_calls] == ["redis lease_and_read", "redis commit_and_release"]
        else:
            assert handled["arvo.span.kind"] == "handler.simple"
            redis_calls = [s for s in children[process.context.span_id] if s.kind is SpanKind.CLIENT]
            assert [s.name for s in redis_calls] == ["SET"]
        assert {attributes(s)["db.system"] for s in redis_calls} == {"redis"}
        carrier, message_id = handler, emitted

    # The completion carries the last orchestrator span's context: the client's consumption continues it.
    assert completion.id == message_id
    assert completion.traceparent is not None
    assert completion.traceparent.split("-")[1:3] == [hex_id(carrier, trace=True), hex_id(carrier)]


async def _logging_add(context: HandlerContext) -> HandlerOutput:
    structlog.get_logger("tests.observability").info("adding", a=context.data["a"])
    return {"type": "evt.bench.add.success", "data": {"sum": context.data["a"] + context.data["b"]}}


async def _broken_double(_context: HandlerContext) -> HandlerOutput:
    raise RuntimeError("double is broken")


async def test_system_errors_and_violations_are_error_spans_and_handler_logs_carry_the_trace(
    kafka_bootstrap: str, kafka_names: KafkaNames, shared_redis_url: str, redis_key_prefix: str
) -> None:
    subject = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.bench", initiator=CLIENT, version="1.0.0")
    add = create_arvo_event_factory(add_contract.version("1.0.0"))
    good = untraced(add.accepts(source=CLIENT, subject=subject, data={"a": 1, "b": 2}))
    invalid = untraced(add.accepts(source=CLIENT, subject=subject, data={"a": 1, "b": 2}))
    invalid = ArvoEvent.from_json({**invalid.to_dict(), "data": {"a": "one"}})
    double = untraced(
        create_arvo_event_factory(double_contract.version("1.0.0")).accepts(
            source=CLIENT, subject=subject, data={"value": 2}
        )
    )
    handlers: list[ArvoHandler] = [
        ArvoEventHandler(contract=add_contract, executionunits=1, handler={"1.0.0": _logging_add}),
        ArvoEventHandler(contract=double_contract, executionunits=1, handler={"1.0.0": _broken_double}),
    ]
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, redis_url=shared_redis_url, redis_key_prefix=redis_key_prefix
    )
    memory = RedisMemory.from_url(shared_redis_url, key_prefix=redis_key_prefix)
    with (
        recording() as exporter,
        capture_logs(processors=[structlog.contextvars.merge_contextvars, add_trace_context]) as logs,
    ):
        async with services([settings], [handlers], [memory]) as (service,):
            router = service.router
            await publish_events(kafka_bootstrap, router.handler_topic("com.bench.add"), [good, invalid])
            await publish_events(kafka_bootstrap, router.handler_topic("com.bench.double"), [double])
            await wait_until(lambda: sum(service.loop.stats.consumed.values()) == 3, what="three records")
            await wait_until(
                lambda: sum(1 for s in exporter.get_finished_spans() if s.name.startswith("process ")) == 3,
                what="three finished process spans",
            )
        dlq = settings.dead_letter_topic_name
    finished = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished}

    def handler_span(name: str, event: ArvoEvent) -> ReadableSpan:
        return only(
            [
                span
                for span in finished
                if span.name == name and attributes(span).get("consumable.0.cloudevents.event_id") == event.id
            ],
            f"{name} of {event.id}",
        )

    def process_of(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None
        return by_id[span.parent.span_id]

    # A system error: the handler span is ERROR with the exception; the record itself was processed.
    failing = handler_span("Handler<#/bench/double>", double)
    assert failing.status.status_code is StatusCode.ERROR
    assert failing.status.description == "Event processing failed: double is broken"
    (exception,) = [event for event in failing.events if event.name == "exception"]
    assert dict(exception.attributes or {})["exception.type"] == "RuntimeError"
    assert attributes(failing)["arvo.handler.execution.status"] == "failure"
    assert attributes(process_of(failing))["arvo.consumer.outcome"] == "system_error"

    # A violation: ERROR handler span and ERROR process span, both with the exception; dead-lettered.
    violating = handler_span("Handler<#/bench/add>", invalid)
    assert violating.status.status_code is StatusCode.ERROR
    assert [event.name for event in violating.events if event.name == "exception"] == ["exception"]
    process = process_of(violating)
    assert process.status.status_code is StatusCode.ERROR
    assert attributes(process)["arvo.consumer.outcome"] == "dead_lettered"
    (recorded,) = [event for event in process.events if event.name == "exception"]
    assert dict(recorded.attributes or {})["exception.type"].endswith("ContractViolation")
    dead_letter = only(
        [
            s
            for s in finished
            if s.parent is not None
            and s.parent.span_id == process.context.span_id
            and s.kind is SpanKind.PRODUCER
        ],
        "dead-letter send span",
    )
    assert dead_letter.name == f"send {dlq}"

    # The handler's log line carries the trace and span of the handler span and the record's keys.
    working = handler_span("Handler<#/bench/add>", good)
    (line,) = [entry for entry in logs if entry["event"] == "adding"]
    assert line["trace_id"] == hex_id(working, trace=True)
    assert line["span_id"] == hex_id(working)
    assert line["event_id"] == good.id
    assert line["event_type"] == "com.bench.add"
    assert line["subject"] == ArvoOrchestrationSubject.parse(subject).instance_key
    # Lines the loop logs about a record (here: the dead-lettering) carry its process span.
    (dead,) = [entry for entry in logs if entry["event"] == "record dead-lettered"]
    assert (dead["trace_id"], dead["span_id"]) == (hex_id(process, trace=True), hex_id(process))
    assert dead["event_id"] == invalid.id


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


async def test_metrics_move_as_a_workflow_runs_and_readyz_follows_redis(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> None:
    server = PrivateRedisServer(directory=tmp_path / "redis")
    server.start()
    try:
        port = free_port()
        settings = kafka_test_settings(
            kafka_bootstrap, kafka_names, redis_url=server.url, redis_key_prefix="obs", health_port=port
        )
        memory = RedisMemory.from_url(server.url, key_prefix="obs")
        with recording() as exporter:
            await _metrics_and_readiness(server, settings, memory, port, kafka_bootstrap)
        # Probes and scrapes talk to Redis, but only workflows make traces: no Redis span is a root.
        redis_spans = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.CLIENT]
        assert redis_spans
        assert all(span.parent is not None for span in redis_spans)
    finally:
        server.stop()


async def _metrics_and_readiness(
    server: PrivateRedisServer,
    settings: ServiceSettings,
    memory: RedisMemory,
    port: int,
    kafka_bootstrap: str,
) -> None:
    async with services([settings], [bench_app(memory)], [memory]) as (service,):
        assert service.metrics is not None
        service.metrics.instances_refresh_s = 0  # count instances on every scrape
        assert (await http_get(port, "/healthz")) == (200, b"ok\n")

        async def ready() -> tuple[int, dict[str, Any]]:
            status, body = await http_get(port, "/readyz")
            return status, orjson.loads(body)

        status, report = await ready()
        assert (status, report["status"]) == (200, "ready"), report

        status, body = await http_get(port, "/metrics")
        before = scrape(body.decode())
        assert status == 200
        inits = [untraced(bench_init(index)) for index in (1, 2)]
        async with TopicTail(kafka_bootstrap, service.router.handler_topic(CLIENT)) as tail:
            await publish_events(kafka_bootstrap, service.router.route_event(inits[0]), inits)
            await tail.wait_for_replies([init.id for init in inits], timeout_s=30)
        await wait_until(lambda: sum(service.loop.stats.consumed.values()) == 10, what="ten records")
        after = scrape((await http_get(port, "/metrics"))[1].decode())

        # Five records consumed and five events produced per workflow.
        consumed = "arvo_events_consumed_total"
        assert total(after, consumed, outcome="ok") - total(before, consumed, outcome="ok") == 10
        assert (
            total(after, consumed, type="arvo.orc.bench") - total(before, consumed, type="arvo.orc.bench")
            == 2
        )
        produced = "arvo_events_produced_total"
        assert total(after, produced) - total(before, produced) == 10
        assert total(after, produced, topic=service.router.handler_topic(CLIENT)) == 2
        duration = "arvo_handler_duration_seconds_count"
        assert total(after, duration) - total(before, duration) == 10
        assert total(after, "arvo_instances", orchestrator="arvo.orc.bench", status="done") == 2
        assert total(after, "arvo_assigned_partitions") == len(service.loop.assignment) > 0
        assert total(after, "arvo_dead_letters_total") == 0
        assert total(after, "process_resident_memory_bytes") > 0

        # Redis goes away: /readyz says so (and which check), /healthz stays up; then it returns.
        server.stop()
        report = await readiness_becomes(ready, 503)
        assert report["failed"] == ["redis"]
        assert report["checks"]["redis"] == "no answer to PING"
        assert (await http_get(port, "/healthz"))[0] == 200
        server.start()
        assert (await readiness_becomes(ready, 200))["status"] == "ready"


async def readiness_becomes(ready: Any, status: int, timeout_s: float = 15.0) -> dict[str, Any]:
    """Poll ``/readyz`` (cached for 1 s by the service) until it answers ``status``; return the report."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        answered, report = await ready()
        if answered == status:
            return dict(report)
        assert asyncio.get_running_loop().time() < deadline, (
            f"/readyz not {status} after {timeout_s} s: {report}"
        )
        await asyncio.sleep(0.1)
