"""Statechart behaviour pinned where mutation testing (``make mutation``) found the suite blind.

Read-only mappings accepted wherever a mapping is, the exact texts of the input errors, the microstep
bound at its boundary, guards and conflicts across parallel regions, the events that final states and
eventless transitions see, the order of regions and of re-entered states, and snapshots completed with
initial states. The transition semantics were checked against XState 5.24 (where XState leaves a done
event's ``output`` undefined, it is ``None`` here).
"""

from __future__ import annotations

import copy
import re
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from service.arvo.machine.statechart import (
    MAX_MICROSTEPS,
    InvalidSnapshotError,
    MachineLoopError,
    Statechart,
    assign,
    state_in,
)


def log(label: str) -> Any:
    return assign(lambda a: {"log": [*a.context["log"], label]})


NESTED: dict[str, Any] = {
    "id": "m",
    "initial": "a",
    "context": {"log": []},
    "states": {
        "a": {"initial": "a1", "states": {"a1": {"on": {"NEXT": "a2"}}, "a2": {}}},
        "b": {},
    },
}


def active(value: Any, context: Any = None) -> dict[str, Any]:
    return {"status": "active", "value": value, "context": {"log": []} if context is None else context}


# --------------------------------------------------------------------- read-only mappings are mappings


def test_send_accepts_read_only_mappings_as_event_snapshot_value_and_context() -> None:
    chart = Statechart(NESTED)
    snapshot = MappingProxyType(
        {
            "status": "active",
            "value": MappingProxyType({"a": "a1"}),
            "context": MappingProxyType({"log": [], "meta": MappingProxyType({"k": "v"})}),
        }
    )
    step = chart.send(snapshot, MappingProxyType({"type": "NEXT"}))
    assert step.snapshot == {
        "status": "active",
        "value": {"a": "a2"},
        "context": {"log": [], "meta": {"k": "v"}},
        "output": None,
    }


def test_a_done_snapshot_with_read_only_mappings_is_returned_as_plain_json() -> None:
    chart = Statechart(NESTED)
    snapshot = {
        "status": "done",
        "value": MappingProxyType({"a": "a2"}),
        "context": MappingProxyType({"n": 1}),
        "output": MappingProxyType({"ok": True}),
    }
    step = chart.send(snapshot, {"type": "NEXT"})
    assert step.snapshot == {
        "status": "done",
        "value": {"a": "a2"},
        "context": {"n": 1},
        "output": {"ok": True},
    }
    assert step.emitted == []


# --------------------------------------------------------------------------------- exact input errors


def test_a_malformed_event_names_its_type() -> None:
    chart = Statechart(NESTED)
    with pytest.raises(ValueError, match=r"^event must be a mapping with a 'type', got list$"):
        chart.send(chart.start().snapshot, ["NEXT"])  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="^" + re.escape("An event cannot have the wildcard type ('*')") + "$"
    ):
        chart.send(chart.start().snapshot, {"type": "*"})


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        (["active"], "snapshot must be a mapping, got list"),
        (active({"a": "a1"}, context=["log"]), "snapshot.context must be a mapping, got list"),
        (active({"a": {"a1": 5}}), "snapshot.value: expected a string or a mapping, got 5"),
        (
            active({"a": {"a1": object()}}),
            "snapshot.value is not a state value: Type is not JSON serializable: object",
        ),
        (
            active({"a": "a1"}, context={"log": [], "x": object()}),
            "snapshot context must be JSON-serialisable: Type is not JSON serializable: object",
        ),
        (
            {"status": "done", "value": object(), "context": {}, "output": None},
            "snapshot value must be JSON-serialisable: Type is not JSON serializable: object",
        ),
        (
            {"status": "done", "value": "b", "context": {"x": object()}, "output": None},
            "snapshot context must be JSON-serialisable: Type is not JSON serializable: object",
        ),
        (
            {"status": "done", "value": "b", "context": {}, "output": object()},
            "snapshot output must be JSON-serialisable: Type is not JSON serializable: object",
        ),
    ],
)
def test_an_invalid_snapshot_is_rejected_with_a_message_naming_the_part(snapshot: Any, message: str) -> None:
    chart = Statechart(NESTED)
    with pytest.raises(InvalidSnapshotError) as caught:
        chart.send(snapshot, {"type": "NEXT"})
    assert str(caught.value) == message


