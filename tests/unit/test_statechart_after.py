"""Delayed transitions (XState ``after``) in the statechart interpreter, rule by rule.

The exhaustive semantic check is the differential test against the real XState on a ``SimulatedClock``
(``tests/interop/test_xstate_conformance.py``, timed cases); these tests pin the rules by name, and the
parts XState does not have: timers living in the snapshot, the step API and the validation.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson
import pytest

from service.arvo.errors import ConfigViolation
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.machine.arvo_machine import setup_arvo_machine
from service.arvo.machine.engine import MachineExecutionEngine
from service.arvo.machine.statechart import (
    InvalidSnapshotError,
    MachineLoopError,
    MachineStep,
    PendingTimer,
    Statechart,
    assign,
    emit,
)
from tests.unit.arvo_fixtures import COUNTER_SERVICES, test_machine_contract


def rec(label: str) -> Any:
    """An assign action appending ``label@event.type`` to ``context.log``."""
    return assign(lambda a: {"log": [*a.context["log"], f"{label}@{a.event['type']}"]})


def log_of(step: MachineStep) -> list[str]:
    return list(step.snapshot["context"]["log"])


def roundtrip(step: MachineStep) -> dict[str, Any]:
    """The snapshot as a store would give it back."""
    snapshot: dict[str, Any] = orjson.loads(orjson.dumps(step.snapshot))
    return snapshot


def events(step: MachineStep) -> list[tuple[str, float]]:
    return [(timer.event, timer.due_ms) for timer in step.timers]


def waiting_chart(**extra: Any) -> Statechart:
    """``idle`` --after 1000--> ``timedOut``; ``GO`` leaves ``idle`` for ``busy``."""
    return Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "initial": "idle",
            "states": {
                "idle": {
                    "entry": rec("idle+"),
                    "exit": rec("idle-"),
                    "after": {1000: {"target": "timedOut", "actions": rec("late")}},
                    "on": {
                        "GO": "busy",
                        "RE": {"target": "idle", "reenter": True},
                        "STAY": {"actions": rec("s")},
                    },
                },
                "busy": {"on": {"BACK": "idle"}},
                "timedOut": {"entry": rec("timedOut+")},
            },
        },
        **extra,
    )


# ---------------------------------------------------------------------------------------------------
# Arming, firing, cancelling


def test_entering_a_state_arms_its_timer_at_now_plus_delay() -> None:
    step = waiting_chart().start(now_ms=5000)
    assert step.timers == (
        PendingTimer("xstate.after.1000.m.idle#0", "xstate.after.1000.m.idle", 6000, 1000),
    )
    assert step.cancelled == ()
    assert step.fired == ()
    assert step.snapshot["timers"] == [
        {
            "id": "xstate.after.1000.m.idle#0",
            "event": "xstate.after.1000.m.idle",
            "due": 6000,
            "delay": 1000,
            "seq": 0,
        }
    ]
    assert step.snapshot["timerSeq"] == 1


def test_firing_a_timer_delivers_its_delayed_event_as_a_macrostep() -> None:
    chart = waiting_chart()
    start = chart.start(now_ms=0)
    fired = chart.fire_timer(roundtrip(start), start.timers[0].id, now_ms=1000)
    assert fired.snapshot["value"] == "timedOut"
    assert log_of(fired) == [
        "idle+@xstate.init",
        "idle-@xstate.after.1000.m.idle",
        "late@xstate.after.1000.m.idle",
        "timedOut+@xstate.after.1000.m.idle",
    ]
    assert fired.fired == (start.timers[0].id,)
    assert fired.timers == ()
    assert fired.cancelled == ()  # a fired timer is not reported as cancelled


def test_leaving_the_state_cancels_its_timer() -> None:
    chart = waiting_chart()
    start = chart.start(now_ms=0)
    left = chart.send(roundtrip(start), {"type": "GO"}, now_ms=10)
    assert left.timers == ()
    assert left.cancelled == ("xstate.after.1000.m.idle#0",)
    assert left.snapshot["timers"] == []
    # A late delivery of the cancelled timer is a no-op step.
    stale = chart.fire_timer(roundtrip(left), "xstate.after.1000.m.idle#0", now_ms=1000)
    assert stale.snapshot == left.snapshot
    assert stale.fired == ()
    assert stale.emitted == []


def test_an_unrelated_event_keeps_the_pending_timer_unchanged() -> None:
    chart = waiting_chart()
    start = chart.start(now_ms=0)
    step = chart.send(roundtrip(start), {"type": "STAY"}, now_ms=700)
    assert step.timers == start.timers
    assert step.cancelled == ()


def test_a_state_entered_and_left_within_one_step_leaves_no_timer() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "context": {"pass": False},
            "states": {
                "a": {"on": {"E": {"target": "b", "actions": assign({"pass": True})}}},
                "b": {"after": {"500": "a"}, "always": {"guard": lambda a: a.context["pass"], "target": "c"}},
                "c": {},
            },
        }
    )
    start = chart.start(now_ms=0)
    step = chart.send(roundtrip(start), {"type": "E"}, now_ms=1)
    assert step.snapshot["value"] == "c"
    assert step.timers == ()
    assert step.cancelled == ()
    assert step.snapshot["timerSeq"] == 1  # the timer was armed (and cancelled) within the step


def test_reentering_the_state_rearms_the_timer_from_the_new_time() -> None:
    chart = waiting_chart()
    start = chart.start(now_ms=0)
    step = chart.send(roundtrip(start), {"type": "RE"}, now_ms=400)
    assert step.cancelled == ("xstate.after.1000.m.idle#0",)
    assert step.timers == (
        PendingTimer("xstate.after.1000.m.idle#1", "xstate.after.1000.m.idle", 1400, 1000),
    )
    gone = chart.send(roundtrip(step), {"type": "GO"}, now_ms=500)
    back = chart.send(roundtrip(gone), {"type": "BACK"}, now_ms=900)
    assert events(back) == [("xstate.after.1000.m.idle", 1900)]
    assert back.timers[0].id == "xstate.after.1000.m.idle#2"


def test_reaching_the_top_level_final_state_cancels_every_timer() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "run",
            "states": {
                "run": {
                    "type": "parallel",
                    "after": {"100": {"actions": emit({"type": "late"})}},
                    "on": {"END": "end"},
                    "states": {"r1": {"after": {"50": {}}}, "r2": {"after": {"60": {}}}},
                },
                "end": {"type": "final"},
            },
        }
    )
    start = chart.start(now_ms=0)
    assert [t.event for t in start.timers] == [
        "xstate.after.50.m.run.r1",
        "xstate.after.60.m.run.r2",
        "xstate.after.100.m.run",
    ]
    done = chart.send(roundtrip(start), {"type": "END"}, now_ms=10)
    assert done.snapshot["status"] == "done"
    assert done.timers == ()
    assert done.snapshot["timers"] == []
    assert set(done.cancelled) == {t.id for t in start.timers}
    assert chart.advance(roundtrip(done), now_ms=1000).emitted == []
    assert chart.fire_timer(roundtrip(done), start.timers[0].id, now_ms=1000).fired == ()


def test_a_final_state_reached_by_a_firing_timer_cancels_the_others() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {"after": {"10": "end", "20": {"actions": emit({"type": "never"})}}},
                "end": {"type": "final"},
            },
        }
    )
    step = chart.advance(roundtrip(chart.start(now_ms=0)), now_ms=100)
    assert step.snapshot["status"] == "done"
    assert step.fired == ("xstate.after.10.m.a#0",)
    assert step.cancelled == ("xstate.after.20.m.a#1",)
    assert step.emitted == []


# ---------------------------------------------------------------------------------------------------
# Order


def ordered_chart() -> Statechart:
    return Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "type": "parallel",
            "after": {"short": {"actions": rec("root-short")}, "10": {"actions": rec("root-10")}},
            "states": {
                "r1": {
                    "initial": "x",
                    "after": {"named": {"actions": rec("r1-named")}, "0": {"actions": rec("r1-0")}},
                    "states": {"x": {"after": {"10": {"target": "y", "actions": rec("x-10")}}}, "y": {}},
                },
                "r2": {
                    "initial": "p",
                    "states": {
                        "p": {"after": {"short": {"target": "q", "actions": rec("p-short")}}},
                        "q": {},
                    },
                },
            },
        },
        delays={"short": 10, "named": lambda a: 15},
    )


def test_timers_are_armed_parents_first_regions_in_order_numeric_delays_first() -> None:
    start = ordered_chart().start(now_ms=0)
    assert events(start) == [
        ("xstate.after.0.m.r1", 0),
        ("xstate.after.10.m", 10),
        ("xstate.after.short.m", 10),
        ("xstate.after.10.m.r1.x", 10),
        ("xstate.after.short.m.r2.p", 10),
        ("xstate.after.named.m.r1", 15),
    ]
    # Arming order: root (numeric, then named), r1 (numeric, then named), x, p.
    assert [timer.id.rpartition("#")[2] for timer in start.timers] == ["2", "0", "1", "4", "5", "3"]


def test_equal_due_times_fire_one_macrostep_each_in_arming_order() -> None:
    chart = ordered_chart()
    step = chart.advance(roundtrip(chart.start(now_ms=0)), now_ms=10)
    assert log_of(step) == [
        "r1-0@xstate.after.0.m.r1",
        "root-10@xstate.after.10.m",
        "root-short@xstate.after.short.m",
        "x-10@xstate.after.10.m.r1.x",
        "p-short@xstate.after.short.m.r2.p",
    ]
    assert step.fired == tuple(
        f"{event}#{n}"
        for event, n in [
            ("xstate.after.0.m.r1", 2),
            ("xstate.after.10.m", 0),
            ("xstate.after.short.m", 1),
            ("xstate.after.10.m.r1.x", 4),
            ("xstate.after.short.m.r2.p", 5),
        ]
    )
    assert events(step) == [("xstate.after.named.m.r1", 15)]


def test_a_zero_delay_armed_by_a_firing_timer_fires_in_the_same_advance() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "initial": "a",
            "states": {
                "a": {"after": {"20": {"target": "b", "actions": rec("a")}}, "on": {"X": "x"}},
                "x": {"after": {"5": {"target": "b", "actions": rec("x")}}},
                "b": {"after": {"0": {"target": "c", "actions": rec("b")}}},
                "c": {"after": {"0": {"target": "d", "actions": rec("c")}}},
                "d": {},
            },
        }
    )
    step = chart.advance(roundtrip(chart.start(now_ms=0)), now_ms=100)
    assert log_of(step) == ["a@xstate.after.20.m.a", "b@xstate.after.0.m.b", "c@xstate.after.0.m.c"]
    assert step.snapshot["value"] == "d"
    # Timers armed during the advance count from the advanced time (like SimulatedClock).
    via_x = chart.send(roundtrip(chart.start(now_ms=0)), {"type": "X"}, now_ms=0)
    assert events(chart.advance(roundtrip(via_x), now_ms=50)) == []


def test_fire_timer_delivers_one_timer_and_advance_only_what_is_due() -> None:
    chart = ordered_chart()
    start = chart.start(now_ms=0)
    assert chart.advance(roundtrip(start), now_ms=-1).fired == ()
    one = chart.fire_timer(roundtrip(start), "xstate.after.10.m.r1.x#4", now_ms=3)
    assert log_of(one) == ["x-10@xstate.after.10.m.r1.x"]
    assert one.fired == ("xstate.after.10.m.r1.x#4",)
    assert [t.id for t in one.timers] == [t.id for t in start.timers if t.id != "xstate.after.10.m.r1.x#4"]


def test_a_zero_delay_loop_is_stopped_by_max_firings() -> None:
    chart = Statechart(
        {"id": "m", "initial": "a", "states": {"a": {"after": {"0": {"target": "a", "reenter": True}}}}}
    )
    with pytest.raises(MachineLoopError, match="after firing 7"):
        chart.advance(roundtrip(chart.start(now_ms=0)), now_ms=0, max_firings=7)


# ---------------------------------------------------------------------------------------------------
# Snapshots


def test_pending_timers_survive_a_snapshot_round_trip() -> None:
    chart = ordered_chart()
    start = chart.start(now_ms=0)
    stored = roundtrip(start)
    assert chart.advance(stored, now_ms=12) == chart.advance(start.snapshot, now_ms=12)
    # Firing one timer at a time, through JSON each time, is the same as one advance.
    current = stored
    fired: list[str] = []
    emitted_log: list[str] = []
    while True:
        pending = chart.send(current, {"type": "NOTHING"}, now_ms=12).timers
        due = [timer for timer in pending if timer.due_ms <= 12]
        if not due:
            break
        step = chart.fire_timer(current, due[0].id, now_ms=12)
        fired.extend(step.fired)
        emitted_log = log_of(step)
        current = roundtrip(step)
    whole = chart.advance(stored, now_ms=12)
    assert tuple(fired) == whole.fired
    assert emitted_log == log_of(whole)
    assert current == roundtrip(whole)


def test_timer_ids_are_deterministic() -> None:
    first = waiting_chart().start(now_ms=0)
    second = waiting_chart().start(now_ms=0)
    assert first == second
    again = waiting_chart().send(roundtrip(first), {"type": "RE"}, now_ms=5)
    assert again == waiting_chart().send(roundtrip(second), {"type": "RE"}, now_ms=5)


def test_a_snapshot_without_timers_is_read_as_none_pending() -> None:
    chart = waiting_chart()
    snapshot = {"status": "active", "value": "busy", "context": {"log": []}}
    step = chart.send(snapshot, {"type": "BACK"}, now_ms=0)
    assert step.timers == (
        PendingTimer("xstate.after.1000.m.idle#0", "xstate.after.1000.m.idle", 1000, 1000),
    )


@pytest.mark.parametrize(
    ("timers", "fragment"),
    [
        ({"timers": 3}, "snapshot.timers must be a list"),
        ({"timers": ["x"]}, "a timer must be a mapping"),
        ({"timers": [{"id": "a", "event": "e", "due": "1", "delay": 1, "seq": 0}]}, "malformed"),
        ({"timers": [{"id": "a", "event": "e", "due": math.nan, "delay": 1, "seq": 0}]}, "malformed"),
        ({"timers": [{"id": "a", "event": "e", "due": 1, "delay": 1, "seq": True}]}, "malformed"),
        (
            {"timers": [{"id": "a", "event": "e", "due": 1, "delay": 1, "seq": 0}] * 2},
            "duplicate",
        ),
        ({"timers": [{"id": "a", "event": "e", "due": 1, "delay": 1, "seq": 4}], "timerSeq": 4}, "timerSeq"),
        ({"timerSeq": -1}, "timerSeq"),
    ],
)
def test_malformed_timers_in_a_snapshot_are_rejected(timers: dict[str, Any], fragment: str) -> None:
    snapshot = {"status": "active", "value": "idle", "context": {"log": []}, **timers}
    with pytest.raises(InvalidSnapshotError, match=fragment):
        waiting_chart().send(snapshot, {"type": "STAY"}, now_ms=0)


def test_machines_without_after_keep_the_plain_snapshot() -> None:
    chart = Statechart({"id": "m", "initial": "a", "states": {"a": {"on": {"E": "b"}}, "b": {}}})
    assert not chart.has_delayed_transitions
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert step.snapshot == {"status": "active", "value": "b", "context": {}, "output": None}
    assert (step.timers, step.cancelled, step.fired) == ((), (), ())


def test_a_done_snapshot_keeps_its_counter_and_has_no_timers() -> None:
    chart = Statechart(
        {"id": "m", "initial": "a", "states": {"a": {"after": {"1": "f"}}, "f": {"type": "final"}}}
    )
    done = chart.advance(roundtrip(chart.start(now_ms=0)), now_ms=1)
    again = chart.send(roundtrip(done), {"type": "E"}, now_ms=2)
    assert again.snapshot == {
        "status": "done",
        "value": "f",
        "context": {},
        "output": None,
        "timers": [],
        "timerSeq": 1,
    }


# ---------------------------------------------------------------------------------------------------
# Time is passed in


def test_now_ms_is_required_by_machines_with_delayed_transitions() -> None:
    chart = waiting_chart()
    assert chart.has_delayed_transitions
    with pytest.raises(ValueError, match="now_ms is required"):
        chart.start()
    snapshot = roundtrip(chart.start(now_ms=0))
    with pytest.raises(ValueError, match="now_ms is required"):
        chart.send(snapshot, {"type": "GO"})
    for bad in (math.inf, math.nan, True, "1"):
        with pytest.raises(ValueError, match="finite number"):
            chart.send(snapshot, {"type": "GO"}, now_ms=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Delays, guards, selection


def test_a_named_delay_is_evaluated_on_entry_with_the_context_and_the_event() -> None:
    seen: list[tuple[Any, str]] = []

    def grace(args: Any) -> int:
        seen.append((args.context["n"], args.event["type"]))
        return int(args.context["n"]) * 100

    chart = Statechart(
        {
            "id": "m",
            "context": {"n": 1},
            "initial": "a",
            "states": {
                "a": {"on": {"E": "b"}},
                # The delayed raise is the last entry action: it sees the assign before it.
                "b": {
                    "entry": assign({"n": lambda a: a.context["n"] + a.event["by"]}),
                    "after": {"grace": "a"},
                },
            },
        },
        delays={"grace": grace},
    )
    step = chart.send(roundtrip(chart.start(now_ms=0)), {"type": "E", "by": 2}, now_ms=50)
    assert seen == [(3, "E")]
    assert events(step) == [("xstate.after.grace.m.b", 350)]
    assert step.timers[0].delay_ms == 300


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        (None, TypeError, "number of milliseconds"),
        ("5", TypeError, "got str"),
        (math.nan, ValueError, "finite"),
    ],
)
def test_a_named_delay_must_produce_a_finite_number(
    value: Any, error: type[Exception], fragment: str
) -> None:
    chart = Statechart(
        {"id": "m", "initial": "a", "states": {"a": {"after": {"d": "a"}}}}, delays={"d": lambda a: value}
    )
    with pytest.raises(error, match=fragment):
        chart.start(now_ms=0)


def test_a_negative_delay_counts_as_zero() -> None:
    chart = Statechart(
        {"id": "m", "initial": "a", "states": {"a": {"after": {"-5": "b", "d": "b"}}, "b": {}}},
        delays={"d": lambda a: -20},
    )
    assert events(chart.start(now_ms=100)) == [("xstate.after.-5.m.a", 100), ("xstate.after.d.m.a", 100)]


def test_delay_keys_are_named_like_javascript_numbers() -> None:
    chart = Statechart(
        {"id": "m", "initial": "a", "states": {"a": {"after": {1.5: "a", "2.50": "a", 1e3: "a", " 7 ": "a"}}}}
    )
    assert [t.event for t in chart.start(now_ms=0).timers] == [
        "xstate.after.1.5.m.a",
        "xstate.after.2.5.m.a",
        "xstate.after.7.m.a",
        "xstate.after.1000.m.a",
    ]


def test_guarded_delayed_transitions_take_the_first_enabled_one() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"ok": False},
            "initial": "a",
            "states": {
                "a": {
                    "on": {"OK": {"actions": assign({"ok": True})}},
                    "after": {
                        "10": [{"guard": lambda a: a.context["ok"], "target": "yes"}, {"target": "no"}]
                    },
                },
                "yes": {},
                "no": {},
            },
        }
    )
    start = chart.start(now_ms=0)
    assert chart.advance(roundtrip(start), now_ms=10).snapshot["value"] == "no"
    ok = chart.send(roundtrip(start), {"type": "OK"}, now_ms=1)
    assert chart.advance(roundtrip(ok), now_ms=10).snapshot["value"] == "yes"


def test_a_failing_guard_consumes_the_timer_without_a_transition() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"after": {"10": {"guard": lambda a: False, "target": "b"}}}, "b": {}},
        }
    )
    step = chart.advance(roundtrip(chart.start(now_ms=0)), now_ms=10)
    assert step.snapshot["value"] == "a"
    assert step.fired == ("xstate.after.10.m.a#0",)
    assert step.timers == ()  # not re-armed: the state was not re-entered


def test_a_delayed_event_is_an_event_a_deeper_wildcard_takes_it_first() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "initial": "p",
            "states": {
                "p": {
                    "initial": "c",
                    "after": {"10": {"target": "q", "actions": rec("p")}},
                    "states": {"c": {"on": {"*": {"actions": rec("c*")}}}},
                },
                "q": {},
            },
        }
    )
    step = chart.advance(roundtrip(chart.start(now_ms=0)), now_ms=10)
    assert log_of(step) == ["c*@xstate.after.10.m.p"]
    assert step.snapshot["value"] == {"p": "c"}


def test_a_delay_without_transitions_still_arms_and_wildcards_of_the_state_see_it() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "initial": "a",
            "states": {"a": {"after": {"10": []}, "on": {"xstate.after.*": {"actions": rec("seen")}}}},
        }
    )
    step = chart.advance(roundtrip(chart.start(now_ms=0)), now_ms=10)
    assert log_of(step) == ["seen@xstate.after.10.m.a"]


def test_the_root_reentered_without_exit_arms_a_second_timer_that_cannot_be_cancelled() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "initial": "a",
            "after": {"10": {"actions": rec("t")}},
            "states": {"a": {"on": {"R": "#m", "S": {"target": "#m", "reenter": True}}}},
        }
    )
    start = chart.start(now_ms=0)
    twice = chart.send(roundtrip(start), {"type": "R"}, now_ms=5)
    assert events(twice) == [("xstate.after.10.m", 10), ("xstate.after.10.m", 15)]
    assert twice.snapshot["timers"][0]["orphan"] is True
    # Exiting the root cancels only the timer registered under the type (the newer one), like XState.
    reentered = chart.send(roundtrip(twice), {"type": "S"}, now_ms=6)
    assert events(reentered) == [("xstate.after.10.m", 10), ("xstate.after.10.m", 16)]
    assert reentered.cancelled == ("xstate.after.10.m#1",)
    both = chart.advance(roundtrip(reentered), now_ms=20)
    assert log_of(both) == ["t@xstate.after.10.m", "t@xstate.after.10.m"]


# ---------------------------------------------------------------------------------------------------
# Definition


@pytest.mark.parametrize(
    ("after", "delays", "fragment"),
    [
        ({"later": "a"}, {}, "delay 'later' is not implemented"),
        ({"1000": "a", "1e3": "a"}, {}, "are the same delay (1000 ms)"),
        ({1000: "a", "1000": "a"}, {}, "duplicate delay '1000'"),
        ({"Infinity": "a"}, {}, "not a finite number"),
        ({math.inf: "a"}, {}, "not a finite number"),
        ({None: "a"}, {}, "delay in ms or the name of a delay"),
        ({True: "a"}, {}, "delay in ms or the name of a delay"),
        ({"d": "a"}, {"d": "soon"}, "must be a number of ms or a function"),
        ({"d": "a"}, {"d": math.nan}, "not a finite number"),
        ({"10": "nowhere"}, {}, "invalid transition target 'nowhere'"),
        ({"10": {"cond": "x"}}, {}, "unknown transition key 'cond'"),
    ],
)
def test_invalid_delays_are_rejected_when_the_chart_is_built(
    after: Any, delays: dict[str, Any], fragment: str
) -> None:
    config = {"id": "m", "initial": "a", "states": {"a": {"after": after}}}
    with pytest.raises(ConfigViolation) as caught:
        Statechart(config, delays=delays)
    assert fragment in caught.value.raw_message
    assert "Location: a > after" in caught.value.raw_message


def test_after_must_be_a_mapping_and_delays_is_not_a_config_key() -> None:
    with pytest.raises(ConfigViolation, match="'after' must be a mapping"):
        Statechart({"id": "m", "initial": "a", "states": {"a": {"after": ["10"]}}})
    with pytest.raises(ConfigViolation, match="pass them as delays="):
        Statechart({"id": "m", "delays": {}, "initial": "a", "states": {"a": {}}})


def test_mermaid_and_definition_show_delayed_transitions() -> None:
    chart = waiting_chart()
    assert "s1 --> s3 : after 1000" in chart.to_mermaid()
    assert chart.definition()["states"]["idle"]["after"] == {
        "1000": {"target": "timedOut", "actions": {"type": "xstate.assign"}}
    }


# ---------------------------------------------------------------------------------------------------
# Arvo machines and the execution engine


SELF = test_machine_contract.version("0.0.1")


def _arvo_machine() -> Any:
    return setup_arvo_machine(
        contracts={"self": SELF, "services": COUNTER_SERVICES},
        delays={"grace": lambda args: args.context["delta"] * 1000},
    ).create_machine(
        {
            "id": "timed",
            "context": lambda args: dict(args.input["data"]),
            "initial": "wait",
            "states": {
                "wait": {
                    "after": {
                        "grace": {
                            "target": "done",
                            "actions": {
                                "type": "enqueueArvoEvent",
                                "params": {"type": "com.notif.test", "data": {}},
                            },
                        }
                    }
                },
                "done": {"type": "final"},
            },
            "output": lambda args: {"final": 0},
        }
    )


def _init() -> ArvoEvent:
    return create_arvo_orchestrator_event_factory(SELF).init(
        source="com.test.service", data={"parentSubject$$": None, "delta": 2, "type": "increment"}
    )


def test_arvo_machines_accept_after_and_delays_and_the_engine_reports_timers() -> None:
    machine = _arvo_machine()
    assert machine.has_delayed_transitions
    engine = MachineExecutionEngine()
    init = _init()
    started = engine.execute(machine=machine, snapshot=None, event=init)
    event_ms = datetime.fromisoformat(init.time).timestamp() * 1000
    assert [(t.event, t.due_ms) for t in started.timers] == [
        ("xstate.after.grace.timed.wait", event_ms + 2000)
    ]
    assert started.events == []
    explicit = engine.execute(machine=machine, snapshot=None, event=init, now_ms=0)
    assert explicit.timers[0].due_ms == 2000
    fired = engine.execute_timer(
        machine=machine,
        snapshot=roundtrip_dict(explicit.snapshot),
        timer_id=explicit.timers[0].id,
        now_ms=2000,
    )
    assert fired.fired_timers == (explicit.timers[0].id,)
    assert fired.timers == ()
    assert [event["type"] for event in fired.events] == ["com.notif.test"]
    assert fired.final_output == {"final": 0}


def test_the_engine_turns_unfit_timers_into_a_config_violation() -> None:
    machine = _arvo_machine()
    with pytest.raises(ConfigViolation, match="does not fit"):
        MachineExecutionEngine().execute_timer(
            machine=machine,
            snapshot={"status": "active", "value": "wait", "context": {}, "timers": 1},
            timer_id="x",
            now_ms=0,
        )


def roundtrip_dict(snapshot: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(orjson.dumps(snapshot))
    return result
