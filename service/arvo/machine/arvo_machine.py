"""Arvo machines: statecharts bound to an orchestrator contract and its service contracts (spec 11.2–11.3).

Machines are written as Python dicts that mirror XState configs::

    machine = setup_arvo_machine(
        contracts={"self": order_contract.version("1.0.0"), "services": {"charge": charge.version("1.0.0")}},
        actions={"remember_charge": assign(lambda args: {"charge_id": args.event["data"]["chargeId"]})},
        guards={"is_paid": lambda args: args.context["paid"]},
    ).create_machine({
        "id": "order",
        "context": lambda args: {"order": args.input["data"]},
        "initial": "charging",
        "states": {...},
        "output": lambda args: {"status": "done"},
    })

Events reach the machine as the full event JSON (``event["type"]``, ``event["data"]``, …); the init
event is not delivered as an event, it only feeds ``context`` (``args.input``). Outgoing events are
produced with ``emit(...)`` or :func:`enqueue_arvo_event`.

Every event type a machine emits through ``emit(...)`` must be accepted by one of its service contracts
(or be its own completion type): :meth:`ArvoMachineSetup.create_machine` rejects the machine otherwise,
naming the type and where it is emitted. The types it can see are the literal ones: ``emit({"type":
"com.x", ...})``, and functions (``emit(lambda args: {"type": "com.x", ...})``, a named ``def``) whose
returned dict has a literal ``"type"`` in their source. A type computed at run time (``{"type":
args.context["next"]}``), a function whose source is not available, and events queued with
:func:`enqueue_arvo_event` / the ``enqueueArvoEvent`` action (the way to emit an event no contract
describes, sent without validation as in the original) are not checked.

Unlike the original (which rejects them), machines may use XState delayed transitions (``after``, with
named delays passed as ``delays=`` to :func:`setup_arvo_machine`): each step returns the pending timers
and the cancelled ones, and :meth:`ArvoMachine.fire_timer` delivers a due timer (see
``service.arvo.machine.statechart``).
"""

from __future__ import annotations

import ast
import difflib
import functools
import linecache
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from service.arvo.contract import VersionedArvoContract
from service.arvo.errors import ConfigViolation
from service.arvo.event import ArvoEvent
from service.arvo.machine.statechart import Emit, MachineStep, Statechart, assign
from service.arvo.orchestration.input_validation import EventValidationResult, validate_input_event

__all__ = [
    "ARVO_CONTEXT_KEY",
    "ArvoMachine",
    "ArvoMachineSetup",
    "enqueue_arvo_event",
    "setup_arvo_machine",
]

ARVO_CONTEXT_KEY = "arvo$$"
_VOLATILE_KEY = "volatile$$"
_QUEUE_KEY = "eventQueue$$"
_RESERVED_ACTION = "enqueueArvoEvent"


