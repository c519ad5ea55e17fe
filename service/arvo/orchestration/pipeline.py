"""The execution pipeline of the seed sequence diagrams, shared by orchestrators and resumables.

Per event: span → subject validation → ownership check → lease + state read (one memory call) →
deduplication → failure short-circuit → init check → core function (machine or resumable) →
emittable creation → commit + lease release (one memory call). The lease is released on every
path that does not commit. Violations are raised; any other error becomes system error events and
a failure record that keeps the previous record.

The checks between the state read and the core are one pure function, :func:`decide`: from the
parsed subject, the handler's source, the event and the stored record (an
:class:`~service.arvo.orchestration.record.InstanceRecord`) it returns a :data:`Decision` —
:class:`Replay`, :class:`DropDuplicate`, :class:`Ignore`, :class:`VersionMismatch`, :class:`Cancel`
or :class:`Proceed`. :class:`OrchestrationPipeline` carries out the effects: lease, span, core run,
emittables, system errors, commit, release.

Cancellation (:mod:`service.arvo.orchestration.cancellation`): a cancel event (``arvo.instance.cancel``) is
decided before any contract is resolved. It stops an active instance (:class:`Cancel`: the record
becomes ``cancelled``, the initiator gets a system error naming the cancellation and its reason, the
instance's child orchestrations get cancel events); for a finished or unknown instance it is a no-op
(``nothing_to_cancel``); every later event of a cancelled instance is ignored
(``ignored_cancelled``).

Improvements over the original (documented in ``docs/differences.md``):

* every emitted id and child subject is derived deterministically from the consumed event;
* the record keeps a bounded ring of consumed ``(domain, id)`` keys: the last consumed event is
  *replayed* (its stored emissions returned again, byte-identical), older duplicates are dropped;
* the failure record is JSON (``errorName``, ``errorMessage``, ``errorStack``) and keeps the
  previous record; completion is a flag, not an output comparison;
* a redelivered or second init event never overwrites the stored parent subject.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never, cast

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from service.arvo.blocking import enter_handler, leave_handler
from service.arvo.contract import SystemErrorRecord, VersionedArvoContract
from service.arvo.errors import (
    ConfigViolation,
    ExecutionViolation,
    SubjectError,
    TransactionViolation,
    TransactionViolationCause,
    is_violation_error,
)
from service.arvo.event import ArvoEvent, create_timestamp
from service.arvo.execution import ExecutionOutcome, ExecutionResult, InheritFrom
from service.arvo.factory import error_data
from service.arvo.machine.engine import event_time_ms
from service.arvo.memory import InstanceStatus, Lease, LeaseGrant, LeaseLostError, Memory, StateReadError
from service.arvo.orchestration.cancellation import (
    OrchestrationCancelledError,
    cancel_reason,
    cancellation_message,
    child_cancel_events,
    is_cancel_event,
    push_children,
)
from service.arvo.orchestration.emittables import EmissionContext, RawEvent, create_emittables
from service.arvo.orchestration.input_validation import ReplySourceCheck, validate_reply_source_check
from service.arvo.orchestration.record import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_EVENTS,
    EventsFields,
    InstanceRecord,
    KindFields,
    push_emitted_ids,
    push_history,
)
from service.arvo.orchestration.system_errors import create_system_error_events
from service.arvo.orchestration.timers import (
    DEADLINE_EXTENSION,
    OrchestrationTimedOutError,
    TimerEntry,
    deadline_entry,
    deadline_ms_of,
    format_time_ms,
    is_timer_event,
    merge_timers,
    pending_timer,
    record_timers,
    stored_deadline,
    timer_of,
)
from service.arvo.subject import ArvoOrchestrationSubject, ParsedSubject
from service.arvo.telemetry import (
    TraceHeaders,
    exception_to_span,
    handler_span,
    log_to_span,
    set_emittables_attributes,
)

__all__ = [
    "CONSUMED_RING_SIZE",
    "RECORD_SCHEMA_VERSION",
    "Cancel",
    "CoreRequest",
    "CoreResult",
    "Decision",
    "DropDuplicate",
    "EmissionDomains",
    "Ignore",
    "LeaseDeniedViolation",
    "OrchestrationPipeline",
    "PipelineHandler",
    "Proceed",
    "Replay",
    "VersionMismatch",
    "consumed_key",
    "decide",
    "foreign_subject",
    "legacy_consumed_key",
    "validate_lease_ttl_ms",
]

RECORD_SCHEMA_VERSION = 1
CONSUMED_RING_SIZE = 64
"""How many consumed event keys an instance remembers for deduplication."""
DEFAULT_LEASE_TTL_MS = 30_000


class LeaseDeniedViolation(TransactionViolation):
    """``LOCK_UNACQUIRED``: another holder has the instance's lease; says how long it still runs.

    The consumer uses :attr:`holder_ttl_ms` to wait until the holder's lease has run out (a crashed
    worker's lease blocks its instance for at most the TTL) instead of giving up before it does.

    Attributes:
        holder_ttl_ms: The holder's remaining lease in milliseconds, ``None`` when unknown or unbounded.

    """

    def __init__(
        self, *, message: str, initiating_event: object | None = None, holder_ttl_ms: int | None = None
    ) -> None:
        super().__init__(
            cause=TransactionViolationCause.LOCK_UNACQUIRED,
            message=message,
            initiating_event=initiating_event,
        )
        self.holder_ttl_ms = holder_ttl_ms


def validate_lease_ttl_ms(value: int) -> int:
    """Return ``value`` if it is a positive integer number of milliseconds, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"lease_ttl_ms must be a positive integer of milliseconds, got {value!r}")
    return value


