"""``ARVO_REPLY_SOURCE_CHECK=strict``: a reply must answer an event its instance emitted (issue 11, G).

In strict mode a record keeps the ids of the instance's emitted events (``emittedIds``, the newest
``EMITTED_IDS_KEPT``) and a reply is accepted only when, besides coming from an addressed source, its
``parentid`` is one of them; others are refused with :class:`ForeignSourceViolation` (the consumer
dead-letters them as ``foreign_source``). The init event, child completions and system errors, and the
system error to the initiator are unaffected: every legitimate flow of the bench and demo workflows
ends the same in strict mode as in ``addressed`` mode.
"""

from __future__ import annotations

from typing import Any

import pytest

from contracts.bench import bench_machine_contract, bench_resumable_contract
from contracts.demo import order_contract
from service.arvo.errors import ForeignSourceViolation
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestration.input_validation import ReplySourceCheck, validate_reply_source_check
from service.arvo.orchestration.pipeline import PipelineHandler
from service.arvo.orchestration.record import EMITTED_IDS_KEPT, InstanceRecord, push_emitted_ids
from service.arvo.orchestrator import ArvoOrchestrator
from service.arvo.resumable import ArvoResumable
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app, demo_app
from service.examples.bench import bench_add_handler, bench_orchestrator, bench_resumable
from service.runtime.settings import SettingsError, load_settings

CLIENT = "com.test.client"


def bench_init(*, resumable: bool, a: int = 2) -> ArvoEvent:
    contract = bench_resumable_contract if resumable else bench_machine_contract
    return create_arvo_orchestrator_event_factory(contract.version("1.0.0")).init(
        source=CLIENT, data={"a": a, "b": 3, "parentSubject$$": None}
    )


def order_init(
    order_id: str, *, sku: str = "sku-widget", country: str = "NL", cents: int = 1_000
) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=CLIENT,
        data={
            "parentSubject$$": None,
            "orderId": order_id,
            "customerId": "c-1",
            "country": country,
            "items": [{"sku": sku, "quantity": 1, "unitPriceCents": cents}],
        },
    )


def bench_agent(memory: InMemoryMemory, *, resumable: bool) -> ArvoOrchestrator | ArvoResumable:
    return bench_resumable(memory) if resumable else bench_orchestrator(memory)


async def stored(memory: InMemoryMemory, init: ArvoEvent) -> InstanceRecord:
    record = await memory.inspect(ArvoOrchestrationSubject.parse(init.subject).instance_key)
    assert record is not None
    return record  # type: ignore[return-value]


async def first_call_and_reply(
    mode: ReplySourceCheck, *, resumable: bool
) -> tuple[InMemoryMemory, PipelineHandler, ArvoEvent, ArvoEvent, ArvoEvent]:
    """The bench workflow up to its add call and the add service's real reply (not yet consumed)."""
    memory = InMemoryMemory()
    agent = bench_agent(memory, resumable=resumable)
    agent.reply_source_check = mode
    init = bench_init(resumable=resumable)
    [call] = (await agent.execute(init)).events
    [reply] = (await bench_add_handler().execute(call)).events
    assert reply.parentid == call.id
    return memory, agent, init, call, reply


@pytest.mark.parametrize("resumable", [False, True], ids=["orchestrator", "resumable"])
async def test_strict_refuses_a_reply_from_the_right_source_answering_an_event_never_emitted(
    resumable: bool,
) -> None:
    memory, agent, init, call, reply = await first_call_and_reply("strict", resumable=resumable)
    assert (await stored(memory, init))["emittedIds"] == [call.id]
    forged = reply.replace(id="forged-1", parentid="made-up-parent", data={"sum": 1_000_000})
    with pytest.raises(ForeignSourceViolation, match=r"parentid='made-up-parent'") as refused:
        await agent.execute(forged)
    assert refused.value.expected == frozenset({"com.bench.add"})
    assert "not an event this" in str(refused.value)
    # Nothing of the forged reply reached the instance: the real one is still awaited and runs.
    before = await stored(memory, init)
    assert before["consumedIds"][-1].endswith(f"/{init.id}")
    [double] = (await agent.execute(reply)).events
    assert double.data == {"value": 5}
    record = await stored(memory, init)
    assert record["emittedIds"] == [call.id, double.id]


@pytest.mark.parametrize("resumable", [False, True], ids=["orchestrator", "resumable"])
async def test_strict_refuses_a_reply_without_parentid(resumable: bool) -> None:
    _memory, agent, _init, _call, reply = await first_call_and_reply("strict", resumable=resumable)
    with pytest.raises(ForeignSourceViolation, match=r"parentid=None"):
        await agent.execute(reply.replace(id="no-parent", parentid=None))


@pytest.mark.parametrize("resumable", [False, True], ids=["orchestrator", "resumable"])
async def test_addressed_accepts_the_same_forged_parentid_and_keeps_no_emitted_ids(resumable: bool) -> None:
    memory, agent, init, _call, reply = await first_call_and_reply("addressed", resumable=resumable)
    assert "emittedIds" not in await stored(memory, init)
    forged = reply.replace(id="forged-1", parentid="made-up-parent", data={"sum": 1_000_000})
    result = await agent.execute(forged)
    assert result.outcome is ExecutionOutcome.EXECUTED
    if not resumable:  # the statechart takes any addressed reply: the forged sum drives it
        assert [event.data for event in result.events] == [{"value": 1_000_000}]


