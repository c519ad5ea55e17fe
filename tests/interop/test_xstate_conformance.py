"""Differential conformance: our statechart interpreter vs the real XState 5.24.0, step by step.

Random machines inside the Arvo subset (nested compound and parallel states, parallel states without
regions, final states, ``onDone``, eventless transitions, exact/``*``/``prefix.*`` descriptors, guards and
``and``/``or``/``not``, multiple targets, ``reenter``, custom ids, root/final ``output``) are generated
from a fixed seed, described as JSON and run by both engines on the same random event sequences. The Node side
(``tests/interop/xstate/oracle.mjs``) builds them with ``setup({actions, guards}).createMachine`` and, like
Arvo's execution engine, persists the actor with ``getPersistedSnapshot()`` and restores it with
``createActor(machine, {snapshot})`` between steps; we JSON round-trip our snapshot between steps too.

After every step the state value (including the key order of parallel regions), context, status,
output, emitted events, the order of custom-action calls and the pending timers (delayed event type and
due time, in firing order) must be identical. Every entry, exit and transition action ``record``s
``label@event.type`` into ``context.log``, so ordering bugs show up.

*Timed* cases add delayed transitions (``after`` with numeric delays, including 0 and equal ones, and
named delays, constant or computed from the context or the event; guarded, several per delay, with
targets, actions and ``reenter``; on compound parents, parallel regions and leaves), ``stateIn`` guards
(by id, path and partial value, alone and inside ``and``/``or``/``not``) and ``{"$advance": ms}`` steps.
Both engines share one virtual time: XState runs on a ``SimulatedClock`` (after ``increment(ms)`` it is
incremented by 0 until nothing is due, since ``increment`` alone can leave a timer armed by a firing timer
unfired); we pass the same time as ``now_ms`` and advance with ``Statechart.advance``. XState drops
pending timers when a snapshot is restored, so between the steps of a timed case the oracle re-arms the
timers of the previous actor (same due times, same order) on the restored one; the hand-written case of a
root re-entered without exit (two timers under one type) keeps one live actor instead.

Case count: 300 random cases and 300 random timed cases (plus hand-written ones pinning rare XState
quirks) by default, all in one ``node`` process; set ``XSTATE_CASES=N`` / ``XSTATE_TIMED_CASES=N`` for
more and ``XSTATE_SEED=S`` for another family of machines, e.g. ``XSTATE_CASES=5000 .venv/bin/pytest
tests/interop/test_xstate_conformance.py``. Needs ``node`` and ``npm`` (skipped otherwise); runs
``npm ci`` in ``tests/interop/xstate`` when ``node_modules`` is missing or stale.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.arvo.machine.statechart import (
    ActionArgs,
    MachineStep,
    Statechart,
    and_,
    assign,
    emit,
    not_,
    or_,
    state_in,
)
from tests.interop._node import NODE_MISSING_REASON, ensure_npm_ci, node_available, run_node_json

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not node_available(), reason=NODE_MISSING_REASON),
]

XSTATE_DIR = Path(__file__).parent / "xstate"
DEFAULT_CASES = 300
DEFAULT_TIMED_CASES = 300
DEFAULT_SEED = 20240524
TIMED_SEED_SALT = 0x7153
VOCABULARY_LIMIT = 20000  # vocabulary calls per step before both sides raise "LOOP"
MAX_FIRINGS = 100  # timers fired in one advance before both sides fail the step

EVENTS = ["A", "B", "C", "a", "a.x", "a.y", "b.z"]
DESCRIPTORS = [*EVENTS, "*", "a.*", "b.*"]
COUNTERS = ["c", "d"]
FLAGS = ["f", "g"]
AUTO = "auto"
EMPTY_PARALLEL_RATE = 0.15  # share of generated parallel states that have no regions
DELAY_KEYS = ["0", "10", "20", "50", "100", "short", "fromCtx", "fromEvent"]  # short = 10 ms
ADVANCES = [0, 5, 10, 10, 15, 20, 50, 100]
AFTER_RATE = 0.35  # share of states with delayed transitions in timed cases


# ---------------------------------------------------------------------------------------------------
# The shared vocabulary, implemented exactly like oracle.mjs


class LoopBudgetExceededError(RuntimeError):
    pass


def _num(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def vocabulary(
    traces: list[str], tick: Callable[[], None], evaluations: dict[str, int]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    def inc(a: ActionArgs, p: Any) -> dict[str, Any]:
        tick()
        return {p["key"]: _num(a.context.get(p["key"])) + p["by"]}

    def reset(a: ActionArgs, p: Any) -> dict[str, Any]:
        tick()
        return {p["key"]: 0}

    def set_from_event(a: ActionArgs, p: Any) -> dict[str, Any]:
        tick()
        return {p["key"]: a.event.get("value")}

    def set_from_event_output(a: ActionArgs, p: Any) -> dict[str, Any]:
        tick()
        return {p["key"]: a.event.get("output")}

    def toggle(a: ActionArgs, p: Any) -> dict[str, Any]:
        tick()
        return {p["key"]: not a.context.get(p["key"])}

    def record(a: ActionArgs, p: Any) -> dict[str, Any]:
        tick()
        return {"log": [*a.context["log"], f"{p['label']}@{a.event['type']}"]}

    def emit_event(a: ActionArgs, p: Any) -> dict[str, Any]:
        tick()
        return {
            "type": p["type"],
            "payload": a.context.get(p["key"]),
            "n": len(a.context["log"]),
            "via": a.event["type"],
        }

    def trace(a: ActionArgs, p: Any) -> None:
        tick()
        traces.append(f"{p['label']}@{a.event['type']}#{len(a.context['log'])}")

    def ctx_gte(a: ActionArgs, p: Any) -> bool:
        tick()
        return bool(_num(a.context.get(p["key"])) >= p["n"])

    def ctx_lt(a: ActionArgs, p: Any) -> bool:
        tick()
        return bool(_num(a.context.get(p["key"])) < p["n"])

    def ctx_flag(a: ActionArgs, p: Any) -> bool:
        tick()
        return a.context.get(p["key"]) is True

    def event_value_even(a: ActionArgs) -> bool:
        tick()
        value = a.event.get("value")
        return isinstance(value, int) and not isinstance(value, bool) and value % 2 == 0

    def event_is(a: ActionArgs, p: Any) -> bool:
        tick()
        return bool(a.event["type"] == p["type"])

    def under(a: ActionArgs, p: Any) -> bool:
        # Passes the first n times it is evaluated in a step: breaks internal-event loops, and makes the
        # number and order of guard evaluations observable.
        tick()
        evaluations["under"] = evaluations.get("under", 0) + 1
        return bool(evaluations["under"] <= p["n"])

    actions = {
        "inc": assign(inc),
        "reset": assign(reset),
        "setFromEvent": assign(set_from_event),
        "setFromEventOutput": assign(set_from_event_output),
        "toggle": assign(toggle),
        "record": assign(record),
        "emitEvent": emit(emit_event),
        "trace": trace,
    }
    guards = {
        "ctxGte": ctx_gte,
        "ctxLt": ctx_lt,
        "ctxFlag": ctx_flag,
        "eventValueEven": event_value_even,
        "eventIs": event_is,
        "under": under,
    }

    def from_ctx(a: ActionArgs) -> int:
        tick()
        return _num(a.context.get("c")) % 3 * 10

    def from_event(a: ActionArgs) -> int:
        tick()
        value = a.event.get("value")
        return value * 5 if isinstance(value, int) and not isinstance(value, bool) else 15

    delays = {"short": 10, "fromCtx": from_ctx, "fromEvent": from_event}
    return actions, guards, delays


def _convert_params(params: Any) -> Any:
    if isinstance(params, Mapping) and params.get("$params") == "fromContext":
        key, src = params["key"], params["src"]
        return lambda a: {"key": key, "by": _num(a.context.get(src)) % 3 + 1}
    return params


def _convert_action(action: Any) -> Any:
    if isinstance(action, Mapping) and "params" in action:
        return {"type": action["type"], "params": _convert_params(action["params"])}
    return action


def _convert_guard(guard: Any) -> Any:
    if isinstance(guard, Mapping):
        if "$and" in guard:
            return and_([_convert_guard(g) for g in guard["$and"]])
        if "$or" in guard:
            return or_([_convert_guard(g) for g in guard["$or"]])
        if "$not" in guard:
            return not_(_convert_guard(guard["$not"]))
        if "$in" in guard:
            return state_in(guard["$in"])
    return guard


def _convert_output(marker: Mapping[str, Any]) -> Callable[[ActionArgs], Any]:
    if marker["$output"] == "root":
        return lambda a: {
            "n": len(a.context["log"]),
            "ev": a.event["type"],
            "out": a.event.get("output"),
            "c": a.context.get("c"),
        }
    key = marker["key"]
    return lambda a: {"k": a.context.get(key)}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _convert_transitions(spec: Any) -> Any:
    def one(t: Any) -> Any:
        if not isinstance(t, Mapping):
            return t
        out = dict(t)
        if "guard" in t:
            out["guard"] = _convert_guard(t["guard"])
        if "actions" in t:
            out["actions"] = [_convert_action(a) for a in _as_list(t["actions"])]
        return out

    return [one(t) for t in spec] if isinstance(spec, list) else one(spec)


def convert_state(state: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(state)
    for key in ("entry", "exit"):
        if key in state:
            out[key] = [_convert_action(a) for a in _as_list(state[key])]
    if "on" in state:
        out["on"] = {k: _convert_transitions(v) for k, v in state["on"].items()}
    for key in ("always", "onDone"):
        if key in state:
            out[key] = _convert_transitions(state[key])
    if "after" in state:
        out["after"] = {k: _convert_transitions(v) for k, v in state["after"].items()}
    if "output" in state:
        out["output"] = _convert_output(state["output"])
    if "states" in state:
        out["states"] = {k: convert_state(v) for k, v in state["states"].items()}
    return out


def run_python_case(case: Mapping[str, Any]) -> dict[str, Any]:
    traces: list[str] = []
    budget = [0]
    evaluations: dict[str, int] = {}

    def tick() -> None:
        budget[0] += 1
        if budget[0] > VOCABULARY_LIMIT:
            raise LoopBudgetExceededError("LOOP")

    actions, guards, delays = vocabulary(traces, tick, evaluations)
    config = convert_state(case["machine"])
    if case["contextMode"] == "object":
        config["context"] = orjson.loads(orjson.dumps(case["input"]))
    else:
        config["context"] = lambda a: dict(a.input)
    try:
        chart = Statechart(config, actions=actions, guards=guards, delays=delays)
    except Exception as exc:  # reported as a divergence, with the message
        return {"fatal": f"{type(exc).__name__}: {exc}"}
    steps: list[dict[str, Any]] = []

    def step(run: Callable[[], MachineStep]) -> dict[str, Any] | None:
        traces.clear()
        evaluations.clear()
        budget[0] = 0
        try:
            result = run()
        except Exception as exc:
            steps.append({"error": f"{type(exc).__name__}: {exc}"})
            return None
        # The snapshot goes through JSON between steps (pending timers included), as when persisted.
        persisted: dict[str, Any] = orjson.loads(orjson.dumps(result.snapshot))
        steps.append(
            {
                **{k: persisted[k] for k in ("status", "value", "context", "output")},
                "emitted": orjson.loads(orjson.dumps(result.emitted)),
                "traces": list(traces),
                "timers": [[timer.event, timer.due_ms] for timer in result.timers],
            }
        )
        return persisted

    now = 0
    current = step(lambda: chart.start(case["input"], now_ms=now))
    for event in case["events"]:
        if current is None:
            break
        previous: dict[str, Any] = current
        if "$advance" in event:
            now += event["$advance"]
            current = step(partial(chart.advance, previous, now_ms=now, max_firings=MAX_FIRINGS))
        else:
            current = step(partial(chart.send, previous, event, now_ms=now))
    return {"steps": steps}


# ---------------------------------------------------------------------------------------------------
# Random machines inside the subset


@dataclass(eq=False)
class GenNode:
    key: str
    type: str
    parent: GenNode | None
    custom_id: str | None = None
    children: list[GenNode] = field(default_factory=list)
    initial: str | None = None

    @property
    def ancestors(self) -> list[GenNode]:
        result: list[GenNode] = []
        node = self.parent
        while node is not None:
            result.append(node)
            node = node.parent
        return result

    def path(self) -> list[str]:
        return [n.key for n in reversed([self, *self.ancestors])][1:]

    def state_id(self, machine_id: str) -> str:
        return self.custom_id or ".".join([machine_id, *self.path()])

    def descendants(self) -> list[GenNode]:
        result: list[GenNode] = []
        for child in self.children:
            result.append(child)
            result.extend(child.descendants())
        return result


class MachineGenerator:
    """Random machines; ``timed`` adds delayed transitions, ``stateIn`` guards and clock advances."""

    def __init__(self, rng: random.Random, *, timed: bool = False) -> None:
        self.rng = rng
        self.timed = timed
        self.machine_id = f"m{rng.randrange(1000)}"
        self.counter = 0
        self.nodes: list[GenNode] = []

    def fresh_key(self) -> str:
        self.counter += 1
        if self.rng.random() < 0.04:
            return str(self.rng.randrange(3))  # JS orders integer-like keys first
        return f"s{self.counter}"

    def build_tree(self) -> GenNode:
        root = GenNode(
            key=self.machine_id, type="parallel" if self.rng.random() < 0.2 else "compound", parent=None
        )
        self._fill(root, depth=0)
        return root

    def _fill(self, node: GenNode, depth: int) -> None:
        if node.type == "parallel":
            # A parallel state without regions (Arvo's inc v0.0.1 machine has one) is valid in XState.
            count = 0 if self.rng.random() < EMPTY_PARALLEL_RATE else self.rng.randint(2, 3)
        else:
            count = self.rng.randint(1, 4)
        keys: list[str] = []
        while len(keys) < count:
            key = self.fresh_key()
            if key not in keys:
                keys.append(key)
        for key in keys:
            roll = self.rng.random()
            if node.type == "parallel":
                child_type = (
                    "atomic" if roll < 0.1 else ("parallel" if roll < 0.2 and depth < 2 else "compound")
                )
            elif depth >= 3:
                child_type = "final" if roll < 0.2 else "atomic"
            else:
                child_type = (
                    "atomic"
                    if roll < 0.5
                    else "final"
                    if roll < 0.65
                    else "compound"
                    if roll < 0.88
                    else "parallel"
                )
            child = GenNode(key=key, type=child_type, parent=node)
            if self.rng.random() < 0.08:
                self.counter += 1
                child.custom_id = f"id{self.counter}x"
            node.children.append(child)
            if child_type in ("compound", "parallel"):
                self._fill(child, depth + 1)
        if node.type == "compound":
            weights = [0.25 if c.type == "final" else 1.0 for c in node.children]
            node.initial = self.rng.choices(node.children, weights=weights)[0].key

    # -- references ---------------------------------------------------------------------------------

    def target_ref(self, source: GenNode, target: GenNode) -> str:
        forms = [f"#{target.state_id(self.machine_id)}"]
        if source.parent is not None and target.parent is source.parent:
            forms.append(target.key)
        if target.parent is source:
            forms.append(f".{target.key}")
        parent = target.parent
        if (
            source.parent is not None
            and parent is not None
            and parent.parent is source.parent
            and not parent.custom_id
        ):
            forms.append(f"{parent.key}.{target.key}")
        return self.rng.choice(forms)

    def pick_targets(self, source: GenNode, nodes: list[GenNode], parallels: list[GenNode]) -> Any:
        roll = self.rng.random()
        if roll < 0.08 and parallels:
            parallel = self.rng.choice(parallels)
            regions = self.rng.sample(parallel.children, 2)
            picks = [self.rng.choice([r, *r.descendants()]) for r in regions]
            return [self.target_ref(source, t) for t in picks]
        candidates = [n for n in nodes if n.parent is not None]
        if self.rng.random() < 0.03 or not candidates:  # no candidates: a root parallel without regions
            return f"#{nodes[0].state_id(self.machine_id)}"  # the root itself
        if self.rng.random() < 0.5:
            near = [n for n in candidates if n.parent is source.parent or n.parent is source]
            candidates = near or candidates
        return self.target_ref(source, self.rng.choice(candidates))

    def action(self, *, allow_reset: bool = False) -> dict[str, Any]:
        roll = self.rng.random()
        if roll < 0.35:
            return {"type": "record", "params": {"label": f"t{self.rng.randrange(100)}"}}
        if roll < 0.5:
            return {"type": "inc", "params": {"key": self.rng.choice(COUNTERS), "by": self.rng.randint(1, 3)}}
        if roll < 0.55:
            return {"type": "inc", "params": {"$params": "fromContext", "key": "d", "src": "c"}}
        if roll < 0.63:
            return {"type": "setFromEvent", "params": {"key": self.rng.choice(COUNTERS)}}
        if roll < 0.7:
            return {"type": "toggle", "params": {"key": self.rng.choice(FLAGS)}}
        if roll < 0.8:
            return {
                "type": "emitEvent",
                "params": {"type": f"out.{self.rng.randrange(5)}", "key": self.rng.choice(COUNTERS)},
            }
        if roll < 0.9:
            return {"type": "trace", "params": {"label": f"x{self.rng.randrange(100)}"}}
        if roll < 0.95 and allow_reset:
            # Only event transitions may reset the eventless-loop counter (else 'always' could loop).
            return {"type": "reset", "params": {"key": AUTO}}
        return {"type": "setFromEventOutput", "params": {"key": "d"}}

    def actions(self, low: int = 0, high: int = 3, *, allow_reset: bool = False) -> list[dict[str, Any]]:
        return [self.action(allow_reset=allow_reset) for _ in range(self.rng.randint(low, high))]

    def state_in_guard(self) -> dict[str, Any]:
        node = self.rng.choice(self.nodes)
        roll = self.rng.random()
        if roll < 0.35 or node.parent is None:
            return {"$in": f"#{node.state_id(self.machine_id)}"}
        path = node.path()
        if roll < 0.7:
            return {"$in": ".".join(path)}
        # A partial state value: {"a": "b"} or {"a": {"b": {}}} (the latter does not match an atomic "b").
        value: Any = path[-1] if len(path) > 1 and self.rng.random() < 0.7 else {path[-1]: {}}
        for key in reversed(path[:-1]):
            value = {key: value}
        return {"$in": value}

    def simple_guard(self) -> Any:
        if self.timed and self.rng.random() < 0.15:
            return self.state_in_guard()
        roll = self.rng.random()
        if roll < 0.3:
            return {
                "type": "ctxGte",
                "params": {"key": self.rng.choice(COUNTERS), "n": self.rng.randint(1, 6)},
            }
        if roll < 0.5:
            return "eventValueEven"
        if roll < 0.65:
            return {"type": "ctxFlag", "params": {"key": self.rng.choice(FLAGS)}}
        if roll < 0.75:
            return {"type": "eventIs", "params": {"type": self.rng.choice(EVENTS)}}
        if roll < 0.85:
            return {"$not": self.simple_guard()}
        if roll < 0.93:
            return {"$or": [self.simple_guard(), self.simple_guard()]}
        return {"$and": [self.simple_guard(), self.simple_guard()]}

    def transition(
        self, source: GenNode, nodes: list[GenNode], parallels: list[GenNode], *, internal: bool = False
    ) -> Any:
        if self.rng.random() < 0.1 and not internal:
            bare = self.pick_targets(source, nodes, parallels)
            if isinstance(bare, str):
                return bare  # a bare target string (a list would mean several candidate transitions)
        t: dict[str, Any] = {}
        if self.rng.random() < 0.75:
            t["target"] = self.pick_targets(source, nodes, parallels)
        if self.rng.random() < 0.45:
            t["guard"] = self.simple_guard()
        if internal:
            # '*' and onDone transitions also see internal done events: bound the loops they can form.
            under = {"type": "under", "params": {"n": self.rng.randint(1, 4)}}
            t["guard"] = {"$and": [under, t["guard"]]} if "guard" in t else under
        acts = self.actions(0, 3, allow_reset=not internal)
        if acts:
            t["actions"] = acts if len(acts) > 1 or self.rng.random() < 0.5 else acts[0]
        if self.rng.random() < 0.12:
            t["reenter"] = True
        return t

    def transitions(
        self, source: GenNode, nodes: list[GenNode], parallels: list[GenNode], *, internal: bool = False
    ) -> Any:
        if self.rng.random() < 0.7:
            return self.transition(source, nodes, parallels, internal=internal)
        return [
            self.transition(source, nodes, parallels, internal=internal)
            for _ in range(self.rng.randint(1, 3))
        ]

    def always(self, source: GenNode, nodes: list[GenNode], parallels: list[GenNode]) -> Any:
        result: list[dict[str, Any]] = []
        for _ in range(self.rng.randint(1, 2)):
            if self.rng.random() < 0.2:
                # Targetless, no assign: the snapshot does not change, so XState does not re-select it.
                quiet: dict[str, Any] = {
                    "actions": [
                        self.rng.choice(
                            [
                                {"type": "trace", "params": {"label": f"q{self.rng.randrange(100)}"}},
                                {"type": "emitEvent", "params": {"type": "out.q", "key": "c"}},
                            ]
                        )
                    ]
                }
                if self.rng.random() < 0.5:
                    quiet["guard"] = self.simple_guard()
                result.append(quiet)
                continue
            limit = {"type": "ctxLt", "params": {"key": AUTO, "n": self.rng.randint(1, 4)}}
            guard = limit if self.rng.random() < 0.5 else {"$and": [limit, self.simple_guard()]}
            t: dict[str, Any] = {
                "guard": guard,
                "actions": [{"type": "inc", "params": {"key": AUTO, "by": 1}}, *self.actions(0, 2)],
            }
            if self.rng.random() < 0.6:
                t["target"] = self.pick_targets(source, nodes, parallels)
            result.append(t)
        return result if len(result) > 1 or self.rng.random() < 0.5 else result[0]

    def after(self, node: GenNode, nodes: list[GenNode], parallels: list[GenNode]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key in self.rng.sample(DELAY_KEYS, self.rng.randint(1, 3)):
            transitions: list[dict[str, Any]] = []
            for _ in range(self.rng.choice([1, 1, 1, 2])):
                # Every firing records (a timer loop runs into the vocabulary budget like other loops).
                t: dict[str, Any] = {"actions": [_rec(f"@{key}"), *self.actions(0, 1)]}
                if self.rng.random() < 0.75:
                    t["target"] = self.pick_targets(node, nodes, parallels)
                if self.rng.random() < 0.35:
                    t["guard"] = self.simple_guard()
                if self.rng.random() < 0.12:
                    t["reenter"] = True
                transitions.append(t)
            result[key] = transitions if len(transitions) > 1 or self.rng.random() < 0.3 else transitions[0]
        return result

    def render(self, node: GenNode, nodes: list[GenNode], parallels: list[GenNode]) -> dict[str, Any]:
        config: dict[str, Any] = {}
        # Not on the root: re-entering it without exit arms a second timer under the same type, which
        # cannot be carried across a restore (a hand-written live case covers it).
        delayed = self.timed and node.parent is not None and self.rng.random() < AFTER_RATE
        if node.parent is None:
            config["id"] = self.machine_id
        elif node.custom_id:
            config["id"] = node.custom_id
        if node.type in ("parallel", "final"):
            config["type"] = node.type
        elif node.type == "compound" and self.rng.random() < 0.1:
            config["type"] = "compound"
        if node.initial is not None:
            config["initial"] = node.initial
        if self.rng.random() < 0.8:
            config["entry"] = [
                {"type": "record", "params": {"label": f"{node.key}+"}},
                *self.actions(0, 1),
            ]
            if len(config["entry"]) == 1 and self.rng.random() < 0.3:
                config["entry"] = config["entry"][0]
        elif delayed:
            config["entry"] = [_rec(f"{node.key}+")]  # every arming records too
        if self.rng.random() < 0.7:
            config["exit"] = [{"type": "record", "params": {"label": f"{node.key}-"}}, *self.actions(0, 1)]
        on: dict[str, Any] = {}
        descriptors = [*DESCRIPTORS, "xstate.after.*"] if self.timed else DESCRIPTORS
        for _ in range(self.rng.randint(0, 3)):
            descriptor = self.rng.choice(descriptors)
            on[descriptor] = self.transitions(node, nodes, parallels, internal=descriptor == "*")
        if on:
            config["on"] = on
        if self.rng.random() < 0.15:
            config["always"] = self.always(node, nodes, parallels)
        if delayed:
            config["after"] = self.after(node, nodes, parallels)
        if node.type in ("compound", "parallel") and self.rng.random() < 0.45:
            done = self.transition(node, nodes, parallels, internal=True)
            if isinstance(done, dict) and self.rng.random() < 0.4:
                done.setdefault("actions", [])
                if not isinstance(done["actions"], list):
                    done["actions"] = [done["actions"]]
                done["actions"].append({"type": "setFromEventOutput", "params": {"key": "d"}})
            config["onDone"] = done
        if node.type == "final" and self.rng.random() < 0.4:
            config["output"] = {"$output": "final", "key": self.rng.choice(COUNTERS)}
        if node.parent is None and self.rng.random() < 0.7:
            config["output"] = {"$output": "root"}
        if node.children:
            config["states"] = {child.key: self.render(child, nodes, parallels) for child in node.children}
        elif node.type == "parallel" and self.rng.random() < 0.6:
            config["states"] = {}  # else no 'states' key at all: both are an empty parallel state
        return config

    def case(self) -> dict[str, Any]:
        root = self.build_tree()
        nodes = [root, *root.descendants()]
        parallels = [n for n in nodes if n.type == "parallel" and len(n.children) >= 2]
        self.nodes = nodes
        machine = self.render(root, nodes, parallels)
        events: list[dict[str, Any]] = []
        for _ in range(self.rng.randint(6, 14) if self.timed else self.rng.randint(4, 12)):
            if self.timed and self.rng.random() < 0.45:
                events.append({"$advance": self.rng.choice(ADVANCES)})
                continue
            event: dict[str, Any] = {"type": self.rng.choice([*EVENTS, "zzz"])}
            if self.rng.random() < 0.8:
                event["value"] = self.rng.randint(0, 5)
            events.append(event)
        initial = {"log": [], "c": self.rng.randint(0, 3), AUTO: 0, "f": self.rng.random() < 0.5}
        case = {
            "machine": machine,
            "input": initial,
            "contextMode": "object" if self.rng.random() < 0.3 else "fn",
            "events": events,
        }
        if self.timed:
            case["clock"] = "restore"  # on a SimulatedClock; timers carried across XState's restores
        return case


def _has_after(state: Mapping[str, Any]) -> bool:
    return "after" in state or any(_has_after(child) for child in (state.get("states") or {}).values())


def _rec(label: str) -> dict[str, Any]:
    return {"type": "record", "params": {"label": label}}


def _final_region() -> dict[str, Any]:
    return {
        "initial": "a",
        "entry": [_rec("r+")],
        "exit": [_rec("r-")],
        "states": {
            "a": {"on": {"E": "f"}},
            "f": {"type": "final", "entry": [_rec("f+")], "exit": [_rec("f-")]},
        },
    }


# Hand-written cases pinning XState quirks that random machines reach only rarely.
SPECIAL_CASES: list[dict[str, Any]] = [
    {
        # A parallel root completing: exit actions of every state run after the output, and the final
        # state value lists the regions in reverse document order.
        "machine": {
            "id": "m",
            "type": "parallel",
            "entry": [_rec("m+")],
            "exit": [_rec("m-")],
            "states": {"r1": _final_region(), "r2": _final_region(), "r3": _final_region()},
            "output": {"$output": "root"},
        },
        "input": {"log": []},
        "contextMode": "fn",
        "events": [{"type": "E"}, {"type": "E"}],
    },
    {
        # Targeting the root: without reenter the root's entry runs again but not its exit.
        "machine": {
            "id": "m",
            "initial": "a",
            "entry": [_rec("m+")],
            "exit": [_rec("m-")],
            "states": {
                "a": {
                    "entry": [_rec("a+")],
                    "exit": [_rec("a-")],
                    "on": {"R": "#m", "S": {"target": "#m", "reenter": True}},
                }
            },
        },
        "input": {"log": []},
        "contextMode": "fn",
        "events": [{"type": "R"}, {"type": "S"}],
    },
    {
        # Array-index state keys: JS enumerates them first, in the value and in transition selection.
        "machine": {
            "id": "m",
            "type": "parallel",
            "states": {
                "b": {"on": {"E": {"target": "#m.x", "actions": [_rec("b")]}}},
                "10": {"on": {"E": {"target": "#m.y", "actions": [_rec("10")]}}},
                "2": {},
                "x": {},
                "y": {},
            },
        },
        "input": {"log": []},
        "contextMode": "object",
        "events": [{"type": "E"}],
    },
    {
        # Arvo's inc v0.0.1 shape: a parallel state without regions. Its value is {}, its own 'on'
        # transitions fire (targetless, reenter, out), its onDone never does, and neither its 'always' nor
        # an ancestor's is selected (there is no active atomic state).
        "machine": {
            "id": "m",
            "initial": "fetch",
            "always": {"actions": [_rec("root-always")]},
            "states": {
                "fetch": {"exit": [_rec("fetch-")], "on": {"GO": "increment"}},
                "increment": {
                    "type": "parallel",
                    "states": {},
                    "entry": [_rec("inc+")],
                    "exit": [_rec("inc-")],
                    "always": {"target": "done", "actions": [_rec("inc-always")]},
                    "onDone": {"target": "done", "actions": [_rec("inc-done")]},
                    "on": {
                        "SELF": {"actions": [_rec("self")]},
                        "RE": {"target": "increment", "reenter": True, "actions": [_rec("re")]},
                        "a.*": {"actions": [_rec("partial")]},
                        "OK": {"target": "done", "actions": [_rec("ok")]},
                    },
                },
                "done": {"type": "final", "entry": [_rec("done+")]},
            },
            "output": {"$output": "root"},
        },
        "input": {"log": []},
        "contextMode": "fn",
        "events": [
            {"type": "GO"},
            {"type": "SELF"},
            {"type": "RE"},
            {"type": "zzz"},
            {"type": "a.x"},
            {"type": "OK"},
        ],
    },
    {
        # A machine whose root is a parallel state without regions (and without a 'states' key).
        "machine": {
            "id": "m",
            "type": "parallel",
            "entry": [_rec("m+")],
            "exit": [_rec("m-")],
            "always": {"actions": [_rec("never")]},
            "on": {
                "X": {"actions": [_rec("x")]},
                "Y": {"target": "#m", "reenter": True, "actions": [_rec("y")]},
                "Z": {"target": "#m", "actions": [_rec("z")]},
            },
            "output": {"$output": "root"},
        },
        "input": {"log": []},
        "contextMode": "fn",
        "events": [{"type": "X"}, {"type": "Y"}, {"type": "Z"}],
    },
    {
        # A region without regions counts as final when a sibling region completes: the outer parallel
        # state is done, the empty one never raises its own done event.
        "machine": {
            "id": "m",
            "initial": "outer",
            "states": {
                "outer": {
                    "type": "parallel",
                    "onDone": {"target": "after", "actions": [_rec("outer-done")]},
                    "states": {
                        "e": {"type": "parallel", "states": {}, "onDone": {"actions": [_rec("e-done")]}},
                        "r": {
                            "initial": "a",
                            "onDone": {"actions": [_rec("r-done")]},
                            "states": {"a": {"on": {"F": "f", "E": "#m.outer.e"}}, "f": {"type": "final"}},
                        },
                    },
                },
                "after": {"entry": [_rec("after+")], "on": {"BACK": "outer.e"}},
            },
        },
        "input": {"log": []},
        "contextMode": "fn",
        "events": [{"type": "E"}, {"type": "F"}, {"type": "BACK"}, {"type": "F"}],
    },
    {
        # A parallel root whose regions are a final state and a parallel state without regions is done
        # as soon as it starts.
        "machine": {
            "id": "m",
            "type": "parallel",
            "states": {"e": {"type": "parallel", "exit": [_rec("e-")]}, "f": {"type": "final"}},
            "output": {"$output": "root"},
        },
        "input": {"log": []},
        "contextMode": "fn",
        "events": [{"type": "X"}],
    },
]


def _timed(
    machine: dict[str, Any], events: list[dict[str, Any]], *, clock: str = "restore"
) -> dict[str, Any]:
    return {"machine": machine, "input": {"log": []}, "contextMode": "fn", "events": events, "clock": clock}


def _adv(ms: int) -> dict[str, Any]:
    return {"$advance": ms}


# Hand-written cases pinning the rules of delayed transitions and stateIn.
TIMED_SPECIAL_CASES: list[dict[str, Any]] = [
    # A state entered and left within one macrostep leaves no timer; leaving before the delay cancels it;
    # re-entering (reenter) re-arms from the new time.
    _timed(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {
                    "entry": [_rec("a+")],
                    "after": {"10": {"target": "b", "actions": [_rec("a10")]}},
                    "always": {"target": "b", "guard": {"type": "ctxFlag", "params": {"key": "f"}}},
                    "on": {"GO": "b", "F": {"actions": [{"type": "toggle", "params": {"key": "f"}}]}},
                },
                "b": {
                    "entry": [_rec("b+")],
                    "exit": [_rec("b-")],
                    "after": {"100": {"target": "a", "actions": [_rec("b100")]}},
                    "on": {"RE": {"target": "b", "reenter": True}, "BACK": "a"},
                },
            },
        },
        [_adv(5), {"type": "F"}, _adv(50), {"type": "RE"}, _adv(60), {"type": "RE"}, _adv(100), _adv(5)],
    ),
    # Equal due times: parents before children, regions in document order, numeric delays ascending then
    # named ones in document order ("short" is 10 ms too); each firing is one macrostep.
    _timed(
        {
            "id": "m",
            "type": "parallel",
            "after": {"short": {"actions": [_rec("root-short")]}, "10": {"actions": [_rec("root-10")]}},
            "states": {
                "r1": {
                    "initial": "x",
                    "after": {"fromEvent": {"actions": [_rec("r1-ev")]}, "0": {"actions": [_rec("r1-0")]}},
                    "states": {"x": {"after": {"10": {"target": "y", "actions": [_rec("x-10")]}}}, "y": {}},
                },
                "r2": {
                    "initial": "p",
                    "states": {
                        "p": {"after": {"short": {"target": "q", "actions": [_rec("p-short")]}}},
                        "q": {"type": "final"},
                    },
                },
            },
        },
        [_adv(10), _adv(5), _adv(100)],
    ),
    # A zero delay armed by a firing timer fires in the same advance (after the timers already due).
    _timed(
        {
            "id": "m",
            "initial": "a",
            "states": {
                "a": {"after": {"20": {"target": "b", "actions": [_rec("a20")]}}},
                "b": {"entry": [_rec("b+")], "after": {"0": {"target": "c", "actions": [_rec("b0")]}}},
                "c": {"entry": [_rec("c+")], "after": {"0": {"target": "d", "actions": [_rec("c0")]}}},
                "d": {"type": "final", "entry": [_rec("d+")]},
            },
            "output": {"$output": "root"},
        },
        [_adv(100)],
    ),
    # Reaching the top-level final state cancels every timer; a zero-delay self-loop never settles.
    _timed(
        {
            "id": "m",
            "initial": "run",
            "states": {
                "run": {
                    "type": "parallel",
                    "states": {
                        "r1": {"after": {"50": {"actions": [_rec("r1")]}}},
                        "r2": {"after": {"60": {"actions": [_rec("r2")]}}},
                    },
                    "after": {"70": {"actions": [_rec("run")]}},
                    "on": {"END": "end", "SPIN": "spin"},
                },
                "spin": {"after": {"0": {"target": "spin", "reenter": True, "actions": [_rec("spin")]}}},
                "end": {"type": "final"},
            },
        },
        [_adv(10), {"type": "END"}, _adv(100)],
    ),
    _timed(
        {
            "id": "m",
            "initial": "spin",
            "states": {
                "spin": {"after": {"0": {"target": "spin", "reenter": True, "actions": [_rec("spin")]}}},
            },
        },
        [_adv(0)],
    ),
    # The root targeted from a child without reenter re-runs its entry, not its exit: XState arms a second
    # timer and the first can no longer be cancelled (both fire); with reenter, exit cancels and re-arms.
    {
        **_timed(
            {
                "id": "m",
                "initial": "a",
                "entry": [_rec("m+")],
                "exit": [_rec("m-")],
                "after": {
                    "fromCtx": {"actions": [_rec("m-t"), {"type": "inc", "params": {"key": "c", "by": 1}}]}
                },
                "states": {"a": {"on": {"R": "#m", "S": {"target": "#m", "reenter": True}}}},
            },
            [
                {"type": "R"},
                _adv(5),
                {"type": "R"},
                _adv(10),
                {"type": "S"},
                _adv(30),
                {"type": "R"},
                {"type": "S"},
                _adv(30),
            ],
            clock="live",
        ),
        "input": {"log": [], "c": 1},
    },
    # A delayed event is an event: a deeper '*' (or 'xstate.after.*') transition takes it first.
    _timed(
        {
            "id": "m",
            "initial": "p",
            "states": {
                "p": {
                    "initial": "c",
                    "after": {"10": {"target": "done", "actions": [_rec("p10")]}},
                    "states": {
                        "c": {
                            "on": {
                                "*": {"actions": [_rec("c*")], "guard": {"type": "under", "params": {"n": 1}}}
                            }
                        },
                    },
                },
                "done": {"on": {"xstate.after.*": {"actions": [_rec("never")]}}},
            },
        },
        [_adv(10), _adv(10)],
    ),
    # stateIn: alone, by id, by path, by partial value, inside and/or/not, on after/on/always guards.
    _timed(
        {
            "id": "m",
            "type": "parallel",
            "states": {
                "r1": {
                    "initial": "a",
                    "states": {
                        "a": {"on": {"GO": "b"}},
                        "b": {"initial": "b1", "states": {"b1": {"on": {"NEXT": "b2"}}, "b2": {}}},
                    },
                },
                "r2": {
                    "initial": "x",
                    "states": {
                        "x": {
                            "on": {
                                "E": [
                                    {"target": "y", "guard": {"$in": "r1.b.b2"}, "actions": [_rec("path")]},
                                    {"guard": {"$in": "#m.r1.b"}, "actions": [_rec("id")]},
                                    {"guard": {"$not": {"$in": {"r1": "a"}}}, "actions": [_rec("not-a")]},
                                    {"actions": [_rec("else")]},
                                ]
                            },
                            "after": {
                                "10": [
                                    {"guard": {"$and": [{"$in": "r1"}, {"$in": {"r1": "b"}}]}, "target": "y"},
                                    {"guard": {"$in": {"r1": {"b": {}}}}, "actions": [_rec("never")]},
                                    {"actions": [_rec("x10")]},
                                ]
                            },
                        },
                        "y": {
                            "entry": [_rec("y+")],
                            "always": {
                                "target": "x",
                                "guard": {"$or": [{"$in": {"r1": {"b": "b1"}}}, {"$in": "r1.a"}]},
                            },
                        },
                    },
                },
            },
        },
        [
            {"type": "E"},
            {"type": "GO"},
            _adv(10),
            {"type": "E"},
            _adv(10),
            {"type": "NEXT"},
            {"type": "E"},
            _adv(10),
        ],
    ),
]


def generate_cases(count: int, seed: int, timed_count: int = 0) -> list[dict[str, Any]]:
    """The hand-written cases, ``count`` random machines, then ``timed_count`` random timed machines."""
    rng = random.Random(seed)
    timed_rng = random.Random(seed ^ TIMED_SEED_SALT)
    return [
        *SPECIAL_CASES,
        *TIMED_SPECIAL_CASES,
        *(MachineGenerator(random.Random(rng.getrandbits(64))).case() for _ in range(count)),
        *(
            MachineGenerator(random.Random(timed_rng.getrandbits(64)), timed=True).case()
            for _ in range(timed_count)
        ),
    ]


# ---------------------------------------------------------------------------------------------------
# The comparison


def _same_step(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> bool:
    if "error" in ours or "error" in theirs:
        return "error" in ours and "error" in theirs  # both hit the loop budget / loop guard
    return (
        ours["status"] == theirs["status"]
        and orjson.dumps(ours["value"]) == orjson.dumps(theirs["value"])  # key order matters too
        and ours["context"] == theirs["context"]
        and ours["output"] == theirs["output"]
        and ours["emitted"] == theirs["emitted"]
        and ours["traces"] == theirs["traces"]
        and ours["timers"] == theirs["timers"]
    )


def _divergence_report(case: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    def dump(value: Any) -> str:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()

    our_steps, their_steps = ours.get("steps", []), theirs.get("steps", [])
    first = next(
        (i for i, (a, b) in enumerate(zip(our_steps, their_steps, strict=False)) if not _same_step(a, b)),
        min(len(our_steps), len(their_steps)),
    )
    return "\n".join(
        [
            f"first divergent step: {first} (0 = start, n = after events[n-1])",
            f"machine:\n{dump(case['machine'])}",
            f"input: {dump(case['input'])} contextMode={case['contextMode']}",
            f"events: {dump(case['events'])}",
            f"ours:\n{dump(ours)}",
            f"xstate:\n{dump(theirs)}",
        ]
    )


def test_interpreter_matches_xstate_step_by_step_on_random_machines() -> None:
    count = int(os.environ.get("XSTATE_CASES", DEFAULT_CASES))
    timed_count = int(os.environ.get("XSTATE_TIMED_CASES", DEFAULT_TIMED_CASES))
    seed = int(os.environ.get("XSTATE_SEED", DEFAULT_SEED))
    cases = generate_cases(count, seed, timed_count)
    ensure_npm_ci(XSTATE_DIR)
    oracle = run_node_json(
        XSTATE_DIR,
        "oracle.mjs",
        payload={"limit": VOCABULARY_LIMIT, "maxFirings": MAX_FIRINGS, "cases": cases},
        timeout=600,
    )
    assert oracle["version"] == "5.24.0"
    divergences: list[str] = []
    steps = 0
    for index, (case, theirs) in enumerate(zip(cases, oracle["results"], strict=True)):
        ours = run_python_case(case)
        steps += len(ours.get("steps", []))
        same = (
            "fatal" not in ours
            and "fatal" not in theirs
            and len(ours["steps"]) == len(theirs["steps"])
            and all(_same_step(a, b) for a, b in zip(ours["steps"], theirs["steps"], strict=True))
        )
        if not same:
            divergences.append(f"case {index}:\n{_divergence_report(case, ours, theirs)}")
    total = len(cases)
    timed = sum(1 for case in cases if case.get("clock"))
    print(
        f"xstate conformance: {total} cases ({timed} with delayed transitions), {steps} steps, seed {seed}, "
        f"{len(divergences)} divergences"
    )
    assert not divergences, f"{len(divergences)} of {total} cases diverge; first:\n{divergences[0]}"


def test_generated_cases_exercise_the_interesting_features() -> None:
    """Guard against a generator that silently stops covering the features the test is about."""
    text = orjson.dumps(generate_cases(DEFAULT_CASES, DEFAULT_SEED)).decode()
    for feature in ('"parallel"', '"final"', '"onDone"', '"always"', '"*"', '"a.*"', '"reenter"', '"$and"'):
        assert feature in text, feature
    assert '"target":["' in text  # multiple targets


def test_generated_timed_cases_exercise_delays_and_state_in() -> None:
    timed = generate_cases(0, DEFAULT_SEED, DEFAULT_TIMED_CASES)[
        len(SPECIAL_CASES) + len(TIMED_SPECIAL_CASES) :
    ]
    assert len(timed) == DEFAULT_TIMED_CASES
    assert all(case["clock"] == "restore" for case in timed)
    text = orjson.dumps(timed).decode()
    for key in DELAY_KEYS:
        assert f'"{key}":' in text, key
    for feature in ('"$in":"#', '"$in":{', '"$not":{"$in"', '"xstate.after.*"', '"$advance":0'):
        assert feature in text, feature
    delayed = [s for case in timed for s in _states(case["machine"]) if "after" in s]
    assert any(s.get("type") == "parallel" for s in delayed), "no parallel state with 'after'"
    assert any(s["$parentType"] == "parallel" for s in delayed), "no parallel region with 'after'"
    assert any("states" in s and s.get("type") != "parallel" for s in delayed), (
        "no compound state with 'after'"
    )
    assert any(isinstance(t, list) for s in delayed for t in s["after"].values()), "no delay with several"
    assert not any("after" in case["machine"] for case in timed), "root 'after' cannot be restored"


def _states(state: Mapping[str, Any], parent: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
    """Every state config, each with ``$parentType`` (the type of its parent) added."""
    found: list[Mapping[str, Any]] = [{**state, "$parentType": parent.get("type") if parent else None}]
    for child in (state.get("states") or {}).values():
        found.extend(_states(child, state))
    return found


def _empty_parallel_states(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = [state] if state.get("type") == "parallel" and not state.get("states") else []
    for child in (state.get("states") or {}).values():
        found.extend(_empty_parallel_states(child))
    return found


def test_generated_cases_include_parallel_states_without_regions() -> None:
    random_cases = generate_cases(DEFAULT_CASES, DEFAULT_SEED)[len(SPECIAL_CASES) :]
    empty = [s for case in random_cases for s in _empty_parallel_states(case["machine"])]
    roots = [
        case for case in random_cases if _empty_parallel_states(case["machine"])[:1] == [case["machine"]]
    ]
    assert roots, "no machine whose root is a parallel state without regions"
    assert any("states" in s for s in empty), "no empty parallel state with 'states': {}"
    assert any("states" not in s for s in empty), "no empty parallel state without a 'states' key"
    for feature in ("on", "onDone", "always"):
        assert any(feature in s for s in empty), f"no empty parallel state with {feature!r}"
        assert any(feature not in s for s in empty), f"every empty parallel state has {feature!r}"
