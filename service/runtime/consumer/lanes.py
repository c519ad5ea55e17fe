"""Lanes and backpressure: one ordered queue and worker task per assigned partition.

Records of a partition are processed in order by its lane; partitions run in parallel. Events of
one orchestration share a key (the subject), hence a partition, hence a lane: they are never
processed concurrently. With ``partition_concurrency`` above 1 a lane runs records of *different*
keys at the same time (key-ordered concurrency, as Confluent's Parallel Consumer): each key's
records wait in their own queue (:attr:`Lane.keyed`) and run one after the other.

A lane buffers at most ``partition_buffer_size`` records (plus one poll): :class:`Backpressure`
pauses the partition when it is full and resumes it once the lane drained below half, while the
fetch task keeps polling (heartbeats and ``max_poll_interval_ms`` are unaffected by slow handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition

from service.runtime.consumer.offsets import OffsetTracker

__all__ = ["Backpressure", "Lane", "LaneStopping"]


class LaneStopping(Exception):  # control flow, not an error
    """The lane was asked to stop while a record was waiting (to be retried, or for acks)."""


class Lane:
    """One partition's ordered queue, offset tracker and worker task.

    Attributes:
        tp: The partition.
        records: Fetched records not yet taken by the worker, in offset order.
        tracker: Which of the partition's fetched offsets are done.
        busy: The worker holds a record.
        paused: The partition is paused by backpressure.
        task: The worker task.
        publishing: Records handed to the producer and not yet acknowledged, by instance key (at
            most one per key: an instance's next record waits for its previous acks).
        progress_at: ``time.monotonic()`` of the last finished record, or of the arrival of work
            at an idle lane (stall detection).
        keyed: Key-ordered concurrency: the records waiting behind the record being processed for
            their key, per key (a key is here while one of its records runs).
        keyed_count: Records in :attr:`keyed`.

    """

    __slots__ = (
        "busy",
        "keyed",
        "keyed_count",
        "paused",
        "progress_at",
        "publishing",
        "records",
        "stop_event",
        "task",
        "tp",
        "tracker",
        "wakeup",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.records: deque[Any] = deque()
        self.tracker = OffsetTracker()
        self.wakeup = asyncio.Event()
        self.stop_event = asyncio.Event()
        self.busy = 0
        self.keyed: dict[Any, deque[Any]] = {}
        self.keyed_count = 0
        self.paused = False
        self.task: asyncio.Task[None] | None = None
        self.publishing: dict[str, asyncio.Task[bool]] = {}
        self.progress_at = time.monotonic()

    @property
    def idle(self) -> bool:
        """Nothing buffered, nothing being processed, nothing awaiting acks."""
        return not self.records and not self.busy and not self.publishing and not self.keyed_count

    def stalled_for(self, now: float) -> float:
        """Seconds since the lane last finished a record while it had work (``0.0`` when idle)."""
        return 0.0 if self.idle else max(0.0, now - self.progress_at)

    @property
    def closing(self) -> bool:
        """The lane was closed (revoke, stop): it takes no further record."""
        return self.stop_event.is_set()

    @property
    def size(self) -> int:
        """Records buffered (also those waiting for their key) plus those being processed."""
        return len(self.records) + self.keyed_count + int(self.busy)

    def enqueue(self, records: Iterable[Any]) -> None:
        """Append fetched records (tracking their offsets) and wake the worker."""
        if self.idle:
            self.progress_at = time.monotonic()  # the stall clock starts when work arrives
        for record in records:
            self.tracker.track(record.offset)
            self.records.append(record)
        self.wakeup.set()

    async def next_record(self) -> Any | None:
        """The next record, waiting for one; ``None`` once the lane is closing."""
        while not self.closing:
            if self.records:
                return self.records.popleft()
            self.wakeup.clear()
            await self.wakeup.wait()
        return None

    def close(self) -> None:
        """Stop taking records; wake the worker and every waiting :meth:`sleep`."""
        self.stop_event.set()
        self.wakeup.set()

    async def sleep(self, delay_s: float) -> None:
        """Sleep ``delay_s`` unless the lane is closed first (then raise :class:`LaneStopping`)."""
        if self.closing:
            raise LaneStopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), timeout=delay_s)
        if self.closing:
            raise LaneStopping

    async def wait_for(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Wait until ``event`` is set or ``timeout_s`` passed; ``True`` if it was set.

        Raises:
            LaneStopping: the lane was closed first.

        """
        if self.closing:
            raise LaneStopping
        if not event.is_set():
            waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.stop_event.wait())}
            try:
                await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        if self.closing:
            raise LaneStopping
        return event.is_set()


class Backpressure:
    """When a lane's partition is paused and resumed.

    Args:
        buffer_size: Records a lane may hold before its partition is paused; it is resumed once the
            lane holds at most half of that.

    """

    __slots__ = ("buffer_size", "resume_at")

    def __init__(self, buffer_size: int) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        self.buffer_size = buffer_size
        self.resume_at = buffer_size // 2

    def should_pause(self, lane: Lane) -> bool:
        """Whether ``lane`` just filled up (pause its partition)."""
        return not lane.paused and lane.size >= self.buffer_size

    def should_resume(self, lane: Lane) -> bool:
        """Whether ``lane`` is paused, open, and drained to half its buffer (resume its partition)."""
        return lane.paused and lane.size <= self.resume_at and not lane.closing
