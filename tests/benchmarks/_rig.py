"""Subprocesses the Kafka-path benchmarks start: a Tansu broker and a private ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from service.runtime.settings import ServiceSettings, load_settings
from tests.integration._kafka import start_tansu, stop_process
from tests.integration._redis import PrivateRedisServer

__all__ = [
    "PARTITIONS",
    "percentile",
    "processes",
    "run_on_uvloop",
    "service_settings",
    "start_broker",
    "start_redis",
]

T = TypeVar("T")

PARTITIONS = 4
"""Partitions of every benchmark topic (the issue's Kafka-path setup)."""
FETCH_MAX_WAIT_MS = 10
"""Tansu does not end a waiting fetch when records arrive: keep the wait short."""


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop, as ``arvo run`` runs the service (plain asyncio without uvloop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(main)
    return uvloop.run(main)


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def service_settings(bootstrap: str, redis_url: str, names: str) -> ServiceSettings:
    """Settings of the one benchmarked service process running the bench app."""
    return load_settings(
        env_file=None,
        kafka_bootstrap_servers=bootstrap,
        consumer_group=f"{names}-service",
        topic_prefix=f"{names}.",
        topic_partitions=PARTITIONS,
        producer_idempotence=False,  # Tansu's memory storage refuses InitProducerId
        producer_acks="all",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        redis_url=redis_url,
        redis_key_prefix=f"bench:{names}",
        app="service.examples:bench_app",
        health_port=0,
    )


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to put started processes in; every one is stopped on exit, whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            stop_process(process)


def start_broker(started: list[subprocess.Popen[bytes]], workdir: Path) -> str:
    """Start a Tansu broker logging to ``workdir``; return its bootstrap string."""
    bootstrap, process = start_tansu(workdir / "tansu.log")
    started.append(process)
    return bootstrap


def start_redis(started: list[subprocess.Popen[bytes]], workdir: Path) -> str:
    """Start a private ``redis-server`` (so command counts are ours alone); return its URL."""
    if shutil.which("redis-server") is None:
        raise SystemExit("the Kafka-path benchmarks need redis-server on PATH (apt-get install redis-server)")
    server = PrivateRedisServer(directory=workdir / "redis")
    server.start()
    assert server.process is not None
    started.append(server.process)
    return server.url
