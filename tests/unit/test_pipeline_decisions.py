"""The pipeline's pure decision step, :func:`decide`: one test per branch, plus the branch order.

No memory, no span, no core: a parsed subject, the handler's source, an event and a stored record
go in; a :data:`Decision` comes out.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, cast

import pytest

from service.arvo.errors import ConfigViolation
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.execution import ExecutionOutcome
from service.arvo.orchestration.pipeline import (
    DropDuplicate,
    Ignore,
    Proceed,
    Replay,
    VersionMismatch,
    consumed_key,
    decide,
    foreign_subject,
)
from service.arvo.orchestration.record import InstanceRecord
from service.arvo.subject import ArvoOrchestrationSubject, ParsedSubject

SOURCE = "arvo.orc.shop"
VERSION = "1.0.0"
SUBJECT = ArvoOrchestrationSubject.new(
    orchestrator=SOURCE, initiator="com.test.client", version=VERSION, execution_id="exec-1"
)
PARENT = ArvoOrchestrationSubject.new(
    orchestrator="arvo.orc.parent", initiator="com.test.client", version="2.0.0"
)


def parsed(subject: str = SUBJECT) -> ParsedSubject:
    return ArvoOrchestrationSubject.parse(subject)


def event(
    *,
    type: str = "evt.shop.pay.success",
    id: str = "event-1",
    data: dict[str, Any] | None = None,
    domain: str | None = None,
    subject: str = SUBJECT,
) -> ArvoEvent:
    return create_arvo_event(
        source="com.shop.pay", type=type, subject=subject, data=data or {}, id=id, domain=domain
    )


def init_event(parent: object = None, *, id: str = "init-1") -> ArvoEvent:
    return event(type=SOURCE, id=id, data={"parentSubject$$": parent})


def stored(**overrides: Any) -> InstanceRecord:
    record: InstanceRecord = {
        "schemaVersion": 1,
        "kind": "orchestrator",
        "executionStatus": "normal",
        "status": "active",
        "completed": False,
        "subject": SUBJECT,
        "parentSubject": PARENT,
        "initEventId": "init-1",
        "orchestrator": SOURCE,
        "version": VERSION,
        "events": {"consumed": {"id": "init-1"}, "produced": [{"id": "out-1"}, {"id": "out-2"}]},
        "consumedIds": ["/init-1"],
        "updatedAt": "2025-01-01T00:00:00.000+00:00",
    }
    record.update(overrides)  # type: ignore[typeddict-item]
    return record


def without(record: InstanceRecord, *keys: str) -> InstanceRecord:
    """``record`` without ``keys`` (an older or hand-edited record)."""
    return cast("InstanceRecord", {key: value for key, value in record.items() if key not in keys})


# --- foreign subjects -----------------------------------------------------------------------------


def test_a_foreign_subject_is_ignored_with_the_mismatch_named() -> None:
    foreign = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.other", initiator="com.test.client")
    decision = decide(parsed(foreign), SOURCE, event(subject=foreign), None)
    assert decision == Ignore(
        ExecutionOutcome.IGNORED_FOREIGN_SUBJECT,
        "Event subject mismatch - expected 'arvo.orc.shop' but got 'arvo.orc.other'",
    )
    assert foreign_subject(parsed(foreign), SOURCE) == decision


def test_a_foreign_subject_wins_over_a_stored_record() -> None:
    foreign = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.other", initiator="com.test.client")
    last = event(subject=foreign, id="init-1")
    decision = decide(parsed(foreign), SOURCE, last, stored(consumedIds=[consumed_key(last)]))
    assert isinstance(decision, Ignore)
    assert decision.outcome is ExecutionOutcome.IGNORED_FOREIGN_SUBJECT


def test_an_own_subject_is_not_foreign() -> None:
    assert foreign_subject(parsed(), SOURCE) is None


# --- no stored record -----------------------------------------------------------------------------


def test_without_a_record_a_non_init_event_is_ignored() -> None:
    assert decide(parsed(), SOURCE, event(type="evt.shop.pay.success"), None) == Ignore(
        ExecutionOutcome.IGNORED_NO_STATE,
        "Invalid initialization event detected. Expected type 'arvo.orc.shop' but received "
        "'evt.shop.pay.success'.",
    )


def test_without_a_record_the_init_event_proceeds_with_its_parent_and_its_own_id() -> None:
    assert decide(parsed(), SOURCE, init_event(PARENT, id="init-9"), None) == Proceed(
        parent_subject=PARENT, init_event_id="init-9"
    )


@pytest.mark.parametrize("parent", [None, "", 42, ["not", "a", "subject"]], ids=repr)
def test_without_a_record_an_init_event_without_a_string_parent_is_a_root(parent: object) -> None:
    assert decide(parsed(), SOURCE, init_event(parent), None) == Proceed(
        parent_subject=None, init_event_id="init-1"
    )


def test_without_a_record_an_init_event_without_the_parent_key_is_a_root() -> None:
    assert decide(parsed(), SOURCE, event(type=SOURCE, id="init-2"), None) == Proceed(None, "init-2")


# --- deduplication ------------------------------------------------------------------------------


def test_the_last_consumed_event_is_replayed_with_the_stored_emissions() -> None:
    redelivered = event(id="event-7")
    decision = decide(parsed(), SOURCE, redelivered, stored(consumedIds=["/init-1", "/event-7"]))
    assert decision == Replay(({"id": "out-1"}, {"id": "out-2"}))
    assert isinstance(decision, Replay)
    assert decision.outcome is ExecutionOutcome.REPLAYED


def test_a_replay_without_stored_emissions_replays_nothing() -> None:
    last = event(id="event-7")
    no_events = stored(consumedIds=["/event-7"], events={})
    assert decide(parsed(), SOURCE, last, no_events) == Replay(())
    assert decide(parsed(), SOURCE, last, without(stored(consumedIds=["/event-7"]), "events")) == Replay(())


def test_an_earlier_consumed_event_is_dropped() -> None:
    decision = decide(parsed(), SOURCE, event(id="event-7"), stored(consumedIds=["/event-7", "/event-8"]))
    assert decision == DropDuplicate()
    assert isinstance(decision, DropDuplicate)
    assert decision.outcome is ExecutionOutcome.DUPLICATE_DROPPED


def test_the_consumed_key_includes_the_domain() -> None:
    source = event(id="event-7").source
    assert consumed_key(event(id="event-7", domain="human.review")) == f"@{source}/human.review/event-7"
    assert consumed_key(event(id="event-7")) == f"@{source}//event-7"
    # Same id, another domain: a different event, not a duplicate.
    decision = decide(
        parsed(),
        SOURCE,
        event(id="event-7", domain="human.review"),
        stored(consumedIds=[f"@{source}//event-7"]),
    )
    assert decision == Proceed(parent_subject=PARENT, init_event_id="init-1")


def test_an_empty_ring_dedupes_nothing() -> None:
    assert decide(parsed(), SOURCE, event(), stored(consumedIds=[])) == Proceed(PARENT, "init-1")
    assert decide(parsed(), SOURCE, event(), without(stored(), "consumedIds")) == Proceed(PARENT, "init-1")


@pytest.mark.parametrize(
    "overrides",
    [
        {"version": "9.9.9"},
        {"executionStatus": "failure"},
        {"version": "9.9.9", "executionStatus": "failure"},
    ],
    ids=["other_version", "failed", "both"],
)
def test_duplicates_are_decided_before_version_and_failure(overrides: dict[str, Any]) -> None:
    last = event(id="event-7")
    assert decide(parsed(), SOURCE, last, stored(consumedIds=["/event-7"], **overrides)) == Replay(
        ({"id": "out-1"}, {"id": "out-2"})
    )
    assert (
        decide(parsed(), SOURCE, last, stored(consumedIds=["/event-7", "/x"], **overrides)) == DropDuplicate()
    )


# --- version and failure --------------------------------------------------------------------------


def test_another_stored_version_is_a_version_mismatch() -> None:
    decision = decide(parsed(), SOURCE, event(id="event-3"), stored(version="0.9.0"))
    message = (
        "Subject version '1.0.0' does not match the version '0.9.0' of instance "
        f"{parsed().instance_key} (event id=event-3)"
    )
    assert decision == VersionMismatch(message)
    assert isinstance(decision, VersionMismatch)
    violation = decision.violation()
    assert isinstance(violation, ConfigViolation)
    assert str(violation) == ConfigViolation(message).args[0]


def test_a_record_without_a_version_matches_any_version() -> None:
    assert decide(parsed(), SOURCE, event(), without(stored(), "version")) == Proceed(PARENT, "init-1")


def test_a_version_mismatch_is_decided_before_the_failure() -> None:
    decision = decide(parsed(), SOURCE, event(), stored(version="0.9.0", executionStatus="failure"))
    assert isinstance(decision, VersionMismatch)


def test_a_failed_instance_ignores_the_event() -> None:
    decision = decide(
        parsed(), SOURCE, event(id="event-4"), stored(executionStatus="failure", status="failed")
    )
    assert decision == Ignore(
        ExecutionOutcome.IGNORED_FAILED,
        f"The orchestration has failed in a previous event. Ignoring event id: event-4 with event subject: {SUBJECT}",
    )


# --- proceed with a record ------------------------------------------------------------------------


def test_a_stored_instance_proceeds_with_its_stored_parent_and_init_event_id() -> None:
    assert decide(parsed(), SOURCE, event(), stored()) == Proceed(
        parent_subject=PARENT, init_event_id="init-1"
    )


def test_a_second_init_event_never_overwrites_the_stored_parent() -> None:
    other_parent = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.thief", initiator="com.test.client")
    decision = decide(parsed(), SOURCE, init_event(other_parent, id="init-2"), stored(parentSubject=None))
    assert decision == Proceed(parent_subject=None, init_event_id="init-1")


@pytest.mark.parametrize("init_event_id", [None, ""], ids=["none", "empty"])
def test_without_a_stored_init_event_id_the_event_id_is_used(init_event_id: str | None) -> None:
    assert decide(parsed(), SOURCE, event(id="event-5"), stored(initEventId=init_event_id)) == Proceed(
        PARENT, "event-5"
    )
    record = without(stored(), "initEventId", "parentSubject")
    assert decide(parsed(), SOURCE, event(id="event-5"), record) == Proceed(None, "event-5")


# --- properties of the decision step --------------------------------------------------------------


def test_decide_does_not_touch_the_record() -> None:
    record = stored(consumedIds=["/event-7"])
    before = copy.deepcopy(record)
    for candidate in (event(id="event-7"), event(id="event-8"), init_event()):
        decide(parsed(), SOURCE, candidate, record)
    assert record == before


@pytest.mark.parametrize(
    "decision",
    [
        Replay(()),
        DropDuplicate(),
        Ignore(ExecutionOutcome.IGNORED_NO_STATE, "why"),
        VersionMismatch("why"),
        Proceed(None, "init-1"),
    ],
    ids=lambda decision: type(decision).__name__,
)
def test_decisions_are_frozen(decision: object) -> None:
    fields = dataclasses.fields(decision)  # type: ignore[arg-type]
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(decision, fields[0].name, None)


def test_outcome_values_are_stable_metric_labels() -> None:
    assert {outcome.name: outcome.value for outcome in ExecutionOutcome} == {
        "EXECUTED": "ok",
        "SYSTEM_ERROR": "system_error",
        "REPLAYED": "replayed",
        "DUPLICATE_DROPPED": "duplicate_dropped",
        "IGNORED_FOREIGN_SUBJECT": "ignored_foreign_subject",
        "IGNORED_NO_STATE": "ignored_no_state",
        "IGNORED_FAILED": "ignored_failed",
        "IGNORED_DONE": "ignored_done",
        "CANCELLED": "cancelled",
        "IGNORED_CANCELLED": "ignored_cancelled",
        "NOTHING_TO_CANCEL": "nothing_to_cancel",
        "TIMED_OUT": "timed_out",
        "IGNORED_STALE_TIMER": "ignored_stale_timer",
        "DEAD_LETTERED": "dead_lettered",
        "PARKED": "parked",
    }
