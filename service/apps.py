"""Loading the workflow module the service runs (``module:attribute``).

The attribute is a callable ``(memory, *, include_error_stack=False) -> Iterable[ArvoHandler]``:
it receives the memory the orchestrators and resumables must use and returns every handler to serve.
The embedded default is ``service.examples:default_app``. The CLI calls :func:`use_current_directory`
first, so an app next to where ``arvo`` runs imports like it does under ``python -m`` (as uvicorn
and faststream do).

:func:`build_entry_event` builds the event that starts work on one of an app's handlers through that
handler's own contract (``arvo publish``): the init event of an orchestrator or resumable, the
accepted event of a stateless service.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from service.arvo.execution import ArvoHandler
from service.arvo.memory import Memory

if TYPE_CHECKING:
    from service.arvo.contract import VersionedArvoContract
    from service.arvo.event import ArvoEvent

__all__ = [
    "DEFAULT_APP",
    "AppFactory",
    "AppLoadError",
    "EntryEventError",
    "build_entry_event",
    "build_handlers",
    "entry_contract",
    "load_app_factory",
    "use_current_directory",
]

DEFAULT_APP = "service.examples:default_app"
AppFactory = Callable[..., Iterable[ArvoHandler]]


class AppLoadError(ValueError):
    """The workflow module could not be loaded or returned something that is not a list of handlers."""


def use_current_directory() -> str:
    """Put the current directory first on ``sys.path`` (once); return it.

    A console script's ``sys.path`` starts with the script's directory, not the working directory:
    without this, ``arvo run --app loan.app:app`` next to ``loan/`` cannot import ``loan``.
    """
    directory = os.getcwd()
    if directory not in sys.path and "" not in sys.path[:1]:
        sys.path.insert(0, directory)
    return directory


def load_app_factory(spec: str) -> AppFactory:
    """Import ``module:attribute`` and return the app factory it names.

    Raises:
        AppLoadError: malformed spec, import failure, missing attribute or not callable.

    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(f"app must be 'module:attribute', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if (
            error.name is not None
            and module_name.startswith(error.name)
            and (module_name == error.name or module_name[len(error.name)] == ".")
        ):
            searched = (
                f"the current directory {os.getcwd()} and the installed packages"
                if os.getcwd() in sys.path or "" in sys.path
                else "the installed packages"
            )
            raise AppLoadError(
                f"cannot import app module {module_name!r}: {error} (looked in {searched})"
            ) from error
        raise AppLoadError(f"cannot import app module {module_name!r}: {error}") from error
    except ImportError as error:
        raise AppLoadError(f"cannot import app module {module_name!r}: {error}") from error
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as error:
            raise AppLoadError(f"app module {module_name!r} has no attribute {attribute!r}") from error
    if not callable(target):
        raise AppLoadError(f"app {spec!r} is not callable (expected a function returning handlers)")
    return cast("AppFactory", target)


def build_handlers(spec: str, memory: Memory, *, include_error_stack: bool = False) -> list[ArvoHandler]:
    """Load ``spec`` and build its handlers with ``memory``; sources must be unique.

    Raises:
        AppLoadError: the app cannot be loaded or returns invalid handlers.

    """
    factory = load_app_factory(spec)
    accepts_stack_flag = "include_error_stack" in inspect.signature(factory).parameters
    handlers = list(
        factory(memory, include_error_stack=include_error_stack) if accepts_stack_flag else factory(memory)
    )
    seen: set[str] = set()
    for handler in handlers:
        if not isinstance(handler, ArvoHandler):
            raise AppLoadError(f"app {spec!r} returned {handler!r}, which is not an Arvo handler")
        if handler.source in seen:
            raise AppLoadError(f"app {spec!r} has two handlers for {handler.source!r}")
        seen.add(handler.source)
    return handlers


class EntryEventError(ValueError):
    """No handler of the app accepts the type, the version is unknown, or the data is invalid."""


