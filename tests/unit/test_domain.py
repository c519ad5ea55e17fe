"""ArvoDomain symbols and resolve_event_domain (spec 8.4), including the test-pinned worked examples."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from service.arvo.contract import VersionedArvoContract, create_arvo_contract
from service.arvo.domain import ArvoDomain, resolve_event_domain
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.factory import create_arvo_event_factory
from service.arvo.subject import ArvoOrchestrationSubject


class Payload(BaseModel):
    value: int


def versioned(domain: str | None) -> VersionedArvoContract:
    return create_arvo_contract(
        uri="#/test/domain",
        type="com.test.domain",
        versions={"1.0.0": {"accepts": Payload, "emits": {"evt.test.domain.success": Payload}}},
        domain=domain,
    ).version("1.0.0")


def event(*, subject: str = "test-subject", domain: str | None = None) -> ArvoEvent:
    return create_arvo_event(
        source="com.test.caller", type="com.test.domain", subject=subject, data={}, domain=domain
    )


def subject_in(domain: str | None, name: str = "arvo.orc.root") -> str:
    return ArvoOrchestrationSubject.new(orchestrator=name, initiator="com.test.caller", domain=domain)


def resolve(
    value: str | None,
    *,
    triggering: ArvoEvent | None = None,
    parent_subject: str | None = None,
    current_subject: str | None = None,
    self_contract: VersionedArvoContract | None = None,
    event_contract: VersionedArvoContract | None = None,
) -> str | None:
    triggering = triggering or event()
    return resolve_event_domain(
        domain_to_resolve=value,
        parent_subject=parent_subject,
        current_subject=current_subject if current_subject is not None else triggering.subject,
        handler_self_contract=self_contract or versioned(None),
        event_contract=event_contract,
        triggering_event=triggering,
    )


def test_symbol_strings_are_the_wire_values() -> None:
    assert ArvoDomain.FROM_SELF_CONTRACT == "domain.contract.self.inherit"
    assert ArvoDomain.FROM_EVENT_CONTRACT == "domain.contract.inherit"
    assert ArvoDomain.FROM_TRIGGERING_EVENT == "domain.event.inherit"
    assert ArvoDomain.FROM_CURRENT_SUBJECT == "domain.event.current.subject"
    assert ArvoDomain.FROM_PARENT_SUBJECT == "domain.parent.subject"
    assert ArvoDomain.ORCHESTRATION_CONTEXT == "domain.orchestration.context"
    assert ArvoDomain.LOCAL is None


@pytest.mark.parametrize("value", [None, ""])
def test_null_and_empty_resolve_to_none(value: str | None) -> None:
    assert resolve(value, triggering=event(domain="x")) is None


def test_a_literal_domain_is_returned_unchanged() -> None:
    assert resolve("some.domain") == "some.domain"
    assert resolve("NOT VALID") == "NOT VALID"


def test_from_event_contract_uses_the_event_contract_or_none() -> None:
    assert resolve(ArvoDomain.FROM_EVENT_CONTRACT, event_contract=versioned("evt.dom")) == "evt.dom"
    assert resolve(ArvoDomain.FROM_EVENT_CONTRACT, event_contract=None) is None


def test_from_self_contract_uses_the_handler_contract() -> None:
    assert resolve(ArvoDomain.FROM_SELF_CONTRACT, self_contract=versioned("self.dom")) == "self.dom"


def test_from_triggering_event_uses_the_event_domain() -> None:
    assert resolve(ArvoDomain.FROM_TRIGGERING_EVENT, triggering=event(domain="trig")) == "trig"


def test_from_current_subject_reads_the_subject_domain() -> None:
    assert resolve(ArvoDomain.FROM_CURRENT_SUBJECT, triggering=event(subject=subject_in("cur"))) == "cur"


def test_from_current_subject_is_none_when_the_subject_does_not_parse() -> None:
    assert resolve(ArvoDomain.FROM_CURRENT_SUBJECT, triggering=event(subject="test-subject")) is None


def test_from_parent_subject_reads_the_parent_domain_or_none() -> None:
    assert resolve(ArvoDomain.FROM_PARENT_SUBJECT, parent_subject=subject_in("par")) == "par"
    assert resolve(ArvoDomain.FROM_PARENT_SUBJECT, parent_subject=None) is None
    assert resolve(ArvoDomain.FROM_PARENT_SUBJECT, parent_subject="garbage") is None


def test_unparseable_subject_is_recorded_on_the_span_without_failing_it() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("handler"):
        assert resolve(ArvoDomain.FROM_CURRENT_SUBJECT, triggering=event(subject="test-subject")) is None
    (span,) = exporter.get_finished_spans()
    assert [e.name for e in span.events] == ["exception"]
    assert span.status.status_code is StatusCode.UNSET


def test_lenient_mode_reads_url_safe_subjects() -> None:
    subject = subject_in("cur")
    url_safe = subject.replace("+", "-").replace("/", "_").rstrip("=")
    triggering = event(subject="plain")
    common = {
        "domain_to_resolve": ArvoDomain.FROM_PARENT_SUBJECT,
        "parent_subject": url_safe,
        "current_subject": "plain",
        "handler_self_contract": versioned(None),
        "event_contract": None,
        "triggering_event": triggering,
    }
    assert resolve_event_domain(**common, lenient=True) == "cur"  # type: ignore[arg-type]
    if url_safe != subject:
        assert resolve_event_domain(**common) is None  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- ORCHESTRATION_CONTEXT


def test_orchestration_context_root_with_null_triggering_domain_is_local() -> None:
    triggering = event(subject=subject_in("cur"), domain=None)
    assert resolve(ArvoDomain.ORCHESTRATION_CONTEXT, triggering=triggering) is None


def test_orchestration_context_root_in_the_same_domain_is_local() -> None:
    triggering = event(subject=subject_in("same"), domain="same")
    assert resolve(ArvoDomain.ORCHESTRATION_CONTEXT, triggering=triggering) is None


def test_orchestration_context_root_across_a_domain_boundary_returns_to_the_subject_domain() -> None:
    triggering = event(subject=subject_in("home"), domain="away")
    assert resolve(ArvoDomain.ORCHESTRATION_CONTEXT, triggering=triggering) == "home"


def test_orchestration_context_child_in_the_parent_domain_is_local() -> None:
    triggering = event(subject=subject_in("same", "arvo.orc.child"), domain="anything")
    assert (
        resolve(ArvoDomain.ORCHESTRATION_CONTEXT, triggering=triggering, parent_subject=subject_in("same"))
        is None
    )


def test_orchestration_context_child_in_another_domain_returns_to_the_parent_domain() -> None:
    triggering = event(subject=subject_in("child.dom", "arvo.orc.child"))
    parent = subject_in("parent.dom")
    assert (
        resolve(ArvoDomain.ORCHESTRATION_CONTEXT, triggering=triggering, parent_subject=parent)
        == "parent.dom"
    )


# ----------------------------------------------------------------------------- worked examples (8.4)


def test_worked_example_handler_with_plain_subject_and_event_domain_resolves_local() -> None:
    triggering = event(subject="test-subject", domain="test.test")
    assert resolve(ArvoDomain.ORCHESTRATION_CONTEXT, triggering=triggering) is None


def test_worked_example_handler_output_domains_resolve_in_order() -> None:
    contract = versioned("test.3333")
    triggering = event(domain="test.1")
    values = [
        None,
        ArvoDomain.FROM_SELF_CONTRACT,
        ArvoDomain.FROM_EVENT_CONTRACT,
        ArvoDomain.FROM_TRIGGERING_EVENT,
        "test.3",
    ]
    resolved = [
        resolve(v, triggering=triggering, self_contract=contract, event_contract=contract) for v in values
    ]
    assert resolved == [None, "test.3333", "test.3333", "test.1", "test.3"]
    assert list(dict.fromkeys(resolved)) == [None, "test.3333", "test.1", "test.3"]


def test_worked_example_current_subject_of_a_factory_event_with_domain() -> None:
    contract = versioned(None)
    triggering = create_arvo_event_factory(contract).accepts(
        source="com.test.caller", data={"value": 1}, domain="test.1"
    )
    assert resolve(ArvoDomain.FROM_CURRENT_SUBJECT, triggering=triggering, self_contract=contract) == "test.1"


def test_worked_example_nested_orchestration_in_a_domain() -> None:
    root_subject = subject_in("test.domain", "arvo.orc.root")
    # The child subject is created from the parent with no explicit domain: it inherits test.domain.
    child_subject = ArvoOrchestrationSubject.from_parent(orchestrator="arvo.orc.child", subject=root_subject)
    assert ArvoOrchestrationSubject.parse(child_subject).domain == "test.domain"
    # Service calls default to LOCAL.
    assert resolve(None, triggering=event(subject=root_subject, domain="test.domain")) is None
    # The child's completion: parent and child share the domain -> local.
    child_event = event(subject=child_subject, domain="test.domain")
    assert (
        resolve(ArvoDomain.ORCHESTRATION_CONTEXT, triggering=child_event, parent_subject=root_subject) is None
    )
    # The root's completion is triggered by the child's completion, which had domain null -> local.
    child_completion = event(subject=root_subject, domain=None)
    assert resolve(ArvoDomain.ORCHESTRATION_CONTEXT, triggering=child_completion) is None
