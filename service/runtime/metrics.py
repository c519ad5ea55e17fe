"""Prometheus metrics of one service: live counters from the consumer loop's hooks, gauges on scrape.

:class:`ServiceMetrics` is a :class:`~service.runtime.consumer.LoopHooks` (the loop calls it as
records finish) with its own ``CollectorRegistry``, so several services in one process (tests,
embedders) never share or collide on metrics. ``/metrics`` of the health server renders it.

========================================  ========================================================
``arvo_events_consumed_total``            records finished, by ``topic``, ``type`` and ``outcome``
                                          (``ok``, ``system_error``, ``replayed``,
                                          ``duplicate_dropped``, ``ignored_*``, ``dead_lettered``,
                                          ``parked``)
``arvo_events_produced_total``            emitted events acknowledged, by ``topic`` and ``type``
``arvo_dead_letters_total``               by ``topic`` and ``reason``: the violation class
                                          (``contract``, ``config``, ``execution``), ``parked``,
                                          a decode failure (``not_json``, ``oversized``, ...),
                                          ``no_handler``, ``unpublishable``
``arvo_retries_total``                    in-place retries by ``topic`` and ``error_class``
``arvo_lease_waits_total``                of those, retries of a denied lease (``LOCK_UNACQUIRED``)
``arvo_publish_retries_total``            failed publishes retried, by ``error_class``
``arvo_dependency_up``                     1, or 0 while a ``dependency`` (redis, kafka) is down
``arvo_dependency_outages_total``          outages met, by ``dependency``
``arvo_handler_duration_seconds``         histogram of a record's processing time, by ``topic``
``arvo_in_flight_records``                buffered or in-process records per ``topic``/``partition``
``arvo_consumer_lag_records``             records behind the partition end per ``topic``/``partition``
``arvo_assigned_partitions``              partitions this member owns
``arvo_paused_partitions``                partitions paused by backpressure
``arvo_deferred_inits``                   admission: new root inits waiting behind started workflows'
                                          records, per ``topic``/``partition`` (orchestrators)
``arvo_offset_commits_total``             successful offset commits
``arvo_stalled_partitions``               partitions with records waiting, none finished for
                                          ``stall_timeout_s``
``arvo_instances``                        orchestration instances of this service's orchestrators
                                          by ``orchestrator`` and ``status`` (refreshed on scrape at
                                          most every ``instances_refresh_s``; a count reaching
                                          ``instances_limit`` is capped there and flagged by
                                          ``arvo_instances_capped``)
``arvo_event_loop_lag_seconds``           histogram of how late the event loop ran a task due
                                          every ``loop_lag_check_interval_s`` (the loop watchdog)
``arvo_spans_dropped_total``              spans the batch span processor dropped because its queue
                                          was full (process-wide; 0 without tracing)
========================================  ========================================================

Label values that come from input (event types) are bounded: past ``max_label_values`` distinct
values per label, new ones are counted as ``other``, so a flood of junk types cannot blow up the
registry. Process metrics (CPU, memory, file descriptors) are included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service.arvo.memory import InstanceStatus
from service.runtime.consumer import LoopHooks
from service.runtime.otel import spans_dropped, untraced

if TYPE_CHECKING:
    from aiokafka import TopicPartition
    from prometheus_client.metrics_core import Metric

    from service.arvo.memory import Memory
    from service.runtime.consumer import ConsumerLoop

__all__ = ["DURATION_BUCKETS_S", "LOOP_LAG_BUCKETS_S", "ServiceMetrics"]

DURATION_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Buckets of ``arvo_handler_duration_seconds``: sub-millisecond handlers up to the handler timeout."""
LOOP_LAG_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Buckets of ``arvo_event_loop_lag_seconds``: a busy loop's milliseconds up to a liveness-probe kill."""

_LEASE_DENIED_CLASSES: Final = frozenset({"LeaseDeniedViolation"})
_OTHER: Final = "other"
_log = structlog.get_logger("arvo.runtime.metrics")


