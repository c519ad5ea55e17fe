"""ArvoEvent construction, validation, serialisation and createArvoEvent (spec 1.1-1.9, 1.12-1.15)."""

from __future__ import annotations

import copy
import math
import pickle
import re
from typing import Any

import orjson
import pytest

from service.arvo.errors import ArvoEventValidationError, ArvoValidationError, ValidationProblem
from service.arvo.event import (
    ARVO_DATA_CONTENT_TYPE,
    OTEL_NULL,
    RESERVED_EXTENSION_KEYS,
    WIRE_KEY_ORDER,
    ArvoEvent,
    EventIdSpec,
    create_arvo_event,
    parse_arvo_event_id,
)
from service.arvo.validation import MAX_JSON_DEPTH, is_valid_datetime

SUBJECT = "eJwlzdEKwyAMheF3yXUVtc5ufRungQWqgtoyEN99obtMPjj/gFLDB1uvvpcK+4DsE8IOvl5FssnOCAtcWBuVzKKkkhrmAvjFcPb7OYAikzYr2ofbBD5fb6FNXIXnW1jjnLZ6s0op3qJMnf49CCXdCdmwXhSQOZbkiUfzeRycSdg9F+b8AWonNj0="
TIME = "2025-01-01T00:00:00.000+00:00"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def kwargs(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "6b1c0000-0000-4000-8000-000000000001",
        "source": "com.increment.number",
        "type": "evt.increment.number.success",
        "subject": SUBJECT,
        "data": {"result": 4},
        "time": TIME,
        "to": "arvo.orc.inc",
    }
    base.update(changes)
    return base


def make(**changes: Any) -> ArvoEvent:
    return ArvoEvent(**kwargs(**changes))


def problems_of(**changes: Any) -> list[ValidationProblem]:
    with pytest.raises(ArvoEventValidationError) as info:
        make(**changes)
    return list(info.value.problems)


def only_problem(**changes: Any) -> ValidationProblem:
    problems = problems_of(**changes)
    assert len(problems) == 1, problems
    return problems[0]


def decode_problems(raw: bytes | str | dict[str, Any]) -> list[ValidationProblem]:
    with pytest.raises(ArvoEventValidationError) as info:
        ArvoEvent.from_json(raw)
    return list(info.value.problems)


def wire(**changes: Any) -> dict[str, Any]:
    document = make().to_dict()
    document.update(changes)
    return document


# --------------------------------------------------------------------------------------------------
# Construction and defaults


def test_constants_are_the_wire_values() -> None:
    assert ARVO_DATA_CONTENT_TYPE == "application/cloudevents+json;charset=UTF-8;profile=arvo"
    assert OTEL_NULL == "N/A"


def test_valid_event_exposes_every_attribute_with_defaults() -> None:
    event = make()
    assert event.id == "6b1c0000-0000-4000-8000-000000000001"
    assert event.source == "com.increment.number"
    assert event.specversion == "1.0"
    assert event.type == "evt.increment.number.success"
    assert event.subject == SUBJECT
    assert event.datacontenttype == ARVO_DATA_CONTENT_TYPE
    assert event.dataschema is None
    assert event.data == {"result": 4}
    assert event.time == TIME
    assert event.to == "arvo.orc.inc"
    for name in (
        "accesscontrol",
        "redirectto",
        "executionunits",
        "traceparent",
        "tracestate",
        "parentid",
        "domain",
    ):
        assert getattr(event, name) is None
    assert event.extensions == {}


def test_constructor_does_not_encode_its_input() -> None:
    problem = only_problem(source="test source with spaces")
    assert problem.path == "source"
    assert problem.rule == "uri"


def test_constructor_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        ArvoEvent("id", "source")  # type: ignore[call-arg]


# --------------------------------------------------------------------------------------------------
# Field rules (spec 1.1), with the original's messages inside ours


def test_empty_id_is_rejected() -> None:
    problem = only_problem(id="")
    assert (problem.path, problem.rule) == ("id", "non-empty")
    assert "ID must be a non-empty string" in problem.message


def test_non_string_id_is_rejected_naming_its_type() -> None:
    problem = only_problem(id=42)
    assert (problem.path, problem.rule) == ("id", "string")
    assert "(got int)" in problem.message
    assert problem.value == "42"


def test_id_with_a_lone_surrogate_is_rejected() -> None:
    problem = only_problem(id="a\ud800")
    assert (problem.path, problem.rule) == ("id", "utf8")


def test_non_ascii_id_is_accepted() -> None:
    assert make(id="événement").id == "événement"


