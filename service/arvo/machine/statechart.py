"""Pure-Python statechart interpreter with XState v5 (5.24.0) semantics for the subset Arvo allows.

A :class:`Statechart` is built once from a config that mirrors an XState machine config (plain dicts and
Python functions) and then runs *stateless steps* over JSON snapshots::

    chart = Statechart(config, actions={...}, guards={...})
    step = chart.start(input)                       # initial configuration, eventless transitions
    step = chart.send(step.snapshot, {"type": "evt.x", ...})

Snapshots are plain JSON dicts ``{"status", "value", "context", "output"}`` (``value`` in XState's
StateValue format), so they can be persisted between steps. Restoring a snapshot runs no user code: no
entry actions and no eventless transitions are evaluated until the next event is processed.

Delayed transitions (``after``) work as in XState, with time passed in by the caller (the interpreter
never reads a clock)::

    chart = Statechart(config, delays={"grace": lambda a: a.context["grace_ms"]})
    step = chart.start(input, now_ms=now)           # step.timers: the pending timers, in firing order
    step = chart.send(step.snapshot, event, now_ms=now)
    step = chart.fire_timer(step.snapshot, step.timers[0].id, now_ms=now)   # one due timer
    step = chart.advance(step.snapshot, now_ms=now) # every timer due by ``now``, in XState's order

A delayed transition is a delayed raise of ``xstate.after.<delay>.<state id>`` appended to the state's
entry actions (the delay is evaluated then) and a cancel appended to its exit actions; both take effect
after the macrostep, so a state entered and left within one step leaves no timer. Pending timers live in
the snapshot (``"timers"``, in firing order: due time, then arming order; ``"timerSeq"``, the arming
counter that makes timer ids deterministic) of machines that have delayed transitions, so they survive a
save/restore round trip (XState drops them). Each step reports the pending timers
(:attr:`MachineStep.timers`), the ids of timers it cancelled and the ids it fired. Reaching a top-level
final state cancels every timer.

Semantics follow XState v5.24.0's ``macrostep``/``microstep`` (a port of its SCXML-style algorithm, checked
by the differential test ``tests/interop/test_xstate_conformance.py``): transition selection walks the
state value depth-first (descendants before ancestors; all regions of a parallel state), conflicting
transitions are resolved in selection order, exit actions run deepest-first, then transition actions,
then entry actions in document order; ``assign`` updates the context immediately; after every event the
eventless (``always``) transitions and internal ``xstate.done.state.*`` events are processed to a fixed
point. Supported config keys: ``id``, ``initial``, ``states``, ``type`` (``atomic``/``compound``/
``parallel``/``final``), ``context``, ``on`` (exact, ``*`` and ``prefix.*`` descriptors), ``always``,
``after`` (numeric and named delays), ``entry``, ``exit``, ``onDone``, ``output``, ``description``,
``meta``, ``tags`` (and ``version``, ``types``, ``schemas`` on the root); guards include :func:`state_in`
(XState ``stateIn``). ``invoke``, a ``delays`` config key (delays are implementations: ``delays=``),
actors and history states are rejected with :class:`~service.arvo.errors.ConfigViolation` when the chart
is built.

Errors raised by user code (actions, guards, ``context``, ``output``) propagate unchanged.

XState details reproduced on purpose (all checked against the real library): the root's entry/exit
actions run like any state's; on completion the machine output is computed, then the exit actions of
every active state run; ``*`` and ``prefix.*`` transitions also match internal done events; an exact
descriptor hides the wildcards of the same state even when its guards fail; ``prefix.*`` also matches
``prefix``; a targetless eventless transition that changes nothing (no ``assign``, no state change) is
not re-selected in the same step; targeting the root without ``reenter`` re-runs its entry but not its
exit; array-index state keys (``"0"``, ``"12"``) come first as in JavaScript objects; the state value of a
completed parallel machine lists its regions in reverse document order; a parallel state without regions
(``{"type": "parallel", "states": {}}`` or no ``states``) is valid: its value is ``{}``, its own ``on``
transitions fire, it is not atomic (eventless transitions are only selected from active atomic states, so
with nothing else active no ``always`` runs), it never raises its own done event, and it counts as final
when a sibling region completes.

Deliberate differences: guard errors are not wrapped in XState's ``Unable to evaluate guard`` error;
unimplemented named actions (silently skipped by XState) and guards, unknown keys, ``output`` outside
final/root states, ``onDone`` on atomic states, targets that cannot be active together and infix
wildcards are rejected when the chart is built; an endless eventless/done-event loop raises
:class:`MachineLoopError` instead of hanging; there are no history states or actors. Delays: unknown
named delays, duplicate delays (``"1000"`` and ``"1e3"``) and non-finite ones are rejected when the
chart is built (XState raises the event at once for an unknown name and arms both timers of a
duplicate); a named delay must produce a finite number (XState raises the event at once otherwise,
here it is a ``TypeError``/``ValueError``); a negative delay counts as 0 (JavaScript timers do the same;
XState's ``SimulatedClock`` would order it before earlier timers); a ``state_in`` id or path that does not
exist is rejected when the chart is built (XState throws on evaluation for an id, never matches a path).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import orjson

from service.arvo.machine._actions import (
    ActionArgs,
    ActionImpl,
    Assign,
    Emit,
    GuardCombinator,
    GuardImpl,
    GuardRef,
    StateIn,
    and_,
    assign,
    emit,
    not_,
    or_,
    state_in,
)
from service.arvo.machine._model import (
    COMPOUND,
    FINAL,
    PARALLEL,
    MachineModel,
    Node,
    RunState,
    Transition,
    compute_entry_set,
    js_key_order,
)
from service.arvo.machine._render import jsonable_definition, render_mermaid

__all__ = [
    "MAX_MICROSTEPS",
    "MAX_TIMER_FIRINGS",
    "ActionArgs",
    "ActionImpl",
    "Assign",
    "Emit",
    "GuardCombinator",
    "GuardImpl",
    "GuardRef",
    "InvalidSnapshotError",
    "MachineLoopError",
    "MachineStep",
    "PendingTimer",
    "StateIn",
    "Statechart",
    "and_",
    "assign",
    "emit",
    "not_",
    "or_",
    "state_in",
]

MAX_MICROSTEPS: Final = 1000
"""Safety bound: microsteps allowed in one macrostep before :class:`MachineLoopError` is raised."""

MAX_TIMER_FIRINGS: Final = 1000
"""Default bound of :meth:`Statechart.advance`: timers fired in one advance before :class:`MachineLoopError`
is raised."""

_ACTIVE: Final = "active"
_DONE: Final = "done"
_CACHE_LIMIT: Final = 4096
_CANDIDATE_CACHE_LIMIT: Final = 1024


class PendingTimer(NamedTuple):
    """A timer of a delayed transition: armed, not yet fired nor cancelled.

    Attributes:
        id: Deterministic id ``<event>#<n>``, ``n`` being the instance's arming counter (``timerSeq`` in
            the snapshot): the same steps on the same snapshot arm the same ids.
        event: The delayed event's type, ``xstate.after.<delay>.<state id>`` (what firing delivers).
        due_ms: When it is due: the ``now_ms`` of the step that armed it plus the delay.
        delay_ms: The delay it was armed with (a negative delay counts as 0).

    """

    id: str
    event: str
    due_ms: float
    delay_ms: float


class MachineStep(NamedTuple):
    """Result of a step: :meth:`Statechart.start`, ``send``, ``fire_timer`` or ``advance``.

    Attributes:
        snapshot: ``{"status": "active"|"done", "value": str|dict, "context": dict, "output": Any}``, plus
            ``"timers"`` and ``"timerSeq"`` when the machine has delayed transitions.
        emitted: Events emitted with :func:`emit`, in emission order.
        timers: Every pending timer after the step, in firing order (due time, then arming order); empty
            when the machine is done. Timers pending before the step keep their id and due time.
        cancelled: Ids of timers pending before the step that it cancelled (their state was exited, or the
            machine finished), in the order they were pending.
        fired: Ids of the timers the step delivered (:meth:`~Statechart.fire_timer`: zero or one).

    """

    snapshot: dict[str, Any]
    emitted: list[dict[str, Any]]
    timers: tuple[PendingTimer, ...] = ()
    cancelled: tuple[str, ...] = ()
    fired: tuple[str, ...] = ()


class InvalidSnapshotError(ValueError):
    """A snapshot passed to :meth:`Statechart.send` does not fit the machine (bad shape or state value)."""


class MachineLoopError(RuntimeError):
    """Eventless transitions / internal events did not settle within :data:`MAX_MICROSTEPS` microsteps."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _TimerBook:
    """Pending timers of one step: restored from the snapshot, updated by the recorded timer operations.

    Timers are JSON dicts ``{"id", "event", "due", "delay", "seq"}`` (plus ``"orphan": true``, below), kept
    in firing order. XState keys its scheduler by the delayed event's type: arming a type that is still
    pending (the root re-entered without ``reenter`` re-runs its entry, not its exit) leaves the older
    timer running but no longer cancellable (an *orphan*), and a firing timer unregisters its type, so the
    timer registered under it becomes an orphan too. A cancel removes the registered (non-orphan) timer.
    """

    __slots__ = ("before", "pending", "seq")

    def __init__(self, pending: list[dict[str, Any]], seq: int) -> None:
        self.pending = pending
        self.seq = seq
        self.before = tuple(timer["id"] for timer in pending)

    @classmethod
    def read(cls, snapshot: Mapping[str, Any]) -> _TimerBook:
        raw = snapshot.get("timers")
        if raw is None:
            raw = []
        if not isinstance(raw, list | tuple):
            raise InvalidSnapshotError(f"snapshot.timers must be a list, got {type(raw).__name__}")
        pending: list[dict[str, Any]] = []
        seen: set[str] = set()
        for item in raw:
            if not isinstance(item, Mapping):
                raise InvalidSnapshotError(f"snapshot.timers: a timer must be a mapping, got {item!r}")
            timer_id, event, due, delay, seq = (item.get(k) for k in ("id", "event", "due", "delay", "seq"))
            if (
                not isinstance(timer_id, str)
                or not isinstance(event, str)
                or not _is_number(due)
                or not _is_number(delay)
                or isinstance(seq, bool)
                or not isinstance(seq, int)
                or seq < 0
                or timer_id in seen
            ):
                raise InvalidSnapshotError(f"snapshot.timers: malformed or duplicate timer {dict(item)!r}")
            seen.add(timer_id)
            timer = {"id": timer_id, "event": event, "due": due, "delay": delay, "seq": seq}
            if item.get("orphan") is True:
                timer["orphan"] = True
            pending.append(timer)
        pending.sort(key=_firing_order)
        floor = max((timer["seq"] for timer in pending), default=-1) + 1
        counter = snapshot.get("timerSeq", floor)
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < floor:
            raise InvalidSnapshotError(f"snapshot.timerSeq must be an integer >= {floor}, got {counter!r}")
        return cls(pending, counter)

    def take(self, timer: dict[str, Any]) -> None:
        """Remove a timer about to fire; the timer registered under its type can no longer be cancelled."""
        self.pending.remove(timer)
        for other in self.pending:
            if other["event"] == timer["event"]:
                other["orphan"] = True

    def apply(self, run: RunState, now_ms: float | None) -> None:
        """Apply the timer operations recorded by a macrostep (XState's deferred schedule/cancel calls)."""
        pending = self.pending
        for event_type, delay in run.timer_ops:
            registered = next((t for t in pending if t["event"] == event_type and "orphan" not in t), None)
            if delay is None:
                if registered is not None:
                    pending.remove(registered)
                continue
            if registered is not None:
                registered["orphan"] = True
            assert now_ms is not None  # Statechart._now requires it for machines with delayed transitions
            pending.append(
                {
                    "id": f"{event_type}#{self.seq}",
                    "event": event_type,
                    "due": now_ms + delay,
                    "delay": delay,
                    "seq": self.seq,
                }
            )
            self.seq += 1
        run.timer_ops.clear()
        if run.status == _DONE:
            pending.clear()  # XState's stop procedure cancels every timer of a finished actor
        pending.sort(key=_firing_order)

    def report(self, fired: tuple[str, ...]) -> tuple[tuple[PendingTimer, ...], tuple[str, ...]]:
        timers = tuple(PendingTimer(t["id"], t["event"], t["due"], t["delay"]) for t in self.pending)
        remaining = {timer.id for timer in timers}
        cancelled = tuple(i for i in self.before if i not in remaining and i not in fired)
        return timers, cancelled


