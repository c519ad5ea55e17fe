"""The engine's trusted event path: same events as the validating path, untrusted input still rejected.

``engine_event`` builds the events the engine emits without re-validating what the engine derived
itself; it must return exactly what ``create_arvo_event`` returns for the same arguments (wire bytes
and ``to_dict``), and raise exactly what it raises. Events carry the contract schema their data was
validated by in this process (``data_schema_of``): a handler skips re-validating such data against
the very same schema, never data decoded from the wire.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import service.arvo.event as event_module
from contracts.bench import bench_machine_contract, bench_resumable_contract
from service.arvo.contract import create_arvo_contract
from service.arvo.errors import ArvoEventValidationError, ContractViolation
from service.arvo.event import (
    ArvoEvent,
    create_arvo_event,
    create_timestamp,
    data_schema_of,
    engine_event,
    mark_data_schema,
)
from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory
from service.arvo.handler import ArvoEventHandler, HandlerContext
from service.arvo.memory import InMemoryMemory
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import InMemoryBroker
from service.examples import bench_app

SUBJECT = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.bench", initiator="com.bench.client")
TIME = "2025-01-01T00:00:00.000+00:00"
BASE: dict[str, Any] = {
    "id": "8a0f3c52-3f64-4d0e-9a51-6c1f7b2e9d41",
    "source": "arvo.orc.bench",
    "type": "com.bench.add",
    "subject": SUBJECT,
    "data": {"a": 1, "b": 2},
    "dataschema": "#/contracts/bench/add/1.0.0",
    "to": None,
    "parentid": "0c7b4a1e-8c0e-4d53-9f4f-0b6a3f1e2d11",
    "domain": None,
    "time": TIME,
}


def _outcome(build: Any, arguments: dict[str, Any]) -> tuple[str, Any]:
    try:
        built = build(**arguments)
    except ArvoEventValidationError as error:
        return "error", [(problem.path, problem.rule) for problem in error.problems]
    return "event", (built.to_json(), built.to_dict(), built.extensions)


def _same_as_validating_path(**changes: Any) -> tuple[str, Any]:
    arguments = {**BASE, **changes}
    fast = _outcome(engine_event, arguments)
    assert fast == _outcome(create_arvo_event, arguments)
    return fast


def test_trusted_event_is_byte_identical_to_the_validating_path() -> None:
    kind, (wire, as_dict, extensions) = _same_as_validating_path(
        accesscontrol="role=admin",
        redirectto="arvo.orc.bench",
        executionunits=1.5,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=x",
        domain="audit.eu",
        extensions={"arvodeadline": "2025-01-01T00:00:01.000+00:00", "2": True, "10": 3},
    )
    assert kind == "event"
    assert ArvoEvent.from_json(wire).to_dict() == as_dict
    assert list(extensions) == ["2", "10", "arvodeadline"]  # JavaScript key order, as the public path


def test_a_generated_time_and_a_default_to() -> None:
    built = engine_event(**{**BASE, "time": None})
    assert built.to == BASE["type"]
    assert built == create_arvo_event(**{**BASE, "time": built.time})


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "a b%20c"},  # encodeURI normalisation (double-encodes '%', as the original)
        {"to": "com.x.y?q=ä"},
        {"redirectto": "x y"},
        {"parentid": "id with space"},
        {"dataschema": "#/a b/1.0.0"},
        {"id": "ünïcode-id"},
        {"data": {"big": 2**60}},
        {"data": {"nan": math.nan}},
        {"data": {"lone": "\ud800"}},
        {"data": {1: "non-string key"}},
        {"data": [1, 2]},
        {"type": "NotAType"},
        {"domain": "Upper"},
        {"domain": ""},
        {"accesscontrol": ""},
        {"executionunits": math.inf},
        {"executionunits": True},
        {"executionunits": 2**60},
        {"time": "yesterday"},
        {"id": ""},
        {"to": "\ud800"},
        {"extensions": {"to": "collides"}},
        {"extensions": {"Bad": 1}},
        {"extensions": ["not", "a", "mapping"]},
    ],
)
def test_unusual_or_invalid_values_get_the_validating_path(changes: dict[str, Any]) -> None:
    _same_as_validating_path(**changes)


def test_invalid_values_are_still_rejected() -> None:
    with pytest.raises(ArvoEventValidationError):
        engine_event(**{**BASE, "data": {"nan": math.nan}})
    with pytest.raises(ArvoEventValidationError):
        engine_event(**{**BASE, "type": "NotAType"})
    with pytest.raises(ArvoEventValidationError):
        ArvoEvent(**{**BASE, "subject": "not a uri"})  # the public constructor validates every field


printable = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
maybe = st.none() | printable
scalar = st.none() | st.booleans() | st.integers() | st.floats() | printable


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.just(SUBJECT) | printable,
    to=maybe,
    redirectto=maybe,
    parentid=maybe,
    dataschema=maybe,
    accesscontrol=maybe,
    domain=st.none() | st.from_regex(r"[a-z0-9.]{1,6}", fullmatch=True) | printable,
    executionunits=st.none() | st.integers() | st.floats(),
    data=st.dictionaries(printable, scalar, max_size=3),
    extensions=st.none() | st.dictionaries(printable, scalar, max_size=2),
    event_id=printable,
)
def test_property_engine_event_equals_create_arvo_event(
    subject: str,
    to: str | None,
    redirectto: str | None,
    parentid: str | None,
    dataschema: str | None,
    accesscontrol: str | None,
    domain: str | None,
    executionunits: float | None,
    data: dict[str, Any],
    extensions: dict[str, Any] | None,
    event_id: str,
) -> None:
    _same_as_validating_path(
        id=event_id,
        subject=subject,
        to=to,
        redirectto=redirectto,
        parentid=parentid,
        dataschema=dataschema,
        accesscontrol=accesscontrol,
        domain=domain,
        executionunits=executionunits,
        data=data,
        extensions=extensions,
    )


def test_the_data_schema_marker_is_set_only_by_this_process() -> None:
    factory = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0"))
    init = factory.init(source="com.bench.client", data={"a": 1, "b": 2, "parentSubject$$": None})
    assert data_schema_of(init) is bench_machine_contract.version("1.0.0").accepts.schema
    assert data_schema_of(ArvoEvent.from_json(init.to_json())) is None  # decoded from the wire
    assert data_schema_of(init.replace(id="other")) is None  # rebuilt through the public constructor
    assert data_schema_of(create_arvo_event(**BASE)) is None


class _In(BaseModel):
    name: str


class _Out(BaseModel):
    greeting: str


_CONTRACT = create_arvo_contract(
    uri="#/test/fastpath",
    type="com.fast.path",
    versions={"1.0.0": {"accepts": _In, "emits": {"evt.fast.path.done": _Out}}},
)


async def _greet(context: HandlerContext) -> Any:
    return {"type": "evt.fast.path.done", "data": {"greeting": f"hi {context.data['name']}"}}


def _handler() -> ArvoEventHandler:
    return ArvoEventHandler(contract=_CONTRACT, executionunits=1, handler={"1.0.0": _greet})


async def test_wire_events_are_validated_by_the_handler() -> None:
    factory = create_arvo_event_factory(_CONTRACT.version("1.0.0"))
    good = factory.accepts(source="com.test.client", data={"name": "ada"})
    assert data_schema_of(good) is _CONTRACT.version("1.0.0").accepts.schema
    result = await _handler().execute(good)
    assert result.events[0].data == {"greeting": "hi ada"}
    assert data_schema_of(result.events[0]) is _CONTRACT.version("1.0.0").emits["evt.fast.path.done"]
    # The same event with bad data from the wire (no marker): rejected as before.
    wire = {**good.to_dict(), "data": {"name": 42}}
    with pytest.raises(ContractViolation):
        await _handler().execute(ArvoEvent.from_json(wire))


async def test_a_marker_of_another_schema_does_not_skip_validation() -> None:
    bad = create_arvo_event(
        source="com.test.client",
        type="com.fast.path",
        subject=SUBJECT,
        data={"name": 42},
        dataschema="#/test/fastpath/1.0.0",
    )
    mark_data_schema(bad, _CONTRACT.version("1.0.0").emits["evt.fast.path.done"])
    with pytest.raises(ContractViolation):
        await _handler().execute(bad)


@pytest.mark.parametrize("contract", [bench_machine_contract, bench_resumable_contract])
def test_bench_workflow_with_every_engine_event_checked(
    contract: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each event the engine builds is compared with the validating path's (wire bytes)."""
    monkeypatch.setattr(event_module, "_verify_engine_events", True)

    async def run() -> list[ArvoEvent]:
        broker = InMemoryBroker(bench_app(InMemoryMemory()))
        done: list[ArvoEvent] = []

        async def collect(event: ArvoEvent, _broker: InMemoryBroker) -> None:
            done.append(event)

        broker.subscribe("com.bench.client", collect)
        factory = create_arvo_orchestrator_event_factory(contract.version("1.0.0"))
        for index in range(5):
            await broker.publish(
                factory.init(source="com.bench.client", data={"a": index, "b": 1, "parentSubject$$": None})
            )
        assert not broker.errors
        return done

    done = asyncio.run(run())
    assert [event.data["result"] for event in done] == [2 * (index + 1) for index in range(5)]
    for event in done:
        assert ArvoEvent.from_json(event.to_json()) == event


def test_timestamps_are_still_generated_per_event() -> None:
    first = engine_event(**{**BASE, "time": None})
    assert first.time[:4] == create_timestamp()[:4]


@settings(max_examples=100, deadline=None)
@given(
    domain=st.none() | st.from_regex(r"[a-z0-9.]{1,6}", fullmatch=True),
    meta=st.dictionaries(printable, printable, max_size=3),
    execution_id=st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True),
)
def test_a_created_subject_parses_as_its_decoding(
    domain: str | None, meta: dict[str, str], execution_id: str
) -> None:
    """The parse remembered at creation is what decoding the subject string gives."""
    from service.arvo.subject import _decode_subject

    subject = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.child",
        initiator="arvo.orc.parent",
        version="1.2.3",
        domain=domain,
        meta=meta,
        execution_id=execution_id,
    )
    remembered = ArvoOrchestrationSubject.parse(subject)
    decoded = _decode_subject(subject)
    assert remembered == decoded
    assert remembered.to_dict() == decoded.to_dict()
    assert ArvoOrchestrationSubject.parse(subject, lenient=True) == decoded