def test_a_context_factory_returning_a_non_mapping_names_its_type() -> None:
    chart = Statechart({"id": "m", "initial": "a", "context": lambda _a: ["x"], "states": {"a": {}}})
    with pytest.raises(TypeError, match=r"^context factory must return a mapping, got list$"):
        chart.start()


def test_a_static_context_that_is_not_json_is_rejected_at_start() -> None:
    chart = Statechart({"id": "m", "initial": "a", "context": {"x": object()}, "states": {"a": {}}})
    with pytest.raises(InvalidSnapshotError) as caught:
        chart.start()
    assert (
        str(caught.value)
        == "snapshot context must be JSON-serialisable: Type is not JSON serializable: object"
    )


# --------------------------------------------------------------------------------- the microstep bound


def counting_to(limit: int) -> Statechart:
    """Counts with a targetless eventless transition: one microstep per increment."""
    return Statechart(
        {
            "id": "m",
            "initial": "a",
            "context": {"n": 0},
            "states": {
                "a": {
                    "always": {
                        "guard": lambda a: a.context["n"] < limit,
                        "actions": assign({"n": lambda a: a.context["n"] + 1}),
                    }
                }
            },
        }
    )


def test_exactly_max_microsteps_in_one_step_settle() -> None:
    assert counting_to(MAX_MICROSTEPS).start().snapshot["context"] == {"n": MAX_MICROSTEPS}


def test_one_microstep_more_is_a_loop_error_naming_the_machine() -> None:
    with pytest.raises(MachineLoopError) as caught:
        counting_to(MAX_MICROSTEPS + 1).start()
    assert str(caught.value) == (
        f"Machine 'm' did not settle after {MAX_MICROSTEPS} microsteps in one step: "
        "eventless ('always') transitions or internal done events loop forever"
    )


# ------------------------------------------------------------------------------------ parallel regions


def test_guards_in_every_parallel_region_see_the_context_and_the_event() -> None:
    def ready(a: Any) -> bool:
        return bool(a.context["ready"] and a.event["go"])

    chart = Statechart(
        {
            "id": "m",
            "type": "parallel",
            "context": {"ready": True},
            "states": {
                "A": {
                    "initial": "a1",
                    "states": {"a1": {"on": {"E": {"target": "a2", "guard": ready}}}, "a2": {}},
                },
                "B": {
                    "initial": "b1",
                    "states": {"b1": {"on": {"E": {"target": "b2", "guard": ready}}}, "b2": {}},
                },
            },
        }
    )
    start = chart.start().snapshot
    assert chart.send(start, {"type": "E", "go": True}).snapshot["value"] == {"A": "a2", "B": "b2"}
    assert chart.send(start, {"type": "E", "go": False}).snapshot["value"] == {"A": "a1", "B": "b1"}


def test_state_in_guards_in_parallel_regions_see_the_other_regions_states() -> None:
    chart = Statechart(
        {
            "id": "m",
            "type": "parallel",
            "states": {
                "A": {
                    "initial": "a1",
                    "states": {"a1": {"on": {"E": {"target": "a2", "guard": state_in("B.b1")}}}, "a2": {}},
                },
                "B": {
                    "initial": "b1",
                    "states": {"b1": {"on": {"E": {"target": "b2", "guard": state_in("#m.A.a1")}}}, "b2": {}},
                },
            },
        }
    )
    assert chart.send(chart.start().snapshot, {"type": "E"}).snapshot["value"] == {"A": "a2", "B": "b2"}


