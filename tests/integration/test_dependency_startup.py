"""At start-up, consumption does not begin until Redis answers and accepts the credentials."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio
import structlog

from service.runtime.app import ArvoService
from tests.integration._kafka import KafkaNames, kafka_test_settings
from tests.integration._redis import PrivateRedisServer

BENCH_APP = "service.examples:bench_app"
WAITING = "waiting for Redis before consuming"


async def _waits_then_consumes(service: ArvoService, fix: Callable[[], Awaitable[None]], reason: str) -> None:
    """Run ``service``: it must wait (one line naming ``reason``), then consume once ``fix`` ran."""
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(service.run_until_signal(stop_event=stop))
        try:
            for _ in range(200):
                if any(entry["event"] == WAITING for entry in logs):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # ~10 more probes
            assert not service.loop.is_running, "the consumer started while Redis refused us"
            waiting = [entry for entry in logs if entry["event"] == WAITING]
            assert len(waiting) == 1, "one line, not one per attempt"
            assert reason in waiting[0]["reason"]
            assert "s3cret" not in str(waiting[0])  # the URL is logged without its password
            await fix()
            for _ in range(600):
                if service.loop.is_running:
                    break
                await asyncio.sleep(0.05)
            assert service.loop.is_running
        finally:
            stop.set()
            assert await asyncio.wait_for(running, timeout=60) is None
    assert any(entry["event"] == "Redis answers; consuming" for entry in logs)


async def test_the_service_waits_for_an_unreachable_redis_before_consuming(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> None:
    server = PrivateRedisServer(directory=tmp_path / "redis")
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, app=BENCH_APP, redis_url=server.url, dependency_probe_interval_ms=50
    )
    service = ArvoService.from_settings(settings)

    async def start_redis() -> None:
        server.start()

    try:
        await _waits_then_consumes(service, start_redis, reason="Connect")
    finally:
        server.stop()


async def test_the_service_waits_while_redis_refuses_the_credentials(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> None:
    server = PrivateRedisServer(
        directory=tmp_path / "redis",
        extra_args=["--requirepass", "right"],
        ready_kwargs={"password": "right"},
    )
    server.start()
    wrong = server.url.replace("redis://", "redis://:s3cret@")
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, app=BENCH_APP, redis_url=wrong, dependency_probe_interval_ms=50
    )
    service = ArvoService.from_settings(settings)

    async def operator_sets_the_service_password() -> None:
        admin = redis.asyncio.Redis.from_url(server.url, password="right")
        try:
            await admin.config_set("requirepass", "s3cret")
        finally:
            await admin.aclose()

    try:
        await _waits_then_consumes(
            service, operator_sets_the_service_password, reason="invalid username-password"
        )
    finally:
        server.stop()
