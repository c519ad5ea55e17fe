"""Durable timers (issue 13): what a pending timer costs in Redis, how late timers fire, what the schedule
costs in Redis round trips, and what the scheduler's polling costs when nothing is due.

Starts its own Tansu broker and a private ``redis-server`` (so the command counts are the
benchmark's alone) and runs the service in this process, on uvloop like ``arvo run``, as
:mod:`tests.benchmarks.bench_kafka` does (4 partitions per topic, one process).

1. **Bytes per pending timer** (no service): ``BENCH_TIMERS_PENDING`` (100,000) hints written with
   :class:`~service.runtime.redis_timer_index.RedisTimerIndex` ``schedule`` — real subjects of
   ``arvo.orc.bench.timeout`` inits (from the event factory), the statechart's real timer id, due
   times spread over an hour, each in the schedule of its subject's partition (Kafka's murmur2, as
   the producer keys them) — then Redis ``used_memory`` after minus before and ``MEMORY USAGE`` of
   the schedule keys, each divided by the hints. Beside it, what a pending timer adds to its
   instance's record (the JSON bytes the record holds because of it: the record's ``timers`` entry
   and the statechart snapshot's timer), from a record of the timer app in memory.
2. **Firing lag** (the timer app, ``service.examples.timers:timers_app``): for each rate of
   ``BENCH_TIMERS_RATES`` (timers/s, default ``1000,1500,2000,2500,3000``), ``rate × BENCH_TIMERS_WINDOW_S``
   (8 s) instances are started with an even ``b`` (``com.bench.maybe`` never answers) and a
   ``timeoutMs`` such that their timers fall due evenly at that rate over the window, which starts
   once every instance is armed (the setup is not measured). Lateness per timer = the Kafka
   timestamp of its ``arvo.instance.timer`` record − its due time (the scheduler alone), and end to
   end = the timestamp of the instance's completion record − its due time (fired, consumed, the
   instance finished and its completion published). A rate is **sustained** when every completion
   arrived and the end-to-end p99 stays within ``BENCH_TIMERS_MAX_P99_MS`` (1,000 ms); the steps
   stop at the first rate that is not, then ``BENCH_TIMERS_BISECT`` (1) more steps halve the gap
   between the last rate sustained and the first not (rounded to 50/s). A warm-up of 500 timers
   runs first. The window's start is set from the setup rate measured so far; a setup that
   overruns it is re-run once.
3. **Redis round trips per fired timer**, counted during the first rate's step: the schedule's
   requests (``ZADD`` when the timer is armed, ``ZRANGEBYSCORE`` + ``ZREM`` of the polls, amortised
   over the batch; counted on the service's redis-py client), beside the per-event cost of
   processing the timer event itself (the lean client's lease + read and commit requests, and
   ``INFO commandstats``: commands including those inside the Lua scripts).
4. **Polling cost with no timers due**: one service running the bench app of :mod:`bench_kafka`,
   built with ``timers=None`` (its ``ConsumerLoop`` neither schedules nor polls), and beside it a
   :class:`~service.runtime.consumer.timers.TimerScheduler` built with the arguments the loop gives
   its own (same index, producer, owned partitions, orchestrator topics and settings), whose task
   runs only during the "on" measurements — so on and off alternate on the same warm service. The
   bench app has two pipeline handlers (orchestrator and resumable): 8 partitions polled every
   ``ARVO_TIMER_POLL_INTERVAL_MS`` (200). **Loaded**: ``BENCH_TIMERS_POLL_ROUNDS`` (4) rounds in
   ABBA order of ``BENCH_TIMERS_POLL_WORKFLOWS`` (1,000) bench workflows, 128 in flight, the client
   in a process of its own: workflows/s and service CPU per consumed event, medians (min–max).
   Their run-to-run noise on a shared machine is larger than the effect, so the scheduler's cost is
   also measured **idle**: ``BENCH_TIMERS_IDLE_S`` (20 s) of alternating 1-s slices with and without
   the scheduler, the median of the (on − off) CPU differences of neighbouring slices; its share of
   the service's cost is that CPU per second over the CPU per second of the loaded "on" runs.

``BENCH_TIMERS_PARTS`` picks the parts (default ``pending,lag,polling``). Targets (issue 13): ≤ 2
Redis round trips per fired timer; polling ≤ 3 % of the Kafka path's cost. Run:
``.venv/bin/python -m tests.benchmarks timers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import orjson
import redis.asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

import service.runtime.app as app_module
from contracts.bench import bench_timeout_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestration.pipeline import PipelineHandler
from service.arvo.orchestration.timers import TIMER_EVENT_TYPE, format_time_ms
from service.examples.timers import timeout_orchestrator
from service.runtime.app import ArvoService
from service.runtime.client import ArvoClient
from service.runtime.consumer import ConsumerLoop, LoopHooks
from service.runtime.consumer.processing import instance_key
from service.runtime.consumer.timers import TimerScheduler
from service.runtime.kafka_admin import ensure_topics
from service.runtime.redis_memory import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_SOCKET_TIMEOUT_S, RedisMemory
from service.runtime.redis_timer_index import RedisTimerIndex
from service.runtime.resp_client import PipelinedRedis
from service.runtime.routing import handler_topic
from service.runtime.settings import ServiceSettings, load_settings
from service.runtime.timer_index import ScheduledTimer, partition_key
from service.tuning import tune_gc
from tests.benchmarks._loadgen import CLIENT as BENCH_CLIENT
from tests.benchmarks._loadgen import LoadGenerator
from tests.benchmarks._rig import (
    FETCH_MAX_WAIT_MS,
    PARTITIONS,
    percentile,
    processes,
    run_on_uvloop,
    start_broker,
    start_redis,
)

PENDING = int(os.environ.get("BENCH_TIMERS_PENDING", "100000"))
RATES = [
    int(rate) for rate in os.environ.get("BENCH_TIMERS_RATES", "1000,1500,2000,2500,3000").split(",") if rate
]
BISECT = int(os.environ.get("BENCH_TIMERS_BISECT", "1"))
WINDOW_S = float(os.environ.get("BENCH_TIMERS_WINDOW_S", "8"))
MAX_P99_MS = float(os.environ.get("BENCH_TIMERS_MAX_P99_MS", "1000"))
POLL_WORKFLOWS = int(os.environ.get("BENCH_TIMERS_POLL_WORKFLOWS", "1000"))
POLL_ROUNDS = int(os.environ.get("BENCH_TIMERS_POLL_ROUNDS", "4"))
IDLE_S = float(os.environ.get("BENCH_TIMERS_IDLE_S", "20"))
IDLE_SLICE_S = 1.0
PARTS = {part.strip() for part in os.environ.get("BENCH_TIMERS_PARTS", "pending,lag,polling").split(",")}

TIMERS_APP = "service.examples.timers:timers_app"
BENCH_APP = "service.examples:bench_app"
CLIENT = "com.bench.timers.client"
ORCHESTRATOR = "arvo.orc.bench.timeout"
MAYBE = "com.bench.maybe"
TIMER_ID = "xstate.after.TIMEOUT.timeout.asking#0"
"""The id of the timeout machine's one timer, as the statechart names it (checked in part 1)."""
WARMUP_TIMERS = 500
POLL_WARMUP = 40
POLL_CONCURRENCY = 128
DRAIN_GRACE_S = 30.0
"""How long after the last due time a step waits for its completions before it gives up."""


