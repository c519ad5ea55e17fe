"""Probing a dependency that is down: one probe per dependency even when an outage ends and starts again
within one probe interval, and the probe task named after its dependency.
"""

from __future__ import annotations

import asyncio

from service.runtime.consumer import LoopHooks
from service.runtime.consumer.dependencies import DependencyMonitor
from tests.unit.test_consumer_loop_unit import wait_until


async def test_an_outage_that_ends_and_starts_again_within_a_probe_interval_keeps_one_probe() -> None:
    calls: list[str] = []
    gate = asyncio.Event()

    async def probe() -> bool:
        calls.append("redis")
        await gate.wait()
        return True

    monitor = DependencyMonitor(hooks=LoopHooks(), probe_interval_s=0.01)
    monitor.add_probe("redis", probe)
    monitor.report_down("redis", OSError("refused"))
    monitor.report_up("redis")  # a record got through while the probe waited for its interval
    monitor.report_down("redis", OSError("refused again"))
    await wait_until(lambda: calls == ["redis"])
    await asyncio.sleep(0.05)
    assert calls == ["redis"]  # the probe still running serves the new outage: no second one
    gate.set()
    async with asyncio.timeout(1):
        await monitor.up_event("redis").wait()
    await monitor.close()


async def test_the_probe_task_is_named_after_its_dependency() -> None:
    gate = asyncio.Event()

    async def probe() -> bool:
        await gate.wait()
        return True

    monitor = DependencyMonitor(hooks=LoopHooks(), probe_interval_s=0.01)
    monitor.add_probe("redis", probe)
    before = asyncio.all_tasks()
    monitor.report_down("redis", OSError("refused"))
    assert [task.get_name() for task in asyncio.all_tasks() - before] == ["arvo-probe-redis"]
    await monitor.close()
