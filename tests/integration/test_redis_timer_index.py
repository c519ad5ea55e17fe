"""The Redis timer schedule (one sorted set per orchestrator partition) on a server and on a cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.runtime.redis_memory import RedisMemory
from service.runtime.redis_timer_index import RedisTimerIndex
from service.runtime.timer_index import ScheduledTimer, TimerIndex, partition_key
from tests.integration._redis import PrivateRedisServer, running_single_node_cluster, unique_prefix

pytestmark = pytest.mark.integration

PARTITION = partition_key("p.arvo.orc.order", 2)


async def exercise(index: TimerIndex) -> None:
    early = ScheduledTimer("subject/with{braces}%", "xstate.after.500.order.a#0", 1_000)
    late = ScheduledTimer("s2", "arvo.deadline", 5_000)
    other = ScheduledTimer("s3", "t#1", 1_000)
    await index.schedule(PARTITION, [late, early])
    await index.schedule(PARTITION, [early])  # again: one entry
    await index.schedule(partition_key("p.arvo.orc.order", 3), [other])
    assert await index.count(PARTITION) == 2
    assert await index.due(PARTITION, now_ms=999, limit=10) == []
    assert await index.due(PARTITION, now_ms=1_000, limit=10) == [early]
    assert await index.due(PARTITION, now_ms=9_000, limit=1) == [early]  # earliest first, bounded
    assert await index.due(PARTITION, now_ms=9_000, limit=10) == [early, late]
    await index.remove(PARTITION, [early])
    assert await index.due(PARTITION, now_ms=9_000, limit=10) == [late]
    assert await index.count(partition_key("p.arvo.orc.order", 3)) == 1  # another partition's own key


async def test_a_schedule_on_a_redis_server(redis_key_prefix: str, shared_redis_url: str) -> None:
    async with RedisMemory.from_url(shared_redis_url, key_prefix=redis_key_prefix) as memory:
        index = RedisTimerIndex(client=memory.client, key_prefix=redis_key_prefix)
        await exercise(index)
        assert index.key(PARTITION) == f"{redis_key_prefix}:timers:{{p.arvo.orc.order/2}}"
        # A member that does not parse (a hand-edited key) is dropped when read, not returned.
        await memory.client.zadd(index.key(PARTITION), {b"garbage": 1})
        assert [timer.subject for timer in await index.due(PARTITION, now_ms=9_000, limit=10)] == ["s2"]
        assert await index.count(PARTITION) == 1


@pytest.fixture(scope="module")
def single_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisServer]:
    with running_single_node_cluster(tmp_path_factory.mktemp("cluster")) as server:
        yield server


async def test_a_schedule_on_a_redis_cluster(single_node_cluster: PrivateRedisServer) -> None:
    prefix = unique_prefix()
    async with RedisMemory.from_url(single_node_cluster.url, key_prefix=prefix, cluster_mode=True) as memory:
        await exercise(RedisTimerIndex(client=memory.client, key_prefix=prefix))