# --------------------------------------------------------------------------------------------------
# Settings, Redis clients


def _say(*lines: str) -> None:
    """Print ``lines`` now, the last one followed by the load average (the machine is shared)."""
    load = os.getloadavg()
    print(
        "\n".join(lines), f"[load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs]"
    )
    sys.stdout.flush()


def _settings(bootstrap: str, redis_url: str, names: str, app: str) -> ServiceSettings:
    """The benchmarked service's settings (as bench_kafka's, with ``app``; no idle trim mid-run)."""
    return load_settings(
        env_file=None,
        kafka_bootstrap_servers=bootstrap,
        consumer_group=f"{names}-service",
        topic_prefix=f"{names}.",
        topic_partitions=PARTITIONS,
        producer_idempotence=False,  # Tansu's memory storage refuses InitProducerId
        producer_acks="all",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        redis_url=redis_url,
        redis_key_prefix=f"bench:{names}",
        app=app,
        health_port=0,
        idle_trim_s=0,  # a trim would land in one variant's idle measurement and not the other's
    )


class _CountingRedis(redis.asyncio.Redis):
    """The service's redis-py client, counting its requests by command (each one a round trip)."""

    requests: ClassVar[Counter[str]] = Counter()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        _CountingRedis.requests[str(args[0]).upper()] += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


def _memory(redis_url: str, settings: ServiceSettings) -> tuple[RedisMemory, PipelinedRedis]:
    """The service's memory as ``open_memory`` builds it, on clients that count their requests."""
    client = _CountingRedis.from_url(
        redis_url, socket_timeout=DEFAULT_SOCKET_TIMEOUT_S, socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT_S
    )
    hot = PipelinedRedis.from_redis_py(client)  # as RedisMemory.from_url: the per-event calls
    assert hot is not None
    memory = RedisMemory(
        client=client,
        key_prefix=settings.redis_key_prefix,
        instance_retention_s=settings.instance_retention_s,
        hot_client=hot,
    )
    return memory, hot


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it goes on.

    On Python 3.11 redis-py (with a socket timeout, as the service's client has) can swallow a
    cancellation that arrives while a command is sent or read, and the task carries on.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)


async def _stop(service: ArvoService) -> None:
    """``service.stop()``; if it takes over 5 s, cancel the timer scheduler again (see :func:`_cancel`).

    ``ConsumerLoop.stop`` cancels its scheduler task once and waits for it without a bound: when
    redis-py swallowed that cancellation, the scheduler polls on and the stop never returns.
    """
    stopping = asyncio.create_task(service.stop())
    while not (await asyncio.wait({stopping}, timeout=5.0))[0]:
        for task in asyncio.all_tasks():
            if task.get_name() == "arvo-timer-scheduler" and task.cancelling():
                _say("   (the timer scheduler ignored its cancellation: cancelled again)")
                task.cancel()
    await stopping


