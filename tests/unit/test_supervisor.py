"""``arvo run --workers N`` without Kafka or Redis: the supervisor with fake worker processes.

:class:`FakeWorld` plays the workers: each launch makes a :class:`FakeWorker` that exits when told
(a drain after a signal, a crash after a delay) and answers the supervisor's probes of its loopback
port (``/healthz``, ``/readyz``, ``/metrics``) from its own state — so signal fan-out, restarts with
backoff, the crash-loop give-up, the staggered start and the aggregated endpoints are checked in
milliseconds. The real subprocess plumbing (health socket and lifeline passed as fds) is checked
with tiny Python subprocesses; ``tests/integration/test_workers.py`` runs ``arvo run --workers 2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from typer.testing import CliRunner

import service.cli as cli
from service.runtime.health import HealthServer, ReadinessReport
from service.runtime.metrics_aggregation import MetricsAggregator, merge_families, parse_exposition
from service.runtime.settings import ServiceSettings
from service.runtime.supervisor import (
    RestartPolicy,
    SubprocessLauncher,
    Supervisor,
    describe_exit,
    http_get,
    watch_lifeline,
)

FAST = RestartPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, max_restarts=3, stable_s=5.0)


# --------------------------------------------------------------------------------- fake workers


@dataclass
class Behaviour:
    """What one launched worker does."""

    crash_after_s: float | None = None
    """Exit by itself after this long (with ``crash_code``)."""
    crash_code: int = 1
    drain_s: float = 0.02
    """Time from a stop signal to a clean exit; ``None``: ignores signals (only SIGKILL ends it)."""
    ignores_signals: bool = False
    ready_after_s: float = 0.0
    consumed: int = 0
    """``arvo_events_consumed_total`` it reports."""
    readiness_body: dict[str, Any] | None = None
    """``/readyz`` answers 503 with this body instead of 200."""
    hangs: bool = False
    """Never answers a probe (an event loop blocked)."""


class FakeWorker:
    """A worker process: exits when its behaviour says so; answers probes from its state."""

    def __init__(self, pid: int, index: int, behaviour: Behaviour) -> None:
        self.pid = pid
        self.index = index
        self.behaviour = behaviour
        self.returncode: int | None = None
        self.signals: list[int] = []
        self.killed = False
        self.started = time.monotonic()
        self._exited = asyncio.Event()
        loop = asyncio.get_running_loop()
        if behaviour.crash_after_s is not None:
            loop.call_later(behaviour.crash_after_s, self.exit, behaviour.crash_code)

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if not self.behaviour.ignores_signals:
            asyncio.get_running_loop().call_later(self.behaviour.drain_s, self.exit, 0)

    def kill(self) -> None:
        self.killed = True
        self.exit(-signal.SIGKILL)

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    @property
    def ready(self) -> bool:
        return time.monotonic() - self.started >= self.behaviour.ready_after_s

    def metrics(self) -> bytes:
        registry = CollectorRegistry()
        consumed = Counter("arvo_events_consumed", "Records.", ["topic", "outcome"], registry=registry)
        consumed.labels("t", "ok").inc(self.behaviour.consumed)
        Gauge("arvo_assigned_partitions", "Partitions.", registry=registry).set(2)
        return generate_latest(registry)


@dataclass
class FakeWorld:
    """The launcher and the probe the supervisor is given; every launch's behaviour comes from ``plan``."""

    plan: Callable[[int, int], Behaviour] = lambda index, attempt: Behaviour()
    launches: list[FakeWorker] = field(default_factory=list)
    by_port: dict[int, FakeWorker] = field(default_factory=dict)
    launch_times: dict[int, list[float]] = field(default_factory=dict)

    async def launch(self, index: int, sock: socket.socket) -> FakeWorker:
        attempt = len(self.launch_times.setdefault(index, []))
        self.launch_times[index].append(time.monotonic())
        worker = FakeWorker(1000 + len(self.launches), index, self.plan(index, attempt))
        self.launches.append(worker)
        self.by_port[sock.getsockname()[1]] = worker
        return worker

    async def probe(self, port: int, path: str, timeout_s: float) -> tuple[int, bytes]:
        worker = self.by_port[port]
        if worker.returncode is not None or worker.behaviour.hangs:
            await asyncio.sleep(timeout_s)
            raise TimeoutError
        if path == "/healthz":
            return 200, b"ok\n"
        if path == "/readyz":
            if worker.behaviour.readiness_body is not None:
                return 503, orjson.dumps(worker.behaviour.readiness_body)
            return (200, b'{"status":"ready"}') if worker.ready else (503, b'{"failed":["partitions"]}')
        if path == "/metrics":
            return 200, worker.metrics()
        return 404, b""

    def of(self, index: int) -> list[FakeWorker]:
        return [worker for worker in self.launches if worker.index == index]