def test_empty_source_is_rejected() -> None:
    problem = only_problem(source="")
    assert "Source must be a non-empty reference of the producer of the event" in problem.message


def test_source_with_raw_space_is_rejected_as_not_uri_encoded() -> None:
    problem = only_problem(source="my source")
    assert (problem.path, problem.rule) == ("source", "uri")
    assert "The source must be a properly encoded URI" in problem.message
    assert "character ' ' at index 2" in problem.message


def test_source_with_canonical_escapes_is_accepted() -> None:
    assert make(source="my%20source%C3%A9").source == "my%20source%C3%A9"


def test_source_with_lowercase_escape_is_rejected() -> None:
    assert only_problem(source="a%c3%a9").rule == "uri"


def test_source_with_reserved_escape_is_rejected() -> None:
    assert only_problem(source="a%2F").rule == "uri"


def test_none_source_is_rejected() -> None:
    assert only_problem(source=None).path == "source"


def test_specversion_other_than_1_0_is_rejected() -> None:
    problem = only_problem(specversion="2.0")
    assert (problem.path, problem.rule) == ("specversion", "specversion")
    assert "Spec version must be '1.0' for this version of the specification" in problem.message


def test_type_with_two_segments_is_rejected() -> None:
    problem = only_problem(type="com.test")
    assert (problem.path, problem.rule) == ("type", "type-format")
    assert "Type should be prefixed with a reverse-DNS name" in problem.message
    assert problem.value == "'com.test'"


def test_type_with_uppercase_is_rejected() -> None:
    assert only_problem(type="com.Test.x").rule == "type-format"


def test_empty_type_is_rejected() -> None:
    problem = only_problem(type="")
    assert problem.rule == "non-empty"
    assert "Type should be prefixed with a reverse-DNS name" in problem.message


def test_subject_with_raw_space_is_rejected() -> None:
    problem = only_problem(subject="a b")
    assert (problem.path, problem.rule) == ("subject", "uri")
    assert "The subject must be a properly encoded URI" in problem.message


def test_empty_subject_is_rejected() -> None:
    assert only_problem(subject="").rule == "non-empty"


def test_datacontenttype_without_a_json_media_type_is_rejected() -> None:
    problem = only_problem(datacontenttype="text/plain")
    assert (problem.path, problem.rule) == ("datacontenttype", "datacontenttype")
    assert "application/cloudevents+json" in problem.message


def test_empty_datacontenttype_is_rejected() -> None:
    assert only_problem(datacontenttype="").rule == "non-empty"


def test_plain_json_datacontenttype_is_accepted_and_does_not_require_to() -> None:
    event = make(datacontenttype="application/json; charset=utf-8", to=None)
    assert event.to is None


def test_dataschema_must_be_uri_encoded() -> None:
    problem = only_problem(dataschema="#/my schema/1.0.0")
    assert (problem.path, problem.rule) == ("dataschema", "uri")
    assert "The dataschema must be a properly encoded URI" in problem.message


def test_empty_dataschema_is_rejected() -> None:
    assert only_problem(dataschema="").rule == "non-empty"


def test_valid_dataschema_is_kept() -> None:
    assert make(dataschema="#/test/handler/increment/0.0.1").dataschema == "#/test/handler/increment/0.0.1"


@pytest.mark.parametrize("data", [[1], None, "x", 1, (("a", 1),)])
def test_data_that_is_not_an_object_is_rejected(data: object) -> None:
    problem = only_problem(data=data)
    assert (problem.path, problem.rule) == ("data", "json-object")
    assert "The Arvo data object must be a JSON serializable object" in problem.message


def test_data_with_nan_is_rejected_naming_the_path() -> None:
    problem = only_problem(data={"items": [{"count": 1}, {"count": 2}, {"count": math.nan}]})
    assert (problem.path, problem.rule) == ("data.items[2].count", "finite-number")


def test_data_with_infinity_is_rejected() -> None:
    assert only_problem(data={"x": -math.inf}).rule == "finite-number"


def test_data_with_unsafe_integer_is_rejected() -> None:
    problem = only_problem(data={"n": 2**53})
    assert (problem.path, problem.rule) == ("data.n", "safe-integer")


def test_data_with_non_json_value_is_rejected() -> None:
    problem = only_problem(data={"when": object()})
    assert (problem.path, problem.rule) == ("data.when", "json-value")


def test_data_with_non_string_key_is_rejected() -> None:
    problem = only_problem(data={1: "x"})
    assert problem.rule == "json-key"


def test_data_nested_deeper_than_the_limit_is_rejected() -> None:
    data: dict[str, Any] = {}
    current = data
    for _ in range(MAX_JSON_DEPTH):
        current["x"] = {}
        current = current["x"]
    assert only_problem(data=data).rule == "max-depth"


