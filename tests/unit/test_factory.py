"""Event factories (spec section 4): validation, defaults, auto subjects, system errors, spans."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags, TraceState
from pydantic import BaseModel

from service.arvo import telemetry
from service.arvo.contract import (
    ArvoContract,
    VersionedArvoContract,
    create_arvo_contract,
    create_arvo_orchestrator_contract,
    create_simple_arvo_contract,
)
from service.arvo.errors import ArvoValidationError, ContractViolation, SubjectError
from service.arvo.event import ARVO_DATA_CONTENT_TYPE, EventIdSpec
from service.arvo.factory import (
    ArvoEventFactory,
    ArvoOrchestratorEventFactory,
    EventOptions,
    create_arvo_event_factory,
    create_arvo_orchestrator_event_factory,
    error_data,
)
from service.arvo.subject import ArvoOrchestrationSubject


class Increment(BaseModel):
    init: int
    increment: int


class Incremented(BaseModel):
    result: int


class Failed(BaseModel):
    reason: str


class Init(BaseModel):
    delta: int


class Done(BaseModel):
    final: int


def service_contract() -> ArvoContract:
    return create_arvo_contract(
        uri="#/test/handler/increment",
        type="com.increment.number",
        versions={
            "0.0.1": {
                "accepts": Increment,
                "emits": {
                    "evt.increment.number.success": Incremented,
                    "evt.increment.number.failure": Failed,
                },
            }
        },
    )


def service_version() -> VersionedArvoContract:
    return service_contract().version("0.0.1")


def orchestrator_version() -> VersionedArvoContract:
    return create_arvo_orchestrator_contract(
        uri="#/test/orc/inc",
        name="inc",
        versions={"1.0.0": {"init": Init, "complete": Done}},
    ).version("1.0.0")


# telemetry.use_tracer gives each test its own provider without touching the process-wide (set-once)
# global tracer provider.
@pytest.fixture
def no_sdk() -> Iterator[None]:
    previous = telemetry.use_tracer(trace.NoOpTracer())
    yield
    telemetry.use_tracer(previous)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = telemetry.use_tracer(provider.get_tracer("arvo-instrumentation", "1.0.0"))
    yield exporter
    telemetry.use_tracer(previous)
    provider.shutdown()


# ----------------------------------------------------------------------------------------------- accepts


def test_accepts_builds_an_event_of_the_accepted_type() -> None:
    event = create_arvo_event_factory(service_version()).accepts(
        source="com.test.caller", data={"init": 1, "increment": 2, "extra": "dropped"}
    )
    assert event.type == "com.increment.number"
    assert event.dataschema == "#/test/handler/increment/0.0.1"
    assert event.datacontenttype == ARVO_DATA_CONTENT_TYPE
    assert event.data == {"init": 1, "increment": 2}
    assert event.to == "com.increment.number"
    assert event.source == "com.test.caller"
    assert event.domain is None
    assert event.redirectto is None


def test_accepts_creates_a_subject_for_the_accepted_type() -> None:
    event = create_arvo_event_factory(service_version()).accepts(
        source="com.test.caller",
        data={"init": 1, "increment": 2},
        domain="test.1",
        redirectto="com.reply.here",
    )
    parsed = ArvoOrchestrationSubject.parse(event.subject)
    assert parsed.name == "com.increment.number"
    assert parsed.initiator == "com.test.caller"
    assert parsed.version == "0.0.1"
    assert parsed.domain == "test.1"
    assert dict(parsed.meta) == {"redirectto": "com.reply.here"}
    assert event.domain == "test.1"
    assert event.redirectto == "com.reply.here"


def test_accepts_without_redirectto_creates_a_subject_with_empty_meta() -> None:
    event = create_arvo_event_factory(service_version()).accepts(
        source="com.test.caller", data={"init": 1, "increment": 2}
    )
    assert dict(ArvoOrchestrationSubject.parse(event.subject).meta) == {}


def test_accepts_uses_an_explicit_subject_and_passes_attributes_through() -> None:
    event = create_arvo_event_factory(service_version()).accepts(
        source="test source",
        subject="my-subject",
        data={"init": 1, "increment": 2},
        id="custom-id",
        to="com.somewhere.else",
        accesscontrol="role=admin",
        executionunits=1.5,
        parentid="parent id",
        time="2025-01-01T00:00:00.000+00:00",
        extensions={"tenant": "t1"},
    )
    assert event.subject == "my-subject"
    assert event.source == "test%20source"
    assert event.id == "custom-id"
    assert event.to == "com.somewhere.else"
    assert event.accesscontrol == "role=admin"
    assert event.executionunits == 1.5
    assert event.parentid == "parent%20id"
    assert event.time == "2025-01-01T00:00:00.000+00:00"
    assert event.extensions == {"tenant": "t1"}


def test_accepts_supports_event_id_specs() -> None:
    event = create_arvo_event_factory(service_version()).accepts(
        source="com.test.caller",
        data={"init": 1, "increment": 2},
        id=EventIdSpec(deduplication="DEVELOPER_MANAGED", value="dev-id"),
    )
    assert event.id == "dev-id"


def test_accepts_validation_failure_lists_every_problem() -> None:
    with pytest.raises(ArvoValidationError) as caught:
        create_arvo_event_factory(service_version()).accepts(source="com.test.caller", data={"init": "x"})
    message = str(caught.value)
    assert message.startswith("Accept Event data validation failed: ")
    assert "#/test/handler/increment/0.0.1" in message
    assert {p.path for p in caught.value.problems} == {"data.init", "data.increment"}
    assert isinstance(caught.value, ValueError)


def test_accepts_rejects_non_object_data() -> None:
    with pytest.raises(ValueError, match=r"Accept Event data validation failed: "):
        create_arvo_event_factory(service_version()).accepts(source="com.test.caller", data=None)  # type: ignore[arg-type]


def test_accepts_without_subject_requires_a_type_format_source() -> None:
    with pytest.raises(SubjectError, match=r"execution.initiator"):
        create_arvo_event_factory(service_version()).accepts(
            source="com.test", data={"init": 1, "increment": 2}
        )


# ------------------------------------------------------------------------------------------------- emits


def test_emits_builds_an_event_of_an_emittable_type() -> None:
    event = create_arvo_event_factory(service_version()).emits(
        type="evt.increment.number.success", source="com.increment.number", data={"result": 3, "x": 1}
    )
    assert event.type == "evt.increment.number.success"
    assert event.data == {"result": 3}
    assert event.dataschema == "#/test/handler/increment/0.0.1"
    assert event.to == "evt.increment.number.success"
    assert ArvoOrchestrationSubject.parse(event.subject).name == "evt.increment.number.success"


def test_emits_rejects_a_type_the_contract_does_not_emit() -> None:
    with pytest.raises(
        ValueError, match=r"^Emit Event data validation failed: No contract available for evt.unknown.x$"
    ):
        create_arvo_event_factory(service_version()).emits(type="evt.unknown.x", source="com.a.b", data={})


def test_emits_validation_failure_message() -> None:
    with pytest.raises(ArvoValidationError, match=r"^Emit Event data validation failed: ") as caught:
        create_arvo_event_factory(service_version()).emits(
            type="evt.increment.number.failure", source="com.a.b", data={"reason": 1}
        )
    assert caught.value.problems[0].path == "data.reason"


# ------------------------------------------------------------------------------------------ system_error


def test_system_error_event_carries_the_error_payload() -> None:
    event = create_arvo_event_factory(service_version()).system_error(
        error=RuntimeError("boom"), source="com.increment.number", to="com.test.caller", parentid="p1"
    )
    assert event.type == "sys.com.increment.number.error"
    assert event.dataschema == "#/test/handler/increment/0.0.0"
    assert event.data == {"errorName": "RuntimeError", "errorMessage": "boom", "errorStack": None}
    assert event.to == "com.test.caller"
    assert event.parentid == "p1"
    assert ArvoOrchestrationSubject.parse(event.subject).name == "sys.com.increment.number.error"


def test_system_error_includes_the_stack_only_when_asked() -> None:
    try:
        raise ValueError("bad value")
    except ValueError as error:
        event = create_arvo_event_factory(service_version()).system_error(
            error=error, source="com.increment.number", include_stack=True
        )
    stack = event.data["errorStack"]
    assert isinstance(stack, str)
    assert "Traceback" in stack
    assert "ValueError: bad value" in stack


def test_error_data_names_violations_like_the_original() -> None:
    data = error_data(ContractViolation("bad data"))
    assert data["errorName"] == "ViolationError<Contract>"
    assert data["errorMessage"] == "ViolationError<Contract> bad data"


def test_simple_contract_factory_round_trip() -> None:
    contract = create_simple_arvo_contract(
        uri="#/simple", type="value.read", versions={"1.0.0": {"accepts": Init, "emits": Done}}
    ).version("1.0.0")
    factory = create_arvo_event_factory(contract)
    assert factory.contract is contract
    assert factory.accepts(source="com.a.b", data={"delta": 1}).type == "com.value.read"
    assert factory.emits(type="evt.value.read.success", source="com.a.b", data={"final": 1}).type == (
        "evt.value.read.success"
    )


# ------------------------------------------------------------------------------------ orchestrator factory


def test_orchestrator_factory_rejects_a_service_contract() -> None:
    with pytest.raises(ValueError, match=r"^This factory can only be used for ArvoOrchestratorContract$"):
        create_arvo_orchestrator_event_factory(service_version())


def test_orchestrator_factory_is_an_event_factory() -> None:
    factory = create_arvo_orchestrator_event_factory(orchestrator_version())
    assert isinstance(factory, ArvoOrchestratorEventFactory)
    assert isinstance(factory, ArvoEventFactory)


def test_init_with_redirectto_sets_the_event_and_subject_meta_redirectto() -> None:
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).init(
        source="com.test.test", data={"delta": 1, "parentSubject$$": None}, redirectto="com.redirect.to"
    )
    assert event.redirectto == "com.redirect.to"
    parsed = ArvoOrchestrationSubject.parse(event.subject)
    assert parsed.meta["redirectto"] == "com.redirect.to"
    assert parsed.name == "arvo.orc.inc"
    assert parsed.initiator == "com.test.test"
    assert parsed.version == "1.0.0"
    assert event.type == "arvo.orc.inc"
    assert event.to == "arvo.orc.inc"
    assert event.dataschema == "#/test/orc/inc/1.0.0"
    assert event.data == {"parentSubject$$": None, "delta": 1}


def test_init_without_redirectto_and_null_parent_has_no_meta_redirectto() -> None:
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).init(
        source="com.test.test", data={"delta": 1, "parentSubject$$": None}
    )
    assert "redirectto" not in ArvoOrchestrationSubject.parse(event.subject).meta


def test_init_root_subject_takes_the_event_domain() -> None:
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).init(
        source="com.test.test", data={"delta": 1, "parentSubject$$": None}, domain="test.domain"
    )
    assert ArvoOrchestrationSubject.parse(event.subject).domain == "test.domain"
    assert event.domain == "test.domain"


def parent_subject(domain: str | None = "parent.domain") -> str:
    return ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.parent",
        initiator="com.user.app",
        version="2.0.0",
        domain=domain,
        meta={"trace": "abc"},
    )


def test_init_with_a_parent_creates_a_child_subject_replying_to_the_parents_initiator() -> None:
    parent = parent_subject()
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).init(
        source="arvo.orc.parent", data={"delta": 1, "parentSubject$$": parent}
    )
    child = ArvoOrchestrationSubject.parse(event.subject)
    assert child.name == "arvo.orc.inc"
    assert child.version == "1.0.0"
    assert child.initiator == "arvo.orc.parent"
    assert child.domain == "parent.domain"
    # Quirk 32: the default reply target is the parent's initiator, not the parent orchestrator.
    assert dict(child.meta) == {"trace": "abc", "redirectto": "com.user.app"}
    assert event.data["parentSubject$$"] == parent


def test_init_with_a_parent_and_redirectto_and_domain_overrides_both() -> None:
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).init(
        source="arvo.orc.parent",
        data={"delta": 1, "parentSubject$$": parent_subject()},
        redirectto="com.reply.here",
        domain="child.domain",
    )
    child = ArvoOrchestrationSubject.parse(event.subject)
    assert child.meta["redirectto"] == "com.reply.here"
    assert child.domain == "child.domain"


def test_init_with_an_explicit_subject_uses_it() -> None:
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).init(
        source="com.test.test", data={"delta": 1, "parentSubject$$": parent_subject()}, subject="explicit"
    )
    assert event.subject == "explicit"


def test_init_with_an_invalid_parent_subject_raises_a_subject_error() -> None:
    with pytest.raises(SubjectError, match=r"Error parsing orchestration subject"):
        create_arvo_orchestrator_event_factory(orchestrator_version()).init(
            source="com.test.test", data={"delta": 1, "parentSubject$$": "not-a-subject"}
        )


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"delta": 1}, "data.parentSubject$$"),
        ({"delta": 1, "parentSubject$$": ""}, "data.parentSubject$$"),
        ({"delta": "x", "parentSubject$$": None}, "data.delta"),
    ],
)
def test_init_validation_failure_message(data: dict[str, Any], path: str) -> None:
    with pytest.raises(ArvoValidationError, match=r"^Init Event data validation failed: ") as caught:
        create_arvo_orchestrator_event_factory(orchestrator_version()).init(source="com.test.test", data=data)
    assert caught.value.problems[0].path == path


def test_complete_builds_the_completion_event() -> None:
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).complete(
        source="arvo.orc.inc", data={"final": 3, "__id": "dropped"}, to="com.test.test", parentid="init-id"
    )
    assert event.type == "arvo.orc.inc.done"
    assert event.data == {"final": 3}
    assert event.dataschema == "#/test/orc/inc/1.0.0"
    assert event.to == "com.test.test"
    assert event.parentid == "init-id"
    assert ArvoOrchestrationSubject.parse(event.subject).name == "arvo.orc.inc.done"


def test_complete_with_explicit_domain_sets_the_event_domain_but_not_the_subject_domain() -> None:
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).complete(
        source="arvo.orc.inc", data={"final": 3}, domain="test.domain"
    )
    assert event.domain == "test.domain"
    assert ArvoOrchestrationSubject.parse(event.subject).domain is None


def test_complete_validation_failure_message() -> None:
    with pytest.raises(ArvoValidationError, match=r"^Emit Event data validation failed: "):
        create_arvo_orchestrator_event_factory(orchestrator_version()).complete(
            source="arvo.orc.inc", data={}
        )


def test_complete_uses_an_explicit_subject() -> None:
    event = create_arvo_orchestrator_event_factory(orchestrator_version()).complete(
        source="arvo.orc.inc", data={"final": 1}, subject="parent-subject"
    )
    assert event.subject == "parent-subject"


# ------------------------------------------------------------------------------------------------- spans


def test_factory_span_name_kind_attributes_and_status(spans: InMemorySpanExporter) -> None:
    event = create_arvo_event_factory(service_version()).accepts(
        source="com.test.caller", data={"init": 1, "increment": 2}
    )
    (span,) = spans.get_finished_spans()
    assert span.name == "EventFactory.accepts<com.increment.number>"
    assert span.kind is trace.SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.OK
    attributes = dict(span.attributes or {})
    assert attributes["arvo.span.kind"] == "internal"
    assert attributes["openinference.span.kind"] == "INTERNAL"
    assert attributes["arvo.contract.uri"] == "#/test/handler/increment"
    assert attributes["arvo.contract.version"] == "0.0.1"
    assert attributes["cloudevents.event_id"] == event.id
    assert attributes["cloudevents.event_type"] == "com.increment.number"
    context = span.get_span_context()
    assert context is not None
    assert event.traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert event.tracestate is None


def test_factory_span_names_per_method(spans: InMemorySpanExporter) -> None:
    factory = create_arvo_event_factory(service_version())
    factory.emits(type="evt.increment.number.success", source="com.a.b", data={"result": 1})
    factory.system_error(error=RuntimeError("x"), source="com.a.b")
    orchestrator = create_arvo_orchestrator_event_factory(orchestrator_version())
    orchestrator.init(source="com.a.b", data={"delta": 1, "parentSubject$$": None})
    orchestrator.complete(source="com.a.b", data={"final": 1})
    orchestrator.accepts(source="com.a.b", data={"delta": 1, "parentSubject$$": None})
    assert [span.name for span in spans.get_finished_spans()] == [
        "EventFactory.emits<evt.increment.number.success>",
        "EventFactory.systemError<sys.com.increment.number.error>",
        "OrchestratorEventFactory.init<arvo.orc.inc>",
        "OrchestratorEventFactory.complete<arvo.orc.inc.done>",
        "OrchestratorEventFactory.accepts<arvo.orc.inc>",
    ]


def test_explicit_trace_headers_win_over_the_factory_span(spans: InMemorySpanExporter) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = create_arvo_event_factory(service_version()).accepts(
        source="com.a.b", data={"init": 1, "increment": 2}, traceparent=traceparent, tracestate="k=v"
    )
    assert event.traceparent == traceparent
    assert event.tracestate == "k=v"


def test_factory_span_propagates_the_parent_trace_state(spans: InMemorySpanExporter) -> None:
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "value")]),
    )
    with trace.use_span(NonRecordingSpan(parent)):
        event = create_arvo_event_factory(service_version()).accepts(
            source="com.a.b", data={"init": 1, "increment": 2}
        )
    assert event.traceparent is not None
    assert event.traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert event.tracestate == "vendor=value"


def test_factory_failure_marks_the_span_as_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ArvoValidationError):
        create_arvo_event_factory(service_version()).accepts(source="com.a.b", data={})
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


@pytest.mark.usefixtures("no_sdk")
def test_without_an_sdk_and_no_parent_traceparent_is_none() -> None:
    event = create_arvo_event_factory(service_version()).accepts(
        source="com.a.b", data={"init": 1, "increment": 2}
    )
    assert event.traceparent is None
    assert event.tracestate is None


@pytest.mark.usefixtures("no_sdk")
def test_without_an_sdk_the_incoming_traceparent_passes_through() -> None:
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
    )
    with trace.use_span(NonRecordingSpan(parent)):
        event = create_arvo_event_factory(service_version()).accepts(
            source="com.a.b", data={"init": 1, "increment": 2}
        )
    assert event.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_complete_without_a_completion_schema_fails_like_the_original() -> None:
    contract = ArvoContract(
        uri="#/hand/made",
        type="arvo.orc.hand",
        versions={"1.0.0": {"accepts": Init, "emits": {}}},
        metadata={"contractType": "ArvoOrchestratorContract"},
    ).version("1.0.0")
    factory = create_arvo_orchestrator_event_factory(contract)
    with pytest.raises(
        ValueError, match=r"^Emit Event data validation failed: No schema available for None$"
    ):
        factory.complete(source="arvo.orc.hand", data={})


# ------------------------------------------------------------------------------------- EventOptions


FULL_OPTIONS: EventOptions = {
    "subject": "my-subject",
    "id": "custom-id",
    "to": "com.somewhere.else",
    "redirectto": "com.reply.here",
    "accesscontrol": "role=admin",
    "executionunits": 2.5,
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=value",
    "parentid": "parent-id",
    "domain": "test.1",
    "time": "2025-01-01T00:00:00.000+00:00",
    "extensions": {"tenant": "t1"},
}


def every_factory_method() -> list[Any]:
    service = create_arvo_event_factory(service_version())
    orchestrator = create_arvo_orchestrator_event_factory(orchestrator_version())
    methods: list[tuple[str, Any]] = [
        ("accepts", lambda **options: service.accepts(source="com.test.caller", data=INCREMENT, **options)),
        (
            "emits",
            lambda **options: service.emits(
                type="evt.increment.number.success", source="com.test.caller", data={"result": 3}, **options
            ),
        ),
        (
            "system_error",
            lambda **options: service.system_error(
                error=ValueError("boom"), source="com.test.caller", **options
            ),
        ),
        (
            "init",
            lambda **options: orchestrator.init(
                source="com.test.caller", data={"delta": 1, "parentSubject$$": None}, **options
            ),
        ),
        (
            "complete",
            lambda **options: orchestrator.complete(source="com.test.caller", data={"final": 1}, **options),
        ),
    ]
    return [pytest.param(name, make, id=name) for name, make in methods]


INCREMENT = {"init": 1, "increment": 2}


def test_event_options_are_exactly_the_optional_attributes_of_every_factory_method() -> None:
    assert set(EventOptions.__annotations__) == {
        "subject",
        "id",
        "to",
        "redirectto",
        "accesscontrol",
        "executionunits",
        "traceparent",
        "tracestate",
        "parentid",
        "domain",
        "time",
        "extensions",
    }
    assert EventOptions.__total__ is False


@pytest.mark.parametrize(("name", "make"), every_factory_method())
def test_every_factory_method_takes_every_option_as_a_keyword(name: str, make: Any) -> None:
    event = make(**FULL_OPTIONS)
    assert event.subject == "my-subject"
    assert event.id == "custom-id"
    assert event.to == "com.somewhere.else"
    assert event.redirectto == "com.reply.here"
    assert event.accesscontrol == "role=admin"
    assert event.executionunits == 2.5
    assert event.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert event.tracestate == "vendor=value"
    assert event.parentid == "parent-id"
    assert event.domain == "test.1"
    assert event.time == "2025-01-01T00:00:00.000+00:00"
    assert event.extensions == {"tenant": "t1"}


@pytest.mark.parametrize(("name", "make"), every_factory_method())
def test_explicit_none_options_mean_the_defaults(name: str, make: Any, no_sdk: None) -> None:
    event = make(**dict.fromkeys(EventOptions.__annotations__))
    assert ArvoOrchestrationSubject.parse(event.subject).initiator == "com.test.caller"
    assert event.to == event.type
    assert event.domain is None
    assert event.redirectto is None
    assert event.traceparent is None
    assert event.extensions == {}


@pytest.mark.parametrize(("name", "make"), every_factory_method())
def test_an_unknown_keyword_is_a_type_error_naming_the_method(name: str, make: Any) -> None:
    with pytest.raises(TypeError, match=rf"\.{name}\(\) got an unexpected keyword argument 'subjct'"):
        make(subjct="typo")
