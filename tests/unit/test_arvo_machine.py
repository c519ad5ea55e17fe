"""Section 14.4 of the spec: ``setup_arvo_machine`` / ``create_machine`` and a full counter run."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.arvo.contract import EventDataschemaUtil
from service.arvo.errors import ConfigViolation
from service.arvo.event import create_arvo_event, parse_arvo_event_id
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.arvo.machine.arvo_machine import enqueue_arvo_event, setup_arvo_machine
from service.arvo.machine.statechart import emit
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestration.input_validation import EventValidationKind
from service.arvo.orchestrator import create_arvo_orchestrator
from service.arvo.subject import ArvoOrchestrationSubject
from tests.unit.arvo_fixtures import (
    COUNTER_SERVICES,
    counter_increment_handler,
    counter_machine,
    counter_setup,
    decrement_service_contract,
    increment_service_contract,
    notification_contract,
    test_machine_contract,
)

SELF = test_machine_contract.version("0.0.1")


def _clean(text: str) -> str:
    """The original's ``cleanString``: trimmed lines joined with newlines."""
    return "\n".join(line.strip() for line in text.strip().splitlines() if line.strip())


# --- setup ---------------------------------------------------------------------------------------


def test_valid_setup_offers_create_machine() -> None:
    setup = setup_arvo_machine(
        contracts={"self": SELF, "services": COUNTER_SERVICES},
        actions={
            "notification": emit(
                lambda args: {
                    "type": "notif.number.update",
                    "data": {"delta": args.context["delta"], "type": args.context["type"]},
                }
            )
        },
        guards={"isIncrement": lambda args: args.context["type"] == "increment"},
    )
    assert callable(setup.create_machine)


@pytest.mark.parametrize("second_version", ["0.0.2", "0.0.1"], ids=["different_versions", "same_version"])
def test_setup_rejects_two_versions_of_one_service_contract(second_version: str) -> None:
    with pytest.raises(ConfigViolation) as caught:
        setup_arvo_machine(
            contracts={
                "self": SELF,
                "services": {
                    "increment1": increment_service_contract.version("0.0.1"),
                    "increment2": increment_service_contract.version(second_version),
                    "decrement": decrement_service_contract.version("0.0.1"),
                    "notification": notification_contract.version("0.0.1"),
                },
            }
        )
    assert str(caught.value) == (
        "ViolationError<Config> In ArvoMachine, the service contracts must have unique URIs. Multiple versions "
        "of the same contract are not allow. The contracts 'increment2' and 'increment1' have the same URI "
        "'#/test/service/increment'"
    )


def test_setup_rejects_the_self_contract_as_a_service() -> None:
    with pytest.raises(ConfigViolation) as caught:
        setup_arvo_machine(contracts={"self": SELF, "services": {"testMachine": SELF, **COUNTER_SERVICES}})
    assert (
        "Circular dependency detected: Machine with URI '#/test/machine' is registered as service 'testMachine'. "
        "Self-referential services create execution loops and are prohibited."
    ) in str(caught.value)


def test_setup_rejects_actors() -> None:
    with pytest.raises(ConfigViolation) as caught:
        setup_arvo_machine(contracts={"self": SELF, "services": {}}, actors={})
    assert caught.value.raw_message == _clean(
        """
        Configuration Error: 'actor' not supported in Arvo machines
        Arvo machines do not support XState actors as they introduce asynchronous behavior.
        To fix:
        1. Remove the 'actor' configuration
        2. Use Arvo's event-driven patterns instead for asynchronous operations
        """
    )


def test_setup_accepts_delays_unlike_the_original() -> None:
    # The original rejects 'delays' (and 'after'); delayed transitions are supported here (their timers
    # live beside the snapshot): see test_statechart_after.py. Only unknown named delays are rejected.
    setup = setup_arvo_machine(contracts={"self": SELF, "services": {}}, delays={"patience": 1_000})
    assert setup.delays == {"patience": 1_000}


def test_setup_rejects_the_reserved_action_name() -> None:
    with pytest.raises(ConfigViolation, match="Reserved action name 'enqueueArvoEvent'"):
        setup_arvo_machine(
            contracts={"self": SELF, "services": {}}, actions={"enqueueArvoEvent": lambda _args: None}
        )


def test_setup_needs_a_versioned_orchestrator_contract_as_self() -> None:
    with pytest.raises(ConfigViolation, match="versioned orchestrator contract"):
        setup_arvo_machine(contracts={"self": increment_service_contract.version("0.0.1"), "services": {}})


