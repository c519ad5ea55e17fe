"""Publishing hand-off: emissions and dead letters out, acknowledged before a record is done.

* **Nothing is marked done before its emissions are acknowledged.** Publishing is retried without
  bound while the broker has trouble: the lane waits and resumes by itself. An error that can never
  succeed (too large, illegal topic) dead-letters the record with reason ``unpublishable``.
* **Acks off the critical path.** Once a record's emissions are handed to the producer
  (:meth:`EmissionPublisher.hand_off`), its lane goes on with the next record — unless that record
  belongs to the same orchestration instance (or, outside orchestrations, the same subject), which
  waits for those acks first (:meth:`EmissionPublisher.wait_for_instance`): an instance's
  unacknowledged record is always its *last* consumed one, the one the dedupe ring replays after a
  crash. At most ``max_inflight_publishes_per_partition`` records per lane await acks; drains wait
  for them before committing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from service.arvo.execution import ExecutionOutcome
from service.runtime.consumer.lanes import LaneStopping
from service.runtime.dlq import DeadLetter
from service.runtime.producer import is_permanent_publish_error

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent
    from service.runtime.consumer.dependencies import DependencyMonitor
    from service.runtime.consumer.hooks import LoopHooks, LoopStats
    from service.runtime.consumer.lanes import Lane
    from service.runtime.dlq import DeadLetterPublisher
    from service.runtime.producer import EventProducer
    from service.runtime.retry import RetryPolicy
    from service.runtime.routing import TopicRouter

__all__ = ["UNPUBLISHABLE", "EmissionPublisher", "FinishRecord", "Handoff"]

_log = structlog.get_logger("arvo.runtime.consumer")

BROKER: Final = "kafka"
"""The dependency name of the broker (metric label, ``/readyz`` check)."""

UNPUBLISHABLE: Final = "unpublishable"
"""Dead-letter reason: the emissions can never be published (too large, illegal topic)."""

FinishRecord = Callable[["Lane", Any, str, str, float], None]
"""Marks a record done: ``(lane, record, event type, outcome, started)``."""


@dataclass(frozen=True, slots=True)
class Handoff:
    """A record's execution is done; its emissions still have to be published."""

    instance: str
    events: list[ArvoEvent]
    outcome: str
    attempts: int


