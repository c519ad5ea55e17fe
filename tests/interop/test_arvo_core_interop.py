"""Cross-language check against the real arvo-core from npm (pinned in ``arvo_core/package.json``).

Node (``arvo_core/oracle.cjs``) creates subjects and events that we parse, and parses the subjects and
events that we create; subject encodings of equal content must be byte-identical.

The npm registry here serves arvo-core up to 2.2.13, while the spec describes 3.0.25. Observed with
2.2.13 (zod 3.25.76, pako 2.2.0 from the lockfile), pinned by ``test_pinned_arvo_core_features``:

* Subjects: the 2.x content schema has no ``execution.domain``. Its zod object *strips* unknown keys
  during validation, and ``parse`` returns the raw decoded JSON, so 2.x accepts our subjects (with a
  null or non-null domain, even one that breaks the 3.x domain regex) and hands the ``domain`` key
  back untouched. ``create`` validates but serialises its input as given, so with the same content
  (``domain`` key included) 2.x and we produce byte-identical subjects. ``new``/``from`` have no
  ``domain`` parameter and write no ``domain`` key; ``from`` on one of our subjects therefore drops
  the parent's domain (the child has no key; we read it as ``None``). We accept every 2.x subject
  (missing ``domain`` -> ``None``), but our ``create`` insists on the ``domain`` key (we always write
  it), so 2.x-shaped content is not re-encoded byte-for-byte by us.
* Subject decoding: 2.x decodes with Node's lenient base64 and pako's auto-detecting inflate, so it
  accepts unpadded, URL-safe and gzip-wrapped subjects that our strict ``parse`` rejects (our
  ``lenient=True`` accepts them).
* Events: 2.x has no ``parentid``/``domain`` attributes. ``createArvoEvent`` silently drops them and
  its events have 15 keys (no ``parentid``/``domain``), which we read as ``None``. ``new ArvoEvent``
  strips them from its context argument; a consumer that passes every unknown top-level key as a custom
  extension (as the oracle does) keeps them, as *custom extensions*: unvalidated (an upper-case domain
  or an empty parentid passes) and serialised right after ``time``, before ``to``. The values
  survive the round trip, so our ``from_json`` of the 2.x re-serialisation equals the original event.
* Event ids: ``createArvoEvent`` takes ``id`` as a plain string (3.x takes ``{deduplication, value}``);
  2.2.13 has no ``createArvoEventId``/``parseArvoEventId``/``ArvoDomain``. Our ARVO_MANAGED ids use
  the same codec as subjects and match ``base64(pako.deflate(JSON.stringify({uuid, value})))`` in Node.
* JSON text: re-encoding a parsed 2.x event with our ``to_json`` gives 2.x's bytes plus
  ``,"parentid":null,"domain":null`` at the end (non-ASCII unescaped, ``1e+21`` spelled alike).
* Timers and deadlines (issue 13): the ``arvodeadline`` attribute a child init event carries is a
  custom extension to 2.x, kept through its parse and re-serialisation; a timer event
  (``arvo.instance.timer``) is an ordinary event to it.
* Validation of the 2.x attributes agrees with ours on the invalid inputs below; we are stricter on
  ``domain``/``parentid`` (unknown to 2.x) and on integers beyond 2**53 - 1.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.arvo.errors import ArvoEventValidationError, SubjectError
from service.arvo.event import (
    ArvoEvent,
    EventIdSpec,
    create_arvo_event,
    create_arvo_event_id,
    parse_arvo_event_id,
)
from service.arvo.orchestration.timers import DEADLINE_EXTENSION, create_timer_event
from service.arvo.subject import ArvoOrchestrationSubject
from tests.interop._node import NODE_MISSING_REASON, ensure_npm_ci, node_available, run_node_json

pytestmark = pytest.mark.interop

ORACLE_DIR = Path(__file__).parent / "arvo_core"
ORACLE = "oracle.cjs"
FIXED_TIME = "2025-01-02T03:04:05.678+00:00"
NULL_TAIL = b',"parentid":null,"domain":null}'

# Spec 3.2 / 1.10 test vectors.
VECTOR_1 = (
    '{"orchestrator":{"name":"arvo.orc.test","version":"0.0.1"},"execution":{"id":'
    '"123e4567-e89b-12d3-a456-426614174000","initiator":"com.test.service","domain":null},"meta":{}}'
)
VECTOR_2 = (
    '{"orchestrator":{"name":"arvo.orc.inc","version":"0.0.1"},"execution":{"id":'
    '"11111111-1111-4111-8111-111111111111","initiator":"arvo.orc.number.modifier","domain":"test.domain"},'
    '"meta":{"redirectto":"arvo.orc.number.modifier"}}'
)
ID_VECTOR_UUID = "00000000-0000-4000-8000-000000000000"
ID_VECTOR = "eJyrViotzUxRslIygAJdMGECIixgXBhQ0lEqS8wpTQUqTy4tLsnP1c0vSs7QNVSqBQBaQxIP"

UNICODE_DATA: dict[str, Any] = {
    "greeting": "héllo wörld — 世界 🎉",
    "quote": 'she said "hi"\\ and left\n\ttab',
    "control": "\u0001\u001f\u007f",
    "separators": "line\u2028para\u2029end",
    "numbers": [0, -1, 1.5, 0.1, 12345678901234, 9007199254740991],
    "nested": {"empty": {}, "list": [], "flag": False, "nothing": None},
}


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class PythonMade:
    """What the Python side created, by label."""

    subjects: dict[str, str]
    events: dict[str, ArvoEvent]
    create_contents: dict[str, dict[str, Any]]
    ids: dict[str, str]


@pytest.fixture(scope="module")
def oracle_dir() -> Path:
    if not node_available():
        pytest.skip(NODE_MISSING_REASON)
    ensure_npm_ci(ORACLE_DIR)
    return ORACLE_DIR


@pytest.fixture(scope="module")
def node_made(oracle_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = run_node_json(oracle_dir, ORACLE, ["create"])
    return result


def _make_python_artefacts() -> PythonMade:
    parent = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.py.parent",
        initiator="com.py.initiator",
        version="1.0.0",
        domain="test.domain",
        meta={"redirectto": "com.py.reply", "note": "héllo 🎉"},
    )
    subjects = {
        "new_with_domain": parent,
        "new_without_domain": ArvoOrchestrationSubject.new(
            orchestrator="arvo.orc.py.plain", initiator="com.py.initiator"
        ),
        "from_parent": ArvoOrchestrationSubject.from_parent(
            orchestrator="arvo.orc.py.child", subject=parent, version="2.0.0", meta={"step": "2"}
        ),
        "vector_1": ArvoOrchestrationSubject.create(json.loads(VECTOR_1)),
        "vector_2": ArvoOrchestrationSubject.create(json.loads(VECTOR_2)),
    }
    create_contents = {
        "vector_1": json.loads(VECTOR_1),
        "vector_2": json.loads(VECTOR_2),
        "unicode_and_escapes": {
            "orchestrator": {"name": "arvo.orc.unicode", "version": "1.2.3"},
            "execution": {"id": "exec-ü-世界", "initiator": "com.unicode.initiator", "domain": "a.b.c1"},
            "meta": {
                "redirectto": "arvo.orc.parent",
                "note": 'héllo 🎉 "quoted" \\ back\nnl\u0001\u001f\u007f \u2028 /slash',
            },
        },
        "extra_keys_kept": {
            "orchestrator": {"name": "arvo.orc.extra", "version": "0.0.0", "build": "x"},
            "execution": {"id": "e1", "initiator": "com.extra.initiator", "domain": None},
            "meta": {},
            "future": {"k": [1, 2]},
        },
    }
    events = {
        "full": create_arvo_event(
            id=EventIdSpec(deduplication="ARVO_MANAGED", value="custom-orch-1"),
            source="com.py.source",
            type="com.py.event.created",
            subject=parent,
            data=UNICODE_DATA,
            dataschema="#/py/contract/1.0.0",
            to="com.py.consumer",
            accesscontrol="role:admin;team:core",
            redirectto="com.py.redirect",
            executionunits=1.5,
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            tracestate="vendor=value",
            parentid="parent-event-id",
            domain="test.domain",
            extensions={"tenant": "acme", "flag": True, "count": 3, "ratio": 0.5, "nothing": None},
            time=FIXED_TIME,
        ),
        "minimal_defaults": create_arvo_event(
            source="com.py.source", type="com.py.event.minimal", subject="plain", data={}
        ),
        # A child init event carrying its parent's deadline (issue 13): a plain custom extension to
        # arvo-core, which must keep it.
        "deadline_extension": create_arvo_event(
            source="arvo.orc.py.parent",
            type="arvo.orc.py.child",
            subject=parent,
            data={"parentSubject$$": parent},
            to="arvo.orc.py.child",
            extensions={DEADLINE_EXTENSION: "2026-12-05T12:05:00.000+00:00"},
            time=FIXED_TIME,
        ),
        # The event that fires a durable timer (issue 13).
        "timer_event": create_timer_event(
            subject=parent,
            orchestrator="arvo.orc.py.parent",
            timer_id="arvo.deadline",
            due_ms=1_764_936_300_000,
        ),
        "encoded_fields": create_arvo_event(
            id=EventIdSpec(deduplication="DEVELOPER_MANAGED", value="  custom-id  "),
            source="py source with spaces",
            type="com.py.event.encoded",
            subject="subject with spaces/é",
            data={"a": 1},
            redirectto="redirect to/é",
            parentid="parent event with spaces",
            time=FIXED_TIME,
        ),
        "plain_json_without_to": ArvoEvent(
            id="py-plain",
            source="com.py.source",
            type="com.py.plain.json",
            subject="plain",
            data={"ok": True},
            time="2024-02-29T23:59:59Z",
            datacontenttype="application/json",
        ),
    }
    ids = {
        "vector": create_arvo_event_id(
            EventIdSpec(deduplication="ARVO_MANAGED", value="custom-orch-1"), uuid=ID_VECTOR_UUID
        ),
        "unicode_value": create_arvo_event_id(
            EventIdSpec(deduplication="ARVO_MANAGED", value='  wörld ✓ "q" \\ \u2028 mid  '),
            uuid=ID_VECTOR_UUID,
        ),
        "random_uuid": events["full"].id,
    }
    return PythonMade(subjects=subjects, events=events, create_contents=create_contents, ids=ids)


@pytest.fixture(scope="module")
def python_made() -> PythonMade:
    return _make_python_artefacts()


# Subjects on which the two sides disagree on purpose (see the module docstring).
def _unpadded(subject: str) -> str:
    return subject.rstrip("=")


def _url_safe(subject: str) -> str:
    return subject.translate(str.maketrans("+/", "-_"))


def _gzip_wrapped(content: str) -> str:
    return base64.b64encode(gzip.compress(content.encode(), mtime=0)).decode()


def _zlib_wrapped(content: str) -> str:
    return base64.b64encode(zlib.compress(content.encode())).decode()


VECTOR_1_SUBJECT = _zlib_wrapped(VECTOR_1)
LENIENT_ONLY_SUBJECTS = {
    "unpadded": _unpadded(VECTOR_1_SUBJECT),
    "url_safe": _url_safe(VECTOR_1_SUBJECT),
    "gzip_wrapper": _gzip_wrapped(VECTOR_1),
}
INVALID_3X_DOMAIN_SUBJECT = _zlib_wrapped(VECTOR_1.replace('"domain":null', '"domain":"UPPER.case"'))


# Invalid events: (label, mutation of a valid wire event, Node 2.2.13 accepts?).
def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        event[key] = value

    return mutate


INVALID_EVENTS: list[tuple[str, Callable[[dict[str, Any]], None], bool]] = [
    ("type_two_segments", _set("type", "com.test"), False),
    ("time_without_offset", _set("time", "2023-05-01T12:00:00"), False),
    ("time_feb_29_non_leap", _set("time", "2023-02-29T12:00:00Z"), False),
    ("subject_with_space", _set("subject", "has space"), False),
    ("source_reserved_escape", _set("source", "a%2F"), False),
    ("source_lowercase_escape", _set("source", "%c3%a9"), False),
    ("specversion_0_3", _set("specversion", "0.3"), False),
    ("data_array", _set("data", [1, 2]), False),
    ("data_null", _set("data", None), False),
    ("arvo_content_type_without_to", _set("to", None), False),
    ("text_content_type", _set("datacontenttype", "text/plain"), False),
    ("extension_key_upper_case", _set("Tenant", "x"), False),
    ("extension_value_object", _set("tenant", {"a": 1}), False),
    ("empty_id", _set("id", ""), False),
    # Stricter than 2.x: attributes 2.x does not know are plain extensions to it.
    ("domain_upper_case", _set("domain", "UPPER"), True),
    ("parentid_empty", _set("parentid", ""), True),
    ("data_unsafe_integer", _set("data", {"n": 9007199254740993}), True),
]


def _invalid_event_json(mutate: Callable[[dict[str, Any]], None]) -> str:
    event = create_arvo_event(
        id="invalid-base",
        source="com.py.source",
        type="com.py.event.base",
        subject="plain",
        data={"a": 1},
        time=FIXED_TIME,
    ).to_dict()
    mutate(event)
    # json (not orjson): integers beyond 64 bits must reach Node verbatim.
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


@pytest.fixture(scope="module")
def node_parsed(oracle_dir: Path, python_made: PythonMade) -> dict[str, Any]:
    subjects = [{"label": label, "subject": s} for label, s in python_made.subjects.items()]
    subjects += [{"label": f"lenient/{label}", "subject": s} for label, s in LENIENT_ONLY_SUBJECTS.items()]
    subjects.append({"label": "invalid_3x_domain", "subject": INVALID_3X_DOMAIN_SUBJECT})
    events = [{"label": label, "json": e.to_json().decode()} for label, e in python_made.events.items()]
    events += [
        {"label": f"invalid/{label}", "json": _invalid_event_json(mutate)}
        for label, mutate, _ in INVALID_EVENTS
    ]
    payload = {
        "subjects": subjects,
        "events": events,
        "create": [{"label": label, "content": c} for label, c in python_made.create_contents.items()],
        "encodeIds": [
            {"label": "vector", "content": {"uuid": ID_VECTOR_UUID, "value": "custom-orch-1"}},
            {
                "label": "unicode_value",
                "content": {"uuid": ID_VECTOR_UUID, "value": 'wörld ✓ "q" \\ \u2028 mid'},
            },
        ],
        "decodeIds": [{"label": label, "id": i} for label, i in python_made.ids.items()],
    }
    result: dict[str, Any] = run_node_json(oracle_dir, ORACLE, ["parse"], payload=payload)
    return result


def _by_label(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["label"]: item for item in items}


def _accepted(item: dict[str, Any]) -> dict[str, Any]:
    assert item["ok"], f"arvo-core rejected {item['label']}: {item.get('error')}"
    return item


# --------------------------------------------------------------------------- the pinned package


def test_pinned_arvo_core_features(node_made: dict[str, Any]) -> None:
    # If this fails after a version bump, re-check the module docstring and the tests below.
    assert node_made["versions"]["arvo-core"] == "2.2.13"
    assert node_made["features"] == {
        "createArvoEventId": False,
        "parseArvoEventId": False,
        "ArvoDomain": False,
        "subjectSchemaHasExecutionDomain": False,
        "subjectSchemaUnknownKeys": "strip",
        "createArvoEventKeepsParentid": False,
        "createArvoEventKeepsDomain": False,
        "eventKeys": [
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
        ],
    }


# --------------------------------------------------------------------------- Node made, Python reads


def test_python_parses_every_node_subject(node_made: dict[str, Any]) -> None:
    assert len(node_made["subjects"]) == 5
    for item in node_made["subjects"]:
        parsed = ArvoOrchestrationSubject.parse(item["subject"])
        node_content = item["content"]
        assert parsed.to_dict() == node_content, item["label"]
        assert "domain" not in node_content["execution"]
        assert parsed.domain is None
        assert parsed.name == node_content["orchestrator"]["name"]
        assert parsed.version == node_content["orchestrator"]["version"]
        assert parsed.execution_id == node_content["execution"]["id"]
        assert parsed.initiator == node_content["execution"]["initiator"]
        assert dict(parsed.meta) == node_content["meta"]


def test_node_subject_helpers_behave_like_ours(node_made: dict[str, Any]) -> None:
    subjects = _by_label(node_made["subjects"])
    parent = ArvoOrchestrationSubject.parse(subjects["new_with_meta"]["subject"])
    child = ArvoOrchestrationSubject.parse(subjects["from_parent"]["subject"])
    assert child.initiator == parent.name
    assert dict(child.meta) == {"redirectto": "com.reply.here", "keep": "child", "extra": "x"}
    assert child.execution_id != parent.execution_id
    assert ArvoOrchestrationSubject.parse(subjects["new_wildcard_version"]["subject"]).version == "0.0.0"
    unicode_meta = ArvoOrchestrationSubject.parse(subjects["create_unicode_meta"]["subject"])
    assert unicode_meta.meta["note"] == 'héllo 🎉 "quoted" \\ back\nnl\u0001'


def test_python_create_of_2x_content_requires_the_domain_key(node_made: dict[str, Any]) -> None:
    content = _by_label(node_made["subjects"])["create_2x_vector_no_domain"]["content"]
    with pytest.raises(SubjectError, match=r"execution\.domain"):
        ArvoOrchestrationSubject.create(content)
    # With the key added, the bytes are the spec vector's (2.x create keeps the key: see below).
    content["execution"]["domain"] = None
    assert ArvoOrchestrationSubject.create(content) == VECTOR_1_SUBJECT


def test_python_parses_every_node_event(node_made: dict[str, Any]) -> None:
    assert len(node_made["events"]) == 6
    for item in node_made["events"]:
        node_json: str = item["json"]
        event = ArvoEvent.from_json(node_json)
        node_dict = orjson.loads(node_json)
        ours = event.to_dict()
        assert ours.pop("parentid") is None, item["label"]
        assert ours.pop("domain") is None, item["label"]
        assert ours == node_dict, item["label"]


def test_python_reads_node_event_fields(node_made: dict[str, Any]) -> None:
    events = {
        label: ArvoEvent.from_json(item["json"]) for label, item in _by_label(node_made["events"]).items()
    }
    full = events["full"]
    assert full.data == UNICODE_DATA
    assert full.extensions == {"customstr": "value", "customflag": True, "customnum": 42, "customnull": None}
    assert full.redirectto == "com.test.redirect"
    assert full.executionunits == 1.25
    assert full.accesscontrol == "role:admin;team:core"
    assert ArvoOrchestrationSubject.parse(full.subject).name == "arvo.orc.parent"

    minimal = events["minimal_defaults"]
    assert minimal.to == minimal.type
    assert minimal.time.endswith("+00:00")

    encoded = events["encodes_uri_fields"]
    assert encoded.source == "test%20source%20with%20spaces"
    assert encoded.subject == "subject%20with%20spaces/%C3%A9"
    assert encoded.redirectto == "redirect%20to/%C3%A9"
    assert encoded.executionunits == 0

    dropped = events["ignores_parentid_and_domain"]
    assert dropped.parentid is None
    assert dropped.domain is None
    assert dropped.extensions == {}

    assert events["non_arvo_content_type_without_to_default"].to is None
    assert events["float_formats"].data["big"] == 1e21


def test_python_reencodes_node_events_byte_for_byte_plus_null_tail(node_made: dict[str, Any]) -> None:
    for item in node_made["events"]:
        node_bytes = item["json"].encode("utf-8")
        ours = ArvoEvent.from_json(item["json"]).to_json()
        assert ours == node_bytes[:-1] + NULL_TAIL, item["label"]


# --------------------------------------------------------------------------- Python made, Node reads


def test_node_parses_every_python_subject(node_parsed: dict[str, Any], python_made: PythonMade) -> None:
    results = _by_label(node_parsed["subjects"])
    for label, subject in python_made.subjects.items():
        node_content = _accepted(results[label])["content"]
        # 2.x returns the raw decoded JSON: our domain key survives, null or not.
        assert node_content == ArvoOrchestrationSubject.parse(subject).to_dict(), label
    assert results["new_with_domain"]["content"]["execution"]["domain"] == "test.domain"
    assert results["from_parent"]["content"]["execution"]["domain"] == "test.domain"
    assert results["new_without_domain"]["content"]["execution"]["domain"] is None


def test_node_child_of_python_subject_drops_the_domain(
    node_parsed: dict[str, Any], python_made: PythonMade
) -> None:
    children = _by_label(node_parsed["children"])
    child_item = _accepted(children["new_with_domain"])
    assert "domain" not in child_item["content"]["execution"]
    child = ArvoOrchestrationSubject.parse(child_item["subject"])
    parent = ArvoOrchestrationSubject.parse(python_made.subjects["new_with_domain"])
    assert child.domain is None
    assert child.initiator == parent.name
    assert child.name == "arvo.orc.node.child"
    assert child.version == "3.0.0"
    assert dict(child.meta) == {**parent.meta, "node": "child"}


def test_subject_create_is_byte_identical_for_equal_content(
    node_parsed: dict[str, Any], python_made: PythonMade
) -> None:
    results = _by_label(node_parsed["create"])
    for label, content in python_made.create_contents.items():
        node_subject = _accepted(results[label])["subject"]
        assert ArvoOrchestrationSubject.create(content) == node_subject, label
    assert results["vector_1"]["subject"] == python_made.subjects["vector_1"]


def test_node_decodes_subjects_our_strict_parse_rejects(node_parsed: dict[str, Any]) -> None:
    results = _by_label(node_parsed["subjects"])
    for label, subject in LENIENT_ONLY_SUBJECTS.items():
        assert _accepted(results[f"lenient/{label}"])["content"] == json.loads(VECTOR_1), label
        assert not ArvoOrchestrationSubject.is_valid(subject), label
        assert ArvoOrchestrationSubject.parse(subject, lenient=True).to_dict() == json.loads(VECTOR_1), label


def test_node_accepts_a_domain_that_breaks_the_3x_rule(node_parsed: dict[str, Any]) -> None:
    node_content = _accepted(_by_label(node_parsed["subjects"])["invalid_3x_domain"])["content"]
    assert node_content["execution"]["domain"] == "UPPER.case"
    with pytest.raises(SubjectError, match="Domain must contain only lowercase letters"):
        ArvoOrchestrationSubject.parse(INVALID_3X_DOMAIN_SUBJECT)


def test_node_accepts_every_python_event(node_parsed: dict[str, Any], python_made: PythonMade) -> None:
    results = _by_label(node_parsed["events"])
    for label, event in python_made.events.items():
        item = _accepted(results[label])
        node_json: str = item["json"]
        # 2.x carries parentid/domain as custom extensions: same keys and values, other order.
        assert orjson.loads(node_json) == event.to_dict(), label
        assert item["extensions"] == {**event.extensions, "parentid": event.parentid, "domain": event.domain}
        assert ArvoEvent.from_json(node_json) == event, label


def test_node_sees_python_event_extension_order(node_parsed: dict[str, Any], python_made: PythonMade) -> None:
    node_keys = list(orjson.loads(_by_label(node_parsed["events"])["full"]["json"]))
    ours = list(python_made.events["full"].to_dict())
    assert ours[-2:] == ["parentid", "domain"]
    time_at = node_keys.index("time")
    assert node_keys[time_at + 1 : time_at + 8] == [
        "tenant",
        "flag",
        "count",
        "ratio",
        "nothing",
        "parentid",
        "domain",
    ]


@pytest.mark.parametrize(
    ("label", "mutate", "node_accepts"), INVALID_EVENTS, ids=[c[0] for c in INVALID_EVENTS]
)
def test_invalid_events_are_rejected_like_arvo_core(
    node_parsed: dict[str, Any], label: str, mutate: Callable[[dict[str, Any]], None], node_accepts: bool
) -> None:
    with pytest.raises(ArvoEventValidationError):
        ArvoEvent.from_json(_invalid_event_json(mutate))
    node_result = _by_label(node_parsed["events"])[f"invalid/{label}"]
    assert node_result["ok"] is node_accepts, node_result.get("error")


# --------------------------------------------------------------------------- event ids


def test_arvo_managed_ids_match_node_pako(node_parsed: dict[str, Any], python_made: PythonMade) -> None:
    encoded = _by_label(node_parsed["encodeIds"])
    assert encoded["vector"]["id"] == python_made.ids["vector"] == ID_VECTOR
    assert encoded["unicode_value"]["id"] == python_made.ids["unicode_value"]


def test_node_pako_decodes_python_ids(node_parsed: dict[str, Any], python_made: PythonMade) -> None:
    decoded = _by_label(node_parsed["decodeIds"])
    for label, event_id in python_made.ids.items():
        ours, error = parse_arvo_event_id(event_id)
        assert error is None, label
        assert _accepted(decoded[label])["content"] == ours, label
    assert decoded["random_uuid"]["content"]["value"] == "custom-orch-1"
