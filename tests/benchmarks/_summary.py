"""The Kafka-path figures of issue 14 in one table, from the figures every module recorded.

``python -m tests.benchmarks`` (``make bench``) prints it after the last module: one line per figure
of the issue's table, with the value measured in this run, the figure when the issue was filed and
the target. A figure whose module did not run (or failed) is shown as such, never left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Results = dict[str, float]


@dataclass(frozen=True)
class Figure:
    """One row: how to read it from the results, how to print it, and what it is compared with."""

    label: str
    read: Callable[[Results], str | None]
    filed: str
    target: str


def _value(key: str, fmt: str) -> Callable[[Results], str | None]:
    def read(results: Results) -> str | None:
        return format(results[key], fmt) if key in results else None

    return read


def _pair(first: str, second: str, fmt: str) -> Callable[[Results], str | None]:
    def read(results: Results) -> str | None:
        if first not in results or second not in results:
            return None
        return f"{format(results[first], fmt)} / {format(results[second], fmt)}"

    return read


def _workers(results: Results) -> str | None:
    if "workers.2_vs_1" not in results:
        return None
    parts = [f"{results['workers.2_vs_1']:.2f}×"]
    for count in (1, 2):
        prefix = f"workers.{count}."
        if f"{prefix}workflows_per_s" not in results:
            continue
        parts.append(
            f"[{count}: {results[prefix + 'workflows_per_s']:.0f} wf/s, cores service "
            f"{results.get(prefix + 'service_cores', 0.0):.2f} broker {results.get(prefix + 'broker_cores', 0.0):.2f}"
            f" redis {results.get(prefix + 'redis_cores', 0.0):.2f}]"
        )
    return " ".join(parts)


def _overload(results: Results) -> str | None:
    keys = (
        "overload.admission.completion_p50_s",
        "overload.admission.completion_p99_s",
        "overload.admission.min_window_completion_fraction",
    )
    if not all(key in results for key in keys):
        return None
    text = (
        f"p50 {results[keys[0]]:.1f} s, p99 {results[keys[1]]:.1f} s; slowest 10-s window "
        f"{results[keys[2]]:.0%} of the sustainable rate"
    )
    off = "overload.no_admission.min_window_completion_fraction"
    if off in results:
        text += (
            f" (admission off: p50 {results.get('overload.no_admission.completion_p50_s', 0.0):.1f} s,"
            f" slowest window {results[off]:.0%})"
        )
    return text


FIGURES: tuple[Figure, ...] = (
    Figure(
        "service ÷ bare passthrough, consumed events/s",
        _value("kafka.service_to_passthrough_event_rate", ".0%"),
        "17 %",
        "≥ 50 %",
    ),
    Figure(
        "service CPU per consumed event (µs)", _value("kafka.service.cpu_us_per_event", ".0f"), "306", "≤ 120"
    ),
    Figure(
        "engine alone per handler execution (µs)",
        _value("kafka.engine_only.cpu_us_per_event", ".0f"),
        "74",
        "≤ 40",
    ),
    Figure(
        "Redis round trips per consumed event",
        _value("kafka.redis_round_trips_per_event", ".2f"),
        "1.60",
        "≤ 0.5",
    ),
    Figure(
        "one workflow at a time, p50 end to end (ms)",
        _value("kafka.service.unloaded_p50_ms", ".1f"),
        "33.7",
        "no worse",
    ),
    Figure(
        "in-process workflows/s (orchestrator / resumable)",
        _pair("workflow.orchestrator.workflows_per_s", "workflow.resumable.workflows_per_s", ".0f"),
        "2,039 / 2,479",
        "≥ 4,000 / 4,000",
    ),
    Figure(
        "in-process workflows per CPU-second (orchestrator / resumable)",
        _pair("workflow.orchestrator.workflows_per_cpu_s", "workflow.resumable.workflows_per_cpu_s", ".0f"),
        "—",
        "(same, per CPU)",
    ),
    Figure("--workers 2 vs 1 (with broker and Redis CPU)", _workers, "—", "reported"),
    Figure(
        "2× overload: completion latency of started workflows, completions during it",
        _overload,
        "~176 s p50; 117–177/s then a burst",
        "≥ 80 % of the sustainable rate throughout",
    ),
)


def summary_lines(results: Results) -> list[str]:
    """The table's lines: figure, this run, when filed, target."""
    lines = ["== issue 14 figures (this run | when filed | target) =="]
    for figure in FIGURES:
        value = figure.read(results)
        shown = value if value is not None else "not measured (its benchmark did not run or failed)"
        lines.append(f"   {figure.label}: {shown} | {figure.filed} | {figure.target}")
    return lines
