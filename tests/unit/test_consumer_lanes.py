"""Lanes, backpressure thresholds and the offset committer, each on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition

from service.runtime.consumer import Backpressure, Lane, LaneStopping, LoopStats, OffsetCommitter

TP = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


@dataclass(frozen=True)
class Rec:
    offset: int
    topic: str = "t"
    partition: int = 0


def lane_with(*offsets: int, tp: TopicPartition = TP) -> Lane:
    lane = Lane(tp)
    lane.enqueue(Rec(offset) for offset in offsets)
    return lane


# --- Lane -------------------------------------------------------------------------------------------


async def test_records_come_out_in_the_order_they_were_enqueued() -> None:
    lane = lane_with(3, 4, 7)
    assert [(await lane.next_record()).offset for _ in range(3)] == [3, 4, 7]
    assert lane.tracker.pending == 3  # tracked, not done


async def test_next_record_waits_until_records_are_enqueued() -> None:
    lane = Lane(TP)
    waiting = asyncio.create_task(lane.next_record())
    await asyncio.sleep(0.005)
    assert not waiting.done()
    lane.enqueue([Rec(0)])
    assert (await asyncio.wait_for(waiting, timeout=1)).offset == 0


async def test_close_wakes_a_waiting_worker_with_none() -> None:
    lane = Lane(TP)
    waiting = asyncio.create_task(lane.next_record())
    await asyncio.sleep(0)
    lane.close()
    assert await asyncio.wait_for(waiting, timeout=1) is None
    assert lane.closing


async def test_a_closed_lane_gives_no_more_records_even_if_some_are_buffered() -> None:
    lane = lane_with(0, 1)
    lane.close()
    assert await lane.next_record() is None
    assert len(lane.records) == 2


def test_enqueue_tracks_offsets_and_rejects_them_out_of_order() -> None:
    lane = lane_with(5)
    with pytest.raises(ValueError, match="out of order"):
        lane.enqueue([Rec(5)])


def test_size_counts_the_buffered_records_and_the_one_in_the_worker() -> None:
    lane = lane_with(0, 1, 2)
    assert lane.size == 3
    lane.records.popleft()
    lane.busy = True
    assert lane.size == 3
    lane.busy = False
    assert lane.size == 2


async def test_sleep_returns_after_the_delay_on_an_open_lane() -> None:
    lane = Lane(TP)
    started = time.monotonic()
    await lane.sleep(0.01)
    assert time.monotonic() - started >= 0.009


async def test_sleep_on_a_closed_lane_raises_at_once() -> None:
    lane = Lane(TP)
    lane.close()
    with pytest.raises(LaneStopping):
        await lane.sleep(10)


async def test_closing_the_lane_cuts_a_sleep_short() -> None:
    lane = Lane(TP)
    sleeping = asyncio.create_task(lane.sleep(10))
    await asyncio.sleep(0.005)
    started = time.monotonic()
    lane.close()
    with pytest.raises(LaneStopping):
        await asyncio.wait_for(sleeping, timeout=1)
    assert time.monotonic() - started < 0.5


# --- Backpressure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1])
def test_a_buffer_must_hold_at_least_one_record(size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Backpressure(size)


def test_a_lane_pauses_exactly_when_it_holds_buffer_size_records() -> None:
    backpressure = Backpressure(4)
    lane = lane_with(0, 1, 2)
    assert not backpressure.should_pause(lane)
    lane.enqueue([Rec(3)])
    assert backpressure.should_pause(lane)
    lane.enqueue([Rec(4)])  # a poll may overshoot the buffer
    assert backpressure.should_pause(lane)
    lane.paused = True
    assert not backpressure.should_pause(lane)  # already paused


def test_a_paused_lane_resumes_exactly_at_half_the_buffer() -> None:
    backpressure = Backpressure(5)
    assert backpressure.resume_at == 2
    lane = lane_with(0, 1, 2)
    lane.paused = True
    assert not backpressure.should_resume(lane)
    lane.records.popleft()
    assert backpressure.should_resume(lane)
    lane.records.clear()
    assert backpressure.should_resume(lane)


def test_a_lane_that_is_not_paused_or_is_closing_is_not_resumed() -> None:
    backpressure = Backpressure(4)
    lane = lane_with(0)
    assert not backpressure.should_resume(lane)  # not paused
    lane.paused = True
    lane.close()
    assert not backpressure.should_resume(lane)  # revoked or stopping: leave it paused


def test_a_buffer_of_one_pauses_at_one_record_and_resumes_when_empty() -> None:
    backpressure = Backpressure(1)
    lane = lane_with(0)
    assert backpressure.should_pause(lane)
    lane.paused = True
    assert not backpressure.should_resume(lane)
    lane.records.clear()
    assert backpressure.should_resume(lane)


# --- OffsetCommitter --------------------------------------------------------------------------------


class CommitConsumer:
    """The one method the committer uses, scripted."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.failures = 0
        self.gate: asyncio.Event | None = None

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("coordinator unreachable")
        self.commits.append(dict(offsets))