def consumed_key(event: ArvoEvent) -> str:
    """The deduplication key of ``event``: ``@<source>/<domain>/<id>``.

    The CloudEvents identity (``source`` and ``id``: an id is unique per source only) and the domain.
    The source is percent-escaped (``%``, ``/``), domains never contain ``/``, so the key is
    unambiguous; it starts with ``@``, which no domain does, so it never equals a
    :func:`legacy_consumed_key`.
    """
    source = event.source.replace("%", "%25").replace("/", "%2F")
    return f"@{source}/{event.domain or ''}/{event.id}"


def legacy_consumed_key(event: ArvoEvent) -> str:
    """The deduplication key records written before the source was part of it hold: ``<domain>/<id>``.

    Still matched while such entries are in an instance's ring (it is bounded: they age out), so a
    redelivery across an upgrade is still recognised.
    """
    return f"{event.domain or ''}/{event.id}"


# ------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True, slots=True)
class Replay:
    """The event is the instance's last consumed one (a redelivery): publish its stored emissions again.

    Attributes:
        produced: The stored JSON of the events the first execution produced, in order.

    """

    produced: Sequence[Mapping[str, Any]]

    @property
    def outcome(self) -> ExecutionOutcome:
        """:attr:`ExecutionOutcome.REPLAYED`."""
        return ExecutionOutcome.REPLAYED


@dataclass(frozen=True, slots=True)
class DropDuplicate:
    """The event was consumed earlier, but not last: drop it without effect."""

    @property
    def outcome(self) -> ExecutionOutcome:
        """:attr:`ExecutionOutcome.DUPLICATE_DROPPED`."""
        return ExecutionOutcome.DUPLICATE_DROPPED


@dataclass(frozen=True, slots=True)
class Ignore:
    """Do nothing with the event, and say why.

    Attributes:
        outcome: ``IGNORED_FOREIGN_SUBJECT`` (the subject names another orchestrator),
            ``IGNORED_NO_STATE`` (no instance, and not an init event) or ``IGNORED_FAILED`` (the
            instance failed earlier).
        reason: The message logged on the span.

    """

    outcome: ExecutionOutcome
    reason: str


@dataclass(frozen=True, slots=True)
class VersionMismatch:
    """The subject pins another version than the stored instance's: a :class:`ConfigViolation`.

    A snapshot of one machine version is never loaded into another.

    Attributes:
        message: The violation's message (names both versions, the instance and the event id).

    """

    message: str

    def violation(self) -> ConfigViolation:
        """The violation to raise."""
        return ConfigViolation(self.message)


@dataclass(frozen=True, slots=True)
class Proceed:
    """Run the core for the event.

    Attributes:
        parent_subject: The parent orchestration's subject (stored, or from the init event's
            ``parentSubject$$``), ``None`` for a root orchestration.
        init_event_id: The id of the instance's init event (stored, or this event's).
        timer: The pending timer a timer event fires (``None`` for other events).

    """

    parent_subject: str | None
    init_event_id: str
    timer: TimerEntry | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """A cancel event for an active instance: stop it (see :mod:`~service.arvo.orchestration.cancellation`).

    Attributes:
        parent_subject: The stored parent orchestration's subject (``None`` for a root).
        init_event_id: The stored id of the instance's init event.
        reason: The cancel event's reason (the deadline, for a timeout).
        timed_out: Stopped by the instance's deadline timer, not by a cancel event.

    """

    parent_subject: str | None
    init_event_id: str
    reason: str
    timed_out: bool = False

    @property
    def outcome(self) -> ExecutionOutcome:
        """:attr:`ExecutionOutcome.CANCELLED`, or :attr:`ExecutionOutcome.TIMED_OUT` for a deadline."""
        return ExecutionOutcome.TIMED_OUT if self.timed_out else ExecutionOutcome.CANCELLED


Decision = Replay | DropDuplicate | Ignore | VersionMismatch | Cancel | Proceed
"""What the pipeline does with one event, decided by :func:`decide` from the event and the record."""


def foreign_subject(parsed: ParsedSubject, source: str) -> Ignore | None:
    """The :class:`Ignore` of an event whose subject names another orchestrator than ``source``.

    The pipeline asks this before taking the lease (a foreign event must not lease an instance);
    :func:`decide` starts with the same check, so that it is total.
    """
    if parsed.name == source:
        return None
    return Ignore(
        ExecutionOutcome.IGNORED_FOREIGN_SUBJECT,
        f"Event subject mismatch - expected '{source}' but got '{parsed.name}'",
    )


