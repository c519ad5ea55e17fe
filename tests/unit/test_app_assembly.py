"""What the service refuses to run: machines whose timers it could not fire."""

from __future__ import annotations

import pytest

from contracts.bench import add_contract, bench_machine_contract
from service.arvo.machine.arvo_machine import setup_arvo_machine
from service.arvo.machine.statechart import emit
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestrator import create_arvo_orchestrator
from service.examples.bench import bench_orchestrator
from service.runtime.app import TimersNotSupportedError, refuse_delayed_transitions


def test_a_machine_with_after_is_refused_with_the_reason_and_a_plain_one_runs() -> None:
    machine = setup_arvo_machine(
        contracts={
            "self": bench_machine_contract.version("1.0.0"),
            "services": {"add": add_contract.version("1.0.0")},
        },
    ).create_machine(
        {
            "id": "impatient",
            "initial": "adding",
            "states": {
                "adding": {
                    "entry": emit({"type": "com.bench.add", "data": {"a": 1, "b": 2}}),
                    "after": {1_000: "done"},
                },
                "done": {"type": "final"},
            },
            "output": {"result": 0},
        }
    )
    impatient = create_arvo_orchestrator(executionunits=1, memory=InMemoryMemory(), machines=[machine])
    with pytest.raises(TimersNotSupportedError, match=r"arvo\.orc\.bench@1\.0\.0 use delayed transitions"):
        refuse_delayed_transitions([impatient])
    refuse_delayed_transitions([bench_orchestrator(InMemoryMemory())])  # no after: accepted
