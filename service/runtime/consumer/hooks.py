"""What the consumer loop reports: counters (:class:`LoopStats`) and live callbacks (:class:`LoopHooks`).

Metrics are a layer over the loop, not code inside it: :class:`~service.runtime.metrics.ServiceMetrics`
is a :class:`LoopHooks`, and :class:`CombinedHooks` stacks it with a caller's own hooks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import TopicPartition

__all__ = ["CombinedHooks", "LoopHooks", "LoopStats"]

_log = structlog.get_logger("arvo.runtime.consumer")


@dataclass
class LoopStats:
    """Counters of the loop (read them, or subclass :class:`LoopHooks` to export them live)."""

    consumed: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Records finished by ``(topic, event type or '', outcome)``."""
    produced: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Events acknowledged by ``(topic, type)``."""
    dead_lettered: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Dead letters by ``(origin topic, reason)``."""
    retries: Counter[tuple[str, str]] = field(default_factory=Counter)
    """In-place retries by ``(topic, error class)``."""
    publish_retries: int = 0
    """Failed publish attempts (broker trouble) that were retried."""
    parked: int = 0
    """Records parked after exhausting retries."""
    commits: int = 0
    """Successful offset commits."""
    rebalances: int = 0
    """Partition assignments received."""
    in_flight: dict[TopicPartition, int] = field(default_factory=dict)
    """Records buffered or being processed, per assigned partition."""
    paused: set[TopicPartition] = field(default_factory=set)
    """Partitions currently paused by backpressure."""
    deferred_inits: dict[TopicPartition, int] = field(default_factory=dict)
    """Admission: new root inits waiting behind started workflows' records, per assigned partition
    of an orchestrator or resumable (also counted in :attr:`in_flight`)."""
    dependency_waits: Counter[str] = field(default_factory=Counter)
    """Waits of records for a dependency that was down, by dependency (no retry budget spent)."""
    timers_fired: int = 0
    """Timer events the scheduler published (stale ones included: the instances drop those)."""


class LoopHooks:
    """Callbacks for live metrics; every method is a no-op here (subclass and override).

    Called on the event loop in the middle of processing: keep them cheap and non-blocking. An
    exception from a hook is logged and otherwise ignored.
    """

    def on_consumed(self, topic: str, event_type: str, outcome: str, duration_s: float) -> None:
        """A record finished (processed, dead-lettered or parked) after ``duration_s``."""

    def on_produced(self, topic: str, event_type: str) -> None:
        """An emitted event was acknowledged."""

    def on_dead_letter(self, topic: str, reason: str) -> None:
        """A record was dead-lettered."""

    def on_retry(self, topic: str, error_class: str) -> None:
        """A record is retried in place after a transient error."""

    def on_publish_retry(self, error_class: str) -> None:
        """Publishing failed and is retried."""

    def on_assignment(self, partitions: frozenset[TopicPartition]) -> None:
        """The set of assigned partitions changed."""

    def on_timers_fired(self, topic: str, lateness_s: list[float]) -> None:
        """The scheduler published timer events of ``topic``, each ``lateness_s`` after its due time."""

    def on_dependency(self, dependency: str, available: bool) -> None:
        """A dependency (``redis``, ``kafka``) became unavailable, or available again."""


class CombinedHooks(LoopHooks):
    """Calls every one of ``hooks`` in order (metrics plus the caller's own hooks).

    A failing hook is logged and does not keep the others from being called.
    """

    def __init__(self, *hooks: LoopHooks) -> None:
        self._hooks = hooks

    def _call(self, name: str, *args: Any) -> None:
        for hook in self._hooks:
            try:
                getattr(hook, name)(*args)
            except Exception:
                _log.exception("loop hook failed", hook=name, hooks=type(hook).__name__)

    def on_consumed(self, topic: str, event_type: str, outcome: str, duration_s: float) -> None:
        """Forward to every hook."""
        self._call("on_consumed", topic, event_type, outcome, duration_s)

    def on_produced(self, topic: str, event_type: str) -> None:
        """Forward to every hook."""
        self._call("on_produced", topic, event_type)

    def on_dead_letter(self, topic: str, reason: str) -> None:
        """Forward to every hook."""
        self._call("on_dead_letter", topic, reason)

    def on_retry(self, topic: str, error_class: str) -> None:
        """Forward to every hook."""
        self._call("on_retry", topic, error_class)

    def on_publish_retry(self, error_class: str) -> None:
        """Forward to every hook."""
        self._call("on_publish_retry", error_class)

    def on_assignment(self, partitions: frozenset[TopicPartition]) -> None:
        """Forward to every hook."""
        self._call("on_assignment", partitions)

    def on_timers_fired(self, topic: str, lateness_s: list[float]) -> None:
        """Forward to every hook."""
        self._call("on_timers_fired", topic, lateness_s)

    def on_dependency(self, dependency: str, available: bool) -> None:
        """Forward to every hook."""
        self._call("on_dependency", dependency, available)
