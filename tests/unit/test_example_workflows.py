"""The shipped example workflows end to end through the in-memory broker (engine integration).

The demo covers what the acceptance fixtures do not: parallel service calls, compensation, a child
*resumable* started by a machine, and a child's system error routed to the parent on the parent's
subject (spec 9.4) so the parent machine can react to it.
"""

from __future__ import annotations

from typing import Any

import pytest

from contracts.bench import bench_machine_contract, bench_resumable_contract
from contracts.demo import order_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app, demo_app

SOURCE = "com.test.shop"


@pytest.mark.parametrize(
    "contract", [bench_machine_contract, bench_resumable_contract], ids=["machine", "resumable"]
)
async def test_bench_workflow_doubles_the_sum_in_six_events(contract: Any) -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker(bench_app(memory))
    init = create_arvo_orchestrator_event_factory(contract.version("1.0.0")).init(
        source=SOURCE, data={"a": 2, "b": 5, "parentSubject$$": None}
    )
    done = await broker.resolve(init)
    assert done is not None
    assert done.type == f"{contract.type}.done"
    assert done.data == {"result": 14}
    assert done.parentid == init.id
    assert len(broker.events) == 6
    assert broker.errors == []
    key = ArvoOrchestrationSubject.parse(init.subject).instance_key
    assert [row.key for row in await memory.list_instances(status=InstanceStatus.DONE)] == [key]


def order(
    *, sku: str = "sku-widget", quantity: int = 2, unit_price: int = 1_000, country: str = "NL"
) -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=SOURCE,
        data={
            "orderId": "o-1",
            "customerId": "c-1",
            "country": country,
            "items": [{"sku": sku, "quantity": quantity, "unitPriceCents": unit_price}],
            "parentSubject$$": None,
        },
    )


async def run_order(init: ArvoEvent) -> tuple[InMemoryBroker, InMemoryMemory, ArvoEvent | None]:
    memory = InMemoryMemory()
    broker = InMemoryBroker(demo_app(memory))
    reply = await broker.resolve(init)
    return broker, memory, reply


async def test_order_is_fulfilled_through_the_shipment_child() -> None:
    broker, memory, done = await run_order(order())
    assert done is not None
    assert done.type == "arvo.orc.order.done"
    assert done.data == {
        "orderId": "o-1",
        "status": "fulfilled",
        "totalCents": 2_000,
        "trackingId": "TRK-o-1",
        "reason": None,
    }
    assert broker.errors == []
    shipment_init = next(event for event in broker.events if event.type == "arvo.orc.shipment")
    child = ArvoOrchestrationSubject.parse(shipment_init.subject)
    assert (child.name, child.initiator) == ("arvo.orc.shipment", "arvo.orc.order")
    assert len(await memory.list_instances(status=InstanceStatus.DONE)) == 2


async def test_declined_payment_releases_the_reservation() -> None:
    broker, _memory, done = await run_order(order(unit_price=100_000))
    assert done is not None
    assert done.data["status"] == "payment_declined"
    assert "card declined" in done.data["reason"]
    types = [event.type for event in broker.events]
    assert "com.inventory.release" in types
    assert "arvo.orc.shipment" not in types


async def test_unknown_sku_escalates_into_a_system_error_for_the_initiator() -> None:
    init = order(sku="sku-unknown")
    broker, memory, reply = await run_order(init)
    assert reply is not None
    assert reply.type == "sys.arvo.orc.order.error"
    assert reply.subject == init.subject
    assert reply.parentid == init.id
    assert reply.data["errorName"] == "OrderEscalationError"
    assert "sku-unknown" in reply.data["errorMessage"]
    key = ArvoOrchestrationSubject.parse(init.subject).instance_key
    assert [row.key for row in await memory.list_instances(status=InstanceStatus.FAILED)] == [key]
    # The parallel payment reply arrived after the failure and was ignored (no second error).
    assert [event.type for event in broker.events].count("sys.arvo.orc.order.error") == 1


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