def test_a_targetless_transition_in_one_region_does_not_stop_another_region_from_leaving_its_state() -> None:
    chart = Statechart(
        {
            "id": "m",
            "type": "parallel",
            "context": {"log": []},
            "states": {
                "A": {"initial": "a1", "states": {"a1": {"on": {"E": {"actions": log("A saw E")}}}}},
                "B": {
                    "initial": "b1",
                    "states": {
                        "b1": {"exit": log("b1 exit"), "on": {"E": "b2"}},
                        "b2": {"entry": log("b2 entry")},
                    },
                },
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert step.snapshot["value"] == {"A": "a1", "B": "b2"}
    assert step.snapshot["context"]["log"] == ["b1 exit", "A saw E", "b2 entry"]


def test_conflicting_eventless_transitions_let_the_descendant_state_win() -> None:
    # Region A's atomic state has no eventless transition, so the parallel state's own is selected for
    # it; region B's state has one that exits a state the parallel one exits too: the deeper one wins.
    chart = Statechart(
        {
            "id": "m",
            "initial": "p",
            "context": {"log": [], "armed": False},
            "states": {
                "p": {
                    "type": "parallel",
                    "on": {"ARM": {"actions": assign({"armed": True})}},
                    "always": {
                        "guard": lambda a: a.context["armed"],
                        "target": "out",
                        "actions": log("p->out"),
                    },
                    "states": {
                        "A": {"initial": "a1", "states": {"a1": {}}},
                        "B": {
                            "initial": "b1",
                            "states": {
                                "b1": {
                                    "always": {
                                        "guard": lambda a: a.context["armed"],
                                        "target": "b2",
                                        "actions": log("b1->b2"),
                                    }
                                },
                                "b2": {},
                            },
                        },
                    },
                },
                "out": {},
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "ARM"})
    assert step.snapshot["context"]["log"] == ["b1->b2", "p->out"]
    assert step.snapshot["value"] == "out"


def test_a_re_entered_state_keeps_its_place_for_eventless_selection() -> None:
    # XState: re-entering a1 does not move region A behind region B; A's eventless transition still
    # comes first and pre-empts B's conflicting one.
    armed = {"guard": lambda a: a.context["go"]}
    chart = Statechart(
        {
            "id": "m",
            "initial": "p",
            "context": {"go": False},
            "states": {
                "p": {
                    "type": "parallel",
                    "states": {
                        "A": {
                            "initial": "a1",
                            "states": {
                                "a1": {
                                    "on": {
                                        "E": {
                                            "target": "a1",
                                            "reenter": True,
                                            "actions": assign({"go": True}),
                                        }
                                    },
                                    "always": {**armed, "target": "#m.outA"},
                                }
                            },
                        },
                        "B": {"initial": "b1", "states": {"b1": {"always": {**armed, "target": "#m.outB"}}}},
                    },
                },
                "outA": {},
                "outB": {},
            },
        }
    )
    assert chart.send(chart.start().snapshot, {"type": "E"}).snapshot["value"] == "outA"


def test_two_array_index_regions_are_listed_in_numeric_order_like_a_javascript_object() -> None:
    chart = Statechart(
        {
            "id": "m",
            "type": "parallel",
            "states": {
                "1": {"initial": "x", "states": {"x": {}}},
                "0": {"initial": "y", "states": {"y": {}}},
            },
        }
    )
    assert orjson.dumps(chart.start().snapshot["value"]) == b'{"0":"y","1":"x"}'


def test_a_parallel_state_completes_with_a_done_event_whose_output_is_none() -> None:
    # Like every done event it has an "output" (None: a parallel state has no output of its own).
    seen: list[dict[str, Any]] = []
    chart = Statechart(
        {
            "id": "m",
            "initial": "p",
            "states": {
                "p": {
                    "type": "parallel",
                    "onDone": {"target": "z", "actions": lambda a: seen.append(dict(a.event))},
                    "states": {
                        "A": {
                            "initial": "a1",
                            "states": {"a1": {"on": {"E": "a2"}}, "a2": {"type": "final"}},
                        },
                        "B": {"initial": "b1", "states": {"b1": {"type": "final"}}},
                    },
                },
                "z": {},
            },
        }
    )
    assert chart.send(chart.start().snapshot, {"type": "E"}).snapshot["value"] == "z"
    assert seen == [{"type": "xstate.done.state.m.p", "output": None}]


# -------------------------------------------------------------------------- outputs and internal events


def test_a_final_states_output_is_computed_from_the_event_that_entered_it() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "task",
            "context": {},
            "states": {
                "task": {
                    "initial": "working",
                    "onDone": {"target": "after", "actions": assign({"got": lambda a: a.event["output"]})},
                    "states": {
                        "working": {"on": {"FINISH": "finished"}},
                        "finished": {"type": "final", "output": lambda a: {"by": a.event["type"]}},
                    },
                },
                "after": {},
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "FINISH"})
    assert step.snapshot["context"] == {"got": {"by": "FINISH"}}


def test_the_machine_output_receives_the_top_level_final_states_output() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "working",
            "output": lambda a: {"done": a.event["type"], "final": a.event["output"]},
            "states": {
                "working": {"on": {"FINISH": "finished"}},
                "finished": {"type": "final", "output": lambda a: {"by": a.event["type"]}},
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "FINISH"})
    assert step.snapshot["status"] == "done"
    assert step.snapshot["output"] == {"done": "xstate.done.state.m.finished", "final": {"by": "FINISH"}}


def test_a_machine_whose_root_is_final_is_done_at_start_with_the_root_output() -> None:
    chart = Statechart(
        {
            "id": "m",
            "type": "final",
            "output": lambda a: {"event": a.event["type"], "inner": a.event["output"]},
        }
    )
    snapshot = chart.start().snapshot
    assert snapshot["status"] == "done"
    assert snapshot["output"] == {"event": "xstate.done.state.m", "inner": None}


def test_a_static_output_is_copied_for_every_run() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "finished",
            "output": {"nested": {"n": 1}},
            "states": {"finished": {"type": "final"}},
        }
    )
    first = chart.start().snapshot["output"]
    first["nested"]["n"] = 99
    assert chart.start().snapshot["output"] == {"nested": {"n": 1}}