def _pick_version(versions: Mapping[str, VersionedArvoContract], wanted: str | None, owner: str) -> str:
    from service.arvo.contract import compare_semantic_versions

    if not versions:
        raise EntryEventError(f"{owner!r} has no contract versions")
    if wanted is None or wanted == "latest":
        return max(versions, key=functools.cmp_to_key(compare_semantic_versions))
    if wanted not in versions:
        known = ", ".join(sorted(versions, key=functools.cmp_to_key(compare_semantic_versions)))
        raise EntryEventError(f"{owner!r} has no version {wanted!r} (versions: {known})")
    return wanted


def entry_contract(
    handlers: Iterable[ArvoHandler], event_type: str, *, version: str | None = None
) -> tuple[VersionedArvoContract, bool]:
    """The contract version through which ``event_type`` enters the app, and whether it is an init.

    Orchestrators and resumables are entered by their init event (their orchestrator contract,
    ``True``); stateless services by the event their contract accepts (``False``).

    Args:
        handlers: The app's handlers (built with any memory; only their contracts are read).
        event_type: The type consumed by one of the handlers (its ``source``).
        version: Contract version; the highest one when ``None`` or ``"latest"``.

    Raises:
        EntryEventError: no handler consumes ``event_type``, or it has no such version.

    """
    from service.arvo.handler import ArvoEventHandler
    from service.arvo.orchestrator import ArvoOrchestrator
    from service.arvo.resumable import ArvoResumable

    listed = list(handlers)
    handler = next((item for item in listed if item.source == event_type), None)
    if handler is None:
        known = ", ".join(sorted(item.source for item in listed)) or "none"
        raise EntryEventError(f"no handler of the app consumes {event_type!r} (known types: {known})")
    versions: dict[str, VersionedArvoContract]
    if isinstance(handler, ArvoOrchestrator):
        versions = {machine.version: machine.self_contract for machine in handler.registry.machines}
        is_init = True
    elif isinstance(handler, ArvoResumable):
        versions = {v: handler.contract.version(v) for v in handler.contract.sorted_versions()}
        is_init = True
    elif isinstance(handler, ArvoEventHandler):
        versions = {v: handler.contract.version(v) for v in handler.contract.sorted_versions()}
        is_init = False
    else:
        raise EntryEventError(
            f"handler {event_type!r} is a {type(handler).__name__}, not an orchestrator, resumable or"
            " event handler: cannot find its contract"
        )
    return versions[_pick_version(versions, version, event_type)], is_init


def build_entry_event(
    handlers: Iterable[ArvoHandler],
    event_type: str,
    *,
    data: Mapping[str, Any],
    source: str,
    version: str | None = None,
    redirectto: str | None = None,
    domain: str | None = None,
) -> ArvoEvent:
    """Build the event that starts ``event_type`` through its contract (see :func:`entry_contract`).

    For orchestrators and resumables this is the init event of a new root orchestration
    (``parentSubject$$`` is added as ``null`` when ``data`` lacks it); for services, the accepted
    event with a fresh subject. ``data`` is validated (and stripped) by the contract.

    Raises:
        EntryEventError: unknown type or version, or invalid data or attributes (one-line message).

    """
    from service.arvo.contract import PARENT_SUBJECT_KEY
    from service.arvo.factory import create_arvo_event_factory, create_arvo_orchestrator_event_factory

    contract, is_init = entry_contract(handlers, event_type, version=version)
    try:
        if is_init:
            payload = dict(data)
            payload.setdefault(PARENT_SUBJECT_KEY, None)
            return create_arvo_orchestrator_event_factory(contract).init(
                source=source, data=payload, redirectto=redirectto, domain=domain
            )
        return create_arvo_event_factory(contract).accepts(
            source=source, data=data, redirectto=redirectto, domain=domain
        )
    except ValueError as error:
        message = " ".join(str(error).split())
        raise EntryEventError(f"cannot build {event_type!r} {contract.version}: {message}") from error
