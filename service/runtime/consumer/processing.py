"""Processing one record: decode, route, execute with the failure decisions, hand off, finish.

``RecordProcessor.process`` runs the record through the layers of :mod:`.scope` (log context,
span) around :meth:`RecordProcessor._core`:

* undecodable records and records of a topic no handler consumes are dead-lettered at once;
* the handler runs under ``handler_timeout_s``; a failure goes to the record's
  :class:`~service.runtime.consumer.decisions.FailureBudget` — dead-letter now, retry in place (the
  lane waits; other partitions continue), or park (dead letter with reason ``parked`` and, when the
  handler owns the instance, the instance marked ``parked``);
* emissions are handed to the :class:`~service.runtime.consumer.publishing.EmissionPublisher`; the
  record is done once they are acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog

from service.arvo.availability import DependencyUnavailableError
from service.arvo.execution import ExecutionOutcome
from service.arvo.memory import InstanceStatus
from service.runtime.binding import RecordDecodeError, decode_record
from service.runtime.consumer.deadlines import ExecutionDeadlines
from service.runtime.consumer.decisions import (
    DeadLetterNow,
    FailureBudget,
    Park,
    RetryLater,
    WaitForDependency,
)
from service.runtime.consumer.publishing import FinishRecord, GiveUp, Handoff
from service.runtime.consumer.scope import (
    RecordContext,
    RecordLayer,
    compose,
    fail_span,
    orchestration_subject,
    record_fields,
    record_scope_layer,
)
from service.runtime.stores import memory_answers
from service.runtime.timer_index import ScheduledTimer, TimerIndex, partition_key

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent
    from service.arvo.execution import ArvoHandler, ExecutionResult
    from service.arvo.memory import Memory
    from service.runtime.consumer.dependencies import DependencyMonitor
    from service.runtime.consumer.hooks import LoopHooks, LoopStats
    from service.runtime.consumer.lanes import Lane
    from service.runtime.consumer.publishing import EmissionPublisher

FOREIGN_SOURCE: Final = "foreign_source"
"""Dead-letter reason of a reply from a source the orchestration did not address."""

_STORE_CHECK_S: Final = 1.0
"""How long a timed-out execution's store check waits for ``PING``."""

NO_STATE: Final = "no_state"
"""Dead-letter reason of an event for an instance without state."""

__all__ = [
    "FOREIGN_SOURCE",
    "NO_STATE",
    "HandlerCancelledError",
    "HandlerTimeoutError",
    "RecordFinisher",
    "RecordProcessor",
    "StoreStalledError",
    "instance_key",
    "owned_instance_key",
]

_log = structlog.get_logger("arvo.runtime.consumer")


class HandlerCancelledError(Exception):
    """A handler raised ``CancelledError`` although nobody cancelled it (retried like any failure)."""


class StoreStalledError(DependencyUnavailableError, TimeoutError):
    """An execution timed out while the memory store did not answer: an outage of the store."""

    dependency = "redis"


class HandlerTimeoutError(TimeoutError):
    """An execution did not finish within ``ARVO_HANDLER_TIMEOUT_S`` (retried, then parked)."""


