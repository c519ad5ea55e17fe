"""``arvo run --workers 2`` against ``arvo run`` (one process), with the broker's and Redis's CPU beside it.

Each run starts the service the way a user does — the ``arvo`` console script as a subprocess, the
bench app, ``--workers N`` — against a Tansu broker and a private ``redis-server`` started for the
benchmark, on topics with 4 partitions. The client (:mod:`tests.benchmarks._loadgen`, a process of
its own) runs ``BENCH_WORKERS_WARMUP`` (200) warm-up workflows, then ``BENCH_WORKERS_WORKFLOWS``
(3,000; half orchestrator, half resumable) with at most ``BENCH_WORKERS_CONCURRENCY`` (128) in
flight. Every run uses its own topics and consumer group.

Reported per worker count: workflows/s and consumed events/s (5 per workflow), p50/p99 latency from
the publish of an init to the arrival of its completion, and the CPU each party used during the
timed run, in cores (CPU seconds ÷ wall seconds, from ``/proc/<pid>/stat``): the service (the
supervisor and every worker; for 1, the one process), the broker, Redis, the client — and the rest
of the machine (``/proc/stat`` busy time minus those), because on a shared machine other work
competes for the same cores. The service's CPU per consumed event shows what a worker process
costs beyond its share of the work (each has its own Kafka client, Redis connections and event
loop).

On a 2-core machine the broker, Redis and the client share the two cores with the service, so a
second worker cannot double the rate: the figure says how much of the machine the service gets.
``BENCH_WORKERS_ROUNDS=N`` alternates N rounds of (1, 2) and prints the medians.

On the test broker a run can fail with ``1 of 3000 bench workflows without a completion``: Tansu can
hand a tailing consumer a partition with a hole while several producers append to it (the skipped
offsets are there when read again later; reproduced with bare aiokafka clients), and the service
commits past a record it never received. A test-broker defect, not the service's: rerun. A failed
run keeps its logs (the path is printed); ``BENCH_WORKERS_HOLD_S=600`` keeps the service, broker
and Redis running that long after a failure, to look at them.

Run: ``.venv/bin/python -m tests.benchmarks.bench_workers`` or ``python -m tests.benchmarks workers``
(Linux: reads ``/proc``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from service.runtime.kafka_admin import ensure_topics
from service.runtime.routing import TopicRouter
from service.runtime.settings import ServiceSettings, env_var_name
from service.runtime.supervisor import http_get
from tests.benchmarks._loadgen import CLIENT, LoadGenerator
from tests.benchmarks._rig import (
    percentile,
    processes,
    run_on_uvloop,
    service_settings,
    start_broker,
    start_redis,
)
from tests.integration._kafka import free_port

WORKFLOWS = int(os.environ.get("BENCH_WORKERS_WORKFLOWS", "3000"))
WARMUP = int(os.environ.get("BENCH_WORKERS_WARMUP", "200"))
CONCURRENCY = int(os.environ.get("BENCH_WORKERS_CONCURRENCY", "128"))
ROUNDS = int(os.environ.get("BENCH_WORKERS_ROUNDS", "1"))
HOLD_S = float(os.environ.get("BENCH_WORKERS_HOLD_S", "0"))
"""When a run fails, keep the service, the broker and Redis running this long (to look at them)."""
WORKER_COUNTS = tuple(int(n) for n in os.environ.get("BENCH_WORKERS_COUNTS", "1,2").split(","))
CONSUMED_PER_WORKFLOW = 5
BENCH_SOURCES = ("arvo.orc.bench", "arvo.orc.bench.resumable", "com.bench.add", "com.bench.double")
ARVO = Path(sys.executable).with_name("arvo")
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def _rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def _machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (every core; ``/proc/stat``)."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / _TICKS


def _env(settings: ServiceSettings, health_port: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("ARVO_")}
    for field in settings.model_fields_set:
        value: Any = getattr(settings, field)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[env_var_name(field)] = str(value)
    env.update(ARVO_HEALTH_PORT=str(health_port), ARVO_HEALTH_HOST="127.0.0.1", ARVO_LOG_FORMAT="json")
    return env


async def _wait_ready(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if (await http_get(port, "/readyz", 3.0))[0] == 200:
                return
        except (OSError, TimeoutError, ValueError):
            pass
        if process.returncode is not None or time.monotonic() > deadline:
            raise SystemExit(f"arvo run did not become ready:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


async def _one_run(
    workers: int, bootstrap: str, redis_url: str, others: dict[str, int], workdir: Path
) -> dict[str, float]:
    names = f"bw{workers}{uuid.uuid4().hex[:8]}"
    settings = service_settings(bootstrap, redis_url, names)
    router = TopicRouter.from_settings(settings)
    topics = [router.handler_topic(source) for source in (*BENCH_SOURCES, CLIENT)]
    await ensure_topics(settings, [*topics, settings.dead_letter_topic_name])
    load = await LoadGenerator.start(bootstrap, settings.topic_prefix)
    port = free_port()
    log = workdir / f"{names}.log"
    with log.open("wb") as sink:
        service = await asyncio.create_subprocess_exec(
            str(ARVO), "run", "--workers", str(workers), env=_env(settings, port),
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        await _wait_ready(port, service, log)
        await load.run(WARMUP, 10_000_000, CONCURRENCY)
        parties = {
            "service": _descendants(service.pid),
            "client": [load.pid],
            **{k: [v] for k, v in others.items()},
        }
        cpu_before = {name: sum(map(_cpu_s, pids)) for name, pids in parties.items()}
        busy_before, wall_before = _machine_busy_s(), time.monotonic()
        elapsed, latencies = await load.run(WORKFLOWS, 0, CONCURRENCY)
        wall = time.monotonic() - wall_before
        busy = _machine_busy_s() - busy_before
        cpu = {name: sum(map(_cpu_s, pids)) - cpu_before[name] for name, pids in parties.items()}
        # Memory at the end of the timed run: every process of the service (the supervisor too).
        rss = {pid: _rss_mib(pid) for pid in _descendants(service.pid)}
    except BaseException:
        print(f"arvo run --workers {workers}: its log and the broker's are in {workdir}", file=sys.stderr)
        try:
            (workdir / f"{names}.metrics").write_bytes((await http_get(port, "/metrics", 10.0))[1])
        except (OSError, TimeoutError, ValueError) as error:
            print(f"   its /metrics did not answer: {error!r}", file=sys.stderr)
        if HOLD_S:
            print(
                f"   holding everything for {HOLD_S:.0f} s (BENCH_WORKERS_HOLD_S)",
                file=sys.stderr,
                flush=True,
            )
            await asyncio.sleep(HOLD_S)
        raise
    finally:
        await load.stop()
        if service.returncode is None:
            service.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(service.wait(), 60)
            except TimeoutError:
                service.kill()
                await service.wait()
    if service.returncode != 0:
        raise SystemExit(f"arvo run --workers {workers} exited {service.returncode}: its log is {log}")
    figures = {
        "workflows_per_s": WORKFLOWS / elapsed,
        "events_per_s": WORKFLOWS * CONSUMED_PER_WORKFLOW / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "service_cpu_us_per_event": cpu["service"] * 1e6 / (WORKFLOWS * CONSUMED_PER_WORKFLOW),
        "rest_of_machine_cores": max(0.0, busy - sum(cpu.values())) / wall,
        "service_rss_mib": sum(rss.values()),
        "largest_process_rss_mib": max(rss.values(), default=0.0),
        "service_processes": float(len(rss)),
    }
    figures.update({f"{name}_cores": seconds / wall for name, seconds in cpu.items()})
    return figures


async def _measure() -> dict[int, list[dict[str, float]]]:
    runs: dict[int, list[dict[str, float]]] = {workers: [] for workers in WORKER_COUNTS}
    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    with processes() as started:
        bootstrap = start_broker(started, workdir)
        broker_pid = started[-1].pid
        redis_url = start_redis(started, workdir)
        others = {"broker": broker_pid, "redis": started[-1].pid}
        for round_ in range(ROUNDS):
            order = WORKER_COUNTS if round_ % 2 == 0 else tuple(reversed(WORKER_COUNTS))
            for workers in order:
                runs[workers].append(await _one_run(workers, bootstrap, redis_url, others, workdir))
    shutil.rmtree(workdir, ignore_errors=True)  # kept when a run failed
    return runs


def run(results: dict[str, float]) -> None:
    """Measure and print ``--workers`` 1 and 2 side by side; record the figures in ``results``."""
    runs = run_on_uvloop(_measure())
    medians = {
        workers: {name: statistics.median(run[name] for run in samples) for name in samples[0]}
        for workers, samples in runs.items()
    }
    print(
        f"arvo run --workers N, {WORKFLOWS} bench workflows ({CONCURRENCY} in flight, 4 partitions),"
        f" {ROUNDS} round(s), medians; {os.cpu_count()} CPUs:",
        flush=True,
    )
    for workers, figures in medians.items():
        rates = sorted(sample["workflows_per_s"] for sample in runs[workers])
        spread = f" (runs: {', '.join(f'{rate:.0f}' for rate in rates)})" if len(rates) > 1 else ""
        print(
            f"   --workers {workers}: {figures['workflows_per_s']:.0f} workflows/s{spread}"
            f" ({figures['events_per_s']:.0f} consumed events/s), p50 {figures['p50_ms']:.0f} ms,"
            f" p99 {figures['p99_ms']:.0f} ms; CPU in cores: service {figures['service_cores']:.2f},"
            f" broker {figures['broker_cores']:.2f}, redis {figures['redis_cores']:.2f},"
            f" client {figures['client_cores']:.2f}, rest of the machine"
            f" {figures['rest_of_machine_cores']:.2f}; service {figures['service_cpu_us_per_event']:.0f} µs"
            " CPU per consumed event;"
            f" RSS {figures['service_rss_mib']:.0f} MiB in {figures['service_processes']:.0f} process(es),"
            f" largest {figures['largest_process_rss_mib']:.0f} MiB",
            flush=True,
        )
        for name, value in figures.items():
            results[f"workers.{workers}.{name}"] = value
    load = os.getloadavg()
    print(f"   load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    if 1 in medians and 2 in medians:
        ratio = medians[2]["workflows_per_s"] / medians[1]["workflows_per_s"]
        results["workers.2_vs_1"] = ratio
        print(f"   --workers 2 ÷ --workers 1: {ratio:.2f}× the workflows/s", flush=True)


if __name__ == "__main__":
    from service.tuning import tune_allocator

    tune_allocator()
    run({})
