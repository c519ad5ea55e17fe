"""The pipeline's effects, pinned exactly (mutation-testing bar): lease renewal, release vs commit,
the failure record's shape, trace-state propagation, violations' initiating event, completion output.

The decision step is in ``test_pipeline_decisions.py``; this file drives whole executions through a
recording memory, and the lease-renewal loop with a manual clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from service.arvo import telemetry
from service.arvo.errors import (
    ConfigViolation,
    ExecutionViolation,
    TransactionViolation,
    TransactionViolationCause,
)
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.arvo.machine.arvo_machine import setup_arvo_machine
from service.arvo.memory import InMemoryMemory, InstanceStatus, Lease, LeaseGrant, StateReadError
from service.arvo.orchestration.pipeline import (
    RECORD_SCHEMA_VERSION,
    CoreRequest,
    CoreResult,
    EmissionDomains,
    LeaseDeniedViolation,
    OrchestrationPipeline,
    _LeaseRenewals,
    consumed_key,
)
from service.arvo.orchestrator import create_arvo_orchestrator
from service.arvo.resumable import ArvoResumable, ResumableContext, ResumableResult
from service.arvo.subject import ArvoOrchestrationSubject
from tests.unit.arvo_fixtures import (
    COUNTER_SERVICES,
    TEST_SOURCE,
    increment_service_contract,
    test_machine_contract,
)

SELF = test_machine_contract.version("0.0.1")
SOURCE = "arvo.orc.test"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "vendor=abc,other=1"

Handler = Callable[[ResumableContext], Awaitable[ResumableResult | None]]


# --- doubles -------------------------------------------------------------------------------------


class StillClock:
    """Leases never expire on their own: only what a test does moves them."""

    def __call__(self) -> float:
        return 5_000.0


class RecordingMemory(InMemoryMemory):
    """InMemoryMemory that records renewals, releases and commits, and fails on demand."""

    def __init__(
        self,
        *,
        lease_error: Exception | None = None,
        commit_error: Exception | None = None,
    ) -> None:
        super().__init__(clock=StillClock())
        self.lease_error = lease_error
        self.commit_error = commit_error
        self.renewals: list[tuple[Lease, int]] = []
        self.released: list[Lease] = []
        self.commits: list[tuple[Lease, dict[str, Any], InstanceStatus]] = []

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
        self.commits.append((lease, dict(record), status))

    async def release(self, lease: Lease) -> bool:
        self.released.append(lease)
        return await super().release(lease)

    async def renew(self, lease: Lease, *, ttl_ms: int) -> bool:
        self.renewals.append((lease, ttl_ms))
        return await super().renew(lease, ttl_ms=ttl_ms)


def resumable(memory: InMemoryMemory, handler: Handler, **kwargs: Any) -> ArvoResumable:
    return ArvoResumable(
        contract=test_machine_contract,
        services=COUNTER_SERVICES,
        memory=memory,
        handler={"0.0.1": handler},
        executionunits=3,
        **kwargs,
    )


def init(**overrides: Any) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(SELF).init(
        source=TEST_SOURCE, data={"parentSubject$$": None, "delta": 1, "type": "increment"}, **overrides
    )


def reply(to: ArvoEvent, *, new_value: int = 10, **overrides: Any) -> ArvoEvent:
    """The increment service's answer to the emitted ``to``."""
    return create_arvo_event_factory(increment_service_contract.version("0.0.1")).emits(
        type="evt.number.increment.success",
        source="com.number.increment",
        data={"newValue": new_value},
        subject=to.subject,
        parentid=to.id,
        to=SOURCE,
        **overrides,
    )


def instance_key(event: ArvoEvent) -> str:
    return ArvoOrchestrationSubject.parse(event.subject).instance_key


async def call_increment(ctx: ResumableContext) -> ResumableResult | None:
    """Init: ask the increment service; reply: complete with its value."""
    if ctx.input is not None:
        return {"context": {"step": 1}, "services": [{"type": "com.number.increment", "data": {"delta": 1}}]}
    (answer,) = ctx.collected_events["evt.number.increment.success"]
    return {"output": {"final": answer["data"]["newValue"]}}


async def fail_on_reply(ctx: ResumableContext) -> ResumableResult | None:
    if ctx.input is not None:
        return await call_increment(ctx)
    raise RuntimeError("boom")


async def always_fail(ctx: ResumableContext) -> ResumableResult | None:
    raise RuntimeError("boom")


# --- the lease-renewal loop ----------------------------------------------------------------------