@pytest.mark.parametrize(
    "time",
    ["2023-05-01T12:00:00+10", "2023-02-29T12:00:00Z", "2023-05-01 12:00:00Z", "2023-05-01T12:00:00", "now"],
)
def test_time_not_matching_the_zod_datetime_rule_is_rejected(time: str) -> None:
    problem = only_problem(time=time)
    assert (problem.path, problem.rule) == ("time", "time-format")
    assert "Invalid datetime" in problem.message


@pytest.mark.parametrize("time", ["2023-05-01T12:00Z", "2024-02-29T12:00:00Z", "2023-05-01T12:00:00+1000"])
def test_time_accepted_by_zod_is_accepted(time: str) -> None:
    assert make(time=time).time == time


def test_to_must_be_uri_encoded() -> None:
    problem = only_problem(to="a b")
    assert (problem.path, problem.rule) == ("to", "uri")
    assert "The 'to' must be a properly encoded URI" in problem.message


def test_missing_to_with_the_arvo_content_type_is_rejected() -> None:
    problem = only_problem(to=None)
    assert (problem.path, problem.rule) == ("to", "to-required")
    assert "The ArvoEvent must have a non-empty 'to' field" in problem.message


def test_empty_to_is_rejected_twice_as_empty_and_required() -> None:
    rules = {problem.rule for problem in problems_of(to="")}
    assert rules == {"non-empty", "to-required"}


def test_empty_accesscontrol_is_rejected_but_any_text_is_accepted() -> None:
    assert only_problem(accesscontrol="").rule == "non-empty"
    assert make(accesscontrol="role: admin; not a uri").accesscontrol == "role: admin; not a uri"


def test_redirectto_must_be_uri_encoded() -> None:
    problem = only_problem(redirectto="a b")
    assert (problem.path, problem.rule) == ("redirectto", "uri")
    assert "The 'redirectto' must be a properly encoded URI" in problem.message


@pytest.mark.parametrize("value", [0, 0.1, 12, 1e300, -3])
def test_executionunits_accepts_finite_numbers(value: float) -> None:
    assert make(executionunits=value).executionunits == value


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (True, "number"),
        ("1", "number"),
        (math.nan, "finite-number"),
        (math.inf, "finite-number"),
        (2**53, "safe-integer"),
    ],
)
def test_executionunits_rejects_non_numbers_non_finite_and_unsafe_values(value: object, rule: str) -> None:
    problem = only_problem(executionunits=value)
    assert (problem.path, problem.rule) == ("executionunits", rule)


@pytest.mark.parametrize("name", ["traceparent", "tracestate", "parentid"])
def test_empty_optional_strings_are_rejected(name: str) -> None:
    problem = only_problem(**{name: ""})
    assert (problem.path, problem.rule) == (name, "non-empty")


def test_parentid_is_not_uri_checked() -> None:
    assert make(parentid="parent event with spaces").parentid == "parent event with spaces"


def test_uppercase_domain_is_rejected_with_the_original_message() -> None:
    problem = only_problem(domain="test.test.TEST")
    assert (problem.path, problem.rule) == ("domain", "domain-format")
    assert "Domain must contain only lowercase letters, numbers, and dots" in problem.message


def test_empty_domain_is_rejected_with_the_original_message() -> None:
    problem = only_problem(domain="")
    assert "Domain must be non-empty string" in problem.message


def test_valid_domain_is_kept() -> None:
    assert make(domain="analytics.eu1").domain == "analytics.eu1"


def test_every_problem_is_collected_in_one_error() -> None:
    with pytest.raises(ArvoEventValidationError) as info:
        ArvoEvent(
            id="",
            source="a b",
            type="bad",
            subject="",
            data=[],  # type: ignore[arg-type]
            time="yesterday",
            specversion="0.3",
            domain="UP",
            executionunits=math.nan,
            extensions={"id": "x", "Bad": 1},
        )
    paths = [problem.path for problem in info.value.problems]
    assert paths == [
        "id",
        "source",
        "specversion",
        "type",
        "subject",
        "data",
        "time",
        "executionunits",
        "domain",
        "to",
        "id",
        "Bad",
    ]
    assert isinstance(info.value, ArvoValidationError)
    assert isinstance(info.value, ValueError)


def test_error_message_names_field_value_and_rule() -> None:
    with pytest.raises(ArvoEventValidationError) as info:
        make(source="my source")
    text = str(info.value)
    assert text.startswith("Invalid ArvoEvent: 1 problem")
    assert "source: The source must be a properly encoded URI" in text
    assert "rule=uri" in text
    assert "value='my source'" in text


