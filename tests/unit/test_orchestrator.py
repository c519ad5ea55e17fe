"""Section 14.2 of the spec: the state-machine orchestrator, scenario by scenario.

Every test builds its own :class:`InMemoryMemory` and value store (the original shared one of each per
file). Where our engine deliberately differs from the original, the test asserts our behaviour and a
comment says what the original did.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from service.arvo.errors import (
    ConfigViolation,
    ContractViolation,
    ExecutionViolation,
    TransactionViolation,
    TransactionViolationCause,
)
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory, InstanceStatus, Lease, LeaseGrant, StateReadError
from service.arvo.orchestrator import create_arvo_orchestrator
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from tests.unit.arvo_fixtures import (
    TEST_SOURCE,
    all_orchestrator_handlers,
    dec_orchestrator_contract,
    decrement_orchestrator,
    dumb_contract,
    dumb_orchestrator,
    dumb_service_contract,
    inc_orchestrator_contract,
    increment_contract,
    number_modifier_contract,
)


def instance_key(subject: str) -> str:
    return ArvoOrchestrationSubject.parse(subject).instance_key


def inc_init(key: str = "test.key", *, version: str = "0.0.1", **overrides: Any) -> ArvoEvent:
    trend = "linear" if version == "0.0.1" else "exponential"
    return create_arvo_orchestrator_event_factory(inc_orchestrator_contract.version(version)).init(
        source=TEST_SOURCE,
        data={"key": key, "modifier": 2, "trend": trend, "parentSubject$$": None},
        **overrides,
    )


def modifier_init(*, version: str = "0.0.1", operation: str = "decrement", **overrides: Any) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(number_modifier_contract.version(version)).init(
        source=TEST_SOURCE,
        data={
            "init": 1,
            "modifier": 4,
            "trend": "linear" if version == "0.0.1" else "exponential",
            "operation": operation,
            "parentSubject$$": None,
        },
        **overrides,
    )


@pytest.fixture
def memory() -> InMemoryMemory:
    return InMemoryMemory()


@pytest.fixture
def value_store() -> dict[str, Any]:
    return {}


@pytest.fixture
def handlers(memory: InMemoryMemory, value_store: dict[str, Any]) -> dict[str, Any]:
    return all_orchestrator_handlers(memory, value_store)


def broker_with_collectors(
    handlers: Mapping[str, Any], *topics: str, **kwargs: Any
) -> tuple[InMemoryBroker, dict[str, list[ArvoEvent]]]:
    broker = InMemoryBroker(handlers.values(), **kwargs)
    received: dict[str, list[ArvoEvent]] = {topic: [] for topic in topics}
    for topic in topics:

        async def collect(event: ArvoEvent, _broker: InMemoryBroker, topic: str = topic) -> None:
            received[topic].append(event)

        broker.subscribe(topic, collect)
    return broker, received


# --- 14.2 #1 -------------------------------------------------------------------------------------


async def test_orchestrator_full_flow_reads_increments_and_completes(
    handlers: dict[str, Any], memory: InMemoryMemory, value_store: dict[str, Any]
) -> None:
    agent = handlers["increment_agent"]
    init = inc_init()
    value_store["test.key"] = 2
    key = instance_key(init.subject)

    result = await agent.execute(init)
    record = await memory.inspect(key)
    assert record is not None
    assert record["subject"] == init.subject
    assert record["parentSubject"] is None
    assert record["status"] == "active"
    assert record["value"] == "fetch_value"
    assert record["state"]["context"]["value"] == 0
    assert record["state"]["context"]["modifier"] == 2
    assert record["state"]["context"]["trend"] == "linear"
    assert record["state"]["context"]["error"] == []
    assert len(result.events) == 1
    read = result.events[0]
    assert (read.type, read.to, read.source) == ("com.value.read", "com.value.read", "arvo.orc.inc")
    assert read.data["key"] == "test.key"
    assert read.parentid == init.id

    reply = (await handlers["value_read"].execute(read)).events
    assert len(reply) == 1
    assert (reply[0].type, reply[0].to, reply[0].source) == (
        "evt.value.read.success",
        "arvo.orc.inc",
        "com.value.read",
    )
    assert reply[0].data["value"] == 2

    result = await agent.execute(reply[0])
    record = await memory.inspect(key)
    assert record is not None
    assert record["status"] == "active"
    assert record["value"] == {"increment": {}}  # a parallel state without regions
    assert record["state"]["context"]["value"] == 2
    assert len(result.events) == 1
    call = result.events[0]
    assert (call.type, call.to, call.source) == (
        "com.increment.number",
        "com.increment.number",
        "arvo.orc.inc",
    )
    assert call.data == {"init": 2, "increment": 2}

    reply = (await handlers["increment"].execute(call)).events
    assert len(reply) == 1
    assert (reply[0].type, reply[0].to, reply[0].source) == (
        "evt.increment.number.success",
        "arvo.orc.inc",
        "com.increment.number",
    )
    assert reply[0].data["result"] == 4

    result = await agent.execute(reply[0])
    record = await memory.inspect(key)
    assert record is not None
    assert (record["status"], record["value"], record["completed"]) == ("done", "done", True)
    assert record["state"]["context"]["value"] == 4
    assert len(result.events) == 1
    done = result.events[0]
    assert (done.type, done.to, done.source) == ("arvo.orc.inc.done", TEST_SOURCE, "arvo.orc.inc")
    assert done.data == {"success": True, "error": [], "final": 4}
    assert [row.key for row in await memory.list_instances(status=InstanceStatus.DONE)] == [key]


# --- 14.2 #2 -------------------------------------------------------------------------------------


async def test_orchestrator_rejects_an_event_whose_instance_is_leased_by_another_worker(
    handlers: dict[str, Any], memory: InMemoryMemory
) -> None:
    init = inc_init()
    # The original pre-locks with memory.lock(subject); our lock is a lease on the instance key.
    memory.force_lock(instance_key(init.subject))
    with pytest.raises(TransactionViolation) as caught:
        await handlers["increment_agent"].execute(init)
    assert "Lock acquisition denied - Unable to obtain exclusive access to event processing" in str(
        caught.value
    )
    assert caught.value.cause is TransactionViolationCause.LOCK_UNACQUIRED
    # The foreign lease is untouched: it is still denied.
    assert not (await memory.lease_and_read(instance_key(init.subject), ttl_ms=1000)).acquired


# --- 14.2 #3, #4 ---------------------------------------------------------------------------------


async def test_orchestrator_rejects_an_event_no_machine_contract_resolves(handlers: dict[str, Any]) -> None:
    agent = handlers["increment_agent"]
    init = inc_init("test.key.contract")
    result = await agent.execute(init)
    assert len(result.events) == 1
    with pytest.raises(ConfigViolation) as caught:
        await agent.execute(result.events[0])  # its own com.value.read call is no reply it accepts
    assert str(caught.value) == (
        "ViolationError<Config> Contract validation failed - Event does not match any registered contract "
        "schemas in the machine"
    )


async def test_orchestrator_rejects_a_reply_whose_data_breaks_the_service_contract(
    handlers: dict[str, Any], memory: InMemoryMemory
) -> None:
    agent = handlers["increment_agent"]
    init = inc_init("test.key.invalid")
    await agent.execute(init)
    # No unlock needed (the original unlocked here): the commit released the lease.
    before = await memory.inspect(instance_key(init.subject))
    bad_reply = create_arvo_event(
        subject=init.subject,
        source=TEST_SOURCE,
        type="evt.value.read.success",
        data={"value": "saad"},
        dataschema="#/test/handler/value/read/0.0.1",
    )
    with pytest.raises(ContractViolation) as caught:
        await agent.execute(bad_reply)
    assert str(caught.value).startswith(
        "ViolationError<Contract> Input validation failed - Event data does not meet contract requirements"
    )
    assert await memory.inspect(instance_key(init.subject)) == before


# --- 14.2 #5 -------------------------------------------------------------------------------------


async def test_orchestrator_emissions_carry_the_consumed_event_id_as_parentid(
    handlers: dict[str, Any], value_store: dict[str, Any]
) -> None:
    agent = handlers["increment_agent"]
    init = inc_init("test.key.parentid")
    value_store["test.key.parentid"] = 5
    read = (await agent.execute(init)).events
    assert len(read) == 1
    assert read[0].type == "com.value.read"
    assert read[0].parentid == init.id
    reply = (await handlers["value_read"].execute(read[0])).events
    assert reply[0].parentid == read[0].id
    call = (await agent.execute(reply[0])).events
    assert len(call) == 1
    assert call[0].type == "com.increment.number"
    assert call[0].parentid == reply[0].id


# --- 14.2 #6 -------------------------------------------------------------------------------------


async def test_nested_orchestration_through_the_broker_completes_with_eleven_events(
    handlers: dict[str, Any], value_store: dict[str, Any]
) -> None:
    broker, received = broker_with_collectors(handlers, TEST_SOURCE)
    # Our broker routes by (to, domain): the init carries domain 'test.domain', so the root
    # orchestrator also listens there (the original broker ignored the domain of published events).
    broker.register(handlers["number_modifier_agent"], domain="test.domain")
    init = modifier_init(domain="test.domain")
    await broker.publish(init)

    assert len(received[TEST_SOURCE]) == 1
    final = received[TEST_SOURCE][0]
    assert final.to == TEST_SOURCE
    assert final.data["success"] is True
    assert final.data["error"] == []
    assert final.data["final"] == -3
    assert final.domain is None
    # init, write, write success, dec init, notification, read, read success, decrement,
    # decrement success, dec completion, root completion
    assert len(broker.events) == 11, [event.type for event in broker.events]
    events = broker.events
    assert (events[0].type, events[0].to) == ("arvo.orc.number.modifier", "arvo.orc.number.modifier")
    assert (events[1].type, events[1].to) == ("com.value.write", "com.value.write")
    assert events[1].subject == init.subject
    assert events[1].data["key"] == init.subject
    assert events[1].data["value"] == 1
    assert events[3].type == "arvo.orc.dec"
    assert events[3].data["parentSubject$$"] == init.subject
    child = ArvoOrchestrationSubject.parse(events[3].subject)
    assert (child.name, child.version, child.initiator) == (
        "arvo.orc.dec",
        "0.0.1",
        "arvo.orc.number.modifier",
    )
    # The child inherits the parent's domain through its subject, the calls stay local.
    assert child.domain == "test.domain"
    assert events[3].domain is None
    # The notification has no subscriber: our broker keeps it as unrouted (the original reported it).
    assert [event.type for event in broker.unrouted] == ["com.notif.test"]
    assert value_store[init.subject] == 1


async def test_orchestrator_rejects_a_subject_that_is_not_an_orchestration_subject(
    handlers: dict[str, Any],
) -> None:
    bad = create_arvo_event(source=TEST_SOURCE, subject="test", data={}, type="arvo.orc.number.modifier")
    with pytest.raises(ExecutionViolation) as caught:
        await handlers["number_modifier_agent"].execute(bad)
    assert str(caught.value) == (
        f"ViolationError<Execution> Invalid event (id={bad.id}) subject format. Expected an "
        "ArvoOrchestrationSubject but received 'test'. The subject must follow the format specified by "
        "ArvoOrchestrationSubject schema"
    )


# --- 14.2 #7, #8 ---------------------------------------------------------------------------------


def test_orchestrator_rejects_machines_of_different_orchestrators(handlers: dict[str, Any]) -> None:
    with pytest.raises(
        ConfigViolation, match=re.escape("All the machines in the orchestrator must have type 'arvo.orc.inc'")
    ):
        create_arvo_orchestrator(
            executionunits=0.1,
            memory=InMemoryMemory(),
            machines=[
                *handlers["increment_agent"].registry.machines,
                *handlers["decrement_agent"].registry.machines,
            ],
        )


def test_orchestrator_rejects_duplicate_machine_versions(handlers: dict[str, Any]) -> None:
    machines = handlers["increment_agent"].registry.machines
    with pytest.raises(ConfigViolation) as caught:
        create_arvo_orchestrator(executionunits=0.1, memory=InMemoryMemory(), machines=[*machines, *machines])
    assert str(caught.value) == (
        "ViolationError<Config> An orchestrator must have unique machine versions. Machine ID:machineV001 has "
        "duplicate version 0.0.1."
    )


def test_orchestrator_needs_at_least_one_machine() -> None:
    with pytest.raises(ValueError, match="At least one machine must be provided"):
        create_arvo_orchestrator(executionunits=0.1, memory=InMemoryMemory(), machines=[])


def test_orchestrator_locking_default_follows_its_machines(handlers: dict[str, Any]) -> None:
    # inc v0.0.1 has a parallel state, v0.0.2 a multi-emit service contract (spec 10.5).
    assert handlers["increment_agent"].requires_resource_locking is True
    assert handlers["decrement_agent"].requires_resource_locking is False


# --- 14.2 #9, #10, #11: memory failures -----------------------------------------------------------


class FaultyMemory(InMemoryMemory):
    """InMemoryMemory whose lease, read or commit fails on demand (the original's faulty memories)."""

    def __init__(
        self, *, lease_error: Exception | None = None, commit_error: Exception | None = None
    ) -> None:
        super().__init__()
        self.lease_error = lease_error
        self.commit_error = commit_error
        self.released: list[Lease] = []

    async def lease_and_read(self, key: str, *, ttl_ms: int) -> LeaseGrant:
        if self.lease_error is not None:
            raise self.lease_error
        return await super().lease_and_read(key, ttl_ms=ttl_ms)

    async def commit_and_release(
        self, lease: Lease, record: Mapping[str, Any], *, status: InstanceStatus
    ) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        await super().commit_and_release(lease, record, status=status)

    async def release(self, lease: Lease) -> bool:
        self.released.append(lease)
        return await super().release(lease)


# Parametrised over factories, not instances: every run builds its own FaultyMemory, so no state
# (records, leases, the released list) leaks from one run into the next in the same process.
@pytest.mark.parametrize(
    ("make_memory", "cause", "message"),
    [
        (
            lambda: FaultyMemory(lease_error=RuntimeError("Locking system failure!")),
            TransactionViolationCause.LOCK_FAILURE,
            "Error acquiring lock for event (subject={subject}): Locking system failure!",
        ),
        (
            lambda: FaultyMemory(lease_error=StateReadError("Failed to acquire memory")),
            TransactionViolationCause.READ_FAILURE,
            "Error reading state for event (subject={subject}): Failed to acquire memory",
        ),
        (
            lambda: FaultyMemory(commit_error=RuntimeError("Failed to write memory")),
            TransactionViolationCause.WRITE_FAILURE,
            "Error writing state for event (subject={subject}): Failed to write memory",
        ),
    ],
    ids=["lease_raises", "read_raises", "commit_raises"],
)
async def test_memory_failures_are_transaction_violations_naming_the_subject(
    handlers: dict[str, Any],
    make_memory: Callable[[], FaultyMemory],
    cause: TransactionViolationCause,
    message: str,
) -> None:
    memory_double = make_memory()
    assert memory_double.released == []
    orchestrator = create_arvo_orchestrator(
        executionunits=0.1, memory=memory_double, machines=handlers["increment_agent"].registry.machines
    )
    init = inc_init("test")
    with pytest.raises(TransactionViolation) as caught:
        await orchestrator.execute(init)
    assert caught.value.cause is cause
    assert str(caught.value) == f"ViolationError<OrchestratorTransaction> [{cause}] " + message.format(
        subject=init.subject
    )
    assert await memory_double.inspect(instance_key(init.subject)) is None
    if memory_double.commit_error is not None:
        # A failed commit still gives the lease back, so a retry is not locked out for a TTL.
        assert len(memory_double.released) == 1
    else:
        assert memory_double.released == []  # no lease was granted, so none is released
    assert caught.value.metadata == {"initiatingEvent": init}


# --- 14.2 #12 ------------------------------------------------------------------------------------


async def test_completion_follows_the_redirectto_of_the_init_event(
    handlers: dict[str, Any], memory: InMemoryMemory
) -> None:
    broker, received = broker_with_collectors(handlers, TEST_SOURCE, "com.test.test.1")
    init = modifier_init(redirectto="com.test.test.1")
    await broker.publish(init)

    assert len(broker.events) == 11, [event.type for event in broker.events]
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert record["initEventId"] == init.id
    assert broker.events[-1].parentid == init.id
    assert broker.events[-2].type == "arvo.orc.dec.done"
    assert broker.events[-2].parentid != init.id
    assert received[TEST_SOURCE] == []
    assert len(received["com.test.test.1"]) == 1
    assert received["com.test.test.1"][0].to == "com.test.test.1"


# --- 14.2 #13 ------------------------------------------------------------------------------------


async def test_faulty_child_parent_subject_aborts_the_step_with_an_execution_violation(
    handlers: dict[str, Any], memory: InMemoryMemory
) -> None:
    errors: list[BaseException] = []
    broker, received = broker_with_collectors(
        handlers, TEST_SOURCE, on_error=lambda error, _event: errors.append(error)
    )
    init = modifier_init(version="0.0.2", redirectto="com.test.test.1")
    await broker.publish(init)

    # init, write, write success; the violation aborts the step that would emit the children
    assert [event.type for event in broker.events] == [
        "arvo.orc.number.modifier",
        "com.value.write",
        "evt.value.write.success",
    ]
    assert received[TEST_SOURCE] == []
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, ExecutionViolation)
    assert error.name == "ViolationError<Execution>"
    assert str(error) == (
        "ViolationError<Execution> [Emittable Event Creation] Invalid parentSubject$$ for the "
        "event(type='arvo.orc.dec', uri='#/test/orchestrator/decrement/0.0.2'). It must be follow the "
        "ArvoOrchestrationSubject schema. The easiest way is to use the current orchestration subject by "
        "storing the subject via the context block in the machine definition."
    )
    # Nothing was committed for the failed step: the root still waits for its write reply.
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert record["value"] == "init_value"


