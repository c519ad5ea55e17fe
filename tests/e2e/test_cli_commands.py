"""The installed ``arvo`` console script, run as a subprocess the way a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.e2e

CONTENT = {
    "orchestrator": {"name": "arvo.orc.inc", "version": "0.0.1"},
    "execution": {
        "id": "11111111-1111-4111-8111-111111111111",
        "initiator": "arvo.orc.number.modifier",
        "domain": "test.domain",
    },
    "meta": {"redirectto": "arvo.orc.number.modifier", "note": "héllo 世界"},
}


@pytest.fixture(scope="module")
def arvo_script() -> Path:
    # The console script installed next to the interpreter running the tests (the project venv).
    candidate = Path(sys.executable).parent / "arvo"
    if candidate.is_file():
        return candidate
    found = shutil.which("arvo")
    if found is None:
        pytest.fail("the `arvo` console script is not installed (pip install -e . in the venv)")
    return Path(found)


def _run(script: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(script), *args], input=stdin, capture_output=True, timeout=60, check=False)


def _event(subject: str) -> bytes:
    return orjson.dumps(
        {
            "id": "e2e-event-1",
            "source": "com.e2e.source",
            "specversion": "1.0",
            "type": "com.e2e.event.created",
            "subject": subject,
            "datacontenttype": "application/cloudevents+json;charset=UTF-8;profile=arvo",
            "dataschema": None,
            "data": {"greeting": "héllo"},
            "time": "2025-01-02T03:04:05.678+00:00",
            "to": "com.e2e.consumer",
            "accesscontrol": None,
            "redirectto": None,
            "executionunits": None,
            "traceparent": None,
            "tracestate": None,
            "parentid": None,
            "domain": None,
        }
    )


def test_help_lists_the_command_groups(arvo_script: Path) -> None:
    result = _run(arvo_script, "--help")
    assert result.returncode == 0, result.stderr
    assert b"subject" in result.stdout
    assert b"event" in result.stdout


def test_encode_decode_validate_round_trip(arvo_script: Path, tmp_path: Path) -> None:
    encoded = _run(arvo_script, "subject", "encode", json.dumps(CONTENT, ensure_ascii=False))
    assert encoded.returncode == 0, encoded.stderr
    subject = encoded.stdout.decode().strip()
    assert subject.startswith("eJ")

    decoded = _run(arvo_script, "subject", "decode", subject)
    assert decoded.returncode == 0, decoded.stderr
    assert json.loads(decoded.stdout) == CONTENT
    # Piped output is plain text: no ANSI colour codes.
    assert b"\x1b[" not in decoded.stdout

    event_file = tmp_path / "event.json"
    event_file.write_bytes(_event(subject))
    validated = _run(arvo_script, "event", "validate", str(event_file))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert validated.stdout == b"ok\n"

    from_stdin = _run(arvo_script, "event", "validate", "-", stdin=_event(subject))
    assert from_stdin.returncode == 0, from_stdin.stdout + from_stdin.stderr
    assert from_stdin.stdout == b"ok\n"


def test_encode_reads_content_from_stdin(arvo_script: Path) -> None:
    result = _run(arvo_script, "subject", "encode", "-", stdin=orjson.dumps(CONTENT))
    assert result.returncode == 0, result.stderr
    decoded = _run(arvo_script, "subject", "decode", result.stdout.decode().strip())
    assert json.loads(decoded.stdout) == CONTENT


def test_invalid_subject_is_one_line_on_stderr_and_exit_1(arvo_script: Path) -> None:
    result = _run(arvo_script, "subject", "decode", "invalid_base64_string")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.startswith(b"arvo: invalid subject: ")
    assert result.stderr.count(b"\n") == 1
    assert b"Traceback" not in result.stderr


def test_invalid_event_lists_problems_and_exits_1(arvo_script: Path) -> None:
    event = orjson.loads(_event("plain-subject"))
    event["type"] = "com.test"
    event["to"] = "not a uri"
    result = _run(arvo_script, "event", "validate", "-", stdin=orjson.dumps(event))
    assert result.returncode == 1
    paths = sorted(line.split(":", 1)[0] for line in result.stdout.decode().splitlines())
    assert paths == ["to", "type"]


def test_usage_error_exits_2(arvo_script: Path) -> None:
    result = _run(arvo_script, "subject", "decode")
    assert result.returncode == 2
