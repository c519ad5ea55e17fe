"""The slot-aware hot client against a real Redis Cluster (private redis-server processes).

A two-master cluster (slots 0-8191 and 8192-16383) on free loopback ports is set up per test (~2 s):
the per-event calls go to the right master through one pipelined connection per node, the requests
of one loop iteration leave in one write per node, ``MOVED`` after a slot migration and ``ASK`` during
one are followed, and a node lost mid-flight fails only its own requests, as an outage, until it is
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.memory import InstanceStatus
from service.runtime.redis_memory import RedisMemory, RedisUnavailableError
from service.runtime.redis_outbox import RedisOutbox
from service.runtime.resp_client import LuaScript
from service.runtime.resp_cluster import ClusterPipelinedRedis
from tests.integration._redis import PrivateRedisServer, running_single_node_cluster, unique_prefix

pytestmark = pytest.mark.integration
TTL_MS = 5_000
HALF = 8192
"""The first master serves slots [0, HALF), the second [HALF, 16384)."""


@contextlib.contextmanager
def running_cluster(directory: Path, *, masters: int = 2) -> Iterator[list[PrivateRedisServer]]:
    """A Redis Cluster of ``masters`` masters (no replicas), slots split evenly; stopped on exit."""
    servers = [
        PrivateRedisServer(
            directory=directory / f"node{n}",
            extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
        )
        for n in range(masters)
    ]
    try:
        for server in servers:
            server.start()
        admins = [redis.Redis.from_url(server.url) for server in servers]
        share = 16384 // masters
        for n, admin in enumerate(admins):
            last = 16383 if n == masters - 1 else (n + 1) * share - 1
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", n * share, last)  # type: ignore[no-untyped-call]
        for server in servers[1:]:
            admins[0].execute_command("CLUSTER", "MEET", "127.0.0.1", server.port)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 30
        while not all(_settled(admin, masters) for admin in admins):
            if time.monotonic() > deadline:
                pytest.fail("the cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        for admin in admins:
            admin.close()
        yield servers
    finally:
        for server in servers:
            server.stop(sig=signal.SIGKILL)


def _settled(admin: redis.Redis, masters: int) -> bool:
    info = admin.cluster("INFO")
    return bool(info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == masters)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[PrivateRedisServer]]:
    with running_cluster(tmp_path / "cluster") as servers:
        yield servers


@pytest.fixture
async def memory(cluster: list[PrivateRedisServer]) -> AsyncIterator[RedisMemory]:
    async with RedisMemory.from_url(cluster[0].url, key_prefix=unique_prefix(), cluster_mode=True) as memory:
        yield memory


def _hot(memory: RedisMemory) -> ClusterPipelinedRedis:
    hot = memory.hot_client
    assert isinstance(hot, ClusterPipelinedRedis)
    return hot


def _slot(memory: RedisMemory, key: str) -> int:
    return key_slot(memory.instance_keys(key).state.encode())


def _keys_on(memory: RedisMemory, node: int, count: int) -> list[str]:
    """``count`` instance keys whose slot is served by master ``node`` (0: first half of the slots)."""
    keys = []
    for n in range(10_000):
        key = f"orders:{n}"
        if (_slot(memory, key) >= HALF) == bool(node):
            keys.append(key)
            if len(keys) == count:
                return keys
    raise AssertionError("not enough keys")


class _CountingCalls:
    """Counts the commands redis-py's cluster client sends (to prove the hot path does not use it)."""

    def __init__(self, client: Any) -> None:
        self.commands: list[str] = []
        original = client.execute_command

        async def counting(*args: Any, **options: Any) -> Any:
            self.commands.append(str(args[0]))
            return await original(*args, **options)

        client.execute_command = counting


def _admin(server: PrivateRedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def _node_id(server: PrivateRedisServer) -> str:
    admin = _admin(server)
    try:
        return str(admin.execute_command("CLUSTER", "MYID").decode())  # type: ignore[no-untyped-call]
    finally:
        admin.close()


def _start_migration(slot: int, source: PrivateRedisServer, target: PrivateRedisServer) -> None:
    source_admin, target_admin = _admin(source), _admin(target)
    try:
        target_admin.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source))  # type: ignore[no-untyped-call]
        source_admin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target))  # type: ignore[no-untyped-call]
    finally:
        source_admin.close()
        target_admin.close()


