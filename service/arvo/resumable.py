"""Resumables (spec 7): imperative async functions that resume on every event of an orchestration.

A resumable handler receives what happened so far and returns what to do next::

    async def handle(ctx: ResumableContext) -> ResumableResult | None:
        if ctx.input:                                   # the init event
            return {"context": {...}, "services": [{"type": "com.bench.add", "data": {...}}]}
        added = ctx.collected_events.get("evt.bench.add.success")
        ...
        return {"output": {"result": 42}}               # completes the orchestration

It runs inside the same pipeline as orchestrators (lease, dedupe, outbox record); its lease is renewed
while it awaits I/O.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

from opentelemetry.trace import Span

from service.arvo.contract import ArvoContract, VersionedArvoContract
from service.arvo.errors import ConfigViolation
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.machine.arvo_machine import validate_service_contracts
from service.arvo.machine.engine import event_time_ms
from service.arvo.memory import Memory
from service.arvo.orchestration.emittables import RawEvent
from service.arvo.orchestration.input_validation import (
    raise_for_foreign_source,
    raise_for_invalid_input,
    validate_input_event,
)
from service.arvo.orchestration.pipeline import (
    DEFAULT_LEASE_TTL_MS,
    CoreRequest,
    CoreResult,
    EmissionDomains,
    OrchestrationPipeline,
    PipelineHandler,
)
from service.arvo.orchestration.record import EventsFields
from service.arvo.orchestration.timers import TimerEntry, record_timers
from service.arvo.orchestrator import completion_raw_event

__all__ = [
    "ArvoResumable",
    "ResumableContext",
    "ResumableHandler",
    "ResumableResult",
    "create_arvo_resumable",
]


class ResumableResult(TypedDict, total=False):
    """What a resumable handler returns; every key optional."""

    context: Any
    """New custom state (kept as ``state$$``); omitted or ``None`` → the previous state is kept."""
    output: Mapping[str, Any]
    """Completion data; returning it (even ``{}``) completes the orchestration; ``None`` does not."""
    services: list[RawEvent]
    """Raw events to emit to services (``type``, ``data``, optional ``domain``, ``id``, …)."""
    timers: Mapping[str, float | None]
    """Named timers to arm: name → delay in ms from the consumed event's ``time`` (arming a name again
    replaces its timer; ``None`` cancels it). A due timer resumes the handler with
    :attr:`ResumableContext.timer` set to its name. Every timer is dropped when the instance completes.
    "Call X, give up after 30 s" is ``{"services": [call], "timers": {"x": 30_000}}``."""


@dataclass(frozen=True, slots=True)
class ResumableContext:
    """Everything a resumable handler sees for one event (spec 7.2).

    Attributes:
        event: The consumed event.
        input: The init event as JSON when this is the init event, else ``None``.
        service: The consumed event as JSON when it is a service response or error, else ``None``.
        context: The custom state returned last time (``None`` at init).
        collected_events: Replies to the latest emissions, grouped by event type.
        metadata: The stored record, or ``None`` at init.
        domain: ``{"event": event.domain, "self": self contract domain}``.
        contracts: ``{"self": versioned self contract, "services": {key: versioned contract}}``.
        span: The resumable's span.
        timer: The name of the timer (``ResumableResult.timers``) whose firing this is, else ``None``.
        timers: The instance's pending timers: name → due time (ms since the epoch).

    """

    event: ArvoEvent
    input: dict[str, Any] | None
    service: dict[str, Any] | None
    context: Any
    collected_events: dict[str, list[dict[str, Any]]]
    metadata: dict[str, Any] | None
    domain: dict[str, str | None]
    contracts: dict[str, Any]
    span: Span
    timer: str | None = None
    timers: Mapping[str, int] = field(default_factory=dict)


ResumableHandler = Callable[[ResumableContext], Awaitable[ResumableResult | None]]


class ArvoResumable(PipelineHandler):
    """An orchestrator whose logic is an async function per contract version."""

    def __init__(
        self,
        *,
        contract: ArvoContract,
        services: Mapping[str, VersionedArvoContract],
        memory: Memory,
        handler: Mapping[str, ResumableHandler],
        executionunits: float = 0,
        domains: EmissionDomains | None = None,
        span_attributes: Mapping[str, Any] | None = None,
        span_name: Callable[[ArvoEvent], str] | None = None,
        lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        include_error_stack: bool = False,
        requires_resource_locking: bool | None = None,
    ) -> None:
        if contract.metadata.get("contractType") != "ArvoOrchestratorContract":
            raise ConfigViolation(f"ArvoResumable needs an orchestrator contract, got '{contract.uri}'")
        latest = contract.version("latest")
        validate_service_contracts(latest, services, "ArvoResumable")
        self.contract = contract
        self.services = dict(services)
        self._services_by_type = {service.accepts.type: service for service in services.values()}
        self.handler = dict(handler)
        self.executionunits = executionunits
        self.memory = memory
        self.requires_resource_locking = (
            requires_resource_locking if requires_resource_locking is not None else len(services) > 1
        )
        self.domains = domains or EmissionDomains()
        self.span_attributes = {
            "arvo.span.kind": "handler.orchestrator.imperative",
            "openinference.span.kind": "CHAIN",
            **(span_attributes or {}),
            "arvo.handler.source": contract.type,
            "arvo.contract.uri": contract.uri,
        }
        self._pipeline = OrchestrationPipeline(
            source=contract.type,
            kind="resumable",
            memory=memory,
            core=self._run_handler,
            error_contract=latest,
            executionunits=executionunits,
            domains=self.domains,
            span_attributes=self.span_attributes,
            span_name=span_name or (lambda event: f"Resumable<{contract.uri}>@<{event.type}>"),
            lease_ttl_ms=lease_ttl_ms,
            renew_lease=True,
            include_error_stack=include_error_stack,
        )

    async def _run_handler(self, request: CoreRequest) -> CoreResult:
        event = request.event
        version = request.subject.version
        handler = self.handler.get(version)
        if handler is None:
            raise ConfigViolation(
                "Handler resolution failed: No handler found matching orchestrator name="
                f"'{request.subject.name}' and version='{version}'."
            )
        if request.timer is None:
            validation = validate_input_event(
                event, self_contract=self.contract, service_contracts=self.services
            )
            raise_for_invalid_input(validation, owner="resumable")
            raise_for_foreign_source(
                event,
                service_contracts=self.services,
                owner="resumable",
                mode=self.reply_source_check,
                record=request.record,
            )
        try:
            self_contract = self.contract.version(version)
        except ValueError as error:
            raise ConfigViolation(
                f"Resumable version {version} is not a version of contract '{self.contract.uri}'"
            ) from error
        record = request.record
        previous_state = record.get("state$$") if record is not None else None
        previous_events = record.get("events") if record is not None else None
        expected = previous_events.get("expected") if previous_events else None
        if record is not None and record.get("status") == "done":
            return CoreResult(
                raw_events=[],
                self_contract=self_contract,
                service_contracts=self._services_by_type,
                status="done",
                completed=True,
                fields={"state$$": previous_state},
                events_fields={"expected": expected},
                outcome=ExecutionOutcome.IGNORED_DONE,
            )
        event_json = event.to_dict()
        if (
            expected is not None
            and event.parentid is not None
            and isinstance(expected.get(event.parentid), list)
        ):
            expected = {**expected, event.parentid: [*expected[event.parentid], event_json]}
        collected: dict[str, list[dict[str, Any]]] = {}
        for replies in (expected or {}).values():
            for reply in replies:
                collected.setdefault(str(reply.get("type")), []).append(reply)
        is_init = event.type == self.source
        pending = _resumable_timers(record)
        fired: str | None = None
        if request.timer is not None:
            fired = request.timer["id"].removeprefix(_TIMER_PREFIX)
            pending.pop(fired, None)
        result = (
            await handler(
                ResumableContext(
                    event=event,
                    input=event_json if is_init else None,
                    service=None if is_init else event_json,
                    context=previous_state,
                    collected_events=collected,
                    # The public field keeps its plain-dict type: handlers may read any key.
                    metadata=cast("dict[str, Any] | None", record),
                    domain={"event": event.domain, "self": self.contract.domain},
                    contracts={"self": self_contract, "services": dict(self.services)},
                    span=request.span,
                    timer=fired,
                    timers=dict(pending),
                )
            )
            or ResumableResult()
        )
        _arm(pending, result.get("timers"), event)
        raw_events: list[RawEvent] = list(result.get("services") or [])
        # ``None`` means "not given" (the original's ``??``); ``{}`` is a real, completing output.
        output = result.get("output")
        if output is not None:
            complete_type = self_contract.complete_event_type
            assert complete_type is not None
            raw_events.append(
                completion_raw_event(
                    complete_type=complete_type,
                    output=output,
                    to=request.subject.meta.get("redirectto") or request.subject.initiator,
                    default_domains=self.domains.complete,
                )
            )
        context = result.get("context")
        new_state = context if context is not None else previous_state
        previous_expected = expected

        def expected_after(events: list[ArvoEvent]) -> EventsFields:
            if events:
                return {"expected": {emitted.id: [] for emitted in events}}
            return {"expected": previous_expected}

        done = output is not None
        return CoreResult(
            raw_events=raw_events,
            self_contract=self_contract,
            service_contracts=self._services_by_type,
            status="done" if done else "active",
            completed=done,
            fields={"state$$": new_state},
            finalize_events_fields=expected_after,
            timers=[
                TimerEntry(id=_TIMER_PREFIX + name, dueMs=due, kind="resumable")
                for name, due in pending.items()
            ],
        )


_TIMER_PREFIX = "timer."
"""Ids of a resumable's timers in its record: ``timer.<name>``."""