class ManualTime:
    """A clock and a sleep for :class:`_LeaseRenewals`: each sleep waits until the test ticks it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._pending: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((self.now + seconds, future))
        await future

    async def settle(self) -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    async def tick(self) -> None:
        """End the pending sleep (the clock moves to its wake-up time), then let the loop run."""
        await self.settle()
        assert self._pending, "the renewal loop is not sleeping"
        wake_at, future = self._pending.pop(0)
        self.now = wake_at
        future.set_result(None)
        await self.settle()


class ScriptedRenewals:
    """A memory whose ``renew`` answers from a script (``True``, ``False`` or an exception)."""

    def __init__(self, *answers: bool | Exception, on_renew: Callable[[Lease], None] | None = None) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[Lease, int]] = []
        self.on_renew = on_renew

    async def renew(self, lease: Lease, *, ttl_ms: int) -> bool:
        self.calls.append((lease, ttl_ms))
        if self.on_renew is not None:
            self.on_renew(lease)
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


LEASE_A = Lease(key="arvo.orc.test:a", token="a", fence=1)
LEASE_B = Lease(key="arvo.orc.test:b", token="b", fence=1)


def renewals(memory: Any, time: ManualTime, ttl_ms: int = 3_000) -> _LeaseRenewals:
    return _LeaseRenewals(memory, ttl_ms, clock=time.clock, sleep=time.sleep)


def test_the_renewal_interval_is_a_third_of_the_ttl() -> None:
    loop_renewals = _LeaseRenewals(InMemoryMemory(), 3_000)
    assert loop_renewals._interval_s == 1.0
    loop_renewals.set_ttl(600)
    assert loop_renewals._interval_s == pytest.approx(0.2)
    assert loop_renewals._ttl_ms == 600


async def test_a_held_lease_is_renewed_every_interval_with_the_ttl() -> None:
    time = ManualTime()
    memory = ScriptedRenewals()
    loop_renewals = renewals(memory, time)
    loop_renewals.add(LEASE_A)
    await time.tick()  # t = 1.0: exactly one interval held is due (``>=``)
    assert memory.calls == [(LEASE_A, 3_000)]
    await time.tick()
    assert memory.calls == [(LEASE_A, 3_000), (LEASE_A, 3_000)]
    assert time.sleeps == [1.0, 1.0, 1.0]
    loop_renewals.discard(LEASE_A)
    await time.tick()
    assert len(memory.calls) == 2
    assert loop_renewals._task is not None
    assert loop_renewals._task.done()


async def test_a_lease_added_mid_interval_waits_a_whole_interval() -> None:
    time = ManualTime()
    memory = ScriptedRenewals()
    loop_renewals = renewals(memory, time)
    loop_renewals.add(LEASE_A)
    await time.settle()
    time.now = 0.5
    loop_renewals.add(LEASE_B)
    await time.tick()  # t = 1.0: A held 1.0 (due), B held 0.5 (not)
    assert memory.calls == [(LEASE_A, 3_000)]
    await time.tick()  # t = 2.0: both due
    assert memory.calls[1:] == [(LEASE_A, 3_000), (LEASE_B, 3_000)]
    loop_renewals.discard(LEASE_A)
    loop_renewals.discard(LEASE_B)
    await time.tick()


async def test_a_refused_renewal_drops_the_lease_and_the_loop_ends() -> None:
    time = ManualTime()
    memory = ScriptedRenewals(False)
    loop_renewals = renewals(memory, time)
    loop_renewals.add(LEASE_A)
    await time.tick()
    assert memory.calls == [(LEASE_A, 3_000)]
    assert loop_renewals._held == {}
    assert loop_renewals._task is not None
    assert loop_renewals._task.done()


async def test_a_failed_renewal_is_retried_next_interval_and_does_not_stop_the_others() -> None:
    time = ManualTime()
    memory = ScriptedRenewals(ConnectionError("redis went away"), True, True, True)
    loop_renewals = renewals(memory, time)
    loop_renewals.add(LEASE_A)
    loop_renewals.add(LEASE_B)
    await time.tick()  # A fails, B is still renewed in the same round
    assert memory.calls == [(LEASE_A, 3_000), (LEASE_B, 3_000)]
    assert set(loop_renewals._held) == {LEASE_A, LEASE_B}
    assert loop_renewals._held[LEASE_A] == 0.0  # not renewed: its hold time stays
    assert loop_renewals._held[LEASE_B] == 1.0
    await time.tick()
    assert memory.calls[2:] == [(LEASE_A, 3_000), (LEASE_B, 3_000)]
    assert loop_renewals._held == {LEASE_A: 2.0, LEASE_B: 2.0}
    loop_renewals.discard(LEASE_A)
    loop_renewals.discard(LEASE_B)
    await time.tick()
    assert loop_renewals._task is not None
    assert loop_renewals._task.done()


async def test_a_lease_discarded_while_its_renewal_runs_is_not_held_again() -> None:
    time = ManualTime()
    loop_renewals: _LeaseRenewals

    def core_finishes(lease: Lease) -> None:
        loop_renewals.discard(lease)

    memory = ScriptedRenewals(True, on_renew=core_finishes)
    loop_renewals = renewals(memory, time)
    loop_renewals.add(LEASE_A)
    await time.tick()
    assert memory.calls == [(LEASE_A, 3_000)]
    assert loop_renewals._held == {}
    assert loop_renewals._task is not None
    assert loop_renewals._task.done()


async def test_a_lease_discarded_before_it_is_due_is_never_renewed() -> None:
    time = ManualTime()
    memory = ScriptedRenewals()
    loop_renewals = renewals(memory, time)
    loop_renewals.add(LEASE_A)
    await time.settle()
    loop_renewals.discard(LEASE_A)
    await time.tick()
    assert memory.calls == []
    assert loop_renewals._task is not None
    assert loop_renewals._task.done()


async def test_the_loop_restarts_when_a_lease_is_added_after_it_ended() -> None:
    time = ManualTime()
    memory = ScriptedRenewals(False)
    loop_renewals = renewals(memory, time)
    loop_renewals.add(LEASE_A)
    await time.tick()
    first = loop_renewals._task
    assert first is not None
    assert first.done()
    time.now = 10.0
    loop_renewals.add(LEASE_B)
    assert loop_renewals._task is not first
    await time.tick()
    assert memory.calls == [(LEASE_A, 3_000), (LEASE_B, 3_000)]
    loop_renewals.discard(LEASE_B)
    await time.tick()


async def test_adding_a_lease_while_the_loop_runs_does_not_start_a_second_loop() -> None:
    time = ManualTime()
    loop_renewals = renewals(ScriptedRenewals(), time)
    loop_renewals.add(LEASE_A)
    task = loop_renewals._task
    loop_renewals.add(LEASE_B)
    assert loop_renewals._task is task
    loop_renewals.discard(LEASE_A)
    loop_renewals.discard(LEASE_B)
    await time.settle()
    assert task is not None
    assert task.done()


async def test_a_new_ttl_changes_the_interval_and_the_renewed_ttl() -> None:
    time = ManualTime()
    memory = ScriptedRenewals()
    loop_renewals = renewals(memory, time)
    loop_renewals.set_ttl(6_000)
    loop_renewals.add(LEASE_A)
    await time.tick()
    assert time.sleeps[0] == 2.0
    assert memory.calls == [(LEASE_A, 6_000)]
    loop_renewals.discard(LEASE_A)
    await time.tick()


async def test_a_resumable_renews_its_lease_with_its_ttl_while_its_handler_runs() -> None:
    memory = RecordingMemory()

    async def slow(ctx: ResumableContext) -> ResumableResult | None:
        await asyncio.sleep(0.05)
        return {"context": {"slept": True}}

    agent = resumable(memory, slow, lease_ttl_ms=15)
    result = await agent.execute(init())
    assert result.outcome is ExecutionOutcome.EXECUTED
    assert memory.renewals, "the lease was not renewed while the handler slept"
    (committed, _, _) = memory.commits[0]
    assert all(ttl == 15 for _, ttl in memory.renewals)
    assert all(lease == committed for lease, _ in memory.renewals)
    renewing = agent._pipeline._renewals
    assert renewing is not None
    assert renewing._held == {}  # the finished core's lease is no longer renewed


async def test_an_orchestrator_takes_its_lease_with_its_ttl_and_never_renews_it() -> None:
    memory = RecordingMemory()
    seen: list[int] = []
    original = memory.lease_and_read

    async def spy(key: str, *, ttl_ms: int) -> LeaseGrant:
        seen.append(ttl_ms)
        return await original(key, ttl_ms=ttl_ms)

    memory.lease_and_read = spy  # type: ignore[method-assign]
    agent = create_arvo_orchestrator(
        executionunits=1,
        memory=memory,
        machines=[final_machine(root_output=lambda _args: {"final": 1})],
        lease_ttl_ms=4_321,
    )
    await agent.execute(init())
    assert seen == [4_321]
    assert agent._pipeline._renewals is None
    assert memory.renewals == []


# --- release vs commit ---------------------------------------------------------------------------


async def test_a_successful_step_commits_and_never_releases() -> None:
    memory = RecordingMemory()
    result = await resumable(memory, call_increment).execute(init())
    assert result.outcome is ExecutionOutcome.EXECUTED
    assert len(memory.commits) == 1
    assert memory.commits[0][2] is InstanceStatus.ACTIVE
    assert memory.released == []


async def test_the_normal_record_has_exactly_these_keys_and_values() -> None:
    memory = RecordingMemory()
    start = init()
    result = await resumable(memory, call_increment).execute(start)
    record = await memory.inspect(instance_key(start))
    assert record is not None
    assert list(record) == [
        "schemaVersion",
        "kind",
        "executionStatus",
        "status",
        "completed",
        "subject",
        "parentSubject",
        "initEventId",
        "orchestrator",
        "version",
        "state$$",
        "events",
        "consumedIds",
        "updatedAt",
        "history",
    ]
    assert isinstance(record.pop("updatedAt"), str)
    assert [(h["dir"], h["type"], h["id"], h["source"], h["outcome"]) for h in record.pop("history")] == [
        ("consumed", start.type, start.id, start.source, "ok"),
        *(("produced", event.type, event.id, event.source, "emitted") for event in result.events),
    ]
    assert record == {
        "schemaVersion": RECORD_SCHEMA_VERSION,
        "kind": "resumable",
        "executionStatus": "normal",
        "status": "active",
        "completed": False,
        "subject": start.subject,
        "parentSubject": None,
        "initEventId": start.id,
        "orchestrator": SOURCE,
        "version": "0.0.1",
        "state$$": {"step": 1},
        "events": {
            "consumed": start.to_dict(),
            "produced": [event.to_dict() for event in result.events],
            "expected": {result.events[0].id: []},
        },
        "consumedIds": [consumed_key(start)],
    }


async def test_the_core_gets_the_event_subject_record_parent_and_init_event_id() -> None:
    seen: list[CoreRequest] = []

    async def core(request: CoreRequest) -> CoreResult:
        seen.append(request)
        return CoreResult(
            raw_events=[], self_contract=SELF, service_contracts={}, status="active", completed=False
        )

    memory = RecordingMemory()
    pipeline = OrchestrationPipeline(
        source=SOURCE,
        kind="orchestrator",
        memory=memory,
        core=core,
        error_contract=SELF,
        executionunits=0,
        domains=EmissionDomains(),
        span_attributes={},
        span_name=lambda event: "test",
    )
    parent = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.parent", initiator=TEST_SOURCE)
    start = create_arvo_orchestrator_event_factory(SELF).init(
        source=TEST_SOURCE,
        data={"parentSubject$$": parent, "delta": 1, "type": "increment"},
        subject=ArvoOrchestrationSubject.new(orchestrator=SOURCE, initiator=TEST_SOURCE, version="0.0.1"),
    )
    await pipeline.execute(start)
    later = reply(start)
    await pipeline.execute(later)
    first, second = seen
    assert (first.event, first.record, first.parent_subject, first.init_event_id) == (
        start,
        None,
        parent,
        start.id,
    )
    assert first.subject == ArvoOrchestrationSubject.parse(start.subject)
    assert (second.event, second.parent_subject, second.init_event_id) == (later, parent, start.id)
    assert second.record is not None
    assert second.record["consumedIds"] == [consumed_key(start)]


async def test_a_completing_step_commits_done_and_never_releases() -> None:
    memory = RecordingMemory()
    agent = resumable(memory, call_increment)
    first = await agent.execute(init())
    result = await agent.execute(reply(first.events[0]))
    assert [event.type for event in result.events] == ["arvo.orc.test.done"]
    assert [status for _, _, status in memory.commits] == [InstanceStatus.ACTIVE, InstanceStatus.DONE]
    assert memory.released == []


async def test_a_system_error_commits_the_failure_record_and_never_releases() -> None:
    memory = RecordingMemory()
    result = await resumable(memory, always_fail).execute(init())
    assert result.outcome is ExecutionOutcome.SYSTEM_ERROR
    assert [status for _, _, status in memory.commits] == [InstanceStatus.FAILED]
    assert memory.released == []


@pytest.mark.parametrize(
    "violation",
    [ConfigViolation("bad config"), ExecutionViolation("bad execution")],
    ids=["config", "execution"],
)
async def test_a_violation_in_the_core_releases_the_lease_and_commits_nothing(violation: Exception) -> None:
    memory = RecordingMemory()

    async def violate(ctx: ResumableContext) -> ResumableResult | None:
        raise violation

    start = init()
    with pytest.raises(type(violation)) as caught:
        await resumable(memory, violate).execute(start)
    assert caught.value is violation
    assert memory.commits == []
    assert len(memory.released) == 1
    assert memory.released[0].key == instance_key(start)
    assert (await memory.lease_and_read(instance_key(start), ttl_ms=1_000)).acquired is True
    assert await memory.inspect(instance_key(start)) is None


async def test_a_replay_releases_and_commits_nothing() -> None:
    memory = RecordingMemory()
    agent = resumable(memory, call_increment)
    start = init()
    first = await agent.execute(start)
    again = await agent.execute(start)
    assert again.outcome is ExecutionOutcome.REPLAYED
    assert [event.to_dict() for event in again.events] == [event.to_dict() for event in first.events]
    assert len(memory.commits) == 1
    assert len(memory.released) == 1


async def test_a_version_mismatch_raises_and_releases() -> None:
    memory = RecordingMemory()
    agent = resumable(memory, call_increment)
    start = init()
    await agent.execute(start)
    parsed = ArvoOrchestrationSubject.parse(start.subject)
    other = ArvoOrchestrationSubject.new(
        orchestrator=SOURCE, initiator=TEST_SOURCE, version="0.0.2", execution_id=parsed.execution_id
    )
    with pytest.raises(
        ConfigViolation, match=r"Subject version '0\.0\.2' does not match the version '0\.0\.1'"
    ):
        await agent.execute(start.replace(subject=other, id="another-event"))
    assert len(memory.commits) == 1
    assert len(memory.released) == 1


async def test_a_foreign_subject_takes_no_lease() -> None:
    memory = RecordingMemory()
    foreign = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.other", initiator=TEST_SOURCE)
    result = await resumable(memory, call_increment).execute(init(subject=foreign))
    assert result.outcome is ExecutionOutcome.IGNORED_FOREIGN_SUBJECT
    assert memory.released == []
    assert await memory.list_instances() == []
    grant = await memory.lease_and_read(ArvoOrchestrationSubject.parse(foreign).instance_key, ttl_ms=1)
    assert grant.lease is not None
    assert grant.lease.fence == 1  # the first lease ever taken on that instance


# --- the failure record --------------------------------------------------------------------------


FAILURE_KEYS = [
    "schemaVersion",
    "kind",
    "executionStatus",
    "status",
    "completed",
    "subject",
    "parentSubject",
    "initEventId",
    "orchestrator",
    "version",
    "error",
    "previous",
    "events",
    "consumedIds",
    "updatedAt",
    "history",
]


async def test_the_failure_record_has_exactly_these_keys_and_values() -> None:
    memory = RecordingMemory()
    agent = resumable(memory, fail_on_reply)
    start = init()
    first = await agent.execute(start)
    before = await memory.inspect(instance_key(start))
    assert before is not None
    answer = reply(first.events[0])
    result = await agent.execute(answer)
    assert result.outcome is ExecutionOutcome.SYSTEM_ERROR

    record = await memory.inspect(instance_key(start))
    assert record is not None
    assert list(record) == FAILURE_KEYS
    error = record.pop("error")
    updated_at = record.pop("updatedAt")
    history = record.pop("history")
    assert history[: len(before["history"])] == before["history"]
    assert [(h["dir"], h["id"], h["outcome"]) for h in history[len(before["history"]) :]] == [
        ("consumed", answer.id, "system_error"),
        *(("produced", event.id, "emitted") for event in result.events),
    ]
    before = {name: value for name, value in before.items() if name != "history"}
    assert record == {
        "schemaVersion": RECORD_SCHEMA_VERSION,
        "kind": "resumable",
        "executionStatus": "failure",
        "status": "failed",
        "completed": False,
        "subject": start.subject,
        "parentSubject": None,
        "initEventId": start.id,
        "orchestrator": SOURCE,
        "version": "0.0.1",
        "previous": before,
        "events": {"consumed": answer.to_dict(), "produced": [event.to_dict() for event in result.events]},
        "consumedIds": [consumed_key(start), consumed_key(answer)],
    }
    assert RECORD_SCHEMA_VERSION == 1
    assert list(error) == ["errorName", "errorMessage", "errorStack"]
    assert error["errorName"] == "RuntimeError"
    assert error["errorMessage"] == "boom"
    assert "RuntimeError: boom" in error["errorStack"]  # the record always keeps the stack
    assert isinstance(updated_at, str)
    assert updated_at > before["updatedAt"] or updated_at == before["updatedAt"]
    assert [(row.key, row.status) for row in await memory.list_instances()] == [
        (instance_key(start), InstanceStatus.FAILED)
    ]
    # The events never carry the stack unless configured.
    assert [event.type for event in result.events] == ["sys.arvo.orc.test.error"]
    assert result.events[0].data["errorStack"] is None


async def test_a_failure_at_init_has_no_previous_record() -> None:
    memory = RecordingMemory()
    start = init()
    await resumable(memory, always_fail).execute(start)
    record = await memory.inspect(instance_key(start))
    assert record is not None
    assert record["previous"] is None
    assert record["completed"] is False
    assert record["consumedIds"] == [consumed_key(start)]
    assert record["initEventId"] == start.id


async def seed(memory: InMemoryMemory, event: ArvoEvent, **fields: Any) -> dict[str, Any]:
    """Store a normal record for ``event``'s instance, as a previous step would have."""
    record: dict[str, Any] = {
        "schemaVersion": 1,
        "kind": "resumable",
        "executionStatus": "normal",
        "status": "active",
        "completed": False,
        "subject": event.subject,
        "parentSubject": "parent-subject",
        "initEventId": "the-init",
        "orchestrator": SOURCE,
        "version": "0.0.1",
        "state$$": {"step": 1},
        "events": {"consumed": {}, "produced": [], "expected": None},
        "consumedIds": ["/the-init"],
        "updatedAt": "2025-01-01T00:00:00.000+00:00",
        **fields,
    }
    grant = await memory.lease_and_read(instance_key(event), ttl_ms=1_000)
    assert grant.lease is not None
    await memory.commit_and_release(grant.lease, record, status=InstanceStatus.ACTIVE)
    return record


