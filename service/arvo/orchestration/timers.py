"""Durable timers and workflow deadlines of orchestration instances: the timer event and the record's truth.

An instance's pending timers live **in its record** (``timers``), written in the same atomic commit
as its state: a statechart's delayed transitions (``after``; their truth is the snapshot, the record
lists them for the scheduler) and the instance's deadline. Nothing else is the truth: the schedule
the consumer keeps per partition (:mod:`service.runtime.timer_index`) is a *hint* that can be lost,
stale or duplicated without effect, because firing goes through the record:

1. The scheduler of a partition finds a due hint and publishes a **timer event** — an ordinary
   ArvoEvent on the orchestrator's own topic, keyed by the instance's subject, so it is ordered with
   the instance's other events and passes the same lease, dedupe and outbox machinery::

       {"type": "arvo.instance.timer", "to": "<orchestrator>", "subject": "<instance subject>",
        "source": "<orchestrator>", "id": uuid5(subject, timer id), "time": <due time>,
        "data": {"timerId": "<id>", "dueMs": <due, ms since the epoch>}, ...}

2. The pipeline fires the timer only if the record still lists it (same id, same due time);
   otherwise the event is stale (the state was left, the instance finished, it fired already) and
   ignored (``ignored_stale_timer``). Its id is derived from the subject and the timer id, so a timer
   published twice is deduplicated like any redelivery: firing is at-least-once, its effect
   exactly-once.

A **deadline** bounds a whole workflow: the init event's extension attribute ``arvodeadline``
(RFC 3339), or the orchestrator's default (``deadline_s``). When it passes the instance stops like a
cancelled one, with status ``timed_out``: its initiator receives the standard system error
(``OrchestrationTimedOutError``) and its child orchestrations are cancelled. Child init events carry
the parent's deadline on, so a child never outlives its parent's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypedDict

from service.arvo.event import ARVO_DATA_CONTENT_TYPE, ArvoEvent, create_arvo_event
from service.arvo.orchestration.ids import derive_uuid

__all__ = [
    "DEADLINE_EXTENSION",
    "DEADLINE_TIMER_ID",
    "TIMER_EVENT_TYPE",
    "OrchestrationTimedOutError",
    "TimerEntry",
    "TimerKind",
    "create_timer_event",
    "deadline_entry",
    "deadline_ms_of",
    "format_time_ms",
    "is_timer_event",
    "merge_timers",
    "pending_timer",
    "record_timers",
    "stored_deadline",
    "timer_event_id",
    "timer_of",
]

TIMER_EVENT_TYPE: Final = "arvo.instance.timer"
"""The type of the event that fires a due timer."""

DEADLINE_EXTENSION: Final = "arvodeadline"
"""The CloudEvents extension attribute of an init event that bounds its workflow (RFC 3339 time)."""

DEADLINE_TIMER_ID: Final = "arvo.deadline"
"""The id of an instance's deadline timer (one per instance)."""

TimerKind = Literal["machine", "resumable", "deadline"]
"""What a timer fires: a statechart's delayed transition, a resumable's named timer, the deadline."""


class TimerEntry(TypedDict):
    """One pending timer of an instance, as its record keeps it (``timers``)."""

    id: str
    """Unique within the instance (a machine's ``<event>#<n>``, :data:`DEADLINE_TIMER_ID`)."""
    dueMs: int
    """When it is due, in whole milliseconds since the Unix epoch (UTC)."""
    kind: TimerKind
    """What it fires."""


class OrchestrationTimedOutError(Exception):
    """What an instance stopped by its deadline reports to its initiator (``errorName``)."""


def is_timer_event(event: ArvoEvent) -> bool:
    """Whether ``event`` fires a timer (its type is :data:`TIMER_EVENT_TYPE`)."""
    return event.type == TIMER_EVENT_TYPE


def timer_event_id(subject: str, timer_id: str) -> str:
    """The deterministic id of the event firing ``timer_id`` of the instance of ``subject``."""
    return derive_uuid("timer", subject, timer_id)


