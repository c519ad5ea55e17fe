"""Contracts (spec section 2): which event a handler accepts and which events it may emit, per version.

A contract's schemas are pydantic v2 models wrapped in :class:`ContractSchema`, which reproduces the
zod semantics the original relies on: validation returns a *stripped* JSON-ready copy (unknown keys
removed, aliases used as keys), and nullable is not optional (a required ``X | None`` field must be
present). Type names, dataschema strings and the system-error schema are wire formats shared with
TypeScript Arvo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple, NoReturn

from opentelemetry import trace
from pydantic import AfterValidator, BaseModel, Field, ValidationError, create_model
from pydantic_core import PydanticCustomError

from service.arvo.errors import ArvoValidationError, ValidationProblem, truncate_value
from service.arvo.telemetry import log_to_span
from service.arvo.uri import is_uri_valid
from service.arvo.validation import DOMAIN_RE, SEMVER_RE, TYPE_RE

__all__ = [
    "ARVO_ORCHESTRATOR_CONTRACT_TYPE",
    "PARENT_SUBJECT_KEY",
    "SIMPLE_ARVO_CONTRACT_TYPE",
    "WILDCARD_VERSION",
    "ArvoContract",
    "ArvoErrorSchema",
    "ArvoOrchestratorEventTypeGen",
    "ContractRecord",
    "ContractSchema",
    "ContractVersion",
    "EventDataschemaUtil",
    "ParsedDataschema",
    "SystemErrorRecord",
    "VersionedArvoContract",
    "compare_semantic_versions",
    "create_arvo_contract",
    "create_arvo_orchestrator_contract",
    "create_simple_arvo_contract",
    "validation_problems",
]

WILDCARD_VERSION = "0.0.0"
"""The reserved "any version" (``WildCardArvoSemanticVersion``): never a contract version."""

PARENT_SUBJECT_KEY = "parentSubject$$"
"""Init-event data key holding the parent orchestration's subject (``None`` for a root)."""

SIMPLE_ARVO_CONTRACT_TYPE = "SimpleArvoContract"
ARVO_ORCHESTRATOR_CONTRACT_TYPE = "ArvoOrchestratorContract"

_ORCHESTRATOR_NAME_RE = re.compile(r"[a-z0-9.]+")
_INVALID_CONTRACT = "Invalid ArvoContract"


# --------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------


