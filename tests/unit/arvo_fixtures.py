"""Shared fixtures of spec section 14: the contracts, handlers, machines and resumables of the original tests.

Python equivalents of ``arvo-event-handler/tests/ArvoOrchestrator/{contracts,handler,orchestrators}``,
``tests/ArvoResumable/resumables`` and the counter machine of ``tests/ArvoMachine`` / ``ExecuteMachine``.
Machines are dict configs using ``emit``/``assign`` and Arvo's ``enqueueArvoEvent`` action. Everything
is built by functions so every test gets fresh handlers over its own memory and value store.

Divergence from the original fixtures: the ``inc`` v0.0.1 machine's ``increment`` state is a parallel
state with one (never finishing) region ``waiting`` instead of ``type: 'parallel', states: {}``: our
statechart interpreter rejects childless compound/parallel states at build time (XState accepts them).
Its purpose — making the machine require resource locking — is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, Literal

from pydantic import BaseModel

from service.arvo.contract import (
    ArvoContract,
    ArvoErrorSchema,
    create_arvo_contract,
    create_arvo_orchestrator_contract,
    create_simple_arvo_contract,
)
from service.arvo.errors import ExecutionViolation
from service.arvo.event import EventIdSpec
from service.arvo.handler import ArvoEventHandler, HandlerContext, HandlerOutput
from service.arvo.machine.arvo_machine import ArvoMachine, setup_arvo_machine
from service.arvo.machine.statechart import ActionArgs, assign, emit
from service.arvo.memory import Memory
from service.arvo.orchestrator import ArvoOrchestrator, create_arvo_orchestrator
from service.arvo.resumable import ArvoResumable, ResumableContext, ResumableResult, create_arvo_resumable

Number = int | float
ValueStore = MutableMapping[str, Any]

TEST_SOURCE = "com.test.test"

# --------------------------------------------------------------------------------------------------
# Service contracts (tests/ArvoOrchestrator/contracts.ts)
# --------------------------------------------------------------------------------------------------


class IncrementInputV1(BaseModel):
    init: Number
    increment: Number


class IncrementInputV2(BaseModel):
    init: Number
    multiplier: Number


class NumberResult(BaseModel):
    result: Number


class DecrementInputV1(BaseModel):
    init: Number
    decrement: Number


class DecrementInputV2(BaseModel):
    init: Number
    divider: Number


class ValueWriteInput(BaseModel):
    key: str
    value: Number


class ValueWriteOutput(BaseModel):
    key: str
    success: bool


class ValueReadInput(BaseModel):
    key: str


class ValueReadOutput(BaseModel):
    key: str
    value: Number


increment_contract = create_arvo_contract(
    uri="#/test/handler/increment",
    type="com.increment.number",
    versions={
        "0.0.1": {"accepts": IncrementInputV1, "emits": {"evt.increment.number.success": NumberResult}},
        "0.0.2": {
            "accepts": IncrementInputV2,
            "emits": {
                "evt.increment.number.success": NumberResult,
                "evt.multiplier.number.success": NumberResult,
            },
        },
    },
)
decrement_contract = create_simple_arvo_contract(
    uri="#/test/handler/decrement",
    type="decrement.number",
    versions={
        "0.0.1": {"accepts": DecrementInputV1, "emits": NumberResult},
        "0.0.2": {"accepts": DecrementInputV2, "emits": NumberResult},
    },
)
value_write_contract = create_simple_arvo_contract(
    uri="#/test/handler/value/write",
    type="value.write",
    versions={"0.0.1": {"accepts": ValueWriteInput, "emits": ValueWriteOutput}},
)
value_read_contract = create_simple_arvo_contract(
    uri="#/test/handler/value/read",
    type="value.read",
    versions={"0.0.1": {"accepts": ValueReadInput, "emits": ValueReadOutput}},
)

# --------------------------------------------------------------------------------------------------
# Orchestrator contracts
# --------------------------------------------------------------------------------------------------


class LinearInit(BaseModel):
    key: str
    modifier: Number
    trend: Literal["linear"]


class ExponentialInit(BaseModel):
    key: str
    modifier: Number
    trend: Literal["exponential"]


class NumberComplete(BaseModel):
    success: bool
    error: list[ArvoErrorSchema]
    final: Number


class ModifierInitV1(BaseModel):
    init: Number
    modifier: Number
    trend: Literal["linear"]
    operation: Literal["increment", "decrement"]


class ModifierInitV2(BaseModel):
    init: Number
    modifier: Number
    trend: Literal["exponential"]
    operation: Literal["increment", "decrement"]


def _number_orchestrator(uri: str, name: str) -> ArvoContract:
    return create_arvo_orchestrator_contract(
        uri=uri,
        name=name,
        versions={
            "0.0.1": {"init": LinearInit, "complete": NumberComplete},
            "0.0.2": {"init": ExponentialInit, "complete": NumberComplete},
        },
    )


inc_orchestrator_contract = _number_orchestrator("#/test/orchestrator/increment", "inc")
dec_orchestrator_contract = _number_orchestrator("#/test/orchestrator/decrement", "dec")
number_modifier_contract = create_arvo_orchestrator_contract(
    uri="#/test/orchestrator/number/modifier",
    name="number.modifier",
    versions={
        "0.0.1": {"init": ModifierInitV1, "complete": NumberComplete},
        "0.0.2": {"init": ModifierInitV2, "complete": NumberComplete},
    },
)

# --------------------------------------------------------------------------------------------------
# Service handlers (tests/ArvoOrchestrator/handler/*.ts)
# --------------------------------------------------------------------------------------------------


def increment_handler() -> ArvoEventHandler:
    """``com.increment.number``: v1 ``init + increment``; v2 ``init * multiplier`` as two events."""

    async def v1(context: HandlerContext) -> HandlerOutput:
        return {
            "type": "evt.increment.number.success",
            "data": {"result": context.data["init"] + context.data["increment"]},
        }

    async def v2(context: HandlerContext) -> list[HandlerOutput]:
        result = context.data["init"] * context.data["multiplier"]
        return [
            {"type": "evt.increment.number.success", "data": {"result": result}},
            {"type": "evt.multiplier.number.success", "data": {"result": result}},
        ]

    return ArvoEventHandler(contract=increment_contract, executionunits=0.1, handler={"0.0.1": v1, "0.0.2": v2})


def decrement_handler() -> ArvoEventHandler:
    """``com.decrement.number``: v1 ``init - decrement``; v2 ``init / divider``."""

    async def v1(context: HandlerContext) -> HandlerOutput:
        return {
            "type": "evt.decrement.number.success",
            "data": {"result": context.data["init"] - context.data["decrement"]},
        }

    async def v2(context: HandlerContext) -> HandlerOutput:
        return {
            "type": "evt.decrement.number.success",
            "data": {"result": context.data["init"] / context.data["divider"]},
        }

    return ArvoEventHandler(contract=decrement_contract, executionunits=0.1, handler={"0.0.1": v1, "0.0.2": v2})


def value_read_handler(value_store: ValueStore) -> ArvoEventHandler:
    """``com.value.read``: the stored value, or an error when nothing is stored at the key."""

    async def read(context: HandlerContext) -> HandlerOutput:
        key = context.data["key"]
        if key not in value_store:
            raise KeyError(f"No value to find at key={key}")
        return {"type": "evt.value.read.success", "data": {"key": key, "value": value_store[key]}}

    return ArvoEventHandler(contract=value_read_contract, executionunits=0, handler={"0.0.1": read})


def value_write_handler(value_store: ValueStore) -> ArvoEventHandler:
    """``com.value.write``: ``-100`` reports ``success: false``, ``-200`` throws, else stores."""

    async def write(context: HandlerContext) -> HandlerOutput:
        key, value = context.data["key"], context.data["value"]
        if value == -200:
            raise ValueError(f"Invalid value is {value}.")
        value_store[key] = value
        return {"type": "evt.value.write.success", "data": {"key": key, "success": value != -100}}

    return ArvoEventHandler(contract=value_write_contract, executionunits=0, handler={"0.0.1": write})


# --------------------------------------------------------------------------------------------------
# inc / dec machines v0.0.1 and v0.0.2
# --------------------------------------------------------------------------------------------------


def _append_event_error(args: ActionArgs) -> dict[str, Any]:
    return {"error": [*args.context["error"], args.event["data"]]}


def _number_context(args: ActionArgs) -> dict[str, Any]:
    data = args.input["data"]
    return {"key": data["key"], "value": 0, "modifier": data["modifier"], "trend": data["trend"], "error": []}


def _number_output(args: ActionArgs) -> dict[str, Any]:
    context = args.context
    return {"success": not context["error"], "error": context["error"], "final": context["value"]}