def supervisor_for(world: FakeWorld, workers: int = 2, **options: Any) -> Supervisor:
    values: dict[str, Any] = {
        "workers": workers,
        "launch": world.launch,
        "probe": world.probe,
        "drain_timeout_s": 0.5,
        "stop_margin_s": 0.5,
        "policy": FAST,
        "probe_timeout_s": 0.2,
        "cache_s": 0.0,
        "signals": (),
    }
    return Supervisor(**{**values, **options})


@contextlib.asynccontextmanager
async def supervising(supervisor: Supervisor) -> AsyncIterator[asyncio.Task[str | None]]:
    task = asyncio.create_task(supervisor.run())
    try:
        yield task
    finally:
        if not task.done():
            supervisor.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=5)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------------- signals and drain


async def test_a_signal_is_passed_on_to_every_worker_and_run_returns_none_once_they_drained() -> None:
    world = FakeWorld()
    supervisor = supervisor_for(world, workers=3, signals=(signal.SIGUSR1,))
    with capture_logs() as logs:
        async with supervising(supervisor) as task:
            await until(lambda: len(world.launches) == 3)
            os.kill(os.getpid(), signal.SIGUSR1)  # the supervisor's handler is installed before any launch
            assert await asyncio.wait_for(task, timeout=5) is None
    assert [worker.signals for worker in world.launches] == [[signal.SIGUSR1]] * 3
    assert [worker.returncode for worker in world.launches] == [0, 0, 0]
    stopping = [line for line in logs if line["event"].startswith("stopping: signal passed on")]
    assert stopping[0]["signal"] == "SIGUSR1"
    assert stopping[0]["workers"] == [1000, 1001, 1002]
    assert sorted(line["worker"] for line in logs if line["event"] == "worker stopped") == [0, 1, 2]
    assert logs[-1]["event"] == "supervisor stopped: every worker drained"


async def test_a_second_signal_is_not_passed_on_again() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(drain_s=0.2))
    supervisor = supervisor_for(world, workers=1, signals=(signal.SIGUSR1,))
    with capture_logs() as logs:
        async with supervising(supervisor) as task:
            await until(lambda: len(world.launches) == 1)
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.sleep(0.02)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert await asyncio.wait_for(task, timeout=5) is None
    assert world.launches[0].signals == [signal.SIGUSR1]
    assert any(line["event"].startswith("signal received again") for line in logs)


async def test_a_worker_that_does_not_drain_in_time_is_killed_and_the_run_fails() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(ignores_signals=index == 1))
    supervisor = supervisor_for(world, drain_timeout_s=0.1, stop_margin_s=0.1)
    with capture_logs() as logs:
        async with supervising(supervisor) as task:
            await until(lambda: len(world.launches) == 2)
            started = time.monotonic()
            supervisor.request_stop(signal.SIGTERM)
            failure = await asyncio.wait_for(task, timeout=5)
            waited = time.monotonic() - started
    assert failure == "worker 1 (pid 1001) did not stop within 0.2 s: killed"
    assert 0.2 <= waited < 1.0
    assert world.launches[0].returncode == 0
    assert not world.launches[0].killed
    assert world.launches[1].killed
    [line] = [line for line in logs if line["event"] == "worker did not stop in time: killing it"]
    assert line["worker"] == 1
    assert line["log_level"] == "error"


