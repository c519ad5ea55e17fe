"""An in-process event bus for tests and the embedded demo: routes by ``to`` (and ``domain``), FIFO.

Differences from the original ``SimpleEventBroker`` (quirk 37): events are processed in FIFO order;
events for a domain nobody subscribed to are kept in :attr:`InMemoryBroker.domained_events` instead
of being dropped; unroutable events are kept in :attr:`InMemoryBroker.unrouted`; ``resolve`` does
not leak its collector.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from service.arvo.execution import ArvoHandler

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent

__all__ = ["BrokerError", "InMemoryBroker", "Listener"]

Listener = Callable[["ArvoEvent", "InMemoryBroker"], Awaitable[None]]
DomainedEventHook = Callable[[str, "ArvoEvent", "InMemoryBroker"], Awaitable[None] | None]
ErrorHook = Callable[[BaseException, "ArvoEvent"], None]
PublishHook = Callable[["ArvoEvent"], None]


class BrokerError(RuntimeError):
    """Misuse of the broker (queue full, duplicate subscription, invalid resolve)."""


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
        for handler in handlers:
            self.register(handler)

    @property
    def topics(self) -> list[str]:
        """Subscribed topics (``to`` values)."""
        return sorted({topic for topic, _domain in self._subscribers})

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

    async def resolve(self, event: ArvoEvent) -> ArvoEvent | None:
        """Publish ``event`` and return the last event delivered back to ``event.source``.

        Raises:
            BrokerError: ``event.source`` is itself a subscribed topic.

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

        unsubscribe = self.subscribe(event.source, collect, domain=event.domain)
        try:
            await self.publish(event)
        finally:
            unsubscribe()
        return received[-1] if received else None
