"""The idle-time memory trim: once after work and idleness, never while busy, again only after work."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from service.runtime.settings import load_settings
from service.tuning import IdleMemoryTrimmer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_it_trims_once_after_work_and_idleness_and_again_only_after_more_work() -> None:
    clock, work, trims = Clock(), [0], []
    trimmer = IdleMemoryTrimmer(
        activity=lambda: work[0], idle_s=30, trim=lambda: trims.append(clock.now) or True, clock=clock
    )
    clock.now = 100
    assert not trimmer.check()  # no work yet: nothing to give back
    work[0] = 5
    clock.now = 101
    assert not trimmer.check()  # busy
    clock.now = 130
    assert not trimmer.check()  # idle for 29 s
    clock.now = 131
    assert trimmer.check()  # idle for 30 s after work
    clock.now = 500
    assert not trimmer.check()  # once
    work[0] = 6
    clock.now = 501
    assert not trimmer.check()
    clock.now = 531
    assert trimmer.check()
    assert trims == [131, 531]
    assert trimmer.trims == 2


def test_a_busy_service_never_trims() -> None:
    clock, work, trims = Clock(), [0], []
    trimmer = IdleMemoryTrimmer(
        activity=lambda: work[0], idle_s=30, trim=lambda: trims.append(1) or True, clock=clock
    )
    for second in range(0, 600, 5):
        clock.now = second
        work[0] += 1
        trimmer.check()
    assert trims == []


_HEAP_PROBE = """
from service.tuning import resident_bytes, trim_memory, tune_allocator
tune_allocator()  # the thresholds that keep freed heap in the process
before = resident_bytes()
# ~40 MiB in small heap blocks: below the raised trim threshold, so freeing them keeps the heap.
blocks = [bytearray(4096) for _ in range(10_000)]
peak = resident_bytes()
del blocks
kept = resident_bytes()
trimmed = trim_memory()
after = resident_bytes()
print(before, peak, kept, after, int(trimmed))
"""


def test_trimming_gives_freed_heap_back() -> None:
    # In a fresh interpreter: the test process's own heap (what earlier tests freed) would blur it.
    probe = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, check=True)
    before, peak, kept, after, trimmed = (int(value) for value in probe.stdout.split())
    assert trimmed == 1
    assert kept - before > (peak - before) // 2, ("kept after free", before, peak, kept)
    assert kept - after > (peak - before) // 2, ("given back by the trim", before, peak, kept, after)


async def test_the_run_loop_checks_periodically() -> None:
    checks = []
    trimmer = IdleMemoryTrimmer(activity=lambda: len(checks), idle_s=1, check_s=0.01)
    trimmer.check = lambda: checks.append(1) or False  # type: ignore[method-assign]
    task = asyncio.create_task(trimmer.run())
    await asyncio.sleep(0.05)
    task.cancel()
    assert len(checks) >= 2


def test_the_setting_defaults_to_30_s_and_0_turns_it_off() -> None:
    assert load_settings(env_file=None).idle_trim_s == 30.0
    assert load_settings(env_file=None, idle_trim_s=0).idle_trim_s == 0.0
