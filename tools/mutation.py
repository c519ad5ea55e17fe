"""Mutation testing of chosen modules against the unit suite (``make mutation``; not run in CI).

mutmut 3.8.1 mutates every function of a module; this tool tests a fixed sample of those mutants
per module, so that a score is cheap to get and the same run after run::

    make mutation                                       # the default modules
    make mutation MODULES="service/arvo/subject.py"     # any modules under service/
    make mutation MODULES="service/runtime/consumer.py::OffsetTracker"   # one class or function
    .venv/bin/python -m tools.mutation --help           # sample size, seed, workers, ...

How it works: ``tools.mutation_worker prepare`` copies the project into ``./mutants`` (mutmut's
working copy; ``service``, ``contracts`` and ``tests`` import from there), writes the mutants of the
modules and runs the kill suite (``tests/unit``, ``[tool.mutmut]`` in ``pyproject.toml``) once to
record which tests reach which function. Then, per module, a sample of ``--sample`` mutants is drawn
with a random generator seeded by ``--seed`` and the module's name (the same source gives the same
sample, whatever other modules are in the run), and ``tools.mutation_worker run`` tests each sampled
mutant against the tests that reach its function.

Printed per module: killed, survived, timeout (and the rarer statuses), the score and every
surviving mutant with its diff. The score is ``(killed + timeout) / (sampled - equivalent -
skipped)``: a mutant no unit test reaches ("no tests") counts as surviving. Equivalent mutants
(no test can tell them from the original) are listed in :mod:`tools.mutation_equivalents` with a
reason each and do not count. Everything is also written to ``mutants/mutation-report.json``; the
output of mutmut itself goes to ``mutants/mutation-logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.mutation_equivalents import EQUIVALENT

__all__ = ["DEFAULT_MODULES", "ModuleResult", "Target", "default_targets", "main", "parse_target", "sample"]

MUTANTS = Path("mutants")
LOGS = MUTANTS / "mutation-logs"
REPORT = MUTANTS / "mutation-report.json"

DEFAULT_MODULES = (
    "service/arvo/orchestration/pipeline.py",
    "service/arvo/subject.py",
    "service/arvo/memory.py",
    "service/arvo/machine/statechart.py",
)
"""Always in the default run; the consumer modules are added by :func:`default_targets`."""

CONSUMER_PACKAGE = Path("service/runtime/consumer")
CONSUMER_MODULE = Path("service/runtime/consumer.py")

_KILLED = ("killed", "timeout")
_NOT_COUNTED = ("skipped", "caught by type check", "equivalent")
_SEP = "ǁ"  # mutmut's separator between class and method in a mutant name


@dataclass(frozen=True)
class Target:
    """A module to mutate, optionally narrowed to some of its classes or top-level functions."""

    path: str
    names: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How the target was asked for: ``path`` or ``path::Name,Other``."""
        return f"{self.path}::{','.join(self.names)}" if self.names else self.path

    @property
    def module(self) -> str:
        """The dotted module name mutmut puts in front of each mutant name."""
        dotted = self.path.removesuffix(".py").replace("/", ".")
        return dotted.removesuffix(".__init__")

    def owns(self, mutant: str) -> bool:
        """Whether a mutant (mutmut's name for it) is in a function or class this target asks for."""
        if not self.names:
            return True
        mangled = mutant.partition("__mutmut_")[0].rpartition(".")[2]
        if mangled.startswith("x" + _SEP):
            owner = mangled.split(_SEP)[1]
        else:
            owner = mangled.removeprefix("x_")
        return owner in self.names


def parse_target(spec: str) -> Target:
    """``service/x.py`` or ``service/x.py::Class,function`` (a file under ``service/``)."""
    path, _, names = spec.partition("::")
    path = Path(path).as_posix().removeprefix("./")
    if not path.endswith(".py") or not path.startswith("service/"):
        raise ValueError(f"{spec!r}: give a Python file under service/ (optionally ::Class,function)")
    if not Path(path).is_file():
        raise ValueError(f"{spec!r}: no such file")
    return Target(path, tuple(n for n in names.split(",") if n))


def default_targets() -> list[Target]:
    """The default modules and the consumer (its package's modules, or ``OffsetTracker`` before the split)."""
    targets = [Target(p) for p in DEFAULT_MODULES if Path(p).is_file()]
    if CONSUMER_PACKAGE.is_dir():
        targets += [Target(p.as_posix()) for p in sorted(CONSUMER_PACKAGE.glob("*.py"))]
    elif CONSUMER_MODULE.is_file():
        targets.append(Target(CONSUMER_MODULE.as_posix(), ("OffsetTracker",)))
    return targets