def _firing_order(timer: Mapping[str, Any]) -> tuple[float, int]:
    return timer["due"], timer["seq"]


_NO_TIMERS: Final = _TimerBook([], 0)
"""The (never mutated) timers of machines without delayed transitions."""


class _Plan:
    """What a microstep does to a configuration, independent of the context (cached per transition)."""

    __slots__ = ("after", "base", "entries", "exits", "has_final", "next_configuration")

    def __init__(
        self,
        *,
        exits: tuple[Node, ...],
        entries: tuple[Node, ...],
        base: tuple[Node, ...],
        after: tuple[Node, ...],
        next_configuration: _Configuration,
        has_final: bool,
    ) -> None:
        self.exits = exits  # exit order (deepest / last first)
        self.entries = entries  # entry order (document order)
        self.base = base  # active nodes once the exit set is removed, in order
        self.after = after  # active nodes after the microstep, in XState's order
        self.next_configuration = next_configuration
        self.has_final = has_final


class _Configuration:
    """An ordered active configuration (XState's ``_nodes``) with derived lookups, cached per order."""

    __slots__ = ("adj", "atomics", "node_set", "nodes", "plans", "select_trees", "value")

    def __init__(self, nodes: tuple[Node, ...], root: Node) -> None:
        self.nodes = nodes
        self.node_set = frozenset(nodes)
        adj: dict[Node, list[Node]] = {n: [] for n in nodes}
        for n in nodes:
            if n.parent is not None:
                adj.setdefault(n.parent, []).append(n)
        for children in adj.values():
            if len(children) > 1 and any(c.array_index is not None for c in children):
                # A JS state value object enumerates array-index keys first (ascending), whatever the
                # insertion order; XState walks Object.keys(value) when selecting transitions.
                children.sort(key=lambda c: (0, c.array_index) if c.array_index is not None else (1, 0))
        self.adj = adj
        self.atomics = tuple(n for n in nodes if n.is_atomic)
        self.plans: dict[Transition, _Plan] = {}
        self.select_trees: dict[str, _SelectionTree | None] = {}
        self.value: str | dict[str, Any] = _value_from_adj(root, adj)