# --- createMachine -------------------------------------------------------------------------------


def test_create_machine_rejects_a_version_other_than_the_self_contract() -> None:
    with pytest.raises(ConfigViolation) as caught:
        counter_setup().create_machine({"version": "0.0.3"})
    assert str(caught.value) == (
        "ViolationError<Config> Version mismatch: Machine version must be '0.0.1' or undefined, received '0.0.3'"
    )


async def test_counter_machine_runs_through_an_orchestrator_with_ids_domains_and_completion_options() -> None:
    log: list[Any] = []
    machine = counter_machine("machine", log)
    assert machine.source == "arvo.orc.test"
    assert machine.version == "0.0.1"
    assert machine.id == "counter"
    assert machine.statechart is not None

    orchestrator = create_arvo_orchestrator(memory=InMemoryMemory(), executionunits=0.1, machines=[machine])
    subject = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.test", version="0.0.1", initiator="com.test.service"
    )
    init = create_arvo_event_factory(SELF).accepts(
        source="com.test.service",
        subject=subject,
        data={"parentSubject$$": None, "type": "increment", "delta": 1},
    )
    output = (await orchestrator.execute(init)).events
    assert len(output) == 2
    for event in output:
        assert event.source == "arvo.orc.test"
        assert event.type == "com.number.increment"
        assert event.data["delta"] == 1
        assert event.dataschema == "#/test/service/increment/0.0.1"
    assert [event.domain for event in output] == [None, "external"]
    # The original gave both domain copies the id 'custom-increment-id' (hazard 15); we keep the
    # developer's id verbatim on the first copy only and suffix the others with their domain.
    assert [event.id for event in output] == ["custom-increment-id", "custom-increment-id:external"]

    reply = (await counter_increment_handler().execute(output[0])).events
    assert len(reply) == 1
    assert reply[0].domain is None
    assert reply[0].parentid == "custom-increment-id"

    output = (await orchestrator.execute(reply[0])).events
    assert len(output) == 3
    emitted, enqueued, done = output
    for event in (emitted, enqueued):
        assert event.source == "arvo.orc.test"
        assert event.type == "notif.number.update"
        assert event.data == {"delta": 1, "type": "increment"}
    assert emitted.domain == "external"
    assert enqueued.domain is None
    assert done.source == "arvo.orc.test"
    assert done.type == "arvo.orc.test.done"
    assert done.data == {"final": 1}
    assert done.to == "com.test.service"
    assert done.dataschema == "#/test/machine/0.0.1"
    assert done.domain is None
    assert done.executionunits == 23
    parsed, error = parse_arvo_event_id(done.id)
    assert error is None
    assert isinstance(parsed, dict)
    assert parsed["value"] == "custom-orch-1"
    assert len(log) == 1, "the named 'log' action ran once, on entering 'notification'"


# --- validateInput matrix ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minimal_machine() -> Any:
    return counter_setup().create_machine(
        {
            "id": "counter",
            "context": lambda args: {**args.input["data"], "errors": []},
            "initial": "route",
            "states": {"route": {"type": "final"}},
        }
    )


def _self_event(data_type: str = "increment", dataschema: str | None = None) -> Any:
    return create_arvo_event(
        type="arvo.orc.test",
        source="test",
        subject="test",
        data={"parentSubject$$": None, "delta": 1, "type": data_type},
        dataschema=dataschema,
    )


def test_validate_input_accepts_an_init_event_from_the_orchestrator_factory(minimal_machine: Any) -> None:
    event = create_arvo_orchestrator_event_factory(SELF).init(
        source="com.test.test", data={"parentSubject$$": None, "delta": 1, "type": "decrement"}
    )
    assert minimal_machine.validate_input(event).kind is EventValidationKind.VALID


def test_validate_input_reports_invalid_init_data(minimal_machine: Any) -> None:
    result = minimal_machine.validate_input(_self_event("test", EventDataschemaUtil.create(SELF)))
    assert result.kind is EventValidationKind.INVALID_DATA
    # The original reported zod's "Invalid enum value. Expected 'increment' | 'decrement', received 'test'".
    assert result.error is not None
    assert result.error.startswith("type: ")
    assert "'increment' or 'decrement'" in result.error


