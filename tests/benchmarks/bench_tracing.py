"""Cost of tracing: the bench workflow with tracing off vs the SDK recording and exporting over OTLP/HTTP.

"On" is what a deployment with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set runs: an SDK ``TracerProvider``
with a ``BatchSpanProcessor`` and the real OTLP/HTTP exporter, sending to a receiver in a process of
its own (``python -m tests.integration._otlp``, decoding every request, as a collector would), so
export costs this process what it costs a service. "Off" is the default no-SDK path. "Sampled" is
what the Kubernetes base ships: ``parentbased_traceidratio`` at ``BENCH_TRACING_SAMPLED_RATIO``
(0.1). The modes of a path are measured in the same run, alternating (off, on, sampled, … then
again) for ``BENCH_TRACING_ROUNDS`` (3) rounds; each figure is the **median** over the rounds (an
overhead: the median of each round's ``1 - mode/off``, so a noisy neighbour hurts the modes of one
round alike). Between modes every provider is flushed, outside the timed window.

* **In-process** (``tracing.in_process.*``): the orchestrator variant of ``bench_workflow`` on the
  in-memory broker and memory, ``BENCH_TRACING_WORKFLOWS`` (2,000) workflows one at a time after a
  warm-up. The init events are built before the clock starts and without trace context, as
  ``arvo publish`` sends them (a client's factory span is not the engine's work).
* **Kafka path** (``tracing.kafka.*``): one service with the bench app (orchestrator, resumable and
  both services) on a Tansu broker and a private ``redis-server``, ``BENCH_TRACING_KAFKA_WORKFLOWS``
  (400) workflows per round with ``BENCH_TRACING_KAFKA_CONCURRENCY`` (64) in flight. With tracing on
  every consumed record has its ``process`` span, the handler span, ``send`` spans and Redis spans.

The in-process part also measures two floors: an SDK provider sampling every span with no processor
but a counter (spans made, attributes and events set, ended, never exported), and a do-nothing span
class in place of the SDK's (dict attributes, no checks, no processor) — what the instrumentation
itself costs, whatever the span implementation.

Printed per path: the rate of every mode, its overhead, and for every mode that exports, the
fraction of the spans it ended that reached the receiver (the rest were dropped by a full batch
queue, as ``arvo_spans_dropped_total`` counts them; the bench checks that the two agree). The
target (overhead ≤ 25 %) applies to the shipped sampling — 10 % of workflows, parent-based — on both
paths; at 100 % the overhead is reported with its delivered fraction, without a target (a run that
drops spans does less export work, so its rate flatters it; so does a queue that still holds spans
when the clock stops). Run: ``.venv/bin/python -m tests.benchmarks tracing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NoOpTracerProvider, SpanContext, TraceFlags

from contracts.bench import bench_machine_contract, bench_resumable_contract
from service.arvo import telemetry
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app
from service.runtime import otel
from service.runtime.app import ArvoService
from service.runtime.binding import encode_event
from service.runtime.kafka_admin import ensure_topics
from service.runtime.redis_memory import RedisMemory
from tests.benchmarks._rig import (
    FETCH_MAX_WAIT_MS,
    PARTITIONS,
    processes,
    run_on_uvloop,
    service_settings,
    start_broker,
    start_redis,
)
from tests.integration._kafka import free_port, wait_for_port

WORKFLOWS = int(os.environ.get("BENCH_TRACING_WORKFLOWS", "2000"))
WARMUP = int(os.environ.get("BENCH_TRACING_WARMUP", "200"))
KAFKA_WORKFLOWS = int(os.environ.get("BENCH_TRACING_KAFKA_WORKFLOWS", "400"))
KAFKA_WARMUP = int(os.environ.get("BENCH_TRACING_KAFKA_WARMUP", "40"))
KAFKA_CONCURRENCY = int(os.environ.get("BENCH_TRACING_KAFKA_CONCURRENCY", "64"))
ROUNDS = int(os.environ.get("BENCH_TRACING_ROUNDS", "3"))
SAMPLED_RATIO = float(os.environ.get("BENCH_TRACING_SAMPLED_RATIO", "0.1"))
TARGET_OVERHEAD = 0.25
CLIENT = "com.bench.tracing.client"
RUN_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------------------------------
# The receiver and the "on" configuration


def _start_receiver(started: list[subprocess.Popen[bytes]]) -> int:
    port = free_port()
    started.append(
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration._otlp", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_for_port("127.0.0.1", port)
    return port


def _received_spans(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return int(json.loads(response.read())["spans"])


class _CountEnded(SpanProcessor):
    """Counts spans as they end (what the batch processor is offered)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


