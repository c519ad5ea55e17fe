"""The service commands of ``arvo`` against the real broker and Redis.

The service (the embedded default app) runs in this process for the whole module; ``arvo publish``,
``inspect``, ``instances list`` and ``dlq list/replay`` run as subprocesses configured through the
same ``ARVO_*`` settings, as an operator runs them next to a deployment.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.app import ArvoService
from service.runtime.dlq import read_dead_letters
from tests.integration._kafka import KafkaNames, kafka_test_settings, produce_records, unique_name
from tests.integration._redis import unique_prefix
from tests.integration._service import (
    CliResult,
    delete_redis_prefix,
    run_cli,
    running_service,
    service_env,
    wait_until,
)

pytestmark = pytest.mark.integration


@dataclass
class Deployment:
    service: ArvoService
    env: dict[str, str]
    cwd: Path

    async def arvo(self, *args: str, **env: str) -> CliResult:
        return await run_cli(*args, env=self.env | env, cwd=self.cwd)


@pytest.fixture(scope="module")
async def deployment(
    kafka_bootstrap: str, shared_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    names = KafkaNames(prefix=f"{unique_name()}.", group=unique_name("g"))
    prefix = unique_prefix()
    settings = kafka_test_settings(
        kafka_bootstrap, names, redis_url=shared_redis_url, redis_key_prefix=prefix
    )
    try:
        async with running_service(settings) as service:
            yield Deployment(service=service, env=service_env(settings), cwd=tmp_path_factory.mktemp("cli"))
    finally:
        await delete_redis_prefix(shared_redis_url, prefix)


def _published(result: CliResult) -> tuple[str, str, dict[str, object] | None]:
    lines = result.stdout.split("\n", 2)
    assert lines[0].startswith("id: "), result
    assert lines[1].startswith("subject: "), result
    reply = json.loads(lines[2]) if lines[2].strip() else None
    return lines[0].removeprefix("id: "), lines[1].removeprefix("subject: "), reply


async def test_publish_wait_prints_the_completion_and_inspect_and_list_show_the_done_instance(
    deployment: Deployment,
) -> None:
    result = await deployment.arvo("publish", "arvo.orc.bench", "--data", '{"a": 2, "b": 3}', "--wait")
    assert result.returncode == 0, result
    event_id, subject, reply = _published(result)
    assert reply is not None
    assert (reply["type"], reply["parentid"], reply["data"]) == (
        "arvo.orc.bench.done",
        event_id,
        {"result": 10},
    )

    inspected = await deployment.arvo("inspect", subject)
    assert inspected.returncode == 0, inspected
    key = ArvoOrchestrationSubject.parse(subject).instance_key
    assert f"instance:        {key}" in inspected.stdout
    assert "status:          done" in inspected.stdout
    assert 'machine value:   "done"' in inspected.stdout
    assert "last consumed:   evt.bench.double.success" in inspected.stdout
    assert "arvo.orc.bench.done" in inspected.stdout

    as_json = await deployment.arvo("inspect", key, "--json")
    assert as_json.returncode == 0, as_json
    record = json.loads(as_json.stdout)
    assert (record["status"], record["completed"], len(record["consumedIds"])) == ("done", True, 3)

    listed = await deployment.arvo("instances", "list", "--orchestrator", "bench", "--status", "done")
    assert listed.returncode == 0, listed
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t") == ["INSTANCE", "STATUS", "UPDATED"]
    assert [key, "done"] in [row.split("\t")[:2] for row in rows]


async def test_publish_wait_to_a_service_prints_its_reply(deployment: Deployment) -> None:
    result = await deployment.arvo("publish", "com.bench.add", "--data", '{"a": 20, "b": 22}', "--wait")
    assert result.returncode == 0, result
    _, _, reply = _published(result)
    assert reply is not None
    assert (reply["type"], reply["data"]) == ("evt.bench.add.success", {"sum": 42})


async def test_publish_wait_exits_1_with_the_system_error_of_a_failed_workflow(
    deployment: Deployment,
) -> None:
    order = {
        "orderId": "cli-bad",
        "customerId": "c",
        "country": "NL",
        "items": [{"sku": "sku-unknown", "quantity": 1, "unitPriceCents": 5}],
    }
    result = await deployment.arvo("publish", "arvo.orc.order", "--data", json.dumps(order), "--wait")
    assert result.returncode == 1, result
    _, subject, reply = _published(result)
    assert reply is not None
    assert reply["type"] == "sys.arvo.orc.order.error"

    inspected = await deployment.arvo("inspect", subject)
    assert inspected.returncode == 0, inspected
    assert "status:          failed" in inspected.stdout
    assert "error:           OrderEscalationError: order cli-bad needs attention" in inspected.stdout
    failed = await deployment.arvo("instances", "list", "--status", "failed")
    assert ArvoOrchestrationSubject.parse(subject).instance_key in failed.stdout


async def test_publish_wait_exits_2_when_nobody_answers_in_time(deployment: Deployment) -> None:
    # Another topic prefix: nothing consumes there.
    result = await deployment.arvo(
        "publish",
        "arvo.orc.bench",
        "--data",
        '{"a": 1, "b": 1}',
        "--wait",
        "--timeout",
        "1",
        ARVO_TOPIC_PREFIX=f"{unique_name('idle')}.",
    )
    assert result.returncode == 2, result
    event_id, _, reply = _published(result)
    assert reply is None
    assert result.stderr == f"arvo: no completion or system error of {event_id} within 1 s\n"


async def test_inspect_of_an_unknown_instance_exits_1(deployment: Deployment) -> None:
    result = await deployment.arvo("inspect", "arvo.orc.bench:00000000-0000-4000-8000-000000000000")
    assert result.returncode == 1
    assert result.stderr.startswith("arvo: no instance 'arvo.orc.bench:00000000-")
    assert result.stderr.count("\n") == 1


async def test_dlq_list_shows_a_poison_record_and_replay_sends_it_back_to_its_topic(
    deployment: Deployment,
) -> None:
    settings = deployment.service.settings
    topic = deployment.service.router.handler_topic("arvo.orc.bench")
    key = f"cli-poison-{unique_name()}".encode()
    await produce_records(
        settings.kafka_bootstrap_servers, topic, [(key, b"not json at all", [])], partition=0
    )
    await wait_until(lambda: deployment.service.loop.stats.dead_lettered[(topic, "not_json")] >= 1)

    listed = await deployment.arvo("dlq", "list", "--reason", "not_json")
    assert listed.returncode == 0, listed
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t") == ["PARTITION", "OFFSET", "REASON", "ERROR", "ORIGIN", "MESSAGE"]
    [row] = [row.split("\t") for row in rows]
    assert row[2:4] == ["not_json", "RecordDecodeError"]
    assert row[4].startswith(f"{topic}/0@")

    replayed = await deployment.arvo("dlq", "replay", "--offset", f"{row[0]}:{row[1]}")
    assert replayed.returncode == 0, replayed
    assert replayed.stdout == f"replayed {row[0]}:{row[1]} to {topic}\n"
    # Still poison: the replayed record is consumed from its topic again and dead-lettered again.
    await wait_until(lambda: deployment.service.loop.stats.dead_lettered[(topic, "not_json")] >= 2)
    letters = [letter for letter in await read_dead_letters(settings) if letter.key == key]
    assert len(letters) == 2
    assert letters[0].value == letters[1].value == b"not json at all"
