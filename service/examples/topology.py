"""The embedded examples split the way they are deployed: stateful orchestrators, stateless services.

``docker-compose.yml`` (and ``tests/deploy/test_compose_topology.py``) run two kinds of ``arvo run``
process, each with its own consumer group:

* ``ARVO_APP=service.examples.topology:orchestrators_app`` — the orchestrators and resumables
  (``arvo.orc.order``, ``arvo.orc.shipment``, ``arvo.orc.bench``, ``arvo.orc.bench.resumable``), the
  handlers that keep state in Redis;
* ``ARVO_APP=service.examples.topology:services_app`` — the stateless services of both examples
  (inventory, payment, shipping, ``com.bench.add``/``double``), run with several replicas that share
  the partitions of their topics.

Together they serve exactly the handlers of :func:`service.examples.default_app`. Both follow the
app-factory signature of :mod:`service.apps`.
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
    """The examples' orchestrators and resumables: the handlers that keep instance state in ``memory``."""
    return [
        bench_orchestrator(memory, include_error_stack=include_error_stack),
        bench_resumable(memory, include_error_stack=include_error_stack),
        order_orchestrator(memory, include_error_stack=include_error_stack),
        shipment_resumable(memory, include_error_stack=include_error_stack),
    ]


def services_app(memory: Memory, *, include_error_stack: bool = False) -> list[ArvoHandler]:
    """The examples' stateless services (``memory`` and ``include_error_stack`` are not used).

    Each process keeps its own fake inventory (:data:`service.examples.demo.DEFAULT_STOCK`), so
    replicas do not share stock counts: fine for a demo, not a pattern for real state.
    """
    del memory, include_error_stack
    return [bench_add_handler(), bench_double_handler(), *demo_handlers()]