async def test_a_worker_failing_while_it_drains_fails_the_run() -> None:
    world = FakeWorld()
    supervisor = supervisor_for(world, workers=1)
    async with supervising(supervisor) as task:
        await until(lambda: len(world.launches) == 1)
        worker = world.launches[0]
        worker.behaviour.ignores_signals = True
        supervisor.request_stop()
        worker.exit(1)
        assert (
            await asyncio.wait_for(task, timeout=5)
            == "worker 0 (pid 1000) failed while stopping: exit code 1"
        )


async def test_a_worker_ended_by_the_signal_itself_while_starting_counts_as_stopped() -> None:
    # Before its signal handlers are installed a worker dies of SIGTERM (or exits 130 on SIGINT):
    # nothing had started, so nothing failed.
    world = FakeWorld(plan=lambda index, attempt: Behaviour(ignores_signals=True))
    supervisor = supervisor_for(world)
    async with supervising(supervisor) as task:
        await until(lambda: len(world.launches) == 2)
        supervisor.request_stop()
        world.launches[0].exit(-signal.SIGTERM)
        world.launches[1].exit(130)
        assert await asyncio.wait_for(task, timeout=5) is None


async def test_a_stop_during_the_start_of_a_worker_reaches_it() -> None:
    world = FakeWorld()
    gate = asyncio.Event()
    launch = world.launch

    async def slow_launch(index: int, sock: socket.socket) -> FakeWorker:
        await gate.wait()
        return await launch(index, sock)

    supervisor = supervisor_for(world, workers=1, launch=slow_launch)
    async with supervising(supervisor) as task:
        await asyncio.sleep(0.02)
        supervisor.request_stop(signal.SIGINT)
        gate.set()
        assert await asyncio.wait_for(task, timeout=5) is None
    assert world.launches[0].signals == [signal.SIGINT]


# --------------------------------------------------------------------------------- restarts


async def test_a_worker_that_exits_unexpectedly_is_restarted_after_a_backoff_with_an_error_line() -> None:
    world = FakeWorld(
        plan=lambda index, attempt: (
            Behaviour(crash_after_s=0.05, crash_code=3) if (index, attempt) == (0, 0) else Behaviour()
        )
    )
    supervisor = supervisor_for(world)
    with capture_logs() as logs:
        async with supervising(supervisor) as task:
            await until(lambda: len(world.of(0)) == 2)
            first_exit = world.of(0)[0]
            assert first_exit.returncode == 3
            supervisor.request_stop()
            assert await asyncio.wait_for(task, timeout=5) is None  # a restarted crash is not a failure
    starts = world.launch_times[0]
    assert starts[1] - starts[0] >= 0.05 + FAST.initial_backoff_s
    [line] = [line for line in logs if line["event"] == "worker exited without being asked to: restarting it"]
    assert line["log_level"] == "error"
    assert line["worker"] == 0
    assert line["exit_code"] == "3"
    assert line["restart_in_s"] == FAST.initial_backoff_s
    assert line["crashes_in_a_row"] == 1
    assert b'arvo_worker_restarts_total{worker="0"} 1.0' in await supervisor.scrape()


