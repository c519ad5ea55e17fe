"""The bench workflow's contracts (the same workflow is measured on the TypeScript original)."""

from __future__ import annotations

from pydantic import BaseModel

from service.arvo.contract import create_arvo_orchestrator_contract, create_simple_arvo_contract

__all__ = [
    "add_contract",
    "bench_machine_contract",
    "bench_resumable_contract",
    "bench_timeout_contract",
    "double_contract",
    "maybe_add_contract",
]


class AddInput(BaseModel):
    """Two numbers to add."""

    a: int
    b: int


class AddOutput(BaseModel):
    """Their sum."""

    sum: int


class DoubleInput(BaseModel):
    """A number to double."""

    value: int


class DoubleOutput(BaseModel):
    """Twice the number."""

    result: int


class BenchInit(BaseModel):
    """The workflow's input."""

    a: int
    b: int


class BenchComplete(BaseModel):
    """The workflow's result: ``2·(a+b)``."""

    result: int


add_contract = create_simple_arvo_contract(
    uri="#/bench/add",
    type="bench.add",
    versions={"1.0.0": {"accepts": AddInput, "emits": AddOutput}},
    description="Adds two integers.",
)
"""``com.bench.add`` → ``evt.bench.add.success``."""

double_contract = create_simple_arvo_contract(
    uri="#/bench/double",
    type="bench.double",
    versions={"1.0.0": {"accepts": DoubleInput, "emits": DoubleOutput}},
    description="Doubles an integer.",
)
"""``com.bench.double`` → ``evt.bench.double.success``."""

bench_machine_contract = create_arvo_orchestrator_contract(
    uri="#/bench/orchestrator",
    name="bench",
    versions={"1.0.0": {"init": BenchInit, "complete": BenchComplete}},
    description="The bench workflow as a statechart orchestrator.",
)
"""``arvo.orc.bench`` → ``arvo.orc.bench.done``."""

bench_resumable_contract = create_arvo_orchestrator_contract(
    uri="#/bench/resumable",
    name="bench.resumable",
    versions={"1.0.0": {"init": BenchInit, "complete": BenchComplete}},
    description="The bench workflow as a resumable.",
)
"""``arvo.orc.bench.resumable`` → ``arvo.orc.bench.resumable.done``."""


class TimeoutInit(BaseModel):
    """The timer workflow's input: two numbers and how long to wait for their sum."""

    a: int
    b: int
    timeoutMs: int  # noqa: N815 - wire name


class TimeoutComplete(BaseModel):
    """The sum, or ``-1`` when the service did not answer within ``timeoutMs``."""

    result: int
    timedOut: bool  # noqa: N815 - wire name


maybe_add_contract = create_simple_arvo_contract(
    uri="#/bench/maybe",
    type="bench.maybe",
    versions={"1.0.0": {"accepts": AddInput, "emits": AddOutput}},
    description="Adds two integers when b is odd; never answers when b is even (a lost reply).",
)
"""``com.bench.maybe`` → ``evt.bench.maybe.success`` (only for an odd ``b``)."""

bench_timeout_contract = create_arvo_orchestrator_contract(
    uri="#/bench/timeout",
    name="bench.timeout",
    versions={"1.0.0": {"init": TimeoutInit, "complete": TimeoutComplete}},
    description="Asks com.bench.maybe and gives up after timeoutMs (a delayed transition).",
)
"""``arvo.orc.bench.timeout`` → ``arvo.orc.bench.timeout.done``."""
