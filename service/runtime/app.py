"""The assembled service: settings → stores (memory, outbox) → the app's handlers → Kafka consumer loop.

``arvo run`` calls :func:`run_service`; tests and embedders use :class:`ArvoService` directly.
Every service has its own Prometheus metrics (:attr:`ArvoService.metrics`) and, unless
``health_port`` is 0, serves ``/healthz``, ``/readyz`` and ``/metrics`` from the moment it starts.
Tracing is configured once per process by :func:`run_service` (``OTEL_*`` variables); the stores are
chosen (and their clients instrumented) by :mod:`service.runtime.stores`; the service flushes queued
spans when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import structlog

from service.apps import build_handlers
from service.arvo.blocking import HandlerThreads, configure_handler_threads, release_handler_threads
from service.arvo.execution import ArvoHandler
from service.arvo.handler import ArvoEventHandler
from service.arvo.memory import Memory
from service.arvo.orchestrator import ArvoOrchestrator
from service.arvo.resumable import ArvoResumable
from service.runtime.consumer import CombinedHooks, ConsumerLoop, LoopHooks, run_until_signal, signal_handlers
from service.runtime.dlq import DeadLetterPublisher
from service.runtime.health import HealthServer, Readiness
from service.runtime.kafka_admin import ensure_topics
from service.runtime.metrics import ServiceMetrics
from service.runtime.otel import configure_tracing, flush_tracing, shutdown_tracing
from service.runtime.outbox import EmissionOutbox, OutboxedHandler
from service.runtime.producer import EventProducer
from service.runtime.routing import TopicRouter
from service.runtime.settings import ServiceSettings
from service.runtime.stores import memory_answers, open_stores
from service.runtime.watchdog import LoopWatchdog
from service.tuning import IdleMemoryTrimmer, tune_gc

__all__ = ["ArvoService", "run_service"]

_log = structlog.get_logger("arvo.runtime.app")
_STILL_WAITING_S: Final = 30.0


def _redacted(url: str) -> str:
    """``url`` without its password (for log lines)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