def test_the_backoff_doubles_up_to_its_ceiling() -> None:
    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=30.0)
    assert [policy.backoff_s(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


async def test_a_crash_loop_gives_up_stops_the_other_workers_gracefully_and_fails() -> None:
    world = FakeWorld(
        plan=lambda index, attempt: Behaviour(crash_after_s=0.0, crash_code=2) if index == 1 else Behaviour()
    )
    supervisor = supervisor_for(world)
    with capture_logs() as logs:
        async with supervising(supervisor) as task:
            failure = await asyncio.wait_for(task, timeout=5)
    assert failure == (
        "worker 1 exited 4 times in a row within 5 s of starting (last exit code 2): a crash loop, gave up"
    )
    assert len(world.of(1)) == FAST.max_restarts + 1
    [healthy] = world.of(0)
    assert healthy.signals == [signal.SIGTERM]
    assert healthy.returncode == 0
    restarts = [
        line for line in logs if line["event"] == "worker exited without being asked to: restarting it"
    ]
    assert [line["restart_in_s"] for line in restarts] == [0.05, 0.1, 0.2]
    [gave_up] = [line for line in logs if line["event"].startswith("worker keeps crashing")]
    assert gave_up["log_level"] == "error"
    assert gave_up["exit_code"] == "2"


async def test_a_worker_that_ran_long_enough_starts_a_new_series_of_crashes() -> None:
    policy = RestartPolicy(initial_backoff_s=0.01, max_backoff_s=0.01, max_restarts=1, stable_s=0.05)
    # Every worker 0 crashes after 0.08 s (longer than stable_s): never a crash loop.
    world = FakeWorld(plan=lambda index, attempt: Behaviour(crash_after_s=0.08))
    supervisor = supervisor_for(world, workers=1, policy=policy)
    with capture_logs() as logs:
        async with supervising(supervisor) as task:
            await until(lambda: len(world.of(0)) >= 4)
            assert not task.done()
            supervisor.request_stop()
            assert await asyncio.wait_for(task, timeout=5) is None
    restarts = [
        line for line in logs if line["event"] == "worker exited without being asked to: restarting it"
    ]
    assert {line["crashes_in_a_row"] for line in restarts} == {1}


async def test_a_worker_that_cannot_be_launched_is_retried_like_a_crash() -> None:
    world = FakeWorld()
    calls = 0

    async def failing_launch(index: int, sock: socket.socket) -> FakeWorker:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(24, "Too many open files")
        return await world.launch(index, sock)

    supervisor = supervisor_for(world, workers=1, launch=failing_launch)
    with capture_logs() as logs:
        async with supervising(supervisor) as task:
            await until(lambda: len(world.launches) == 1)
            supervisor.request_stop()
            assert await asyncio.wait_for(task, timeout=5) is None
    [line] = [line for line in logs if line["event"] == "worker could not be started"]
    assert "Too many open files" in line["error"]


def test_exit_codes_are_described_for_log_lines() -> None:
    assert describe_exit(1) == "1"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(None) == "not started"


# --------------------------------------------------------------------------------- staggered start


async def test_workers_start_one_at_a_time_each_once_the_previous_is_ready() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(ready_after_s=0.15))
    supervisor = supervisor_for(world, workers=3)
    async with supervising(supervisor):
        await until(lambda: len(world.launches) == 3)
    starts = [world.launch_times[index][0] for index in range(3)]
    assert starts[1] - starts[0] >= 0.15
    assert starts[2] - starts[1] >= 0.15


async def test_the_next_worker_starts_anyway_when_the_previous_is_not_ready_in_time() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(ready_after_s=60.0))
    supervisor = supervisor_for(world, workers=2, start_timeout_s=0.1)
    with capture_logs() as logs:
        async with supervising(supervisor):
            await until(lambda: len(world.launches) == 2)
    [line] = [line for line in logs if line["event"].startswith("worker not ready in time")]
    assert line["worker"] == 0


# --------------------------------------------------------------------------------- aggregated health


async def test_readyz_is_ready_only_when_every_worker_is_and_names_what_each_lacks() -> None:
    unready = {
        "status": "unready",
        "checks": {"consumer": "ok", "redis": "no answer to PING", "kafka": "ok"},
        "failed": ["redis"],
    }
    world = FakeWorld(plan=lambda index, attempt: Behaviour(readiness_body=unready if index == 1 else None))
    supervisor = supervisor_for(world, start_timeout_s=0.05)
    async with supervising(supervisor):
        await until(lambda: len(world.launches) == 2)
        report = await supervisor.readiness.check()
        assert not report.ready
        assert report.checks == {"worker 0": "ok", "worker 1": "unready: redis (no answer to PING)"}
        assert report.failed == ("worker 1",)
        world.launches[1].behaviour.readiness_body = None
        assert await supervisor.readiness.check() == ReadinessReport(
            ready=True, checks={"worker 0": "ok", "worker 1": "ok"}
        )


