"""The stored JSON record of an orchestration instance (orchestrator or resumable), as types.

The pipeline (:mod:`service.arvo.orchestration.pipeline`) writes one record per instance, in the same
atomic step that releases the lease. Records are plain JSON objects in the memory
(:class:`~service.arvo.memory.Memory` keeps its ``dict[str, Any]`` signatures; these types are
assignable to them); these ``TypedDict`` s describe what the pipeline writes and reads, so nothing
checks them at run time. A record read back may be older or hand-edited: readers use ``.get``.

A normal record (``executionStatus: "normal"``)::

    {"schemaVersion": 1, "kind": "orchestrator", "executionStatus": "normal", "status": "active",
     "completed": false, "subject": "...", "parentSubject": null, "initEventId": "...",
     "orchestrator": "arvo.orc.order", "version": "1.0.0",
     "value": ..., "state": {...}, "machineId": "...",            # orchestrators
     "state$$": ...,                                                # resumables
     "events": {"consumed": {...}, "produced": [...], "expected": {...}},   # expected: resumables
     "consumedIds": ["@<source>/<domain>/<id>", ...], "updatedAt": "...",
     "history": [{"dir": "consumed", "type": ..., "id": ..., "source": ..., "outcome": ...,
                  "time": ..., "traceId": ...}, ...]}              # when history is kept

A failure record (``executionStatus: "failure"``, ``status: "failed"``) has the same common keys plus
``error`` and ``previous`` (the record before the failure, without its own ``previous``), and no
kind-specific fields; its ``events.produced`` are the system error events.

A record of an instance that started child orchestrations also has ``children`` (their subjects,
newest last, bounded). A cancelled record (``executionStatus`` and ``status`` ``"cancelled"``) is the
record before the cancellation (its kind-specific fields kept: where it stopped) plus
``cancellation`` (``{reason, by, eventId, at}``); its ``events`` are the cancel event and what it
produced (the system error events and the cancel events of the children)::

    {..., "executionStatus": "cancelled", "status": "cancelled", "value": ..., "state": {...},
     "children": ["<child subject>", ...],
     "cancellation": {"reason": "...", "by": "com.arvo.cli", "eventId": "...", "at": "..."},
     "events": {"consumed": {<the arvo.instance.cancel event>}, "produced": [...]}, ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, Required, TypedDict

import orjson

from service.arvo.event import ArvoEvent
from service.arvo.orchestration.timers import TimerEntry

__all__ = [
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_HISTORY_EVENTS",
    "EMITTED_IDS_KEPT",
    "Cancellation",
    "EventsFields",
    "ExecutionStatus",
    "HistoryEntry",
    "InstanceRecord",
    "KindFields",
    "RecordEvents",
    "RecordKind",
    "RecordStatus",
    "push_emitted_ids",
    "push_history",
]

RecordKind = Literal["orchestrator", "resumable"]
"""Which kind of handler owns the instance."""

ExecutionStatus = Literal["normal", "failure", "cancelled"]
"""``failure`` once a core raised a non-violation error, ``cancelled`` once a cancel event stopped the
instance: later events are ignored."""

RecordStatus = Literal["active", "done", "failed", "cancelled", "timed_out"]
"""The lifecycle status written with the record (as :class:`~service.arvo.memory.InstanceStatus`)."""

# ``state$$`` is not an identifier: only the functional syntax can declare it.
_ResumableFields = TypedDict("_ResumableFields", {"state$$": Any}, total=False)


class KindFields(_ResumableFields, total=False):
    """The kind-specific top-level fields a core adds to a normal record (``CoreResult.fields``).

    Orchestrators set ``value``, ``state`` and ``machineId``; resumables set ``state$$`` (the
    custom context their handler returned last, ``None`` before the first one).
    """

    value: Any
    """The statechart's state value (``"idle"``, ``{"parallel": {...}}``...)."""
    state: dict[str, Any]
    """The machine snapshot the next event resumes from."""
    machineId: str  # noqa: N815 - wire name
    """The id of the machine version that wrote the snapshot."""


class EventsFields(TypedDict, total=False):
    """The kind-specific part of the record's ``events`` (``CoreResult.events_fields``)."""

    expected: dict[str, list[dict[str, Any]]] | None
    """Resumables: replies collected so far per emitted event id (``None`` before any emission)."""


class Cancellation(TypedDict):
    """Cancelled records: who cancelled the instance, when and why."""

    reason: str
    """The cancel event's ``data.reason`` (bounded), or a placeholder when it gave none."""
    by: str
    """The cancel event's ``source``."""
    eventId: str
    """The cancel event's ``id``."""
    at: str
    """When the cancellation was committed (RFC 3339)."""


class RecordEvents(EventsFields):
    """The record's ``events``: an outbox of the last consumed event and what it produced."""

    consumed: dict[str, Any]
    """The last consumed event, as JSON."""
    produced: list[dict[str, Any]]
    """The events it produced (system errors in a failure record), as JSON; replayed on redelivery."""


