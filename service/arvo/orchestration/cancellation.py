"""Cancelling an orchestration instance: the cancel event, its reason, and the children cancelled in turn.

The cancel event is an ordinary ArvoEvent any service may send (``arvo instances cancel`` builds it
with :func:`create_cancel_event`)::

    {"type": "arvo.instance.cancel",
     "to": "<the orchestrator's name, e.g. arvo.orc.order>",   # routed to the orchestrator's own topic
     "subject": "<the instance's orchestration subject>",      # the Kafka key: the instance's partition
     "source": "<who cancels, e.g. com.arvo.cli>",
     "data": {"reason": "<why, free text>"}, ...}

The pipeline (:mod:`service.arvo.orchestration.pipeline`) recognises it by its type before any
contract is resolved, for orchestrators and resumables alike; no contract lists it. An active
instance is stopped: its record becomes ``cancelled`` (:class:`~service.arvo.memory.InstanceStatus`),
its initiator receives the standard system error event (``errorName``
:class:`OrchestrationCancelledError`, the reason in ``errorMessage``) and every child orchestration it
started (``children`` of the record) receives a cancel event in turn. A cancel event for a finished or
unknown instance changes nothing.

Ids are derived, never random: a re-execution of the same cancel event emits the very same system
error and child cancel events, so the dedupe rings downstream recognise them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from service.arvo.event import ARVO_DATA_CONTENT_TYPE, ArvoEvent, create_arvo_event
from service.arvo.orchestration.ids import derive_uuid
from service.arvo.subject import ArvoOrchestrationSubject

if TYPE_CHECKING:
    from service.arvo.orchestration.record import InstanceRecord

__all__ = [
    "CANCEL_EVENT_TYPE",
    "MAX_CHILDREN",
    "MAX_REASON_CHARS",
    "NO_REASON",
    "OrchestrationCancelledError",
    "cancel_reason",
    "cancellation_message",
    "child_cancel_events",
    "create_cancel_event",
    "is_cancel_event",
    "push_children",
]

CANCEL_EVENT_TYPE: Final = "arvo.instance.cancel"
"""The type of the cancel event."""

MAX_REASON_CHARS: Final = 1_000
"""Longest reason kept (record, system error); a longer one is cut and ends with ``…``."""

MAX_CHILDREN: Final = 100
"""Most child subjects a record keeps (the newest): the children a cancellation reaches."""

NO_REASON: Final = "no reason given"
"""The reason of a cancel event whose ``data.reason`` is missing, empty or not a string."""


class OrchestrationCancelledError(Exception):
    """What a cancelled instance reports to its initiator: the ``errorName`` of its system error event."""


def is_cancel_event(event: ArvoEvent) -> bool:
    """Whether ``event`` is a cancel event (its type is :data:`CANCEL_EVENT_TYPE`)."""
    return event.type == CANCEL_EVENT_TYPE


def _bounded(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        return NO_REASON
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def cancel_reason(event: ArvoEvent) -> str:
    """A cancel event's reason: ``data.reason`` (cut to :data:`MAX_REASON_CHARS`) or :data:`NO_REASON`."""
    reason = event.data.get("reason")
    return _bounded(reason) if isinstance(reason, str) else NO_REASON


def cancellation_message(orchestrator: str, event: ArvoEvent) -> str:
    """The ``errorMessage`` of the system error of an instance of ``orchestrator`` cancelled by ``event``."""
    return f"{orchestrator} cancelled by {event.source}: {cancel_reason(event)}"


def create_cancel_event(
    subject: str,
    *,
    source: str,
    reason: str | None = None,
    id: str | None = None,
    parentid: str | None = None,
    accesscontrol: str | None = None,
    executionunits: float | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> ArvoEvent:
    """The cancel event of the instance of ``subject``, addressed to its orchestrator.

    Args:
        subject: The instance's orchestration subject (the orchestrator's name is read from it).
        source: Who cancels (the event's ``source``).
        reason: Why (``data.reason``; cut to :data:`MAX_REASON_CHARS`, :data:`NO_REASON` when empty).
        id: The event id (default: a random UUID).
        parentid: The id of the event that caused the cancellation, if any.
        accesscontrol: Propagated like on any event.
        executionunits: Cost metric, propagated.
        traceparent: W3C trace context.
        tracestate: W3C trace state.

    Raises:
        SubjectError: ``subject`` is not an orchestration subject (a ``ValueError``).

    """
    orchestrator = ArvoOrchestrationSubject.parse(subject).name
    return create_arvo_event(
        id=id,
        source=source,
        type=CANCEL_EVENT_TYPE,
        subject=subject,
        data={"reason": _bounded(reason or "")},
        datacontenttype=ARVO_DATA_CONTENT_TYPE,
        to=orchestrator,
        accesscontrol=accesscontrol,
        executionunits=executionunits,
        traceparent=traceparent,
        tracestate=tracestate,
        parentid=parentid,
    )


def child_cancel_events(
    children: Sequence[str],
    *,
    source: str,
    consumed: ArvoEvent,
    executionunits: float,
    traceparent: str | None,
    tracestate: str | None,
    reason: str | None = None,
) -> list[ArvoEvent]:
    """The cancel events of ``children`` (subjects), sent by ``source`` because ``consumed`` cancelled it.

    Each id is derived from ``consumed`` and the child's subject; a subject that does not parse (a
    hand-edited record) is skipped. ``reason`` defaults to ``parent <source> cancelled: <reason>``.
    """
    if reason is None:
        reason = f"parent {source} cancelled: {cancel_reason(consumed)}"
    events: list[ArvoEvent] = []
    for child in children:
        try:
            events.append(
                create_cancel_event(
                    child,
                    source=source,
                    reason=reason,
                    id=derive_uuid(
                        "cancel", source, consumed.source, consumed.id, consumed.domain or "", child
                    ),
                    parentid=consumed.id,
                    accesscontrol=consumed.accesscontrol,
                    executionunits=executionunits,
                    traceparent=traceparent,
                    tracestate=tracestate,
                )
            )
        except ValueError:
            continue
    return events


def push_children(
    record: InstanceRecord | None,
    emitted: Sequence[ArvoEvent],
    *,
    subject: str,
    complete_type: str | None,
) -> list[str]:
    """The record's child subjects plus those of the child init events among ``emitted``, newest last.

    A child init event is the one emission whose subject is neither the instance's own ``subject``
    (service calls) nor its completion's (``complete_type``, on the parent's subject): emissions of an
    orchestrator contract get the child's subject (see :mod:`~service.arvo.orchestration.emittables`).
    At most :data:`MAX_CHILDREN` are kept, the newest.
    """
    children = list(record.get("children") or []) if record is not None else []
    added = False
    for event in emitted:
        if event.subject != subject and event.type != complete_type and event.subject not in children:
            children.append(event.subject)
            added = True
    if added and len(children) > MAX_CHILDREN:
        return children[-MAX_CHILDREN:]
    return children
