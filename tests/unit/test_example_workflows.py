"""Engine paths only the demo workflow exercises (its happy paths are in ``test_examples.py``).

A failure while a parallel reply is still in flight, and a child *resumable*'s system error routed to
the parent on the parent's subject (spec 9.4) so the parent machine can react to it.
"""

from __future__ import annotations

from contracts.demo import order_contract
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples import demo_app

SOURCE = "com.test.shop"


def order(*, sku: str = "sku-widget", country: str = "NL") -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=SOURCE,
        data={
            "orderId": "o-1",
            "customerId": "c-1",
            "country": country,
            "items": [{"sku": sku, "quantity": 2, "unitPriceCents": 1_000}],
            "parentSubject$$": None,
        },
    )


async def run_order(init: ArvoEvent) -> tuple[InMemoryBroker, InMemoryMemory, ArvoEvent | None]:
    memory = InMemoryMemory()
    broker = InMemoryBroker(demo_app(memory))
    reply = await broker.resolve(init)
    return broker, memory, reply


async def test_parallel_reply_after_an_escalation_is_ignored() -> None:
    init = order(sku="sku-unknown")
    broker, memory, reply = await run_order(init)
    assert reply is not None
    assert reply.type == "sys.arvo.orc.order.error"
    assert (reply.subject, reply.parentid) == (init.subject, init.id)
    key = ArvoOrchestrationSubject.parse(init.subject).instance_key
    assert [row.key for row in await memory.list_instances(status=InstanceStatus.FAILED)] == [key]
    # The payment reply (in flight in the parallel region) reached the failed instance afterwards:
    # ignored, no second system error, and the failure record still points at the reserve error.
    types = [event.type for event in broker.events]
    assert types.count("sys.arvo.orc.order.error") == 1
    record = await memory.inspect(key)
    assert record is not None
    assert record["events"]["consumed"]["type"] == "sys.com.inventory.reserve.error"
    payment = next(event for event in broker.events if event.type == "evt.payment.charge.success")
    order_agent = next(handler for handler in demo_app(memory) if handler.source == "arvo.orc.order")
    assert (await order_agent.execute(payment)).outcome is ExecutionOutcome.IGNORED_FAILED


async def test_child_resumable_failure_reaches_the_parent_machine_on_its_subject() -> None:
    init = order(country="JP")
    broker, _memory, done = await run_order(init)
    child_error = next(event for event in broker.events if event.type == "sys.arvo.orc.shipment.error")
    assert child_error.to == "arvo.orc.order"
    assert child_error.subject == init.subject
    assert done is not None
    assert done.type == "arvo.orc.order.done"
    assert done.data["status"] == "shipping_failed"
    assert "no carrier ships to JP" in done.data["reason"]
