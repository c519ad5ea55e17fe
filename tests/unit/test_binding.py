from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.arvo.event import ArvoEvent, create_arvo_event
from service.runtime.binding import (
    STRUCTURED_CONTENT_TYPE,
    DecodeReason,
    RecordDecodeError,
    decode_record,
    encode_event,
    header_value,
)

MAX = 64 * 1024
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ALL_REASONS = {
    DecodeReason.OVERSIZED,
    DecodeReason.NOT_JSON,
    DecodeReason.NOT_CLOUDEVENT,
    DecodeReason.UNSUPPORTED_FORMAT,
    DecodeReason.INVALID_EVENT,
}


def sample_event(**overrides: object) -> ArvoEvent:
    values: dict[str, object] = {
        "source": "com.test.producer",
        "type": "com.test.echo",
        "subject": "subject-1",
        "data": {"n": 1, "text": "héllo"},
        "to": "com.test.echo",
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=1",
        "executionunits": 2.5,
        "extensions": {"tenant": "acme"},
    }
    values.update(overrides)
    return create_arvo_event(**values)  # type: ignore[arg-type]


def binary_headers(event: ArvoEvent) -> list[tuple[str, bytes | None]]:
    headers: list[tuple[str, bytes | None]] = [("content-type", b"application/json")]
    for name, value in event.to_dict().items():
        if name in ("data", "datacontenttype") or value is None:
            continue
        headers.append((f"ce_{name}", str(value).encode()))
    return headers


def test_structured_encoding_uses_cloudevents_json_and_the_subject_as_key() -> None:
    event = sample_event()
    message = encode_event(event)
    assert message.key == b"subject-1"
    assert message.value == event.to_json()
    headers = dict(message.headers)
    assert headers["content-type"] == STRUCTURED_CONTENT_TYPE.encode()
    assert headers["content-type"].startswith(b"application/cloudevents")
    assert headers["ce_id"] == event.id.encode()
    assert headers["ce_type"] == b"com.test.echo"
    assert headers["ce_source"] == b"com.test.producer"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["traceparent"] == TRACEPARENT.encode()
    assert headers["tracestate"] == b"vendor=1"


def test_trace_headers_are_omitted_when_the_event_has_none() -> None:
    message = encode_event(sample_event(traceparent=None, tracestate=None))
    names = [name for name, _ in message.headers]
    assert "traceparent" not in names
    assert "tracestate" not in names


def test_structured_round_trip_is_lossless() -> None:
    event = sample_event()
    message = encode_event(event)
    decoded = decode_record(message.value, message.headers, max_bytes=MAX)
    assert decoded == event
    assert decoded.extensions == {"tenant": "acme"}


def test_structured_value_without_content_type_is_accepted() -> None:
    event = sample_event()
    assert decode_record(event.to_json(), [], max_bytes=MAX) == event


def test_content_type_match_is_case_insensitive() -> None:
    event = sample_event()
    headers = [("content-type", b"Application/CloudEvents+JSON")]
    assert decode_record(event.to_json(), headers, max_bytes=MAX) == event


def test_binary_mode_reads_attributes_from_ce_headers() -> None:
    event = sample_event(executionunits=3)
    decoded = decode_record(orjson.dumps(event.data), binary_headers(event), max_bytes=MAX)
    assert decoded.id == event.id
    assert decoded.type == event.type
    assert decoded.subject == event.subject
    assert decoded.to == event.to
    assert decoded.traceparent == TRACEPARENT
    assert decoded.data == event.data
    assert decoded.datacontenttype == "application/json"
    assert decoded.executionunits == 3
    assert isinstance(decoded.executionunits, int)
    assert decoded.extensions == {"tenant": "acme"}


def test_binary_mode_parses_fractional_execution_units_as_a_number() -> None:
    event = sample_event(executionunits=0.25)
    decoded = decode_record(orjson.dumps(event.data), binary_headers(event), max_bytes=MAX)
    assert decoded.executionunits == 0.25


@pytest.mark.parametrize("raw", [b"lots", b"Infinity", b"true", b"[1]"])
def test_binary_mode_rejects_execution_units_that_are_not_json_numbers(raw: bytes) -> None:
    event = sample_event(executionunits=None)
    headers = [*binary_headers(event), ("ce_executionunits", raw)]
    with pytest.raises(RecordDecodeError) as caught:
        decode_record(orjson.dumps(event.data), headers, max_bytes=MAX)
    assert caught.value.reason == DecodeReason.INVALID_EVENT
    assert "ce_executionunits" in caught.value.message


def test_binary_mode_with_non_json_data_is_not_json() -> None:
    event = sample_event()
    headers = [("content-type", b"application/avro"), *binary_headers(event)[1:]]
    with pytest.raises(RecordDecodeError) as caught:
        decode_record(b"\x00\x01", headers, max_bytes=MAX)
    assert caught.value.reason == DecodeReason.NOT_JSON


