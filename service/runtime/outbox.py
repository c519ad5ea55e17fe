"""Stable emissions of stateless handlers across re-executions (byte-identical duplicates only).

Orchestrators and resumables keep what they emitted in their state record and replay it on
redelivery. Stateless services have no record: re-executing one after a crash (the record was
processed, its emissions published, the offset not yet committed) would publish events with the
same ids (those are derived) but a new ``time`` and ``traceparent``. An :class:`EmissionOutbox`
stores the first execution's emissions per consumed event, in the same step that checks for an
earlier one: the first writer wins and every later execution publishes exactly the stored events.

This module is the port (:class:`EmissionOutbox`), its in-process implementation
(:class:`InMemoryOutbox`, tests and the embedded default) and the handler wrapper
(:class:`OutboxedHandler`). The Redis implementation is
:class:`service.runtime.redis_outbox.RedisOutbox`; :mod:`service.runtime.stores` chooses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from service.arvo.event import ArvoEvent
from service.arvo.execution import ArvoHandler, ExecutionOutcome, ExecutionResult, InheritFrom

__all__ = ["EmissionOutbox", "InMemoryOutbox", "OutboxedHandler", "outbox_identity", "outbox_identity_text"]


def outbox_identity(source: str, event: ArvoEvent) -> tuple[str, str, str, str, str]:
    """What identifies one consumed event for handler ``source``'s outbox.

    ``(handler, domain, subject, event source, event id)``: CloudEvents makes ``id`` unique per
    ``source`` only, so two producers may both send an event ``id=1``; and the same event on two
    subjects (a fan-out) is two executions. Implementations build their storage key from all five
    parts, each escaped as their store needs.
    """
    return (source, event.domain or "", event.subject, event.source, event.id)


def outbox_identity_text(source: str, event: ArvoEvent) -> str:
    """:func:`outbox_identity` as one unambiguous string: the parts percent-escaped, ``/``-joined."""
    return "/".join(_escape(part) for part in outbox_identity(source, event))


def _escape(part: str) -> str:
    """Percent-encode ``%``, ``/``, ``{`` and ``}`` (the separator and Redis hash-tag braces)."""
    return part.replace("%", "%25").replace("/", "%2F").replace("{", "%7B").replace("}", "%7D")


@runtime_checkable
class EmissionOutbox(Protocol):
    """Port: the first execution's emissions of a stateless handler, per consumed event."""

    async def settle(self, source: str, event: ArvoEvent, emitted: list[ArvoEvent]) -> list[ArvoEvent] | None:
        """Store ``emitted`` unless an earlier execution stored its own; return those, else ``None``.

        Raises:
            service.arvo.errors.TransactionViolation: the store is unavailable (the consumer
                retries the record in place).

        """
        ...


class InMemoryOutbox:
    """:class:`EmissionOutbox` in process memory, with the same first-writer-wins and TTL rules.

    Args:
        ttl_s: How long a stored emission is kept.
        clock: Monotonic seconds (injectable for tests).

    """

    def __init__(self, *, ttl_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._ttl_s = ttl_s
        self._clock = clock
        self._stored: dict[str, tuple[float, bytes]] = {}

    async def settle(self, source: str, event: ArvoEvent, emitted: list[ArvoEvent]) -> list[ArvoEvent] | None:
        """Store ``emitted`` unless a live earlier entry exists; return that entry's events, else ``None``."""
        key = outbox_identity_text(source, event)
        now = self._clock()
        earlier = self._stored.get(key)
        if earlier is not None and earlier[0] > now:
            return [ArvoEvent.from_json(item) for item in _decode(earlier[1])]
        self._stored[key] = (now + self._ttl_s, _encode(emitted))
        return None

    def __len__(self) -> int:
        now = self._clock()
        return sum(1 for expires, _ in self._stored.values() if expires > now)


def _encode(events: list[ArvoEvent]) -> bytes:
    import orjson

    return orjson.dumps([item.to_dict() for item in events])


def _decode(payload: bytes) -> list[dict[str, Any]]:
    import orjson

    decoded = orjson.loads(payload)
    if not isinstance(decoded, list):
        raise TypeError(f"stored outbox entry is not a list: {type(decoded).__name__}")
    return decoded


class OutboxedHandler:
    """A stateless handler whose emissions for one consumed event never change once published."""

    def __init__(self, handler: ArvoHandler, outbox: EmissionOutbox) -> None:
        self.handler = handler
        self._outbox = outbox

    @property
    def source(self) -> str:
        """The wrapped handler's source."""
        return self.handler.source

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        """Run the handler, then publish the first execution's emissions if there was one."""
        result = await self.handler.execute(event, inherit_from=inherit_from)
        if not result.events:
            return result
        stored = await self._outbox.settle(self.source, event, result.events)
        if stored is None:
            return result
        return ExecutionResult(stored, ExecutionOutcome.REPLAYED)
