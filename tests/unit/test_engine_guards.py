"""Guards the engine adds where the original fails late or silently."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.bench import add_contract, bench_machine_contract
from service.arvo.errors import ConfigViolation, ContractViolation
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory, error_data
from service.arvo.handler import ArvoEventHandler, HandlerContext
from service.arvo.machine.arvo_machine import setup_arvo_machine
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.orchestrator import create_arvo_orchestrator
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples.bench import bench_orchestrator


def add_event() -> Any:
    return create_arvo_event_factory(add_contract.version("1.0.0")).accepts(
        source="com.test.client", data={"a": 1, "b": 2}
    )


async def test_handler_returning_an_empty_object_is_a_contract_violation_not_silence() -> None:
    async def empty(_context: HandlerContext) -> Any:
        return {}

    handler = ArvoEventHandler(contract=add_contract, executionunits=1, handler={"1.0.0": empty})
    with pytest.raises(ContractViolation, match="No contract available for None"):
        await handler.execute(add_event())


async def test_handler_returning_an_empty_list_emits_nothing() -> None:
    async def nothing(_context: HandlerContext) -> Any:
        return []

    handler = ArvoEventHandler(contract=add_contract, executionunits=1, handler={"1.0.0": nothing})
    assert (await handler.execute(add_event())).events == []


def test_key_error_messages_are_not_wrapped_in_quotes() -> None:
    assert error_data(KeyError("unknown SKU 'x'"))["errorMessage"] == "unknown SKU 'x'"
    assert error_data(KeyError(1, 2))["errorMessage"] == "(1, 2)"
    assert error_data(ValueError("plain"))["errorMessage"] == "plain"


async def test_machine_output_that_is_not_an_object_is_a_contract_violation() -> None:
    machine = setup_arvo_machine(
        contracts={"self": bench_machine_contract.version("1.0.0"), "services": {}}
    ).create_machine(
        {"id": "bad", "initial": "done", "states": {"done": {"type": "final"}}, "output": lambda _args: 42}
    )
    orchestrator = create_arvo_orchestrator(executionunits=1, memory=InMemoryMemory(), machines=[machine])
    init = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0")).init(
        source="com.test.client", data={"a": 1, "b": 2, "parentSubject$$": None}
    )
    with pytest.raises(ContractViolation, match="output must be an object"):
        await orchestrator.execute(init)


async def test_event_for_an_existing_instance_with_another_machine_version_is_a_config_violation() -> None:
    memory = InMemoryMemory()
    orchestrator = bench_orchestrator(memory)
    factory = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0"))
    init = factory.init(source="com.test.client", data={"a": 1, "b": 2, "parentSubject$$": None})
    await orchestrator.execute(init)
    parsed = ArvoOrchestrationSubject.parse(init.subject)
    forged_subject = ArvoOrchestrationSubject.create(
        {
            "orchestrator": {"name": parsed.name, "version": "2.0.0"},
            "execution": {"id": parsed.execution_id, "initiator": parsed.initiator, "domain": None},
            "meta": {},
        }
    )
    reply = create_arvo_event_factory(add_contract.version("1.0.0")).emits(
        type="evt.bench.add.success", source="com.bench.add", subject=forged_subject, data={"sum": 3}
    )
    with pytest.raises(ConfigViolation, match=r"does not match the version '1\.0\.0'"):
        await orchestrator.execute(reply)
    record = await memory.inspect(parsed.instance_key)
    assert record is not None
    assert record["executionStatus"] == "normal", "the live instance is untouched"


async def test_stored_snapshot_that_does_not_fit_the_machine_is_a_config_violation() -> None:
    memory = InMemoryMemory()
    orchestrator = bench_orchestrator(memory)
    factory = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0"))
    init = factory.init(source="com.test.client", data={"a": 1, "b": 2, "parentSubject$$": None})
    await orchestrator.execute(init)
    key = ArvoOrchestrationSubject.parse(init.subject).instance_key
    grant = await memory.lease_and_read(key, ttl_ms=1000)
    assert grant.lease is not None
    assert grant.record is not None
    grant.record["state"]["value"] = "no-such-state"
    await memory.commit_and_release(grant.lease, grant.record, status=InstanceStatus.ACTIVE)
    reply = create_arvo_event_factory(add_contract.version("1.0.0")).emits(
        type="evt.bench.add.success", source="com.bench.add", subject=init.subject, data={"sum": 3}
    )
    with pytest.raises(ConfigViolation, match="Stored snapshot does not fit machine 'bench'"):
        await orchestrator.execute(reply)
