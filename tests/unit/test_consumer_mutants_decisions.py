"""Failure decisions across an outage that ends: the bound of a dependency wait restarts with each outage."""

from __future__ import annotations

from service.runtime.consumer import FailureBudget, RetryLater
from service.runtime.consumer.decisions import WaitForDependency
from tests.unit.test_consumer_decisions import POLICY, Clock, outage, transient


def test_a_new_outage_after_the_dependency_answered_gets_a_fresh_bounded_wait() -> None:
    clock = Clock()
    failures = FailureBudget(POLICY, lease_wait_budget_s=1.0, dependency_wait_max_s=2.0, clock=clock)
    failures.begin_attempt()
    assert isinstance(failures.decide(outage()), WaitForDependency)  # down since t0
    clock.now += 1.5
    failures.begin_attempt()
    # The store answered, with another (transient) failure: the outage is over.
    assert failures.decide(transient()) == RetryLater(delay_s=0.01, attempt=1, counted=True)
    clock.now += 1.0  # 2.5 s after the first outage began, but the new one has just started
    failures.begin_attempt()
    decision = failures.decide(outage())
    assert isinstance(decision, WaitForDependency)
    assert decision.dependency == "redis"
    assert failures.attempts == 1
    clock.now += 1.999
    failures.begin_attempt()
    assert isinstance(failures.decide(outage()), WaitForDependency)
    clock.now += 0.001
    failures.begin_attempt()
    assert failures.decide(outage()) == RetryLater(delay_s=0.02, attempt=2, counted=True)