async def test_readyz_and_healthz_name_a_worker_waiting_for_its_restart() -> None:
    world = FakeWorld(
        plan=lambda index, attempt: Behaviour(crash_after_s=0.0, crash_code=1) if index == 1 else Behaviour()
    )
    policy = RestartPolicy(initial_backoff_s=30.0, max_backoff_s=30.0)
    supervisor = supervisor_for(world, policy=policy)
    async with supervising(supervisor):
        await until(lambda: len(world.launches) == 2 and world.launches[1].returncode is not None)
        await asyncio.sleep(0.01)
        readiness = await supervisor.readiness.check()
        liveness = await supervisor.liveness.check()
    assert readiness.checks["worker 1"].startswith("exited with 1: restarting in ")
    assert liveness.checks["worker 1"].startswith("exited with 1: restarting in ")
    assert liveness.failed == ("worker 1",)
    assert liveness.checks["worker 0"] == "ok"


async def test_healthz_fails_for_a_worker_that_stops_answering_but_not_for_one_still_starting() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(hangs=index == 1))
    supervisor = supervisor_for(world, start_timeout_s=0.3)
    async with supervising(supervisor):
        await until(lambda: len(world.launches) == 2)
        early = await supervisor.liveness.check()
        assert early.ready, early  # never answered yet, started less than start_timeout_s ago
        assert early.checks["worker 1"].startswith("starting (/healthz did not answer")
        await asyncio.sleep(0.3)
        late = await supervisor.liveness.check()
    assert not late.ready
    assert late.checks["worker 1"] == "/healthz did not answer: TimeoutError"


async def test_healthz_counts_a_worker_waiting_for_its_turn_to_start_as_alive() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(ready_after_s=60.0))
    supervisor = supervisor_for(world, start_timeout_s=30.0)
    async with supervising(supervisor):
        await until(lambda: len(world.launches) == 1)
        liveness = await supervisor.liveness.check()
        readiness = await supervisor.readiness.check()
    assert liveness.ready
    assert liveness.checks["worker 1"] == "not started yet"
    assert readiness.checks["worker 1"] == "not started yet"
    assert readiness.failed == ("worker 0", "worker 1")


async def test_the_supervisor_serves_its_aggregated_endpoints_on_the_health_port() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(consumed=2 + index))
    supervisor = supervisor_for(world, health_port=_free_port(), health_host="127.0.0.1")
    assert supervisor.health is not None
    async with supervising(supervisor):
        await until(lambda: len(world.launches) == 2)
        port = supervisor.health.port
        healthz = await http_get(port, "/healthz", 2.0)
        readyz = await http_get(port, "/readyz", 2.0)
        metrics = await http_get(port, "/metrics", 2.0)
    assert healthz == (200, b'{"status":"alive","checks":{"worker 0":"ok","worker 1":"ok"}}\n')
    assert readyz == (200, b'{"status":"ready","checks":{"worker 0":"ok","worker 1":"ok"}}\n')
    assert metrics[0] == 200
    samples = _samples(metrics[1])
    assert samples[("arvo_events_consumed_total", (("outcome", "ok"), ("topic", "t")))] == 5.0
    assert samples[("arvo_assigned_partitions", ())] == 4.0
    assert samples[("arvo_workers", ())] == 2.0
    assert samples[("arvo_worker_up", (("worker", "0"),))] == 1.0


async def test_a_health_port_that_cannot_be_bound_fails_the_run_before_any_worker_starts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        world = FakeWorld()
        supervisor = supervisor_for(world, health_port=taken.getsockname()[1], health_host="127.0.0.1")
        failure = await asyncio.wait_for(supervisor.run(), timeout=5)
    assert failure is not None
    assert "(ARVO_HEALTH_PORT) cannot be bound" in failure
    assert world.launches == []


# --------------------------------------------------------------------------------- aggregated metrics