def test_validate_input_needs_a_dataschema(minimal_machine: Any) -> None:
    result = minimal_machine.validate_input(_self_event())
    assert result.kind is EventValidationKind.INVALID
    assert result.error is not None
    assert result.error.startswith("Event dataschema resolution failed: Unable to parse dataschema='None'")


def test_validate_input_accepts_the_self_contract_dataschema(minimal_machine: Any) -> None:
    assert (
        minimal_machine.validate_input(_self_event(dataschema=SELF.dataschema)).kind
        is EventValidationKind.VALID
    )


def test_validate_input_reports_a_self_version_mismatch(minimal_machine: Any) -> None:
    result = minimal_machine.validate_input(_self_event(dataschema="#/test/machine/0.0.2"))
    assert result.kind is EventValidationKind.INVALID
    assert result.error == (
        "Contract version mismatch: self Contract(version='0.0.1', type='arvo.orc.test', uri=#/test/machine) "
        "does not match Event(dataschema='#/test/machine/0.0.2', type='arvo.orc.test')"
    )


def test_validate_input_reports_a_self_uri_mismatch(minimal_machine: Any) -> None:
    result = minimal_machine.validate_input(_self_event(dataschema="#/test/machine/invalid/0.0.1"))
    assert result.kind is EventValidationKind.INVALID
    assert result.error == (
        "Contract URI mismatch: self Contract(uri='#/test/machine', type='arvo.orc.test') does not match "
        "Event(dataschema='#/test/machine/invalid/0.0.1', type='arvo.orc.test')"
    )


def test_validate_input_does_not_resolve_an_unknown_type(minimal_machine: Any) -> None:
    event = create_arvo_event(
        type="com.test.test", subject="test", source="test", data={}, dataschema="#/test/unknown/0.0.1"
    )
    assert minimal_machine.validate_input(event).kind is EventValidationKind.CONTRACT_UNRESOLVED


def test_validate_input_rejects_an_unparseable_dataschema_first(minimal_machine: Any) -> None:
    event = create_arvo_event(type="com.test.test", subject="test", source="test", data={}, dataschema="saad")
    # The dataschema is resolved before the contract, so this is INVALID (spec 11.6 step 1).
    assert minimal_machine.validate_input(event).kind is EventValidationKind.INVALID


def test_validate_input_accepts_a_service_reply_of_the_bound_version(minimal_machine: Any) -> None:
    event = create_arvo_event_factory(increment_service_contract.version("0.0.1")).emits(
        type="evt.number.increment.success", source="test", subject="test", data={"newValue": 1}
    )
    result = minimal_machine.validate_input(event)
    assert result.kind is EventValidationKind.VALID
    assert result.contract_type == "service"


def test_validate_input_reports_a_service_version_mismatch(minimal_machine: Any) -> None:
    event = create_arvo_event_factory(increment_service_contract.version("0.0.2")).emits(
        type="evt.number.increment.success", source="test", subject="test", data={"newValue": 1}
    )
    result = minimal_machine.validate_input(event)
    assert result.kind is EventValidationKind.INVALID
    assert result.error == (
        "Contract version mismatch: service Contract(version='0.0.1', type='com.number.increment', "
        "uri=#/test/service/increment) does not match Event(dataschema='#/test/service/increment/0.0.2', "
        "type='evt.number.increment.success')"
    )


def test_validate_input_accepts_a_service_system_error(minimal_machine: Any) -> None:
    event = create_arvo_event_factory(increment_service_contract.version("0.0.1")).system_error(
        error=RuntimeError("boom"), source="test", subject="test"
    )
    assert minimal_machine.validate_input(event).kind is EventValidationKind.VALID


# --- forbidden features --------------------------------------------------------------------------


def _config(states: dict[str, Any], **root: Any) -> dict[str, Any]:
    return {
        "id": "counter",
        "context": lambda args: {**args.input["data"], "errors": []},
        "initial": next(iter(states)),
        "states": states,
        **root,
    }


def test_create_machine_rejects_invoke() -> None:
    config = _config({"idle": {"invoke": {"src": "someService", "onDone": "success"}}, "success": {}})
    with pytest.raises(ConfigViolation) as caught:
        counter_setup().create_machine(config)
    message = caught.value.raw_message
    assert message.startswith("Configuration Error: 'invoke' not supported\n")
    # The original located the first leaf below the key ('idle > invoke > onDone'); we name the key.
    assert "\nLocation: idle > invoke\n" in message
    assert (
        "Arvo machines do not support XState invocations as they introduce asynchronous behavior." in message
    )


