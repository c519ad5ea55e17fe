"""Config validation and compilation into a precomputed state-node tree (private to ``statechart``).

Everything that does not depend on the active configuration is computed here once: document order,
ancestor lists, resolved targets, transition domains, compiled guards and actions. The algorithms are
ports of XState v5.24.0 (``stateUtils``) restricted to the subset Arvo allows (no history, no actors).

Delayed transitions (``after``) are compiled like XState's ``getDelayedTransitions``: each delay of a
state becomes a transition on the event ``xstate.after.<delay>.<state id>`` (appended after the
state's ``on`` and ``onDone`` transitions), a delayed raise appended to the state's entry actions and
a cancel appended to its exit actions. The raise and the cancel only record timer operations in the
:class:`RunState`; the interpreter applies them after the macrostep, as XState's deferred scheduler
calls do.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Final, Protocol

from service.arvo.errors import ConfigViolation
from service.arvo.machine._actions import (
    ActionArgs,
    Assign,
    Emit,
    GuardCombinator,
    StateIn,
    call_with_params,
)

__all__ = [
    "ATOMIC",
    "COMPOUND",
    "FINAL",
    "PARALLEL",
    "ActiveStates",
    "CompiledAction",
    "CompiledGuard",
    "MachineModel",
    "Node",
    "RunState",
    "TimerOp",
    "Transition",
    "is_descendant",
    "js_number_str",
    "matches_state",
    "proper_ancestors",
]

ATOMIC: Final = "atomic"
COMPOUND: Final = "compound"
PARALLEL: Final = "parallel"
FINAL: Final = "final"

_STATE_KEYS: Final = frozenset(
    {"id", "type", "initial", "states", "on", "always", "after", "entry", "exit", "onDone", "output"}
    | {"description", "meta", "tags"}
)
_ROOT_ONLY_KEYS: Final = frozenset({"context", "version", "types", "schemas"})
_TRANSITION_KEYS: Final = frozenset({"target", "guard", "actions", "reenter", "description", "meta"})
_STATE_TYPES: Final = frozenset({ATOMIC, COMPOUND, PARALLEL, FINAL})
# Action types that would spawn, stop or message actors (XState built-ins); rejected unless user-defined.
_ACTOR_ACTIONS: Final = frozenset(
    {"spawn", "spawnChild", "stopChild", "stop", "sendTo", "sendParent", "forwardTo"}
    | {"xstate.spawnChild", "xstate.stopChild", "xstate.sendTo", "xstate.sendParent", "xstate.forwardTo"}
)
_IMMUTABLE_SCALARS: Final = (str, int, float, bool, type(None))
_MAX_ALIAS_DEPTH: Final = 32


TimerOp = tuple[str, float | None]
"""A recorded timer operation: ``(delayed event type, delay in ms)`` arms, ``(type, None)`` cancels."""


class RunState:
    """Mutable state of one ``start``/``send`` call, threaded through compiled actions."""

    __slots__ = ("assigned", "ctx", "emitted", "output", "queue", "status", "timer_ops")

    def __init__(self, ctx: dict[str, Any]) -> None:
        self.ctx = ctx
        self.emitted: list[dict[str, Any]] = []
        self.assigned = False
        self.status = "active"
        self.output: Any = None
        self.queue: list[dict[str, Any]] = []
        self.timer_ops: list[TimerOp] = []


class ActiveStates(Protocol):
    """What a guard sees of the active configuration (for :func:`~._actions.state_in`)."""

    value: str | dict[str, Any]
    node_set: frozenset[Node]


CompiledAction = Callable[[RunState, Mapping[str, Any]], None]
CompiledGuard = Callable[[Mapping[str, Any], Mapping[str, Any], ActiveStates], bool]


class Node:
    """A state node with everything the interpreter needs precomputed."""

    __slots__ = (
        "always",
        "always_chain",
        "ancestor_set",
        "ancestors",
        "array_index",
        "candidates",
        "children",
        "config",
        "done_type",
        "entry",
        "entry_labels",
        "exit",
        "exit_labels",
        "has_output",
        "id",
        "initial",
        "is_atomic",
        "key",
        "labels",
        "order",
        "output",
        "parent",
        "states",
        "transitions",
        "type",
    )

    def __init__(self, *, key: str, node_id: str, parent: Node | None, order: int, config: Mapping[str, Any]):
        self.key = key
        self.id = node_id
        self.parent = parent
        self.order = order
        self.config = config
        self.labels: tuple[str, ...] = (*parent.labels, key) if parent is not None else ()
        self.ancestors: tuple[Node, ...] = (parent, *parent.ancestors) if parent is not None else ()
        self.ancestor_set: frozenset[Node] = frozenset(self.ancestors)
        self.type: str = ATOMIC
        self.is_atomic = True
        self.states: dict[str, Node] = {}
        self.children: tuple[Node, ...] = ()
        self.initial: Node | None = None
        self.entry: tuple[CompiledAction, ...] = ()
        self.exit: tuple[CompiledAction, ...] = ()
        self.entry_labels: tuple[str, ...] = ()
        self.exit_labels: tuple[str, ...] = ()
        self.transitions: dict[str, tuple[Transition, ...]] = {}
        self.always: tuple[Transition, ...] = ()
        self.always_chain: tuple[Node, ...] = ()
        self.has_output = False
        self.output: Any = None
        self.done_type = f"xstate.done.state.{node_id}"
        self.array_index: int | None = _array_index(key)
        self.candidates: dict[str, tuple[Transition, ...]] = {}

    def __repr__(self) -> str:
        return f"<state #{self.id}>"

    def location(self) -> str:
        """Human path of the node for error messages (``parent > child``; ``(root)`` for the root)."""
        return " > ".join(self.labels) if self.labels else "(root)"


class Transition:
    """A compiled transition (event, eventless or ``onDone``)."""

    __slots__ = (
        "action_labels",
        "actions",
        "delay",
        "domain",
        "entry_sorted",
        "event_type",
        "guard",
        "guard_label",
        "reenter",
        "source",
        "targets",
    )

    def __init__(
        self,
        *,
        source: Node,
        event_type: str,
        targets: tuple[Node, ...] | None,
        guard: CompiledGuard | None,
        guard_label: str | None,
        actions: tuple[CompiledAction, ...],
        action_labels: tuple[str, ...],
        reenter: bool,
    ) -> None:
        self.source = source
        self.event_type = event_type
        self.targets = targets
        self.guard = guard
        self.guard_label = guard_label
        self.actions = actions
        self.action_labels = action_labels
        self.reenter = reenter
        self.delay: str | None = None  # the ``after`` key of a delayed transition
        self.domain: Node | None = transition_domain(self)
        self.entry_sorted: tuple[Node, ...] | None = None

    def __repr__(self) -> str:
        targets = [f"#{t.id}" for t in self.targets] if self.targets else None
        return f"<transition {self.event_type!r} from #{self.source.id} to {targets}>"


# ---------------------------------------------------------------------------------------------------
# Tree helpers (ports of XState's stateUtils; no history nodes exist in this subset)


def is_descendant(child: Node, parent: Node | None) -> bool:
    """XState ``isDescendant``: strict descendant; every node (the root included) descends from ``None``."""
    if parent is None:
        return True
    return parent in child.ancestor_set


def proper_ancestors(node: Node, to: Node | None) -> list[Node]:
    """XState ``getProperAncestors``: ancestors of ``node`` nearest first, stopping before ``to``."""
    if node is to:
        return []
    result: list[Node] = []
    for ancestor in node.ancestors:
        if ancestor is to:
            break
        result.append(ancestor)
    return result


def _least_common_ancestor(nodes: list[Node]) -> Node | None:
    head, *tail = nodes
    for ancestor in head.ancestors:
        if all(ancestor in n.ancestor_set for n in tail):
            return ancestor
    return None


def transition_domain(transition: Transition) -> Node | None:
    """XState ``getTransitionDomain`` (static here because there are no history states)."""
    source = transition.source
    targets = list(dict.fromkeys(transition.targets or ()))
    if not transition.reenter and all(t is source or source in t.ancestor_set for t in targets):
        return source
    lca = _least_common_ancestor([*targets, source])
    if lca is not None:
        return lca
    if transition.reenter:
        return None
    root = source
    while root.parent is not None:
        root = root.parent
    return root


def add_descendants_to_enter(node: Node, to_enter: set[Node]) -> None:
    """XState ``addDescendantStatesToEnter`` without history."""
    if node.type == COMPOUND:
        initial = node.initial
        assert initial is not None
        to_enter.add(initial)
        add_descendants_to_enter(initial, to_enter)
    elif node.type == PARALLEL:
        for child in node.children:
            if not any(child in s.ancestor_set for s in to_enter):
                to_enter.add(child)
                add_descendants_to_enter(child, to_enter)


def _add_ancestors_to_enter(
    to_enter: set[Node], ancestors: list[Node], reentrancy_domain: Node | None
) -> None:
    for ancestor in ancestors:
        if reentrancy_domain is None or reentrancy_domain in ancestor.ancestor_set:
            to_enter.add(ancestor)
        if ancestor.type == PARALLEL:
            for child in ancestor.children:
                if not any(child in s.ancestor_set for s in to_enter):
                    to_enter.add(child)
                    add_descendants_to_enter(child, to_enter)


def compute_entry_set(transitions: Iterable[Transition]) -> set[Node]:
    """XState ``computeEntrySet`` (the states to enter for a set of non-conflicting transitions)."""
    to_enter: set[Node] = set()
    for t in transitions:
        domain = t.domain
        targets = t.targets or ()
        for s in targets:
            if t.source is not s or t.source is not domain or t.reenter:
                to_enter.add(s)
            add_descendants_to_enter(s, to_enter)
        for s in dict.fromkeys(targets):
            ancestors = proper_ancestors(s, domain)
            if domain is not None and domain.type == PARALLEL:
                ancestors.append(domain)
            reentrancy = None if (t.source.parent is None and t.reenter) else domain
            _add_ancestors_to_enter(to_enter, ancestors, reentrancy)
    return to_enter


def _array_index(key: str) -> int | None:
    """The integer value of a JS array-index property key (canonical, < 2**32 - 1), else ``None``."""
    if key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and int(key) < 4294967295:
        return int(key)
    return None


def js_key_order(keys: Iterable[str]) -> list[str]:
    """Order object keys the way JavaScript's ``Object.keys`` does (array-index keys first, ascending)."""
    indexes: list[tuple[int, str]] = []
    others: list[str] = []
    for key in keys:
        index = _array_index(key)
        if index is not None:
            indexes.append((index, key))
        else:
            others.append(key)
    indexes.sort()
    return [key for _, key in indexes] + others


