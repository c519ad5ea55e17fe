"""The dependency monitor as ``/readyz`` and the logs show it: what is down, since when, why; its probes."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from service.runtime.consumer import LoopHooks
from service.runtime.consumer.dependencies import DependencyMonitor, Outage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder(LoopHooks):
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []

    def on_dependency(self, dependency: str, available: bool) -> None:
        self.changes.append((dependency, available))


class BrokenHooks(LoopHooks):
    def on_dependency(self, dependency: str, available: bool) -> None:
        raise RuntimeError("metrics broke")


def test_an_outage_describes_how_long_and_why() -> None:
    outage = Outage(dependency="redis", since=10.0, reason="ConnectionError: refused")
    assert outage.describe(22.34) == "unavailable for 12.3 s: ConnectionError: refused"


def test_an_outage_records_when_and_why_and_the_log_lines_say_so() -> None:
    clock = Clock()
    hooks = Recorder()
    monitor = DependencyMonitor(hooks=hooks, clock=clock)
    assert monitor.is_up("redis")
    assert monitor.outages == {}
    with structlog.testing.capture_logs() as logs:
        monitor.report_down("redis", ConnectionError("x" * 500))
        clock.now += 5
        monitor.report_down("redis", OSError("later"))  # already down: the first report stands
        assert not monitor.is_up("redis")
        assert monitor.is_up("kafka")
        [outage] = monitor.outages.values()
        assert outage == Outage("redis", 100.0, ("ConnectionError: " + "x" * 500)[:300])
        monitor.outages.clear()  # a copy: the monitor's own state is untouched
        assert not monitor.is_up("redis")
        clock.now += 2.3456
        monitor.report_up("redis")
        monitor.report_up("kafka")  # was not down: nothing to report
    assert hooks.changes == [("redis", False), ("redis", True)]
    down, up = logs
    assert down == {
        "event": "dependency unavailable; records wait for it (no retry budget spent, nothing dead-lettered)",
        "log_level": "warning",
        "dependency": "redis",
        "error": outage.reason,
    }
    assert up == {
        "event": "dependency available again; waiting records resume",
        "log_level": "warning",
        "dependency": "redis",
        "down_for_s": 7.346,
    }


def test_the_up_event_of_a_dependency_already_down_starts_cleared() -> None:
    monitor = DependencyMonitor(hooks=LoopHooks())
    monitor.report_down("redis", OSError("down"))
    event = monitor.up_event("redis")
    assert not event.is_set()
    assert monitor.up_event("redis") is event
    monitor.report_up("redis")
    assert event.is_set()


def test_a_failing_hook_is_logged_and_the_state_still_changes() -> None:
    monitor = DependencyMonitor(hooks=BrokenHooks())
    with structlog.testing.capture_logs() as logs:
        monitor.report_down("redis", OSError("down"))
        monitor.report_up("redis")
    failures = [entry for entry in logs if entry["event"] == "loop hook failed"]
    assert [(entry["hook"], entry["log_level"]) for entry in failures] == [("on_dependency", "error")] * 2
    assert monitor.is_up("redis")


async def test_a_probe_that_raises_counts_as_still_down_and_probing_goes_on() -> None:
    calls: list[int] = []

    async def probe() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("still refused")
        return True

    monitor = DependencyMonitor(hooks=LoopHooks(), probe_interval_s=0.01)
    monitor.add_probe("redis", probe)
    monitor.report_down("redis", OSError("refused"))
    async with asyncio.timeout(2):
        await monitor.up_event("redis").wait()
    assert len(calls) == 3
    await monitor.close()


async def test_the_probe_waits_its_interval_before_each_try() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def probe() -> bool:
        calls.append(loop.time())
        return len(calls) >= 2

    monitor = DependencyMonitor(hooks=LoopHooks(), probe_interval_s=0.05)
    monitor.add_probe("redis", probe)
    started = loop.time()
    monitor.report_down("redis", OSError("refused"))
    async with asyncio.timeout(2):
        await monitor.up_event("redis").wait()
    assert calls[0] - started >= 0.045
    assert calls[1] - calls[0] >= 0.045
    await monitor.close()


async def test_only_the_down_dependency_is_probed_and_one_probe_runs_per_outage() -> None:
    probed: list[str] = []
    gate = asyncio.Event()

    def probe_of(name: str) -> Any:
        async def probe() -> bool:
            probed.append(name)
            await gate.wait()
            return True

        return probe

    monitor = DependencyMonitor(hooks=LoopHooks(), probe_interval_s=0.001)
    monitor.add_probe("redis", probe_of("redis"))
    monitor.add_probe("kafka", probe_of("kafka"))
    monitor.report_down("redis", OSError("refused"))
    await asyncio.sleep(0.02)
    assert probed == ["redis"]
    gate.set()
    async with asyncio.timeout(2):
        await monitor.up_event("redis").wait()
    assert probed == ["redis"]
    # A new outage starts a new probe (the first one ended with the outage).
    gate.clear()
    monitor.report_down("redis", OSError("refused again"))
    await asyncio.sleep(0.02)
    assert probed == ["redis", "redis"]
    await monitor.close()
    assert not monitor.is_up("redis")  # closing stops probing, it does not pretend the outage ended


async def test_close_stops_the_probes_and_can_be_called_again() -> None:
    calls: list[int] = []

    async def probe() -> bool:
        calls.append(1)
        return False

    monitor = DependencyMonitor(hooks=LoopHooks(), probe_interval_s=0.001)
    monitor.add_probe("redis", probe)
    monitor.report_down("redis", OSError("refused"))
    async with asyncio.timeout(2):
        while len(calls) < 2:
            await asyncio.sleep(0.001)
    await monitor.close()
    probed = len(calls)
    await asyncio.sleep(0.02)
    assert len(calls) == probed
    await monitor.close()
