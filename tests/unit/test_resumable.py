"""Section 14.3 of the spec: the imperative resumable orchestrator, scenario by scenario."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from service.arvo.contract import create_arvo_orchestrator_contract
from service.arvo.errors import ConfigViolation, ContractViolation
from service.arvo.event import ArvoEvent, EventIdSpec
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.resumable import ArvoResumable, ResumableContext, ResumableResult
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from tests.unit.arvo_fixtures import (
    TEST_SOURCE,
    dec_orchestrator_contract,
    decrement_handler,
    decrement_resumable,
    inc_resumable_contract,
    increment_handler,
    increment_resumable,
    value_read_contract,
    value_read_handler,
    value_write_contract,
    value_write_handler,
)


def instance_key(subject: str) -> str:
    return ArvoOrchestrationSubject.parse(subject).instance_key


@pytest.fixture
def memory() -> InMemoryMemory:
    return InMemoryMemory()


@pytest.fixture
def value_store() -> dict[str, Any]:
    return {}


@pytest.fixture
def handlers(memory: InMemoryMemory, value_store: dict[str, Any]) -> dict[str, Any]:
    return {
        "decrement": decrement_handler(),
        "increment": increment_handler(),
        "value_read": value_read_handler(value_store),
        "value_write": value_write_handler(value_store),
        "decrement_agent": decrement_resumable(memory),
        "increment_agent": increment_resumable(memory),
    }


def dec_init(*, version: str = "0.0.1", **overrides: Any) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(dec_orchestrator_contract.version(version)).init(
        source=TEST_SOURCE,
        data={
            "key": "test.key",
            "modifier": 2,
            "trend": "linear" if version == "0.0.1" else "exponential",
            "parentSubject$$": None,
        },
        **overrides,
    )


# --- 14.3 #1 -------------------------------------------------------------------------------------


def test_resumable_with_several_services_requires_locking_by_default(handlers: dict[str, Any]) -> None:
    assert handlers["decrement_agent"].requires_resource_locking is True


def test_resumable_with_one_service_does_not_require_locking(memory: InMemoryMemory) -> None:
    agent = ArvoResumable(
        contract=dec_orchestrator_contract,
        services={"valueReader": value_read_contract.version("0.0.1")},
        memory=memory,
        handler={},
    )
    assert agent.requires_resource_locking is False
    assert agent.source == "arvo.orc.dec"
    assert agent.system_error_schema.type == "sys.arvo.orc.dec.error"


# --- 14.3 #2 -------------------------------------------------------------------------------------


async def test_resumable_full_decrement_flow_completes_with_a_write_and_the_completion(
    handlers: dict[str, Any], memory: InMemoryMemory, value_store: dict[str, Any]
) -> None:
    agent = handlers["decrement_agent"]
    init = dec_init(
        id=EventIdSpec(deduplication="DEVELOPER_MANAGED", value="custom-id"), domain="test.domain.test"
    )
    assert init.id == "custom-id"
    value_store["test.key"] = 2
    key = instance_key(init.subject)

    events = (await agent.execute(init)).events
    record = await memory.inspect(key)
    assert record is not None
    assert record["subject"] == init.subject
    assert record["parentSubject"] is None
    assert record["status"] == "active"
    assert record["state$$"] == {"key": "test.key", "value": 0, "modifier": 2, "trend": "linear", "error": []}
    assert len(events) == 1
    read = events[0]
    assert (read.type, read.to, read.source) == ("com.value.read", "com.value.read", "arvo.orc.dec")
    assert read.data["key"] == "test.key"
    assert read.parentid == init.id
    assert record["events"]["expected"] == {read.id: []}

    events = (await handlers["value_read"].execute(read)).events
    assert len(events) == 1
    reply = events[0]
    assert (reply.type, reply.to, reply.source) == (
        "evt.value.read.success",
        "arvo.orc.dec",
        "com.value.read",
    )
    assert reply.data["value"] == 2
    assert reply.parentid == read.id
    assert reply.domain is None

    events = (await agent.execute(reply)).events
    record = await memory.inspect(key)
    assert record is not None
    assert record["status"] == "active"
    assert record["state$$"]["value"] == 2
    assert len(events) == 1
    call = events[0]
    assert (call.type, call.to, call.source) == (
        "com.decrement.number",
        "com.decrement.number",
        "arvo.orc.dec",
    )
    assert call.data == {"init": 2, "decrement": 2}

    events = (await handlers["decrement"].execute(call)).events
    assert len(events) == 1
    reply = events[0]
    assert (reply.type, reply.to, reply.source) == (
        "evt.decrement.number.success",
        "arvo.orc.dec",
        "com.decrement.number",
    )
    assert reply.data["result"] == 0

    events = (await agent.execute(reply)).events
    record = await memory.inspect(key)
    assert record is not None
    assert record["status"] == "done"
    assert record["completed"] is True
    assert record["state$$"]["value"] == 0
    assert len(events) == 2
    write, done = events
    assert (write.type, write.to, write.source) == ("com.value.write", "com.value.write", "arvo.orc.dec")
    assert write.data == {"key": "test.key", "value": 0}
    assert write.parentid == reply.id
    assert (done.type, done.to, done.source) == ("arvo.orc.dec.done", TEST_SOURCE, "arvo.orc.dec")
    assert done.data == {"success": True, "error": [], "final": 0}
    assert done.parentid == "custom-id"
    assert done.executionunits == 10

    # The write's reply arrives after completion: ignored, nothing emitted.
    write_reply = (await handlers["value_write"].execute(write)).events[0]
    after = await agent.execute(write_reply)
    assert after.events == []
    assert after.outcome is ExecutionOutcome.IGNORED_DONE


# --- 14.3 #3 -------------------------------------------------------------------------------------


async def test_resumable_fans_out_to_two_domains_and_waits_for_every_reply(
    handlers: dict[str, Any], value_store: dict[str, Any]
) -> None:
    value_store.update({"test.1": 3, "test.2": 8})
    external: list[ArvoEvent] = []

    async def on_domained_event(domain: str, event: ArvoEvent, _broker: InMemoryBroker) -> None:
        if domain == "external":
            external.append(event)

    broker = InMemoryBroker(handlers.values(), on_domained_event=on_domained_event)
    init = create_arvo_orchestrator_event_factory(inc_resumable_contract.version("0.0.1")).accepts(
        source=TEST_SOURCE,
        data={
            "parentSubject$$": None,
            "modifications": [{"key": "test.1", "value": 1}, {"key": "test.2", "value": 2}],
        },
    )
    resolved = await broker.resolve(init)

    assert value_store["test.1"] == 4
    assert value_store["test.2"] == 10
    assert resolved is not None
    assert resolved.type == "arvo.orc.inc.done"
    assert resolved.data["final"] == [{"key": "test.1", "value": 4}, {"key": "test.2", "value": 10}]
    assert resolved.parentid == init.id
    # 2 reads + 2 increments + 2 writes went to the 'external' domain
    assert [event.type for event in external] == ["com.value.read"] * 2 + ["com.increment.number"] * 2 + [
        "com.value.write"
    ] * 2
    assert broker.errors == []


# --- 14.3 #4, #5 ---------------------------------------------------------------------------------


async def test_resumable_handler_error_resolves_to_a_system_error_for_the_initiator(
    handlers: dict[str, Any], memory: InMemoryMemory
) -> None:
    broker = InMemoryBroker(handlers.values())
    init = dec_init(version="0.0.2")
    resolved = await broker.resolve(init)
    assert resolved is not None
    assert resolved.subject == init.subject
    assert resolved.type == "sys.arvo.orc.dec.error"
    assert resolved.data["errorMessage"] == "Version 0.0.2 is not implemented for decrement resumable"
    assert resolved.parentid == init.id
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert record["executionStatus"] == "failure"


async def test_resumable_rejects_an_event_of_no_registered_contract(handlers: dict[str, Any]) -> None:
    agent = handlers["decrement_agent"]
    init = dec_init()
    await agent.execute(init)
    faulty = create_arvo_event_factory(value_write_contract.version("0.0.1")).accepts(
        subject=init.subject, source=TEST_SOURCE, data={"value": 0, "key": "test"}
    )
    with pytest.raises(ConfigViolation) as caught:
        await agent.execute(faulty)
    assert str(caught.value) == (
        "ViolationError<Config> Contract validation failed - Event does not match any registered contract "
        "schemas in the resumable"
    )


async def test_resumable_rejects_a_reply_whose_data_breaks_its_contract(handlers: dict[str, Any]) -> None:
    agent = handlers["decrement_agent"]
    init = dec_init()
    read = (await agent.execute(init)).events[0]
    bad = (
        create_arvo_event_factory(value_read_contract.version("0.0.1"))
        .emits(
            subject=init.subject,
            source="com.value.read",
            type="evt.value.read.success",
            data={"key": "k", "value": 1},
        )
        .replace(data={"key": "k", "value": "not a number"}, parentid=read.id)
    )
    with pytest.raises(ContractViolation, match="Input validation failed"):
        await agent.execute(bad)


async def test_resumable_unknown_self_version_in_the_dataschema_is_a_config_violation(
    handlers: dict[str, Any], memory: InMemoryMemory
) -> None:
    init = dec_init()
    wrong_version = init.replace(dataschema="#/test/orchestrator/decrement/0.0.9")
    # The original turned this into a system error event plus a failure record (quirk 24).
    with pytest.raises(ConfigViolation, match=r"Invalid contract version: 0\.0\.9"):
        await handlers["decrement_agent"].execute(wrong_version)
    assert await memory.inspect(instance_key(init.subject)) is None


async def test_resumable_without_a_handler_for_the_subject_version_is_a_config_violation(
    memory: InMemoryMemory,
) -> None:
    agent = ArvoResumable(
        contract=dec_orchestrator_contract,
        services={"valueReader": value_read_contract.version("0.0.1")},
        memory=memory,
        handler={},
    )
    with pytest.raises(ConfigViolation) as caught:
        await agent.execute(dec_init())
    assert str(caught.value) == (
        "ViolationError<Config> Handler resolution failed: No handler found matching orchestrator "
        "name='arvo.orc.dec' and version='0.0.1'."
    )


async def test_resumable_handler_sees_input_context_metadata_and_contracts(memory: InMemoryMemory) -> None:
    seen: list[ResumableContext] = []

    async def handler(ctx: ResumableContext) -> ResumableResult | None:
        seen.append(ctx)
        if ctx.input is not None:
            return {"context": {"step": 1}, "services": [{"type": "com.value.read", "data": {"key": "k"}}]}
        return None

    agent = ArvoResumable(
        contract=dec_orchestrator_contract,
        services={"valueReader": value_read_contract.version("0.0.1")},
        memory=memory,
        handler={"0.0.1": handler},
    )
    init = dec_init(domain="test.domain")
    read = (await agent.execute(init)).events[0]
    reply = (await value_read_handler({"k": 7}).execute(read)).events[0]
    result = await agent.execute(reply)
    assert result.events == []

    first, second = seen
    assert first.input == init.to_dict()
    assert first.service is None
    assert first.context is None
    assert first.metadata is None
    assert first.domain == {"event": "test.domain", "self": None}
    assert first.contracts["self"].version == "0.0.1"
    assert set(first.contracts["services"]) == {"valueReader"}
    assert second.input is None
    assert second.service == reply.to_dict()
    assert second.context == {"step": 1}
    assert second.metadata is not None
    assert second.metadata["state$$"] == {"step": 1}
    assert second.collected_events == {"evt.value.read.success": [reply.to_dict()]}
    # Returning nothing keeps the state and the expectations (with the collected reply).
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert record["state$$"] == {"step": 1}
    assert record["events"]["expected"] == {read.id: [reply.to_dict()]}


# --- output and context semantics of the handler result (spec 7.3 steps 8 and 10) ----------------


class EmptyComplete(BaseModel):
    pass


empty_complete_contract = create_arvo_orchestrator_contract(
    uri="#/test/resumable/empty",
    name="empty.result",
    versions={"0.0.1": {"init": EmptyComplete, "complete": EmptyComplete}},
)


def empty_result_agent(memory: InMemoryMemory, result: ResumableResult) -> ArvoResumable:
    async def handler(ctx: ResumableContext) -> ResumableResult | None:
        if ctx.input is not None:
            return {"context": {"kept": True}, "services": [{"type": "com.value.read", "data": {"key": "k"}}]}
        return result

    return ArvoResumable(
        contract=empty_complete_contract,
        services={"valueReader": value_read_contract.version("0.0.1")},
        memory=memory,
        handler={"0.0.1": handler},
    )


async def run_to_reply(agent: ArvoResumable) -> tuple[ArvoEvent, list[ArvoEvent]]:
    init = create_arvo_orchestrator_event_factory(empty_complete_contract.version("0.0.1")).init(
        source=TEST_SOURCE, data={"parentSubject$$": None}
    )
    read = (await agent.execute(init)).events[0]
    reply = (await value_read_handler({"k": 1}).execute(read)).events[0]
    return init, (await agent.execute(reply)).events


async def test_resumable_empty_output_completes_the_orchestration(memory: InMemoryMemory) -> None:
    # JavaScript treats {} as truthy: `output: {}` completes (it must not depend on Python truthiness).
    init, events = await run_to_reply(empty_result_agent(memory, {"output": {}}))
    assert [(event.type, event.data) for event in events] == [("arvo.orc.empty.result.done", {})]
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert (record["status"], record["completed"]) == ("done", True)


async def test_resumable_null_output_and_context_change_nothing(memory: InMemoryMemory) -> None:
    # `output ?? …` and `context ?? previous` in the original: null means "not given".
    init, events = await run_to_reply(empty_result_agent(memory, {"output": None, "context": None}))
    assert events == []
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert record["status"] == "active"
    assert record["state$$"] == {"kept": True}