class RecordProcessor:
    """Processes the records of every lane.

    Args:
        handlers: The handler of each consumed topic.
        publisher: Publishes emissions and dead letters.
        failure_budget: Builds one record's :class:`FailureBudget`.
        handler_timeout_s: Bound of one execution.
        max_event_bytes: Records above this size are dead-lettered undecoded.
        stats: The loop's counters.
        hooks: The loop's live callbacks.
        finish: Marks a record done (:class:`RecordFinisher`).
        dependencies: Where outages of Redis (and other dependencies) are reported and waited out.
        memory: When given, parked records mark their orchestration instance ``parked``.
        dead_letter_no_state: Dead-letter (reason ``no_state``) events for instances without state.
        layers: The middleware around each record (default: log context and span).
        timers: Where the timers an execution armed are scheduled (its partition's schedule), after
            its commit and before the record is done; ``None``: not scheduled.

    """

    def __init__(
        self,
        *,
        handlers: Mapping[str, ArvoHandler],
        publisher: EmissionPublisher,
        failure_budget: Callable[[], FailureBudget],
        handler_timeout_s: float,
        max_event_bytes: int,
        stats: LoopStats,
        hooks: LoopHooks,
        finish: FinishRecord,
        dependencies: DependencyMonitor,
        memory: Memory | None = None,
        dead_letter_no_state: bool = True,
        layers: Sequence[RecordLayer] = (record_scope_layer,),
        timers: TimerIndex | None = None,
    ) -> None:
        self._handlers = handlers
        self._timers = timers
        self.finish = finish
        self._dependencies = dependencies
        self._publisher = publisher
        self._failure_budget = failure_budget
        self._handler_timeout_s = handler_timeout_s
        self._deadlines = ExecutionDeadlines(handler_timeout_s)
        self._max_event_bytes = max_event_bytes
        self._stats = stats
        self._hooks = hooks
        self._memory = memory
        self._dead_letter_no_state = dead_letter_no_state
        self._chain = compose(layers, self._core)
        publisher.on_gave_up = self._emissions_gave_up

    async def process(self, lane: Lane, record: Any) -> None:
        """Process ``record`` of ``lane``: done now, or handed off to finish once its acks arrive.

        Raises:
            LaneStopping: the lane closed while the record waited; it is redelivered later.

        """
        started = time.perf_counter()
        event: ArvoEvent | None = None
        failure: RecordDecodeError | None = None
        try:
            event = decode_record(record.value, record.headers, max_bytes=self._max_event_bytes)
        except RecordDecodeError as exc:
            failure = exc
        context = RecordContext(lane=lane, record=record, event=event, decode_error=failure, started=started)
        await self._chain(context)
        if not context.handed_off:
            assert context.outcome is not None
            self.finish(lane, record, event.type if event is not None else "", context.outcome, started)

    async def _core(self, context: RecordContext) -> None:
        lane, record, event, span = context.lane, context.record, context.event, context.span
        if event is None:
            failure = context.decode_error
            assert failure is not None
            await self._publisher.dead_letter(lane, record, reason=failure.reason, error=failure, attempts=1)
            context.outcome = ExecutionOutcome.DEAD_LETTERED.value
            fail_span(span, failure, record_exception=True)
            return
        handler = self._handlers.get(record.topic)
        if handler is None:
            error = LookupError(f"no handler consumes topic {record.topic!r}")
            await self._publisher.dead_letter(lane, record, reason="no_handler", error=error, attempts=1)
            context.outcome = ExecutionOutcome.DEAD_LETTERED.value
            fail_span(span, error, record_exception=True)
            return
        executed = await self._execute_with_retries(context, handler, event)
        if isinstance(executed, Handoff):
            # Created in the record's context: the ``send`` spans stay the span's children.
            self._publisher.hand_off(lane, record, event, executed, context.started)
            context.handed_off = True
            context.outcome = executed.outcome
            return
        context.outcome = executed

    async def _execute_with_retries(
        self, context: RecordContext, handler: ArvoHandler, event: ArvoEvent
    ) -> str | Handoff:
        lane, record, span = context.lane, context.record, context.span
        instance = instance_key(event.subject)
        await self._publisher.wait_for_instance(lane, instance)
        budget = self._failure_budget()
        waited_for: str | None = None
        while True:
            budget.begin_attempt()
            try:
                result = await self._execute(handler, event)
                if result.timers and self._timers is not None:
                    await self._schedule(record, event, result.timers)
            except Exception as exc:  # decided below; the loop never dies on input
                if span.is_recording():
                    span.record_exception(exc)
                decision = budget.decide(exc)
                if isinstance(decision, WaitForDependency):
                    waited_for = decision.dependency
                    await self._wait_for_dependency(lane, record, event, exc, decision)
                    continue
                if isinstance(decision, RetryLater):
                    await self._retry_later(lane, record, event, exc, decision)
                    continue
                if isinstance(decision, DeadLetterNow):
                    await self._publisher.dead_letter(
                        lane,
                        record,
                        reason=decision.reason,
                        error=exc,
                        attempts=budget.attempts,
                        handler=handler.source,
                    )
                    if decision.reason != FOREIGN_SOURCE:  # a forged reply says nothing about the instance
                        await self.mark_instance(
                            record, event, handler.source, reason=decision.reason, error=exc
                        )
                    fail_span(span, exc)
                    return ExecutionOutcome.DEAD_LETTERED.value
                assert isinstance(decision, Park)
                await self._park(lane, record, handler, event, exc, attempts=budget.attempts)
                fail_span(span, exc)
                return ExecutionOutcome.PARKED.value
            if waited_for is not None:
                self._dependencies.report_up(waited_for)
            if result.outcome is ExecutionOutcome.IGNORED_NO_STATE:
                await self._no_state(lane, record, handler, event, attempts=budget.attempts)
            elif result.outcome is ExecutionOutcome.SYSTEM_ERROR:
                _log_system_error(handler.source, event, result.events)
            if result.events:
                return Handoff(
                    instance=instance,
                    events=list(result.events),
                    outcome=str(result.outcome.value),
                    attempts=budget.attempts,
                    handler=handler.source,
                )
            return str(result.outcome.value)

    async def _execute(self, handler: ArvoHandler, event: ArvoEvent) -> ExecutionResult:
        """One attempt, inside the record's span: the handler span is its child (``CONTEXT``).

        Bounded by ``handler_timeout_s`` through the shared :class:`ExecutionDeadlines` (one timer
        for every running execution, not one per record).
        """
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines
        deadlines.enter(task)
        try:
            result = await handler.execute(event, inherit_from="CONTEXT")
        except asyncio.CancelledError:
            if deadlines.leave(task, cancelled=True):
                raise await self._timed_out(handler, event) from None
            if task.cancelling():
                raise  # the lane itself is being cancelled (drain timeout)
            # Leaked from the handler's own tasks: a failure of this execution, not ours.
            raise HandlerCancelledError(
                f"handler {handler.source!r} raised CancelledError without being cancelled"
            ) from None
        except TimeoutError as error:
            deadlines.leave(task, cancelled=False)
            if task.cancelling():
                raise
            raise await self._timed_out(handler, event) from error
        except BaseException:
            deadlines.leave(task, cancelled=False)
            raise
        deadlines.leave(task, cancelled=False)
        return result

    async def _timed_out(self, handler: ArvoHandler, event: ArvoEvent) -> TimeoutError:
        """The error of an execution that timed out: the store's outage, or the handler's timeout."""
        if not await self._store_answers():
            # The execution waited on a store that stopped answering (frozen, overloaded): an
            # outage, not the handler's fault — the record waits for it without spending its budget.
            return StoreStalledError(
                f"handler {handler.source!r} timed out while its store did not answer PING: "
                "waiting for the store"
            )
        return HandlerTimeoutError(
            f"handler {handler.source!r} did not finish {event.type} (id={event.id}) within"
            f" ARVO_HANDLER_TIMEOUT_S={self._handler_timeout_s:g} s; raise it if the work is"
            " legitimately slow, keep it below ARVO_LEASE_TTL_MS"
        )

    async def _schedule(self, record: Any, event: ArvoEvent, timers: Sequence[tuple[str, int]]) -> None:
        """Add the hints of the timers an execution armed to its partition's schedule.

        After the commit, before the record is done: if this fails the record is retried, and the
        re-execution (a replay of the committed step) returns the instance's pending timers again.
        """
        assert self._timers is not None
        await self._timers.schedule(
            partition_key(record.topic, record.partition),
            [ScheduledTimer(event.subject, timer_id, due_ms) for timer_id, due_ms in timers],
        )

    async def _store_answers(self) -> bool:
        """Whether the memory store answers now (``True`` without one); bounded, untraced."""
        if self._memory is None:
            return True
        return await memory_answers(self._memory, timeout_s=_STORE_CHECK_S)

    async def _wait_for_dependency(
        self, lane: Lane, record: Any, event: ArvoEvent, error: Exception, decision: WaitForDependency
    ) -> None:
        """Wait until ``decision.dependency`` is back (or its backoff passed); no budget is spent.

        The outage is logged once by the monitor, not per record.
        """
        self._dependencies.report_down(decision.dependency, error)
        self._stats.dependency_waits[decision.dependency] += 1
        _log.debug(
            "dependency unavailable; the record waits",
            **record_fields(record, event),
            dependency=decision.dependency,
            error=repr(error),
        )
        await lane.wait_for(self._dependencies.up_event(decision.dependency), decision.delay_s)

    async def _no_state(
        self, lane: Lane, record: Any, handler: ArvoHandler, event: ArvoEvent, *, attempts: int
    ) -> None:
        """An event for an instance without state: never silent (its state was lost or expired)."""
        _log.warning(
            "event for an instance without state (lost or expired); "
            + ("dead-lettering it (reason no_state)" if self._dead_letter_no_state else "dropping it"),
            **record_fields(record, event),
            source=event.source,
            handler=handler.source,
        )
        if self._dead_letter_no_state:
            error = LookupError(
                f"no state for instance {instance_key(event.subject)!r} of {handler.source!r}: event"
                f" {event.id} ({event.type} from {event.source}) is not its init event. The state was"
                " lost (Redis restarted without durability) or expired (ARVO_INSTANCE_RETENTION_S);"
                " replay this letter after restoring it."
            )
            await self._publisher.dead_letter(lane, record, reason=NO_STATE, error=error, attempts=attempts)

    async def _retry_later(
        self, lane: Lane, record: Any, event: ArvoEvent, error: Exception, decision: RetryLater
    ) -> None:
        error_class = type(error).__name__
        self._stats.retries[(record.topic, error_class)] += 1
        self._hooks.on_retry(record.topic, error_class)
        _log.warning(
            "transient failure; retrying in place",
            **record_fields(record, event),
            error_class=error_class,
            error=str(error)[:500],
            attempt=decision.attempt,
            delay_s=round(decision.delay_s, 3),
        )
        await lane.sleep(decision.delay_s)

    async def _park(
        self,
        lane: Lane,
        record: Any,
        handler: ArvoHandler,
        event: ArvoEvent,
        error: BaseException,
        *,
        attempts: int,
    ) -> None:
        self._stats.parked += 1
        parked = ExecutionOutcome.PARKED.value
        await self._publisher.dead_letter(
            lane, record, reason=parked, error=error, attempts=attempts, handler=handler.source
        )
        await self.mark_instance(record, event, handler.source, reason=parked, error=error, attempts=attempts)

    async def _emissions_gave_up(
        self, record: Any, event: ArvoEvent, handler_source: str, gave_up: GiveUp
    ) -> None:
        await self.mark_instance(record, event, handler_source, reason=gave_up.reason, error=gave_up.error)

    async def mark_instance(
        self,
        record: Any,
        event: ArvoEvent,
        handler_source: str,
        *,
        reason: str,
        error: BaseException,
        attempts: int | None = None,
    ) -> None:
        """Mark the orchestration of a dead-lettered event ``parked``: no instance waits silently.

        The handler's own instance always; the orchestration that called a stateless service only
        when its record lives in this memory (a service of another deployment cannot reach it). The
        reason names the dead letter's coordinates, so ``arvo instances list --status parked`` and
        ``arvo inspect`` point at what to replay.
        """
        if self._memory is None:
            return
        parsed = orchestration_subject(event.subject)
        if parsed is None:
            return
        key = parsed.instance_key
        owned = parsed.name == handler_source
        tries = f"after {attempts} attempts; " if attempts is not None else ""
        coordinates = f"{record.topic}/{record.partition}@{record.offset}"
        text = (
            f"{type(error).__name__}: {str(error)[:300]} ({tries}dead letter '{reason}' of {coordinates},"
            f" event {event.type} id={event.id} handled by {handler_source})"
        )
        try:
            if not owned and await self._memory.inspect(key) is None:
                return
            await self._memory.set_status(key, InstanceStatus.PARKED, reason=text)
        except Exception as exc:  # the dead letter is the source of truth; log the miss
            _log.error("could not mark instance parked", instance=key, error=repr(exc))
            return
        _log.warning("instance marked parked", instance=key, reason=reason, dead_letter_of=coordinates)


