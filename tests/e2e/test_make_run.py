"""`arvo demo` (what `make run` runs) as a user starts it: a subprocess, piped output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ARVO = Path(sys.executable).with_name("arvo")


def test_arvo_demo_runs_every_example_to_its_expected_end_and_exits_zero() -> None:
    completed = subprocess.run([str(ARVO), "demo"], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.count("→ ok") == 9  # six workflows plus the timeout, deadline and cancel ones
    assert "\x1b[" not in completed.stdout, "plain output when piped"
    assert "arvo.orc.order.done" in completed.stdout
