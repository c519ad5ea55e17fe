"""The failure decisions, pure: ``classify_error``, ``holder_ttl_ms`` and ``FailureBudget`` on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from service.arvo.availability import DependencyUnavailableError
from service.arvo.errors import (
    ConfigViolation,
    ContractViolation,
    ExecutionViolation,
    TransactionViolation,
    TransactionViolationCause,
    ViolationError,
)
from service.arvo.orchestration.pipeline import LeaseDeniedViolation
from service.runtime.consumer import DeadLetterNow, FailureBudget, Park, RetryLater, classify_error
from service.runtime.consumer.decisions import LEASE_EXPIRY_SLACK_S, WaitForDependency, holder_ttl_ms
from service.runtime.retry import RetryPolicy

POLICY = RetryPolicy(initial_ms=10, max_ms=40, max_attempts=4, jitter=0.0)
"""Counted retries wait 10, 20, 40 ms; the fourth failure parks."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def budget(policy: RetryPolicy = POLICY, *, lease_wait_budget_s: float = 1.0) -> tuple[FailureBudget, Clock]:
    clock = Clock()
    return FailureBudget(policy, lease_wait_budget_s=lease_wait_budget_s, clock=clock), clock


def transient() -> TransactionViolation:
    return TransactionViolation(cause=TransactionViolationCause.LOCK_UNACQUIRED, message="locked")


def denied(ttl_ms: int | None = 1_000) -> LeaseDeniedViolation:
    return LeaseDeniedViolation(message="leased by another worker", holder_ttl_ms=ttl_ms)


class DuckViolation(Exception):
    """A violation from another library: opted in by attributes only (spec 9.1)."""

    is_arvo_violation_error = True

    def __init__(self, kind: str, message: str = "duck") -> None:
        super().__init__(message)
        self.type = kind
        self.name = f"ViolationError<{kind}>"


class DuckLeaseDenial(Exception):
    def __init__(self, ttl: Any) -> None:
        super().__init__("denied")
        self.holder_ttl_ms = ttl


# --- classify_error ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ContractViolation("bad data"), "contract"),
        (ConfigViolation("bad config"), "config"),
        (ExecutionViolation("bad subject"), "execution"),
        (DuckViolation("Contract"), "contract"),
        (DuckViolation("Config"), "config"),
        (DuckViolation("Execution"), "execution"),
    ],
)
def test_contract_config_and_execution_violations_are_permanent(error: BaseException, reason: str) -> None:
    assert classify_error(error) == reason


@pytest.mark.parametrize(
    "error",
    [
        transient(),
        denied(),
        ViolationError("other kind", type="Custom"),
        DuckViolation("contract"),  # kinds are case-sensitive
        DuckViolation("Contract", message=""),  # no message: not a violation (spec 9.1)
        TimeoutError(),
        ConnectionError("redis down"),
        RuntimeError("bug"),
    ],
)
def test_every_other_error_is_worth_retrying(error: BaseException) -> None:
    assert classify_error(error) is None


# --- holder_ttl_ms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "ttl"),
    [
        (denied(250), 250),
        (denied(0), 0),
        (denied(None), None),
        (DuckLeaseDenial(40), 40),
        (DuckLeaseDenial(-1), None),
        (DuckLeaseDenial(True), None),
        (DuckLeaseDenial(12.5), None),
        (DuckLeaseDenial("100"), None),
        (transient(), None),
        (RuntimeError("no ttl"), None),
    ],
)
def test_holder_ttl_is_a_non_negative_int_or_unknown(error: BaseException, ttl: int | None) -> None:
    assert holder_ttl_ms(error) == ttl


# --- FailureBudget: dead letter now -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ContractViolation("bad data"), "contract"),
        (ConfigViolation("bad config"), "config"),
        (ExecutionViolation("bad subject"), "execution"),
    ],
)
def test_a_permanent_error_is_dead_lettered_on_the_first_failure(error: BaseException, reason: str) -> None:
    failures, _ = budget()
    assert failures.begin_attempt() == 1
    assert failures.decide(error) == DeadLetterNow(reason)
    assert failures.attempts == 1


def test_a_permanent_error_after_retries_is_dead_lettered_with_the_attempts_made() -> None:
    failures, _ = budget()
    failures.begin_attempt()
    assert isinstance(failures.decide(transient()), RetryLater)
    failures.begin_attempt()
    assert failures.decide(ContractViolation("now broken")) == DeadLetterNow("contract")
    assert failures.attempts == 2


def test_a_permanent_error_carrying_a_holder_ttl_is_still_dead_lettered() -> None:
    error = ContractViolation("bad data")
    error.holder_ttl_ms = 100  # type: ignore[attr-defined]
    failures, _ = budget()
    failures.begin_attempt()
    assert failures.decide(error) == DeadLetterNow("contract")


# --- FailureBudget: counted retries, then park ------------------------------------------------------


@pytest.mark.parametrize("error", [transient(), TimeoutError(), RuntimeError("bug"), denied(None)])
def test_transient_errors_retry_with_the_policys_backoff_then_park(error: BaseException) -> None:
    failures, _ = budget()
    decisions = []
    for _ in range(POLICY.max_attempts):
        failures.begin_attempt()
        decisions.append(failures.decide(error))
    assert decisions == [
        RetryLater(delay_s=0.01, attempt=1, counted=True),
        RetryLater(delay_s=0.02, attempt=2, counted=True),
        RetryLater(delay_s=0.04, attempt=3, counted=True),
        Park(),
    ]
    assert failures.attempts == POLICY.max_attempts


def test_a_policy_of_one_attempt_parks_on_the_first_failure() -> None:
    failures, _ = budget(RetryPolicy(initial_ms=10, max_ms=10, max_attempts=1, jitter=0.0))
    failures.begin_attempt()
    assert failures.decide(transient()) == Park()
    assert failures.attempts == 1


