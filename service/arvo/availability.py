"""Dependency outages: an error that says "a dependency cannot serve us now", never the event's fault.

A store or broker adapter raises (a subclass of) :class:`DependencyUnavailableError` when its
dependency is unreachable, refuses this client (credentials, permissions) or cannot take writes for
now (a Redis Cluster slot without a master, a server out of memory or still loading). The engine
wraps store failures in a ``TransactionViolation`` *from* the original error, so the consumer finds
the outage with :func:`unavailable_dependency` anywhere in the error's cause chain, and waits for the
dependency instead of spending the record's retry budget.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DependencyUnavailableError", "unavailable_dependency"]

_MAX_CHAIN: Final = 16


class DependencyUnavailableError(Exception):
    """A dependency of the service cannot serve it now (mix it into an adapter's error classes).

    Attributes:
        dependency: Which dependency, e.g. ``"redis"`` or ``"kafka"`` (a metric label).

    """

    dependency: str = "dependency"


def unavailable_dependency(error: BaseException) -> DependencyUnavailableError | None:
    """The :class:`DependencyUnavailableError` in ``error``'s cause/context chain, if there is one."""
    seen: set[int] = set()
    current: BaseException | None = error
    for _ in range(_MAX_CHAIN):
        if current is None or id(current) in seen:
            return None
        if isinstance(current, DependencyUnavailableError):
            return current
        seen.add(id(current))
        current = current.__cause__ if current.__cause__ is not None else current.__context__
    return None
