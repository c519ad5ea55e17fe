"""The timer schedule port: per-partition hints of which instance has a timer due when.

The truth of an orchestration's pending timers is its record (:mod:`service.arvo.orchestration.timers`),
committed atomically with its state. The schedule is an index *beside* it, one per partition of an
orchestrator's topic (``<topic>/<partition>``), so that the member owning that partition — and only
it — finds the timers due there, and a rebalance hands them over with the partition:

* the consumer **adds** a hint for each timer a step armed, after the step's commit and before the
  record's offset is marked done: a crash in between redelivers the record, whose replay adds the
  hints again (a replay carries all the instance's pending timers). No timer is ever without a hint.
* the scheduler (:mod:`service.runtime.timer_scheduler`) **reads** the due hints of its partitions,
  publishes each as a timer event and then **removes** it: a crash in between publishes it again
  with the same deterministic id, which the instance deduplicates.
* a hint whose timer was cancelled (its state was left), fired or whose instance finished is
  *stale*: it is published when due like any other and the instance ignores it
  (``ignored_stale_timer``). No cancelled timer ever fires.

Redis Cluster: a partition's schedule is one key (its own hash slot), written separately from the
instance's keys — which is why it is a hint checked against the record, never the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["InMemoryTimerIndex", "ScheduledTimer", "TimerIndex", "partition_key"]


class ScheduledTimer(NamedTuple):
    """One hint: the instance (by subject) has timer ``timer_id`` due at ``due_ms``."""

    subject: str
    timer_id: str
    due_ms: int


def partition_key(topic: str, partition: int) -> str:
    """The schedule of one topic partition: ``<topic>/<partition>``."""
    return f"{topic}/{partition}"


@runtime_checkable
class TimerIndex(Protocol):
    """Per-partition schedules of timer hints (see the module docstring)."""

    async def schedule(self, partition: str, timers: Sequence[ScheduledTimer]) -> None:
        """Add hints to ``partition``'s schedule (adding one that is there already changes nothing)."""
        ...

    async def due(self, partition: str, *, now_ms: int, limit: int) -> list[ScheduledTimer]:
        """At most ``limit`` hints of ``partition`` due by ``now_ms``, earliest first (not removed)."""
        ...

    async def remove(self, partition: str, timers: Sequence[ScheduledTimer]) -> None:
        """Remove hints (fired, i.e. their timer events were published) from ``partition``'s schedule."""
        ...

    async def count(self, partition: str) -> int:
        """How many hints ``partition``'s schedule holds."""
        ...


class InMemoryTimerIndex:
    """:class:`TimerIndex` in process memory (unit tests; a schedule of a few thousand hints at most)."""

    def __init__(self) -> None:
        self._members: dict[str, set[tuple[int, str, str]]] = {}

    async def schedule(self, partition: str, timers: Sequence[ScheduledTimer]) -> None:  # noqa: D102
        members = self._members.setdefault(partition, set())
        members.update((int(timer.due_ms), timer.timer_id, timer.subject) for timer in timers)

    async def due(self, partition: str, *, now_ms: int, limit: int) -> list[ScheduledTimer]:  # noqa: D102
        due = sorted(entry for entry in self._members.get(partition, ()) if entry[0] <= now_ms)
        return [ScheduledTimer(subject, timer_id, due_ms) for due_ms, timer_id, subject in due[:limit]]

    async def remove(self, partition: str, timers: Sequence[ScheduledTimer]) -> None:  # noqa: D102
        members = self._members.get(partition)
        if members is not None:
            members.difference_update((int(timer.due_ms), timer.timer_id, timer.subject) for timer in timers)

    async def count(self, partition: str) -> int:  # noqa: D102
        return len(self._members.get(partition, ()))
