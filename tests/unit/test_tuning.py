"""Process tuning: the allocator thresholds and the garbage collector settings of a running service."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from service.tuning import GC_THRESHOLDS, tune_allocator, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    long_lived = [object() for _ in range(10)]  # stands for the app built before the service runs
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert not any(item is long_lived for item in gc.get_objects())  # frozen: no longer tracked
    assert GC_THRESHOLDS[0] > 700  # scanned less often than CPython's default


@pytest.mark.usefixtures("restored_gc")
def test_cycles_created_after_tuning_are_still_collected() -> None:
    tune_gc()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tune_allocator_is_idempotent_on_glibc() -> None:
    assert tune_allocator() == tune_allocator()
