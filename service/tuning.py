"""Process-level tuning applied by every entry point (``arvo …``, the benchmarks).

Two knobs: glibc's allocator thresholds (:func:`tune_allocator`, at process start) and the cyclic
garbage collector (:func:`tune_gc`, once the service is built and started); and one idle-time
duty: :class:`IdleMemoryTrimmer` gives the heap kept by those thresholds back to the kernel once the
service has been idle for a while after work (an overload's peak is not kept for good).

glibc returns the top of the heap to the kernel as soon as more than 128 KiB is free there, and
serves allocations above 128 KiB with fresh ``mmap`` calls. zlib's deflate state is ~256 KiB and is
allocated and freed for every orchestration subject and ARVO_MANAGED id created, so by default each
one pays page faults: measured here, ``zlib.compressobj(6)`` costs ~55 µs by default and ~1.2 µs
with the thresholds below. Raising both keeps that memory in the process (bounded: a few MiB).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
import time
from collections.abc import Callable

import structlog

__all__ = ["GC_THRESHOLDS", "IdleMemoryTrimmer", "resident_bytes", "trim_memory", "tune_allocator", "tune_gc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
_MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
_tuned = False

GC_THRESHOLDS = (20_000, 20, 50)
"""Collector thresholds of a running service (CPython's default: 700, 10, 10).

A consumed record allocates a few thousand objects that nearly all die by reference counting; with
the default 700 the young generation is scanned every few records and the full collection — which
walks every live object, the loaded app's contracts and schemas included — runs every few seconds
under load (measured: ~75 ms each). Objects alive at start are frozen out of collection
(``gc.freeze``) and the young generation is scanned every 20,000 allocations: in back-to-back runs
of the Kafka-path bench the service spent about a tenth less CPU per consumed event (noisy runs;
``python -m tests.benchmarks kafka``, docs/performance.md). Reference cycles are still collected, a
little later.
"""


def tune_allocator() -> bool:
    """Raise glibc's trim and mmap thresholds once; ``False`` where there is no glibc ``mallopt``."""
    global _tuned  # noqa: PLW0603 - once per process
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )
    return _tuned


def tune_gc() -> None:
    """Freeze what is alive now out of cyclic collection and apply :data:`GC_THRESHOLDS`.

    Call once the service's handlers, contracts and clients are built: they live as long as the
    process, and a frozen object is never scanned again. Safe to call again: a second call also
    freezes what was created in between.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


_log = structlog.get_logger("arvo.tuning")
_libc: ctypes.CDLL | None = None


def trim_memory() -> bool:
    """Collect garbage and return the free heap to the kernel (glibc ``malloc_trim(0)``).

    Returns:
        Whether memory was given back (``False`` without glibc, or when nothing could be).

    """
    global _libc  # noqa: PLW0603 - loaded once per process
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        malloc_trim = _libc.malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))


def resident_bytes() -> int | None:
    """The resident set size of the process in bytes (``/proc/self/statm``), ``None`` where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class IdleMemoryTrimmer:
    """Once the service has been idle for ``idle_s`` after doing work, trim its memory once.

    The raised allocator thresholds (:func:`tune_allocator`) keep freed heap in the process, so after
    an overload the process would keep its peak. Every ``check_s`` this compares ``activity()`` (a
    counter that grows with work, e.g. records finished) with its last value; when it has not moved
    for ``idle_s`` since it last did, :func:`trim_memory` runs once (and again only after more work).
    Nothing runs on the hot path: a busy service never trims.

    Args:
        activity: A counter of work done.
        idle_s: How long without work before trimming.
        check_s: How often the counter is read.
        trim: The trim (tests).
        clock: Monotonic seconds (tests).

    """

    def __init__(
        self,
        *,
        activity: Callable[[], int],
        idle_s: float,
        check_s: float = 5.0,
        trim: Callable[[], bool] = trim_memory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._activity = activity
        self._idle_s = idle_s
        self._check_s = check_s
        self._trim = trim
        self._clock = clock
        self._last_count = activity()
        self._last_change = clock()
        self._trimmed = True  # nothing to give back before any work
        self.trims = 0
        """How many times memory was trimmed."""

    def check(self) -> bool:
        """Read the counter; trim when idle long enough after work. Returns whether it trimmed."""
        count, now = self._activity(), self._clock()
        if count != self._last_count:
            self._last_count, self._last_change, self._trimmed = count, now, False
            return False
        if self._trimmed or now - self._last_change < self._idle_s:
            return False
        self._trimmed = True
        before = resident_bytes()
        gave_back = self._trim()
        self.trims += 1
        after = resident_bytes()
        _log.info(
            "idle: memory trimmed",
            idle_s=round(now - self._last_change, 1),
            rss_before_mb=None if before is None else round(before / 2**20, 1),
            rss_after_mb=None if after is None else round(after / 2**20, 1),
            returned=gave_back,
        )
        return True

    async def run(self) -> None:
        """Check every ``check_s`` (until cancelled)."""
        while True:
            await asyncio.sleep(self._check_s)
            self.check()