async def test_the_failure_record_keeps_the_completed_flag_stored_parent_and_init_id() -> None:
    memory = RecordingMemory()
    start = init()
    answer = reply(start)
    stored = await seed(memory, start, completed=True)
    await resumable(memory, always_fail).execute(answer)
    record = await memory.inspect(instance_key(start))
    assert record is not None
    assert record["completed"] is True
    assert record["parentSubject"] == "parent-subject"
    assert record["initEventId"] == "the-init"
    assert record["previous"] == stored
    assert record["consumedIds"] == ["/the-init", consumed_key(answer)]


async def test_the_previous_record_drops_its_own_previous() -> None:
    memory = RecordingMemory()
    start = init()
    stored = await seed(memory, start, previous={"older": True})
    await resumable(memory, always_fail).execute(reply(start))
    record = await memory.inspect(instance_key(start))
    assert record is not None
    assert record["previous"] == {name: value for name, value in stored.items() if name != "previous"}
    assert "previous" not in record["previous"]


async def test_a_failed_instance_ignores_later_events() -> None:
    memory = RecordingMemory()
    agent = resumable(memory, always_fail)
    start = init()
    await agent.execute(start)
    result = await agent.execute(reply(start))
    assert result.outcome is ExecutionOutcome.IGNORED_FAILED
    assert result.events == []
    assert len(memory.commits) == 1
    assert len(memory.released) == 1