def test_begin_attempt_counts_and_returns_the_attempt_number() -> None:
    failures, _ = budget()
    assert failures.attempts == 0
    assert [failures.begin_attempt() for _ in range(3)] == [1, 2, 3]
    assert failures.attempts == 3


# --- FailureBudget: lease waits ---------------------------------------------------------------------


def test_a_lease_denial_waits_at_most_the_holders_remaining_lease_without_counting() -> None:
    failures, _ = budget()
    failures.begin_attempt()
    decision = failures.decide(denied(ttl_ms=2))
    assert decision == RetryLater(delay_s=0.002 + LEASE_EXPIRY_SLACK_S, attempt=0, counted=False)
    assert failures.attempts == 0  # taken back


def test_lease_waits_follow_the_unbounded_backoff_when_the_holder_lease_is_longer() -> None:
    failures, _ = budget(RetryPolicy(initial_ms=10, max_ms=40, max_attempts=2, jitter=0.0))
    delays = []
    for _ in range(5):  # more waits than the policy has counted retries
        failures.begin_attempt()
        decision = failures.decide(denied(ttl_ms=60_000))
        assert isinstance(decision, RetryLater)
        assert not decision.counted
        delays.append(decision.delay_s)
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert failures.attempts == 0


def test_lease_waits_do_not_spend_the_park_budget() -> None:
    failures, clock = budget()
    for _ in range(10):
        failures.begin_attempt()
        assert failures.decide(denied()).counted is False  # type: ignore[union-attr]
        clock.now += 0.05
    # The policy's counted retries are all still there.
    decisions = []
    for _ in range(POLICY.max_attempts):
        failures.begin_attempt()
        decisions.append(failures.decide(transient()))
    assert [type(decision) for decision in decisions] == [RetryLater, RetryLater, RetryLater, Park]
    assert [d.attempt for d in decisions if isinstance(d, RetryLater)] == [1, 2, 3]


def test_lease_waits_end_at_the_budget_boundary_then_denials_count() -> None:
    failures, clock = budget(lease_wait_budget_s=1.0)
    failures.begin_attempt()
    assert failures.decide(denied()).counted is False  # type: ignore[union-attr]  # denied since t0
    clock.now += 0.999
    failures.begin_attempt()
    assert failures.decide(denied()).counted is False  # type: ignore[union-attr]  # just inside
    clock.now += 0.001  # exactly the budget: no longer below it
    failures.begin_attempt()
    assert failures.decide(denied()) == RetryLater(delay_s=0.01, attempt=1, counted=True)
    failures.begin_attempt()
    assert failures.decide(denied()) == RetryLater(delay_s=0.02, attempt=2, counted=True)
    failures.begin_attempt()
    assert failures.decide(denied()) == RetryLater(delay_s=0.04, attempt=3, counted=True)
    failures.begin_attempt()
    assert failures.decide(denied()) == Park()
    assert failures.attempts == POLICY.max_attempts


def test_the_lease_wait_budget_runs_from_the_first_denial_not_the_first_failure() -> None:
    failures, clock = budget(lease_wait_budget_s=1.0)
    failures.begin_attempt()
    assert failures.decide(transient()) == RetryLater(delay_s=0.01, attempt=1, counted=True)
    clock.now += 5.0  # long after the first failure
    failures.begin_attempt()
    assert failures.decide(denied()) == RetryLater(delay_s=0.01, attempt=1, counted=False)
    clock.now += 0.5
    failures.begin_attempt()
    waited = failures.decide(denied())
    assert isinstance(waited, RetryLater)
    assert not waited.counted
    assert failures.attempts == 1  # only the transient failure counted


def test_a_zero_budget_counts_every_lease_denial() -> None:
    failures, _ = budget(lease_wait_budget_s=0.0)
    failures.begin_attempt()
    assert failures.decide(denied()) == RetryLater(delay_s=0.01, attempt=1, counted=True)


# --- FailureBudget: dependency outages (more in test_dependency_outages.py) ----------------------------


class StoreDown(DependencyUnavailableError):
    dependency = "redis"


def outage() -> TransactionViolation:
    """What the engine raises when the store is down: a transaction violation *from* the outage."""
    try:
        raise StoreDown("connection refused")
    except StoreDown as down:
        error = transient()
        error.__cause__ = down
        return error


def test_a_permanent_violation_caused_by_an_outage_is_still_dead_lettered() -> None:
    error = ContractViolation("bad data")
    error.__cause__ = StoreDown("down")
    failures, _ = budget()
    failures.begin_attempt()
    assert failures.decide(error) == DeadLetterNow("contract")


def test_an_outage_takes_precedence_over_a_lease_denial_and_is_not_counted() -> None:
    error = denied()
    error.__cause__ = StoreDown("down")
    failures, _ = budget()
    failures.begin_attempt()
    decision = failures.decide(error)
    assert isinstance(decision, WaitForDependency)
    assert decision.dependency == "redis"
    assert failures.attempts == 0


def test_a_bounded_dependency_wait_ends_exactly_at_its_bound() -> None:
    clock = Clock()
    failures = FailureBudget(POLICY, lease_wait_budget_s=1.0, dependency_wait_max_s=2.0, clock=clock)
    failures.begin_attempt()
    assert isinstance(failures.decide(outage()), WaitForDependency)  # down since t0
    clock.now += 1.999
    failures.begin_attempt()
    assert isinstance(failures.decide(outage()), WaitForDependency)
    clock.now += 0.001
    failures.begin_attempt()
    assert failures.decide(outage()) == RetryLater(delay_s=0.01, attempt=1, counted=True)
