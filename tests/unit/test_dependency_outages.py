"""An outage of Redis (or the broker) is never the event's fault: records wait, nothing is spent."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.arvo.availability import DependencyUnavailableError, unavailable_dependency
from service.arvo.errors import TransactionViolation, TransactionViolationCause
from service.runtime.consumer import LoopHooks
from service.runtime.consumer.decisions import FailureBudget, Park, RetryLater, WaitForDependency
from service.runtime.consumer.dependencies import DependencyMonitor
from service.runtime.redis_memory import RedisMemoryError, RedisUnavailableError, redis_failure
from service.runtime.resp_client import RespConnectionError, RespReplyError
from service.runtime.retry import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def store_outage() -> TransactionViolation:
    """What the engine raises when Redis is down: a TransactionViolation from RedisUnavailableError."""
    cause = RedisUnavailableError("redis lease_and_read failed", operation="lease_and_read", key="o:1")
    try:
        raise TransactionViolation(
            cause=TransactionViolationCause.READ_FAILURE, message="Error acquiring lock"
        ) from cause
    except TransactionViolation as error:
        return error


POLICY = RetryPolicy(initial_ms=10, max_ms=40, max_attempts=3, jitter=0.0)


@pytest.mark.parametrize(
    "raw",
    [
        RedisConnectionError("Connection refused"),
        RedisTimeoutError("Timeout reading from socket"),
        OSError("Network is unreachable"),
        AuthenticationError("WRONGPASS invalid username-password pair"),
        NoPermissionError("NOPERM this user has no permissions"),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        MasterDownError("MASTERDOWN Link with MASTER is down"),
        TryAgainError("TRYAGAIN"),
        SlotNotCoveredError("slot 1234 not covered"),
        ReadOnlyError("READONLY You can't write against a read only replica."),
        OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
        ResponseError("NOAUTH Authentication required."),
        RespConnectionError("connection lost"),
        RespReplyError("WRONGPASS invalid username-password pair"),
        RespReplyError("LOADING Redis is loading the dataset in memory"),
    ],
)
def test_redis_failures_that_mean_it_cannot_serve_us_are_outages(raw: BaseException) -> None:
    mapped = redis_failure(raw, "commit_and_release", "o:1")
    assert isinstance(mapped, RedisUnavailableError)
    assert isinstance(mapped, DependencyUnavailableError)
    assert mapped.dependency == "redis"


@pytest.mark.parametrize(
    "raw", [ResponseError("ERR wrong number of arguments"), RespReplyError("ERR unknown command")]
)
def test_a_bad_command_is_not_an_outage(raw: BaseException) -> None:
    mapped = redis_failure(raw, "inspect", None)
    assert isinstance(mapped, RedisMemoryError)
    assert not isinstance(mapped, DependencyUnavailableError)


def test_the_outage_is_found_in_the_cause_chain_and_nowhere_else() -> None:
    assert isinstance(unavailable_dependency(store_outage()), RedisUnavailableError)
    assert (
        unavailable_dependency(
            TransactionViolation(cause=TransactionViolationCause.READ_FAILURE, message="x")
        )
        is None
    )
    assert unavailable_dependency(RuntimeError("boom")) is None
    looped = RuntimeError("a")
    looped.__context__ = RuntimeError("b")
    looped.__context__.__context__ = looped
    assert unavailable_dependency(looped) is None


def test_an_outage_never_spends_the_retry_budget_when_unbounded() -> None:
    clock = Clock()
    budget = FailureBudget(POLICY, lease_wait_budget_s=1.0, clock=clock)
    for _ in range(50):  # far beyond max_attempts
        budget.begin_attempt()
        clock.now += 30
        decision = budget.decide(store_outage())
        assert isinstance(decision, WaitForDependency)
        assert decision.dependency == "redis"
        assert 0 < decision.delay_s <= POLICY.max_ms / 1000
    assert budget.attempts == 0
    budget.begin_attempt()
    assert isinstance(budget.decide(RuntimeError("a real failure")), RetryLater)


def test_a_bounded_wait_counts_failures_once_the_bound_passed() -> None:
    clock = Clock()
    budget = FailureBudget(POLICY, lease_wait_budget_s=1.0, dependency_wait_max_s=5.0, clock=clock)
    budget.begin_attempt()
    assert isinstance(budget.decide(store_outage()), WaitForDependency)
    clock.now += 4.999
    budget.begin_attempt()
    assert isinstance(budget.decide(store_outage()), WaitForDependency)
    clock.now += 0.001
    decisions = []
    for _ in range(POLICY.max_attempts):
        budget.begin_attempt()
        decisions.append(budget.decide(store_outage()))
    assert [type(d) for d in decisions] == [RetryLater, RetryLater, Park]


class Recorder(LoopHooks):
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []

    def on_dependency(self, dependency: str, available: bool) -> None:
        self.changes.append((dependency, available))


async def test_the_monitor_marks_each_change_of_state_once() -> None:
    hooks = Recorder()
    monitor = DependencyMonitor(hooks=hooks)
    up = monitor.up_event("redis")
    assert up.is_set()
    with structlog.testing.capture_logs() as logs:
        for _ in range(100):
            monitor.report_down("redis", RedisUnavailableError("down", operation="x", key=None))
        assert not up.is_set()
        assert set(monitor.outages) == {"redis"}
        for _ in range(100):
            monitor.report_up("redis")
    assert up.is_set()
    assert monitor.outages == {}
    assert hooks.changes == [("redis", False), ("redis", True)]
    assert [entry["event"].split(";")[0] for entry in logs] == [
        "dependency unavailable",
        "dependency available again",
    ]
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["dependency"] == "redis"


async def test_a_probe_ends_the_outage_as_soon_as_the_dependency_answers() -> None:
    answers = [False, False, True]

    async def probe() -> bool:
        return answers.pop(0)

    monitor = DependencyMonitor(hooks=LoopHooks(), probe_interval_s=0.01)
    monitor.add_probe("redis", probe)
    monitor.report_down("redis", OSError("refused"))
    async with asyncio.timeout(2):
        await monitor.up_event("redis").wait()
    assert monitor.is_up("redis")
    assert answers == []
    await monitor.close()


def test_an_outage_restarts_the_lease_wait_budget() -> None:
    from service.arvo.orchestration.pipeline import LeaseDeniedViolation

    clock = Clock()
    budget = FailureBudget(POLICY, lease_wait_budget_s=1.0, clock=clock)

    def denied() -> LeaseDeniedViolation:
        return LeaseDeniedViolation(message="held", holder_ttl_ms=500)

    budget.begin_attempt()
    assert isinstance(budget.decide(denied()), RetryLater)  # the lease-wait clock starts
    clock.now += 0.9
    budget.begin_attempt()
    assert isinstance(budget.decide(store_outage()), WaitForDependency)
    clock.now += 30  # a long outage; then leases cut off by it are waited out afresh
    budget.begin_attempt()
    decision = budget.decide(denied())
    assert isinstance(decision, RetryLater)
    assert decision.counted is False
    assert budget.attempts == 0


def test_a_master_refusing_writes_for_want_of_replicas_is_an_outage() -> None:
    mapped = redis_failure(ResponseError("NOREPLICAS Not enough good replicas to write."), "commit", "o:1")
    assert isinstance(mapped, RedisUnavailableError)