def test_eventless_transitions_are_selected_again_after_an_internal_event_without_transitions() -> None:
    # The done event of 'task' has no onDone; XState still re-selects eventless transitions with it.
    chart = Statechart(
        {
            "id": "m",
            "initial": "task",
            "states": {
                "task": {
                    "initial": "working",
                    "always": {
                        "guard": lambda a: a.event["type"] == "xstate.done.state.m.task",
                        "target": "after",
                    },
                    "states": {"working": {"on": {"E": "finished"}}, "finished": {"type": "final"}},
                },
                "after": {},
            },
        }
    )
    assert chart.send(chart.start().snapshot, {"type": "E"}).snapshot["value"] == "after"


# ------------------------------------------------------------------------------ snapshots are completed


def test_a_compound_state_named_without_its_child_is_restored_in_its_initial_child() -> None:
    chart = Statechart(NESTED)
    step = chart.send(active({"a": {}}), {"type": "NEXT"})
    assert step.snapshot["value"] == {"a": "a2"}


def test_a_parallel_root_missing_a_region_is_restored_with_that_region_in_its_initial_state() -> None:
    chart = Statechart(
        {
            "id": "m",
            "type": "parallel",
            "states": {
                "A": {"initial": "a1", "states": {"a1": {}}},
                "B": {"initial": "b1", "states": {"b1": {"on": {"E": "b2"}}, "b2": {}}},
            },
        }
    )
    step = chart.send({"status": "active", "value": {"A": "a1"}, "context": {}}, {"type": "E"})
    assert step.snapshot["value"] == {"A": "a1", "B": "b2"}


def test_sending_does_not_modify_the_given_snapshot() -> None:
    chart = Statechart(NESTED)
    snapshot = active({"a": "a1"}, context={"log": ["kept"]})
    before = copy.deepcopy(snapshot)
    chart.send(snapshot, {"type": "NEXT"})
    assert snapshot == before


# -------------------------------------------------------------------------------------- delayed events

TIMED: dict[str, Any] = {
    "id": "m",
    "initial": "a",
    "states": {"a": {"after": {"1000": "b"}, "on": {"LEAVE": "c"}}, "b": {"after": {"500": "c"}}, "c": {}},
}
A_EVENT = "xstate.after.1000.m.a"


def timer(seq: int, due: float, **extra: Any) -> dict[str, Any]:
    return {"id": f"{A_EVENT}#{seq}", "event": A_EVENT, "due": due, "delay": 1000, "seq": seq, **extra}


def test_a_fired_timer_arms_the_next_states_timer_from_the_time_it_was_fired() -> None:
    chart = Statechart(TIMED)
    start = chart.start(now_ms=0)
    step = chart.fire_timer(start.snapshot, start.timers[0].id, now_ms=1200)
    assert step.fired == (f"{A_EVENT}#0",)
    assert step.snapshot["value"] == "b"
    assert step.snapshot["timers"] == [
        {"id": "xstate.after.500.m.b#1", "event": "xstate.after.500.m.b", "due": 1700, "delay": 500, "seq": 1}
    ]
    advanced = chart.advance(start.snapshot, now_ms=1000)
    assert advanced.snapshot["timers"][0]["due"] == 1500


