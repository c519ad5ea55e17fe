"""Cancellation (issue 13): the cancel event, the cancelled instance, the cascade, late replies, no-ops.

The demo's order (a statechart) and its child shipment (a resumable) are driven one event at a time
(:class:`Stepper`), so each test holds the workflow exactly where it wants it; the CLI command runs
against the in-memory memory and the in-memory Kafka cluster of ``tests/unit/test_client.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from typer.testing import CliRunner

import service.cli as cli
from contracts.bench import bench_resumable_contract
from contracts.demo import order_contract
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome, ExecutionResult
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import FINISHED_STATUSES, InMemoryMemory, InstanceStatus
from service.arvo.orchestration.cancellation import (
    CANCEL_EVENT_TYPE,
    MAX_CHILDREN,
    MAX_REASON_CHARS,
    NO_REASON,
    cancel_reason,
    create_cancel_event,
    push_children,
)
from service.arvo.orchestration.pipeline import Cancel, Ignore, Proceed, Replay, consumed_key, decide
from service.arvo.orchestration.record import InstanceRecord
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app, demo_app
from service.runtime.routing import TopicRouter
from tests.unit.test_client import FakeCluster

SHOP = "com.test.shop"
OPS = "com.test.ops"


def key_of(subject: str) -> str:
    return ArvoOrchestrationSubject.parse(subject).instance_key


def order_init(*, sku: str = "sku-widget") -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=SHOP,
        data={
            "orderId": "o-1",
            "customerId": "c-1",
            "country": "NL",
            "items": [{"sku": sku, "quantity": 2, "unitPriceCents": 1_000}],
            "parentSubject$$": None,
        },
    )


class Stepper:
    """The demo's handlers by topic; each event is delivered by hand, to the handler of its ``to``."""

    def __init__(self, memory: InMemoryMemory | None = None) -> None:
        self.memory = memory or InMemoryMemory()
        self.handlers = {handler.source: handler for handler in demo_app(self.memory)}

    async def deliver(self, event: ArvoEvent) -> ExecutionResult:
        assert event.to is not None
        # The cancel event must reach its orchestrator through the service's routing, like any event.
        assert TopicRouter().route_event(event) == event.to
        return await self.handlers[event.to].execute(event)

    async def deliver_all(self, events: list[ArvoEvent]) -> list[ArvoEvent]:
        """Deliver ``events`` (services answer), return everything they produced."""
        produced: list[ArvoEvent] = []
        for event in events:
            produced.extend((await self.deliver(event)).events)
        return produced

    async def record(self, subject: str) -> dict[str, Any]:
        record = await self.memory.inspect(key_of(subject))
        assert record is not None
        return record

    async def statuses(self) -> dict[str, InstanceStatus]:
        return {row.key: row.status for row in await self.memory.list_instances()}


async def order_waiting_for_its_shipment(stepper: Stepper) -> tuple[ArvoEvent, ArvoEvent, ArvoEvent]:
    """Run the order until its child shipment asked for a quote; return (order init, child init, quote call)."""
    init = order_init()
    calls = (await stepper.deliver(init)).events
    assert sorted(event.type for event in calls) == ["com.inventory.reserve", "com.payment.charge"]
    replies = await stepper.deliver_all(calls)
    produced = await stepper.deliver_all(replies)
    [child_init] = [event for event in produced if event.type == "arvo.orc.shipment"]
    [quote] = (await stepper.deliver(child_init)).events
    assert quote.type == "com.shipping.quote"
    return init, child_init, quote


# --- the cancel event ------------------------------------------------------------------------------


def test_the_cancel_event_is_addressed_to_the_orchestrator_of_its_subject() -> None:
    init = order_init()
    event = create_cancel_event(init.subject, source=OPS, reason="customer changed their mind")
    assert (event.type, event.to, event.subject, event.source) == (
        CANCEL_EVENT_TYPE,
        "arvo.orc.order",
        init.subject,
        OPS,
    )
    assert event.data == {"reason": "customer changed their mind"}
    assert event.domain is None
    assert TopicRouter(prefix="staging.").route_event(event) == "staging.arvo.orc.order"
    assert ArvoEvent.from_json(event.to_json()) == event
    with pytest.raises(ValueError, match="subject"):
        create_cancel_event("not-a-subject", source=OPS)


