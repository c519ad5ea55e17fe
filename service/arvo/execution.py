"""What every Arvo handler kind (event handler, orchestrator, resumable) offers its caller.

The consumer loop (or the in-memory broker) calls :meth:`ArvoHandler.execute` for every event on the
handler's topic. Violations are raised (retry or dead-letter is the caller's decision); everything
else comes back as an :class:`ExecutionResult`: the events to publish and what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent

__all__ = ["ArvoHandler", "ExecutionOutcome", "ExecutionResult", "InheritFrom"]

InheritFrom = Literal["EVENT", "CONTEXT"]
"""Where the handler span takes its parent from: the event's ``traceparent`` or the active context."""


class ExecutionOutcome(StrEnum):
    """What happened to one consumed event, for metrics and logs: the one outcome vocabulary.

    The handlers return every member but the last two in :attr:`ExecutionResult.outcome`; the
    consumer adds :attr:`DEAD_LETTERED` and :attr:`PARKED` for events no handler result exists for.
    The values are metric labels: they never change.
    """

    EXECUTED = "ok"
    """The handler ran; ``events`` are its emissions (possibly none)."""
    SYSTEM_ERROR = "system_error"
    """The handler failed with a non-violation error; ``events`` are the system error events."""
    REPLAYED = "replayed"
    """The event was the instance's last consumed event (a redelivery): stored emissions re-published."""
    DUPLICATE_DROPPED = "duplicate_dropped"
    """The event was consumed earlier (not last): dropped without effect."""
    IGNORED_FOREIGN_SUBJECT = "ignored_foreign_subject"
    """The subject names another orchestrator."""
    IGNORED_NO_STATE = "ignored_no_state"
    """Not an init event and no instance exists."""
    IGNORED_FAILED = "ignored_failed"
    """The instance failed earlier; the event is ignored."""
    IGNORED_DONE = "ignored_done"
    """The instance completed earlier; the event is ignored."""
    CANCELLED = "cancelled"
    """A cancel event (``arvo.instance.cancel``) stopped its instance; ``events`` are the system error events
    to the initiator and the cancel events of the instance's child orchestrations."""
    IGNORED_CANCELLED = "ignored_cancelled"
    """The instance was cancelled earlier; the event (a late reply) is ignored, not dead-lettered."""
    NOTHING_TO_CANCEL = "nothing_to_cancel"
    """A cancel event for an instance that is finished (done, failed, cancelled) or unknown: a no-op."""
    TIMED_OUT = "timed_out"
    """The instance's deadline passed (its deadline timer fired): stopped like a cancellation, status
    ``timed_out``; ``events`` are the system error events and the children's cancel events."""
    IGNORED_STALE_TIMER = "ignored_stale_timer"
    """A timer event for a timer the instance no longer has pending (it fired already, its state was
    left, the instance finished or expired): ignored without effect."""
    DEAD_LETTERED = "dead_lettered"
    """Sent to the dead-letter topic at once: undecodable, a permanent violation, or no handler."""
    PARKED = "parked"
    """Transient failures exhausted the retries: sent to the dead-letter topic, the instance parked."""


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """Events to publish (in order) and the outcome of one execution."""

    events: list[ArvoEvent] = field(default_factory=list)
    outcome: ExecutionOutcome = ExecutionOutcome.EXECUTED
    timers: tuple[tuple[str, int], ...] = ()
    """Timers of an orchestration instance to schedule, as ``(timer id, due ms)``: those the event
    armed (all the instance's pending timers when it was a redelivery, replayed), which the consumer
    adds to its partition's schedule (:mod:`service.arvo.orchestration.timers`). Empty for other
    handlers."""


@runtime_checkable
class ArvoHandler(Protocol):
    """Common interface of event handlers, orchestrators and resumables (spec 5.0)."""

    @property
    def source(self) -> str:
        """The event type this handler consumes; it subscribes to the topic of this name."""
        ...

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        """Process one event; raise violations, return everything else as events."""
        ...
