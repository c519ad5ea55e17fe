"""Process-level tuning applied by every entry point (``arvo …``, the benchmarks).

glibc returns the top of the heap to the kernel as soon as more than 128 KiB is free there, and
serves allocations above 128 KiB with fresh ``mmap`` calls. zlib's deflate state is ~256 KiB and is
allocated and freed for every orchestration subject and ARVO_MANAGED id created, so by default each
one pays page faults: measured here, ``zlib.compressobj(6)`` costs ~55 µs by default and ~1.2 µs
with the thresholds below. Raising both keeps that memory in the process (bounded: a few MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
_MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
_tuned = False


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
