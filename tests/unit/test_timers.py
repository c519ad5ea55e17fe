"""Durable timers and deadlines through the pipeline, on the in-memory broker's virtual time."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pytest

from contracts.demo import order_contract
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.orchestration.timers import (
    DEADLINE_EXTENSION,
    DEADLINE_TIMER_ID,
    TIMER_EVENT_TYPE,
    create_timer_event,
    format_time_ms,
    timer_event_id,
)
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples.demo import (
    ORDER_DEADLINE_S,
    PAYMENT_TIMEOUT_MS,
    demo_handlers,
    order_orchestrator,
    shipment_resumable,
)

SHOP = "com.example.shop"


def order(order_id: str, **extensions: Any) -> ArvoEvent:
    event = create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=SHOP,
        data={
            "parentSubject$$": None,
            "orderId": order_id,
            "customerId": "c-1",
            "country": "NL",
            "items": [{"sku": "sku-widget", "quantity": 1, "unitPriceCents": 250}],
        },
    )
    return event.replace(extensions=extensions) if extensions else event


def without(*prefixes: str) -> list[Any]:
    return [handler for handler in demo_handlers() if not handler.source.startswith(prefixes)]


async def record_of(memory: InMemoryMemory, subject: str) -> dict[str, Any]:
    record = await memory.inspect(ArvoOrchestrationSubject.parse(subject).instance_key)
    assert record is not None
    return record


async def test_an_unanswered_payment_times_out_and_the_order_is_compensated() -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker(
        [*without("com.payment."), order_orchestrator(memory), shipment_resumable(memory)]
    )
    init = order("o-1")
    assert await broker.resolve(init) is None  # payment never answers: the order waits
    record = await record_of(memory, init.subject)
    [payment_timer] = [entry for entry in record["timers"] if entry["kind"] == "machine"]
    assert payment_timer["id"].startswith("xstate.after.PAYMENT_TIMEOUT.")

    # Not yet due: nothing fires.
    assert await broker.advance(seconds=PAYMENT_TIMEOUT_MS / 1000 - 1) == []
    fired = await broker.advance(seconds=1)
    assert [event.data["timerId"] for event in fired] == [payment_timer["id"]]
    [completion] = [event for event in broker.events if event.type == "arvo.orc.order.done"]
    assert completion.data["status"] == "payment_declined"
    assert completion.data["reason"] == "payment did not answer within 30 s"
    # The compensation ran: the reservation was released.
    assert [event.type for event in broker.events].count("com.inventory.release") == 1
    record = await record_of(memory, init.subject)
    assert record["status"] == "done"
    assert "timers" not in record  # done: nothing pending, the deadline included


async def test_a_payment_answered_in_time_leaves_a_stale_timer_that_fires_without_effect() -> None:
    memory = InMemoryMemory()
    orchestrator = order_orchestrator(memory)
    broker = InMemoryBroker([*demo_handlers(), orchestrator, shipment_resumable(memory)])
    init = order("o-2")
    reply = await broker.resolve(init, require_reply=True)
    assert reply.data["status"] == "fulfilled"
    # The payment timer was scheduled when the order started; it is stale now.
    assert broker.pending_timers
    subject, timer_id, due = broker.pending_timers[0]
    result = await orchestrator.execute(
        create_timer_event(subject=subject, orchestrator="arvo.orc.order", timer_id=timer_id, due_ms=due)
    )
    assert result.outcome is ExecutionOutcome.IGNORED_STALE_TIMER
    assert result.events == []


async def test_the_deadline_times_the_order_out_and_cancels_its_shipment() -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker(
        [*without("com.shipping."), order_orchestrator(memory), shipment_resumable(memory)]
    )
    init = order("o-3")
    assert await broker.resolve(init) is None  # shipping never quotes: the order waits in shipping
    record = await record_of(memory, init.subject)
    [deadline] = [entry for entry in record["timers"] if entry["id"] == DEADLINE_TIMER_ID]
    [child_init] = [event for event in broker.events if event.type == "arvo.orc.shipment"]
    # The child inherits the parent's deadline.
    assert child_init.extensions[DEADLINE_EXTENSION] == format_time_ms(deadline["dueMs"])

    received: list[ArvoEvent] = []

    async def initiator(event: ArvoEvent, _broker: InMemoryBroker) -> None:
        received.append(event)

    broker.subscribe(SHOP, initiator)
    await broker.advance(seconds=ORDER_DEADLINE_S)
    [error] = received
    assert error.type == "sys.arvo.orc.order.error"
    assert error.data["errorName"] == "OrchestrationTimedOutError"
    assert "timed out: deadline" in error.data["errorMessage"]
    statuses = {row.key.split(":")[0]: row.status for row in await memory.list_instances()}
    assert statuses == {
        "arvo.orc.order": InstanceStatus.TIMED_OUT,
        "arvo.orc.shipment": InstanceStatus.CANCELLED,
    }
    record = await record_of(memory, init.subject)
    assert record["cancellation"]["by"] == "deadline"


async def test_an_init_event_names_its_own_deadline() -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker(
        [*without("com.shipping."), order_orchestrator(memory), shipment_resumable(memory)]
    )
    init = order("o-4", arvodeadline=format_time_ms(broker.now_ms + 5_000))
    await broker.resolve(init)
    assert await broker.advance(seconds=4) == []
    fired = await broker.advance(seconds=1)
    # The order's deadline and its shipment's (inherited: the same time) fire; the order's first.
    assert [(event.subject, event.data["timerId"]) for event in fired] == [
        (init.subject, DEADLINE_TIMER_ID),
        (
            next(event for event in broker.events if event.type == "arvo.orc.shipment").subject,
            DEADLINE_TIMER_ID,
        ),
    ]
    record = await record_of(memory, init.subject)
    assert record["status"] == "timed_out"


async def test_a_timer_event_is_deterministic_and_a_redelivery_is_replayed() -> None:
    memory = InMemoryMemory()
    orchestrator = order_orchestrator(memory)
    broker = InMemoryBroker([*without("com.payment."), orchestrator, shipment_resumable(memory)])
    init = order("o-5")
    await broker.resolve(init)
    [fired] = await broker.advance(seconds=PAYMENT_TIMEOUT_MS / 1000)
    assert fired.type == TIMER_EVENT_TYPE
    assert fired.id == timer_event_id(init.subject, fired.data["timerId"])
    again = create_timer_event(
        subject=init.subject,
        orchestrator="arvo.orc.order",
        timer_id=fired.data["timerId"],
        due_ms=fired.data["dueMs"],
    )
    assert again.to_dict() == fired.to_dict()
    # The instance went on (the release was answered) after the timer: the redelivery is old news.
    result = await orchestrator.execute(again)
    assert result.outcome in (ExecutionOutcome.DUPLICATE_DROPPED, ExecutionOutcome.REPLAYED)


# --- resumables ---------------------------------------------------------------------------------------


def patient_resumable(memory: InMemoryMemory) -> Any:
    """Calls ``add`` and gives up after 1 s: the one-line timer of a resumable."""
    from contracts.bench import add_contract, bench_resumable_contract
    from service.arvo.resumable import ResumableContext, ResumableResult, create_arvo_resumable

    async def handler(context: ResumableContext) -> ResumableResult | None:
        if context.input is not None:
            data = context.input["data"]
            return {
                "services": [{"type": "com.bench.add", "data": {"a": data["a"], "b": data["b"]}}],
                "timers": {"add": 1_000},
            }
        if context.timer == "add":
            return {"output": {"result": -1}}
        if context.service is not None and context.service["type"] == "evt.bench.add.success":
            assert "add" in context.timers  # still pending while the reply is handled
            return {"output": {"result": context.service["data"]["sum"]}}
        return None

    return create_arvo_resumable(
        contract=bench_resumable_contract,
        services={"add": add_contract.version("1.0.0")},
        memory=memory,
        handler={"1.0.0": handler},
    )


def resumable_init(a: int = 1, b: int = 2) -> ArvoEvent:
    from contracts.bench import bench_resumable_contract

    return create_arvo_orchestrator_event_factory(bench_resumable_contract.version("1.0.0")).init(
        source=SHOP, data={"parentSubject$$": None, "a": a, "b": b}
    )


async def test_a_resumable_gives_up_when_its_timer_fires_first() -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker([patient_resumable(memory)])  # nobody serves com.bench.add
    init = resumable_init()
    assert await broker.resolve(init) is None
    [(subject, timer_id, _due)] = broker.pending_timers
    assert (subject, timer_id) == (init.subject, "timer.add")
    completions: list[ArvoEvent] = []

    async def initiator(event: ArvoEvent, _broker: InMemoryBroker) -> None:
        completions.append(event)

    broker.subscribe(SHOP, initiator)
    await broker.advance(seconds=1)
    assert [event.data for event in completions] == [{"result": -1}]
    record = await record_of(memory, init.subject)
    assert record["status"] == "done"
    assert "timers" not in record


async def test_a_resumable_answered_in_time_drops_its_timer() -> None:
    from service.examples.bench import bench_add_handler

    memory = InMemoryMemory()
    resumable = patient_resumable(memory)
    broker = InMemoryBroker([bench_add_handler(), resumable])
    init = resumable_init(2, 3)
    reply = await broker.resolve(init, require_reply=True)
    assert reply.data == {"result": 5}
    [fired] = await broker.advance(seconds=1)
    assert fired.data["timerId"] == "timer.add"
    # Completed first: the timer is stale, its firing has no effect.
    assert [event.type for event in broker.events].count("arvo.orc.bench.resumable.done") == 1


async def test_a_resumable_timer_armed_again_replaces_the_earlier_one_and_none_cancels_it() -> None:
    from service.arvo.resumable import _arm

    pending: dict[str, int] = {}
    event = resumable_init()
    now = int(datetime.fromisoformat(event.time).timestamp() * 1000)
    _arm(pending, {"a": 100, "b": 200.5}, event)
    assert pending == {"a": now + 100, "b": math.ceil(now + 200.5)}
    _arm(pending, {"a": 300, "b": None}, event)
    assert pending == {"a": now + 300}
    with pytest.raises(TypeError, match="finite number of ms"):
        _arm(pending, {"a": float("nan")}, event)


# --- decide(): the timer rules, pure -------------------------------------------------------------------

SUBJECT = ArvoOrchestrationSubject.new(
    orchestrator="arvo.orc.order", initiator="com.example.shop", version="1.0.0"
)
TIMER = {"id": "xstate.after.500.order.a#0", "dueMs": 1_000, "kind": "machine"}
DEADLINE = {"id": DEADLINE_TIMER_ID, "dueMs": 9_000, "kind": "deadline"}


def stored(**fields: Any) -> Any:
    record: dict[str, Any] = {
        "schemaVersion": 1,
        "kind": "orchestrator",
        "executionStatus": "normal",
        "status": "active",
        "completed": False,
        "subject": SUBJECT,
        "parentSubject": None,
        "initEventId": "init-1",
        "orchestrator": "arvo.orc.order",
        "version": "1.0.0",
        "events": {"consumed": {}, "produced": []},
        "consumedIds": ["@x//init-1"],
        "updatedAt": "",
        "timers": [TIMER, DEADLINE],
    }
    record.update(fields)
    return record


def fire(timer_id: str, due_ms: int) -> ArvoEvent:
    return create_timer_event(
        subject=SUBJECT, orchestrator="arvo.orc.order", timer_id=timer_id, due_ms=due_ms
    )


@pytest.mark.parametrize(
    ("record", "event", "expected"),
    [
        (stored(), fire(TIMER["id"], 1_000), "proceed"),
        (stored(), fire(DEADLINE_TIMER_ID, 9_000), "timed_out"),
        (None, fire(TIMER["id"], 1_000), "stale"),
        (stored(), fire(TIMER["id"], 1_001), "stale"),  # re-armed since: another due time
        (stored(), fire("xstate.after.500.order.b#1", 1_000), "stale"),  # its state was left
        (stored(timers=[]), fire(TIMER["id"], 1_000), "stale"),
        (stored(status="done", completed=True), fire(TIMER["id"], 1_000), "stale"),
        (stored(executionStatus="failure", status="failed"), fire(TIMER["id"], 1_000), "stale"),
        (stored(executionStatus="cancelled", status="cancelled"), fire(DEADLINE_TIMER_ID, 9_000), "stale"),
        (stored(executionStatus="cancelled", status="timed_out"), fire(DEADLINE_TIMER_ID, 9_000), "stale"),
        (stored(status="parked"), fire(TIMER["id"], 1_000), "proceed"),
    ],
    ids=[
        "pending",
        "deadline",
        "no-instance",
        "other-due-time",
        "other-timer",
        "none-pending",
        "done",
        "failed",
        "cancelled",
        "timed-out",
        "parked",
    ],
)
def test_decide_fires_only_what_the_record_still_lists(record: Any, event: ArvoEvent, expected: str) -> None:
    from service.arvo.orchestration.pipeline import Cancel, Ignore, Proceed, decide

    decision = decide(ArvoOrchestrationSubject.parse(SUBJECT), "arvo.orc.order", event, record)
    if expected == "proceed":
        assert decision == Proceed(parent_subject=None, init_event_id="init-1", timer=TIMER)
    elif expected == "timed_out":
        assert isinstance(decision, Cancel)
        assert decision.timed_out
        assert decision.outcome is ExecutionOutcome.TIMED_OUT
        assert decision.reason == f"deadline {format_time_ms(9_000)} passed"
    else:
        assert isinstance(decision, Ignore)
        assert decision.outcome is ExecutionOutcome.IGNORED_STALE_TIMER


def test_a_redelivered_timer_event_is_deduplicated_before_the_timer_rules() -> None:
    from service.arvo.orchestration.pipeline import DropDuplicate, Replay, consumed_key, decide

    event = fire(TIMER["id"], 1_000)
    parsed = ArvoOrchestrationSubject.parse(SUBJECT)
    last = stored(consumedIds=["@x//init-1", consumed_key(event)], timers=[DEADLINE])
    assert isinstance(decide(parsed, "arvo.orc.order", event, last), Replay)
    older = stored(consumedIds=[consumed_key(event), "@x//reply-1"], timers=[DEADLINE])
    assert isinstance(decide(parsed, "arvo.orc.order", event, older), DropDuplicate)


async def test_an_init_event_with_a_malformed_deadline_fails_with_a_system_error() -> None:
    memory = InMemoryMemory()
    orchestrator = order_orchestrator(memory)
    result = await orchestrator.execute(order("o-9", arvodeadline="next tuesday"))
    assert result.outcome is ExecutionOutcome.SYSTEM_ERROR
    [error] = result.events
    assert "arvodeadline='next tuesday' is not an RFC 3339 time" in error.data["errorMessage"]


async def test_a_child_keeps_its_own_earlier_deadline() -> None:
    from service.arvo.orchestration.pipeline import _carry_deadline

    parent_subject = SUBJECT
    child = create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source="arvo.orc.order",
        data={
            "parentSubject$$": parent_subject,
            "orderId": "c",
            "customerId": "c-1",
            "country": "NL",
            "items": [{"sku": "sku-widget", "quantity": 1, "unitPriceCents": 250}],
        },
    )
    earlier = child.replace(extensions={DEADLINE_EXTENSION: format_time_ms(5_000)})
    [kept] = _carry_deadline([earlier], 9_000, own_subject=parent_subject)
    assert kept.extensions[DEADLINE_EXTENSION] == format_time_ms(5_000)
    [carried] = _carry_deadline([child], 9_000, own_subject=parent_subject)
    assert carried.extensions[DEADLINE_EXTENSION] == format_time_ms(9_000)
    assert carried.id == child.id  # the same event, with the attribute
