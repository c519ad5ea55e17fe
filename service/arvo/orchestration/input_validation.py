"""Which contract an incoming event belongs to, and whether it honours it (spec 11.6)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

import pydantic

from service.arvo.contract import (
    WILDCARD_VERSION,
    ArvoContract,
    EventDataschemaUtil,
    VersionedArvoContract,
)
from service.arvo.errors import ConfigViolation, ContractViolation, ForeignSourceViolation
from service.arvo.event import ArvoEvent, data_schema_of
from service.arvo.orchestration.emittables import validation_details
from service.arvo.orchestration.record import EMITTED_IDS_KEPT, InstanceRecord

__all__ = [
    "REPLY_SOURCE_CHECKS",
    "EventValidationKind",
    "EventValidationResult",
    "ReplySourceCheck",
    "addressed_sources",
    "raise_for_foreign_source",
    "raise_for_invalid_input",
    "validate_input_event",
    "validate_reply_source_check",
]


class EventValidationKind(StrEnum):
    """Outcome kinds of :func:`validate_input_event`."""

    VALID = "VALID"
    CONTRACT_UNRESOLVED = "CONTRACT_UNRESOLVED"
    INVALID = "INVALID"
    INVALID_DATA = "INVALID_DATA"


@dataclass(frozen=True, slots=True)
class EventValidationResult:
    """The validation outcome; ``contract`` is the resolved versioned contract when known."""

    kind: EventValidationKind
    contract_type: Literal["self", "service"] | None = None
    contract: VersionedArvoContract | None = None
    error: str | None = None


def _resolve_self(self_contract: VersionedArvoContract | ArvoContract, version: str) -> VersionedArvoContract:
    if isinstance(self_contract, VersionedArvoContract):
        return self_contract
    try:
        return self_contract.version(version)
    except ValueError as error:
        raise ConfigViolation(
            f"Invalid contract version: {version}. Available versions: "
            f"{', '.join(self_contract.sorted_versions('ASC'))} ({error})"
        ) from error


def validate_input_event(
    event: ArvoEvent,
    *,
    self_contract: VersionedArvoContract | ArvoContract,
    service_contracts: Mapping[str, VersionedArvoContract],
) -> EventValidationResult:
    """Resolve the contract of ``event`` among self and services and validate it against it.

    An unversioned self contract (resumables) takes the version from the event's dataschema; an
    unknown version raises :class:`ConfigViolation` (the original turned it into a system error).
    """
    parsed = EventDataschemaUtil.parse(event)
    if parsed is None:
        return EventValidationResult(
            kind=EventValidationKind.INVALID,
            error=(
                f"Event dataschema resolution failed: Unable to parse dataschema='{event.dataschema}' "
                f"for event(id='{event.id}', type='{event.type}'). This makes the event opaque and does "
                "not allow contract resolution"
            ),
        )
    contract_type: Literal["self", "service"]
    self_type = (
        self_contract.accepts.type if isinstance(self_contract, VersionedArvoContract) else self_contract.type
    )
    if event.type == self_type:
        contract_type = "self"
        contract = _resolve_self(self_contract, parsed.version)
    else:
        contract_type = "service"
        found = _reply_contract(event.type, service_contracts)
        if found is None:
            return EventValidationResult(kind=EventValidationKind.CONTRACT_UNRESOLVED)
        contract = found
    if parsed.uri != contract.uri:
        return EventValidationResult(
            kind=EventValidationKind.INVALID,
            contract_type=contract_type,
            contract=contract,
            error=(
                f"Contract URI mismatch: {contract_type} Contract(uri='{contract.uri}', "
                f"type='{contract.accepts.type}') does not match Event(dataschema='{event.dataschema}', "
                f"type='{event.type}')"
            ),
        )
    if parsed.version not in (WILDCARD_VERSION, contract.version):
        return EventValidationResult(
            kind=EventValidationKind.INVALID,
            contract_type=contract_type,
            contract=contract,
            error=(
                f"Contract version mismatch: {contract_type} Contract(version='{contract.version}', "
                f"type='{contract.accepts.type}', uri={contract.uri}) does not match "
                f"Event(dataschema='{event.dataschema}', type='{event.type}')"
            ),
        )
    if contract_type == "self":
        schema = contract.accepts.schema
    else:
        schema = contract.emits.get(event.type) or contract.system_error.schema
    try:
        # Not again for data this process validated with this very schema (see data_schema_of).
        if data_schema_of(event) is not schema:
            schema.validate(event.data)
    except (pydantic.ValidationError, ValueError, TypeError) as error:
        return EventValidationResult(
            kind=EventValidationKind.INVALID_DATA,
            contract_type=contract_type,
            contract=contract,
            error=validation_details(error),
        )
    return EventValidationResult(
        kind=EventValidationKind.VALID, contract_type=contract_type, contract=contract
    )


_REPLY_CONTRACTS: dict[
    tuple[int, str], tuple[Mapping[str, VersionedArvoContract], VersionedArvoContract | None]
] = {}
_REPLY_CONTRACTS_LIMIT = 4_096


def _reply_contract(
    event_type: str, service_contracts: Mapping[str, VersionedArvoContract]
) -> VersionedArvoContract | None:
    """The first service contract emitting ``event_type`` (or its system error), cached per mapping and type.

    The cache holds the mapping (a machine's or resumable's, alive as long as it is), so its id cannot
    be reused while cached.
    """
    key = (id(service_contracts), event_type)
    cached = _REPLY_CONTRACTS.get(key)
    if cached is not None and cached[0] is service_contracts:
        return cached[1]
    found = next(
        (
            candidate
            for candidate in service_contracts.values()
            if event_type in candidate.emits or event_type == candidate.system_error.type
        ),
        None,
    )
    if len(_REPLY_CONTRACTS) >= _REPLY_CONTRACTS_LIMIT:
        _REPLY_CONTRACTS.clear()
    _REPLY_CONTRACTS[key] = (service_contracts, found)
    return found


def raise_for_invalid_input(result: EventValidationResult, *, owner: str) -> None:
    """Raise the violation of the original for a non-valid result (``owner``: machine/resumable)."""
    if result.kind is EventValidationKind.CONTRACT_UNRESOLVED:
        raise ConfigViolation(
            "Contract validation failed - Event does not match any registered contract schemas in the "
            f"{owner}"
        )
    if result.kind in (EventValidationKind.INVALID, EventValidationKind.INVALID_DATA):
        raise ContractViolation(
            f"Input validation failed - Event data does not meet contract requirements: {result.error}"
        )


ReplySourceCheck = Literal["off", "addressed", "strict"]
"""How an orchestration checks the ``source`` of replies (``ARVO_REPLY_SOURCE_CHECK``).

