"""The engine's deliberate improvements over the original (module docstrings of ``orchestration``).

1. redelivery: the last consumed event is replayed byte-identically, older duplicates are dropped;
2. re-executing an event after a crash emits the same ids and child subjects;
3. a zombie whose lease expired cannot commit (fencing);
4. domain copies of one emission have distinct ids; dedupe is per ``(id, domain)`` and after resolution;
5. the failure record is JSON, keeps the previous record; completion is a flag;
6. error stacks only on request; a second init never overwrites the parent subject.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from service.arvo.domain import ArvoDomain
from service.arvo.errors import ForeignSourceViolation, TransactionViolation, TransactionViolationCause
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.arvo.machine.arvo_machine import setup_arvo_machine
from service.arvo.machine.statechart import emit
from service.arvo.memory import InMemoryMemory, InstanceStatus, Lease
from service.arvo.orchestration.pipeline import consumed_key, legacy_consumed_key
from service.arvo.orchestrator import create_arvo_orchestrator
from service.arvo.resumable import ResumableContext, ResumableResult
from service.arvo.subject import ArvoOrchestrationSubject
from tests.unit.arvo_fixtures import (
    COUNTER_SERVICES,
    TEST_SOURCE,
    counter_increment_handler,
    counter_machine,
    counter_setup,
    dec_orchestrator_contract,
    decrement_resumable,
    dumb_contract,
    dumb_orchestrator,
    dumb_service_contract,
    inc_orchestrator_contract,
    inc_resumable_contract,
    increment_orchestrator,
    increment_resumable,
    increment_resumable_v1,
    number_modifier_contract,
    number_modifier_orchestrator,
    test_machine_contract,
    value_read_handler,
    value_write_handler,
)


def instance_key(subject: str) -> str:
    return ArvoOrchestrationSubject.parse(subject).instance_key


def wire(events: list[ArvoEvent]) -> list[bytes]:
    return [event.to_json() for event in events]


def inc_init(key: str = "test.key") -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(inc_orchestrator_contract.version("0.0.1")).init(
        source=TEST_SOURCE, data={"key": key, "modifier": 2, "trend": "linear", "parentSubject$$": None}
    )


def fan_out_init(*keys: str) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(inc_resumable_contract.version("0.0.1")).init(
        source=TEST_SOURCE,
        data={"parentSubject$$": None, "modifications": [{"key": key, "value": 1} for key in keys]},
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# --- (1) redelivery ------------------------------------------------------------------------------


async def test_redelivered_last_event_replays_byte_identical_events_without_a_transition() -> None:
    memory = InMemoryMemory()
    agent = increment_orchestrator(memory)
    init = inc_init()
    key = instance_key(init.subject)

    first = await agent.execute(init)
    record = await memory.inspect(key)
    again = await agent.execute(init)
    assert again.outcome is ExecutionOutcome.REPLAYED
    assert wire(again.events) == wire(first.events)
    assert await memory.inspect(key) == record, "a replay makes no state transition and writes nothing"

    reply = (await value_read_handler({"test.key": 2}).execute(first.events[0])).events[0]
    second = await agent.execute(reply)
    assert second.outcome is ExecutionOutcome.EXECUTED
    record = await memory.inspect(key)
    replayed = await agent.execute(reply)
    assert replayed.outcome is ExecutionOutcome.REPLAYED
    assert wire(replayed.events) == wire(second.events)
    assert await memory.inspect(key) == record
    # The original re-ran a redelivered event through the machine (hazard 13).


async def test_older_duplicate_is_dropped_without_effect() -> None:
    memory = InMemoryMemory()
    agent = increment_orchestrator(memory)
    init = inc_init()
    read = (await agent.execute(init)).events[0]
    reply = (await value_read_handler({"test.key": 2}).execute(read)).events[0]
    await agent.execute(reply)
    record = await memory.inspect(instance_key(init.subject))

    stale = await agent.execute(init)
    assert stale.outcome is ExecutionOutcome.DUPLICATE_DROPPED
    assert stale.events == []
    assert await memory.inspect(instance_key(init.subject)) == record
    # The lease was given back: the next event is processed normally.
    assert (await agent.execute(reply)).outcome is ExecutionOutcome.REPLAYED


async def test_resumable_does_not_collect_a_duplicate_reply_twice() -> None:
    memory = InMemoryMemory()
    agent = increment_resumable(memory)
    reader = value_read_handler({"a": 1, "b": 2})
    init = fan_out_init("a", "b")
    reads = (await agent.execute(init)).events
    local_reads = [event for event in reads if event.domain is None]
    assert len(reads) == 4
    assert len(local_reads) == 2
    first_reply = (await reader.execute(local_reads[0])).events[0]
    second_reply = (await reader.execute(local_reads[1])).events[0]
    key = instance_key(init.subject)

    assert (await agent.execute(first_reply)).events == []
    duplicate = await agent.execute(first_reply)
    assert duplicate.outcome is ExecutionOutcome.REPLAYED
    assert duplicate.events == []
    record = await memory.inspect(key)
    assert record is not None
    assert len(record["events"]["expected"][local_reads[0].id]) == 1
    # The original appended the duplicate again, so 2 replies of 2 would have been "collected" here.

    increments = (await agent.execute(second_reply)).events
    assert [event.type for event in increments] == ["com.increment.number"] * 4
    stale = await agent.execute(first_reply)
    assert stale.outcome is ExecutionOutcome.DUPLICATE_DROPPED


async def test_redelivered_init_of_a_resumable_does_not_rerun_the_handler() -> None:
    calls: list[str] = []

    async def counting(ctx: ResumableContext) -> ResumableResult | None:
        calls.append(ctx.event.id)
        return await increment_resumable_v1(ctx)

    agent = increment_resumable(InMemoryMemory(), handler=counting)
    init = fan_out_init("a")
    first = await agent.execute(init)
    again = await agent.execute(init)
    assert again.outcome is ExecutionOutcome.REPLAYED
    assert wire(again.events) == wire(first.events)
    assert calls == [init.id]


# --- (2) re-execution after a crash --------------------------------------------------------------


class CrashingCommitMemory(InMemoryMemory):
    """Crashes (raises) on the ``crash_on``-th commit after capturing what it was asked to write."""

    def __init__(self, *, crash_on: int) -> None:
        super().__init__()
        self.crash_on = crash_on
        self.commits = 0
        self.lost: list[dict[str, Any]] = []

    async def commit_and_release(
        self, lease: Lease, record: Mapping[str, Any], *, status: InstanceStatus
    ) -> None:
        self.commits += 1
        if self.commits == self.crash_on:
            self.lost.append(copy.deepcopy(dict(record)))
            raise ConnectionError("connection reset before the state was committed")
        await super().commit_and_release(lease, record, status=status)


def identity(event: Mapping[str, Any]) -> tuple[Any, ...]:
    return (event["id"], event["type"], event["subject"], event["domain"], event["parentid"], event["data"])


async def test_re_executing_after_a_crash_emits_the_same_ids_and_child_subjects() -> None:
    memory = CrashingCommitMemory(crash_on=2)
    agent = number_modifier_orchestrator(memory)
    init = create_arvo_orchestrator_event_factory(number_modifier_contract.version("0.0.1")).init(
        source=TEST_SOURCE,
        data={"init": 1, "modifier": 4, "trend": "linear", "operation": "decrement", "parentSubject$$": None},
    )
    write = (await agent.execute(init)).events[0]
    write_reply = (await value_write_handler({}).execute(write)).events[0]

    with pytest.raises(TransactionViolation) as caught:
        await agent.execute(write_reply)
    assert caught.value.cause is TransactionViolationCause.WRITE_FAILURE
    lost_events = memory.lost[0]["events"]["produced"]
    assert [event["type"] for event in lost_events] == ["arvo.orc.dec", "com.notif.test"]

    retried = await agent.execute(write_reply)  # the lease was released: the retry runs at once
    assert retried.outcome is ExecutionOutcome.EXECUTED
    assert [identity(event.to_dict()) for event in retried.events] == [
        identity(event) for event in lost_events
    ]
    child = ArvoOrchestrationSubject.parse(retried.events[0].subject)
    assert child.name == "arvo.orc.dec"
    # The original generated a fresh uuid4 id and child execution id on every attempt.


# --- (3) zombie lease ----------------------------------------------------------------------------


async def test_zombie_whose_lease_expired_mid_core_cannot_commit() -> None:
    clock = FakeClock()
    memory = InMemoryMemory(clock=clock)
    entered = asyncio.Event()
    gate = asyncio.Event()
    blocked: set[str] = set()

    async def slow(ctx: ResumableContext) -> ResumableResult | None:
        if ctx.event.id in blocked:
            entered.set()
            await gate.wait()
        return await increment_resumable_v1(ctx)

    zombie = increment_resumable(memory, handler=slow, lease_ttl_ms=30_000)
    successor = increment_resumable(memory, lease_ttl_ms=30_000)
    reader = value_read_handler({"a": 1, "b": 2})
    init = fan_out_init("a", "b")
    reads = [event for event in (await successor.execute(init)).events if event.domain is None]
    first_reply = (await reader.execute(reads[0])).events[0]
    second_reply = (await reader.execute(reads[1])).events[0]

    blocked.add(first_reply.id)
    stuck = asyncio.create_task(zombie.execute(first_reply))
    await entered.wait()
    clock.now += 31  # the zombie's lease runs out while its handler still awaits
    taken_over = await successor.execute(second_reply)
    assert taken_over.outcome is ExecutionOutcome.EXECUTED
    gate.set()
    with pytest.raises(TransactionViolation) as caught:
        await stuck
    assert caught.value.cause is TransactionViolationCause.LEASE_LOST

    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert record["consumedIds"][-1] == consumed_key(second_reply)
    assert consumed_key(first_reply) not in record["consumedIds"]
    expected = record["events"]["expected"]
    assert expected[reads[1].id] == [second_reply.to_dict()]
    assert expected[reads[0].id] == []
    # The first reply is then processed normally by a live worker and completes the fan-out.
    increments = (await successor.execute(first_reply)).events
    assert [event.type for event in increments] == ["com.increment.number"] * 4


# --- (4) domain copies and dedupe keys -----------------------------------------------------------


async def test_domain_copies_of_one_emission_have_distinct_ids() -> None:
    agent = increment_resumable(InMemoryMemory())
    reads = (await agent.execute(fan_out_init("a", "b"))).events
    assert [event.domain for event in reads] == [None, "external", None, "external"]
    assert len({event.id for event in reads}) == 4

    orchestrator = create_arvo_orchestrator(
        executionunits=0.1, memory=InMemoryMemory(), machines=[counter_machine()]
    )
    init = create_arvo_orchestrator_event_factory(test_machine_contract.version("0.0.1")).init(
        source="com.test.service", data={"parentSubject$$": None, "type": "increment", "delta": 1}
    )
    calls = (await orchestrator.execute(init)).events
    # DEVELOPER_MANAGED: verbatim on the first copy only (the original repeated it on every copy).
    assert [(event.id, event.domain) for event in calls] == [
        ("custom-increment-id", None),
        ("custom-increment-id:external", "external"),
    ]


@dataclass
class FanOut:
    """A fan-out resumable started, and the value reader's reply to its first local read."""

    memory: InMemoryMemory
    agent: Any
    reader: Any
    init: ArvoEvent
    reply: ArvoEvent


