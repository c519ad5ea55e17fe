"""arvo-service: Arvo event-driven orchestration for Python, on Kafka with Redis state.

The curated public API (implementation lives in :mod:`service.arvo`; the microservice in
:mod:`service.runtime`).

Names are imported lazily on first use, so ``arvo --help`` and other light entry points stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.arvo.contract import (
        ArvoContract,
        VersionedArvoContract,
        create_arvo_contract,
        create_arvo_orchestrator_contract,
        create_simple_arvo_contract,
    )
    from service.arvo.domain import ArvoDomain
    from service.arvo.errors import (
        ConfigViolation,
        ContractViolation,
        ExecutionViolation,
        TransactionViolation,
        ViolationError,
    )
    from service.arvo.event import ArvoEvent, EventIdSpec, create_arvo_event
    from service.arvo.execution import ArvoHandler, ExecutionOutcome, ExecutionResult
    from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
    from service.arvo.handler import ArvoEventHandler, HandlerContext, create_arvo_event_handler
    from service.arvo.machine.arvo_machine import ArvoMachine, enqueue_arvo_event, setup_arvo_machine
    from service.arvo.machine.statechart import assign, emit
    from service.arvo.memory import InMemoryMemory, Memory
    from service.arvo.orchestrator import ArvoOrchestrator, create_arvo_orchestrator
    from service.arvo.resumable import ArvoResumable, ResumableContext, create_arvo_resumable
    from service.arvo.subject import ArvoOrchestrationSubject

_EXPORTS = {
    "ArvoContract": "service.arvo.contract",
    "ArvoDomain": "service.arvo.domain",
    "ArvoEvent": "service.arvo.event",
    "ArvoEventHandler": "service.arvo.handler",
    "ArvoHandler": "service.arvo.execution",
    "ArvoMachine": "service.arvo.machine.arvo_machine",
    "ArvoOrchestrationSubject": "service.arvo.subject",
    "ArvoOrchestrator": "service.arvo.orchestrator",
    "ArvoResumable": "service.arvo.resumable",
    "ConfigViolation": "service.arvo.errors",
    "ContractViolation": "service.arvo.errors",
    "EventIdSpec": "service.arvo.event",
    "ExecutionOutcome": "service.arvo.execution",
    "ExecutionResult": "service.arvo.execution",
    "ExecutionViolation": "service.arvo.errors",
    "HandlerContext": "service.arvo.handler",
    "InMemoryMemory": "service.arvo.memory",
    "Memory": "service.arvo.memory",
    "ResumableContext": "service.arvo.resumable",
    "TransactionViolation": "service.arvo.errors",
    "VersionedArvoContract": "service.arvo.contract",
    "ViolationError": "service.arvo.errors",
    "assign": "service.arvo.machine.statechart",
    "create_arvo_contract": "service.arvo.contract",
    "create_arvo_event": "service.arvo.event",
    "create_arvo_event_factory": "service.arvo.factory",
    "create_arvo_event_handler": "service.arvo.handler",
    "create_arvo_orchestrator": "service.arvo.orchestrator",
    "create_arvo_orchestrator_contract": "service.arvo.contract",
    "create_arvo_orchestrator_event_factory": "service.arvo.factory",
    "create_arvo_resumable": "service.arvo.resumable",
    "create_simple_arvo_contract": "service.arvo.contract",
    "emit": "service.arvo.machine.statechart",
    "enqueue_arvo_event": "service.arvo.machine.arvo_machine",
    "setup_arvo_machine": "service.arvo.machine.arvo_machine",
}

__all__ = [
    "ArvoContract",
    "ArvoDomain",
    "ArvoEvent",
    "ArvoEventHandler",
    "ArvoHandler",
    "ArvoMachine",
    "ArvoOrchestrationSubject",
    "ArvoOrchestrator",
    "ArvoResumable",
    "ConfigViolation",
    "ContractViolation",
    "EventIdSpec",
    "ExecutionOutcome",
    "ExecutionResult",
    "ExecutionViolation",
    "HandlerContext",
    "InMemoryMemory",
    "Memory",
    "ResumableContext",
    "TransactionViolation",
    "VersionedArvoContract",
    "ViolationError",
    "assign",
    "create_arvo_contract",
    "create_arvo_event",
    "create_arvo_event_factory",
    "create_arvo_event_handler",
    "create_arvo_orchestrator",
    "create_arvo_orchestrator_contract",
    "create_arvo_orchestrator_event_factory",
    "create_arvo_resumable",
    "create_simple_arvo_contract",
    "emit",
    "enqueue_arvo_event",
    "setup_arvo_machine",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
