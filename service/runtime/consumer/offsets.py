"""Offset tracking and commits: what is done per partition, and committing the contiguous watermark.

:class:`OffsetTracker` knows, for one partition, which fetched offsets are done and so which position
may be committed: one past the highest offset such that it and every offset fetched before it are
done. :class:`OffsetCommitter` commits those positions for a set of lanes, periodically and on drain,
under one lock, bounded in time; a failed commit only means re-delivery later.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import structlog

from service.runtime.consumer.ratelimit import WarningLimiter

if TYPE_CHECKING:
    from aiokafka import TopicPartition

    from service.runtime.consumer.hooks import LoopStats
    from service.runtime.consumer.lanes import Lane

__all__ = ["OffsetCommitter", "OffsetTracker"]

_log = structlog.get_logger("arvo.runtime.consumer")
_WARN_INTERVAL_S: Final = 60.0
_COMMIT_FAILED: Final = "offset commit failed; will retry"


def _monotonic() -> float:
    """``time.monotonic()``, looked up at each call (tests replace this module's ``time``)."""
    return time.monotonic()


class OffsetTracker:
    """Which offsets of one partition are done, and what may be committed.

    Offsets are :meth:`track`-ed in fetch order and may complete (:meth:`done`) in any order; the
    committable position is one past the highest offset such that it and every tracked offset
    before it are done. Gaps in the offset sequence (compaction, transaction markers) are fine:
    contiguity is over *tracked* offsets.
    """

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._tracked: set[int] = set()  # the offsets in _pending: membership in O(1), not a deque scan
        self._done: set[int] = set()
        self._last_tracked: int | None = None
        self._position: int | None = None
        self._committed: int | None = None

    def track(self, offset: int) -> None:
        """Register a fetched offset (must be greater than every tracked one)."""
        if self._last_tracked is not None and offset <= self._last_tracked:
            raise ValueError(f"offset {offset} tracked out of order (last tracked {self._last_tracked})")
        self._last_tracked = offset
        self._pending.append(offset)
        self._tracked.add(offset)

    def done(self, offset: int) -> None:
        """Mark ``offset`` processed (its effects are durable)."""
        if offset not in self._done and offset in self._tracked:
            self._done.add(offset)
            while self._pending and self._pending[0] in self._done:
                first = self._pending.popleft()
                self._done.discard(first)
                self._tracked.discard(first)
                self._position = first + 1

    @property
    def last_tracked(self) -> int | None:
        """The highest offset tracked so far (``None`` before the first)."""
        return self._last_tracked

    @property
    def committable(self) -> int | None:
        """The offset to commit (next to consume), or ``None`` when nothing completed yet."""
        return self._position

    @property
    def pending(self) -> int:
        """Tracked offsets not yet committable (buffered, in flight, or done after a gap)."""
        return len(self._pending)

    def needs_commit(self) -> bool:
        """Whether :attr:`committable` moved past the last :meth:`mark_committed` value."""
        return self._position is not None and self._position != self._committed

    def mark_committed(self, offset: int) -> None:
        """Record that ``offset`` was committed to the group."""
        self._committed = offset


class OffsetCommitter:
    """Commits the lanes' committable positions to the consumer group.

    Args:
        consumer: Returns the Kafka consumer (``None`` before start); its ``commit(offsets)`` is used.
        stats: Counts successful commits.
        interval_s: Period of :meth:`run`.
        timeout_s: Bound of one commit (with the broker down a commit would wait for a coordinator
            forever).

    """

    def __init__(
        self, *, consumer: Callable[[], Any], stats: LoopStats, interval_s: float, timeout_s: float
    ) -> None:
        self._consumer = consumer
        self._stats = stats
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self.failing_since: float | None = None
        """``time.monotonic()`` of the first failure of the current run of failed commits."""
        self.last_error: str | None = None
        """The last commit error (class and message), while commits fail."""
        self._warnings = WarningLimiter(_WARN_INTERVAL_S, clock=_monotonic)

    async def run(self, lanes: Callable[[], Iterable[Lane]]) -> None:
        """Every ``interval_s``, commit what the current lanes completed (until cancelled)."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.commit(list(lanes()))

    async def commit(self, lanes: Iterable[Lane]) -> bool:
        """Commit the positions of ``lanes`` that moved; ``False`` when the commit failed (logged)."""
        lanes = list(lanes)
        async with self._lock:
            offsets: dict[TopicPartition, int] = {}
            for lane in lanes:
                position = lane.tracker.committable
                if position is not None and lane.tracker.needs_commit():
                    offsets[lane.tp] = position
            consumer = self._consumer()
            if not offsets or consumer is None:
                return True
            try:
                async with asyncio.timeout(self._timeout_s):
                    await consumer.commit(offsets)
            except Exception as exc:  # a failed commit only means re-delivery later
                self._failed(exc, len(offsets))
                return False
            held_back = self._warnings.clear(_COMMIT_FAILED)
            if self.failing_since is not None:
                _log.warning(
                    "offset commits succeed again",
                    failed_for_s=round(time.monotonic() - self.failing_since, 1),
                    suppressed_warnings=held_back,
                )
            self.failing_since = self.last_error = None
            for lane in lanes:
                offset = offsets.get(lane.tp)
                if offset is not None:
                    lane.tracker.mark_committed(offset)
            self._stats.commits += 1
            return True

    def failing_for(self, now: float) -> float:
        """Seconds commits have been failing (``0.0`` while they succeed)."""
        return 0.0 if self.failing_since is None else now - self.failing_since

    def _failed(self, error: BaseException, partitions: int) -> None:
        """Count a failed commit; WARNING at most every ``_WARN_INTERVAL_S`` (with the suppressed count)."""
        now = time.monotonic()
        self.last_error = f"{type(error).__name__}: {error}"[:300]
        if self.failing_since is None:
            self.failing_since = now
        held_back = self._warnings.allow(_COMMIT_FAILED)
        if held_back is None:
            return
        _log.warning(
            _COMMIT_FAILED,
            error=repr(error),
            partitions=partitions,
            failing_for_s=round(now - self.failing_since, 1),
            suppressed_since_last=held_back,
        )
