"""In-process bench workflow: ``{a, b}`` → add → double → ``2·(a+b)`` (6 events per workflow).

Runs the orchestrator and the resumable variants on the in-memory broker and memory with the
OpenTelemetry API only (no SDK), 2,000 workflows each after a warm-up, one workflow at a time, and
prints workflows/s, events/s, p50/p99 latency, peak RSS and the size of a finished workflow's state
record. Baseline in the same run: the same six events routed through a bare FIFO with handlers that
do no validation, state or id work, i.e. the floor of routing cost in this process.

The cost of the instance history (issue 12): ``BENCH_HISTORY_ROUNDS`` (3) alternating rounds of each
variant with the history kept (the default, ``ARVO_INSTANCE_HISTORY_EVENTS=20``) and without it
(``0``); the medians of workflows per CPU-second and the finished record's size are compared.
"""

from __future__ import annotations

import asyncio
import collections
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from contracts.bench import bench_machine_contract, bench_resumable_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestration.record import DEFAULT_HISTORY_BYTES
from service.arvo.orchestrator import ArvoOrchestrator
from service.arvo.resumable import ArvoResumable
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app
from tests.benchmarks._rig import percentile

WORKFLOWS = int(os.environ.get("BENCH_WORKFLOWS", "2000"))
HISTORY_ROUNDS = int(os.environ.get("BENCH_HISTORY_ROUNDS", "3"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "200"))
CLIENT = "com.bench.client"
EVENTS_PER_WORKFLOW = 6


async def _run_variant(contract: Any, *, history_events: int | None = None) -> tuple[dict[str, float], int]:
    memory = InMemoryMemory()
    handlers = bench_app(memory)
    if history_events is not None:  # None: the engine's default (what the service keeps by default)
        for handler in handlers:
            if isinstance(handler, ArvoOrchestrator | ArvoResumable):
                handler.keep_history(events=history_events, max_bytes=DEFAULT_HISTORY_BYTES)
    broker = InMemoryBroker(handlers)
    factory = create_arvo_orchestrator_event_factory(contract.version("1.0.0"))
    results: list[ArvoEvent] = []

    async def collect(event: ArvoEvent, _broker: InMemoryBroker) -> None:
        results.append(event)

    broker.subscribe(CLIENT, collect)

    async def one(index: int) -> float:
        started = time.perf_counter()
        init = factory.init(source=CLIENT, data={"a": index, "b": 1, "parentSubject$$": None})
        await broker.publish(init)
        return time.perf_counter() - started

    for index in range(WARMUP):
        await one(index)
    results.clear()
    broker.events.clear()
    latencies: list[float] = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    for index in range(WORKFLOWS):
        latencies.append(await one(index))
    elapsed = time.perf_counter() - started
    cpu_elapsed = time.process_time() - cpu_started
    if len(results) != WORKFLOWS or any(
        event.data.get("result") != 2 * (index + 1) for index, event in enumerate(results)
    ):
        raise SystemExit(f"bench workflow produced wrong results ({len(results)} completions)")
    if broker.errors:
        raise SystemExit(f"bench workflow raised: {broker.errors[0][0]!r}")
    key = ArvoOrchestrationSubject.parse(results[-1].subject).instance_key
    record = await memory.inspect(key)
    record_bytes = len(orjson.dumps(record))
    return (
        {
            "workflows_per_s": WORKFLOWS / elapsed,
            "workflows_per_cpu_s": WORKFLOWS / cpu_elapsed,
            "events_per_s": WORKFLOWS * EVENTS_PER_WORKFLOW / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
        },
        record_bytes,
    )


def _baseline() -> float:
    """Workflows/s of routing six pre-built event dicts through a bare FIFO with trivial handlers."""
    chain: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
        "arvo.orc.bench": lambda e: {"to": "com.bench.add", "data": {"a": e["data"]["a"], "b": 1}},
        "com.bench.add": lambda e: {"to": "arvo.orc.bench.r1", "data": {"sum": e["data"]["a"] + 1}},
        "arvo.orc.bench.r1": lambda e: {"to": "com.bench.double", "data": {"value": e["data"]["sum"]}},
        "com.bench.double": lambda e: {"to": "arvo.orc.bench.r2", "data": {"result": e["data"]["value"] * 2}},
        "arvo.orc.bench.r2": lambda e: {"to": CLIENT, "data": e["data"]},
    }
    started = time.perf_counter()
    for index in range(WORKFLOWS):
        queue = collections.deque([{"to": "arvo.orc.bench", "data": {"a": index}}])
        while queue:
            event = queue.popleft()
            handler = chain.get(event["to"])
            if handler is not None:
                produced = handler(event)
                if produced is not None:
                    queue.append(produced)
    return WORKFLOWS / (time.perf_counter() - started)


def run(results: dict[str, float]) -> None:
    """Measure both variants and the baseline; record figures under ``workflow.*``."""
    baseline = _baseline()
    results["workflow.baseline_bare_routing_workflows_per_s"] = baseline
    for name, contract in (("orchestrator", bench_machine_contract), ("resumable", bench_resumable_contract)):
        figures, record_bytes = asyncio.run(_run_variant(contract))
        for key, value in figures.items():
            results[f"workflow.{name}.{key}"] = value
        results[f"workflow.{name}.state_record_bytes"] = record_bytes
        print(
            f"{name:>12}: {figures['workflows_per_s']:8.0f} workflows/s "
            f"({figures['workflows_per_cpu_s']:.0f} per CPU-second)  "
            f"{figures['events_per_s']:8.0f} events/s  "
            f"p50 {figures['p50_ms']:.3f} ms  p99 {figures['p99_ms']:.3f} ms  "
            f"state record {record_bytes} bytes  "
            f"(baseline bare routing: {baseline:.0f} workflows/s; target ≥ 1000; TS original ~460–670)",
            flush=True,
        )
        if HISTORY_ROUNDS > 0:
            _history_cost(name, contract, results)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["workflow.peak_rss_mib"] = peak_rss_mib
    print(f"peak RSS: {peak_rss_mib:.1f} MiB", flush=True)


def _history_cost(name: str, contract: Any, results: dict[str, float]) -> None:
    """Alternating rounds with the default history and without; medians of CPU rate and record size."""
    kept: list[tuple[dict[str, float], int]] = []
    none: list[tuple[dict[str, float], int]] = []
    for _ in range(HISTORY_ROUNDS):
        kept.append(asyncio.run(_run_variant(contract)))
        none.append(asyncio.run(_run_variant(contract, history_events=0)))
    with_rate = statistics.median(figures["workflows_per_cpu_s"] for figures, _ in kept)
    without_rate = statistics.median(figures["workflows_per_cpu_s"] for figures, _ in none)
    with_bytes, without_bytes = kept[0][1], none[0][1]
    cpu_cost = without_rate / with_rate - 1  # CPU per workflow, with vs without
    results[f"workflow.{name}.history_cpu_fraction"] = cpu_cost
    results[f"workflow.{name}.history_record_bytes"] = with_bytes - without_bytes
    print(
        f"{'':>12}  cost of the instance history (ARVO_INSTANCE_HISTORY_EVENTS default vs 0, median of"
        f" {HISTORY_ROUNDS} alternating rounds): {cpu_cost:+.1%} CPU per workflow ({with_rate:.0f} vs"
        f" {without_rate:.0f} per CPU-second), state record {with_bytes} vs {without_bytes} bytes",
        flush=True,
    )