async def _commandstats(client: redis.asyncio.Redis) -> Counter[str]:
    info: dict[str, Any] = await client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()})


async def _used_memory(client: redis.asyncio.Redis) -> int:
    info: dict[str, Any] = await client.info("memory")
    return int(info["used_memory"])


def _timeout_init(
    index: int, *, timeout_ms: int, time_ms: int | None = None, answered: bool = False
) -> ArvoEvent:
    """An ``arvo.orc.bench.timeout`` init from :data:`CLIENT`; ``time_ms`` fixes its ``time``."""
    factory = create_arvo_orchestrator_event_factory(bench_timeout_contract.version("1.0.0"))
    data = {"parentSubject$$": None, "a": index, "b": 2 * index + int(answered), "timeoutMs": timeout_ms}
    if time_ms is None:
        return factory.init(source=CLIENT, data=data)
    return factory.init(source=CLIENT, data=data, time=format_time_ms(time_ms))


# --------------------------------------------------------------------------------------------------
# 1. Bytes per pending timer


def _partition_of(subject: str) -> int:
    """The partition the producer sends a record keyed by ``subject`` to (Kafka's default partitioner)."""
    hashed: int = murmur2(subject.encode())
    return (hashed & 0x7FFFFFFF) % PARTITIONS


async def _record_bytes() -> dict[str, float]:
    """JSON bytes a pending timer adds to its instance's record (one timer app instance, in memory)."""
    memory = InMemoryMemory()
    orchestrator = timeout_orchestrator(memory)
    init = _timeout_init(1, timeout_ms=60_000)
    result = await orchestrator.execute(init)
    if [timer_id for timer_id, _ in result.timers] != [TIMER_ID]:
        raise SystemExit(f"the timeout machine armed {result.timers}, expected one {TIMER_ID!r}")
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    whole = len(orjson.dumps(record))
    without_entry = len(orjson.dumps({key: value for key, value in record.items() if key != "timers"}))
    snapshot = record["state"]
    without_snapshot_timer = len(orjson.dumps({**snapshot, "timers": []}))
    return {
        "record_bytes": float(whole),
        "record_timers_entry_bytes": float(whole - without_entry),
        "snapshot_timer_bytes": float(len(orjson.dumps(snapshot)) - without_snapshot_timer),
    }


async def _pending_bytes(redis_url: str, names: str) -> dict[str, float]:
    """``PENDING`` hints in the schedules of an orchestrator topic's partitions: Redis bytes per hint."""
    client = redis.asyncio.Redis.from_url(redis_url)
    index = RedisTimerIndex(client=client, key_prefix=f"bench:{names}")
    topic = handler_topic(ORCHESTRATOR, f"{names}.")
    due_from = int(time.time() * 1000) + 3_600_000
    by_partition: dict[int, list[ScheduledTimer]] = {partition: [] for partition in range(PARTITIONS)}
    for number in range(PENDING):
        subject = _timeout_init(number, timeout_ms=60_000).subject
        due_ms = due_from + number * 3_600_000 // max(PENDING, 1)
        by_partition[_partition_of(subject)].append(ScheduledTimer(subject, TIMER_ID, due_ms))
    keys = [index.key(partition_key(topic, partition)) for partition in range(PARTITIONS)]
    try:
        before = await _used_memory(client)
        for partition, timers in by_partition.items():
            for start in range(0, len(timers), 1_000):
                await index.schedule(partition_key(topic, partition), timers[start : start + 1_000])
        used = await _used_memory(client) - before
        counted = sum([await index.count(partition_key(topic, partition)) for partition in range(PARTITIONS)])
        if counted != PENDING:
            raise SystemExit(f"{counted} hints in the schedules, expected {PENDING}")
        key_bytes = sum([int(await client.memory_usage(key, samples=0) or 0) for key in keys])
        encoding = await client.object("encoding", keys[0])
    finally:
        await client.delete(*keys)
        await client.aclose()
    subjects = [timer.subject for timers in by_partition.values() for timer in timers]
    return {
        "used_memory_bytes_per_timer": used / PENDING,
        "key_bytes_per_timer": key_bytes / PENDING,
        "member_bytes": statistics.mean(len(f"{due_from}\n{TIMER_ID}\n{s}") for s in subjects[:1_000]),
        "subject_bytes": statistics.mean(len(subject) for subject in subjects[:1_000]),
        "encoding_skiplist": float(str(encoding) in ("skiplist", "b'skiplist'")),
        **await _record_bytes(),
    }


# --------------------------------------------------------------------------------------------------
# 2. and 3. Firing lag and round trips: the timer app on Kafka and Redis


