"""Processing one record, as the operator sees it: what is dead-lettered with which reason and text,
which instance is marked parked and why, the log lines (retries, dependency waits, system errors,
events without state) with their fields, the record's span, and the counters and hooks.

Whole records go through the consumer loop over :mod:`tests.unit.fake_kafka`; what the loop can
never hand over (a topic no handler consumes) goes to :class:`RecordProcessor` directly.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from service.arvo.availability import DependencyUnavailableError
from service.arvo.errors import ContractViolation, TransactionViolation, TransactionViolationCause
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.execution import ExecutionOutcome, ExecutionResult, InheritFrom
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime import otel
from service.runtime.consumer import FailureBudget, LoopHooks, RecordProcessor
from service.runtime.consumer.processing import instance_key, owned_instance_key
from service.runtime.retry import RetryPolicy
from tests.unit.fake_kafka import FakeKafka
from tests.unit.test_consumer_loop_unit import (
    CLIENT,
    DLQ,
    ECHO,
    P0,
    SINK,
    EchoHandler,
    echo,
    running,
    wait_until,
)
from tests.unit.test_consumer_mutants_loop import rig
from tests.unit.test_consumer_mutants_publishing import DeadLetters
from tests.unit.test_consumer_mutants_publishing import Rig as PublisherRig

PROCESSING = sys.modules["service.runtime.consumer.processing"]
OTHER = "com.test.other"


def lines(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def owned_subject() -> str:
    """An orchestration subject of the echo handler: it owns the instance."""
    return ArvoOrchestrationSubject.new(orchestrator=ECHO, initiator=CLIENT, version="1.0.0")


async def seed(memory: InMemoryMemory, subject: str) -> str:
    """Store a record for the instance of ``subject`` (a parked reason is kept in the record)."""
    key = ArvoOrchestrationSubject.parse(subject).instance_key
    grant = await memory.lease_and_read(key, ttl_ms=1_000)
    assert grant.lease is not None
    await memory.commit_and_release(grant.lease, {"status": "active"}, status=InstanceStatus.ACTIVE)
    return key


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = otel.use_tracer_provider(provider)
    yield exporter
    otel.use_tracer_provider(previous)
    provider.shutdown()


class Hooks(LoopHooks):
    def __init__(self) -> None:
        self.retries: list[tuple[str, str]] = []

    def on_retry(self, topic: str, error_class: str) -> None:
        self.retries.append((topic, error_class))


class Returning:
    """A handler of the echo topic returning ``result``; records how it was asked to trace."""

    source = ECHO

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result
        self.inherit: list[str] = []

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        self.inherit.append(inherit_from)
        return self.result


class Failing:
    """A handler of the echo topic raising ``errors`` in turn, then returning nothing."""

    source = ECHO

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.attempts = 0

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return ExecutionResult()


def processor(pub: PublisherRig, handler: Any = None) -> RecordProcessor:
    return RecordProcessor(
        handlers={ECHO: handler or EchoHandler()},
        publisher=pub.publisher,
        failure_budget=lambda: FailureBudget(
            RetryPolicy(initial_ms=0, max_ms=0, max_attempts=3, jitter=0.0), lease_wait_budget_s=0.1
        ),
        handler_timeout_s=1.0,
        max_event_bytes=1_000_000,
        stats=pub.stats,
        hooks=pub.hooks,
        finish=pub.finish,
        dependencies=pub.dependencies,
    )


# --- the keys that order a lane -------------------------------------------------------------------


def test_an_orchestration_subject_orders_by_its_instance_and_any_other_subject_by_itself() -> None:
    subject = owned_subject()
    key = ArvoOrchestrationSubject.parse(subject).instance_key
    assert instance_key(subject) == key != subject
    assert instance_key("order-17") == "order-17"


def test_only_the_orchestration_named_in_the_subject_owns_its_instance() -> None:
    subject = owned_subject()
    assert owned_instance_key(subject, ECHO) == ArvoOrchestrationSubject.parse(subject).instance_key
    assert owned_instance_key(subject, OTHER) is None
    assert owned_instance_key("order-17", ECHO) is None


# --- records the loop cannot run ------------------------------------------------------------------


async def test_a_record_of_a_topic_no_handler_consumes_is_dead_lettered_as_no_handler(
    spans: InMemorySpanExporter,
) -> None:
    pub = PublisherRig(dlq=DeadLetters(KafkaConnectionError("dlq down")))
    record = FakeKafka().append_event(OTHER, 0, echo("s"))
    await processor(pub).process(pub.lane, record)
    assert [
        (letter.reason, letter.error_class, letter.error_message, letter.attempts)
        for letter in pub.dlq.attempts
    ] == [("no_handler", "LookupError", "no handler consumes topic 'com.test.other'", 1)] * 2
    assert pub.lane.sleeps == [0.001]  # the dead letter waited on this record's lane
    [(lane, finished, event_type, outcome, _)] = pub.finished
    assert (lane, finished, event_type, outcome) == (pub.lane, record, ECHO, "dead_lettered")
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "LookupError: no handler consumes topic 'com.test.other'"
    assert [event.name for event in span.events] == ["exception"]


async def test_an_undecodable_record_is_dead_lettered_counted_without_a_type_and_its_span_fails(
    spans: InMemorySpanExporter,
) -> None:
    pub = PublisherRig(dlq=DeadLetters(KafkaConnectionError("dlq down")))
    record = FakeKafka().append(ECHO, 0, key=b"k", value=b"not json")
    await processor(pub).process(pub.lane, record)
    assert [(letter.reason, letter.error_class) for letter in pub.dlq.attempts] == [
        ("not_json", "RecordDecodeError")
    ] * 2
    assert pub.lane.sleeps == [0.001]
    [(_, _, event_type, outcome, _)] = pub.finished
    assert (event_type, outcome) == ("", "dead_lettered")
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert dict(span.attributes or {})["arvo.consumer.outcome"] == "dead_lettered"


async def test_a_record_handed_to_the_producer_carries_its_outcome_on_its_span(
    spans: InMemorySpanExporter,
) -> None:
    pub = PublisherRig()
    record = FakeKafka().append_event(ECHO, 0, echo("s"))
    await processor(pub).process(pub.lane, record)
    await pub.publisher.drain(pub.lane)
    [span] = spans.get_finished_spans()
    assert dict(span.attributes or {})["arvo.consumer.outcome"] == "ok"
    assert [outcome for *_, outcome, _ in pub.finished] == ["ok"]


async def test_the_handler_is_asked_to_continue_the_records_span() -> None:
    handler = Returning(ExecutionResult())
    pub = PublisherRig()
    await processor(pub, handler).process(pub.lane, FakeKafka().append_event(ECHO, 0, echo("s")))
    assert handler.inherit == ["CONTEXT"]


# --- what a handler's result says -----------------------------------------------------------------


def system_error(subject: str, data: dict[str, Any]) -> ArvoEvent:
    return create_arvo_event(
        source=ECHO, type="sys.com.test.echo.error", subject=subject, to=CLIENT, data=data
    )


@pytest.mark.parametrize(
    ("data", "error_class", "error"),
    [
        ({"errorName": "ValueError", "errorMessage": "m" * 600}, "ValueError", "m" * 500),
        ({}, "", ""),
    ],
    ids=["named", "bare"],
)
async def test_a_system_error_result_is_logged_once_with_the_failure(
    data: dict[str, Any], error_class: str, error: str
) -> None:
    event = echo("s")
    notice = create_arvo_event(source=ECHO, type="com.test.notice", subject="s", to=SINK, data={})
    emitted = [notice, system_error("s", data), system_error("s", {"errorName": "Second"})]
    async with rig(Returning(ExecutionResult(emitted, ExecutionOutcome.SYSTEM_ERROR))) as r:
        with structlog.testing.capture_logs() as logs:
            r.produce(event)
            await wait_until(lambda: r.committed() == 1)
    assert lines(logs, "handler failed; system error sent to the initiator") == [
        {
            "event": "handler failed; system error sent to the initiator",
            "log_level": "warning",
            "handler": ECHO,
            "event_id": event.id,
            "event_type": event.type,
            "subject": "s",
            "error_class": error_class,
            "error": error,
            "system_error_type": "sys.com.test.echo.error",
            "system_error_to": CLIENT,
        }
    ]
    assert r.loop.stats.consumed[(ECHO, ECHO, "system_error")] == 1


@pytest.mark.parametrize("dead_letter", [True, False], ids=["dead_lettered", "dropped"])
async def test_an_event_for_an_instance_without_state_is_never_silent(dead_letter: bool) -> None:
    subject = owned_subject()
    event = echo(subject)
    handler = Returning(ExecutionResult([], ExecutionOutcome.IGNORED_NO_STATE))
    async with rig(handler, dead_letter_no_state=dead_letter) as r:
        with structlog.testing.capture_logs() as logs:
            r.produce(event)
            await wait_until(lambda: r.committed() == 1)
        letters = r.kafka.dead_letters(DLQ)
    action = "dead-lettering it (reason no_state)" if dead_letter else "dropping it"
    [line] = [entry for entry in logs if entry["event"].startswith("event for an instance without state")]
    assert line["event"] == f"event for an instance without state (lost or expired); {action}"
    assert (line["log_level"], line["handler"], line["source"]) == ("warning", ECHO, CLIENT)
    if not dead_letter:
        assert letters == []
        return
    [letter] = letters
    assert (letter.reason, letter.error_class) == ("no_state", "LookupError")
    key = ArvoOrchestrationSubject.parse(subject).instance_key
    assert letter.error_message == (
        f"no state for instance {key!r} of {ECHO!r}: event {event.id} ({ECHO} from {CLIENT}) is not its init"
        " event. The state was lost (Redis restarted without durability) or expired"
        " (ARVO_INSTANCE_RETENTION_S); replay this letter after restoring it."
    )


# --- failures -------------------------------------------------------------------------------------


async def test_a_transient_failure_is_logged_counted_and_reported_to_the_hooks() -> None:
    hooks = Hooks()
    error = RuntimeError("x" * 600)
    event = echo("s")
    async with rig(Failing(error), metrics_hooks=hooks) as r:
        with structlog.testing.capture_logs() as logs:
            r.produce(event)
            await wait_until(lambda: r.committed() == 1)
    assert hooks.retries == [(ECHO, "RuntimeError")]
    assert lines(logs, "transient failure; retrying in place") == [
        {
            "event": "transient failure; retrying in place",
            "log_level": "warning",
            "topic": ECHO,
            "partition": 0,
            "offset": 0,
            "event_id": event.id,
            "event_type": ECHO,
            "subject": "s",
            "error_class": "RuntimeError",
            "error": "x" * 500,
            "attempt": 1,
            "delay_s": 0.001,
        }
    ]


async def test_a_leaked_cancellation_is_parked_with_a_message_naming_the_handler() -> None:
    async with running(partitions=1) as r:
        r.produce(echo("s", mode="cancelled"))
        await wait_until(lambda: r.committed() == 1)
        [letter] = r.kafka.dead_letters(DLQ)
    assert (letter.reason, letter.error_class) == ("parked", "HandlerCancelledError")
    assert letter.error_message == f"handler {ECHO!r} raised CancelledError without being cancelled"


async def test_a_permanent_violation_names_the_handler_and_parks_its_instance_with_the_letters_coordinates() -> (
    None
):
    memory = InMemoryMemory()
    subject = owned_subject()
    key = await seed(memory, subject)
    event = echo(subject, mode="contract")
    async with running(partitions=1, memory=memory) as r:
        with structlog.testing.capture_logs() as logs:
            r.produce(event)
            await wait_until(lambda: r.committed() == 1)
    [line] = lines(logs, "record dead-lettered")
    assert (line["reason"], line["handler"], line["attempts"]) == ("contract", ECHO, 1)
    error = ContractViolation(f"data of {event.id} breaks the contract")
    record = await memory.inspect(key)
    assert record is not None
    assert record["parkedReason"] == (
        f"ContractViolation: {error} (dead letter 'contract' of {ECHO}/0@0, event {ECHO} id={event.id}"
        f" handled by {ECHO})"
    )


async def test_parked_records_are_counted_and_their_instances_say_after_how_many_attempts() -> None:
    memory = InMemoryMemory()
    subjects = [owned_subject(), owned_subject()]
    keys = [await seed(memory, subject) for subject in subjects]
    events = [echo(subject, mode="down") for subject in subjects]
    async with running(partitions=1, memory=memory) as r:
        for event in events:
            r.produce(event)
        await wait_until(lambda: r.committed() == 2)
        assert r.loop.stats.parked == 2
    error = TransactionViolation(
        cause=TransactionViolationCause.LOCK_UNACQUIRED, message=f"{subjects[1]} is locked"
    )
    record = await memory.inspect(keys[1])
    assert record is not None
    assert record["parkedReason"] == (
        f"TransactionViolation: {str(error)[:300]} (after 3 attempts; dead letter 'parked' of {ECHO}/0@1,"
        f" event {ECHO} id={events[1].id} handled by {ECHO})"
    )


async def test_emissions_that_can_never_be_published_park_the_owned_instance() -> None:
    memory = InMemoryMemory()
    subject = owned_subject()
    key = await seed(memory, subject)
    event = echo(subject)
    async with running(partitions=1, memory=memory) as r:
        r.client.fail_permanently(when=lambda sent: sent.topic == SINK)
        r.produce(event)
        await wait_until(lambda: r.committed() == 1)
    record = await memory.inspect(key)
    assert record is not None
    assert record["parkedReason"] == (
        f"MessageSizeTooLargeError: {MessageSizeTooLargeError('record too large (fake)')} (dead letter"
        f" 'unpublishable' of {ECHO}/0@0, event {ECHO} id={event.id} handled by {ECHO})"
    )
    assert [row.status for row in await memory.list_instances()] == [InstanceStatus.PARKED]


class BrokenStatus(InMemoryMemory):
    async def set_status(self, key: str, status: InstanceStatus, *, reason: str | None = None) -> None:
        raise ConnectionError("redis refused")


async def test_an_instance_that_cannot_be_marked_parked_is_logged_and_the_letter_stands() -> None:
    subject = owned_subject()
    async with running(partitions=1, memory=BrokenStatus()) as r:
        with structlog.testing.capture_logs() as logs:
            r.produce(echo(subject, mode="contract"))
            await wait_until(lambda: r.committed() == 1)
        assert [letter.reason for letter in r.kafka.dead_letters(DLQ)] == ["contract"]
    assert lines(logs, "could not mark instance parked") == [
        {
            "event": "could not mark instance parked",
            "log_level": "error",
            "instance": ArvoOrchestrationSubject.parse(subject).instance_key,
            "error": repr(ConnectionError("redis refused")),
        }
    ]


# --- dependencies ---------------------------------------------------------------------------------


class RedisDown(DependencyUnavailableError):
    dependency = "redis"


async def test_a_record_waits_for_its_dependency_and_runs_again_as_soon_as_it_is_back() -> None:
    error = RedisDown("connection refused")
    handler = Failing(error)
    event = echo("s")
    # Backoffs far longer than the test: only the dependency coming back ends the wait.
    async with rig(handler, retry_initial_ms=10_000, retry_max_ms=10_000) as r:
        with structlog.testing.capture_logs() as logs:
            r.produce(event)
            await wait_until(lambda: not r.loop.dependencies.is_up("redis"))
            await asyncio.sleep(0.02)
            assert handler.attempts == 1
            r.loop.dependencies.report_up("redis")
            await wait_until(lambda: r.committed() == 1)
        assert handler.attempts == 2
        assert r.loop.stats.dependency_waits == {"redis": 1}
    assert lines(logs, "dependency unavailable; the record waits") == [
        {
            "event": "dependency unavailable; the record waits",
            "log_level": "debug",
            "topic": ECHO,
            "partition": 0,
            "offset": 0,
            "event_id": event.id,
            "event_type": ECHO,
            "subject": "s",
            "dependency": "redis",
            "error": repr(error),
        }
    ]


class SilentStore(InMemoryMemory):
    """A store that stopped answering: ``PING`` never returns."""

    async def ping(self) -> bool:
        await asyncio.Event().wait()
        return True


async def test_a_timeout_while_the_store_does_not_answer_is_an_outage_of_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(PROCESSING, "_STORE_CHECK_S", 0.02)
    async with rig(memory=SilentStore(), handler_timeout_s=0.02, drain_timeout_s=0.05) as r:
        r.produce(echo("s", mode="stuck"))
        await wait_until(lambda: not r.loop.dependencies.is_up("redis"), timeout_s=0.5)
        [outage] = r.loop.dependencies.outages.values()
        assert outage.reason == (
            f"StoreStalledError: handler {ECHO!r} timed out while its store did not answer PING: waiting for"
            " the store"
        )
        assert r.kafka.records(DLQ) == []


# --- progress ------------------------------------------------------------------------------------


class Clock:
    """A manual ``time`` module (``monotonic``, ``perf_counter``) for the loop, its lanes and processing."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


async def test_finishing_a_record_restarts_the_stall_clock_of_a_lane_with_more_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    for module in ("loop", "lanes", "processing"):
        monkeypatch.setattr(sys.modules[f"service.runtime.consumer.{module}"], "time", clock)
    async with rig(stall_timeout_s=10.0) as r:
        first, second = echo("a", mode="gate", gate="a"), echo("b", mode="gate", gate="b")
        r.produce(first)
        r.produce(second)
        await wait_until(lambda: first.id in r.handler.attempts)
        clock.now += 10
        assert r.loop.stalled_partitions() == {P0: 10.0}
        r.handler.gates["a"].set()
        await wait_until(lambda: r.consumed() == 1 and second.id in r.handler.attempts)
        assert r.loop.stalled_partitions() == {}
        clock.now += 15
        assert r.loop.stalled_partitions() == {P0: 15.0}
        r.handler.gates["b"].set()
        await wait_until(lambda: r.committed() == 2)