def test_create_machine_accepts_after_and_its_machine_reports_timers() -> None:
    config = _config({"idle": {"after": {1000: "timeout"}}, "timeout": {}}, version="0.0.1")
    machine = counter_setup().create_machine(config)
    assert machine.has_delayed_transitions


def test_create_machine_rejects_empty_and_root_level_forbidden_keys() -> None:
    # Slipped through the original's leaf-path scanner (hazard 28).
    with pytest.raises(ConfigViolation, match=re.escape("Location: (root) > invoke")):
        counter_setup().create_machine(_config({"idle": {}}, invoke={"src": "x"}))


def test_create_machine_accepts_a_state_named_like_the_reserved_action() -> None:
    # The original rejected this config ("Reserved action name 'enqueueArvoEvent'", Location
    # 'enqueueArvoEvent > on > * > target'): a false positive of its path scanner (hazard 28). Only
    # structural keys are checked here, and the reserved *action* name stays reserved in setup.
    machine = counter_setup().create_machine(
        _config({"enqueueArvoEvent": {"on": {"*": {"target": "timeout"}}}, "timeout": {}})
    )
    assert machine.id == "counter"


# --- emitted event types are checked when the machine is defined ----------------------------------


def _emitted_type_error(config: dict[str, Any], **setup: Any) -> str:
    with pytest.raises(ConfigViolation) as caught:
        setup_arvo_machine(contracts={"self": SELF, "services": COUNTER_SERVICES}, **setup).create_machine(
            config
        )
    return caught.value.raw_message


def test_create_machine_rejects_an_emit_lambda_of_a_type_no_service_accepts() -> None:
    message = _emitted_type_error(
        _config({"calling": {"entry": emit(lambda args: {"type": "com.number.incremnt", "data": {}})}})
    )
    assert message == (
        "Configuration Error: the machine emits 'com.number.incremnt', which none of its service contracts "
        "accepts\n"
        "Location: calling > entry\n"
        "The machine can emit: com.number.increment (service 'increment'), com.number.decrement (service "
        "'decrement'), notif.number.update (service 'notification'), arvo.orc.test.done (the completion)\n"
        "Did you mean 'com.number.increment'?\n"
        "To fix: add the contract that accepts 'com.number.incremnt' to contracts['services'] of "
        "setup_arvo_machine, or correct the type (an event no contract describes is queued with "
        "enqueue_arvo_event)"
    )


def test_emitted_type_locations_follow_the_chart_errors() -> None:
    nope = emit({"type": "com.loan.nope", "data": {}})
    fine = emit({"type": "com.number.decrement", "data": {"delta": 1}})
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"a": {"on": {"go": {"target": "b", "actions": [fine, nope]}}}, "b": {}},
            "a > on > go > actions > [1]",
        ),
        ({"a": {"on": {"go": [{"actions": fine}, {"actions": nope}]}}}, "a > on > go > [1] > actions"),
        ({"a": {"exit": [nope]}}, "a > exit > [0]"),
        (
            {"a": {"always": [{"guard": lambda _a: True, "actions": nope}, {"target": "b"}]}, "b": {}},
            "a > always > [0] > actions",
        ),
        ({"a": {"after": {500: {"target": "b", "actions": nope}}}, "b": {}}, "a > after > 500 > actions"),
        (
            {"p": {"initial": "x", "states": {"x": {"type": "final"}}, "onDone": {"actions": nope}}},
            "p > onDone > actions",
        ),
        ({"p": {"type": "parallel", "states": {"r1": {"entry": nope}, "r2": {}}}}, "p > r1 > entry"),
    ]
    for states, location in cases:
        message = _emitted_type_error(_config(states))
        assert f"\nLocation: {location}\n" in message, (location, message)
    root = _emitted_type_error({**_config({"a": {}}), "entry": nope})
    assert "\nLocation: (root) > entry\n" in root


def _declined(_args: Any) -> dict[str, Any]:
    return {"type": "com.number.increment", "data": {"delta": 1}}


def _escalating(args: Any) -> dict[str, Any]:
    def never_emitted() -> dict[str, Any]:
        return {"type": "com.nested.scope"}  # a nested function's return is not an emission

    if args.context["delta"] > 1:
        return {"type": "com.number.decrement", "data": {"delta": 1}}
    if args.context["delta"] < -1:
        return {"type": "com.number.escalate", "data": never_emitted()}
    return dict(type="arvo.orc.test.done", data={"final": 0})  # noqa: C408 (the call form is read too)