async def _end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for topic in topics for partition in range(PARTITIONS)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _read_from(bootstrap: str, starts: dict[TopicPartition, int]) -> list[Any]:
    """Every record from ``starts`` to the current end of each partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(starts))
        pending = [tp for tp in starts if starts[tp] < ends[tp]]
        async with asyncio.timeout(120):
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=200)
                for items in batch.values():
                    records.extend(items)
                pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()
    return records


class _TimerRig:
    """One service running the timer app, and a client publishing its inits (same process)."""

    def __init__(self, bootstrap: str, redis_url: str, names: str) -> None:
        self.bootstrap = bootstrap
        self.settings = _settings(bootstrap, redis_url, names, TIMERS_APP)
        self.memory, self.hot = _memory(redis_url, self.settings)
        self.service = ArvoService.from_settings(self.settings, memory=self.memory)
        self.orchestrator_topic = self.service.router.handler_topic(ORCHESTRATOR)
        self.maybe_topic = self.service.router.handler_topic(MAYBE)
        self.client_topic = self.service.router.handler_topic(CLIENT)
        self.stats_client = redis.asyncio.Redis.from_url(redis_url)
        self.setup_rate = 500.0
        """Instances armed per second (init and call consumed), measured by the warm-up and each step."""

    def consumed(self, topic: str, event_type: str | None = None) -> int:
        return sum(
            count
            for (consumed_topic, consumed_type, _), count in self.service.loop.stats.consumed.items()
            if consumed_topic == topic and (event_type is None or consumed_type == event_type)
        )

    async def wait_for(self, condition: Any, deadline: float, what: str) -> bool:
        while not condition():
            if time.monotonic() > deadline:
                print(f"   (gave up waiting for {what})", flush=True)
                return False
            await asyncio.sleep(0.05)
        return True

    async def step(self, client: ArvoClient, rate: float, count: int, number: int) -> dict[str, Any]:
        """``count`` timers due at ``rate`` per second once armed; lateness, requests and commands."""
        inits_before = self.consumed(self.orchestrator_topic, ORCHESTRATOR)
        calls_before = self.consumed(self.maybe_topic)
        timers_before = self.consumed(self.orchestrator_topic, TIMER_EVENT_TYPE)
        requests_before = Counter(_CountingRedis.requests)
        commands_before = await _commandstats(self.stats_client)
        built_ms = int(time.time() * 1000)
        # The window starts once every instance is armed: estimated from the setup rate, with margin.
        start_ms = built_ms + int(1000 * (1.3 * count / self.setup_rate + 2.0 + count * 60e-6))
        inits = [
            _timeout_init(
                number * 10_000_000 + index,
                timeout_ms=start_ms - built_ms + int(index * 1000 / rate),
                time_ms=built_ms,
            )
            for index in range(count)
        ]
        due_of = {init.id: built_ms + init.data["timeoutMs"] for init in inits}
        subjects = {init.subject for init in inits}
        setup_started = time.monotonic()
        for start in range(0, count, 1_000):
            await client.publish(inits[start : start + 1_000])
        armed = await self.wait_for(
            lambda: (
                self.consumed(self.orchestrator_topic, ORCHESTRATOR) - inits_before >= count
                and self.consumed(self.maybe_topic) - calls_before >= count
            ),
            time.monotonic() + 300,
            "the instances to be armed",
        )
        setup_s = time.monotonic() - setup_started
        self.setup_rate = count / setup_s
        slack_s = start_ms / 1000 - time.time()
        requests_armed = Counter(_CountingRedis.requests)
        commands_armed = await _commandstats(self.stats_client)
        if not armed or slack_s < 0.2:
            return {"setup_overran_s": -slack_s, "setup_s": setup_s}
        starts = await _end_offsets(self.bootstrap, [self.orchestrator_topic, self.client_topic])
        await asyncio.sleep(max(0.0, start_ms / 1000 - time.time() - 0.05))
        # The window: nothing else runs in this process but the service (and this sleeping waiter).
        hot_before = self.hot.requests
        requests_window = Counter(_CountingRedis.requests)
        cpu_started = time.process_time()
        end_s = start_ms / 1000 + count / rate
        await self.wait_for(
            lambda: self.consumed(self.orchestrator_topic, TIMER_EVENT_TYPE) - timers_before >= count,
            time.monotonic() + (end_s - time.time()) + DRAIN_GRACE_S,
            "every timer event to be consumed",
        )
        cpu_s = time.process_time() - cpu_started
        drained_after_s = time.time() - end_s
        hot_requests = self.hot.requests - hot_before
        requests_fired = Counter(_CountingRedis.requests) - requests_window
        commands_after = await _commandstats(self.stats_client)
        timer_events = self.consumed(self.orchestrator_topic, TIMER_EVENT_TYPE) - timers_before
        fired_lateness: list[float] = []
        end_to_end: list[float] = []
        end_to_end_by_due: list[tuple[int, float]] = []
        fired_ids: Counter[str] = Counter()
        completions: set[str] = set()
        for record in await _read_from(self.bootstrap, starts):
            event = orjson.loads(record.value)
            if record.topic == self.orchestrator_topic and event["type"] == TIMER_EVENT_TYPE:
                if event["subject"] in subjects:
                    fired_ids[event["id"]] += 1
                    fired_lateness.append(record.timestamp - event["data"]["dueMs"])
            elif (
                record.topic == self.client_topic
                and event["parentid"] in due_of
                and event["parentid"] not in completions
                and event["data"]["timedOut"]
            ):
                completions.add(event["parentid"])
                due = due_of[event["parentid"]]
                end_to_end.append(record.timestamp - due)
                end_to_end_by_due.append((due, record.timestamp - due))
        tail = sorted(due_of[parent] for parent in completions)[-max(1, count // 10) :]
        return {
            "count": count,
            "setup_s": setup_s,
            "slack_s": slack_s,
            "fired": len(fired_ids),
            "duplicates": sum(fired_ids.values()) - len(fired_ids),
            "completed": len(completions),
            "lateness": fired_lateness,
            "end_to_end": end_to_end,
            "end_to_end_by_due": end_to_end_by_due,
            "tail_from_ms": tail[0] if tail else 0,
            "drained_after_s": drained_after_s,
            "cpu_us_per_timer": cpu_s * 1e6 / max(timer_events, 1),
            "timer_events": timer_events,
            "hot_requests": hot_requests,
            "armed_requests": requests_armed - requests_before,
            "fired_requests": requests_fired,
            "armed_commands": commands_armed - commands_before,
            "fired_commands": commands_after - commands_armed,
        }


def _lateness_figures(prefix: str, result: dict[str, Any]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name in ("lateness", "end_to_end"):
        samples: list[float] = result[name]
        if samples:
            figures[f"{prefix}.{name}.p50_ms"] = statistics.median(samples)
            figures[f"{prefix}.{name}.p99_ms"] = percentile(samples, 0.99)
            figures[f"{prefix}.{name}.max_ms"] = max(samples)
    for name in (
        "count",
        "fired",
        "completed",
        "duplicates",
        "setup_s",
        "drained_after_s",
        "cpu_us_per_timer",
    ):
        figures[f"{prefix}.{name}"] = float(result[name])
    return figures


async def _lag(bootstrap: str, redis_url: str, names: str) -> dict[str, float]:
    """Parts 2 and 3: the steps of rates (each printed when measured); their figures."""
    rig = _TimerRig(bootstrap, redis_url, f"{names}lag")
    await ensure_topics(
        rig.settings,
        [*rig.service.topics, rig.client_topic, rig.settings.dead_letter_topic_name],
    )
    figures: dict[str, float] = {}
    tried_rates: list[int] = []
    client_settings = rig.settings.model_copy(update={"create_topics": False})
    await rig.service.start()
    tune_gc()  # as `arvo run` does once the service is built
    try:
        await rig.service.loop.wait_assigned(timeout_s=60)
        async with ArvoClient(client_settings) as client:
            # Warm-up: timers due 2 s after their init, answered and unanswered calls; measures the setup rate.
            warm = [_timeout_init(i, timeout_ms=2_000, answered=i % 4 == 0) for i in range(WARMUP_TIMERS)]
            started = time.monotonic()
            await client.publish(warm)
            await rig.wait_for(
                lambda: rig.consumed(rig.maybe_topic) >= WARMUP_TIMERS,
                time.monotonic() + 120,
                "the warm-up",
            )
            rig.setup_rate = WARMUP_TIMERS / (time.monotonic() - started)
            # Every warm-up instance armed a timer; the answered ones' fire stale (ignored) when due.
            await rig.wait_for(
                lambda: rig.consumed(rig.orchestrator_topic, TIMER_EVENT_TYPE) >= WARMUP_TIMERS,
                time.monotonic() + 60,
                "the warm-up's timers",
            )
            tried = tried_rates

            async def sustains(rate: int) -> bool | None:
                """Run one step at ``rate``; whether it was sustained (``None``: it could not be armed)."""
                tried.append(rate)
                count = max(1, int(rate * WINDOW_S))
                result = await rig.step(client, rate, count, len(tried))
                if "count" not in result:  # setup slower than estimated: once more, with the new estimate
                    _say(
                        f"   {rate:,} timers/s: setup overran its estimate by {result['setup_overran_s']:.1f} s;"
                        " again with the measured setup rate"
                    )
                    await asyncio.sleep(max(0.0, count / rate + 2))  # let the overrun step's timers fire
                    result = await rig.step(client, rate, count, len(tried) + 100)
                    if "count" not in result:
                        _say(f"   {rate:,} timers/s: setup overran again; stopping")
                        return None
                prefix = f"lag.{rate}"
                figures.update(_lateness_figures(prefix, result))
                sustained = (
                    result["completed"] == count
                    and bool(result["end_to_end"])
                    and percentile(result["end_to_end"], 0.99) <= MAX_P99_MS
                )
                figures[f"{prefix}.sustained"] = float(sustained)
                _say(_step_line(rate, result, sustained))
                if len(tried) == 1:
                    figures.update(_round_trips(result))
                    _say(*_round_trip_lines(figures, result))
                return sustained

            passed, failed = 0, 0
            for rate in RATES:
                outcome = await sustains(rate)
                if outcome is None:
                    break
                if not outcome:
                    failed = rate
                    break
                passed = rate
            # Between the last rate sustained and the first one not: BISECT more steps, halving the gap.
            for _ in range(BISECT if passed and failed else 0):
                middle = round((passed + failed) / 2 / 50) * 50
                if middle in (passed, failed):
                    break
                outcome = await sustains(middle)
                if outcome is None:
                    break
                passed, failed = (middle, failed) if outcome else (passed, middle)
            if passed:
                figures["lag.highest_sustained_rate"] = float(passed)
    finally:
        await _stop(rig.service)
        await rig.stats_client.aclose()
    highest = figures.get("lag.highest_sustained_rate")
    steps = ", ".join(f"{rate:,}" for rate in tried_rates)
    _say(
        f"   highest rate sustained: {highest:,.0f} timers/s (steps: {steps}; end-to-end p99 ≤ {MAX_P99_MS:.0f} ms)"
        if highest
        else f"   no rate sustained (steps: {steps})"
    )
    return figures


def _step_line(rate: int, result: dict[str, Any], sustained: bool) -> str:
    lateness, end_to_end = result["lateness"], result["end_to_end"]
    last_tenth = [latency for due, latency in result["end_to_end_by_due"] if due >= result["tail_from_ms"]]
    verdict = "sustained" if sustained else f"NOT sustained (end-to-end p99 > {MAX_P99_MS:.0f} ms or lost)"

    def quantiles(samples: list[float]) -> str:
        if not samples:
            return "none"
        return (
            f"p50 {statistics.median(samples):.0f} ms  p99 {percentile(samples, 0.99):.0f} ms"
            f"  max {max(samples):.0f} ms"
        )

    return (
        f"   {rate:>5,} timers/s × {WINDOW_S:g} s ({result['count']:,} timers): fired {quantiles(lateness)};"
        f" end to end {quantiles(end_to_end)} (last tenth due: p50"
        f" {statistics.median(last_tenth) if last_tenth else float('nan'):.0f} ms)\n"
        f"                 fired {result['fired']:,}, completed {result['completed']:,},"
        f" duplicates {result['duplicates']}; last completion {result['drained_after_s']:+.1f} s after the"
        f" last due time; {result['cpu_us_per_timer']:.0f} µs service CPU per timer; armed in"
        f" {result['setup_s']:.1f} s ({result['slack_s']:.1f} s to spare) — {verdict}"
    )


def _round_trips(result: dict[str, Any]) -> dict[str, float]:
    """Redis requests and commands per fired timer (schedule) and per timer event (processing)."""
    fired = max(result["timer_events"], 1)
    armed: Counter[str] = result["armed_requests"]
    polls: Counter[str] = result["fired_requests"]
    commands: Counter[str] = result["fired_commands"]
    # The scheduler's own ZRANGEBYSCORE and ZREM (the commit scripts run these commands too).
    schedule_commands = polls["ZRANGEBYSCORE"] + polls["ZREM"]
    processing_commands = sum(commands.values()) - commands["info"] - schedule_commands
    return {
        "round_trips.zadd_per_timer": armed["ZADD"] / result["count"],
        "round_trips.zrangebyscore_per_timer": polls["ZRANGEBYSCORE"] / fired,
        "round_trips.zrem_per_timer": polls["ZREM"] / fired,
        "round_trips.schedule_per_timer": (armed["ZADD"] + polls["ZRANGEBYSCORE"] + polls["ZREM"]) / fired,
        "round_trips.other_redis_py_per_timer": (sum(polls.values()) - polls["ZRANGEBYSCORE"] - polls["ZREM"])
        / fired,
        "round_trips.processing_per_timer_event": result["hot_requests"] / fired,
        "commands.processing_per_timer_event": processing_commands / fired,
    }


def _round_trip_lines(figures: dict[str, float], result: dict[str, Any]) -> list[str]:
    commands: Counter[str] = result["fired_commands"]
    commands.pop("info", None)
    fired = max(result["timer_events"], 1)
    top = ", ".join(f"{name} {count / fired:.2f}" for name, count in commands.most_common(8))
    return [
        f"   Redis round trips per fired timer (schedule, at {RATES[0]:,}/s): "
        f"{figures['round_trips.schedule_per_timer']:.2f} (target ≤ 2) = ZADD when armed "
        f"{figures['round_trips.zadd_per_timer']:.2f} + ZRANGEBYSCORE "
        f"{figures['round_trips.zrangebyscore_per_timer']:.3f} + ZREM {figures['round_trips.zrem_per_timer']:.3f}"
        f" (the polls amortised over their batches; other redis-py requests while firing:"
        f" {figures['round_trips.other_redis_py_per_timer']:.3f})",
        f"   processing the timer event itself (the per-event cost): "
        f"{figures['round_trips.processing_per_timer_event']:.2f} round trips (lease + read, commit), "
        f"{figures['commands.processing_per_timer_event']:.1f} commands incl. Lua; all commands per timer"
        f" while firing (INFO commandstats): {top}",
    ]


# --------------------------------------------------------------------------------------------------
# 4. Polling cost with no timers due


class _LoopWithoutTimers(ConsumerLoop):
    """The consumer loop built with ``timers=None``: no timer is scheduled, no schedule polled."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "timers": None})