def decide(parsed: ParsedSubject, source: str, event: ArvoEvent, record: InstanceRecord | None) -> Decision:
    """Decide what to do with ``event`` (pure: no I/O, no span), in this order.

    1. The subject names another orchestrator → :class:`Ignore` (foreign subject).
    2. With a stored ``record``: the event is the last consumed one → :class:`Replay`; consumed
       earlier → :class:`DropDuplicate`; the subject's version differs from the stored one →
       :class:`VersionMismatch`; a timer event (``arvo.instance.timer``) → :class:`Ignore` (stale timer)
       unless the live instance's record still lists that timer with that due time, then
       :class:`Cancel` (timed out) for the deadline timer, else :class:`Proceed` with the timer;
       the instance was cancelled → :class:`Ignore` (cancelled; a cancel
       event: nothing to cancel); the instance failed → :class:`Ignore` (failed; a cancel event:
       nothing to cancel); a cancel event → :class:`Ignore` (nothing to cancel) when the instance
       completed, else :class:`Cancel`; else :class:`Proceed` with the stored parent subject and init
       event id (this event's id when none is stored).
    3. Without a record: a timer event → :class:`Ignore` (stale timer); a cancel event →
       :class:`Ignore` (nothing to cancel); another event than
       the init event (type ``source``) → :class:`Ignore` (no state); the init event →
       :class:`Proceed` with its ``parentSubject$$`` (a non-empty string, else ``None``) and its own id.

    Args:
        parsed: The event's parsed orchestration subject.
        source: The handler's source (its init event type, ``arvo.orc.<name>``).
        event: The consumed event.
        record: The stored instance record, ``None`` when there is none.

    """
    foreign = foreign_subject(parsed, source)
    if foreign is not None:
        return foreign
    cancel = is_cancel_event(event)
    timer = is_timer_event(event)
    if record is None:
        if timer:
            return _stale_timer(parsed, event, "the instance does not exist (or expired)")
        if cancel:
            return _nothing_to_cancel(parsed, event, "does not exist")
        if event.type != source:
            return Ignore(
                ExecutionOutcome.IGNORED_NO_STATE,
                f"Invalid initialization event detected. Expected type '{source}' but received "
                f"'{event.type}'.",
            )
        requested_parent = event.data.get("parentSubject$$")
        return Proceed(
            parent_subject=requested_parent
            if isinstance(requested_parent, str) and requested_parent
            else None,
            init_event_id=event.id,
        )
    key = consumed_key(event)
    legacy = legacy_consumed_key(event)
    ring = record.get("consumedIds") or []
    if ring and ring[-1] in (key, legacy):
        return Replay(tuple(record.get("events", {}).get("produced") or []))
    if key in ring or legacy in ring:
        return DropDuplicate()
    stored_version = record.get("version")
    if stored_version is not None and stored_version != parsed.version:
        return VersionMismatch(
            f"Subject version '{parsed.version}' does not match the version '{stored_version}' "
            f"of instance {parsed.instance_key} (event id={event.id})"
        )
    if timer:
        return _decide_timer(
            parsed, event, record, record.get("parentSubject"), record.get("initEventId") or event.id
        )
    if record.get("executionStatus") == "cancelled" or record.get("status") in ("cancelled", "timed_out"):
        if cancel:
            return _nothing_to_cancel(parsed, event, "was already cancelled")
        return Ignore(
            ExecutionOutcome.IGNORED_CANCELLED,
            "The orchestration was cancelled. Ignoring event id: "
            f"{event.id} (type {event.type}) with event subject: {event.subject}",
        )
    if record.get("executionStatus") == "failure":
        if cancel:
            return _nothing_to_cancel(parsed, event, "has already failed")
        return Ignore(
            ExecutionOutcome.IGNORED_FAILED,
            "The orchestration has failed in a previous event. Ignoring event id: "
            f"{event.id} with event subject: {event.subject}",
        )
    parent_subject = record.get("parentSubject")
    init_event_id = record.get("initEventId") or event.id
    if cancel:
        if record.get("completed") or record.get("status") == "done":
            return _nothing_to_cancel(parsed, event, "is already done")
        return Cancel(parent_subject=parent_subject, init_event_id=init_event_id, reason=cancel_reason(event))
    return Proceed(parent_subject=parent_subject, init_event_id=init_event_id)


def _decide_timer(
    parsed: ParsedSubject,
    event: ArvoEvent,
    record: InstanceRecord,
    parent_subject: str | None,
    init_event_id: str,
) -> Decision:
    """A timer event for a stored instance: fire it when the record still has it pending, else stale."""
    if record.get("executionStatus") not in (None, "normal") or record.get("status") not in (
        None,
        "active",
        "parked",
    ):
        return _stale_timer(parsed, event, f"the instance is {record.get('status')}")
    if record.get("completed"):
        return _stale_timer(parsed, event, "the instance is done")
    fired = timer_of(event)
    entry = pending_timer(record, *fired) if fired is not None else None
    if entry is None:
        return _stale_timer(parsed, event, "the timer is not pending (fired already, or its state was left)")
    if entry["kind"] == "deadline":
        return Cancel(
            parent_subject=parent_subject,
            init_event_id=init_event_id,
            reason=f"deadline {format_time_ms(entry['dueMs'])} passed",
            timed_out=True,
        )
    return Proceed(parent_subject=parent_subject, init_event_id=init_event_id, timer=entry)


def _stale_timer(parsed: ParsedSubject, event: ArvoEvent, why: str) -> Ignore:
    return Ignore(
        ExecutionOutcome.IGNORED_STALE_TIMER,
        f"Stale timer event id={event.id} for instance {parsed.instance_key}: {why}",
    )


def _nothing_to_cancel(parsed: ParsedSubject, event: ArvoEvent, state: str) -> Ignore:
    return Ignore(
        ExecutionOutcome.NOTHING_TO_CANCEL,
        f"Nothing to cancel: instance {parsed.instance_key} {state} (cancel event id={event.id} "
        f"from {event.source})",
    )


