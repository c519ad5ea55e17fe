"""Cancellation on the real broker and Redis: ``arvo instances cancel`` stops a running workflow.

The order demo runs in this process without its quote service, so the order waits in ``shipping``
and its child shipment (a resumable) waits for a quote for good. ``arvo instances cancel`` runs as a
subprocess, as an operator runs it: it publishes the cancel event to the order's topic, the order
stops and tells its initiator, the shipment is cancelled in turn through Kafka, and the replies that
come late are ignored and counted, never dead-lettered. The status indexes of a Redis Cluster hold
``cancelled`` too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.arvo.execution import ArvoHandler
from service.arvo.memory import InstanceStatus
from service.arvo.orchestration.cancellation import CANCEL_EVENT_TYPE
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples.demo import demo_handlers, order_orchestrator, shipment_resumable
from service.runtime.redis_memory import RedisMemory
from tests.integration._kafka import KafkaNames, create_test_topics, kafka_test_settings
from tests.integration._redis import PrivateRedisServer, running_single_node_cluster, unique_prefix
from tests.integration._service import (
    CLIENT,
    TopicTail,
    order_init,
    publish_events,
    run_cli,
    running_service,
    service_env,
    wait_until,
)

pytestmark = pytest.mark.integration

QUOTE = "com.shipping.quote"
REASON = "customer changed their mind"


async def test_arvo_instances_cancel_stops_a_running_order_and_its_child_shipment(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    shared_redis_url: str,
    redis_key_prefix: str,
    tmp_path: Path,
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap, kafka_names, redis_url=shared_redis_url, redis_key_prefix=redis_key_prefix
    )
    memory = RedisMemory.from_url(shared_redis_url, key_prefix=redis_key_prefix)
    services = demo_handlers()
    quote_service = next(handler for handler in services if handler.source == QUOTE)
    handlers: list[ArvoHandler] = [
        *(handler for handler in services if handler.source != QUOTE),  # nobody answers the quote
        order_orchestrator(memory),
        shipment_resumable(memory),
    ]
    quote_topic = kafka_names.topic(QUOTE)
    await create_test_topics(settings, [quote_topic])
    env = service_env(settings)

    async with (
        running_service(settings, handlers=handlers, memory=memory) as service,
        TopicTail(kafka_bootstrap, service.router.handler_topic(CLIENT)) as replies,
        TopicTail(kafka_bootstrap, quote_topic) as quotes,
    ):
        stats = service.loop.stats
        order_topic = service.router.handler_topic("arvo.orc.order")
        shipment_topic = service.router.handler_topic("arvo.orc.shipment")
        init = order_init("cancel-1")
        await publish_events(kafka_bootstrap, service.router.route_event(init), [init])
        await wait_until(
            lambda: len(quotes.events()) == 1, timeout_s=60, what="the shipment asked for a quote"
        )
        [quote_call] = quotes.events()
        order_key = ArvoOrchestrationSubject.parse(init.subject).instance_key
        shipment_key = ArvoOrchestrationSubject.parse(quote_call.subject).instance_key
        assert {row.key: row.status for row in await memory.list_instances()} == {
            order_key: InstanceStatus.ACTIVE,
            shipment_key: InstanceStatus.ACTIVE,
        }

        cancelled = await run_cli(
            "instances", "cancel", init.subject, "--reason", REASON, env=env, cwd=tmp_path
        )
        assert cancelled.returncode == 0, cancelled
        assert cancelled.stdout.startswith(f"cancel requested: {order_key} (event "), cancelled
        assert f" to {order_topic}); " in cancelled.stdout

        # The initiator hears of it: the standard system error, answering its init event.
        reply = (await replies.wait_for_replies([init.id], timeout_s=60))[init.id]
        assert (reply.type, reply.subject, reply.source) == (
            "sys.arvo.orc.order.error",
            init.subject,
            "arvo.orc.order",
        )
        assert reply.data["errorName"] == "OrchestrationCancelledError"
        assert reply.data["errorMessage"] == f"arvo.orc.order cancelled by com.arvo.cli: {REASON}"

        # The child is cancelled in turn (its cancel event went through Kafka), and its own system
        # error, sent back to the cancelled parent, is ignored there.
        async def statuses() -> dict[str, InstanceStatus]:
            return {row.key: row.status for row in await memory.list_instances()}

        deadline = time.monotonic() + 60
        while await statuses() != {
            order_key: InstanceStatus.CANCELLED,
            shipment_key: InstanceStatus.CANCELLED,
        }:
            assert time.monotonic() < deadline, await statuses()
            await asyncio.sleep(0.05)
        await wait_until(
            lambda: stats.consumed[(order_topic, "sys.arvo.orc.shipment.error", "ignored_cancelled")] == 1,
            timeout_s=60,
            what="the child's system error ignored by the cancelled order",
        )
        assert stats.consumed[(order_topic, CANCEL_EVENT_TYPE, "cancelled")] == 1
        assert stats.consumed[(shipment_topic, CANCEL_EVENT_TYPE, "cancelled")] == 1

        # A late reply: the quote service answers after all; ignored and counted, not dead-lettered.
        [late] = (await quote_service.execute(quote_call)).events
        await publish_events(kafka_bootstrap, service.router.route_event(late), [late])
        await wait_until(
            lambda: stats.consumed[(shipment_topic, "evt.shipping.quote.success", "ignored_cancelled")] == 1,
            timeout_s=60,
            what="the late quote ignored by the cancelled shipment",
        )
        assert not stats.dead_lettered, stats.dead_lettered
        record = await memory.inspect(shipment_key)
        assert record is not None
        assert record["events"]["consumed"]["type"] == CANCEL_EVENT_TYPE

        # The operator's view, and a second cancel is a no-op.
        listed = await run_cli("instances", "list", "--status", "cancelled", env=env, cwd=tmp_path)
        assert listed.returncode == 0, listed
        assert sorted(row.split("\t")[0] for row in listed.stdout.splitlines()[1:]) == sorted(
            [order_key, shipment_key]
        )
        shown = await run_cli("inspect", order_key, env=env, cwd=tmp_path)
        assert shown.returncode == 0, shown
        assert "status:          cancelled" in shown.stdout
        assert "cancelled:       by com.arvo.cli at " in shown.stdout
        assert REASON in shown.stdout
        again = await run_cli("instances", "cancel", order_key, env=env, cwd=tmp_path)
        assert again.returncode == 0, again
        assert again.stdout.strip() == f"instance {order_key} is already cancelled: nothing to cancel"
        unknown = order_init("never-started")
        missing = await run_cli("instances", "cancel", unknown.subject, env=env, cwd=tmp_path)
        assert missing.returncode == 0, missing
        assert missing.stdout.strip().endswith(
            f"does not exist (key prefix '{redis_key_prefix}'): nothing to cancel"
        )
    await memory.close()


# --- Redis Cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisServer]:
    """A one-node Redis Cluster owning every slot (cross-slot rules apply as in a real cluster)."""
    with running_single_node_cluster(tmp_path_factory.mktemp("cluster")) as server:
        yield server


async def test_cluster_mode_indexes_the_cancelled_status_and_its_retention(
    single_node_cluster: PrivateRedisServer,
) -> None:
    async with RedisMemory.from_url(
        single_node_cluster.url, key_prefix=unique_prefix(), cluster_mode=True, instance_retention_s=60
    ) as memory:
        for key in ("o1:a", "o1:b"):
            grant = await memory.lease_and_read(key, ttl_ms=10_000)
            assert grant.lease is not None
            await memory.commit_and_release(grant.lease, {"key": key}, status=InstanceStatus.ACTIVE)
        grant = await memory.lease_and_read("o1:a", ttl_ms=10_000)
        assert grant.lease is not None
        await memory.commit_and_release(grant.lease, {"key": "o1:a", "n": 2}, status=InstanceStatus.CANCELLED)
        await memory.set_status("o1:b", InstanceStatus.CANCELLED, reason="operator")
        assert {(row.key, row.status) for row in await memory.list_instances()} == {
            ("o1:a", InstanceStatus.CANCELLED),
            ("o1:b", InstanceStatus.CANCELLED),
        }
        client = memory.client
        assert await client.zrange(memory.index_key("o1", InstanceStatus.ACTIVE), 0, -1) == []
        # Finished: the instance's keys carry the retention, like done and failed.
        keys = memory.instance_keys("o1:a")
        ttls = [await client.pttl(name) for name in (keys.state, keys.fence, keys.wfence)]
        assert all(50_000 < ttl <= 60_000 for ttl in ttls), ttls

        await memory.set_status("o1:b", InstanceStatus.ACTIVE)
        assert [row.key for row in await memory.list_instances(status=InstanceStatus.CANCELLED)] == ["o1:a"]
        assert await client.pttl(memory.instance_keys("o1:b").state) == -1