def _to_state_path(text: str) -> list[str]:
    """XState ``toStatePath``: split on '.', honouring backslash escapes."""
    result: list[str] = []
    segment = ""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            segment += text[i + 1] if i + 1 < len(text) else ""
            i += 2
            continue
        if char == ".":
            result.append(segment)
            segment = ""
        else:
            segment += char
        i += 1
    result.append(segment)
    return result


def _path_to_state_value(path: list[str]) -> str | dict[str, Any]:
    """XState ``pathToStateValue``."""
    if len(path) == 1:
        return path[0]
    value: dict[str, Any] = {}
    marker = value
    for index in range(len(path) - 1):
        if index == len(path) - 2:
            marker[path[index]] = path[index + 1]
        else:
            inner: dict[str, Any] = {}
            marker[path[index]] = inner
            marker = inner
    return value


def matches_state(parent: Any, child: Any) -> bool:
    """XState ``matchesState`` on resolved state values (``parent`` is the pattern)."""
    if isinstance(child, str):
        return isinstance(parent, str) and child == parent
    if isinstance(parent, str):
        return parent in child
    return all(key in child and matches_state(sub, child[key]) for key, sub in parent.items())


# JavaScript ``Number(string)`` for the literals XState's ``+delay`` understands (after trimming).
_JS_DECIMAL: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_JS_RADIX: Final = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")
_JS_WHITESPACE: Final = (
    " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _js_number(text: str) -> float | None:
    """``+text`` in JavaScript, or ``None`` where it is ``NaN``."""
    stripped = text.strip(_JS_WHITESPACE)
    if not stripped:
        return 0.0
    if _JS_DECIMAL.fullmatch(stripped):
        return float(stripped)
    if _JS_RADIX.fullmatch(stripped):
        return float(int(stripped, 0))
    if stripped in ("Infinity", "+Infinity"):
        return math.inf
    if stripped == "-Infinity":
        return -math.inf
    return None


def js_number_str(value: float) -> str:
    """JavaScript ``String(number)`` for a finite number (shortest round-trip digits, JS exponent rules)."""
    if value == 0:
        return "0"
    if value < 0:
        return "-" + js_number_str(-value)
    parts = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(parts.exponent, int)
    digits = "".join(map(str, parts.digits))
    k = len(digits)
    n = parts.exponent + k  # value = 0.<digits> * 10**n (ECMAScript Number::toString)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    head = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{head}e{'+' if n >= 1 else '-'}{abs(n - 1)}"


def _delay_ms(value: Any, what: str) -> float:
    """A resolved delay: a finite number of milliseconds; negative delays count as 0 (like setTimeout)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of milliseconds, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of milliseconds, got {value!r}")
    return max(value, 0)


def _fresh(value: Any) -> Any:
    return value if isinstance(value, _IMMUTABLE_SCALARS) else copy.deepcopy(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _callable_label(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", "")
    return name if isinstance(name, str) and name.isidentifier() else "<inline>"


def _config_error(what: str, location: str, *hints: str) -> ConfigViolation:
    return ConfigViolation("\n".join([f"Configuration Error: {what}", f"Location: {location}", *hints]))


def _invoke_error(location: str) -> ConfigViolation:
    return _config_error(
        "'invoke' not supported",
        location,
        "Arvo machines do not support XState invocations as they introduce asynchronous behavior.",
        "To fix: Replace 'invoke' with Arvo event-driven patterns for asynchronous operations",
    )


def _actor_error(kind: str, location: str) -> ConfigViolation:
    return ConfigViolation(
        "\n".join(
            [
                f"Configuration Error: '{kind}' not supported in Arvo machines",
                f"Location: {location}",
                "Arvo machines do not support XState actors as they introduce asynchronous behavior.",
                "To fix:",
                f"1. Remove the '{kind}' configuration",
                "2. Use Arvo's event-driven patterns instead for asynchronous operations",
            ]
        )
    )


def _history_error(location: str) -> ConfigViolation:
    return _config_error(
        "'history' states not supported",
        location,
        "This statechart interpreter implements the XState subset Arvo uses, which has no history states.",
        "To fix: Model the remembered state explicitly in the context and route with guarded transitions",
    )


def _delays_key_error(location: str) -> ConfigViolation:
    return ConfigViolation(
        "\n".join(
            [
                "Configuration Error: 'delays' not supported in Arvo machines",
                f"Location: {location}",
                "'delays' is not a key of a machine config: named delays are implementations.",
                "To fix: pass them as delays= to setup_arvo_machine (or Statechart) and use their names as "
                "'after' keys",
            ]
        )
    )


_FORBIDDEN_STATE_KEYS: Final[dict[str, Callable[[str], ConfigViolation]]] = {
    "invoke": _invoke_error,
    "actors": lambda location: _actor_error("actor", location),
    "spawn": lambda location: _actor_error("actor", location),
    "delays": _delays_key_error,
    "history": _history_error,
}


class MachineModel:
    """The validated, compiled machine: state-node tree plus lookup tables."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        actions: Mapping[str, Any],
        guards: Mapping[str, Any],
        delays: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(config, Mapping):
            raise ConfigViolation(
                f"Configuration Error: machine config must be a mapping, got {type(config).__name__}"
            )
        machine_id = config.get("id")
        if machine_id is not None and (not isinstance(machine_id, str) or not machine_id):
            raise _config_error(f"'id' must be a non-empty string, got {machine_id!r}", "(root)")
        self.id: str = machine_id or "(machine)"
        self.actions = actions
        self.guards = guards
        self.delays: Mapping[str, Any] = delays or {}
        self.has_after = False
        self.nodes: list[Node] = []
        self.id_map: dict[str, Node] = {}
        self.root = self._build_node(config, parent=None, key=self.id)
        self.has_always = False
        for node in self.nodes:
            self._compile_node(node)
        for node in self.nodes:
            node.always_chain = tuple(n for n in (node, *node.ancestors) if n.always)
        initial_targets = tuple(self._initial_nodes(self.root))
        self.init_transition = Transition(
            source=self.root,
            event_type="xstate.init",
            targets=initial_targets,
            guard=None,
            guard_label=None,
            actions=(),
            action_labels=(),
            reenter=True,
        )
        context = config.get("context")
        if context is not None and not callable(context) and not isinstance(context, Mapping):
            raise _config_error(
                f"'context' must be a mapping or a function of ActionArgs, got {type(context).__name__}",
                "(root) > context",
            )
        self.context: Any = context

    # -- building ----------------------------------------------------------------------------------

    def _build_node(self, config: Any, *, parent: Node | None, key: str) -> Node:
        location = " > ".join((*parent.labels, key)) if parent is not None else "(root)"
        if not isinstance(config, Mapping):
            raise _config_error(f"state node config must be a mapping, got {type(config).__name__}", location)
        allowed = _STATE_KEYS | _ROOT_ONLY_KEYS if parent is None else _STATE_KEYS
        for config_key in config:
            prefix = location if parent is not None else "(root)"
            where = f"{prefix} > {config_key}"
            if config_key in _FORBIDDEN_STATE_KEYS:
                raise _FORBIDDEN_STATE_KEYS[config_key](where)
            if config_key not in allowed:
                raise _config_error(
                    f"unknown state node key {config_key!r}",
                    where,
                    f"Allowed keys: {', '.join(sorted(allowed))}",
                )
        if parent is None:
            node_id = self.id
        else:
            custom_id = config.get("id")
            if custom_id is not None and (not isinstance(custom_id, str) or not custom_id):
                raise _config_error(f"'id' must be a non-empty string, got {custom_id!r}", location)
            node_id = custom_id or ".".join((self.id, *parent.labels, key))
        if node_id in self.id_map:
            raise _config_error(
                f"duplicate state id {node_id!r}",
                location,
                f"Already used by: {self.id_map[node_id].location()}",
            )
        node = Node(key=key, node_id=node_id, parent=parent, order=len(self.nodes), config=config)
        self.nodes.append(node)
        self.id_map[node_id] = node

        states = config.get("states")
        if states is not None and not isinstance(states, Mapping):
            raise _config_error(f"'states' must be a mapping, got {type(states).__name__}", location)
        states = states or {}
        for child_key in states:
            if not isinstance(child_key, str) or not child_key:
                raise _config_error(f"state keys must be non-empty strings, got {child_key!r}", location)
        declared = config.get("type")
        if declared == "history":
            raise _history_error(f"{location} > type")
        if declared is not None and declared not in _STATE_TYPES:
            raise _config_error(
                f"unknown state type {declared!r}",
                f"{location} > type",
                "Allowed types: atomic, compound, parallel, final",
            )
        node.type = declared or (COMPOUND if states else ATOMIC)
        if node.type in (ATOMIC, FINAL) and states:
            raise _config_error(f"a {node.type} state cannot have child states", location)
        if node.type == COMPOUND and not states:
            # XState fails too ("No initial state specified"). A parallel state without regions is valid
            # (as in XState): value ``{}``, not atomic (its ``always`` is never selected), no done event
            # of its own, vacuously "in a final state" when a sibling region completes.
            raise _config_error("a compound state needs at least one child state", location)
        node.is_atomic = node.type in (ATOMIC, FINAL)
        children = [self._build_node(states[k], parent=node, key=k) for k in js_key_order(states)]
        node.children = tuple(children)
        node.states = {child.key: child for child in children}

        initial = config.get("initial")
        if node.type == COMPOUND:
            if initial is None:
                first = next(iter(node.states))
                raise _config_error(
                    "no initial state specified for compound state",
                    location,
                    f'To fix: add "initial": {first!r}',
                )
            if not isinstance(initial, str) or initial not in node.states:
                raise _config_error(
                    f"initial state {initial!r} not found",
                    f"{location} > initial",
                    f"Child states: {', '.join(node.states)}",
                )
            node.initial = node.states[initial]
        elif initial is not None:
            raise _config_error(f"'initial' is not allowed on a {node.type} state", f"{location} > initial")

        if "output" in config:
            if parent is not None and node.type != FINAL:
                raise _config_error(
                    "'output' is only allowed on the root and on final states", f"{location} > output"
                )
            node.has_output = True
            node.output = config["output"]
        if "onDone" in config and node.type not in (COMPOUND, PARALLEL):
            raise _config_error(
                f"'onDone' is only allowed on compound and parallel states, not on a {node.type} state",
                f"{location} > onDone",
            )
        return node

    @staticmethod
    def _initial_nodes(root: Node) -> list[Node]:
        """XState ``getInitialStateNodes`` (DFS order, the node itself first)."""
        result: dict[Node, None] = {}

        def visit(node: Node) -> None:
            if node in result:
                return
            result[node] = None
            if node.type == COMPOUND:
                assert node.initial is not None
                visit(node.initial)
            elif node.type == PARALLEL:
                for child in node.children:
                    visit(child)

        visit(root)
        return list(result)

    # -- compiling transitions and actions ---------------------------------------------------------

    def _compile_node(self, node: Node) -> None:
        config = node.config
        location = node.location()
        node.entry, node.entry_labels = self._compile_actions(config.get("entry"), f"{location} > entry")
        node.exit, node.exit_labels = self._compile_actions(config.get("exit"), f"{location} > exit")
        on = config.get("on")
        if on is not None and not isinstance(on, Mapping):
            raise _config_error(f"'on' must be a mapping, got {type(on).__name__}", f"{location} > on")
        transitions: dict[str, tuple[Transition, ...]] = {}
        for descriptor in js_key_order(on or {}):
            where = f"{location} > on > {descriptor}"
            if not isinstance(descriptor, str) or descriptor == "":
                raise _config_error(
                    "null events ('') cannot be used as a transition key",
                    where,
                    "To fix: use 'always' instead",
                )
            stars = descriptor.count("*")
            if stars and not (descriptor == "*" or (stars == 1 and descriptor.endswith(".*"))):
                raise _config_error(
                    f"invalid wildcard event descriptor {descriptor!r}",
                    where,
                    "Wildcards can only be the whole descriptor ('*') or its last token ('event.*')",
                )
            assert on is not None
            transitions[descriptor] = self._compile_transitions(node, descriptor, on[descriptor], where)
        if "onDone" in config:
            transitions[node.done_type] = self._compile_transitions(
                node, node.done_type, config["onDone"], f"{location} > onDone"
            )
        node.transitions = transitions
        if config.get("after") is not None:
            self._compile_after(node, config["after"], f"{location} > after")
        if "always" in config:
            node.always = self._compile_transitions(node, "", config["always"], f"{location} > always")
            if node.always:
                self.has_always = True

    def _compile_after(self, node: Node, after: Any, location: str) -> None:
        """XState ``getDelayedTransitions``: transitions on ``xstate.after.<delay>.<id>``, raise, cancel."""
        if not isinstance(after, Mapping):
            raise _config_error(f"'after' must be a mapping of delays, got {type(after).__name__}", location)
        by_key: dict[str, Any] = {}
        for raw_key, spec in after.items():
            if isinstance(raw_key, str):
                key = raw_key
            elif isinstance(raw_key, int | float) and not isinstance(raw_key, bool):
                if not math.isfinite(raw_key):
                    raise _config_error(f"delay {raw_key!r} is not a finite number of milliseconds", location)
                key = js_number_str(raw_key)  # the property key JavaScript makes of a number
            else:
                raise _config_error(
                    f"an 'after' key must be a delay in ms or the name of a delay, got {raw_key!r}", location
                )
            if key in by_key:
                raise _config_error(f"duplicate delay {key!r}", f"{location} > {key}")
            by_key[key] = spec
        raises: list[CompiledAction] = []
        cancels: list[CompiledAction] = []
        seen: dict[str, str] = {}
        for key in js_key_order(by_key):
            where = f"{location} > {key}"
            number = _js_number(key)
            resolve: Callable[[Mapping[str, Any], Mapping[str, Any]], float]
            if number is not None:
                if not math.isfinite(number):
                    raise _config_error(f"delay {key!r} is not a finite number of milliseconds", where)
                delay_name = js_number_str(number)
                exact: float = int(number) if number.is_integer() else number
                resolve = _constant_delay(_delay_ms(exact, f"delay {key!r}"))
            else:
                delay_name = key
                resolve = self._named_delay(key, where)
            event_type = f"xstate.after.{delay_name}.{node.id}"
            if event_type in seen:
                raise _config_error(
                    f"delays {seen[event_type]!r} and {key!r} are the same delay ({delay_name} ms)", where
                )
            seen[event_type] = key
            spec = by_key[key]
            transitions = (
                self._compile_transitions(node, event_type, spec, where)
                if not isinstance(spec, list | tuple) or spec
                else ()
            )
            for transition in transitions:
                transition.delay = key
            if transitions:
                node.transitions[event_type] = (*node.transitions.get(event_type, ()), *transitions)
            raises.append(_delayed_raise(event_type, resolve))
            cancels.append(_cancel_raise(event_type))
            self.has_after = True
        node.entry = (*node.entry, *raises)
        node.entry_labels = (*node.entry_labels, *(["xstate.raise"] * len(raises)))
        node.exit = (*node.exit, *cancels)
        node.exit_labels = (*node.exit_labels, *(["xstate.cancel"] * len(cancels)))

    def _named_delay(
        self, name: str, location: str
    ) -> Callable[[Mapping[str, Any], Mapping[str, Any]], float]:
        impl = self.delays.get(name)
        if impl is None:
            raise _config_error(
                f"delay {name!r} is not implemented", location, "To fix: pass its implementation in delays="
            )
        what = f"delay {name!r}"
        if isinstance(impl, int | float) and not isinstance(impl, bool):
            if not math.isfinite(impl):
                raise _config_error(f"{what} is not a finite number of milliseconds", location)
            return _constant_delay(_delay_ms(impl, what))
        if not callable(impl):
            raise _config_error(
                f"{what} implementation must be a number of ms or a function, got {type(impl).__name__}",
                location,
            )
        fn = call_with_params(impl)
        return lambda c, e: _delay_ms(fn(ActionArgs(context=c, event=e), None), what)

    def _compile_transitions(
        self, node: Node, event_type: str, spec: Any, location: str
    ) -> tuple[Transition, ...]:
        items = list(spec) if isinstance(spec, list | tuple) else [spec]
        compiled: list[Transition] = []
        for index, item in enumerate(items):
            where = f"{location} > [{index}]" if isinstance(spec, list | tuple) else location
            compiled.append(self._compile_transition(node, event_type, item, where))
        return tuple(compiled)

    def _compile_transition(self, node: Node, event_type: str, item: Any, location: str) -> Transition:
        if item is None or isinstance(item, str):
            item = {"target": item}
        if not isinstance(item, Mapping):
            raise _config_error(
                f"a transition must be a target string or a mapping, got {type(item).__name__}", location
            )
        for key in item:
            if key not in _TRANSITION_KEYS:
                hint = {
                    "cond": "'cond' was renamed to 'guard' in XState v5",
                    "internal": "use 'reenter'",
                }.get(key, f"Allowed keys: {', '.join(sorted(_TRANSITION_KEYS))}")
                raise _config_error(f"unknown transition key {key!r}", f"{location} > {key}", hint)
        raw_target = item.get("target")
        raw_targets = _as_list(raw_target)
        targets: tuple[Node, ...] | None = None
        if raw_target not in (None, "") and raw_targets:
            resolved: list[Node] = []
            for target in raw_targets:
                if not isinstance(target, str):
                    raise _config_error(
                        f"transition target must be a string, got {target!r}", f"{location} > target"
                    )
                resolved.append(self._resolve_target(node, target, f"{location} > target"))
            self._check_targets_compatible(resolved, f"{location} > target")
            targets = tuple(resolved)
        reenter = item.get("reenter", False)
        if not isinstance(reenter, bool):
            raise _config_error(f"'reenter' must be a boolean, got {reenter!r}", f"{location} > reenter")
        guard_spec = item.get("guard")
        guard: CompiledGuard | None = None
        guard_label: str | None = None
        if guard_spec is not None:
            guard, guard_label = self._compile_guard(guard_spec, f"{location} > guard", 0)
        actions, labels = self._compile_actions(item.get("actions"), f"{location} > actions")
        return Transition(
            source=node,
            event_type=event_type,
            targets=targets,
            guard=guard,
            guard_label=guard_label,
            actions=actions,
            action_labels=labels,
            reenter=reenter,
        )

    def _resolve_target(self, node: Node, target: str, location: str) -> Node:
        """XState ``resolveTarget``: '#id[.path]', '.child' (relative to the node) or 'sibling[.path]'."""
        internal = target.startswith(".")
        if node.parent is None and not internal and not target.startswith("#"):
            raise _config_error(
                f"invalid transition target {target!r} from state #{node.id}",
                location,
                f'"{target}" is not a valid target from the root node. Did you mean ".{target}"?',
            )
        try:
            if target.startswith("#"):
                return self._by_id(target)
            if node.parent is None:
                return self._by_path(node, target[1:])
            return self._by_path(node.parent, node.key + target if internal else target)
        except LookupError as exc:
            raise _config_error(
                f"invalid transition target {target!r} from state #{node.id}", location, str(exc.args[0])
            ) from None

    def _by_id(self, state_id: str) -> Node:
        path = _to_state_path(state_id)
        head = path[0][1:] if path[0].startswith("#") else path[0]
        node = self.id_map.get(head)
        if node is None:
            raise LookupError(f"Child state node '#{head}' does not exist on machine '{self.id}'")
        return self._walk(node, path[1:])

    def _by_path(self, node: Node, path: str) -> Node:
        return self._walk(node, _to_state_path(path))

    def _walk(self, node: Node, keys: list[str]) -> Node:
        for key in keys:
            if not key:
                break
            if key.startswith("#"):
                node = self._by_id(key)
                continue
            if not node.states:
                raise LookupError(
                    f"Unable to retrieve child state '{key}' from '{node.id}'; no child states exist."
                )
            child = node.states.get(key)
            if child is None:
                raise LookupError(f"Child state '{key}' does not exist on '{node.id}'")
            node = child
        return node

    @staticmethod
    def _check_targets_compatible(targets: list[Node], location: str) -> None:
        for i, first in enumerate(targets):
            for second in targets[i + 1 :]:
                if first is second or first in second.ancestor_set or second in first.ancestor_set:
                    raise _config_error(
                        f"targets #{first.id} and #{second.id} overlap (one contains the other)",
                        location,
                        "Multiple targets must lie in different regions of a parallel state",
                    )
                common = next(a for a in first.ancestors if a in second.ancestor_set)
                if common.type != PARALLEL:
                    raise _config_error(
                        f"targets #{first.id} and #{second.id} cannot be active together",
                        location,
                        f"Their closest common ancestor #{common.id} is not a parallel state",
                    )

    # -- guards ------------------------------------------------------------------------------------

    def _compile_guard(self, spec: Any, location: str, depth: int) -> tuple[CompiledGuard, str]:
        if depth > _MAX_ALIAS_DEPTH:
            raise _config_error("guard aliases nest too deeply (cycle?)", location)
        if isinstance(spec, str):
            return self._named_guard(spec, None, location, depth)
        if isinstance(spec, StateIn):
            return self._state_in_guard(spec, location)
        if isinstance(spec, GuardCombinator):
            compiled = [self._compile_guard(g, location, depth + 1) for g in spec.guards]
            fns = tuple(fn for fn, _ in compiled)
            label = f"{spec.kind}({', '.join(lbl for _, lbl in compiled)})"
            if spec.kind == "not":
                if len(fns) != 1:
                    raise _config_error("not_() takes exactly one guard", location)
                inner = fns[0]
                return (lambda c, e, a: not inner(c, e, a)), label
            if spec.kind == "and":

                def check_and(c: Mapping[str, Any], e: Mapping[str, Any], a: ActiveStates) -> bool:
                    return all(fn(c, e, a) for fn in fns)

                return check_and, label

            def check_or(c: Mapping[str, Any], e: Mapping[str, Any], a: ActiveStates) -> bool:
                return any(fn(c, e, a) for fn in fns)

            return check_or, label
        if isinstance(spec, Mapping):
            for key in spec:
                if key not in ("type", "params"):
                    raise _config_error(
                        f"unknown guard key {key!r}", f"{location} > {key}", "Allowed: type, params"
                    )
            name = spec.get("type")
            if not isinstance(name, str) or not name:
                raise _config_error(f"guard 'type' must be a non-empty string, got {name!r}", location)
            return self._named_guard(name, spec, location, depth)
        if callable(spec):
            fn = call_with_params(spec)
            return (lambda c, e, _a: bool(fn(ActionArgs(context=c, event=e), None))), _callable_label(spec)
        raise _config_error(
            f"a guard must be a name, a {{'type', 'params'}} mapping, a function, a combinator or "
            f"state_in(), got {type(spec).__name__}",
            location,
        )

    def _named_guard(
        self, name: str, spec: Mapping[str, Any] | None, location: str, depth: int
    ) -> tuple[CompiledGuard, str]:
        impl = self.guards.get(name)
        if impl is None:
            raise _config_error(
                f"guard {name!r} is not implemented",
                location,
                "To fix: pass its implementation in guards=",
            )
        if isinstance(impl, GuardCombinator | StateIn | str | Mapping):
            fn_alias, _ = self._compile_guard(impl, location, depth + 1)
            return fn_alias, name
        if not callable(impl):
            raise _config_error(
                f"guard {name!r} implementation must be callable, got {type(impl).__name__}", location
            )
        fn = call_with_params(impl)
        params = spec.get("params") if spec is not None else None
        if callable(params):
            params_fn: Callable[[ActionArgs], Any] = params

            def check_dynamic(c: Mapping[str, Any], e: Mapping[str, Any], _a: ActiveStates) -> bool:
                return bool(fn(ActionArgs(context=c, event=e), params_fn(ActionArgs(context=c, event=e))))

            return check_dynamic, name
        return (lambda c, e, _a: bool(fn(ActionArgs(context=c, event=e), params))), name

    def _state_in_guard(self, spec: StateIn, location: str) -> tuple[CompiledGuard, str]:
        """XState ``stateIn``: ``#id`` checks the active nodes, anything else ``snapshot.matches``."""
        state_value = spec.state_value
        if isinstance(state_value, str) and state_value.startswith("#"):
            node = self.id_map.get(state_value[1:])
            if node is None:
                raise _config_error(
                    f"state_in({state_value!r}): no state has the id {state_value[1:]!r}", location
                )
            return (lambda _c, _e, a: node in a.node_set), f"stateIn({state_value})"
        if isinstance(state_value, str):
            pattern: Any = _path_to_state_value(_to_state_path(state_value))
        else:
            pattern = _json_value(state_value)
        problem = _state_value_problem(self.root, pattern)
        if problem is not None:
            raise _config_error(f"state_in({state_value!r}): {problem}", location)
        label = state_value if isinstance(state_value, str) else _compact_json(pattern)
        return (lambda _c, _e, a: matches_state(pattern, a.value)), f"stateIn({label})"

    # -- actions -----------------------------------------------------------------------------------

    def _compile_actions(
        self, spec: Any, location: str
    ) -> tuple[tuple[CompiledAction, ...], tuple[str, ...]]:
        items = _as_list(spec)
        compiled: list[CompiledAction] = []
        labels: list[str] = []
        for index, item in enumerate(items):
            where = f"{location} > [{index}]" if isinstance(spec, list | tuple) else location
            action, label = self._compile_action(item, where)
            compiled.append(action)
            labels.append(label)
        return tuple(compiled), tuple(labels)

    def _compile_action(self, spec: Any, location: str) -> tuple[CompiledAction, str]:
        if isinstance(spec, str):
            return self._named_action(spec, None, location), spec
        if isinstance(spec, Assign):
            return _assign_action(spec, None), "xstate.assign"
        if isinstance(spec, Emit):
            return _emit_action(spec, None), "xstate.emit"
        if isinstance(spec, Mapping):
            for key in spec:
                if key not in ("type", "params"):
                    raise _config_error(
                        f"unknown action key {key!r}", f"{location} > {key}", "Allowed: type, params"
                    )
            name = spec.get("type")
            if not isinstance(name, str) or not name:
                raise _config_error(f"action 'type' must be a non-empty string, got {name!r}", location)
            return self._named_action(name, spec.get("params"), location), name
        if callable(spec):
            return _custom_action(spec, None), _callable_label(spec)
        raise _config_error(
            f"an action must be a name, a {{'type', 'params'}} mapping, a function, assign() or emit(), got "
            f"{type(spec).__name__}",
            location,
        )

    def _named_action(self, name: str, params: Any, location: str) -> CompiledAction:
        impl = self.actions.get(name)
        if impl is None:
            if name in _ACTOR_ACTIONS:
                raise _actor_error("actor", location)
            raise _config_error(
                f"action {name!r} is not implemented", location, "To fix: pass its implementation in actions="
            )
        if isinstance(impl, Assign):
            return _assign_action(impl, params)
        if isinstance(impl, Emit):
            return _emit_action(impl, params)
        if callable(impl):
            return _custom_action(impl, params)
        raise _config_error(
            f"action {name!r} implementation must be a function, assign() or emit(), "
            f"got {type(impl).__name__}",
            location,
        )


def _json_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _compact_json(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_compact_json(v)}" for k, v in value.items()) + "}"
    return str(value)


