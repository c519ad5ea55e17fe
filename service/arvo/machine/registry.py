"""The registry of machine versions of one orchestrator (spec 11.5)."""

from __future__ import annotations

from service.arvo.machine.arvo_machine import ArvoMachine
from service.arvo.subject import ParsedSubject

__all__ = ["MachineRegistry"]


class MachineRegistry:
    """Machines by (source, version); the subject's version pins the machine of an execution."""

    def __init__(self, *machines: ArvoMachine) -> None:
        if not machines:
            raise ValueError(
                "Machine registry initialization failed: No machines provided. At least one machine must "
                "be registered."
            )
        self.machines: tuple[ArvoMachine, ...] = machines
        self._by_key = {(machine.source, machine.version): machine for machine in reversed(machines)}

    def resolve(self, subject: ParsedSubject) -> ArvoMachine | None:
        """The machine for the subject's orchestrator name and version, or ``None``."""
        return self._by_key.get((subject.name, subject.version))