def test_named_emit_actions_and_def_functions_are_checked() -> None:
    message = _emitted_type_error(
        _config({"a": {"entry": ["notify"]}}), actions={"notify": emit(_escalating)}
    )
    assert "the machine emits 'com.number.escalate'" in message
    assert (
        "\nLocation: a > entry > [0]\nEmitted by the action 'notify' (actions= of setup_arvo_machine)\n"
        in (message)
    )
    params_form = _emitted_type_error(
        _config({"a": {"entry": {"type": "notify", "params": {}}}}), actions={"notify": emit(_escalating)}
    )
    assert "\nLocation: a > entry\nEmitted by the action 'notify'" in params_form
    # Every literal return of a def is an emission; a conditional expression has two.
    either = emit(
        lambda args: {"type": "com.number.decrement"} if args.context["delta"] else {"type": "com.x.y"}
    )
    assert "emits 'com.x.y'" in _emitted_type_error(_config({"a": {"entry": either}}))
    accepted = setup_arvo_machine(contracts={"self": SELF, "services": COUNTER_SERVICES}).create_machine(
        _config({"a": {"entry": emit(_declined)}})
    )
    assert accepted.id == "counter"


def test_two_lambdas_on_one_line_are_told_apart() -> None:
    pair = [emit(lambda _a: {"type": "com.number.increment"}), emit(lambda _a: {"type": "com.two.lambdas"})]
    message = _emitted_type_error(_config({"a": {"entry": pair}}))
    assert "emits 'com.two.lambdas'" in message
    assert "\nLocation: a > entry > [1]\n" in message


def test_what_cannot_be_known_statically_is_not_checked() -> None:
    namespace: dict[str, Any] = {}
    exec("made = lambda args: {'type': 'com.without.source'}", namespace)  # no source to read
    machine = setup_arvo_machine(
        contracts={"self": SELF, "services": COUNTER_SERVICES},
        actions={"route": emit(lambda args: {"type": args.context["next"], "data": {}})},
    ).create_machine(
        _config(
            {
                "a": {
                    "entry": [
                        "route",  # a type computed at run time
                        emit(namespace["made"]),
                        emit({"data": {}}),  # no type: the runtime reports it
                        # The escape hatch for events no contract describes (sent unvalidated).
                        enqueue_arvo_event({"type": "com.audit.log", "data": {}}),
                        {"type": "enqueueArvoEvent", "params": {"type": "com.notif.test", "data": {}}},
                        emit(lambda args: {"type": "arvo.orc.test.done", "data": {"final": 1}}),
                    ]
                }
            }
        )
    )
    assert machine.id == "counter"


async def test_the_loan_finding_fails_at_definition_not_at_run_time() -> None:
    # Before: the machine was accepted and the run failed with "No handlers registered for event type".
    with pytest.raises(ConfigViolation, match=r"emits 'com\.loan\.nope'.*\nLocation: a > entry"):
        setup_arvo_machine(contracts={"self": SELF, "services": {}}).create_machine(
            _config({"a": {"entry": emit(lambda args: {"type": "com.loan.nope", "data": {}})}})
        )


def test_the_source_read_must_be_the_one_compiled() -> None:
    import linecache

    compiled = "made = lambda args: {'type': 'com.number.nope', 'data': {}}\n"
    namespace: dict[str, Any] = {}
    exec(compile(compiled, "<machine-source>", "exec"), namespace)
    try:
        linecache.cache["<machine-source>"] = (len(compiled), None, [compiled], "<machine-source>")
        message = _emitted_type_error(_config({"a": {"entry": emit(namespace["made"])}}))
        assert "emits 'com.number.nope'" in message
        # The file changed since it was compiled: another type at that line is not trusted.
        changed = "made = lambda args: {'type': 'com.other.type', 'data': {}}\n"
        linecache.cache["<machine-source>"] = (len(changed), None, [changed], "<machine-source>")
        machine = setup_arvo_machine(contracts={"self": SELF, "services": COUNTER_SERVICES}).create_machine(
            _config({"a": {"entry": emit(namespace["made"])}})
        )
        assert machine.id == "counter"
    finally:
        linecache.cache.pop("<machine-source>", None)
