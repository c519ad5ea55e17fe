"""Event ids (spec 1.10) and timestamps (spec 1.11)."""

from __future__ import annotations

import base64
import re
import uuid
import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.arvo.event import (
    MAX_EVENT_ID_CHARS,
    EventIdSpec,
    create_arvo_event_id,
    create_timestamp,
    parse_arvo_event_id,
)
from service.arvo.validation import is_valid_datetime

VECTOR_UUID = "00000000-0000-4000-8000-000000000000"
VECTOR_ID = "eJyrViotzUxRslIygAJdMGECIixgXBhQ0lEqS8wpTQUqTy4tLsnP1c0vSs7QNVSqBQBaQxIP"
TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:00\Z")


def encode(document: bytes) -> str:
    return base64.b64encode(zlib.compress(document)).decode("ascii")


# --------------------------------------------------------------------------------------------------
# create_arvo_event_id


def test_arvo_managed_id_matches_the_verified_test_vector() -> None:
    spec = EventIdSpec(deduplication="ARVO_MANAGED", value="custom-orch-1")
    assert create_arvo_event_id(spec, uuid=VECTOR_UUID) == VECTOR_ID


def test_arvo_managed_id_decodes_to_uuid_and_value() -> None:
    assert parse_arvo_event_id(VECTOR_ID) == ({"uuid": VECTOR_UUID, "value": "custom-orch-1"}, None)


def test_arvo_managed_id_is_unique_per_call() -> None:
    spec = EventIdSpec(deduplication="ARVO_MANAGED", value="same")
    first, second = create_arvo_event_id(spec), create_arvo_event_id(spec)
    assert first != second
    decoded, _ = parse_arvo_event_id(first)
    assert isinstance(decoded, dict)
    assert uuid.UUID(decoded["uuid"]).version == 4


def test_arvo_managed_id_trims_the_value() -> None:
    spec = EventIdSpec(deduplication="ARVO_MANAGED", value="  padded \n")
    decoded, error = parse_arvo_event_id(create_arvo_event_id(spec, uuid=VECTOR_UUID))
    assert error is None
    assert decoded == {"uuid": VECTOR_UUID, "value": "padded"}


def test_arvo_managed_id_json_is_compact_utf8_like_json_stringify() -> None:
    spec = EventIdSpec(deduplication="ARVO_MANAGED", value='é "q" \\ \x01')
    identifier = create_arvo_event_id(spec, uuid=VECTOR_UUID)
    document = zlib.decompress(base64.b64decode(identifier))
    assert document == f'{{"uuid":"{VECTOR_UUID}","value":"é \\"q\\" \\\\ \\u0001"}}'.encode()


def test_arvo_managed_id_escapes_lone_surrogates_like_json_stringify() -> None:
    spec = EventIdSpec(deduplication="ARVO_MANAGED", value="a\ud800")
    document = zlib.decompress(base64.b64decode(create_arvo_event_id(spec, uuid=VECTOR_UUID)))
    assert document.endswith(b'"value":"a\\ud800"}')


def test_arvo_managed_id_uses_zlib_level_6_header() -> None:
    raw = base64.b64decode(VECTOR_ID)
    assert raw[:2] == b"\x78\x9c"
    assert VECTOR_ID.startswith("eJ")


def test_developer_managed_id_is_the_trimmed_value() -> None:
    spec = EventIdSpec(deduplication="DEVELOPER_MANAGED", value="  custom-id  ")
    assert create_arvo_event_id(spec) == "custom-id"


def test_trimming_follows_javascript_whitespace() -> None:
    bom_padded = EventIdSpec(deduplication="DEVELOPER_MANAGED", value="\ufeff\u3000id\u2028")
    assert create_arvo_event_id(bom_padded) == "id"
    # \x1c is whitespace for Python's str.strip() but not for JavaScript's trim().
    separator = EventIdSpec(deduplication="DEVELOPER_MANAGED", value="\x1cid")
    assert create_arvo_event_id(separator) == "\x1cid"


