"""Contracts of the example workflows that ship as the embedded default.

* :mod:`contracts.bench` — the bench workflow: init ``{a, b}`` → ``com.bench.add`` →
  ``com.bench.double`` → complete with ``2·(a+b)``; as an orchestrator and as a resumable.
* :mod:`contracts.demo` — an order-fulfilment workflow with parallel service calls, a child
  orchestration (a resumable), compensation and an error path ending in a system error.
"""
