"""The health port: ``/healthz``, ``/readyz`` and ``/metrics`` on a tiny asyncio HTTP/1.1 server.

No web framework: three read-only endpoints for Kubernetes probes and Prometheus do not need one,
and the server runs on the service's own event loop (so ``/healthz`` answering proves the loop is
not blocked).

* ``GET /healthz`` — ``200 ok`` while the process runs (liveness, start-up and Docker health checks).
* ``GET /readyz`` — ``200`` when the consumer loop runs, the group gave it its partitions, the Kafka
  cluster answers a metadata request, Redis answers ``PING`` and no record is waiting out an outage
  of either (a dependency that refused a record's work — a cluster slot down, writes refused —
  is named with how long it has been down), no partition is stalled (records waiting, none finished
  for ``stall_timeout_s``) and offset commits have not been failing that long; otherwise ``503``.
  The body is JSON naming every check and which failed, e.g.
  ``{"status": "unready", "failed": ["redis"], "checks": {"redis": "no answer to PING", ...}}``.
  Results are cached for ``cache_s`` (1 s), so a probe storm costs one round of checks per second.
  A member that joined its group but got no partition (more replicas than partitions) is ready:
  it stands by for a rebalance, and a rolling update must not wait for it.
* ``GET /metrics`` — the service's registry in the Prometheus text format.

``HEAD`` is answered like ``GET`` without a body; other methods get ``405``, other paths ``404``.
Every response closes the connection.

The supervisor of ``arvo run --workers N`` (:mod:`service.runtime.supervisor`) serves the same three
paths with its own checks: a ``liveness`` check behind ``/healthz`` and aggregated readiness and
metrics (any :class:`HealthCheck` and :class:`MetricsSource`); its workers serve theirs on a
loopback socket it hands them (``sock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from service.runtime.stores import memory_answers

if TYPE_CHECKING:
    from service.arvo.memory import Memory
    from service.runtime.consumer import ConsumerLoop

__all__ = ["HealthCheck", "HealthServer", "MetricsSource", "Readiness", "ReadinessReport"]

_log = structlog.get_logger("arvo.runtime.health")

_REQUEST_TIMEOUT_S: Final = 5.0
_MAX_HEADER_LINES: Final = 100
_REASONS: Final = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class ReadinessReport:
    """The outcome of one round of readiness checks.

    Attributes:
        ready: Every check passed.
        checks: One short line per check (``"ok"`` or what is wrong).
        failed: Names of the failed checks.

    """

    ready: bool
    checks: dict[str, str]
    failed: tuple[str, ...] = field(default=())

    def to_json(self, *, good: str = "ready", bad: str = "unready") -> bytes:
        """The ``/readyz`` body; ``good``/``bad`` are the ``status`` words (``/healthz``: alive, dead)."""
        body: dict[str, object] = {"status": good if self.ready else bad, "checks": self.checks}
        if self.failed:
            body["failed"] = list(self.failed)
        return orjson.dumps(body) + b"\n"


class HealthCheck(Protocol):
    """What ``/readyz`` (or ``/healthz``, as ``liveness``) asks: :class:`Readiness` or the supervisor's."""

    async def check(self) -> ReadinessReport:
        """The current report."""
        ...


class MetricsSource(Protocol):
    """What ``/metrics`` renders: :class:`~service.runtime.metrics.ServiceMetrics` or the supervisor's."""

    async def refresh(self) -> None:
        """Bring values read at scrape time up to date (bounded in time; must not raise)."""
        ...

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        ...