async def _fan_out_and_first_reply() -> FanOut:
    memory = InMemoryMemory()
    agent = increment_resumable(memory)
    reader = value_read_handler({"a": 1})
    init = fan_out_init("a")
    reads = [event for event in (await agent.execute(init)).events if event.domain is None]
    reply = (await reader.execute(reads[0])).events[0]
    return FanOut(memory, agent, reader, init, reply)


async def test_dedupe_key_is_the_id_within_its_domain() -> None:
    run = await _fan_out_and_first_reply()
    agent = run.agent
    reply = run.reply
    assert consumed_key(reply) == f"@{reply.source}//{reply.id}"

    increments = await agent.execute(reply)
    assert increments.outcome is ExecutionOutcome.EXECUTED
    assert [event.type for event in increments.events] == ["com.increment.number"] * 2
    same_id_other_domain = reply.replace(domain="external")
    assert consumed_key(same_id_other_domain) == f"@{reply.source}/external/{reply.id}"
    # Another domain's delivery of the same id is a different event: it is executed, not replayed
    # (the handler sees it but it no longer matches an expected call, so nothing is emitted).
    other = await agent.execute(same_id_other_domain)
    assert other.outcome is ExecutionOutcome.EXECUTED
    assert other.events == []
    assert (await agent.execute(same_id_other_domain)).outcome is ExecutionOutcome.REPLAYED
    assert (await agent.execute(reply)).outcome is ExecutionOutcome.DUPLICATE_DROPPED


