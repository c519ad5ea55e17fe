"""Section 14.1 of the spec: the stateless ArvoEventHandler, scenario by scenario."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

from service.arvo.contract import ArvoErrorSchema, create_arvo_contract
from service.arvo.domain import ArvoDomain
from service.arvo.errors import ConfigViolation, ContractViolation, ExecutionViolation
from service.arvo.event import ArvoEvent, EventIdSpec, create_arvo_event
from service.arvo.execution import ExecutionOutcome
from service.arvo.factory import create_arvo_event_factory
from service.arvo.handler import ArvoEventHandler, HandlerContext, HandlerDomains
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.testing import ArvoTestCase, ArvoTestStep, run_test_case


class HelloInput(BaseModel):
    name: str
    age: float


class HelloOutput(BaseModel):
    result: str


def hello_contract(domain: str | None = None, *, versions: tuple[str, ...] = ("0.0.1",)) -> Any:
    return create_arvo_contract(
        uri="#/test/ArvoEventHandler",
        type="com.hello.world",
        domain=domain,
        versions={
            version: {
                "accepts": HelloInput,
                "emits": {"evt.hello.world.success": HelloOutput, "evt.hello.world.error": ArvoErrorSchema},
            }
            for version in versions
        },
    )


CONTRACT = hello_contract()


async def greet(context: HandlerContext) -> Any:
    return {"type": "evt.hello.world.success", "data": {"result": f"Hello, {context.data['name']}"}}


def make_handler(fn: Any = greet, *, contract: Any = CONTRACT, **kwargs: Any) -> ArvoEventHandler:
    return ArvoEventHandler(
        contract=contract, executionunits=100, handler=dict.fromkeys(contract.sorted_versions(), fn), **kwargs
    )


def default_input(**overrides: Any) -> ArvoEvent:
    fields: dict[str, Any] = {
        "to": "com.hello.world",
        "source": "com.test.env",
        "subject": "test-subject",
        "data": {"name": "Saad Ahmad", "age": 26},
    }
    fields.update(overrides)
    return create_arvo_event_factory(CONTRACT.version("0.0.1")).accepts(**fields)


def failing(message: str = "some error") -> Any:
    async def fn(_context: HandlerContext) -> Any:
        raise RuntimeError(message)

    return fn


def returning(outputs: Any) -> Any:
    async def fn(_context: HandlerContext) -> Any:
        return outputs

    return fn


BASIC_CASES = [
    ArvoTestCase(
        name="execute successfully",
        steps=[
            ArvoTestStep(input=lambda _prev: default_input(), expect_events=lambda events: len(events) >= 1)
        ],
    ),
    ArvoTestCase(
        name="event domain to local",
        steps=[
            ArvoTestStep(
                input=lambda _prev: default_input(domain="test.test"),
                expect_events=lambda events: events[0].domain is None,
            )
        ],
    ),
]


@pytest.mark.parametrize("case", BASIC_CASES, ids=lambda case: case.name)
async def test_basic_scenarios_pass_through_the_scenario_runner(case: ArvoTestCase) -> None:
    report = await run_test_case(make_handler(), case)
    assert report.passed == 1


def test_handler_source_is_the_contract_type() -> None:
    assert make_handler().source == "com.hello.world"


async def test_handler_output_domains_override_the_default_in_order() -> None:
    handler = make_handler(
        returning(
            {"type": "evt.hello.world.success", "data": {"result": "x"}, "domain": ["test", "notification"]}
        )
    )
    result = await handler.execute(default_input(domain="test.test"))
    assert [event.domain for event in result.events] == ["test", "notification"]


async def test_explicit_null_domains_are_deduplicated_after_resolution() -> None:
    handler = make_handler(
        returning(
            {
                "type": "evt.hello.world.success",
                "data": {"result": "x"},
                "domain": [None, None, ArvoDomain.FROM_SELF_CONTRACT],
            }
        )
    )
    result = await handler.execute(default_input())
    assert [event.domain for event in result.events] == [None]


async def test_domains_inherit_from_the_contract_and_the_triggering_event() -> None:
    contract = hello_contract("test.3333")
    handler = make_handler(
        returning(
            {
                "type": "evt.hello.world.success",
                "data": {"result": "x"},
                "domain": [ArvoDomain.FROM_SELF_CONTRACT, ArvoDomain.FROM_TRIGGERING_EVENT],
            }
        ),
        contract=contract,
    )
    result = await handler.execute(default_input())
    assert [event.domain for event in result.events] == ["test.3333", None]


async def test_all_domain_symbols_fan_out_with_distinct_ids_per_domain_copy() -> None:
    contract = hello_contract("test.3333")
    handler = make_handler(
        returning(
            {
                "type": "evt.hello.world.success",
                "data": {"result": "x"},
                "id": EventIdSpec(deduplication="DEVELOPER_MANAGED", value="custom-id"),
                "domain": [
                    None,
                    ArvoDomain.FROM_SELF_CONTRACT,
                    ArvoDomain.FROM_EVENT_CONTRACT,
                    ArvoDomain.FROM_TRIGGERING_EVENT,
                    "test.3",
                ],
            }
        ),
        contract=contract,
    )
    result = await handler.execute(default_input(domain="test.1"))
    assert [event.domain for event in result.events] == [None, "test.3333", "test.1", "test.3"]
    # The original reuses "custom-id" for every copy (hazard 15); we keep it for the first copy only.
    ids = [event.id for event in result.events]
    assert ids[0] == "custom-id"
    assert len(set(ids)) == 4
    assert all(event_id.startswith("custom-id") for event_id in ids)


@pytest.mark.parametrize(
    ("contract_domain", "event_domain"), [("test.3333", "test.1"), (None, "test.1"), (None, None)]
)
async def test_system_error_of_a_handler_stays_local_by_default(
    contract_domain: str | None, event_domain: str | None
) -> None:
    handler = make_handler(failing(), contract=hello_contract(contract_domain))
    result = await handler.execute(default_input(domain=event_domain))
    assert len(result.events) == 1
    assert result.events[0].domain is None
    assert result.events[0].parentid is not None
    assert result.outcome is ExecutionOutcome.SYSTEM_ERROR


async def test_system_error_domain_can_follow_the_current_subject() -> None:
    handler = make_handler(failing(), domains=HandlerDomains(system_error=[ArvoDomain.FROM_CURRENT_SUBJECT]))
    event = create_arvo_event_factory(CONTRACT.version("0.0.1")).accepts(
        source="com.test.env", data={"name": "Saad", "age": 26}, domain="test.1"
    )
    result = await handler.execute(event)
    assert [item.domain for item in result.events] == ["test.1"]


async def test_event_type_mismatch_is_a_config_violation() -> None:
    event = create_arvo_event(
        source="com.test.env",
        type="com.saad.invalid.test",
        subject="test-subject",
        data={"name": "x", "age": 1},
    )
    with pytest.raises(
        ConfigViolation,
        match=re.escape("Event type mismatch: Received 'com.saad.invalid.test', expected 'com.hello.world'"),
    ):
        await make_handler().execute(event)


async def test_handler_error_becomes_a_system_error_event_on_the_same_subject() -> None:
    event = default_input(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    result = await make_handler(failing("Test error")).execute(event)
    error = result.events[0]
    assert error.subject == event.subject
    assert error.type == "sys.com.hello.world.error"
    assert error.data["errorMessage"] == "Test error"
    assert error.data["errorName"] == "RuntimeError"
    assert error.data["errorStack"] is None, "stacks are off unless configured (hazard 5)"
    assert error.to == "com.test.env"
    assert error.dataschema == "#/test/ArvoEventHandler/0.0.0"
    assert error.traceparent is not None
    assert error.traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-")


async def test_error_stack_is_included_only_when_configured() -> None:
    result = await make_handler(failing(), include_error_stack=True).execute(default_input())
    assert "RuntimeError: some error" in result.events[0].data["errorStack"]


async def test_execution_violation_raised_by_the_handler_is_rethrown() -> None:
    async def fn(_context: HandlerContext) -> Any:
        raise ExecutionViolation("Test error")

    with pytest.raises(ExecutionViolation, match="Test error"):
        await make_handler(fn).execute(default_input())


async def test_invalid_input_data_is_a_contract_violation() -> None:
    event = create_arvo_event(
        source="com.test.env", type="com.hello.world", subject="test-subject", data={"name": "Saad"}
    )
    with pytest.raises(
        ContractViolation, match=r"^ViolationError<Contract> Input event payload validation failed:"
    ):
        await make_handler().execute(event)


async def test_custom_executionunits_per_output() -> None:
    handler = make_handler(
        returning(
            [
                {"type": "evt.hello.world.success", "data": {"result": "a"}, "executionunits": 200},
                {"type": "evt.hello.world.success", "data": {"result": "b"}, "executionunits": 500},
            ]
        )
    )
    result = await handler.execute(default_input())
    assert [event.executionunits for event in result.events] == [200, 500]


def test_system_error_schema_type() -> None:
    assert make_handler().system_error_schema.type == "sys.com.hello.world.error"


async def test_handler_returning_nothing_emits_nothing() -> None:
    result = await make_handler(returning(None)).execute(default_input())
    assert result.events == []


def test_two_version_contract_with_both_handlers_constructs() -> None:
    contract = hello_contract(versions=("0.0.1", "0.0.2"))
    assert make_handler(contract=contract).source == "com.hello.world"


def test_missing_handler_for_a_version_is_rejected_at_construction() -> None:
    contract = hello_contract(versions=("0.0.1", "0.0.2"))
    with pytest.raises(ValueError, match="requires handler implementation"):
        ArvoEventHandler(contract=contract, executionunits=1, handler={"0.0.1": greet})


async def test_event_with_the_contract_dataschema_is_processed() -> None:
    event = create_arvo_event(
        source="com.test.env",
        type="com.hello.world",
        subject="test-subject",
        data={"name": "x", "age": 1},
        dataschema="#/test/ArvoEventHandler/0.0.1",
    )
    result = await make_handler().execute(event)
    assert result.events[0].type == "evt.hello.world.success"


async def test_dataschema_of_another_contract_is_a_contract_violation() -> None:
    event = create_arvo_event(
        source="com.test.env",
        type="com.hello.world",
        subject="test-subject",
        data={"name": "x", "age": 1},
        dataschema="#/wrong/contract/0.0.1",
    )
    with pytest.raises(ContractViolation) as caught:
        await make_handler().execute(event)
    assert caught.value.raw_message == (
        "Contract URI mismatch: Handler expects '#/test/ArvoEventHandler' but event dataschema specifies "
        "'#/wrong/contract/0.0.1'. Events must reference the same contract URI as their handler."
    )


def test_custom_span_attributes_are_kept() -> None:
    handler = make_handler(span_attributes={"custom.attribute": "test-value"})
    assert handler.span_attributes["custom.attribute"] == "test-value"
    assert handler.span_attributes["arvo.handler.source"] == "com.hello.world"


async def test_single_output_object_gives_one_event() -> None:
    result = await make_handler().execute(default_input())
    assert len(result.events) == 1


async def test_wrong_input_shape_with_valid_dataschema_is_a_contract_violation() -> None:
    event = create_arvo_event(
        source="com.test.env",
        type="com.hello.world",
        subject="test-subject",
        data={"input": 2},
        dataschema="#/test/ArvoEventHandler/0.0.1",
    )
    with pytest.raises(ContractViolation):
        await make_handler().execute(event)


async def test_unknown_dataschema_version_is_a_config_violation() -> None:
    event = create_arvo_event(
        source="com.test.env",
        type="com.hello.world",
        subject="test-subject",
        data={"name": "x", "age": 1},
        dataschema="#/test/ArvoEventHandler/0.0.2",
    )
    with pytest.raises(ConfigViolation):
        await make_handler().execute(event)


async def test_invalid_output_data_is_a_contract_violation() -> None:
    handler = make_handler(returning({"type": "evt.hello.world.success", "data": {"result": 2}}))
    with pytest.raises(ContractViolation):
        await handler.execute(default_input())


async def test_unknown_output_type_is_a_contract_violation() -> None:
    handler = make_handler(returning({"type": "evt.hello.world.unknown", "data": {}}))
    with pytest.raises(
        ContractViolation, match=re.escape("No contract available for evt.hello.world.unknown")
    ):
        await handler.execute(default_input())


async def test_every_output_carries_the_consumed_event_id_as_parentid() -> None:
    event = default_input()
    handler = make_handler(
        returning(
            [
                {
                    "type": "evt.hello.world.success",
                    "data": {"result": "a"},
                    "parentid": "custom-parent-override",
                },
                {"type": "evt.hello.world.success", "data": {"result": "b"}},
            ]
        )
    )
    result = await handler.execute(event)
    assert [item.parentid for item in result.events] == [event.id, event.id]
    assert result.events[0].otel_attributes["cloudevents.arvo.event_parentid"] == event.id


async def test_replies_go_to_redirectto_before_source() -> None:
    result = await make_handler().execute(default_input(redirectto="com.redirect.here"))
    assert result.events[0].to == "com.redirect.here"
    result = await make_handler().execute(default_input())
    assert result.events[0].to == "com.test.env"


async def test_re_executing_the_same_event_emits_identical_ids() -> None:
    event = default_input()
    first = await make_handler().execute(event)
    second = await make_handler().execute(event)
    assert [item.id for item in first.events] == [item.id for item in second.events]


async def test_extensions_and_accesscontrol_propagate() -> None:
    handler = make_handler(
        returning(
            {"type": "evt.hello.world.success", "data": {"result": "a"}, "__extensions": {"tenant": "t1"}}
        )
    )
    result = await handler.execute(default_input(accesscontrol="role=admin"))
    assert result.events[0].extensions == {"tenant": "t1"}
    assert result.events[0].accesscontrol == "role=admin"


async def test_sync_handler_functions_are_supported() -> None:
    def fn(context: HandlerContext) -> Any:
        return {"type": "evt.hello.world.success", "data": {"result": context.data["name"]}}

    result = await make_handler(fn).execute(default_input())
    assert result.events[0].data == {"result": "Saad Ahmad"}


def test_subject_of_default_input_is_not_an_orchestration_subject() -> None:
    assert not ArvoOrchestrationSubject.is_valid(default_input().subject)