class _BoundedLabel:
    """Passes the first ``limit`` distinct values through, maps later new ones to ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return _OTHER
        self._seen.add(value)
        return value


class ServiceMetrics(LoopHooks):
    """Counters fed by the consumer loop's hooks plus gauges read from the loop on each scrape.

    Args:
        registry: Where the metrics live; a new ``CollectorRegistry`` when omitted.
        process_metrics: Add the process collector (CPU, memory, open files) to the registry.
        instances_refresh_s: Minimum age of the instance counts before a scrape refreshes them.
        instances_limit: Most instances counted per orchestrator and status.
        max_label_values: Distinct event types kept as label values before ``other`` is used.

    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
        instances_refresh_s: float = 30.0,
        instances_limit: int = 10_000,
        max_label_values: int = 500,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        """The registry ``/metrics`` renders."""
        self._types = _BoundedLabel(max_label_values)
        self.instances_refresh_s = instances_refresh_s
        """Minimum age of the instance counts before a scrape refreshes them (seconds)."""
        self._instances_limit = instances_limit
        self._consumed = Counter(
            "arvo_events_consumed",
            "Records finished by the consumer loop, by topic, event type and outcome.",
            ["topic", "type", "outcome"],
            registry=self.registry,
        )
        self._produced = Counter(
            "arvo_events_produced",
            "Emitted events acknowledged by the broker, by topic and event type.",
            ["topic", "type"],
            registry=self.registry,
        )
        self._dead_letters = Counter(
            "arvo_dead_letters",
            "Records dead-lettered, by origin topic and reason (violation class, parked, decode failure).",
            ["topic", "reason"],
            registry=self.registry,
        )
        self._retries = Counter(
            "arvo_retries",
            "In-place retries of records after a transient failure, by topic and error class.",
            ["topic", "error_class"],
            registry=self.registry,
        )
        self._lease_waits = Counter(
            "arvo_lease_waits",
            "Retries of records whose instance lease was held by another worker (LOCK_UNACQUIRED).",
            ["topic"],
            registry=self.registry,
        )
        self._publish_retries = Counter(
            "arvo_publish_retries",
            "Publishes (events or dead letters) that failed and were retried, by error class.",
            ["error_class"],
            registry=self.registry,
        )
        self._dependency_up = Gauge(
            "arvo_dependency_up",
            "1 while a dependency (redis, kafka) serves this process, 0 during an outage its records met.",
            ["dependency"],
            registry=self.registry,
        )
        self._dependency_outages = Counter(
            "arvo_dependency_outages",
            "Outages of a dependency met by this process (records waited; no retry budget spent).",
            ["dependency"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "arvo_handler_duration_seconds",
            "Processing time of a record: decode, handler execution (with retries) and publishing.",
            ["topic"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self._loop_lag = Histogram(
            "arvo_event_loop_lag_seconds",
            "How late the event loop ran a task due at a fixed interval: time it spent blocked or busy.",
            buckets=LOOP_LAG_BUCKETS_S,
            registry=self.registry,
        )
        self._timers_fired = Counter(
            "arvo_timers_fired",
            "Timer events (delayed transitions, deadlines) the scheduler published, stale ones included.",
            ["topic"],
            registry=self.registry,
        )
        self._timer_lateness = Histogram(
            "arvo_timer_lateness_seconds",
            "How long after its due time a timer event was published (poll interval, backlog, outages).",
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        # prometheus_client validates labels on every .labels() call: keep the children.
        self._consumed_children: dict[tuple[str, str, str], Any] = {}
        self._produced_children: dict[tuple[str, str], Any] = {}
        self._duration_children: dict[str, Any] = {}
        self._loop: ConsumerLoop | None = None
        self._memory: Memory | None = None
        self._orchestrators: tuple[str, ...] = ()
        self._instances: dict[tuple[str, str], int] = {}
        self._instances_at: float | None = None
        self._instances_lock = asyncio.Lock()
        self.registry.register(_LoopCollector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)

    def bind(
        self, *, loop: ConsumerLoop, memory: Memory | None = None, orchestrators: Sequence[str] = ()
    ) -> None:
        """Read gauges from ``loop`` and, for ``orchestrators``, instance counts from ``memory``."""
        self._loop = loop
        self._memory = memory
        self._orchestrators = tuple(dict.fromkeys(orchestrators))

    # --- LoopHooks ---------------------------------------------------------------------------------

    def on_consumed(self, topic: str, event_type: str, outcome: str, duration_s: float) -> None:
        """Count a finished record and observe its duration."""
        key = (topic, self._types(event_type), outcome)
        child = self._consumed_children.get(key)
        if child is None:
            child = self._consumed_children[key] = self._consumed.labels(*key)
        child.inc()
        histogram = self._duration_children.get(topic)
        if histogram is None:
            histogram = self._duration_children[topic] = self._duration.labels(topic)
        histogram.observe(duration_s)

    def on_produced(self, topic: str, event_type: str) -> None:
        """Count an acknowledged emission."""
        key = (topic, self._types(event_type))
        child = self._produced_children.get(key)
        if child is None:
            child = self._produced_children[key] = self._produced.labels(*key)
        child.inc()

    def on_dead_letter(self, topic: str, reason: str) -> None:
        """Count a dead letter."""
        self._dead_letters.labels(topic, reason).inc()

    def on_retry(self, topic: str, error_class: str) -> None:
        """Count an in-place retry (and a lease wait when the lease was denied)."""
        self._retries.labels(topic, error_class).inc()
        if error_class in _LEASE_DENIED_CLASSES:
            self._lease_waits.labels(topic).inc()

    def on_publish_retry(self, error_class: str) -> None:
        """Count a retried publish."""
        self._publish_retries.labels(error_class).inc()

    def on_dependency(self, dependency: str, available: bool) -> None:
        """Mark a dependency up or down; count the outage."""
        self._dependency_up.labels(dependency).set(1 if available else 0)
        if not available:
            self._dependency_outages.labels(dependency).inc()

    def on_timers_fired(self, topic: str, lateness_s: list[float]) -> None:
        """Count published timer events and observe how late each was."""
        self._timers_fired.labels(topic).inc(len(lateness_s))
        for seconds in lateness_s:
            self._timer_lateness.observe(seconds)

    def observe_loop_lag(self, seconds: float) -> None:
        """Observe one lateness of the event loop (the loop watchdog's samples)."""
        self._loop_lag.observe(seconds)

    # --- scrape ------------------------------------------------------------------------------------

    async def refresh(self, *, timeout_s: float = 2.0) -> None:
        """Refresh the instance counts if they are older than ``instances_refresh_s`` (bounded by time).

        A failure (Redis unreachable, time-out) keeps the previous counts and is logged at debug
        level: the scrape itself must still succeed.
        """
        if self._memory is None or not self._orchestrators:
            return
        now = time.monotonic()
        if self._instances_at is not None and now - self._instances_at < self.instances_refresh_s:
            return
        async with self._instances_lock:
            if self._instances_at is not None and time.monotonic() - self._instances_at < (
                self.instances_refresh_s
            ):
                return  # refreshed by a concurrent scrape
            try:
                with untraced():  # scrapes are not workflows: no Redis spans for them
                    async with asyncio.timeout(timeout_s):
                        counts = await self._count_instances(self._memory)
            except Exception as error:  # a scrape must not fail on Redis trouble
                _log.debug("instance counts not refreshed", error=repr(error))
                return
            self._instances = counts
            self._instances_at = time.monotonic()

    async def _count_instances(self, memory: Memory) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for orchestrator in self._orchestrators:
            for status in InstanceStatus:
                rows = await memory.list_instances(
                    orchestrator=orchestrator, status=status, limit=self._instances_limit
                )
                counts[(orchestrator, status.value)] = len(rows)
        return counts

    def render(self) -> bytes:
        """The registry in the Prometheus text format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def collect_gauges(self) -> Iterator[Metric]:
        """The gauges read at scrape time: partitions, in-flight records, lag, commits, instances, drops."""
        in_flight = GaugeMetricFamily(
            "arvo_in_flight_records",
            "Records buffered or being processed, per assigned partition.",
            labels=["topic", "partition"],
        )
        lag = GaugeMetricFamily(
            "arvo_consumer_lag_records",
            "Records between the last committable offset and the partition end (last fetch).",
            labels=["topic", "partition"],
        )
        assigned = GaugeMetricFamily("arvo_assigned_partitions", "Partitions assigned to this member.")
        paused = GaugeMetricFamily("arvo_paused_partitions", "Partitions paused by backpressure.")
        deferred = GaugeMetricFamily(
            "arvo_deferred_inits",
            "New root workflow inits waiting behind started workflows' records (admission), per partition.",
            labels=["topic", "partition"],
        )
        commits = CounterMetricFamily("arvo_offset_commits", "Successful offset commits.")
        stalled = GaugeMetricFamily(
            "arvo_stalled_partitions",
            "Partitions with records waiting and none finished for stall_timeout_s.",
        )
        loop = self._loop
        if loop is not None:
            for tp, count in _by_partition(loop.stats.in_flight.items()):
                in_flight.add_metric([tp.topic, str(tp.partition)], count)
            for tp, count in _by_partition(loop.stats.deferred_inits.items()):
                deferred.add_metric([tp.topic, str(tp.partition)], count)
            for tp, behind in _by_partition(loop.partition_lag().items()):
                lag.add_metric([tp.topic, str(tp.partition)], behind)
            assigned.add_metric([], len(loop.assignment))
            paused.add_metric([], len(loop.stats.paused))
            commits.add_metric([], loop.stats.commits)
            stalled.add_metric([], len(loop.stalled_partitions()))
        yield from (in_flight, deferred, lag, assigned, paused, commits, stalled)
        yield CounterMetricFamily(
            "arvo_spans_dropped",
            "Spans dropped by the batch span processor because its queue was full (whole process).",
            value=spans_dropped(),
        )
        if self._orchestrators:
            instances = GaugeMetricFamily(
                "arvo_instances",
                "Orchestration instances of this service's orchestrators by status (capped at the limit).",
                labels=["orchestrator", "status"],
            )
            capped = GaugeMetricFamily(
                "arvo_instances_capped",
                "1 when the instance count reached the counting limit (the real count is higher).",
                labels=["orchestrator", "status"],
            )
            for (orchestrator, status), count in sorted(self._instances.items()):
                instances.add_metric([orchestrator, status], count)
                capped.add_metric([orchestrator, status], 1 if count >= self._instances_limit else 0)
            yield from (instances, capped)


def _by_partition(items: Iterable[tuple[TopicPartition, int]]) -> list[tuple[TopicPartition, int]]:
    return sorted(items, key=lambda item: (item[0].topic, item[0].partition))


class _LoopCollector(Collector):
    """Reads the loop's gauges at scrape time (on the event loop thread, where the loop lives)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics.collect_gauges())

    def describe(self) -> Iterable[Metric]:
        return []  # names are dynamic per scrape; nothing to check against other collectors
