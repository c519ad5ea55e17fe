"""service.runtime.health and service.runtime.metrics without Kafka or Redis (fakes for both)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.runtime.consumer import CombinedHooks, LoopHooks, LoopStats
from service.runtime.consumer.dependencies import DependencyMonitor
from service.runtime.health import HealthServer, Readiness
from service.runtime.metrics import ServiceMetrics


class FakeLoop:
    """What Readiness and ServiceMetrics read from a ConsumerLoop."""

    def __init__(self) -> None:
        self.is_running = True
        self.assignment: frozenset[TopicPartition] = frozenset({TopicPartition("t", 0)})
        self.joined = True
        self.reachable = True
        self.broker_checks = 0
        self.stats = LoopStats()
        self.lags: dict[TopicPartition, int] = {}
        self.dependencies = DependencyMonitor(hooks=LoopHooks())
        self.stalled: dict[TopicPartition, float] = {}
        self.stall_timeout_s = 300.0
        self.commit_failing_s = 0.0
        self.last_commit_error: str | None = None

    def stalled_partitions(self) -> dict[TopicPartition, float]:
        return dict(self.stalled)

    def commits_failing_for(self) -> float:
        return self.commit_failing_s

    async def broker_reachable(self, *, timeout_s: float = 1.0) -> bool:
        self.broker_checks += 1
        return self.reachable

    def partition_lag(self) -> dict[TopicPartition, int]:
        return dict(self.lags)


class FakeRedis:
    def __init__(self) -> None:
        self.up = True
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        return self.up


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await request(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


@pytest.fixture
def redis_fake() -> FakeRedis:
    return FakeRedis()


def readiness(loop: FakeLoop, redis_fake: FakeRedis, **kwargs: Any) -> Readiness:
    return Readiness(loop=loop, memory=redis_fake, **kwargs)  # type: ignore[arg-type]


async def test_healthz_answers_ok_and_head_has_no_body(loop: FakeLoop, redis_fake: FakeRedis) -> None:
    async with HealthServer(port=0, host="127.0.0.1", readiness=readiness(loop, redis_fake)) as server:
        status, headers, body = await get(server.port, "/healthz")
        assert (status, body) == (200, b"ok\n")
        assert headers["connection"] == "close"
        status, headers, body = await get(server.port, "/healthz", method="HEAD")
        assert (status, body, headers["content-length"]) == (200, b"", "3")


async def test_unknown_paths_methods_and_garbage_are_refused(loop: FakeLoop, redis_fake: FakeRedis) -> None:
    async with HealthServer(port=0, host="127.0.0.1", readiness=readiness(loop, redis_fake)) as server:
        assert (await get(server.port, "/nope"))[0] == 404
        assert (await get(server.port, "/metrics"))[0] == 404  # no metrics given
        status, headers, _ = await get(server.port, "/healthz", method="POST")
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        assert (await request(server.port, b"garbage\r\n\r\n"))[0] == 400
        assert (await get(server.port, "/healthz?verbose=1"))[0] == 200


async def test_readyz_is_ready_when_every_check_passes(loop: FakeLoop, redis_fake: FakeRedis) -> None:
    async with HealthServer(port=0, host="127.0.0.1", readiness=readiness(loop, redis_fake)) as server:
        status, headers, body = await get(server.port, "/readyz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body) == {
        "status": "ready",
        "checks": {"consumer": "ok", "partitions": "ok", "kafka": "ok", "redis": "ok"},
    }


@pytest.mark.parametrize(
    ("breakage", "failed"),
    [
        ("redis", ["redis"]),
        ("kafka", ["kafka"]),
        ("stopped", ["consumer"]),
        ("unassigned", ["partitions"]),
    ],
)
async def test_readyz_is_503_naming_the_failed_check(
    loop: FakeLoop, redis_fake: FakeRedis, breakage: str, failed: list[str]
) -> None:
    if breakage == "redis":
        redis_fake.up = False
    elif breakage == "kafka":
        loop.reachable = False
    elif breakage == "stopped":
        loop.is_running = False
    else:
        loop.assignment, loop.joined = frozenset(), False
    async with HealthServer(port=0, host="127.0.0.1", readiness=readiness(loop, redis_fake)) as server:
        status, _, body = await get(server.port, "/readyz")
    assert status == 503
    report = orjson.loads(body)
    assert report["status"] == "unready"
    assert report["failed"] == failed
    assert report["checks"][failed[0]] != "ok"


async def test_a_member_that_joined_but_owns_no_partition_is_ready(
    loop: FakeLoop, redis_fake: FakeRedis
) -> None:
    loop.assignment = frozenset()
    report = await readiness(loop, redis_fake).check()
    assert report.ready


async def test_readiness_is_cached_and_concurrent_probes_share_one_round(
    loop: FakeLoop, redis_fake: FakeRedis
) -> None:
    probe = readiness(loop, redis_fake, cache_s=60.0)
    reports = await asyncio.gather(*(probe.check() for _ in range(5)))
    assert all(report.ready for report in reports)
    redis_fake.up = False
    assert (await probe.check()).ready  # cached
    assert (redis_fake.pings, loop.broker_checks) == (1, 1)
    fresh = readiness(loop, redis_fake, cache_s=0.0)
    assert not (await fresh.check()).ready


async def test_the_health_port_in_use_is_a_clear_start_error() -> None:
    async with HealthServer(port=0, host="127.0.0.1") as first:
        second = HealthServer(port=first.port, host="127.0.0.1")
        with pytest.raises(OSError, match="ARVO_HEALTH_PORT"):
            await second.start()


async def test_metrics_count_what_the_hooks_report_and_read_gauges_from_the_loop(loop: FakeLoop) -> None:
    metrics = ServiceMetrics(process_metrics=False)
    tp = TopicPartition("p.arvo.orc.bench", 1)
    loop.stats.in_flight[tp] = 3
    loop.stats.commits = 7
    loop.lags[tp] = 42
    loop.assignment = frozenset({tp})
    metrics.bind(loop=loop)  # type: ignore[arg-type]
    metrics.on_consumed("p.arvo.orc.bench", "arvo.orc.bench", "ok", 0.002)
    metrics.on_consumed("p.arvo.orc.bench", "arvo.orc.bench", "ok", 0.004)
    metrics.on_consumed("p.com.bench.add", "com.bench.add", "dead_lettered", 0.001)
    metrics.on_produced("p.com.bench.add", "com.bench.add")
    metrics.on_dead_letter("p.com.bench.add", "contract")
    metrics.on_retry("p.arvo.orc.bench", "LeaseDeniedViolation")
    metrics.on_retry("p.arvo.orc.bench", "RedisUnavailableError")
    metrics.on_publish_retry("KafkaTimeoutError")
    async with HealthServer(port=0, host="127.0.0.1", metrics=metrics) as server:
        status, headers, body = await get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    values = metric_values(body.decode())
    orc = (("outcome", "ok"), ("topic", "p.arvo.orc.bench"), ("type", "arvo.orc.bench"))
    assert values[("arvo_events_consumed_total", orc)] == 2
    assert (
        values[("arvo_events_produced_total", (("topic", "p.com.bench.add"), ("type", "com.bench.add")))] == 1
    )
    assert values[("arvo_dead_letters_total", (("reason", "contract"), ("topic", "p.com.bench.add")))] == 1
    assert values[("arvo_lease_waits_total", (("topic", "p.arvo.orc.bench"),))] == 1
    retries = [key for key in values if key[0] == "arvo_retries_total"]
    assert len(retries) == 2
    assert values[("arvo_publish_retries_total", (("error_class", "KafkaTimeoutError"),))] == 1
    assert values[("arvo_handler_duration_seconds_count", (("topic", "p.arvo.orc.bench"),))] == 2
    assert values[("arvo_in_flight_records", (("partition", "1"), ("topic", "p.arvo.orc.bench")))] == 3
    assert values[("arvo_consumer_lag_records", (("partition", "1"), ("topic", "p.arvo.orc.bench")))] == 42
    assert values[("arvo_assigned_partitions", ())] == 1
    assert values[("arvo_offset_commits_total", ())] == 7


async def test_instance_counts_come_from_memory_and_are_refreshed_on_scrape(loop: FakeLoop) -> None:
    memory = InMemoryMemory()
    for index, status in enumerate([InstanceStatus.DONE, InstanceStatus.DONE, InstanceStatus.FAILED]):
        await memory.set_status(f"arvo.orc.bench:{index}", status)
    metrics = ServiceMetrics(process_metrics=False, instances_limit=2)
    metrics.bind(loop=loop, memory=memory, orchestrators=["arvo.orc.bench"])  # type: ignore[arg-type]
    await metrics.refresh()
    values = metric_values(metrics.render().decode())
    done = (("orchestrator", "arvo.orc.bench"), ("status", "done"))
    failed = (("orchestrator", "arvo.orc.bench"), ("status", "failed"))
    assert values[("arvo_instances", done)] == 2
    assert values[("arvo_instances_capped", done)] == 1
    assert values[("arvo_instances", failed)] == 1
    assert values[("arvo_instances_capped", failed)] == 0
    await memory.set_status("arvo.orc.bench:9", InstanceStatus.FAILED)
    await metrics.refresh()  # younger than instances_refresh_s: kept
    assert metric_values(metrics.render().decode())[("arvo_instances", failed)] == 1
    metrics.instances_refresh_s = 0
    await metrics.refresh()
    assert metric_values(metrics.render().decode())[("arvo_instances", failed)] == 2


def test_event_type_labels_are_bounded() -> None:
    metrics = ServiceMetrics(process_metrics=False, max_label_values=2)
    for index in range(5):
        metrics.on_consumed("t", f"junk.{index}", "dead_lettered", 0.0)
    values = metric_values(metrics.render().decode())
    types = {dict(labels)["type"] for name, labels in values if name == "arvo_events_consumed_total"}
    assert types == {"junk.0", "junk.1", "other"}


def test_combined_hooks_call_every_hook_even_after_one_fails() -> None:
    calls: list[str] = []

    class Broken(LoopHooks):
        def on_consumed(self, topic: str, event_type: str, outcome: str, duration_s: float) -> None:
            raise RuntimeError("broken hook")

    class Recording(LoopHooks):
        def on_consumed(self, topic: str, event_type: str, outcome: str, duration_s: float) -> None:
            calls.append(outcome)

    CombinedHooks(Broken(), Recording()).on_consumed("t", "e", "ok", 0.0)
    assert calls == ["ok"]


async def test_the_service_binds_the_health_server_to_arvo_health_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.arvo.handler import ArvoEventHandler
    from service.runtime.app import ArvoService
    from service.runtime.settings import ServiceSettings
    from tests.unit.arvo_fixtures import increment_handler

    monkeypatch.setenv("ARVO_HEALTH_HOST", "127.0.0.1")
    monkeypatch.setenv("ARVO_HEALTH_PORT", "0")
    settings = ServiceSettings()
    assert settings.health_host == "127.0.0.1"
    settings = settings.model_copy(update={"health_port": 1})
    handler: ArvoEventHandler = increment_handler()
    service = ArvoService.from_settings(settings, handlers=[handler], memory=InMemoryMemory())
    assert service.health is not None
    service.health._requested_port = 0  # any free port, on the configured address
    await service.health.start()
    try:
        assert service.health._server is not None
        bound = {sock.getsockname()[0] for sock in service.health._server.sockets}
        assert bound == {"127.0.0.1"}
    finally:
        await service.health.stop()


async def test_readyz_names_a_dependency_outage_the_records_met_and_recovers(
    loop: FakeLoop, redis_fake: FakeRedis
) -> None:
    probe = readiness(loop, redis_fake, cache_s=0.0)
    loop.dependencies.report_down("redis", ConnectionError("CLUSTERDOWN The cluster is down"))
    report = await probe.check()
    assert not report.ready
    assert report.failed == ("redis",)
    assert report.checks["redis"].startswith("unavailable for ")
    assert "CLUSTERDOWN" in report.checks["redis"]
    loop.dependencies.report_up("redis")
    assert (await probe.check()).ready


async def test_dependency_changes_are_metrics(loop: FakeLoop) -> None:
    metrics = ServiceMetrics(process_metrics=False)
    metrics.on_dependency("redis", False)
    metrics.on_dependency("redis", True)
    metrics.on_dependency("redis", False)
    families = {family.name: family for family in text_string_to_metric_families(metrics.render().decode())}
    up = {sample.labels["dependency"]: sample.value for sample in families["arvo_dependency_up"].samples}
    assert up == {"redis": 0.0}
    outages = [s for s in families["arvo_dependency_outages"].samples if s.name.endswith("_total")]
    assert [(s.labels["dependency"], s.value) for s in outages] == [("redis", 2.0)]


async def test_readyz_names_a_stalled_partition_and_failing_commits(
    loop: FakeLoop, redis_fake: FakeRedis
) -> None:
    probe = readiness(loop, redis_fake, cache_s=0.0)
    loop.stalled = {TopicPartition("orders", 2): 312.4}
    report = await probe.check()
    assert report.failed == ("partitions",)
    assert report.checks["partitions"] == "stalled (records waiting, none finished): orders/2 for 312 s"
    loop.stalled = {}
    loop.commit_failing_s, loop.last_commit_error = 301.0, "UnknownTopicOrPartitionError: gone"
    report = await probe.check()
    assert report.failed == ("commits",)
    assert "UnknownTopicOrPartitionError" in report.checks["commits"]
    loop.commit_failing_s = 299.0
    assert (await probe.check()).ready
