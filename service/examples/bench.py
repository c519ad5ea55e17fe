"""The bench workflow: ``{a, b}`` → add → double → ``2·(a+b)``, as an orchestrator and as a resumable.

Six events per workflow: init, add call, add reply, double call, double reply, completion.
"""

from __future__ import annotations

from typing import Any

from contracts.bench import add_contract, bench_machine_contract, bench_resumable_contract, double_contract
from service.arvo.handler import ArvoEventHandler, HandlerContext, HandlerOutput
from service.arvo.machine.arvo_machine import ArvoMachine, setup_arvo_machine
from service.arvo.machine.statechart import ActionArgs, assign, emit
from service.arvo.memory import Memory
from service.arvo.orchestrator import ArvoOrchestrator, create_arvo_orchestrator
from service.arvo.resumable import ArvoResumable, ResumableContext, ResumableResult

__all__ = [
    "bench_add_handler",
    "bench_double_handler",
    "bench_machine",
    "bench_orchestrator",
    "bench_resumable",
]


async def _add(context: HandlerContext) -> HandlerOutput:
    return {"type": "evt.bench.add.success", "data": {"sum": context.data["a"] + context.data["b"]}}


async def _double(context: HandlerContext) -> HandlerOutput:
    return {"type": "evt.bench.double.success", "data": {"result": context.data["value"] * 2}}


def bench_add_handler() -> ArvoEventHandler:
    """The ``com.bench.add`` service."""
    return ArvoEventHandler(contract=add_contract, executionunits=1, handler={"1.0.0": _add})


def bench_double_handler() -> ArvoEventHandler:
    """The ``com.bench.double`` service."""
    return ArvoEventHandler(contract=double_contract, executionunits=1, handler={"1.0.0": _double})


def _bench_context(args: ActionArgs) -> dict[str, Any]:
    data = args.input["data"]
    return {"a": data["a"], "b": data["b"], "sum": None, "result": None}


bench_machine: ArvoMachine = setup_arvo_machine(
    contracts={
        "self": bench_machine_contract.version("1.0.0"),
        "services": {"add": add_contract.version("1.0.0"), "double": double_contract.version("1.0.0")},
    },
).create_machine(
    {
        "id": "bench",
        "context": _bench_context,
        "initial": "adding",
        "states": {
            "adding": {
                "entry": emit(
                    lambda args: {
                        "type": "com.bench.add",
                        "data": {"a": args.context["a"], "b": args.context["b"]},
                    }
                ),
                "on": {
                    "evt.bench.add.success": {
                        "target": "doubling",
                        "actions": assign({"sum": lambda args: args.event["data"]["sum"]}),
                    }
                },
            },
            "doubling": {
                "entry": emit(
                    lambda args: {"type": "com.bench.double", "data": {"value": args.context["sum"]}}
                ),
                "on": {
                    "evt.bench.double.success": {
                        "target": "done",
                        "actions": assign({"result": lambda args: args.event["data"]["result"]}),
                    }
                },
            },
            "done": {"type": "final"},
        },
        "output": lambda args: {"result": args.context["result"]},
    }
)
"""The bench statechart (version 1.0.0)."""


def bench_orchestrator(memory: Memory, *, include_error_stack: bool = False) -> ArvoOrchestrator:
    """The ``arvo.orc.bench`` orchestrator."""
    return create_arvo_orchestrator(
        executionunits=1, memory=memory, machines=[bench_machine], include_error_stack=include_error_stack
    )


async def _bench_resumable_v1(context: ResumableContext) -> ResumableResult | None:
    if context.input is not None:
        data = context.input["data"]
        return {
            "context": {"a": data["a"], "b": data["b"]},
            "services": [{"type": "com.bench.add", "data": {"a": data["a"], "b": data["b"]}}],
        }
    added = context.collected_events.get("evt.bench.add.success")
    doubled = context.collected_events.get("evt.bench.double.success")
    if doubled:
        return {"output": {"result": doubled[-1]["data"]["result"]}}
    if added:
        return {"services": [{"type": "com.bench.double", "data": {"value": added[-1]["data"]["sum"]}}]}
    return None


def bench_resumable(memory: Memory, *, include_error_stack: bool = False) -> ArvoResumable:
    """The ``arvo.orc.bench.resumable`` resumable."""
    return ArvoResumable(
        contract=bench_resumable_contract,
        services={"add": add_contract.version("1.0.0"), "double": double_contract.version("1.0.0")},
        memory=memory,
        handler={"1.0.0": _bench_resumable_v1},
        executionunits=1,
        include_error_stack=include_error_stack,
    )
