"""Run every benchmark module and optionally write all figures to ``$BENCH_JSON``.

Each benchmark module exposes ``run(results: dict[str, float]) -> None``: it prints its figures
(with the baseline measured in the same run) and records them under stable names in ``results``.
Every module runs in a process of its own, so one benchmark's heap and caches cannot colour the
next one's figures. ``python -m tests.benchmarks [name ...]`` runs the modules whose name contains
one of the given words (``codec``, ``workflow``, ``kafka``, ``tracing``, ``timers``, ``workers``,
``overload``).
Afterwards the figures of issue 14's table are printed together (:mod:`tests.benchmarks._summary`).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys
import tempfile

import orjson

# Order matters only for reading the output; each module is independent.
BENCHMARK_MODULES = [
    "tests.benchmarks.bench_codec",
    "tests.benchmarks.bench_workflow",
    "tests.benchmarks.bench_kafka",
    "tests.benchmarks.bench_tracing",
    "tests.benchmarks.bench_timers",
    "tests.benchmarks.bench_workers",
    "tests.benchmarks.bench_overload",
]
_CHILD_FLAG = "--one-module"


def _run_one(name: str, out: pathlib.Path) -> int:
    from service.tuning import tune_allocator

    # The service applies this at start (service.cli.main); measure what runs in production.
    tune_allocator()
    results: dict[str, float] = {}
    importlib.import_module(name).run(results)
    out.write_bytes(orjson.dumps(results))
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == _CHILD_FLAG:
        return _run_one(sys.argv[2], pathlib.Path(sys.argv[3]))
    selected = sys.argv[1:]
    results: dict[str, float] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in BENCHMARK_MODULES:
            if selected and not any(part in name for part in selected):
                continue
            print(f"== {name.rsplit('.', 1)[-1]} ==", flush=True)
            out = pathlib.Path(scratch) / f"{name}.json"
            completed = subprocess.run(
                [sys.executable, "-m", "tests.benchmarks", _CHILD_FLAG, name, str(out)], check=False
            )
            if completed.returncode != 0 or not out.exists():
                failed.append(name)
                continue
            results.update(orjson.loads(out.read_bytes()))
    if not selected or results:
        from tests.benchmarks._summary import summary_lines

        print("\n".join(summary_lines(results)), flush=True)
    target = os.environ.get("BENCH_JSON")
    if target:
        pathlib.Path(target).write_bytes(
            orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
        print(f"wrote {len(results)} figures to {target}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