async def test_dedupe_key_is_the_cloudevents_identity_and_the_same_id_from_another_source_runs() -> None:
    run = await _fan_out_and_first_reply()
    agent = run.agent
    reply = run.reply
    assert (await agent.execute(reply)).outcome is ExecutionOutcome.EXECUTED
    other_source = reply.replace(source="com.other.service")
    assert consumed_key(other_source) != consumed_key(reply)
    # The same id from another source is another event: not taken for a redelivery of the first
    # (with the reply-source check off: on, a source the resumable did not address is refused).
    agent.reply_source_check = "off"
    assert (await agent.execute(other_source)).outcome is ExecutionOutcome.EXECUTED
    assert (await agent.execute(reply)).outcome is ExecutionOutcome.DUPLICATE_DROPPED


async def test_a_reply_from_a_source_the_orchestration_did_not_address_is_refused() -> None:
    run = await _fan_out_and_first_reply()
    agent = run.agent
    reader = run.reader
    reply = run.reply
    forged = reply.replace(id="forged-1", source="com.evil.actor")
    with pytest.raises(ForeignSourceViolation, match=r"com\.evil\.actor") as refused:
        await agent.execute(forged)
    assert refused.value.expected == frozenset({reader.source})
    # Nothing of the forged reply reached the instance: the real one is still awaited and runs.
    assert (await agent.execute(reply)).outcome is ExecutionOutcome.EXECUTED