@dataclass
class ArvoService:
    """One service process: consumes the topics of its handlers and produces what they emit.

    Build it with :meth:`from_settings`; :meth:`start`/:meth:`stop` or :meth:`run_until_signal`.
    """

    settings: ServiceSettings
    memory: Memory
    handlers: list[ArvoHandler]
    router: TopicRouter
    producer: EventProducer
    loop: ConsumerLoop
    hooks: LoopHooks | None = None
    metrics: ServiceMetrics | None = None
    health: HealthServer | None = None
    watchdog: LoopWatchdog | None = None
    _started: bool = field(default=False, init=False)
    _threads: HandlerThreads | None = field(default=None, init=False)
    _execution_started: bool = field(default=False, init=False)
    _trim_task: asyncio.Task[None] | None = field(default=None, init=False)

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        *,
        handlers: Sequence[ArvoHandler] | None = None,
        memory: Memory | None = None,
        hooks: LoopHooks | None = None,
        health_socket: socket.socket | None = None,
    ) -> ArvoService:
        """Assemble the service; ``handlers`` default to the app named by ``settings.app``.

        ``memory`` replaces the store chosen from the settings (:func:`~service.runtime.stores.open_stores`).
        ``health_socket`` (a worker of ``arvo run --workers``) is the listening socket of the health
        server instead of ``health_port``.

        The orchestrators and resumables of the app get ``settings.lease_ttl_ms`` as their lease TTL;
        explicitly passed ``handlers`` are used as they are.

        Raises:
            service.apps.AppLoadError: the app cannot be loaded.

        """
        stores = open_stores(settings, memory=memory)
        built = list(handlers) if handlers is not None else _build(settings, stores.memory)
        served = _with_outbox(built, stores.outbox)
        router = TopicRouter.from_settings(settings)
        producer = EventProducer(settings=settings, router=router)
        metrics = ServiceMetrics()
        loop = ConsumerLoop(
            settings=settings,
            handlers={router.handler_topic(handler.source): handler for handler in served},
            producer=producer,
            router=router,
            dlq=DeadLetterPublisher(producer=producer, topic=settings.dead_letter_topic_name),
            metrics_hooks=CombinedHooks(metrics, hooks) if hooks is not None else metrics,
            memory=stores.memory,
            timers=stores.timers,
        )
        metrics.bind(
            loop=loop,
            memory=stores.memory,
            orchestrators=[h.source for h in built if isinstance(h, ArvoOrchestrator | ArvoResumable)],
        )
        health = None
        if settings.health_port or health_socket is not None:
            health = HealthServer(
                port=settings.health_port,
                host=settings.health_host,
                readiness=Readiness(loop=loop, memory=stores.memory),
                metrics=metrics,
                sock=health_socket,
            )
        return cls(
            settings=settings,
            memory=stores.memory,
            handlers=served,
            router=router,
            producer=producer,
            loop=loop,
            hooks=hooks,
            metrics=metrics,
            health=health,
            watchdog=LoopWatchdog(
                interval_s=settings.loop_lag_check_interval_s,
                warning_s=settings.loop_lag_warning_s,
                observe=metrics.observe_loop_lag,
            ),
        )

    @property
    def topics(self) -> list[str]:
        """The topics this service consumes."""
        return [self.router.handler_topic(handler.source) for handler in self.handlers]

    async def prepare_topics(self) -> list[str]:
        """Create the consumed topics and the dead-letter topic when ``create_topics`` is on."""
        if not self.settings.create_topics:
            return []
        return await ensure_topics(self.settings, [*self.topics, self.settings.dead_letter_topic_name])

    async def wait_for_memory(self, stop: asyncio.Event | None = None) -> bool:
        """Wait until the memory store answers (and accepts the credentials); ``False`` if stopped first.

        Consumption must not begin while Redis is unreachable or refuses this client: every record
        would only wait. One WARNING line says why at the first failed attempt, another every
        ``_STILL_WAITING_S``; one INFO line when it answers.
        """
        interval = self.settings.dependency_probe_interval_ms / 1000
        waited_since: float | None = None
        last_line = 0.0
        while not await memory_answers(self.memory, timeout_s=None):
            now = time.monotonic()
            if waited_since is None or now - last_line >= _STILL_WAITING_S:
                _log.warning(
                    "waiting for Redis before consuming",
                    reason=getattr(self.memory, "last_ping_error", None) or "no answer to PING",
                    waited_s=round(now - waited_since, 1) if waited_since is not None else 0.0,
                    redis=_redacted(self.settings.redis_url.get_secret_value()),
                )
                last_line = now
                waited_since = now if waited_since is None else waited_since
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
                if stop.is_set():
                    return False
            else:
                await asyncio.sleep(interval)
        if waited_since is not None:
            _log.info("Redis answers; consuming", waited_s=round(time.monotonic() - waited_since, 1))
        return True

    async def start(self) -> None:
        """Start the health server, wait for Redis, create topics, start the producer and the loop."""
        if self.health is not None:
            await self.health.start()
        try:
            await self._start_execution()
            await self.wait_for_memory()
            await self.prepare_topics()
            await self.producer.start()
            try:
                await self.loop.start()
            except BaseException:
                await self.producer.stop()
                raise
        except BaseException:
            await self._stop_health()
            await self._stop_execution()
            raise
        self._started = True
        _log.info("service started", topics=self.topics, group=self.settings.consumer_group)

    async def stop(self) -> None:
        """Drain in-flight records, commit, stop the producer, close Redis, flush queued spans."""
        if self._started:
            await self.loop.stop()
            self._started = False
        await self.producer.stop()
        await self.memory.close()
        await self._stop_execution()
        await self._stop_health()
        await asyncio.to_thread(flush_tracing)
        _log.info("service stopped")

    async def _stop_health(self) -> None:
        if self.health is not None:
            await self.health.stop()

    async def _start_execution(self) -> None:
        """The process-wide handler thread pool (``handler_threads``) and the loop-lag watchdog."""
        if self._execution_started:
            return
        self._threads = configure_handler_threads(self.settings.handler_threads)
        self._execution_started = True
        if self.watchdog is not None:
            await self.watchdog.start()
        if self.settings.idle_trim_s > 0:
            stats = self.loop.stats
            trimmer = IdleMemoryTrimmer(
                activity=stats.consumed.total,
                idle_s=self.settings.idle_trim_s,
                check_s=min(5.0, self.settings.idle_trim_s),
            )
            self._trim_task = asyncio.create_task(trimmer.run(), name="arvo-idle-trim")

    async def _stop_execution(self) -> None:
        if not self._execution_started:
            return
        self._execution_started = False
        if self._trim_task is not None:
            self._trim_task.cancel()
            await asyncio.wait({self._trim_task})
            self._trim_task = None
        if self.watchdog is not None:
            await self.watchdog.stop()
        release_handler_threads(self._threads)
        self._threads = None

    async def run_until_signal(self, *, stop_event: asyncio.Event | None = None) -> BaseException | None:
        """Run until SIGTERM/SIGINT (or ``stop_event``); drain and commit on the way out.

        The signal handlers are installed before anything connects, so a SIGTERM during start-up
        (topic creation, producer start) also ends the service gracefully.
        """
        stop = stop_event or asyncio.Event()
        with signal_handlers(stop):
            try:
                if self.health is not None:
                    await self.health.start()
                await self._start_execution()
                if not await self.wait_for_memory(stop):
                    return None
                await self.prepare_topics()
                await self.producer.start()
                if stop.is_set():
                    return None
                return await run_until_signal(self.loop, stop_event=stop, signals=())
            finally:
                await self.producer.stop()
                await self.memory.close()
                await self._stop_execution()
                await self._stop_health()
                await asyncio.to_thread(flush_tracing)


