"""Action and guard building blocks of the statechart interpreter (re-exported by ``statechart``).

These mirror XState v5's ``assign``, ``emit``, ``and``, ``or``, ``not`` and ``stateIn`` helpers. User
functions receive an :class:`ActionArgs` and, when they accept a second positional parameter, the resolved
``params``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

__all__ = [
    "ActionArgs",
    "ActionImpl",
    "Assign",
    "Emit",
    "GuardCombinator",
    "GuardImpl",
    "GuardRef",
    "StateIn",
    "and_",
    "assign",
    "call_with_params",
    "emit",
    "not_",
    "or_",
    "state_in",
]


class ActionArgs:
    """What actions, guards, ``params`` functions, ``context`` factories and ``output`` mappers receive.

    Attributes:
        context: The machine context at the time of the call (already updated by earlier ``assign``
            actions of the same step). Treat as read-only: change it with :func:`assign`.
        event: The event being processed (the external event, an internal ``xstate.done.state.*`` event,
            or ``{"type": "xstate.init", "input": ...}`` during :meth:`Statechart.start`).
        input: The machine input; only set for the ``context`` factory (``None`` elsewhere).

    """

    __slots__ = ("context", "event", "input")

    def __init__(self, *, context: Mapping[str, Any], event: Mapping[str, Any], input: Any = None) -> None:
        self.context = context
        self.event = event
        self.input = input

    def __repr__(self) -> str:
        return f"ActionArgs(context={self.context!r}, event={self.event!r}, input={self.input!r})"


class Assign:
    """Built-in action that updates the context (XState ``assign``); create it with :func:`assign`."""

    __slots__ = ("assignment",)

    def __init__(self, *, assignment: Callable[..., Any] | Mapping[str, Any]) -> None:
        self.assignment = assignment

    def __repr__(self) -> str:
        return f"assign({self.assignment!r})"


class Emit:
    """Built-in action that emits an event to the caller (XState ``emit``); create it with :func:`emit`."""

    __slots__ = ("event",)

    def __init__(self, *, event: Callable[..., Any] | Mapping[str, Any]) -> None:
        self.event = event

    def __repr__(self) -> str:
        return f"emit({self.event!r})"


GuardRef: TypeAlias = "str | Mapping[str, Any] | Callable[..., Any] | GuardCombinator | StateIn"
"""A guard as written in a config: a name, ``{"type": name, "params": ...}``, a function, a combinator or
:func:`state_in`."""


class GuardCombinator:
    """Higher-order guard (XState and/or/not), built by :func:`and_`, :func:`or_`, :func:`not_`."""

    __slots__ = ("guards", "kind")

    def __init__(self, *, kind: Literal["and", "or", "not"], guards: Sequence[GuardRef]) -> None:
        self.kind = kind
        self.guards: tuple[GuardRef, ...] = tuple(guards)

    def __repr__(self) -> str:
        return f"{self.kind}_({list(self.guards)!r})"


class StateIn:
    """Built-in guard passing while the machine is in a state (XState ``stateIn``); see :func:`state_in`."""

    __slots__ = ("state_value",)

    def __init__(self, *, state_value: str | Mapping[str, Any]) -> None:
        self.state_value = state_value

    def __repr__(self) -> str:
        return f"state_in({self.state_value!r})"


ActionImpl: TypeAlias = "Callable[..., Any] | Assign | Emit"
"""A named action implementation: ``fn(args)`` / ``fn(args, params)``, or a built-in action."""

GuardImpl: TypeAlias = "Callable[..., Any] | GuardCombinator | StateIn | str | Mapping[str, Any]"
"""A named guard implementation: ``fn(args)``/``fn(args, params)`` returning truthiness, a combinator or
:func:`state_in`."""


def assign(assignment: Callable[..., Any] | Mapping[str, Any]) -> Assign:
    """Return an action that merges a partial update into the context (XState v5 ``assign``).

    Args:
        assignment: Either ``fn(args[, params]) -> Mapping`` returning the keys to update, or a mapping of
            key to a value or to ``fn(args[, params])`` computing it.

    Returns:
        The built-in action. Later actions of the same step see the updated context.

    Raises:
        TypeError: If ``assignment`` is neither callable nor a mapping.

    """
    if not callable(assignment) and not isinstance(assignment, Mapping):
        raise TypeError(f"assign(): expected a function or a mapping, got {type(assignment).__name__}")
    return Assign(assignment=assignment)


def emit(event: Callable[..., Any] | Mapping[str, Any]) -> Emit:
    """Return an action that emits an event to the caller of ``start``/``send`` (XState v5 ``emit``).

    Args:
        event: The event mapping, or ``fn(args[, params]) -> Mapping`` computing it.

    Returns:
        The built-in action; emitted events are returned in emission order in :class:`MachineStep`.

    Raises:
        TypeError: If ``event`` is neither callable nor a mapping.

    """
    if not callable(event) and not isinstance(event, Mapping):
        raise TypeError(f"emit(): expected a function or a mapping, got {type(event).__name__}")
    return Emit(event=event)


def and_(guards: Sequence[GuardRef]) -> GuardCombinator:
    """Guard that passes when every guard passes (evaluated in order, short-circuit); XState ``and``."""
    return GuardCombinator(kind="and", guards=list(guards))


def or_(guards: Sequence[GuardRef]) -> GuardCombinator:
    """Guard that passes when any guard passes (evaluated in order, short-circuit); XState ``or``."""
    return GuardCombinator(kind="or", guards=list(guards))


def not_(guard: GuardRef) -> GuardCombinator:
    """Guard that passes when ``guard`` does not; XState ``not``."""
    return GuardCombinator(kind="not", guards=[guard])


def state_in(state_value: str | Mapping[str, Any]) -> StateIn:
    """Guard that passes while the machine is in the given state (XState v5 ``stateIn``).

    Args:
        state_value: ``"#id"`` (the state node with that id is active), a path from the root
            (``"a.b"``: the state value matches ``{"a": "b"}``) or a partial state value
            (``{"a": "b"}``, ``{"p": {"r1": "x"}}``), matched like XState's ``snapshot.matches``.

    Returns:
        The built-in guard; usable alone, inside :func:`and_`/:func:`or_`/:func:`not_` and as a named
        guard implementation. It sees the active states at the time the guard is evaluated (before
        the transition it guards is taken). Ids and paths that do not exist are rejected when the
        chart is built.

    Raises:
        TypeError: If ``state_value`` is neither a string nor a mapping.

    """
    if not isinstance(state_value, str | Mapping):
        raise TypeError(f"state_in(): expected a string or a mapping, got {type(state_value).__name__}")
    return StateIn(state_value=state_value)


def _accepts_params(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a second positional argument (the ``params``)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature metadata
        return False
    positional = 0
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


def call_with_params(fn: Callable[..., Any]) -> Callable[[ActionArgs, Any], Any]:
    """Normalise a user function to the ``fn(args, params)`` calling convention (decided once, here)."""
    if _accepts_params(fn):
        return fn

    def one_arg(args: ActionArgs, _params: Any) -> Any:
        return fn(args)

    return one_arg