def _value_from_adj(node: Node, adj: Mapping[Node, list[Node]]) -> Any:
    """XState ``getValueFromAdj``."""
    children = adj.get(node)
    if children is None:
        return {}
    if node.type == COMPOUND:
        if not children:
            return {}
        if children[0].is_atomic:
            return children[0].key
    return {child.key: _value_from_adj(child, adj) for child in children}


def _copy_value(value: Any) -> Any:
    if isinstance(value, str):
        return value
    return {key: _copy_value(child) for key, child in value.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _json_copy(value: Any, what: str) -> Any:
    try:
        return orjson.loads(orjson.dumps(value, default=_plain))
    except orjson.JSONEncodeError as exc:
        raise InvalidSnapshotError(f"snapshot {what} must be JSON-serialisable: {exc}") from None


def _wildcard_matches(descriptor: str, event_type: str) -> bool:
    """XState ``getCandidates`` partial-descriptor matching (``*`` and ``prefix.*``)."""
    if descriptor == "*":
        return True
    if not descriptor.endswith(".*"):
        return False
    event_tokens = event_type.split(".")
    partial_tokens = descriptor.split(".")
    last = len(partial_tokens) - 1
    for index, token in enumerate(partial_tokens):
        if token == "*":  # noqa: S105 - not a password
            return index == last
        if index >= len(event_tokens) or token != event_tokens[index]:
            return False
    return True  # pragma: no cover - a descriptor ending in '.*' always reaches its '*' token


def _candidates(node: Node, event_type: str) -> tuple[Transition, ...]:
    exact = node.transitions.get(event_type)
    if exact is not None:
        return exact
    matching = [d for d in node.transitions if _wildcard_matches(d, event_type)]
    matching.sort(key=len, reverse=True)  # stable: equal lengths keep document order
    return tuple(t for d in matching for t in node.transitions[d])


_SelectionTree = tuple[tuple[Transition, ...], tuple["_SelectionTree", ...]]


def _selection_tree(node: Node, adj: Mapping[Node, list[Node]], event_type: str) -> _SelectionTree | None:
    """The active subtree below ``node`` restricted to states with candidates for ``event_type``."""
    subtrees = tuple(t for t in (_selection_tree(c, adj, event_type) for c in adj[node]) if t is not None)
    candidates = node.candidates.get(event_type)
    if candidates is None:
        candidates = _candidates(node, event_type)
        if len(node.candidates) < _CANDIDATE_CACHE_LIMIT:
            node.candidates[event_type] = candidates
    if not subtrees and not candidates:
        return None
    return candidates, subtrees


def _evaluate_selection(
    tree: _SelectionTree, context: Mapping[str, Any], event: Mapping[str, Any], active: _Configuration
) -> list[Transition] | None:
    candidates, subtrees = tree
    if len(subtrees) == 1:
        found = _evaluate_selection(subtrees[0], context, event, active)
        if found:
            return found
    elif subtrees:
        collected: list[Transition] = []
        for subtree in subtrees:
            inner = _evaluate_selection(subtree, context, event, active)
            if inner:
                collected.extend(inner)
        if collected:
            return collected
    for transition in candidates:
        guard = transition.guard
        if guard is None or guard(context, event, active):
            return [transition]
    return None


def _is_in_final_state(active: Mapping[Node, None], node: Node) -> bool:
    """XState ``isInFinalState``."""
    if node.type == COMPOUND:
        return any(child.type == FINAL and child in active for child in node.children)
    if node.type == PARALLEL:
        return all(_is_in_final_state(active, child) for child in node.children)
    return node.type == FINAL


class Statechart:
    """A compiled statechart; stateless, thread-safe to share, cheap to step.

    Args:
        config: The machine config (see the module docstring for the supported keys).
        actions: Named actions (``fn(args)``/``fn(args, params)``, :func:`assign`, :func:`emit`).
        guards: Named guard implementations: ``fn(args)``/``fn(args, params)``, a combinator or
            :func:`state_in`.
        delays: Named delays for ``after`` keys (XState ``setup({delays})``): a number of ms, or
            ``fn(args)`` returning one, evaluated with the context and event of the state's entry.

    Raises:
        ConfigViolation: If the config uses a forbidden or unknown feature, an unknown state-node key, a
            missing/unknown initial state, an unresolvable target or an unimplemented named
            action/guard/delay.

    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        actions: Mapping[str, Any] | None = None,
        guards: Mapping[str, Any] | None = None,
        delays: Mapping[str, Any] | None = None,
    ) -> None:
        self._config = config
        self._model = MachineModel(
            config, actions=dict(actions or {}), guards=dict(guards or {}), delays=dict(delays or {})
        )
        self._root = self._model.root
        self._has_always = self._model.has_always
        self._has_after = self._model.has_after
        self._value_cache: dict[str | bytes, _Configuration] = {}
        self._order_cache: dict[tuple[Node, ...], _Configuration] = {}
        self._pre_initial = _Configuration((self._root,), self._root)
        self._definition: dict[str, Any] | None = None
        self._mermaid: str | None = None

    @property
    def id(self) -> str:
        """The machine id (``config["id"]``, or ``"(machine)"`` like XState)."""
        return self._model.id

    # -- public API --------------------------------------------------------------------------------

    def start(self, input: Any = None, *, now_ms: float | None = None) -> MachineStep:
        """Create the initial snapshot: build the context, enter the initial configuration, settle.

        Args:
            input: The machine input, available to a callable ``context`` as ``args.input``.
            now_ms: The current time in ms (see :meth:`send`); required when the machine has delayed
                transitions.

        Returns:
            The settled initial step (``status`` is ``"done"`` when a top-level final state was reached).

        Raises:
            ValueError: If ``now_ms`` is missing (machine with delayed transitions) or not a finite number.

        """
        now = self._now(now_ms)
        init_event = {"type": "xstate.init", "input": input}
        run = RunState(self._initial_context(input, init_event))
        configuration, _ = self._microstep(
            [self._model.init_transition], self._pre_initial, run, init_event, initial=True
        )
        configuration = self._macrostep(configuration, run, init_event, external=False)
        return self._result(configuration, run, _TimerBook([], 0) if self._has_after else _NO_TIMERS, now)

    def send(
        self, snapshot: Mapping[str, Any], event: Mapping[str, Any], *, now_ms: float | None = None
    ) -> MachineStep:
        """Process one event as a macrostep on a restored snapshot.

        The snapshot is not mutated; its context is deep-copied (JSON round trip). A ``done`` snapshot
        ignores events (returned unchanged, nothing emitted).

        Args:
            snapshot: A snapshot previously returned by a step (possibly JSON round-tripped).
            event: The event; must be a mapping with a string ``type``.
            now_ms: The current time in ms (virtual or wall time, the caller's choice): timers armed by
                this step are due at ``now_ms`` + their delay. Required when the machine has delayed
                transitions, ignored otherwise.

        Returns:
            The next settled step.

        Raises:
            ValueError: If the event has no string ``type`` or uses the wildcard type ``*``, or ``now_ms``
                is missing or not a finite number.
            InvalidSnapshotError: If the snapshot does not fit this machine.

        """
        if type(event) is not dict and not isinstance(event, Mapping):
            # A malformed event is a ValueError by contract (TRY004 prefers TypeError).
            raise ValueError(f"event must be a mapping with a 'type', got {type(event).__name__}")
        event_type = event.get("type")
        if not isinstance(event_type, str):
            raise ValueError(f"event.type must be a string, got {event_type!r}")  # noqa: TRY004
        if event_type == "*":
            raise ValueError("An event cannot have the wildcard type ('*')")
        now = self._now(now_ms)
        restored = self._restore_snapshot(snapshot)
        if isinstance(restored, MachineStep):
            return restored
        configuration, run, book = restored
        configuration = self._macrostep(configuration, run, event, external=True)
        return self._result(configuration, run, book, now)

    def fire_timer(self, snapshot: Mapping[str, Any], timer_id: str, *, now_ms: float) -> MachineStep:
        """Deliver one pending timer's delayed event as the next macrostep.

        The timer leaves the pending list first, then its event (``{"type": <timer event>}``) is processed
        like any event (a deeper ``*`` transition can take it, as in XState). Timers armed by the step are
        due at ``now_ms`` + their delay. Whether the timer is due is the caller's decision: it is fired
        even if ``now_ms`` is before its due time.

        Args:
            snapshot: A snapshot previously returned by a step.
            timer_id: The :attr:`PendingTimer.id` to fire.
            now_ms: The current time in ms.

        Returns:
            The next settled step with ``fired == (timer_id,)``; when the timer is not pending (already
            fired or cancelled: a stale or duplicate delivery) or the machine is done, the unchanged
            snapshot with ``fired == ()`` and nothing emitted.

        Raises:
            ValueError: If ``now_ms`` is not a finite number.
            InvalidSnapshotError: If the snapshot does not fit this machine.

        """
        now = self._now(now_ms, required=True)
        restored = self._restore_snapshot(snapshot)
        if isinstance(restored, MachineStep):
            return restored
        configuration, run, book = restored
        timer = next((t for t in book.pending if t["id"] == timer_id), None)
        if timer is None:
            return self._result(configuration, run, book, now)
        configuration = self._fire(configuration, run, book, timer, now)
        return self._result(configuration, run, book, now, fired=(timer_id,))

    def advance(
        self, snapshot: Mapping[str, Any], *, now_ms: float, max_firings: int = MAX_TIMER_FIRINGS
    ) -> MachineStep:
        """Fire every timer due by ``now_ms``, one macrostep each, in XState's order.

        The next timer is always the pending one with the earliest due time (then the earliest armed),
        re-evaluated after each firing: a timer armed meanwhile that is already due (a zero delay) fires in
        the same advance, a timer cancelled meanwhile does not fire. Timers armed during the advance are
        due at ``now_ms`` + their delay (like XState's ``SimulatedClock``, whose time has already moved).

        Args:
            snapshot: A snapshot previously returned by a step.
            now_ms: The time to advance to, in ms.
            max_firings: Bound on the timers fired (a zero-delay timer re-arming itself never settles).

        Returns:
            One step for the whole advance: the emitted events of every firing, the ids fired (in order)
            and cancelled, the pending timers after it.

        Raises:
            MachineLoopError: If more than ``max_firings`` timers are due.
            ValueError: If ``now_ms`` is not a finite number.
            InvalidSnapshotError: If the snapshot does not fit this machine.

        """
        now = self._now(now_ms, required=True)
        restored = self._restore_snapshot(snapshot)
        if isinstance(restored, MachineStep):
            return restored
        configuration, run, book = restored
        fired: list[str] = []
        while run.status == _ACTIVE and book.pending and book.pending[0]["due"] <= now:
            if len(fired) >= max_firings:
                raise MachineLoopError(
                    f"Machine '{self.id}' still had timers due after firing {max_firings} in one advance: "
                    "a delayed transition re-arms itself with a zero delay"
                )
            timer = book.pending[0]
            fired.append(timer["id"])
            configuration = self._fire(configuration, run, book, timer, now)
        return self._result(configuration, run, book, now, fired=tuple(fired))

    @property
    def has_delayed_transitions(self) -> bool:
        """Whether any state has ``after`` delays (then steps need ``now_ms`` and snapshots carry timers)."""
        return self._has_after

    def to_mermaid(self) -> str:
        """Render the machine as a Mermaid ``stateDiagram-v2`` (targetless transitions are omitted)."""
        if self._mermaid is None:
            self._mermaid = render_mermaid(self._root)
        return self._mermaid

    def definition(self) -> dict[str, Any]:
        """The config as JSON-able data; functions appear as their name or ``"<inline>"``."""
        if self._definition is None:
            self._definition = jsonable_definition(self._config)
        result: dict[str, Any] = orjson.loads(orjson.dumps(self._definition))
        return result

    # -- configuration handling --------------------------------------------------------------------

    def _initial_context(self, input: Any, init_event: Mapping[str, Any]) -> dict[str, Any]:
        factory = self._model.context
        if factory is None:
            return {}
        if callable(factory):
            produced = factory(ActionArgs(context={}, event=init_event, input=input))
            if produced is None:
                return {}
            if not isinstance(produced, Mapping):
                raise TypeError(f"context factory must return a mapping, got {type(produced).__name__}")
            return dict(produced)
        context: dict[str, Any] = _json_copy(factory, "context")
        return context

    def _configuration(self, nodes: tuple[Node, ...]) -> _Configuration:
        cached = self._order_cache.get(nodes)
        if cached is None:
            if len(self._order_cache) >= _CACHE_LIMIT:
                self._order_cache.clear()
            cached = self._order_cache[nodes] = _Configuration(nodes, self._root)
        return cached

    def _restore(self, value: Any) -> _Configuration:
        if isinstance(value, str):
            key: str | bytes = value
        elif isinstance(value, Mapping):
            try:
                key = orjson.dumps(value, default=_plain)
            except orjson.JSONEncodeError as exc:
                raise InvalidSnapshotError(f"snapshot.value is not a state value: {exc}") from None
        else:
            raise InvalidSnapshotError(f"snapshot.value must be a string or a mapping, got {value!r}")
        cached = self._value_cache.get(key)
        if cached is None:
            nodes = self._nodes_from_value(value)
            if len(self._value_cache) >= _CACHE_LIMIT:
                self._value_cache.clear()
            cached = self._value_cache[key] = self._configuration(tuple(nodes))
        return cached

    def _nodes_from_value(self, value: Any) -> list[Node]:
        """XState ``getAllStateNodes(getStateNodes(root, value))``, then a consistency check."""
        root = self._root

        def child_of(node: Node, key: Any) -> Node:
            child = node.states.get(key) if isinstance(key, str) else None
            if child is None:
                raise InvalidSnapshotError(
                    f"snapshot.value: state {key!r} does not exist on '#{node.id}' of machine '{self.id}'"
                )
            return child

        def state_nodes(node: Node, sub_value: Any) -> list[Node]:
            if isinstance(sub_value, str):
                return [node, child_of(node, sub_value)]
            if not isinstance(sub_value, Mapping):
                raise InvalidSnapshotError(
                    f"snapshot.value: expected a string or a mapping, got {sub_value!r}"
                )
            keys = js_key_order(sub_value)  # Object.keys order, as XState reads a parsed value
            children = [child_of(node, key) for key in keys]
            result = [root, node, *children]
            for key, child in zip(keys, children, strict=True):
                result.extend(state_nodes(child, sub_value[key]))
            return result

        listed = list(dict.fromkeys(state_nodes(root, value)))
        present = set(listed)
        adjacency: dict[Node, list[Node]] = {}
        for n in listed:
            adjacency.setdefault(n, [])
            if n.parent is not None:
                adjacency.setdefault(n.parent, []).append(n)

        def add(n: Node) -> None:
            if n not in present:
                present.add(n)
                listed.append(n)

        index = 0
        while index < len(listed):
            n = listed[index]
            index += 1
            if n.type == COMPOUND and not adjacency.get(n):
                for initial in self._model._initial_nodes(n):
                    add(initial)
            elif n.type == PARALLEL:
                for child in n.children:
                    if child not in present:
                        for initial in self._model._initial_nodes(child):
                            add(initial)
        index = 0
        while index < len(listed):
            for ancestor in listed[index].ancestors:
                add(ancestor)
            index += 1
        for n in listed:
            if n.type == COMPOUND and sum(1 for c in n.children if c in present) != 1:
                raise InvalidSnapshotError(
                    f"snapshot.value: compound state '#{n.id}' must have exactly one active child"
                )
        return listed

    def _now(self, now_ms: float | None, *, required: bool = False) -> float | None:
        if now_ms is None and not required and not self._has_after:
            return None
        if now_ms is None:
            if required or self._has_after:
                raise ValueError(
                    f"now_ms is required: machine '{self.id}' has delayed transitions ('after'), whose "
                    "timers are due at now_ms + delay"
                )
            return None
        if not _is_number(now_ms):
            raise ValueError(f"now_ms must be a finite number of milliseconds, got {now_ms!r}")
        return now_ms

    def _restore_snapshot(
        self, snapshot: Mapping[str, Any]
    ) -> MachineStep | tuple[_Configuration, RunState, _TimerBook]:
        """The configuration, a run state and the timers of a snapshot, or the unchanged ``done`` step."""
        if type(snapshot) is not dict and not isinstance(snapshot, Mapping):
            raise InvalidSnapshotError(f"snapshot must be a mapping, got {type(snapshot).__name__}")
        status = snapshot.get("status")
        if status == _DONE:
            done = {
                "status": _DONE,
                "value": _json_copy(snapshot.get("value"), "value"),
                "context": _json_copy(snapshot.get("context"), "context"),
                "output": _json_copy(snapshot.get("output"), "output"),
            }
            if self._has_after:
                done["timers"] = []
                done["timerSeq"] = _TimerBook.read({"timerSeq": snapshot.get("timerSeq", 0)}).seq
            return MachineStep(done, [])
        if status != _ACTIVE:
            raise InvalidSnapshotError(f"snapshot.status must be 'active' or 'done', got {status!r}")
        configuration = self._restore(snapshot.get("value"))
        context = snapshot.get("context")
        if type(context) is not dict and not isinstance(context, Mapping):
            raise InvalidSnapshotError(f"snapshot.context must be a mapping, got {type(context).__name__}")
        book = _TimerBook.read(snapshot) if self._has_after else _NO_TIMERS
        return configuration, RunState(_json_copy(context, "context")), book

    def _fire(
        self,
        configuration: _Configuration,
        run: RunState,
        book: _TimerBook,
        timer: dict[str, Any],
        now: float | None,
    ) -> _Configuration:
        book.take(timer)
        configuration = self._macrostep(configuration, run, {"type": timer["event"]}, external=True)
        book.apply(run, now)
        return configuration

    def _result(
        self,
        configuration: _Configuration,
        run: RunState,
        book: _TimerBook,
        now: float | None,
        *,
        fired: tuple[str, ...] = (),
    ) -> MachineStep:
        snapshot = {
            "status": run.status,
            "value": _copy_value(configuration.value),
            "context": run.ctx,
            "output": run.output,
        }
        if not self._has_after:
            return MachineStep(snapshot, run.emitted)
        book.apply(run, now)
        snapshot["timers"] = [dict(timer) for timer in book.pending]
        snapshot["timerSeq"] = book.seq
        timers, cancelled = book.report(fired)
        return MachineStep(snapshot, run.emitted, timers, cancelled, fired)

    # -- the algorithm (XState v5 macrostep / microstep) -------------------------------------------

    def _macrostep(
        self, configuration: _Configuration, run: RunState, event: Mapping[str, Any], *, external: bool
    ) -> _Configuration:
        if external:
            selected = self._select(configuration, run, event, event["type"])
            if selected:
                configuration, _ = self._microstep(selected, configuration, run, event)
        queue = run.queue
        current_event = event
        select_eventless = True
        microsteps = 0
        while run.status == _ACTIVE:
            enabled = (
                self._select_eventless(configuration, run, current_event)
                if select_eventless and self._has_always
                else []
            )
            eventless = bool(enabled)
            if not eventless:
                if not queue:
                    break
                current_event = queue.pop(0)
                enabled = self._select(configuration, run, current_event, current_event["type"]) or []
            microsteps += 1
            if microsteps > MAX_MICROSTEPS:
                raise MachineLoopError(
                    f"Machine '{self.id}' did not settle after {MAX_MICROSTEPS} microsteps in one step: "
                    "eventless ('always') transitions or internal done events loop forever"
                )
            if enabled:
                configuration, changed = self._microstep(enabled, configuration, run, current_event)
            else:
                changed = False
            # XState re-selects eventless transitions after an eventless microstep only if the snapshot
            # changed (context assigned or configuration changed); always after an internal event.
            select_eventless = changed if eventless else True
        return configuration

    def _select(
        self, configuration: _Configuration, run: RunState, event: Mapping[str, Any], event_type: str
    ) -> list[Transition] | None:
        """XState ``transitionNode``: deepest enabled transitions per region, else the node's own.

        The walk is precompiled per (configuration, event type) into a tree pruned to the states that
        have candidate transitions, so an unhandled event costs one dict lookup.
        """
        trees = configuration.select_trees
        if event_type in trees:
            tree = trees[event_type]
        else:
            tree = _selection_tree(self._root, configuration.adj, event_type)
            if len(trees) < _CANDIDATE_CACHE_LIMIT:
                trees[event_type] = tree
        if tree is None:
            return None
        return _evaluate_selection(tree, run.ctx, event, configuration)

    def _select_eventless(
        self, configuration: _Configuration, run: RunState, event: Mapping[str, Any]
    ) -> list[Transition]:
        """XState ``selectEventlessTransitions``."""
        enabled: list[Transition] = []
        for atomic in configuration.atomics:
            for node in atomic.always_chain:
                chosen = None
                for transition in node.always:
                    guard = transition.guard
                    if guard is None or guard(run.ctx, event, configuration):
                        chosen = transition
                        break
                if chosen is not None:
                    if chosen not in enabled:
                        enabled.append(chosen)
                    break
        if len(enabled) > 1:
            return self._remove_conflicts(enabled, configuration.nodes)
        return enabled

    @staticmethod
    def _exit_set(transitions: list[Transition], nodes: tuple[Node, ...]) -> list[Node]:
        """XState ``computeExitSet``, sorted deepest/last first."""
        exits: dict[Node, None] = {}
        for t in transitions:
            if not t.targets:
                continue
            domain = t.domain
            if t.reenter and t.source is domain:
                exits[domain] = None
            for n in nodes:
                if domain is None or domain in n.ancestor_set:
                    exits[n] = None
        return sorted(exits, key=lambda n: n.order, reverse=True)

    def _remove_conflicts(self, enabled: list[Transition], nodes: tuple[Node, ...]) -> list[Transition]:
        """XState ``removeConflictingTransitions`` (earlier selection wins unless a descendant source)."""
        filtered: list[Transition] = []
        exit_sets: dict[Transition, set[Node]] = {}
        for t1 in enabled:
            exit1 = exit_sets.setdefault(t1, set(self._exit_set([t1], nodes)))
            preempted = False
            to_remove: list[Transition] = []
            for t2 in filtered:
                if exit1 & exit_sets[t2]:
                    if t2.source in t1.source.ancestor_set:
                        to_remove.append(t2)
                    else:
                        preempted = True
                        break
            if not preempted:
                for t3 in to_remove:
                    filtered.remove(t3)
                filtered.append(t1)
        return filtered

    def _plan(self, transitions: list[Transition], configuration: _Configuration, initial: bool) -> _Plan:
        exits = () if initial else tuple(self._exit_set(transitions, configuration.nodes))
        if len(transitions) == 1:
            t = transitions[0]
            entries = t.entry_sorted
            if entries is None:
                entries = t.entry_sorted = tuple(sorted(compute_entry_set([t]), key=lambda n: n.order))
        else:
            entries = tuple(sorted(compute_entry_set(transitions), key=lambda n: n.order))
        exited = set(exits)
        base = tuple(n for n in configuration.nodes if n not in exited)
        after = dict.fromkeys(base)
        for node in entries:
            after[node] = None
        same = after.keys() == configuration.node_set
        return _Plan(
            exits=exits,
            entries=entries,
            base=base,
            after=tuple(after),
            next_configuration=configuration if same else self._configuration(tuple(after)),
            has_final=any(n.type == FINAL for n in entries),
        )

    def _microstep(
        self,
        transitions: list[Transition],
        configuration: _Configuration,
        run: RunState,
        event: Mapping[str, Any],
        *,
        initial: bool = False,
    ) -> tuple[_Configuration, bool]:
        """XState ``microstep``; returns the next configuration and whether the snapshot changed.

        Everything that depends only on the configuration and the transitions (exit set, entry set,
        resulting node order) is planned once and cached on the configuration.
        """
        if len(transitions) == 1:
            plans = configuration.plans
            plan = plans.get(transitions[0])
            if plan is None:
                plan = self._plan(transitions, configuration, initial)
                if len(plans) < _CANDIDATE_CACHE_LIMIT:
                    plans[transitions[0]] = plan
        else:
            transitions = self._remove_conflicts(transitions, configuration.nodes)
            plan = self._plan(transitions, configuration, initial)
        run.assigned = False
        for node in plan.exits:
            for action in node.exit:
                action(run, event)
        for t in transitions:
            for action in t.actions:
                action(run, event)
        if plan.has_final:
            self._enter_states(plan, run, event)
        else:
            for node in plan.entries:
                for action in node.entry:
                    action(run, event)
        next_configuration = plan.next_configuration
        if run.status == _ACTIVE:
            return next_configuration, run.assigned or next_configuration is not configuration
        # Done: XState runs the exit actions of every active state (deepest/last first) and keeps the
        # nodes in that order, which is the order the final state value lists parallel regions in.
        ordered = sorted(plan.after, key=lambda n: n.order, reverse=True)
        for node in ordered:
            for action in node.exit:
                action(run, event)
        if next_configuration is not configuration:
            next_configuration = self._configuration(tuple(ordered))
        return next_configuration, True

    def _enter_states(self, plan: _Plan, run: RunState, event: Mapping[str, Any]) -> None:
        """XState ``enterStates`` (entry actions, done events, machine completion and output)."""
        active = dict.fromkeys(plan.base)
        completed: set[Node] = set()
        for node in plan.entries:
            active[node] = None
            for action in node.entry:
                action(run, event)
            if node.type != FINAL:
                continue
            parent = node.parent
            marker: Node | None
            if parent is None:
                marker = None
            else:
                marker = parent if parent.type == PARALLEL else parent.parent
            completion = marker or node
            if parent is not None and parent.type == COMPOUND:
                output = self._resolve_output(node.output, run.ctx, event) if node.has_output else None
                run.queue.append({"type": parent.done_type, "output": output})
            while (
                marker is not None
                and marker.type == PARALLEL
                and marker not in completed
                and _is_in_final_state(active, marker)
            ):
                completed.add(marker)
                run.queue.append({"type": marker.done_type, "output": None})
                completion = marker
                marker = marker.parent
            if marker is not None:
                continue
            run.status = _DONE
            run.output = self._machine_output(run, event, completion)

    def _machine_output(self, run: RunState, event: Mapping[str, Any], completion: Node) -> Any:
        root = self._root
        if not root.has_output:
            return None
        inner = (
            self._resolve_output(completion.output, run.ctx, event)
            if completion.has_output and completion.parent is not None
            else None
        )
        done_event = {"type": completion.done_type, "output": inner}
        return self._resolve_output(root.output, run.ctx, done_event)

    @staticmethod
    def _resolve_output(mapper: Any, context: Mapping[str, Any], event: Mapping[str, Any]) -> Any:
        if callable(mapper):
            output_fn: Callable[[ActionArgs], Any] = mapper
            return output_fn(ActionArgs(context=context, event=event))
        return copy.deepcopy(mapper)
