"""Test tooling for users: an in-memory broker and scenario tables (a documented feature).

* :class:`InMemoryBroker` runs whole workflows (handlers, orchestrators, resumables) in process,
  with virtual time for timers and deadlines (:meth:`InMemoryBroker.advance`).
* :func:`run_test_case` runs step tables against one handler.
* :class:`~service.arvo.memory.InMemoryMemory` is the matching memory.
"""

from service.arvo.memory import InMemoryMemory
from service.arvo.testing.broker import BrokerError, InMemoryBroker, Listener, NoReplyError
from service.arvo.testing.scenarios import ArvoTestCase, ArvoTestStep, TestCaseReport, run_test_case

__all__ = [
    "ArvoTestCase",
    "ArvoTestStep",
    "BrokerError",
    "InMemoryBroker",
    "InMemoryMemory",
    "Listener",
    "NoReplyError",
    "TestCaseReport",
    "run_test_case",
]
