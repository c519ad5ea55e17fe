"""The ``arvo`` CLI, run in-process with typer's CliRunner: subject decode/encode and event validate."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from service.arvo.event import create_arvo_event
from service.arvo.subject import MAX_SUBJECT_CHARS, ArvoOrchestrationSubject
from service.cli import app

# Spec 3.2 test vectors (verified byte-identical between pako 2.1.0 and CPython zlib).
VECTOR_1_JSON = (
    '{"orchestrator":{"name":"arvo.orc.test","version":"0.0.1"},"execution":{"id":'
    '"123e4567-e89b-12d3-a456-426614174000","initiator":"com.test.service","domain":null},"meta":{}}'
)
VECTOR_1_SUBJECT = (
    "eJwlzdEKwyAMheF3yXUVtc5ufRungQWqgtoyEN99obtMPjj/gFLDB1uvvpcK+4DsE8IOvl5FssnOCAtcWBuVzKKkkhrmAvjFcPb7"
    "OYAikzYr2ofbBD5fb6FNXIXnW1jjnLZ6s0op3qJMnf49CCXdCdmwXhSQOZbkiUfzeRycSdg9F+b8AWonNj0="
)
VECTOR_2_JSON = (
    '{"orchestrator":{"name":"arvo.orc.inc","version":"0.0.1"},"execution":{"id":'
    '"11111111-1111-4111-8111-111111111111","initiator":"arvo.orc.number.modifier","domain":"test.domain"},'
    '"meta":{"redirectto":"arvo.orc.number.modifier"}}'
)
VECTOR_2_SUBJECT = (
    "eJx9jksKwzAMRO+idSoS6KLkNq6tUi1sgaKEgvHdK+dDd9ViYDRiniqIxjctpsFEYa5QQiaYIegm6BlyiTDARrqwFA9GHHGCNgB9KK62"
    "Lytw8mg657bLvcvjstd4Fxc2PnA/TFnzkxSzJH4xqZ8lyYE70fw9PJ1zM1noSKXEStFM/vW09gVlwUjR"
)
VECTORS = [(VECTOR_1_JSON, VECTOR_1_SUBJECT), (VECTOR_2_JSON, VECTOR_2_SUBJECT)]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _pretty(compact_json: str) -> str:
    return json.dumps(json.loads(compact_json), indent=2, ensure_ascii=False) + "\n"


def _valid_event_json() -> bytes:
    subject = ArvoOrchestrationSubject.create(json.loads(VECTOR_2_JSON))
    event = create_arvo_event(
        source="com.test.source",
        type="com.test.event.created",
        subject=subject,
        data={"greeting": "héllo 世界", "items": [{"name": "a"}]},
        domain="test.domain",
        parentid="parent-event",
        extensions={"tenant": "acme"},
    )
    return event.to_json()


def _invalid_event() -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(_valid_event_json())
    event["type"] = "com.test"  # two segments: breaks the reverse-DNS type rule
    event["time"] = "2023-05-01 12:00:00"  # space separator, no offset
    event["subject"] = "has space"  # not a properly encoded URI
    return event


def _assert_one_line_error(stderr: str, prefix: str) -> None:
    assert stderr.endswith("\n")
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(prefix), stderr
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- arvo (root)


def test_root_without_arguments_prints_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    assert "subject" in result.output
    assert "event" in result.output


@pytest.mark.parametrize("group", ["subject", "event"])
def test_group_without_command_prints_help(runner: CliRunner, group: str) -> None:
    result = runner.invoke(app, [group])
    assert "Usage" in result.output


# --------------------------------------------------------------------------- arvo subject decode


@pytest.mark.parametrize(("compact_json", "subject"), VECTORS)
def test_subject_decode_prints_spec_vector_content_as_pretty_json(
    runner: CliRunner, compact_json: str, subject: str
) -> None:
    result = runner.invoke(app, ["subject", "decode", subject])
    assert result.exit_code == 0, result.output
    assert result.stdout == _pretty(compact_json)
    assert result.stderr == ""


def test_subject_decode_keeps_non_ascii_characters(runner: CliRunner) -> None:
    content = json.loads(VECTOR_2_JSON)
    content["meta"] = {"note": "héllo 世界 🎉"}
    subject = ArvoOrchestrationSubject.create(content)
    result = runner.invoke(app, ["subject", "decode", subject])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == content
    assert "héllo 世界 🎉" in result.stdout


@pytest.mark.parametrize(
    "subject",
    [
        "invalid_base64_string",
        base64.b64encode(zlib.compress(b'{"orchestrator":{}}')).decode(),  # wrong shape
        base64.b64encode(zlib.compress(b"not json")).decode(),
        "",
    ],
    ids=["not-base64-zlib", "wrong-shape", "not-json", "empty"],
)
def test_subject_decode_invalid_subject_exits_1_with_one_line_error(runner: CliRunner, subject: str) -> None:
    result = runner.invoke(app, ["subject", "decode", subject])
    assert result.exit_code == 1
    assert result.stdout == ""
    _assert_one_line_error(result.stderr, "arvo: invalid subject: ")


def test_subject_decode_rejects_zip_bomb_within_length_limit(runner: CliRunner) -> None:
    # ~2.5 MB of JSON that compresses to a subject short enough to pass the length check:
    # only the bounded inflate (MAX_SUBJECT_JSON_BYTES) can stop it.
    bomb_json = b'{"orchestrator":{"name":"' + b"a" * 2_500_000 + b'"}}'
    bomb = base64.b64encode(zlib.compress(bomb_json, 9)).decode()
    assert len(bomb) <= MAX_SUBJECT_CHARS
    result = runner.invoke(app, ["subject", "decode", bomb])
    assert result.exit_code == 1
    _assert_one_line_error(result.stderr, "arvo: invalid subject: ")


def test_subject_decode_rejects_overlong_subject(runner: CliRunner) -> None:
    result = runner.invoke(app, ["subject", "decode", "eJ" + "A" * MAX_SUBJECT_CHARS])
    assert result.exit_code == 1
    _assert_one_line_error(result.stderr, "arvo: invalid subject: ")


def test_subject_decode_strict_rejects_unpadded_subject_that_lenient_accepts(runner: CliRunner) -> None:
    unpadded = VECTOR_1_SUBJECT.rstrip("=")
    strict = runner.invoke(app, ["subject", "decode", unpadded])
    assert strict.exit_code == 1
    _assert_one_line_error(strict.stderr, "arvo: invalid subject: ")

    lenient = runner.invoke(app, ["subject", "decode", "--lenient", unpadded])
    assert lenient.exit_code == 0, lenient.output
    assert lenient.stdout == _pretty(VECTOR_1_JSON)


# --------------------------------------------------------------------------- arvo subject encode


@pytest.mark.parametrize(("compact_json", "subject"), VECTORS)
def test_subject_encode_prints_exact_spec_vector_subject(
    runner: CliRunner, compact_json: str, subject: str
) -> None:
    result = runner.invoke(app, ["subject", "encode", compact_json])
    assert result.exit_code == 0, result.output
    assert result.stdout == subject + "\n"


def test_subject_encode_reads_content_from_stdin(runner: CliRunner) -> None:
    result = runner.invoke(app, ["subject", "encode", "-"], input=VECTOR_2_JSON)
    assert result.exit_code == 0, result.output
    assert result.stdout == VECTOR_2_SUBJECT + "\n"


def test_subject_encode_then_decode_round_trips(runner: CliRunner) -> None:
    encoded = runner.invoke(app, ["subject", "encode", VECTOR_2_JSON])
    decoded = runner.invoke(app, ["subject", "decode", encoded.stdout.strip()])
    assert decoded.exit_code == 0, decoded.output
    assert json.loads(decoded.stdout) == json.loads(VECTOR_2_JSON)


@pytest.mark.parametrize(
    "content",
    [
        VECTOR_1_JSON.replace("arvo.orc.test", "Not-A-Name"),  # orchestrator name breaks the type regex
        VECTOR_1_JSON.replace('"0.0.1"', '"one"'),  # version is not semver
        '{"orchestrator": {"name": "arvo.orc.test"',  # not JSON
        '["not", "an", "object"]',
    ],
    ids=["bad-name", "bad-version", "not-json", "not-object"],
)
def test_subject_encode_invalid_content_exits_1_with_one_line_error(runner: CliRunner, content: str) -> None:
    result = runner.invoke(app, ["subject", "encode", content])
    assert result.exit_code == 1
    assert result.stdout == ""
    _assert_one_line_error(result.stderr, "arvo: invalid subject content: ")


# --------------------------------------------------------------------------- arvo event validate


def test_event_validate_valid_file_prints_ok(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(_valid_event_json())
    result = runner.invoke(app, ["event", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok\n"


def test_event_validate_reads_stdin(runner: CliRunner) -> None:
    result = runner.invoke(app, ["event", "validate", "-"], input=_valid_event_json())
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok\n"


def test_event_validate_invalid_event_lists_every_problem_with_field_path(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(orjson.dumps(_invalid_event()))
    result = runner.invoke(app, ["event", "validate", str(path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    by_path = {line.split(":", 1)[0]: line for line in lines}
    assert set(by_path) == {"type", "time", "subject"}
    assert "rule=" in by_path["type"]
    assert "'com.test'" in by_path["type"]  # the offending value is shown
    assert "Type should be prefixed with a reverse-DNS name" in by_path["type"]
    assert "The subject must be a properly encoded URI" in by_path["subject"]


def test_event_validate_reports_nested_data_path(runner: CliRunner) -> None:
    event = orjson.loads(_valid_event_json())
    event["data"] = ["not", "an", "object"]
    result = runner.invoke(app, ["event", "validate", "-"], input=orjson.dumps(event))
    assert result.exit_code == 1
    assert result.stdout.startswith("data"), result.stdout


def test_event_validate_invalid_json_is_one_problem(runner: CliRunner) -> None:
    result = runner.invoke(app, ["event", "validate", "-"], input=b'{"id": "x",')
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("$: ")
    assert "rule=json-syntax" in lines[0]


def test_event_validate_json_array_is_one_problem(runner: CliRunner) -> None:
    result = runner.invoke(app, ["event", "validate", "-"], input=b"[1, 2]")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("$: ")
    assert "rule=json-object" in lines[0]


def test_event_validate_missing_file_exits_1_with_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["event", "validate", str(tmp_path / "missing.json")])
    assert result.exit_code == 1
    assert result.stdout == ""
    _assert_one_line_error(result.stderr, "arvo: cannot read event file ")