def _state_value_problem(node: Node, pattern: Any) -> str | None:
    """Why ``pattern`` cannot match any state value below ``node`` (``None`` when it can)."""
    if isinstance(pattern, str):
        if pattern in node.states:
            return None
        return f"state {pattern!r} does not exist on '#{node.id}'"
    if not isinstance(pattern, Mapping):
        return f"expected a state name or a mapping, got {type(pattern).__name__}"
    for key, sub in pattern.items():
        child = node.states.get(key)
        if child is None:
            return f"state {key!r} does not exist on '#{node.id}'"
        problem = _state_value_problem(child, sub)
        if problem is not None:
            return problem
    return None


def _constant_delay(delay: float) -> Callable[[Mapping[str, Any], Mapping[str, Any]], float]:
    return lambda _c, _e: delay


def _delayed_raise(
    event_type: str, resolve: Callable[[Mapping[str, Any], Mapping[str, Any]], float]
) -> CompiledAction:
    """XState ``raise(afterEvent, {id, delay})``: the delay is resolved now, the timer armed after the step.

    ``resolve`` may raise (a named delay's function, or a result that is not a number of milliseconds).
    """

    def run(state: RunState, event: Mapping[str, Any]) -> None:
        state.timer_ops.append((event_type, resolve(state.ctx, event)))

    return run


