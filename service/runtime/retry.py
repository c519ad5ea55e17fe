"""Capped exponential backoff with (full) jitter for transient failures.

The ``n``-th retry (``n`` from 0) waits ``min(max_ms, initial_ms * 2**n) * (1 - jitter * r)`` with
``r`` uniform in ``[0, 1)``: ``jitter=1.0`` is AWS-style *full jitter* (uniform in ``[0, cap)``),
which spreads retries of many workers hitting the same failure; ``jitter=0.0`` is deterministic.
Inject ``random`` for reproducible tests.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.runtime.settings import ServiceSettings

__all__ = ["RetryPolicy"]

_MAX_EXPONENT = 62  # 2**62 ms is far beyond any cap; avoids building huge ints on long outages


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff policy for retrying a record in place (and, unbounded, for publishing)."""

    initial_ms: int = 100
    """Delay cap of the first retry."""
    max_ms: int = 10_000
    """Largest delay cap."""
    max_attempts: int = 8
    """Attempts in total, the first included; :meth:`delays` yields ``max_attempts - 1`` delays."""
    jitter: float = 1.0
    """Randomised fraction of each delay, in ``[0, 1]``."""
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)
    """Source of uniform ``[0, 1)`` numbers (inject a seeded one in tests)."""

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if self.initial_ms < 0:
            raise ValueError(f"RetryPolicy.initial_ms must be >= 0, got {self.initial_ms!r}")
        if self.max_ms < self.initial_ms:
            raise ValueError(
                f"RetryPolicy.max_ms must be >= initial_ms ({self.initial_ms}), got {self.max_ms!r}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter!r}")

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RetryPolicy:
        """The policy of ``ARVO_RETRY_*``."""
        return cls(
            initial_ms=settings.retry_initial_ms,
            max_ms=settings.retry_max_ms,
            max_attempts=settings.retry_max_attempts,
            jitter=settings.retry_jitter,
        )

    def cap_ms(self, retry: int) -> int:
        """The un-jittered delay of retry number ``retry`` (0-based), in milliseconds."""
        if retry < 0:
            raise ValueError(f"retry number must be >= 0, got {retry!r}")
        return min(self.max_ms, self.initial_ms * (1 << min(retry, _MAX_EXPONENT)))

    def delay(self, retry: int) -> float:
        """The jittered delay before retry number ``retry`` (0-based), in seconds."""
        cap = self.cap_ms(retry)
        return cap * (1.0 - self.jitter * self.random()) / 1000.0

    def delays(self) -> Iterator[float]:
        """Delays in seconds before each retry: ``max_attempts - 1`` of them, then exhausted."""
        for retry in range(self.max_attempts - 1):
            yield self.delay(retry)

    def unbounded_delays(self) -> Iterator[float]:
        """Delays in seconds forever (used while the broker is unreachable: the service waits)."""
        retry = 0
        while True:
            yield self.delay(retry)
            retry += 1