def test_the_reason_is_bounded_and_never_empty() -> None:
    subject = order_init().subject
    assert create_cancel_event(subject, source=OPS).data == {"reason": NO_REASON}
    assert create_cancel_event(subject, source=OPS, reason="   ").data == {"reason": NO_REASON}
    long = create_cancel_event(subject, source=OPS, reason="x" * 5_000)
    assert len(long.data["reason"]) == MAX_REASON_CHARS
    assert long.data["reason"].endswith("…")
    assert cancel_reason(long) == long.data["reason"]
    assert cancel_reason(long.replace(data={"reason": 42})) == NO_REASON
    assert cancel_reason(long.replace(data={})) == NO_REASON


# --- decide() ---------------------------------------------------------------------------------------


def _stored(**fields: Any) -> InstanceRecord:
    record: dict[str, Any] = {
        "schemaVersion": 1,
        "kind": "orchestrator",
        "executionStatus": "normal",
        "status": "active",
        "completed": False,
        "subject": "s",
        "parentSubject": "parent",
        "initEventId": "init-1",
        "orchestrator": "arvo.orc.order",
        "version": "1.0.0",
        "events": {"consumed": {}, "produced": []},
        "consumedIds": ["@x//init-1"],
        "updatedAt": "",
    }
    record.update(fields)
    return record  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Cancel(parent_subject="parent", init_event_id="init-1", reason="why")),
        ({"status": "done", "completed": True}, ExecutionOutcome.NOTHING_TO_CANCEL),
        ({"completed": True}, ExecutionOutcome.NOTHING_TO_CANCEL),
        ({"executionStatus": "failure", "status": "failed"}, ExecutionOutcome.NOTHING_TO_CANCEL),
        ({"executionStatus": "cancelled", "status": "cancelled"}, ExecutionOutcome.NOTHING_TO_CANCEL),
        (None, ExecutionOutcome.NOTHING_TO_CANCEL),
    ],
    ids=["active", "done", "completed", "failed", "cancelled", "unknown"],
)
def test_decide_cancels_only_a_live_instance(fields: dict[str, Any] | None, expected: object) -> None:
    event = create_cancel_event(order_init().subject, source=OPS, reason="why")
    parsed = ArvoOrchestrationSubject.parse(event.subject)
    decision = decide(parsed, "arvo.orc.order", event, None if fields is None else _stored(**fields))
    if isinstance(expected, Cancel):
        assert decision == expected
        assert decision.outcome is ExecutionOutcome.CANCELLED
    else:
        assert isinstance(decision, Ignore)
        assert decision.outcome is expected
        assert decision.reason.startswith(f"Nothing to cancel: instance {parsed.instance_key} ")


def test_decide_ignores_every_other_event_of_a_cancelled_instance_but_dedupes_first() -> None:
    init = order_init()
    parsed = ArvoOrchestrationSubject.parse(init.subject)
    cancelled = _stored(executionStatus="cancelled", status="cancelled")
    late = init.replace(id="late-reply", type="evt.payment.charge.success")
    decision = decide(parsed, "arvo.orc.order", late, cancelled)
    assert isinstance(decision, Ignore)
    assert decision.outcome is ExecutionOutcome.IGNORED_CANCELLED
    # A redelivered cancel (the last consumed event) is replayed, not a no-op.
    cancel = create_cancel_event(init.subject, source=OPS)
    replayed = _stored(
        executionStatus="cancelled",
        status="cancelled",
        consumedIds=["@x//init-1", consumed_key(cancel)],
        events={"consumed": cancel.to_dict(), "produced": [{"id": "e"}]},
    )
    assert decide(parsed, "arvo.orc.order", cancel, replayed) == Replay(({"id": "e"},))
    # A normal event of a live instance still proceeds.
    assert isinstance(decide(parsed, "arvo.orc.order", late, _stored()), Proceed)


# --- cancelling an orchestrator, the cascade, late replies -----------------------------------------


