"""Spec 8.1–8.2: how machine and resumable emissions become events, and how bad emissions fail.

Each test builds a one-state machine over the counter contracts whose entry emits the raw events under
test. Violations abort the step: nothing is committed and nothing is emitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from service.arvo.errors import ConfigViolation, ContractViolation, ExecutionViolation
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.machine.arvo_machine import ArvoMachine, enqueue_arvo_event, setup_arvo_machine
from service.arvo.machine.statechart import emit
from service.arvo.memory import InMemoryMemory, Lease
from service.arvo.orchestrator import ArvoOrchestrator, create_arvo_orchestrator
from service.arvo.resumable import ArvoResumable, ResumableContext, ResumableResult
from service.arvo.subject import ArvoOrchestrationSubject
from tests.unit.arvo_fixtures import (
    COUNTER_SERVICES,
    TEST_SOURCE,
    counter_setup,
    dec_orchestrator_contract,
    decrement_contract,
    test_machine_contract,
    value_read_contract,
)

SELF = test_machine_contract.version("0.0.1")
CHILD_SERVICES = {**COUNTER_SERVICES, "child": dec_orchestrator_contract.version("0.0.1")}


def emitting(*raw_events: Mapping[str, Any], services: Mapping[str, Any] = CHILD_SERVICES) -> ArvoMachine:
    """A machine whose initial state emits ``raw_events`` on entry and then waits forever."""
    return setup_arvo_machine(contracts={"self": SELF, "services": services}).create_machine(
        {
            "id": "emitter",
            "context": lambda args: {"subject": args.input["subject"]},
            "initial": "emitting",
            "states": {"emitting": {"entry": [enqueue_arvo_event(dict(raw)) for raw in raw_events]}},
        }
    )


def orchestrator(
    machine: ArvoMachine, memory: InMemoryMemory | None = None, **kwargs: Any
) -> ArvoOrchestrator:
    return create_arvo_orchestrator(
        executionunits=7, memory=memory or InMemoryMemory(), machines=[machine], **kwargs
    )


def init(**overrides: Any) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(SELF).init(
        source=TEST_SOURCE, data={"parentSubject$$": None, "delta": 1, "type": "increment"}, **overrides
    )


async def emitted(*raw_events: Mapping[str, Any], **init_overrides: Any) -> list[ArvoEvent]:
    return (await orchestrator(emitting(*raw_events)).execute(init(**init_overrides))).events


# --- overrides and defaults ----------------------------------------------------------------------


async def test_raw_event_fields_override_the_defaults() -> None:
    events = await emitted(
        {
            "type": "com.number.increment",
            "data": {"delta": 1, "ignored": True},
            "to": "com.elsewhere",
            "redirectto": "com.reply.here",
            "accesscontrol": "role=admin",
            "executionunits": 3,
            "__extensions": {"tenant": "t1"},
        },
        accesscontrol="role=user",
    )
    assert len(events) == 1
    event = events[0]
    assert event.data == {"delta": 1}, "service data is validated and stripped by the accepts schema"
    assert event.dataschema == "#/test/service/increment/0.0.1"
    assert (event.to, event.redirectto, event.accesscontrol, event.executionunits) == (
        "com.elsewhere",
        "com.reply.here",
        "role=admin",
        3,
    )
    assert event.extensions == {"tenant": "t1"}


async def test_unknown_emission_type_is_sent_unvalidated_with_its_own_dataschema() -> None:
    events = await emitted(
        {"type": "com.audit.log", "data": {"anything": [1, 2]}, "dataschema": "#/audit/1.0.0"}
    )
    assert [(event.type, event.to, event.data, event.dataschema) for event in events] == [
        ("com.audit.log", "com.audit.log", {"anything": [1, 2]}, "#/audit/1.0.0")
    ]
    assert events[0].executionunits == 7


# --- violations ----------------------------------------------------------------------------------


async def test_emitted_data_breaking_the_service_contract_is_a_contract_violation() -> None:
    memory = InMemoryMemory()
    start = init()
    with pytest.raises(ContractViolation) as caught:
        await orchestrator(
            emitting({"type": "com.number.increment", "data": {"delta": "one"}}), memory
        ).execute(start)
    message = caught.value.raw_message
    assert message.startswith(
        "[Emittable Event Creation] Invalid event data: Schema validation failed.\nEvent type: com.number.increment\n"
        "Details: delta"
    )
    assert await memory.inspect(ArvoOrchestrationSubject.parse(start.subject).instance_key) is None


@pytest.mark.parametrize("domain", [[], 42, [1]], ids=["empty_list", "number", "list_of_number"])
async def test_malformed_domain_list_is_a_contract_violation(domain: Any) -> None:
    with pytest.raises(ContractViolation, match="'domain' must be a non-empty list"):
        await emitted({"type": "com.number.increment", "data": {"delta": 1}, "domain": domain})


async def test_single_domain_string_is_accepted() -> None:
    events = await emitted({"type": "com.number.increment", "data": {"delta": 1}, "domain": "external"})
    assert [event.domain for event in events] == ["external"]


async def test_invalid_domain_name_is_a_contract_violation() -> None:
    with pytest.raises(
        ContractViolation, match=r"\[Emittable Event Creation\] Invalid event \(type='com.audit.log'\)"
    ):
        await emitted({"type": "com.audit.log", "data": {}, "domain": ["Not.Valid"]})


async def test_emission_without_a_type_is_a_contract_violation() -> None:
    with pytest.raises(ContractViolation, match="no string 'type'"):
        await emitted({"data": {}})


async def test_child_subject_that_cannot_be_created_is_an_execution_violation() -> None:
    with pytest.raises(ExecutionViolation) as caught:
        await emitted(
            {
                "type": "arvo.orc.dec",
                "data": {"parentSubject$$": None, "key": "k", "modifier": 1, "trend": "linear"},
                "domain": ["Not.Valid"],
            }
        )
    assert caught.value.raw_message.startswith(
        "[Emittable Event Creation] Orchestration subject creation failed due to invalid parameters - "
        "Event: arvo.orc.dec - "
    )


# --- child orchestrations ------------------------------------------------------------------------


async def test_child_subject_of_a_root_call_names_the_caller_and_its_reply_target() -> None:
    events = await emitted(
        {
            "type": "arvo.orc.dec",
            "data": {"parentSubject$$": None, "key": "k", "modifier": 1, "trend": "linear"},
            "redirectto": "com.custom.reply",
        }
    )
    child = ArvoOrchestrationSubject.parse(events[0].subject)
    assert (child.name, child.version, child.initiator) == ("arvo.orc.dec", "0.0.1", "arvo.orc.test")
    assert child.meta == {"redirectto": "com.custom.reply"}
    assert events[0].redirectto == "com.custom.reply"


async def test_child_subject_from_a_parent_subject_inherits_its_domain_and_meta() -> None:
    machine = setup_arvo_machine(contracts={"self": SELF, "services": CHILD_SERVICES}).create_machine(
        {
            "id": "parent",
            "context": lambda args: {"subject": args.input["subject"]},
            "initial": "calling",
            "states": {
                "calling": {
                    "entry": emit(
                        lambda args: {
                            "type": "arvo.orc.dec",
                            "data": {
                                "parentSubject$$": args.context["subject"],
                                "key": "k",
                                "modifier": 1,
                                "trend": "linear",
                            },
                        }
                    )
                }
            },
        }
    )
    start = init(domain="eu.west", redirectto="com.root.reply")
    events = (await orchestrator(machine).execute(start)).events
    parent = ArvoOrchestrationSubject.parse(start.subject)
    child = ArvoOrchestrationSubject.parse(events[0].subject)
    assert parent.domain == "eu.west"
    assert child.domain == "eu.west"
    assert child.initiator == "arvo.orc.test"
    # Child meta: the parent's, with redirectto replaced by the calling orchestrator.
    assert child.meta == {"redirectto": "arvo.orc.test"}
    assert events[0].data["parentSubject$$"] == start.subject


# --- completion options and enqueued events ------------------------------------------------------


async def test_completion_domain_option_and_enqueued_events() -> None:
    machine = counter_setup().create_machine(
        {
            "id": "instant",
            "context": lambda args: dict(args.input["data"]),
            "initial": "done",
            "states": {
                "done": {
                    "type": "final",
                    "entry": [
                        enqueue_arvo_event({"type": "com.audit.log", "data": {"n": 1}}),
                        enqueue_arvo_event(
                            lambda args: {"type": "com.audit.log", "data": {"n": args.context["delta"]}}
                        ),
                    ],
                }
            },
            "output": lambda args: {"final": args.context["delta"], "__domain": ["external", None]},
        }
    )
    events = (await orchestrator(machine).execute(init())).events
    assert [(event.type, event.domain) for event in events] == [
        ("com.audit.log", None),
        ("com.audit.log", None),
        ("arvo.orc.test.done", "external"),
        ("arvo.orc.test.done", None),
    ]
    assert [event.data for event in events[:2]] == [{"n": 1}, {"n": 1}]
    assert events[2].data == {"final": 1}
    assert events[2].id != events[3].id


def test_enqueue_action_needs_mapping_params() -> None:
    machine = counter_setup().create_machine(
        {
            "id": "bad",
            "initial": "idle",
            "states": {"idle": {"entry": {"type": "enqueueArvoEvent", "params": "not a mapping"}}},
        }
    )
    with pytest.raises(ConfigViolation, match="needs params"):
        machine.start(init())


def test_setup_rejects_unknown_options() -> None:
    with pytest.raises(ConfigViolation, match="unknown options: schemas"):
        setup_arvo_machine(contracts={"self": SELF, "services": {}}, schemas={})


def test_machine_definition_and_diagram_are_available() -> None:
    machine = emitting({"type": "com.audit.log", "data": {}})
    definition = machine.definition()
    assert definition["id"] == "emitter"
    assert "emitting" in definition["states"]
    assert "emitting" in machine.to_mermaid()


# --- resumable edge cases ------------------------------------------------------------------------


async def test_resumable_with_a_handler_for_a_version_the_contract_lacks_is_a_config_violation() -> None:
    async def handler(_ctx: ResumableContext) -> ResumableResult | None:
        return None

    agent = ArvoResumable(
        contract=dec_orchestrator_contract,
        services={"valueReader": value_read_contract.version("0.0.1")},
        memory=InMemoryMemory(),
        handler={"9.9.9": handler},
    )
    subject = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.dec", version="9.9.9", initiator=TEST_SOURCE
    )
    init_event = create_arvo_orchestrator_event_factory(dec_orchestrator_contract.version("0.0.1")).init(
        source=TEST_SOURCE,
        subject=subject,
        data={"key": "k", "modifier": 1, "trend": "linear", "parentSubject$$": None},
    )
    with pytest.raises(ConfigViolation, match=r"Resumable version 9\.9\.9 is not a version of contract"):
        await agent.execute(init_event)


def test_resumable_needs_an_orchestrator_contract() -> None:
    with pytest.raises(ConfigViolation, match="needs an orchestrator contract"):
        ArvoResumable(contract=decrement_contract, services={}, memory=InMemoryMemory(), handler={})


def test_resumable_rejects_the_self_contract_among_its_services() -> None:
    with pytest.raises(ConfigViolation, match="In ArvoResumable, Circular dependency detected"):
        ArvoResumable(
            contract=dec_orchestrator_contract,
            services={"self": dec_orchestrator_contract.version("0.0.1")},
            memory=InMemoryMemory(),
            handler={},
        )


def test_handler_kinds_expose_their_contract_domain_and_lease_ttl() -> None:
    agent = orchestrator(emitting({"type": "com.audit.log", "data": {}}), lease_ttl_ms=1234)
    assert agent.domain is None
    assert agent.lease_ttl_ms == 1234
    resumable = ArvoResumable(
        contract=dec_orchestrator_contract, services={}, memory=InMemoryMemory(), handler={}
    )
    assert resumable.domain is None


# --- lease housekeeping --------------------------------------------------------------------------


class StillClock:
    def __call__(self) -> float:
        return 5_000.0


class SpyMemory(InMemoryMemory):
    def __init__(self, *, release_error: Exception | None = None) -> None:
        super().__init__(clock=StillClock())
        self.release_error = release_error
        self.renewals = 0

    async def release(self, lease: Lease) -> bool:
        if self.release_error is not None:
            raise self.release_error
        return await super().release(lease)

    async def renew(self, lease: Lease, *, ttl_ms: int) -> bool:
        self.renewals += 1
        return await super().renew(lease, ttl_ms=ttl_ms)


async def test_failing_release_is_swallowed() -> None:
    memory = SpyMemory(release_error=ConnectionError("redis went away"))
    agent = orchestrator(emitting({"type": "com.audit.log", "data": {}}), memory)
    subject = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.test", version="0.0.1", initiator=TEST_SOURCE
    )
    stray = init(subject=subject).replace(type="evt.number.increment.success", data={"newValue": 1})
    result = await agent.execute(stray)
    assert result.outcome is ExecutionOutcome.IGNORED_NO_STATE


async def test_resumable_renews_its_lease_while_a_slow_handler_runs() -> None:
    memory = SpyMemory()

    async def slow(ctx: ResumableContext) -> ResumableResult | None:
        await asyncio.sleep(0.05)
        return {"context": {"slept": True}}

    agent = ArvoResumable(
        contract=dec_orchestrator_contract,
        services={},
        memory=memory,
        handler={"0.0.1": slow},
        lease_ttl_ms=15,  # renewal starts after a third of the TTL (5 ms)
    )
    start = create_arvo_orchestrator_event_factory(dec_orchestrator_contract.version("0.0.1")).init(
        source=TEST_SOURCE, data={"key": "k", "modifier": 1, "trend": "linear", "parentSubject$$": None}
    )
    result = await agent.execute(start)
    assert result.outcome is ExecutionOutcome.EXECUTED
    assert memory.renewals >= 1


async def test_changing_the_lease_ttl_also_changes_the_renewal_ttl() -> None:
    from service.examples.bench import bench_resumable

    agent = bench_resumable(InMemoryMemory())
    agent.lease_ttl_ms = 900
    assert agent.lease_ttl_ms == 900
    renewals = agent._pipeline._renewals
    assert renewals is not None
    assert renewals._ttl_ms == 900
    assert renewals._interval_s == pytest.approx(0.3)
