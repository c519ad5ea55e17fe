"""Workflow apps for ``arvo run`` processes started by the end-to-end tests.

The embedded examples split the way a user deploys them: one process runs the orchestrators and
resumables (``--app tests.e2e.apps:orchestrators_app``), another the stateless services
(``--app tests.e2e.apps:services_app``). Both follow the app-factory signature of
:mod:`service.apps`.
"""

from __future__ import annotations

from service.arvo.execution import ArvoHandler
from service.arvo.memory import Memory
from service.examples.bench import (
    bench_add_handler,
    bench_double_handler,
    bench_orchestrator,
    bench_resumable,
)
from service.examples.demo import demo_handlers, order_orchestrator, shipment_resumable

__all__ = ["orchestrators_app", "services_app"]


def orchestrators_app(memory: Memory, *, include_error_stack: bool = False) -> list[ArvoHandler]:
    """The bench orchestrator and resumable, the order orchestrator and the shipment resumable."""
    return [
        bench_orchestrator(memory, include_error_stack=include_error_stack),
        bench_resumable(memory, include_error_stack=include_error_stack),
        order_orchestrator(memory, include_error_stack=include_error_stack),
        shipment_resumable(memory, include_error_stack=include_error_stack),
    ]


def services_app(memory: Memory, *, include_error_stack: bool = False) -> list[ArvoHandler]:
    """The stateless services of both examples (the memory is not used)."""
    del memory, include_error_stack
    return [bench_add_handler(), bench_double_handler(), *demo_handlers()]