class InstanceRecord(KindFields, total=False):
    """The stored record of one orchestration instance (see the module docstring for examples).

    The ``Required`` keys are written by every record of schema version 1; ``error`` and
    ``previous`` only by failure records; ``parkedReason``/``statusReason`` by
    :meth:`~service.arvo.memory.Memory.set_status` when given a reason.
    """

    schemaVersion: Required[int]  # noqa: N815 - wire name
    """The record layout version (``RECORD_SCHEMA_VERSION``)."""
    kind: Required[RecordKind]
    """``orchestrator`` or ``resumable``."""
    executionStatus: Required[ExecutionStatus]  # noqa: N815 - wire name
    """``normal``, ``failure`` once a core failed, ``cancelled`` once a cancel event stopped it."""
    status: Required[RecordStatus]
    """``active``, ``done``, ``failed``, ``cancelled`` or ``timed_out`` (its deadline passed)."""
    completed: Required[bool]
    """Whether the completion was emitted (a failure record keeps the previous flag)."""
    subject: Required[str]
    """The orchestration subject of the last consumed event."""
    parentSubject: Required[str | None]  # noqa: N815 - wire name
    """The parent orchestration's subject (child workflows), fixed by the first init event."""
    initEventId: Required[str]  # noqa: N815 - wire name
    """The id of the init event, fixed by the first one."""
    orchestrator: Required[str]
    """The orchestrator name from the subject (``arvo.orc.<name>``)."""
    version: Required[str]
    """The orchestrator version the subject pins; another version is a ``ConfigViolation``."""
    events: Required[RecordEvents]
    """The outbox: last consumed event and its emissions."""
    consumedIds: Required[list[str]]  # noqa: N815 - wire name
    """The ring of the last consumed ``<domain>/<id>`` keys (deduplication), oldest first."""
    updatedAt: Required[str]  # noqa: N815 - wire name
    """When the record was written (RFC 3339)."""
    error: dict[str, str | None]
    """Failure records: ``{errorName, errorMessage, errorStack}`` of the error (stack always kept)."""
    previous: InstanceRecord | None
    """Failure records: the record before the failure (without its own ``previous``), or ``None``."""
    children: list[str]
    """The subjects of the child orchestrations this instance started (their init events), newest
    last, at most ``MAX_CHILDREN``; absent when it started none. A cancellation cancels them."""
    cancellation: Cancellation
    """Cancelled and timed-out records: who cancelled the instance (``deadline`` for a timeout), when
    and why."""
    timers: list[TimerEntry]
    """The instance's pending timers (its delayed transitions and its deadline), by due time: the
    truth the scheduler's hints are checked against; absent when none is pending."""
    parkedReason: str  # noqa: N815 - wire name
    """Why an operator or the consumer parked the instance."""
    statusReason: str  # noqa: N815 - wire name
    """Why the status was set from outside a lease (other than parking)."""
    history: list[HistoryEntry]
    """The instance's recent consumed and produced events, oldest first (``arvo inspect --history``);
    bounded by count and bytes, absent when history is off."""
    emittedIds: list[str]  # noqa: N815 - wire name
    """The ids of the events the instance emitted, oldest first, at most ``EMITTED_IDS_KEPT`` (the
    newest); written only with ``ARVO_REPLY_SOURCE_CHECK=strict``, where a reply is accepted only when
    its ``parentid`` is one of them. Absent: the record was written without strict mode."""


DEFAULT_HISTORY_EVENTS: Final = 20
"""Entries of history kept per instance by default (``ARVO_INSTANCE_HISTORY_EVENTS``)."""

DEFAULT_HISTORY_BYTES: Final = 4_096
"""Bytes of JSON history kept per instance by default (``ARVO_INSTANCE_HISTORY_BYTES``)."""

EMITTED_IDS_KEPT: Final = 256
"""Most emitted event ids a record keeps for the strict reply-source check (the newest): a reply to
an event emitted longer ago than the last 256 emissions of its instance is refused in strict mode."""


class HistoryEntry(TypedDict):
    """One consumed or produced event in an instance's history."""

    dir: Literal["consumed", "produced"]
    type: str
    id: str
    source: str
    outcome: str
    """Consumed: the execution outcome (``executed``, ``system_error``…); produced: ``emitted``."""
    time: str
    traceId: str | None


def _entry(event: ArvoEvent, direction: Literal["consumed", "produced"], outcome: str) -> HistoryEntry:
    traceparent = event.traceparent
    parts = traceparent.split("-") if traceparent else []
    return {
        "dir": direction,
        "type": event.type,
        "id": event.id,
        "source": event.source,
        "outcome": outcome,
        "time": event.time,
        "traceId": parts[1] if len(parts) == 4 else None,
    }


def push_history(
    record: InstanceRecord | None,
    consumed: ArvoEvent,
    produced: Sequence[ArvoEvent],
    outcome: str,
    *,
    max_events: int,
    max_bytes: int,
) -> list[HistoryEntry]:
    """The history of ``record`` plus ``consumed`` and its ``produced`` events, cut to the bounds.

    The newest entries are kept: at most ``max_events``, and as many of those as fit ``max_bytes`` of
    JSON (at least the consumed event's own entry, so the last step is always visible).
    """
    previous = list(record.get("history") or []) if record is not None else []
    entries = [
        *previous,
        _entry(consumed, "consumed", outcome),
        *(_entry(e, "produced", "emitted") for e in produced),
    ]
    entries = entries[-max_events:]
    size = len(orjson.dumps(entries))
    first = 0
    while size > max_bytes and len(entries) - first > 1:
        size -= len(orjson.dumps(entries[first])) + 1  # the entry and its comma
        first += 1
    return entries[first:]


def push_emitted_ids(record: InstanceRecord | None, emitted: Sequence[ArvoEvent]) -> list[str]:
    """The emitted ids of ``record`` plus those of ``emitted``, the newest :data:`EMITTED_IDS_KEPT`.

    A record written without strict mode has none: the list starts with this step's emissions.
    """
    previous = record.get("emittedIds") or [] if record is not None else []
    ids = [*previous, *(event.id for event in emitted)]
    return ids[-EMITTED_IDS_KEPT:]
