"""Failure decisions: what happens to a record whose execution raised — explicit and pure.

Error classes (spec 9, architecture 4):

* ``Contract``/``Config``/``Execution`` violations are permanent: :class:`DeadLetterNow` with the
  reason ``contract``/``config``/``execution``.
* An outage of one of the service's own dependencies (the error's cause chain holds a
  :class:`~service.arvo.availability.DependencyUnavailableError`: Redis unreachable, refusing the
  credentials, a cluster slot down) is never the event's fault: :class:`WaitForDependency`, without
  spending the budget — for as long as it lasts, unless ``dependency_wait_max_s`` bounds it (then
  further failures count like any other).
* A lease denied by a holder whose lease expires (the error carries ``holder_ttl_ms``, e.g. the lease
  of a worker killed mid-record) is waited out — each wait capped at the holder's remaining TTL — for
  up to ``lease_wait_budget_s`` before such denials count towards parking: a crash never parks a
  record (:class:`RetryLater` with ``counted=False``).
* Everything else — ``TransactionViolation``, memory and connection errors, time-outs, bugs — is
  retried in place with capped exponential backoff (:class:`RetryLater`), then :class:`Park`-ed once
  the retry policy has no delay left.

:class:`FailureBudget` holds one record's attempts and delays; its only impurity is the clock, which
is injectable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from service.arvo.availability import unavailable_dependency
from service.arvo.errors import is_violation_error
from service.runtime.retry import RetryPolicy

__all__ = [
    "DeadLetterNow",
    "Decision",
    "FailureBudget",
    "Park",
    "RetryLater",
    "WaitForDependency",
    "classify_error",
    "holder_ttl_ms",
]

_PERMANENT_VIOLATIONS: Final = {
    "Contract": "contract",
    "Config": "config",
    "Execution": "execution",
    "ForeignSource": "foreign_source",
}
LEASE_EXPIRY_SLACK_S: Final = 0.005
"""Added to a denying holder's remaining lease before retrying, so the retry finds it expired."""


def classify_error(error: BaseException) -> str | None:
    """The dead-letter reason of a *permanent* error, or ``None`` for errors worth retrying.

    ``ContractViolation``/``ConfigViolation``/``ExecutionViolation``/``ForeignSourceViolation`` (and
    any duck-typed violation of those kinds) are permanent: ``"contract"``, ``"config"``,
    ``"execution"``, ``"foreign_source"`` (a reply from a source the orchestration did not address).
    Everything else —
    ``TransactionViolation``, memory and connection errors, time-outs, bugs — is retried.
    """
    if is_violation_error(error):
        return _PERMANENT_VIOLATIONS.get(str(getattr(error, "type", "")))
    return None


def holder_ttl_ms(error: BaseException) -> int | None:
    """The remaining lease of the holder that denied ``error``'s lease, if it is known and bounded.

    Set by :class:`~service.arvo.orchestration.pipeline.LeaseDeniedViolation` (duck-typed, so any
    handler can report a lease denial the same way).
    """
    ttl = getattr(error, "holder_ttl_ms", None)
    if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0:
        return ttl
    return None


@dataclass(frozen=True, slots=True)
class DeadLetterNow:
    """Dead-letter the record at once with ``reason``; it is never retried."""

    reason: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Run the record again after ``delay_s``.

    Attributes:
        delay_s: How long the lane waits first.
        attempt: The attempt count to report (lease waits do not count).
        counted: Whether this retry spends the record's park budget.

    """

    delay_s: float
    attempt: int
    counted: bool


@dataclass(frozen=True, slots=True)
class Park:
    """The retries are exhausted: dead-letter the record with reason ``parked``, mark its instance."""


@dataclass(frozen=True, slots=True)
class WaitForDependency:
    """A dependency is down: wait until it is back (or ``delay_s`` passed), then run the record again.

    Attributes:
        dependency: Which one (``redis``, ...).
        delay_s: The longest wait before trying again without news of the dependency.

    """

    dependency: str
    delay_s: float


Decision = DeadLetterNow | WaitForDependency | RetryLater | Park
"""What :meth:`FailureBudget.decide` returns."""


class FailureBudget:
    """The failure decisions of one record: call :meth:`begin_attempt`, then :meth:`decide` on failure.

    Args:
        policy: The backoff and attempt budget of in-place retries.
        dependency_wait_max_s: How long a record waits for a dependency that is down before its
            failures count (``0``: without bound).
        lease_wait_budget_s: How long lease denials by an expiring holder are waited out without
            counting (twice the lease TTL in the service: a denying lease runs out within one TTL).
        clock: Monotonic seconds.

    """

    __slots__ = (
        "_clock",
        "_delays",
        "_denied_since",
        "_dependency_delays",
        "_dependency_wait_max_s",
        "_lease_delays",
        "_lease_wait_budget_s",
        "_unavailable_since",
        "attempts",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        lease_wait_budget_s: float,
        dependency_wait_max_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._delays = policy.delays()
        self._lease_delays = policy.unbounded_delays()
        self._dependency_delays = policy.unbounded_delays()
        self._dependency_wait_max_s = dependency_wait_max_s
        self._unavailable_since: float | None = None
        self._lease_wait_budget_s = lease_wait_budget_s
        self._clock = clock
        self._denied_since: float | None = None
        self.attempts = 0
        """Attempts that count (lease waits are taken back)."""

    def begin_attempt(self) -> int:
        """Count one more attempt; return the count."""
        self.attempts += 1
        return self.attempts

    def decide(self, error: BaseException) -> Decision:
        """What to do after the current attempt failed with ``error``."""
        reason = classify_error(error)
        if reason is not None:
            return DeadLetterNow(reason)
        outage = unavailable_dependency(error)
        if outage is not None:
            now = self._clock()
            # An outage ends any run of lease denials: leases left by work the outage cut off are
            # waited out afresh once the dependency is back.
            self._denied_since = None
            if self._unavailable_since is None:
                self._unavailable_since = now
            bounded = self._dependency_wait_max_s > 0
            if not bounded or now - self._unavailable_since < self._dependency_wait_max_s:
                self.attempts -= 1
                return WaitForDependency(outage.dependency, next(self._dependency_delays))
        else:
            self._unavailable_since = None  # the dependency answered (with another failure)
        ttl_ms = holder_ttl_ms(error)
        if ttl_ms is not None:
            now = self._clock()
            if self._denied_since is None:
                self._denied_since = now
            if now - self._denied_since < self._lease_wait_budget_s:
                self.attempts -= 1
                wait = min(next(self._lease_delays), ttl_ms / 1000 + LEASE_EXPIRY_SLACK_S)
                return RetryLater(delay_s=wait, attempt=self.attempts, counted=False)
        delay = next(self._delays, None)
        if delay is None:
            return Park()
        return RetryLater(delay_s=delay, attempt=self.attempts, counted=True)