@pytest.mark.parametrize("deduplication", ["ARVO_MANAGED", "DEVELOPER_MANAGED"])
@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_empty_or_blank_value_gives_a_uuid(deduplication: str, value: str) -> None:
    spec = EventIdSpec(deduplication=deduplication, value=value)  # type: ignore[arg-type]
    assert uuid.UUID(create_arvo_event_id(spec)).version == 4


def test_no_spec_gives_a_random_uuid4() -> None:
    identifiers = {create_arvo_event_id() for _ in range(100)}
    assert len(identifiers) == 100
    for identifier in identifiers:
        parsed = uuid.UUID(identifier)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == identifier


def test_uuid_argument_makes_ids_deterministic() -> None:
    assert create_arvo_event_id(uuid=VECTOR_UUID) == VECTOR_UUID
    blank = EventIdSpec(deduplication="ARVO_MANAGED", value=" ")
    assert create_arvo_event_id(blank, uuid=VECTOR_UUID) == VECTOR_UUID


def test_unknown_deduplication_gives_a_uuid() -> None:
    spec = EventIdSpec(deduplication="OTHER", value="x")  # type: ignore[arg-type]
    assert create_arvo_event_id(spec, uuid=VECTOR_UUID) == VECTOR_UUID


def test_event_id_spec_is_frozen() -> None:
    spec = EventIdSpec(deduplication="ARVO_MANAGED", value="x")
    with pytest.raises(AttributeError):
        spec.value = "y"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# parse_arvo_event_id: bounded and never raising


def assert_parse_fails(identifier: object, message: str) -> None:
    result, error = parse_arvo_event_id(identifier)  # type: ignore[arg-type]
    assert result is identifier
    assert error is not None
    assert message in str(error)


def test_parse_of_a_plain_uuid_fails_without_raising() -> None:
    assert_parse_fails("6b1c0000-0000-4000-8000-000000000001", "not standard padded base64")


def test_parse_rejects_ids_above_the_length_limit_before_decoding() -> None:
    assert_parse_fails("A" * (MAX_EVENT_ID_CHARS + 4), "above the limit")


def test_parse_rejects_url_safe_unpadded_and_junk_base64() -> None:
    assert_parse_fails(VECTOR_ID.replace("+", "-").replace("/", "_") + "-", "not standard padded base64")
    assert_parse_fails(VECTOR_ID[:-1], "not standard padded base64")
    assert_parse_fails(base64.b64encode(b"ab").decode().rstrip("="), "not standard padded base64")
    assert_parse_fails(VECTOR_ID[:8] + " " + VECTOR_ID[8:], "not standard padded base64")


def test_parse_rejects_non_canonical_base64() -> None:
    # Same bytes, but the unused low bits of the last character are set.
    canonical = base64.b64encode(b"\x78\x9c\x01").decode()
    assert canonical == "eJwB"
    sloppy = base64.b64encode(b"\x78\x9c").decode()  # "eJw="
    assert_parse_fails(sloppy[:-2] + "x=", "not canonical base64")


def test_parse_rejects_data_that_is_not_zlib() -> None:
    assert_parse_fails(base64.b64encode(b"plain text!!").decode(), "not zlib data")


def test_parse_rejects_raw_deflate_and_gzip_wrappers() -> None:
    document = b'{"uuid":"u","value":"v"}'
    raw_deflate = zlib.compressobj(wbits=-15)
    raw = raw_deflate.compress(document) + raw_deflate.flush()
    assert_parse_fails(base64.b64encode(raw).decode(), "not zlib data")
    gzip = zlib.compressobj(wbits=31)
    gzipped = gzip.compress(document) + gzip.flush()
    assert_parse_fails(base64.b64encode(gzipped).decode(), "not zlib data")