def _scheduler_as_the_loop_builds_it(service: ArvoService) -> TimerScheduler:
    """A :class:`TimerScheduler` with the arguments ``ConsumerLoop`` gives its own (same settings,
    index, producer, owned partitions and orchestrator topics); it only runs when its task does."""
    memory = service.memory
    assert isinstance(memory, RedisMemory)
    return TimerScheduler(
        index=RedisTimerIndex(client=memory.client, key_prefix=service.settings.redis_key_prefix),
        publish=service.producer.publish,
        partitions=lambda: service.loop.assignment,
        orchestrators={
            service.router.handler_topic(handler.source): handler.source
            for handler in service.handlers
            if isinstance(handler, PipelineHandler)
        },
        interval_s=service.settings.timer_poll_interval_ms / 1000,
        batch=service.settings.timer_batch_size,
        stats=service.loop.stats,
        hooks=LoopHooks(),
    )


@contextlib.asynccontextmanager
async def _polling(scheduler: TimerScheduler, on: bool) -> AsyncIterator[None]:
    """While inside: ``scheduler`` polls (``on``) or nothing does."""
    task = asyncio.create_task(scheduler.run(), name="bench-timer-scheduler") if on else None
    try:
        yield
    finally:
        if task is not None:
            await _cancel(task)