def _finish_migration(slot: int, source: PrivateRedisServer, target: PrivateRedisServer) -> None:
    source_admin, target_admin = _admin(source), _admin(target)
    try:
        keys = source_admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)  # type: ignore[no-untyped-call]
        if keys:
            source_admin.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)  # type: ignore[no-untyped-call]
        owner = _node_id(target)
        for admin in (target_admin, source_admin):
            admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)  # type: ignore[no-untyped-call]
    finally:
        source_admin.close()
        target_admin.close()


# --- the per-event calls ---------------------------------------------------------------------------


async def test_a_workflow_leases_and_commits_through_the_cluster_hot_client(memory: RedisMemory) -> None:
    hot = _hot(memory)
    redis_py = _CountingCalls(memory.client)
    for node in (0, 1):
        key = _keys_on(memory, node, 1)[0]
        grant = await memory.lease_and_read(key, ttl_ms=TTL_MS)
        assert grant.lease is not None
        assert grant.record is None
        assert await memory.renew(grant.lease, ttl_ms=TTL_MS)
        await memory.commit_and_release(grant.lease, {"step": 1}, status=InstanceStatus.ACTIVE)
        again = await memory.lease_and_read(key, ttl_ms=TTL_MS)
        assert again.lease is not None
        assert again.record == {"step": 1}
        assert again.lease.fence == grant.lease.fence + 1
        assert await memory.release(again.lease)
        final = await memory.lease_and_read(key, ttl_ms=TTL_MS)
        assert final.lease is not None
        await memory.commit_and_release(final.lease, {"step": 2}, status=InstanceStatus.DONE)
    assert redis_py.commands == [], "redis-py must not serve the per-event calls (index move included)"
    assert len(hot.nodes) == 2, hot.nodes
    # The index moves went to the index slot's master: listing (on redis-py) sees both instances.
    done = await memory.list_instances(status=InstanceStatus.DONE)
    assert sorted(row.key for row in done) == sorted([_keys_on(memory, 0, 1)[0], _keys_on(memory, 1, 1)[0]])
    assert await memory.inspect(_keys_on(memory, 1, 1)[0]) == {"step": 2}


async def test_the_requests_of_one_loop_iteration_leave_in_one_write_per_node(memory: RedisMemory) -> None:
    hot = _hot(memory)
    keys = _keys_on(memory, 0, 20) + _keys_on(memory, 1, 20)
    for warm in (keys[0], keys[-1]):  # connects both nodes and loads the scripts there
        await memory.release((await memory.lease_and_read(warm, ttl_ms=TTL_MS)).lease)  # type: ignore[arg-type]
    requests, round_trips = hot.requests, hot.round_trips
    grants = await asyncio.gather(*(memory.lease_and_read(key, ttl_ms=TTL_MS) for key in keys))
    assert (hot.requests - requests, hot.round_trips - round_trips) == (40, 2)
    requests, round_trips = hot.requests, hot.round_trips
    await asyncio.gather(*(memory.release(grant.lease) for grant in grants))  # type: ignore[arg-type]
    assert (hot.requests - requests, hot.round_trips - round_trips) == (40, 2)


async def test_the_outbox_settles_through_the_cluster_hot_client(memory: RedisMemory) -> None:
    hot = _hot(memory)
    outbox = RedisOutbox(
        client=memory.client, key_prefix=memory.key_prefix, ttl_s=60, hot_client=memory.hot_client
    )

    def consumed(event_id: str) -> ArvoEvent:
        return create_arvo_event(
            id=event_id, source="com.src.one", type="com.bench.add", subject="s", data={}
        )

    def emitted(value: int) -> list[ArvoEvent]:
        return [
            create_arvo_event(
                source="com.bench.add", type="evt.bench.add.success", subject="s", data={"v": value}
            )
        ]

    before = hot.requests
    events = [consumed(str(n)) for n in range(16)]
    assert (
        await asyncio.gather(*(outbox.settle("com.bench.add", event, emitted(1)) for event in events))
        == [None] * 16
    )
    stored = await outbox.settle("com.bench.add", events[3], emitted(2))
    assert stored is not None
    assert stored[0].data == {"v": 1}
    assert hot.requests - before == 17
    assert len(hot.nodes) == 2, "16 outbox keys land on both masters"