def _exposition(
    consumed: float, *, dependency_up: int = 1, instances: int = 7, lag_s: float = 0.002
) -> list[Any]:
    registry = CollectorRegistry()
    Counter("arvo_events_consumed", "Records.", ["topic"], registry=registry).labels("t").inc(consumed)
    Gauge("arvo_dependency_up", "Up.", ["dependency"], registry=registry).labels("redis").set(dependency_up)
    Gauge("arvo_instances", "Instances.", ["status"], registry=registry).labels("done").set(instances)
    Gauge("arvo_in_flight_records", "In flight.", ["partition"], registry=registry).labels("0").set(3)
    Gauge("process_start_time_seconds", "Start.", registry=registry).set(100.0 + consumed)
    Histogram("arvo_event_loop_lag_seconds", "Lag.", buckets=(0.001, 0.01), registry=registry).observe(lag_s)
    return parse_exposition(generate_latest(registry).decode())


def _samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = text.decode() if isinstance(text, bytes) else text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def test_merged_metrics_sum_counters_histograms_and_gauges_with_the_documented_exceptions() -> None:
    from service.runtime.metrics_aggregation import render_families

    merged = _samples(
        render_families(
            merge_families([_exposition(3, dependency_up=1), _exposition(5, dependency_up=0, lag_s=0.005)])
        )
    )
    assert merged[("arvo_events_consumed_total", (("topic", "t"),))] == 8.0
    assert merged[("arvo_event_loop_lag_seconds_count", ())] == 2.0
    assert merged[("arvo_event_loop_lag_seconds_bucket", (("le", "0.001"),))] == 0.0
    assert merged[("arvo_event_loop_lag_seconds_bucket", (("le", "0.01"),))] == 2.0
    assert merged[("arvo_event_loop_lag_seconds_sum", ())] == pytest.approx(0.007)
    assert merged[("arvo_in_flight_records", (("partition", "0"),))] == 6.0
    assert merged[("arvo_dependency_up", (("dependency", "redis"),))] == 0.0  # any worker down: down
    assert merged[("arvo_instances", (("status", "done"),))] == 7.0  # the same store counted twice
    assert merged[("process_start_time_seconds", ())] == 103.0  # the earliest
    created = [value for (name, _), value in merged.items() if name == "arvo_events_consumed_created"]
    assert len(created) == 1


def test_counters_of_a_restarted_worker_keep_counting_from_its_previous_total() -> None:
    aggregator = MetricsAggregator()
    aggregator.update(0, _exposition(10))
    aggregator.update(1, _exposition(4))
    before = _samples(aggregator.render([aggregator.last(0), aggregator.last(1)]))
    assert before[("arvo_events_consumed_total", (("topic", "t"),))] == 14.0
    aggregator.retire(0)  # worker 0 exited; its successor starts from zero
    aggregator.update(0, _exposition(1))
    after = _samples(aggregator.render([aggregator.last(0), aggregator.last(1)]))
    assert after[("arvo_events_consumed_total", (("topic", "t"),))] == 15.0
    assert after[("arvo_event_loop_lag_seconds_count", ())] == 3.0
    assert after[("arvo_in_flight_records", (("partition", "0"),))] == 6.0  # gauges: the live processes only
    # Between the exit and the first scrape of the successor, the retired totals still count.
    aggregator.retire(0)
    gap = _samples(aggregator.render([aggregator.last(1)]))
    assert gap[("arvo_events_consumed_total", (("topic", "t"),))] == 15.0


async def test_a_worker_that_does_not_answer_a_scrape_keeps_its_counters_and_is_marked_down() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(consumed=10 * (index + 1)))
    supervisor = supervisor_for(world)
    async with supervising(supervisor):
        await until(lambda: len(world.launches) == 2)
        first = _samples(await supervisor.scrape())
        world.launches[1].behaviour.hangs = True
        second = _samples(await supervisor.scrape())
    consumed = ("arvo_events_consumed_total", (("outcome", "ok"), ("topic", "t")))
    assert first[consumed] == second[consumed] == 30.0
    assert second[("arvo_worker_up", (("worker", "1"),))] == 0.0
    assert second[("arvo_assigned_partitions", ())] == 2.0  # its gauges are left out


