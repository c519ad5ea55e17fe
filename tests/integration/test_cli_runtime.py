"""The service commands of ``arvo`` against the real broker and Redis.

The service (the embedded default app) runs in this process for the whole module; ``arvo publish``,
``inspect``, ``instances list`` and ``dlq list/replay`` run as subprocesses configured through the
same ``ARVO_*`` settings, as an operator runs them next to a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.app import ArvoService
from service.runtime.dlq import read_dead_letters
from tests.integration._kafka import KafkaNames, kafka_test_settings, produce_records, unique_name
from tests.integration._redis import PrivateRedisServer, unique_prefix
from tests.integration._service import (
    ARVO,
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


async def test_publish_wait_exits_2_when_nobody_answers_in_time_and_says_why(deployment: Deployment) -> None:
    # Another topic prefix: nothing consumes there.
    idle = f"{unique_name('idle')}."
    result = await deployment.arvo(
        "publish",
        "arvo.orc.bench",
        "--data",
        '{"a": 1, "b": 1}',
        "--wait",
        "--timeout",
        "1",
        ARVO_TOPIC_PREFIX=idle,
    )
    assert result.returncode == 2, result
    event_id, subject, reply = _published(result)
    assert reply is None
    key = ArvoOrchestrationSubject.parse(subject).instance_key
    settings = deployment.service.settings
    # Not only "nothing arrived": what the instance's state says (nothing consumed the event).
    assert result.stderr == (
        f"arvo: no completion or system error of {event_id} within 1 s; Redis has no instance {key}"
        f" (key prefix {settings.redis_key_prefix!r}): nothing consumed the event from {idle}arvo.orc.bench"
        f" yet; is 'arvo run' or 'arvo dev' running with this app on {settings.kafka_bootstrap_servers}"
        " (same ARVO_TOPIC_PREFIX and ARVO_REDIS_URL)?\n"
    )


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
    assert header.split("\t") == ["PARTITION", "OFFSET", "REASON", "ERROR", "ORIGIN", "MESSAGE", "REPLAYED"]
    [row] = [row.split("\t") for row in rows]
    assert row[2:4] == ["not_json", "RecordDecodeError"]
    assert row[4].startswith(f"{topic}/0@")

    assert row[6] == "-"

    replayed = await deployment.arvo("dlq", "replay", "--offset", f"{row[0]}:{row[1]}")
    assert replayed.returncode == 0, replayed
    assert replayed.stdout == f"replayed {row[0]}:{row[1]} to {topic}\n"
    # The replay is recorded on the broker: a later `arvo dlq list` shows when and where.
    relisted = await deployment.arvo("dlq", "list", "--reason", "not_json", "--json")
    assert relisted.returncode == 0, relisted
    listed_json = {
        (letter["partition"], letter["offset"]): letter
        for letter in map(json.loads, relisted.stdout.splitlines())
    }
    [replay] = listed_json[(int(row[0]), int(row[1]))]["replays"]
    assert replay["to"] == topic
    assert listed_json[(int(row[0]), int(row[1]))]["errorMessage"].startswith("[not_json] ")
    # Still poison: the replayed record is consumed from its topic again and dead-lettered again.
    await wait_until(lambda: deployment.service.loop.stats.dead_lettered[(topic, "not_json")] >= 2)
    letters = [letter for letter in await read_dead_letters(settings) if letter.key == key]
    assert len(letters) == 2
    assert letters[0].value == letters[1].value == b"not json at all"


# ----------------------------------------------------------------------- arvo run as a user starts it


@contextlib.asynccontextmanager
async def arvo_run(
    *args: str, env: dict[str, str], cwd: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """``arvo run`` with stdout and stderr in ``cwd/run.log``; killed on the way out if still running."""
    log = cwd / "run.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            str(ARVO),
            "run",
            *args,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    try:
        yield process, log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _logged(log: Path, text: str, process: asyncio.subprocess.Process, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while text not in (output := log.read_text(errors="replace")):
        if process.returncode is not None:
            raise AssertionError(f"arvo run exited with {process.returncode}:\n{output[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the output after {timeout_s} s:\n{output[-3000:]}")
        await asyncio.sleep(0.05)
    return output


async def test_run_imports_the_app_from_the_working_directory_and_says_why_it_waits_for_redis(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> None:
    # `arvo run --app loan.app:app` from the directory holding loan/ (no PYTHONPATH for it), with
    # Redis down at start-up: the console output says why nothing is consumed yet, until Redis is up.
    (tmp_path / "loan").mkdir()
    (tmp_path / "loan" / "__init__.py").write_text("")
    (tmp_path / "loan" / "app.py").write_text("from service.examples import bench_app as app\n")
    redis = PrivateRedisServer(directory=tmp_path / "redis")
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, redis_url=redis.url, redis_key_prefix=unique_prefix()
    )
    env = service_env(settings, ARVO_LOG_FORMAT="console", ARVO_DEPENDENCY_PROBE_INTERVAL_MS="50")
    env.pop("PYTHONPATH")
    try:
        async with arvo_run("--app", "loan.app:app", env=env, cwd=tmp_path) as (process, log):
            output = await _logged(log, "waiting for Redis before consuming", process)
            [line] = [line for line in output.splitlines() if "waiting for Redis before consuming" in line]
            assert "[warning" in line
            assert "Connection refused" in line, line
            assert f"redis=redis://127.0.0.1:{redis.port}/0" in line
            assert "partitions assigned" not in output
            redis.start()
            await _logged(log, "Redis answers; consuming", process)
            await _logged(log, "partitions assigned", process)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout=30) == 0, log.read_text()[-3000:]
        assert "No module named" not in log.read_text()
    finally:
        redis.stop()


async def test_run_names_arvo_producer_idempotence_when_the_broker_refuses_the_idempotent_producer(
    kafka_bootstrap: str, kafka_names: KafkaNames, shared_redis_url: str, tmp_path: Path
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, redis_url=shared_redis_url, redis_key_prefix=unique_prefix()
    )
    env = service_env(settings, ARVO_LOG_FORMAT="json")
    env.pop("ARVO_PRODUCER_IDEMPOTENCE")  # the default: on, which the test broker (Tansu) refuses
    async with arvo_run(env=env, cwd=tmp_path) as (process, log):
        code = await asyncio.wait_for(process.wait(), timeout=60)
    output = log.read_text()
    assert code == 1, output[-3000:]
    last = output.splitlines()[-1]
    assert last.startswith(
        "arvo: the broker refused the idempotent producer (UnknownError: [Error -1] UnknownError on InitProducerId): set ARVO_PRODUCER_IDEMPOTENCE=false for this broker"
    ), output[-3000:]
    assert "a producer retry after a lost ack can write a record twice" in last
    assert "Traceback" not in output
