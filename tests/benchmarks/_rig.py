"""Subprocesses the Kafka-path benchmarks start: a Tansu broker and a private ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
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
    "start_replica",
    "stop_process",
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


def service_settings(bootstrap: str, redis_url: str, names: str, **overrides: Any) -> ServiceSettings:
    """Settings of the one benchmarked service process running the bench app (``overrides`` win)."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "consumer_group": f"{names}-service",
        "topic_prefix": f"{names}.",
        "topic_partitions": PARTITIONS,
        "producer_idempotence": False,  # Tansu's memory storage refuses InitProducerId
        "producer_acks": "all",
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
        "redis_url": redis_url,
        "redis_key_prefix": f"bench:{names}",
        "app": "service.examples:bench_app",
        "health_port": 0,
    }
    return load_settings(env_file=None, **{**values, **overrides})


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


def start_replica(
    started: list[subprocess.Popen[bytes]], workdir: Path, master_url: str
) -> subprocess.Popen[bytes]:
    """Start a private ``redis-server`` replicating ``master_url``, once it acknowledges writes.

    Returns its process (also put in ``started``); stop it with :func:`stop_process`.
    """
    import redis

    master = redis.Redis.from_url(master_url)
    try:
        master.config_set("repl-diskless-sync-delay", 0)  # no 5 s wait for more replicas
        port = master.connection_pool.connection_kwargs["port"]
        replica = PrivateRedisServer(
            directory=workdir / "redis-replica", extra_args=["--replicaof", "127.0.0.1", str(port)]
        )
        replica.start()
        assert replica.process is not None
        started.append(replica.process)
        deadline = time.monotonic() + 30
        while master.set("bench-replica-ready", 1) and master.wait(1, 200) < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark's Redis replica did not acknowledge writes within 30 s")
        master.delete("bench-replica-ready")
    finally:
        master.close()
    return replica.process
