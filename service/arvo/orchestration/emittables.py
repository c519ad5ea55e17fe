"""Turning raw emissions of machines and resumables into validated events (spec 8.1–8.2).

A *raw event* is a plain dict: ``type``, ``data`` and optionally ``id`` (an ``EventIdSpec`` or its
dict form), ``domain`` (list of domains/symbols), ``to``, ``redirectto``, ``accesscontrol``,
``executionunits``, ``dataschema`` and ``__extensions``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from service.arvo.contract import ContractSchema, VersionedArvoContract
from service.arvo.errors import ArvoValidationError, ContractViolation, ExecutionViolation
from service.arvo.event import ArvoEvent, engine_event
from service.arvo.orchestration.domains import normalise_domains, resolve_domains
from service.arvo.orchestration.ids import child_execution_id, emitted_event_id
from service.arvo.subject import ArvoOrchestrationSubject

__all__ = ["EmissionContext", "RawEvent", "create_emittables", "validation_details"]

RawEvent = Mapping[str, Any]
_PARENT_SUBJECT_KEY = "parentSubject$$"


@dataclass(frozen=True, slots=True)
class EmissionContext:
    """Everything emission needs to know about the execution that emits."""

    source: str
    source_event: ArvoEvent
    self_contract: VersionedArvoContract
    service_contracts: Mapping[str, VersionedArvoContract]
    """Service contracts by their accepts type."""
    parent_subject: str | None
    init_event_id: str
    executionunits: float
    traceparent: str | None
    tracestate: str | None


def validation_details(error: pydantic.ValidationError | ArvoValidationError | Exception) -> str:
    """A compact one-problem-per-line description of a validation error."""
    if isinstance(error, pydantic.ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or '<root>'}: {issue['msg']}"
            for issue in error.errors(include_url=False)
        )
    return str(error)


def _validate(schema: ContractSchema, raw_type: str, data: Any) -> dict[str, Any]:
    try:
        return schema.validate(data)
    except (pydantic.ValidationError, ValueError, TypeError) as error:
        raise ContractViolation(
            "[Emittable Event Creation] Invalid event data: Schema validation failed.\n"
            f"Event type: {raw_type}\nDetails: {validation_details(error)}"
        ) from error


def _child_subject(
    raw: RawEvent,
    contract: VersionedArvoContract,
    context: EmissionContext,
    *,
    domain: str | None,
    execution_id: str,
) -> str:
    raw_type = str(raw.get("type"))
    data = raw.get("data")
    parent_subject = data.get(_PARENT_SUBJECT_KEY) if isinstance(data, Mapping) else None
    if parent_subject and not (
        isinstance(parent_subject, str) and ArvoOrchestrationSubject.is_valid(parent_subject)
    ):
        uri = raw.get("dataschema") or f"{contract.uri}/{contract.version}"
        raise ExecutionViolation(
            f"[Emittable Event Creation] Invalid parentSubject$$ for the event(type='{raw_type}', "
            f"uri='{uri}'). It must be follow the ArvoOrchestrationSubject schema. The easiest way is to "
            "use the current orchestration subject by storing the subject via the context block in the "
            "machine definition."
        )
    meta = {"redirectto": raw.get("redirectto") or context.source}
    try:
        if parent_subject:
            return ArvoOrchestrationSubject.from_parent(
                orchestrator=contract.accepts.type,
                version=contract.version,
                subject=str(parent_subject),
                domain=domain,
                meta=meta,
                execution_id=execution_id,
            )
        return ArvoOrchestrationSubject.new(
            orchestrator=contract.accepts.type,
            version=contract.version,
            initiator=context.source,
            domain=domain,
            meta=meta,
            execution_id=execution_id,
        )
    except (ValueError, TypeError) as error:
        raise ExecutionViolation(
            "[Emittable Event Creation] Orchestration subject creation failed due to invalid "
            f"parameters - Event: {raw_type} - {error}"
        ) from error


def _create_one(
    raw: RawEvent,
    *,
    index: int,
    copy_index: int,
    domain: str | None,
    context: EmissionContext,
    contract: VersionedArvoContract | None,
    schema: ContractSchema | None,
    is_completion: bool,
) -> ArvoEvent:
    raw_type = str(raw.get("type"))
    source_event = context.source_event
    subject = source_event.subject
    parentid = source_event.id
    data: Any = raw.get("data")
    dataschema = raw.get("dataschema")
    if is_completion:
        subject = context.parent_subject or source_event.subject
        parentid = context.init_event_id
    elif contract is not None and contract.is_orchestrator_contract:
        subject = _child_subject(
            raw,
            contract,
            context,
            domain=domain,
            execution_id=child_execution_id(
                source=context.source, consumed=source_event, index=index, domain=domain
            ),
        )
    data_schema: ContractSchema | None = None
    if contract is not None and schema is not None:
        data = _validate(schema, raw_type, data)
        dataschema = contract.dataschema
        data_schema = schema
    extensions = raw.get("__extensions")
    executionunits = raw.get("executionunits")
    try:
        return engine_event(
            id=emitted_event_id(
                source=context.source,
                consumed=source_event,
                index=index,
                domain=domain,
                copy_index=copy_index,
                requested=raw.get("id"),
            ),
            source=context.source,
            type=raw_type,
            subject=subject,
            data=data,
            dataschema=dataschema,
            to=raw.get("to") or raw_type,
            accesscontrol=raw.get("accesscontrol") or source_event.accesscontrol,
            redirectto=raw.get("redirectto") or context.source,
            executionunits=executionunits if executionunits is not None else context.executionunits,
            traceparent=context.traceparent,
            tracestate=context.tracestate,
            parentid=parentid,
            domain=domain,
            extensions=extensions if isinstance(extensions, Mapping) else None,
            data_schema=data_schema,
        )
    except ArvoValidationError as error:
        raise ContractViolation(
            f"[Emittable Event Creation] Invalid event (type='{raw_type}'): {error}"
        ) from error


def create_emittables(
    raw_events: Sequence[RawEvent], context: EmissionContext, *, default_domains: Sequence[str | None]
) -> list[ArvoEvent]:
    """Validate and build the events of ``raw_events``, one per distinct resolved domain, in order.

    Raises:
        ContractViolation: emitted data fails its contract, or the event itself is invalid.
        ExecutionViolation: a child orchestration's ``parentSubject$$`` or subject is invalid.

    """
    complete_type = context.self_contract.complete_event_type
    emittables: list[ArvoEvent] = []
    for index, raw in enumerate(raw_events):
        raw_type = raw.get("type")
        if not isinstance(raw_type, str):
            raise ContractViolation(f"[Emittable Event Creation] emitted event has no string 'type': {raw!r}")
        contract: VersionedArvoContract | None
        schema: ContractSchema | None
        is_completion = raw_type == complete_type
        if is_completion:
            contract = context.self_contract
            schema = contract.emits[raw_type]
        else:
            contract = context.service_contracts.get(raw_type)
            schema = contract.accepts.schema if contract is not None else None
        try:
            values = normalise_domains(raw.get("domain"), default_domains)
        except ValueError as error:
            raise ContractViolation(
                f"[Emittable Event Creation] {error} (event type '{raw_type}')"
            ) from error
        domains = resolve_domains(
            values,
            parent_subject=context.parent_subject,
            triggering_event=context.source_event,
            self_contract=context.self_contract,
            event_contract=contract,
        )
        for copy_index, domain in enumerate(domains):
            emittables.append(
                _create_one(
                    raw,
                    index=index,
                    copy_index=copy_index,
                    domain=domain,
                    context=context,
                    contract=contract,
                    schema=schema,
                    is_completion=is_completion,
                )
            )
    return emittables