# --- trace state ---------------------------------------------------------------------------------


@pytest.fixture
def no_sdk() -> Iterator[None]:
    previous = telemetry.use_tracer(trace.NoOpTracer())
    yield
    telemetry.use_tracer(previous)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = telemetry.use_tracer(provider.get_tracer("arvo-instrumentation", "1.0.0"))
    yield exporter
    telemetry.use_tracer(previous)
    provider.shutdown()


def handler_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = [span for span in exporter.get_finished_spans() if span.name.startswith("Resumable<")]
    return span


async def test_without_an_sdk_the_event_trace_headers_reach_emissions_and_completion(no_sdk: None) -> None:
    agent = resumable(RecordingMemory(), call_increment)
    first = await agent.execute(init(traceparent=TRACEPARENT, tracestate=TRACESTATE))
    assert [(event.traceparent, event.tracestate) for event in first.events] == [(TRACEPARENT, TRACESTATE)]
    done = await agent.execute(reply(first.events[0], traceparent=TRACEPARENT, tracestate=TRACESTATE))
    assert [(event.type, event.traceparent, event.tracestate) for event in done.events] == [
        ("arvo.orc.test.done", TRACEPARENT, TRACESTATE)
    ]


async def test_without_an_sdk_the_event_trace_headers_reach_system_errors(no_sdk: None) -> None:
    result = await resumable(RecordingMemory(), always_fail).execute(
        init(traceparent=TRACEPARENT, tracestate=TRACESTATE)
    )
    assert [(event.type, event.traceparent, event.tracestate) for event in result.events] == [
        ("sys.arvo.orc.test.error", TRACEPARENT, TRACESTATE)
    ]