def _resumable_timers(record: Mapping[str, Any] | None) -> dict[str, int]:
    """The resumable's pending timers of ``record``: name → due ms."""
    return {
        entry["id"].removeprefix(_TIMER_PREFIX): entry["dueMs"]
        for entry in record_timers(record)
        if entry["kind"] == "resumable"
    }


def _arm(pending: dict[str, int], requested: Mapping[str, float | None] | None, event: ArvoEvent) -> None:
    """Apply a handler's ``timers`` to ``pending``: arm (from the event's ``time``) or cancel (``None``).

    Raises:
        TypeError: not a mapping, a name that is not a non-empty string, or a delay that is not a
            finite number (the instance fails with a system error naming it).

    """
    if not requested:
        return
    if not isinstance(requested, Mapping):
        raise TypeError(
            f"ResumableResult 'timers' must be a mapping of name to delay in ms, got {requested!r}"
        )
    now_ms = event_time_ms(event)
    for name, delay in requested.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"a timer name must be a non-empty string, got {name!r}")
        if delay is None:
            pending.pop(name, None)
            continue
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
            raise TypeError(f"timer {name!r}: the delay must be a finite number of ms, got {delay!r}")
        pending[name] = math.ceil(now_ms + max(0.0, float(delay)))


def create_arvo_resumable(
    *,
    contract: ArvoContract,
    services: Mapping[str, VersionedArvoContract],
    memory: Memory,
    handler: Mapping[str, ResumableHandler],
    executionunits: float = 0,
    domains: EmissionDomains | None = None,
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
    include_error_stack: bool = False,
    requires_resource_locking: bool | None = None,
    deadline_s: float | None = None,
) -> ArvoResumable:
    """Build a resumable (spec 7.1); see :class:`ArvoResumable`.

    ``deadline_s`` bounds every new instance whose init event carries no deadline of its own
    (``arvodeadline``), counted from the init event's ``time``.
    """
    resumable = ArvoResumable(
        contract=contract,
        services=services,
        memory=memory,
        handler=handler,
        executionunits=executionunits,
        domains=domains,
        lease_ttl_ms=lease_ttl_ms,
        include_error_stack=include_error_stack,
        requires_resource_locking=requires_resource_locking,
    )
    resumable.default_deadline_s = deadline_s
    return resumable
