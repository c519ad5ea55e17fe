"""Finding 2 of the dependency-fault run: what Redis failures look like to the consumer.

Every way Redis can refuse to serve — a cluster slot without a master, credentials rejected mid-run,
a frozen server — must reach the consumer as a dependency outage
(:class:`~service.arvo.availability.DependencyUnavailableError` in the cause chain), so records wait
instead of spending their retry budget; and the memory works again once Redis does.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.arvo.availability import unavailable_dependency
from service.arvo.memory import InstanceStatus
from service.runtime.redis_memory import RedisMemory, RedisUnavailableError
from tests.integration._redis import PrivateRedisServer, running_single_node_cluster, unique_prefix

pytestmark = pytest.mark.integration
TTL_MS = 5_000


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[PrivateRedisServer]:
    with running_single_node_cluster(tmp_path / "cluster") as server:
        yield server


async def test_a_cluster_slot_without_a_master_is_an_outage_and_work_resumes_after_it(
    cluster_node: PrivateRedisServer,
) -> None:
    memory = RedisMemory.from_url(cluster_node.url, key_prefix=unique_prefix(), cluster_mode=True)
    admin = redis.Redis.from_url(cluster_node.url)
    key = "orders:exec-1"
    slot = int(admin.execute_command("CLUSTER", "KEYSLOT", memory.instance_keys(key).state))  # type: ignore[no-untyped-call]
    try:
        assert (await memory.lease_and_read("orders:warm-up", ttl_ms=TTL_MS)).acquired
        admin.execute_command("CLUSTER", "DELSLOTS", slot)  # type: ignore[no-untyped-call]
        with pytest.raises(RedisUnavailableError) as raised:
            await memory.lease_and_read(key, ttl_ms=TTL_MS)
        assert unavailable_dependency(raised.value) is raised.value
        assert raised.value.dependency == "redis"
        admin.execute_command("CLUSTER", "ADDSLOTS", slot)  # type: ignore[no-untyped-call]
        grant = None
        for _ in range(200):  # the client refreshes its slot map after the failure
            try:
                grant = await memory.lease_and_read(key, ttl_ms=TTL_MS)
                break
            except RedisUnavailableError:
                await asyncio.sleep(0.02)
        assert grant is not None
        assert grant.lease is not None
        await memory.commit_and_release(grant.lease, {"ok": True}, status=InstanceStatus.ACTIVE)
    finally:
        admin.close()
        await memory.close()


async def test_credentials_rejected_mid_run_are_an_outage(tmp_path: Path) -> None:
    server = PrivateRedisServer(directory=tmp_path / "redis")
    server.start()
    memory = RedisMemory.from_url(
        server.url.replace("redis://", "redis://:first@"), key_prefix=unique_prefix()
    )
    admin = redis.Redis.from_url(server.url)
    try:
        admin.config_set("requirepass", "first")
        admin.close()
        admin = redis.Redis.from_url(server.url, password="first")
        assert (await memory.lease_and_read("o:1", ttl_ms=TTL_MS)).acquired
        admin.config_set("requirepass", "rotated")  # the operator rotates the password…
        admin.client_kill_filter(_type="normal", skipme=True)  # …and drops the existing connections
        with pytest.raises(RedisUnavailableError) as raised:
            await memory.lease_and_read("o:2", ttl_ms=TTL_MS)
        assert "WRONGPASS" in str(raised.value) or "Authentication" in str(raised.value)
        assert not await memory.ping()
        assert memory.last_ping_error is not None
    finally:
        admin.close()
        await memory.close()
        server.stop()


async def test_a_frozen_redis_is_an_outage_and_memory_works_after_it_thaws(tmp_path: Path) -> None:
    server = PrivateRedisServer(directory=tmp_path / "redis")
    server.start()
    memory = RedisMemory.from_url(server.url, key_prefix=unique_prefix(), socket_timeout=0.3)
    assert server.process is not None
    try:
        assert (await memory.lease_and_read("o:1", ttl_ms=TTL_MS)).acquired
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisUnavailableError):
                await memory.lease_and_read("o:2", ttl_ms=TTL_MS)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert (await memory.lease_and_read("o:3", ttl_ms=TTL_MS)).acquired
    finally:
        await memory.close()
        server.stop()