def test_error_message_truncates_long_values() -> None:
    problem = only_problem(source=" " * 1000)
    assert len(problem.value) <= 80


# --------------------------------------------------------------------------------------------------
# Custom extensions (spec 1.6)


def test_custom_extensions_are_kept_and_exposed_separately() -> None:
    event = make(extensions={"tenant": "acme", "retries": 2, "debug": True, "ratio": 0.5, "note": None})
    assert event.extensions == {"tenant": "acme", "retries": 2, "debug": True, "ratio": 0.5, "note": None}
    extensions = event.extensions
    extensions["tenant"] = "changed"
    assert event.extensions["tenant"] == "acme"


@pytest.mark.parametrize("key", ["Tenant", "my_key", "my-key", "", "clé"])
def test_extension_key_outside_lowercase_alphanumerics_is_rejected(key: str) -> None:
    problem = only_problem(extensions={key: "x"})
    assert problem.rule == "extension-key"


def test_non_string_extension_key_is_rejected() -> None:
    assert only_problem(extensions={1: "x"}).rule == "extension-key"


@pytest.mark.parametrize("key", sorted(RESERVED_EXTENSION_KEYS))
def test_extension_key_colliding_with_an_event_attribute_is_rejected(key: str) -> None:
    problem = only_problem(extensions={key: "x"})
    assert (problem.path, problem.rule) == (key, "extension-collision")


def test_reserved_keys_cover_core_arvo_and_otel_attributes() -> None:
    assert {
        "id",
        "type",
        "source",
        "data",
        "time",
        "subject",
        "specversion",
        "dataschema",
        "datacontenttype",
    } <= (RESERVED_EXTENSION_KEYS)
    assert {
        "to",
        "accesscontrol",
        "redirectto",
        "executionunits",
        "parentid",
        "domain",
    } <= RESERVED_EXTENSION_KEYS
    assert {"traceparent", "tracestate"} <= RESERVED_EXTENSION_KEYS


@pytest.mark.parametrize(("value", "rule"), [([1], "extension-value"), ({"a": 1}, "extension-value")])
def test_extension_value_that_is_not_a_scalar_is_rejected(value: object, rule: str) -> None:
    assert only_problem(extensions={"custom": value}).rule == rule


@pytest.mark.parametrize(
    ("value", "rule"), [(math.nan, "finite-number"), (2**53, "safe-integer"), ("\udc80", "utf8")]
)
def test_extension_value_follows_the_number_and_string_rules(value: object, rule: str) -> None:
    assert only_problem(extensions={"custom": value}).rule == rule


def test_extensions_that_are_not_a_mapping_are_rejected() -> None:
    assert only_problem(extensions=[("a", 1)]).rule == "extensions"


# --------------------------------------------------------------------------------------------------
# Immutability


def test_setting_a_public_attribute_raises() -> None:
    event = make()
    with pytest.raises(AttributeError):
        event.source = "other"  # type: ignore[misc]


def test_setting_a_private_slot_raises() -> None:
    event = make()
    with pytest.raises(AttributeError, match="immutable"):
        setattr(event, "_fields", ())  # noqa: B010 - the internal storage slot is protected too


def test_deleting_an_attribute_raises() -> None:
    event = make()
    with pytest.raises(AttributeError, match="immutable"):
        delattr(event, "_fields")


def test_event_has_no_instance_dict() -> None:
    assert not hasattr(make(), "__dict__")


def test_event_is_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(make())


def test_replace_returns_a_new_validated_event() -> None:
    event = make()
    changed = event.replace(domain="eu", extensions={"tenant": "a"})
    assert changed.domain == "eu"
    assert changed.extensions == {"tenant": "a"}
    assert event.domain is None
    assert changed.id == event.id


def test_replace_with_an_invalid_value_raises_validation_error() -> None:
    with pytest.raises(ArvoEventValidationError):
        make().replace(type="nope")


def test_replace_with_an_unknown_attribute_raises_type_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        make().replace(colour="red")


def test_copy_pickle_and_deepcopy_keep_the_event() -> None:
    event = make(extensions={"tenant": "acme"}, data={"nested": {"a": [1]}})
    assert copy.copy(event) is event
    deep = copy.deepcopy(event)
    assert deep == event
    assert deep.data is not event.data
    assert pickle.loads(pickle.dumps(event)) == event


def test_equality_compares_the_wire_form() -> None:
    assert make() == make()
    assert make() != make(domain="eu")
    assert make() != object()