async def test_entries_written_under_the_legacy_dedupe_key_still_match_after_an_upgrade() -> None:
    run = await _fan_out_and_first_reply()
    memory = run.memory
    agent = run.agent
    init = run.init
    reply = run.reply
    assert (await agent.execute(reply)).outcome is ExecutionOutcome.EXECUTED
    key = ArvoOrchestrationSubject.parse(init.subject).instance_key
    grant = await memory.lease_and_read(key, ttl_ms=1_000)
    assert grant.lease is not None
    assert grant.record is not None
    legacy = {**grant.record, "consumedIds": [legacy_consumed_key(reply)]}  # as an older version wrote it
    await memory.commit_and_release(grant.lease, legacy, status=InstanceStatus.ACTIVE)
    assert (await agent.execute(reply)).outcome is ExecutionOutcome.REPLAYED


async def test_orchestrator_emissions_are_deduplicated_after_domain_resolution() -> None:
    machine = counter_setup().create_machine(
        {
            "id": "fan",
            "context": lambda args: dict(args.input["data"]),
            "initial": "calling",
            "states": {
                "calling": {
                    "entry": emit(
                        lambda args: {
                            "type": "com.number.increment",
                            "data": {"delta": args.context["delta"]},
                            "domain": [ArvoDomain.FROM_TRIGGERING_EVENT, None, "external", "external"],
                        }
                    )
                }
            },
        }
    )
    orchestrator = create_arvo_orchestrator(executionunits=0.1, memory=InMemoryMemory(), machines=[machine])
    init = create_arvo_orchestrator_event_factory(test_machine_contract.version("0.0.1")).init(
        source="com.test.service", data={"parentSubject$$": None, "type": "increment", "delta": 1}
    )
    events = (await orchestrator.execute(init)).events
    # The original deduplicated before resolution: FROM_TRIGGERING_EVENT (→ null) and null gave two
    # null-domain copies (quirk 22).
    assert [event.domain for event in events] == [None, "external"]


# --- (5) failure record and completion flag ------------------------------------------------------


def exploding_orchestrator(memory: InMemoryMemory, **kwargs: Any) -> Any:
    def explode(_args: Any) -> None:
        raise RuntimeError("exploded on reply")

    machine = setup_arvo_machine(
        contracts={"self": test_machine_contract.version("0.0.1"), "services": COUNTER_SERVICES}
    ).create_machine(
        {
            "id": "exploding",
            "context": lambda args: dict(args.input["data"]),
            "initial": "calling",
            "states": {
                "calling": {
                    "entry": emit(
                        lambda args: {
                            "type": "com.number.increment",
                            "data": {"delta": args.context["delta"]},
                        }
                    ),
                    "on": {"evt.number.increment.success": {"actions": explode}},
                }
            },
        }
    )
    return create_arvo_orchestrator(executionunits=0.1, memory=memory, machines=[machine], **kwargs)