def test_oversized_records_are_rejected_before_parsing() -> None:
    with pytest.raises(RecordDecodeError) as caught:
        decode_record(b"{" * 2_000, [], max_bytes=1_024)
    assert caught.value.reason == DecodeReason.OVERSIZED
    assert "limit is 1024" in caught.value.message


def test_headers_count_towards_the_size_limit() -> None:
    event = sample_event()
    headers = [*encode_event(event).headers, ("padding", b"x" * MAX)]
    with pytest.raises(RecordDecodeError) as caught:
        decode_record(event.to_json(), headers, max_bytes=MAX)
    assert caught.value.reason == DecodeReason.OVERSIZED


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"not json at all", [], DecodeReason.NOT_JSON),
        (b"\xff\xfe\x00", [("content-type", STRUCTURED_CONTENT_TYPE.encode())], DecodeReason.NOT_JSON),
        (b"[1, 2, 3]", [], DecodeReason.NOT_CLOUDEVENT),
        (b'{"hello": "world"}', [], DecodeReason.NOT_CLOUDEVENT),
        (b"", [("content-type", STRUCTURED_CONTENT_TYPE.encode())], DecodeReason.NOT_CLOUDEVENT),
        (None, [], DecodeReason.NOT_CLOUDEVENT),
        (b'{"a": 1}', [("content-type", b"application/json")], DecodeReason.NOT_CLOUDEVENT),
        (b"{}", [("content-type", b"application/cloudevents+avro")], DecodeReason.UNSUPPORTED_FORMAT),
        (b'{"specversion": "1.0", "id": "x"}', [], DecodeReason.INVALID_EVENT),
        (b'{"specversion": "0.3"}', [], DecodeReason.INVALID_EVENT),
    ],
)
def test_poison_records_raise_decode_errors_with_a_reason(
    value: bytes | None, headers: list[tuple[str, bytes | None]], reason: str
) -> None:
    with pytest.raises(RecordDecodeError) as caught:
        decode_record(value, headers, max_bytes=MAX)
    assert caught.value.reason == reason


def test_invalid_arvo_event_message_names_the_problem() -> None:
    document = orjson.loads(sample_event().to_json())
    document["type"] = "Not A Type"
    with pytest.raises(RecordDecodeError) as caught:
        decode_record(orjson.dumps(document), [], max_bytes=MAX)
    assert caught.value.reason == DecodeReason.INVALID_EVENT
    assert "type" in caught.value.message


def test_decode_error_messages_are_truncated() -> None:
    error = RecordDecodeError("not_json", "x" * 5_000)
    assert len(error.message) <= 301


def test_last_header_of_a_name_wins() -> None:
    assert header_value([("a", b"1"), ("b", b"2"), ("a", b"3")], "a") == b"3"
    assert header_value([("a", None)], "a") is None
    assert header_value([], "a") is None


def _dumps(value: object) -> bytes:
    # The standard library writes huge integers exactly and NaN/Infinity as (invalid JSON) tokens.
    return json.dumps(value).encode()


header_names = st.one_of(
    st.sampled_from(
        [
            "content-type",
            "ce_id",
            "ce_type",
            "ce_source",
            "ce_specversion",
            "ce_executionunits",
            "ce_data",
            "ce_subject",
            "ce_time",
            "traceparent",
        ]
    ),
    st.text(max_size=12),
)
header_values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.sampled_from([b"application/cloudevents+json", b"application/json", b"1.0", b"NaN", b"1e999"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
record_values = st.one_of(
    st.none(),
    st.binary(max_size=200),
    json_values.map(_dumps),
    st.dictionaries(
        st.sampled_from(["specversion", "id", "type", "source", "subject", "data", "time", "to", "domain"]),
        json_values,
    ).map(_dumps),
)


@settings(max_examples=400, deadline=None)
@given(value=record_values, headers=st.lists(st.tuples(header_names, header_values), max_size=6))
def test_arbitrary_records_decode_or_raise_only_record_decode_error(
    value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    outcome: ArvoEvent | str
    try:
        outcome = decode_record(value, headers, max_bytes=512)
    except RecordDecodeError as error:
        outcome = error.reason
    assert isinstance(outcome, ArvoEvent) or outcome in ALL_REASONS


@settings(max_examples=100, deadline=None)
@given(
    data=st.dictionaries(st.text(max_size=8), st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8)),
    subject=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=30),
)
def test_structured_round_trip_property(data: dict[str, object], subject: str) -> None:
    event = sample_event(data=data, subject=subject)
    message = encode_event(event)
    assert message.key == subject.encode()
    assert decode_record(message.value, message.headers, max_bytes=MAX) == event