async def test_cancelling_an_order_stops_it_tells_the_initiator_and_cancels_its_child_shipment() -> None:
    stepper = Stepper()
    init, child_init, quote = await order_waiting_for_its_shipment(stepper)
    assert (await stepper.record(init.subject))["children"] == [child_init.subject]

    cancel = create_cancel_event(init.subject, source=OPS, reason="customer changed their mind")
    result = await stepper.deliver(cancel)

    assert result.outcome is ExecutionOutcome.CANCELLED
    error, child_cancel = result.events
    # The standard system error, to the initiator, on the instance's subject, answering the init.
    assert (error.type, error.to, error.subject, error.parentid, error.source) == (
        "sys.arvo.orc.order.error",
        SHOP,
        init.subject,
        init.id,
        "arvo.orc.order",
    )
    assert error.data == {
        "errorName": "OrchestrationCancelledError",
        "errorMessage": f"arvo.orc.order cancelled by {OPS}: customer changed their mind",
        "errorStack": None,
    }
    # The child is cancelled in turn: a cancel event to its orchestrator, on its subject.
    assert (child_cancel.type, child_cancel.to, child_cancel.subject, child_cancel.source) == (
        CANCEL_EVENT_TYPE,
        "arvo.orc.shipment",
        child_init.subject,
        "arvo.orc.order",
    )
    assert child_cancel.data == {"reason": "parent arvo.orc.order cancelled: customer changed their mind"}
    assert child_cancel.parentid == cancel.id

    record = await stepper.record(init.subject)
    assert (record["status"], record["executionStatus"]) == ("cancelled", "cancelled")
    assert record["value"] == "shipping", "the record keeps where the machine stopped"
    assert record["children"] == [child_init.subject]
    assert record["cancellation"]["reason"] == "customer changed their mind"
    assert (record["cancellation"]["by"], record["cancellation"]["eventId"]) == (OPS, cancel.id)
    assert record["events"]["consumed"] == cancel.to_dict()
    assert record["events"]["produced"] == [error.to_dict(), child_cancel.to_dict()]
    assert record["history"][-3]["outcome"] == "cancelled"
    assert (await stepper.statuses())[key_of(init.subject)] is InstanceStatus.CANCELLED

    # The shipment stops too, and its system error goes back to the (cancelled) parent.
    child_result = await stepper.deliver(child_cancel)
    assert child_result.outcome is ExecutionOutcome.CANCELLED
    [child_error] = child_result.events
    assert (child_error.type, child_error.to, child_error.subject) == (
        "sys.arvo.orc.shipment.error",
        "arvo.orc.order",
        init.subject,
    )
    assert child_error.data["errorName"] == "OrchestrationCancelledError"
    assert "parent arvo.orc.order cancelled: customer changed their mind" in child_error.data["errorMessage"]
    assert (await stepper.statuses()) == {
        key_of(init.subject): InstanceStatus.CANCELLED,
        key_of(child_init.subject): InstanceStatus.CANCELLED,
    }

    # Late replies are ignored (and counted by their outcome), never dead-lettered or re-run.
    before = await stepper.record(init.subject)
    assert (await stepper.deliver(child_error)).outcome is ExecutionOutcome.IGNORED_CANCELLED
    assert await stepper.record(init.subject) == before
    [quote_reply] = (await stepper.deliver(quote)).events
    assert (await stepper.deliver(quote_reply)).outcome is ExecutionOutcome.IGNORED_CANCELLED
    assert (await stepper.record(child_init.subject))["events"]["consumed"] == child_cancel.to_dict()


async def test_a_redelivered_cancel_replays_the_same_events_and_a_second_one_is_a_no_op() -> None:
    stepper = Stepper()
    init, _child_init, _quote = await order_waiting_for_its_shipment(stepper)
    cancel = create_cancel_event(init.subject, source=OPS, reason="stop")
    first = await stepper.deliver(cancel)
    again = await stepper.deliver(cancel)
    assert again.outcome is ExecutionOutcome.REPLAYED
    assert [event.to_json() for event in again.events] == [event.to_json() for event in first.events]

    second = await stepper.deliver(create_cancel_event(init.subject, source=OPS, reason="stop!"))
    assert (second.outcome, second.events) == (ExecutionOutcome.NOTHING_TO_CANCEL, [])
    assert (await stepper.record(init.subject))["cancellation"]["reason"] == "stop"


