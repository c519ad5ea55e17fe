"""One ``/metrics`` for several worker processes: their expositions merged into one per pod.

The supervisor of ``arvo run --workers N`` (:mod:`service.runtime.supervisor`) scrapes each worker's
``/metrics`` on its loopback port and serves the merge, which has the series of one process: the
same names and labels as a single ``arvo run``, so dashboards and alerts need no change.

How samples of one series (same name, same labels) are combined:

* counters, histograms and summaries: **summed**, plus what earlier incarnations of each worker
  counted (:meth:`MetricsAggregator.retire`), so a restarted worker does not make the pod's counter
  go down (Prometheus would read that as a reset and count the whole total again);
* ``*_created`` and ``process_start_time_seconds``: the **earliest**;
* ``arvo_dependency_up``: the **lowest** (0 while any worker meets an outage);
* ``arvo_instances``, ``arvo_instances_capped`` and ``process_max_fds``: the **highest** (every worker
  counts the same instances in the same store; a limit is per process);
* other gauges: **summed** (``arvo_assigned_partitions``, ``arvo_in_flight_records`` — workers own
  different partitions — and the processes' memory and open files).

Why scraping rather than prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): most of
the service's gauges are read from the consumer loop at scrape time by a custom collector and the
process metrics come from ``ProcessCollector`` — multiprocess mode supports neither (it only
aggregates values written to its memory-mapped files), it needs the variable set before
``prometheus_client`` is imported in every process and a directory wiped at each start, and it
changes how every metric of every process is stored. Scraping keeps the workers unchanged (each is
an ordinary service with its own registry) at the cost of one loopback HTTP request per worker and a
text parse per scrape — about a millisecond for the service's few hundred series. What a worker
counted after the last scrape before it crashed is lost (a single process's restart loses all).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["MetricsAggregator", "merge_families", "parse_exposition"]

_MONOTONIC_TYPES: Final = frozenset({"counter", "histogram", "summary"})
_HIGHEST: Final = frozenset({"arvo_instances", "arvo_instances_capped", "process_max_fds"})
_LOWEST: Final = frozenset({"arvo_dependency_up", "process_start_time_seconds"})
_SAME_IN_EVERY_PROCESS: Final = frozenset({"info", "stateset"})

_SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]
"""(family name, sample name, sorted labels)."""


def parse_exposition(text: str) -> list[Metric]:
    """The metric families of a Prometheus text exposition (``/metrics`` of a worker).

    Raises:
        ValueError: the text is not in the exposition format.

    """
    return list(text_string_to_metric_families(text))


def _monotonic(family: Metric, sample: str) -> bool:
    return family.type in _MONOTONIC_TYPES and not sample.endswith("_created")


def _combine(family: Metric, sample: str, values: list[float]) -> float:
    name = family.name
    if sample.endswith("_created") or name in _LOWEST:
        return min(values)
    if name in _HIGHEST or family.type in _SAME_IN_EVERY_PROCESS:
        return max(values)
    return sum(values)


@dataclass
class _Family:
    name: str
    documentation: str
    type: str
    unit: str = ""
    series: dict[_SeriesKey, list[float]] = field(default_factory=dict)
    labels: dict[_SeriesKey, dict[str, str]] = field(default_factory=dict)


def _key(family: str, sample: str, labels: dict[str, str]) -> _SeriesKey:
    return family, sample, tuple(sorted(labels.items()))


def merge_families(
    sources: Iterable[Sequence[Metric]], *, offsets: dict[_SeriesKey, float] | None = None
) -> list[Metric]:
    """Merge the families of several processes by the rules of the module docstring.

    Args:
        sources: Each process's families (:func:`parse_exposition`, or ``registry.collect()``).
        offsets: Values added to the monotonic series of the families found in ``sources`` (what
            retired processes counted); a series only there still appears.

    """
    families: dict[str, _Family] = {}
    for source in sources:
        for metric in source:
            merged = families.get(metric.name)
            if merged is None:
                merged = families[metric.name] = _Family(
                    metric.name, metric.documentation, metric.type, getattr(metric, "unit", "")
                )
            for sample in metric.samples:
                key = _key(metric.name, sample.name, sample.labels)
                merged.series.setdefault(key, []).append(sample.value)
                merged.labels.setdefault(key, dict(sample.labels))
    result: list[Metric] = []
    for merged in families.values():
        metric = Metric(merged.name, merged.documentation, merged.type, merged.unit)
        extra = {
            key: value
            for key, value in (offsets or {}).items()
            if key[0] == merged.name and _monotonic(metric, key[1])
        }
        for key, values in merged.series.items():
            value = _combine(metric, key[1], values) + extra.pop(key, 0.0)
            metric.add_sample(key[1], merged.labels[key], value)
        for key, value in extra.items():  # a series only a retired process had
            metric.add_sample(key[1], dict(key[2]), value)
        result.append(metric)
    return result


class _Static(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render_families(families: list[Metric]) -> bytes:
    """``families`` in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(families))
    return generate_latest(registry)


class MetricsAggregator:
    """The merged metrics of N worker slots, kept monotonic across the restarts of each worker.

    Each slot (worker index) holds the families of its current process's last scrape
    (:meth:`update`); when that process exits, :meth:`retire` adds its monotonic series to the slot's
    offsets, so the pod's counters keep growing when the slot's next process starts from zero.
    """

    def __init__(self) -> None:
        self._last: dict[int, list[Metric]] = {}
        self._offsets: dict[_SeriesKey, float] = {}
        self._families_of_retired: dict[str, Metric] = {}

    def update(self, slot: int, families: list[Metric]) -> None:
        """Record the last successful scrape of the current process of ``slot``."""
        self._last[slot] = families

    def retire(self, slot: int) -> None:
        """The current process of ``slot`` exited: keep its counted totals, forget its gauges."""
        for family in self._last.pop(slot, []):
            for sample in family.samples:
                if not _monotonic(family, sample.name):
                    continue
                self._families_of_retired.setdefault(family.name, family)
                key = _key(family.name, sample.name, sample.labels)
                self._offsets[key] = self._offsets.get(key, 0.0) + sample.value

    def last(self, slot: int) -> list[Metric]:
        """The families of the last scrape of ``slot``'s current process (empty before the first)."""
        return self._last.get(slot, [])

    def merged(self, live: Iterable[Sequence[Metric]], extra: Sequence[Metric] = ()) -> list[Metric]:
        """Merge ``live`` (the families to use per slot this time), ``extra`` and the retired totals."""
        # A family only retired processes had keeps its type: it is merged as an empty source.
        retired_only = [
            Metric(family.name, family.documentation, family.type, getattr(family, "unit", ""))
            for family in self._families_of_retired.values()
        ]
        return merge_families([*live, extra, retired_only], offsets=self._offsets)

    def render(self, live: Iterable[Sequence[Metric]], extra: Sequence[Metric] = ()) -> bytes:
        """:meth:`merged` in the Prometheus text format."""
        return render_families(self.merged(live, extra))
