"""Shared fixtures of spec section 14: the contracts, handlers, machines and resumables of the original tests.

Python equivalents of ``arvo-event-handler/tests/ArvoOrchestrator/{contracts,handler,orchestrators}``,
``tests/ArvoResumable/resumables`` and the counter machine of ``tests/ArvoMachine`` / ``ExecuteMachine``.
Machines are dict configs using ``emit``/``assign`` and Arvo's ``enqueueArvoEvent`` action. Everything
is built by functions so every test gets fresh handlers over its own memory and value store.

As in the original fixtures, the ``inc`` v0.0.1 machine's ``increment`` state is ``type: 'parallel',
states: {}`` (a parallel state without regions: state value ``{"increment": {}}``, its own ``on``
transitions still fire), which makes the machine require resource locking.
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
from service.arvo.handler import ArvoEventHandler, HandlerContext, HandlerOutput
from service.arvo.machine.arvo_machine import ArvoMachine, ArvoMachineSetup, setup_arvo_machine
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

    return ArvoEventHandler(
        contract=increment_contract, executionunits=0.1, handler={"0.0.1": v1, "0.0.2": v2}
    )


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

    return ArvoEventHandler(
        contract=decrement_contract, executionunits=0.1, handler={"0.0.1": v1, "0.0.2": v2}
    )


def value_read_handler(value_store: ValueStore) -> ArvoEventHandler:
    """``com.value.read``: the stored value, or an error when nothing is stored at the key."""

    async def read(context: HandlerContext) -> HandlerOutput:
        key = context.data["key"]
        if key not in value_store:
            raise LookupError(f"No value to find at key={key}")
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


def _number_machine(
    *,
    self_contract: ArvoContract,
    version: str,
    operation: Literal["increment", "decrement"],
    operation_input: Callable[[ActionArgs], dict[str, Any]],
    operation_version: str,
    parallel: bool = False,
) -> ArvoMachine:
    operation_contract = increment_contract if operation == "increment" else decrement_contract
    operation_type = operation_contract.type
    operation_state: dict[str, Any] = {
        "entry": emit(lambda args: {"type": operation_type, "data": operation_input(args)}),
        "on": {
            f"evt.{operation}.number.success": {
                "target": "done",
                "actions": assign({"value": lambda args: args.event["data"]["result"]}),
            },
            f"sys.{operation_type}.error": {"target": "error", "actions": assign(_append_event_error)},
        },
    }
    if parallel:
        operation_state.update({"type": "parallel", "states": {}})
    return setup_arvo_machine(
        contracts={
            "self": self_contract.version(version),
            "services": {
                "valueReader": value_read_contract.version("0.0.1"),
                operation: operation_contract.version(operation_version),
            },
        },
    ).create_machine(
        {
            "id": f"machineV{version.replace('.', '')}",
            "context": _number_context,
            "output": _number_output,
            "initial": "fetch_value",
            "states": {
                "fetch_value": {
                    "entry": emit(
                        lambda args: {"type": "com.value.read", "data": {"key": args.context["key"]}}
                    ),
                    "on": {
                        "evt.value.read.success": {
                            "target": operation,
                            "actions": assign({"value": lambda args: args.event["data"]["value"]}),
                        },
                        "sys.com.value.read.error": {
                            "target": "error",
                            "actions": assign(_append_event_error),
                        },
                    },
                },
                operation: operation_state,
                "done": {"type": "final"},
                "error": {"type": "final"},
            },
        }
    )


def inc_machines() -> list[ArvoMachine]:
    """``inc`` v0.0.1 (parallel operation state → locking) and v0.0.2 (multi-emit service → locking)."""
    return [
        _number_machine(
            self_contract=inc_orchestrator_contract,
            version="0.0.1",
            operation="increment",
            operation_input=lambda args: {
                "init": args.context["value"],
                "increment": args.context["modifier"],
            },
            operation_version="0.0.1",
            parallel=True,
        ),
        _number_machine(
            self_contract=inc_orchestrator_contract,
            version="0.0.2",
            operation="increment",
            operation_input=lambda args: {
                "init": args.context["value"],
                "multiplier": args.context["modifier"],
            },
            operation_version="0.0.2",
        ),
    ]


def dec_machines() -> list[ArvoMachine]:
    """``dec`` v0.0.1 (``init - modifier``) and v0.0.2 (``init / modifier``)."""
    return [
        _number_machine(
            self_contract=dec_orchestrator_contract,
            version="0.0.1",
            operation="decrement",
            operation_input=lambda args: {
                "init": args.context["value"],
                "decrement": args.context["modifier"],
            },
            operation_version="0.0.1",
        ),
        _number_machine(
            self_contract=dec_orchestrator_contract,
            version="0.0.2",
            operation="decrement",
            operation_input=lambda args: {"init": args.context["value"], "divider": args.context["modifier"]},
            operation_version="0.0.2",
        ),
    ]


# --------------------------------------------------------------------------------------------------
# number.modifier machines v0.0.1 and v0.0.2 (orchestrators/number.modifier/machines/v00x.ts)
# --------------------------------------------------------------------------------------------------


def _modifier_context(args: ActionArgs) -> dict[str, Any]:
    return {
        **args.input["data"],
        "currentSubject$$": args.input["subject"],
        "key": args.input["subject"],
        "errors": [],
        "final_value": 0,
    }


def _modifier_output(args: ActionArgs) -> dict[str, Any]:
    context = args.context
    return {"success": not context["errors"], "error": context["errors"], "final": context["final_value"]}


def _error_entry(name: str, message: str) -> Any:
    return assign(
        {
            "errors": lambda args: [
                *args.context["errors"],
                {"errorName": name, "errorMessage": message, "errorStack": None},
            ]
        }
    )


def _child_call(child: str, parent_subject: Callable[[ActionArgs], Any], **extra: Any) -> Any:
    return emit(
        lambda args: {
            "type": f"arvo.orc.{child}",
            "data": {
                "parentSubject$$": parent_subject(args),
                "key": args.context["key"],
                "modifier": args.context["modifier"],
                "trend": args.context["trend"],
            },
            **extra,
        }
    )


def _child_state(child: str, entry: list[Any]) -> dict[str, Any]:
    return {
        "entry": entry,
        "on": {
            f"arvo.orc.{child}.done": [
                {
                    "guard": lambda args: not args.event["data"]["success"],
                    "target": "error",
                    "actions": assign(
                        {"errors": lambda args: [*args.context["errors"], *args.event["data"]["error"]]}
                    ),
                },
                {
                    "target": "done",
                    "actions": assign({"final_value": lambda args: args.event["data"]["final"]}),
                },
            ],
            f"sys.arvo.orc.{child}.error": {
                "target": "error",
                "actions": assign({"errors": lambda args: [*args.context["errors"], args.event["data"]]}),
            },
        },
    }


def _current_subject(args: ActionArgs) -> Any:
    return args.context["currentSubject$$"]


NOTIFICATION = {"type": "enqueueArvoEvent", "params": {"type": "com.notif.test", "data": {}}}


def number_modifier_machines() -> list[ArvoMachine]:
    """v0.0.1 (child + notification) and v0.0.2 (a faulty / an orphan second child)."""
    machines = []
    for version in ("0.0.1", "0.0.2"):
        if version == "0.0.1":
            decrement_entry = [_child_call("dec", _current_subject), NOTIFICATION]
            increment_entry = [_child_call("inc", _current_subject), NOTIFICATION]
        else:
            decrement_entry = [_child_call("dec", _current_subject), _child_call("dec", lambda _args: "test")]
            increment_entry = [
                _child_call("inc", _current_subject),
                _child_call("inc", lambda _args: None, domain=[None]),
            ]
        machine = setup_arvo_machine(
            contracts={
                "self": number_modifier_contract.version(version),
                "services": {
                    "valueWriter": value_write_contract.version("0.0.1"),
                    "valueReader": value_read_contract.version("0.0.1"),
                    "increment": inc_orchestrator_contract.version(version),
                    "decrement": dec_orchestrator_contract.version(version),
                },
            },
        ).create_machine(
            {
                "id": f"machineV{version.replace('.', '')}",
                "context": _modifier_context,
                "output": _modifier_output,
                "initial": "init_value",
                "states": {
                    "init_value": {
                        "entry": emit(
                            lambda args: {
                                "type": "com.value.write",
                                "data": {"key": args.context["key"], "value": args.context["init"]},
                            }
                        ),
                        "on": {
                            "evt.value.write.success": [
                                {
                                    "guard": lambda args: not args.event["data"]["success"],
                                    "target": "error",
                                    "actions": _error_entry("WriteFailure", "Failed to write the value"),
                                },
                                {"target": "router"},
                            ],
                            "sys.com.value.write.error": {
                                "target": "error",
                                "actions": assign(
                                    {"errors": lambda args: [*args.context["errors"], args.event["data"]]}
                                ),
                            },
                        },
                    },
                    "router": {
                        "always": [
                            {
                                "guard": lambda args: args.context["operation"] == "increment",
                                "target": "increment",
                            },
                            {
                                "guard": lambda args: args.context["operation"] == "decrement",
                                "target": "decrement",
                            },
                            {
                                "target": "error",
                                "actions": _error_entry(
                                    "OperationRouteFailure", "Failed to route to the required operation"
                                ),
                            },
                        ]
                    },
                    "decrement": _child_state("dec", decrement_entry),
                    "increment": _child_state("inc", increment_entry),
                    "error": {"type": "final"},
                    "done": {"type": "final"},
                },
            }
        )
        machines.append(machine)
    return machines


def increment_orchestrator(memory: Memory, **kwargs: Any) -> ArvoOrchestrator:
    """``incrementAgent``: ``arvo.orc.inc`` with machines v0.0.1 and v0.0.2."""
    return create_arvo_orchestrator(executionunits=0.1, memory=memory, machines=inc_machines(), **kwargs)


def decrement_orchestrator(memory: Memory, **kwargs: Any) -> ArvoOrchestrator:
    """``decrementAgent``: ``arvo.orc.dec`` with machines v0.0.1 and v0.0.2."""
    return create_arvo_orchestrator(executionunits=0.1, memory=memory, machines=dec_machines(), **kwargs)


def number_modifier_orchestrator(memory: Memory, **kwargs: Any) -> ArvoOrchestrator:
    """``numberModifierAgent``: ``arvo.orc.number.modifier`` with machines v0.0.1 and v0.0.2."""
    return create_arvo_orchestrator(
        executionunits=0.1, memory=memory, machines=number_modifier_machines(), **kwargs
    )


def all_orchestrator_handlers(memory: Memory, value_store: ValueStore) -> dict[str, Any]:
    """Every handler of ``tests/ArvoOrchestrator/index.spec.ts`` over one memory and value store."""
    return {
        "increment": increment_handler(),
        "decrement": decrement_handler(),
        "value_read": value_read_handler(value_store),
        "value_write": value_write_handler(value_store),
        "increment_agent": increment_orchestrator(memory),
        "decrement_agent": decrement_orchestrator(memory),
        "number_modifier_agent": number_modifier_orchestrator(memory),
    }


# --------------------------------------------------------------------------------------------------
# The dumb orchestrator (14.2 #18): machine actions throwing normal errors and violations
# --------------------------------------------------------------------------------------------------


class DumbInit(BaseModel):
    error_type: Literal["violation", "normal"]


class Empty(BaseModel):
    pass


dumb_contract = create_arvo_orchestrator_contract(
    uri="#/test/dumb", name="dumb", versions={"1.0.0": {"init": DumbInit, "complete": Empty}}
)
dumb_service_contract = create_simple_arvo_contract(
    uri="#/test/dumb/service", type="dumb.service", versions={"0.0.1": {"accepts": Empty, "emits": Empty}}
)


def _throw_normal_error(_args: ActionArgs) -> None:
    raise RuntimeError("Normal error")


def _throw_violation_error(_args: ActionArgs) -> None:
    raise ExecutionViolation("Violation error")


def dumb_machine() -> ArvoMachine:
    """Routes by ``error_type`` into a state whose entry action throws."""
    return setup_arvo_machine(
        contracts={
            "self": dumb_contract.version("1.0.0"),
            "services": {"dumb": dumb_service_contract.version("0.0.1")},
        },
        actions={"throwNormalError": _throw_normal_error, "throwViolationError": _throw_violation_error},
    ).create_machine(
        {
            "id": "machineV100",
            "initial": "router",
            "context": lambda args: {"error_type": args.input["data"]["error_type"]},
            "states": {
                "router": {
                    "always": [
                        {
                            "target": "normal_error",
                            "guard": lambda args: args.context["error_type"] == "normal",
                        },
                        {
                            "target": "violation_error",
                            "guard": lambda args: args.context["error_type"] == "violation",
                        },
                        {"target": "done"},
                    ]
                },
                "normal_error": {"entry": {"type": "throwNormalError"}, "always": {"target": "error"}},
                "violation_error": {"entry": {"type": "throwViolationError"}, "always": {"target": "error"}},
                "done": {"type": "final"},
                "error": {"type": "final"},
            },
        }
    )


def dumb_orchestrator(memory: Memory, **kwargs: Any) -> ArvoOrchestrator:
    """The ``arvo.orc.dumb`` orchestrator."""
    return create_arvo_orchestrator(executionunits=1, memory=memory, machines=[dumb_machine()], **kwargs)


# --------------------------------------------------------------------------------------------------
# Resumables (tests/ArvoResumable/resumables/*)
# --------------------------------------------------------------------------------------------------


async def _decrement_resumable_v1(ctx: ResumableContext) -> ResumableResult | None:
    service = ctx.service
    if service is not None and service["type"] in (
        "sys.com.decrement.number.error",
        "sys.com.value.read.error",
    ):
        return {"output": {"success": False, "error": [service["data"]], "final": 0}}
    if ctx.input is not None:
        data = ctx.input["data"]
        return {
            "context": {
                "key": data["key"],
                "value": 0,
                "modifier": data["modifier"],
                "trend": data["trend"],
                "error": [],
            },
            "services": [{"type": "com.value.read", "data": {"key": data["key"]}}],
        }
    context = ctx.context
    if not context:
        raise RuntimeError("Faulty initialisation detected")
    if service is not None and service["type"] == "evt.value.read.success":
        value = service["data"]["value"]
        return {
            "context": {**context, "value": value},
            "services": [
                {"type": "com.decrement.number", "data": {"init": value, "decrement": context["modifier"]}}
            ],
        }
    if service is not None and service["type"] == "evt.decrement.number.success":
        result = service["data"]["result"]
        return {
            "context": {**context, "value": result},
            "output": {"success": True, "error": [], "final": result, "__executionunits": 10},
            "services": [{"type": "com.value.write", "data": {"key": context["key"], "value": result}}],
        }
    return None


async def _decrement_resumable_v2(_ctx: ResumableContext) -> ResumableResult | None:
    raise NotImplementedError("Version 0.0.2 is not implemented for decrement resumable")


def decrement_resumable(memory: Memory, **kwargs: Any) -> ArvoResumable:
    """``decrementAgent`` resumable: self = the ``dec`` contract; three services (→ locking)."""
    return create_arvo_resumable(
        contract=dec_orchestrator_contract,
        services={
            "valueReader": value_read_contract.version("0.0.1"),
            "valueWriter": value_write_contract.version("0.0.1"),
            "decrement": decrement_contract.version("0.0.1"),
        },
        memory=memory,
        handler={"0.0.1": _decrement_resumable_v1, "0.0.2": _decrement_resumable_v2},
        **kwargs,
    )


class Modification(BaseModel):
    key: str
    value: Number


class IncResumableInit(BaseModel):
    modifications: list[Modification]


class IncResumableComplete(BaseModel):
    success: bool
    final: list[Modification]
    error: list[ArvoErrorSchema]


inc_resumable_contract = create_arvo_orchestrator_contract(
    uri="#/resumables/inc",
    name="inc",
    versions={"0.0.1": {"init": IncResumableInit, "complete": IncResumableComplete}},
)

FAN_OUT_DOMAINS: list[str | None] = [None, "external"]


async def increment_resumable_v1(ctx: ResumableContext) -> ResumableResult | None:
    service = ctx.service
    if service is not None and service["type"] in (
        "sys.com.increment.number.error",
        "sys.com.value.read.error",
        "sys.com.value.write.error",
    ):
        return {"output": {"success": False, "error": [service["data"]], "final": []}}
    if ctx.input is not None:
        modifications = ctx.input["data"]["modifications"]
        return {
            "context": {
                "modifications": [
                    {"key": item["key"], "value": None, "modifier": item["value"]} for item in modifications
                ],
                "error": [],
            },
            "services": [
                {"domain": FAN_OUT_DOMAINS, "type": "com.value.read", "data": {"key": item["key"]}}
                for item in modifications
            ],
        }
    context = ctx.context
    if not context:
        raise RuntimeError("Bad initialisation detected")
    modifications = context["modifications"]
    reads = ctx.collected_events.get("evt.value.read.success") or []
    if len(reads) == len(modifications):
        read_values = {item["data"]["key"]: item["data"]["value"] for item in reads}
        return {
            "context": {
                **context,
                "modifications": [{**item, "value": read_values[item["key"]]} for item in modifications],
            },
            "services": [
                {
                    "domain": FAN_OUT_DOMAINS,
                    "type": "com.increment.number",
                    "data": {"init": read_values[item["key"]], "increment": item["modifier"]},
                }
                for item in modifications
            ],
        }
    increments = ctx.collected_events.get("evt.increment.number.success") or []
    if len(increments) == len(modifications):
        results = [increments[index]["data"]["result"] for index in range(len(modifications))]
        return {
            "context": {
                **context,
                "modifications": [
                    {**item, "value": result} for item, result in zip(modifications, results, strict=True)
                ],
            },
            "output": {
                "success": True,
                "error": [],
                "final": [
                    {"key": item["key"], "value": result}
                    for item, result in zip(modifications, results, strict=True)
                ],
            },
            "services": [
                {
                    "domain": FAN_OUT_DOMAINS,
                    "type": "com.value.write",
                    "data": {"key": item["key"], "value": result},
                }
                for item, result in zip(modifications, results, strict=True)
            ],
        }
    return None


def increment_resumable(memory: Memory, *, handler: Any = None, **kwargs: Any) -> ArvoResumable:
    """``incrementAgent`` resumable: fans out reads, increments and writes to ``[null, 'external']``."""
    return create_arvo_resumable(
        contract=inc_resumable_contract,
        services={
            "valueReader": value_read_contract.version("0.0.1"),
            "valueWriter": value_write_contract.version("0.0.1"),
            "increment": increment_contract.version("0.0.1"),
        },
        memory=memory,
        handler={"0.0.1": handler or increment_resumable_v1},
        **kwargs,
    )


# --------------------------------------------------------------------------------------------------
# The counter machine (tests/ArvoMachine/index.spec.ts and tests/ExecuteMachine.spec.ts)
# --------------------------------------------------------------------------------------------------


class CounterInit(BaseModel):
    delta: Number
    type: Literal["increment", "decrement"]


class CounterComplete(BaseModel):
    final: Number


class DeltaInput(BaseModel):
    delta: Number


class NewValue(BaseModel):
    newValue: Number  # noqa: N815 - wire field name


class NotificationInput(BaseModel):
    delta: Number
    type: Literal["increment", "decrement"]


test_machine_contract = create_arvo_orchestrator_contract(
    uri="#/test/machine", name="test", versions={"0.0.1": {"init": CounterInit, "complete": CounterComplete}}
)
increment_service_contract = create_arvo_contract(
    uri="#/test/service/increment",
    type="com.number.increment",
    versions={
        "0.0.1": {"accepts": DeltaInput, "emits": {"evt.number.increment.success": NewValue}},
        "0.0.2": {"accepts": DeltaInput, "emits": {"evt.number.increment.success": NewValue}},
    },
)
decrement_service_contract = create_arvo_contract(
    uri="#/test/service/decrement",
    type="com.number.decrement",
    versions={"0.0.1": {"accepts": DeltaInput, "emits": {"evt.number.decrement.success": NewValue}}},
)
notification_contract = create_arvo_contract(
    uri="#/test/notification/decrement",
    type="notif.number.update",
    versions={"0.0.1": {"accepts": NotificationInput, "emits": {}}},
)

COUNTER_SERVICES = {
    "increment": increment_service_contract.version("0.0.1"),
    "decrement": decrement_service_contract.version("0.0.1"),
    "notification": notification_contract.version("0.0.1"),
}


def counter_setup(log: list[Any] | None = None) -> ArvoMachineSetup:
    """``setupArvoMachine`` of the counter (actions ``log`` and ``assignEventError``, two guards)."""
    calls = log if log is not None else []
    return setup_arvo_machine(
        contracts={"self": test_machine_contract.version("0.0.1"), "services": COUNTER_SERVICES},
        actions={
            "log": lambda args: calls.append((dict(args.context), dict(args.event))),
            "assignEventError": assign(
                {"errors": lambda args: [*args.context["errors"], args.event["data"]]}
            ),
        },
        guards={
            "isIncrement": lambda args: args.context["type"] == "increment",
            "isDecrement": lambda args: args.context["type"] == "decrement",
        },
    )


def counter_config(variant: Literal["machine", "engine"]) -> dict[str, Any]:
    """The ``counter`` config: ``machine`` = 14.4 #8 (ids, domains, ``__id``), ``engine`` = 14.5."""
    increment_call: dict[str, Any] = {}
    notification_emit: dict[str, Any] = {}
    output_extras: dict[str, Any] = {}
    if variant == "machine":
        increment_call = {
            "id": {"deduplication": "DEVELOPER_MANAGED", "value": "custom-increment-id"},
            "domain": [None, "external"],
        }
        notification_emit = {"domain": ["external"]}
        output_extras = {
            "__id": {"deduplication": "ARVO_MANAGED", "value": "custom-orch-1"},
            "__executionunits": 23,
        }

    def notification_delta(args: ActionArgs) -> Any:
        return args.context["delta"] if variant == "machine" else -1

    return {
        "id": "counter",
        "context": lambda args: {**args.input["data"], "errors": []},
        "initial": "route",
        "states": {
            "route": {
                "always": [
                    {"guard": "isIncrement", "target": "increment"},
                    {"guard": "isDecrement", "target": "decrement"},
                    {
                        "target": "error",
                        "actions": assign(
                            {
                                "errors": lambda args: [
                                    *args.context["errors"],
                                    {
                                        "errorName": "Invalid type",
                                        "errorMessage": f"Invalid operation type => {args.context['type']}",
                                        "errorStack": None,
                                    },
                                ]
                            }
                        ),
                    },
                ]
            },
            "increment": {
                "entry": [
                    emit(
                        lambda args: {
                            **increment_call,
                            "type": "com.number.increment",
                            "data": {"delta": args.context["delta"]},
                        }
                    )
                ],
                "on": {
                    "evt.number.increment.success": {"target": "notification"},
                    "sys.com.number.increment.error": {
                        "target": "error",
                        "actions": [{"type": "assignEventError"}],
                    },
                },
            },
            "decrement": {
                "entry": [
                    emit(
                        lambda args: {
                            "type": "com.number.decrement",
                            "data": {"delta": args.context["delta"]},
                        }
                    )
                ],
                "on": {
                    "evt.number.decrement.success": {"target": "notification"},
                    "sys.com.number.decrement.error": {
                        "target": "error",
                        "actions": [{"type": "assignEventError"}],
                    },
                },
            },
            "notification": {
                "entry": [
                    {"type": "log"},
                    {
                        "type": "enqueueArvoEvent",
                        "params": lambda args: {
                            "type": "notif.number.update",
                            "data": {"delta": args.context["delta"], "type": args.context["type"]},
                        },
                    },
                    emit(
                        lambda args: {
                            **notification_emit,
                            "type": "notif.number.update",
                            "data": {"delta": notification_delta(args), "type": args.context["type"]},
                        }
                    ),
                ],
                "always": {"target": "done"},
            },
            "done": {"type": "final"},
            "error": {"type": "final"},
        },
        "output": lambda args: {"final": args.context["delta"], **output_extras},
    }


def counter_machine(
    variant: Literal["machine", "engine"] = "machine", log: list[Any] | None = None
) -> ArvoMachine:
    """The ``counter`` machine of 14.4 (``machine``) or 14.5 (``engine``)."""
    return counter_setup(log).create_machine(counter_config(variant))


def counter_increment_handler() -> ArvoEventHandler:
    """``com.number.increment`` answering ``newValue = delta + 9`` (both versions)."""

    async def increment(context: HandlerContext) -> HandlerOutput:
        return {"type": "evt.number.increment.success", "data": {"newValue": context.data["delta"] + 9}}

    return ArvoEventHandler(
        contract=increment_service_contract,
        executionunits=0.1,
        handler={"0.0.1": increment, "0.0.2": increment},
    )
