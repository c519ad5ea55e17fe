"""Runs one machine step for one event (spec 11.4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.arvo.errors import ConfigViolation
from service.arvo.event import ArvoEvent
from service.arvo.machine.arvo_machine import ArvoMachine, take_queued_events
from service.arvo.machine.statechart import InvalidSnapshotError
from service.arvo.telemetry import start_internal_span

__all__ = ["MachineExecutionEngine", "MachineExecutionResult"]


@dataclass(frozen=True, slots=True)
class MachineExecutionResult:
    """The new snapshot, the raw events (emitted first, then enqueued) and the output when done."""

    snapshot: dict[str, Any]
    events: list[dict[str, Any]]
    final_output: Any


class MachineExecutionEngine:
    """Starts a machine from its init event or resumes it from a snapshot with the next event."""

    def execute(
        self, *, machine: ArvoMachine, snapshot: Mapping[str, Any] | None, event: ArvoEvent
    ) -> MachineExecutionResult:
        """Run one step; exceptions of user code propagate unchanged (violations stay violations).

        Raises:
            ValueError: starting (no snapshot) with an event that is not the machine's init type.

        """
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
                step = machine.start(event)
            else:
                try:
                    step = machine.send(snapshot, event)
                except InvalidSnapshotError as error:
                    # The stored snapshot does not fit this machine (e.g. a machine changed under the
                    # same version): a deployment problem to fix, not a failure of the workflow.
                    raise ConfigViolation(
                        f"Stored snapshot does not fit machine '{machine.id}' version {machine.version}: "
                        f"{error}"
                    ) from error
            new_snapshot = dict(step.snapshot)
            context = dict(new_snapshot.get("context") or {})
            new_snapshot["context"] = context
            events = [dict(item) for item in step.emitted]
            events.extend(take_queued_events(context))
            final_output = new_snapshot.get("output") if new_snapshot.get("status") == "done" else None
            return MachineExecutionResult(snapshot=new_snapshot, events=events, final_output=final_output)