@dataclass(frozen=True, slots=True)
class _Write:
    """A step's record to commit (with the instance status) and the result to return after it."""

    record: InstanceRecord
    status: InstanceStatus
    result: ExecutionResult


@dataclass(frozen=True, slots=True)
class EmissionDomains:
    """Default domains of emissions that do not name their own (spec 6.1 / 7.1)."""

    system_error: Sequence[str | None] = ("domain.orchestration.context",)
    services: Sequence[str | None] = (None,)
    complete: Sequence[str | None] = ("domain.orchestration.context",)


@dataclass(frozen=True, slots=True)
class CoreRequest:
    """Input of a core function (the machine run or the resumable handler)."""

    event: ArvoEvent
    subject: ParsedSubject
    record: InstanceRecord | None
    parent_subject: str | None
    init_event_id: str
    span: Span
    timer: TimerEntry | None = None
    """The pending timer this event fires (a timer event), ``None`` for any other event."""


@dataclass(slots=True)
class CoreResult:
    """Output of a core function: raw emissions plus the kind-specific part of the new record."""

    raw_events: list[RawEvent]
    self_contract: VersionedArvoContract
    service_contracts: Mapping[str, VersionedArvoContract]
    status: Literal["active", "done"]
    completed: bool
    fields: KindFields = field(default_factory=KindFields)
    """The kind-specific top-level record fields (machine snapshot, resumable state)."""
    events_fields: EventsFields = field(default_factory=EventsFields)
    """Kind-specific ``events.*`` record fields known before the events are created."""
    outcome: ExecutionOutcome = ExecutionOutcome.EXECUTED
    finalize_events_fields: Callable[[list[ArvoEvent]], EventsFields] | None = None
    """Computes further ``events.*`` record fields from the created events (resumables: expected ids)."""
    timers: list[TimerEntry] = field(default_factory=list)
    """The kind's pending timers after the step (a statechart's delayed transitions), any order."""


CoreFunction = Callable[[CoreRequest], Awaitable[CoreResult]]


