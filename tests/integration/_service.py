"""Helpers for tests that run the assembled service (in-process or as ``arvo`` subprocesses).

* :func:`running_service` starts an :class:`~service.runtime.app.ArvoService` and waits for its
  partitions; :func:`consumed` counts what its loop finished.
* :class:`TopicTail` follows a topic from its beginning in the background (no consumer group), so a
  test can wait for replies without re-reading the topic.
* :func:`exactly_once` checks the delivery promise on a reply topic: one completion per workflow,
  duplicates only as byte-identical copies with the same id.
* :func:`service_env` and :func:`run_cli` run the ``arvo`` console script the way a user does, with
  the settings of a test turned into ``ARVO_*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr

from contracts.bench import bench_machine_contract, bench_resumable_contract
from contracts.demo import order_contract
from service.arvo.event import ArvoEvent
from service.arvo.execution import ArvoHandler
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.runtime.app import ArvoService
from service.runtime.binding import RecordDecodeError, decode_record, encode_event
from service.runtime.kafka_admin import ensure_topics, topic_partitions
from service.runtime.redis_memory import RedisMemory
from service.runtime.settings import ServiceSettings, env_var_name, load_settings
from tests.integration._kafka import FETCH_MAX_WAIT_MS, produce_records
from tests.integration._redis import delete_keys_with_prefix

__all__ = [
    "ARVO",
    "CLIENT",
    "REPO_ROOT",
    "CliResult",
    "TopicTail",
    "bench_init",
    "consumed",
    "delete_redis_prefix",
    "exactly_once",
    "order_init",
    "publish_events",
    "run_cli",
    "running_service",
    "service_env",
    "wait_until",
]

ARVO = Path(sys.executable).with_name("arvo")
"""The console script installed in the test interpreter's environment."""
REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT = "com.test.client"
"""Source (initiator) of the test's init events: completions come back on its topic."""
MAX_BYTES = 1 << 20


