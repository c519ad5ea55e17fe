"""run_until_signal without sending signals: which handlers it installs while it runs (and removes),
and a stop by someone else at the same time as the stop event.
"""

from __future__ import annotations

import asyncio
import signal

from service.runtime.consumer import run_until_signal
from tests.unit.test_consumer_loop_unit import running, wait_until


async def test_run_until_signal_handles_the_signals_it_is_given_and_no_others_while_it_runs() -> None:
    sigterm = signal.getsignal(signal.SIGTERM)
    async with running(partitions=1) as rig:
        await rig.loop.stop()  # run_until_signal starts it again
        stop = asyncio.Event()
        runner = asyncio.create_task(run_until_signal(rig.loop, signals=[signal.SIGUSR2], stop_event=stop))
        await wait_until(lambda: rig.loop.is_running)
        assert not runner.done()
        assert signal.getsignal(signal.SIGUSR2) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        assert signal.getsignal(signal.SIGTERM) == sigterm
        stop.set()
        assert await asyncio.wait_for(runner, 1) is None
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


async def test_run_until_signal_returns_none_when_the_loop_is_being_stopped_by_someone_else_too() -> None:
    async with running(partitions=1) as rig:
        await rig.loop.stop()
        stop = asyncio.Event()
        runner = asyncio.create_task(run_until_signal(rig.loop, signals=[], stop_event=stop))
        await wait_until(lambda: rig.loop.is_running)
        stopping = asyncio.create_task(rig.loop.stop())  # e.g. the application's own shutdown
        stop.set()
        assert await asyncio.wait_for(runner, 1) is None
        await asyncio.wait_for(stopping, 1)
        assert not rig.loop.is_running