def counter_init() -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(test_machine_contract.version("0.0.1")).init(
        source="com.test.service", data={"parentSubject$$": None, "type": "increment", "delta": 1}
    )


async def test_failure_record_is_json_and_keeps_the_previous_record() -> None:
    memory = InMemoryMemory()
    orchestrator = exploding_orchestrator(memory)
    init = counter_init()
    key = instance_key(init.subject)
    call = (await orchestrator.execute(init)).events[0]
    before = await memory.inspect(key)
    reply = (await counter_increment_handler().execute(call)).events[0]

    failed = await orchestrator.execute(reply)
    assert failed.outcome is ExecutionOutcome.SYSTEM_ERROR
    assert [event.type for event in failed.events] == ["sys.arvo.orc.test.error"]
    record = await memory.inspect(key)
    assert record is not None
    assert orjson.loads(orjson.dumps(record)) == record
    assert record["executionStatus"] == "failure"
    assert record["status"] == "failed"
    assert record["error"]["errorName"] == "RuntimeError"
    assert record["error"]["errorMessage"] == "exploded on reply"
    assert "Traceback" in record["error"]["errorStack"]
    assert record["previous"] == {k: v for k, v in before.items() if k != "history"}  # history moves up
    # Unlike the original (which kept only {executionStatus, subject, error}), routing data survives.
    assert record["initEventId"] == init.id
    assert record["parentSubject"] is None
    assert [row.key for row in await memory.list_instances(status=InstanceStatus.FAILED)] == [key]

    # A redelivery of the failing event replays the same system error instead of being swallowed.
    replayed = await orchestrator.execute(reply)
    assert replayed.outcome is ExecutionOutcome.REPLAYED
    assert wire(replayed.events) == wire(failed.events)


def empty_output_orchestrator(memory: InMemoryMemory) -> Any:
    machine = setup_arvo_machine(
        contracts={
            "self": dumb_contract.version("1.0.0"),
            "services": {"dumb": dumb_service_contract.version("0.0.1")},
        }
    ).create_machine(
        {
            "id": "empty",
            "initial": "waiting",
            "states": {
                "waiting": {
                    "entry": emit({"type": "com.dumb.service", "data": {}}),
                    "on": {"evt.dumb.service.success": {"target": "done"}},
                },
                "done": {"type": "final"},
            },
            "output": lambda _args: {},
        }
    )
    return create_arvo_orchestrator(executionunits=1, memory=memory, machines=[machine])


async def test_empty_output_completes_once_tracked_by_the_completed_flag() -> None:
    memory = InMemoryMemory()
    orchestrator = empty_output_orchestrator(memory)
    init = create_arvo_event_factory(dumb_contract.version("1.0.0")).accepts(
        source=TEST_SOURCE, data={"parentSubject$$": None, "error_type": "normal"}
    )
    call = (await orchestrator.execute(init)).events[0]
    reply_factory = create_arvo_event_factory(dumb_service_contract.version("0.0.1"))
    reply = reply_factory.emits(
        type="evt.dumb.service.success",
        source="com.dumb.service",
        subject=init.subject,
        data={},
        parentid=call.id,
    )
    done = (await orchestrator.execute(reply)).events
    # The original never emitted a completion whose output is {} (hazard 23).
    assert [(event.type, event.data, event.to) for event in done] == [("arvo.orc.dumb.done", {}, TEST_SOURCE)]
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert record["completed"] is True
    assert record["status"] == "done"

    late = reply_factory.emits(
        type="evt.dumb.service.success", source="com.dumb.service", subject=init.subject, data={}
    )
    after = await orchestrator.execute(late)
    assert after.outcome is ExecutionOutcome.IGNORED_DONE
    assert after.events == []


# --- (6) error stacks, parent subject ------------------------------------------------------------