async def test_with_an_sdk_emissions_carry_the_handler_span_and_the_trace_state(
    spans: InMemorySpanExporter,
) -> None:
    first = await resumable(RecordingMemory(), call_increment).execute(
        init(traceparent=TRACEPARENT, tracestate=TRACESTATE)
    )
    span = handler_span(spans)
    context = span.get_span_context()
    assert context is not None
    expected_parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    assert [(event.traceparent, event.tracestate) for event in first.events] == [
        (expected_parent, TRACESTATE)
    ]
    assert context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)


async def test_with_an_sdk_system_errors_carry_the_trace_state_and_the_span_fails(
    spans: InMemorySpanExporter,
) -> None:
    result = await resumable(RecordingMemory(), always_fail).execute(
        init(traceparent=TRACEPARENT, tracestate=TRACESTATE)
    )
    span = handler_span(spans)
    assert [event.tracestate for event in result.events] == [TRACESTATE]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["arvo.handler.execution.status"] == "failure"
    assert span.attributes["exception.type"] == "RuntimeError"
    assert span.attributes["exception.message"] == "boom"
    assert ("ERROR", "resumable execution failed: boom") in logs(span)


def logs(span: ReadableSpan) -> list[tuple[Any, Any]]:
    """``(severity, message)`` of the span's ``log`` events."""
    return [
        ((event.attributes or {}).get("log.severity"), (event.attributes or {}).get("log.message"))
        for event in span.events
        if event.name == "log"
    ]