def test_repr_names_id_type_and_destination() -> None:
    text = repr(make())
    assert "evt.increment.number.success" in text
    assert "to='arvo.orc.inc'" in text


# --------------------------------------------------------------------------------------------------
# Serialisation (spec 1.12)


def test_to_dict_has_every_key_in_wire_order() -> None:
    assert list(make().to_dict()) == list(WIRE_KEY_ORDER)
    assert list(WIRE_KEY_ORDER) == [
        "id",
        "source",
        "specversion",
        "type",
        "subject",
        "datacontenttype",
        "dataschema",
        "data",
        "time",
        "to",
        "accesscontrol",
        "redirectto",
        "executionunits",
        "traceparent",
        "tracestate",
        "parentid",
        "domain",
    ]


def test_to_dict_puts_custom_extensions_between_time_and_to() -> None:
    keys = list(make(extensions={"zeta": 1, "alpha": 2}).to_dict())
    assert keys[8:12] == ["time", "zeta", "alpha", "to"]


def test_to_dict_orders_integer_like_extension_keys_first_like_javascript() -> None:
    extensions = {"b": 1, "10": 2, "a": 3, "2": 4, "0": 5, "012": 6, "4294967295": 7, "4294967294": 8}
    event = make(extensions=extensions)
    assert list(event.extensions) == ["0", "2", "10", "4294967294", "b", "a", "012", "4294967295"]
    assert list(event.to_dict())[9:17] == list(event.extensions)


def test_to_json_is_compact_and_byte_identical_to_json_stringify() -> None:
    event = make(data={"result": 4, "text": "héllo €"}, executionunits=0.1, extensions={"tenant": "acme"})
    expected = (
        '{"id":"6b1c0000-0000-4000-8000-000000000001","source":"com.increment.number","specversion":"1.0",'
        f'"type":"evt.increment.number.success","subject":"{SUBJECT}",'
        '"datacontenttype":"application/cloudevents+json;charset=UTF-8;profile=arvo","dataschema":null,'
        '"data":{"result":4,"text":"héllo €"},"time":"2025-01-01T00:00:00.000+00:00","tenant":"acme",'
        '"to":"arvo.orc.inc","accesscontrol":null,"redirectto":null,"executionunits":0.1,"traceparent":null,'
        '"tracestate":null,"parentid":null,"domain":null}'
    )
    assert event.to_json() == expected.encode("utf-8")
    assert str(event) == expected


def test_cloudevent_splits_default_attributes_and_all_extensions() -> None:
    event = make(extensions={"tenant": "acme"}, domain="eu")
    cloudevent = event.cloudevent
    assert list(cloudevent["default"]) == list(WIRE_KEY_ORDER[:9])
    assert cloudevent["extensions"]["tenant"] == "acme"
    assert cloudevent["extensions"]["domain"] == "eu"
    assert set(cloudevent["extensions"]) == {"tenant", *WIRE_KEY_ORDER[9:]}


def test_otel_attributes_use_na_for_null_values() -> None:
    assert make().otel_attributes == {
        "cloudevents.event_id": "6b1c0000-0000-4000-8000-000000000001",
        "cloudevents.event_source": "com.increment.number",
        "cloudevents.event_spec_version": "1.0",
        "cloudevents.event_subject": SUBJECT,
        "cloudevents.event_type": "evt.increment.number.success",
        "cloudevents.event_time": TIME,
        "cloudevents.event_datacontenttype": ARVO_DATA_CONTENT_TYPE,
        "cloudevents.event_dataschema": "N/A",
        "cloudevents.arvo.event_redirectto": "N/A",
        "cloudevents.arvo.event_to": "arvo.orc.inc",
        "cloudevents.arvo.event_executionunits": "N/A",
        "cloudevents.arvo.event_parentid": "N/A",
        "cloudevents.arvo.event_domain": "N/A",
    }


def test_otel_attributes_keep_executionunits_as_a_number() -> None:
    assert make(executionunits=0).otel_attributes["cloudevents.arvo.event_executionunits"] == 0
    attributes = make(
        executionunits=2.5, dataschema="#/x/1.0.0", parentid="p", domain="eu", redirectto="r"
    ).otel_attributes
    assert attributes["cloudevents.arvo.event_executionunits"] == 2.5
    assert attributes["cloudevents.event_dataschema"] == "#/x/1.0.0"
    assert attributes["cloudevents.arvo.event_parentid"] == "p"
    assert attributes["cloudevents.arvo.event_domain"] == "eu"
    assert attributes["cloudevents.arvo.event_redirectto"] == "r"


# --------------------------------------------------------------------------------------------------
# Decoding (spec 1.13)