class Readiness:
    """Readiness of one service: consumer loop, partitions, Kafka, Redis; cached for ``cache_s``.

    Args:
        loop: The service's consumer loop.
        memory: The service's memory (its :meth:`~service.arvo.memory.Memory.ping` is the check).
        cache_s: How long a report is reused.
        timeout_s: Bound on each network check (Kafka metadata, Redis ``PING``).

    """

    def __init__(
        self, *, loop: ConsumerLoop, memory: Memory, cache_s: float = 1.0, timeout_s: float = 1.0
    ) -> None:
        self._loop = loop
        self._memory = memory
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._report: ReadinessReport | None = None
        self._checked_at = 0.0
        self._running: asyncio.Task[ReadinessReport] | None = None

    async def check(self) -> ReadinessReport:
        """The current report (a cached one if it is younger than ``cache_s``)."""
        if self._report is not None and time.monotonic() - self._checked_at < self._cache_s:
            return self._report
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check_now())
        # Shielded: a probe that disconnects must not cancel the round other probes wait for.
        return await asyncio.shield(self._running)

    async def _check_now(self) -> ReadinessReport:
        checks: dict[str, str] = {}
        loop = self._loop
        checks["consumer"] = "ok" if loop.is_running else "consumer loop is not running"
        assigned = len(loop.assignment)
        if assigned:
            checks["partitions"] = "ok"
        elif loop.joined:
            checks["partitions"] = "ok"  # joined, nothing to own: stands by (see module docstring)
        else:
            checks["partitions"] = "no partitions assigned yet"
        stalled = loop.stalled_partitions()
        if stalled:
            checks["partitions"] = "stalled (records waiting, none finished): " + ", ".join(
                f"{tp.topic}/{tp.partition} for {seconds:.0f} s"
                for tp, seconds in sorted(
                    stalled.items(), key=lambda item: (item[0].topic, item[0].partition)
                )
            )
        failing = loop.commits_failing_for()
        if failing >= loop.stall_timeout_s:
            checks["commits"] = f"offset commits failing for {failing:.0f} s: {loop.last_commit_error}"
        kafka, redis = await asyncio.gather(
            loop.broker_reachable(timeout_s=self._timeout_s), self._redis_answers()
        )
        checks["kafka"] = "ok" if kafka else "cluster does not answer a metadata request"
        checks["redis"] = "ok" if redis else "no answer to PING"
        # An outage the records met (a slot down, writes refused, credentials rejected) counts even
        # when the probes above still pass.
        now = time.monotonic()
        for name, outage in loop.dependencies.outages.items():
            checks[name] = outage.describe(now)
        failed = tuple(name for name, state in checks.items() if state != "ok")
        report = ReadinessReport(ready=not failed, checks=checks, failed=failed)
        self._report, self._checked_at = report, time.monotonic()
        return report

    async def _redis_answers(self) -> bool:
        return await memory_answers(self._memory, timeout_s=self._timeout_s)


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` (see the module docstring).

    Args:
        port: TCP port; ``0`` picks a free one (see :attr:`port` after :meth:`start`).
        host: Address to bind (all interfaces by default: probes come from the kubelet).
        readiness: What ``/readyz`` reports; without it ``/readyz`` answers like ``/healthz``.
        metrics: What ``/metrics`` renders; without it ``/metrics`` is ``404``.
        liveness: What ``/healthz`` reports (``200`` or ``503`` with the report as JSON); without it
            ``/healthz`` answers ``200 ok`` while the event loop runs.
        sock: A listening socket to serve instead of binding ``host:port`` (a worker of
            ``arvo run --workers``: its supervisor made it); closed by :meth:`stop`.

    """

    def __init__(
        self,
        *,
        port: int,
        host: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
        readiness: HealthCheck | None = None,
        metrics: MetricsSource | None = None,
        liveness: HealthCheck | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._requested_port = port
        self._host = host
        self._readiness = readiness
        self._metrics = metrics
        self._liveness = liveness
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._routes: dict[str, Callable[[], Awaitable[tuple[int, str, bytes]]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._render_metrics,
        }

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the one picked for ``0``)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and start serving.

        Raises:
            OSError: the port cannot be bound (in use, not permitted); the message names it.

        """
        if self._server is not None:
            return
        if self._sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=self._sock)
            _log.info("health server listening", port=self.port, endpoints=sorted(self._routes))
            return
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._requested_port)
        except OSError as error:
            raise OSError(
                error.errno,
                f"health port {self._host}:{self._requested_port} (ARVO_HEALTH_PORT) cannot be bound: "
                f"{error.strerror}",
            ) from error
        _log.info("health server listening", port=self.port, endpoints=sorted(self._routes))

    async def stop(self) -> None:
        """Stop accepting connections and close the listening socket."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- endpoints ---------------------------------------------------------------------------------

    async def _healthz(self) -> tuple[int, str, bytes]:
        if self._liveness is not None:
            report = await self._liveness.check()
            body = report.to_json(good="alive", bad="dead")
            return (200 if report.ready else 503), "application/json", body
        return await self._ok()

    async def _ok(self) -> tuple[int, str, bytes]:
        return 200, "text/plain; charset=utf-8", b"ok\n"

    async def _readyz(self) -> tuple[int, str, bytes]:
        if self._readiness is None:
            return await self._ok()
        report = await self._readiness.check()
        return (200 if report.ready else 503), "application/json", report.to_json()

    async def _render_metrics(self) -> tuple[int, str, bytes]:
        if self._metrics is None:
            return 404, "text/plain; charset=utf-8", b"no metrics\n"
        await self._metrics.refresh()
        return 200, CONTENT_TYPE_LATEST, self._metrics.render()

    # --- HTTP --------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                method, path = await _read_request(reader)
                if method is None:
                    status, content_type, body = 400, "text/plain; charset=utf-8", b"bad request\n"
                elif method not in ("GET", "HEAD"):
                    status, content_type, body = 405, "text/plain; charset=utf-8", b"method not allowed\n"
                elif (route := self._routes.get(path)) is None:
                    status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
                else:
                    status, content_type, body = await route()
                allow = "Allow: GET, HEAD\r\n" if status == 405 else ""
                head = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                    f"Content-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"Cache-Control: no-store\r\n{allow}"
                    "Connection: close\r\n\r\n"
                ).encode("ascii")
                writer.write(head if method == "HEAD" else head + body)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or dawdled: nothing to answer
        except Exception:
            _log.exception("health request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str | None, str]:
    """``(method, path)`` of the request line (query string dropped); ``(None, "")`` if malformed."""
    request_line = (await reader.readline()).decode("latin-1").strip()
    for _ in range(_MAX_HEADER_LINES):  # headers are read and ignored
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None, ""
    method, target = parts[0].upper(), parts[1]
    return method, target.split("?", 1)[0]