class _MinimalSpan(trace.Span):
    """A span that only keeps what it is given (a dict, a list): no checks, no limits, no processor.

    Not a product: the bench's floor of the instrumentation itself — what the span catalogue of spec
    13 costs to build and carry in this process even if the span class cost nothing.
    """

    def __init__(self, name: str, context: SpanContext, attributes: Mapping[str, Any] | None) -> None:
        self._name = name
        self._context = context
        self._attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self._events: list[tuple[str, Any]] = []
        self._ended = False

    def end(self, end_time: int | None = None) -> None:
        self._ended = True

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._attributes[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self._events.append((name, attributes))

    def update_name(self, name: str) -> None:
        self._name = name

    def is_recording(self) -> bool:
        return not self._ended

    def set_status(self, status: Any, description: str | None = None) -> None:
        return None

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._events.append(("exception", {"exception.type": type(exception).__name__}))


class _MinimalTracer(trace.Tracer):
    """Starts :class:`_MinimalSpan` children of the given or active context (sampled, random ids)."""

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        *_args: Any,
        **_kwargs: Any,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else random.getrandbits(128)
        span_context = SpanContext(trace_id, random.getrandbits(64), False, TraceFlags(TraceFlags.SAMPLED))
        return _MinimalSpan(name, span_context, attributes)

    def start_as_current_span(self, *_args: Any, **_kwargs: Any) -> Any:
        raise NotImplementedError("the bench's minimal tracer only starts spans")


class _Tracing:
    """The SDK as ``configure_tracing`` sets it up, exporting to the receiver on ``port``.

    Two providers: ``on`` samples everything (the default sampler); ``sampled`` keeps
    ``SAMPLED_RATIO`` of the workflows (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.counter = _CountEnded()
        self.providers = {
            "on": self._provider(ParentBased(ALWAYS_ON)),
            "sampled": self._provider(ParentBased(TraceIdRatioBased(SAMPLED_RATIO))),
            # The floor: the SDK making every span (sampler, ids, attributes, events, end), no export.
            "recording": TracerProvider(
                resource=Resource.create({"service.name": "arvo-bench"}), sampler=ParentBased(ALWAYS_ON)
            ),
        }
        self.providers["recording"].add_span_processor(_CountEnded())

    def _provider(self, sampler: Sampler) -> TracerProvider:
        provider = TracerProvider(resource=Resource.create({"service.name": "arvo-bench"}), sampler=sampler)
        provider.add_span_processor(self.counter)
        # What build_tracing() installs for OTLP/HTTP: the service's exporter and batch processor.
        provider.add_span_processor(
            otel.batch_span_processor(otel.otlp_http_span_exporter(f"http://127.0.0.1:{self.port}/v1/traces"))
        )
        return provider

    def use(self, mode: str) -> None:
        """Switch to ``off``, ``on``, ``sampled`` or ``recording``, after exporting what is queued.

        Without the flush a mode would pay, on the exporter threads of this process, for the spans
        the previous mode left in its batch queue (``sampled`` runs right after ``on``).
        """
        for provider in self.providers.values():
            provider.force_flush(30_000)
        otel.use_tracer_provider(self.providers.get(mode))

    def totals(self) -> tuple[int, int, int]:
        """``(ended, received, dropped)`` so far, after exporting what is queued.

        Waits (at most 10 s) until the receiver has every span that was not dropped.
        """
        for provider in self.providers.values():
            provider.force_flush(30_000)
        ended, dropped = self.counter.ended, otel.spans_dropped()
        deadline = time.monotonic() + 10
        received = _received_spans(self.port)
        while received < ended - dropped and time.monotonic() < deadline:
            time.sleep(0.05)
            received = _received_spans(self.port)
        return ended, received, dropped

    def shutdown(self) -> None:
        self.use("off")
        for provider in self.providers.values():
            provider.shutdown()


MODES = ("off", "on", "sampled")
IN_PROCESS_MODES = (*MODES, "recording", "minimal")
EXPORTING = ("on", "sampled")
"""The modes whose spans go to the receiver (``recording`` and ``minimal`` export nothing by design)."""


class _Deliveries:
    """Spans ended, received and dropped per exporting mode, summed over the rounds."""

    def __init__(self, tracing: _Tracing) -> None:
        self._tracing = tracing
        self.totals: dict[str, list[int]] = {mode: [0, 0, 0] for mode in EXPORTING}
        self._start = (0, 0, 0)

    def begin(self) -> None:
        self._start = self._tracing.totals()

    def end(self, mode: str) -> None:
        now = self._tracing.totals()
        if mode in self.totals:
            for index in range(3):
                self.totals[mode][index] += now[index] - self._start[index]

    def figures(self) -> dict[str, float]:
        figures: dict[str, float] = {}
        for mode, (ended, received, dropped) in self.totals.items():
            figures[f"{mode}_spans_ended"] = ended
            figures[f"{mode}_spans_dropped"] = dropped
            figures[f"{mode}_spans_delivered_fraction"] = received / ended if ended else 1.0
            # Should be 0: every span ended is received or counted by arvo_spans_dropped_total.
            figures[f"{mode}_spans_unaccounted"] = ended - received - dropped
        return figures


def _median_overhead(rates: dict[str, list[float]], mode: str) -> float:
    """The median over the rounds of ``1 - mode/off`` (each round against its own baseline)."""
    return statistics.median(1 - on / off for on, off in zip(rates[mode], rates["off"], strict=True))


def _figures(
    rates: dict[str, list[float]], spans: dict[str, int], traced_workflows: int, deliveries: _Deliveries
) -> dict[str, float]:
    figures: dict[str, float] = {"rounds": len(rates["off"])}
    for mode, values in rates.items():
        figures[f"{mode}_workflows_per_s"] = statistics.median(values)
        if mode != "off":
            figures[f"{mode}_overhead"] = _median_overhead(rates, mode)
    for mode, count in spans.items():
        figures[f"{mode}_spans_per_workflow"] = count / traced_workflows
    return figures | deliveries.figures()


# --------------------------------------------------------------------------------------------------
# In-process


def _inits(contract: Any, count: int, offset: int, source: str) -> list[ArvoEvent]:
    """Init events as ``arvo publish`` sends them: built without tracing, so without trace context."""
    factory = create_arvo_orchestrator_event_factory(contract.version("1.0.0"))
    previous = otel.use_tracer_provider(NoOpTracerProvider())
    try:
        return [
            factory.init(source=source, data={"a": offset + index, "b": 1, "parentSubject$$": None})
            for index in range(count)
        ]
    finally:
        otel.use_tracer_provider(previous)


async def _in_process_rate(tracer: trace.Tracer | None = None) -> tuple[float, float]:
    """Workflows per second and per CPU-second of this process (exporter thread included).

    ``tracer``: the Arvo spans' tracer for the measured part (installed after the inits are built).
    """
    broker = InMemoryBroker(bench_app(InMemoryMemory()))
    completions: list[ArvoEvent] = []

    async def collect(event: ArvoEvent, _broker: InMemoryBroker) -> None:
        completions.append(event)

    broker.subscribe(CLIENT, collect)
    warmup = _inits(bench_machine_contract, WARMUP, 1_000_000, CLIENT)
    timed = _inits(bench_machine_contract, WORKFLOWS, 0, CLIENT)
    previous = telemetry.use_tracer(tracer) if tracer is not None else None
    try:
        for init in warmup:
            await broker.publish(init)
        completions.clear()
        broker.events.clear()
        started, cpu_started = time.perf_counter(), time.process_time()
        for init in timed:
            await broker.publish(init)
        elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        if tracer is not None:
            telemetry.use_tracer(previous)
    if len(completions) != WORKFLOWS or broker.errors:
        raise SystemExit(
            f"in-process bench failed: {len(completions)} completions, errors {broker.errors[:1]}"
        )
    return WORKFLOWS / elapsed, WORKFLOWS / cpu_elapsed


def _in_process(tracing: _Tracing) -> dict[str, float]:
    rates: dict[str, list[float]] = {mode: [] for mode in IN_PROCESS_MODES}
    cpu_rates: dict[str, list[float]] = {mode: [] for mode in IN_PROCESS_MODES}
    spans = dict.fromkeys(EXPORTING, 0)
    deliveries = _Deliveries(tracing)
    for _ in range(ROUNDS):
        for mode in IN_PROCESS_MODES:
            tracing.use(mode)
            deliveries.begin()
            ended_before = tracing.counter.ended
            rate, cpu_rate = asyncio.run(_in_process_rate(_MinimalTracer() if mode == "minimal" else None))
            rates[mode].append(rate)
            cpu_rates[mode].append(cpu_rate)
            if mode in spans:
                spans[mode] += tracing.counter.ended - ended_before
            deliveries.end(mode)
        tracing.use("off")
    figures = _figures(rates, spans, ROUNDS * (WORKFLOWS + WARMUP), deliveries)
    # The same per CPU-second of this process (the exporter thread's share inside the window
    # included): steadier than wall rates when a neighbour takes CPU time.
    for mode in IN_PROCESS_MODES[1:]:
        figures[f"cpu_{mode}_overhead"] = _median_overhead(cpu_rates, mode)
    figures["cpu_off_workflows_per_cpu_s"] = statistics.median(cpu_rates["off"])
    return figures


# --------------------------------------------------------------------------------------------------
# Kafka path


class _KafkaRig:
    """One running service plus a client producer and a completion collector."""

    def __init__(self, service: ArvoService, producer: AIOKafkaProducer) -> None:
        self.service = service
        self.producer = producer
        self.completions: asyncio.Queue[str] = asyncio.Queue()
        self.offset = 0

    async def collect(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    self.completions.put_nowait(orjson.loads(record.value)["parentid"])

    async def rate(self, count: int) -> float:
        """Workflows/s of ``count`` workflows (half orchestrator, half resumable), bounded in flight."""
        inits = [
            init
            for pair in zip(
                _inits(bench_machine_contract, count // 2, self.offset, CLIENT),
                _inits(bench_resumable_contract, count - count // 2, self.offset + count, CLIENT),
                strict=False,
            )
            for init in pair
        ]
        self.offset += 2 * count
        pending = {init.id for init in inits}
        window = asyncio.Semaphore(KAFKA_CONCURRENCY)

        async def publish_all() -> None:
            for init in inits:
                await window.acquire()
                message = encode_event(init)
                await self.producer.send(
                    self.service.router.route_event(init),
                    key=message.key,
                    value=message.value,
                    headers=message.headers,
                )

        started = time.perf_counter()
        publisher = asyncio.create_task(publish_all())
        try:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                while pending:
                    parent = await self.completions.get()
                    if parent in pending:
                        pending.discard(parent)
                        window.release()
            await publisher
        finally:
            publisher.cancel()
        return len(inits) / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def _kafka_rig(bootstrap: str, redis_url: str, names: str) -> AsyncIterator[_KafkaRig]:
    settings = service_settings(bootstrap, redis_url, names)
    memory = RedisMemory.from_url(redis_url, key_prefix=settings.redis_key_prefix)
    service = ArvoService.from_settings(settings, memory=memory)
    client_topic = service.router.handler_topic(CLIENT)
    await ensure_topics(settings, [*service.topics, client_topic, settings.dead_letter_topic_name])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    collector = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    await producer.start()
    await collector.start()
    collector.assign([TopicPartition(client_topic, partition) for partition in range(PARTITIONS)])
    rig = _KafkaRig(service, producer)
    collecting = asyncio.create_task(rig.collect(collector))
    await service.start()
    try:
        await service.loop.wait_assigned(timeout_s=60)
        yield rig
    finally:
        collecting.cancel()
        await service.stop()
        await collector.stop()
        await producer.stop()


def _set_redis_tracing(memory: RedisMemory, on: bool) -> None:
    """Instrument the service's Redis client for the "on" rounds only (off: no wrapper at all)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    client = memory.client
    if on:
        otel.instrument_redis(client, scripts=memory.script_operations)
    elif getattr(client, "_is_instrumented_by_opentelemetry", False):
        RedisInstrumentor.uninstrument_client(client)
        client._is_instrumented_by_opentelemetry = False  # type: ignore[union-attr]


async def _kafka(tracing: _Tracing) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="arvo-bench-tracing-"))
    names = f"bt{uuid.uuid4().hex[:10]}"
    try:
        with processes() as started:
            bootstrap = start_broker(started, workdir)
            redis_url = start_redis(started, workdir)
            async with _kafka_rig(bootstrap, redis_url, names) as rig:
                await rig.rate(KAFKA_WARMUP)
                rates: dict[str, list[float]] = {mode: [] for mode in MODES}
                spans = dict.fromkeys(EXPORTING, 0)
                deliveries = _Deliveries(tracing)
                for _ in range(ROUNDS):
                    for mode in MODES:
                        tracing.use(mode)
                        _set_redis_tracing(rig.service.memory, False)  # re-wrapped with this mode's tracer
                        _set_redis_tracing(rig.service.memory, mode != "off")
                        await asyncio.to_thread(deliveries.begin)
                        await rig.rate(KAFKA_WARMUP)
                        ended_before = tracing.counter.ended
                        rates[mode].append(await rig.rate(KAFKA_WORKFLOWS))
                        if mode in spans:
                            spans[mode] += tracing.counter.ended - ended_before
                        await asyncio.to_thread(deliveries.end, mode)
                    tracing.use("off")
                    _set_redis_tracing(rig.service.memory, False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _figures(rates, spans, ROUNDS * KAFKA_WORKFLOWS, deliveries)


def _verdict(overhead: float) -> str:
    return "ok" if overhead <= TARGET_OVERHEAD else "ABOVE TARGET"


def _delivered(figures: dict[str, float], mode: str) -> str:
    ended, dropped = figures[f"{mode}_spans_ended"], figures[f"{mode}_spans_dropped"]
    unaccounted = figures[f"{mode}_spans_unaccounted"]
    return (
        f"{figures[f'{mode}_spans_delivered_fraction']:.1%} of {ended:,.0f} spans delivered "
        f"({dropped:,.0f} dropped by a full queue"
        # The SDK counts a drop when it finds the queue full, then appends; an export taking a batch
        # in between makes the count one too high.
        + (f"; received + dropped - ended: {-unaccounted:+,.0f}" if unaccounted else "")
        + ")"
    )


def _report(name: str, figures: dict[str, float]) -> None:
    unit = "wf/s"
    lines = [
        f"{name}: median of {figures['rounds']:.0f} alternating rounds",
        f"  off (no SDK)                 {figures['off_workflows_per_s']:8.0f} {unit}  no spans",
        f"  sampled {SAMPLED_RATIO:.0%}, parent-based   {figures['sampled_workflows_per_s']:8.0f} {unit}  "
        f"overhead {figures['sampled_overhead']:6.1%} (target ≤ {TARGET_OVERHEAD:.0%}: "
        f"{_verdict(figures['sampled_overhead'])}); {figures['sampled_spans_per_workflow']:.2f} spans per "
        f"workflow; {_delivered(figures, 'sampled')}",
        f"  every workflow (100 %)       {figures['on_workflows_per_s']:8.0f} {unit}  "
        f"overhead {figures['on_overhead']:6.1%} (no target); {figures['on_spans_per_workflow']:.1f} spans "
        f"per workflow; {_delivered(figures, 'on')}",
    ]
    if "recording_overhead" in figures:
        lines += [
            f"  SDK spans, nothing exported  {figures['recording_workflows_per_s']:8.0f} {unit}  "
            f"overhead {figures['recording_overhead']:6.1%}; not exported by design",
            f"  do-nothing span class        {figures['minimal_workflows_per_s']:8.0f} {unit}  "
            f"overhead {figures['minimal_overhead']:6.1%}; not exported by design",
            f"  per CPU-second of this process (off {figures['cpu_off_workflows_per_cpu_s']:.0f}): "
            f"overhead sampled {figures['cpu_sampled_overhead']:.1%}, every workflow "
            f"{figures['cpu_on_overhead']:.1%}, nothing exported {figures['cpu_recording_overhead']:.1%}, "
            f"do-nothing spans {figures['cpu_minimal_overhead']:.1%}",
        ]
    print("\n".join(lines), flush=True)


def run(results: dict[str, float]) -> None:
    """Measure both paths with tracing off and on; record the figures under ``tracing.*``."""
    with processes() as started:
        tracing = _Tracing(_start_receiver(started))
        try:
            in_process = _in_process(tracing)
            for key, value in in_process.items():
                results[f"tracing.in_process.{key}"] = value
            _report("in-process", in_process)
            kafka = run_on_uvloop(_kafka(tracing))
            for key, value in kafka.items():
                results[f"tracing.kafka.{key}"] = value
            _report("kafka path", kafka)
        finally:
            tracing.shutdown()
            otel.span_drops().report()  # the service's "spans dropped" line, if any were
    load = os.getloadavg()
    print(f"   load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
