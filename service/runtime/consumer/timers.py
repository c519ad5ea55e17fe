"""The timer scheduler: fires the due timers of the orchestrator partitions this member owns.

Beside the lanes: every ``ARVO_TIMER_POLL_INTERVAL_MS`` the scheduler asks the timer schedule
(:class:`~service.runtime.timer_index.TimerIndex`) of each assigned partition of an orchestrator's
topic for the hints due by now, publishes each as a timer event
(:func:`~service.arvo.orchestration.timers.create_timer_event`: the orchestrator's own topic, keyed
by the instance's subject, so it lands on that very partition, in order with the instance's other
events) and, once the broker acknowledged them, removes the hints. The instance's record decides
whether the timer still fires (:mod:`service.arvo.orchestration.timers`).

* **Ownership**: only assigned partitions are polled, so a rebalance hands their timers to the new
  owner with the partition; during the hand-over both may publish a timer: the same event id, which
  the instance deduplicates.
* **Failures**: a schedule that cannot be read, or a publish that fails, leaves the hints where they
  are: they are tried again at the next poll (one WARNING per minute while it lasts).
* **Clock**: due times are wall-clock milliseconds of the host that armed the timer (from the
  consumed event's ``time``); a timer fires at the earliest when this host's clock passes it. Clock
  skew between hosts (NTP keeps it to milliseconds) shifts firing by as much, never loses a timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import structlog

from service.arvo.orchestration.timers import create_timer_event
from service.runtime.consumer.ratelimit import WarningLimiter
from service.runtime.otel import untraced
from service.runtime.timer_index import ScheduledTimer, TimerIndex, partition_key

if TYPE_CHECKING:
    from aiokafka import TopicPartition

    from service.arvo.event import ArvoEvent
    from service.runtime.consumer.hooks import LoopHooks, LoopStats

__all__ = ["TimerScheduler"]

_log = structlog.get_logger("arvo.runtime.timers")
_WARN_INTERVAL_S: Final = 60.0
_FAILED: Final = "timer scheduling failed; will retry"


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class TimerScheduler:
    """Publishes the due timers of the owned orchestrator partitions (see the module docstring).

    Args:
        index: The per-partition timer schedules.
        publish: Sends events and waits for the broker's acknowledgement (``EventProducer.publish``).
        partitions: The partitions this member owns now.
        orchestrators: Orchestrator topic → the orchestrator's name (``arvo.orc.<name>``): only
            these topics have timers.
        interval_s: Poll period.
        batch: Most timers fired per partition and poll.
        stats: Counts fired timers.
        hooks: Live metrics (``on_timers_fired``).
        clock_ms: Wall clock in ms (tests).

    """

    def __init__(
        self,
        *,
        index: TimerIndex,
        publish: Callable[[list[ArvoEvent]], Any],
        partitions: Callable[[], Iterable[TopicPartition]],
        orchestrators: Mapping[str, str],
        interval_s: float,
        batch: int,
        stats: LoopStats,
        hooks: LoopHooks,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        self._index = index
        self._publish = publish
        self._partitions = partitions
        self._orchestrators = dict(orchestrators)
        self._interval_s = interval_s
        self._batch = batch
        self._stats = stats
        self._hooks = hooks
        self._clock_ms = clock_ms
        self._warnings = WarningLimiter(_WARN_INTERVAL_S)
        self._failing = False

    @property
    def active(self) -> bool:
        """Whether any consumed topic is an orchestrator's (else there is nothing to poll)."""
        return bool(self._orchestrators)

    async def run(self) -> None:
        """Every ``interval_s``, fire what is due (until cancelled)."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.fire_due()

    async def fire_due(self) -> int:
        """Publish the timers due now on every owned orchestrator partition; return how many."""
        fired = 0
        for tp in list(self._partitions()):
            orchestrator = self._orchestrators.get(tp.topic)
            if orchestrator is None:
                continue
            fired += await self._fire_partition(tp, orchestrator)
        return fired

    async def _fire_partition(self, tp: TopicPartition, orchestrator: str) -> int:
        key = partition_key(tp.topic, tp.partition)
        fired = 0
        while True:
            now_ms = self._clock_ms()
            try:
                # Reading and clearing the schedule is polling, not a workflow's work: no root
                # spans every poll interval (like the readiness probes, see ``untraced``).
                with untraced():
                    due = await self._index.due(key, now_ms=now_ms, limit=self._batch)
                if not due:
                    return fired
                events = self._events(key, due, orchestrator)
                if events:
                    await self._publish(events)
                with untraced():
                    await self._index.remove(key, due)
            except Exception as exc:  # the hints stay: tried again at the next poll
                self._failed(key, exc)
                return fired
            fired += len(events)
            self._stats.timers_fired += len(events)
            self._hooks.on_timers_fired(
                tp.topic, [max(0.0, (now_ms - event.data["dueMs"]) / 1000) for event in events]
            )
            if self._failing:
                self._failing = False
                _log.warning(
                    "timer scheduling works again", partition=key, suppressed=self._warnings.clear(_FAILED)
                )
            if len(due) < self._batch:
                return fired

    def _events(self, key: str, due: list[ScheduledTimer], orchestrator: str) -> list[ArvoEvent]:
        """The timer events of ``due``, without the hints that cannot become an event.

        Those are dropped (logged), so that one bad entry (a hand-edited schedule) never holds up the
        partition's other timers.
        """
        events: list[ArvoEvent] = []
        for timer in due:
            try:
                events.append(
                    create_timer_event(
                        subject=timer.subject,
                        orchestrator=orchestrator,
                        timer_id=timer.timer_id,
                        due_ms=timer.due_ms,
                    )
                )
            except ValueError as error:
                _log.error(
                    "dropping a timer schedule entry that is not a valid timer",
                    partition=key,
                    timer_id=timer.timer_id[:200],
                    subject=timer.subject[:200],
                    error=str(error)[:500],
                )
        return events

    def _failed(self, key: str, error: BaseException) -> None:
        self._failing = True
        held_back = self._warnings.allow(_FAILED)
        if held_back is None:
            return
        _log.warning(_FAILED, partition=key, error=repr(error), suppressed_since_last=held_back)
