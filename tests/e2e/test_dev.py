"""``arvo dev`` as a new user runs it: one command, then ``arvo publish --wait`` from a second terminal.

Both run as subprocesses of the project's ``arvo`` console script, in a fresh temporary directory and
with a clean environment (``PATH``, ``HOME``, locale): no ``ARVO_*`` variable, no ``.env``, no
``PYTHONPATH``. ``arvo dev`` starts its own broker (Tansu) and, with ``redis-server`` on the PATH, its
own Redis; after SIGINT or SIGTERM nothing it started may be left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ARVO = Path(sys.executable).with_name("arvo")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def clean_env() -> dict[str, str]:
    """What a fresh terminal has: PATH, HOME, the locale; nothing of the test process's ARVO_* or Python."""
    basics = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "USER", "TMPDIR")
    return {name: os.environ[name] for name in basics if name in os.environ}


def _output(log: Path) -> str:
    return log.read_text(errors="replace")


def _wait_for_ready(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        text = _output(log)
        if re.search(r"^ready in [\d.]+ s\.", text, re.MULTILINE):
            return text
        if process.poll() is not None:
            raise AssertionError(f"arvo dev exited with {process.returncode}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"arvo dev not ready after {READY_TIMEOUT_S} s:\n{text[-3000:]}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (the working directory of a test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in command and _alive(int(entry.name)):
                found.append(f"{entry.name}: {command}")
    return found


@contextlib.contextmanager
def arvo_dev(cwd: Path, env: dict[str, str], *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``arvo dev`` with its output in ``cwd/dev.log``; killed (with its children) if a test fails."""
    log = cwd / "dev.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(ARVO), "dev", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _publish(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ARVO), "publish", *args, "--wait", "--timeout", "60"],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _printed_pids(banner: str) -> dict[str, int]:
    pids = {
        name: int(match.group(1))
        for name in ("broker", "redis")
        if (match := re.search(rf"^  {name} .*\bpid (\d+)", banner, re.MULTILINE))
    }
    assert "broker" in pids, banner
    return pids


def _assert_everything_stopped(
    process: subprocess.Popen[bytes], log: Path, cwd: Path, pids: dict[str, int]
) -> None:
    code = process.wait(timeout=STOP_TIMEOUT_S)
    text = _output(log)
    assert code == 0, text[-3000:]
    assert "arvo dev: stopped (app, broker" in text
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still runs after arvo dev stopped"
    assert _processes_mentioning(str(cwd)) == []
    assert not (cwd / ".arvo-dev" / "env").exists()
    assert not (cwd / ".arvo-dev" / "state.json").exists()


def test_arvo_dev_then_publish_wait_from_another_terminal_with_no_settings(tmp_path: Path) -> None:
    with arvo_dev(tmp_path, clean_env()) as (process, log):
        banner = _wait_for_ready(process, log)
        assert "  app       service.examples:default_app   (the embedded examples" in banner
        assert re.search(r"^  broker    127\.0\.0\.1:\d+ ", banner, re.MULTILINE), banner
        assert "  stop      Ctrl-C or SIGTERM" in banner
        assert """publish arvo.orc.bench --data '{"a": 2, "b": 3}' --wait""" in banner
        pids = _printed_pids(banner)
        state = json.loads((tmp_path / ".arvo-dev" / "state.json").read_text())
        assert state["broker_pid"] == pids["broker"]
        if shutil.which("redis-server", path=clean_env().get("PATH")):
            assert re.search(
                r"^  redis     redis://127\.0\.0\.1:\d+/0   private redis-server", banner, re.MULTILINE
            )
            assert state["redis_pid"] == pids["redis"]

        result = _publish(tmp_path, "arvo.orc.bench", "--data", '{"a": 2, "b": 3}')
        assert result.returncode == 0, result
        event_id, subject, reply_text = result.stdout.split("\n", 2)
        reply = json.loads(reply_text)
        assert (reply["type"], reply["data"], reply["parentid"]) == (
            "arvo.orc.bench.done",
            {"result": 10},
            event_id.removeprefix("id: "),
        )
        assert result.stderr.startswith("arvo: using the arvo dev of this directory (pid ")

        listed = subprocess.run(
            [str(ARVO), "instances", "list", "--status", "done"],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed
        assert "arvo.orc.bench:" in listed.stdout
        assert subject.startswith("subject: ")

        process.send_signal(signal.SIGINT)
        _assert_everything_stopped(process, log, tmp_path, pids)


def test_arvo_dev_runs_an_app_of_the_working_directory_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "loan").mkdir()
    (tmp_path / "loan" / "__init__.py").write_text("")
    (tmp_path / "loan" / "app.py").write_text(
        "from service.examples import bench_app\n\n\ndef app(memory):\n    return bench_app(memory)\n"
    )
    with arvo_dev(tmp_path, clean_env() | {"ARVO_APP": "loan.app:app"}) as (process, log):
        banner = _wait_for_ready(process, log)
        assert "  app       loan.app:app\n" in banner
        pids = _printed_pids(banner)
        # The second terminal sets nothing: the app comes from .arvo-dev/env, imported from here.
        result = _publish(tmp_path, "arvo.orc.bench.resumable", "--data", '{"a": 4, "b": 1}')
        assert result.returncode == 0, result
        assert json.loads(result.stdout.split("\n", 2)[2])["data"] == {"result": 10}
        process.send_signal(signal.SIGTERM)
        _assert_everything_stopped(process, log, tmp_path, pids)
