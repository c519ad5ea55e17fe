"""Example workflows: the embedded default the service runs out of the box.

:func:`default_app` is what ``arvo run`` loads unless ``ARVO_APP`` / ``--app`` names another
``module:attribute``: a callable taking the :class:`~service.arvo.memory.Memory` (and keyword
``include_error_stack``) and returning the handlers to serve.
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

__all__ = ["bench_app", "default_app", "demo_app"]


def bench_app(memory: Memory, *, include_error_stack: bool = False) -> list[ArvoHandler]:
    """The bench workflow's handlers (both orchestrator and resumable variants)."""
    return [
        bench_add_handler(),
        bench_double_handler(),
        bench_orchestrator(memory, include_error_stack=include_error_stack),
        bench_resumable(memory, include_error_stack=include_error_stack),
    ]


def demo_app(memory: Memory, *, include_error_stack: bool = False) -> list[ArvoHandler]:
    """The order-fulfilment demo's handlers."""
    return [
        *demo_handlers(),
        order_orchestrator(memory, include_error_stack=include_error_stack),
        shipment_resumable(memory, include_error_stack=include_error_stack),
    ]


def default_app(memory: Memory, *, include_error_stack: bool = False) -> list[ArvoHandler]:
    """Everything: the bench workflow and the demo."""
    return [
        *bench_app(memory, include_error_stack=include_error_stack),
        *demo_app(memory, include_error_stack=include_error_stack),
    ]
