"""OpenTelemetry set-up of the service: the SDK, the OTLP exporter and the runtime's tracer.

:func:`configure_tracing` reads the standard variables and installs a global SDK tracer provider,
or nothing at all when tracing is not configured, so the engine keeps its no-SDK fast path
(:func:`service.arvo.telemetry.tracing_enabled` is ``False`` and no span is ever built):

=====================================  ==============================================================
``OTEL_SDK_DISABLED=true``             off, whatever else is set
``OTEL_TRACES_EXPORTER``               ``otlp`` (default when an endpoint is set), ``console``
                                       (span JSON on stderr), ``none`` (off); comma-separated list
``OTEL_EXPORTER_OTLP_ENDPOINT``        base URL (HTTP: ``/v1/traces`` is appended), or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` the full URL; either one switches tracing on
``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``  ``http/protobuf`` (default, as the specification says)
                                       or ``grpc``
``OTEL_SERVICE_NAME``,                 the resource; ``service.name`` defaults to ``arvo-service``
``OTEL_RESOURCE_ATTRIBUTES``
``OTEL_TRACES_SAMPLER(_ARG)``          the sampler (read by the SDK; default parent-based always-on)
``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_*``  batch processor and exporter details (read by the SDK;
                                       unset, the ``OTEL_BSP_*`` sizes are the service's, see
                                       :data:`BSP_DEFAULTS`)
=====================================  ==============================================================

OTLP/HTTP uses :class:`service.runtime.otlp_encoding.FastOTLPSpanExporter`: the SDK exporter with
an encoder that writes the same request bytes ~4x faster (the exporter thread shares the GIL).

Spans go through a ``BatchSpanProcessor``: the hot path only queues a finished span, a background
thread exports. :func:`shutdown_tracing` flushes what is queued (``arvo run`` calls it on the way
out, ``arvo publish`` after its publish).

Spans the batch processor drops because its queue is full are not lost silently: they are counted
(:func:`spans_dropped`, served as ``arvo_spans_dropped_total`` on ``/metrics``) and logged once per
:data:`SPAN_DROP_LOG_INTERVAL_S` with the count of that interval (``spans dropped``), instead of the
SDK's ``Queue full, dropping Span.`` line per drop, which is filtered out.

The runtime's own spans (``process <topic>``, ``send <topic>``, Redis calls) use
:func:`runtime_tracer`; :func:`use_tracer_provider` points them and the Arvo handler spans at a
provider of the caller's (tests with an in-memory exporter, embedders that own their provider)
instead of the global one, which OpenTelemetry lets a process set only once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog
from opentelemetry import trace

from service.arvo import telemetry

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.util.types import Attributes
    from redis.asyncio import Redis, RedisCluster

__all__ = [
    "BSP_DEFAULTS",
    "DEFAULT_SERVICE_NAME",
    "RUNTIME_TRACER_NAME",
    "SPAN_DROP_LOG_INTERVAL_S",
    "SpanDrops",
    "TracingConfigError",
    "TracingSetup",
    "batch_span_processor",
    "build_tracing",
    "configure_tracing",
    "flush_tracing",
    "instrument_redis",
    "otlp_http_span_exporter",
    "runtime_tracer",
    "shutdown_tracing",
    "span_drops",
    "spans_dropped",
    "tracing_enabled",
    "tracing_requested",
    "untraced",
    "use_tracer_provider",
]

DEFAULT_SERVICE_NAME: Final = "arvo-service"
"""``service.name`` when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names one."""
RUNTIME_TRACER_NAME: Final = "arvo-service.runtime"
"""Instrumentation scope of the runtime's spans (consumer, producer)."""

BSP_DEFAULTS: Final[Mapping[str, int]] = {
    "OTEL_BSP_MAX_QUEUE_SIZE": 16_384,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
    "OTEL_BSP_SCHEDULE_DELAY": 1_000,
}
"""Batch processor settings used when their ``OTEL_BSP_*`` variable is unset (the SDK reads a set one).

Sized so that a process at its sustained peak with the shipped sampling (10 % of workflows,
parent-based) drops nothing, even while the collector stalls for one export time-out
(docs/performance.md, "Sizing the batch processor"): ~1,200 spans/s at that peak, so the queue holds
16,384 spans (SDK: 2,048), ~13 s of them, ~80 MB at ~5 KB per span, only while the exporter is stuck.
A batch of 512 (the SDK's; not larger: a set ``OTEL_BSP_MAX_QUEUE_SIZE`` below it would be refused)
goes out every ~0.4 s at that rate; the schedule delay (1 s, SDK 5 s) only matters below ~500 spans/s
and bounds how long a span waits before it is sent.
"""
SPAN_DROP_LOG_INTERVAL_S: Final = 60.0
"""Spans dropped by a full batch queue are logged at most once per this many seconds, with the count."""

