"""State-machine orchestrators (spec 6): a registry of machine versions run by the shared pipeline."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from service.arvo.errors import ConfigViolation, ContractViolation
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.machine.arvo_machine import ArvoMachine
from service.arvo.machine.engine import MachineExecutionEngine, MachineExecutionResult
from service.arvo.machine.registry import MachineRegistry
from service.arvo.memory import Memory
from service.arvo.orchestration.emittables import RawEvent
from service.arvo.orchestration.input_validation import (
    raise_for_foreign_source,
    raise_for_invalid_input,
)
from service.arvo.orchestration.pipeline import (
    DEFAULT_LEASE_TTL_MS,
    CoreRequest,
    CoreResult,
    EmissionDomains,
    OrchestrationPipeline,
    PipelineHandler,
)
from service.arvo.orchestration.timers import TimerEntry
from service.arvo.telemetry import log_to_span

__all__ = ["ArvoOrchestrator", "create_arvo_orchestrator"]

_COMPLETION_CONTROL_KEYS = ("__id", "__domain", "__executionunits")


def completion_raw_event(
    *, complete_type: str, output: Mapping[str, Any], to: str, default_domains: Sequence[str | None]
) -> RawEvent:
    """The raw completion event of an output (``__id``/``__domain``/``__executionunits`` honoured)."""
    domain = output.get("__domain")
    return {
        "type": complete_type,
        "id": output.get("__id"),
        "data": {key: value for key, value in output.items() if key not in _COMPLETION_CONTROL_KEYS},
        "to": to,
        "domain": domain if domain is not None else list(default_domains),
        "executionunits": output.get("__executionunits"),
    }


class ArvoOrchestrator(PipelineHandler):
    """Runs versioned :class:`ArvoMachine` s per orchestration subject, under a lease, with dedupe.

    Attributes:
        source: The init type consumed (``arvo.orc.<name>``).
        registry: The machine versions.
        requires_resource_locking: Kept for parity; the lease is always taken (it is free: the same
            memory round trip reads the state).

    """

    def __init__(
        self,
        *,
        executionunits: float,
        memory: Memory,
        registry: MachineRegistry,
        domains: EmissionDomains | None = None,
        span_attributes: Mapping[str, Any] | None = None,
        span_name: Callable[[ArvoEvent], str] | None = None,
        lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        include_error_stack: bool = False,
        requires_resource_locking: bool = True,
    ) -> None:
        first = registry.machines[0]
        self.registry = registry
        self.executionunits = executionunits
        self.requires_resource_locking = requires_resource_locking
        self.memory = memory
        self._engine = MachineExecutionEngine()
        self._self_contract = first.self_contract
        self.domains = domains or EmissionDomains()
        uri = first.self_contract.uri
        self.span_attributes = {
            "arvo.span.kind": "handler.orchestrator.statemachine",
            "openinference.span.kind": "CHAIN",
            **(span_attributes or {}),
            "arvo.handler.source": first.source,
            "arvo.contract.uri": uri,
        }
        self._pipeline = OrchestrationPipeline(
            source=first.source,
            kind="orchestrator",
            memory=memory,
            core=self._run_machine,
            error_contract=first.self_contract,
            executionunits=executionunits,
            domains=self.domains,
            span_attributes=self.span_attributes,
            span_name=span_name or (lambda event: f"Orchestrator<{uri}>@<{event.type}>"),
            lease_ttl_ms=lease_ttl_ms,
            include_error_stack=include_error_stack,
        )

    async def _run_machine(self, request: CoreRequest) -> CoreResult:
        event = request.event
        span = request.span
        log_to_span(span, "INFO", f"Resolving machine for event {event.type}")
        machine = self.registry.resolve(request.subject)
        if machine is None:
            raise ConfigViolation(
                "Machine resolution failed: No machine found matching orchestrator name="
                f"'{request.subject.name}' and version='{request.subject.version}'."
            )
        if request.timer is not None:
            return self._fire_timer(request, machine)
        raise_for_invalid_input(machine.validate_input(event), owner="machine")
        raise_for_foreign_source(
            event,
            service_contracts=machine.services,
            owner="machine",
            mode=self.reply_source_check,
            record=request.record,
        )
        record = request.record
        previous_snapshot = record.get("state") if record is not None else None
        already_completed = bool(record and record.get("completed"))
        result = self._engine.execute(machine=machine, snapshot=previous_snapshot, event=event)
        return self._core_result(request, machine, result, already_completed=already_completed)

    def _fire_timer(self, request: CoreRequest, machine: ArvoMachine) -> CoreResult:
        """Deliver a due delayed transition (the pipeline checked that the record has it pending)."""
        timer = request.timer
        assert timer is not None
        snapshot = request.record.get("state") if request.record is not None else None
        if snapshot is None:
            raise ConfigViolation(f"Timer {timer['id']} of {request.subject.instance_key} has no snapshot")
        log_to_span(request.span, "INFO", f"Firing timer {timer['id']} (due {timer['dueMs']})")
        result = self._engine.execute_timer(
            machine=machine, snapshot=snapshot, timer_id=timer["id"], now_ms=float(timer["dueMs"])
        )
        return self._core_result(request, machine, result, already_completed=False)

    def _core_result(
        self,
        request: CoreRequest,
        machine: ArvoMachine,
        result: MachineExecutionResult,
        *,
        already_completed: bool,
    ) -> CoreResult:
        span = request.span
        raw_events: list[RawEvent] = list(result.events)
        status: Literal["active", "done"] = "done" if result.snapshot.get("status") == "done" else "active"
        outcome = ExecutionOutcome.EXECUTED
        if already_completed:
            # A done machine ignores events; the completion was emitted once already.
            raw_events = []
            outcome = ExecutionOutcome.IGNORED_DONE
        elif status == "done":
            if result.final_output is not None and not isinstance(result.final_output, Mapping):
                raise ContractViolation(
                    f"Machine '{machine.id}' output must be an object for "
                    f"'{machine.self_contract.complete_event_type}', got {type(result.final_output).__name__}"
                )
            output = result.final_output if result.final_output is not None else {}
            complete_type = machine.self_contract.complete_event_type
            assert complete_type is not None
            raw_events = [
                *raw_events,
                completion_raw_event(
                    complete_type=complete_type,
                    output=output,
                    to=request.subject.meta.get("redirectto") or request.subject.initiator,
                    default_domains=self.domains.complete,
                ),
            ]
        log_to_span(
            span,
            "INFO",
            f"Machine execution completed - Status: {status}, Generated events: {len(raw_events)}",
        )
        return CoreResult(
            raw_events=raw_events,
            self_contract=machine.self_contract,
            service_contracts=machine.services_by_type,
            status=status,
            completed=already_completed or status == "done",
            fields={"value": result.snapshot.get("value"), "state": result.snapshot, "machineId": machine.id},
            outcome=outcome,
            timers=[
                TimerEntry(id=timer.id, dueMs=math.ceil(timer.due_ms), kind="machine")
                for timer in result.timers
            ],
        )


def create_arvo_orchestrator(
    *,
    executionunits: float,
    memory: Memory,
    machines: Sequence[ArvoMachine],
    domains: EmissionDomains | None = None,
    span_attributes: Mapping[str, Any] | None = None,
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
    include_error_stack: bool = False,
    requires_resource_locking: bool | None = None,
    deadline_s: float | None = None,
) -> ArvoOrchestrator:
    """Build an orchestrator from machine versions of one orchestrator contract (spec 6.1).

    ``deadline_s`` bounds every new instance whose init event carries no deadline of its own
    (``arvodeadline``): counted from the init event's ``time``, it then stops with status
    ``timed_out`` (docs/timers-deadlines-cancellation.md).

    Raises:
        ValueError: no machines.
        ConfigViolation: machines of different orchestrators, or duplicate versions.

    """
    if not machines:
        raise ValueError("At least one machine must be provided")
    first = machines[0]
    seen: set[str] = set()
    for machine in machines:
        if machine.source != first.source:
            raise ConfigViolation(f"All the machines in the orchestrator must have type '{first.source}'")
        if machine.version in seen:
            raise ConfigViolation(
                f"An orchestrator must have unique machine versions. Machine ID:{machine.id} has duplicate "
                f"version {machine.version}."
            )
        seen.add(machine.version)
    locking = (
        requires_resource_locking
        if requires_resource_locking is not None
        else any(machine.requires_resource_locking for machine in machines)
    )
    orchestrator = ArvoOrchestrator(
        executionunits=executionunits,
        memory=memory,
        registry=MachineRegistry(*machines),
        domains=domains,
        span_attributes=span_attributes,
        lease_ttl_ms=lease_ttl_ms,
        include_error_stack=include_error_stack,
        requires_resource_locking=locking,
    )
    orchestrator.default_deadline_s = deadline_s
    return orchestrator