async def test_with_an_sdk_a_violation_marks_the_span_and_logs_it_critical(
    spans: InMemorySpanExporter,
) -> None:
    async def violate(ctx: ResumableContext) -> ResumableResult | None:
        raise ExecutionViolation("no way")

    with pytest.raises(ExecutionViolation):
        await resumable(RecordingMemory(), violate).execute(init())
    span = handler_span(spans)
    assert span.attributes is not None
    assert span.attributes["arvo.handler.execution.status"] == "failure"
    assert span.status.status_code is StatusCode.ERROR
    assert ("CRITICAL", "resumable violation error: ViolationError<Execution> no way") in logs(span)


async def test_with_an_sdk_an_event_without_state_is_logged_as_a_warning(spans: InMemorySpanExporter) -> None:
    result = await resumable(RecordingMemory(), call_increment).execute(reply(init()))
    assert result.outcome is ExecutionOutcome.IGNORED_NO_STATE
    span = handler_span(spans)
    assert (
        "WARNING",
        "Invalid initialization event detected. Expected type 'arvo.orc.test' but received "
        "'evt.number.increment.success'.",
    ) in logs(span)
    assert span.status.status_code is StatusCode.OK


async def test_with_an_sdk_an_ignored_failed_event_marks_the_span(spans: InMemorySpanExporter) -> None:
    agent = resumable(RecordingMemory(), always_fail)
    start = init()
    await agent.execute(start)
    spans.clear()
    answer = reply(start)
    await agent.execute(answer)
    span = handler_span(spans)
    message = (
        "The orchestration has failed in a previous event. Ignoring event id: "
        f"{answer.id} with event subject: {answer.subject}"
    )
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == message
    assert span.attributes is not None
    assert span.attributes["arvo.handler.execution.status"] == "failure"
    logged = [(event.attributes or {}).get("log.message") for event in span.events if event.name == "log"]
    assert message in logged