def test_from_json_round_trips_bytes_str_bytearray_memoryview_and_mappings() -> None:
    event = make(extensions={"tenant": "acme"}, executionunits=3)
    raw = event.to_json()
    for source in (raw, raw.decode(), bytearray(raw), memoryview(raw), orjson.loads(raw)):
        assert ArvoEvent.from_json(source) == event


def test_from_json_accepts_arvo_core_2_events_without_nullable_keys() -> None:
    document = wire()
    for key in ("parentid", "domain", "dataschema", "accesscontrol", "redirectto", "executionunits"):
        del document[key]
    for key in ("traceparent", "tracestate"):
        del document[key]
    event = ArvoEvent.from_json(orjson.dumps(document))
    assert event.parentid is None
    assert event.domain is None
    assert list(event.to_dict()) == list(WIRE_KEY_ORDER)


def test_from_json_defaults_a_missing_datacontenttype() -> None:
    document = wire()
    del document["datacontenttype"]
    assert ArvoEvent.from_json(orjson.dumps(document)).datacontenttype == ARVO_DATA_CONTENT_TYPE


@pytest.mark.parametrize("key", ["id", "source", "specversion", "type", "subject", "data", "time"])
def test_from_json_reports_a_missing_required_key(key: str) -> None:
    document = wire()
    del document[key]
    problems = decode_problems(orjson.dumps(document))
    assert [(problem.path, problem.rule) for problem in problems] == [(key, "required")]
    assert "the key is missing" in problems[0].message


def test_from_json_treats_other_top_level_keys_as_extensions() -> None:
    event = ArvoEvent.from_json(orjson.dumps(wire(tenant="acme", priority=3)))
    assert event.extensions == {"tenant": "acme", "priority": 3}


def test_from_json_rejects_foreign_extension_keys_and_nested_extension_values() -> None:
    problems = decode_problems(orjson.dumps(wire(Tenant="x", meta={"a": 1})))
    assert {(problem.path, problem.rule) for problem in problems} == {
        ("Tenant", "extension-key"),
        ("meta", "extension-value"),
    }


def test_from_json_does_not_encode_input() -> None:
    problem = decode_problems(orjson.dumps(wire(source="test source with spaces")))[0]
    assert (problem.path, problem.rule) == ("source", "uri")


def test_from_json_rejects_a_non_number_executionunits() -> None:
    problem = decode_problems(orjson.dumps(wire(executionunits=True)))[0]
    assert (problem.path, problem.rule) == ("executionunits", "number")


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"id": 1,}', b"\xff\xfe", b'{"a":1} trailing', '{"a": "\ud800"}'],
)
def test_from_json_reports_invalid_json(raw: bytes | str) -> None:
    [problem] = decode_problems(raw)
    assert (problem.path, problem.rule) == ("$", "json-syntax")
    assert "not valid JSON" in problem.message


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"[]", "an array"),
        (b"null", "null"),
        (b"1", "a number"),
        (b'"x"', "a string"),
        (b"true", "a boolean"),
    ],
)
def test_from_json_reports_a_document_that_is_not_an_object(raw: bytes, kind: str) -> None:
    [problem] = decode_problems(raw)
    assert problem.rule == "json-object"
    assert kind in problem.message


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_from_json_rejects_nan_and_infinity_literals(literal: bytes) -> None:
    raw = orjson.dumps(wire(data={"x": 0})).replace(b'"x":0', b'"x":' + literal)
    [problem] = decode_problems(raw)
    assert problem.rule == "json-syntax"


def test_from_json_rejects_an_unsafe_integer_naming_its_path() -> None:
    raw = orjson.dumps(wire(data={"items": [{"count": 1}, {"count": 2}, {"count": 2**60}]}))
    [problem] = decode_problems(raw)
    assert (problem.path, problem.rule) == ("data.items[2].count", "safe-integer")


@pytest.mark.parametrize(
    "literal", [b"18446744073709551616", b"-9223372036854775809", b"123456789012345678901234567890"]
)
def test_from_json_rejects_integer_literals_beyond_64_bits(literal: bytes) -> None:
    raw = orjson.dumps(wire(data={"x": 0})).replace(b'"x":0', b'"x":' + literal)
    [problem] = decode_problems(raw)
    assert (problem.path, problem.rule) == ("data.x", "safe-integer")
    assert literal.decode().lstrip("-")[:10] in problem.value


def test_from_json_accepts_large_genuine_floats() -> None:
    raw = orjson.dumps(wire(data={"x": 0})).replace(b'"x":0', b'"x":1e300,"y":1.8446744073709552e19')
    assert ArvoEvent.from_json(raw).data == {"x": 1e300, "y": 1.8446744073709552e19}


