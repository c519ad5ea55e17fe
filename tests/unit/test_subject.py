"""ArvoOrchestrationSubject: wire encoding (spec 3.2), strict/lenient decoding (3.3), new/from (3.4-3.5)."""

from __future__ import annotations

import base64
import gzip
import json
import random
import string
import zlib
from typing import Any

import pytest

from service.arvo import subject as subject_module
from service.arvo.errors import SubjectError
from service.arvo.subject import (
    MAX_SUBJECT_CHARS,
    ArvoOrchestrationSubject,
    ParsedSubject,
    _decode_subject,
)

VECTOR_1_JSON = (
    '{"orchestrator":{"name":"arvo.orc.test","version":"0.0.1"},"execution":{"id":'
    '"123e4567-e89b-12d3-a456-426614174000","initiator":"com.test.service","domain":null},"meta":{}}'
)
VECTOR_1 = (
    "eJwlzdEKwyAMheF3yXUVtc5ufRungQWqgtoyEN99obtMPjj/gFLDB1uvvpcK+4DsE8IOvl5FssnOCAtcWBuVzKKkkhrmAvjFcPb7"
    "OYAikzYr2ofbBD5fb6FNXIXnW1jjnLZ6s0op3qJMnf49CCXdCdmwXhSQOZbkiUfzeRycSdg9F+b8AWonNj0="
)
VECTOR_2_JSON = (
    '{"orchestrator":{"name":"arvo.orc.inc","version":"0.0.1"},"execution":{"id":'
    '"11111111-1111-4111-8111-111111111111","initiator":"arvo.orc.number.modifier","domain":"test.domain"},'
    '"meta":{"redirectto":"arvo.orc.number.modifier"}}'
)
VECTOR_2 = (
    "eJx9jksKwzAMRO+idSoS6KLkNq6tUi1sgaKEgvHdK+dDd9ViYDRiniqIxjctpsFEYa5QQiaYIegm6BlyiTDARrqwFA9GHHGCNgB9KK62"
    "Lytw8mg657bLvcvjstd4Fxc2PnA/TFnzkxSzJH4xqZ8lyYE70fw9PJ1zM1noSKXEStFM/vW09gVlwUjR"
)

PARSE_HEAD = "Error parsing orchestration subject string to the context.\nError -> "
CREATE_HEAD = "Error creating orchestration subject string from the provided context.\nError -> "


def encode_json(text: str | bytes) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(zlib.compress(raw)).decode("ascii")


def valid_content(**overrides: Any) -> dict[str, Any]:
    content: dict[str, Any] = {
        "orchestrator": {"name": "arvo.orc.test", "version": "1.2.3"},
        "execution": {"id": "exec-1", "initiator": "com.test.service", "domain": None},
        "meta": {},
    }
    content.update(overrides)
    return content


def parse_error(subject: str, *, lenient: bool = False) -> str:
    with pytest.raises(SubjectError) as caught:
        ArvoOrchestrationSubject.parse(subject, lenient=lenient)
    return str(caught.value)


# ------------------------------------------------------------------------------------------ wire vectors


@pytest.mark.parametrize(("text", "expected"), [(VECTOR_1_JSON, VECTOR_1), (VECTOR_2_JSON, VECTOR_2)])
def test_create_reproduces_the_typescript_subject_byte_for_byte(text: str, expected: str) -> None:
    assert ArvoOrchestrationSubject.create(json.loads(text)) == expected


@pytest.mark.parametrize(("text", "subject"), [(VECTOR_1_JSON, VECTOR_1), (VECTOR_2_JSON, VECTOR_2)])
def test_parse_decodes_the_typescript_subject(text: str, subject: str) -> None:
    parsed = ArvoOrchestrationSubject.parse(subject)
    assert parsed.to_dict() == json.loads(text)


