"""``ARVO_REDIS_WAIT_REPLICAS``: a commit counts only once N replicas acknowledged it (issue 11, B).

On a private master with one replica: with the replica up every commit is acknowledged (and readable
on the replica as soon as it returns); with the replica frozen (SIGSTOP) a commit raises
:class:`RedisReplicationError` — a Redis outage — and the memory refuses leases and pings until the
replica caught up, so nothing acts on the unacknowledged record; through the service, records wait
(no retry budget spent, nothing parked or dead-lettered) and every workflow completes exactly once
after SIGCONT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio

from service.arvo.availability import unavailable_dependency
from service.arvo.event import ArvoEvent
from service.arvo.memory import InstanceStatus
from service.runtime.app import ArvoService
from service.runtime.dlq import read_dead_letters
from service.runtime.redis_memory import RedisMemory, RedisReplicationError
from service.runtime.resp_client import LuaScript, PipelinedRedis, RespReplyError
from tests.integration._kafka import KafkaNames, kafka_test_settings
from tests.integration._redis import PrivateRedisServer, unique_prefix
from tests.integration._service import (
    CLIENT,
    TopicTail,
    bench_init,
    consumed,
    exactly_once,
    publish_events,
    running_service,
    wait_until,
)

pytestmark = pytest.mark.integration
TTL_MS = 5_000
WAIT_TIMEOUT_MS = 200


class ReplicatedRedis:
    """A private master and one replica of it; the replica can be frozen and thawed."""

    def __init__(self, directory: Path) -> None:
        # No 5 s wait for more replicas before the diskless full sync starts.
        self.master = PrivateRedisServer(
            directory=directory / "master", extra_args=["--repl-diskless-sync-delay", "0"]
        )
        self.replica = PrivateRedisServer(directory=directory / "replica")

    def start(self) -> None:
        self.master.start()
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        admin = redis.Redis.from_url(self.master.url)
        try:
            # Online, and acknowledging writes (it may still be loading the first sync's snapshot).
            deadline = time.monotonic() + 20
            while admin.set("replica-ready", 1) and admin.wait(1, 200) < 1:
                if time.monotonic() > deadline:
                    pytest.fail("the replica did not come online")
            admin.delete("replica-ready")
        finally:
            admin.close()

    def stop(self) -> None:
        self.thaw()
        self.replica.stop()
        self.master.stop()

    def freeze(self) -> None:
        """SIGSTOP the replica: it stays connected but acknowledges nothing."""
        assert self.replica.process is not None
        os.kill(self.replica.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.replica.process is not None and self.replica.process.poll() is None:
            os.kill(self.replica.process.pid, signal.SIGCONT)

    def replica_get(self, key: str) -> bytes | None:
        """``GET key`` on the replica (which serves reads)."""
        client = redis.Redis.from_url(self.replica.url)
        try:
            value: bytes | None = client.get(key)  # type: ignore[assignment]
            return value
        finally:
            client.close()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    servers = ReplicatedRedis(tmp_path)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@contextlib.asynccontextmanager
async def waiting_memory(url: str, *, lean: bool) -> AsyncIterator[RedisMemory]:
    """A memory waiting for one replica: on the lean hot-path client, or on redis-py alone."""
    if lean:
        memory = RedisMemory.from_url(
            url, key_prefix=unique_prefix(), wait_replicas=1, wait_timeout_ms=WAIT_TIMEOUT_MS
        )
        assert isinstance(memory.hot_client, PipelinedRedis)
    else:
        memory = RedisMemory(
            client=redis.asyncio.Redis.from_url(url),
            key_prefix=unique_prefix(),
            wait_replicas=1,
            wait_timeout_ms=WAIT_TIMEOUT_MS,
        )
    try:
        yield memory
    finally:
        await memory.close()


async def commit(memory: RedisMemory, key: str, record: dict[str, object]) -> None:
    grant = await memory.lease_and_read(key, ttl_ms=TTL_MS)
    assert grant.lease is not None
    await memory.commit_and_release(grant.lease, record, status=InstanceStatus.ACTIVE)


@pytest.mark.parametrize("lean", [True, False], ids=["lean-client", "redis-py"])
async def test_commits_wait_for_the_replica_and_an_unacknowledged_one_is_an_outage_until_it_catches_up(
    replicated: ReplicatedRedis, lean: bool
) -> None:
    async with waiting_memory(replicated.master.url, lean=lean) as memory:
        state_key = memory.instance_keys("orders:one").state
        await commit(memory, "orders:one", {"step": 1})
        # Acknowledged by the replica before the call returned: it serves the record already.
        assert orjson.loads(replicated.replica_get(state_key) or b"null") == {"step": 1}
        assert await memory.ping()

        replicated.freeze()
        grant = await memory.lease_and_read("orders:one", ttl_ms=TTL_MS)
        assert grant.lease is not None
        with pytest.raises(RedisReplicationError, match=r"only 0 of wait_replicas=1 replicas") as raised:
            await memory.commit_and_release(grant.lease, {"step": 2}, status=InstanceStatus.ACTIVE)
        assert unavailable_dependency(raised.value) is raised.value  # the consumer waits for Redis
        assert raised.value.dependency == "redis"
        assert await memory.inspect("orders:one") == {"step": 2}  # on the master, unacknowledged
        # Until the replica has it, nothing may act on that record: no lease, no ready ping.
        with pytest.raises(RedisReplicationError, match="still acknowledged by only 0"):
            await memory.lease_and_read("orders:one", ttl_ms=TTL_MS)
        with pytest.raises(RedisReplicationError):
            await memory.lease_and_read("orders:other", ttl_ms=TTL_MS)
        assert not await memory.ping()
        assert memory.last_ping_error is not None
        assert "replicas" in memory.last_ping_error

        replicated.thaw()
        deadline = time.monotonic() + 20
        while not await memory.ping():
            assert time.monotonic() < deadline, memory.last_ping_error
            await asyncio.sleep(0.05)
        assert orjson.loads(replicated.replica_get(state_key) or b"null") == {"step": 2}
        grant = await memory.lease_and_read("orders:one", ttl_ms=TTL_MS)
        assert grant.record == {"step": 2}
        assert grant.lease is not None
        await memory.commit_and_release(grant.lease, {"step": 3}, status=InstanceStatus.ACTIVE)
        assert orjson.loads(replicated.replica_get(state_key) or b"null") == {"step": 3}


async def test_a_lease_waits_for_an_earlier_unacknowledged_commit_even_after_a_reconnect(
    replicated: ReplicatedRedis,
) -> None:
    # The check writes and WAITs on its own: a connection opened after the failed commit (whose own
    # replication offset would be 0) cannot pass it before the replica has the commit.
    async with waiting_memory(replicated.master.url, lean=True) as memory:
        await commit(memory, "orders:one", {"step": 1})
        replicated.freeze()
        with pytest.raises(RedisReplicationError):
            await commit(memory, "orders:one", {"step": 2})
        hot = memory.hot_client
        assert hot is not None
        await hot.close()  # the next request opens a fresh connection
        with pytest.raises(RedisReplicationError):
            await memory.lease_and_read("orders:one", ttl_ms=TTL_MS)
        replicated.thaw()
        deadline = time.monotonic() + 20
        while True:
            try:
                grant = await memory.lease_and_read("orders:one", ttl_ms=TTL_MS)
                break
            except RedisReplicationError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert grant.record == {"step": 2}


def test_wait_replicas_is_refused_in_cluster_mode_and_validated() -> None:
    with pytest.raises(ValueError, match="standalone Redis"):
        RedisMemory.from_url("redis://127.0.0.1:9/0", cluster_mode=True, wait_replicas=1)
    with pytest.raises(ValueError, match="blocks forever"):
        RedisMemory.from_url("redis://127.0.0.1:9/0", wait_replicas=1, wait_timeout_ms=0)
    with pytest.raises(ValueError, match="non-negative integer"):
        RedisMemory.from_url("redis://127.0.0.1:9/0", wait_replicas=-1)


# ---------------------------------------------------------------------------------- through the service


def workflows(first: int, count: int) -> list[ArvoEvent]:
    return [bench_init(first + index, 1, resumable=index % 2 == 1) for index in range(count)]


async def publish(service: ArvoService, events: list[ArvoEvent]) -> None:
    for event in events:
        await publish_events(
            service.settings.kafka_bootstrap_servers, service.router.route_event(event), [event]
        )


async def test_a_frozen_replica_makes_the_service_wait_and_nothing_is_lost_or_dead_lettered(
    kafka_bootstrap: str, kafka_names: KafkaNames, replicated: ReplicatedRedis
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        app="service.examples:bench_app",
        redis_url=replicated.master.url,
        redis_key_prefix=unique_prefix(),
        redis_wait_replicas=1,
        redis_wait_timeout_ms=WAIT_TIMEOUT_MS,
        retry_max_attempts=3,  # the outage outlasts this budget many times over
    )
    async with (
        TopicTail(kafka_bootstrap, kafka_names.topic(CLIENT)) as replies,
        running_service(settings) as service,
    ):
        before = workflows(0, 6)
        await publish(service, before)
        await replies.wait_for_replies([init.id for init in before], timeout_s=60)
        done_before = consumed(service)

        replicated.freeze()
        during = workflows(100, 6)
        await publish(service, during)
        await wait_until(
            lambda: bool(service.loop.stats.dependency_waits["redis"]),
            what="records waiting for the replica",
        )
        assert "redis" in service.loop.dependencies.outages  # /readyz names it
        await asyncio.sleep(3)  # far longer than the retry budget (3 attempts, 50 ms at most)
        assert not replies.replies_to([init.id for init in during])  # nothing completed unconfirmed
        assert service.loop.stats.parked == 0
        assert not service.loop.stats.dead_lettered
        waiting_since = consumed(service)

        replicated.thaw()
        await replies.wait_for_replies([init.id for init in during], timeout_s=60)
        await wait_until(lambda: not service.loop.dependencies.outages, what="the outage to end")
        assert consumed(service) > waiting_since >= done_before
        assert service.loop.stats.parked == 0
        assert not service.loop.stats.dead_lettered
    delivery = exactly_once(replies.records, before + during)
    assert delivery.duplicates == 0
    for init in before + during:
        assert delivery.completions[init.id].data == {"result": 2 * (init.data["a"] + 1)}
    assert not await read_dead_letters(settings)


async def test_the_lean_client_sends_a_script_and_a_command_behind_it_in_one_round_trip(
    private_redis: PrivateRedisServer,
) -> None:
    hot = PipelinedRedis(host="127.0.0.1", port=private_redis.port)
    script = LuaScript("redis.call('SET', KEYS[1], ARGV[1]) return 7", name="probe")
    try:
        await hot.execute("SCRIPT", "LOAD", script.source)
        before = hot.requests
        assert await hot.evalsha_then(script, ["k"], ["v"], ("GET", "k")) == (7, b"v")
        assert hot.requests - before == 2  # written together: one round trip
        await hot.execute("SCRIPT", "FLUSH")
        # NOSCRIPT: the script is loaded and both are sent again.
        assert await hot.evalsha_then(script, ["k"], ["w"], ("WAIT", 0, 10)) == (7, 0)
        with pytest.raises(RespReplyError, match="ERR"):
            await hot.evalsha_then(script, ["k"], ["x"], ("NOSUCHCOMMAND",))
        assert await hot.execute_all(("SET", "a", "1"), ("GET", "a")) == [b"OK", b"1"]
        with pytest.raises(RespReplyError):
            await hot.execute_all(("INCR", "k"), ("GET", "a"))
    finally:
        await hot.close()