async def test_a_child_cancelled_on_its_own_reports_to_its_parent_which_goes_on() -> None:
    # Not a cascade: someone cancels the shipment; the order reacts to its system error as designed.
    stepper = Stepper()
    init, child_init, _quote = await order_waiting_for_its_shipment(stepper)
    result = await stepper.deliver(create_cancel_event(child_init.subject, source=OPS, reason="no trucks"))
    [child_error] = result.events
    [completion] = (await stepper.deliver(child_error)).events
    assert (completion.type, completion.subject) == ("arvo.orc.order.done", init.subject)
    assert completion.data["status"] == "shipping_failed"
    assert completion.data["reason"] == f"arvo.orc.shipment cancelled by {OPS}: no trucks"


# --- cancelling a resumable -------------------------------------------------------------------------


async def test_cancelling_a_resumable_stops_it_and_ignores_its_late_replies() -> None:
    memory = InMemoryMemory()
    handlers = {handler.source: handler for handler in bench_app(memory)}
    agent = handlers["arvo.orc.bench.resumable"]
    init = create_arvo_orchestrator_event_factory(bench_resumable_contract.version("1.0.0")).init(
        source=SHOP, data={"a": 2, "b": 3, "parentSubject$$": None}
    )
    [call] = (await agent.execute(init)).events
    result = await agent.execute(create_cancel_event(init.subject, source=OPS, reason="not needed"))
    assert result.outcome is ExecutionOutcome.CANCELLED
    [error] = result.events
    assert (error.type, error.to, error.subject, error.parentid) == (
        "sys.arvo.orc.bench.resumable.error",
        SHOP,
        init.subject,
        init.id,
    )
    assert error.data["errorMessage"] == f"arvo.orc.bench.resumable cancelled by {OPS}: not needed"
    record = await memory.inspect(key_of(init.subject))
    assert record is not None
    assert (record["kind"], record["status"]) == ("resumable", "cancelled")
    assert record["state$$"] is not None, "the context where it stopped is kept"
    assert "children" not in record

    [reply] = (await handlers[call.to or ""].execute(call)).events
    assert (await agent.execute(reply)).outcome is ExecutionOutcome.IGNORED_CANCELLED
    assert [row.status for row in await memory.list_instances(status=InstanceStatus.CANCELLED)] == [
        InstanceStatus.CANCELLED
    ]


# --- no-ops -------------------------------------------------------------------------------------------


async def test_cancelling_a_done_failed_or_unknown_instance_changes_nothing() -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker(demo_app(memory))
    done = order_init()
    assert (await broker.resolve(done)) is not None
    failed = order_init(sku="sku-unknown")
    assert (await broker.resolve(failed)) is not None
    unknown = order_init()
    order = next(handler for handler in demo_app(memory) if handler.source == "arvo.orc.order")
    listed = await memory.list_instances()
    for init in (done, failed, unknown):
        before = await memory.inspect(key_of(init.subject))
        result = await order.execute(create_cancel_event(init.subject, source=OPS))
        assert (result.outcome, result.events) == (ExecutionOutcome.NOTHING_TO_CANCEL, [])
        assert await memory.inspect(key_of(init.subject)) == before
    assert await memory.inspect(key_of(unknown.subject)) is None
    assert await memory.list_instances() == listed


def test_a_cancelled_instance_is_finished() -> None:
    assert InstanceStatus.CANCELLED in FINISHED_STATUSES
    # New statuses go last (the Redis scripts address the indexes by position).
    assert list(InstanceStatus)[4:] == [InstanceStatus.CANCELLED, InstanceStatus.TIMED_OUT]


# --- the children a record keeps ------------------------------------------------------------------------


def test_child_subjects_are_kept_newest_last_and_bounded() -> None:
    parent = order_init()
    children = [
        ArvoOrchestrationSubject.new(
            orchestrator="arvo.orc.shipment", initiator="arvo.orc.order", version="1.0.0"
        )
        for _ in range(MAX_CHILDREN + 5)
    ]
    service_call = parent.replace(type="com.shipping.quote")
    completion = parent.replace(type="arvo.orc.order.done", subject="the-parent's")
    emitted = [service_call, completion, *(parent.replace(subject=c) for c in children)]
    kept = push_children(None, emitted, subject=parent.subject, complete_type="arvo.orc.order.done")
    assert kept == children[-MAX_CHILDREN:]
    record = _stored(children=kept)
    assert push_children(record, [service_call], subject=parent.subject, complete_type=None) == kept
    assert push_children(None, [service_call], subject=parent.subject, complete_type=None) == []


