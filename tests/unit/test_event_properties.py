"""Property tests: valid events round-trip, and no input makes decoding raise anything unexpected."""

from __future__ import annotations

import base64
import contextlib
import zlib
from datetime import UTC
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.arvo.errors import ArvoEventValidationError
from service.arvo.event import (
    RESERVED_EXTENSION_KEYS,
    ArvoEvent,
    EventIdSpec,
    create_arvo_event,
    create_arvo_event_id,
    create_timestamp,
    parse_arvo_event_id,
)
from service.arvo.uri import URIError, decode_uri, encode_uri, is_uri_valid
from service.arvo.validation import MAX_SAFE_INTEGER

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=400, deadline=None)

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
non_empty_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)
uri = non_empty_text.map(encode_uri)
event_type = st.from_regex(r"[a-z0-9]{1,6}(\.[a-z0-9]{1,6}){2,4}", fullmatch=True)
domain = st.from_regex(r"[a-z0-9.]{1,12}", fullmatch=True)
safe_int = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
finite = st.floats(allow_nan=False, allow_infinity=False)
number = safe_int | finite
json_value = st.recursive(
    st.none() | st.booleans() | number | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
data = st.dictionaries(text, json_value, max_size=6)
timestamp = st.builds(
    lambda moment, offset: create_timestamp(offset, now=moment),
    st.datetimes(timezones=st.just(UTC)),
    st.integers(-12, 14),
)
extension_key = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True).filter(
    lambda key: key not in RESERVED_EXTENSION_KEYS
)
extensions = st.dictionaries(extension_key, st.none() | st.booleans() | number | text, max_size=4)


@st.composite
def events(draw: st.DrawFn) -> ArvoEvent:
    content_type = draw(
        st.sampled_from(["application/cloudevents+json;charset=UTF-8;profile=arvo", "application/json"])
    )
    return ArvoEvent(
        id=draw(non_empty_text),
        source=draw(uri),
        type=draw(event_type),
        subject=draw(uri),
        data=draw(data),
        time=draw(timestamp),
        datacontenttype=content_type,
        dataschema=draw(st.none() | uri),
        to=draw(uri) if content_type.endswith("arvo") else draw(st.none() | uri),
        accesscontrol=draw(st.none() | non_empty_text),
        redirectto=draw(st.none() | uri),
        executionunits=draw(st.none() | number),
        traceparent=draw(st.none() | non_empty_text),
        tracestate=draw(st.none() | non_empty_text),
        parentid=draw(st.none() | non_empty_text),
        domain=draw(st.none() | domain),
        extensions=draw(extensions),
    )


@FAST
@given(events())
def test_any_valid_event_round_trips_through_json(event: ArvoEvent) -> None:
    decoded = ArvoEvent.from_json(event.to_json())
    assert decoded.to_dict() == event.to_dict()
    assert decoded.to_json() == event.to_json()


@FAST
@given(events())
def test_any_valid_event_round_trips_through_its_dict(event: ArvoEvent) -> None:
    assert ArvoEvent.from_json(event.to_dict()) == event


@FAST
@given(
    source=text,
    subject=non_empty_text,
    parentid=text,
    redirectto=text,
    event_type=event_type,
    payload=data,
)
def test_create_arvo_event_accepts_any_text_without_surrogates_for_encoded_fields(
    source: str, subject: str, parentid: str, redirectto: str, event_type: str, payload: dict[str, Any]
) -> None:
    if not source:
        source = "x"
    event = create_arvo_event(
        source=source,
        type=event_type,
        subject=subject,
        data=payload,
        parentid=parentid,
        redirectto=redirectto,
    )
    assert decode_uri(event.source) == source
    assert event.to == event_type


@MANY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_validation_errors(raw: bytes) -> None:
    with contextlib.suppress(ArvoEventValidationError):
        ArvoEvent.from_json(raw)


@MANY
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_validation_errors(raw: str) -> None:
    with contextlib.suppress(ArvoEventValidationError):
        ArvoEvent.from_json(raw)


_VALID_WIRE = create_arvo_event(
    source="com.test.service", type="com.test.event", subject="s", data={"a": 1}, time="2025-01-01T00:00:00Z"
).to_dict()


@MANY
@given(
    key=st.sampled_from(sorted(_VALID_WIRE)) | text,
    value=json_value | st.integers() | st.just(float("nan")),
)
def test_any_attribute_replaced_by_any_json_raises_only_validation_errors(key: str, value: Any) -> None:
    document = dict(_VALID_WIRE)
    document[key] = value
    try:
        raw = orjson.dumps(document)
    except TypeError:  # integers beyond 64 bits: write them by hand
        raw = orjson.dumps({**document, key: 0}).replace(
            orjson.dumps(key) + b":0", orjson.dumps(key) + b":" + str(value).encode()
        )
    for source in (raw, document):
        try:
            event = ArvoEvent.from_json(source)
        except ArvoEventValidationError as error:
            problems = error.problems
            assert problems
        else:
            assert ArvoEvent.from_json(event.to_json()) == event


@MANY
@given(st.text(max_size=200) | st.binary(max_size=150).map(lambda raw: base64.b64encode(raw).decode()))
def test_parse_arvo_event_id_never_raises(identifier: str) -> None:
    result, error = parse_arvo_event_id(identifier)
    if error is None:
        assert isinstance(result, dict)
    else:
        assert result == identifier


@MANY
@given(st.binary(max_size=200))
def test_parse_arvo_event_id_never_raises_on_compressed_junk(payload: bytes) -> None:
    identifier = base64.b64encode(zlib.compress(payload)).decode()
    result, error = parse_arvo_event_id(identifier)
    assert (error is None) == isinstance(result, dict)


@FAST
@given(non_empty_text, st.sampled_from(["ARVO_MANAGED", "DEVELOPER_MANAGED"]))
def test_generated_ids_decode_to_their_value(value: str, deduplication: str) -> None:
    identifier = create_arvo_event_id(EventIdSpec(deduplication=deduplication, value=value))  # type: ignore[arg-type]
    decoded, error = parse_arvo_event_id(identifier)
    trimmed = value.strip(
        "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
    )
    if deduplication == "ARVO_MANAGED" and trimmed:
        assert error is None
        assert isinstance(decoded, dict)
        assert decoded["value"] == trimmed


@MANY
@given(text)
def test_encoded_text_is_uri_valid_and_decodes_back(value: str) -> None:
    encoded = encode_uri(value)
    assert is_uri_valid(encoded)
    assert decode_uri(encoded) == value


@MANY
@given(
    st.lists(
        st.sampled_from(
            [*"aZ9;/?#%+ é\ud800", "%2F", "%41", "%C3%A9", "%c3", "%E2%82%AC", "%F0%9F%98%80", "%C0%80"]
        ),
        max_size=8,
    ).map("".join)
)
def test_uri_validity_is_the_encode_decode_round_trip(value: str) -> None:
    try:
        expected = encode_uri(decode_uri(value)) == value
    except URIError:
        expected = False
    assert is_uri_valid(value) == expected
