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
                                       unset ``OTEL_BSP_MAX_QUEUE_SIZE`` is 8192 here, see
                                       :data:`BSP_DEFAULTS`)
=====================================  ==============================================================

OTLP/HTTP uses :class:`service.runtime.otlp_encoding.FastOTLPSpanExporter`: the SDK exporter with
an encoder that writes the same request bytes ~4x faster (the exporter thread shares the GIL).

Spans go through a ``BatchSpanProcessor``: the hot path only queues a finished span, a background
thread exports. :func:`shutdown_tracing` flushes what is queued (``arvo run`` calls it on the way
out, ``arvo publish`` after its publish).

The runtime's own spans (``process <topic>``, ``send <topic>``, Redis calls) use
:func:`runtime_tracer`; :func:`use_tracer_provider` points them and the Arvo handler spans at a
provider of the caller's (tests with an in-memory exporter, embedders that own their provider)
instead of the global one, which OpenTelemetry lets a process set only once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace

from service.arvo import telemetry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from redis.asyncio import Redis, RedisCluster

__all__ = [
    "BSP_DEFAULTS",
    "DEFAULT_SERVICE_NAME",
    "RUNTIME_TRACER_NAME",
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
    "tracing_enabled",
    "tracing_requested",
    "untraced",
    "use_tracer_provider",
]

DEFAULT_SERVICE_NAME: Final = "arvo-service"
"""``service.name`` when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names one."""
RUNTIME_TRACER_NAME: Final = "arvo-service.runtime"
"""Instrumentation scope of the runtime's spans (consumer, producer)."""

BSP_DEFAULTS: Final[Mapping[str, int]] = {"OTEL_BSP_MAX_QUEUE_SIZE": 8192}
"""Batch processor settings used when their ``OTEL_BSP_*`` variable is unset (others: the SDK's).

Only the queue differs from the SDK (2,048 spans): under a burst the exporter thread falls behind
and a full queue drops spans; 8,192 (~4.5 KB each, ~36 MB at worst) absorbs bursts of the bench
workload. ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512) and ``OTEL_BSP_SCHEDULE_DELAY`` (5,000 ms) keep
the SDK defaults: 128 and 2,048 measured no better. See docs/performance.md, "Tracing cost".
"""

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


def batch_span_processor(exporter: SpanExporter, environ: Mapping[str, str] | None = None) -> SpanProcessor:
    """A ``BatchSpanProcessor`` for ``exporter`` with the service's defaults (see :data:`BSP_DEFAULTS`).

    A default applies only when its ``OTEL_BSP_*`` variable is unset (``environ``, default
    ``os.environ``); a variable that is set is read by the SDK as usual.
    """
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if environ is None else environ

    def default(variable: str) -> int | None:
        # None: the SDK reads the variable (or uses its own default).
        return BSP_DEFAULTS.get(variable) if _env(env, variable) is None else None

    return BatchSpanProcessor(
        exporter,
        max_queue_size=default("OTEL_BSP_MAX_QUEUE_SIZE"),
        schedule_delay_millis=default("OTEL_BSP_SCHEDULE_DELAY"),
        max_export_batch_size=default("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    )


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