def test_parse_rejects_truncated_and_trailing_data() -> None:
    compressed = zlib.compress(b'{"uuid":"u","value":"v"}')
    assert_parse_fails(base64.b64encode(compressed[:-3]).decode(), "one complete zlib stream")
    assert_parse_fails(base64.b64encode(compressed + b"xyz").decode(), "one complete zlib stream")


def test_parse_bounds_decompression_of_a_zip_bomb() -> None:
    bomb = zlib.compress(b'{"uuid":"u","value":"' + b"a" * 1_000_000 + b'"}', 9)
    identifier = base64.b64encode(bomb).decode()
    assert len(identifier) <= MAX_EVENT_ID_CHARS
    assert_parse_fails(identifier, "at most 16384 bytes")


def test_parse_rejects_content_that_is_not_json() -> None:
    assert_parse_fails(encode(b"not json"), "does not hold JSON")


@pytest.mark.parametrize(
    "document",
    [b"[]", b'{"uuid":"u"}', b'{"value":"v"}', b'{"uuid":1,"value":"v"}', b'{"uuid":"u","value":null}'],
)
def test_parse_rejects_json_of_the_wrong_shape(document: bytes) -> None:
    assert_parse_fails(encode(document), 'string "uuid" and "value"')


def test_parse_keeps_only_uuid_and_value() -> None:
    decoded, error = parse_arvo_event_id(encode(b'{"uuid":"u","value":"v","extra":1}'))
    assert error is None
    assert decoded == {"uuid": "u", "value": "v"}


def test_parse_of_a_non_string_returns_an_error() -> None:
    assert_parse_fails(None, "must be a string")
    assert_parse_fails(12, "must be a string")


# --------------------------------------------------------------------------------------------------
# create_timestamp


def test_timestamp_is_true_utc_with_millisecond_precision() -> None:
    before = datetime.now(UTC)
    stamp = create_timestamp()
    after = datetime.now(UTC)
    assert TIMESTAMP_RE.match(stamp)
    assert stamp.endswith("+00:00")
    moment = datetime.fromisoformat(stamp)
    assert before - timedelta(milliseconds=1) <= moment <= after


def test_timestamp_is_valid_for_the_event_time_rule() -> None:
    assert is_valid_datetime(create_timestamp())
    assert is_valid_datetime(create_timestamp(-11))


def test_timestamp_of_a_given_instant_truncates_to_milliseconds() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)
    assert create_timestamp(now=now) == "2025-01-02T03:04:05.678+00:00"


def test_timestamp_converts_an_aware_instant_to_utc() -> None:
    sydney = timezone(timedelta(hours=11))
    now = datetime(2026, 11, 24, 2, 35, 8, 308000, tzinfo=sydney)
    assert create_timestamp(now=now) == "2026-11-23T15:35:08.308+00:00"


def test_timestamp_treats_a_naive_instant_as_utc() -> None:
    assert create_timestamp(now=datetime(2025, 1, 1)) == "2025-01-01T00:00:00.000+00:00"


def test_timestamp_with_an_offset_shows_local_time_at_that_offset() -> None:
    now = datetime(2025, 1, 1, 22, 30, tzinfo=UTC)
    assert create_timestamp(5, now=now) == "2025-01-02T03:30:00.000+05:00"
    assert create_timestamp(-3, now=now) == "2025-01-01T19:30:00.000-03:00"


def test_timestamp_with_an_offset_from_the_clock_is_the_same_instant() -> None:
    stamp = create_timestamp(10)
    assert stamp.endswith("+10:00")
    assert abs(datetime.fromisoformat(stamp) - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize("offset", [24, -24, 1.5, True, "1"])
def test_timestamp_rejects_offsets_outside_whole_hours_minus_23_to_23(offset: object) -> None:
    with pytest.raises(ValueError, match="offset_hours"):
        create_timestamp(offset)  # type: ignore[arg-type]
