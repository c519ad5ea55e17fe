"""System error events (spec 9.4): what a handler emits instead of raising a non-violation error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from service.arvo.contract import VersionedArvoContract
from service.arvo.event import ArvoEvent, engine_event
from service.arvo.factory import error_data
from service.arvo.orchestration.domains import resolve_domains
from service.arvo.orchestration.ids import system_error_event_id
from service.arvo.subject import ArvoOrchestrationSubject

__all__ = ["HandlerKind", "create_system_error_events"]

HandlerKind = Literal["handler", "orchestrator", "resumable"]


def _reply_target(kind: HandlerKind, event: ArvoEvent) -> str:
    if kind == "handler":
        return event.source
    try:
        return ArvoOrchestrationSubject.parse(event.subject).initiator
    except ValueError:
        return event.source


def create_system_error_events(
    *,
    error: BaseException,
    event: ArvoEvent,
    source: str,
    self_contract: VersionedArvoContract,
    kind: HandlerKind,
    domains: Sequence[str | None],
    parent_subject: str | None,
    init_event_id: str | None,
    executionunits: float,
    traceparent: str | None,
    tracestate: str | None,
    include_stack: bool,
) -> list[ArvoEvent]:
    """One ``sys.<type>.error`` event per distinct resolved domain, addressed to the initiator.

    Handlers reply to ``event.source``; orchestrators and resumables to the subject's initiator,
    on the parent's subject when they are a child orchestration (so the parent can transition).
    """
    data = error_data(error, include_stack=include_stack)
    to = _reply_target(kind, event)
    subject = event.subject if kind == "handler" else (parent_subject or event.subject)
    parentid = event.id if kind == "handler" else (init_event_id or event.id)
    resolved = resolve_domains(
        domains,
        parent_subject=parent_subject,
        triggering_event=event,
        self_contract=self_contract,
        event_contract=self_contract,
    )
    system_error = self_contract.system_error
    return [
        engine_event(
            id=system_error_event_id(source=source, consumed=event, domain=domain),
            source=source,
            type=system_error.type,
            subject=subject,
            data=data,
            dataschema=system_error.dataschema,
            to=to,
            accesscontrol=event.accesscontrol,
            executionunits=executionunits,
            traceparent=traceparent,
            tracestate=tracestate,
            parentid=parentid,
            domain=domain,
        )
        for domain in resolved
    ]
