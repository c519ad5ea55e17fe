"""``arvo demo``: run the example workflows on the in-memory broker and memory, hop by hop.

What ``make run`` shows on a fresh machine: every event as it is published (type, from → to, the
short execution id of its subject) and each workflow's final event, checked against what the
example is meant to produce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from contracts.bench import bench_machine_contract, bench_resumable_contract
from contracts.demo import order_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples import default_app

__all__ = ["DEMO_CLIENT", "DemoScenario", "demo_scenarios", "run_demo", "short_subject"]

DEMO_CLIENT = "com.arvo.demo.client"
"""The source of the demo's init events: completions and system errors come back to it."""


@dataclass(frozen=True, slots=True)
class DemoScenario:
    """One workflow run: its init event and a check of the final event."""

    title: str
    init: Callable[[], ArvoEvent]
    expect: Callable[[ArvoEvent | None], bool]
    expectation: str


def short_subject(subject: str) -> str:
    """The first 8 characters of the subject's execution id (or of the raw subject)."""
    try:
        return ArvoOrchestrationSubject.parse(subject).execution_id[:8]
    except ValueError:
        return subject[:8]


def _init(contract: Any, data: dict[str, Any]) -> Callable[[], ArvoEvent]:
    factory = create_arvo_orchestrator_event_factory(contract.version("1.0.0"))
    return lambda: factory.init(source=DEMO_CLIENT, data={"parentSubject$$": None, **data})


def _order(
    order_id: str, *, country: str = "NL", sku: str = "sku-widget", price: int = 1250
) -> dict[str, Any]:
    return {
        "orderId": order_id,
        "customerId": "cust-42",
        "country": country,
        "items": [{"sku": sku, "quantity": 2, "unitPriceCents": price}],
    }


def _data(event: ArvoEvent | None) -> dict[str, Any]:
    return event.data if event is not None else {}


def demo_scenarios() -> list[DemoScenario]:
    """The workflows ``arvo demo`` runs, in order."""
    return [
        DemoScenario(
            "bench workflow (statechart orchestrator): 2·(3+4)",
            _init(bench_machine_contract, {"a": 3, "b": 4}),
            lambda final: (
                final is not None and final.type == "arvo.orc.bench.done" and _data(final)["result"] == 14
            ),
            "arvo.orc.bench.done with result 14",
        ),
        DemoScenario(
            "bench workflow (resumable): 2·(5+6)",
            _init(bench_resumable_contract, {"a": 5, "b": 6}),
            lambda final: final is not None and _data(final).get("result") == 22,
            "arvo.orc.bench.resumable.done with result 22",
        ),
        DemoScenario(
            "order: reserve ∥ charge, then ship via the shipment child workflow",
            _init(order_contract, _order("ord-1001")),
            lambda final: (
                _data(final).get("status") == "fulfilled" and _data(final).get("trackingId") == "TRK-ord-1001"
            ),
            "arvo.orc.order.done, status fulfilled, tracking TRK-ord-1001",
        ),
        DemoScenario(
            "order: payment declined → stock released (compensation)",
            _init(order_contract, _order("ord-1002", price=40_000)),
            lambda final: _data(final).get("status") == "payment_declined",
            "arvo.orc.order.done, status payment_declined",
        ),
        DemoScenario(
            "order: nobody ships to JP → the child fails, the order reports it",
            _init(order_contract, _order("ord-1003", country="JP")),
            lambda final: _data(final).get("status") == "shipping_failed",
            "arvo.orc.order.done, status shipping_failed",
        ),
        DemoScenario(
            "order: unknown SKU → the order escalates → system error to the client",
            _init(order_contract, _order("ord-1004", sku="sku-unknown")),
            lambda final: final is not None and final.type == "sys.arvo.orc.order.error",
            "sys.arvo.orc.order.error",
        ),
    ]


async def run_demo(console: Console | None = None) -> bool:
    """Run every scenario, printing hops and outcomes; ``True`` when all ended as expected."""
    out = console or Console(highlight=False)
    memory = InMemoryMemory()

    def show_hop(event: ArvoEvent) -> None:
        domain = f" [magenta]@{event.domain}[/]" if event.domain else ""
        colour = (
            "red" if event.type.startswith("sys.") else ("green" if event.type.endswith(".done") else "cyan")
        )
        out.print(
            f"  [{colour}]{event.type:<34}[/] [dim]{event.source}[/] → {event.to}{domain} "
            f"[dim]({short_subject(event.subject)})[/]",
            soft_wrap=True,
        )

    broker = InMemoryBroker(default_app(memory), on_publish=show_hop)
    all_ok = True
    for number, scenario in enumerate(demo_scenarios(), start=1):
        out.print(f"\n[bold]{number}. {scenario.title}[/]")
        final = await broker.resolve(scenario.init())
        ok = scenario.expect(final)
        all_ok = all_ok and ok
        verdict = "[green]ok[/]" if ok else f"[red]UNEXPECTED[/] (expected {scenario.expectation})"
        out.print(
            f"  → {verdict}: {final.type if final else 'no final event'} {final.data if final else ''}",
            soft_wrap=True,
        )
    for error, event in broker.errors:
        all_ok = False
        out.print(f"[red]handler error on {event.type}: {error}[/]")
    instances = await memory.list_instances()
    summary = ", ".join(
        f"{status}={sum(1 for row in instances if row.status == status)}"
        for status in sorted({row.status for row in instances})
    )
    out.print(f"\n{len(broker.events)} events, instances: {summary}")
    return all_ok
