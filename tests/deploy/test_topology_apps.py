"""The two app modules the containers run split the embedded default between them, without overlap."""

from __future__ import annotations

from service.apps import build_handlers
from service.arvo.handler import ArvoEventHandler
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestrator import ArvoOrchestrator
from service.arvo.resumable import ArvoResumable


def _sources(spec: str) -> list[str]:
    return [handler.source for handler in build_handlers(spec, InMemoryMemory())]


def test_orchestrators_and_services_together_serve_exactly_the_default_app() -> None:
    orchestrators = _sources("service.examples.topology:orchestrators_app")
    services = _sources("service.examples.topology:services_app")
    assert not set(orchestrators) & set(services)
    assert sorted(orchestrators + services) == sorted(_sources("service.examples:default_app"))


def test_orchestrators_app_holds_the_stateful_handlers_and_services_app_the_stateless_ones() -> None:
    memory = InMemoryMemory()
    orchestrators = build_handlers(
        "service.examples.topology:orchestrators_app", memory, include_error_stack=True
    )
    assert all(isinstance(handler, ArvoOrchestrator | ArvoResumable) for handler in orchestrators)
    services = build_handlers("service.examples.topology:services_app", memory)
    assert all(isinstance(handler, ArvoEventHandler) for handler in services)