def committer(
    consumer: CommitConsumer | None, *, timeout_s: float = 1.0
) -> tuple[OffsetCommitter, LoopStats]:
    stats = LoopStats()
    return OffsetCommitter(
        consumer=lambda: consumer, stats=stats, interval_s=0.002, timeout_s=timeout_s
    ), stats


def finish(lane: Lane, *offsets: int) -> None:
    for offset in offsets:
        lane.tracker.done(offset)


async def test_only_positions_that_moved_are_committed() -> None:
    consumer = CommitConsumer()
    commit, stats = committer(consumer)
    moved, idle, gap = lane_with(0, 1, 2), lane_with(0, tp=TP1), lane_with(0, 1, tp=TopicPartition("t", 2))
    finish(moved, 0, 1)
    finish(gap, 1)  # offset 0 not done: nothing committable
    assert await commit.commit([moved, idle, gap])
    assert consumer.commits == [{TP: 2}]
    assert not moved.tracker.needs_commit()
    # Nothing moved since: no commit request at all.
    assert await commit.commit([moved, idle, gap])
    assert consumer.commits == [{TP: 2}]
    finish(moved, 2)
    finish(idle, 0)
    assert await commit.commit([moved, idle, gap])
    assert consumer.commits == [{TP: 2}, {TP: 3, TP1: 1}]
    assert stats.commits == 2


async def test_without_a_consumer_nothing_is_committed() -> None:
    commit, stats = committer(None)
    lane = lane_with(0)
    finish(lane, 0)
    assert await commit.commit([lane])
    assert lane.tracker.needs_commit()
    assert stats.commits == 0


async def test_a_failing_commit_returns_false_and_is_committed_next_time() -> None:
    consumer = CommitConsumer()
    consumer.failures = 1
    commit, stats = committer(consumer)
    lane = lane_with(0)
    finish(lane, 0)
    assert not await commit.commit([lane])
    assert lane.tracker.needs_commit()
    assert stats.commits == 0
    assert await commit.commit([lane])
    assert consumer.commits == [{TP: 1}]
    assert not lane.tracker.needs_commit()
    assert stats.commits == 1


async def test_a_commit_that_never_answers_times_out_and_stays_needed() -> None:
    consumer = CommitConsumer()
    consumer.gate = asyncio.Event()
    commit, stats = committer(consumer, timeout_s=0.02)
    lane = lane_with(0)
    finish(lane, 0)
    started = time.monotonic()
    assert not await commit.commit([lane])
    assert time.monotonic() - started < 0.5
    assert lane.tracker.needs_commit()
    assert stats.commits == 0


async def test_concurrent_commits_are_serialised_and_do_not_repeat_a_position() -> None:
    consumer = CommitConsumer()
    consumer.gate = asyncio.Event()
    commit, stats = committer(consumer)
    lane = lane_with(0)
    finish(lane, 0)
    first = asyncio.create_task(commit.commit([lane]))
    second = asyncio.create_task(commit.commit([lane]))
    await asyncio.sleep(0.005)
    consumer.gate.set()
    assert await first
    assert await second
    assert consumer.commits == [{TP: 1}]
    assert stats.commits == 1


async def test_run_commits_the_current_lanes_every_interval_until_cancelled() -> None:
    consumer = CommitConsumer()
    commit, _ = committer(consumer)
    lanes: dict[TopicPartition, Lane] = {TP: lane_with(0, 1)}
    runner = asyncio.create_task(commit.run(lanes.values))
    try:
        finish(lanes[TP], 0)
        await asyncio.wait_for(_until(lambda: consumer.commits == [{TP: 1}]), timeout=1)
        lanes[TP1] = lane_with(5, tp=TP1)  # assigned later: picked up by the next round
        finish(lanes[TP1], 5)
        finish(lanes[TP], 1)
        await asyncio.wait_for(_until(lambda: len(consumer.commits) == 2), timeout=1)
        assert consumer.commits[1] == {TP: 2, TP1: 6}
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.001)
