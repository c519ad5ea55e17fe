from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.arvo.errors import (
    ConfigViolation,
    ContractViolation,
    ExecutionViolation,
    TransactionViolation,
    TransactionViolationCause,
)
from service.runtime.consumer import OffsetTracker, classify_error


def test_nothing_is_committable_before_the_first_completion() -> None:
    tracker = OffsetTracker()
    tracker.track(10)
    assert tracker.committable is None
    assert not tracker.needs_commit()


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7, 8):
        tracker.track(offset)
    tracker.done(7)
    assert tracker.committable is None
    tracker.done(5)
    assert tracker.committable == 6
    tracker.done(8)
    assert tracker.committable == 6
    tracker.done(6)
    assert tracker.committable == 9
    assert tracker.pending == 0


def test_gaps_in_offsets_do_not_block_commits() -> None:
    tracker = OffsetTracker()
    for offset in (3, 7, 20):  # compacted topic or transaction markers
        tracker.track(offset)
    tracker.done(3)
    tracker.done(7)
    assert tracker.committable == 8
    tracker.done(20)
    assert tracker.committable == 21


def test_needs_commit_until_marked_committed() -> None:
    tracker = OffsetTracker()
    tracker.track(0)
    tracker.done(0)
    assert tracker.needs_commit()
    tracker.mark_committed(1)
    assert not tracker.needs_commit()
    tracker.track(1)
    tracker.done(1)
    assert tracker.needs_commit()


def test_tracking_out_of_order_is_rejected() -> None:
    tracker = OffsetTracker()
    tracker.track(4)
    with pytest.raises(ValueError, match="out of order"):
        tracker.track(4)


def test_done_for_unknown_or_repeated_offsets_is_ignored() -> None:
    tracker = OffsetTracker()
    tracker.track(1)
    tracker.done(99)
    tracker.done(1)
    tracker.done(1)
    assert tracker.committable == 2


def test_completion_of_an_offset_not_yet_tracked_is_ignored() -> None:
    # A completion reported before the offset is tracked (a record of the next fetch) must neither
    # commit anything nor count once the offset is tracked: it is committable only after its own done().
    tracker = OffsetTracker()
    tracker.track(4)
    tracker.done(5)
    assert tracker.committable is None
    assert not tracker.needs_commit()
    tracker.track(5)
    tracker.done(4)
    assert tracker.committable == 5
    assert tracker.pending == 1
    tracker.done(5)
    assert tracker.committable == 6
    assert tracker.pending == 0


def test_a_long_running_tracker_does_not_grow_with_the_offsets_it_processed() -> None:
    # A partition's tracker lives as long as the assignment: processed offsets must not accumulate.
    tracker = OffsetTracker()
    already_tracing = tracemalloc.is_tracing()
    if not already_tracing:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for offset in range(100_000, 130_000):
            tracker.track(offset)
            tracker.done(offset)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        if not already_tracing:
            tracemalloc.stop()
    assert tracker.committable == 130_000
    assert tracker.pending == 0
    assert after - before < 64 * 1024


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_committable_is_one_past_the_longest_done_prefix(order: list[int], completed: int) -> None:
    tracker = OffsetTracker()
    for offset in range(30):
        tracker.track(offset)
    finished = set(order[:completed])
    for offset in order[:completed]:
        tracker.done(offset)
    prefix = 0
    while prefix in finished:
        prefix += 1
    assert tracker.committable == (prefix if prefix > 0 else None)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ContractViolation("bad data"), "contract"),
        (ConfigViolation("bad config"), "config"),
        (ExecutionViolation("bad subject"), "execution"),
        (TransactionViolation(cause=TransactionViolationCause.LOCK_UNACQUIRED, message="busy"), None),
        (TimeoutError(), None),
        (ConnectionError("redis down"), None),
        (RuntimeError("engine bug"), None),
    ],
)
def test_only_contract_config_and_execution_violations_are_permanent(
    error: BaseException, reason: str | None
) -> None:
    assert classify_error(error) == reason