def test_parse_exposes_the_fields_of_the_subject() -> None:
    parsed = ArvoOrchestrationSubject.parse(VECTOR_2)
    assert parsed.name == "arvo.orc.inc"
    assert parsed.version == "0.0.1"
    assert parsed.execution_id == "11111111-1111-4111-8111-111111111111"
    assert parsed.initiator == "arvo.orc.number.modifier"
    assert parsed.domain == "test.domain"
    assert dict(parsed.meta) == {"redirectto": "arvo.orc.number.modifier"}
    assert parsed.instance_key == "arvo.orc.inc:11111111-1111-4111-8111-111111111111"


def test_new_with_a_given_execution_id_reproduces_the_typescript_vectors() -> None:
    assert (
        ArvoOrchestrationSubject.new(
            orchestrator="arvo.orc.test",
            initiator="com.test.service",
            version="0.0.1",
            execution_id="123e4567-e89b-12d3-a456-426614174000",
        )
        == VECTOR_1
    )
    assert (
        ArvoOrchestrationSubject.new(
            orchestrator="arvo.orc.inc",
            initiator="arvo.orc.number.modifier",
            version="0.0.1",
            domain="test.domain",
            meta={"redirectto": "arvo.orc.number.modifier"},
            execution_id="11111111-1111-4111-8111-111111111111",
        )
        == VECTOR_2
    )


def test_subjects_start_with_the_zlib_header_in_base64() -> None:
    assert ArvoOrchestrationSubject.new(orchestrator="arvo.orc.a", initiator="com.b.c").startswith("eJ")


def test_create_writes_non_ascii_as_raw_utf8_like_json_stringify() -> None:
    subject = ArvoOrchestrationSubject.create(valid_content(meta={"note": "café ✓"}))
    payload = zlib.decompress(base64.b64decode(subject))
    assert "café ✓".encode() in payload
    assert b"\\u" not in payload
    assert ArvoOrchestrationSubject.parse(subject).meta["note"] == "café ✓"


def test_create_serialises_the_input_object_keeping_extra_keys_and_order() -> None:
    content = valid_content()
    content["execution"] = {"id": "x", "initiator": "com.a.b", "domain": None, "attempt": "2"}
    content["custom"] = {"z": 1, "a": [1, 2]}
    subject = ArvoOrchestrationSubject.create(content)
    payload = zlib.decompress(base64.b64decode(subject)).decode()
    assert payload == json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    parsed = ArvoOrchestrationSubject.parse(subject)
    assert parsed.content["custom"]["a"] == (1, 2)
    assert parsed.to_dict() == content


def test_create_accepts_read_only_mappings_such_as_a_parsed_subjects_content() -> None:
    parsed = ArvoOrchestrationSubject.parse(VECTOR_2)
    assert ArvoOrchestrationSubject.create(parsed.content) == VECTOR_2


# ------------------------------------------------------------------------------------- new / from_parent


def test_new_defaults_to_wildcard_version_null_domain_empty_meta_and_a_fresh_uuid() -> None:
    first = ArvoOrchestrationSubject.parse(
        ArvoOrchestrationSubject.new(orchestrator="arvo.orc.a", initiator="com.b.c")
    )
    second = ArvoOrchestrationSubject.parse(
        ArvoOrchestrationSubject.new(orchestrator="arvo.orc.a", initiator="com.b.c")
    )
    assert first.version == "0.0.0"
    assert first.domain is None
    assert dict(first.meta) == {}
    assert len(first.execution_id) == 36
    assert first.execution_id != second.execution_id


def parent_subject(**meta: str) -> str:
    return ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.parent",
        initiator="com.user.app",
        version="1.0.0",
        domain="parent.domain",
        meta=meta,
        execution_id="parent-id",
    )


def test_from_parent_uses_the_parent_orchestrator_as_initiator() -> None:
    child = ArvoOrchestrationSubject.parse(
        ArvoOrchestrationSubject.from_parent(
            orchestrator="arvo.orc.child", subject=parent_subject(), version="2.0.0"
        )
    )
    assert child.name == "arvo.orc.child"
    assert child.initiator == "arvo.orc.parent"
    assert child.version == "2.0.0"
    assert child.execution_id != "parent-id"


def test_from_parent_with_no_version_uses_the_wildcard_version() -> None:
    child = ArvoOrchestrationSubject.parse(
        ArvoOrchestrationSubject.from_parent(
            orchestrator="arvo.orc.child", subject=parent_subject(), version=None
        )
    )
    assert child.version == "0.0.0"