async def test_with_an_sdk_a_normal_step_sets_status_ok_and_the_orchestration_status(
    spans: InMemorySpanExporter,
) -> None:
    await resumable(RecordingMemory(), call_increment).execute(init())
    span = handler_span(spans)
    assert span.status.status_code is StatusCode.OK
    assert span.attributes is not None
    assert span.attributes["arvo.orchestration.status"] == "active"
    assert span.attributes["arvo.handler.execution.status"] == "normal"
    assert span.attributes["arvo.handler.execution.type"] == "resumable"
    assert span.attributes["arvo.parsed.subject.orchestrator.name"] == SOURCE
    assert span.attributes["arvo.parsed.subject.orchestrator.version"] == "0.0.1"


# --- violations name their initiating event ------------------------------------------------------


@pytest.mark.parametrize(
    ("make_memory", "cause", "prefix"),
    [
        (
            lambda: RecordingMemory(lease_error=RuntimeError("lock down")),
            TransactionViolationCause.LOCK_FAILURE,
            "Error acquiring lock for event",
        ),
        (
            lambda: RecordingMemory(lease_error=StateReadError("unreadable")),
            TransactionViolationCause.READ_FAILURE,
            "Error reading state for event",
        ),
        (
            lambda: RecordingMemory(commit_error=RuntimeError("disk full")),
            TransactionViolationCause.WRITE_FAILURE,
            "Error writing state for event",
        ),
    ],
    ids=["lock_failure", "read_failure", "write_failure"],
)
async def test_memory_failures_carry_the_initiating_event(
    make_memory: Callable[[], RecordingMemory], cause: TransactionViolationCause, prefix: str
) -> None:
    memory = make_memory()
    start = init()
    with pytest.raises(TransactionViolation) as caught:
        await resumable(memory, call_increment).execute(start)
    assert caught.value.cause is cause
    assert caught.value.metadata == {"initiatingEvent": start}
    assert f"{prefix} (subject={start.subject}): " in str(caught.value)


async def test_a_lost_lease_is_a_lease_lost_violation_with_the_initiating_event() -> None:
    memory = RecordingMemory()
    start = init()

    async def taken_over(ctx: ResumableContext) -> ResumableResult | None:
        # Another worker's lease replaces ours while the handler runs.
        memory.force_lock(instance_key(start))
        return {"context": {}}

    with pytest.raises(TransactionViolation) as caught:
        await resumable(memory, taken_over).execute(start)
    assert caught.value.cause is TransactionViolationCause.LEASE_LOST
    assert caught.value.metadata == {"initiatingEvent": start}
    assert str(caught.value).startswith(
        f"ViolationError<OrchestratorTransaction> [LEASE_LOST] Lease lost before writing state for event "
        f"(subject={start.subject}): "
    )


