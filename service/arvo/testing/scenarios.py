"""Scenario tables for handlers: steps whose inputs are built from the previous step's events.

Use with pytest::

    @pytest.mark.parametrize("case", SUITE.cases, ids=lambda case: case.name)
    async def test_greeting_handler(case):
        await run_test_case(handler, case)   # raises AssertionError describing the failing step

Repeated cases run their iterations one after another (the original ran them concurrently on
shared state, which made them flaky by construction).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from service.arvo.event import ArvoEvent
from service.arvo.execution import ArvoHandler

_T = TypeVar("_T")

__all__ = ["ArvoTestCase", "ArvoTestStep", "TestCaseReport", "run_test_case"]

StepInput = Callable[[list[ArvoEvent] | None], ArvoEvent | Awaitable[ArvoEvent]]
EventsCheck = Callable[[list[ArvoEvent]], bool | Awaitable[bool]]
ErrorCheck = Callable[[BaseException], bool | Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class ArvoTestStep:
    """One step: build the input from the previous events, then check the outcome."""

    input: StepInput
    expect_events: EventsCheck | None = None
    expect_error: ErrorCheck | None = None


@dataclass(frozen=True, slots=True)
class ArvoTestCase:
    """A named sequence of steps, optionally repeated with a success threshold (percent)."""

    name: str
    steps: Sequence[ArvoTestStep]
    repeat: int = 1
    success_threshold: float = 100.0


@dataclass(slots=True)
class TestCaseReport:
    """Outcome of :func:`run_test_case`."""

    __test__ = False  # not a pytest test class

    name: str
    iterations: int = 0
    passed: int = 0
    failures: list[str] = field(default_factory=list)


async def _maybe_await(value: _T | Awaitable[_T]) -> _T:
    if inspect.isawaitable(value):
        return await value
    return value


async def _run_once(handler: ArvoHandler, case: ArvoTestCase) -> str | None:
    previous: list[ArvoEvent] | None = None
    for index, step in enumerate(case.steps):
        event = await _maybe_await(step.input(previous))
        try:
            result = await handler.execute(event)
        except Exception as error:
            if step.expect_error is None:
                return f"Step {index}: Unexpected exception: {error!r}"
            if not await _maybe_await(step.expect_error(error)):
                return f"Step {index}: error did not match the expectation: {error!r}"
            previous = []
            continue
        if step.expect_error is not None:
            return f"Step {index}: expected an error, got {len(result.events)} events"
        if step.expect_events is not None:
            try:
                ok = await _maybe_await(step.expect_events(result.events))
            except Exception as error:
                ok = False
                detail = f" (predicate raised {error!r})"
            else:
                detail = ""
            if not ok:
                rendered = "\n".join(item.to_json().decode() for item in result.events)
                return f"Step {index}: events did not match the expectation{detail}:\n{rendered}"
        previous = result.events
    return None


async def run_test_case(handler: ArvoHandler, case: ArvoTestCase) -> TestCaseReport:
    """Run ``case`` against ``handler``; raise :class:`AssertionError` below the success threshold."""
    report = TestCaseReport(name=case.name)
    for _ in range(max(1, case.repeat)):
        failure = await _run_once(handler, case)
        report.iterations += 1
        if failure is None:
            report.passed += 1
        else:
            report.failures.append(failure)
    rate = 100.0 * report.passed / report.iterations
    if rate < case.success_threshold:
        shown = "\n".join(report.failures[:10])
        raise AssertionError(
            f"{case.name}: {report.passed}/{report.iterations} iterations passed "
            f"({rate:.0f}% < {case.success_threshold:.0f}%)\n{shown}"
        )
    return report