class ContractSchema:
    """A pydantic model used as a contract schema, with zod-like "strip" semantics.

    Args:
        model: The pydantic v2 model class describing the event ``data``.

    Semantics (spec 2.8):

    * :meth:`validate` returns ``model_validate(data).model_dump(mode="json", by_alias=True)``: a
      new dict with aliases as keys, JSON-ready values, and unknown top-level keys removed, even
      when the model sets ``extra="allow"`` (the wire never carries keys the contract does not
      name). ``extra="forbid"`` makes unknown keys an error, like zod's ``.strict()``.
    * Validation is pydantic's (lax unless the model sets ``strict=True``): ``"1"`` validates as
      ``1`` for an ``int`` field, where zod would reject it.

    """

    __slots__ = ("_direct", "_include", "_json_schema", "_model")

    def __init__(self, model: type[BaseModel]) -> None:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"a contract schema must be a pydantic BaseModel subclass, got {model!r}")
        self._model = model
        self._include: set[str] | None = (
            set(model.model_fields) if model.model_config.get("extra") == "allow" else None
        )
        self._json_schema: dict[str, Any] | None = None
        # pydantic's own model_validate/model_dump only forward to the core validator and serializer:
        # call those directly (per event), unless the model overrides either method.
        self._direct = (
            getattr(model.model_validate, "__func__", None) is BaseModel.model_validate.__func__  # type: ignore[attr-defined]
            and model.model_dump is BaseModel.model_dump
        )

    @property
    def model(self) -> type[BaseModel]:
        """The wrapped pydantic model class."""
        return self._model

    def validate(self, data: Any) -> dict[str, Any]:
        """Validate ``data`` and return the stripped, JSON-ready copy.

        Raises:
            pydantic.ValidationError: If ``data`` does not match the schema.

        """
        if type(data) is not dict and isinstance(data, Mapping):
            data = dict(data)
        model = self._model
        if self._direct:
            instance = model.__pydantic_validator__.validate_python(data)
            dumped: dict[str, Any] = model.__pydantic_serializer__.to_python(
                instance, mode="json", by_alias=True, include=self._include
            )
            return dumped
        return model.model_validate(data).model_dump(mode="json", by_alias=True, include=self._include)

    def problems(self, data: Any, *, path: str = "data") -> list[ValidationProblem]:
        """Every way ``data`` breaks the schema (empty when valid), paths like ``data.items[0].name``."""
        try:
            self.validate(data)
        except ValidationError as error:
            return validation_problems(error, path=path)
        return []

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the model (by alias, validation mode); a fresh copy per call."""
        if self._json_schema is None:
            self._json_schema = self._model.model_json_schema(by_alias=True)
        copy: dict[str, Any] = _deep_copy_json(self._json_schema)
        return copy

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContractSchema) and other._model is self._model

    def __hash__(self) -> int:
        return hash(self._model)

    def __repr__(self) -> str:
        return f"ContractSchema({self._model.__qualname__})"


def validation_problems(error: ValidationError, *, path: str = "data") -> list[ValidationProblem]:
    """Convert a pydantic :class:`~pydantic.ValidationError` into :class:`ValidationProblem` items."""
    problems: list[ValidationProblem] = []
    for detail in error.errors(include_url=False):
        location = path
        for part in detail["loc"]:
            location += f"[{part}]" if isinstance(part, int) else f".{part}"
        problems.append(
            ValidationProblem(
                path=location,
                rule=detail["type"],
                message=detail["msg"],
                value=truncate_value(detail.get("input")),
            )
        )
    return problems


class ArvoErrorSchema(BaseModel):
    """The data of a system error event: error name, message and stack (all keys required)."""

    errorName: str  # noqa: N815 - wire name
    """The error's class name (``ViolationError<Type>`` for violations)."""
    errorMessage: str  # noqa: N815 - wire name
    """The error message."""
    errorStack: str | None  # noqa: N815 - wire name
    """The formatted traceback, or ``None`` (stacks are omitted unless configured)."""


_ERROR_SCHEMA = ContractSchema(ArvoErrorSchema)