# --- 14.2 #14 ------------------------------------------------------------------------------------


async def test_two_children_one_orphan_complete_the_root_with_eighteen_events(
    handlers: dict[str, Any],
) -> None:
    broker, received = broker_with_collectors(handlers, TEST_SOURCE)
    init = modifier_init(version="0.0.2", operation="increment")
    await broker.publish(init)

    # root: init, write, write success, 2 child inits, completion; each child: read, read success,
    # increment, 2 success events (inc v0.0.2), completion
    assert len(broker.events) == 18, [event.type for event in broker.events]
    assert len(received[TEST_SOURCE]) == 1
    assert received[TEST_SOURCE][0].to == TEST_SOURCE
    assert received[TEST_SOURCE][0].type == "arvo.orc.number.modifier.done"
    assert broker.errors == []
    # The orphan child's completion carries its own subject; the root ignores it.
    orphan_done = [
        event
        for event in broker.events
        if event.type == "arvo.orc.inc.done"
        and ArvoOrchestrationSubject.parse(event.subject).name == "arvo.orc.inc"
    ]
    assert len(orphan_done) == 1
    outcome = await handlers["number_modifier_agent"].execute(orphan_done[0])
    assert outcome.events == []
    assert outcome.outcome is ExecutionOutcome.IGNORED_FOREIGN_SUBJECT