async def test_a_restarted_worker_does_not_make_the_pods_counters_go_down() -> None:
    world = FakeWorld(plan=lambda index, attempt: Behaviour(consumed=10 if attempt == 0 else 1))
    supervisor = supervisor_for(world, workers=1)
    consumed = ("arvo_events_consumed_total", (("outcome", "ok"), ("topic", "t")))
    async with supervising(supervisor):
        await until(lambda: len(world.launches) == 1)
        assert _samples(await supervisor.scrape())[consumed] == 10.0
        world.launches[0].exit(1)
        await until(lambda: len(world.launches) == 2)
        assert _samples(await supervisor.scrape())[consumed] == 11.0


# --------------------------------------------------------------------------------- processes and fds


async def test_http_get_reads_a_health_server_on_a_handed_socket_and_rejects_what_is_not_http() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    server = HealthServer(port=0, sock=sock)
    await server.start()
    try:
        assert await http_get(server.port, "/healthz", 2.0) == (200, b"ok\n")
        assert (await http_get(server.port, "/nope", 2.0))[0] == 404
    finally:
        await server.stop()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"hello\r\n\r\n")
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        with pytest.raises(ValueError, match="not an HTTP answer"):
            await http_get(other.sockets[0].getsockname()[1], "/healthz", 2.0)
    finally:
        other.close()


