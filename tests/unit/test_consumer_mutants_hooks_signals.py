"""Loop hooks and signals: every callback reaches every hook with its arguments; a signal drains the loop."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition

from service.runtime.consumer import CombinedHooks, LoopHooks, LoopStats, run_until_signal, signal_handlers
from tests.unit.test_consumer_loop_unit import echo, running, wait_until

TP = TopicPartition("t", 0)

CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("on_consumed", ("topic", "type", "processed", 0.25)),
    ("on_produced", ("topic", "type")),
    ("on_dead_letter", ("topic", "contract")),
    ("on_retry", ("topic", "TimeoutError")),
    ("on_publish_retry", ("KafkaConnectionError",)),
    ("on_assignment", (frozenset({TP}),)),
    ("on_dependency", ("redis", False)),
]


class Recording(LoopHooks):
    def __init__(self, name: str, log: list[tuple[str, str, tuple[Any, ...]]]) -> None:
        self.name = name
        self.log = log

    def __getattribute__(self, attr: str) -> Any:
        if attr.startswith("on_"):
            return lambda *args: self.log.append((object.__getattribute__(self, "name"), attr, args))
        return object.__getattribute__(self, attr)


class Broken(LoopHooks):
    def __getattribute__(self, attr: str) -> Any:
        if attr.startswith("on_"):

            def fail(*args: Any) -> None:
                raise RuntimeError(f"{attr} broke")

            return fail
        return object.__getattribute__(self, attr)


@pytest.mark.parametrize(("method", "args"), CALLS)
def test_combined_hooks_forward_each_callback_with_its_arguments_to_every_hook_in_order(
    method: str, args: tuple[Any, ...]
) -> None:
    log: list[tuple[str, str, tuple[Any, ...]]] = []
    combined = CombinedHooks(Recording("first", log), Broken(), Recording("second", log))
    with structlog.testing.capture_logs() as logs:
        getattr(combined, method)(*args)
    assert log == [("first", method, args), ("second", method, args)]
    [line] = logs
    assert line["event"] == "loop hook failed"
    assert line["hook"] == method
    assert line["hooks"] == "Broken"
    assert line["log_level"] == "error"


@pytest.mark.parametrize(("method", "args"), CALLS)
def test_the_base_hooks_do_nothing(method: str, args: tuple[Any, ...]) -> None:
    assert getattr(LoopHooks(), method)(*args) is None


def test_loop_stats_start_empty() -> None:
    stats = LoopStats()
    assert (stats.publish_retries, stats.parked, stats.commits, stats.rebalances) == (0, 0, 0, 0)
    assert not stats.consumed
    assert not stats.in_flight
    assert not stats.paused
    assert not stats.dependency_waits
    assert stats.consumed is not LoopStats().consumed


async def test_a_signal_sets_the_stop_event_while_handlers_are_installed_and_not_after() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with signal_handlers(stop, [signal.SIGUSR1]):
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(stop.wait(), 1)
    assert not loop.remove_signal_handler(signal.SIGUSR1)  # removed on the way out


async def test_the_default_signals_are_sigterm_and_sigint() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with signal_handlers(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 1)
        stop.clear()
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(stop.wait(), 1)
    assert not loop.remove_signal_handler(signal.SIGTERM)
    assert not loop.remove_signal_handler(signal.SIGINT)


async def test_run_until_signal_drains_commits_and_returns_none_on_the_stop_event() -> None:
    async with running(partitions=1) as rig:
        await rig.loop.stop()  # run_until_signal starts it again
        stop = asyncio.Event()
        runner = asyncio.create_task(run_until_signal(rig.loop, signals=[signal.SIGUSR2], stop_event=stop))
        await wait_until(lambda: rig.loop.is_running)
        await rig.loop.wait_assigned(timeout_s=1)
        rig.produce(echo("s"))
        await wait_until(lambda: rig.consumed() == 1)
        stop.set()
        assert await asyncio.wait_for(runner, 2) is None
        assert not rig.loop.is_running
        assert rig.committed() == 1


async def test_run_until_signal_stops_on_a_signal() -> None:
    async with running(partitions=1) as rig:
        await rig.loop.stop()
        runner = asyncio.create_task(run_until_signal(rig.loop, signals=[signal.SIGUSR2]))
        await wait_until(lambda: rig.loop.is_running)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert await asyncio.wait_for(runner, 2) is None
        assert not rig.loop.is_running


async def test_run_until_signal_returns_the_fatal_error_of_the_fetch_task_and_logs_it() -> None:
    async with running(partitions=1) as rig:
        await rig.loop.stop()
        boom = RuntimeError("fetch died")

        async def fail(**_: Any) -> Any:
            raise boom

        with structlog.testing.capture_logs() as logs:
            runner = asyncio.create_task(run_until_signal(rig.loop, signals=[signal.SIGUSR2]))
            await wait_until(lambda: rig.loop._consumer is not None and rig.loop._started)
            consumer = rig.loop._consumer
            consumer.getmany = fail
            assert await asyncio.wait_for(runner, 2) is boom
        # The failure did not skip the shutdown: the group was left and the dependencies closed.
        assert consumer.closed
        assert "consumer stopped" in [entry["event"] for entry in logs]
        [line] = [entry for entry in logs if entry["event"] == "consumer loop failed"]
        assert line["log_level"] == "error"
        assert line["error"] == repr(boom)
        assert not rig.loop.is_running