class OrchestrationPipeline:
    """Runs one core function per event under a lease, with deduplication and an outbox record."""

    def __init__(
        self,
        *,
        source: str,
        kind: Literal["orchestrator", "resumable"],
        memory: Memory,
        core: CoreFunction,
        error_contract: VersionedArvoContract,
        executionunits: float,
        domains: EmissionDomains,
        span_attributes: Mapping[str, Any],
        span_name: Callable[[ArvoEvent], str],
        lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        renew_lease: bool = False,
        include_error_stack: bool = False,
    ) -> None:
        self.source = source
        self.kind = kind
        self.memory = memory
        self._core = core
        self.error_contract = error_contract
        self._executionunits = executionunits
        self.domains = domains
        self._span_attributes = dict(span_attributes)
        self._execution_attributes = {
            "arvo.handler.execution.type": kind,
            "arvo.handler.execution.status": "normal",
        }
        self._span_name = span_name
        self._lease_ttl_ms = validate_lease_ttl_ms(lease_ttl_ms)
        self._renewals = _LeaseRenewals(memory, self._lease_ttl_ms) if renew_lease else None
        self.include_error_stack = include_error_stack
        self.history_events = DEFAULT_HISTORY_EVENTS
        """Entries of consumed/produced history kept in each record (0: none)."""
        self.history_bytes = DEFAULT_HISTORY_BYTES
        """Bytes of JSON history kept in each record."""
        self.reply_source_check: ReplySourceCheck = "addressed"
        """Whose replies the core accepts; ``strict`` also keeps the emitted ids in each record."""
        self.default_deadline_ms: int | None = None
        """A new instance's deadline, counted from its init event's ``time``, when the init event
        names none (``arvodeadline``); ``None``: no deadline."""

    @property
    def lease_ttl_ms(self) -> int:
        """TTL of the lease taken for every event (renewed while a long core runs)."""
        return self._lease_ttl_ms

    @lease_ttl_ms.setter
    def lease_ttl_ms(self, value: int) -> None:
        self._lease_ttl_ms = validate_lease_ttl_ms(value)
        if self._renewals is not None:
            self._renewals.set_ttl(self._lease_ttl_ms)

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        """Process ``event``; see the module docstring for the flow."""
        with handler_span(
            self._span_name(event),
            kind=SpanKind.PRODUCER,
            attributes=self._span_attributes,
            traceparent=event.traceparent,
            tracestate=event.tracestate,
            inherit_from=inherit_from,
            execution=self._execution_attributes,
            consumable=event,
        ) as (span, headers):
            # No "Starting execution for <type> on subject <subject>" log event: the span's start
            # time and its consumable.0.cloudevents.event_type / event_subject say exactly that.
            recording = span.is_recording()
            try:
                result = await self._execute(event, span, headers)
            except BaseException as error:
                if recording:
                    span.set_attribute("arvo.handler.execution.status", "failure")
                    exception_to_span(span, error)
                    log_to_span(span, "CRITICAL", f"{self.kind} violation error: {error}")
                raise
            if recording:
                if result.outcome not in (ExecutionOutcome.IGNORED_FAILED, ExecutionOutcome.SYSTEM_ERROR):
                    # OK is final in the SDK, so it is set once the outcome is known.
                    span.set_status(Status(StatusCode.OK))
                set_emittables_attributes(span, result.events)
                log_to_span(
                    span,
                    "INFO",
                    f"Execution {result.outcome} and emitted {len(result.events)} events",
                )
            return result

    def _parse_subject(self, event: ArvoEvent) -> ParsedSubject:
        try:
            return ArvoOrchestrationSubject.parse(event.subject)
        except SubjectError as error:
            raise ExecutionViolation(
                f"Invalid event (id={event.id}) subject format. Expected an ArvoOrchestrationSubject but "
                f"received '{event.subject}'. The subject must follow the format specified by "
                "ArvoOrchestrationSubject schema"
            ) from error

    async def _lease(self, event: ArvoEvent, key: str) -> LeaseGrant:
        try:
            grant = await self.memory.lease_and_read(key, ttl_ms=self.lease_ttl_ms)
        except StateReadError as error:
            raise TransactionViolation(
                cause=TransactionViolationCause.READ_FAILURE,
                message=f"Error reading state for event (subject={event.subject}): {error}",
                initiating_event=event,
            ) from error
        except Exception as error:
            raise TransactionViolation(
                cause=TransactionViolationCause.LOCK_FAILURE,
                message=f"Error acquiring lock for event (subject={event.subject}): {error}",
                initiating_event=event,
            ) from error
        if not grant.acquired or grant.lease is None:
            raise LeaseDeniedViolation(
                message="Lock acquisition denied - Unable to obtain exclusive access to event processing",
                initiating_event=event,
                holder_ttl_ms=grant.holder_ttl_ms,
            )
        return grant

    async def _commit(
        self, lease: Lease, record: Mapping[str, Any], status: InstanceStatus, event: ArvoEvent
    ) -> None:
        try:
            await self.memory.commit_and_release(lease, record, status=status)
        except LeaseLostError as error:
            raise TransactionViolation(
                cause=TransactionViolationCause.LEASE_LOST,
                message=f"Lease lost before writing state for event (subject={event.subject}): {error}",
                initiating_event=event,
            ) from error
        except Exception as error:
            raise TransactionViolation(
                cause=TransactionViolationCause.WRITE_FAILURE,
                message=f"Error writing state for event (subject={event.subject}): {error}",
                initiating_event=event,
            ) from error

    async def _release(self, lease: Lease, span: Span) -> None:
        try:
            await self.memory.release(lease)
        except Exception as error:
            log_to_span(span, "ERROR", f"Memory unlock operation failed - Possible resource leak: {error}")

    async def _run_core(self, request: CoreRequest, lease: Lease) -> CoreResult:
        # Named for the loop-lag watchdog while the machine or resumable runs (user code).
        running = enter_handler(self.source, request.event)
        try:
            if self._renewals is None:
                return await self._core(request)
            self._renewals.add(lease)
            try:
                return await self._core(request)
            finally:
                self._renewals.discard(lease)
        finally:
            leave_handler(running)

    async def _execute(self, event: ArvoEvent, span: Span, headers: TraceHeaders) -> ExecutionResult:
        parsed = self._parse_subject(event)
        if span.is_recording():
            span.set_attributes(
                {
                    "arvo.parsed.subject.orchestrator.name": parsed.name,
                    "arvo.parsed.subject.orchestrator.version": parsed.version,
                }
            )
        # Asked before the lease: an event of another orchestrator must not lease its instance.
        foreign = foreign_subject(parsed, self.source)
        if foreign is not None:
            return self._ignore(foreign, span)
        grant = await self._lease(event, parsed.instance_key)
        lease = grant.lease
        assert lease is not None
        # The memory hands out the stored JSON; the pipeline is its only writer (see record.py).
        record = cast("InstanceRecord | None", grant.record)
        try:
            step = await self._step(
                event, parsed=parsed, record=record, lease=lease, span=span, headers=headers
            )
            if isinstance(step, _Write):
                await self._commit(lease, step.record, step.status, event)
                return step.result
        except BaseException:
            await self._release(lease, span)
            raise
        await self._release(lease, span)
        return step

    async def _step(
        self,
        event: ArvoEvent,
        *,
        parsed: ParsedSubject,
        record: InstanceRecord | None,
        lease: Lease,
        span: Span,
        headers: TraceHeaders,
    ) -> ExecutionResult | _Write:
        """Act on the :func:`decide` of ``event``: a result without a write, or the record to commit."""
        decision = decide(parsed, self.source, event, record)
        match decision:
            case Cancel():
                return self._cancel(
                    event, parsed=parsed, record=record, decision=decision, span=span, headers=headers
                )
            case Proceed():
                return await self._proceed(
                    event,
                    parsed=parsed,
                    record=record,
                    decision=decision,
                    lease=lease,
                    span=span,
                    headers=headers,
                )
            case Replay(produced=produced):
                return ExecutionResult(
                    [ArvoEvent.from_json(item) for item in produced],
                    decision.outcome,
                    timers=_timer_pairs(record_timers(record)),
                )
            case DropDuplicate():
                return ExecutionResult([], decision.outcome)
            case VersionMismatch():
                raise decision.violation()
            case Ignore():
                return self._ignore(decision, span)
            case _:  # pragma: no cover - exhaustive
                assert_never(decision)

    def _ignore(self, decision: Ignore, span: Span) -> ExecutionResult:
        if decision.outcome is ExecutionOutcome.IGNORED_FAILED:
            if span.is_recording():
                span.set_attribute("arvo.handler.execution.status", "failure")
                log_to_span(span, "WARNING", decision.reason)
                span.set_status(Status(StatusCode.ERROR, decision.reason))
        else:
            log_to_span(span, "WARNING", decision.reason)
        return ExecutionResult([], decision.outcome)

    def _cancel(
        self,
        event: ArvoEvent,
        *,
        parsed: ParsedSubject,
        record: InstanceRecord | None,
        decision: Cancel,
        span: Span,
        headers: TraceHeaders,
    ) -> _Write:
        """Stop the instance: system errors to the initiator, cancel events to the children, the record."""
        assert record is not None  # decide() cancels stored instances only
        traceparent, tracestate = headers
        stop_error: Exception = (
            OrchestrationTimedOutError(f"{self.source} timed out: {decision.reason}")
            if decision.timed_out
            else OrchestrationCancelledError(cancellation_message(self.source, event))
        )
        errors = create_system_error_events(
            error=stop_error,
            event=event,
            source=self.source,
            self_contract=self.error_contract,
            kind=self.kind,
            domains=self.domains.system_error,
            parent_subject=decision.parent_subject,
            init_event_id=decision.init_event_id,
            executionunits=self._executionunits,
            traceparent=traceparent,
            tracestate=tracestate,
            include_stack=False,  # nothing was raised: there is no stack to show
        )
        children = child_cancel_events(
            record.get("children") or [],
            source=self.source,
            consumed=event,
            reason=f"parent {self.source} timed out: {decision.reason}" if decision.timed_out else None,
            executionunits=self._executionunits,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        produced = [*errors, *children]
        stopped = InstanceStatus.TIMED_OUT if decision.timed_out else InstanceStatus.CANCELLED
        if span.is_recording():
            span.set_attribute("arvo.orchestration.status", stopped.value)
            log_to_span(
                span,
                "WARNING",
                (
                    f"Orchestration timed out: {decision.reason}"
                    if decision.timed_out
                    else f"Orchestration cancelled by {event.source}: {decision.reason}"
                )
                + f" ({len(children)} child orchestrations cancelled in turn)",
            )
        now = create_timestamp()
        # The record before, where it stopped (kind-specific fields kept for `arvo inspect`), without
        # what belongs to a live or parked instance.
        kept = {
            name: value
            for name, value in record.items()
            if name not in ("history", "previous", "parkedReason", "statusReason", "timers")
        }
        cancelled = cast("InstanceRecord", kept)
        cancelled["executionStatus"] = "cancelled"
        cancelled["status"] = "timed_out" if decision.timed_out else "cancelled"
        cancelled["subject"] = event.subject
        cancelled["cancellation"] = {
            "reason": decision.reason,
            "by": "deadline" if decision.timed_out else event.source,
            "eventId": event.id,
            "at": now,
        }
        cancelled["events"] = {
            "consumed": event.to_dict(),
            "produced": [item.to_dict() for item in produced],
        }
        cancelled["consumedIds"] = _push_ring(record, consumed_key(event))
        cancelled["updatedAt"] = now
        if self.history_events > 0:
            cancelled["history"] = push_history(
                record,
                event,
                produced,
                ExecutionOutcome.CANCELLED.value,
                max_events=self.history_events,
                max_bytes=self.history_bytes,
            )
        return _Write(cancelled, stopped, ExecutionResult(produced, decision.outcome))

    async def _proceed(
        self,
        event: ArvoEvent,
        *,
        parsed: ParsedSubject,
        record: InstanceRecord | None,
        decision: Proceed,
        lease: Lease,
        span: Span,
        headers: TraceHeaders,
    ) -> _Write:
        """Run the core and build the record to commit: the new state, or a failure record."""
        parent_subject = decision.parent_subject
        init_event_id = decision.init_event_id
        request = CoreRequest(
            event=event,
            subject=parsed,
            record=record,
            parent_subject=parent_subject,
            init_event_id=init_event_id,
            span=span,
            timer=decision.timer,
        )
        traceparent, tracestate = headers
        try:
            deadline = self._deadline(event, record)
            result = await self._run_core(request, lease)
            events = create_emittables(
                result.raw_events,
                EmissionContext(
                    source=self.source,
                    source_event=event,
                    self_contract=result.self_contract,
                    service_contracts=result.service_contracts,
                    parent_subject=parent_subject,
                    init_event_id=init_event_id,
                    executionunits=self._executionunits,
                    traceparent=traceparent,
                    tracestate=tracestate,
                ),
                default_domains=self.domains.services,
            )
        except Exception as error:
            if is_violation_error(error):
                raise
            errors = create_system_error_events(
                error=error,
                event=event,
                source=self.source,
                self_contract=self.error_contract,
                kind=self.kind,
                domains=self.domains.system_error,
                parent_subject=parent_subject,
                init_event_id=init_event_id,
                executionunits=self._executionunits,
                traceparent=traceparent,
                tracestate=tracestate,
                include_stack=self.include_error_stack,
            )
            if span.is_recording():
                span.set_attribute("arvo.handler.execution.status", "failure")
                exception_to_span(span, error)
                log_to_span(span, "ERROR", f"{self.kind} execution failed: {error}")
            failure = self._failure_record(
                event=event,
                parsed=parsed,
                record=record,
                error=error,
                errors=errors,
                parent_subject=parent_subject,
                init_event_id=init_event_id,
                key=consumed_key(event),
            )
            return _Write(
                failure, InstanceStatus.FAILED, ExecutionResult(errors, ExecutionOutcome.SYSTEM_ERROR)
            )
        if span.is_recording():
            span.set_attribute("arvo.orchestration.status", result.status)
        if deadline is not None:
            events = _carry_deadline(events, deadline["dueMs"], own_subject=event.subject)
        timers = [] if result.status == "done" else merge_timers(result.timers, deadline)
        finalized: EventsFields = (
            result.finalize_events_fields(events) if result.finalize_events_fields is not None else {}
        )
        new_record: InstanceRecord = {
            "schemaVersion": RECORD_SCHEMA_VERSION,
            "kind": self.kind,
            "executionStatus": "normal",
            "status": result.status,
            "completed": result.completed,
            "subject": event.subject,
            "parentSubject": parent_subject,
            "initEventId": init_event_id,
            "orchestrator": parsed.name,
            "version": parsed.version,
            # One literal keeps the stored key order. mypy cannot prove that a KindFields value
            # carries none of the failure-only keys (a structural subtype might): hence the ignore.
            **result.fields,  # type: ignore[typeddict-item]
            "events": {
                "consumed": event.to_dict(),
                "produced": [emitted.to_dict() for emitted in events],
                **result.events_fields,
                **finalized,
            },
            "consumedIds": _push_ring(record, consumed_key(event)),
            "updatedAt": create_timestamp(),
        }
        if self.history_events > 0:
            new_record["history"] = push_history(
                record,
                event,
                events,
                str(result.outcome.value),
                max_events=self.history_events,
                max_bytes=self.history_bytes,
            )
        children = push_children(
            record, events, subject=event.subject, complete_type=result.self_contract.complete_event_type
        )
        if children:
            new_record["children"] = children
        if timers:
            new_record["timers"] = timers
        if self.reply_source_check == "strict":
            new_record["emittedIds"] = push_emitted_ids(record, events)
        status = InstanceStatus.DONE if result.status == "done" else InstanceStatus.ACTIVE
        # Only the timers this step armed: the earlier ones were scheduled by the steps that armed them.
        armed_before = set(_timer_pairs(record_timers(record)))
        armed = tuple(pair for pair in _timer_pairs(timers) if pair not in armed_before)
        written = ExecutionResult(events, result.outcome, timers=armed)
        return _Write(new_record, status, written)

    def _deadline(self, event: ArvoEvent, record: InstanceRecord | None) -> TimerEntry | None:
        """The instance's deadline timer: stored, else (a new instance) the init event's or the default.

        Raises:
            TypeError, ValueError: the init event's ``arvodeadline`` is not an RFC 3339 time string
                (the instance fails: a system error to its initiator).

        """
        if record is not None:
            return stored_deadline(record)
        requested = deadline_ms_of(event)
        if requested is not None:
            return deadline_entry(requested)
        if self.default_deadline_ms is not None:
            return deadline_entry(int(event_time_ms(event)) + self.default_deadline_ms)
        return None

    def _failure_record(
        self,
        *,
        event: ArvoEvent,
        parsed: ParsedSubject,
        record: InstanceRecord | None,
        error: BaseException,
        errors: list[ArvoEvent],
        parent_subject: str | None,
        init_event_id: str,
        key: str,
    ) -> InstanceRecord:
        previous: InstanceRecord | None = None
        if record is not None:
            # Without its own ``previous`` and ``history`` (the failure record carries the history).
            previous = cast(
                "InstanceRecord",
                {name: value for name, value in record.items() if name not in ("previous", "history")},
            )
        failure: InstanceRecord = {
            "schemaVersion": RECORD_SCHEMA_VERSION,
            "kind": self.kind,
            "executionStatus": "failure",
            "status": "failed",
            "completed": bool(record and record.get("completed")),
            "subject": event.subject,
            "parentSubject": parent_subject,
            "initEventId": init_event_id,
            "orchestrator": parsed.name,
            "version": parsed.version,
            # The record is internal: it always keeps the stack, events only when configured.
            "error": error_data(error, include_stack=True),
            "previous": previous,
            "events": {"consumed": event.to_dict(), "produced": [item.to_dict() for item in errors]},
            "consumedIds": _push_ring(record, key),
            "updatedAt": create_timestamp(),
        }
        if self.history_events > 0:
            failure["history"] = push_history(
                record,
                event,
                errors,
                ExecutionOutcome.SYSTEM_ERROR.value,
                max_events=self.history_events,
                max_bytes=self.history_bytes,
            )
        return failure


class PipelineHandler:
    """The :class:`~service.arvo.execution.ArvoHandler` surface of orchestrators and resumables.

    Subclasses build :attr:`_pipeline` with their core function; everything a caller sees is
    derived from it.
    """

    _pipeline: OrchestrationPipeline

    @property
    def source(self) -> str:
        """The init event type consumed (``arvo.orc.<name>``); its topic is this handler's."""
        return self._pipeline.source

    @property
    def domain(self) -> str | None:
        """The self contract's domain."""
        return self._pipeline.error_contract.domain

    @property
    def system_error_schema(self) -> SystemErrorRecord:
        """``{type: sys.arvo.orc.<name>.error, schema, dataschema}`` of the self contract."""
        return self._pipeline.error_contract.system_error

    @property
    def lease_ttl_ms(self) -> int:
        """The lease TTL of every event (renewed while a long core runs); ``ARVO_LEASE_TTL_MS``."""
        return self._pipeline.lease_ttl_ms

    @lease_ttl_ms.setter
    def lease_ttl_ms(self, value: int) -> None:
        self._pipeline.lease_ttl_ms = value

    def keep_history(self, *, events: int, max_bytes: int) -> None:
        """Keep the last ``events`` consumed/produced events (at most ``max_bytes`` of JSON) per record.

        ``events=0`` keeps none (records written from then on carry no ``history``).
        """
        if events < 0 or max_bytes < 0:
            raise ValueError(
                f"history bounds must not be negative, got events={events}, max_bytes={max_bytes}"
            )
        self._pipeline.history_events = events
        self._pipeline.history_bytes = max_bytes

    @property
    def reply_source_check(self) -> ReplySourceCheck:
        """Whose replies are accepted (``ARVO_REPLY_SOURCE_CHECK``).

        See :data:`~service.arvo.orchestration.input_validation.ReplySourceCheck`. ``strict`` also keeps
        the ids of the instance's emitted events in its record (``emittedIds``, the newest
        ``EMITTED_IDS_KEPT``). Setting an unknown mode raises ``ValueError``.
        """
        return self._pipeline.reply_source_check

    @reply_source_check.setter
    def reply_source_check(self, mode: ReplySourceCheck) -> None:
        self._pipeline.reply_source_check = validate_reply_source_check(mode)

    @property
    def default_deadline_s(self) -> float | None:
        """Deadline of a new instance in seconds from its init event's ``time`` (``None``: none).

        Applies when the init event carries no deadline of its own (``arvodeadline``).
        """
        ms = self._pipeline.default_deadline_ms
        return None if ms is None else ms / 1000

    @default_deadline_s.setter
    def default_deadline_s(self, seconds: float | None) -> None:
        if seconds is None:
            self._pipeline.default_deadline_ms = None
            return
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError(f"deadline_s must be a positive number of seconds or None, got {seconds!r}")
        self._pipeline.default_deadline_ms = math.ceil(seconds * 1000)

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        """Process one event of an orchestration (see :mod:`service.arvo.orchestration.pipeline`)."""
        return await self._pipeline.execute(event, inherit_from=inherit_from)


class _LeaseRenewals:
    """Keeps the leases of long-running cores (resumables awaiting I/O) alive.

    One background task per pipeline renews every lease held longer than a third of the TTL. Adding
    and removing a lease is a dict operation, so the fast path (a core that finishes in
    microseconds) pays no timer; the task exits when no lease is left and restarts on demand.
    A refused renewal means the lease is gone (the commit will be fenced out); a failed one (memory
    unreachable) is tried again at the next interval. ``clock`` (seconds; default: the event loop's
    time) and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        memory: Memory,
        ttl_ms: int,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._memory = memory
        self._ttl_ms = ttl_ms
        self._interval_s = ttl_ms / 3000
        self._held: dict[Lease, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._clock = clock
        self._sleep = sleep

    def set_ttl(self, ttl_ms: int) -> None:
        self._ttl_ms = ttl_ms
        self._interval_s = ttl_ms / 3000

    def _now(self, loop: asyncio.AbstractEventLoop) -> float:
        return self._clock() if self._clock is not None else loop.time()

    def add(self, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        self._held[lease] = self._now(loop)
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._renew_forever())

    def discard(self, lease: Lease) -> None:
        self._held.pop(lease, None)

    async def _renew_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while self._held:
            await self._sleep(self._interval_s)
            now = self._now(loop)
            due = [lease for lease, since in list(self._held.items()) if now - since >= self._interval_s]
            for lease in due:
                try:
                    renewed = await self._memory.renew(lease, ttl_ms=self._ttl_ms)
                except Exception:  # noqa: S112 - retried at the next interval; the commit decides
                    continue
                if not renewed:
                    self._held.pop(lease, None)
                elif lease in self._held:
                    self._held[lease] = self._now(loop)


def _timer_pairs(timers: Sequence[TimerEntry]) -> tuple[tuple[str, int], ...]:
    return tuple((entry["id"], entry["dueMs"]) for entry in timers)


def _carry_deadline(events: list[ArvoEvent], deadline_ms: int, *, own_subject: str) -> list[ArvoEvent]:
    """``events`` with the deadline carried on to child orchestrations' init events (the earlier one wins).

    A child init event is an emission on another subject than the instance's own that is not addressed
    back (a completion or a system error to the parent has ``parentSubject``-less routing but the
    parent's subject: those are not orchestrator inits, so their type is checked too).
    """
    carried: list[ArvoEvent] = []
    for emitted in events:
        existing = _deadline_or_none(emitted)
        if (
            emitted.subject != own_subject
            and emitted.type.startswith("arvo.orc.")
            and not emitted.type.endswith(".done")
            and (existing is None or existing > deadline_ms)
        ):
            extensions = dict(emitted.extensions)
            extensions[DEADLINE_EXTENSION] = format_time_ms(deadline_ms)
            carried.append(emitted.replace(extensions=extensions))
        else:
            carried.append(emitted)
    return carried


def _deadline_or_none(event: ArvoEvent) -> int | None:
    # The event's ``arvodeadline`` in ms; ``None`` when it has none or it does not parse.
    try:
        return deadline_ms_of(event)
    except (TypeError, ValueError):
        return None


def _push_ring(record: InstanceRecord | None, key: str) -> list[str]:
    ring = list(record.get("consumedIds") or []) if record is not None else []
    ring.append(key)
    return ring[-CONSUMED_RING_SIZE:]
