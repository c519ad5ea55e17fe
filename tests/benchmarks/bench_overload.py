"""A 2× overload: do the workflows already started keep completing while new ones wait? (issue 14)

Starts a Tansu broker and a private ``redis-server``, topics with 4 partitions, and for each variant
ONE service process started as a user starts it (``arvo run``, the bench app) with its own topics
and group; the client (:mod:`tests.benchmarks._loadgen`) runs in a process of its own.

1. **Sustainable rate** (admission on, the default): after ``BENCH_OVERLOAD_WARMUP`` (200) warm-up
   workflows, a saturating closed-loop run of ``BENCH_OVERLOAD_SUSTAIN_WORKFLOWS`` (3,000) workflows
   with ``BENCH_OVERLOAD_CONCURRENCY`` (256) in flight: its workflows/s is *R*.
2. **Overload**: the client publishes ``2 × R`` inits per second (open loop, whatever completes) for
   ``BENCH_OVERLOAD_S`` seconds (default 120), then waits until every one of them completed (the
   drain; the backlog left at the end of the overload takes about as long again to work off).
3. **Idle**: ``ARVO_IDLE_TRIM_S`` is set to 5 s for the benchmark (default 30 s), so the service
   returns its free heap 5–10 s after the last record (checked every 5 s); its RSS is read 12 s after the drain.

The same overload (same *R*) then runs on a fresh service with admission off
(``ARVO_ADMISSION_BACKLOG=0``: strict offset order, the service's default): the baseline, in the same
run. Printed per variant: completion latency p50/p99 of the workflows started during the overload,
completions per 10-s window during the overload (min and median) as a fraction of *R* (the target:
≥ 80 % in every window), the offered rate actually published, the service's peak RSS (``VmHWM``) and
its RSS once idle (``VmRSS``). Every figure goes to ``BENCH_JSON`` under ``overload.*``.

``BENCH_OVERLOAD_BACKLOG=N`` runs the admission variant with ``ARVO_ADMISSION_BACKLOG=N`` instead of
2000 (a backlog of ``(2 - 1) × R × BENCH_OVERLOAD_S ÷ 8`` records covers the whole overload:
the bench app has 8 orchestrator partitions).

Run: ``python -m tests.benchmarks overload`` (about 2 × (2 × ``BENCH_OVERLOAD_S``) + 1 minute: at 2×
the backlog left at the end takes as long as the overload to work off, so the default 120 s takes
~9 minutes; ``BENCH_OVERLOAD_S=30`` for a short look).
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

from service.runtime.kafka_admin import ensure_topics
from service.runtime.routing import TopicRouter
from tests.benchmarks._loadgen import CLIENT, LoadGenerator
from tests.benchmarks._rig import (
    percentile,
    processes,
    run_on_uvloop,
    service_settings,
    start_broker,
    start_redis,
)
from tests.benchmarks.bench_workers import ARVO, BENCH_SOURCES, _env, _wait_ready
from tests.integration._kafka import free_port

OVERLOAD_S = float(os.environ.get("BENCH_OVERLOAD_S", "120"))
FACTOR = float(os.environ.get("BENCH_OVERLOAD_FACTOR", "2"))
WARMUP = int(os.environ.get("BENCH_OVERLOAD_WARMUP", "200"))
SUSTAIN_WORKFLOWS = int(os.environ.get("BENCH_OVERLOAD_SUSTAIN_WORKFLOWS", "3000"))
CONCURRENCY = int(os.environ.get("BENCH_OVERLOAD_CONCURRENCY", "256"))
WINDOW_S = 10.0
IDLE_TRIM_S = 5.0
IDLE_WAIT_S = 12.0
TARGET = 0.8
BACKLOG = int(os.environ.get("BENCH_OVERLOAD_BACKLOG", "2000"))
"""``ARVO_ADMISSION_BACKLOG`` of the admission variant (admission is off by default in the service)."""


def _status_kib(pid: int, field: str) -> float:
    """``field`` (``VmHWM``, ``VmRSS``) of ``/proc/<pid>/status`` in KiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _windows(done: list[float | None], duration_s: float) -> list[int]:
    """Completions per ``WINDOW_S`` window of ``[0, duration_s)``."""
    counts = [0] * max(1, int(duration_s // WINDOW_S))
    for at in done:
        if at is not None and at < len(counts) * WINDOW_S:
            counts[int(at // WINDOW_S)] += 1
    return counts


async def _variant(
    bootstrap: str, redis_url: str, workdir: Path, *, admission: bool, rate: float | None
) -> dict[str, float]:
    """One service process: warm-up, (sustainable rate when ``rate`` is None), the overload, idle."""
    names = f"bo{'a' if admission else 'n'}{uuid.uuid4().hex[:8]}"
    settings = service_settings(
        bootstrap, redis_url, names, idle_trim_s=IDLE_TRIM_S, admission_backlog=BACKLOG if admission else 0
    )
    router = TopicRouter.from_settings(settings)
    topics = [router.handler_topic(source) for source in (*BENCH_SOURCES, CLIENT)]
    await ensure_topics(settings, [*topics, settings.dead_letter_topic_name])
    load = await LoadGenerator.start(bootstrap, settings.topic_prefix)
    port = free_port()
    log = workdir / f"{names}.log"
    with log.open("wb") as sink:
        service = await asyncio.create_subprocess_exec(
            str(ARVO), "run", env=_env(settings, port),
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip
    figures: dict[str, float] = {}
    try:
        await _wait_ready(port, service, log)
        await load.run(WARMUP, 10_000_000, CONCURRENCY)
        if rate is None:
            elapsed, _ = await load.run(SUSTAIN_WORKFLOWS, 20_000_000, CONCURRENCY)
            figures["sustainable_workflows_per_s"] = SUSTAIN_WORKFLOWS / elapsed
            rate = figures["sustainable_workflows_per_s"]
        offered = FACTOR * rate
        drain_timeout_s = max(300.0, 3 * FACTOR * OVERLOAD_S)
        sent, done = await load.run_open(offered, OVERLOAD_S, 0, drain_timeout_s)
        finished = [at for at in done if at is not None]
        latencies = [at - start for start, at in zip(sent, done, strict=True) if at is not None]
        windows = _windows(done, OVERLOAD_S)
        fractions = [count / WINDOW_S / rate for count in windows]
        figures.update(
            {
                "offered_workflows_per_s": len(sent) / max(sent[-1], 1e-9) if sent else 0.0,
                "workflows": float(len(sent)),
                # Not known lost: still without a completion when the bench stopped waiting (the
                # fault tests check loss); the latencies below are of the finished ones only.
                "unfinished": float(len(sent) - len(finished)),
                "drain_wait_s": drain_timeout_s,
                "completion_p50_s": statistics.median(latencies),
                "completion_p99_s": percentile(latencies, 0.99),
                "min_window_completion_fraction": min(fractions),
                "median_window_completion_fraction": statistics.median(fractions),
                "windows_below_target": float(sum(1 for value in fractions if value < TARGET)),
                "completions_during_overload": float(sum(windows)),
                "drain_s": max(finished) - OVERLOAD_S if finished else 0.0,
                "peak_rss_mib": _status_kib(service.pid, "VmHWM") / 1024,
            }
        )
        figures["admission_backlog"] = float(settings.admission_backlog)
        figures["windows"] = windows  # type: ignore[assignment]  # printed, not in BENCH_JSON
        await asyncio.sleep(IDLE_WAIT_S)
        figures["idle_rss_mib"] = _status_kib(service.pid, "VmRSS") / 1024
        figures["peak_rss_mib"] = max(figures["peak_rss_mib"], _status_kib(service.pid, "VmHWM") / 1024)
    except BaseException:
        print(f"overload run {names}: the service's log is {log}", file=sys.stderr, flush=True)
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
    figures["rate_basis_workflows_per_s"] = rate
    return figures


async def _measure() -> dict[str, dict[str, float]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    with processes() as started:
        bootstrap = start_broker(started, workdir)
        redis_url = start_redis(started, workdir)
        on = await _variant(bootstrap, redis_url, workdir, admission=True, rate=None)
        off = await _variant(
            bootstrap, redis_url, workdir, admission=False, rate=on["sustainable_workflows_per_s"]
        )
    shutil.rmtree(workdir, ignore_errors=True)  # kept when a run failed
    return {"admission": on, "no_admission": off}


def run(results: dict[str, float]) -> None:
    """Measure the overload with admission on and off; print and record the figures (``overload.*``)."""
    started = time.monotonic()
    variants = run_on_uvloop(_measure())
    rate = variants["admission"]["sustainable_workflows_per_s"]
    results["overload.sustainable_workflows_per_s"] = rate
    results["overload.seconds"] = OVERLOAD_S
    results["overload.factor"] = FACTOR
    print(
        f"sustainable rate (closed loop, {SUSTAIN_WORKFLOWS} workflows, {CONCURRENCY} in flight, admission on):"
        f" {rate:.0f} workflows/s; overload: {FACTOR:g}× = {FACTOR * rate:.0f} inits/s offered for"
        f" {OVERLOAD_S:.0f} s, open loop",
        flush=True,
    )
    labels = {
        "admission": f"admission on (ARVO_ADMISSION_BACKLOG={variants['admission']['admission_backlog']:.0f})",
        "no_admission": "admission off (ARVO_ADMISSION_BACKLOG=0, strict offset order)",
    }
    for name, figures in variants.items():
        windows = figures.pop("windows")
        per_s = " ".join(f"{count / WINDOW_S:.0f}" for count in windows)  # type: ignore[attr-defined]
        met = "met" if figures["min_window_completion_fraction"] >= TARGET else "NOT met"
        print(
            f"   {labels[name]}: offered {figures['offered_workflows_per_s']:.0f}/s"
            f" ({figures['workflows']:.0f} workflows, {figures['unfinished']:.0f} still without a completion"
            f" when the bench stopped waiting {figures['drain_wait_s']:.0f} s after the overload);"
            f" completion latency (of the finished) p50 {figures['completion_p50_s']:.1f} s, p99 {figures['completion_p99_s']:.1f} s;"
            f" completions per {WINDOW_S:.0f}-s window during the overload ÷ sustainable: min"
            f" {figures['min_window_completion_fraction']:.0%}, median {figures['median_window_completion_fraction']:.0%}"
            f" (target ≥ {TARGET:.0%} in every window: {met}); drained {figures['drain_s']:.0f} s after;"
            f" service RSS peak {figures['peak_rss_mib']:.0f} MiB, idle {figures['idle_rss_mib']:.0f} MiB\n"
            f"      completions/s per window: {per_s}",
            flush=True,
        )
        for key, value in figures.items():
            results[f"overload.{name}.{key}"] = value
    load = os.getloadavg()
    print(
        f"   load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs;"
        f" {time.monotonic() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    from service.tuning import tune_allocator

    tune_allocator()
    run({})
