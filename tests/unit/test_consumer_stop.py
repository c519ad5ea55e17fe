"""Stopping the consumer loop when a task swallows its cancellation or a rebalance ends mid-stop.

Found by ``arvo run --workers 2`` stopping both workers at once (tests/benchmarks/bench_workers.py):
one worker's stop waited forever for its timer scheduler, whose cancellation redis-py's asyncio
client had swallowed (measured: ~4 % of cancellations during a command), and a rebalance that
completed during the stop (the other worker had left) started lanes nobody would stop.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from service.runtime.consumer import loop as loop_module
from tests.unit.test_consumer_loop_unit import ECHO, running


async def _swallows_first_cancellation(cancelled: list[int]) -> None:
    """Like redis-py at a bad moment: the first CancelledError is caught and the task carries on."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append(1)
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(2)
            raise


async def test_cancel_and_wait_cancels_again_a_task_that_swallowed_its_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_module, "_RECANCEL_AFTER_S", 0.02)
    cancelled: list[int] = []
    stubborn = asyncio.create_task(_swallows_first_cancellation(cancelled), name="stubborn")
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await asyncio.wait_for(loop_module._cancel_and_wait([stubborn, polite]), timeout=2)
    assert stubborn.cancelled()
    assert polite.cancelled()
    assert cancelled == [1, 2]
    [line] = [
        line for line in logs if line["event"] == "a task ignored its cancellation; cancelling it again"
    ]
    assert line["tasks"] == ["stubborn"]
    assert line["log_level"] == "warning"


async def test_cancel_and_wait_returns_at_once_for_tasks_already_done() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    with capture_logs() as logs:
        await asyncio.wait_for(loop_module._cancel_and_wait([done]), timeout=0.5)
    assert logs == []


async def test_stop_ends_although_the_timer_task_swallowed_its_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_module, "_RECANCEL_AFTER_S", 0.05)
    cancelled: list[int] = []
    async with running(partitions=1) as rig:
        rig.loop._timer_task = asyncio.create_task(_swallows_first_cancellation(cancelled))
        await asyncio.sleep(0)
        started = time.monotonic()
        await asyncio.wait_for(rig.loop.stop(), timeout=5)
        assert time.monotonic() - started < 2.0
        assert not rig.loop.is_running
    assert cancelled == [1, 2]


async def test_partitions_assigned_while_stopping_get_no_lane() -> None:
    late = TopicPartition(ECHO, 1)
    async with running(partitions=2, assign={TopicPartition(ECHO, 0)}) as rig:
        rebalances = rig.loop.stats.rebalances
        rig.loop._stopping = True  # the stop has drained; a rebalance completes now
        try:
            with capture_logs() as logs:
                rig.loop._on_assigned(frozenset({late}))
        finally:
            rig.loop._stopping = False
        assert late not in rig.loop._lanes
        assert rig.loop.stats.rebalances == rebalances + 1
        [line] = [
            line for line in logs if line["event"] == "partitions assigned while stopping: not consumed"
        ]
        assert line["partitions"] == [f"{ECHO}/1"]
