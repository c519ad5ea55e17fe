"""Behaviour of the statechart interpreter (XState v5 semantics, Arvo subset).

The exhaustive semantic check is the differential test against the real XState
(``tests/interop/test_xstate_conformance.py``); these tests pin the behaviours by name.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from service.arvo.errors import ConfigViolation
from service.arvo.machine.statechart import (
    MAX_MICROSTEPS,
    ActionArgs,
    GuardCombinator,
    InvalidSnapshotError,
    MachineLoopError,
    MachineStep,
    Statechart,
    and_,
    assign,
    emit,
    not_,
    or_,
)


def rec(label: str) -> Any:
    """An assign action appending ``label@event.type`` to ``context.log``."""
    return assign(lambda a: {"log": [*a.context["log"], f"{label}@{a.event['type']}"]})


def entry_exit(label: str) -> dict[str, Any]:
    return {"entry": rec(f"{label}+"), "exit": rec(f"{label}-")}


def log_of(step: MachineStep) -> list[str]:
    return list(step.snapshot["context"]["log"])


def new_entries(before: MachineStep, after: MachineStep) -> list[str]:
    return log_of(after)[len(log_of(before)) :]


LOG_CONTEXT: dict[str, Any] = {"log": []}


# ---------------------------------------------------------------------------------------------------
# Entry / exit / transition action order


def test_entry_actions_run_root_first_in_document_order_on_start() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            **entry_exit("root"),
            "initial": "a",
            "states": {"a": {**entry_exit("a"), "initial": "a1", "states": {"a1": entry_exit("a1")}}},
        }
    )
    step = chart.start()
    assert log_of(step) == ["root+@xstate.init", "a+@xstate.init", "a1+@xstate.init"]
    assert step.snapshot == {
        "status": "active",
        "value": {"a": "a1"},
        "context": {"log": ["root+@xstate.init", "a+@xstate.init", "a1+@xstate.init"]},
        "output": None,
    }


def test_nested_transition_exits_deepest_first_then_transition_actions_then_entries_outside_in() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "a",
            "states": {
                "a": {
                    **entry_exit("a"),
                    "initial": "a1",
                    "states": {
                        "a1": {**entry_exit("a1"), "on": {"GO": {"target": "#m.b.b2", "actions": rec("t")}}}
                    },
                },
                "b": {
                    **entry_exit("b"),
                    "initial": "b1",
                    "states": {"b1": entry_exit("b1"), "b2": entry_exit("b2")},
                },
            },
        }
    )
    start = chart.start()
    step = chart.send(start.snapshot, {"type": "GO"})
    assert new_entries(start, step) == ["a1-@GO", "a-@GO", "t@GO", "b+@GO", "b2+@GO"]
    assert step.snapshot["value"] == {"b": "b2"}


def test_parallel_regions_enter_in_document_order_and_exit_in_reverse() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "p",
            "states": {
                "p": {
                    **entry_exit("p"),
                    "type": "parallel",
                    "on": {"LEAVE": "out"},
                    "states": {
                        "r1": {**entry_exit("r1"), "initial": "x", "states": {"x": entry_exit("x")}},
                        "r2": {**entry_exit("r2"), "initial": "y", "states": {"y": entry_exit("y")}},
                    },
                },
                "out": {},
            },
        }
    )
    start = chart.start()
    assert log_of(start) == [
        "p+@xstate.init",
        "r1+@xstate.init",
        "x+@xstate.init",
        "r2+@xstate.init",
        "y+@xstate.init",
    ]
    assert start.snapshot["value"] == {"p": {"r1": "x", "r2": "y"}}
    step = chart.send(start.snapshot, {"type": "LEAVE"})
    assert new_entries(start, step) == ["y-@LEAVE", "r2-@LEAVE", "x-@LEAVE", "r1-@LEAVE", "p-@LEAVE"]


def test_all_parallel_regions_take_their_transition_for_the_same_event() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "type": "parallel",
            "states": {
                "r1": {
                    "initial": "a",
                    "states": {"a": {"on": {"E": {"target": "b", "actions": rec("r1")}}}, "b": {}},
                },
                "r2": {
                    "initial": "a",
                    "states": {"a": {"on": {"E": {"target": "b", "actions": rec("r2")}}}, "b": {}},
                },
            },
        }
    )
    start = chart.start()
    step = chart.send(start.snapshot, {"type": "E"})
    assert step.snapshot["value"] == {"r1": "b", "r2": "b"}
    assert new_entries(start, step) == ["r1@E", "r2@E"]


def test_conflicting_transitions_in_parallel_regions_keep_the_first_selected() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "p",
            "states": {
                "p": {
                    "type": "parallel",
                    "states": {
                        "r1": {
                            "initial": "a",
                            "states": {"a": {"on": {"E": {"target": "#m.x", "actions": rec("1")}}}},
                        },
                        "r2": {
                            "initial": "a",
                            "states": {"a": {"on": {"E": {"target": "#m.y", "actions": rec("2")}}}},
                        },
                    },
                },
                "x": {},
                "y": {},
            },
        }
    )
    start = chart.start()
    step = chart.send(start.snapshot, {"type": "E"})
    assert step.snapshot["value"] == "x"
    assert new_entries(start, step) == ["1@E"]


def test_descendant_transition_wins_over_ancestor_transition_for_the_same_event() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "a",
            "states": {
                "a": {
                    "on": {"E": {"target": "c", "actions": rec("parent")}},
                    "initial": "a1",
                    "states": {"a1": {"on": {"E": {"target": "a2", "actions": rec("child")}}}, "a2": {}},
                },
                "c": {},
            },
        }
    )
    start = chart.start()
    step = chart.send(start.snapshot, {"type": "E"})
    assert step.snapshot["value"] == {"a": "a2"}
    assert new_entries(start, step) == ["child@E"]


def test_unguarded_ancestor_handles_event_when_child_guard_fails() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "a",
            "states": {
                "a": {
                    "on": {"E": "c"},
                    "initial": "a1",
                    "states": {"a1": {"on": {"E": {"target": "a2", "guard": lambda _: False}}}, "a2": {}},
                },
                "c": {},
            },
        }
    )
    assert chart.send(chart.start().snapshot, {"type": "E"}).snapshot["value"] == "c"


# ---------------------------------------------------------------------------------------------------
# External / internal transitions


def test_self_transition_without_reenter_runs_only_transition_actions() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "a",
            "states": {"a": {**entry_exit("a"), "on": {"E": {"target": "a", "actions": rec("t")}}}},
        }
    )
    start = chart.start()
    assert new_entries(start, chart.send(start.snapshot, {"type": "E"})) == ["t@E"]


def test_self_transition_with_reenter_exits_and_reenters() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "a",
            "states": {
                "a": {**entry_exit("a"), "on": {"E": {"target": "a", "reenter": True, "actions": rec("t")}}}
            },
        }
    )
    start = chart.start()
    assert new_entries(start, chart.send(start.snapshot, {"type": "E"})) == ["a-@E", "t@E", "a+@E"]


def test_transition_to_own_child_does_not_reenter_the_source_unless_reenter() -> None:
    def chart(reenter: bool) -> Statechart:
        return Statechart(
            {
                "id": "m",
                "context": LOG_CONTEXT,
                "initial": "a",
                "states": {
                    "a": {
                        **entry_exit("a"),
                        "on": {"E": {"target": ".a2", "reenter": reenter}},
                        "initial": "a1",
                        "states": {"a1": entry_exit("a1"), "a2": entry_exit("a2")},
                    }
                },
            }
        )

    internal = chart(False)
    start = internal.start()
    assert new_entries(start, internal.send(start.snapshot, {"type": "E"})) == ["a1-@E", "a2+@E"]
    external = chart(True)
    start = external.start()
    assert new_entries(start, external.send(start.snapshot, {"type": "E"})) == [
        "a1-@E",
        "a-@E",
        "a+@E",
        "a2+@E",
    ]


def test_targetless_transition_runs_actions_without_exit_or_entry() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"log": [], "n": 0},
            "initial": "a",
            "states": {
                "a": {
                    **entry_exit("a"),
                    "on": {"E": {"actions": assign({"n": lambda a: a.context["n"] + 1})}},
                }
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert step.snapshot["context"] == {"log": ["a+@xstate.init"], "n": 1}
    assert step.snapshot["value"] == "a"


def test_target_forms_sibling_child_id_and_dotted_path_resolve() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "on": {"ROOT": ".b"},
            "states": {
                "a": {"on": {"SIB": "b", "PATH": "b.b2", "ID": "#deep"}},
                "b": {
                    "initial": "b1",
                    "on": {"CHILD": ".b2"},
                    "states": {"b1": {}, "b2": {"initial": "x", "states": {"x": {"id": "deep"}}}},
                },
            },
        }
    )
    start = chart.start().snapshot
    assert chart.send(start, {"type": "SIB"}).snapshot["value"] == {"b": "b1"}
    assert chart.send(start, {"type": "PATH"}).snapshot["value"] == {"b": {"b2": "x"}}
    assert chart.send(start, {"type": "ID"}).snapshot["value"] == {"b": {"b2": "x"}}
    assert chart.send(start, {"type": "ROOT"}).snapshot["value"] == {"b": "b1"}
    in_b = chart.send(start, {"type": "SIB"}).snapshot
    assert chart.send(in_b, {"type": "CHILD"}).snapshot["value"] == {"b": {"b2": "x"}}


def test_multiple_targets_enter_several_parallel_regions() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "idle",
            "states": {
                "idle": {"on": {"GO": {"target": ["#m.p.r1.y", "#m.p.r2.y"]}}},
                "p": {
                    "type": "parallel",
                    "states": {
                        "r1": {"initial": "x", "states": {"x": {}, "y": {}}},
                        "r2": {"initial": "x", "states": {"x": {}, "y": {}}},
                        "r3": {"initial": "x", "states": {"x": {}, "y": {}}},
                    },
                },
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "GO"})
    assert step.snapshot["value"] == {"p": {"r1": "y", "r2": "y", "r3": "x"}}


# ---------------------------------------------------------------------------------------------------
# Event descriptors


def test_exact_descriptor_beats_wildcard_and_longer_partial_beats_star() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "a",
            "states": {
                "a": {
                    "on": {
                        "*": {"actions": rec("star")},
                        "x.*": {"actions": rec("x.*")},
                        "x.y.*": {"actions": rec("x.y.*")},
                        "x.y": {"actions": rec("exact")},
                    }
                }
            },
        }
    )
    snapshot = chart.start().snapshot
    assert log_of(chart.send(snapshot, {"type": "x.y"})) == ["exact@x.y"]
    assert log_of(chart.send(snapshot, {"type": "x.y.z"})) == ["x.y.*@x.y.z"]
    assert log_of(chart.send(snapshot, {"type": "x.q"})) == ["x.*@x.q"]
    assert log_of(chart.send(snapshot, {"type": "x"})) == ["x.*@x"]  # XState: 'x.*' also matches 'x'
    assert log_of(chart.send(snapshot, {"type": "other"})) == ["star@other"]


def test_failed_exact_guard_does_not_fall_back_to_wildcard_of_the_same_state() -> None:
    # XState: if a state has an exact descriptor for the event, its wildcards are not candidates.
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "on": {"E": {"actions": rec("root")}},
            "initial": "a",
            "states": {
                "a": {
                    "on": {
                        "E": {"guard": lambda _: False, "actions": rec("exact")},
                        "*": {"actions": rec("star")},
                    }
                }
            },
        }
    )
    assert log_of(chart.send(chart.start().snapshot, {"type": "E"})) == ["root@E"]


def test_wildcard_transitions_also_see_internal_done_events() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "c",
            "states": {
                "c": {
                    "on": {"*": {"actions": rec("star")}},
                    "initial": "a",
                    "states": {"a": {"on": {"E": "f"}}, "f": {"type": "final"}},
                }
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert log_of(step) == ["star@xstate.done.state.m.c"]


# ---------------------------------------------------------------------------------------------------
# Eventless transitions


def test_always_transitions_run_to_a_fixed_point() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"n": 0},
            "initial": "counting",
            "states": {
                "counting": {
                    "always": [
                        {
                            "guard": lambda a: a.context["n"] < 5,
                            "actions": assign({"n": lambda a: a.context["n"] + 1}),
                        },
                        {"target": "finished"},
                    ]
                },
                "finished": {},
            },
        }
    )
    step = chart.start()
    assert step.snapshot["context"] == {"n": 5}
    assert step.snapshot["value"] == "finished"


def test_always_is_evaluated_after_an_event_even_without_a_matching_transition() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"ready": False},
            "initial": "waiting",
            "states": {
                "waiting": {"always": {"target": "go", "guard": lambda a: a.context["ready"]}},
                "go": {},
            },
        }
    )
    snapshot = chart.start().snapshot
    snapshot["context"]["ready"] = True  # out-of-band change: not acted upon at restore time
    step = chart.send(snapshot, {"type": "UNRELATED"})
    assert step.snapshot["value"] == "go"


def test_eventless_transitions_see_the_triggering_event() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "a",
            "states": {
                "a": {"on": {"E": "b"}},
                "b": {"always": {"target": "c", "actions": rec("auto")}},
                "c": {},
            },
        }
    )
    assert log_of(chart.send(chart.start().snapshot, {"type": "E"})) == ["auto@E"]


def test_targetless_always_without_context_change_runs_once_per_step() -> None:
    calls: list[str] = []
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"always": {"actions": lambda a: calls.append(a.event["type"])}}},
        }
    )
    snapshot = chart.start().snapshot
    chart.send(snapshot, {"type": "E"})
    assert calls == ["xstate.init", "E"]


def test_endless_eventless_loop_raises_machine_loop_error_naming_the_machine() -> None:
    chart = Statechart(
        {
            "id": "spinner",
            "initial": "a",
            "states": {"a": {"always": "b"}, "b": {"always": "a"}},
        }
    )
    with pytest.raises(MachineLoopError, match=f"'spinner' did not settle after {MAX_MICROSTEPS} microsteps"):
        chart.start()


# ---------------------------------------------------------------------------------------------------
# Done events and output


def test_on_done_fires_when_compound_reaches_a_final_child_with_its_output() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"got": None},
            "initial": "job",
            "states": {
                "job": {
                    "initial": "working",
                    "states": {
                        "working": {"on": {"FINISH": "finished"}},
                        "finished": {"type": "final", "output": lambda a: {"answer": 42}},
                    },
                    "onDone": {"target": "after", "actions": assign({"got": lambda a: a.event})},
                },
                "after": {},
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "FINISH"})
    assert step.snapshot["value"] == "after"
    assert step.snapshot["context"]["got"] == {"type": "xstate.done.state.m.job", "output": {"answer": 42}}


def test_on_done_of_parallel_fires_only_when_every_region_is_final() -> None:
    region = {"initial": "a", "states": {"a": {"on": {"E": "f"}}, "f": {"type": "final"}}}
    chart = Statechart(
        {
            "id": "m",
            "initial": "p",
            "states": {
                "p": {
                    "type": "parallel",
                    "states": {
                        "r1": region,
                        "r2": {**region, "states": {"a": {"on": {"E2": "f"}}, "f": {"type": "final"}}},
                    },
                    "onDone": "done",
                },
                "done": {},
            },
        }
    )
    start = chart.start()
    half = chart.send(start.snapshot, {"type": "E"})
    assert half.snapshot["value"] == {"p": {"r1": "f", "r2": "a"}}
    assert chart.send(half.snapshot, {"type": "E2"}).snapshot["value"] == "done"


def test_top_level_final_state_makes_the_machine_done_with_output_then_runs_exit_actions() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            **entry_exit("root"),
            "initial": "a",
            "states": {"a": {"on": {"END": "end"}}, "end": {**entry_exit("end"), "type": "final"}},
            "output": lambda a: {"log": list(a.context["log"]), "event": a.event["type"]},
        }
    )
    start = chart.start()
    step = chart.send(start.snapshot, {"type": "END"})
    assert step.snapshot["status"] == "done"
    assert step.snapshot["value"] == "end"
    # Output is computed before the final exit actions run (XState order).
    assert step.snapshot["output"] == {
        "log": ["root+@xstate.init", "end+@END"],
        "event": "xstate.done.state.m.end",
    }
    assert new_entries(start, step) == ["end+@END", "end-@END", "root-@END"]


def test_machine_without_output_is_done_with_null_output() -> None:
    chart = Statechart({"id": "m", "initial": "end", "states": {"end": {"type": "final"}}})
    assert chart.start().snapshot == {"status": "done", "value": "end", "context": {}, "output": None}


def test_done_machine_ignores_events() -> None:
    emitted = emit({"type": "never"})
    chart = Statechart(
        {
            "id": "m",
            "initial": "end",
            "on": {"*": {"actions": emitted}},
            "states": {"end": {"type": "final"}},
            "output": {"final": 1},
        }
    )
    done = chart.start()
    step = chart.send(done.snapshot, {"type": "ANY"})
    assert (
        step.snapshot
        == done.snapshot
        == {"status": "done", "value": "end", "context": {}, "output": {"final": 1}}
    )
    assert step.emitted == []


# ---------------------------------------------------------------------------------------------------
# Parallel states without regions (``{"type": "parallel", "states": {}}``, as Arvo's inc v0.0.1 machine)


def _inc_like_chart() -> Statechart:
    """A compound machine whose ``increment`` state is a parallel state without regions."""
    return Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "fetch",
            "states": {
                "fetch": {"on": {"GO": "increment"}},
                "increment": {
                    **entry_exit("inc"),
                    "type": "parallel",
                    "states": {},
                    "onDone": {"target": "done", "actions": rec("inc-done")},
                    "on": {
                        "SELF": {"actions": rec("self")},
                        "RE": {"target": "increment", "reenter": True},
                        "OK": {"target": "done", "actions": rec("ok")},
                    },
                },
                "done": {"type": "final"},
            },
            "output": lambda a: {"event": a.event["type"]},
        }
    )


def test_parallel_state_without_regions_is_entered_with_an_empty_object_value() -> None:
    chart = _inc_like_chart()
    start = chart.start()
    step = chart.send(start.snapshot, {"type": "GO"})
    assert step.snapshot["status"] == "active"
    assert step.snapshot["value"] == {"increment": {}}
    assert new_entries(start, step) == ["inc+@GO"]


def test_parallel_state_without_regions_still_takes_its_own_transitions() -> None:
    chart = _inc_like_chart()
    inside = chart.send(chart.start().snapshot, {"type": "GO"})
    targetless = chart.send(inside.snapshot, {"type": "SELF"})
    assert targetless.snapshot["value"] == {"increment": {}}
    assert new_entries(inside, targetless) == ["self@SELF"]
    reentered = chart.send(targetless.snapshot, {"type": "RE"})
    assert reentered.snapshot["value"] == {"increment": {}}
    assert new_entries(targetless, reentered) == ["inc-@RE", "inc+@RE"]
    unhandled = chart.send(reentered.snapshot, {"type": "zzz"})
    assert unhandled.snapshot == reentered.snapshot
    done = chart.send(unhandled.snapshot, {"type": "OK"})
    assert done.snapshot["status"] == "done"
    assert done.snapshot["value"] == "done"
    assert done.snapshot["output"] == {"event": "xstate.done.state.m.done"}
    assert new_entries(unhandled, done) == ["inc-@OK", "ok@OK"]


def test_parallel_state_without_regions_is_never_done_and_its_on_done_never_fires() -> None:
    chart = _inc_like_chart()
    step = chart.send(chart.start().snapshot, {"type": "GO"})
    for event in ("SELF", "RE", "zzz"):
        step = chart.send(step.snapshot, {"type": event})
        assert step.snapshot["status"] == "active"
        assert not any(entry.startswith("inc-done") for entry in log_of(step))


def test_parallel_state_without_a_states_key_behaves_like_one_with_empty_states() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "p",
            "states": {"p": {"type": "parallel", "on": {"X": "q"}, "onDone": "q"}, "q": {}},
        }
    )
    start = chart.start()
    assert start.snapshot["value"] == {"p": {}}
    assert chart.send(start.snapshot, {"type": "X"}).snapshot["value"] == "q"


def test_always_is_not_selected_when_no_atomic_state_is_active() -> None:
    # XState only walks eventless transitions up from active atomic states; a parallel state without
    # regions is not atomic, so neither its own 'always' nor an ancestor's is ever selected.
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "p",
            "always": {"actions": rec("root-always")},
            "states": {
                "p": {"type": "parallel", "states": {}, "always": {"target": "q", "actions": rec("p")}},
                "q": {},
            },
        }
    )
    start = chart.start()
    step = chart.send(start.snapshot, {"type": "X"})
    assert step.snapshot["value"] == {"p": {}}
    assert log_of(step) == []


def test_parallel_region_without_regions_counts_as_final_when_its_siblings_complete() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "initial": "outer",
            "states": {
                "outer": {
                    "type": "parallel",
                    "onDone": {"target": "after", "actions": rec("outer-done")},
                    "states": {
                        "e": {"type": "parallel", "states": {}, "onDone": {"actions": rec("e-done")}},
                        "r": {"initial": "a", "states": {"a": {"on": {"F": "f"}}, "f": {"type": "final"}}},
                    },
                },
                "after": {},
            },
        }
    )
    start = chart.start()
    assert start.snapshot["value"] == {"outer": {"e": {}, "r": "a"}}
    step = chart.send(start.snapshot, {"type": "F"})
    assert step.snapshot["value"] == "after"
    assert log_of(step) == ["outer-done@xstate.done.state.m.outer"]


def test_parallel_root_with_a_final_region_and_an_empty_region_is_done_at_start() -> None:
    chart = Statechart(
        {
            "id": "m",
            "type": "parallel",
            "states": {"e": {"type": "parallel"}, "f": {"type": "final"}},
            "output": lambda a: a.event["type"],
        }
    )
    assert chart.start().snapshot == {
        "status": "done",
        "value": {"f": {}, "e": {}},
        "context": {},
        "output": "xstate.done.state.m",
    }


def test_root_parallel_without_regions_has_an_empty_value_and_handles_events() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            **entry_exit("m"),
            "type": "parallel",
            "on": {"X": {"actions": rec("x")}, "Y": {"target": "#m", "reenter": True}},
        }
    )
    start = chart.start()
    assert start.snapshot == {
        "status": "active",
        "value": {},
        "context": {"log": ["m+@xstate.init"]},
        "output": None,
    }
    handled = chart.send(start.snapshot, {"type": "X"})
    assert new_entries(start, handled) == ["x@X"]
    reentered = chart.send(handled.snapshot, {"type": "Y"})
    assert reentered.snapshot["value"] == {}
    assert new_entries(handled, reentered) == ["m-@Y", "m+@Y"]


def test_snapshot_of_a_parallel_state_without_regions_restores_from_json_or_its_key() -> None:
    chart = _inc_like_chart()
    inside = chart.send(chart.start().snapshot, {"type": "GO"})
    persisted = orjson.loads(orjson.dumps(inside.snapshot))
    assert persisted["value"] == {"increment": {}}
    by_key = {**persisted, "value": "increment"}  # XState resolves a bare key to the same state
    for snapshot in (persisted, by_key):
        step = chart.send(snapshot, {"type": "SELF"})
        assert step.snapshot["value"] == {"increment": {}}
        assert new_entries(inside, step) == ["self@SELF"]
    with pytest.raises(InvalidSnapshotError, match="does not exist"):
        chart.send({**persisted, "value": {"increment": {"x": {}}}}, {"type": "SELF"})


def test_mermaid_draws_a_parallel_state_without_regions_as_a_plain_state() -> None:
    diagram = _inc_like_chart().to_mermaid()
    assert 'state "increment" as s2' in diagram
    assert "s2 --> s3 : OK" in diagram


# ---------------------------------------------------------------------------------------------------
# Actions, guards, context


def test_assign_is_visible_to_later_actions_and_emits_in_the_same_step() -> None:
    seen: list[int] = []
    chart = Statechart(
        {
            "id": "m",
            "context": {"n": 0},
            "initial": "a",
            "states": {
                "a": {
                    "on": {
                        "E": {
                            "actions": [
                                assign({"n": lambda a: a.context["n"] + 1}),
                                lambda a: seen.append(a.context["n"]),
                                emit(lambda a: {"type": "out", "n": a.context["n"]}),
                                assign(lambda a: {"n": a.context["n"] * 10}),
                                emit(lambda a: {"type": "out", "n": a.context["n"]}),
                            ]
                        }
                    }
                }
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert seen == [1]
    assert step.emitted == [{"type": "out", "n": 1}, {"type": "out", "n": 10}]
    assert step.snapshot["context"] == {"n": 10}


def test_named_actions_receive_params_static_or_computed() -> None:
    received: list[Any] = []
    chart = Statechart(
        {
            "id": "m",
            "context": {"k": 7},
            "initial": "a",
            "states": {
                "a": {
                    "on": {
                        "E": {
                            "actions": [
                                "plain",
                                {"type": "withParams", "params": {"x": 1}},
                                {
                                    "type": "withParams",
                                    "params": lambda a: {"k": a.context["k"], "e": a.event["type"]},
                                },
                                {"type": "bump", "params": {"by": 3}},
                                {"type": "announce", "params": {"kind": "hello"}},
                            ]
                        }
                    }
                }
            },
        },
        actions={
            "plain": lambda a: received.append(("plain", a.event["type"])),
            "withParams": lambda a, p: received.append(("with", p)),
            "bump": assign(lambda a, p: {"k": a.context["k"] + p["by"]}),
            "announce": emit(lambda a, p: {"type": p["kind"], "k": a.context["k"]}),
        },
    )
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert received == [("plain", "E"), ("with", {"x": 1}), ("with", {"k": 7, "e": "E"})]
    assert step.snapshot["context"] == {"k": 10}
    assert step.emitted == [{"type": "hello", "k": 10}]


def test_assign_mapping_computes_every_key_from_the_previous_context() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"a": 1, "b": 2},
            "initial": "s",
            "states": {
                "s": {
                    "on": {
                        "SWAP": {
                            "actions": assign(
                                {"a": lambda x: x.context["b"], "b": lambda x: x.context["a"], "c": [1]}
                            )
                        }
                    }
                }
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "SWAP"})
    assert step.snapshot["context"] == {"a": 2, "b": 1, "c": [1]}


def test_guards_named_with_params_inline_and_combinators() -> None:
    guards = {
        "gte": lambda a, p: a.context["n"] >= p["min"],
        "even": lambda a: a.event.get("value", 1) % 2 == 0,
        "evenAlias": "even",
        "both": and_(["even", {"type": "gte", "params": {"min": 1}}]),
    }

    def chart_for(guard: Any) -> Statechart:
        return Statechart(
            {
                "id": "m",
                "context": {"n": 1},
                "initial": "a",
                "states": {"a": {"on": {"E": {"target": "b", "guard": guard}}}, "b": {}},
            },
            guards=guards,
        )

    def takes(guard: Any, value: int) -> bool:
        chart = chart_for(guard)
        return bool(
            chart.send(chart.start().snapshot, {"type": "E", "value": value}).snapshot["value"] == "b"
        )

    assert takes({"type": "gte", "params": {"min": 1}}, 1)
    assert not takes({"type": "gte", "params": {"min": 2}}, 1)
    assert takes({"type": "gte", "params": lambda a: {"min": a.event["value"]}}, 1)
    assert takes("even", 2)
    assert takes("evenAlias", 2)
    assert not takes("even", 3)
    assert takes(lambda a: a.event["value"] == 5, 5)
    assert takes("both", 2)
    assert not takes("both", 3)
    assert takes(or_(["even", lambda a: a.event["value"] == 3]), 3)
    assert takes(not_("even"), 3)
    assert not takes(not_("even"), 4)


def test_guarded_transitions_are_tried_in_order_first_enabled_wins() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {
                    "on": {
                        "E": [
                            {"target": "small", "guard": lambda a: a.event["value"] < 10},
                            {"target": "medium", "guard": lambda a: a.event["value"] < 100},
                            {"target": "large"},
                        ]
                    }
                },
                "small": {},
                "medium": {},
                "large": {},
            },
        }
    )
    snapshot = chart.start().snapshot
    assert [chart.send(snapshot, {"type": "E", "value": v}).snapshot["value"] for v in (1, 50, 500)] == [
        "small",
        "medium",
        "large",
    ]


def test_context_factory_receives_input_and_init_event() -> None:
    seen: list[ActionArgs] = []

    def context(args: ActionArgs) -> dict[str, Any]:
        seen.append(args)
        return {"delta": args.input["data"]["delta"]}

    chart = Statechart({"id": "m", "context": context, "initial": "a", "states": {"a": {}}})
    step = chart.start({"data": {"delta": 3}})
    assert step.snapshot["context"] == {"delta": 3}
    assert seen[0].event == {"type": "xstate.init", "input": {"data": {"delta": 3}}}
    assert seen[0].context == {}


def test_constant_context_is_copied_per_start() -> None:
    config = {"id": "m", "context": {"items": []}, "initial": "a", "states": {"a": {}}}
    chart = Statechart(config)
    chart.start().snapshot["context"]["items"].append(1)
    assert chart.start().snapshot["context"] == {"items": []}
    assert config["context"] == {"items": []}


def test_errors_raised_by_user_code_propagate_unchanged() -> None:
    class Boom(Exception):
        pass

    boom = Boom("in state error")

    def explode(_: ActionArgs) -> None:
        raise boom

    in_entry = Statechart({"id": "m", "initial": "a", "states": {"a": {"type": "final", "entry": explode}}})
    with pytest.raises(Boom) as caught:
        in_entry.start()
    assert caught.value is boom
    in_context = Statechart({"id": "m", "context": explode, "initial": "a", "states": {"a": {}}})
    with pytest.raises(Boom):
        in_context.start()
    in_guard = Statechart({"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"guard": explode}}}}})
    with pytest.raises(Boom):
        in_guard.send(in_guard.start().snapshot, {"type": "E"})


# ---------------------------------------------------------------------------------------------------
# Snapshots and restore


def test_restore_does_not_rerun_entry_actions() -> None:
    entries: list[str] = []
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"entry": lambda a: entries.append("a"), "on": {"X": {"actions": []}}}},
        }
    )
    snapshot = chart.start().snapshot
    chart.send(snapshot, {"type": "X"})
    chart.send(snapshot, {"type": "UNHANDLED"})
    assert entries == ["a"]


def test_send_does_not_mutate_the_input_snapshot() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"items": [1]},
            "initial": "a",
            "states": {
                "a": {"on": {"E": {"target": "b", "actions": lambda a: a.context["items"].append(2)}}},
                "b": {},
            },
        }
    )
    snapshot = chart.start().snapshot
    before = copy.deepcopy(snapshot)
    chart.send(snapshot, {"type": "E"})
    assert snapshot == before


def test_snapshots_are_plain_json() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": {"n": 0},
            "type": "parallel",
            "states": {
                "r1": {"initial": "a", "states": {"a": {}}},
                "r2": {"initial": "b", "states": {"b": {}}},
            },
        }
    )
    snapshot = chart.start().snapshot
    assert (
        orjson.loads(orjson.dumps(snapshot))
        == snapshot
        == {
            "status": "active",
            "value": {"r1": "a", "r2": "b"},
            "context": {"n": 0},
            "output": None,
        }
    )


def test_event_without_type_is_a_value_error() -> None:
    chart = Statechart({"id": "m", "initial": "a", "states": {"a": {}}})
    snapshot = chart.start().snapshot
    with pytest.raises(ValueError, match=r"event\.type must be a string"):
        chart.send(snapshot, {"data": {}})
    with pytest.raises(ValueError, match="event must be a mapping"):
        chart.send(snapshot, "E")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wildcard type"):
        chart.send(snapshot, {"type": "*"})


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        ({"status": "active", "value": "nope", "context": {}}, "state 'nope' does not exist on '#m'"),
        ({"status": "active", "value": {"a": "x"}, "context": {}}, "does not exist on '#m.a'"),
        ({"status": "active", "value": 3, "context": {}}, "must be a string or a mapping"),
        ({"status": "active", "value": "a", "context": []}, "snapshot.context must be a mapping"),
        ({"status": "active", "value": "a", "context": {"x": {1, 2}}}, "JSON-serialisable"),
        ({"status": "error", "value": "a", "context": {}}, "must be 'active' or 'done'"),
        ([], "snapshot must be a mapping"),
    ],
)
def test_invalid_snapshots_are_rejected(snapshot: Any, message: str) -> None:
    chart = Statechart(
        {"id": "m", "initial": "a", "states": {"a": {}, "b": {"initial": "c", "states": {"c": {}}}}}
    )
    with pytest.raises(InvalidSnapshotError, match=message):
        chart.send(snapshot, {"type": "E"})


def test_restore_of_two_children_of_a_compound_is_rejected() -> None:
    chart = Statechart({"id": "m", "initial": "a", "states": {"a": {}, "b": {}}})
    with pytest.raises(InvalidSnapshotError, match="exactly one active child"):
        chart.send({"status": "active", "value": {"a": {}, "b": {}}, "context": {}}, {"type": "E"})


def test_restore_completes_a_partial_state_value_with_initial_states() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {},
                "p": {"type": "parallel", "states": {"r1": {"initial": "x", "states": {"x": {}}}, "r2": {}}},
            },
        }
    )
    step = chart.send({"status": "active", "value": "p", "context": {}}, {"type": "E"})
    assert step.snapshot["value"] == {"p": {"r1": "x", "r2": {}}}


def test_integer_like_state_keys_follow_javascript_object_key_order() -> None:
    chart = Statechart(
        {
            "id": "m",
            "type": "parallel",
            "context": LOG_CONTEXT,
            "states": {"b": {"entry": rec("b")}, "1": {"entry": rec("1")}},
        }
    )
    step = chart.start()
    assert log_of(step) == ["1@xstate.init", "b@xstate.init"]
    assert list(step.snapshot["value"]) == ["1", "b"]


# ---------------------------------------------------------------------------------------------------
# Configuration validation


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (
            {"id": "m", "initial": "idle", "states": {"idle": {"invoke": {"src": "x", "onDone": "b"}}}},
            "Configuration Error: 'invoke' not supported\nLocation: idle > invoke\n",
        ),
        (
            {"id": "m", "invoke": {"src": "x"}, "initial": "a", "states": {"a": {}}},
            "Location: (root) > invoke",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"initial": "x", "states": {"x": {"invoke": []}}}}},
            "Location: a > x > invoke",
        ),
        (
            {"id": "m", "delays": {}, "initial": "a", "states": {"a": {}}},
            "'delays' not supported in Arvo machines",
        ),
        (
            {"id": "m", "actors": {}, "initial": "a", "states": {"a": {}}},
            "'actor' not supported in Arvo machines",
        ),
        ({"id": "m", "initial": "a", "states": {"a": {"entry": "spawnChild"}}}, "'actor' not supported"),
        (
            {"id": "m", "initial": "a", "states": {"a": {"entry": {"type": "sendTo"}}}},
            "'actor' not supported",
        ),
        ({"id": "m", "initial": "a", "states": {"a": {"type": "history"}}}, "'history' states not supported"),
        ({"id": "m", "initial": "a", "states": {"a": {"history": "deep"}}}, "'history' states not supported"),
        (
            {"id": "m", "initial": "a", "states": {"a": {"entyr": []}}},
            "unknown state node key 'entyr'\nLocation: a > entyr",
        ),
        (
            {"id": "m", "initial": "a", "context": {}, "states": {"a": {"context": {}}}},
            "unknown state node key 'context'",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"cond": "x"}}}}},
            "'cond' was renamed to 'guard'",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"target": "a", "internal": True}}}}},
            "use 'reenter'",
        ),
        ({"id": "m", "states": {"a": {}}}, "no initial state specified"),
        ({"id": "m", "initial": "zz", "states": {"a": {}}}, "initial state 'zz' not found"),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": "nowhere"}}}},
            "invalid transition target 'nowhere' from state #m.a",
        ),
        ({"id": "m", "initial": "a", "on": {"E": "a"}, "states": {"a": {}}}, 'Did you mean ".a"?'),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": "#missing"}}}},
            "'#missing' does not exist",
        ),
        ({"id": "m", "initial": "a", "states": {"a": {"on": {"E": "a.x"}}}}, "no child states exist"),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": ["b", 3]}}, "b": {}}},
            "must be a target string or a mapping",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"target": 3}}}}},
            "target must be a string",
        ),
        (
            {
                "id": "m",
                "initial": "a",
                "states": {"a": {"on": {"E": {"target": ["b", "c"]}}}, "b": {}, "c": {}},
            },
            "cannot be active together",
        ),
        (
            {
                "id": "m",
                "initial": "a",
                "states": {
                    "a": {"initial": "x", "states": {"x": {}}, "on": {"E": {"target": [".x", "#m.a"]}}}
                },
            },
            "overlap",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"reenter": "yes"}}}}},
            "'reenter' must be a boolean",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"actions": "missing"}}}}},
            "action 'missing' is not implemented",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"guard": "missing"}}}}},
            "guard 'missing' is not implemented",
        ),
        (
            {
                "id": "m",
                "initial": "a",
                "states": {"a": {"on": {"E": {"actions": {"type": "x", "extra": 1}}}}},
            },
            "unknown action key 'extra'",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"actions": {"params": 1}}}}}},
            "action 'type' must be",
        ),
        ({"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"actions": 5}}}}}, "an action must be"),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"guard": {"type": "x", "p": 1}}}}}},
            "unknown guard key 'p'",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"guard": {"params": 1}}}}}},
            "guard 'type' must be",
        ),
        ({"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"guard": 5}}}}}, "a guard must be"),
        ({"id": "m", "initial": "a", "states": {"a": {"on": {"": "a"}}}}, "null events"),
        ({"id": "m", "initial": "a", "states": {"a": {"on": {"a.*.b": "a"}}}}, "invalid wildcard"),
        ({"id": "m", "initial": "a", "states": {"a": {"on": []}}}, "'on' must be a mapping"),
        (
            {"id": "m", "initial": "a", "states": {"a": {"output": 1}}},
            "'output' is only allowed on the root and on final",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"onDone": "a"}}},
            "'onDone' is only allowed on compound and parallel",
        ),
        ({"id": "m", "initial": "a", "states": {"a": {"type": "weird"}}}, "unknown state type 'weird'"),
        (
            {"id": "m", "initial": "a", "states": {"a": {"type": "final", "states": {"x": {}}}}},
            "a final state cannot have child states",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"type": "compound", "states": {}}}},
            "a compound state needs at least one child",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"initial": "x"}}},
            "'initial' is not allowed on a atomic state",
        ),
        (
            {"id": "m", "initial": "a", "states": {"a": {"id": "dup"}, "b": {"id": "dup"}}},
            "duplicate state id 'dup'",
        ),
        ({"id": "m", "initial": "a", "states": {"a": {"id": ""}}}, "'id' must be a non-empty string"),
        ({"id": "", "initial": "a", "states": {"a": {}}}, "'id' must be a non-empty string"),
        ({"id": "m", "initial": "a", "states": {"a": 1}}, "state node config must be a mapping"),
        ({"id": "m", "initial": "a", "states": []}, "'states' must be a mapping"),
        (
            {"id": "m", "initial": "a", "states": {"a": {}}, "context": 5},
            "'context' must be a mapping or a function",
        ),
    ],
)
def test_invalid_configs_are_rejected_with_config_violation(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigViolation) as caught:
        Statechart(config)
    assert fragment in caught.value.raw_message


def test_invoke_error_message_matches_the_arvo_text() -> None:
    with pytest.raises(ConfigViolation) as caught:
        Statechart({"id": "m", "initial": "idle", "states": {"idle": {"invoke": {"src": "x"}}}})
    assert str(caught.value) == (
        "ViolationError<Config> Configuration Error: 'invoke' not supported\n"
        "Location: idle > invoke\n"
        "Arvo machines do not support XState invocations as they introduce asynchronous behavior.\n"
        "To fix: Replace 'invoke' with Arvo event-driven patterns for asynchronous operations"
    )


def test_states_and_events_named_after_or_invoke_are_allowed() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "invoke",
            "states": {
                "invoke": {"on": {"after": "after", "invoke": "invoke"}},
                "after": {"initial": "enqueueArvoEvent", "states": {"enqueueArvoEvent": {}}},
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "after"})
    assert step.snapshot["value"] == {"after": "enqueueArvoEvent"}


def test_named_action_and_guard_implementations_must_be_usable() -> None:
    with pytest.raises(ConfigViolation, match="implementation must be a function"):
        Statechart({"id": "m", "initial": "a", "states": {"a": {"entry": "x"}}}, actions={"x": 5})
    with pytest.raises(ConfigViolation, match="implementation must be callable"):
        Statechart(
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"guard": "g"}}}}},
            guards={"g": 5},
        )
    with pytest.raises(ConfigViolation, match="cycle"):
        Statechart(
            {"id": "m", "initial": "a", "states": {"a": {"on": {"E": {"guard": "g"}}}}}, guards={"g": "g"}
        )
    with pytest.raises(ConfigViolation, match="exactly one guard"):
        Statechart(
            {
                "id": "m",
                "initial": "a",
                "states": {"a": {"on": {"E": {"guard": GuardCombinator(kind="not", guards=["a", "b"])}}}},
            },
            guards={"a": lambda a: True, "b": lambda a: True},
        )


def test_builtin_constructors_reject_wrong_arguments() -> None:
    with pytest.raises(TypeError, match="assign"):
        assign(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="emit"):
        emit("x")  # type: ignore[arg-type]


def test_assign_and_emit_functions_must_return_mappings() -> None:
    bad_assign = Statechart({"id": "m", "initial": "a", "states": {"a": {"entry": assign(lambda a: 5)}}})
    with pytest.raises(TypeError, match="must return a mapping"):
        bad_assign.start()
    bad_emit = Statechart({"id": "m", "initial": "a", "states": {"a": {"entry": emit(lambda a: 5)}}})
    with pytest.raises(TypeError, match="must return a mapping"):
        bad_emit.start()
    bad_context = Statechart({"id": "m", "context": lambda a: 5, "initial": "a", "states": {"a": {}}})
    with pytest.raises(TypeError, match="context factory must return a mapping"):
        bad_context.start()


# ---------------------------------------------------------------------------------------------------
# Rendering


def test_mermaid_diagram_of_a_small_machine() -> None:
    chart = Statechart(
        {
            "id": "light",
            "initial": "green",
            "states": {
                "green": {"on": {"TIMER": "yellow", "NOOP": {"actions": []}}},
                "yellow": {
                    "on": {"TIMER": {"target": "red", "guard": "canStop"}},
                    "always": {"target": "off", "guard": "broken"},
                },
                "red": {
                    "type": "parallel",
                    "states": {
                        "walk": {
                            "initial": "on",
                            "states": {"on": {"on": {"TICK": "off"}}, "off": {"type": "final"}},
                        },
                        "cars": {},
                    },
                    "onDone": "green",
                },
                "off": {"type": "final"},
            },
            "on": {"RESET": ".green"},
        },
        guards={"canStop": lambda a: True, "broken": lambda a: False},
    )
    assert chart.to_mermaid() == (
        "stateDiagram-v2\n"
        '    state "green" as s1\n'
        '    state "yellow" as s2\n'
        '    state "red" as s3\n'
        '    state "off" as s8\n'
        "    state s3 {\n"
        '        state "walk" as s4\n'
        "        state s4 {\n"
        '            state "on" as s5\n'
        '            state "off" as s6\n'
        "            [*] --> s5\n"
        "            s5 --> s6 : TICK\n"
        "            s6 --> [*]\n"
        "        }\n"
        "        --\n"
        '        state "cars" as s7\n'
        "    }\n"
        "    [*] --> s1\n"
        "    s1 --> s2 : TIMER\n"
        "    s2 --> s3 : TIMER [canStop]\n"
        "    s2 --> s8 : always [broken]\n"
        "    s3 --> s1 : onDone\n"
        "    s8 --> [*]\n"
        "    %% from the root: RESET --> s1\n"
    )


def test_definition_is_json_with_functions_named() -> None:
    def remember(args: ActionArgs) -> None:
        return None

    chart = Statechart(
        {
            "id": "m",
            "context": lambda a: {},
            "initial": "a",
            "states": {
                "a": {
                    "entry": [remember, assign({"x": 1}), emit({"type": "e"}), emit(lambda a: {"type": "f"})],
                    "on": {
                        "E": {
                            "guard": and_(["g", not_(lambda a: True)]),
                            "actions": {"type": "named", "params": (1, 2)},
                        }
                    },
                }
            },
        },
        actions={"named": lambda a: None},
        guards={"g": lambda a: True},
    )
    definition = chart.definition()
    assert orjson.loads(orjson.dumps(definition)) == definition
    assert definition["context"] == "<inline>"
    assert definition["states"]["a"]["entry"] == [
        "remember",
        {"type": "xstate.assign"},
        {"type": "xstate.emit", "event": {"type": "e"}},
        {"type": "xstate.emit", "event": "<inline>"},
    ]
    assert definition["states"]["a"]["on"]["E"] == {
        "guard": {"type": "xstate.and", "guards": ["g", {"type": "xstate.not", "guards": ["<inline>"]}]},
        "actions": {"type": "named", "params": [1, 2]},
    }
    definition["id"] = "changed"
    assert chart.definition()["id"] == "m"


def test_machine_id_defaults_like_xstate() -> None:
    chart = Statechart({"initial": "a", "states": {"a": {"on": {"E": "#(machine).a"}}}})
    assert chart.id == "(machine)"
    assert chart.send(chart.start().snapshot, {"type": "E"}).snapshot["value"] == "a"


# ---------------------------------------------------------------------------------------------------
# XState quirks reproduced on purpose (each verified against xstate 5.24.0 by the interop test)


def test_parallel_root_completion_lists_regions_in_reverse_document_order() -> None:
    region = {"initial": "a", "states": {"a": {"on": {"E": "f"}}, "f": {"type": "final"}}}
    chart = Statechart(
        {"id": "m", "type": "parallel", "states": {"r1": region, "r2": region}, "output": {"ok": 1}}
    )
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert step.snapshot["status"] == "done"
    assert list(step.snapshot["value"]) == ["r2", "r1"]
    assert step.snapshot["output"] == {"ok": 1}


def test_targeting_the_root_without_reenter_reruns_root_entry_but_not_its_exit() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            **entry_exit("m"),
            "initial": "a",
            "states": {"a": {**entry_exit("a"), "on": {"R": "#m", "S": {"target": "#m", "reenter": True}}}},
        }
    )
    start = chart.start()
    once = chart.send(start.snapshot, {"type": "R"})
    assert new_entries(start, once) == ["a-@R", "m+@R", "a+@R"]
    twice = chart.send(once.snapshot, {"type": "S"})
    assert new_entries(once, twice) == ["a-@S", "m-@S", "m+@S", "a+@S"]


def test_array_index_state_keys_are_selected_first_in_parallel_regions() -> None:
    chart = Statechart(
        {
            "id": "m",
            "context": LOG_CONTEXT,
            "type": "parallel",
            "states": {
                "b": {"on": {"E": {"target": "#m.x", "actions": rec("b")}}},
                "10": {"on": {"E": {"target": "#m.x", "actions": rec("10")}}},
                "x": {},
            },
        }
    )
    step = chart.send(chart.start().snapshot, {"type": "E"})
    assert log_of(step) == ["10@E"]  # both conflict; '10' is selected first as in Object.keys order


def test_constant_emit_payloads_are_copied_per_emission() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"on": {"E": {"actions": emit({"type": "x", "data": {"n": 1}})}}}},
        }
    )
    snapshot = chart.start().snapshot
    first = chart.send(snapshot, {"type": "E"}).emitted
    first[0]["data"]["n"] = 99
    assert chart.send(snapshot, {"type": "E"}).emitted == [{"type": "x", "data": {"n": 1}}]


def test_escaped_dots_in_target_ids_are_honoured() -> None:
    chart = Statechart(
        {
            "id": "m",
            "initial": "a",
            "states": {"a": {"on": {"E": "#my\\.id"}}, "b": {"id": "my.id"}},
        }
    )
    assert chart.send(chart.start().snapshot, {"type": "E"}).snapshot["value"] == "b"


def test_action_args_repr_and_two_argument_varargs_callables() -> None:
    seen: list[Any] = []

    def variadic(*args: Any) -> None:
        seen.append(args[1])

    chart = Statechart(
        {"id": "m", "initial": "a", "states": {"a": {"entry": {"type": "v", "params": {"p": 1}}}}},
        actions={"v": variadic},
    )
    chart.start()
    assert seen == [{"p": 1}]
    assert (
        repr(ActionArgs(context={}, event={"type": "x"}))
        == "ActionArgs(context={}, event={'type': 'x'}, input=None)"
    )
