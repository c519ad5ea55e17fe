"""Every failure is logged once where it happens, and no instance stays ``active`` silently."""

from __future__ import annotations

from typing import Any

import structlog
from aiokafka import TopicPartition

from contracts.bench import add_contract
from service.arvo.event import create_arvo_event
from service.arvo.handler import ArvoEventHandler
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples.bench import bench_orchestrator
from tests.integration._service import bench_init
from tests.unit.test_consumer_loop_unit import DLQ, echo, running, wait_until

ORCHESTRATOR = "arvo.orc.bench"
ORCHESTRATOR_P0 = TopicPartition(ORCHESTRATOR, 0)


def warnings(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
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
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
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