async def test_hot_client_calls_are_client_spans_of_the_node_that_served_them(memory: RedisMemory) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from service.runtime import otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = otel.use_tracer_provider(provider)
    key = _keys_on(memory, 1, 1)[0]
    try:
        with otel.runtime_tracer().start_as_current_span("handler"):
            grant = await memory.lease_and_read(key, ttl_ms=TTL_MS)
            assert grant.lease is not None
    finally:
        otel.use_tracer_provider(previous)
    calls = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.CLIENT]
    assert [span.name for span in calls] == ["redis lease_and_read"]
    attributes = dict(calls[0].attributes or {})
    second = memory.client.nodes_manager.get_node_from_slot(HALF)  # type: ignore[union-attr]
    assert attributes["net.peer.port"] == int(second.port)
    assert attributes["arvo.redis.operation"] == "lease_and_read"


# --- redirections ----------------------------------------------------------------------------------


async def test_moved_after_a_slot_migration_is_followed_and_the_slot_map_updated(
    cluster: list[PrivateRedisServer], memory: RedisMemory
) -> None:
    hot = _hot(memory)
    key = _keys_on(memory, 0, 1)[0]
    grant = await memory.lease_and_read(key, ttl_ms=TTL_MS)
    assert grant.lease is not None
    await memory.commit_and_release(grant.lease, {"before": "migration"}, status=InstanceStatus.ACTIVE)
    warm = await memory.lease_and_read(_keys_on(memory, 1, 1)[0], ttl_ms=TTL_MS)  # scripts on node 1
    await memory.commit_and_release(warm.lease, {}, status=InstanceStatus.ACTIVE)  # type: ignore[arg-type]
    slot = _slot(memory, key)
    _start_migration(slot, cluster[0], cluster[1])
    _finish_migration(slot, cluster[0], cluster[1])

    before = hot.requests
    grant = await memory.lease_and_read(key, ttl_ms=TTL_MS)  # sent to node 0, MOVED to node 1
    assert grant.lease is not None
    assert grant.record == {"before": "migration"}
    assert hot.requests - before == 2
    owner = memory.client.nodes_manager.get_node_from_slot(slot)  # type: ignore[union-attr]
    assert int(owner.port) == cluster[1].port, "redis-py's slot map learnt the move"
    await memory.commit_and_release(grant.lease, {"after": "migration"}, status=InstanceStatus.ACTIVE)
    assert hot.requests - before == 3 + 2, "the commit goes straight to the new owner (+ index move, SADD)"
    assert await memory.inspect(key) == {"after": "migration"}


