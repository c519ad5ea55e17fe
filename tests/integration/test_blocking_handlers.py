"""Issue 11 E through the real broker and Redis: a handler that blocks does not freeze the service.

One service runs a stateless handler whose synchronous function sleeps 10 s, next to the bench
workflow (orchestrator, add, double). While that function sleeps, ``/healthz`` answers within
100 ms, the same handler's record on another partition is answered, an unrelated bench workflow
completes, and the watchdog reports no block; the slept record completes too. Then an ``async``
handler that does block the loop is reported by the watchdog, naming it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from service.arvo.contract import create_arvo_contract
from service.arvo.event import ArvoEvent
from service.arvo.execution import ArvoHandler
from service.arvo.factory import create_arvo_event_factory
from service.arvo.handler import ArvoEventHandler, HandlerContext
from service.examples.bench import bench_add_handler, bench_double_handler, bench_orchestrator
from service.runtime.redis_memory import RedisMemory
from tests.integration._kafka import KafkaNames, kafka_test_settings
from tests.integration._redis import free_port
from tests.integration._service import (
    CLIENT,
    TopicTail,
    bench_init,
    publish_events,
    running_service,
    wait_until,
)

pytestmark = pytest.mark.integration

BLOCK_S = 10.0
HEALTHZ_BOUND_S = 0.1


class Sleep(BaseModel):
    seconds: float
    on_loop: bool = False


class Slept(BaseModel):
    seconds: float


sleep_contract = create_arvo_contract(
    uri="#/test/blocking/sleep",
    type="com.test.sleep",
    versions={"1.0.0": {"accepts": Sleep, "emits": {"evt.test.sleep.done": Slept}}},
)


class Sleeper:
    """The handler's functions: ``def`` (a worker thread) or ``async def`` blocking the loop."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finished = threading.Event()

    def in_thread(self, context: HandlerContext) -> Any:
        seconds = context.data["seconds"]
        if seconds >= 1:
            self.started.set()
        time.sleep(seconds)
        if seconds >= 1:
            self.finished.set()
        return {"type": "evt.test.sleep.done", "data": {"seconds": seconds}}

    async def on_loop(self, context: HandlerContext) -> Any:
        time.sleep(context.data["seconds"])  # the mistake the watchdog is for
        return {"type": "evt.test.sleep.done", "data": {"seconds": context.data["seconds"]}}

    def handler(self) -> ArvoEventHandler:
        return ArvoEventHandler(contract=sleep_contract, executionunits=0, handler={"1.0.0": self.in_thread})