def _appended_queue(context: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    arvo = dict(context.get(ARVO_CONTEXT_KEY) or {})
    volatile = dict(arvo.get(_VOLATILE_KEY) or {})
    volatile[_QUEUE_KEY] = [*(volatile.get(_QUEUE_KEY) or []), dict(payload)]
    arvo[_VOLATILE_KEY] = volatile
    return {ARVO_CONTEXT_KEY: arvo}


def enqueue_arvo_event(payload: Mapping[str, Any] | Callable[[Any], Mapping[str, Any]]) -> Any:
    """Action that queues an Arvo event for emission (after every ``emit``-ted event of the step).

    ``payload`` is a raw event dict (``type``, ``data``, optional ``domain``, ``to``, ``id`` …) or a
    function of the action arguments returning one.
    """

    def update(args: Any) -> dict[str, Any]:
        value = payload(args) if callable(payload) else payload
        return _appended_queue(args.context, value)

    return assign(update)


def take_queued_events(context: dict[str, Any]) -> list[dict[str, Any]]:
    """Remove and return the events queued by :func:`enqueue_arvo_event` (clears ``volatile$$``)."""
    arvo = context.get(ARVO_CONTEXT_KEY)
    if not isinstance(arvo, dict):
        return []
    volatile = arvo.pop(_VOLATILE_KEY, None)
    if not isinstance(volatile, dict):
        return []
    queued = volatile.get(_QUEUE_KEY) or []
    return [dict(item) for item in queued]


def _enqueue_with_params(args: Any, params: Any) -> dict[str, Any]:
    if not isinstance(params, Mapping):
        raise ConfigViolation(f"the '{_RESERVED_ACTION}' action needs params with the event to enqueue")
    return _appended_queue(args.context, params)


def _unsupported(feature: str, what: str) -> ConfigViolation:
    return ConfigViolation(
        f"Configuration Error: '{feature}' not supported in Arvo machines\n"
        f"Arvo machines do not support XState {what} as they introduce asynchronous behavior.\n"
        "To fix:\n"
        f"1. Remove the '{feature}' configuration\n"
        "2. Use Arvo's event-driven patterns instead for asynchronous operations"
    )


def validate_service_contracts(
    self_contract: VersionedArvoContract, services: Mapping[str, VersionedArvoContract], owner: str
) -> None:
    """Service URIs must be unique and must not include the self contract (spec 11.2).

    Raises:
        ConfigViolation: with the original's message, naming ``owner`` (ArvoMachine/ArvoResumable).

    """
    seen: dict[str, str] = {}
    for key, contract in services.items():
        if contract.uri in seen:
            raise ConfigViolation(
                f"In {owner}, the service contracts must have unique URIs. Multiple versions of the same "
                f"contract are not allow. The contracts '{key}' and '{seen[contract.uri]}' have the same "
                f"URI '{contract.uri}'"
            )
        seen[contract.uri] = key
        if contract.uri == self_contract.uri:
            raise ConfigViolation(
                f"In {owner}, Circular dependency detected: Machine with URI '{self_contract.uri}' is "
                f"registered as service '{key}'. Self-referential services create execution loops and are "
                "prohibited."
            )


def _has_parallel_states(node: Mapping[str, Any]) -> bool:
    states = node.get("states")
    if node.get("type") == "parallel" and isinstance(states, Mapping):
        return True
    if isinstance(states, Mapping):
        return any(isinstance(child, Mapping) and _has_parallel_states(child) for child in states.values())
    return False


# -- definition-time check of emitted event types ------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _parsed_source(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _own_returns(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.expr]:
    """The values of the ``return`` statements of ``function`` itself (not of nested scopes)."""
    pending: list[ast.AST] = list(function.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Return) and node.value is not None:
            yield node.value
        pending.extend(ast.iter_child_nodes(node))


def _literal_types(expression: ast.expr) -> list[str]:
    """The literal ``"type"`` values of the event dicts ``expression`` can evaluate to."""
    if isinstance(expression, ast.IfExp):
        return [*_literal_types(expression.body), *_literal_types(expression.orelse)]
    if isinstance(expression, ast.Dict):
        for key, value in zip(expression.keys, expression.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "type":
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return [value.value]
                return []
        return []
    if (
        isinstance(expression, ast.Call)
        and isinstance(expression.func, ast.Name)
        and expression.func.id == "dict"
    ):
        for keyword in expression.keywords:
            if keyword.arg == "type":
                value = keyword.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return [value.value]
        return []
    return []


def _function_node(tree: ast.Module, code: Any) -> ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The syntax node that compiled to ``code``; ``None`` when it cannot be told apart."""
    positions = [position for position in code.co_positions() if position[0] == code.co_firstlineno]
    columns = {position[2] for position in positions if position[2] is not None}
    found: list[ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda):
            if code.co_name == "<lambda>" and node.lineno == code.co_firstlineno:
                found.append(node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == code.co_name:
            first_line = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
            if first_line == code.co_firstlineno:
                found.append(node)
    if len(found) > 1:
        # Several lambdas on one line: the one whose body starts at a column the code was compiled from.
        found = [
            node for node in found if isinstance(node, ast.Lambda) and node.body.col_offset in columns
        ] or found
    return found[0] if len(found) == 1 else None


def _returned_literal_types(function: Callable[..., Any]) -> list[str]:
    """Literal event types ``function``'s source returns (empty when unknown: dynamic or no source)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return []
    lines = linecache.getlines(code.co_filename, getattr(function, "__globals__", None))
    tree = _parsed_source("".join(lines)) if lines else None
    node = _function_node(tree, code) if tree is not None else None
    if node is None:
        return []
    if isinstance(node, ast.Lambda):
        found = _literal_types(node.body)
    else:
        found = [event_type for value in _own_returns(node) for event_type in _literal_types(value)]
    # A source changed on disk since the import can put another function at that line: its types are
    # constants of the compiled code only when the source read is the one that was compiled.
    return found if all(event_type in code.co_consts for event_type in found) else []


def _emitted_types(emitter: Emit) -> list[str]:
    if isinstance(emitter.event, Mapping):
        event_type = emitter.event.get("type")
        return [event_type] if isinstance(event_type, str) else []
    return _returned_literal_types(emitter.event)


class _EmissionScanner:
    """Collects ``(type, location, note)`` of the literal ``emit`` types of a machine config.

    Locations are those of the chart's own configuration errors (``state > on > evt.x > actions``).
    """

    def __init__(self, actions: Mapping[str, Any]) -> None:
        self.actions = actions
        self.found: list[tuple[str, str, str | None]] = []

    def node(self, config: Mapping[str, Any], labels: tuple[str, ...]) -> None:
        location = " > ".join(labels) if labels else "(root)"
        for key in ("entry", "exit"):
            self.actions_of(config.get(key), f"{location} > {key}")
        on = config.get("on")
        if isinstance(on, Mapping):
            for descriptor, spec in on.items():
                self.transitions(spec, f"{location} > on > {descriptor}")
        if "onDone" in config:
            self.transitions(config["onDone"], f"{location} > onDone")
        after = config.get("after")
        if isinstance(after, Mapping):
            for delay, spec in after.items():
                self.transitions(spec, f"{location} > after > {delay}")
        if "always" in config:
            self.transitions(config["always"], f"{location} > always")
        states = config.get("states")
        if isinstance(states, Mapping):
            for key, child in states.items():
                if isinstance(child, Mapping):
                    self.node(child, (*labels, str(key)))

    def transitions(self, spec: Any, location: str) -> None:
        items = list(spec) if isinstance(spec, list | tuple) else [spec]
        for index, item in enumerate(items):
            where = f"{location} > [{index}]" if isinstance(spec, list | tuple) else location
            if isinstance(item, Mapping):
                self.actions_of(item.get("actions"), f"{where} > actions")

    def actions_of(self, spec: Any, location: str) -> None:
        items = list(spec) if isinstance(spec, list | tuple) else [] if spec is None else [spec]
        for index, item in enumerate(items):
            where = f"{location} > [{index}]" if isinstance(spec, list | tuple) else location
            name = item if isinstance(item, str) else item.get("type") if isinstance(item, Mapping) else None
            action = self.actions.get(name) if isinstance(name, str) else item
            note = (
                f"Emitted by the action {name!r} (actions= of setup_arvo_machine)"
                if action is not item
                else None
            )
            if isinstance(action, Emit):
                self.found.extend((event_type, where, note) for event_type in _emitted_types(action))


def _check_emitted_types(
    config: Mapping[str, Any],
    *,
    actions: Mapping[str, Any],
    self_contract: VersionedArvoContract,
    services: Mapping[str, VersionedArvoContract],
) -> None:
    """Reject literal ``emit`` types that no service contract accepts (see the module docstring)."""
    accepted = {contract.accepts.type: key for key, contract in services.items()}
    complete = self_contract.complete_event_type
    scanner = _EmissionScanner(actions)
    scanner.node(config, ())
    for event_type, location, note in scanner.found:
        if event_type in accepted or event_type == complete:
            continue
        known = [f"{accepted_type} (service {key!r})" for accepted_type, key in accepted.items()]
        if complete is not None:
            known.append(f"{complete} (the completion)")
        close = difflib.get_close_matches(event_type, [*accepted, *([complete] if complete else [])], n=1)
        lines = [
            f"Configuration Error: the machine emits {event_type!r}, which none of its service contracts "
            "accepts",
            f"Location: {location}",
            *([note] if note else []),
            f"The machine can emit: {', '.join(known) if known else 'only its completion'}",
            *([f"Did you mean {close[0]!r}?"] if close else []),
            f"To fix: add the contract that accepts {event_type!r} to contracts['services'] of "
            "setup_arvo_machine, or correct the type (an event no contract describes is queued with "
            "enqueue_arvo_event)",
        ]
        raise ConfigViolation("\n".join(lines))


class ArvoMachine:
    """A versioned statechart bound to its contracts; one per orchestrator contract version.

    Attributes:
        id: The machine id.
        version: The self contract version this machine implements.
        self_contract: The versioned orchestrator contract.
        services: Service contracts by key.
        requires_resource_locking: Kept for parity (spec 10.5); the pipeline always leases.

    """

    def __init__(
        self,
        *,
        id: str,
        version: str,
        self_contract: VersionedArvoContract,
        services: Mapping[str, VersionedArvoContract],
        statechart: Statechart,
        requires_resource_locking: bool = True,
    ) -> None:
        self.id = id
        self.version = version
        self.self_contract = self_contract
        self.services: dict[str, VersionedArvoContract] = dict(services)
        self.services_by_type: dict[str, VersionedArvoContract] = {
            contract.accepts.type: contract for contract in services.values()
        }
        self.statechart = statechart
        self.requires_resource_locking = requires_resource_locking

    @property
    def source(self) -> str:
        """The init event type this machine consumes (``arvo.orc.<name>``)."""
        return self.self_contract.accepts.type

    @property
    def contracts(self) -> dict[str, Any]:
        """The contracts the machine was set up with."""
        return {"self": self.self_contract, "services": dict(self.services)}

    def validate_input(self, event: ArvoEvent) -> EventValidationResult:
        """Resolve and validate ``event`` against the self and service contracts (spec 11.6)."""
        return validate_input_event(event, self_contract=self.self_contract, service_contracts=self.services)

    @property
    def has_delayed_transitions(self) -> bool:
        """Whether the machine uses ``after`` (its steps need ``now_ms`` and may arm timers)."""
        return self.statechart.has_delayed_transitions

    def start(self, init_event: ArvoEvent, *, now_ms: float | None = None) -> MachineStep:
        """Start a new execution from ``init_event`` (it only feeds ``context``)."""
        return self.statechart.start(init_event.to_dict(), now_ms=now_ms)

    def send(
        self, snapshot: Mapping[str, Any], event: ArvoEvent, *, now_ms: float | None = None
    ) -> MachineStep:
        """Resume from ``snapshot`` and process ``event``."""
        return self.statechart.send(snapshot, event.to_dict(), now_ms=now_ms)

    def fire_timer(self, snapshot: Mapping[str, Any], timer_id: str, *, now_ms: float) -> MachineStep:
        """Resume from ``snapshot`` and deliver the pending timer ``timer_id`` (a no-op step if stale)."""
        return self.statechart.fire_timer(snapshot, timer_id, now_ms=now_ms)

    def to_mermaid(self) -> str:
        """The machine as a Mermaid ``stateDiagram-v2``."""
        return self.statechart.to_mermaid()

    def definition(self) -> dict[str, Any]:
        """The JSON-able machine definition (functions named, not serialised)."""
        return self.statechart.definition()


class ArvoMachineSetup:
    """Contracts, named actions and guards; :meth:`create_machine` builds machines from configs."""

    def __init__(
        self,
        *,
        self_contract: VersionedArvoContract,
        services: Mapping[str, VersionedArvoContract],
        actions: Mapping[str, Any],
        guards: Mapping[str, Any],
        delays: Mapping[str, Any] | None = None,
    ) -> None:
        self.self_contract = self_contract
        self.services = dict(services)
        self.actions = {**actions, _RESERVED_ACTION: assign(_enqueue_with_params)}
        self.guards = dict(guards)
        self.delays = dict(delays or {})

    def create_machine(self, config: Mapping[str, Any]) -> ArvoMachine:
        """Validate ``config`` and build the :class:`ArvoMachine`.

        Raises:
            ConfigViolation: version mismatch, forbidden features (invoke, spawning), bad targets,
                unimplemented named actions, guards or delays, an ``emit`` of a literal type that no
                service contract accepts (see the module docstring).

        """
        requested = config.get("version")
        if requested is not None and requested != self.self_contract.version:
            raise ConfigViolation(
                f"Version mismatch: Machine version must be '{self.self_contract.version}' or undefined, "
                f"received '{requested}'"
            )
        chart_config = {key: value for key, value in config.items() if key != "version"}
        statechart = Statechart(chart_config, actions=self.actions, guards=self.guards, delays=self.delays)
        _check_emitted_types(
            chart_config, actions=self.actions, self_contract=self.self_contract, services=self.services
        )
        requires_locking = _has_parallel_states(chart_config) or any(
            len(contract.emits) > 1 for contract in self.services.values()
        )
        return ArvoMachine(
            id=str(config.get("id", "machine")),
            version=self.self_contract.version,
            self_contract=self.self_contract,
            services=self.services,
            statechart=statechart,
            requires_resource_locking=requires_locking,
        )


def setup_arvo_machine(
    *,
    contracts: Mapping[str, Any],
    actions: Mapping[str, Any] | None = None,
    guards: Mapping[str, Any] | None = None,
    delays: Mapping[str, Any] | None = None,
    **unsupported: object,
) -> ArvoMachineSetup:
    """Bind contracts, named actions, guards and delays for machines (spec 11.2).

    Args:
        contracts: ``{"self": <versioned orchestrator contract>, "services": {key: <versioned contract>}}``.
        actions: Named actions (``assign(...)``, ``emit(...)``, or functions of the action arguments).
        guards: Named guards (functions of the action arguments returning ``bool``, combinators,
            ``state_in(...)``).
        delays: Named delays for ``after`` keys: a number of ms or a function of the action arguments
            returning one (the original rejects ``delays``; we support delayed transitions).
        **unsupported: ``actors`` are rejected as in the original.

    Raises:
        ConfigViolation: actors given, reserved action name used, duplicate or circular services.

    """
    if "actors" in unsupported:
        raise _unsupported("actor", "actors")
    if unsupported:
        raise ConfigViolation(f"setup_arvo_machine got unknown options: {', '.join(sorted(unsupported))}")
    if actions and _RESERVED_ACTION in actions:
        raise ConfigViolation(
            f"Configuration Error: Reserved action name '{_RESERVED_ACTION}'. It is Arvo's built-in action "
            "for queueing events; choose another name."
        )
    self_contract = contracts.get("self")
    if not isinstance(self_contract, VersionedArvoContract) or not self_contract.is_orchestrator_contract:
        raise ConfigViolation(
            "setup_arvo_machine needs contracts['self'] = a versioned orchestrator contract"
        )
    services: Mapping[str, VersionedArvoContract] = contracts.get("services") or {}
    validate_service_contracts(self_contract, services, "ArvoMachine")
    return ArvoMachineSetup(
        self_contract=self_contract,
        services=services,
        actions=actions or {},
        guards=guards or {},
        delays=delays or {},
    )