_HTTP: Final = "http/protobuf"
_GRPC: Final = "grpc"
_PROTOCOLS: Final = (_HTTP, _GRPC)
_EXPORTERS: Final = ("otlp", "console", "none")
_DEFAULT_HTTP_ENDPOINT: Final = "http://localhost:4318"

_GLOBAL_RUNTIME_TRACER: Final = trace.get_tracer(RUNTIME_TRACER_NAME)
_runtime_tracer: trace.Tracer = _GLOBAL_RUNTIME_TRACER
_provider_override: trace.TracerProvider | None = None
_installed: TracingSetup | None = None
_install_lock = threading.Lock()
_redis_operations: dict[str, str] = {}
_log = structlog.get_logger("arvo.runtime.otel")


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value the service cannot use (names the variable and the rule)."""


@dataclass(frozen=True)
class TracingSetup:
    """What :func:`configure_tracing` installed.

    Attributes:
        provider: The SDK tracer provider (global).
        exporters: Names of the exporters in use (``otlp``, ``console``).
        protocol: The OTLP protocol, ``None`` without the OTLP exporter.
        endpoint: The OTLP endpoint spans are sent to, ``None`` without the OTLP exporter.

    """

    provider: SdkTracerProvider
    exporters: tuple[str, ...]
    protocol: str | None
    endpoint: str | None


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _exporter_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    raw = _env(environ, "OTEL_TRACES_EXPORTER")
    if raw is None:
        endpoint = _env(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env(
            environ, "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ("otlp",) if endpoint else ()
    names = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    for name in names:
        if name not in _EXPORTERS:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={raw[:60]!r}: unsupported exporter {name[:30]!r} "
                f"(rule: one or more of {', '.join(_EXPORTERS)})"
            )
    return tuple(name for name in names if name != "none")


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for spans to be exported (see the module docstring).

    Raises:
        TracingConfigError: ``OTEL_TRACES_EXPORTER`` names an unsupported exporter.

    """
    env = os.environ if environ is None else environ
    if (_env(env, "OTEL_SDK_DISABLED") or "").lower() == "true":
        return False
    return bool(_exporter_names(env))


def _protocol(environ: Mapping[str, str]) -> str:
    variable = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    value = _env(environ, variable)
    if value is None:
        variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        value = _env(environ, variable)
    protocol = (value or _HTTP).lower()
    if protocol not in _PROTOCOLS:
        raise TracingConfigError(
            f"{variable}={value!r:.60}: unsupported OTLP protocol (rule: one of {', '.join(_PROTOCOLS)})"
        )
    return protocol