async def test_ask_during_a_slot_migration_sends_asking_to_the_importing_node(
    cluster: list[PrivateRedisServer], memory: RedisMemory
) -> None:
    hot = _hot(memory)
    keys = _keys_on(memory, 0, 1)
    slot = _slot(memory, keys[0])
    on_target = memory.instance_keys(keys[0]).state.removesuffix(":state") + ":probe"  # same slot
    await memory.ping()
    _start_migration(slot, cluster[0], cluster[1])
    # A key node 0 does not have: node 0 answers ASK, node 1 (importing) runs the request after
    # ASKING, both in one write; it does not know the script yet (NOSCRIPT -> SCRIPT LOAD -> again).
    script = LuaScript("return redis.call('SET', KEYS[1], ARGV[1])", name="probe")
    before = hot.requests
    assert await hot.evalsha(script, [on_target], ["moved-in"]) == b"OK"
    assert hot.requests - before == 1 + 2 + 1 + 2  # EVALSHA, ASKING+EVALSHA, SCRIPT LOAD, ASKING+EVALSHA
    assert await hot.execute("GET", on_target) == b"moved-in", "a read is asked over too"
    target = _admin(cluster[1])
    try:
        assert target.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1  # type: ignore[no-untyped-call]
    finally:
        target.close()
    owner = memory.client.nodes_manager.get_node_from_slot(slot)  # type: ignore[union-attr]
    assert int(owner.port) == cluster[0].port, "ASK does not change the slot map"
    # A script over several keys none of which exists yet: the importing node answers TRYAGAIN (a
    # multi-key request during the slot's migration), an outage until the migration ends.
    with pytest.raises(RedisUnavailableError, match="TRYAGAIN"):
        await memory.lease_and_read(keys[0], ttl_ms=TTL_MS)
    _finish_migration(slot, cluster[0], cluster[1])
    grant = await memory.lease_and_read(keys[0], ttl_ms=TTL_MS)  # MOVED to node 1, then served
    assert grant.lease is not None
    await memory.commit_and_release(grant.lease, {"done": True}, status=InstanceStatus.DONE)
    assert await memory.inspect(keys[0]) == {"done": True}
    assert await hot.execute("GET", on_target) == b"moved-in"


# --- a node lost -----------------------------------------------------------------------------------


async def test_a_node_lost_mid_flight_fails_only_its_requests_and_the_next_call_recovers(
    cluster: list[PrivateRedisServer], memory: RedisMemory
) -> None:
    first, second = _keys_on(memory, 0, 3), _keys_on(memory, 1, 3)
    for key in (first[0], second[0]):
        await memory.release((await memory.lease_and_read(key, ttl_ms=TTL_MS)).lease)  # type: ignore[arg-type]
    process = cluster[0].process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)  # node 0 takes the requests but never answers
    try:
        in_flight = [
            asyncio.ensure_future(memory.lease_and_read(key, ttl_ms=TTL_MS)) for key in first + second
        ]
        await asyncio.wait(in_flight[3:], timeout=5)
        assert all(task.done() and task.result().acquired for task in in_flight[3:]), "node 1 serves"
        assert not any(task.done() for task in in_flight[:3]), "node 0 frozen"
        cluster[0].stop(sig=signal.SIGKILL)  # the connection dies with the requests in flight
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
    results = await asyncio.gather(*in_flight[:3], return_exceptions=True)
    assert all(isinstance(result, RedisUnavailableError) for result in results), results
    grant = await memory.lease_and_read(second[1] + "-x", ttl_ms=TTL_MS)
    assert grant.acquired, "node 1 still serves while node 0 is down"

    cluster[0].start()
    recovered = None
    for _ in range(200):  # the node reloads its cluster config (same id, same slots)
        try:
            recovered = await memory.lease_and_read(first[0], ttl_ms=TTL_MS)
            break
        except RedisUnavailableError:
            await asyncio.sleep(0.05)
    assert recovered is not None
    assert recovered.lease is not None
    await memory.commit_and_release(recovered.lease, {"back": True}, status=InstanceStatus.ACTIVE)
    assert await memory.inspect(first[0]) == {"back": True}


# --- the single-node cluster of the other tests ----------------------------------------------------


async def test_a_single_node_cluster_uses_one_connection(tmp_path: Path) -> None:
    with running_single_node_cluster(tmp_path / "single") as server:
        async with RedisMemory.from_url(server.url, key_prefix=unique_prefix(), cluster_mode=True) as memory:
            hot = _hot(memory)
            keys = [f"orders:{n}" for n in range(32)]
            await memory.ping()
            await memory.release((await memory.lease_and_read("warm:up", ttl_ms=TTL_MS)).lease)  # type: ignore[arg-type]
            round_trips = hot.round_trips
            grants = await asyncio.gather(*(memory.lease_and_read(key, ttl_ms=TTL_MS) for key in keys))
            assert hot.round_trips - round_trips == 1
            assert all(grant.acquired for grant in grants)
            assert list(hot.nodes) == [f"127.0.0.1:{server.port}"]
