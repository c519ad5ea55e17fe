"""The embedded default: the bench workflow and the order demo behave as documented."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from contracts.bench import bench_machine_contract, bench_resumable_contract
from contracts.demo import order_contract
from service.apps import AppLoadError, build_handlers, load_app_factory
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.cli import app
from service.demo_runner import demo_scenarios, run_demo
from service.examples import default_app

CLIENT = "com.example.tests"


def order(order_id: str, **overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "parentSubject$$": None,
        "orderId": order_id,
        "customerId": "c-1",
        "country": "NL",
        "items": [{"sku": "sku-widget", "quantity": 2, "unitPriceCents": 500}],
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    "contract", [bench_machine_contract, bench_resumable_contract], ids=["orchestrator", "resumable"]
)
async def test_bench_workflow_completes_with_twice_the_sum_in_six_events(contract: object) -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker(default_app(memory))
    init = create_arvo_orchestrator_event_factory(contract.version("1.0.0")).init(  # type: ignore[attr-defined]
        source=CLIENT, data={"a": 3, "b": 4, "parentSubject$$": None}
    )
    final = await broker.resolve(init)
    assert final is not None
    assert final.data == {"result": 14}
    assert len(broker.events) == 6
    key = ArvoOrchestrationSubject.parse(init.subject).instance_key
    record = await memory.inspect(key)
    assert record is not None
    assert record["status"] == "done"
    assert record["completed"] is True


async def test_order_is_fulfilled_through_the_shipment_child_workflow() -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker(default_app(memory))
    init = create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=CLIENT, data=order("o-1")
    )
    final = await broker.resolve(init)
    assert final is not None
    assert final.type == "arvo.orc.order.done"
    assert final.data["status"] == "fulfilled"
    assert final.data["trackingId"] == "TRK-o-1"
    assert final.parentid == init.id
    types = [event.type for event in broker.events]
    assert "arvo.orc.shipment" in types
    assert "arvo.orc.shipment.done" in types
    child = next(event for event in broker.events if event.type == "arvo.orc.shipment")
    child_subject = ArvoOrchestrationSubject.parse(child.subject)
    assert child_subject.initiator == "arvo.orc.order"
    done_instances = await memory.list_instances(status=InstanceStatus.DONE)
    assert {row.orchestrator for row in done_instances} == {"arvo.orc.order", "arvo.orc.shipment"}


async def test_declined_payment_releases_the_reserved_stock() -> None:
    broker = InMemoryBroker(default_app(InMemoryMemory()))
    init = create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=CLIENT,
        data=order("o-2", items=[{"sku": "sku-widget", "quantity": 5, "unitPriceCents": 20_000}]),
    )
    final = await broker.resolve(init)
    assert final is not None
    assert final.data["status"] == "payment_declined"
    assert "com.inventory.release" in [event.type for event in broker.events]


async def test_unknown_sku_escalates_into_a_system_error_and_a_failed_instance() -> None:
    memory = InMemoryMemory()
    broker = InMemoryBroker(default_app(memory))
    init = create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=CLIENT, data=order("o-3", items=[{"sku": "nope", "quantity": 1, "unitPriceCents": 1}])
    )
    final = await broker.resolve(init)
    assert final is not None
    assert final.type == "sys.arvo.orc.order.error"
    assert final.to == CLIENT
    assert final.data["errorName"] == "OrderEscalationError"
    failed = await memory.list_instances(status=InstanceStatus.FAILED)
    assert [row.orchestrator for row in failed] == ["arvo.orc.order"]
    record = await memory.inspect(failed[0].key)
    assert record is not None
    assert record["error"]["errorName"] == "OrderEscalationError"
    assert record["previous"]["status"] == "active"


async def test_run_demo_reports_every_scenario_as_expected() -> None:
    buffer = io.StringIO()
    assert await run_demo(Console(file=buffer, width=200, color_system=None))
    output = buffer.getvalue()
    assert output.count("→ ok") == len(demo_scenarios())
    assert "UNEXPECTED" not in output


def test_graph_command_prints_the_order_statechart_as_mermaid() -> None:
    result = CliRunner().invoke(app, ["graph", "order"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("stateDiagram-v2")
    assert "sys.arvo.orc.shipment.error" in result.output


def test_graph_command_rejects_a_resumable_with_one_line() -> None:
    result = CliRunner().invoke(app, ["graph", "shipment"])
    assert result.exit_code == 1
    assert "is a resumable" in result.output


def test_app_loading_errors_are_clear() -> None:
    with pytest.raises(AppLoadError, match="module:attribute"):
        load_app_factory("service.examples")
    with pytest.raises(AppLoadError, match="cannot import"):
        load_app_factory("no_such_module:app")
    with pytest.raises(AppLoadError, match="no attribute"):
        load_app_factory("service.examples:missing")
    with pytest.raises(AppLoadError, match="two handlers"):
        build_handlers("tests.unit.test_examples:duplicated_app", InMemoryMemory())


def duplicated_app(memory: InMemoryMemory) -> list[object]:
    return [*default_app(memory), *default_app(memory)[:1]]