# --- 14.2 #15, #16, #17 --------------------------------------------------------------------------


async def test_non_init_event_without_state_is_ignored(
    handlers: dict[str, Any], memory: InMemoryMemory
) -> None:
    subject = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.inc", version="0.0.1", initiator=TEST_SOURCE
    )
    event = create_arvo_event_factory(increment_contract.version("0.0.1")).emits(
        subject=subject, source=TEST_SOURCE, type="evt.increment.number.success", data={"result": 12}
    )
    result = await handlers["increment_agent"].execute(event)
    assert result.events == []
    assert result.outcome is ExecutionOutcome.IGNORED_NO_STATE
    assert await memory.inspect(instance_key(subject)) is None
    # The lease taken to find out was given back.
    assert (await memory.lease_and_read(instance_key(subject), ttl_ms=1000)).acquired


def test_orchestrator_system_error_schema_type(memory: InMemoryMemory) -> None:
    assert decrement_orchestrator(memory).system_error_schema.type == "sys.arvo.orc.dec.error"
    assert dec_orchestrator_contract.system_error.type == "sys.arvo.orc.dec.error"


async def test_unknown_machine_version_is_a_config_violation(handlers: dict[str, Any]) -> None:
    corrupt = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.inc", initiator=TEST_SOURCE, version="1.0.0"
    )
    event = create_arvo_orchestrator_event_factory(inc_orchestrator_contract.version("0.0.1")).init(
        subject=corrupt,
        source=TEST_SOURCE,
        data={"modifier": 2, "trend": "linear", "parentSubject$$": None, "key": "string"},
    )
    with pytest.raises(ConfigViolation) as caught:
        await handlers["increment_agent"].execute(event)
    assert str(caught.value) == (
        "ViolationError<Config> Machine resolution failed: No machine found matching orchestrator "
        "name='arvo.orc.inc' and version='1.0.0'."
    )