def _build(settings: ServiceSettings, memory: Memory) -> list[ArvoHandler]:
    handlers = build_handlers(settings.app, memory, include_error_stack=settings.include_error_stack)
    # The deployment's lease TTL applies to the app's orchestrators and resumables: the settings check
    # it against the handler timeout, and a crashed worker's leases block instances at most this long.
    for handler in handlers:
        if isinstance(handler, ArvoOrchestrator | ArvoResumable):
            handler.lease_ttl_ms = settings.lease_ttl_ms
            handler.reply_source_check = settings.reply_source_check
            handler.keep_history(
                events=settings.instance_history_events, max_bytes=settings.instance_history_bytes
            )
    return handlers


def _with_outbox(handlers: list[ArvoHandler], outbox: EmissionOutbox | None) -> list[ArvoHandler]:
    if outbox is None:
        return handlers
    return [
        OutboxedHandler(handler, outbox) if isinstance(handler, ArvoEventHandler) else handler
        for handler in handlers
    ]


async def run_service(
    settings: ServiceSettings, *, health_socket: socket.socket | None = None
) -> BaseException | None:
    """Build the service from ``settings`` and run it until a signal (``arvo run``).

    Tracing is set up first from the ``OTEL_*`` variables (off when they configure nothing) and shut
    down last, so the spans of the drain are exported too. ``health_socket``: see
    :meth:`ArvoService.from_settings` (a worker of ``arvo run --workers``).

    Raises:
        service.runtime.otel.TracingConfigError: an ``OTEL_*`` variable has an unsupported value.

    """
    tracing = configure_tracing()
    try:
        if tracing is not None:
            _log.info(
                "tracing on",
                exporters=list(tracing.exporters),
                protocol=tracing.protocol,
                endpoint=tracing.endpoint,
            )
        service = ArvoService.from_settings(settings, health_socket=health_socket)
        tune_gc()  # the app, its contracts and the clients live as long as the process
        _log.info("starting", app=settings.app, bootstrap=settings.kafka_bootstrap_servers)
        return await service.run_until_signal()
    finally:
        await asyncio.to_thread(shutdown_tracing)
