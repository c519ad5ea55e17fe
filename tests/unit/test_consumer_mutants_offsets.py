"""Failing offset commits, as an operator sees them: ``/readyz`` (how long, the last error) and the
rate-limited WARNING lines (what failed, for how long, how many warnings were held back)."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from service.runtime.consumer import offsets
from service.runtime.consumer.offsets import OffsetCommitter, OffsetTracker
from tests.unit.test_consumer_lanes import TP1, CommitConsumer, committer, finish, lane_with

FAILED = "offset commit failed; will retry"
RECOVERED = "offset commits succeed again"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(offsets, "time", fake)
    return fake


def lines(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    found = [entry for entry in logs if entry["event"] == event]
    assert all(entry["log_level"] == "warning" for entry in found)
    return [{k: v for k, v in entry.items() if k not in {"event", "log_level"}} for entry in found]


async def commit_fails(commit: OffsetCommitter, consumer: CommitConsumer, lanes: list[Any]) -> None:
    consumer.failures = 1
    assert not await commit.commit(lanes)


async def test_commit_failures_warn_once_a_minute_with_the_count_held_back_then_recovery_once(
    clock: Clock,
) -> None:
    consumer = CommitConsumer()
    commit, stats = committer(consumer)
    assert commit.last_error is None
    assert commit.failing_for(clock.now + 5) == 0.0
    lanes = [lane_with(0, 1), lane_with(0, tp=TP1)]
    finish(lanes[0], 0)
    finish(lanes[1], 0)
    error = repr(ConnectionError("coordinator unreachable"))
    with structlog.testing.capture_logs() as logs:
        await commit_fails(commit, consumer, lanes)
        assert commit.last_error == "ConnectionError: coordinator unreachable"
        assert commit.failing_for(clock.now + 2.5) == 2.5
        for now in (1_030.0, 1_059.99):  # held back: less than a minute after the warning
            clock.now = now
            await commit_fails(commit, consumer, lanes)
        assert len(lines(logs, FAILED)) == 1
        clock.now = 1_060.0  # exactly a minute
        await commit_fails(commit, consumer, lanes)
        clock.now = 1_060.06
        await commit_fails(commit, consumer, lanes)  # held back again
        clock.now = 1_120.07
        await commit_fails(commit, consumer, lanes)
        clock.now = 1_121.0
        await commit_fails(commit, consumer, lanes)  # held back
        clock.now = 1_121.07
        assert await commit.commit(lanes)
    assert lines(logs, FAILED) == [
        {"error": error, "partitions": 2, "failing_for_s": 0.0, "suppressed_since_last": 0},
        {"error": error, "partitions": 2, "failing_for_s": 60.0, "suppressed_since_last": 2},
        {"error": error, "partitions": 2, "failing_for_s": 120.1, "suppressed_since_last": 1},
    ]
    assert lines(logs, RECOVERED) == [{"failed_for_s": 121.1, "suppressed_warnings": 1}]
    assert consumer.commits == [{lanes[0].tp: 1, TP1: 1}]
    assert stats.commits == 1
    assert commit.last_error is None
    assert commit.failing_for(clock.now + 10) == 0.0


async def test_after_a_recovery_the_next_failure_warns_at_once_and_counts_afresh(clock: Clock) -> None:
    consumer = CommitConsumer()
    commit, _ = committer(consumer)
    lane = lane_with(0, 1, 2)
    with structlog.testing.capture_logs() as logs:
        finish(lane, 0)
        await commit_fails(commit, consumer, [lane])
        clock.now += 1
        await commit_fails(commit, consumer, [lane])  # held back
        clock.now += 1
        assert await commit.commit([lane])
        clock.now += 1.26
        finish(lane, 1)
        await commit_fails(commit, consumer, [lane])
        assert commit.failing_for(clock.now + 0.5) == 0.5
        clock.now += 4.04
        assert await commit.commit([lane])
    assert [entry["suppressed_since_last"] for entry in lines(logs, FAILED)] == [0, 0]
    assert [entry["failing_for_s"] for entry in lines(logs, FAILED)] == [0.0, 0.0]
    assert lines(logs, RECOVERED) == [
        {"failed_for_s": 2.0, "suppressed_warnings": 1},
        {"failed_for_s": 4.0, "suppressed_warnings": 0},
    ]
    assert consumer.commits == [{lane.tp: 1}, {lane.tp: 2}]


async def test_the_last_commit_error_is_bounded(clock: Clock) -> None:
    class Verbose(CommitConsumer):
        async def commit(self, offsets: Any) -> None:
            raise ValueError("x" * 1_000)

    commit, _ = committer(Verbose())
    lane = lane_with(0)
    finish(lane, 0)
    assert not await commit.commit([lane])
    assert commit.last_error == ("ValueError: " + "x" * 1_000)[:300]


def test_a_fresh_tracker_needs_no_commit_and_one_after_its_first_completion() -> None:
    tracker = OffsetTracker()
    assert not tracker.needs_commit()
    tracker.track(0)
    tracker.done(0)
    assert tracker.needs_commit()