async def _polling_cost(bootstrap: str, redis_url: str, names: str) -> dict[str, float]:
    """Part 4 on one service built with ``timers=None``: runs with and without a scheduler, interleaved."""
    settings = _settings(bootstrap, redis_url, f"{names}poll", BENCH_APP)
    memory, _ = _memory(redis_url, settings)
    with mock.patch.object(app_module, "ConsumerLoop", _LoopWithoutTimers):
        service = ArvoService.from_settings(settings, memory=memory)
    scheduler = _scheduler_as_the_loop_builds_it(service)
    if not scheduler.active:
        raise SystemExit("the bench app has no orchestrator topic: nothing to poll")
    client_topic = service.router.handler_topic(BENCH_CLIENT)
    await ensure_topics(settings, [*service.topics, client_topic, settings.dead_letter_topic_name])
    load = await LoadGenerator.start(bootstrap, settings.topic_prefix)
    await service.start()
    samples: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}

    def sample(variant: str, name: str, value: float) -> None:
        samples[variant].setdefault(name, []).append(value)

    try:
        await service.loop.wait_assigned(timeout_s=60)
        await load.run(POLL_WARMUP, 10_000_000, POLL_CONCURRENCY)
        # Loaded: POLL_ROUNDS rounds of one timed run each way, in ABBA order.
        for round_index in range(POLL_ROUNDS):
            for variant in ("on", "off") if round_index % 2 == 0 else ("off", "on"):
                async with _polling(scheduler, variant == "on"):
                    consumed_before = service.loop.stats.consumed.total()
                    polls_before = _CountingRedis.requests["ZRANGEBYSCORE"]
                    cpu_started = time.process_time()
                    elapsed, _ = await load.run(POLL_WORKFLOWS, 0, POLL_CONCURRENCY)
                    cpu_s = time.process_time() - cpu_started
                    consumed = service.loop.stats.consumed.total() - consumed_before
                    polls = _CountingRedis.requests["ZRANGEBYSCORE"] - polls_before
                sample(variant, "workflows_per_s", POLL_WORKFLOWS / elapsed)
                sample(variant, "cpu_us_per_event", cpu_s * 1e6 / max(consumed, 1))
                sample(variant, "cpu_per_s", cpu_s / elapsed)
                sample(variant, "polls_per_s", polls / elapsed)
        if service.loop.stats.dead_lettered or service.loop.stats.parked:
            raise SystemExit("a bench workflow was dead-lettered or parked: every one must complete")
        # Idle: alternating slices of IDLE_SLICE_S with and without polling (slow drifts cancel out).
        await asyncio.sleep(1.0)  # the last commits and sends settle
        for slice_index in range(max(1, round(IDLE_S / IDLE_SLICE_S / 2))):
            for variant in ("on", "off") if slice_index % 2 == 0 else ("off", "on"):
                async with _polling(scheduler, variant == "on"):
                    polls_before = _CountingRedis.requests["ZRANGEBYSCORE"]
                    cpu_started, started = time.process_time(), time.monotonic()
                    await asyncio.sleep(IDLE_SLICE_S)
                    cpu_s, wall_s = time.process_time() - cpu_started, time.monotonic() - started
                    polls = _CountingRedis.requests["ZRANGEBYSCORE"] - polls_before
                sample(variant, "idle_cpu_ms_per_s", cpu_s * 1000 / wall_s)
                sample(variant, "idle_polls_per_s", polls / wall_s)
    finally:
        await load.stop()
        await _stop(service)
    figures: dict[str, float] = {}
    for variant, by_name in samples.items():
        for name, values in by_name.items():
            figures[f"polling.{variant}.{name}"] = statistics.median(values)
            figures[f"polling.{variant}.{name}.min"] = min(values)
            figures[f"polling.{variant}.{name}.max"] = max(values)
    on_cpu, off_cpu = figures["polling.on.cpu_us_per_event"], figures["polling.off.cpu_us_per_event"]
    on_rate, off_rate = figures["polling.on.workflows_per_s"], figures["polling.off.workflows_per_s"]
    figures["polling.loaded_cpu_fraction"] = (on_cpu - off_cpu) / off_cpu
    figures["polling.loaded_throughput_fraction"] = (off_rate - on_rate) / off_rate
    # Per pair of neighbouring slices, then the median: the scheduler's CPU per second, idle.
    idle_differences = [
        on - off
        for on, off in zip(
            samples["on"]["idle_cpu_ms_per_s"], samples["off"]["idle_cpu_ms_per_s"], strict=True
        )
    ]
    idle_ms = statistics.median(idle_differences)
    figures["polling.idle_cpu_ms_per_s"] = idle_ms
    figures["polling.cpu_us_per_poll"] = idle_ms * 1000 / max(figures["polling.on.idle_polls_per_s"], 1e-9)
    # The scheduler's CPU per second (measured idle) against what the service spends per second loaded.
    figures["polling.share_of_loaded_cpu"] = idle_ms / 1000 / figures["polling.on.cpu_per_s"]
    return figures


