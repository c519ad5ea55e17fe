"""Subject behaviour pinned where mutation testing (``make mutation``) found the suite blind.

The exact texts of the errors (every schema rule names its path, rule and offending value; every parse
failure its cause and the subject), the size bounds at their boundaries (16,384 inflated bytes, 4,096
characters, the 2,000-character context and 120-character subject previews), and the Node-compatible
details of lenient decoding.
"""

from __future__ import annotations

import base64
import random
import string
import zlib
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from service.arvo.errors import SubjectError, truncate_value
from service.arvo.subject import (
    MAX_SUBJECT_CHARS,
    MAX_SUBJECT_JSON_BYTES,
    ArvoOrchestrationSubject,
)

VECTOR_1_JSON = (
    '{"orchestrator":{"name":"arvo.orc.test","version":"0.0.1"},"execution":{"id":'
    '"123e4567-e89b-12d3-a456-426614174000","initiator":"com.test.service","domain":null},"meta":{}}'
)
VECTOR_1 = (
    "eJwlzdEKwyAMheF3yXUVtc5ufRungQWqgtoyEN99obtMPjj/gFLDB1uvvpcK+4DsE8IOvl5FssnOCAtcWBuVzKKkkhrmAvjFcPb7"
    "OYAikzYr2ofbBD5fb6FNXIXnW1jjnLZ6s0op3qJMnf49CCXdCdmwXhSQOZbkiUfzeRycSdg9F+b8AWonNj0="
)
VECTOR_1_CONTENT = orjson.loads(VECTOR_1_JSON)

PARSE_HEAD = "Error parsing orchestration subject string to the context.\nError -> "
CREATE_HEAD = "Error creating orchestration subject string from the provided context.\nError -> "
SHAPE = "Invalid ArvoOrchestrationContextType: "


def valid_content(**overrides: Any) -> dict[str, Any]:
    content: dict[str, Any] = {
        "orchestrator": {"name": "arvo.orc.test", "version": "1.2.3"},
        "execution": {"id": "exec-1", "initiator": "com.test.service", "domain": None},
        "meta": {},
    }
    content.update(overrides)
    return content


def execution(**fields: Any) -> dict[str, Any]:
    return {"id": "exec-1", "initiator": "com.test.service", "domain": None, **fields}


def create_error(content: Any) -> str:
    with pytest.raises(SubjectError) as caught:
        ArvoOrchestrationSubject.create(content)
    return str(caught.value)


def parse_error(subject: Any, *, lenient: bool = False) -> str:
    with pytest.raises(SubjectError) as caught:
        ArvoOrchestrationSubject.parse(subject, lenient=lenient)
    return str(caught.value)


def problem(path: str, message: str, rule: str, value: object) -> str:
    return f"{path}: {message} (rule={rule}, value={truncate_value(value)})"


def indented(content: Any) -> str:
    return orjson.dumps(content, option=orjson.OPT_INDENT_2).decode()


def preview(subject: str) -> str:
    """The subject as a parse error shows it: cut to 120 characters."""
    return subject if len(subject) <= 120 else subject[:119] + "…"


def encode(payload: bytes) -> str:
    return base64.b64encode(zlib.compress(payload)).decode("ascii")


# ------------------------------------------------------------------------------- schema problems


