"""Two ``arvo run`` processes (orchestrators, services) and ``arvo publish --wait``, as a user runs them.

The processes get their configuration from ``ARVO_*`` variables only: the session's test broker, a
unique topic prefix, their own consumer groups and a unique Redis key prefix (deleted afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration._kafka import KafkaNames, kafka_test_settings
from tests.integration._service import ARVO, CliResult, run_cli, service_env

pytestmark = pytest.mark.e2e

JOIN_TIMEOUT_S = 60.0


async def _wait_for_line(log: Path, text: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        if process.returncode is not None:
            raise AssertionError(f"arvo run exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not logged after {JOIN_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def arvo_run(env: dict[str, str], log: Path, cwd: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``arvo run`` with stdout/stderr in ``log``; killed on the way out if it is still running."""
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            str(ARVO), "run", env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _reply(result: CliResult) -> dict[str, object]:
    lines = result.stdout.split("\n", 2)
    assert lines[0].startswith("id: "), result
    assert lines[1].startswith("subject: "), result
    reply: dict[str, object] = json.loads(lines[2])
    assert reply["parentid"] == lines[0].removeprefix("id: ")
    return reply


async def test_orchestrators_and_services_in_separate_processes_complete_workflows_published_by_the_cli(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    shared_redis_url: str,
    redis_key_prefix: str,
    tmp_path: Path,
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, redis_url=shared_redis_url, redis_key_prefix=redis_key_prefix
    )
    env = service_env(settings, ARVO_LOG_FORMAT="json")
    orchestrators_env = env | {
        "ARVO_APP": "service.examples.topology:orchestrators_app",
        "ARVO_CONSUMER_GROUP": f"{kafka_names.group}-orchestrators",
    }
    services_env = env | {
        "ARVO_APP": "service.examples.topology:services_app",
        "ARVO_CONSUMER_GROUP": f"{kafka_names.group}-services",
    }
    orchestrators_log, services_log = tmp_path / "orchestrators.log", tmp_path / "services.log"
    async with (
        arvo_run(orchestrators_env, orchestrators_log, tmp_path) as orchestrators,
        arvo_run(services_env, services_log, tmp_path) as services,
    ):
        await asyncio.gather(
            _wait_for_line(orchestrators_log, "partitions assigned", orchestrators),
            _wait_for_line(services_log, "partitions assigned", services),
        )
        order = {
            "orderId": "e2e-1",
            "customerId": "c-1",
            "country": "NL",
            "items": [{"sku": "sku-widget", "quantity": 2, "unitPriceCents": 150}],
        }
        bad_order = order | {
            "orderId": "e2e-2",
            "items": [{"sku": "sku-nope", "quantity": 1, "unitPriceCents": 1}],
        }
        bench, resumable, fulfilled, escalated = await asyncio.gather(
            *(
                run_cli(
                    "publish",
                    kind,
                    "--data",
                    json.dumps(data),
                    "--wait",
                    "--timeout",
                    "60",
                    env=env,
                    cwd=tmp_path,
                )
                for kind, data in (
                    ("arvo.orc.bench", {"a": 2, "b": 3}),
                    ("arvo.orc.bench.resumable", {"a": 4, "b": 1}),
                    ("arvo.orc.order", order),
                    ("arvo.orc.order", bad_order),
                )
            )
        )
        for result in (bench, resumable, fulfilled):
            assert result.returncode == 0, result
        assert _reply(bench)["type"] == "arvo.orc.bench.done"
        assert _reply(bench)["data"] == {"result": 10}
        assert _reply(resumable)["type"] == "arvo.orc.bench.resumable.done"
        assert _reply(resumable)["data"] == {"result": 10}
        shipped = _reply(fulfilled)
        assert shipped["type"] == "arvo.orc.order.done"
        assert shipped["data"] == {
            "orderId": "e2e-1",
            "status": "fulfilled",
            "totalCents": 300,
            "trackingId": "TRK-e2e-1",
            "reason": None,
        }
        assert escalated.returncode == 1, escalated  # a system error ends --wait with status 1
        error = _reply(escalated)
        assert error["type"] == "sys.arvo.orc.order.error"
        assert "unknown SKU 'sku-nope'" in str(error["data"])

        subject = bench.stdout.splitlines()[1].removeprefix("subject: ")
        inspected = await run_cli("inspect", subject, env=env, cwd=tmp_path)
        assert inspected.returncode == 0, inspected
        assert "status:          done" in inspected.stdout

        for process in (orchestrators, services):
            process.send_signal(signal.SIGTERM)
        codes = await asyncio.wait_for(asyncio.gather(orchestrators.wait(), services.wait()), timeout=30)
    assert list(codes) == [0, 0], (orchestrators_log.read_text()[-2000:], services_log.read_text()[-2000:])
    for log in (orchestrators_log, services_log):
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert lines, log.read_text()
        assert lines[-1]["event"] == "consumer stopped"
        assert not [line for line in lines if line["level"] in ("error", "critical")]