async def test_a_denied_lease_carries_the_initiating_event_and_the_holders_ttl() -> None:
    memory = RecordingMemory()
    start = init()
    memory.force_lock(instance_key(start), ttl_ms=2_500)
    with pytest.raises(LeaseDeniedViolation) as caught:
        await resumable(memory, call_increment).execute(start)
    assert caught.value.cause is TransactionViolationCause.LOCK_UNACQUIRED
    assert caught.value.metadata == {"initiatingEvent": start}
    assert caught.value.holder_ttl_ms == 2_500
    assert memory.released == []


# --- completion output ---------------------------------------------------------------------------


def final_machine(final_output: Any = None, root_output: Callable[[Any], Any] | None = None) -> Any:
    """A machine that is done at once: one top-level final state, optional outputs."""
    final: dict[str, Any] = {"type": "final"}
    if final_output is not None:
        final["output"] = final_output
    config: dict[str, Any] = {
        "id": "finisher",
        "context": lambda args: {"delta": args.input["data"]["delta"]},
        "initial": "finished",
        "states": {"finished": final},
    }
    if root_output is not None:
        config["output"] = root_output
    return setup_arvo_machine(contracts={"self": SELF, "services": COUNTER_SERVICES}).create_machine(config)


async def test_the_root_output_receives_the_final_states_output() -> None:
    seen: list[dict[str, Any]] = []

    def root_output(args: Any) -> dict[str, Any]:
        seen.append(dict(args.event))
        return {"final": args.event["output"]["total"] + args.context["delta"]}

    memory = RecordingMemory()
    agent = create_arvo_orchestrator(
        executionunits=1,
        memory=memory,
        machines=[final_machine(lambda args: {"total": 40 + args.context["delta"]}, root_output)],
    )
    start = init()
    result = await agent.execute(start)
    assert seen == [{"type": "xstate.done.state.finisher.finished", "output": {"total": 41}}]
    assert [(event.type, event.data, event.to) for event in result.events] == [
        ("arvo.orc.test.done", {"final": 42}, TEST_SOURCE)
    ]
    record = await memory.inspect(instance_key(start))
    assert record is not None
    assert (record["status"], record["completed"], record["machineId"]) == ("done", True, "finisher")
    assert record["state"]["output"] == {"final": 42}
    assert memory.commits[0][2] is InstanceStatus.DONE


async def test_without_a_final_state_output_the_root_output_sees_none() -> None:
    seen: list[Any] = []

    def root_output(args: Any) -> dict[str, Any]:
        seen.append(args.event["output"])
        return {"final": 0}

    agent = create_arvo_orchestrator(
        executionunits=1, memory=RecordingMemory(), machines=[final_machine(None, root_output)]
    )
    result = await agent.execute(init())
    assert seen == [None]
    assert [event.data for event in result.events] == [{"final": 0}]


async def test_a_resumable_output_is_the_completion_data() -> None:
    memory = RecordingMemory()
    agent = resumable(memory, call_increment)
    start = init()
    first = await agent.execute(start)
    done = await agent.execute(reply(first.events[0], new_value=77))
    assert [(event.type, event.data, event.to) for event in done.events] == [
        ("arvo.orc.test.done", {"final": 77}, TEST_SOURCE)
    ]
    record = await memory.inspect(instance_key(start))
    assert record is not None
    assert (record["status"], record["completed"]) == ("done", True)
    assert record["events"]["expected"] == {done.events[0].id: []}


async def test_history_is_bounded_by_count_and_bytes_and_can_be_turned_off() -> None:
    memory = RecordingMemory()
    agent = resumable(memory, call_increment)
    agent.keep_history(events=3, max_bytes=100_000)
    start = init()
    first = await agent.execute(start)
    answer = reply(first.events[0])
    second = await agent.execute(answer)
    record = await memory.inspect(instance_key(start))
    assert record is not None
    everything = [start.id, *(e.id for e in first.events), answer.id, *(e.id for e in second.events)]
    assert [entry["id"] for entry in record["history"]] == everything[-3:]  # the newest three

    agent.keep_history(events=100, max_bytes=300)
    other = init()
    emitted = await agent.execute(other)
    record = await memory.inspect(instance_key(other))
    assert record is not None
    kept = record["history"]
    assert len(orjson.dumps(kept)) <= 300
    assert len(kept) == 1  # one entry is ~200 bytes: only the newest fits
    assert kept[-1]["id"] == ([other.id, *(e.id for e in emitted.events)])[-1]  # newest kept first

    agent.keep_history(events=0, max_bytes=0)
    third = init()
    await agent.execute(third)
    record = await memory.inspect(instance_key(third))
    assert record is not None
    assert "history" not in record
    with pytest.raises(ValueError, match="must not be negative"):
        agent.keep_history(events=-1, max_bytes=10)
