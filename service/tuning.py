"""Process-level tuning applied by every entry point (``arvo …``, the benchmarks).

Two knobs: glibc's allocator thresholds (:func:`tune_allocator`, at process start) and the cyclic
garbage collector (:func:`tune_gc`, once the service is built and started).

glibc returns the top of the heap to the kernel as soon as more than 128 KiB is free there, and
serves allocations above 128 KiB with fresh ``mmap`` calls. zlib's deflate state is ~256 KiB and is
allocated and freed for every orchestration subject and ARVO_MANAGED id created, so by default each
one pays page faults: measured here, ``zlib.compressobj(6)`` costs ~55 µs by default and ~1.2 µs
with the thresholds below. Raising both keeps that memory in the process (bounded: a few MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

__all__ = ["GC_THRESHOLDS", "tune_allocator", "tune_gc"]

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
