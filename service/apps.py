"""Loading the workflow module the service runs (``module:attribute``).

The attribute is a callable ``(memory, *, include_error_stack=False) -> Iterable[ArvoHandler]``:
it receives the memory the orchestrators and resumables must use and returns every handler to serve.
The embedded default is ``service.examples:default_app``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, cast

from service.arvo.execution import ArvoHandler
from service.arvo.memory import Memory

__all__ = ["DEFAULT_APP", "AppFactory", "AppLoadError", "build_handlers", "load_app_factory"]

DEFAULT_APP = "service.examples:default_app"
AppFactory = Callable[..., Iterable[ArvoHandler]]


class AppLoadError(ValueError):
    """The workflow module could not be loaded or returned something that is not a list of handlers."""


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