def sample(target: Target, mutants: list[str], size: int, seed: int) -> list[str]:
    """A fixed sample of a target's mutants: the same names, seed and size give the same sample."""
    pool = sorted(m for m in mutants if target.owns(m))
    rng = random.Random(f"{seed}:{target.label}")  # noqa: S311 - sampling, not security
    return sorted(rng.sample(pool, min(size, len(pool))))


@dataclass
class ModuleResult:
    """The verdicts on one target's sample."""

    target: Target
    population: int
    mutants: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    stale_equivalents: list[str] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        """Mutants per status (``equivalent`` replaces ``survived`` for the listed ones)."""
        return Counter(str(m["status"]) for m in self.mutants)

    def score(self) -> float | None:
        """``(killed + timeout) / counted`` in percent; None when nothing counts."""
        counts = self.counts()
        counted = sum(n for status, n in counts.items() if status not in _NOT_COUNTED)
        if not counted:
            return None
        return 100.0 * sum(counts[s] for s in _KILLED) / counted

    def as_json(self) -> dict[str, Any]:
        """The report entry of this target."""
        return {
            "target": self.target.label,
            "population": self.population,
            "sampled": len(self.mutants),
            "counts": dict(self.counts()),
            "score": self.score(),
            "seconds": round(self.seconds, 1),
            "stale_equivalents": self.stale_equivalents,
            "mutants": self.mutants,
        }


def _added_lines(diff: str) -> set[str]:
    return {
        line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")
    }


def mark_equivalents(result: ModuleResult) -> None:
    """Relabel survivors listed in :data:`EQUIVALENT` whose added line still contains the listed change."""
    for mutant in result.mutants:
        entry = EQUIVALENT.get(mutant["name"])
        if entry is None:
            continue
        diff = mutant["diff"] or ""
        if mutant["status"] == "survived" and any(entry.change in line for line in _added_lines(diff)):
            mutant["status"] = "equivalent"
            mutant["reason"] = entry.reason
        else:
            result.stale_equivalents.append(mutant["name"])


def _readable_tail(log: Path, lines: int = 30) -> str:
    """The end of a worker's log without mutmut's spinner lines."""
    text = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip() and line[:1] not in _SPINNER]
    return "\n".join(kept[-lines:])


