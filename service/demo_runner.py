"""``arvo demo``: run the example workflows on the in-memory broker and memory, hop by hop.

What ``make run`` shows on a fresh machine: every event as it is published (type, from → to, the
short execution id of its subject) and each workflow's final event, checked against what the
example is meant to produce.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from contracts.bench import bench_machine_contract, bench_resumable_contract
from contracts.demo import order_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestration.cancellation import create_cancel_event
from service.arvo.orchestration.timers import TIMER_EVENT_TYPE
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples import default_app
from service.examples.demo import ORDER_DEADLINE_S, PAYMENT_TIMEOUT_MS, SILENT_BANK_CUSTOMER

__all__ = ["DEMO_CLIENT", "DemoScenario", "demo_scenarios", "run_demo", "short_subject"]

DEMO_CLIENT = "com.arvo.demo.client"
"""The source of the demo's init events: completions and system errors come back to it."""


Then = Callable[[InMemoryBroker, ArvoEvent], Awaitable[str]]
"""What a scenario does once its init event was resolved without a final event (advance the clock,
cancel the workflow); returns what it did, for the output."""


@dataclass(frozen=True, slots=True)
class DemoScenario:
    """One workflow run: its init event, what happens next (optional) and a check of the final event."""

    title: str
    init: Callable[[], ArvoEvent]
    expect: Callable[[ArvoEvent | None], bool]
    expectation: str
    then: Then | None = None


def _advance(seconds: float) -> Then:
    async def advance(broker: InMemoryBroker, _init: ArvoEvent) -> str:
        fired = await broker.advance(seconds=seconds)
        return f"the clock moved {seconds:g} s on (virtual time): {len(fired)} timers fired"

    return advance


async def _cancel(broker: InMemoryBroker, init: ArvoEvent) -> str:
    await broker.publish(
        create_cancel_event(init.subject, source=DEMO_CLIENT, reason="the customer changed their mind")
    )
    return "the shop sent arvo.instance.cancel"


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
    order_id: str,
    *,
    country: str = "NL",
    sku: str = "sku-widget",
    price: int = 1250,
    customer: str = "cust-42",
) -> dict[str, Any]:
    return {
        "orderId": order_id,
        "customerId": customer,
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
        DemoScenario(
            f"order: the bank never answers → payment timeout after {PAYMENT_TIMEOUT_MS // 1000} s"
            " → stock released",
            _init(order_contract, _order("ord-1005", customer=SILENT_BANK_CUSTOMER)),
            lambda final: (
                _data(final).get("status") == "payment_declined"
                and "did not answer" in str(_data(final).get("reason"))
            ),
            "arvo.orc.order.done, status payment_declined, payment did not answer",
            then=_advance(PAYMENT_TIMEOUT_MS / 1000),
        ),
        DemoScenario(
            f"order: no carrier answers for AQ → the {ORDER_DEADLINE_S:g} s deadline passes → timed out",
            _init(order_contract, _order("ord-1006", country="AQ")),
            lambda final: _data(final).get("errorName") == "OrchestrationTimedOutError",
            "sys.arvo.orc.order.error, OrchestrationTimedOutError (the shipment child cancelled)",
            then=_advance(ORDER_DEADLINE_S),
        ),
        DemoScenario(
            "order: still waiting for a carrier, the shop cancels it",
            _init(order_contract, _order("ord-1007", country="AQ")),
            lambda final: _data(final).get("errorName") == "OrchestrationCancelledError",
            "sys.arvo.orc.order.error, OrchestrationCancelledError (the shipment child cancelled)",
            then=_cancel,
        ),
    ]


async def _then(broker: InMemoryBroker, init: ArvoEvent, then: Then, out: Console) -> ArvoEvent | None:
    """Run a scenario's next step and return the last event it brought back to the demo client."""
    out.print("  [dim]… waiting: nothing came back yet[/]")
    received: list[ArvoEvent] = []

    async def collect(event: ArvoEvent, _broker: InMemoryBroker) -> None:
        received.append(event)

    unsubscribe = broker.subscribe(DEMO_CLIENT, collect)
    try:
        out.print(f"  [dim]… {await then(broker, init)}[/]")
    finally:
        unsubscribe()
    mine = [event for event in received if event.subject == init.subject or event.parentid == init.id]
    return mine[-1] if mine else None


async def run_demo(console: Console | None = None) -> bool:
    """Run every scenario, printing hops and outcomes; ``True`` when all ended as expected."""
    out = console or Console(highlight=False)
    memory = InMemoryMemory()

    def show_hop(event: ArvoEvent) -> None:
        domain = f" [magenta]@{event.domain}[/]" if event.domain else ""
        if event.type == TIMER_EVENT_TYPE:
            out.print(
                f"  [yellow]{event.type:<34}[/] [dim]timer {event.data.get('timerId')} "
                f"({short_subject(event.subject)})[/]",
                soft_wrap=True,
            )
            return
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
        init = scenario.init()
        final = await broker.resolve(init)
        if scenario.then is not None and final is None:
            final = await _then(broker, init, scenario.then, out)
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