async def test_the_subprocess_launcher_hands_the_worker_its_socket_and_the_lifeline() -> None:
    # The worker reports the port of the socket it got, then waits for its lifeline to end.
    script = (
        "import os, socket, sys\n"
        "sock = socket.socket(fileno=int(sys.argv[1]))\n"
        "print(sock.getsockname()[1], flush=True)\n"
        "while os.read(int(sys.argv[2]), 1): pass\n"
        "print('lifeline ended', flush=True)\n"
    )
    outputs: list[asyncio.subprocess.Process] = []

    def command(index: int, health_fd: int, lifeline_fd: int) -> list[str]:
        return [sys.executable, "-c", script, str(health_fd), str(lifeline_fd)]

    launcher = SubprocessLauncher(command)
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        real_exec = asyncio.create_subprocess_exec

        async def capturing(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
            process = await real_exec(*args, **kwargs, stdout=asyncio.subprocess.PIPE)
            outputs.append(process)
            return process

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(asyncio, "create_subprocess_exec", capturing)
            process = await launcher(0, sock)
        [child] = outputs
        assert child.stdout is not None
        assert int(await asyncio.wait_for(child.stdout.readline(), 10)) == sock.getsockname()[1]
        launcher.close()  # the supervisor is gone
        assert await asyncio.wait_for(child.stdout.readline(), 10) == b"lifeline ended\n"
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        launcher.close()
        sock.close()


async def test_watch_lifeline_calls_back_when_the_write_end_closes() -> None:
    read, write = os.pipe()
    gone = asyncio.Event()
    loop = asyncio.get_running_loop()
    watch_lifeline(read, lambda: loop.call_soon_threadsafe(gone.set))
    await asyncio.sleep(0.05)
    assert not gone.is_set()
    os.close(write)
    await asyncio.wait_for(gone.wait(), 5)
    os.close(read)


# --------------------------------------------------------------------------------- the CLI


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ARVO_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr("service.runtime.logging.configure_logging", lambda **kwargs: None)
    return CliRunner()


@pytest.fixture
def fake_supervisor(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {"failure": None}

    async def run(self: Supervisor) -> str | None:
        seen["supervisor"] = self
        seen["launch"] = self._launch
        failure: str | None = seen["failure"]
        return failure

    async def run_service(settings: ServiceSettings, **kwargs: Any) -> None:
        seen["service"] = (settings, kwargs)

    monkeypatch.setattr(Supervisor, "run", run)
    monkeypatch.setattr("service.runtime.app.run_service", run_service)
    return seen


def test_run_with_workers_supervises_that_many_worker_processes(
    runner: CliRunner, fake_supervisor: dict[str, Any]
) -> None:
    result = runner.invoke(
        cli.app,
        ["run", "--workers", "3", "--app", "service.examples:bench_app"],
        env={"ARVO_DRAIN_TIMEOUT_S": "7", "ARVO_HEALTH_PORT": "9123"},
    )
    assert result.exit_code == 0, result.output
    assert "service" not in fake_supervisor
    supervisor: Supervisor = fake_supervisor["supervisor"]
    assert supervisor.workers == 3
    assert supervisor._stop_after_s == 17.0
    assert supervisor.health is not None
    assert supervisor.health.port == 9123
    command = fake_supervisor["launch"]._command(2, 11, 12)
    assert command == [
        sys.executable,
        "-P",
        "-m",
        "service.cli",
        "run",
        "--app",
        "service.examples:bench_app",
        "--worker-index",
        "2",
        "--health-fd",
        "11",
        "--lifeline-fd",
        "12",
    ]


def test_arvo_workers_sets_the_worker_count_and_1_runs_the_service_in_this_process(
    runner: CliRunner, fake_supervisor: dict[str, Any]
) -> None:
    assert runner.invoke(cli.app, ["run"], env={"ARVO_WORKERS": "2"}).exit_code == 0
    assert fake_supervisor["supervisor"].workers == 2
    del fake_supervisor["supervisor"]
    assert runner.invoke(cli.app, ["run"], env={"ARVO_WORKERS": "1"}).exit_code == 0
    assert "supervisor" not in fake_supervisor
    settings, kwargs = fake_supervisor["service"]
    assert settings.workers == 1
    assert kwargs == {}


def test_run_with_workers_exits_1_with_one_line_when_the_supervisor_fails(
    runner: CliRunner, fake_supervisor: dict[str, Any]
) -> None:
    fake_supervisor["failure"] = (
        "worker 1 exited 6 times in a row within 60 s of starting: a crash loop, gave up"
    )
    result = runner.invoke(cli.app, ["run", "--workers", "2"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"arvo: {fake_supervisor['failure']}"


def test_run_refuses_a_worker_count_out_of_range(runner: CliRunner, fake_supervisor: dict[str, Any]) -> None:
    assert runner.invoke(cli.app, ["run", "--workers", "0"]).exit_code == 2
    result = runner.invoke(cli.app, ["run"], env={"ARVO_WORKERS": "0"})
    assert result.exit_code == 1
    assert "ARVO_WORKERS" in result.stderr


def test_a_worker_serves_its_health_on_the_handed_socket_and_ignores_arvo_workers(
    runner: CliRunner, fake_supervisor: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    watched: list[int] = []
    # The real watcher would SIGTERM this test process once the pipe closes.
    monkeypatch.setattr("service.runtime.supervisor.watch_lifeline", lambda fd, on_gone: watched.append(fd))
    sock = socket.create_server(("127.0.0.1", 0))
    read, write = os.pipe()
    try:
        result = runner.invoke(
            cli.app,
            ["run", "--worker-index", "1", "--health-fd", str(sock.fileno()), "--lifeline-fd", str(read)],
            env={"ARVO_WORKERS": "4"},
        )
        assert result.exit_code == 0, result.output
        assert "supervisor" not in fake_supervisor
        _, kwargs = fake_supervisor["service"]
        handed: socket.socket = kwargs["health_socket"]
        assert handed.getsockname() == sock.getsockname()
        handed.detach()  # the test's `sock` owns the descriptor
        assert watched == [read]
    finally:
        structlog.contextvars.clear_contextvars()
        os.close(write)
        os.close(read)
        sock.close()


def test_worker_options_come_together(runner: CliRunner, fake_supervisor: dict[str, Any]) -> None:
    result = runner.invoke(cli.app, ["run", "--worker-index", "0"])
    structlog.contextvars.clear_contextvars()
    assert result.exit_code == 2
    assert "--health-fd" in result.stderr


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
        return port