def _http_endpoint(environ: Mapping[str, str]) -> str:
    full = _env(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if full is not None:
        return full
    base = _env(environ, "OTEL_EXPORTER_OTLP_ENDPOINT") or _DEFAULT_HTTP_ENDPOINT
    return f"{base.rstrip('/')}/v1/traces"


def _otlp_exporter(environ: Mapping[str, str]) -> tuple[SpanExporter, str, str]:
    protocol = _protocol(environ)
    if protocol == _GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        endpoint = (
            _env(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or _env(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
            or "http://localhost:4317"
        )
        return GrpcSpanExporter(endpoint=endpoint), protocol, endpoint
    endpoint = _http_endpoint(environ)
    return otlp_http_span_exporter(endpoint), protocol, endpoint


def otlp_http_span_exporter(endpoint: str) -> SpanExporter:
    """The OTLP/HTTP span exporter of the service: the SDK's, with the faster span encoder.

    :class:`service.runtime.otlp_encoding.FastOTLPSpanExporter` sends the same bytes as
    ``OTLPSpanExporter`` (headers, compression, timeout and retries from the same ``OTEL_*``
    variables), encoded ~4x faster on the exporter thread.
    """
    from service.runtime.otlp_encoding import FastOTLPSpanExporter

    return FastOTLPSpanExporter(endpoint=endpoint)


class SpanDrops:
    """Counts spans dropped by full batch queues; logs the count once per interval (thread-safe).

    Every drop adds to :attr:`total` at once (what ``arvo_spans_dropped_total`` serves). The first
    drop after a quiet period arms a timer; when it fires, ``interval_s`` later, one WARNING line
    ``spans dropped`` gives the spans dropped in that interval (``dropped``) and since start
    (``dropped_total``). So there is at most one line per interval, and none while nothing is
    dropped; :meth:`report` writes the pending count at once (:func:`shutdown_tracing` calls it).
    """

    def __init__(self, interval_s: float = SPAN_DROP_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._total = 0
        self._pending = 0
        self._timer: threading.Timer | None = None

    @property
    def total(self) -> int:
        """Spans dropped since this object was made."""
        return self._total

    def add(self, count: int) -> None:
        """Record ``count`` dropped spans (called on the thread that ended the span)."""
        with self._lock:
            self._total += count
            self._pending += count
            if self._timer is None:
                self._timer = threading.Timer(self.interval_s, self.report)
                self._timer.daemon = True
                self._timer.start()

    def report(self) -> None:
        """Log the spans dropped since the last line, if any, and disarm the timer."""
        with self._lock:
            timer, self._timer = self._timer, None
            pending, self._pending = self._pending, 0
            total = self._total
        if timer is not None:
            timer.cancel()  # harmless when it is the timer's own thread
        if pending:
            _log.warning(
                "spans dropped",
                dropped=pending,
                dropped_total=total,
                interval_s=self.interval_s,
                reason="the batch span processor's queue was full: the exporter does not keep up "
                "(sample fewer workflows with OTEL_TRACES_SAMPLER_ARG, check the collector, "
                "or raise OTEL_BSP_MAX_QUEUE_SIZE)",
            )


_span_drops = SpanDrops()


def span_drops() -> SpanDrops:
    """The process's :class:`SpanDrops` (every processor of :func:`batch_span_processor` feeds it)."""
    return _span_drops


def spans_dropped() -> int:
    """Spans dropped by full batch queues in this process so far (``arvo_spans_dropped_total``)."""
    return _span_drops.total


# How drops are observed. opentelemetry-sdk (1.45) has no callback for them; what it has is its
# internal metrics: given ``meter_provider=`` and with OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true
# (read from os.environ while the processor is built), a BatchSpanProcessor adds every span it drops
# to the counter ``otel.sdk.processor.span.processed`` with ``error.type=queue_full`` (semantic
# conventions, "SDK Batching Span Processors MUST use queue_full"). The meter below hands the SDK a
# counter that forwards those drops to SpanDrops and ignores everything else (no-op otherwise).
# If a later SDK stops doing so, batch_span_processor() logs that drops cannot be counted, and
# tests/unit/test_otel.py (test_a_full_queue_is_counted_and_logged_once_per_interval and
# test_the_sdk_still_reports_drops_through_its_processor_metric) fails.
_PROCESSED_METRIC: Final = "otel.sdk.processor.span.processed"
_QUEUE_FULL: Final = "queue_full"
_INTERNAL_METRICS_VARIABLE: Final = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
_internal_metrics_lock = threading.Lock()


def _drop_meter_provider(drops: SpanDrops) -> tuple[MeterProvider, Callable[[], bool]]:
    """A no-op ``MeterProvider`` whose ``otel.sdk.processor.span.processed`` counter feeds ``drops``.

    Also returned: whether that counter was created through it (the hook works). Built on call:
    ``opentelemetry.metrics`` is imported only when tracing is on.
    """
    from opentelemetry.metrics import Counter, Meter, NoOpCounter, NoOpMeter, NoOpMeterProvider

    class DropCounter(NoOpCounter):
        def add(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
            if attributes is not None and attributes.get("error.type") == _QUEUE_FULL:
                drops.add(int(amount))

    class DropMeter(NoOpMeter):
        hooked = False

        def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
            if name != _PROCESSED_METRIC:
                return super().create_counter(name, unit, description)
            self.hooked = True
            return DropCounter(name, unit, description)

    class DropMeterProvider(NoOpMeterProvider):
        def __init__(self) -> None:
            self.meters: list[DropMeter] = []

        def get_meter(
            self,
            name: str,
            version: str | None = None,
            schema_url: str | None = None,
            attributes: Attributes = None,
        ) -> Meter:
            meter = DropMeter(name, version=version, schema_url=schema_url)
            self.meters.append(meter)
            return meter

    provider = DropMeterProvider()
    return provider, lambda: any(meter.hooked for meter in provider.meters)


class _NoQueueFullLines(logging.Filter):
    """Drops the SDK's ``Queue full, dropping Span.`` record: :class:`SpanDrops` counts and logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "Queue full, dropping %s." and record.args == ("Span",))


# The logger of the SDK's BatchProcessor (opentelemetry/sdk/_shared_internal/__init__.py, 1.45).
_SDK_BATCH_LOGGER: Final = "opentelemetry.sdk._shared_internal"
_queue_full_filter = _NoQueueFullLines()


def batch_span_processor(
    exporter: SpanExporter, environ: Mapping[str, str] | None = None, *, drops: SpanDrops | None = None
) -> SpanProcessor:
    """A ``BatchSpanProcessor`` for ``exporter`` with the service's defaults (see :data:`BSP_DEFAULTS`).

    A default applies only when its ``OTEL_BSP_*`` variable is unset (``environ``, default
    ``os.environ``); a variable that is set is read by the SDK as usual. Spans it drops because its
    queue is full are counted and logged by ``drops`` (default: the process's, :func:`span_drops`).
    """
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if environ is None else environ

    def default(variable: str) -> int | None:
        # None: the SDK reads the variable (or uses its own default).
        return BSP_DEFAULTS.get(variable) if _env(env, variable) is None else None

    sdk_logger = logging.getLogger(_SDK_BATCH_LOGGER)
    if _queue_full_filter not in sdk_logger.filters:
        sdk_logger.addFilter(_queue_full_filter)
    meters, hooked = _drop_meter_provider(drops if drops is not None else _span_drops)
    with _internal_metrics_lock:  # the SDK reads the switch from os.environ in the constructor
        previous = os.environ.get(_INTERNAL_METRICS_VARIABLE)
        os.environ[_INTERNAL_METRICS_VARIABLE] = "true"
        try:
            processor = BatchSpanProcessor(
                exporter,
                max_queue_size=default("OTEL_BSP_MAX_QUEUE_SIZE"),
                schedule_delay_millis=default("OTEL_BSP_SCHEDULE_DELAY"),
                max_export_batch_size=default("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
                meter_provider=meters,
            )
        finally:
            if previous is None:
                del os.environ[_INTERNAL_METRICS_VARIABLE]
            else:
                os.environ[_INTERNAL_METRICS_VARIABLE] = previous
    if not hooked():
        _log.warning(
            "dropped spans cannot be counted with this opentelemetry-sdk",
            reason=f"its BatchSpanProcessor did not create the {_PROCESSED_METRIC} counter",
        )
    return processor


def _resource(environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource

    # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES from os.environ.
    named = SERVICE_NAME in OTELResourceDetector().detect().attributes or _env(environ, "OTEL_SERVICE_NAME")
    return Resource.create() if named else Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME})


def build_tracing(environ: Mapping[str, str] | None = None) -> TracingSetup | None:
    """Build (not install) the SDK provider the ``OTEL_*`` variables describe; ``None`` when off.

    The resource, sampler, batch processor and exporter details are read from ``os.environ`` by the
    SDK; ``environ`` (default ``os.environ``) decides whether tracing is on, which exporters and
    which OTLP protocol and endpoint are used.

    Raises:
        TracingConfigError: an ``OTEL_*`` variable has an unsupported value.

    """
    env = os.environ if environ is None else environ
    if not tracing_requested(env):
        return None
    from opentelemetry.sdk.trace import TracerProvider

    # The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (read by the SDK).
    provider = TracerProvider(resource=_resource(env))
    names = _exporter_names(env)
    protocol = endpoint = None
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            exporter, protocol, endpoint = _otlp_exporter(env)
        else:
            import sys

            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter(out=sys.stderr)
        provider.add_span_processor(batch_span_processor(exporter, env))
    return TracingSetup(provider=provider, exporters=names, protocol=protocol, endpoint=endpoint)


def configure_tracing() -> TracingSetup | None:
    """Install the SDK as configured by ``OTEL_*`` (see the module docstring); ``None`` when off.

    Idempotent: a second call returns the first call's set-up. The provider becomes OpenTelemetry's
    global one, so the Arvo handler spans and the runtime spans both use it.

    Raises:
        TracingConfigError: an ``OTEL_*`` variable has an unsupported value.

    """
    global _installed  # noqa: PLW0603 - one SDK per process
    with _install_lock:
        if _installed is not None:
            return _installed
        setup = build_tracing()
        if setup is None:
            return None
        trace.set_tracer_provider(setup.provider)
        # Not logged here: ``arvo publish`` calls this before any logging is configured.
        _installed = setup
        return setup


def _provider() -> Any:
    return _provider_override if _provider_override is not None else trace.get_tracer_provider()


def flush_tracing(timeout_ms: int = 5_000) -> bool:
    """Export the spans queued so far (blocking, at most ``timeout_ms``); ``True`` when all went out."""
    flush = getattr(_provider(), "force_flush", None)
    if flush is None:
        return True
    return bool(flush(timeout_ms))


def shutdown_tracing(timeout_ms: int = 5_000) -> None:
    """Flush and shut down the provider installed by :func:`configure_tracing` (no-op otherwise)."""
    global _installed
    with _install_lock:
        setup, _installed = _installed, None
    if setup is None:
        return
    setup.provider.force_flush(timeout_ms)
    setup.provider.shutdown()
    _span_drops.report()


def use_tracer_provider(provider: trace.TracerProvider | None) -> trace.TracerProvider | None:
    """Send the Arvo and runtime spans to ``provider`` (``None``: the global one again).

    Returns the previous override, so a test can restore it.
    """
    global _provider_override, _runtime_tracer  # noqa: PLW0603 - the runtime's single tracer switch
    previous = _provider_override
    _provider_override = provider
    if provider is None:
        telemetry.use_tracer(None)
        _runtime_tracer = _GLOBAL_RUNTIME_TRACER
    else:
        telemetry.use_tracer(provider.get_tracer("arvo-instrumentation", "1.0.0"))
        _runtime_tracer = provider.get_tracer(RUNTIME_TRACER_NAME)
    return previous


def runtime_tracer() -> trace.Tracer:
    """The tracer of the runtime's spans (the override of :func:`use_tracer_provider`, else global)."""
    return _runtime_tracer


def tracing_enabled() -> bool:
    """Whether spans are recorded (an SDK is installed or a provider was given); cheap, call per use."""
    return telemetry.tracing_enabled()


def untraced() -> AbstractContextManager[None]:
    """Inside it, instrumented clients (Redis) make no spans: for probes and scrapes, not workflows."""
    if not tracing_enabled():
        return contextlib.nullcontext()
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


def _name_redis_span(span: trace.Span, _instance: object, args: Any, _kwargs: Any) -> None:
    """Request hook: ``EVALSHA <sha>`` of a known script becomes ``redis <operation>``."""
    if len(args) > 1 and args[0] == "EVALSHA" and span.is_recording():
        operation = _redis_operations.get(str(args[1]))
        if operation is not None:
            span.update_name(f"redis {operation}")
            span.set_attribute("arvo.redis.operation", operation)


def instrument_redis(client: Redis | RedisCluster, *, scripts: Mapping[str, str] | None = None) -> bool:
    """Make ``client``'s commands child spans (``opentelemetry-instrumentation-redis``), when tracing is on.

    Only this client is instrumented (nothing is patched globally), with the provider of
    :func:`use_tracer_provider` or the global one. Without tracing the client is left untouched,
    so it costs nothing.

    Args:
        client: The redis-py asyncio client.
        scripts: SHA1 → operation name of Lua scripts (``RedisMemory.script_operations``): their
            ``EVALSHA`` spans are named ``redis <operation>``.

    Returns:
        Whether the client was instrumented.

    """
    if not tracing_enabled():
        return False
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    _redis_operations.update(scripts or {})
    if getattr(client, "_is_instrumented_by_opentelemetry", False):
        return True
    RedisInstrumentor.instrument_client(
        client, tracer_provider=_provider_override, request_hook=_name_redis_span
    )
    return True