# --- arvo instances cancel / list / inspect ----------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("ARVO_"):
            monkeypatch.delenv(name)
    return CliRunner()


@pytest.fixture
def stepper(monkeypatch: pytest.MonkeyPatch) -> Stepper:
    class Unclosed(InMemoryMemory):
        async def close(self) -> None:
            return None

    stepper = Stepper(Unclosed())
    monkeypatch.setattr(cli, "_open_memory", lambda settings: stepper.memory)
    return stepper


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    cluster = FakeCluster()
    monkeypatch.setattr(
        cli, "_open_client", lambda settings, router=None: cluster.client(settings, router=router)
    )
    return cluster


def test_instances_cancel_publishes_the_cancel_event_and_the_instance_stops(
    runner: CliRunner, stepper: Stepper, cluster: FakeCluster
) -> None:
    init, _child_init, _quote = asyncio.run(order_waiting_for_its_shipment(stepper))
    key = key_of(init.subject)
    result = runner.invoke(cli.app, ["instances", "cancel", init.subject, "--reason", "fraud suspected"])
    assert result.exit_code == 0, result.output
    [record] = cluster.records("arvo.orc.order")
    assert record.key == init.subject.encode()
    event = ArvoEvent.from_json(record.value)
    assert (event.type, event.to, event.subject, event.source, event.data) == (
        CANCEL_EVENT_TYPE,
        "arvo.orc.order",
        init.subject,
        "com.arvo.cli",
        {"reason": "fraud suspected"},
    )
    assert result.stdout.strip() == (
        f"cancel requested: {key} (event {event.id} to arvo.orc.order); 'arvo inspect {key}' shows it"
    )
    # What the orchestrator does with it (the service would consume it from that topic).
    asyncio.run(stepper.deliver(event))

    listed = runner.invoke(cli.app, ["instances", "list", "--status", "cancelled"])
    assert listed.exit_code == 0, listed.output
    assert [row.split("\t")[:2] for row in listed.stdout.splitlines()[1:]] == [[key, "cancelled"]]
    shown = runner.invoke(cli.app, ["inspect", key])
    assert shown.exit_code == 0, shown.output
    assert "status:          cancelled" in shown.stdout
    assert "cancelled:       by com.arvo.cli at " in shown.stdout
    assert shown.stdout.rstrip().count("fraud suspected") == 1
    assert 'machine value:   "shipping"' in shown.stdout

    # By instance key too; now a no-op.
    again = runner.invoke(cli.app, ["instances", "cancel", key])
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == f"instance {key} is already cancelled: nothing to cancel"
    assert len(cluster.records("arvo.orc.order")) == 1


def test_instances_cancel_by_instance_key_uses_the_stored_subject(
    runner: CliRunner, stepper: Stepper, cluster: FakeCluster
) -> None:
    init, _child_init, _quote = asyncio.run(order_waiting_for_its_shipment(stepper))
    result = runner.invoke(cli.app, ["instances", "cancel", key_of(init.subject)])
    assert result.exit_code == 0, result.output
    [record] = cluster.records("arvo.orc.order")
    event = ArvoEvent.from_json(record.value)
    assert (event.subject, event.data) == (init.subject, {"reason": NO_REASON})


def test_instances_cancel_of_a_finished_or_unknown_instance_is_a_no_op_with_exit_0(
    runner: CliRunner, stepper: Stepper, cluster: FakeCluster
) -> None:
    broker = InMemoryBroker(demo_app(stepper.memory))
    done, failed, unknown = order_init(), order_init(sku="sku-unknown"), order_init()
    asyncio.run(broker.resolve(done))
    asyncio.run(broker.resolve(failed))
    for init, line in (
        (done, "is already done: nothing to cancel"),
        (failed, "is already failed: nothing to cancel"),
        (unknown, "does not exist (key prefix 'arvo'): nothing to cancel"),
    ):
        result = runner.invoke(cli.app, ["instances", "cancel", init.subject])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"instance {key_of(init.subject)} {line}"
    assert cluster.records("arvo.orc.order") == []
    bad = runner.invoke(cli.app, ["instances", "cancel", "not a subject"])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("arvo: invalid subject: ")