def _polling_lines(figures: dict[str, float]) -> list[str]:
    def spread(variant: str, name: str, unit: str) -> str:
        median = figures[f"polling.{variant}.{name}"]
        low, high = figures[f"polling.{variant}.{name}.min"], figures[f"polling.{variant}.{name}.max"]
        return f"{median:.1f} {unit}" if low == high else f"{median:.1f} {unit} ({low:.1f}–{high:.1f})"

    slices = max(1, round(IDLE_S / IDLE_SLICE_S / 2))
    return [
        f"   polling with nothing due, loaded ({POLL_WORKFLOWS} bench workflows per run, {POLL_ROUNDS} runs"
        f" each way in ABBA order, medians (min–max); {figures['polling.on.polls_per_s']:.0f} ZRANGEBYSCORE/s):\n"
        f"     scheduler on  {spread('on', 'workflows_per_s', 'workflows/s')},"
        f" {spread('on', 'cpu_us_per_event', 'µs CPU per consumed event')}\n"
        f"     scheduler off {spread('off', 'workflows_per_s', 'workflows/s')},"
        f" {spread('off', 'cpu_us_per_event', 'µs CPU per consumed event')}\n"
        f"     on vs off: {figures['polling.loaded_cpu_fraction']:+.1%} CPU per consumed event,"
        f" {figures['polling.loaded_throughput_fraction']:+.1%} of the throughput lost",
        f"   polling, idle ({slices} × {IDLE_SLICE_S:g} s slices each way, alternating):"
        f" on {spread('on', 'idle_cpu_ms_per_s', 'ms CPU/s')}"
        f" ({figures['polling.on.idle_polls_per_s']:.0f} ZRANGEBYSCORE/s), off"
        f" {spread('off', 'idle_cpu_ms_per_s', 'ms CPU/s')}\n"
        f"     → the scheduler: {figures['polling.idle_cpu_ms_per_s']:.2f} ms CPU/s (median of the pairs),"
        f" {figures['polling.cpu_us_per_poll']:.0f} µs per partition poll ="
        f" {figures['polling.share_of_loaded_cpu']:.2%} of the service's CPU under the load above"
        f" ({figures['polling.on.cpu_per_s']:.2f} CPU-s/s; target ≤ 3 %)",
    ]