NAME_MESSAGE = "Orchestrator name should be prefixed with a reverse-DNS name"
INITIATOR_MESSAGE = "Orchestration initiator should be prefixed with a reverse-DNS name"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            ["not", "an", "object"],
            problem("(root)", "The subject content must be an object", "object", ["not", "an", "object"]),
        ),
        (
            valid_content(orchestrator="arvo.orc.x"),
            problem("orchestrator", "Required object", "object", "arvo.orc.x"),
        ),
        (
            valid_content(orchestrator={"name": "bad", "version": "1.0.0"}),
            problem("orchestrator.name", NAME_MESSAGE, "type-format", "bad"),
        ),
        (
            valid_content(orchestrator={"name": "arvo.orc.x", "version": "1.0"}),
            problem(
                "orchestrator.version", "Invalid version format of the semantic version", "semver", "1.0"
            ),
        ),
        (valid_content(execution="exec-1"), problem("execution", "Required object", "object", "exec-1")),
        (
            valid_content(execution=execution(id="")),
            problem("execution.id", "ID must be a non-empty string", "non-empty", ""),
        ),
        (
            valid_content(execution=execution(id="a;b")),
            problem("execution.id", "ID must not contain semicolon", "no-semicolon", "a;b"),
        ),
        (
            valid_content(execution=execution(initiator="test")),
            problem("execution.initiator", INITIATOR_MESSAGE, "type-format", "test"),
        ),
        (
            valid_content(execution=execution(domain=5)),
            problem("execution.domain", "Domain must be null or a string", "string", 5),
        ),
        (
            valid_content(execution=execution(domain="")),
            problem("execution.domain", "Domain must be non-empty string", "non-empty", ""),
        ),
        (
            valid_content(execution=execution(domain="test.TEST")),
            problem(
                "execution.domain",
                "Domain must contain only lowercase letters, numbers, and dots",
                "domain-format",
                "test.TEST",
            ),
        ),
        (
            valid_content(execution={"id": "a", "initiator": "com.a.b"}),
            problem("execution.domain", "Domain is required (null or a domain string)", "required", None),
        ),
        (valid_content(meta="m"), problem("meta", "Required object of string values", "object", "m")),
        (
            valid_content(meta={"redirectto": 5}),
            problem("meta.redirectto", "Meta keys and values must be strings", "string", 5),
        ),
    ],
)
def test_each_schema_problem_names_its_path_message_rule_and_the_offending_value(
    content: Any, expected: str
) -> None:
    assert create_error(content).startswith(f"{CREATE_HEAD}{SHAPE}{expected}\nContext -> ")


def test_several_schema_problems_are_listed_in_order_separated_by_semicolons() -> None:
    content = valid_content(orchestrator={"name": "bad", "version": "x"})
    expected = "; ".join(
        [
            problem("orchestrator.name", NAME_MESSAGE, "type-format", "bad"),
            problem("orchestrator.version", "Invalid version format of the semantic version", "semver", "x"),
        ]
    )
    assert create_error(content).startswith(f"{CREATE_HEAD}{SHAPE}{expected}\nContext -> ")


def test_parse_reports_a_schema_problem_of_the_decoded_json_like_create() -> None:
    subject = encode(orjson.dumps(valid_content(execution=execution(id="a;b"))))
    expected = problem("execution.id", "ID must not contain semicolon", "no-semicolon", "a;b")
    assert parse_error(subject) == f"{PARSE_HEAD}{SHAPE}{expected}\nsubject -> {preview(subject)}"


# --------------------------------------------------------------------------- create: the context


def test_create_error_shows_the_content_as_indented_json_read_only_mappings_included() -> None:
    content = valid_content(
        orchestrator={"name": "bad", "version": "1.0.0"}, meta=MappingProxyType({"redirectto": "com.a.b"})
    )
    plain = {**content, "meta": {"redirectto": "com.a.b"}}
    assert create_error(content).endswith(f"\nContext -> {indented(plain)}")


def test_create_error_shows_the_repr_of_content_that_is_not_json() -> None:
    content = valid_content(extra=object())
    assert create_error(content) == (
        f"{CREATE_HEAD}content is not JSON-serialisable: Type is not JSON serializable: object"
        f"\nContext -> {content!r}"
    )


def invalid_content_with_context_of(length: int) -> dict[str, Any]:
    content = valid_content(orchestrator={"name": "bad", "version": "1.0.0"}, meta={"pad": ""})
    content["meta"]["pad"] = "p" * (length - len(indented(content)))
    assert len(indented(content)) == length
    return content