def test_from_json_rejects_an_integer_literal_beyond_64_bits_in_executionunits_and_extensions() -> None:
    raw = orjson.dumps(wire(executionunits=0, cost=0))
    raw = raw.replace(b'"executionunits":0', b'"executionunits":99999999999999999999')
    raw = raw.replace(b'"cost":0', b'"cost":-99999999999999999999')
    problems = decode_problems(raw)
    assert {(problem.path, problem.rule) for problem in problems} == {
        ("executionunits", "safe-integer"),
        ("cost", "safe-integer"),
    }


def test_from_json_rejects_unsafe_integers_in_executionunits_and_extensions() -> None:
    problems = decode_problems(orjson.dumps(wire(executionunits=2**60, cost=-(2**60))))
    assert {(problem.path, problem.rule) for problem in problems} == {
        ("executionunits", "safe-integer"),
        ("cost", "safe-integer"),
    }


def test_from_json_rejects_data_nested_deeper_than_the_limit() -> None:
    deep = b'{"x":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)
    raw = orjson.dumps(wire(data={})).replace(b'"data":{}', b'"data":' + deep)
    [problem] = decode_problems(raw)
    assert problem.rule == "max-depth"


def test_from_json_accepts_data_nested_up_to_the_limit() -> None:
    deep = b'{"x":' * MAX_JSON_DEPTH + b"1" + b"}" * MAX_JSON_DEPTH
    raw = orjson.dumps(wire(data={})).replace(b'"data":{}', b'"data":' + deep)
    assert ArvoEvent.from_json(raw).data["x"]["x"]


def test_from_json_rejects_a_document_above_max_bytes() -> None:
    raw = make().to_json()
    assert ArvoEvent.from_json(raw, max_bytes=len(raw)) == make()
    [problem] = decode_problems_with_limit(raw, len(raw) - 1)
    assert problem.rule == "max-bytes"
    [problem] = decode_problems_with_limit(raw.decode(), 10)
    assert problem.rule == "max-bytes"


def decode_problems_with_limit(raw: bytes | str, limit: int) -> list[ValidationProblem]:
    with pytest.raises(ArvoEventValidationError) as info:
        ArvoEvent.from_json(raw, max_bytes=limit)
    return list(info.value.problems)


def test_from_json_rejects_unsupported_input_types() -> None:
    with pytest.raises(ArvoEventValidationError, match="JSON text, bytes or a mapping"):
        ArvoEvent.from_json(42)  # type: ignore[arg-type]


def test_from_json_of_a_mapping_runs_the_full_python_checks() -> None:
    problems = decode_problems(wire(data={"x": math.nan}, id="a\ud800"))
    assert {(problem.path, problem.rule) for problem in problems} == {
        ("data.x", "finite-number"),
        ("id", "utf8"),
    }


def test_from_json_collects_every_problem_of_a_decoded_event() -> None:
    problems = decode_problems(orjson.dumps(wire(type="x", domain="UP", to=None, tenant=[1])))
    assert [problem.path for problem in problems] == ["type", "domain", "to", "tenant"]


# --------------------------------------------------------------------------------------------------
# createArvoEvent (spec 1.9, 14.9)


def create(**changes: Any) -> ArvoEvent:
    arguments: dict[str, Any] = {
        "source": "com.test.service",
        "type": "com.test.event",
        "subject": "test-subject",
        "data": {"key": "value"},
    }
    arguments.update(changes)
    return create_arvo_event(**arguments)


def test_create_arvo_event_defaults_to_to_the_type() -> None:
    assert create().to == "com.test.event"
    assert create(to="").to == "com.test.event"


def test_create_arvo_event_encodes_the_source() -> None:
    assert create(source="test source with spaces").source == "test%20source%20with%20spaces"


def test_create_arvo_event_encodes_the_parentid() -> None:
    assert create(parentid="parent event with spaces").parentid == "parent%20event%20with%20spaces"


def test_create_arvo_event_encodes_subject_to_redirectto_and_dataschema() -> None:
    event = create(subject="a b", to="x y", redirectto="r s", dataschema="#/my schema/1.0.0")
    assert (event.subject, event.to, event.redirectto, event.dataschema) == (
        "a%20b",
        "x%20y",
        "r%20s",
        "#/my%20schema/1.0.0",
    )


def test_create_arvo_event_double_encodes_existing_escapes_like_the_original() -> None:
    assert create(source="a%20b").source == "a%2520b"


