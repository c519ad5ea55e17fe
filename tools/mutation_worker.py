"""The part of ``make mutation`` that runs inside mutmut (3.8.1): one process per step.

:mod:`tools.mutation` starts this module as a subprocess for each step, so that every ``mutmut`` run
starts from a fresh interpreter (mutmut keeps its state in globals, forks its workers from the
calling process and ends with ``exit()`` on failure)::

    python -m tools.mutation_worker prepare --only FILE... --out KEYS.json
    python -m tools.mutation_worker run --only FILE... --mutants NAMES.txt --out RESULTS.json

``prepare`` copies the project into ``./mutants``, writes the mutants of the ``--only`` files and runs
the kill suite once to record which tests reach which function (``mutants/mutmut-stats.json``); it
writes the mutant names of every file to ``--out``. ``run`` tests the named mutants (each against the
tests that reach its function) and writes, per mutant, its status and, unless it was killed, its diff.
Both steps must get the same ``--only`` files: mutmut puts the original back over the mutants of a
file it is not told to mutate, and forgets which tests reach that file.

mutmut is imported by name at run time: it is installed by ``make mutation`` only (the ``mutation``
extra), not by ``make install``, so type checking and linting do not need it. The functions used
here are internals of mutmut 3.8.1, which is why the version is pinned.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["MUTMUT_VERSION", "main"]

MUTMUT_VERSION = "3.8.1"
"""The mutmut release this glue is written against."""


def _mutmut(module: str) -> Any:
    return importlib.import_module(f"mutmut.{module}")


def _configure(only: list[str], *, debug: bool = False, pytest_args: str = "") -> None:
    """Narrow mutmut's configuration (read from ``[tool.mutmut]``) to the files asked for.

    Must run before anything imports ``mutmut.__main__`` (which reads the configuration on import).
    """
    from importlib.metadata import version

    installed = version("mutmut")
    if installed != MUTMUT_VERSION:
        raise SystemExit(
            f"tools.mutation needs mutmut=={MUTMUT_VERSION}, found {installed}: run `make mutation`"
        )
    config = _mutmut("configuration").config()
    config.only_mutate = list(only)
    config.debug = config.debug or debug
    config.pytest_add_cli_args = [*config.pytest_add_cli_args, *shlex.split(pytest_args)]
    _deterministic_hypothesis()


def _deterministic_hypothesis() -> None:
    """Property tests draw the same examples on every run and never fail on their deadline.

    A mutant must be killed or not for a reason in the code, not by a lucky draw or by the slower
    trampolined code exceeding Hypothesis' per-example deadline. Tests that set their own
    ``@settings`` inherit the unset fields from this profile.
    """
    from hypothesis import settings

    settings.register_profile("mutation", derandomize=True, deadline=None, database=None, print_blob=False)
    settings.load_profile("mutation")


def _prepare(only: list[str], out: Path, max_children: int) -> None:
    main = _mutmut("__main__")
    _mutmut("mutation.trampoline").set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    main.copy_src_dir()
    main.copy_also_copy_files()
    main.setup_source_paths()
    main.store_lines_covered_by_tests()
    main.create_mutants(max_children)
    runner = main.get_mutant_runner(max_children)
    main.collect_or_load_stats(runner, mutants_caught_by_type_checker={}, apply_config_invalidation=True)
    data_class = _mutmut("mutation.data").SourceFileMutationData
    keys: dict[str, list[str]] = {}
    for path in only:
        data = data_class(path=path)
        data.load()
        keys[path] = sorted(data.exit_code_by_key)
    out.write_text(json.dumps(keys, indent=1), encoding="utf-8")


def _diff(diff_for: Any, name: str, path: str) -> str:
    try:
        return str(diff_for(name, path=path))
    except (FileNotFoundError, ValueError) as error:  # mutmut could not read the mutant back
        return f"(no diff: {error}; try `mutmut show {name}`)"


def _run(only: list[str], names: list[str], out: Path, max_children: int) -> None:
    main = _mutmut("__main__")
    main._run(names, max_children)
    status_by_exit_code = _mutmut("stats").status_by_exit_code
    diff_for = _mutmut("mutation.diff_apply").get_diff_for_mutant
    data_class = _mutmut("mutation.data").SourceFileMutationData
    wanted = set(names)
    results: list[dict[str, Any]] = []
    for path in only:
        data = data_class(path=path)
        data.load()
        for name, exit_code in sorted(data.exit_code_by_key.items()):
            if name not in wanted:
                continue
            status = str(status_by_exit_code[exit_code])
            results.append(
                {
                    "name": name,
                    "path": path,
                    "status": status,
                    "exit_code": exit_code,
                    "duration_s": data.durations_by_key.get(name),
                    "diff": None if status == "killed" else _diff(diff_for, name, path),
                }
            )
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run one step (``prepare`` or ``run``); see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tools.mutation_worker")
    parser.add_argument("step", choices=["prepare", "run"])
    parser.add_argument(
        "--only", nargs="+", required=True, help="source files to mutate (same in every step)"
    )
    parser.add_argument("--mutants", type=Path, help="file with one mutant name a line (run)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--debug", action="store_true", help="mutmut's debug output (pytest's, per mutant)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments (same in every step)")
    args = parser.parse_args(argv)
    _configure(args.only, debug=args.debug, pytest_args=args.pytest_args)
    if args.step == "prepare":
        _prepare(args.only, args.out, args.max_children)
    else:
        if args.mutants is None:
            parser.error("run needs --mutants")
        names = [line for line in args.mutants.read_text(encoding="utf-8").splitlines() if line]
        _run(args.only, names, args.out, args.max_children)
    return 0


if __name__ == "__main__":
    sys.exit(main())