def test_create_error_context_of_2000_characters_is_shown_whole() -> None:
    content = invalid_content_with_context_of(2000)
    assert create_error(content).endswith(f"\nContext -> {indented(content)}")


def test_create_error_context_longer_than_2000_characters_is_cut_to_2000_with_an_ellipsis() -> None:
    content = invalid_content_with_context_of(2001)
    shown = create_error(content).split("\nContext -> ", 1)[1]
    assert shown == indented(content)[:1999] + "…"


# ------------------------------------------------------------------------------------ size bounds


def content_with_json_of(size: int) -> dict[str, Any]:
    content = valid_content(meta={"pad": ""})
    content["meta"]["pad"] = "a" * (size - len(orjson.dumps(content)))
    assert len(orjson.dumps(content)) == size
    return content


def test_a_subject_inflating_to_exactly_16384_bytes_is_created_and_parsed() -> None:
    content = content_with_json_of(MAX_SUBJECT_JSON_BYTES)
    subject = ArvoOrchestrationSubject.create(content)
    assert ArvoOrchestrationSubject.parse(subject).to_dict() == content
    assert ArvoOrchestrationSubject.parse(subject, lenient=True).to_dict() == content


def test_content_of_16385_json_bytes_is_rejected_by_create_and_its_subject_by_parse() -> None:
    content = content_with_json_of(MAX_SUBJECT_JSON_BYTES + 1)
    assert create_error(content).startswith(
        f"{CREATE_HEAD}the JSON is 16385 bytes, more than the maximum of 16384\nContext -> {{\n"
    )
    subject = encode(orjson.dumps(content))
    for lenient in (False, True):
        assert parse_error(subject, lenient=lenient) == (
            f"{PARSE_HEAD}the decompressed subject exceeds the maximum of 16384 bytes\nsubject -> "
            + preview(subject)
        )


def unfinished_stream(size: int) -> str:
    """A zlib stream of ``size`` bytes that is flushed but never ended."""
    compressor = zlib.compressobj()
    return base64.b64encode(compressor.compress(b"a" * size) + compressor.flush(zlib.Z_SYNC_FLUSH)).decode()


def test_an_unfinished_stream_reaching_16384_bytes_is_reported_as_too_large() -> None:
    # Inflation stops at the bound: whether the stream would have ended is not looked at.
    cause = parse_error(unfinished_stream(MAX_SUBJECT_JSON_BYTES)).split("\n")[1]
    assert cause == "Error -> the decompressed subject exceeds the maximum of 16384 bytes"
    cause = parse_error(unfinished_stream(MAX_SUBJECT_JSON_BYTES - 1)).split("\n")[1]
    assert cause == "Error -> the compressed stream is truncated"


def content_with_subject_of(length: int) -> dict[str, Any]:
    """Content whose subject is ``length`` characters: incompressible meta of a searched length."""
    rng = random.Random(11)
    noise = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(4000))
    for size in range(2500, 4000):
        content = valid_content(meta={"noise": noise[:size]})
        if len(encode(orjson.dumps(content))) == length:
            return content
    raise AssertionError(f"no content encodes to {length} characters")


def test_a_subject_of_exactly_4096_characters_is_created_and_parsed() -> None:
    content = content_with_subject_of(MAX_SUBJECT_CHARS)
    subject = ArvoOrchestrationSubject.create(content)
    assert len(subject) == MAX_SUBJECT_CHARS
    assert ArvoOrchestrationSubject.parse(subject).to_dict() == content


def test_a_subject_of_4100_characters_is_rejected_by_create_with_its_context() -> None:
    content = content_with_subject_of(MAX_SUBJECT_CHARS + 4)
    assert create_error(content).startswith(
        f"{CREATE_HEAD}the subject is 4100 characters, more than the maximum of 4096\nContext -> {{\n"
    )


