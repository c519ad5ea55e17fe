"""The bench workflow through a real Kafka-protocol broker and Redis, beside a bare aiokafka passthrough.

Starts its own Tansu broker and a private ``redis-server`` (so nobody else's commands pollute the
counts), creates the topics with 4 partitions and runs ONE service (:class:`ArvoService` with the bench
app — orchestrator, resumable and both services — in this process, on uvloop like ``arvo run``).

* **Service**: ``BENCH_KAFKA_WORKFLOWS`` workflows (default 500, half orchestrator, half resumable)
  after ``BENCH_KAFKA_WARMUP`` warm-up ones, published with at most ``BENCH_KAFKA_CONCURRENCY``
  (default 128) in flight: a new init is published when a completion comes back. The client
  (publisher and completion reader, :mod:`tests.benchmarks._loadgen`) runs in a process of its own,
  so this process's CPU time is the service's alone. Reports
  workflows/s (and per CPU-second of this process), consumed events/s (each workflow makes the
  service consume 5 events: init, add call, add reply, double call, double reply), p50/p99 latency
  from the publish of an init to the consumption of its completion, and Redis per consumed event:
  round trips (writes to Redis by the service's clients, counted on the clients: each redis-py
  command is one, and the lean hot-path client sends the requests every lane made in one loop
  iteration in one write, answered together — one round trip however many it carries), requests
  (commands sent) and commands
  (``INFO commandstats`` deltas of the private server, which also count the commands run inside the
  Lua scripts). Then ``BENCH_KAFKA_LATENCY_WORKFLOWS`` (50) workflows one at a time: the latency of
  the hops without queueing.
* **Redis bytes per finished workflow**: Redis ``used_memory`` after the timed run minus before it,
  divided by its workflows (what a finished workflow leaves in Redis: its instance's keys, its
  index entry and the stateless outbox entries of its service calls, under the default retention);
  and ``MEMORY USAGE`` of every key of the run by kind, divided by the finished instances.
* **Baseline** (same run, same broker): the records the service consumed — same keys, values and
  headers, hence same sizes and partitions — are loaded into a source topic, and a bare aiokafka
  consumer (group, manual commits) produces each to a sink topic with ``acks=all``, batch by batch.
* **Engine alone** (same process, afterwards): the same mix of workflows on the in-memory broker and
  memory — CPU per handler execution with no Kafka, no Redis and no decoding — and from it the
  ceiling of the service/passthrough ratio if the service added nothing but the engine to the
  passthrough's work: ``(1/passthrough) / (1/passthrough + engine)``.

* **Cost of the optional features** (issue 11): after the baseline, one more timed run of
  ``BENCH_KAFKA_WORKFLOWS`` workflows for a reference with the defaults and for each variant, each on
  a fresh service (own topics and group, same broker and Redis, same warm-up), printed as ``cost of
  …`` lines: workflows/s and service CPU per consumed event against the reference (the main run is
  the process's first and colder: it is not compared). ``off``: the dependency-fault features that
  can be switched off switched off (``ARVO_REPLY_SOURCE_CHECK=off``,
  ``ARVO_DEAD_LETTER_NO_STATE=false``, ``ARVO_INSTANCE_RETENTION_S=0``,
  ``ARVO_INSTANCE_HISTORY_EVENTS=0``, ``ARVO_HANDLER_THREADS=0``, no loop-lag watchdog) — the
  reference's cost is measured against it; ``strict``: ``ARVO_REPLY_SOURCE_CHECK=strict``; ``wait``:
  ``ARVO_REDIS_WAIT_REPLICAS=1`` with a private replica of the bench's Redis on the same host, started
  for that run only (a replication round trip of well under a millisecond: a remote replica costs
  more); ``history``: ``ARVO_INSTANCE_HISTORY_EVENTS=0`` alone — the instance history's cost (issue 12)
  is measured against it. ``BENCH_KAFKA_COSTS`` picks them (default ``off,history,strict,wait``; empty
  or ``none``: skipped).
  One round by default: differences of a few percent are within the run-to-run noise;
  ``BENCH_KAFKA_COST_ROUNDS=N`` repeats the rounds and prints the medians.

``BENCH_KAFKA_PROFILE=<file>`` writes a ``cProfile`` of the service process during the timed run (timed by
the process's CPU clock, so time the process spent descheduled is not charged to whatever ran last).

Targets (issue 4): service events/s ≥ 50 % of the passthrough's; ≤ 2 Redis round trips per consumed
event. Run: ``.venv/bin/python -m tests.benchmarks kafka``.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.arvo.event import ArvoEvent
from service.arvo.memory import InMemoryMemory
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app
from service.runtime.app import ArvoService
from service.runtime.client import ArvoClient
from service.runtime.kafka_admin import ensure_topics
from service.runtime.redis_memory import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_SOCKET_TIMEOUT_S, RedisMemory
from service.runtime.resp_client import PipelinedRedis
from service.runtime.settings import ServiceSettings, load_settings
from service.tuning import tune_gc
from tests.benchmarks._loadgen import CLIENT, LoadGenerator, bench_inits
from tests.benchmarks._rig import (
    FETCH_MAX_WAIT_MS,
    PARTITIONS,
    percentile,
    processes,
    run_on_uvloop,
    service_settings,
    start_broker,
    start_redis,
    start_replica,
    stop_process,
)

WORKFLOWS = int(os.environ.get("BENCH_KAFKA_WORKFLOWS", "500"))
WARMUP = int(os.environ.get("BENCH_KAFKA_WARMUP", "40"))
CONCURRENCY = int(os.environ.get("BENCH_KAFKA_CONCURRENCY", "128"))
LATENCY_WORKFLOWS = int(os.environ.get("BENCH_KAFKA_LATENCY_WORKFLOWS", "50"))
COST_ROUNDS = int(os.environ.get("BENCH_KAFKA_COST_ROUNDS", "1"))
"""Rounds of cost runs (reference, then each variant); the figures are the medians."""
COSTS = [
    name.strip()
    for name in os.environ.get("BENCH_KAFKA_COSTS", "off,history,strict,wait").split(",")
    if name.strip() and name.strip() != "none"
]
"""The cost variants to measure after the main run (``off``, ``history``, ``strict``, ``wait``)."""
PROFILE_PATH = os.environ.get("BENCH_KAFKA_PROFILE", "")
"""When set, a ``cProfile`` of the service during the timed run is written there (figures then
include the profiler's overhead: use it to find where the time goes, not for the rates)."""
CONSUMED_PER_WORKFLOW = 5
RUN_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------------------------------
# Broker and Redis


async def _commandstats(client: redis.asyncio.Redis) -> Counter[str]:
    info: dict[str, Any] = await client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()})


