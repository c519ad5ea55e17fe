"""``arvo run --workers 2`` as a user starts it, against the test broker and the shared Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.runtime.routing import TopicRouter
from service.runtime.supervisor import http_get
from tests.integration._kafka import KafkaNames, free_port, kafka_test_settings
from tests.integration._service import ARVO, CLIENT, TopicTail, bench_init, publish_events, service_env

pytestmark = pytest.mark.integration

WORKFLOWS = 20
CONSUMED_PER_WORKFLOW = 5  # init, add call, add reply, double call, double reply
DRAIN_TIMEOUT_S = 5.0


def _total(metrics: bytes, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics.decode())
        for sample in family.samples
        if sample.name == name
    )


def _log_lines(log: Path) -> list[dict[str, object]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        return await http_get(port, path, 3.0)
    except (OSError, TimeoutError, ValueError):
        return 0, b""


async def _until_ready(
    port: int, process: asyncio.subprocess.Process, log: Path, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while (await _get(port, "/readyz"))[0] != 200:
        if process.returncode is not None:
            raise AssertionError(f"arvo run exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


async def test_two_workers_complete_workflows_one_port_sums_their_metrics_and_sigterm_drains_both(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    shared_redis_url: str,
    redis_key_prefix: str,
    tmp_path: Path,
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        redis_url=shared_redis_url,
        redis_key_prefix=redis_key_prefix,
        app="service.examples:bench_app",
        topic_partitions=4,
        drain_timeout_s=DRAIN_TIMEOUT_S,
    )
    port = free_port()
    env = service_env(
        settings, ARVO_HEALTH_PORT=str(port), ARVO_HEALTH_HOST="127.0.0.1", ARVO_LOG_FORMAT="json"
    )
    router = TopicRouter.from_settings(settings)
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            str(ARVO), "run", "--workers", "2", env=env, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
            stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        await _until_ready(port, process, log)
        workers = {
            int(str(line["worker"])): (int(str(line["pid"])), int(str(line["port"])))
            for line in _log_lines(log)
            if line.get("event") == "worker started"
        }
        assert sorted(workers) == [0, 1]
        assert process.pid not in {pid for pid, _ in workers.values()}

        inits = [bench_init(index, resumable=index % 2 == 1) for index in range(WORKFLOWS)]
        async with TopicTail(kafka_bootstrap, router.handler_topic(CLIENT), partitions=4) as tail:
            for init in inits:
                await publish_events(kafka_bootstrap, router.route_event(init), [init])
            replies = await tail.wait_for_replies([init.id for init in inits], timeout_s=90)
        for index, init in enumerate(inits):
            assert replies[init.id].data == {"result": 2 * (index + 1)}, replies[init.id]

        # The one port's /metrics: the events both workers consumed, summed (a record's counter is
        # increased just after its emissions are acknowledged: poll until the last ones are in).
        expected = WORKFLOWS * CONSUMED_PER_WORKFLOW
        deadline = time.monotonic() + 30
        while True:
            status, metrics = await _get(port, "/metrics")
            assert status == 200
            if _total(metrics, "arvo_events_consumed_total") >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert _total(metrics, "arvo_events_consumed_total") == expected
        own = [await _get(worker_port, "/metrics") for _, worker_port in workers.values()]
        per_worker = [_total(body, "arvo_events_consumed_total") for _, body in own]
        assert sum(per_worker) == expected
        assert all(count > 0 for count in per_worker), (
            per_worker
        )  # both consumed: one group, shared partitions
        assert _total(metrics, "arvo_assigned_partitions") == 4 * len(router_topics(router))
        assert _total(metrics, "arvo_workers") == 2
        assert _total(metrics, "arvo_worker_up") == 2
        assert (await _get(port, "/healthz"))[0] == 200

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=DRAIN_TIMEOUT_S + 15)
        elapsed = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert elapsed < DRAIN_TIMEOUT_S + 10, elapsed
    events = [line.get("event") for line in _log_lines(log)]
    assert events.count("worker stopped") == 2, output[-3000:]
    assert events.count("consumer stopped") == 2
    assert "supervisor stopped: every worker drained" in events
    assert "worker exited without being asked to: restarting it" not in events
    for pid, _ in workers.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def router_topics(router: TopicRouter) -> list[str]:
    """The topics the bench app consumes: two orchestrators and two services."""
    return [
        router.handler_topic(source)
        for source in ("arvo.orc.bench", "arvo.orc.bench.resumable", "com.bench.add", "com.bench.double")
    ]
