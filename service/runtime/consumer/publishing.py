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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from service.arvo.execution import ExecutionOutcome
from service.runtime.consumer.lanes import LaneStopping
from service.runtime.consumer.ratelimit import WarningLimiter
from service.runtime.dlq import DeadLetter
from service.runtime.producer import PublishFailure, classify_publish_error

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent
    from service.runtime.consumer.dependencies import DependencyMonitor
    from service.runtime.consumer.hooks import LoopHooks, LoopStats
    from service.runtime.consumer.lanes import Lane
    from service.runtime.dlq import DeadLetterPublisher
    from service.runtime.producer import EventProducer
    from service.runtime.retry import RetryPolicy
    from service.runtime.routing import TopicRouter

__all__ = [
    "BROKER",
    "UNPUBLISHABLE",
    "UNROUTABLE",
    "EmissionPublisher",
    "FinishRecord",
    "GiveUp",
    "Handoff",
    "UnroutableError",
]

_log = structlog.get_logger("arvo.runtime.consumer")

BROKER: Final = "kafka"
"""The dependency name of the broker (metric label, ``/readyz`` check)."""

UNPUBLISHABLE: Final = "unpublishable"
"""Dead-letter reason: the emissions can never be published (too large, illegal topic, an error
not known to be transient that persisted)."""

UNROUTABLE: Final = "unroutable"
"""Dead-letter reason: the emissions name a topic that does not exist (deleted, or never created
with auto-creation off)."""

_WARN_INTERVAL_S: Final = 60.0


class UnroutableError(LookupError):
    """The emissions name topics the cluster does not have."""

    def __init__(self, topics: list[str], *, attempts: int) -> None:
        super().__init__(
            f"topics {', '.join(topics)} do not exist in the cluster (after {attempts} attempts): create"
            " them (or enable auto-creation), then replay this letter"
        )
        self.topics = topics


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Publishing can never succeed: dead-letter the record with ``reason`` and ``error``."""

    reason: str
    error: BaseException


FinishRecord = Callable[["Lane", Any, str, str, float], None]
"""Marks a record done: ``(lane, record, event type, outcome, started)``."""


@dataclass(frozen=True, slots=True)
class Handoff:
    """A record's execution is done; its emissions still have to be published."""

    instance: str
    events: list[ArvoEvent]
    outcome: str
    attempts: int
    handler: str


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
        give_up_attempts: Attempts after which an error not known to be transient, or a topic that
            does not exist, dead-letters the record instead of stalling its partition.

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
        give_up_attempts: int = 5,
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
        self._give_up_attempts = give_up_attempts
        self.on_gave_up: Callable[[Any, ArvoEvent, str, GiveUp], Awaitable[None]] | None = None
        """Called after a record whose emissions can never be published was dead-lettered."""
        self._warnings = WarningLimiter(_WARN_INTERVAL_S)

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
                gave_up = await self.publish(lane, handoff.events)
                if gave_up is not None:
                    await self.dead_letter(
                        lane,
                        record,
                        reason=gave_up.reason,
                        error=gave_up.error,
                        attempts=handoff.attempts,
                        handler=handoff.handler,
                    )
                    if self.on_gave_up is not None:
                        await self.on_gave_up(record, event, handoff.handler, gave_up)
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

    async def publish(self, lane: Lane, events: list[ArvoEvent]) -> GiveUp | None:
        """Publish until acknowledged; return why not when it never can (no endless loop).

        Broker trouble is waited out without bound (one outage line, ``/readyz`` 503). A permanent
        error gives up at once (``unpublishable``); a topic missing from the cluster's metadata gives
        up after ``give_up_attempts`` (``unroutable``: it may have been being created); an error not
        known to be transient gives up after ``give_up_attempts`` (``unpublishable``).
        """
        if not events:
            return None
        unknown = missing_topic = 0
        for delay in self._retry.unbounded_delays():
            try:
                await self.producer.publish(events)
            except Exception as exc:
                kind = classify_publish_error(exc)
                if kind is PublishFailure.PERMANENT:
                    return GiveUp(UNPUBLISHABLE, exc)
                if kind is PublishFailure.UNKNOWN_TOPIC:
                    topics = sorted({self._router.route_event(event) for event in events})
                    missing = await self.producer.missing_topics(topics)
                    if missing is None:  # the broker does not answer: an outage, not the record's fault
                        self._broker_trouble(exc)
                    elif missing:
                        missing_topic += 1
                        if missing_topic >= self._give_up_attempts:
                            return GiveUp(UNROUTABLE, UnroutableError(missing, attempts=missing_topic))
                        self._warn("emissions name topics that do not exist; retrying", missing=missing)
                elif kind is PublishFailure.UNKNOWN:
                    unknown += 1
                    if unknown >= self._give_up_attempts:
                        return GiveUp(UNPUBLISHABLE, exc)
                    self._warn("publish failed with an unexpected error; retrying", error=repr(exc))
                else:
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
        self,
        lane: Lane,
        record: Any,
        *,
        reason: str,
        error: BaseException,
        attempts: int,
        handler: str | None = None,
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
        unknown = 0
        for delay in self._retry.unbounded_delays():
            try:
                await self._dlq.publish(letter)
            except Exception as exc:
                kind = classify_publish_error(exc)
                if kind is PublishFailure.UNKNOWN:
                    unknown += 1
                    if unknown >= self._give_up_attempts:
                        kind = PublishFailure.PERMANENT
                if kind is PublishFailure.PERMANENT:
                    if letter.payload_dropped_bytes is not None:
                        _log.error(
                            "dead letter cannot be written even without its payload; dropping it",
                            error=repr(exc),
                            topic=record.topic,
                            partition=record.partition,
                            offset=record.offset,
                            reason=reason,
                        )
                        break
                    # Too large for the dead-letter topic (or refused): keep the diagnostics only.
                    letter = letter.without_payload()
                    unknown = 0
                    continue
                if kind is PublishFailure.UNKNOWN_TOPIC:
                    # No dead-letter topic: nothing can be dead-lettered; the lane waits (``/readyz``
                    # names the stalled partition) until an operator creates it.
                    self._warn("the dead-letter topic does not exist; waiting for it", topic=self._dlq.topic)
                elif kind is PublishFailure.UNKNOWN:
                    self._warn(
                        "dead-letter publish failed with an unexpected error; retrying", error=repr(exc)
                    )
                else:  # broker trouble: wait and retry, never drop
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
            error=str(error)[:500],
            handler=handler,
            attempts=attempts,
        )

    def _warn(self, message: str, **fields: Any) -> None:
        """A WARNING line, at most one per ``message`` every ``_WARN_INTERVAL_S`` (with the count)."""
        held_back = self._warnings.allow(message)
        if held_back is not None:
            _log.warning(message, **fields, suppressed_since_last=held_back)

    def _broker_trouble(self, error: BaseException) -> None:
        self._stats.publish_retries += 1
        self._hooks.on_publish_retry(type(error).__name__)
        self._dependencies.report_down(BROKER, error)


def _forget_publish(lane: Lane, instance: str, task: asyncio.Task[bool]) -> None:
    if lane.publishing.get(instance) is task:
        del lane.publishing[instance]