async def test_system_error_events_carry_no_stack_by_default() -> None:
    memory = InMemoryMemory()
    init = create_arvo_event_factory(dumb_contract.version("1.0.0")).accepts(
        source=TEST_SOURCE, data={"parentSubject$$": None, "error_type": "normal"}
    )
    events = (await dumb_orchestrator(memory).execute(init)).events
    assert events[0].data["errorStack"] is None
    # The stored failure record keeps it for operators.
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    assert "Normal error" in record["error"]["errorStack"]


async def test_system_error_events_carry_the_stack_when_asked() -> None:
    init = create_arvo_event_factory(dumb_contract.version("1.0.0")).accepts(
        source=TEST_SOURCE, data={"parentSubject$$": None, "error_type": "normal"}
    )
    events = (await dumb_orchestrator(InMemoryMemory(), include_error_stack=True).execute(init)).events
    stack = events[0].data["errorStack"]
    assert "Traceback" in stack
    assert "RuntimeError: Normal error" in stack

    resumable_init = create_arvo_orchestrator_event_factory(dec_orchestrator_contract.version("0.0.2")).init(
        source=TEST_SOURCE,
        data={"key": "k", "modifier": 2, "trend": "exponential", "parentSubject$$": None},
    )
    quiet = (await decrement_resumable(InMemoryMemory()).execute(resumable_init)).events
    loud = (
        await decrement_resumable(InMemoryMemory(), include_error_stack=True).execute(resumable_init)
    ).events
    assert quiet[0].data["errorStack"] is None
    assert "Version 0.0.2 is not implemented" in loud[0].data["errorStack"]


async def test_second_init_never_overwrites_the_parent_subject() -> None:
    memory = InMemoryMemory()
    agent = increment_orchestrator(memory)
    init = inc_init()
    await agent.execute(init)
    foreign_parent = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.other", initiator=TEST_SOURCE)
    second = create_arvo_orchestrator_event_factory(inc_orchestrator_contract.version("0.0.1")).init(
        source=TEST_SOURCE,
        subject=init.subject,
        data={"key": "test.key", "modifier": 2, "trend": "linear", "parentSubject$$": foreign_parent},
    )
    await agent.execute(second)
    record = await memory.inspect(instance_key(init.subject))
    assert record is not None
    # The original replaced the stored parent with the redelivered init's parentSubject$$ (hazard 27).
    assert record["parentSubject"] is None
    assert record["initEventId"] == init.id


async def test_failure_record_that_cannot_be_written_is_retried_with_identical_system_errors() -> None:
    # The original swallowed this write error and published the system error anyway; we raise a
    # retryable violation and the retry produces the very same events.
    memory = CrashingCommitMemory(crash_on=1)
    orchestrator = dumb_orchestrator(memory)
    init = create_arvo_event_factory(dumb_contract.version("1.0.0")).accepts(
        source=TEST_SOURCE, data={"parentSubject$$": None, "error_type": "normal"}
    )
    with pytest.raises(TransactionViolation) as caught:
        await orchestrator.execute(init)
    assert caught.value.cause is TransactionViolationCause.WRITE_FAILURE
    lost = memory.lost[0]
    assert lost["executionStatus"] == "failure"
    retried = await orchestrator.execute(init)
    assert retried.outcome is ExecutionOutcome.SYSTEM_ERROR
    assert [identity(event.to_dict()) for event in retried.events] == [
        identity(event) for event in lost["events"]["produced"]
    ]


async def test_machine_without_output_still_completes_with_empty_data() -> None:
    # The original emitted no completion when the machine had no `output` (finalOutput null), leaving
    # a parent waiting forever; we complete once with `{}` (validated by the completion schema).
    machine = setup_arvo_machine(
        contracts={"self": dumb_contract.version("1.0.0"), "services": {}}
    ).create_machine({"id": "silent", "initial": "done", "states": {"done": {"type": "final"}}})
    memory = InMemoryMemory()
    orchestrator = create_arvo_orchestrator(executionunits=1, memory=memory, machines=[machine])
    init = create_arvo_event_factory(dumb_contract.version("1.0.0")).accepts(
        source=TEST_SOURCE, data={"parentSubject$$": None, "error_type": "normal"}
    )
    events = (await orchestrator.execute(init)).events
    assert [(event.type, event.data) for event in events] == [("arvo.orc.dumb.done", {})]
