"""The consumer under dependency faults and lost state, on the fake Kafka (fast, no broker)."""

from __future__ import annotations

from typing import Any

import structlog
from aiokafka.errors import UnknownTopicOrPartitionError

from service.arvo.errors import TransactionViolation, TransactionViolationCause
from service.arvo.event import ArvoEvent
from service.arvo.execution import ExecutionOutcome, ExecutionResult, InheritFrom
from service.arvo.memory import InMemoryMemory
from service.runtime.redis_memory import RedisUnavailableError
from tests.unit.test_consumer_loop_unit import DLQ, ECHO, P0, SINK, by_key, echo, running, wait_until


class StoreDownHandler:
    """Fails like the engine does while Redis is down: the first ``outage`` attempts, whatever the event."""

    source = ECHO

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.attempts: dict[str, int] = {}

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        self.attempts[event.id] = self.attempts.get(event.id, 0) + 1
        if self.outage > 0:
            self.outage -= 1
            down = RedisUnavailableError("connection refused", operation="lease_and_read", key="x:1")
            raise TransactionViolation(
                cause=TransactionViolationCause.READ_FAILURE, message="Error acquiring lock"
            ) from down
        return ExecutionResult([], ExecutionOutcome.EXECUTED)


class NoStateHandler:
    """Answers every event like an orchestrator that has no record of the instance."""

    source = ECHO

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        return ExecutionResult([], ExecutionOutcome.IGNORED_NO_STATE)


async def test_records_wait_out_a_redis_outage_without_spending_their_budget() -> None:
    handler = StoreDownHandler(outage=20)  # far more failed attempts than retry_max_attempts (3)
    with structlog.testing.capture_logs() as logs:
        async with running(handler, partitions=1, dependency_probe_interval_ms=10) as rig:
            events = [echo(f"s{i}", n=i) for i in range(3)]
            for event in events:
                rig.produce(event)
            await wait_until(lambda: rig.committed() == len(events), timeout_s=10)
            assert rig.loop.stats.parked == 0
            assert not rig.loop.stats.dead_lettered
            assert rig.loop.stats.dependency_waits["redis"] >= 20
            assert rig.loop.stats.retries.total() == 0
            assert not rig.loop.dependencies.outages
    outage_lines = [e for e in logs if e["event"].startswith("dependency") and e["log_level"] == "warning"]
    assert [entry["event"].split(";")[0] for entry in outage_lines] == [
        "dependency unavailable",
        "dependency available again",
    ]


async def test_a_bounded_wait_parks_once_the_bound_passed() -> None:
    handler = StoreDownHandler(outage=10_000)
    async with running(
        handler, partitions=1, dependency_wait_max_s=0.05, dependency_probe_interval_ms=10
    ) as rig:
        rig.produce(echo("s1"))
        await wait_until(lambda: rig.committed() == 1, timeout_s=10)
        assert rig.loop.stats.parked == 1
        assert [letter.reason for letter in rig.kafka.dead_letters(DLQ)] == ["parked"]


async def test_an_event_for_an_instance_without_state_is_logged_and_dead_lettered() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(NoStateHandler(), partitions=1) as rig:
            lost = echo("lost-instance", n=1)
            rig.produce(lost)
            await wait_until(lambda: rig.committed() == 1)
            letters = rig.kafka.dead_letters(DLQ)
            assert [letter.reason for letter in letters] == ["no_state"]
            assert "ARVO_INSTANCE_RETENTION_S" in letters[0].error_message
            assert rig.loop.stats.consumed[(ECHO, lost.type, "ignored_no_state")] == 1
    warnings = [
        entry for entry in logs if entry["log_level"] == "warning" and "without state" in entry["event"]
    ]
    assert len(warnings) == 1
    fields: dict[str, Any] = warnings[0]
    assert (fields["event_id"], fields["event_type"], fields["subject"], fields["source"]) == (
        lost.id,
        lost.type,
        lost.subject,
        lost.source,
    )


async def test_dead_lettering_of_no_state_events_can_be_turned_off() -> None:
    async with running(NoStateHandler(), partitions=1, dead_letter_no_state=False) as rig:
        rig.produce(echo("lost-instance"))
        await wait_until(lambda: rig.committed() == 1)
        assert rig.kafka.dead_letters(DLQ) == []


# --- no record can stall a partition -----------------------------------------------------------------


async def test_a_publish_error_not_known_to_be_transient_dead_letters_after_bounded_attempts() -> None:
    async with running(partitions=1, publish_give_up_attempts=3) as rig:
        rig.client.fail(None, error=AssertionError("Need at least one: key or value"), when=by_key("bad"))
        rig.produce(echo("bad", n=1))
        good = echo("good", n=2)
        rig.produce(good)
        await wait_until(lambda: rig.committed() == 2)
        letters = rig.kafka.dead_letters(DLQ)
        assert [(letter.reason, letter.error_class) for letter in letters] == [
            ("unpublishable", "AssertionError")
        ]
        assert rig.sink() == [good.id]  # the partition went on


