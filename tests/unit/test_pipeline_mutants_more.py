"""More of the pipeline's effects, pinned exactly: what a cancelled instance answers, the cancelled
record (without history when none is kept, without the reasons of a live or parked instance), the
span of a cancellation, of a violation and of a failed unlock, the trace parent by default, and
what the loop-lag watchdog sees while the core runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, cast

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.arvo import telemetry
from service.arvo.blocking import RunningHandler, running_handler
from service.arvo.errors import ExecutionViolation
from service.arvo.execution import ExecutionOutcome
from service.arvo.memory import Lease
from service.arvo.orchestration.cancellation import create_cancel_event
from service.arvo.orchestration.pipeline import (
    CoreRequest,
    CoreResult,
    EmissionDomains,
    Ignore,
    OrchestrationPipeline,
    decide,
)
from service.arvo.orchestration.record import InstanceRecord
from service.arvo.resumable import ResumableContext, ResumableResult
from service.arvo.subject import ArvoOrchestrationSubject
from tests.unit.test_pipeline_effects import (
    SELF,
    SOURCE,
    TRACEPARENT,
    RecordingMemory,
    call_increment,
    handler_span,
    init,
    instance_key,
    logs,
    reply,
    resumable,
    seed,
)

OPS = "com.test.ops"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = telemetry.use_tracer(provider.get_tracer("arvo-instrumentation", "1.0.0"))
    yield exporter
    telemetry.use_tracer(previous)
    provider.shutdown()


def cancelled_record() -> InstanceRecord:
    return cast("InstanceRecord", {"executionStatus": "cancelled", "status": "cancelled", "consumedIds": []})


# --- a cancelled instance ------------------------------------------------------------------------


def test_an_event_of_a_cancelled_instance_is_ignored_naming_the_event() -> None:
    answer = reply(init())
    parsed = ArvoOrchestrationSubject.parse(answer.subject)
    assert decide(parsed, SOURCE, answer, cancelled_record()) == Ignore(
        ExecutionOutcome.IGNORED_CANCELLED,
        f"The orchestration was cancelled. Ignoring event id: {answer.id} (type {answer.type}) with event"
        f" subject: {answer.subject}",
    )


def test_cancelling_a_cancelled_instance_says_it_was_already_cancelled() -> None:
    start = init()
    cancel = create_cancel_event(start.subject, source=OPS, reason="again")
    parsed = ArvoOrchestrationSubject.parse(start.subject)
    assert decide(parsed, SOURCE, cancel, cancelled_record()) == Ignore(
        ExecutionOutcome.NOTHING_TO_CANCEL,
        f"Nothing to cancel: instance {parsed.instance_key} was already cancelled (cancel event"
        f" id={cancel.id} from {OPS})",
    )


async def test_the_cancelled_record_drops_the_reasons_of_a_live_instance_and_keeps_no_history_when_asked(
    spans: InMemorySpanExporter,
) -> None:
    memory = RecordingMemory()
    agent = resumable(memory, call_increment)
    agent.keep_history(events=0, max_bytes=0)
    start = init()
    await seed(
        memory, start, statusReason="resumed by ops", parkedReason="parked earlier", history=[{"old": 1}]
    )
    result = await agent.execute(create_cancel_event(start.subject, source=OPS, reason="no longer needed"))
    assert result.outcome is ExecutionOutcome.CANCELLED
    record = await memory.inspect(instance_key(start))
    assert record is not None
    assert record["status"] == "cancelled"
    assert not {"history", "previous", "parkedReason", "statusReason"} & set(record)
    assert record["state$$"] == {"step": 1}  # where it stopped, for `arvo inspect`
    span = handler_span(spans)
    assert (
        "WARNING",
        f"Orchestration cancelled by {OPS}: no longer needed (0 child orchestrations cancelled in turn)",
    ) in logs(span)


# --- spans -----------------------------------------------------------------------------------------


async def test_a_violation_is_recorded_on_the_span_as_the_exception(spans: InMemorySpanExporter) -> None:
    async def violate(ctx: ResumableContext) -> ResumableResult | None:
        raise ExecutionViolation("no way")

    with pytest.raises(ExecutionViolation):
        await resumable(RecordingMemory(), violate).execute(init())
    span = handler_span(spans)
    assert span.attributes is not None
    assert span.attributes["exception.type"] == "ViolationError<Execution>"
    assert span.attributes["exception.message"] == "ViolationError<Execution> no way"
    [recorded] = [event for event in span.events if event.name == "exception"]
    assert (recorded.attributes or {})["exception.type"] == "service.arvo.errors.ExecutionViolation"


class UnlockFails(RecordingMemory):
    async def release(self, lease: Lease) -> bool:
        raise ConnectionError("unlock refused")


async def test_a_failed_unlock_is_logged_on_the_span_as_a_possible_leak(spans: InMemorySpanExporter) -> None:
    result = await resumable(UnlockFails(), call_increment).execute(reply(init()))
    assert result.outcome is ExecutionOutcome.IGNORED_NO_STATE
    assert ("ERROR", "Memory unlock operation failed - Possible resource leak: unlock refused") in logs(
        handler_span(spans)
    )


async def test_by_default_the_handler_span_continues_the_events_trace_not_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    async def core(request: CoreRequest) -> CoreResult:
        return CoreResult(
            raw_events=[], self_contract=SELF, service_contracts={}, status="active", completed=False
        )

    pipeline = OrchestrationPipeline(
        source=SOURCE,
        kind="orchestrator",
        memory=RecordingMemory(),
        core=core,
        error_contract=SELF,
        executionunits=0,
        domains=EmissionDomains(),
        span_attributes={},
        span_name=lambda event: "the step",
    )
    tracer = trace.get_tracer("test", tracer_provider=TracerProvider())
    with tracer.start_as_current_span("unrelated work"):
        await pipeline.execute(init(traceparent=TRACEPARENT))
    [span] = [span for span in spans.get_finished_spans() if span.name == "the step"]
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == TRACEPARENT.split("-")[2]


# --- the watchdog ----------------------------------------------------------------------------------


async def test_while_the_core_runs_the_watchdog_sees_the_handler_and_its_event() -> None:
    seen: list[Any] = []

    async def look(ctx: ResumableContext) -> ResumableResult | None:
        seen.append(running_handler(sys._getframe()))
        return await call_increment(ctx)

    start = init()
    await resumable(RecordingMemory(), look).execute(start)
    assert seen == [RunningHandler(SOURCE, start)]
    assert running_handler(sys._getframe()) is None  # and no longer once it returned