``addressed`` (the default): a reply — an event of a type some service contract emits, or its system
error — is accepted only from the handler of such a contract (a service handler's source is its
contract's accepted type; a child orchestration's is its name). ``strict``: as ``addressed``, and its
``parentid`` must also be the id of an event the instance emitted (one of the newest
:data:`~service.arvo.orchestration.record.EMITTED_IDS_KEPT` its record keeps; a record written without
strict mode keeps none and is checked as ``addressed``). ``off``: any source.
"""

REPLY_SOURCE_CHECKS: Final[tuple[ReplySourceCheck, ...]] = ("off", "addressed", "strict")
"""The values of :data:`ReplySourceCheck`."""


def validate_reply_source_check(mode: object) -> ReplySourceCheck:
    """Return ``mode`` if it is a :data:`ReplySourceCheck`, else raise ``ValueError`` naming the values."""
    for known in REPLY_SOURCE_CHECKS:
        if mode == known:
            return known
    raise ValueError(f"reply source check must be one of {', '.join(REPLY_SOURCE_CHECKS)}, got {mode!r}")


_SOURCES_CACHE: dict[tuple[int, str], tuple[Mapping[str, VersionedArvoContract], frozenset[str]]] = {}
_SOURCES_CACHE_LIMIT = 4_096


def addressed_sources(
    event: ArvoEvent, service_contracts: Mapping[str, VersionedArvoContract]
) -> frozenset[str]:
    """The sources a reply of ``event``'s type may come from: the handlers of the contracts emitting it.

    Cached per contract mapping and event type (a machine's mapping lives as long as the machine; the
    cache holds it, so its id cannot be reused while cached).
    """
    key = (id(service_contracts), event.type)
    cached = _SOURCES_CACHE.get(key)
    if cached is not None and cached[0] is service_contracts:
        return cached[1]
    sources = frozenset(
        contract.accepts.type
        for contract in service_contracts.values()
        if event.type in contract.emits or event.type == contract.system_error.type
    )
    if len(_SOURCES_CACHE) >= _SOURCES_CACHE_LIMIT:
        _SOURCES_CACHE.clear()
    _SOURCES_CACHE[key] = (service_contracts, sources)
    return sources


def raise_for_foreign_source(
    event: ArvoEvent,
    *,
    service_contracts: Mapping[str, VersionedArvoContract],
    owner: str,
    mode: ReplySourceCheck,
    record: InstanceRecord | None = None,
) -> None:
    """Raise :class:`ForeignSourceViolation` for a reply from a source ``owner`` did not address.

    In ``strict`` mode also for a reply whose ``parentid`` is not among the ids of the events the
    instance emitted (``record``'s ``emittedIds``; a record without them — written without strict
    mode — is checked as in ``addressed`` mode). Events that are no reply (the init event, events of
    no service contract) are not checked here.
    """
    if mode == "off":
        return
    expected = addressed_sources(event, service_contracts)
    if not expected:
        return
    if event.source not in expected:
        raise ForeignSourceViolation(
            f"Reply {event.type} (id={event.id}) from source '{event.source}' is not from a handler the "
            f"{owner} addressed for that type (expected {', '.join(sorted(expected))}); dropped. Set "
            "ARVO_REPLY_SOURCE_CHECK=off only if a legitimate service answers under another source.",
            expected=expected,
        )
    if mode != "strict" or record is None:
        return
    emitted = record.get("emittedIds")
    if emitted is not None and event.parentid not in emitted:
        raise ForeignSourceViolation(
            f"Reply {event.type} (id={event.id}) from source '{event.source}' answers parentid="
            f"{event.parentid!r}, which is not an event this {owner} instance emitted (its last "
            f"{EMITTED_IDS_KEPT} emissions); dropped. ARVO_REPLY_SOURCE_CHECK=strict accepts only "
            "replies that carry the id of the event they answer; set it to addressed if a legitimate "
            "service replies without that parentid.",
            expected=expected,
        )
