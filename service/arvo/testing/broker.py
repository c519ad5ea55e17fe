"""An in-process event bus for tests and the embedded demo: routes by ``to`` (and ``domain``), FIFO.

Differences from the original ``SimpleEventBroker`` (quirk 37): events are processed in FIFO order;
events for a domain nobody subscribed to are kept in :attr:`InMemoryBroker.domained_events` instead
of being dropped; events for a topic nobody serves are kept in :attr:`InMemoryBroker.unrouted` *and*
reported as a :class:`BrokerError` in :attr:`InMemoryBroker.errors` (and to ``on_error``); ``resolve``
does not leak its collector, and ``resolve(event, require_reply=True)`` raises :class:`NoReplyError`
naming why nothing came back instead of returning ``None``.
"""

from __future__ import annotations

import heapq
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Literal, overload

from service.arvo.execution import ArvoHandler
from service.arvo.orchestration.timers import create_timer_event

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent

__all__ = ["BrokerError", "InMemoryBroker", "Listener", "NoReplyError"]

Listener = Callable[["ArvoEvent", "InMemoryBroker"], Awaitable[None]]
DomainedEventHook = Callable[[str, "ArvoEvent", "InMemoryBroker"], Awaitable[None] | None]
ErrorHook = Callable[[BaseException, "ArvoEvent"], None]
PublishHook = Callable[["ArvoEvent"], None]


class BrokerError(RuntimeError):
    """Misuse of the broker (queue full, duplicate subscription, invalid resolve), or an unserved event."""


class NoReplyError(BrokerError):
    """``resolve(event, require_reply=True)``: the cascade stopped and nothing came back to the source.

    The message says why, as far as the broker can tell: the errors raised while the cascade ran
    (unserved events, violations, failing listeners), the events left for a domain nobody serves, and
    the last events published.

    Attributes:
        event: The event that was resolved.
        errors: The ``(error, event)`` pairs reported while it ran (also in ``broker.errors``).
        domained_events: Events it published for a domain without subscribers.
        events: Every event published while it ran, in order (``event`` first).

    """

    def __init__(
        self,
        message: str,
        *,
        event: ArvoEvent,
        errors: list[tuple[BaseException, ArvoEvent]],
        domained_events: list[ArvoEvent],
        events: list[ArvoEvent],
    ) -> None:
        super().__init__(message)
        self.event = event
        self.errors = errors
        self.domained_events = domained_events
        self.events = events