async def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` every 10 ms; raise ``TimeoutError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout_s} s")
        await asyncio.sleep(0.01)


def consumed(service: ArvoService) -> int:
    """Records the service's loop finished (any outcome)."""
    return sum(service.loop.stats.consumed.values())


@contextlib.asynccontextmanager
async def running_service(
    settings: ServiceSettings,
    *,
    handlers: Sequence[ArvoHandler] | None = None,
    memory: RedisMemory | None = None,
) -> AsyncIterator[ArvoService]:
    """Start the service, wait until it owns partitions, stop it (drain and commit) afterwards."""
    service = ArvoService.from_settings(settings, handlers=handlers, memory=memory)
    await service.start()
    try:
        await service.loop.wait_assigned(timeout_s=30)
        yield service
    finally:
        await service.stop()


async def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix:`` on ``url``."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        return await delete_keys_with_prefix(client, prefix)
    finally:
        await client.aclose()


def bench_init(a: int, b: int = 1, *, resumable: bool = False, source: str = CLIENT) -> ArvoEvent:
    """An init event of the bench workflow (statechart or resumable), completing with ``2·(a+b)``."""
    contract = bench_resumable_contract if resumable else bench_machine_contract
    return create_arvo_orchestrator_event_factory(contract.version("1.0.0")).init(
        source=source, data={"a": a, "b": b, "parentSubject$$": None}
    )


def order_init(order_id: str, *, sku: str = "sku-widget", source: str = CLIENT) -> ArvoEvent:
    """An init event of the order demo (an unknown ``sku`` ends in a system error)."""
    return create_arvo_orchestrator_event_factory(order_contract.version("1.0.0")).init(
        source=source,
        data={
            "parentSubject$$": None,
            "orderId": order_id,
            "customerId": "c-1",
            "country": "NL",
            "items": [{"sku": sku, "quantity": 1, "unitPriceCents": 250}],
        },
    )


async def publish_events(
    bootstrap: str, topic: str, events: Iterable[ArvoEvent], *, partition: int | None = None
) -> None:
    """Produce ``events`` (structured mode, keyed by subject) to ``topic`` and wait for the acks."""
    messages = [encode_event(event) for event in events]
    await produce_records(
        bootstrap, topic, [(m.key, m.value, m.headers) for m in messages], partition=partition
    )


class TopicTail:
    """Every record of a topic from its beginning, collected in the background (no group, no commits).

    Creates the topic (``partitions``) when missing, so it can be started before anyone produces.
    """

    def __init__(self, bootstrap: str, topic: str, *, partitions: int = 3) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> TopicTail:
        """Create the topic if needed, assign every partition from the beginning, start collecting."""
        settings = load_settings(env_file=None, kafka_bootstrap_servers=self.bootstrap)
        await ensure_topics(settings, [self.topic], partitions=self.partitions)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        await consumer.start()
        tps = [TopicPartition(self.topic, p) for p in await topic_partitions(settings, self.topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._collect(consumer))
        return self

    async def _collect(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records.extend(records)

    async def stop(self) -> None:
        """Stop collecting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def __aenter__(self) -> TopicTail:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def events(self) -> list[ArvoEvent]:
        """The records decoded as events (undecodable ones skipped)."""
        decoded: list[ArvoEvent] = []
        for record in self.records:
            try:
                decoded.append(decode_record(record.value, record.headers, max_bytes=MAX_BYTES))
            except RecordDecodeError:
                continue
        return decoded

    def replies_to(self, event_ids: Iterable[str]) -> dict[str, ArvoEvent]:
        """The first reply (by ``parentid``) to each of ``event_ids`` seen so far."""
        wanted = set(event_ids)
        found: dict[str, ArvoEvent] = {}
        for event in self.events():
            if event.parentid in wanted and event.parentid not in found:
                found[event.parentid] = event
        return found

    async def wait_for_replies(
        self, event_ids: Sequence[str], *, timeout_s: float = 60.0
    ) -> dict[str, ArvoEvent]:
        """Wait until each of ``event_ids`` has a reply; return them by parent id."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.replies_to(event_ids)
            if len(found) == len(set(event_ids)):
                return found
            if time.monotonic() > deadline:
                missing = sorted(set(event_ids) - set(found))
                raise TimeoutError(
                    f"{self.topic}: no reply to {len(missing)} of {len(event_ids)} events after {timeout_s} s"
                    f" (e.g. {missing[:3]})"
                )
            await asyncio.sleep(0.02)


@dataclass(frozen=True)
class Delivery:
    """What :func:`exactly_once` found: the completion per init id and the duplicate count."""

    completions: dict[str, ArvoEvent]
    duplicates: int


def exactly_once(records: Sequence[ConsumerRecord[bytes, bytes]], inits: Sequence[ArvoEvent]) -> Delivery:
    """Check that every init has exactly one reply (by distinct event id) among ``records``.

    Raises:
        AssertionError: a reply is missing, an init has two different replies, or two copies of one
            event id differ in any byte of key, value or headers.

    """
    copies: dict[str, tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = {}
    replies: dict[str, set[str]] = {}
    events: dict[str, ArvoEvent] = {}
    duplicates = 0
    for record in records:
        event = decode_record(record.value, record.headers, max_bytes=MAX_BYTES)
        raw = (record.key, record.value, list(record.headers))
        if event.id in copies:
            duplicates += 1
            assert copies[event.id] == raw, f"duplicate of {event.id} is not byte-identical"
            continue
        copies[event.id] = raw
        events[event.id] = event
        if event.parentid is not None:
            replies.setdefault(event.parentid, set()).add(event.id)
    completions: dict[str, ArvoEvent] = {}
    for init in inits:
        ids = replies.get(init.id, set())
        assert len(ids) == 1, f"workflow {init.id} ({init.type}) has {len(ids)} distinct replies"
        completions[init.id] = events[ids.pop()]
    return Delivery(completions=completions, duplicates=duplicates)


# ---------------------------------------------------------------------------------------- arvo CLI


def service_env(settings: ServiceSettings, **overrides: str) -> dict[str, str]:
    """The environment of an ``arvo`` subprocess configured like ``settings`` (plus ``overrides``).

    Every explicitly set field becomes its ``ARVO_*`` variable; other ``ARVO_*`` variables of the
    test process are dropped; ``PYTHONPATH`` lets the subprocess import ``tests.*`` app modules.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("ARVO_")}
    for field in sorted(settings.model_fields_set):
        value: Any = getattr(settings, field)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[env_var_name(field)] = str(value)
    env["ARVO_HEALTH_PORT"] = "0"  # several processes on one machine
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env.update(overrides)
    return env


@dataclass(frozen=True)
class CliResult:
    """Exit status and decoded output of one ``arvo`` run."""

    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout_s: float = 90.0) -> CliResult:
    """Run ``arvo <args>`` as a subprocess (the event loop keeps running meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        str(ARVO),
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())
