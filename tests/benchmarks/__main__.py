"""Run every benchmark module and optionally write all figures to ``$BENCH_JSON``.

Each benchmark module exposes ``run(results: dict[str, float]) -> None``: it prints its figures
(with the baseline measured in the same run) and records them under stable names in ``results``.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import sys

import orjson

# Order matters only for reading the output; each module is independent.
BENCHMARK_MODULES = [
    "tests.benchmarks.bench_codec",
    "tests.benchmarks.bench_workflow",
    "tests.benchmarks.bench_kafka",
    "tests.benchmarks.bench_tracing",
]


def main() -> int:
    from service.tuning import tune_allocator

    # The service applies this at start (service.cli.main); measure what runs in production.
    print(f"allocator tuned: {tune_allocator()}")
    selected = sys.argv[1:]
    results: dict[str, float] = {}
    for name in BENCHMARK_MODULES:
        if selected and not any(part in name for part in selected):
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        print(f"== {name.rsplit('.', 1)[-1]} ==", flush=True)
        module.run(results)
    target = os.environ.get("BENCH_JSON")
    if target:
        pathlib.Path(target).write_bytes(
            orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
        print(f"wrote {len(results)} figures to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