def test_from_parent_merges_meta_with_the_child_keys_winning() -> None:
    parent = parent_subject(redirectto="com.parent.reply", keep="yes")
    child = ArvoOrchestrationSubject.parse(
        ArvoOrchestrationSubject.from_parent(
            orchestrator="arvo.orc.child", subject=parent, meta={"redirectto": "com.child.reply", "new": "1"}
        )
    )
    assert dict(child.meta) == {"redirectto": "com.child.reply", "keep": "yes", "new": "1"}


def test_from_parent_inherits_the_parent_domain_unless_one_is_given() -> None:
    inherited = ArvoOrchestrationSubject.parse(
        ArvoOrchestrationSubject.from_parent(orchestrator="arvo.orc.child", subject=parent_subject())
    )
    explicit = ArvoOrchestrationSubject.parse(
        ArvoOrchestrationSubject.from_parent(
            orchestrator="arvo.orc.child", subject=parent_subject(), domain="other"
        )
    )
    assert inherited.domain == "parent.domain"
    assert explicit.domain == "other"


def test_from_parent_uses_the_given_execution_id() -> None:
    first = ArvoOrchestrationSubject.from_parent(
        orchestrator="arvo.orc.child", subject=parent_subject(), execution_id="child-1"
    )
    again = ArvoOrchestrationSubject.from_parent(
        orchestrator="arvo.orc.child", subject=parent_subject(), execution_id="child-1"
    )
    assert first == again
    assert ArvoOrchestrationSubject.parse(first).execution_id == "child-1"


def test_from_parent_rejects_an_invalid_parent_subject() -> None:
    with pytest.raises(SubjectError, match=r"Error parsing orchestration subject"):
        ArvoOrchestrationSubject.from_parent(orchestrator="arvo.orc.child", subject="not-a-subject")


def test_from_parent_rejects_an_invalid_child_name() -> None:
    with pytest.raises(SubjectError, match=r"orchestrator.name"):
        ArvoOrchestrationSubject.from_parent(orchestrator="Child", subject=parent_subject())


# ------------------------------------------------------------------------------------ create validation


