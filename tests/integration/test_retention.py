"""Retention of finished instances on real Redis (``ARVO_INSTANCE_RETENTION_S``).

* Real bench workflows (statechart and resumable) through the test broker and the shared Redis, with a
  retention of two seconds: every key of a finished instance carries the retention TTL, the same
  expiry time for all of them; after it nothing of the instances is left but pruned index entries;
  the next commit prunes those; a late event for an expired instance is dead-lettered as ``no_state``.
* The prune is bounded per commit; in cluster mode the index-move script prunes, and drops the
  pruned ids from the ``fences`` hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from contracts.bench import bench_machine_contract
from service.arvo.memory import InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.binding import decode_record
from service.runtime.dlq import H_REASON
from service.runtime.redis_memory import PRUNE_BATCH, RedisMemory
from service.runtime.stores import open_memory
from tests.integration._kafka import KafkaNames, kafka_test_settings, produce_records, read_topic
from tests.integration._redis import PrivateRedisServer, unique_prefix
from tests.integration._service import CLIENT, bench_init, publish_events, running_service

pytestmark = pytest.mark.integration

RETENTION_S = 2
WORKFLOWS = 6
ORCHESTRATORS = (bench_machine_contract.type, "arvo.orc.bench.resumable")


def _instance_part(key: str) -> str | None:
    """``state``/``fence``/``wfence``/``lock`` for an instance key, else ``None``."""
    if "}:" not in key or ":index:" in key:
        return None
    part = key.rsplit(":", 1)[1]
    return part if part in {"state", "fence", "wfence", "lock"} else None


async def _keys(client: redis.asyncio.Redis, prefix: str) -> list[str]:
    return sorted([key.decode() async for key in client.scan_iter(match=f"{prefix}:*", count=1000)])


async def test_finished_workflows_expire_with_all_their_keys_and_their_index_entries_are_pruned(
    kafka_bootstrap: str, kafka_names: KafkaNames, redis_key_prefix: str
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        redis_key_prefix=redis_key_prefix,
        app="service.examples:bench_app",
        instance_retention_s=RETENTION_S,
    )
    memory = open_memory(settings)
    assert isinstance(memory, RedisMemory)
    assert memory.instance_retention_s == RETENTION_S
    client = memory.client
    async with running_service(settings, memory=memory) as service:
        inits = [bench_init(index, resumable=index % 2 == 1) for index in range(WORKFLOWS)]
        for init in inits:
            await publish_events(kafka_bootstrap, service.router.route_event(init), [init])
        replies = await read_topic(
            kafka_bootstrap, service.router.handler_topic(CLIENT), min_records=WORKFLOWS, timeout_s=60
        )
        assert len(replies) == WORKFLOWS

        # Every key of every finished instance expires, all of one instance at the same time.
        keys = await _keys(client, redis_key_prefix)  # type: ignore[arg-type]
        instance_keys = [key for key in keys if _instance_part(key)]
        assert {_instance_part(key) for key in instance_keys} == {"state", "fence", "wfence"}
        assert len(instance_keys) == 3 * WORKFLOWS, instance_keys
        by_instance: dict[str, set[int]] = {}
        for key in instance_keys:
            pttl = await client.pttl(key)
            assert 0 < pttl <= RETENTION_S * 1000, (key, pttl)
            by_instance.setdefault(key.rsplit(":", 1)[0], set()).add(await client.pexpiretime(key))
        assert all(len(expiry) == 1 for expiry in by_instance.values()), by_instance
        # Besides them: the indexes, the orchestrators set and the stateless outbox (its own TTL).
        for key in keys:
            if _instance_part(key) is None and ":index:" not in key and not key.endswith(":orchestrators"):
                assert await client.pttl(key) > 0, f"{key} has no TTL"
        done = await memory.list_instances(status=InstanceStatus.DONE)
        assert len(done) == WORKFLOWS
        assert {row.orchestrator for row in done} == set(ORCHESTRATORS)

        # The orchestrator topic's records: a reply consumed by an instance, to replay it late.
        orchestrator_topic = service.router.handler_topic(bench_machine_contract.type)
        consumed = await read_topic(kafka_bootstrap, orchestrator_topic, min_records=3 * (WORKFLOWS // 2))
        late = next(
            record
            for record in consumed
            if decode_record(record.value, record.headers, max_bytes=1 << 20).type
            != bench_machine_contract.type
        )

        await asyncio.sleep(RETENTION_S + 0.3)
        keys = await _keys(client, redis_key_prefix)  # type: ignore[arg-type]
        assert [key for key in keys if _instance_part(key)] == [], "every instance key expired"
        assert await memory.list_instances() == [], "expired entries are not listed"
        index_entries = sum(
            [await client.zcard(memory.index_key(name, InstanceStatus.DONE)) for name in ORCHESTRATORS]
        )
        assert index_entries == WORKFLOWS, "not pruned before a commit of their orchestrator"

        # A late event for an expired instance finds no state: dead-lettered as no_state.
        await produce_records(
            kafka_bootstrap, orchestrator_topic, [(late.key, late.value, list(late.headers))]
        )
        letters = await read_topic(kafka_bootstrap, settings.dead_letter_topic_name, min_records=1)
        assert [dict(letter.headers)[H_REASON] for letter in letters] == [b"no_state"]

        # The next workflows' commits prune the expired entries of their orchestrators' indexes.
        more = [bench_init(100 + index, resumable=index == 1) for index in range(2)]
        for init in more:
            await publish_events(kafka_bootstrap, service.router.route_event(init), [init])
        await read_topic(
            kafka_bootstrap, service.router.handler_topic(CLIENT), min_records=WORKFLOWS + 2, timeout_s=60
        )
        for name in ORCHESTRATORS:
            assert await client.zcard(memory.index_key(name, InstanceStatus.DONE)) == 1, name
        assert len(await memory.list_instances()) == 2
        # The late event's lease left a fence without state: it expires too, like everything else.
        keys = await _keys(client, redis_key_prefix)  # type: ignore[arg-type]
        late_subject = decode_record(late.value, late.headers, max_bytes=1 << 20).subject
        orphan = memory.instance_keys(ArvoOrchestrationSubject.parse(late_subject).instance_key)
        assert orphan.fence in keys
        assert orphan.state not in keys
        for key in keys:
            if _instance_part(key):
                assert await client.pttl(key) > 0, f"{key} has no TTL"


async def test_a_backlog_of_expired_index_entries_is_pruned_in_bounded_batches(
    shared_redis_url: str, redis_key_prefix: str
) -> None:
    async with RedisMemory.from_url(
        shared_redis_url, key_prefix=redis_key_prefix, instance_retention_s=RETENTION_S
    ) as memory:
        done = memory.index_key("o", InstanceStatus.DONE)
        failed = memory.index_key("o", InstanceStatus.FAILED)
        old = int(time.time() * 1000) - RETENTION_S * 1000 - 10_000
        backlog = 2 * PRUNE_BATCH + 50
        await memory.client.zadd(done, {f"old-{n}": old + n for n in range(backlog)})
        await memory.client.zadd(failed, {"old-failed": old})
        recent = {"recent": int(time.time() * 1000)}
        await memory.client.zadd(done, recent)

        async def commit(execution_id: str, status: InstanceStatus = InstanceStatus.FAILED) -> None:
            grant = await memory.lease_and_read(f"o:{execution_id}", ttl_ms=10_000)
            assert grant.lease is not None
            await memory.commit_and_release(grant.lease, {"id": execution_id}, status=status)

        await commit("live", InstanceStatus.ACTIVE)
        assert await memory.client.zcard(done) == backlog + 1, "a live instance's commit does not prune"
        await commit("a")
        assert await memory.client.zcard(done) == backlog - PRUNE_BATCH + 1
        assert await memory.client.zrange(failed, 0, -1) == [b"a"]
        assert await memory.client.zrange(done, 0, 0) == [f"old-{PRUNE_BATCH}".encode()], "oldest first"
        await commit("b")
        await commit("c")
        assert await memory.client.zrange(done, 0, -1) == [b"recent"]


# --- cluster mode ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisServer]:
    """A one-node Redis Cluster owning all 16384 slots (as in test_redis_memory.py)."""
    server = PrivateRedisServer(
        directory=tmp_path_factory.mktemp("cluster"),
        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
    )
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        server.start()
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 30
        while admin.cluster("INFO").get("cluster_state") != "ok":
            if time.monotonic() > deadline:
                pytest.fail("single-node cluster did not reach cluster_state:ok")
            time.sleep(0.02)
        admin.close()
        yield server


async def test_cluster_mode_expires_finished_instances_and_prunes_the_index_and_fences(
    single_node_cluster: PrivateRedisServer,
) -> None:
    prefix = unique_prefix()
    async with RedisMemory.from_url(
        single_node_cluster.url, key_prefix=prefix, cluster_mode=True, instance_retention_s=1
    ) as memory:
        grant = await memory.lease_and_read("o:a", ttl_ms=10_000)
        assert grant.lease is not None
        await memory.commit_and_release(grant.lease, {"n": 1}, status=InstanceStatus.DONE)
        keys = memory.instance_keys("o:a")
        for key in (keys.state, keys.fence, keys.wfence):
            assert 0 < await memory.client.pttl(key) <= 1000
        fences = memory._index_fences_key("o")
        assert await memory.client.hexists(fences, "a")

        await asyncio.sleep(1.2)
        assert await memory.inspect("o:a") is None
        assert await memory.list_instances() == []
        grant = await memory.lease_and_read("o:b", ttl_ms=10_000)
        assert grant.lease is not None
        await memory.commit_and_release(grant.lease, {"n": 2}, status=InstanceStatus.DONE)
        assert await memory.client.zrange(memory.index_key("o", InstanceStatus.DONE), 0, -1) == [b"b"]
        assert not await memory.client.hexists(fences, "a"), "the pruned id's fence entry is gone"
        assert await memory.client.hexists(fences, "b")
        assert [row.key for row in await memory.list_instances()] == ["o:b"]
