"""Which Kafka topic an event goes to, and which topic a handler consumes.

The default mapping (:func:`route_topic`)::

    domain is None  ->  <prefix><to>            e.g.  com.payment.charge
    domain "ext"    ->  <prefix><domain>-<to>   e.g.  ext-com.payment.charge

Why it is collision-free: Arvo domains match ``^[a-z0-9.]+$`` and a routable ``to`` may use every
Kafka topic character except ``-`` (``[a-zA-Z0-9._]``; Arvo types are ``[a-z0-9.]``). So after the
common prefix, a local topic contains no ``-`` while a domained topic contains exactly one, and that
single ``-`` splits it back into ``(domain, to)`` unambiguously: the mapping is injective and the
two families never meet. ``-`` is used rather than ``_`` because Kafka treats ``.`` and ``_`` as
equal when it checks new topic names for metric-name collisions (``ext_com.a.b`` would collide
with a local ``ext.com.a.b``). Names longer than Kafka's 249 characters and the reserved names
``.``/``..`` are rejected with a :class:`RoutingError`.

The mapping is configurable: :class:`TopicRouter` takes the prefix and, optionally, a replacement
function (setting ``ARVO_TOPIC_ROUTER=module:attribute``) whose results are still checked for legality.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent
    from service.runtime.settings import ServiceSettings

__all__ = [
    "DOMAIN_SEPARATOR",
    "MAX_TOPIC_CHARS",
    "RouteFunction",
    "RoutingError",
    "TopicRouter",
    "handler_topic",
    "load_route_function",
    "route_topic",
    "validate_topic_name",
]

MAX_TOPIC_CHARS: Final = 249
"""Kafka's limit on topic name length."""
DOMAIN_SEPARATOR: Final = "-"
"""Separates domain and ``to`` in a domained topic; never appears in a domain or a routable ``to``."""

_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
_ROUTABLE_TO = re.compile(r"^[a-zA-Z0-9._]+$")
_DOMAIN = re.compile(r"^[a-z0-9.]+$")
_PREFIX = re.compile(r"^[a-zA-Z0-9._-]*$")

RouteFunction = Callable[[str, str | None, str], str]
"""``(to, domain, prefix) -> topic``: the signature of :func:`route_topic` and of custom routers."""


class RoutingError(ValueError):
    """An event or handler cannot be mapped to a legal, unambiguous Kafka topic name."""


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def validate_topic_name(topic: str) -> str:
    """Return ``topic`` if it is a legal Kafka topic name, else raise :class:`RoutingError`.

    Legal: 1 to 249 characters of ``[a-zA-Z0-9._-]``, and neither ``.`` nor ``..``.
    """
    if not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise RoutingError(
            f"topic name {_shorten(topic)!r} is not a legal Kafka topic name "
            "(expected 1-249 characters of [a-zA-Z0-9._-], not '.' or '..')"
        )
    if len(topic) > MAX_TOPIC_CHARS:
        raise RoutingError(
            f"topic name {_shorten(topic)!r} has {len(topic)} characters "
            f"(Kafka allows at most {MAX_TOPIC_CHARS}); shorten the type, domain or topic prefix"
        )
    return topic


def _check_prefix(prefix: str) -> None:
    if not _PREFIX.match(prefix):
        raise RoutingError(f"topic prefix {_shorten(prefix)!r} must contain only [a-zA-Z0-9._-]")


def route_topic(to: str, domain: str | None, *, prefix: str = "") -> str:
    """Map an event's ``to`` and ``domain`` to its Kafka topic (see the module docstring).

    Args:
        to: The event's ``to`` (for Arvo events, the type of the consuming handler).
        domain: The event's ``domain``; ``None`` routes to the local topic.
        prefix: Prepended to every topic (environment separation, e.g. ``staging.``).

    Returns:
        ``<prefix><to>`` for a ``None`` domain, else ``<prefix><domain>-<to>``.

    Raises:
        RoutingError: ``to`` contains characters outside ``[a-zA-Z0-9._]`` (``-`` is reserved as the
            domain separator), the domain is not ``[a-z0-9.]+``, or the name is not a legal topic.

    """
    _check_prefix(prefix)
    if not _ROUTABLE_TO.match(to):
        raise RoutingError(
            f"cannot route event: 'to' {_shorten(to)!r} must contain only [a-zA-Z0-9._] "
            f"('{DOMAIN_SEPARATOR}' is reserved as the domain separator in topic names)"
        )
    if domain is None:
        return validate_topic_name(f"{prefix}{to}")
    if not _DOMAIN.match(domain):
        raise RoutingError(f"cannot route event: domain {_shorten(domain)!r} must match ^[a-z0-9.]+$")
    return validate_topic_name(f"{prefix}{domain}{DOMAIN_SEPARATOR}{to}")


def handler_topic(source: str, prefix: str = "") -> str:
    """The topic a handler consumes: the local topic of its own type (``<prefix><source>``)."""
    return route_topic(source, None, prefix=prefix)


def load_route_function(path: str) -> RouteFunction:
    """Import a ``module:attribute`` route function (setting ``ARVO_TOPIC_ROUTER``).

    Raises:
        RoutingError: the module or attribute cannot be imported, or it is not callable.

    """
    module_name, _, attribute = path.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise RoutingError(f"cannot load topic router {path!r}: {exc}") from exc
    if not callable(target):
        raise RoutingError(f"topic router {path!r} is not callable (got {type(target).__name__})")
    function: RouteFunction = target
    return function


class TopicRouter:
    """The configured topic mapping: a prefix and the route function (default :func:`route_topic`).

    Every name a custom function returns is checked with :func:`validate_topic_name`.
    """

    def __init__(self, *, prefix: str = "", route: RouteFunction | None = None) -> None:
        _check_prefix(prefix)
        self._prefix = prefix
        self._route = route

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> TopicRouter:
        """Build the router of ``settings`` (``topic_prefix``, optional ``topic_router``)."""
        route = load_route_function(settings.topic_router) if settings.topic_router else None
        return cls(prefix=settings.topic_prefix, route=route)

    @property
    def prefix(self) -> str:
        """The topic prefix."""
        return self._prefix

    def route(self, to: str, domain: str | None) -> str:
        """The topic for ``(to, domain)``."""
        if self._route is None:
            return route_topic(to, domain, prefix=self._prefix)
        return validate_topic_name(self._route(to, domain, self._prefix))

    def route_event(self, event: ArvoEvent) -> str:
        """The topic of ``event``: its ``to`` (its ``type`` when ``to`` is null) and its ``domain``."""
        return self.route(event.to or event.type, event.domain)

    def handler_topic(self, source: str) -> str:
        """The topic a handler of type ``source`` consumes (the local route of its own type)."""
        return self.route(source, None)