@pytest.mark.parametrize(
    ("content", "path", "message"),
    [
        (
            valid_content(orchestrator={"name": "com.test", "version": "1.0.0"}),
            "orchestrator.name",
            "Orchestrator name should be prefixed with a reverse-DNS name",
        ),
        (
            valid_content(orchestrator={"name": "arvo.orc;x.y", "version": "1.0.0"}),
            "orchestrator.name",
            "Orchestrator name should be prefixed",
        ),
        (
            valid_content(orchestrator={"name": "Arvo.orc.x", "version": "1.0.0"}),
            "orchestrator.name",
            "reverse-DNS",
        ),
        (
            valid_content(orchestrator={"name": "arvo.orc.x", "version": "1.0"}),
            "orchestrator.version",
            "semantic",
        ),
        (
            valid_content(orchestrator={"name": "arvo.orc.x", "version": 1}),
            "orchestrator.version",
            "semantic",
        ),
        (valid_content(orchestrator="arvo.orc.x"), "orchestrator", "Required object"),
        (
            valid_content(execution={"id": "", "initiator": "com.a.b", "domain": None}),
            "execution.id",
            "ID must be a non-empty string",
        ),
        (
            valid_content(execution={"id": "a;b", "initiator": "com.a.b", "domain": None}),
            "execution.id",
            "ID must not contain semicolon",
        ),
        (
            valid_content(execution={"id": "a", "initiator": "test", "domain": None}),
            "execution.initiator",
            "Orchestration initiator should be prefixed with a reverse-DNS name",
        ),
        (
            valid_content(execution={"id": "a", "initiator": "com.a.b", "domain": ""}),
            "execution.domain",
            "Domain must be non-empty string",
        ),
        (
            valid_content(execution={"id": "a", "initiator": "com.a.b", "domain": "test.TEST"}),
            "execution.domain",
            "Domain must contain only lowercase letters, numbers, and dots",
        ),
        (
            valid_content(execution={"id": "a", "initiator": "com.a.b", "domain": 5}),
            "execution.domain",
            "Domain must be null or a string",
        ),
        (
            valid_content(execution={"id": "a", "initiator": "com.a.b"}),
            "execution.domain",
            "Domain is required",
        ),
        (valid_content(execution=None), "execution", "Required object"),
        (valid_content(meta={"redirectto": 5}), "meta.redirectto", "Meta keys and values must be strings"),
        (valid_content(meta=None), "meta", "Required object"),
    ],
)
def test_create_rejects_content_that_breaks_the_schema(
    content: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(SubjectError) as caught:
        ArvoOrchestrationSubject.create(content)
    text = str(caught.value)
    assert text.startswith(CREATE_HEAD + "Invalid ArvoOrchestrationContextType: ")
    assert f"{path}: " in text
    assert message in text
    assert "\nContext -> {" in text


def test_create_accepts_the_wildcard_version() -> None:
    subject = ArvoOrchestrationSubject.create(
        valid_content(orchestrator={"name": "arvo.orc.x", "version": "0.0.0"})
    )
    assert ArvoOrchestrationSubject.parse(subject).version == "0.0.0"


def test_create_reports_every_problem_at_once() -> None:
    content = {
        "orchestrator": {"name": "bad", "version": "x"},
        "execution": {"id": "", "initiator": "bad", "domain": "BAD"},
        "meta": {},
    }
    with pytest.raises(SubjectError) as caught:
        ArvoOrchestrationSubject.create(content)
    for path in ("orchestrator.name", "orchestrator.version", "execution.id", "execution.initiator"):
        assert path in str(caught.value)
    assert "execution.domain" in str(caught.value)


def test_create_rejects_a_non_mapping() -> None:
    with pytest.raises(SubjectError, match=r"must be an object"):
        ArvoOrchestrationSubject.create(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_create_rejects_content_that_is_not_json_serialisable() -> None:
    content = valid_content()
    content["extra"] = object()
    with pytest.raises(SubjectError, match=r"not JSON-serialisable"):
        ArvoOrchestrationSubject.create(content)


def test_create_rejects_a_subject_too_long_for_parse() -> None:
    rng = random.Random(7)
    noise = "".join(rng.choice(string.ascii_letters) for _ in range(6000))
    with pytest.raises(SubjectError, match=r"more than the maximum of 4096"):
        ArvoOrchestrationSubject.create(valid_content(meta={"noise": noise}))


def test_create_rejects_json_too_large_for_parse() -> None:
    with pytest.raises(SubjectError, match=r"more than the maximum of 16384"):
        ArvoOrchestrationSubject.create(valid_content(meta={"zeros": "0" * 20000}))


def test_new_rejects_an_initiator_with_fewer_than_three_segments() -> None:
    with pytest.raises(SubjectError, match=r"execution.initiator"):
        ArvoOrchestrationSubject.new(orchestrator="arvo.orc.x", initiator="com.test")


# ---------------------------------------------------------------------------------------- parse: shape


def test_parse_reads_a_subject_without_domain_from_arvo_core_2_as_domain_none() -> None:
    subject = encode_json(
        '{"orchestrator":{"name":"arvo.orc.old","version":"0.0.1"},'
        '"execution":{"id":"old-1","initiator":"com.old.app"},"meta":{}}'
    )
    parsed = ArvoOrchestrationSubject.parse(subject)
    assert parsed.domain is None
    assert "domain" not in parsed.content["execution"]


def test_parse_tolerates_unknown_keys_and_keeps_them() -> None:
    content = valid_content(extra={"k": "v"})
    content["meta"] = {"a": "b"}
    parsed = ArvoOrchestrationSubject.parse(encode_json(json.dumps(content)))
    assert parsed.content["extra"]["k"] == "v"


def test_parse_rejects_invalid_base64() -> None:
    message = parse_error("invalid_base64_string")
    assert message.startswith(PARSE_HEAD)
    assert message.endswith("\nsubject -> invalid_base64_string")


def test_parse_rejects_compressed_json_of_the_wrong_shape() -> None:
    message = parse_error(encode_json('{"orchestrator":{"name":"x"}}'))
    assert "Invalid ArvoOrchestrationContextType: " in message
    assert "orchestrator.name" in message
    assert "execution: Required object" in message


@pytest.mark.parametrize("payload", ["[1,2]", '"text"', "null", "42"])
def test_parse_rejects_json_that_is_not_an_object(payload: str) -> None:
    assert "must be an object" in parse_error(encode_json(payload))


def test_parse_rejects_invalid_json() -> None:
    assert "not valid UTF-8 JSON" in parse_error(encode_json("{not json"))


def test_parse_rejects_invalid_utf8() -> None:
    assert "not valid UTF-8 JSON" in parse_error(encode_json(b'{"a":"\xff"}'))


def test_parse_rejects_a_non_string() -> None:
    with pytest.raises(SubjectError, match=r"must be a string, got int"):
        ArvoOrchestrationSubject.parse(42)  # type: ignore[arg-type]


def test_parse_rejects_an_empty_string() -> None:
    assert "the subject is empty" in parse_error("")


def test_parse_error_truncates_the_subject_to_120_characters() -> None:
    subject = "A" * 200
    message = parse_error(subject)
    shown = message.split("\nsubject -> ", 1)[1]
    assert len(shown) == 120
    assert shown.endswith("…")


def test_parse_checks_the_length_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: object, **_kwargs: object) -> bytes:
        raise AssertionError("decoded an oversized subject")

    monkeypatch.setattr(subject_module.base64, "b64decode", fail)
    subject = VECTOR_1 + "A" * (MAX_SUBJECT_CHARS - len(VECTOR_1) + 4)
    for lenient in (False, True):
        assert "more than the maximum of 4096" in parse_error(subject, lenient=lenient)


# --------------------------------------------------------------------------------- strict vs lenient


def non_canonical(subject: str) -> str:
    """Same bytes, but the unused low bits of the last base64 character set."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
    body = subject.rstrip("=")
    last = alphabet.index(body[-1])
    changed = alphabet[last | 1] if last & 1 == 0 else alphabet[last & ~1]
    return body[:-1] + changed + subject[len(body) :]


def test_non_canonical_base64_decodes_to_the_same_bytes() -> None:
    variant = non_canonical(VECTOR_1)
    assert variant != VECTOR_1
    assert base64.b64decode(variant) == base64.b64decode(VECTOR_1)


def test_strict_parse_rejects_non_canonical_base64() -> None:
    assert "not canonical base64" in parse_error(non_canonical(VECTOR_1))


def test_lenient_parse_accepts_non_canonical_base64() -> None:
    assert ArvoOrchestrationSubject.parse(non_canonical(VECTOR_1), lenient=True).name == "arvo.orc.test"


def url_safe(subject: str) -> str:
    return subject.replace("+", "-").replace("/", "_")


def test_vector_1_contains_characters_that_differ_in_the_url_safe_alphabet() -> None:
    assert url_safe(VECTOR_1) != VECTOR_1


@pytest.mark.parametrize(
    ("variant", "label"),
    [
        (url_safe(VECTOR_1), "url-safe alphabet"),
        (VECTOR_1.rstrip("="), "missing padding"),
        (VECTOR_1[:10] + " \n!" + VECTOR_1[10:], "junk characters"),
        (VECTOR_1 + "QUJD", "characters after the first '='"),
    ],
)
def test_lenient_parse_accepts_what_node_buffer_from_accepts(variant: str, label: str) -> None:
    assert ArvoOrchestrationSubject.parse(variant, lenient=True).to_dict() == json.loads(VECTOR_1_JSON), label
    assert "not standard base64" in parse_error(variant), label


def test_lenient_parse_drops_a_lone_trailing_base64_character_like_node() -> None:
    body = VECTOR_2  # no padding: length is a multiple of 4
    assert not body.endswith("=")
    assert ArvoOrchestrationSubject.parse(body + "A", lenient=True).name == "arvo.orc.inc"


def test_gzip_wrapper_is_accepted_only_in_lenient_mode() -> None:
    subject = base64.b64encode(gzip.compress(VECTOR_1_JSON.encode())).decode()
    assert ArvoOrchestrationSubject.parse(subject, lenient=True).name == "arvo.orc.test"
    assert "incorrect header check" in parse_error(subject)


@pytest.mark.parametrize("lenient", [False, True])
def test_raw_deflate_is_rejected_in_both_modes(lenient: bool) -> None:
    compressor = zlib.compressobj(wbits=-15)
    raw = compressor.compress(VECTOR_1_JSON.encode()) + compressor.flush()
    assert "zlib inflate failed" in parse_error(base64.b64encode(raw).decode(), lenient=lenient)


@pytest.mark.parametrize("lenient", [False, True])
def test_trailing_bytes_after_the_stream_are_rejected(lenient: bool) -> None:
    subject = base64.b64encode(zlib.compress(VECTOR_1_JSON.encode()) + b"junk").decode()
    assert "unexpected bytes after the end" in parse_error(subject, lenient=lenient)


@pytest.mark.parametrize("lenient", [False, True])
def test_a_truncated_stream_is_rejected(lenient: bool) -> None:
    subject = base64.b64encode(zlib.compress(VECTOR_1_JSON.encode())[:-6]).decode()
    assert "truncated" in parse_error(subject, lenient=lenient)


def test_is_valid_reflects_parse() -> None:
    assert ArvoOrchestrationSubject.is_valid(VECTOR_1)
    assert not ArvoOrchestrationSubject.is_valid("test-subject")
    assert not ArvoOrchestrationSubject.is_valid(url_safe(VECTOR_1))
    assert ArvoOrchestrationSubject.is_valid(url_safe(VECTOR_1), lenient=True)


# ------------------------------------------------------------------------------------ cache / immutability


def test_parse_results_are_cached_per_subject_and_mode() -> None:
    subject = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.cache", initiator="com.a.b")
    strict = ArvoOrchestrationSubject.parse(subject)
    assert ArvoOrchestrationSubject.parse(subject) is strict
    lenient = ArvoOrchestrationSubject.parse(subject, lenient=True)
    assert lenient == strict
    assert ArvoOrchestrationSubject.parse(subject, lenient=True) is lenient


def test_failed_parses_are_not_cached() -> None:
    before = subject_module._parse_cached.cache_info().currsize
    for _ in range(3):
        parse_error("bm90IGEgc3ViamVjdA==")
    assert subject_module._parse_cached.cache_info().currsize == before


def test_decode_subject_bypasses_the_cache() -> None:
    first = _decode_subject(VECTOR_1, False)
    assert _decode_subject(VECTOR_1, False) is not first
    assert first == _decode_subject(VECTOR_1, False)


def test_parsed_subject_cannot_be_modified() -> None:
    parsed = ArvoOrchestrationSubject.parse(VECTOR_2)
    with pytest.raises(AttributeError):
        parsed.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.meta["redirectto"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        parsed.content["execution"]["domain"] = "x"
    with pytest.raises(TypeError):
        parsed.content["meta"]["redirectto"] = "x"


def test_to_dict_returns_an_independent_mutable_copy() -> None:
    parsed = ArvoOrchestrationSubject.parse(VECTOR_2)
    copy = parsed.to_dict()
    copy["execution"]["domain"] = "changed"
    copy["meta"]["redirectto"] = "changed"
    again = ArvoOrchestrationSubject.parse(VECTOR_2)
    assert again.domain == "test.domain"
    assert again.to_dict()["meta"]["redirectto"] == "arvo.orc.number.modifier"


def test_parsed_subject_is_the_public_result_type() -> None:
    assert isinstance(ArvoOrchestrationSubject.parse(VECTOR_1), ParsedSubject)


def test_parsed_subjects_are_hashable_and_equal_by_content() -> None:
    first = _decode_subject(VECTOR_2, False)
    second = _decode_subject(VECTOR_2, True)
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, ArvoOrchestrationSubject.parse(VECTOR_1)}) == 2