def format_time_ms(due_ms: float) -> str:
    """``due_ms`` as an RFC 3339 UTC timestamp with milliseconds (``2026-12-05T12:00:00.000+00:00``)."""
    return datetime.fromtimestamp(due_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def create_timer_event(
    *,
    subject: str,
    orchestrator: str,
    timer_id: str,
    due_ms: int,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> ArvoEvent:
    """The event that fires ``timer_id`` (due at ``due_ms``) of the instance of ``subject``.

    Deterministic: the same timer always gives the byte-identical event (its ``time`` is the due
    time), so a timer published twice is one event for the dedupe of the instance.
    """
    return create_arvo_event(
        id=timer_event_id(subject, timer_id),
        source=orchestrator,
        type=TIMER_EVENT_TYPE,
        subject=subject,
        data={"timerId": timer_id, "dueMs": int(due_ms)},
        datacontenttype=ARVO_DATA_CONTENT_TYPE,
        to=orchestrator,
        time=format_time_ms(due_ms),
        traceparent=traceparent,
        tracestate=tracestate,
    )


def timer_of(event: ArvoEvent) -> tuple[str, int] | None:
    """``(timer id, due ms)`` of a timer event, ``None`` when its data is not a timer's."""
    timer_id = event.data.get("timerId")
    due = event.data.get("dueMs")
    if not isinstance(timer_id, str) or not timer_id or isinstance(due, bool) or not isinstance(due, int):
        return None
    return timer_id, due


def pending_timer(record: Mapping[str, Any] | None, timer_id: str, due_ms: int) -> TimerEntry | None:
    """The record's pending timer ``timer_id`` due at ``due_ms``, ``None`` when it has none such."""
    for entry in record_timers(record):
        if entry["id"] == timer_id and entry["dueMs"] == due_ms:
            return entry
    return None


def deadline_ms_of(event: ArvoEvent) -> int | None:
    """The deadline an init event carries (:data:`DEADLINE_EXTENSION`), in ms; ``None`` without one.

    Raises:
        TypeError: the attribute is not a string.
        ValueError: the attribute is not an RFC 3339 time with a time zone.

    """
    value = event.extensions.get(DEADLINE_EXTENSION)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"extension {DEADLINE_EXTENSION} must be an RFC 3339 time string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise ValueError(f"extension {DEADLINE_EXTENSION}={value!r} is not an RFC 3339 time") from error
    if parsed.tzinfo is None:
        raise ValueError(f"extension {DEADLINE_EXTENSION}={value!r} has no time zone (add Z or +00:00)")
    return math.floor(parsed.timestamp() * 1000)


def deadline_entry(deadline_ms: int) -> TimerEntry:
    """The deadline timer of an instance due at ``deadline_ms``."""
    return TimerEntry(id=DEADLINE_TIMER_ID, dueMs=int(deadline_ms), kind="deadline")


def merge_timers(kind_timers: Iterable[TimerEntry], deadline: TimerEntry | None) -> list[TimerEntry]:
    """The record's ``timers``: the kind's pending timers and the deadline, by due time then id."""
    merged = list(kind_timers)
    if deadline is not None:
        merged.append(deadline)
    merged.sort(key=lambda entry: (entry["dueMs"], entry["id"]))
    return merged


def stored_deadline(record: Mapping[str, Any] | None) -> TimerEntry | None:
    """The deadline timer a record holds, if any."""
    for entry in record_timers(record):
        if entry["id"] == DEADLINE_TIMER_ID:
            return deadline_entry(entry["dueMs"])
    return None


def record_timers(record: Mapping[str, Any] | None) -> Sequence[TimerEntry]:
    """The pending timers a record holds (well-formed entries only)."""
    if record is None:
        return ()
    entries: list[TimerEntry] = []
    for entry in record.get("timers") or ():
        if not isinstance(entry, Mapping):
            continue
        timer_id, due = entry.get("id"), entry.get("dueMs")
        if isinstance(timer_id, str) and isinstance(due, int) and not isinstance(due, bool):
            entries.append(TimerEntry(id=timer_id, dueMs=due, kind=entry.get("kind", "machine")))
    return entries
