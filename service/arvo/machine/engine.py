"""Runs one machine step for one event (spec 11.4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.arvo.errors import ConfigViolation
from service.arvo.event import ArvoEvent
from service.arvo.machine.arvo_machine import ArvoMachine, take_queued_events
from service.arvo.machine.statechart import InvalidSnapshotError, MachineStep, PendingTimer
from service.arvo.telemetry import start_internal_span

__all__ = ["MachineExecutionEngine", "MachineExecutionResult"]


@dataclass(frozen=True, slots=True)
class MachineExecutionResult:
    """The new snapshot, the raw events (emitted first, then enqueued) and the output when done.

    Machines with delayed transitions also report their timers (the snapshot carries them too, so they
    survive a save/restore): ``timers`` are all pending after the step, in firing order (upsert them),
    ``cancelled_timers`` and ``fired_timers`` the ids that stopped being pending (drop them).
    """

    snapshot: dict[str, Any]
    events: list[dict[str, Any]]
    final_output: Any
    timers: tuple[PendingTimer, ...] = ()
    cancelled_timers: tuple[str, ...] = ()
    fired_timers: tuple[str, ...] = ()


def event_time_ms(event: ArvoEvent) -> float:
    """The event's ``time`` in ms since the epoch: the default "now" of a step (deterministic on replay)."""
    return datetime.fromisoformat(event.time).timestamp() * 1000


class MachineExecutionEngine:
    """Starts a machine from its init event or resumes it from a snapshot with the next event."""

    def execute(
        self,
        *,
        machine: ArvoMachine,
        snapshot: Mapping[str, Any] | None,
        event: ArvoEvent,
        now_ms: float | None = None,
    ) -> MachineExecutionResult:
        """Run one step; exceptions of user code propagate unchanged (violations stay violations).

        Args:
            machine: The machine version of the instance.
            snapshot: The stored snapshot, ``None`` to start from the init event.
            event: The consumed event.
            now_ms: The time timers armed by the step count from; defaults, for machines with delayed
                transitions, to the event's ``time`` (so a re-execution arms the same due times).

        Raises:
            ValueError: starting (no snapshot) with an event that is not the machine's init type.

        """
        if now_ms is None and machine.has_delayed_transitions:
            now_ms = event_time_ms(event)
        with start_internal_span(
            "Execute Machine",
            attributes={"arvo.machine.type": machine.source, "arvo.machine.version": machine.version},
            event=event,
        ):
            if snapshot is None:
                if event.type != machine.source:
                    raise ValueError(
                        f"Invalid initialization event: Machine requires source event '{machine.source}' to "
                        f"start, but received event '{event.type}' instead. This likely indicates a mismatch "
                        "between the expected workflow trigger and the actual event sent."
                    )
                step = machine.start(event, now_ms=now_ms)
            else:
                try:
                    step = machine.send(snapshot, event, now_ms=now_ms)
                except InvalidSnapshotError as error:
                    raise _unfit_snapshot(machine, error) from error
            return _execution_result(step)

    def execute_timer(
        self, *, machine: ArvoMachine, snapshot: Mapping[str, Any], timer_id: str, now_ms: float
    ) -> MachineExecutionResult:
        """Deliver the pending timer ``timer_id`` as the next step (a no-op step when it is stale).

        Raises:
            ConfigViolation: the stored snapshot does not fit the machine.

        """
        with start_internal_span(
            "Execute Machine Timer",
            attributes={
                "arvo.machine.type": machine.source,
                "arvo.machine.version": machine.version,
                "arvo.machine.timer": timer_id,
            },
        ):
            try:
                step = machine.fire_timer(snapshot, timer_id, now_ms=now_ms)
            except InvalidSnapshotError as error:
                raise _unfit_snapshot(machine, error) from error
            return _execution_result(step)


def _unfit_snapshot(machine: ArvoMachine, error: InvalidSnapshotError) -> ConfigViolation:
    # The stored snapshot does not fit this machine (e.g. a machine changed under the same version): a
    # deployment problem to fix, not a failure of the workflow.
    return ConfigViolation(
        f"Stored snapshot does not fit machine '{machine.id}' version {machine.version}: {error}"
    )


def _execution_result(step: MachineStep) -> MachineExecutionResult:
    new_snapshot = dict(step.snapshot)
    context = dict(new_snapshot.get("context") or {})
    new_snapshot["context"] = context
    events = [dict(item) for item in step.emitted]
    events.extend(take_queued_events(context))
    final_output = new_snapshot.get("output") if new_snapshot.get("status") == "done" else None
    return MachineExecutionResult(
        snapshot=new_snapshot,
        events=events,
        final_output=final_output,
        timers=step.timers,
        cancelled_timers=step.cancelled,
        fired_timers=step.fired,
    )