def test_create_arvo_event_turns_empty_optional_uris_into_null() -> None:
    event = create(redirectto="", dataschema="", parentid="")
    assert (event.redirectto, event.dataschema, event.parentid) == (None, None, None)


def test_create_arvo_event_rejects_an_uppercase_domain() -> None:
    with pytest.raises(
        ArvoEventValidationError, match="Domain must contain only lowercase letters, numbers, and dots"
    ):
        create(domain="test.test.TEST")


def test_create_arvo_event_rejects_an_empty_domain() -> None:
    with pytest.raises(ArvoEventValidationError, match="Domain must be non-empty string"):
        create(domain="")


def test_create_arvo_event_fills_defaults() -> None:
    event = create()
    assert UUID_RE.match(event.id)
    assert is_valid_datetime(event.time)
    assert event.time.endswith("+00:00")
    assert event.specversion == "1.0"
    assert event.datacontenttype == ARVO_DATA_CONTENT_TYPE
    for name in ("accesscontrol", "executionunits", "traceparent", "tracestate", "domain"):
        assert getattr(event, name) is None


def test_create_arvo_event_uses_a_plain_string_id_verbatim() -> None:
    assert create(id="  my id  ").id == "  my id  "


def test_create_arvo_event_builds_the_id_from_an_id_spec() -> None:
    assert create(id=EventIdSpec(deduplication="DEVELOPER_MANAGED", value=" custom-id ")).id == "custom-id"
    managed = create(id=EventIdSpec(deduplication="ARVO_MANAGED", value="custom-orch-1")).id
    decoded, error = parse_arvo_event_id(managed)
    assert error is None
    assert isinstance(decoded, dict)
    assert decoded["value"] == "custom-orch-1"


def test_create_arvo_event_keeps_explicit_values() -> None:
    event = create(
        time=TIME,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
        accesscontrol="role=admin",
        executionunits=1.5,
        domain="eu",
        extensions={"tenant": "acme"},
    )
    assert event.time == TIME
    assert event.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert event.tracestate == "vendor=1"
    assert event.accesscontrol == "role=admin"
    assert event.executionunits == 1.5
    assert event.domain == "eu"
    assert event.extensions == {"tenant": "acme"}


def test_create_arvo_event_does_not_encode_type_or_domain() -> None:
    with pytest.raises(ArvoEventValidationError) as info:
        create(type="com test", domain="a b")
    # `to` defaults to encodeURI(type) = "com%20test", which is URI-valid.
    assert {problem.path for problem in info.value.problems} == {"type", "domain"}


def test_create_arvo_event_with_a_lone_surrogate_raises_validation_error_not_uri_error() -> None:
    with pytest.raises(ArvoEventValidationError) as info:
        create(source="a\ud800", subject="s\udc00")
    problems = {(problem.path, problem.rule) for problem in info.value.problems}
    assert problems == {("source", "utf8"), ("subject", "utf8")}


def test_create_arvo_event_accepts_a_plain_json_content_type() -> None:
    assert create(datacontenttype="application/json").datacontenttype == "application/json"


def test_create_arvo_event_reports_a_non_string_source_without_crashing() -> None:
    with pytest.raises(ArvoEventValidationError) as info:
        create(source=12)
    assert [problem.path for problem in info.value.problems] == ["source"]


def test_string_subclasses_such_as_str_enums_are_accepted() -> None:
    import enum

    class Kind(enum.StrEnum):
        CREATED = "com.example.created"

    class Region(enum.StrEnum):
        EU = "eu"

    event = make(type=Kind.CREATED, domain=Region.EU, source=Kind.CREATED)
    assert (
        event.to_json()
        == make(type="com.example.created", domain="eu", source="com.example.created").to_json()
    )


def test_string_subclass_breaking_a_regex_rule_is_rejected() -> None:
    import enum

    class Kind(enum.StrEnum):
        BAD = "Bad"

    assert only_problem(type=Kind.BAD).rule == "type-format"


def test_data_with_a_lone_surrogate_string_is_rejected() -> None:
    problem = only_problem(data={"ok": None, "s": "é\ud800"})
    assert (problem.path, problem.rule) == ("data.s", "utf8")


def test_from_json_rejects_nesting_deeper_than_the_stdlib_parser_can_reparse() -> None:
    depth = 1000  # orjson parses up to 1024 levels; the exact re-parse hits Python's recursion limit
    deep = b"[" * depth + b"]" * depth
    raw = orjson.dumps(wire(data={})).replace(b'"data":{}', b'"data":{"x":' + deep + b"}")
    [problem] = decode_problems(raw)
    assert problem.rule == "max-depth"
