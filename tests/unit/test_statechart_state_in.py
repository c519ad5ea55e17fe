"""The ``state_in`` guard (XState ``stateIn``): by id, path and partial state value, alone and combined.

The differential test (``tests/interop/test_xstate_conformance.py``, timed cases) checks it against the
real XState; these tests pin the rules by name.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.arvo.errors import ConfigViolation
from service.arvo.machine._model import matches_state
from service.arvo.machine.statechart import (
    Statechart,
    StateIn,
    and_,
    assign,
    not_,
    or_,
    state_in,
)


def rec(label: str) -> Any:
    return assign(lambda a: {"log": [*a.context["log"], label]})


def parallel_chart(guard: Any, **extra: Any) -> Statechart:
    """Region ``r1`` (``a`` or ``b.b1``/``b.b2``) and region ``r2`` whose ``E`` is guarded by ``guard``."""
    return Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "type": "parallel",
            "states": {
                "r1": {
                    "initial": "a",
                    "states": {
                        "a": {"on": {"GO": "b"}},
                        "b": {
                            "id": "bee",
                            "initial": "b1",
                            "states": {"b1": {"on": {"NEXT": "b2"}}, "b2": {}},
                        },
                    },
                },
                "r2": {
                    "initial": "x",
                    "states": {"x": {"on": {"E": {"guard": guard, "actions": rec("pass")}}}},
                },
            },
        },
        **extra,
    )


def passes(chart: Statechart, *events: str) -> bool:
    snapshot = chart.start().snapshot
    for event in events:
        snapshot = chart.send(snapshot, {"type": event}).snapshot
    return bool(chart.send(snapshot, {"type": "E"}).snapshot["context"]["log"] == ["pass"])


@pytest.mark.parametrize(
    ("guard", "in_a", "in_b1", "in_b2"),
    [
        (state_in("#m.r1.a"), True, False, False),
        (state_in("#bee"), False, True, True),
        (state_in("#m.r2"), True, True, True),
        (state_in("#m"), True, True, True),
        (state_in("r1"), True, True, True),
        (state_in("r1.a"), True, False, False),
        (state_in("r1.b"), False, True, True),
        (state_in("r1.b.b2"), False, False, True),
        (state_in({"r1": "b"}), False, True, True),
        (state_in({"r1": {"b": "b1"}, "r2": "x"}), False, True, False),
        # A mapping never matches an atomic state's value (a string): {"r1": {}} needs r1 to be in a
        # compound child, and {"r1": {"b": {}}} never matches since b's value is "b1" or "b2".
        (state_in({"r1": {}}), False, True, True),
        (state_in({"r1": {"a": {}}}), False, False, False),
        (state_in({"r1": {"b": {}}}), False, False, False),
    ],
)
def test_state_in_matches_ids_paths_and_partial_values(
    guard: StateIn, in_a: bool, in_b1: bool, in_b2: bool
) -> None:
    chart = parallel_chart(guard)
    assert (passes(chart), passes(chart, "GO"), passes(chart, "GO", "NEXT")) == (in_a, in_b1, in_b2)


def test_state_in_composes_with_and_or_not_and_as_a_named_guard() -> None:
    in_b = state_in("r1.b")
    cases = {
        "and": and_([in_b, state_in("#m.r1.b.b2")]),
        "or": or_([state_in("r1.a"), state_in({"r1": {"b": "b2"}})]),
        "not": not_(in_b),
        "named": "inB",
        "mixed": and_(["inB", not_(lambda a: a.context["log"] == ["x"])]),
    }
    expected = {
        "and": (False, False, True),
        "or": (True, False, True),
        "not": (True, False, False),
        "named": (False, True, True),
        "mixed": (False, True, True),
    }
    for name, guard in cases.items():
        chart = parallel_chart(guard, guards={"inB": in_b})
        got = (passes(chart), passes(chart, "GO"), passes(chart, "GO", "NEXT"))
        assert got == expected[name], name


def test_state_in_sees_the_configuration_before_the_guarded_transition() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "initial": "a",
            "states": {
                # Both transitions are guarded by being in 'a': only the first one is taken per step.
                "a": {
                    "on": {"E": {"target": "b", "guard": state_in("a"), "actions": rec("a->b")}},
                    "always": {"guard": state_in("b"), "actions": rec("never")},
                },
                "b": {"always": {"target": "c", "guard": state_in("#m.b"), "actions": rec("b->c")}},
                "c": {},
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert step.snapshot["context"]["log"] == ["a->b", "b->c"]
    assert step.snapshot["value"] == "c"


def test_state_in_works_on_delayed_transitions() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "type": "parallel",
            "states": {
                "gate": {"initial": "closed", "states": {"closed": {"on": {"OPEN": "open"}}, "open": {}}},
                "job": {
                    "initial": "wait",
                    "states": {
                        "wait": {
                            "after": {
                                "10": [
                                    {"guard": state_in("gate.open"), "target": "run"},
                                    {"target": "wait", "reenter": True},
                                ]
                            }
                        },
                        "run": {"entry": rec("run")},
                    },
                },
            },
        }
    )
    start = chart.start(now_ms=0)
    closed = chart.advance(start.snapshot, now_ms=10)
    assert closed.snapshot["value"]["job"] == "wait"
    assert [t.due_ms for t in closed.timers] == [20]
    opened = chart.send(closed.snapshot, {"type": "OPEN"}, now_ms=15)
    assert chart.advance(opened.snapshot, now_ms=20).snapshot["context"]["log"] == ["run"]


@pytest.mark.parametrize(
    ("state_value", "fragment"),
    [
        ("#nope", "no state has the id 'nope'"),
        ("#m.r1.zz", "no state has the id 'm.r1.zz'"),
        ("r3", "state 'r3' does not exist on '#m'"),
        ("r1.a.deep", "state 'deep' does not exist on '#m.r1.a'"),
        ({"r1": {"zz": {}}}, "state 'zz' does not exist on '#m.r1'"),
        ({"r1": 3}, "expected a state name or a mapping, got int"),
        ("", "state '' does not exist on '#m'"),
    ],
)
def test_unknown_ids_and_paths_are_rejected_when_the_chart_is_built(state_value: Any, fragment: str) -> None:
    with pytest.raises(ConfigViolation) as caught:
        parallel_chart(state_in(state_value))
    assert fragment in caught.value.raw_message
    assert "Location: r2 > x > on > E > guard" in caught.value.raw_message


def test_state_in_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="expected a string or a mapping"):
        state_in(3)  # type: ignore[arg-type]


def test_state_in_paths_honour_escaped_dots() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"log": []},
            "initial": "a.b",
            "states": {"a.b": {"on": {"E": {"guard": state_in("a\\.b"), "actions": rec("pass")}}}},
        }
    )
    assert chart.send(chart.start().snapshot, {"type": "E"}).snapshot["context"]["log"] == ["pass"]


def test_matches_state_follows_xstate() -> None:
    assert matches_state("a", "a")
    assert not matches_state("a", "b")
    assert not matches_state({"a": "b"}, "a")
    assert matches_state("a", {"a": "b"})
    assert matches_state({"a": "b"}, {"a": {"b": "c"}})
    assert not matches_state({"a": {"b": "c"}}, {"a": "b"})
    assert matches_state({}, {"a": "b"})
    assert not matches_state({}, "a")


def test_mermaid_and_definition_name_state_in() -> None:
    chart = parallel_chart(or_([state_in("#bee"), state_in({"r1": "a"})]))
    assert "[or(stateIn(#bee), stateIn({r1: a}))]" not in chart.to_mermaid()  # targetless: not drawn
    guard = chart.definition()["states"]["r2"]["states"]["x"]["on"]["E"]["guard"]
    assert guard == {
        "type": "xstate.or",
        "guards": [
            {"type": "xstate.stateIn", "stateValue": "#bee"},
            {"type": "xstate.stateIn", "stateValue": {"r1": "a"}},
        ],
    }
    targeted = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"on": {"E": {"target": "b", "guard": state_in("#m.a")}}}, "b": {}},
        }
    )
    assert "s1 --> s2 : E [stateIn(#m.a)]" in targeted.to_mermaid()