def _as_schema(value: object, where: str) -> ContractSchema:
    if isinstance(value, ContractSchema):
        return value
    if isinstance(value, type) and issubclass(value, BaseModel):
        return ContractSchema(value)
    raise TypeError(f"{where} must be a pydantic BaseModel subclass or a ContractSchema, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------------


def _semver_key(version: str) -> tuple[int, int, int]:
    if not isinstance(version, str) or SEMVER_RE.fullmatch(version) is None:
        raise ValueError(f"not a semantic version (expected MAJOR.MINOR.PATCH): {version!r}")
    major, minor, patch = version.split(".")
    return int(major), int(minor), int(patch)


def compare_semantic_versions(a: str, b: str) -> int:
    """Compare two ``MAJOR.MINOR.PATCH`` versions numerically: negative, zero or positive.

    Raises:
        ValueError: If either is not a semantic version.

    """
    key_a, key_b = _semver_key(a), _semver_key(b)
    for part_a, part_b in zip(key_a, key_b, strict=True):
        if part_a != part_b:
            return part_a - part_b
    return 0


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContractRecord:
    """An event type with the schema of its ``data``."""

    type: str
    schema: ContractSchema


@dataclass(frozen=True, slots=True)
class SystemErrorRecord:
    """The system error event of a contract: ``sys.<type>.error``, dataschema ``<uri>/0.0.0``."""

    type: str
    schema: ContractSchema
    dataschema: str


@dataclass(frozen=True, slots=True)
class ContractVersion:
    """One version of a contract: the accepted ``data`` schema and the emittable types."""

    accepts: ContractSchema
    emits: Mapping[str, ContractSchema]
    """Read-only map emit type → schema, in declaration order."""


# --------------------------------------------------------------------------------------------------
# ArvoContract
# --------------------------------------------------------------------------------------------------


class ArvoContract:
    """A versioned contract: accepted event type, per-version schemas and emittable event types.

    Args:
        uri: The contract's identifier (URI-valid in the JavaScript ``encodeURI`` sense).
        type: The accepted event type (type format, e.g. ``com.value.read``).
        versions: ``{semver: {"accepts": Model, "emits": {type: Model}}}`` (models or
            :class:`ContractSchema`); at least one version, never ``0.0.0``.
        domain: The contract's default domain, or ``None``.
        description: Free text, or ``None``.
        metadata: Free-form metadata (``contractType``, ``rootType``… for generated contracts).

    Raises:
        ArvoValidationError: If ``uri``, ``type``, ``domain``, a version key or an emit type is
            malformed (checked in this order).
        ValueError: For the wildcard version or an empty ``versions``.

    """

    __slots__ = (
        "_description",
        "_domain",
        "_metadata",
        "_system_error",
        "_type",
        "_uri",
        "_versioned",
        "_versions",
    )

    def __init__(
        self,
        *,
        uri: str,
        type: str,
        versions: Mapping[str, Mapping[str, Any]],
        domain: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(uri, str) or not uri:
            _raise_invalid("uri", "non-empty", "URI must be a non-empty string", uri)
        if not is_uri_valid(uri):
            _raise_invalid("uri", "uri", "The URI must a valid URI string", uri)
        if not isinstance(type, str) or not type:
            _raise_invalid("type", "non-empty", "Type must be a non-empty string", type)
        if TYPE_RE.fullmatch(type) is None:
            _raise_invalid("type", "type-format", "Type should be prefixed with a reverse-DNS name", type)
        _check_domain("domain", domain)
        if not isinstance(versions, Mapping):
            raise TypeError(f"'versions' must be a mapping of semver to version specs, got {versions!r}")
        normalised: dict[str, ContractVersion] = {}
        for version, spec in versions.items():
            if not isinstance(version, str) or SEMVER_RE.fullmatch(version) is None:
                _raise_invalid(
                    f"versions.{version}",
                    "semver",
                    "Invalid version format of the semantic version",
                    version,
                )
            if version == WILDCARD_VERSION:
                raise ValueError(
                    f"For contract (uri={uri}), the version cannot be '{WILDCARD_VERSION}'. "
                    "It is a reserved version type."
                )
            normalised[version] = _normalise_version(version, spec)
        if not normalised:
            raise ValueError(f"An ArvoContract (uri={uri}) must have at least one version")
        self._uri = uri
        self._type = type
        self._domain = domain
        self._description = description
        self._metadata: Mapping[str, Any] = MappingProxyType(dict(metadata or {}))
        self._versions: Mapping[str, ContractVersion] = MappingProxyType(normalised)
        self._versioned: dict[str, VersionedArvoContract] = {}
        self._system_error = ContractRecord(type=f"sys.{type}.error", schema=_ERROR_SCHEMA)

    @property
    def uri(self) -> str:
        """The contract URI."""
        return self._uri

    @property
    def type(self) -> str:
        """The accepted event type."""
        return self._type

    @property
    def domain(self) -> str | None:
        """The contract's domain (``None`` = default domain)."""
        return self._domain

    @property
    def description(self) -> str | None:
        """The description, if any."""
        return self._description

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Read-only metadata."""
        return self._metadata

    @property
    def versions(self) -> Mapping[str, ContractVersion]:
        """Read-only map semver → :class:`ContractVersion`, in declaration order."""
        return self._versions

    @property
    def system_error(self) -> ContractRecord:
        """``sys.<type>.error`` with :class:`ArvoErrorSchema` (the same for every version)."""
        return self._system_error

    def sorted_versions(self, order: Literal["ASC", "DESC"] = "ASC") -> list[str]:
        """Version keys sorted numerically (``0.10.0`` after ``0.9.0``)."""
        return sorted(self._versions, key=_semver_key, reverse=order == "DESC")

    def version(self, version: str) -> VersionedArvoContract:
        """The view of one version: ``"latest"``/``"any"`` (highest), ``"oldest"`` or an exact semver.

        Raises:
            ValueError: ``"The contract (uri=<uri>) does not have version=<version>"``.

        """
        if version in ("latest", "any"):
            resolved = self.sorted_versions("DESC")[0]
        elif version == "oldest":
            resolved = self.sorted_versions("ASC")[0]
        elif version in self._versions:
            resolved = version
        else:
            raise ValueError(f"The contract (uri={self._uri}) does not have version={version}")
        view = self._versioned.get(resolved)
        if view is None:
            view = VersionedArvoContract(contract=self, version=resolved)
            self._versioned[resolved] = view
        return view

    def export(self) -> dict[str, Any]:
        """The constructor parameters (schemas as the pydantic model classes)."""
        return {
            "uri": self._uri,
            "type": self._type,
            "domain": self._domain,
            "description": self._description,
            "metadata": dict(self._metadata),
            "versions": {
                version: {
                    "accepts": spec.accepts.model,
                    "emits": {emit_type: schema.model for emit_type, schema in spec.emits.items()},
                }
                for version, spec in self._versions.items()
            },
        }

    def to_json_schema(self) -> dict[str, Any]:
        """The contract with JSON Schemas of every version (shape of spec 2.1)."""
        return {
            "uri": self._uri,
            "domain": self._domain,
            "description": self._description,
            "metadata": dict(self._metadata),
            "versions": [
                {
                    "domain": self._domain,
                    "version": version,
                    "accepts": {"type": self._type, "schema": spec.accepts.json_schema()},
                    "systemError": {
                        "type": self.system_error.type,
                        "schema": self.system_error.schema.json_schema(),
                    },
                    "emits": [
                        {"type": emit_type, "schema": schema.json_schema()}
                        for emit_type, schema in spec.emits.items()
                    ],
                    "metadata": dict(self._metadata),
                }
                for version, spec in self._versions.items()
            ],
        }

    def __repr__(self) -> str:
        return f"ArvoContract(uri={self._uri!r}, type={self._type!r}, versions={list(self._versions)!r})"


def _normalise_version(version: str, spec: object) -> ContractVersion:
    if not isinstance(spec, Mapping) or "accepts" not in spec or "emits" not in spec:
        raise TypeError(f"version {version!r} must be a mapping with 'accepts' and 'emits', got {spec!r}")
    emits = spec["emits"]
    if not isinstance(emits, Mapping):
        raise TypeError(f"'emits' of version {version!r} must be a mapping of event type to schema")
    normalised_emits: dict[str, ContractSchema] = {}
    for emit_type, schema in emits.items():
        if not isinstance(emit_type, str) or TYPE_RE.fullmatch(emit_type) is None:
            _raise_invalid(
                f"versions.{version}.emits.{emit_type}",
                "type-format",
                "Type should be prefixed with a reverse-DNS name",
                emit_type,
            )
        normalised_emits[emit_type] = _as_schema(schema, f"versions.{version}.emits.{emit_type}")
    return ContractVersion(
        accepts=_as_schema(spec["accepts"], f"versions.{version}.accepts"),
        emits=MappingProxyType(normalised_emits),
    )


def _check_domain(path: str, domain: object) -> None:
    if domain is None:
        return
    if not isinstance(domain, str):
        _raise_invalid(path, "string", "Domain must be a string or null", domain)
    if not domain:
        _raise_invalid(path, "non-empty", "Domain must be non-empty string", domain)
    if DOMAIN_RE.fullmatch(domain) is None:
        _raise_invalid(
            path, "domain-format", "Domain must contain only lowercase letters, numbers, and dots", domain
        )


def _raise_invalid(path: str, rule: str, message: str, value: object) -> NoReturn:
    raise ArvoValidationError(
        f"{_INVALID_CONTRACT}: {message}",
        [ValidationProblem(path=path, rule=rule, message=message, value=truncate_value(value))],
    )


# --------------------------------------------------------------------------------------------------
# VersionedArvoContract
# --------------------------------------------------------------------------------------------------


class VersionedArvoContract:
    """One version of an :class:`ArvoContract` (obtain it with :meth:`ArvoContract.version`)."""

    __slots__ = (
        "_accepts",
        "_complete_event_type",
        "_contract",
        "_dataschema",
        "_is_orchestrator",
        "_spec",
        "_system_error",
        "_version",
    )

    def __init__(self, *, contract: ArvoContract, version: str) -> None:
        if version not in contract.versions:
            raise ValueError(f"The contract (uri={contract.uri}) does not have version={version}")
        self._contract = contract
        self._version = version
        self._spec = contract.versions[version]
        # Everything below derives from immutable parts of the contract: built once, read per event.
        self._accepts = ContractRecord(type=contract.type, schema=self._spec.accepts)
        self._dataschema = EventDataschemaUtil.build(contract.uri, version)
        record = contract.system_error
        self._system_error = SystemErrorRecord(
            type=record.type,
            schema=record.schema,
            dataschema=EventDataschemaUtil.build(contract.uri, WILDCARD_VERSION),
        )
        self._is_orchestrator = contract.metadata.get("contractType") == ARVO_ORCHESTRATOR_CONTRACT_TYPE
        complete = contract.metadata.get("completeEventType") if self._is_orchestrator else None
        self._complete_event_type: str | None = complete if isinstance(complete, str) else None

    @property
    def contract(self) -> ArvoContract:
        """The whole contract."""
        return self._contract

    @property
    def uri(self) -> str:
        """The contract URI."""
        return self._contract.uri

    @property
    def version(self) -> str:
        """The semver of this view."""
        return self._version

    @property
    def description(self) -> str | None:
        """The contract description."""
        return self._contract.description

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The contract metadata (read-only)."""
        return self._contract.metadata

    @property
    def domain(self) -> str | None:
        """The contract domain."""
        return self._contract.domain

    @property
    def accepts(self) -> ContractRecord:
        """The accepted type with this version's schema."""
        return self._accepts

    @property
    def emits(self) -> Mapping[str, ContractSchema]:
        """Read-only map emit type → schema."""
        return self._spec.emits

    @property
    def emit_list(self) -> list[ContractRecord]:
        """The emits as records, in declaration order."""
        return [
            ContractRecord(type=emit_type, schema=schema) for emit_type, schema in self._spec.emits.items()
        ]

    @property
    def dataschema(self) -> str:
        """``<uri>/<version>``: the ``dataschema`` of events of this version."""
        return self._dataschema

    @property
    def system_error(self) -> SystemErrorRecord:
        """``sys.<type>.error``, :class:`ArvoErrorSchema`, dataschema ``<uri>/0.0.0``."""
        return self._system_error

    @property
    def is_orchestrator_contract(self) -> bool:
        """Whether the contract was made by :func:`create_arvo_orchestrator_contract`."""
        return self._is_orchestrator

    @property
    def complete_event_type(self) -> str | None:
        """``arvo.orc.<name>.done`` for orchestrator contracts, else ``None``."""
        return self._complete_event_type

    def to_json_schema(self) -> dict[str, Any]:
        """The version with JSON Schemas of every event (accepts, system error, emits)."""
        system_error = self.system_error
        return {
            "uri": self.uri,
            "description": self.description,
            "version": self._version,
            "metadata": dict(self.metadata),
            "domain": self.domain,
            "accepts": {"type": self._contract.type, "schema": self._spec.accepts.json_schema()},
            "systemError": {"type": system_error.type, "schema": system_error.schema.json_schema()},
            "emits": [
                {"type": emit_type, "schema": schema.json_schema()}
                for emit_type, schema in self._spec.emits.items()
            ],
        }

    def __repr__(self) -> str:
        return f"VersionedArvoContract(uri={self.uri!r}, version={self._version!r})"


# --------------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------------


class ArvoOrchestratorEventTypeGen:
    """Event types of orchestrators (WIRE): ``arvo.orc.<name>``, ``….done``, ``sys.….error``."""

    prefix = "arvo.orc"

    @staticmethod
    def init(name: str) -> str:
        """``arvo.orc.<name>``: the init (accepted) type."""
        return f"{ArvoOrchestratorEventTypeGen.prefix}.{name}"

    @staticmethod
    def complete(name: str) -> str:
        """``arvo.orc.<name>.done``: the completion type."""
        return f"{ArvoOrchestratorEventTypeGen.prefix}.{name}.done"

    @staticmethod
    def system_error(name: str) -> str:
        """``sys.arvo.orc.<name>.error``: the system error type."""
        return f"sys.{ArvoOrchestratorEventTypeGen.prefix}.{name}.error"

    @staticmethod
    def is_orchestrator_event_type(event_type: str) -> bool:
        """Whether ``event_type`` starts with ``arvo.orc`` (a plain prefix test, as the original)."""
        return event_type.startswith(ArvoOrchestratorEventTypeGen.prefix)


def _reserved_type_error(uri: str, source: str, event_type: str, version: str | None) -> ValueError:
    # Three lines, as the original's cleanString() leaves them.
    version_part = f", version={version}" if version else ""
    return ValueError(
        f"In contract (uri={uri}{version_part}), the '{source}' event (type={event_type}) must not start\n"
        f"with '{ArvoOrchestratorEventTypeGen.prefix}' because this is a reserved pattern\n"
        "for Arvo orchestrators."
    )


def create_arvo_contract(
    *,
    uri: str,
    type: str,
    versions: Mapping[str, Mapping[str, Any]],
    domain: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> ArvoContract:
    """Create a service contract; types starting with ``arvo.orc`` are reserved for orchestrators.

    Raises:
        ValueError: If the accepted type or an emit type starts with ``arvo.orc``, or as
            :class:`ArvoContract` does.

    """
    if isinstance(type, str) and ArvoOrchestratorEventTypeGen.is_orchestrator_event_type(type):
        raise _reserved_type_error(uri, "accepts", type, None)
    if isinstance(versions, Mapping):
        for version, spec in versions.items():
            emits = spec.get("emits") if isinstance(spec, Mapping) else None
            for emit_type in emits if isinstance(emits, Mapping) else ():
                if isinstance(emit_type, str) and ArvoOrchestratorEventTypeGen.is_orchestrator_event_type(
                    emit_type
                ):
                    raise _reserved_type_error(uri, "emits", emit_type, version)
    return ArvoContract(
        uri=uri, type=type, versions=versions, domain=domain, description=description, metadata=metadata
    )


def create_simple_arvo_contract(
    *,
    uri: str,
    type: str,
    versions: Mapping[str, Mapping[str, Any]],
    domain: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> ArvoContract:
    """Create a request/response contract: accepts ``com.<type>``, emits ``evt.<type>.success``.

    Args:
        uri: The contract URI.
        type: The root type, e.g. ``value.read`` (→ ``com.value.read`` / ``evt.value.read.success``).
        versions: ``{semver: {"accepts": Model, "emits": Model}}``.
        domain: The contract domain.
        metadata: Extra metadata; ``contractType`` and ``rootType`` are always overridden.
        description: Free text.

    """
    if not isinstance(versions, Mapping):
        raise TypeError(f"'versions' must be a mapping of semver to version specs, got {versions!r}")
    expanded: dict[str, Mapping[str, Any]] = {}
    for version, spec in versions.items():
        if not isinstance(spec, Mapping) or "accepts" not in spec or "emits" not in spec:
            raise TypeError(f"version {version!r} must be a mapping with 'accepts' and 'emits', got {spec!r}")
        expanded[version] = {"accepts": spec["accepts"], "emits": {f"evt.{type}.success": spec["emits"]}}
    return create_arvo_contract(
        uri=uri,
        type=f"com.{type}",
        versions=expanded,
        domain=domain,
        description=description,
        metadata={**(metadata or {}), "contractType": SIMPLE_ARVO_CONTRACT_TYPE, "rootType": type},
    )


def _reject_empty_parent_subject(value: str | None) -> str | None:
    if value == "":
        raise PydanticCustomError("parent_subject_empty", "The parent subject must not be an empty string")
    return value


class _ParentSubjectInit(BaseModel):
    """The base every orchestrator init schema is merged with (``OrchestrationInitEventBaseSchema``)."""

    arvo_parent_subject: Annotated[str | None, AfterValidator(_reject_empty_parent_subject)] = Field(
        alias=PARENT_SUBJECT_KEY,
        title=PARENT_SUBJECT_KEY,
        description="The parent orchestration's subject, or null for a root orchestration.",
    )


def _defines_parent_subject(model: type[BaseModel]) -> bool:
    return any(
        PARENT_SUBJECT_KEY in (name, info.alias, info.validation_alias)
        for name, info in model.model_fields.items()
    )


def _merge_init_model(init: type[BaseModel]) -> type[BaseModel]:
    """``init`` plus a required ``parentSubject$$`` (first key); the user's own definition wins.

    The merged model keeps ``init``'s configuration (unknown-key policy, strictness, validators).
    """
    if _defines_parent_subject(init):
        return init
    merged: type[BaseModel] = create_model(
        init.__name__,
        __base__=(init, _ParentSubjectInit),
        __module__=init.__module__,
    )
    return merged


def create_arvo_orchestrator_contract(
    *,
    uri: str,
    name: str,
    versions: Mapping[str, Mapping[str, Any]],
    domain: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> ArvoContract:
    """Create an orchestrator contract: accepts ``arvo.orc.<name>``, emits ``arvo.orc.<name>.done``.

    Each version gives ``{"init": Model, "complete": Model}``. The accepted schema is ``init``
    extended with the required key ``parentSubject$$`` (``str`` of length ≥ 1, or ``None``); the
    completion schema is used as given.

    Raises:
        ValueError: ``"Invalid 'name' = '<name>'. The 'name' must only contain alphanumeric
            characters. e.g. test.orchestrator"`` (also when the generated types are not valid
            event types, e.g. a name starting or ending with ``.``), or as :class:`ArvoContract`.

    """
    invalid_name = (
        f"Invalid 'name' = '{name}'. The 'name' must only contain alphanumeric characters. "
        "e.g. test.orchestrator"
    )
    if not isinstance(name, str) or _ORCHESTRATOR_NAME_RE.fullmatch(name) is None:
        raise ValueError(invalid_name)
    init_type = ArvoOrchestratorEventTypeGen.init(name)
    complete_type = ArvoOrchestratorEventTypeGen.complete(name)
    if TYPE_RE.fullmatch(init_type) is None or TYPE_RE.fullmatch(complete_type) is None:
        raise ValueError(f"{invalid_name} (the event type '{init_type}' would not be a valid event type)")
    if not isinstance(versions, Mapping):
        raise TypeError(f"'versions' must be a mapping of semver to version specs, got {versions!r}")
    expanded: dict[str, Mapping[str, Any]] = {}
    for version, spec in versions.items():
        if not isinstance(spec, Mapping) or "init" not in spec or "complete" not in spec:
            raise TypeError(f"version {version!r} must be a mapping with 'init' and 'complete', got {spec!r}")
        init_model = _as_schema(spec["init"], f"versions.{version}.init").model
        expanded[version] = {
            "accepts": ContractSchema(_merge_init_model(init_model)),
            "emits": {complete_type: spec["complete"]},
        }
    return ArvoContract(
        uri=uri,
        type=init_type,
        versions=expanded,
        domain=domain,
        description=description,
        metadata={
            **(metadata or {}),
            "contractType": ARVO_ORCHESTRATOR_CONTRACT_TYPE,
            "rootType": name,
            "completeEventType": complete_type,
            "initEventType": init_type,
        },
    )


# --------------------------------------------------------------------------------------------------
# Dataschema
# --------------------------------------------------------------------------------------------------


class ParsedDataschema(NamedTuple):
    """A parsed ``dataschema``: contract URI and version."""

    uri: str
    version: str


_PARSED_DATASCHEMAS: dict[str, ParsedDataschema] = {}
"""Parses of valid dataschema strings (a service sees a handful: one per contract version)."""
_PARSED_DATASCHEMAS_LIMIT = 1024


class EventDataschemaUtil:
    """Build and parse ``dataschema`` strings ``<contract uri>/<semver>`` (WIRE)."""

    @staticmethod
    def build(uri: str, version: str) -> str:
        """``<uri>/<version>``."""
        return f"{uri}/{version}"

    @staticmethod
    def create(contract: VersionedArvoContract) -> str:
        """The dataschema of events of ``contract``'s version."""
        return EventDataschemaUtil.build(contract.uri, contract.version)

    @staticmethod
    def create_with_wildcard_version(contract: VersionedArvoContract) -> str:
        """``<uri>/0.0.0`` (any version; used by system errors)."""
        return EventDataschemaUtil.build(contract.uri, WILDCARD_VERSION)

    @staticmethod
    def parse(event_or_dataschema: object) -> ParsedDataschema | None:
        """Split at the **last** ``/``: ``#/a/b/0.0.1`` → ``("#/a/b", "0.0.1")``.

        Accepts a dataschema string, ``None`` or anything with a ``dataschema`` attribute (an
        :class:`~service.arvo.event.ArvoEvent`). Returns ``None`` (and logs an ERROR on the active
        span) when the last segment is not a semver or the URI part is empty (``"1.0.0"``: the
        original accepts an empty URI, hazard 26).
        """
        if event_or_dataschema is None or isinstance(event_or_dataschema, str):
            dataschema = event_or_dataschema
        else:
            dataschema = getattr(event_or_dataschema, "dataschema", None)
        if isinstance(dataschema, str):
            known = _PARSED_DATASCHEMAS.get(dataschema)
            if known is not None:
                return known
            uri, separator, version = dataschema.rpartition("/")
            if separator and uri and SEMVER_RE.fullmatch(version) is not None:
                parsed = ParsedDataschema(uri=uri, version=version)
                if len(_PARSED_DATASCHEMAS) >= _PARSED_DATASCHEMAS_LIMIT:
                    _PARSED_DATASCHEMAS.clear()
                _PARSED_DATASCHEMAS[dataschema] = parsed
                return parsed
        log_to_span(
            trace.get_current_span(),
            "ERROR",
            f"Unable to parse the event dataschema: {truncate_value(dataschema)}",
        )
        return None

    @staticmethod
    def is_valid(event_or_dataschema: object) -> bool:
        """Whether :meth:`parse` succeeds."""
        return EventDataschemaUtil.parse(event_or_dataschema) is not None


def _deep_copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy_json(item) for item in value]
    return value