async def test_subject_of_another_orchestrator_is_ignored(handlers: dict[str, Any]) -> None:
    init = inc_init()
    result = await handlers["decrement_agent"].execute(init.replace(type="arvo.orc.dec"))
    assert result.events == []
    assert result.outcome is ExecutionOutcome.IGNORED_FOREIGN_SUBJECT


# --- 14.2 #18 ------------------------------------------------------------------------------------


def dumb_init(error_type: str) -> ArvoEvent:
    return create_arvo_event_factory(dumb_contract.version("1.0.0")).accepts(
        source=TEST_SOURCE, data={"parentSubject$$": None, "error_type": error_type}
    )


async def test_machine_action_error_becomes_a_system_error_and_a_failure_record(
    memory: InMemoryMemory,
) -> None:
    orchestrator = dumb_orchestrator(memory)
    init = dumb_init("normal")
    result = await orchestrator.execute(init)
    assert result.outcome is ExecutionOutcome.SYSTEM_ERROR
    assert len(result.events) == 1
    error = result.events[0]
    assert error.type == "sys.arvo.orc.dumb.error"
    assert error.data["errorMessage"] == "Normal error"
    assert error.to == TEST_SOURCE
    assert error.subject == init.subject
    assert error.parentid == init.id
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert record["executionStatus"] == "failure"


