"""Property tests of the subject codec: round trips, total error handling, bounded decompression."""

from __future__ import annotations

import base64
import contextlib
import gzip
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.arvo import subject as subject_module
from service.arvo.errors import SubjectError
from service.arvo.subject import (
    MAX_SUBJECT_CHARS,
    MAX_SUBJECT_JSON_BYTES,
    ArvoOrchestrationSubject,
    _decode_subject,
)

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
type_names = st.lists(segment, min_size=3, max_size=5).map(".".join)
versions = st.tuples(*(st.integers(0, 999),) * 3).map(lambda parts: ".".join(map(str, parts)))
domains = st.none() | st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=20)
execution_ids = st.text(min_size=1, max_size=40).filter(lambda text: ";" not in text)
meta = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5)


@st.composite
def contents(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "orchestrator": {"name": draw(type_names), "version": draw(versions)},
        "execution": {"id": draw(execution_ids), "initiator": draw(type_names), "domain": draw(domains)},
        "meta": draw(meta),
    }


def parse_or_subject_error(subject: str, *, lenient: bool) -> None:
    with contextlib.suppress(SubjectError):
        _decode_subject(subject, lenient)


@given(contents())
def test_any_valid_content_round_trips(content: dict[str, Any]) -> None:
    subject = ArvoOrchestrationSubject.create(content)
    parsed = ArvoOrchestrationSubject.parse(subject)
    assert parsed.to_dict() == content
    assert parsed.name == content["orchestrator"]["name"]
    assert parsed.domain == content["execution"]["domain"]
    assert dict(parsed.meta) == content["meta"]
    # Canonical by construction: strict and lenient agree, and re-encoding is the identity.
    assert ArvoOrchestrationSubject.parse(subject, lenient=True) == parsed
    assert ArvoOrchestrationSubject.create(parsed.content) == subject


@given(contents())
def test_new_round_trips_its_arguments(content: dict[str, Any]) -> None:
    subject = ArvoOrchestrationSubject.new(
        orchestrator=content["orchestrator"]["name"],
        initiator=content["execution"]["initiator"],
        version=content["orchestrator"]["version"],
        domain=content["execution"]["domain"],
        meta=content["meta"],
        execution_id=content["execution"]["id"],
    )
    assert ArvoOrchestrationSubject.create(content) == subject


@given(st.text(max_size=300), st.booleans())
def test_arbitrary_strings_raise_only_subject_errors(text: str, lenient: bool) -> None:
    parse_or_subject_error(text, lenient=lenient)


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n", max_size=300)
)
def test_base64_like_strings_raise_only_subject_errors(text: str) -> None:
    for lenient in (False, True):
        parse_or_subject_error(text, lenient=lenient)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_base64_raise_only_subject_errors(raw: bytes) -> None:
    subject = base64.b64encode(raw).decode()
    for lenient in (False, True):
        parse_or_subject_error(subject, lenient=lenient)


@given(st.binary(max_size=300))
def test_arbitrary_compressed_bytes_raise_only_subject_errors(raw: bytes) -> None:
    for compressed in (zlib.compress(raw), gzip.compress(raw)):
        subject = base64.b64encode(compressed).decode()
        for lenient in (False, True):
            parse_or_subject_error(subject, lenient=lenient)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_arbitrary_compressed_json_raises_only_subject_errors(value: object) -> None:
    import json

    subject = base64.b64encode(zlib.compress(json.dumps(value).encode())).decode()
    parse_or_subject_error(subject, lenient=False)


_REAL_DECOMPRESSOBJ = zlib.decompressobj


class RecordingInflater:
    """Wraps a real decompressobj and records how it is driven."""

    def __init__(self, calls: list[tuple[int, int]], wbits: int) -> None:
        self._inner = _REAL_DECOMPRESSOBJ(wbits=wbits)
        self._calls = calls

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out = self._inner.decompress(data, max_length)
        self._calls.append((max_length, len(out)))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def bomb(wrapper: str) -> str:
    zeros = b"0" * 1_000_000
    compressed = zlib.compress(zeros, 9) if wrapper == "zlib" else gzip.compress(zeros, 9)
    return base64.b64encode(compressed).decode()


@pytest.mark.parametrize(("wrapper", "lenient"), [("zlib", False), ("zlib", True), ("gzip", True)])
def test_a_zip_bomb_is_rejected_without_inflating_beyond_the_bound(
    wrapper: str, lenient: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject = bomb(wrapper)
    assert len(subject) < MAX_SUBJECT_CHARS
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(
        subject_module.zlib, "decompressobj", lambda wbits=15: RecordingInflater(calls, wbits)
    )
    with pytest.raises(SubjectError) as caught:
        ArvoOrchestrationSubject.parse(subject, lenient=lenient)
    assert f"exceeds the maximum of {MAX_SUBJECT_JSON_BYTES} bytes" in str(caught.value)
    assert calls, "decompressobj was not used"
    assert all(0 < max_length <= MAX_SUBJECT_JSON_BYTES for max_length, _ in calls)
    assert sum(produced for _, produced in calls) <= MAX_SUBJECT_JSON_BYTES


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(MAX_SUBJECT_JSON_BYTES + 1, 4_000_000))
def test_any_payload_larger_than_the_bound_is_rejected(size: int) -> None:
    subject = base64.b64encode(zlib.compress(b" " * size, 9)).decode()
    if len(subject) > MAX_SUBJECT_CHARS:
        return
    with pytest.raises(SubjectError, match=r"exceeds the maximum"):
        _decode_subject(subject, False)
