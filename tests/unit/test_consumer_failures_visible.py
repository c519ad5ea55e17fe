"""Every failure is logged once where it happens, and no instance stays ``active`` silently."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from typer.testing import CliRunner

import service.cli as cli
from contracts.bench import add_contract
from service.arvo.event import create_arvo_event
from service.arvo.handler import ArvoEventHandler
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples.bench import bench_orchestrator
from service.runtime.logging import add_trace_context
from tests.integration._service import bench_init
from tests.unit.test_consumer_loop_unit import DLQ, ECHO, echo, running, wait_until

ORCHESTRATOR = "arvo.orc.bench"
ORCHESTRATOR_P0 = TopicPartition(ORCHESTRATOR, 0)


def warnings(logs: Sequence[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event and entry["log_level"] in {"warning", "error"}]


async def test_a_handler_exception_becomes_a_system_error_and_one_warning_line() -> None:
    async def broken(context: Any) -> Any:
        raise RuntimeError("the payment provider said no")

    handler = ArvoEventHandler(contract=add_contract, executionunits=1, handler={"1.0.0": broken})
    request = create_arvo_event(
        source="com.test.caller",
        type="com.bench.add",
        subject="subject-1",
        data={"a": 1, "b": 2},
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    log_context = [structlog.contextvars.merge_contextvars, add_trace_context]
    with structlog.testing.capture_logs(processors=log_context) as logs:
        async with running(handler, partitions=1, topic="com.bench.add") as rig:
            rig.produce(request, topic="com.bench.add")
            await wait_until(lambda: rig.committed(TopicPartition("com.bench.add", 0)) == 1)
            [sent] = [record for record in rig.client.acked if record.topic == "com.test.caller"]
            assert sent.event.type == "sys.com.bench.add.error"
    [line] = warnings(logs, "handler failed; system error sent to the initiator")
    assert line["handler"] == "com.bench.add"
    assert (line["event_id"], line["event_type"], line["subject"]) == (
        request.id,
        "com.bench.add",
        "subject-1",
    )
    assert line["error_class"] == "RuntimeError"
    assert line["error"] == "the payment provider said no"
    # The line is found from the workflow's trace (and back): the event's trace id, a span id.
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
    assert line["log_level"] == "warning"


async def test_a_timed_out_handler_is_retried_with_a_warning_and_its_dead_letter_names_the_setting() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(partitions=1, handler_timeout_s=0.05, retry_max_attempts=2) as rig:
            rig.produce(echo("s", mode="stuck"))
            await wait_until(lambda: rig.committed() == 1)
            [letter] = rig.kafka.dead_letters(DLQ)
    assert letter.reason == "parked"
    assert letter.error_class == "HandlerTimeoutError"
    assert "ARVO_HANDLER_TIMEOUT_S=0.05 s" in letter.error_message
    [retry] = warnings(logs, "transient failure; retrying in place")
    assert retry["error_class"] == "HandlerTimeoutError"
    [dead] = warnings(logs, "record dead-lettered")
    assert (dead["reason"], dead["error_class"]) == ("parked", "HandlerTimeoutError")
    assert "ARVO_HANDLER_TIMEOUT_S" in dead["error"]


async def test_a_reply_breaking_the_contract_parks_its_instance_with_the_dead_letter_coordinates() -> None:
    memory = InMemoryMemory()
    orchestrator = bench_orchestrator(memory)
    with structlog.testing.capture_logs() as logs:
        async with running(orchestrator, partitions=1, topic=ORCHESTRATOR, memory=memory) as rig:
            init = bench_init(2)
            rig.produce(init, topic=ORCHESTRATOR)
            await wait_until(lambda: rig.committed(ORCHESTRATOR_P0) == 1)
            key = ArvoOrchestrationSubject.parse(init.subject).instance_key
            assert (await memory.list_instances())[0].status is InstanceStatus.ACTIVE
            bad_reply = create_arvo_event(
                source="com.bench.add",
                type="evt.bench.add.success",
                subject=init.subject,
                to=ORCHESTRATOR,
                data={"sum": "not a number"},
            )
            offset = rig.produce(bad_reply, topic=ORCHESTRATOR)
            await wait_until(lambda: rig.committed(ORCHESTRATOR_P0) == 2)
            assert [letter.reason for letter in rig.kafka.dead_letters(DLQ)] == ["contract"]
    [row] = await memory.list_instances()
    assert (row.key, row.status) == (key, InstanceStatus.PARKED)
    record = await memory.inspect(key)
    assert record is not None
    reason = record["parkedReason"]
    assert f"dead letter 'contract' of {ORCHESTRATOR}/0@{offset}" in reason
    assert bad_reply.id in reason
    [marked] = warnings(logs, "instance marked parked")
    assert marked["instance"] == key


async def test_a_stateless_service_does_not_create_instances_it_cannot_see() -> None:
    memory = InMemoryMemory()
    async with running(partitions=1, memory=memory) as rig:
        subject = ArvoOrchestrationSubject.new(
            orchestrator=ORCHESTRATOR, version="1.0.0", initiator="com.test.client"
        )
        rig.produce(echo(subject, mode="contract"))
        await wait_until(lambda: rig.committed() == 1)
    assert await memory.list_instances() == []


async def test_the_happy_path_writes_no_line_per_record() -> None:
    log_context = [structlog.contextvars.merge_contextvars]
    with structlog.testing.capture_logs(processors=log_context) as logs:
        async with running(partitions=1) as rig:
            for index in range(20):
                rig.produce(echo(f"s{index}"))
            await wait_until(lambda: rig.committed() == 20)
    per_record = [entry for entry in logs if entry["log_level"] != "debug" and "offset" in entry]
    assert per_record == []
    assert [entry for entry in logs if entry["log_level"] in {"warning", "error", "critical"}] == []


async def _service_times_out_on_a_live_workflow() -> tuple[InMemoryMemory, str, int]:
    """A stateless service (not the orchestrator) times out on an event of a live bench workflow."""
    memory = InMemoryMemory()
    subject = ArvoOrchestrationSubject.new(
        orchestrator=ORCHESTRATOR, version="1.0.0", initiator="com.test.client"
    )
    key = ArvoOrchestrationSubject.parse(subject).instance_key
    grant = await memory.lease_and_read(key, ttl_ms=1_000)
    assert grant.lease is not None
    await memory.commit_and_release(grant.lease, {"status": "active"}, status=InstanceStatus.ACTIVE)
    async with running(partitions=1, memory=memory, handler_timeout_s=0.05, retry_max_attempts=2) as rig:
        offset = rig.produce(echo(subject, mode="stuck"))
        await wait_until(lambda: rig.committed() == 1)
        assert [letter.reason for letter in rig.kafka.dead_letters(DLQ)] == ["parked"]
    return memory, key, offset


def test_a_service_timing_out_on_a_live_workflow_shows_the_workflow_parked_in_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory, key, offset = asyncio.run(_service_times_out_on_a_live_workflow())
    for name in list(os.environ):
        if name.upper().startswith("ARVO_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "_open_memory", lambda settings: memory)
    runner = CliRunner()
    listed = runner.invoke(cli.app, ["instances", "list", "--status", "parked"])
    assert listed.exit_code == 0, listed.output
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()[1:]] == [[key, "parked"]]
    assert runner.invoke(cli.app, ["instances", "list", "--status", "active"]).stdout.count("\n") == 1
    shown = runner.invoke(cli.app, ["inspect", key])
    assert shown.exit_code == 0, shown.output
    [reason] = [line for line in shown.stdout.splitlines() if line.startswith("parked reason:")]
    assert "HandlerTimeoutError: handler 'com.test.echo' did not finish" in reason
    assert "ARVO_HANDLER_TIMEOUT_S=0.05 s" in reason
    assert f"dead letter 'parked' of {ECHO}/0@{offset}" in shown.stdout.replace("\n", " ")
