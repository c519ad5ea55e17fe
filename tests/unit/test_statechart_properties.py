"""Property tests: snapshots are plain JSON and resuming from a JSON round trip changes nothing."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.arvo.machine.statechart import ActionArgs, MachineStep, Statechart, and_, assign, emit, not_


def _rec(label: str) -> Any:
    return assign(lambda a: {"log": [*a.context["log"][-20:], f"{label}@{a.event['type']}"]})


def _bump(key: str) -> Any:
    return assign({key: lambda a: a.context.get(key, 0) + 1})


GUARDS: dict[str, Any] = {
    "even": lambda a: isinstance(a.event.get("value"), int) and a.event["value"] % 2 == 0,
    "gte": lambda a, p: a.context.get(p["key"], 0) >= p["n"],
    "budget": lambda a: a.context["auto"] < 3,
}

CONFIG: dict[str, Any] = {
    "id": "prop",
    "context": lambda a: {"log": [], "n": 0, "m": 0, "auto": 0, "seed": a.input},
    "entry": _rec("root"),
    "initial": "idle",
    "on": {"RESET": {"target": ".idle", "actions": assign({"auto": 0})}},
    "states": {
        "idle": {
            "entry": _rec("idle+"),
            "exit": _rec("idle-"),
            "on": {
                "GO": [{"target": "work", "guard": "even"}, {"target": "work.right", "actions": _bump("n")}],
                "a.*": {"actions": [_bump("m"), emit(lambda a: {"type": "tick", "m": a.context["m"]})]},
            },
        },
        "work": {
            "type": "parallel",
            "entry": _rec("work+"),
            "exit": _rec("work-"),
            "onDone": {"target": "finished", "actions": _rec("done")},
            "on": {"STOP": "idle", "*": {"actions": _rec("star"), "guard": not_("even")}},
            "states": {
                "left": {
                    "initial": "l1",
                    "states": {
                        "l1": {
                            "on": {"a.x": "l2"},
                            "always": {"guard": and_(["budget", "even"]), "actions": _bump("auto")},
                        },
                        "l2": {"on": {"a.y": "l3"}, "entry": _rec("l2+")},
                        "l3": {"type": "final", "output": lambda a: {"n": a.context["n"]}},
                    },
                },
                "right": {
                    "initial": "r1",
                    "states": {
                        "r1": {"on": {"B": {"target": "r2", "actions": _bump("n")}}},
                        "r2": {
                            "always": [
                                {"target": "r3", "guard": {"type": "gte", "params": {"key": "n", "n": 3}}}
                            ],
                            "on": {"B": {"target": "r2", "reenter": True, "actions": _bump("n")}},
                        },
                        "r3": {"type": "final"},
                    },
                },
            },
        },
        "finished": {
            "entry": _rec("finished+"),
            "on": {"GO": "idle", "END": "end"},
        },
        "end": {"type": "final"},
    },
    "output": lambda a: {"n": a.context["n"], "m": a.context["m"], "via": a.event["type"]},
}

CHART = Statechart(CONFIG, guards=GUARDS)

EVENT_TYPES = ["GO", "STOP", "RESET", "END", "B", "a.x", "a.y", "a.z", "other"]


def _event(event_type: str, value: int | None) -> dict[str, Any]:
    return {"type": event_type, "value": value} if value is not None else {"type": event_type}


events = st.lists(
    st.builds(
        _event, st.sampled_from(EVENT_TYPES), st.one_of(st.none(), st.integers(min_value=0, max_value=5))
    ),
    max_size=25,
)


def _run(snapshot: dict[str, Any], sequence: list[dict[str, Any]]) -> list[MachineStep]:
    steps = []
    for event in sequence:
        step = CHART.send(snapshot, event)
        steps.append(step)
        snapshot = step.snapshot
    return steps


def _roundtrip(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


@settings(max_examples=150, deadline=None)
@given(prefix=events, suffix=events, seed=st.integers(min_value=0, max_value=9))
def test_resuming_from_a_json_roundtripped_snapshot_gives_identical_steps(
    prefix: list[dict[str, Any]], suffix: list[dict[str, Any]], seed: int
) -> None:
    start = CHART.start(seed)
    reached = start.snapshot if not prefix else _run(start.snapshot, prefix)[-1].snapshot
    assert _roundtrip(reached) == reached
    pristine = copy.deepcopy(reached)
    from_original = _run(reached, suffix)
    assert reached == pristine  # sending never mutates the snapshot it resumed from
    from_json = _run(_roundtrip(reached), suffix)
    assert [(s.snapshot, s.emitted) for s in from_original] == [(s.snapshot, s.emitted) for s in from_json]
    for step in from_original:
        assert orjson.dumps(step.snapshot) == orjson.dumps(_roundtrip(step.snapshot))


@settings(max_examples=100, deadline=None)
@given(sequence=events)
def test_steps_are_deterministic_and_done_is_absorbing(sequence: list[dict[str, Any]]) -> None:
    first = _run(CHART.start(1).snapshot, sequence)
    second = _run(CHART.start(1).snapshot, sequence)
    assert [(s.snapshot, s.emitted) for s in first] == [(s.snapshot, s.emitted) for s in second]
    done = [s for s in first if s.snapshot["status"] == "done"]
    if done:
        assert all(s.snapshot == done[0].snapshot and not s.emitted for s in done[1:])
        assert done[0].snapshot["output"]["via"] == "xstate.done.state.prop.end"


def test_the_property_machine_reaches_every_state() -> None:
    """Sanity check that the machine above is rich enough for the properties to mean something."""
    snapshot = CHART.start(0).snapshot
    seen = {orjson.dumps(snapshot["value"])}
    sequence: list[dict[str, Any]] = [
        {"type": "GO", "value": 2},
        {"type": "a.x"},
        {"type": "B"},
        {"type": "B"},
    ]
    for event in [*sequence, {"type": "B"}]:
        snapshot = CHART.send(snapshot, event).snapshot
        seen.add(orjson.dumps(snapshot["value"]))
    snapshot = CHART.send(snapshot, {"type": "a.y"}).snapshot
    assert snapshot["value"] == "finished"
    assert CHART.send(snapshot, {"type": "END"}).snapshot["status"] == "done"
    assert len(seen) >= 4
    assert isinstance(ActionArgs(context={}, event={"type": "x"}), ActionArgs)
