"""Rendering of a compiled statechart: Mermaid diagrams and a JSON-able definition (private)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.arvo.machine._actions import Assign, Emit, GuardCombinator, StateIn
from service.arvo.machine._model import FINAL, PARALLEL, Node, Transition

__all__ = ["jsonable_definition", "render_mermaid"]

_INDENT = "    "


def _function_name(fn: Any) -> str:
    name = getattr(fn, "__name__", "")
    return name if isinstance(name, str) and name.isidentifier() else "<inline>"


def jsonable_definition(value: Any) -> Any:
    """Convert a machine config into JSON-able data (functions become their name or ``"<inline>"``)."""
    if isinstance(value, Mapping):
        return {str(key): jsonable_definition(child) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable_definition(child) for child in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Assign):
        return {"type": "xstate.assign"}
    if isinstance(value, Emit):
        event = value.event
        return {
            "type": "xstate.emit",
            "event": _function_name(event) if callable(event) else jsonable_definition(event),
        }
    if isinstance(value, StateIn):
        return {"type": "xstate.stateIn", "stateValue": jsonable_definition(value.state_value)}
    if isinstance(value, GuardCombinator):
        return {"type": f"xstate.{value.kind}", "guards": [jsonable_definition(g) for g in value.guards]}
    if callable(value):
        return _function_name(value)
    return repr(value)


def _mermaid_id(node: Node) -> str:
    return f"s{node.order}"


def _escape(label: str) -> str:
    return label.replace('"', "'").replace(":", "#58;").replace(";", "#59;")


def _transition_label(t: Transition, node: Node) -> str:
    if t.event_type == "":
        label = "always"
    elif t.event_type == node.done_type:
        label = "onDone"
    elif t.delay is not None:
        label = f"after {t.delay}"
    else:
        label = t.event_type
    if t.guard_label is not None:
        label = f"{label} [{t.guard_label}]"
    return _escape(label)


def _render_children(node: Node, depth: int, lines: list[str]) -> None:
    pad = _INDENT * depth
    if node.type == PARALLEL:
        for index, region in enumerate(node.children):
            if index:
                lines.append(f"{pad}--")
            lines.append(f'{pad}state "{_escape(region.key)}" as {_mermaid_id(region)}')
            if region.children:
                _render_composite(region, depth, lines)
            _render_transitions(region, pad, lines)
        return
    lines.extend(f'{pad}state "{_escape(child.key)}" as {_mermaid_id(child)}' for child in node.children)
    for child in node.children:
        if child.children:
            _render_composite(child, depth, lines)
    if node.initial is not None:
        lines.append(f"{pad}[*] --> {_mermaid_id(node.initial)}")
    for child in node.children:
        _render_transitions(child, pad, lines)
        if child.type == FINAL:
            lines.append(f"{pad}{_mermaid_id(child)} --> [*]")


def _render_composite(node: Node, depth: int, lines: list[str]) -> None:
    pad = _INDENT * depth
    lines.append(f"{pad}state {_mermaid_id(node)} {{")
    _render_children(node, depth + 1, lines)
    lines.append(f"{pad}}}")


def _render_transitions(node: Node, pad: str, lines: list[str]) -> None:
    source = _mermaid_id(node)
    lines.extend(
        f"{pad}{source} --> {_mermaid_id(target)} : {_transition_label(t, node)}"
        for transitions in (*node.transitions.values(), node.always)
        for t in transitions
        for target in t.targets or ()
    )


def render_mermaid(root: Node) -> str:
    """Render the state tree as a Mermaid ``stateDiagram-v2``.

    States are declared with their key as label (``state "idle" as s1``; ids follow document order),
    compound and parallel states become composite blocks (regions separated by ``--``), ``[*] -->``
    marks initial states, final states lead to ``[*]``. Edges are labelled with the event type (``always``
    for eventless transitions, ``onDone`` for done transitions, ``after <delay>`` for delayed transitions)
    and ``[guard]`` when guarded.
    Targetless transitions are omitted; transitions declared on the root (which has no box of its own)
    are listed as ``%%`` comments.
    """
    lines = ["stateDiagram-v2"]
    _render_children(root, 1, lines)
    for transitions in [*root.transitions.values(), root.always]:
        for t in transitions:
            for target in t.targets or ():
                label = _transition_label(t, root)
                lines.append(f"{_INDENT}%% from the root: {label} --> {_mermaid_id(target)}")
    return "\n".join(lines) + "\n"