@pytest.mark.parametrize("resumable", [False, True], ids=["orchestrator", "resumable"])
async def test_a_record_written_before_strict_mode_is_checked_as_addressed_then_tracked(
    resumable: bool,
) -> None:
    memory, agent, init, _call, reply = await first_call_and_reply("addressed", resumable=resumable)
    agent.reply_source_check = "strict"  # switched on while the instance runs (a rolling change)
    [double] = (await agent.execute(reply)).events
    assert (await stored(memory, init))["emittedIds"] == [double.id]
    # From then on the instance is checked strictly.
    [double_reply] = (await bench_app(memory)[1].execute(double)).events
    with pytest.raises(ForeignSourceViolation):
        await agent.execute(double_reply.replace(id="forged-2", parentid=reply.parentid))
    done = await agent.execute(double_reply)
    assert [event.type for event in done.events] == [f"{agent.source}.done"]


async def test_the_init_event_is_not_a_reply_and_is_never_checked() -> None:
    memory = InMemoryMemory()
    agent = bench_orchestrator(memory)
    agent.reply_source_check = "strict"
    init = bench_init(resumable=False).replace(source="com.anyone.at.all", parentid="whatever")
    assert (await agent.execute(init)).outcome is ExecutionOutcome.EXECUTED


async def run_all(app: Any, mode: ReplySourceCheck, inits: list[ArvoEvent]) -> list[tuple[str, Any]]:
    memory = InMemoryMemory()
    handlers = app(memory)
    for handler in handlers:
        if isinstance(handler, PipelineHandler):
            handler.reply_source_check = mode
    broker = InMemoryBroker(handlers)
    outcomes: list[tuple[str, Any]] = []
    for init in inits:
        reply = await broker.resolve(init, require_reply=True)
        data = {key: value for key, value in reply.data.items() if key != "errorStack"}
        outcomes.append((reply.type, data))
    assert broker.errors == []  # nothing refused, nothing raised
    if mode == "strict":  # every instance kept its emitted ids (a failure record in its previous one)
        for init in inits:
            record = await stored(memory, init)
            kept = record if record["executionStatus"] == "normal" else record.get("previous")
            assert kept is not None
            assert kept.get("emittedIds")
    return outcomes


async def test_every_bench_and_demo_outcome_is_the_same_in_strict_mode() -> None:
    bench = [bench_init(resumable=index % 2 == 1, a=index) for index in range(6)]
    demo = [
        order_init("fulfilled"),
        order_init("declined", cents=10_000_000),  # the charge is declined: a service system error
        order_init("no-carrier", country="JP"),  # the child resumable fails: its system error
        order_init("unknown-sku", sku="sku-unknown"),  # the order escalates: system error to us
    ]
    strict = await run_all(bench_app, "strict", bench) + await run_all(demo_app, "strict", demo)
    addressed = await run_all(bench_app, "addressed", bench) + await run_all(demo_app, "addressed", demo)
    assert strict == addressed
    types = [reply_type for reply_type, _ in strict]
    assert types[:6] == [f"{init.type}.done" for init in bench]
    assert [data["result"] for _, data in strict[:6]] == [2 * (index + 3) for index in range(6)]
    assert [(reply_type, data.get("status")) for reply_type, data in strict[6:]] == [
        ("arvo.orc.order.done", "fulfilled"),
        ("arvo.orc.order.done", "payment_declined"),
        ("arvo.orc.order.done", "shipping_failed"),
        ("sys.arvo.orc.order.error", None),
    ]


def test_emitted_ids_are_capped_to_the_newest() -> None:
    events = [bench_init(resumable=False, a=index) for index in range(EMITTED_IDS_KEPT + 10)]
    ids = push_emitted_ids(None, events[:200])
    record: Any = {"emittedIds": ids}
    kept = push_emitted_ids(record, events[200:])
    assert len(kept) == EMITTED_IDS_KEPT
    assert kept == [event.id for event in events[-EMITTED_IDS_KEPT:]]


def test_the_mode_is_validated() -> None:
    assert validate_reply_source_check("strict") == "strict"
    with pytest.raises(ValueError, match=r"one of off, addressed, strict, got 'paranoid'"):
        validate_reply_source_check("paranoid")
    agent = bench_orchestrator(InMemoryMemory())
    with pytest.raises(ValueError, match="paranoid"):
        agent.reply_source_check = "paranoid"  # type: ignore[assignment]
    assert agent.reply_source_check == "addressed"


def test_the_setting_accepts_strict_and_names_the_variable_otherwise() -> None:
    assert load_settings(env_file=None, reply_source_check="strict").reply_source_check == "strict"
    with pytest.raises(
        SettingsError, match=r"ARVO_REPLY_SOURCE_CHECK='paranoid'.*'off', 'addressed' or 'strict'"
    ):
        load_settings(env_file=None, reply_source_check="paranoid")
