"""Contracts (spec section 2): construction rules, versions, schemas, generated contracts, dataschemas."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.arvo.contract import (
    ARVO_ORCHESTRATOR_CONTRACT_TYPE,
    PARENT_SUBJECT_KEY,
    WILDCARD_VERSION,
    ArvoContract,
    ArvoErrorSchema,
    ArvoOrchestratorEventTypeGen,
    ContractRecord,
    ContractSchema,
    EventDataschemaUtil,
    ParsedDataschema,
    VersionedArvoContract,
    compare_semantic_versions,
    create_arvo_contract,
    create_arvo_orchestrator_contract,
    create_simple_arvo_contract,
)
from service.arvo.errors import ArvoValidationError
from service.arvo.event import create_arvo_event


class Value(BaseModel):
    key: str


class Result(BaseModel):
    value: int


class Failure(BaseModel):
    reason: str


class Person(BaseModel):
    name: str
    age: int
    nickname: str | None


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class Item(BaseModel):
    label: str


class Basket(BaseModel):
    items: list[Item]


class Aliased(BaseModel):
    first_name: str = Field(alias="firstName")


def make_contract(**overrides: Any) -> ArvoContract:
    params: dict[str, Any] = {
        "uri": "#/test/value/read",
        "type": "com.value.read",
        "versions": {
            "0.0.1": {"accepts": Value, "emits": {"evt.value.read.success": Result}},
            "0.0.2": {
                "accepts": Value,
                "emits": {"evt.value.read.success": Result, "evt.value.read.failure": Failure},
            },
        },
    }
    params.update(overrides)
    return ArvoContract(**params)


def raised_message(exc_type: type[BaseException], **overrides: Any) -> str:
    with pytest.raises(exc_type) as caught:
        make_contract(**overrides)
    return str(caught.value)


# ---------------------------------------------------------------------------------------- ContractSchema


def test_validate_returns_a_stripped_copy_without_unknown_keys() -> None:
    schema = ContractSchema(Person)
    data = {"name": "Ada", "age": 36, "nickname": None, "unknown": 1}
    assert schema.validate(data) == {"name": "Ada", "age": 36, "nickname": None}
    assert "unknown" in data


def test_nullable_fields_are_required_unless_the_model_gives_a_default() -> None:
    with pytest.raises(ValidationError):
        ContractSchema(Person).validate({"name": "Ada", "age": 1})


def test_extra_allow_models_are_still_stripped_at_the_top_level() -> None:
    assert ContractSchema(Loose).validate({"name": "x", "other": 1}) == {"name": "x"}


def test_extra_forbid_models_reject_unknown_keys_like_zod_strict() -> None:
    with pytest.raises(ValidationError):
        ContractSchema(Strict).validate({"name": "x", "other": 1})


def test_validate_dumps_by_alias() -> None:
    assert ContractSchema(Aliased).validate({"firstName": "Ada"}) == {"firstName": "Ada"}


def test_validate_accepts_read_only_mappings() -> None:
    from types import MappingProxyType

    assert ContractSchema(Value).validate(MappingProxyType({"key": "k"})) == {"key": "k"}


def test_problems_report_path_rule_message_and_value() -> None:
    problems = ContractSchema(Basket).problems({"items": [{"label": "ok"}, {"label": 5}]})
    assert len(problems) == 1
    problem = problems[0]
    assert problem.path == "data.items[1].label"
    assert problem.rule == "string_type"
    assert "valid string" in problem.message
    assert problem.value == "5"


def test_problems_are_empty_for_valid_data() -> None:
    assert ContractSchema(Value).problems({"key": "k"}) == []


def test_problems_use_the_given_path_prefix() -> None:
    assert ContractSchema(Value).problems({}, path="payload")[0].path == "payload.key"


def test_json_schema_is_the_pydantic_schema_by_alias_and_a_fresh_copy() -> None:
    schema = ContractSchema(Aliased)
    first = schema.json_schema()
    assert first["properties"]["firstName"]["type"] == "string"
    first["properties"].clear()
    assert schema.json_schema()["properties"]


def test_contract_schema_requires_a_pydantic_model() -> None:
    with pytest.raises(TypeError, match=r"BaseModel subclass"):
        ContractSchema(dict)  # type: ignore[arg-type]


def test_contract_schemas_compare_by_model() -> None:
    assert ContractSchema(Value) == ContractSchema(Value)
    assert ContractSchema(Value) != ContractSchema(Result)
    assert hash(ContractSchema(Value)) == hash(ContractSchema(Value))
    assert repr(ContractSchema(Value)) == "ContractSchema(Value)"


def test_arvo_error_schema_requires_all_three_keys() -> None:
    schema = ContractSchema(ArvoErrorSchema)
    assert schema.validate({"errorName": "E", "errorMessage": "m", "errorStack": None}) == {
        "errorName": "E",
        "errorMessage": "m",
        "errorStack": None,
    }
    with pytest.raises(ValidationError):
        schema.validate({"errorName": "E", "errorMessage": "m"})


# ------------------------------------------------------------------------------------ ArvoContract rules


def test_contract_exposes_its_parameters() -> None:
    contract = make_contract(domain="test.domain", description="reads", metadata={"owner": "me"})
    assert contract.uri == "#/test/value/read"
    assert contract.type == "com.value.read"
    assert contract.domain == "test.domain"
    assert contract.description == "reads"
    assert dict(contract.metadata) == {"owner": "me"}
    assert list(contract.versions) == ["0.0.1", "0.0.2"]
    assert contract.versions["0.0.1"].accepts == ContractSchema(Value)
    assert "ArvoContract(uri='#/test/value/read'" in repr(contract)


def test_contract_defaults_domain_description_and_metadata() -> None:
    contract = make_contract()
    assert contract.domain is None
    assert contract.description is None
    assert dict(contract.metadata) == {}


def test_contract_metadata_is_read_only() -> None:
    contract = make_contract(metadata={"a": 1})
    with pytest.raises(TypeError):
        contract.metadata["a"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"uri": ""}, "URI must be a non-empty string"),
        ({"uri": "a b"}, "The URI must a valid URI string"),
        ({"uri": "a%2F"}, "The URI must a valid URI string"),
        ({"type": "com.test"}, "Type should be prefixed with a reverse-DNS name"),
        ({"type": "Com.test.x"}, "Type should be prefixed with a reverse-DNS name"),
        ({"domain": ""}, "Domain must be non-empty string"),
        ({"domain": "test.TEST"}, "Domain must contain only lowercase letters, numbers, and dots"),
        ({"domain": 5}, "Domain must be a string or null"),
        ({"type": ""}, "Type must be a non-empty string"),
        (
            {"versions": {"1.0": {"accepts": Value, "emits": {}}}},
            "Invalid version format of the semantic version",
        ),
        ({"versions": {"1.0.0": {"accepts": Value, "emits": {"evt.bad": Result}}}}, "reverse-DNS"),
    ],
)
def test_contract_rejects_malformed_parameters(overrides: dict[str, Any], message: str) -> None:
    assert message in raised_message(ArvoValidationError, **overrides)


def test_contract_validation_checks_uri_before_type_before_domain() -> None:
    text = raised_message(ArvoValidationError, uri="", type="bad", domain="BAD")
    assert "URI must be a non-empty string" in text
    text = raised_message(ArvoValidationError, type="bad", domain="BAD")
    assert "Type should be prefixed" in text


def test_contract_rejects_the_wildcard_version() -> None:
    text = raised_message(ValueError, versions={"0.0.0": {"accepts": Value, "emits": {}}})
    assert text == (
        "For contract (uri=#/test/value/read), the version cannot be '0.0.0'. It is a reserved version type."
    )


def test_contract_requires_at_least_one_version() -> None:
    assert (
        raised_message(ValueError, versions={})
        == "An ArvoContract (uri=#/test/value/read) must have at least one version"
    )


def test_contract_allows_a_version_that_emits_nothing() -> None:
    contract = make_contract(versions={"1.0.0": {"accepts": Value, "emits": {}}})
    assert contract.version("1.0.0").emit_list == []


@pytest.mark.parametrize(
    "versions",
    [
        ["not", "a", "mapping"],
        {"1.0.0": {"accepts": Value}},
        {"1.0.0": {"accepts": Value, "emits": [Result]}},
        {"1.0.0": {"accepts": dict, "emits": {}}},
    ],
)
def test_contract_rejects_malformed_version_specs(versions: Any) -> None:
    with pytest.raises(TypeError):
        make_contract(versions=versions)


def test_contract_accepts_contract_schemas_as_well_as_models() -> None:
    contract = make_contract(versions={"1.0.0": {"accepts": ContractSchema(Value), "emits": {}}})
    assert contract.version("1.0.0").accepts.schema.model is Value


# ---------------------------------------------------------------------------------------------- versions


def test_version_latest_and_any_are_the_highest_version() -> None:
    contract = make_contract(
        versions={
            "0.9.0": {"accepts": Value, "emits": {}},
            "0.10.0": {"accepts": Value, "emits": {}},
            "0.2.0": {"accepts": Value, "emits": {}},
        }
    )
    assert contract.version("latest").version == "0.10.0"
    assert contract.version("any").version == "0.10.0"
    assert contract.version("oldest").version == "0.2.0"


def test_sorted_versions_compare_numerically() -> None:
    contract = make_contract(
        versions={v: {"accepts": Value, "emits": {}} for v in ("1.10.0", "1.9.0", "01.2.0", "0.0.10")}
    )
    assert contract.sorted_versions() == ["0.0.10", "01.2.0", "1.9.0", "1.10.0"]
    assert contract.sorted_versions("DESC") == ["1.10.0", "1.9.0", "01.2.0", "0.0.10"]


def test_version_rejects_an_unknown_or_wildcard_version() -> None:
    contract = make_contract()
    with pytest.raises(
        ValueError, match=r"^The contract \(uri=#/test/value/read\) does not have version=9.9.9$"
    ):
        contract.version("9.9.9")
    with pytest.raises(ValueError, match=r"does not have version=0.0.0"):
        contract.version(WILDCARD_VERSION)


def test_versioned_contract_construction_checks_the_version() -> None:
    with pytest.raises(ValueError, match=r"does not have version=3.0.0"):
        VersionedArvoContract(contract=make_contract(), version="3.0.0")


def test_system_error_type_is_sys_type_error() -> None:
    contract = make_contract()
    assert contract.system_error == ContractRecord(
        type="sys.com.value.read.error", schema=ContractSchema(ArvoErrorSchema)
    )


def test_versioned_contract_view() -> None:
    contract = make_contract(domain="dom", description="d", metadata={"m": 1})
    versioned = contract.version("0.0.2")
    assert versioned.contract is contract
    assert versioned.uri == contract.uri
    assert versioned.version == "0.0.2"
    assert versioned.description == "d"
    assert versioned.domain == "dom"
    assert dict(versioned.metadata) == {"m": 1}
    assert versioned.accepts == ContractRecord(type="com.value.read", schema=ContractSchema(Value))
    assert list(versioned.emits) == ["evt.value.read.success", "evt.value.read.failure"]
    assert [record.type for record in versioned.emit_list] == [
        "evt.value.read.success",
        "evt.value.read.failure",
    ]
    assert versioned.dataschema == "#/test/value/read/0.0.2"
    assert versioned.system_error.type == "sys.com.value.read.error"
    assert versioned.system_error.dataschema == "#/test/value/read/0.0.0"
    assert versioned.system_error.schema.model is ArvoErrorSchema
    assert not versioned.is_orchestrator_contract
    assert versioned.complete_event_type is None
    assert repr(versioned) == "VersionedArvoContract(uri='#/test/value/read', version='0.0.2')"


def test_compare_semantic_versions_orders_major_then_minor_then_patch() -> None:
    assert compare_semantic_versions("1.0.0", "1.0.0") == 0
    assert compare_semantic_versions("2.0.0", "1.9.9") > 0
    assert compare_semantic_versions("1.2.0", "1.10.0") < 0
    assert compare_semantic_versions("1.2.3", "1.2.10") < 0
    with pytest.raises(ValueError, match=r"not a semantic version"):
        compare_semantic_versions("1.2", "1.2.3")


def test_semver_check_is_ascii_only() -> None:
    with pytest.raises(ValueError, match=r"not a semantic version"):
        compare_semantic_versions("\u0661.0.0", "1.0.0")


# ----------------------------------------------------------------------------------- export / JSON schema


def test_export_returns_the_constructor_parameters() -> None:
    contract = make_contract(metadata={"a": 1})
    exported = contract.export()
    assert exported["uri"] == "#/test/value/read"
    assert exported["type"] == "com.value.read"
    assert exported["metadata"] == {"a": 1}
    assert exported["versions"]["0.0.2"] == {
        "accepts": Value,
        "emits": {"evt.value.read.success": Result, "evt.value.read.failure": Failure},
    }
    assert ArvoContract(**exported).export() == exported


def test_to_json_schema_has_the_shape_of_the_original() -> None:
    contract = make_contract(domain="dom", description="desc", metadata={"a": 1})
    document = contract.to_json_schema()
    assert list(document) == ["uri", "domain", "description", "metadata", "versions"]
    first = document["versions"][0]
    assert list(first) == ["domain", "version", "accepts", "systemError", "emits", "metadata"]
    assert first["version"] == "0.0.1"
    assert first["accepts"]["type"] == "com.value.read"
    assert first["accepts"]["schema"]["properties"]["key"]["type"] == "string"
    assert first["systemError"]["type"] == "sys.com.value.read.error"
    assert first["systemError"]["schema"]["required"] == ["errorName", "errorMessage", "errorStack"]
    assert first["emits"][0]["type"] == "evt.value.read.success"


def test_versioned_to_json_schema() -> None:
    document = make_contract().version("0.0.1").to_json_schema()
    assert document["version"] == "0.0.1"
    assert document["accepts"]["type"] == "com.value.read"
    assert [emit["type"] for emit in document["emits"]] == ["evt.value.read.success"]
    assert document["systemError"]["type"] == "sys.com.value.read.error"


# ------------------------------------------------------------------------------ create_arvo_contract


def test_create_arvo_contract_rejects_an_accepts_type_with_the_orchestrator_prefix() -> None:
    with pytest.raises(ValueError, match=r"must not start") as caught:
        create_arvo_contract(
            uri="#/x",
            type="arvo.orc.something",
            versions={"1.0.0": {"accepts": Value, "emits": {}}},
        )
    assert str(caught.value) == (
        "In contract (uri=#/x), the 'accepts' event (type=arvo.orc.something) must not start\n"
        "with 'arvo.orc' because this is a reserved pattern\n"
        "for Arvo orchestrators."
    )


def test_create_arvo_contract_rejects_an_emit_type_with_the_orchestrator_prefix() -> None:
    with pytest.raises(
        ValueError, match=r"\(uri=#/x, version=1.0.0\), the 'emits' event \(type=arvo.orc.x.done\)"
    ):
        create_arvo_contract(
            uri="#/x",
            type="com.x.y",
            versions={"1.0.0": {"accepts": Value, "emits": {"arvo.orc.x.done": Result}}},
        )


def test_create_arvo_contract_prefix_ban_is_a_plain_prefix_test() -> None:
    with pytest.raises(ValueError, match=r"must not start"):
        create_arvo_contract(
            uri="#/x", type="arvo.orchestra.x", versions={"1.0.0": {"accepts": Value, "emits": {}}}
        )


def test_create_arvo_contract_builds_a_contract() -> None:
    contract = create_arvo_contract(
        uri="#/x",
        type="com.x.y",
        versions={"1.0.0": {"accepts": Value, "emits": {"evt.x.y": Result}}},
        domain="d",
        metadata={"k": "v"},
        description="desc",
    )
    assert (contract.domain, contract.description, dict(contract.metadata)) == ("d", "desc", {"k": "v"})


# ---------------------------------------------------------------------------- create_simple_arvo_contract


def test_simple_contract_types_and_metadata() -> None:
    contract = create_simple_arvo_contract(
        uri="#/simple",
        type="value.read",
        versions={"1.0.0": {"accepts": Value, "emits": Result}},
        metadata={"contractType": "mine", "owner": "me"},
    )
    versioned = contract.version("latest")
    assert contract.type == "com.value.read"
    assert list(versioned.emits) == ["evt.value.read.success"]
    assert contract.system_error.type == "sys.com.value.read.error"
    assert dict(contract.metadata) == {
        "contractType": "SimpleArvoContract",
        "rootType": "value.read",
        "owner": "me",
    }


def test_simple_contract_rejects_malformed_versions() -> None:
    with pytest.raises(TypeError):
        create_simple_arvo_contract(uri="#/s", type="a.b", versions={"1.0.0": {"accepts": Value}})
    with pytest.raises(TypeError):
        create_simple_arvo_contract(uri="#/s", type="a.b", versions=[])  # type: ignore[arg-type]


# ----------------------------------------------------------------------- create_arvo_orchestrator_contract


class Init(BaseModel):
    delta: int


class Done(BaseModel):
    final: int


def orchestrator_contract(**overrides: Any) -> ArvoContract:
    params: dict[str, Any] = {
        "uri": "#/orc/inc",
        "name": "inc",
        "versions": {"1.0.0": {"init": Init, "complete": Done}},
    }
    params.update(overrides)
    return create_arvo_orchestrator_contract(**params)


def test_orchestrator_contract_types_and_metadata() -> None:
    contract = orchestrator_contract(
        metadata={"owner": "me", "rootType": "overridden"}, domain="d", description="x"
    )
    versioned = contract.version("1.0.0")
    assert contract.type == "arvo.orc.inc"
    assert list(versioned.emits) == ["arvo.orc.inc.done"]
    assert contract.system_error.type == "sys.arvo.orc.inc.error"
    assert dict(contract.metadata) == {
        "owner": "me",
        "contractType": ARVO_ORCHESTRATOR_CONTRACT_TYPE,
        "rootType": "inc",
        "completeEventType": "arvo.orc.inc.done",
        "initEventType": "arvo.orc.inc",
    }
    assert versioned.is_orchestrator_contract
    assert versioned.complete_event_type == "arvo.orc.inc.done"
    assert (contract.domain, contract.description) == ("d", "x")


def test_orchestrator_accepts_schema_requires_parent_subject_key() -> None:
    schema = orchestrator_contract().version("1.0.0").accepts.schema
    with pytest.raises(ValidationError):
        schema.validate({"delta": 1})
    assert schema.validate({"delta": 1, PARENT_SUBJECT_KEY: None}) == {PARENT_SUBJECT_KEY: None, "delta": 1}
    assert schema.validate({"delta": 1, PARENT_SUBJECT_KEY: "eJx"})[PARENT_SUBJECT_KEY] == "eJx"


def test_orchestrator_accepts_schema_puts_parent_subject_first_like_zod_merge() -> None:
    schema = orchestrator_contract().version("1.0.0").accepts.schema
    assert list(schema.validate({"delta": 1, PARENT_SUBJECT_KEY: None})) == [PARENT_SUBJECT_KEY, "delta"]


def test_orchestrator_accepts_schema_rejects_an_empty_parent_subject() -> None:
    problems = (
        orchestrator_contract().version("1.0.0").accepts.schema.problems({"delta": 1, PARENT_SUBJECT_KEY: ""})
    )
    assert [(p.path, p.message) for p in problems] == [
        ("data.parentSubject$$", "The parent subject must not be an empty string")
    ]


def test_orchestrator_complete_schema_is_not_extended() -> None:
    versioned = orchestrator_contract().version("1.0.0")
    assert versioned.emits["arvo.orc.inc.done"].model is Done


def test_orchestrator_merged_schema_keeps_the_user_unknown_key_policy() -> None:
    class StrictInit(BaseModel):
        model_config = ConfigDict(extra="forbid")
        delta: int

    schema = (
        orchestrator_contract(versions={"1.0.0": {"init": StrictInit, "complete": Done}})
        .version("1.0.0")
        .accepts.schema
    )
    with pytest.raises(ValidationError):
        schema.validate({"delta": 1, PARENT_SUBJECT_KEY: None, "other": 1})


def test_orchestrator_user_definition_of_parent_subject_wins() -> None:
    class OwnParent(BaseModel):
        parent: str | None = Field(default=None, alias=PARENT_SUBJECT_KEY)
        delta: int

    schema = (
        orchestrator_contract(versions={"1.0.0": {"init": OwnParent, "complete": Done}})
        .version("1.0.0")
        .accepts.schema
    )
    assert schema.model is OwnParent
    assert schema.validate({"delta": 1}) == {PARENT_SUBJECT_KEY: None, "delta": 1}
    assert schema.validate({"delta": 1, PARENT_SUBJECT_KEY: ""})[PARENT_SUBJECT_KEY] == ""


def test_orchestrator_merged_schema_json_schema_lists_parent_subject_as_required() -> None:
    document = orchestrator_contract().version("1.0.0").accepts.schema.json_schema()
    assert document["required"] == [PARENT_SUBJECT_KEY, "delta"]
    assert document["title"] == "Init"


@pytest.mark.parametrize("name", ["invalid name", "Inc", "in-c", ""])
def test_orchestrator_contract_rejects_a_non_alphanumeric_name(name: str) -> None:
    with pytest.raises(ValueError, match=r"^Invalid 'name' = '") as caught:
        orchestrator_contract(name=name)
    assert str(caught.value) == (
        f"Invalid 'name' = '{name}'. The 'name' must only contain alphanumeric characters. "
        "e.g. test.orchestrator"
    )


@pytest.mark.parametrize("name", [".inc", "inc.", "a..b"])
def test_orchestrator_contract_rejects_names_that_give_invalid_types(name: str) -> None:
    with pytest.raises(ValueError, match=r"would not be a valid event type"):
        orchestrator_contract(name=name)


def test_orchestrator_contract_is_not_subject_to_the_prefix_ban() -> None:
    assert orchestrator_contract(name="orc.x").type == "arvo.orc.orc.x"


def test_orchestrator_contract_rejects_malformed_versions() -> None:
    with pytest.raises(TypeError):
        orchestrator_contract(versions={"1.0.0": {"init": Init}})
    with pytest.raises(TypeError):
        orchestrator_contract(versions=None)
    with pytest.raises(ValueError, match=r"reserved version"):
        orchestrator_contract(versions={"0.0.0": {"init": Init, "complete": Done}})


def test_orchestrator_event_type_gen() -> None:
    assert ArvoOrchestratorEventTypeGen.init("a.b") == "arvo.orc.a.b"
    assert ArvoOrchestratorEventTypeGen.complete("a.b") == "arvo.orc.a.b.done"
    assert ArvoOrchestratorEventTypeGen.system_error("a.b") == "sys.arvo.orc.a.b.error"
    assert ArvoOrchestratorEventTypeGen.is_orchestrator_event_type("arvo.orc.x")
    assert ArvoOrchestratorEventTypeGen.is_orchestrator_event_type("arvo.orchestra.x")
    assert not ArvoOrchestratorEventTypeGen.is_orchestrator_event_type("com.arvo.orc")


# ------------------------------------------------------------------------------------- dataschema util


def test_dataschema_build_and_create() -> None:
    versioned = make_contract().version("0.0.1")
    assert EventDataschemaUtil.build("#/a", "1.0.0") == "#/a/1.0.0"
    assert EventDataschemaUtil.create(versioned) == "#/test/value/read/0.0.1"
    assert EventDataschemaUtil.create_with_wildcard_version(versioned) == "#/test/value/read/0.0.0"


@pytest.mark.parametrize(
    ("dataschema", "expected"),
    [
        ("#/test/machine/0.0.1", ParsedDataschema("#/test/machine", "0.0.1")),
        ("#/test/machine/invalid/0.0.1", ParsedDataschema("#/test/machine/invalid", "0.0.1")),
        ("https://x.com/a/10.20.30", ParsedDataschema("https://x.com/a", "10.20.30")),
        ("saad", None),
        ("#/a/1.0", None),
        ("#/a/1.0.0/", None),
        (None, None),
        ("1.0.0", None),
        ("/1.0.0", None),
    ],
)
def test_dataschema_parse_uses_the_last_slash(
    dataschema: str | None, expected: ParsedDataschema | None
) -> None:
    assert EventDataschemaUtil.parse(dataschema) == expected
    assert EventDataschemaUtil.is_valid(dataschema) is (expected is not None)


def test_dataschema_parse_reads_an_events_dataschema() -> None:
    event = create_arvo_event(
        source="com.a.b", type="com.a.b", subject="s", data={}, dataschema="#/test/handler/increment/0.0.1"
    )
    assert EventDataschemaUtil.parse(event) == ParsedDataschema("#/test/handler/increment", "0.0.1")
    assert (
        EventDataschemaUtil.parse(create_arvo_event(source="com.a.b", type="com.a.b", subject="s", data={}))
        is None
    )


def test_dataschema_parse_failure_is_logged_on_the_active_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("outer"):
        assert EventDataschemaUtil.parse("saad") is None
    (span,) = exporter.get_finished_spans()
    (log,) = span.events
    assert log.name == "log"
    assert log.attributes is not None
    assert log.attributes["log.severity"] == "ERROR"
    assert "Unable to parse the event dataschema" in str(log.attributes["log.message"])


def test_create_arvo_contract_rejects_non_mapping_versions() -> None:
    with pytest.raises(TypeError, match="'versions' must be a mapping"):
        create_arvo_contract(uri="#/x", type="com.x.y", versions=[])  # type: ignore[arg-type]