_SPINNER = frozenset("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
_SUITE_HINT = (
    "mutmut needs the kill suite to pass as it is: check with `.venv/bin/python -m pytest tests/unit -x -q`"
    " (a test failing for an unrelated reason can be left out with --pytest-args='--deselect <node id>')"
)


def _worker(step: str, files: list[str], log: Path, args: list[str], *, verbose: bool) -> None:
    command = [sys.executable, "-m", "tools.mutation_worker", step, "--only", *files, *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        completed = subprocess.run(  # noqa: S603 - our own interpreter and module
            command,
            stdout=None if verbose else out,
            stderr=subprocess.STDOUT if not verbose else None,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if completed.returncode != 0:
        tail = "" if verbose else _readable_tail(log)
        hint = f"\n{_SUITE_HINT}" if "failed to collect stats" in tail or "clean test" in tail else ""
        raise SystemExit(f"mutmut {step} failed (exit {completed.returncode}); log: {log}\n{tail}{hint}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _print_module(result: ModuleResult) -> None:
    counts = result.counts()
    score = result.score()
    took = _duration(result.seconds)
    print(f"\n== {result.target.label}: {len(result.mutants)} of {result.population} mutants, {took}")
    parts = [f"killed {counts['killed']}", f"survived {counts['survived']}", f"timeout {counts['timeout']}"]
    parts += [
        f"{status} {n}"
        for status, n in sorted(counts.items())
        if status not in {"killed", "survived", "timeout"}
    ]
    print("   " + ", ".join(parts) + (f"; score {score:.1f} %" if score is not None else "; no score"))
    for mutant in result.mutants:
        if mutant["status"] in _KILLED:
            continue
        reason = f" ({mutant['reason']})" if mutant["status"] == "equivalent" else ""
        print(f"\n   [{mutant['status']}] {mutant['name']}{reason}")
        if mutant["status"] != "equivalent":
            for line in (mutant["diff"] or "").splitlines()[2:]:
                print(f"      {line}")
    for name in result.stale_equivalents:
        print(f"\n   note: {name} is in tools/mutation_equivalents.py but was killed or changed: remove it")


def run(
    targets: list[Target],
    *,
    size: int,
    seed: int,
    jobs: int,
    keep: bool,
    verbose: bool,
    pytest_args: str = "",
    debug: bool = False,
) -> list[ModuleResult]:
    """Prepare the mutants of every target, then test each target's sample; print as it goes."""
    files = sorted({t.path for t in targets})
    keys_file = MUTANTS / "mutation-keys.json"
    if keep and keys_file.is_file() and sorted(json.loads(keys_file.read_text(encoding="utf-8"))) != files:
        raise SystemExit("--keep needs the same modules as the previous run (mutmut forgets the others)")
    if not keep and MUTANTS.exists():
        shutil.rmtree(MUTANTS)
    jobs_args = ["--max-children", str(jobs), f"--pytest-args={pytest_args}", *(["--debug"] if debug else [])]
    started = time.monotonic()
    print(
        f"mutation: preparing {len(files)} module(s) and recording which unit tests reach them ...",
        flush=True,
    )
    _worker("prepare", files, LOGS / "prepare.log", ["--out", str(keys_file), *jobs_args], verbose=verbose)
    keys: dict[str, list[str]] = json.loads(keys_file.read_text(encoding="utf-8"))
    print(
        f"mutation: prepared in {_duration(time.monotonic() - started)} (shared by all modules)", flush=True
    )
    results = []
    for target in targets:
        population = [k for k in keys.get(target.path, []) if target.owns(k)]
        chosen = sample(target, population, size, seed)
        result = ModuleResult(target, len(population))
        results.append(result)
        if not chosen:
            print(f"\n== {target.label}: no mutants", flush=True)
            continue
        print(f"mutation: {target.label}: testing {len(chosen)} of {len(population)} mutants ...", flush=True)
        slug = target.label.replace("/", "_").replace(":", "_").replace(",", "_")
        names_file = MUTANTS / f"mutation-{slug}.txt"
        names_file.write_text("\n".join(chosen) + "\n", encoding="utf-8")
        out = MUTANTS / f"mutation-{slug}.json"
        step_started = time.monotonic()
        args = ["--mutants", str(names_file), "--out", str(out), *jobs_args]
        _worker("run", files, LOGS / f"{slug}.log", args, verbose=verbose)
        result.seconds = time.monotonic() - step_started
        result.mutants = json.loads(out.read_text(encoding="utf-8"))
        mark_equivalents(result)
        _print_module(result)
    _print_summary(results, time.monotonic() - started)
    REPORT.write_text(json.dumps([r.as_json() for r in results], indent=1), encoding="utf-8")
    print(f"\nreport: {REPORT}; mutmut output: {LOGS}/", flush=True)
    return results


def _print_summary(results: list[ModuleResult], seconds: float) -> None:
    print(f"\n{'module':<60} {'killed':>6} {'surv.':>6} {'t/o':>4} {'equiv':>5} {'score':>7} {'time':>7}")
    for r in results:
        c = r.counts()
        score = r.score()
        shown = f"{score:.1f} %" if score is not None else "-"
        print(
            f"{r.target.label:<60} {c['killed']:>6} {c['survived'] + c['no tests']:>6} {c['timeout']:>4} "
            f"{c['equivalent']:>5} {shown:>7} {_duration(r.seconds):>7}"
        )
    print(f"total {_duration(seconds)} (surv. includes mutants no unit test reaches)")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tools.mutation [MODULE[::Name,...] ...]``."""
    parser = argparse.ArgumentParser(prog="python -m tools.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="files under service/, optionally ::Class,function")
    parser.add_argument("--sample", type=int, default=150, help="mutants per module (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants tested in parallel")
    parser.add_argument("--keep", action="store_true", help="reuse ./mutants instead of starting afresh")
    parser.add_argument("--verbose", action="store_true", help="show mutmut's own output")
    parser.add_argument(
        "--debug", action="store_true", help="mutmut's debug mode: each mutant's pytest output"
    )
    parser.add_argument(
        "--pytest-args",
        default="",
        help="extra pytest arguments for every run of the kill suite, as one string: --pytest-args='-k x'",
    )
    args = parser.parse_args(argv)
    if not Path("pyproject.toml").is_file() or not Path("service").is_dir():
        parser.error("run from the repository root")
    try:
        targets = [parse_target(m) for m in args.modules] if args.modules else default_targets()
    except ValueError as error:
        parser.error(str(error))
    run(
        targets,
        size=args.sample,
        seed=args.seed,
        jobs=args.jobs,
        keep=args.keep,
        verbose=args.verbose or args.debug,
        pytest_args=args.pytest_args,
        debug=args.debug,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