async def test_emissions_to_a_topic_that_does_not_exist_are_dead_lettered_unroutable() -> None:
    async with running(partitions=1, publish_give_up_attempts=2) as rig:
        del rig.kafka.partitions[SINK]  # deleted under the running service
        rig.client.fail(None, error=UnknownTopicOrPartitionError(), when=lambda record: record.topic == SINK)
        rig.produce(echo("s1"))
        await wait_until(lambda: rig.committed() == 1)
        letters = rig.kafka.dead_letters(DLQ)
        assert [letter.reason for letter in letters] == ["unroutable"]
        assert SINK in letters[0].error_message
        assert not rig.loop.dependencies.outages


async def test_an_unknown_topic_while_the_broker_does_not_answer_is_an_outage_not_the_records_fault() -> None:
    async with running(partitions=1, publish_give_up_attempts=2, retry_max_ms=2) as rig:
        rig.kafka.unreachable = True
        fault = rig.client.fail(
            8, error=UnknownTopicOrPartitionError(), when=lambda record: record.topic == SINK
        )
        rig.produce(echo("s1"))
        await wait_until(lambda: fault.hits == 8 and "kafka" in rig.loop.dependencies.outages)
        rig.kafka.unreachable = False
        await wait_until(lambda: rig.committed() == 1)
        assert rig.kafka.dead_letters(DLQ) == []
        assert len(rig.sink()) == 1
        assert not rig.loop.dependencies.outages


async def test_broker_trouble_is_waited_out_without_bound_and_logged_once() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(partitions=1, publish_give_up_attempts=2) as rig:
            rig.client.fail(8)
            rig.produce(echo("s1"))
            await wait_until(lambda: rig.committed() == 1)
            assert rig.kafka.dead_letters(DLQ) == []
    warnings = [entry["event"].split(";")[0] for entry in logs if entry["log_level"] == "warning"]
    assert warnings == ["dependency unavailable", "dependency available again"]


async def test_a_lane_with_waiting_records_and_no_progress_is_reported_stalled() -> None:
    async with running(partitions=1, stall_timeout_s=0.05) as rig:
        handler = rig.handler
        rig.produce(echo("s1", mode="gate", gate="g"))
        rig.produce(echo("s2"))
        await wait_until(lambda: rig.loop.stalled_partitions() != {})
        assert set(rig.loop.stalled_partitions()) == {P0}
        handler.gates["g"].set()
        await wait_until(lambda: rig.committed() == 2)
        assert rig.loop.stalled_partitions() == {}  # idle again: not stalled, however long it waits


async def test_failing_commits_are_tracked_and_warned_about_at_most_once_a_minute() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(partitions=1) as rig:
            rig.consumer.fail_commits = 40
            rig.consumer.commit_error = UnknownTopicOrPartitionError()
            rig.produce(echo("s1"))
            await wait_until(lambda: rig.consumer.fail_commits == 0)
            assert rig.loop.last_commit_error is not None or rig.committed() == 1
            await wait_until(lambda: rig.committed() == 1)
            assert rig.loop.commits_failing_for() == 0.0
            assert rig.loop.last_commit_error is None
    lines = [entry["event"] for entry in logs if entry["event"].startswith("offset commit")]
    assert lines == ["offset commit failed; will retry", "offset commits succeed again"]


class FrozenStoreMemory(InMemoryMemory):
    """A store that stops answering for a while (PING fails), as a SIGSTOPped Redis."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = True

    async def ping(self) -> bool:
        return not self.frozen


async def test_a_timeout_while_the_store_does_not_answer_is_an_outage_not_the_handlers_fault() -> None:
    memory = FrozenStoreMemory()
    async with running(
        partitions=1,
        memory=memory,
        handler_timeout_s=0.05,
        retry_max_attempts=2,
        dependency_probe_interval_ms=20,
    ) as rig:
        handler = rig.handler
        rig.produce(echo("s", mode="gate", gate="store"))  # the execution waits on the frozen store
        await wait_until(lambda: rig.loop.stats.dependency_waits["redis"] >= 3)
        assert rig.loop.stats.parked == 0
        assert "redis" in rig.loop.dependencies.outages
        memory.frozen = False
        handler.gates["store"].set()
        await wait_until(lambda: rig.committed() == 1)
        assert rig.kafka.dead_letters(DLQ) == []
        assert rig.loop.dependencies.outages == {}