class InMemoryBroker:
    """Routes events to subscribers of their ``(to, domain)`` topic until the system is quiet.

    ``await broker.publish(event)`` returns once every event the cascade produced was processed.

    Args:
        handlers: Handlers to register at their ``source`` (domain ``None``).
        max_queue_size: Bound of pending events; publishing beyond it raises :class:`BrokerError`.
        on_error: Called with handler errors (violations included); they are also kept in ``errors``.
        on_domained_event: Called for events whose domain has no subscriber; without it they are
            kept in ``domained_events``.
        on_publish: Called with every published event, before it is processed (demo output, tests).

    **Virtual time.** Orchestrations' timers (statecharts' ``after``, deadlines) are scheduled here as
    the service's scheduler does it, and fired by :meth:`advance`: ``await broker.advance(seconds=30)``
    moves the broker's clock (:attr:`now_ms`: the wall clock plus every advance so far) and delivers
    every timer due by then, in due order, each as the timer event the service would publish; timers
    armed meanwhile that fall due fire in the same advance. Nothing fires by itself.

    """

    def __init__(
        self,
        handlers: Iterable[ArvoHandler] = (),
        *,
        max_queue_size: int = 100_000,
        on_error: ErrorHook | None = None,
        on_domained_event: DomainedEventHook | None = None,
        on_publish: PublishHook | None = None,
    ) -> None:
        self._subscribers: dict[tuple[str, str | None], list[Listener]] = {}
        self._queue: deque[ArvoEvent] = deque()
        self._processing = False
        self.max_queue_size = max_queue_size
        self.on_error = on_error
        self.on_domained_event = on_domained_event
        self.on_publish = on_publish
        self.events: list[ArvoEvent] = []
        self.errors: list[tuple[BaseException, ArvoEvent]] = []
        self.unrouted: list[ArvoEvent] = []
        self.domained_events: list[ArvoEvent] = []
        self.fired_timers: list[ArvoEvent] = []
        """The timer events :meth:`advance` delivered, in order."""
        self._offset_ms = 0.0
        self._timers: list[tuple[int, int, str, str, str]] = []  # (due, seq, topic, subject, timer id)
        self._scheduled: set[tuple[str, str, str, int]] = set()
        self._timer_seq = 0
        for handler in handlers:
            self.register(handler)

    @property
    def topics(self) -> list[str]:
        """Subscribed topics (``to`` values)."""
        return sorted({topic for topic, _domain in self._subscribers})

    @property
    def now_ms(self) -> float:
        """The broker's clock: the wall clock plus every :meth:`advance`, in ms since the epoch."""
        return time.time() * 1000 + self._offset_ms

    @property
    def pending_timers(self) -> list[tuple[str, str, int]]:
        """Scheduled timers not fired yet, ``(subject, timer id, due ms)``, by due time.

        Some may be stale: the instance drops those when they fire.
        """
        return [(subject, timer_id, due) for due, _seq, _topic, subject, timer_id in sorted(self._timers)]

    def _schedule(self, topic: str, subject: str, timer_id: str, due_ms: int) -> None:
        key = (topic, subject, timer_id, due_ms)
        if key in self._scheduled:
            return
        self._scheduled.add(key)
        self._timer_seq += 1
        heapq.heappush(self._timers, (due_ms, self._timer_seq, topic, subject, timer_id))

    async def advance(self, *, seconds: float = 0.0, ms: float = 0.0) -> list[ArvoEvent]:
        """Move the clock by ``seconds`` + ``ms`` and deliver every timer due by then (see the class).

        Returns:
            The timer events delivered, in order.

        Raises:
            ValueError: a negative amount (time does not go back).

        """
        amount = seconds * 1000 + ms
        if amount < 0:
            raise ValueError(f"advance() cannot go back in time, got {amount} ms")
        self._offset_ms += amount
        fired: list[ArvoEvent] = []
        while self._timers and self._timers[0][0] <= self.now_ms:
            due, _seq, topic, subject, timer_id = heapq.heappop(self._timers)
            self._scheduled.discard((topic, subject, timer_id, due))
            timer_event = create_timer_event(
                subject=subject, orchestrator=topic, timer_id=timer_id, due_ms=due
            )
            fired.append(timer_event)
            self.fired_timers.append(timer_event)
            await self.publish(timer_event)
        return fired

    @property
    def queue_length(self) -> int:
        """Events waiting to be processed."""
        return len(self._queue)

    def subscriber_count(self, topic: str, *, domain: str | None = None) -> int:
        """How many listeners receive events for ``topic`` in ``domain``."""
        return len(self._subscribers.get((topic, domain), []))

    def subscribe(
        self, topic: str, listener: Listener, *, domain: str | None = None, unique: bool = False
    ) -> Callable[[], None]:
        """Add ``listener`` for ``(topic, domain)``; returns a function that removes it."""
        listeners = self._subscribers.setdefault((topic, domain), [])
        if unique and listeners:
            raise BrokerError(f"Only one subscriber allowed per topic: {topic}")
        listeners.append(listener)

        def unsubscribe() -> None:
            if listener in listeners:
                listeners.remove(listener)
            if not listeners and self._subscribers.get((topic, domain)) is listeners:
                del self._subscribers[(topic, domain)]

        return unsubscribe

    def register(self, handler: ArvoHandler, *, domain: str | None = None) -> Callable[[], None]:
        """Subscribe ``handler`` at its ``source``; its emissions are published back to the broker."""

        async def run_handler(event: ArvoEvent, broker: InMemoryBroker) -> None:
            result = await handler.execute(event, inherit_from="EVENT")
            for timer_id, due_ms in result.timers:
                broker._schedule(handler.source, event.subject, timer_id, due_ms)
            for emitted in result.events:
                await broker.publish(emitted)

        return self.subscribe(handler.source, run_handler, domain=domain, unique=True)

    async def publish(self, event: ArvoEvent) -> None:
        """Queue ``event``; when called from outside a listener, process until quiet."""
        if not event.to:
            raise BrokerError('Event must have a "to" property')
        if len(self._queue) >= self.max_queue_size:
            raise BrokerError(f"Event queue is full (max size: {self.max_queue_size})")
        self._queue.append(event)
        self.events.append(event)
        if self.on_publish is not None:
            self.on_publish(event)
        if not self._processing:
            await self.run_until_idle()

    async def run_until_idle(self) -> None:
        """Process queued events (FIFO) until none is left."""
        if self._processing:
            return
        self._processing = True
        try:
            while self._queue:
                await self._deliver(self._queue.popleft())
        finally:
            self._processing = False

    async def _deliver(self, event: ArvoEvent) -> None:
        assert event.to is not None
        listeners = self._subscribers.get((event.to, event.domain))
        if not listeners:
            if event.domain is not None:
                if self.on_domained_event is not None:
                    outcome = self.on_domained_event(event.domain, event, self)
                    if inspect.isawaitable(outcome):
                        await outcome
                else:
                    self.domained_events.append(event)
                return
            self.unrouted.append(event)
            self._report(BrokerError(f"No handlers registered for event type: {event.to}"), event)
            return
        for listener in list(listeners):
            try:
                await listener(event, self)
            except Exception as error:
                self._report(error, event)

    def _report(self, error: BaseException, event: ArvoEvent) -> None:
        self.errors.append((error, event))
        if self.on_error is not None:
            self.on_error(error, event)

    @overload
    async def resolve(self, event: ArvoEvent, *, require_reply: Literal[True]) -> ArvoEvent: ...

    @overload
    async def resolve(self, event: ArvoEvent, *, require_reply: bool = False) -> ArvoEvent | None: ...

    async def resolve(self, event: ArvoEvent, *, require_reply: bool = False) -> ArvoEvent | None:
        """Publish ``event`` and return the last event delivered back to ``event.source``.

        Args:
            event: The event to publish (an orchestrator's init event, a service call).
            require_reply: Raise :class:`NoReplyError` when nothing came back, instead of returning
                ``None`` (the default, kept for existing callers).

        Raises:
            BrokerError: ``event.source`` is itself a subscribed topic.
            NoReplyError: ``require_reply`` and the cascade stopped without an event for
                ``event.source``; the message names the errors and waiting events of the cascade.

        """
        if any(
            topic == event.source and listeners for (topic, _domain), listeners in self._subscribers.items()
        ):
            raise BrokerError(
                "The event source cannot be one of the handlers in the broker. Please update the "
                f"event.source, the given is '{event.source}'"
            )
        received: list[ArvoEvent] = []

        async def collect(reply: ArvoEvent, _broker: InMemoryBroker) -> None:
            received.append(reply)

        first_error, first_event = len(self.errors), len(self.events)
        unsubscribe = self.subscribe(event.source, collect, domain=event.domain)
        try:
            await self.publish(event)
        finally:
            unsubscribe()
        if received:
            return received[-1]
        if require_reply:
            raise self._no_reply(event, self.errors[first_error:], self.events[first_event:])
        return None

    def _no_reply(
        self, event: ArvoEvent, errors: list[tuple[BaseException, ArvoEvent]], events: list[ArvoEvent]
    ) -> NoReplyError:
        domained = [
            item
            for item in events
            if item.domain is not None and not self._subscribers.get((item.to or "", item.domain))
        ]
        lines = [
            f"No event came back to {event.source!r} for {event.type} (id {event.id}): the cascade stopped "
            f"after {len(events)} event(s)."
        ]
        if errors:
            lines.append(f"Errors while it ran ({len(errors)}, also in broker.errors):")
            lines.extend(
                f"  - on {failed.type} (to {failed.to}, from {failed.source}): "
                f"{type(error).__name__}: {error}"
                for error, failed in errors
            )
        if domained:
            lines.append(
                f"Events for a domain nobody serves here ({len(domained)}; register a handler with "
                "broker.register(handler, domain=...) or answer them in on_domained_event):"
            )
            lines.extend(f"  - {item.type} (to {item.to}, domain {item.domain})" for item in domained)
        if not errors and not domained:
            lines.append(
                "Nothing failed: an orchestrator may be waiting for an event that never came (a reply "
                "it has no transition for, or a service that answered elsewhere)."
            )
        shown = events[-5:]
        lines.append(f"Last event(s) published ({len(shown)} of {len(events)}, all in broker.events):")
        lines.extend(f"  - {item.type}: {item.source} -> {item.to}" for item in shown)
        return NoReplyError(
            "\n".join(lines), event=event, errors=list(errors), domained_events=domained, events=list(events)
        )