class RecordFinisher:
    """Marks records done (their offsets may be committed) and counts them; a :data:`FinishRecord`."""

    __slots__ = ("_hooks", "_stats")

    def __init__(self, stats: LoopStats, hooks: LoopHooks) -> None:
        self._stats = stats
        self._hooks = hooks

    def __call__(self, lane: Lane, record: Any, event_type: str, outcome: str, started: float) -> None:
        """Mark ``record`` of ``lane`` done with ``outcome``, ``started`` at this ``perf_counter``."""
        lane.tracker.done(record.offset)
        lane.progress_at = time.monotonic()
        self._stats.consumed[(record.topic, event_type, outcome)] += 1
        self._hooks.on_consumed(record.topic, event_type, outcome, time.perf_counter() - started)


def instance_key(subject: str) -> str:
    """What orders a lane's records: the orchestration instance of ``subject``, else the subject."""
    parsed = orchestration_subject(subject)
    return subject if parsed is None else parsed.instance_key


def _log_system_error(handler_source: str, event: ArvoEvent, emitted: Sequence[ArvoEvent]) -> None:
    """One WARNING line for a handler failure that became a system error event (the failure's log line)."""
    for error_event in emitted:
        if not (error_event.type.startswith("sys.") and error_event.type.endswith(".error")):
            continue
        data = error_event.data if isinstance(error_event.data, dict) else {}
        _log.warning(
            "handler failed; system error sent to the initiator",
            handler=handler_source,
            event_id=event.id,
            event_type=event.type,
            subject=event.subject,
            error_class=str(data.get("errorName", "")),
            error=str(data.get("errorMessage", ""))[:500],
            system_error_type=error_event.type,
            system_error_to=error_event.to,
        )
        return


def owned_instance_key(subject: str, handler_source: str) -> str | None:
    """The instance key of ``subject`` if the handler owns that orchestration, else ``None``.

    Only the orchestrator/resumable named in the subject owns the instance; a stateless service
    handler failing on an orchestration's subject does not park the orchestration.
    """
    parsed = orchestration_subject(subject)
    if parsed is None or parsed.name != handler_source:
        return None
    return parsed.instance_key
