"""Sections 14.5 and 14.7 of the spec: the machine execution engine and the machine registry."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from service.arvo.contract import create_arvo_orchestrator_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.arvo.machine.arvo_machine import ArvoMachine, setup_arvo_machine
from service.arvo.machine.engine import MachineExecutionEngine
from service.arvo.machine.registry import MachineRegistry
from service.arvo.subject import ArvoOrchestrationSubject
from tests.unit.arvo_fixtures import (
    COUNTER_SERVICES,
    counter_config,
    counter_machine,
    counter_setup,
    decrement_service_contract,
    increment_service_contract,
    test_machine_contract,
)

SELF = test_machine_contract.version("0.0.1")
ENGINE = MachineExecutionEngine()


def counter_init(delta: int = 1, kind: str = "increment") -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(SELF).init(
        source="com.test.service", data={"parentSubject$$": None, "delta": delta, "type": kind}
    )


def increment_success(subject: str, new_value: int = 10) -> ArvoEvent:
    return create_arvo_event_factory(increment_service_contract.version("0.0.1")).emits(
        type="evt.number.increment.success",
        source="com.number.increment",
        subject=subject,
        data={"newValue": new_value},
    )


# --- 14.5 #1 -------------------------------------------------------------------------------------


def test_engine_starts_from_the_init_event_and_resumes_to_completion() -> None:
    machine = counter_machine("engine")
    init = counter_init()
    started = ENGINE.execute(machine=machine, snapshot=None, event=init)
    assert [event["type"] for event in started.events] == ["com.number.increment"]
    assert started.events[0]["data"] == {"delta": 1}
    assert started.snapshot["status"] == "active"
    assert started.snapshot["value"] == "increment"
    assert started.final_output is None

    resumed = ENGINE.execute(
        machine=machine, snapshot=started.snapshot, event=increment_success(init.subject)
    )
    assert resumed.final_output is not None
    assert resumed.final_output["final"] == 1
    # emit() first, then the enqueued events
    assert [(event["type"], event["data"]["delta"]) for event in resumed.events] == [
        ("notif.number.update", -1),
        ("notif.number.update", 1),
    ]
    assert resumed.snapshot["status"] == "done"
    assert resumed.snapshot["value"] == "done"
    assert "volatile$$" not in resumed.snapshot["context"].get("arvo$$", {})


def test_engine_refuses_to_start_from_a_non_init_event() -> None:
    machine = counter_machine("engine")
    with pytest.raises(ValueError) as caught:
        ENGINE.execute(machine=machine, snapshot=None, event=increment_success(counter_init().subject))
    assert str(caught.value) == (
        "Invalid initialization event: Machine requires source event 'arvo.orc.test' to start, but received "
        "event 'evt.number.increment.success' instead. This likely indicates a mismatch between the expected "
        "workflow trigger and the actual event sent."
    )


def test_engine_does_not_deliver_the_init_event_as_an_event() -> None:
    seen: list[Any] = []
    machine = counter_setup().create_machine(
        {
            "id": "watcher",
            "context": lambda args: {"input_type": args.input["type"]},
            "initial": "idle",
            "states": {"idle": {"on": {"*": {"actions": lambda args: seen.append(args.event["type"])}}}},
        }
    )
    started = ENGINE.execute(machine=machine, snapshot=None, event=counter_init())
    assert seen == []
    assert started.snapshot["context"]["input_type"] == "arvo.orc.test"


def test_engine_restoring_a_snapshot_reruns_no_entry_actions() -> None:
    machine = counter_machine("engine")
    init = counter_init()
    started = ENGINE.execute(machine=machine, snapshot=None, event=init)
    unrelated = create_arvo_event_factory(decrement_service_contract.version("0.0.1")).emits(
        type="evt.number.decrement.success",
        source="com.number.decrement",
        subject=init.subject,
        data={"newValue": 0},
    )
    resumed = ENGINE.execute(machine=machine, snapshot=started.snapshot, event=unrelated)
    assert resumed.events == []
    assert resumed.snapshot["value"] == "increment"
    assert resumed.snapshot["status"] == "active"
    assert resumed.final_output is None


def test_engine_done_machine_ignores_further_events() -> None:
    machine = counter_machine("engine")
    init = counter_init()
    started = ENGINE.execute(machine=machine, snapshot=None, event=init)
    done = ENGINE.execute(machine=machine, snapshot=started.snapshot, event=increment_success(init.subject))
    again = ENGINE.execute(machine=machine, snapshot=done.snapshot, event=increment_success(init.subject, 11))
    assert again.events == []
    assert again.snapshot["value"] == "done"
    assert again.snapshot["context"] == done.snapshot["context"]
    # The engine still reports the output of a done machine; the orchestrator emits the completion
    # once, tracked by the record's `completed` flag (the original compared outputs as JSON, hazard 23).
    assert again.final_output == done.final_output


# --- 14.5 #2, #3 ---------------------------------------------------------------------------------


def _raising(message: str) -> Any:
    def raise_error(_args: Any) -> None:
        raise RuntimeError(message)

    return raise_error


def test_engine_propagates_an_error_of_the_context_factory() -> None:
    machine = counter_setup().create_machine({**counter_config("engine"), "context": _raising("Some error")})
    with pytest.raises(RuntimeError, match=r"^Some error$"):
        ENGINE.execute(machine=machine, snapshot=None, event=counter_init())


def test_engine_propagates_an_error_of_an_initial_entry_action() -> None:
    machine = counter_setup().create_machine(
        {
            "id": "counter",
            "context": lambda args: dict(args.input["data"]),
            "initial": "done",
            "states": {"done": {"type": "final", "entry": _raising("In state error")}},
        }
    )
    with pytest.raises(RuntimeError, match=r"^In state error$"):
        ENGINE.execute(machine=machine, snapshot=None, event=counter_init())


# --- 14.7 MachineRegistry ------------------------------------------------------------------------


class Empty(BaseModel):
    pass


registry_test_contract = create_arvo_orchestrator_contract(
    uri="#/test/machine",
    name="test",
    versions={"0.0.1": {"init": Empty, "complete": Empty}, "0.0.2": {"init": Empty, "complete": Empty}},
)
registry_machine_2_contract = create_arvo_orchestrator_contract(
    uri="#/test/machine/2", name="machine.2", versions={"0.0.1": {"init": Empty, "complete": Empty}}
)


def _final_only(contract: Any, version: str) -> ArvoMachine:
    return setup_arvo_machine(contracts={"self": contract.version(version), "services": {}}).create_machine(
        {"id": "v1", "initial": "done", "states": {"done": {"type": "final"}}}
    )


def _init_subject(contract: Any, version: str) -> Any:
    event = create_arvo_orchestrator_event_factory(contract.version(version)).init(
        source="com.test.test", data={"parentSubject$$": None}
    )
    return ArvoOrchestrationSubject.parse(event.subject)


def test_registry_needs_at_least_one_machine() -> None:
    with pytest.raises(ValueError) as caught:
        MachineRegistry()
    assert str(caught.value) == (
        "Machine registry initialization failed: No machines provided. At least one machine must be registered."
    )


def test_registry_resolves_the_machine_of_the_subject_name_and_version() -> None:
    test_v1 = _final_only(registry_test_contract, "0.0.1")
    test_v2 = _final_only(registry_test_contract, "0.0.2")
    machine_2 = _final_only(registry_machine_2_contract, "0.0.1")
    registry = MachineRegistry(test_v1, test_v2, machine_2)

    for contract, version, expected in [
        (registry_test_contract, "0.0.1", test_v1),
        (registry_test_contract, "0.0.2", test_v2),
        (registry_machine_2_contract, "0.0.1", machine_2),
    ]:
        resolved = registry.resolve(_init_subject(contract, version))
        assert resolved is expected
        assert resolved.source == contract.type
        assert resolved.self_contract.version == version


def test_registry_returns_none_for_an_unregistered_orchestrator() -> None:
    registry = MachineRegistry(
        _final_only(registry_test_contract, "0.0.1"), _final_only(registry_test_contract, "0.0.2")
    )
    assert registry.resolve(_init_subject(registry_machine_2_contract, "0.0.1")) is None


def test_registry_never_resolves_a_wildcard_version_subject() -> None:
    registry = MachineRegistry(_final_only(registry_test_contract, "0.0.1"))
    subject = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.test", initiator="com.test.test", version=None
    )
    assert registry.resolve(ArvoOrchestrationSubject.parse(subject)) is None


def test_registry_first_machine_wins_for_a_duplicate_version() -> None:
    first = _final_only(registry_test_contract, "0.0.1")
    second = _final_only(registry_test_contract, "0.0.1")
    assert MachineRegistry(first, second).resolve(_init_subject(registry_test_contract, "0.0.1")) is first


def test_counter_services_are_bound_by_accepts_type() -> None:
    machine = counter_machine()
    assert set(machine.services_by_type) == {contract.accepts.type for contract in COUNTER_SERVICES.values()}
    assert machine.contracts["self"] is SELF


def test_engine_evaluates_eventless_transitions_only_after_the_next_event() -> None:
    machine = counter_setup().create_machine(
        {
            "id": "gate",
            "context": lambda _args: {"ready": False},
            "initial": "waiting",
            "states": {
                "waiting": {"always": {"guard": lambda args: args.context["ready"], "target": "open"}},
                "open": {"type": "final"},
            },
            "output": lambda _args: {"final": 0},
        }
    )
    init = counter_init()
    started = ENGINE.execute(machine=machine, snapshot=None, event=init)
    assert started.snapshot["value"] == "waiting"
    # An out-of-band context change (e.g. a data migration) is not acted upon at restore time …
    patched = {**started.snapshot, "context": {**started.snapshot["context"], "ready": True}}
    # … but after the next event, even one without a matching transition (spec 11.4).
    resumed = ENGINE.execute(machine=machine, snapshot=patched, event=increment_success(init.subject))
    assert resumed.snapshot["value"] == "open"
    assert resumed.snapshot["status"] == "done"
    assert resumed.final_output == {"final": 0}
