"""Issue 11 E: handlers cannot block the loop — the handler thread pool and the loop-lag watchdog.

Synchronous handler functions run in a bounded pool of worker threads with the caller's context;
the handler timeout ends the execution (the thread runs on, logged); the watchdog samples the loop's
lag and reports a block while it lasts, naming the handler that blocks.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from service.arvo import blocking, telemetry
from service.arvo.blocking import (
    DEFAULT_HANDLER_THREADS,
    HandlerThreads,
    configure_handler_threads,
    enter_handler,
    handler_threads,
    is_async_callable,
    leave_handler,
    release_handler_threads,
    running_handler,
)
from service.arvo.errors import ContractViolation
from service.arvo.execution import ExecutionOutcome
from service.arvo.handler import HandlerContext
from service.runtime.metrics import ServiceMetrics
from service.runtime.settings import load_settings
from service.runtime.watchdog import LoopWatchdog
from tests.unit.test_consumer_loop_unit import SINK, running, wait_until
from tests.unit.test_event_handler import default_input, make_handler

HELLO = "com.hello.world"
SUCCESS = "evt.hello.world.success"
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="unset")


def reply(text: str) -> dict[str, Any]:
    return {"type": SUCCESS, "data": {"result": text}}


@pytest.fixture(autouse=True)
def default_pool() -> Iterator[None]:
    """Every test starts and ends with the process-wide default (a fresh default pool on first use)."""
    release_handler_threads(blocking._process.pool)
    yield
    release_handler_threads(blocking._process.pool)


# --- the pool ------------------------------------------------------------------------------------


async def test_a_sync_handler_runs_in_a_worker_thread_and_an_async_one_on_the_loop() -> None:
    seen: dict[str, str] = {}

    def sync_fn(context: HandlerContext) -> Any:
        seen["sync"] = threading.current_thread().name
        return reply("sync")

    async def async_fn(context: HandlerContext) -> Any:
        seen["async"] = threading.current_thread().name
        return reply("async")

    assert (await make_handler(sync_fn).execute(default_input())).events[0].data == {"result": "sync"}
    assert (await make_handler(async_fn).execute(default_input())).events[0].data == {"result": "async"}
    assert seen["sync"].startswith("arvo-handler-")
    assert seen["async"] == threading.current_thread().name
    pool = handler_threads()
    assert pool is not None
    assert pool.max_threads == DEFAULT_HANDLER_THREADS


def test_what_counts_as_async() -> None:
    class AsyncCallable:
        async def __call__(self, context: HandlerContext) -> Any:
            return None

    async def coroutine_function(context: HandlerContext) -> Any:
        return None

    assert is_async_callable(coroutine_function)
    assert is_async_callable(AsyncCallable())
    assert not is_async_callable(lambda context: None)
    assert not is_async_callable(len)


async def test_a_sync_function_returning_an_awaitable_is_still_awaited() -> None:
    async def later() -> Any:
        return reply("later")

    result = await make_handler(lambda context: later()).execute(default_input())
    assert result.events[0].data == {"result": "later"}


async def test_the_thread_sees_the_callers_context_span_and_log_fields() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = telemetry.use_tracer(provider.get_tracer("test"))
    seen: dict[str, Any] = {}

    def fn(context: HandlerContext) -> Any:
        seen["span"] = trace.get_current_span()
        seen["request"] = REQUEST.get()
        seen["log"] = structlog.contextvars.get_contextvars()
        return reply("ok")

    token = REQUEST.set("r-1")
    try:
        with structlog.contextvars.bound_contextvars(event_id="e-1"):
            result = await make_handler(fn).execute(default_input())
    finally:
        REQUEST.reset(token)
        telemetry.use_tracer(previous)
    assert result.outcome is ExecutionOutcome.EXECUTED
    [span] = [span for span in exporter.get_finished_spans() if span.name.startswith("Handler<")]
    assert seen["span"].get_span_context() == span.context  # the handler span is current in the thread
    assert seen["request"] == "r-1"
    assert seen["log"] == {"event_id": "e-1"}  # what structlog merges into the thread's log lines


async def test_errors_of_a_sync_handler_are_system_errors_and_violations_as_before() -> None:
    def broken(context: HandlerContext) -> Any:
        raise RuntimeError("boom")

    def violating(context: HandlerContext) -> Any:
        raise ContractViolation("bad data")

    result = await make_handler(broken).execute(default_input())
    assert result.outcome is ExecutionOutcome.SYSTEM_ERROR
    assert result.events[0].data["errorMessage"] == "boom"
    with pytest.raises(ContractViolation, match="bad data"):
        await make_handler(violating).execute(default_input())


async def test_the_loop_runs_while_a_sync_handler_blocks() -> None:
    def slow(context: HandlerContext) -> Any:
        time.sleep(0.5)
        return reply("slow")

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        result = await make_handler(slow).execute(default_input())
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
    assert result.events[0].data == {"result": "slow"}
    assert elapsed >= 0.5
    assert ticks >= 20  # ~50 at 10 ms; the loop was never held


async def test_the_timeout_ends_the_execution_and_the_thread_that_runs_on_is_logged() -> None:
    release = threading.Event()

    def stuck(context: HandlerContext) -> Any:
        release.wait(5)
        return reply("late")

    event = default_input()
    with capture_logs() as logs:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await make_handler(stuck).execute(event)
        assert time.monotonic() - started < 1.0  # the execution ended at its timeout
        pool = handler_threads()
        assert pool is not None
        assert (pool.busy, pool.stuck) == (1, 1)  # the thread itself cannot be stopped
        release.set()
        await wait_until(lambda: pool.busy == 0, timeout_s=5)
        await wait_until(lambda: any("returned" in line["event"] for line in logs))
    [cancelled] = [line for line in logs if line["event"].startswith("handler execution cancelled")]
    assert cancelled["log_level"] == "warning"
    assert (cancelled["handler"], cancelled["event_id"], cancelled["event_type"]) == (
        "com.hello.world",
        event.id,
        event.type,
    )
    assert cancelled["stuck_threads"] == 1
    [returned] = [line for line in logs if "returned" in line["event"]]
    assert returned["event_id"] == event.id
    assert returned["ran_s"] >= 0.15  # from when the thread took it to the release after the timeout


async def test_the_consumer_retries_an_execution_its_timeout_ended() -> None:
    calls: list[float] = []

    def slow_once(context: HandlerContext) -> Any:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(0.6)  # beyond handler_timeout_s: this attempt fails
        return reply("done")

    handler = make_handler(slow_once)
    with capture_logs():
        async with running(handler, partitions=1, topic=HELLO, handler_timeout_s=0.2) as rig:
            rig.produce(default_input(source=SINK), topic=HELLO)
            await wait_until(lambda: rig.committed(TopicPartition(HELLO, 0)) == 1, timeout_s=5)
            assert len(calls) == 2
            assert calls[1] - calls[0] < 0.6  # the retry did not wait for the stuck thread
            # TimeoutError (or the consumer's subclass of it naming the handler): retried like any failure.
            assert [name for (topic, name) in rig.loop.stats.retries.elements() if topic == HELLO] in (
                ["TimeoutError"],
                ["HandlerTimeoutError"],
            )
            assert [record.event.type for record in rig.client.acked_to(SINK)] == [SUCCESS]
            assert rig.loop.stats.parked == 0


async def test_the_pool_is_bounded_and_says_so_when_calls_wait() -> None:
    configure_handler_threads(2)
    running_now = 0
    most = 0
    lock = threading.Lock()

    def busy(context: HandlerContext) -> Any:
        nonlocal running_now, most
        with lock:
            running_now += 1
            most = max(most, running_now)
        time.sleep(0.1)
        with lock:
            running_now -= 1
        return reply("ok")

    handler = make_handler(busy)
    with capture_logs() as logs:
        started = time.monotonic()
        results = await asyncio.gather(*(handler.execute(default_input()) for _ in range(6)))
        elapsed = time.monotonic() - started
    assert all(result.outcome is ExecutionOutcome.EXECUTED for result in results)
    assert most == 2
    assert elapsed >= 0.3  # 6 calls of 0.1 s, 2 at a time
    pool = handler_threads()
    assert pool is not None
    assert pool.threads == 2
    full = [line for line in logs if line["event"].startswith("every handler thread is busy")]
    assert len(full) == 1  # once, not per waiting call
    assert full[0]["threads"] == 2


async def test_zero_threads_runs_sync_functions_on_the_loop_and_release_restores_the_default() -> None:
    assert configure_handler_threads(0) is None
    seen: list[str] = []

    def fn(context: HandlerContext) -> Any:
        seen.append(threading.current_thread().name)
        return reply("inline")

    await make_handler(fn).execute(default_input())
    assert seen == [threading.current_thread().name]
    assert handler_threads() is None
    release_handler_threads(None)
    pool = handler_threads()
    assert pool is not None
    assert pool.max_threads == DEFAULT_HANDLER_THREADS


async def test_a_replaced_pool_finishes_its_calls_and_a_stale_release_keeps_the_new_one() -> None:
    first = configure_handler_threads(1)
    assert first is not None
    gate = threading.Event()

    def waits(context: HandlerContext) -> Any:
        gate.wait(5)
        return reply("first")

    call = asyncio.create_task(make_handler(waits).execute(default_input()))
    await wait_until(lambda: first.busy == 1)
    second = configure_handler_threads(3)  # the first is shut down; its running call still ends
    gate.set()
    assert (await call).events[0].data == {"result": "first"}
    release_handler_threads(first)
    assert handler_threads() is second
    with pytest.raises(RuntimeError, match="shut down"):
        await first.run(len, "x")


def test_a_pool_needs_a_thread_and_the_setting_allows_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HandlerThreads(0)
    with pytest.raises(ValueError, match="0 or more"):
        configure_handler_threads(-1)
    settings = load_settings(env_file=None)
    assert settings.handler_threads == DEFAULT_HANDLER_THREADS
    assert (settings.loop_lag_warning_s, settings.loop_lag_check_interval_s) == (1.0, 0.25)
    assert load_settings(env_file=None, handler_threads=0).handler_threads == 0


# --- naming the running handler ------------------------------------------------------------------


def test_the_innermost_registered_frame_names_the_running_handler() -> None:
    outer_event, inner_event = default_input(), default_input()

    def inner() -> Any:
        token = enter_handler("com.inner", inner_event)
        try:
            return running_handler(sys._getframe())
        finally:
            leave_handler(token)

    token = enter_handler("com.outer", outer_event)
    try:
        assert running_handler(sys._getframe()) == ("com.outer", outer_event)
        assert inner() == ("com.inner", inner_event)
        assert running_handler(sys._getframe()) == ("com.outer", outer_event)
    finally:
        leave_handler(token)
    assert running_handler(sys._getframe()) is None
    assert running_handler(None) is None
    assert not blocking._running


# --- the watchdog --------------------------------------------------------------------------------


async def test_a_block_is_reported_while_it_lasts_naming_the_handler_then_its_total() -> None:
    metrics = ServiceMetrics(process_metrics=False)
    reported_during_block: list[bool] = []

    async def blocks_the_loop(context: HandlerContext) -> Any:
        # Synchronous waiting inside an async handler: the loop is held for 0.8 s.
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            time.sleep(0.01)
        reported_during_block.append(any(line["event"].startswith("event loop blocked") for line in logs))
        return reply("done")

    event = default_input()
    watchdog = LoopWatchdog(interval_s=0.05, warning_s=0.2, observe=metrics.observe_loop_lag)
    with capture_logs() as logs:
        async with watchdog:
            await asyncio.sleep(0.12)  # a few healthy samples first
            await make_handler(blocks_the_loop).execute(event)
            await asyncio.sleep(0.12)
    assert reported_during_block == [True]  # logged by the watching thread while the loop was held
    blocked = [line for line in logs if line["event"].startswith("event loop blocked")]
    assert len(blocked) == 1  # one warning per block, not one per check
    [warning] = blocked
    assert warning["log_level"] == "warning"
    assert (warning["handler"], warning["event_id"], warning["event_type"], warning["subject"]) == (
        "com.hello.world",
        event.id,
        event.type,
        event.subject,
    )
    assert 0.2 <= warning["blocked_s"] < 0.8
    assert "test_blocking_handlers.py" in warning["where"]
    assert "blocks_the_loop" in warning["where"]
    [free] = [line for line in logs if line["event"] == "event loop free again"]
    assert 0.7 <= free["blocked_s"] < 1.0
    assert free["event_id"] == event.id
    assert watchdog.blocks == 1
    total = metrics.registry.get_sample_value("arvo_event_loop_lag_seconds_sum")
    count = metrics.registry.get_sample_value("arvo_event_loop_lag_seconds_count")
    slow = metrics.registry.get_sample_value("arvo_event_loop_lag_seconds_bucket", {"le": "0.5"})
    assert total is not None
    assert count is not None
    assert slow is not None
    assert total >= 0.7
    assert count >= 4
    assert count - slow == 1  # exactly one sample above 0.5 s: the block


async def test_a_block_outside_any_handler_names_the_code_and_a_healthy_loop_logs_nothing() -> None:
    with capture_logs() as logs:
        async with LoopWatchdog(interval_s=0.05, warning_s=0.2) as watchdog:
            await asyncio.sleep(0.3)
            assert not logs
            time.sleep(0.5)  # the test itself blocks the loop
            await asyncio.sleep(0.1)
    [warning] = [line for line in logs if line["event"].startswith("event loop blocked")]
    assert "handler" not in warning
    assert "test_blocking_handlers.py" in warning["where"]
    assert warning["stack"][-1] == warning["where"]
    assert watchdog.blocks == 1
    assert not watchdog.running


def test_the_watchdog_wants_positive_intervals() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoopWatchdog(interval_s=0)


def test_the_watching_thread_ends_with_its_loop_even_without_stop() -> None:
    watchdog = LoopWatchdog(interval_s=0.02, warning_s=0.05)

    async def forget_to_stop() -> threading.Thread | None:
        await watchdog.start()
        await asyncio.sleep(0.05)
        return watchdog._thread

    with capture_logs() as logs:
        thread = asyncio.run(forget_to_stop())  # the loop closes; the watchdog was never stopped
        assert thread is not None
        thread.join(timeout=1)
    assert not thread.is_alive()
    assert not [line for line in logs if line["event"].startswith("event loop blocked")]


async def test_a_restarted_watchdog_watches_with_one_thread() -> None:
    watchdog = LoopWatchdog(interval_s=0.02, warning_s=0.1)
    await watchdog.start()
    first = watchdog._thread
    await watchdog.stop()
    await watchdog.start()
    try:
        assert first is not None
        first.join(timeout=1)
        assert not first.is_alive()
        assert watchdog._thread is not None
        assert watchdog._thread.is_alive()
    finally:
        await watchdog.stop()
