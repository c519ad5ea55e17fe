"""The shared handler-timeout watch: one timer for every running execution, asyncio.timeout's semantics."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from service.runtime.consumer.deadlines import ExecutionDeadlines, resolution_for


async def _watched(deadlines: ExecutionDeadlines, work: asyncio.Future[object] | float) -> str:
    """Run ``work`` (a sleep of that many seconds, or a future) under ``deadlines``; what happened."""
    task = asyncio.current_task()
    assert task is not None
    deadlines.enter(task)  # type: ignore[arg-type]
    try:
        if isinstance(work, float):
            await asyncio.sleep(work)
        else:
            await work
    except asyncio.CancelledError:
        if deadlines.leave(task, cancelled=True):  # type: ignore[arg-type]
            return "timed out"
        raise
    deadlines.leave(task, cancelled=False)  # type: ignore[arg-type]
    return "finished"


def test_resolution_is_50_ms_or_a_quarter_of_a_shorter_timeout() -> None:
    assert resolution_for(20.0) == 0.05
    assert resolution_for(0.1) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="positive"):
        ExecutionDeadlines(0)


async def test_an_execution_past_its_deadline_times_out_within_the_resolution() -> None:
    deadlines = ExecutionDeadlines(0.08)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _watched(deadlines, 5.0) == "timed out"
    took = loop.time() - started
    assert 0.08 <= took < 0.08 + resolution_for(0.08) + 0.1
    assert deadlines.running == 0
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the deadline's cancel request is withdrawn


async def test_executions_in_time_finish_and_one_overdue_does_not_touch_the_others() -> None:
    deadlines = ExecutionDeadlines(0.1)
    results = await asyncio.gather(
        _watched(deadlines, 0.01), _watched(deadlines, 3.0), _watched(deadlines, 0.02)
    )
    assert results == ["finished", "timed out", "finished"]
    assert deadlines.running == 0


async def test_a_cancellation_from_outside_propagates_and_is_not_a_timeout() -> None:
    deadlines = ExecutionDeadlines(10.0)
    task = asyncio.create_task(_watched(deadlines, 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.running == 0


async def test_an_outside_cancel_arriving_with_the_deadline_still_propagates() -> None:
    deadlines = ExecutionDeadlines(10.0)
    target = asyncio.create_task(_watched(deadlines, 5.0))
    await asyncio.sleep(0)  # the target is watched and waiting
    deadlines._running[target] = 0.0  # type: ignore[index]  # overdue
    deadlines._check()  # the deadline cancels it ...
    target.cancel()  # ... and before it resumes, its lane is cancelled too (drain timeout)
    with pytest.raises(asyncio.CancelledError):
        await target
    assert deadlines.running == 0


async def test_the_timer_runs_only_while_executions_run() -> None:
    deadlines = ExecutionDeadlines(1.0)
    assert deadlines._timer is None
    waiting = asyncio.create_task(_watched(deadlines, 0.02))
    await asyncio.sleep(0)
    assert deadlines._timer is not None
    assert await waiting == "finished"
    await asyncio.sleep(resolution_for(1.0) * 2 + 0.01)
    assert deadlines._timer is None  # nothing left to watch: no timer callbacks on an idle consumer


async def test_a_handler_that_swallows_the_deadline_and_returns_is_not_a_timeout() -> None:
    deadlines = ExecutionDeadlines(0.02)

    async def stubborn() -> str:
        current = asyncio.current_task()
        assert current is not None
        deadlines.enter(current)  # type: ignore[arg-type]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(5)
        timed_out = deadlines.leave(current, cancelled=False)  # type: ignore[arg-type]
        return f"timed_out={timed_out} cancelling={current.cancelling()}"

    assert await asyncio.create_task(stubborn()) == "timed_out=False cancelling=0"