def test_a_lenient_subject_of_exactly_4096_characters_is_not_rejected_for_its_length() -> None:
    subject = VECTOR_1 + "A" * (MAX_SUBJECT_CHARS - len(VECTOR_1))  # ignored: after the first '='
    assert ArvoOrchestrationSubject.parse(subject, lenient=True).to_dict() == VECTOR_1_CONTENT
    longer = subject + "A"
    assert parse_error(longer, lenient=True) == (
        f"{PARSE_HEAD}the subject is 4097 characters long, more than the maximum of 4096\nsubject -> "
        + preview(longer)
    )


# ----------------------------------------------------------------------------- parse: exact errors


def non_canonical(subject: str) -> str:
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
    body = subject.rstrip("=")
    last = alphabet.index(body[-1])
    return body[:-1] + alphabet[last ^ 1] + subject[len(body) :]


COMPRESSED_1 = zlib.compress(VECTOR_1_JSON.encode())


@pytest.mark.parametrize(
    ("subject", "cause"),
    [
        ("", "the subject is empty"),
        (
            "abc",
            "the subject is not standard base64 (alphabet A-Z a-z 0-9 + / with '=' padding, "
            "length a multiple of 4)",
        ),
        (
            non_canonical(VECTOR_1),
            "the subject is not canonical base64 (unused bits of the last character are not zero)",
        ),
        (base64.b64encode(COMPRESSED_1[:-6]).decode(), "the compressed stream is truncated"),
        (
            base64.b64encode(COMPRESSED_1 + b"junk").decode(),
            "unexpected bytes after the end of the compressed stream",
        ),
    ],
)
def test_parse_errors_state_the_cause_and_the_subject(subject: str, cause: str) -> None:
    assert parse_error(subject) == f"{PARSE_HEAD}{cause}\nsubject -> {preview(subject)}"


def test_parse_of_a_non_string_shows_its_repr_as_the_subject() -> None:
    assert parse_error(42) == f"{PARSE_HEAD}the subject must be a string, got int\nsubject -> 42"


def test_a_subject_of_exactly_120_characters_is_shown_whole_in_the_error() -> None:
    subject = "A" * 120
    assert parse_error(subject).endswith(f"\nsubject -> {subject}")


def test_parse_is_strict_unless_asked_to_be_lenient() -> None:
    url_safe = VECTOR_1.replace("+", "-").replace("/", "_")
    with pytest.raises(SubjectError, match="not standard base64"):
        ArvoOrchestrationSubject.parse(url_safe)
    assert not ArvoOrchestrationSubject.is_valid(url_safe)


# ------------------------------------------------------------------------- lenient: Node's reading


def test_lenient_parse_reads_a_non_ascii_character_as_its_low_8_bits_like_node() -> None:
    index = 20
    widened = chr(0x100 | ord(VECTOR_1[index]))  # e.g. "D" (0x44) becomes "ń" (0x144)
    subject = VECTOR_1[:index] + widened + VECTOR_1[index + 1 :]
    assert ArvoOrchestrationSubject.parse(subject, lenient=True).to_dict() == VECTOR_1_CONTENT


def test_lenient_parse_skips_a_lone_surrogate_like_any_junk_character() -> None:
    subject = VECTOR_1[:10] + "\ud800" + VECTOR_1[10:]  # code unit 0xD800: low byte 0, not base64
    assert ArvoOrchestrationSubject.parse(subject, lenient=True).to_dict() == VECTOR_1_CONTENT


def test_lenient_parse_stops_at_the_first_padding_character() -> None:
    assert ArvoOrchestrationSubject.parse(VECTOR_1 + "QQ==", lenient=True).to_dict() == VECTOR_1_CONTENT


def test_lenient_parse_of_a_subject_starting_with_padding_decodes_nothing() -> None:
    subject = "=" + VECTOR_1
    assert parse_error(subject, lenient=True).split("\n")[1] == "Error -> the compressed stream is truncated"