def _cancel_raise(event_type: str) -> CompiledAction:
    """XState ``cancel(afterEventType)``, applied after the step."""

    def run(state: RunState, _event: Mapping[str, Any]) -> None:
        state.timer_ops.append((event_type, None))

    return run


def _params_resolver(params: Any) -> Callable[[Mapping[str, Any], Mapping[str, Any]], Any] | None:
    if callable(params):
        fn: Callable[[ActionArgs], Any] = params
        return lambda c, e: fn(ActionArgs(context=c, event=e))
    return None


def _custom_action(impl: Callable[..., Any], params: Any) -> CompiledAction:
    fn = call_with_params(impl)
    dynamic = _params_resolver(params)

    def run(state: RunState, event: Mapping[str, Any]) -> None:
        ctx = state.ctx
        fn(ActionArgs(context=ctx, event=event), dynamic(ctx, event) if dynamic is not None else params)

    return run


def _assign_action(builtin: Assign, params: Any) -> CompiledAction:
    assignment = builtin.assignment
    dynamic = _params_resolver(params)
    if callable(assignment):
        fn = call_with_params(assignment)

        def run_fn(state: RunState, event: Mapping[str, Any]) -> None:
            ctx = state.ctx
            partial = fn(
                ActionArgs(context=ctx, event=event), dynamic(ctx, event) if dynamic is not None else params
            )
            updated = dict(ctx)
            if partial is not None:
                if not isinstance(partial, Mapping):
                    raise TypeError(
                        "assign(): the assignment function must return a mapping, "
                        f"got {type(partial).__name__}"
                    )
                updated.update(partial)
            state.ctx = updated
            state.assigned = True

        return run_fn

    items = [
        (key, call_with_params(value) if callable(value) else None, value)
        for key, value in assignment.items()
    ]

    def run_map(state: RunState, event: Mapping[str, Any]) -> None:
        ctx = state.ctx
        args = ActionArgs(context=ctx, event=event)
        resolved = dynamic(ctx, event) if dynamic is not None else params
        partial = {key: fn(args, resolved) if fn is not None else _fresh(value) for key, fn, value in items}
        updated = dict(ctx)
        updated.update(partial)
        state.ctx = updated
        state.assigned = True

    return run_map


def _emit_action(builtin: Emit, params: Any) -> CompiledAction:
    spec = builtin.event
    dynamic = _params_resolver(params)
    if callable(spec):
        fn = call_with_params(spec)

        def run_fn(state: RunState, event: Mapping[str, Any]) -> None:
            ctx = state.ctx
            emitted = fn(
                ActionArgs(context=ctx, event=event), dynamic(ctx, event) if dynamic is not None else params
            )
            if not isinstance(emitted, Mapping):
                raise TypeError(
                    f"emit(): the event function must return a mapping, got {type(emitted).__name__}"
                )
            state.emitted.append(emitted if isinstance(emitted, dict) else dict(emitted))

        return run_fn

    constant = dict(spec)

    def run_const(state: RunState, _event: Mapping[str, Any]) -> None:
        state.emitted.append(copy.deepcopy(constant))

    return run_const