def sleep_event(seconds: float, subject: str, *, on_loop: bool = False) -> ArvoEvent:
    return create_arvo_event_factory(sleep_contract.version("1.0.0")).accepts(
        source=CLIENT, data={"seconds": seconds, "on_loop": on_loop}, subject=subject
    )


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_handler_blocking_for_10_s_freezes_nothing_else(
    kafka_bootstrap: str, kafka_names: KafkaNames, shared_redis_url: str, redis_key_prefix: str
) -> None:
    port = free_port()
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        redis_url=shared_redis_url,
        redis_key_prefix=redis_key_prefix,
        health_port=port,
        health_host="127.0.0.1",
        handler_timeout_s=15.0,  # the 10 s function finishes: its record completes as well
        lease_ttl_ms=20_000,
        loop_lag_warning_s=1.0,
        loop_lag_check_interval_s=0.05,
    )
    sleeper = Sleeper()
    memory = RedisMemory.from_url(shared_redis_url, key_prefix=redis_key_prefix)
    handlers: list[ArvoHandler] = [
        sleeper.handler(),
        bench_orchestrator(memory),
        bench_add_handler(),
        bench_double_handler(),
    ]
    with capture_logs() as logs:
        async with running_service(settings, handlers=handlers, memory=memory) as service:
            sleep_topic = service.router.handler_topic(sleep_contract.type)
            async with TopicTail(kafka_bootstrap, service.router.handler_topic(CLIENT)) as replies:
                blocking = sleep_event(BLOCK_S, "block")
                await publish_events(kafka_bootstrap, sleep_topic, [blocking], partition=0)
                await wait_until(sleeper.started.is_set, timeout_s=30, what="the 10 s function started")
                blocked_at = time.monotonic()
                lines_before = len(logs)

                # While it sleeps: a quick record on another partition of the same topic, and an
                # unrelated workflow through three other topics.
                quick = sleep_event(0.0, "quick")
                workflow = bench_init(4, 1)
                await publish_events(kafka_bootstrap, sleep_topic, [quick], partition=1)
                await publish_events(kafka_bootstrap, service.router.route_event(workflow), [workflow])
                probes: list[float] = []
                done: dict[str, ArvoEvent] = {}
                while len(done) < 2 or len(probes) < 20:
                    started = time.monotonic()
                    assert await http_get(port, "/healthz") == (200, b"ok\n")
                    probes.append(time.monotonic() - started)
                    done = replies.replies_to([quick.id, workflow.id])
                    assert time.monotonic() - blocked_at < BLOCK_S - 1, "not done while the function slept"
                    await asyncio.sleep(0.05)
                assert not sleeper.finished.is_set()
                print(  # shown with -s: the numbers of the acceptance
                    f"{len(probes)} /healthz probes during the block, slowest"
                    f" {max(probes) * 1000:.1f} ms; the other partition's record and the workflow"
                    f" done {time.monotonic() - blocked_at:.2f} s into the {BLOCK_S:.0f} s block"
                )
                assert max(probes) < HEALTHZ_BOUND_S, sorted(probes)[-3:]
                assert done[quick.id].data == {"seconds": 0.0}
                assert done[workflow.id].type == "arvo.orc.bench.done"
                assert done[workflow.id].data == {"result": 10}
                # The function runs in a thread: the loop was never blocked meanwhile.
                assert not [line for line in logs[lines_before:] if line["event"].startswith("event loop")]

                # The slept record completes too (its execution was within the handler timeout).
                slept = (await replies.wait_for_replies([blocking.id], timeout_s=30))[blocking.id]
                assert slept.data == {"seconds": BLOCK_S}
                assert time.monotonic() - blocked_at >= BLOCK_S - 0.5

                status, metrics = await http_get(port, "/metrics")
                assert status == 200
                assert b"arvo_event_loop_lag_seconds_count" in metrics
    await memory.close()


async def test_an_async_handler_that_blocks_the_loop_is_named_by_the_watchdog(
    kafka_bootstrap: str, kafka_names: KafkaNames, shared_redis_url: str, redis_key_prefix: str
) -> None:
    settings = kafka_test_settings(
        kafka_bootstrap,
        kafka_names,
        redis_url=shared_redis_url,
        redis_key_prefix=redis_key_prefix,
        loop_lag_warning_s=0.5,
        loop_lag_check_interval_s=0.05,
    )
    sleeper = Sleeper()
    handler = ArvoEventHandler(contract=sleep_contract, executionunits=0, handler={"1.0.0": sleeper.on_loop})
    with capture_logs() as logs:
        async with (
            running_service(settings, handlers=[handler]) as service,
            TopicTail(kafka_bootstrap, service.router.handler_topic(CLIENT)) as replies,
        ):
            event = sleep_event(1.5, "held")
            await publish_events(kafka_bootstrap, service.router.handler_topic(sleep_contract.type), [event])
            await replies.wait_for_replies([event.id], timeout_s=30)
            await wait_until(
                lambda: any(line["event"] == "event loop free again" for line in logs),
                timeout_s=5,
                what="the watchdog's end-of-block line",
            )
    blocked = [line for line in logs if line["event"].startswith("event loop blocked")]
    [warning] = [line for line in blocked if line.get("event_id") == event.id]  # one line per block
    assert (warning["handler"], warning["event_type"], warning["subject"]) == (
        sleep_contract.type,
        event.type,
        "held",
    )
    assert warning["task"].startswith("arvo-lane-")
    assert "test_blocking_handlers.py" in warning["where"]
    assert "on_loop" in warning["where"]
    [free] = [
        line for line in logs if line["event"] == "event loop free again" and line.get("event_id") == event.id
    ]
    assert 1.0 <= free["blocked_s"] <= 2.0