async def test_events_after_a_failure_are_ignored(memory: InMemoryMemory) -> None:
    orchestrator = dumb_orchestrator(memory)
    init = dumb_init("normal")
    await orchestrator.execute(init)
    before = await memory.inspect(instance_key(init.subject))
    reply = create_arvo_event_factory(dumb_service_contract.version("0.0.1")).emits(
        subject=init.subject, source="com.dumb.service", type="evt.dumb.service.success", data={}
    )
    result = await orchestrator.execute(reply)
    assert result.events == []
    assert result.outcome is ExecutionOutcome.IGNORED_FAILED
    assert await memory.inspect(instance_key(init.subject)) == before


async def test_machine_action_violation_is_raised_and_nothing_is_written(memory: InMemoryMemory) -> None:
    orchestrator = dumb_orchestrator(memory)
    init = dumb_init("violation")
    with pytest.raises(ExecutionViolation) as caught:
        await orchestrator.execute(init)
    assert str(caught.value) == "ViolationError<Execution> Violation error"
    assert await memory.inspect(instance_key(init.subject)) is None


# --- emission details and service failures -------------------------------------------------------


async def test_orchestrator_emissions_reply_to_the_orchestrator_and_inherit_access_control(
    handlers: dict[str, Any],
) -> None:
    init = inc_init(accesscontrol="tenant=1")
    read = (await handlers["increment_agent"].execute(init)).events[0]
    assert read.subject == init.subject
    assert read.redirectto == "arvo.orc.inc"
    assert read.accesscontrol == "tenant=1"
    assert read.executionunits == 0.1
    assert read.dataschema == "#/test/handler/value/read/0.0.1"
    assert read.domain is None


async def test_service_failure_drives_the_machine_to_an_unsuccessful_completion(
    handlers: dict[str, Any], memory: InMemoryMemory
) -> None:
    agent = handlers["increment_agent"]
    init = inc_init("missing.key")
    read = (await agent.execute(init)).events[0]
    failure = (await handlers["value_read"].execute(read)).events
    assert [(event.type, event.to) for event in failure] == [("sys.com.value.read.error", "arvo.orc.inc")]
    assert failure[0].data["errorMessage"] == "No value to find at key=missing.key"

    done = (await agent.execute(failure[0])).events
    assert len(done) == 1
    assert done[0].type == "arvo.orc.inc.done"
    assert done[0].data == {"success": False, "error": [failure[0].data], "final": 0}
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert (record["value"], record["executionStatus"]) == ("error", "normal")