# --------------------------------------------------------------------------------------------------


async def _measure() -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="arvo-bench-timers-"))
    names = f"bt{uuid.uuid4().hex[:10]}"
    figures: dict[str, float] = {}
    try:
        with processes() as started:
            redis_url = start_redis(started, workdir)
            if "pending" in PARTS:
                pending = await _pending_bytes(redis_url, names)
                figures.update({f"pending.{name}": value for name, value in pending.items()})
                _say(_pending_line(pending))
            if not PARTS & {"lag", "polling"}:
                return figures
            bootstrap = start_broker(started, workdir)
            if "lag" in PARTS:
                figures.update(await _lag(bootstrap, redis_url, names))
            if "polling" in PARTS:
                polling = await _polling_cost(bootstrap, redis_url, names)
                figures.update(polling)
                _say(*_polling_lines(polling))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def _pending_line(figures: dict[str, float]) -> str:
    per_timer = figures["record_timers_entry_bytes"] + figures["snapshot_timer_bytes"]
    return (
        f"   {PENDING:,} pending timers in Redis: {figures['used_memory_bytes_per_timer']:.0f} bytes per timer"
        f" (used_memory delta), {figures['key_bytes_per_timer']:.0f} (MEMORY USAGE of the {PARTITIONS}"
        f" schedule keys); member {figures['member_bytes']:.0f} bytes (subject {figures['subject_bytes']:.0f})\n"
        f"   in the instance record: {per_timer:.0f} JSON bytes per pending timer (record `timers` entry"
        f" {figures['record_timers_entry_bytes']:.0f} + statechart snapshot timer"
        f" {figures['snapshot_timer_bytes']:.0f}; the whole record {figures['record_bytes']:.0f})"
    )


def run(results: dict[str, float]) -> None:
    """Measure the four parts; record the figures under ``timers.*``."""
    figures = run_on_uvloop(_measure())
    for name, value in figures.items():
        results[f"timers.{name}"] = value