def test_now_ms_is_required_by_a_machine_with_delays_and_by_fire_timer_and_advance_of_any_machine() -> None:
    with pytest.raises(ValueError) as caught:
        Statechart(TIMED).start()
    assert str(caught.value) == (
        "now_ms is required: machine 'm' has delayed transitions ('after'), whose timers are due at now_ms + delay"
    )
    plain = Statechart(NESTED)
    snapshot = plain.start().snapshot
    with pytest.raises(ValueError, match=r"^now_ms is required"):
        plain.advance(snapshot, now_ms=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^now_ms is required"):
        plain.fire_timer(snapshot, "any", now_ms=None)  # type: ignore[arg-type]


def test_a_given_now_ms_must_be_finite_even_for_a_machine_without_delays() -> None:
    plain = Statechart(NESTED)
    with pytest.raises(ValueError, match=r"^now_ms must be a finite number of milliseconds, got nan$"):
        plain.send(plain.start().snapshot, {"type": "NEXT"}, now_ms=float("nan"))


def test_advance_fires_at_most_max_firings_timers() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"after": {"0": "b"}}, "b": {"after": {"0": "c"}}, "c": {}},
        }
    )
    start = chart.start(now_ms=0).snapshot
    assert chart.advance(start, now_ms=0, max_firings=2).snapshot["value"] == "c"
    with pytest.raises(MachineLoopError) as caught:
        chart.advance(start, now_ms=0, max_firings=1)
    assert str(caught.value) == (
        "Machine 'm' still had timers due after firing 1 in one advance: "
        "a delayed transition re-arms itself with a zero delay"
    )


def test_a_done_snapshot_of_a_machine_with_delays_has_no_timers_and_keeps_its_counter() -> None:
    chart = Statechart(TIMED)
    done = {"status": "done", "value": "c", "context": {}, "output": None}
    assert chart.send(done, {"type": "X"}, now_ms=0).snapshot == {**done, "timers": [], "timerSeq": 0}
    assert chart.send({**done, "timerSeq": 7}, {"type": "X"}, now_ms=0).snapshot["timerSeq"] == 7


def test_a_machine_without_delays_ignores_timers_in_a_snapshot() -> None:
    plain = Statechart(NESTED)
    snapshot = {**active({"a": "a1"}), "timers": "not a list"}
    assert plain.send(snapshot, {"type": "NEXT"}).snapshot["value"] == {"a": "a2"}


@pytest.mark.parametrize(
    ("timers", "extra", "message"),
    [
        ("x", {}, "snapshot.timers must be a list, got str"),
        ([{**timer(0, 1000), "seq": -1}], {}, "snapshot.timers: malformed or duplicate timer"),
        ([{**timer(0, 1000), "id": 5}], {}, "snapshot.timers: malformed or duplicate timer"),
        ([timer(0, 1000)], {"timerSeq": "x"}, "snapshot.timerSeq must be an integer >= 1, got 'x'"),
        ([timer(0, 1000)], {"timerSeq": 0}, "snapshot.timerSeq must be an integer >= 1, got 0"),
    ],
)
def test_malformed_timers_in_a_snapshot_are_rejected(
    timers: Any, extra: dict[str, Any], message: str
) -> None:
    chart = Statechart(TIMED)
    snapshot = {**active("a", context={}), "timers": timers, **extra}
    with pytest.raises(InvalidSnapshotError) as caught:
        chart.send(snapshot, {"type": "X"}, now_ms=0)
    assert str(caught.value).startswith(message)


def test_firing_a_timer_leaves_an_older_timer_of_the_same_event_running_and_uncancellable() -> None:
    # XState keys timers by event type: once one fires, another pending timer of that type is an
    # orphan that leaving the state does not cancel.
    chart = Statechart(TIMED)
    snapshot = {**active("a", context={}), "timers": [timer(0, 1000), timer(1, 2000)], "timerSeq": 2}
    step = chart.fire_timer(snapshot, f"{A_EVENT}#0", now_ms=1000)
    assert step.snapshot["value"] == "b"
    assert timer(1, 2000, orphan=True) in step.snapshot["timers"]
    assert step.cancelled == ()


def test_an_orphan_timer_stays_an_orphan_across_a_snapshot_round_trip() -> None:
    chart = Statechart(TIMED)
    snapshot = {
        **active("a", context={}),
        "timers": [timer(0, 5000, orphan=True), timer(1, 1000)],
        "timerSeq": 2,
    }
    step = chart.send(snapshot, {"type": "LEAVE"}, now_ms=10)
    assert step.snapshot["value"] == "c"
    assert step.snapshot["timers"] == [timer(0, 5000, orphan=True)]
    assert step.cancelled == (f"{A_EVENT}#1",)
