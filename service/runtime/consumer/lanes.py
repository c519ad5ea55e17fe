"""Lanes and backpressure: one ordered queue and worker task per assigned partition.

Records of a partition are processed in order by its lane; partitions run in parallel. Events of
one orchestration share a key (the subject), hence a partition, hence a lane: they are never
processed concurrently. With ``partition_concurrency`` above 1 a lane runs records of *different*
keys at the same time (key-ordered concurrency, as Confluent's Parallel Consumer): each key's
records wait in their own queue (:attr:`Lane.keyed`) and run one after the other.

A lane buffers at most ``partition_buffer_size`` records (plus one poll): :class:`Backpressure`
pauses the partition when it is full and resumes it once the lane drained below half, while the
fetch task keeps polling (heartbeats and ``max_poll_interval_ms`` are unaffected by slow handlers).

**Admission** (``admission_backlog`` above 0, orchestrator and resumable topics): a new root
workflow's init (:func:`root_init_classifier`) waits in :attr:`Lane.deferred` while the lane has
records of workflows already started (replies, timer and cancel events, child inits), which run
first — so under overload the started workflows keep finishing while new ones wait. A record of a
key (subject) with a deferred record waits behind it there: records of one key stay in offset
order. Deferred inits are tracked like every record (the commit watermark stops at the first one,
a crash replays them); they do not count against ``partition_buffer_size`` (the replies behind them
keep being fetched) but against ``admission_backlog``: the partition is paused when that many wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

from aiokafka import TopicPartition

from service.runtime.consumer.offsets import OffsetTracker

__all__ = ["Backpressure", "Lane", "LaneStopping", "root_init_classifier"]

_CE_TYPE: Final = "ce_type"
_PARENT_SUBJECT: Final = b'"parentSubject$$"'
_NO_PARENT: Final = (b"null", b'""')
ADMISSION_RECHECK_S: Final = 0.01
"""How often a lane holding only deferred inits asks again whether it may start one."""


def root_init_classifier(init_type: str) -> Callable[[Any], bool]:
    """Whether a record is a new root workflow's init: ``init_type`` and no ``parentSubject$$``.

    Read from what the record carries, without decoding it: the ``ce_type`` header (the producer's
    and :func:`~service.runtime.binding.encode_event`'s copy of the type) and a byte search of the value
    for ``"parentSubject$$"`` followed by anything but ``null`` or ``""`` (a child workflow's init:
    its parent waits for it). A record without ``ce_type`` (a structured-mode record of a foreign
    producer) is not one. A wrong answer costs order, never correctness: records of one key stay in
    offset order whichever queue they wait in.
    """
    wanted = init_type.encode()

    def is_root_init(record: Any) -> bool:
        found: bytes | None = None
        for name, value in record.headers:
            if name == _CE_TYPE:
                found = value
        if found != wanted:
            return False
        value = record.value or b""
        at = value.find(_PARENT_SUBJECT)
        if at < 0:
            return True
        rest = value[at + len(_PARENT_SUBJECT) : at + len(_PARENT_SUBJECT) + 16].lstrip()
        return rest.startswith(b":") and rest[1:].lstrip().startswith(_NO_PARENT)

    return is_root_init


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
        deferred: Admission: new root inits (and records of their keys) waiting until the lane has
            nothing else to run, in offset order.
        deferred_keys: Records in :attr:`deferred` per key.
        is_root_init: Which records are new root inits (``None``: no admission, strict order).
        admit: Whether a deferred init may start now (the process is not busy with started
            workflows' records); ``None``: whenever the lane has nothing else.

    """

    __slots__ = (
        "admit",
        "busy",
        "deferred",
        "deferred_keys",
        "is_root_init",
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

    def __init__(
        self,
        tp: TopicPartition,
        is_root_init: Callable[[Any], bool] | None = None,
        admit: Callable[[], bool] | None = None,
    ) -> None:
        self.tp = tp
        self.admit = admit
        self.records: deque[Any] = deque()
        self.deferred: deque[Any] = deque()
        self.deferred_keys: dict[Any, int] = {}
        self.is_root_init = is_root_init
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
        return (
            not self.records
            and not self.deferred
            and not self.busy
            and not self.publishing
            and not self.keyed_count
        )

    def stalled_for(self, now: float) -> float:
        """Seconds since the lane last finished a record while it had work (``0.0`` when idle)."""
        return 0.0 if self.idle else max(0.0, now - self.progress_at)

    @property
    def closing(self) -> bool:
        """The lane was closed (revoke, stop): it takes no further record."""
        return self.stop_event.is_set()

    @property
    def size(self) -> int:
        """Records buffered (also those waiting for their key) plus those being processed.

        Deferred inits are not counted (:attr:`deferred`; bounded by the admission backlog).
        """
        return len(self.records) + self.keyed_count + int(self.busy)

    def enqueue(self, records: Iterable[Any]) -> None:
        """Append fetched records (tracking their offsets) and wake the worker.

        With admission, a new root init — or a record of a key with a deferred record — goes to
        :attr:`deferred`, every other record to :attr:`records`.
        """
        if self.idle:
            self.progress_at = time.monotonic()  # the stall clock starts when work arrives
        is_root_init = self.is_root_init
        deferred_keys = self.deferred_keys
        for record in records:
            self.tracker.track(record.offset)
            if is_root_init is not None and (
                (deferred_keys and record.key in deferred_keys) or is_root_init(record)
            ):
                self.deferred.append(record)
                deferred_keys[record.key] = deferred_keys.get(record.key, 0) + 1
            else:
                self.records.append(record)
        self.wakeup.set()

    def pop_deferred(self) -> Any:
        """Take the oldest deferred record (the caller runs or queues it before its next ``await``)."""
        record = self.deferred.popleft()
        left = self.deferred_keys[record.key] - 1
        if left:
            self.deferred_keys[record.key] = left
        else:
            del self.deferred_keys[record.key]
        return record

    def clear(self) -> int:
        """Drop every buffered record (deferred ones too); return how many were dropped."""
        dropped = len(self.records) + len(self.deferred)
        self.records.clear()
        self.deferred.clear()
        self.deferred_keys.clear()
        return dropped

    async def next_record(self) -> Any | None:
        """The next record, waiting for one; ``None`` once the lane is closing.

        Records of started workflows first; a deferred init only when there is none and
        :attr:`admit` allows it.
        """
        while not self.closing:
            if self.records:
                return self.records.popleft()
            if self.deferred and self.may_start_init():
                return self.pop_deferred()
            await self.wait_for_work()
        return None

    def may_start_init(self) -> bool:
        """Whether a deferred init may start now (see :attr:`admit`)."""
        return self.admit is None or self.admit()

    async def wait_for_work(self) -> None:
        """Wait until records are enqueued or the lane is closed (returns at once if it is).

        With deferred inits that may not start yet, wait at most ``ADMISSION_RECHECK_S`` (the
        process's backlog shrinks without this lane being told).
        """
        if self.closing:
            return
        self.wakeup.clear()
        if not self.deferred:
            await self.wakeup.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), ADMISSION_RECHECK_S)

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
        admission_backlog: Deferred inits a lane may hold before its partition is paused; it is
            resumed once at most half of that wait (``0``: no admission, nothing is deferred).

    """

    __slots__ = ("admission_backlog", "buffer_size", "deferred_resume_at", "resume_at")

    def __init__(self, buffer_size: int, admission_backlog: int = 0) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        if admission_backlog < 0:
            raise ValueError(f"admission_backlog must not be negative, got {admission_backlog}")
        self.buffer_size = buffer_size
        self.resume_at = buffer_size // 2
        self.admission_backlog = admission_backlog
        self.deferred_resume_at = admission_backlog // 2

    def should_pause(self, lane: Lane) -> bool:
        """Whether ``lane`` just filled up, or its deferred inits reached the backlog (pause it)."""
        if lane.paused:
            return False
        if lane.size >= self.buffer_size:
            return True
        return bool(lane.deferred) and len(lane.deferred) >= self.admission_backlog

    def should_resume(self, lane: Lane) -> bool:
        """Whether ``lane`` is paused, open, and drained to half its buffer and backlog (resume it)."""
        return (
            lane.paused
            and lane.size <= self.resume_at
            and len(lane.deferred) <= self.deferred_resume_at
            and not lane.closing
        )