class EmissionPublisher:
    """Publishes emissions and dead letters for the lanes, retrying broker trouble without bound.

    Args:
        producer: Publishes emitted events.
        router: The topic of each event (for the produced counters).
        dlq: Where dead letters go.
        stats: The loop's counters.
        hooks: The loop's live callbacks.
        retry: Backoff between publish attempts.
        max_inflight_per_lane: Records per lane that may await acks at once.
        finish: Marks a record done once its emissions are acknowledged.
        dependencies: Where broker outages are reported (``kafka``): one line per outage, not per
            attempt.

    """

    def __init__(
        self,
        *,
        producer: EventProducer,
        router: TopicRouter,
        dlq: DeadLetterPublisher,
        stats: LoopStats,
        hooks: LoopHooks,
        retry: RetryPolicy,
        max_inflight_per_lane: int,
        finish: FinishRecord,
        dependencies: DependencyMonitor,
    ) -> None:
        self.producer = producer
        self._router = router
        self._dlq = dlq
        self._stats = stats
        self._hooks = hooks
        self._retry = retry
        self._max_inflight = max_inflight_per_lane
        self._finish = finish
        self._dependencies = dependencies

    async def wait_for_instance(self, lane: Lane, instance: str) -> None:
        """Wait until ``instance`` has no unacknowledged emissions and the lane has room for one more.

        An instance's next event runs only once its previous emissions are acknowledged: after a crash,
        a record whose publish was lost is then still the instance's *last* consumed event, which the
        dedupe ring replays (an older one would be dropped). Other instances' records go ahead.

        Raises:
            LaneStopping: the lane is closing (the earlier record of ``instance`` was abandoned, or
                the lane closed while this one waited).

        """
        pending = lane.publishing.get(instance)
        if pending is not None:
            await asyncio.wait({pending})
            if pending.cancelled() or not pending.result():
                raise LaneStopping
        while len(lane.publishing) >= self._max_inflight:
            await asyncio.wait(list(lane.publishing.values()), return_when=asyncio.FIRST_COMPLETED)
        if lane.closing:
            # Revoked or stopping while this record waited: do not start it now (that would stretch
            # the drain, and the group's rebalance, by a whole execution); the next owner runs it.
            raise LaneStopping

    def hand_off(self, lane: Lane, record: Any, event: ArvoEvent, handoff: Handoff, started: float) -> None:
        """Publish ``handoff``'s events in a task of their own; the record is done once they are acked.

        Call it in the record's context: the ``send`` spans stay children of the record's span.
        """
        task = asyncio.create_task(
            self._publish_and_finish(lane, record, event, handoff, started),
            name=f"arvo-publish-{lane.tp.topic}-{lane.tp.partition}@{record.offset}",
        )
        lane.publishing[handoff.instance] = task
        task.add_done_callback(functools.partial(_forget_publish, lane, handoff.instance))

    async def drain(self, lane: Lane) -> None:
        """Wait for every record of ``lane`` handed to the producer (revoke, stop)."""
        while lane.publishing:
            await asyncio.wait(list(lane.publishing.values()))

    async def abandon(self, lane: Lane) -> None:
        """Cancel ``lane``'s unacknowledged records (drain timeout); they are redelivered later."""
        abandoned = list(lane.publishing.values())
        for task in abandoned:
            task.cancel()
        if abandoned:
            await asyncio.wait(abandoned)

    async def _publish_and_finish(
        self, lane: Lane, record: Any, event: ArvoEvent, handoff: Handoff, started: float
    ) -> bool:
        """Publish until acknowledged (retried in order, without bound), then mark the record done.

        Returns:
            Whether the record was finished (``False``: abandoned because the lane is closing).

        """
        outcome = handoff.outcome
        while True:
            try:
                unpublishable = await self.publish(lane, handoff.events)
                if unpublishable is not None:
                    await self.dead_letter(
                        lane, record, reason=UNPUBLISHABLE, error=unpublishable, attempts=handoff.attempts
                    )
                    outcome = ExecutionOutcome.DEAD_LETTERED.value
                self._finish(lane, record, event.type, outcome, started)
                return True
            except LaneStopping:
                return False
            except Exception:
                _log.exception("publishing failed unexpectedly; retrying", partition=str(lane.tp))
                try:
                    await lane.sleep(self._retry.max_ms / 1000)
                except LaneStopping:
                    return False

    async def publish(self, lane: Lane, events: list[ArvoEvent]) -> BaseException | None:
        """Publish until acknowledged; return the error if it can never succeed (nothing retried)."""
        if not events:
            return None
        for delay in self._retry.unbounded_delays():
            try:
                await self.producer.publish(events)
            except Exception as exc:
                if is_permanent_publish_error(exc):
                    return exc
                # Broker trouble: wait and retry, never drop.
                self._broker_trouble(exc)
                _log.debug("publish failed; retrying", error=repr(exc), events=len(events))
                await lane.sleep(delay)
                continue
            self._dependencies.report_up(BROKER)
            for event in events:
                topic = self._router.route_event(event)
                self._stats.produced[(topic, event.type)] += 1
                self._hooks.on_produced(topic, event.type)
            return None
        return None  # pragma: no cover - unbounded_delays never ends

    async def dead_letter(
        self, lane: Lane, record: Any, *, reason: str, error: BaseException, attempts: int
    ) -> None:
        """Write ``record`` to the dead-letter topic with ``reason`` and ``error``, retrying broker trouble.

        A letter too large for the topic is written again without its payload (its diagnostics kept).
        """
        letter = DeadLetter.from_error(
            key=record.key,
            value=record.value,
            headers=list(record.headers),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            reason=reason,
            error=error,
            attempts=attempts,
        )
        for delay in self._retry.unbounded_delays():
            try:
                await self._dlq.publish(letter)
            except Exception as exc:
                if is_permanent_publish_error(exc):
                    if letter.payload_dropped_bytes is not None:
                        _log.error("dead letter cannot be written; dropping it", error=repr(exc))
                        break
                    # Too large for the dead-letter topic: keep the diagnostics, drop the payload.
                    letter = letter.without_payload()
                    continue
                # Broker trouble: wait and retry, never drop.
                self._broker_trouble(exc)
                _log.debug("dead-letter publish failed; retrying", error=repr(exc))
                await lane.sleep(delay)
                continue
            self._dependencies.report_up(BROKER)
            break
        self._stats.dead_lettered[(record.topic, reason)] += 1
        self._hooks.on_dead_letter(record.topic, reason)
        _log.warning(
            "record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            error_class=type(error).__name__,
        )

    def _broker_trouble(self, error: BaseException) -> None:
        self._stats.publish_retries += 1
        self._hooks.on_publish_retry(type(error).__name__)
        self._dependencies.report_down(BROKER, error)


def _forget_publish(lane: Lane, instance: str, task: asyncio.Task[bool]) -> None:
    if lane.publishing.get(instance) is task:
        del lane.publishing[instance]