class _CountingRedis(redis.asyncio.Redis):
    """The service's Redis client, counting the requests it sends (each one a round trip)."""

    requests = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        _CountingRedis.requests += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


async def _used_memory(client: redis.asyncio.Redis) -> int:
    info: dict[str, Any] = await client.info("memory")
    return int(info["used_memory"])


def _key_kind(key: str) -> str:
    if ":outbox:" in key:
        return "outbox"
    if ":index:" in key or key.endswith(":orchestrators"):
        return "index"
    return key.rsplit(":", 1)[-1]  # state, fence, wfence (lock: none left after the run)


async def _key_bytes(client: redis.asyncio.Redis, prefix: str) -> dict[str, float]:
    """``MEMORY USAGE`` of every key under ``prefix`` by kind, per finished instance (= state key)."""
    keys = [key.decode() async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    sizes: Counter[str] = Counter()
    for key, size in zip(keys, await pipe.execute(), strict=True):
        sizes[_key_kind(key)] += int(size or 0)
    instances = max(sum(1 for key in keys if key.endswith(":state")), 1)
    figures = {
        f"redis_key_bytes_per_finished_workflow.{kind}": size / instances for kind, size in sizes.items()
    }
    figures["redis_key_bytes_per_finished_workflow"] = sum(sizes.values()) / instances
    return figures


# --------------------------------------------------------------------------------------------------
# The service run


async def _read_records(settings: ServiceSettings, topics: list[str]) -> list[Any]:
    """Every record of ``topics`` (manual assignment, from the beginning to the current end)."""
    async with ArvoClient(settings) as client:
        by_topic = await client.read_topics(topics, timeout_s=RUN_TIMEOUT_S)
    return [record for records in by_topic.values() for record in records]


def _memory(redis_url: str, settings: ServiceSettings) -> tuple[RedisMemory, PipelinedRedis]:
    """The service's memory as ``open_memory`` builds it, on a client that counts its requests."""
    wait_s = settings.redis_wait_timeout_ms / 1000 if settings.redis_wait_replicas else 0
    client = _CountingRedis.from_url(
        redis_url,
        socket_timeout=DEFAULT_SOCKET_TIMEOUT_S + wait_s,
        socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT_S,
    )
    # As RedisMemory.from_url: the per-event calls go through the lean pipelined client.
    hot = PipelinedRedis.from_redis_py(client)
    assert hot is not None
    memory = RedisMemory(
        client=client,
        key_prefix=settings.redis_key_prefix,
        instance_retention_s=settings.instance_retention_s,  # as open_memory: finished keys get a TTL
        hot_client=hot,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    return memory, hot


async def _service_run(bootstrap: str, redis_url: str, names: str) -> tuple[dict[str, float], list[Any]]:
    settings = service_settings(bootstrap, redis_url, names)
    memory, hot = _memory(redis_url, settings)
    service = ArvoService.from_settings(settings, memory=memory)
    client_topic = service.router.handler_topic(CLIENT)
    await ensure_topics(settings, [*service.topics, client_topic, settings.dead_letter_topic_name])
    stats_client = redis.asyncio.Redis.from_url(redis_url)
    # The client runs in a process of its own: this process's CPU time is the service's alone.
    load = await LoadGenerator.start(bootstrap, settings.topic_prefix)
    await service.start()
    tune_gc()  # as `arvo run` does once the service is built
    try:
        await service.loop.wait_assigned(timeout_s=60)
        await load.run(WARMUP, 10_000_000, CONCURRENCY)
        consumed_before = sum(service.loop.stats.consumed.values())
        commands_before = await _commandstats(stats_client)
        used_memory_before = await _used_memory(stats_client)
        requests_before = _CountingRedis.requests + hot.requests
        round_trips_before = _CountingRedis.requests + hot.round_trips
        profiler = cProfile.Profile(time.process_time) if PROFILE_PATH else None
        cpu_started = time.process_time()
        if profiler is not None:
            profiler.enable()
        elapsed, latencies = await load.run(WORKFLOWS, 0, CONCURRENCY)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(PROFILE_PATH)
        cpu_elapsed = time.process_time() - cpu_started
        consumed = sum(service.loop.stats.consumed.values()) - consumed_before
        requests = _CountingRedis.requests + hot.requests - requests_before
        round_trips = _CountingRedis.requests + hot.round_trips - round_trips_before
        commands = await _commandstats(stats_client) - commands_before
        used_memory = await _used_memory(stats_client) - used_memory_before
        # One workflow at a time: the latency of the hops themselves, without queueing.
        _, unloaded = await load.run(LATENCY_WORKFLOWS, 20_000_000, 1)
        key_bytes = await _key_bytes(stats_client, settings.redis_key_prefix)
    finally:
        await load.stop()
        await service.stop()
        await stats_client.aclose()
    commands.pop("info", None)
    total_commands = sum(commands.values())
    expected_consumed = WORKFLOWS * CONSUMED_PER_WORKFLOW
    figures = {
        "service.workflows_per_s": WORKFLOWS / elapsed,
        "service.workflows_per_cpu_s": WORKFLOWS / cpu_elapsed,
        "service.cpu_us_per_event": cpu_elapsed * 1e6 / expected_consumed,
        "service.events_per_s": expected_consumed / elapsed,
        "service.p50_ms": statistics.median(latencies) * 1000,
        "service.p99_ms": percentile(latencies, 0.99) * 1000,
        "service.unloaded_p50_ms": statistics.median(unloaded) * 1000,
        "service.unloaded_p99_ms": percentile(unloaded, 0.99) * 1000,
        "redis_round_trips_per_event": round_trips / max(consumed, 1),
        "redis_requests_per_event": requests / max(consumed, 1),
        "redis_commands_per_event": total_commands / max(consumed, 1),
        "service.consumed_events": float(consumed),
        "redis_bytes_per_finished_workflow": used_memory / WORKFLOWS,
        **key_bytes,
    }
    top = ", ".join(f"{name} {count / max(consumed, 1):.2f}" for name, count in commands.most_common(8))
    print(f"   redis commands per consumed event by command (INFO commandstats): {top}", flush=True)
    records = await _read_records(settings, service.topics)
    # The baseline moves as many records as the service consumed in the timed run, of the same sizes.
    records.sort(key=lambda record: record.timestamp)
    return figures, records[-expected_consumed:]


# --------------------------------------------------------------------------------------------------
# The cost of optional features: one more timed run per variant


_FEATURES_OFF: dict[str, Any] = {
    "reply_source_check": "off",
    "dead_letter_no_state": False,
    "instance_retention_s": 0,
    "instance_history_events": 0,
    "handler_threads": 0,
}
"""The dependency-fault features that can be switched off, switched off (plus: no loop watchdog)."""

_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "off": (
        "the dependency-fault features (reply-source check, no_state dead letters, retention, history,"
        " handler threads, loop watchdog; on vs all off)",
        _FEATURES_OFF,
    ),
    "history": (
        "the instance history (ARVO_INSTANCE_HISTORY_EVENTS=20, the default, vs 0)",
        {"instance_history_events": 0},
    ),
    "reference": ("the defaults", {}),
    "strict": ("ARVO_REPLY_SOURCE_CHECK=strict (vs addressed)", {"reply_source_check": "strict"}),
    "wait": (
        "ARVO_REDIS_WAIT_REPLICAS=1 (one replica on this host, vs 0)",
        {"redis_wait_replicas": 1, "redis_wait_timeout_ms": 1_000},
    ),
}

_CHEAPER_VARIANTS = frozenset({"off", "history"})
"""Variants that switch a default feature off (the reference carries the feature's cost)."""


async def _timed_run(
    bootstrap: str, redis_url: str, names: str, overrides: dict[str, Any], *, watchdog: bool = True
) -> dict[str, float]:
    """One warmed-up timed run of the bench mix on a fresh service with ``overrides``: rate and CPU.

    ``watchdog=False`` removes the loop-lag watchdog (no setting switches it off).
    """
    settings = service_settings(bootstrap, redis_url, names, **overrides)
    memory, _ = _memory(redis_url, settings)
    service = ArvoService.from_settings(settings, memory=memory)
    if not watchdog:
        service.watchdog = None  # no setting switches it off
    client_topic = service.router.handler_topic(CLIENT)
    await ensure_topics(settings, [*service.topics, client_topic, settings.dead_letter_topic_name])
    load = await LoadGenerator.start(bootstrap, settings.topic_prefix)
    await service.start()
    try:
        await service.loop.wait_assigned(timeout_s=60)
        try:
            await load.run(WARMUP, 10_000_000, CONCURRENCY)
            consumed_before = sum(service.loop.stats.consumed.values())
            cpu_started = time.process_time()
            elapsed, _ = await load.run(WORKFLOWS, 0, CONCURRENCY)
            cpu_elapsed = time.process_time() - cpu_started
        except BaseException:
            stats = service.loop.stats
            print(
                f"cost run {names} failed: consumed {dict(stats.consumed)}, dead letters"
                f" {dict(stats.dead_lettered)}, parked {stats.parked}, retries {dict(stats.retries)},"
                f" dependency waits {dict(stats.dependency_waits)}, in flight {stats.in_flight},"
                f" outages {service.loop.dependencies.outages}",
                flush=True,
            )
            raise
        consumed = sum(service.loop.stats.consumed.values()) - consumed_before
        if service.loop.stats.dead_lettered or service.loop.stats.parked:
            raise SystemExit(
                f"cost run {overrides} dead-lettered {dict(service.loop.stats.dead_lettered)} and parked"
                f" {service.loop.stats.parked}: every bench workflow must complete"
            )
    finally:
        await load.stop()
        await service.stop()
    return {
        "workflows_per_s": WORKFLOWS / elapsed,
        "cpu_us_per_event": cpu_elapsed * 1e6 / max(consumed, 1),
    }


async def _cost_runs(
    started: list[Any], workdir: Path, bootstrap: str, redis_url: str, names: str
) -> dict[str, float]:
    """``COST_ROUNDS`` rounds of: the reference (defaults), then each variant; the medians per variant."""
    for variant in COSTS:
        if variant not in _VARIANTS:
            raise SystemExit(
                f"BENCH_KAFKA_COSTS: unknown variant {variant!r} (known: {', '.join(_VARIANTS)})"
            )
    samples: dict[str, list[dict[str, float]]] = {}
    for round_index in range(COST_ROUNDS):
        for variant in ["reference", *COSTS]:
            overrides = _VARIANTS[variant][1] if variant != "reference" else {}
            replica = start_replica(started, workdir, redis_url) if variant == "wait" else None
            try:
                measured = await _timed_run(
                    bootstrap,
                    redis_url,
                    f"{names}{variant}{round_index}",
                    overrides,
                    watchdog=variant != "off",
                )
            except (SystemExit, Exception) as error:
                # A failed cost run costs its line, not the main figures printed after it.
                print(f"   cost run {variant} (round {round_index + 1}) failed: {error}", flush=True)
                continue
            finally:
                if replica is not None:
                    stop_process(replica)  # the other runs' master replicates to nobody
            samples.setdefault(variant, []).append(measured)
    return {
        f"cost.{variant}.{name}": statistics.median(sample[name] for sample in runs)
        for variant, runs in samples.items()
        for name in runs[0]
    }


def _cost_lines(figures: dict[str, float]) -> str:
    """The reference run's line and one ``cost of …`` line per variant (throughput, CPU per event)."""
    if "cost.reference.workflows_per_s" not in figures:
        return "   cost lines: the reference run failed (see above)"
    rate = figures["cost.reference.workflows_per_s"]
    cpu = figures["cost.reference.cpu_us_per_event"]
    rounds = f", median of {COST_ROUNDS} rounds" if COST_ROUNDS > 1 else ""
    lines = [
        f"   reference for the costs (defaults, a timed run like each variant's{rounds}): {rate:.0f}"
        f" workflows/s, {cpu:.0f} µs service CPU per consumed event"
    ]
    for variant in COSTS:
        if f"cost.{variant}.workflows_per_s" not in figures:
            lines.append(f"   cost of {_VARIANTS[variant][0]}: not measured (its run failed, see above)")
            continue
        other_rate = figures[f"cost.{variant}.workflows_per_s"]
        other_cpu = figures[f"cost.{variant}.cpu_us_per_event"]
        # "off" and "history" are cheaper configurations: the defaults' cost is measured against them.
        cheaper = variant in _CHEAPER_VARIANTS
        with_rate, without_rate = (rate, other_rate) if cheaper else (other_rate, rate)
        with_cpu, without_cpu = (cpu, other_cpu) if cheaper else (other_cpu, cpu)
        cost = (without_rate - with_rate) / without_rate
        cpu_cost = (with_cpu - without_cpu) / without_cpu
        figures[f"cost.{variant}.throughput_fraction"] = cost
        figures[f"cost.{variant}.cpu_fraction"] = cpu_cost
        lines.append(
            f"   cost of {_VARIANTS[variant][0]}: {cost:.1%} of the throughput, {cpu_cost:+.1%} CPU"
            f" ({with_rate:.0f} vs {without_rate:.0f} workflows/s; {with_cpu:.0f} vs {without_cpu:.0f} µs"
            " service CPU per consumed event)"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The passthrough baseline


async def _passthrough_run(bootstrap: str, names: str, records: list[Any]) -> float:
    """Events/s of a bare consume → produce loop over ``records`` (loaded first, untimed)."""
    settings = load_settings(env_file=None, kafka_bootstrap_servers=bootstrap)
    source, sink = f"{names}.passthrough.in", f"{names}.passthrough.out"
    await ensure_topics(settings, [source, sink], partitions=PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        futures = [
            await producer.send(source, key=record.key, value=record.value, headers=list(record.headers))
            for record in records
        ]
        await asyncio.gather(*futures)
        consumer = AIOKafkaConsumer(
            source,
            bootstrap_servers=bootstrap,
            group_id=f"{names}-passthrough",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_000,
        )
        await consumer.start()
        try:
            moved = 0
            started: float | None = None
            async with asyncio.timeout(RUN_TIMEOUT_S):
                while moved < len(records):
                    batch = await consumer.getmany(timeout_ms=100, max_records=500)
                    if not batch:
                        continue
                    started = started or time.perf_counter()
                    sends = [
                        await producer.send(
                            sink, key=record.key, value=record.value, headers=list(record.headers)
                        )
                        for items in batch.values()
                        for record in items
                    ]
                    await asyncio.gather(*sends)
                    await consumer.commit()
                    moved += len(sends)
            assert started is not None
            return moved / (time.perf_counter() - started)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


# --------------------------------------------------------------------------------------------------


async def _engine_only(workflows: int) -> float:
    """CPU seconds per handler execution of the engine alone: the bench app on in-memory broker and memory.

    The same mix as the Kafka run (half orchestrator, half resumable), no Kafka, no Redis, no
    decoding: what the service could not do without. Init events are built before the clock starts.
    """
    broker = InMemoryBroker(bench_app(InMemoryMemory()))
    completions: list[ArvoEvent] = []

    async def collect(event: ArvoEvent, _broker: InMemoryBroker) -> None:
        completions.append(event)

    broker.subscribe(CLIENT, collect)
    inits = bench_inits(WARMUP + workflows, 0)
    for init in inits[:WARMUP]:
        await broker.publish(init)
    completions.clear()
    broker.events.clear()
    cpu_started = time.process_time()
    for init in inits[WARMUP:]:
        await broker.publish(init)
    cpu_elapsed = time.process_time() - cpu_started
    if len(completions) != workflows or broker.errors:
        raise SystemExit(
            f"engine-only run failed: {len(completions)} completions, errors {broker.errors[:1]}"
        )
    return cpu_elapsed / (workflows * CONSUMED_PER_WORKFLOW)


async def _measure() -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="arvo-bench-kafka-"))
    names = f"bk{uuid.uuid4().hex[:10]}"
    try:
        with processes() as started:
            bootstrap = start_broker(started, workdir)
            redis_url = start_redis(started, workdir)
            figures, records = await _service_run(bootstrap, redis_url, names)
            figures["passthrough.events_per_s"] = await _passthrough_run(bootstrap, names, records)
            figures["passthrough.records"] = float(len(records))
            engine_cpu_s = await _engine_only(WORKFLOWS)
            figures["engine_only.cpu_us_per_event"] = engine_cpu_s * 1e6
            # If the service added only the engine's work to the passthrough's (no decoding, no Redis,
            # no bookkeeping), its rate would be 1 / (1/passthrough + engine): the ratio's ceiling.
            passthrough_s = 1 / figures["passthrough.events_per_s"]
            figures["ceiling_ratio_engine_only"] = passthrough_s / (passthrough_s + engine_cpu_s)
            figures["passthrough.mean_record_bytes"] = statistics.mean(
                len(record.value) for record in records
            )
            figures.update(await _cost_runs(started, workdir, bootstrap, redis_url, names))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def run(results: dict[str, float]) -> None:
    """Measure the service and the passthrough baseline; record the figures under ``kafka.*``."""
    figures = run_on_uvloop(_measure())
    ratio = figures["service.events_per_s"] / figures["passthrough.events_per_s"]
    figures["service_to_passthrough_event_rate"] = ratio
    costs = _cost_lines(figures) if COSTS else "   cost lines skipped (BENCH_KAFKA_COSTS is empty)"
    for name, value in figures.items():
        results[f"kafka.{name}"] = value
    load = os.getloadavg()
    by_kind = ", ".join(
        f"{name.rsplit('.', 1)[-1]} {value:.0f}"
        for name, value in sorted(figures.items())
        if name.startswith("redis_key_bytes_per_finished_workflow.")
    )
    print(
        f"     service: {figures['service.workflows_per_s']:8.0f} workflows/s "
        f"({figures['service.workflows_per_cpu_s']:.0f} per CPU-second of this process)  "
        f"{figures['service.events_per_s']:8.0f} consumed events/s  "
        f"p50 {figures['service.p50_ms']:.1f} ms  p99 {figures['service.p99_ms']:.1f} ms  "
        f"({WORKFLOWS} workflows, {CONCURRENCY} in flight, {PARTITIONS} partitions, one process)\n"
        f"              one workflow at a time: p50 {figures['service.unloaded_p50_ms']:.1f} ms  "
        f"p99 {figures['service.unloaded_p99_ms']:.1f} ms ({LATENCY_WORKFLOWS} workflows, 6 events each)\n"
        f" passthrough: {figures['passthrough.events_per_s']:8.0f} events/s "
        f"(baseline: bare aiokafka consume → produce of the records the service consumed: "
        f"{int(figures['passthrough.records'])}, mean {figures['passthrough.mean_record_bytes']:.0f} bytes)\n"
        f"   service/passthrough event rate: {ratio:.0%} (target ≥ 50%)\n"
        f"      engine alone (in memory, same mix): {figures['engine_only.cpu_us_per_event']:.0f} µs CPU per "
        f"handler execution; service CPU {figures['service.cpu_us_per_event']:.0f} µs per "
        f"consumed event; ceiling if the service added only the engine to the passthrough: "
        f"{figures['ceiling_ratio_engine_only']:.0%}\n"
        f"       redis: {figures['redis_round_trips_per_event']:.2f} round trips per consumed event "
        f"(target ≤ 0.5, batched); {figures['redis_requests_per_event']:.2f} requests and "
        f"{figures['redis_commands_per_event']:.2f} commands per consumed event "
        f"incl. those inside Lua scripts\n"
        f"       Redis bytes per finished workflow: {figures['redis_bytes_per_finished_workflow']:.0f} "
        f"(used_memory delta over the timed run / workflows); MEMORY USAGE of the run's keys per "
        f"finished workflow: {figures['redis_key_bytes_per_finished_workflow']:.0f} ({by_kind})\n"
        f"{costs}\n"
        f"   load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
