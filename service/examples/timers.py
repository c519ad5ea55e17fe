"""The timer workflow: ask a service that answers only sometimes, give up after ``timeoutMs``.

``{a, b, timeoutMs}`` → ``com.bench.maybe`` (answers with ``a+b`` when ``b`` is odd, never when it is
even) → ``{result: a+b, timedOut: false}``, or ``{result: -1, timedOut: true}`` once the delayed
transition fires. The fault test (``make fault-test FAULT=timers``) and the timer benchmark run it.
"""

from __future__ import annotations

from typing import Any

from contracts.bench import bench_timeout_contract, maybe_add_contract
from service.arvo.handler import ArvoEventHandler, HandlerContext, HandlerOutput
from service.arvo.machine.arvo_machine import ArvoMachine, setup_arvo_machine
from service.arvo.machine.statechart import ActionArgs, assign, emit
from service.arvo.memory import Memory
from service.arvo.orchestrator import ArvoOrchestrator, create_arvo_orchestrator

__all__ = ["maybe_add_handler", "timeout_machine", "timeout_orchestrator", "timers_app"]


async def _maybe_add(context: HandlerContext) -> HandlerOutput | None:
    if context.data["b"] % 2 == 0:
        return None  # the lost reply: the workflow times out
    return {"type": "evt.bench.maybe.success", "data": {"sum": context.data["a"] + context.data["b"]}}


def maybe_add_handler() -> ArvoEventHandler:
    """The ``com.bench.maybe`` service."""
    return ArvoEventHandler(contract=maybe_add_contract, executionunits=1, handler={"1.0.0": _maybe_add})


def _context(args: ActionArgs) -> dict[str, Any]:
    data = args.input["data"]
    return {"a": data["a"], "b": data["b"], "timeoutMs": data["timeoutMs"], "result": -1, "timedOut": False}


timeout_machine: ArvoMachine = setup_arvo_machine(
    contracts={
        "self": bench_timeout_contract.version("1.0.0"),
        "services": {"maybe": maybe_add_contract.version("1.0.0")},
    },
    delays={"TIMEOUT": lambda args: args.context["timeoutMs"]},
).create_machine(
    {
        "id": "timeout",
        "context": _context,
        "initial": "asking",
        "states": {
            "asking": {
                "entry": emit(
                    lambda args: {
                        "type": "com.bench.maybe",
                        "data": {"a": args.context["a"], "b": args.context["b"]},
                    }
                ),
                "on": {
                    "evt.bench.maybe.success": {
                        "target": "answered",
                        "actions": assign({"result": lambda args: args.event["data"]["sum"]}),
                    }
                },
                "after": {"TIMEOUT": {"target": "timed_out", "actions": assign({"timedOut": True})}},
            },
            "answered": {"type": "final"},
            "timed_out": {"type": "final"},
        },
        "output": lambda args: {"result": args.context["result"], "timedOut": args.context["timedOut"]},
    }
)
"""The timer workflow's statechart (version 1.0.0)."""


def timeout_orchestrator(memory: Memory, *, include_error_stack: bool = False) -> ArvoOrchestrator:
    """The ``arvo.orc.bench.timeout`` orchestrator."""
    return create_arvo_orchestrator(
        executionunits=1, memory=memory, machines=[timeout_machine], include_error_stack=include_error_stack
    )


def timers_app(memory: Memory, *, include_error_stack: bool = False) -> list[Any]:
    """The timer workflow's handlers (``ARVO_APP=service.examples.timers:timers_app``)."""
    return [maybe_add_handler(), timeout_orchestrator(memory, include_error_stack=include_error_stack)]
