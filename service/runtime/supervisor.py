"""``arvo run --workers N``: one supervisor process in front of N service processes on one machine.

A pre-fork supervisor in the manner of uvicorn's and gunicorn's, for VMs where one process per core
is the unit to run (in Kubernetes one process per pod stays the default: scale with replicas).

* **Workers** are ordinary service processes (``arvo run`` with the same settings, hence the same
  consumer group: Kafka divides the partitions between them). They are started **one at a time**:
  the next once the previous answers ``/readyz`` (it joined the group), at most ``start_timeout_s``
  later — so the group settles member by member, the start-up CPU of N interpreters does not pile
  up, and a configuration that cannot work shows up in one worker rather than N.
* **Signals**: SIGTERM or SIGINT to the supervisor is passed on to every worker once; each drains as
  a single process does (in-flight records finish, offsets are committed). The supervisor waits
  ``drain_timeout_s`` + ``stop_margin_s`` for them, then SIGKILLs the rest. A worker receiving the
  same signal twice (a terminal's Ctrl-C reaches the whole process group) stops once.
* **Restarts**: a worker that exits without being asked is started again after a backoff
  (:class:`RestartPolicy`: 1 s, doubling, at most 30 s), with an ERROR line naming its exit code. A
  worker that keeps exiting soon after its start (``max_restarts`` times in a row) is a crash loop:
  the supervisor gives up, stops the other workers gracefully and fails.
* **One health port for the machine** (``ARVO_HEALTH_PORT``, served by the supervisor only): each
  worker serves its own ``/healthz``, ``/readyz`` and ``/metrics`` on a loopback socket the
  supervisor created and handed it (the same port across the worker's restarts), and the
  supervisor aggregates: ``/healthz`` is 200 while every worker runs and answers its ``/healthz``;
  ``/readyz`` is 200 when every worker is ready (the JSON body names each worker's failed checks);
  ``/metrics`` merges the workers' metrics (:mod:`service.runtime.metrics_aggregation`) and adds
  ``arvo_workers``, ``arvo_worker_up`` and ``arvo_worker_restarts_total``.
* **Exit status**: ``None`` from :meth:`Supervisor.run` (exit 0) when every worker drained after the
  signal; otherwise one line saying what failed (a worker killed after the grace period, one that
  failed while draining, a crash loop, a health port that cannot be bound).

Workers are subprocesses of the same entry point (:class:`SubprocessLauncher`), not
``multiprocessing`` children: each one is exactly what a single ``arvo run`` runs (settings read from
the same environment and ``.env``, the app imported afresh, uvloop and the allocator tuning set up
the same way), nothing of the supervisor's state is inherited or pickled, ``ps`` shows each worker's
command line, and the supervisor waits for them with asyncio. A pipe (the *lifeline*) tells a worker
when its supervisor is gone, even after a SIGKILL: it then stops gracefully instead of running on
unsupervised (:func:`watch_lifeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric

from service.runtime.health import HealthServer, ReadinessReport
from service.runtime.metrics_aggregation import MetricsAggregator, parse_exposition

__all__ = [
    "RestartPolicy",
    "SubprocessLauncher",
    "Supervisor",
    "WorkerLaunch",
    "WorkerProbe",
    "WorkerProcess",
    "describe_exit",
    "http_get",
    "watch_lifeline",
]

_log = structlog.get_logger("arvo.runtime.supervisor")

LOOPBACK: Final = "127.0.0.1"
"""Where the workers' own health servers listen (reachable from the machine only)."""
_CLEAN_STOP_CODES: Final = frozenset({0, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGINT})
"""Exit codes of a worker that stopped as asked: drained (0), or ended by the signal before its
handlers were installed (nothing had started yet), or interrupted while starting (130)."""


class WorkerProcess(Protocol):
    """A running worker: what the supervisor needs of :class:`asyncio.subprocess.Process`."""

    @property
    def pid(self) -> int:
        """Process id."""
        ...

    @property
    def returncode(self) -> int | None:
        """Exit code once it exited (negative: ended by that signal)."""
        ...

    async def wait(self) -> int:
        """Wait until it exits; its exit code."""
        ...

    def send_signal(self, sig: int) -> None:
        """Send ``sig``."""
        ...

    def kill(self) -> None:
        """SIGKILL it."""
        ...


WorkerLaunch = Callable[[int, socket.socket], Awaitable[WorkerProcess]]
"""Starts worker ``index`` serving its health endpoints on the given listening socket."""
WorkerProbe = Callable[[int, str, float], Awaitable[tuple[int, bytes]]]
"""``GET path`` on a worker's loopback ``port`` within ``timeout_s``: ``(status, body)``; raises
``OSError``/``TimeoutError``/``ValueError`` when it does not answer properly."""


@dataclass(frozen=True)
class RestartPolicy:
    """When and how often a worker that exited unexpectedly is started again.

    Attributes:
        initial_backoff_s: Wait before the first restart; doubled for each further crash in a row.
        max_backoff_s: Longest wait between restarts.
        max_restarts: Restarts in a row of a worker that crashes soon after starting before the
            supervisor gives up (a crash loop: a broken deployment, not bad luck).
        stable_s: A worker that ran this long before exiting starts a new series (its count of
            crashes in a row is reset).

    """

    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_restarts: int = 5
    stable_s: float = 60.0

    def backoff_s(self, crashes: int) -> float:
        """The wait before restarting a worker after its ``crashes``-th crash in a row (1-based)."""
        return float(min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, crashes - 1)))


def describe_exit(code: int | None) -> str:
    """An exit code for a log line: ``1``, ``killed by SIGKILL``, ``not started``."""
    if code is None:
        return "not started"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return str(code)


async def http_get(port: int, path: str, timeout_s: float) -> tuple[int, bytes]:
    """``GET path`` on ``127.0.0.1:port`` (HTTP/1.1, ``Connection: close``): ``(status, body)``.

    Raises:
        OSError: no connection.
        TimeoutError: no complete answer within ``timeout_s``.
        ValueError: the answer is not HTTP.

    """
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n".encode("ascii")
            )
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    head, separator, body = answer.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if not separator or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {answer[:60]!r}")
    return int(parts[1]), body


def watch_lifeline(fd: int, on_gone: Callable[[], None]) -> threading.Thread:
    """Call ``on_gone`` (in a daemon thread) when the supervisor holding the other end of ``fd`` is gone.

    ``fd`` is the read end of a pipe whose write end only the supervisor holds: the read returns
    end-of-file when the supervisor exits, however it exits.
    """

    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:  # pragma: no cover - retried by Python since PEP 475
                continue
            except OSError:
                break
        on_gone()

    thread = threading.Thread(target=watch, name="arvo-lifeline", daemon=True)
    thread.start()
    return thread


class SubprocessLauncher:
    """Starts workers as subprocesses running ``command(index, health_fd, lifeline_fd)``.

    The worker inherits the environment, the working directory, stdout and stderr; only its health
    socket and the read end of the lifeline pipe are passed on (``pass_fds``).
    """

    def __init__(self, command: Callable[[int, int, int], Sequence[str]]) -> None:
        self._command = command
        self._lifeline_read, self._lifeline_write = os.pipe()

    async def __call__(self, index: int, sock: socket.socket) -> WorkerProcess:
        """Start worker ``index`` serving its health endpoints on ``sock``."""
        argv = list(self._command(index, sock.fileno(), self._lifeline_read))
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, pass_fds=(sock.fileno(), self._lifeline_read)
        )

    def close(self) -> None:
        """Close both ends of the lifeline (running workers then see their supervisor gone)."""
        for fd in (self._lifeline_read, self._lifeline_write):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class _Slot:
    """One worker position: its socket (kept across restarts) and its current process."""

    index: int
    sock: socket.socket
    process: WorkerProcess | None = None
    task: asyncio.Task[None] | None = None
    started_at: float = 0.0
    answered: bool = False
    crashes: int = 0
    last_exit: int | None = None
    restart_at: float | None = None
    gave_up: bool = False

    @property
    def name(self) -> str:
        return f"worker {self.index}"

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port


class _Cached:
    """A report computed at most once per ``cache_s``; concurrent callers share one computation."""

    def __init__(self, compute: Callable[[], Awaitable[ReadinessReport]], cache_s: float) -> None:
        self._compute = compute
        self._cache_s = cache_s
        self._report: ReadinessReport | None = None
        self._at = 0.0
        self._running: asyncio.Task[ReadinessReport] | None = None

    async def check(self) -> ReadinessReport:
        if self._report is not None and time.monotonic() - self._at < self._cache_s:
            return self._report
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run())
        return await asyncio.shield(self._running)

    async def _run(self) -> ReadinessReport:
        report = await self._compute()
        self._report, self._at = report, time.monotonic()
        return report


class _PodMetrics:
    """``/metrics`` of the supervisor: the workers' metrics merged, plus the supervisor's own."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._rendered = b""
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            self._rendered = await self._supervisor.scrape()

    def render(self) -> bytes:
        return self._rendered


class Supervisor:
    """Runs ``workers`` worker processes until a signal; see the module docstring.

    Args:
        workers: How many worker processes.
        launch: Starts one worker (:class:`SubprocessLauncher` in ``arvo run``; fakes in tests).
        drain_timeout_s: The workers' drain timeout (``ARVO_DRAIN_TIMEOUT_S``).
        stop_margin_s: Added to ``drain_timeout_s`` before workers still running are SIGKILLed
            (leaving the group, flushing the producer and spans take a few seconds after the drain).
        health_port: The machine's health port (0: none); ``health_host`` the address it binds.
        policy: When crashed workers are restarted.
        probe: How the workers' endpoints are read (:func:`http_get`).
        start_timeout_s: Longest wait for a started worker to become ready before the next starts;
            a worker that has not answered any probe yet counts as alive this long.
        probe_timeout_s: Bound on each request to a worker.
        cache_s: How long an aggregated ``/healthz`` or ``/readyz`` answer is reused.
        signals: The signals that stop the supervisor (and are passed on to the workers).

    """

    def __init__(
        self,
        *,
        workers: int,
        launch: WorkerLaunch,
        drain_timeout_s: float,
        stop_margin_s: float = 10.0,
        health_port: int = 0,
        health_host: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the machine
        policy: RestartPolicy | None = None,
        probe: WorkerProbe = http_get,
        start_timeout_s: float = 60.0,
        probe_timeout_s: float = 2.0,
        cache_s: float = 1.0,
        signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self._launch = launch
        self._stop_after_s = drain_timeout_s + stop_margin_s
        self._policy = policy or RestartPolicy()
        self._probe = probe
        self._start_timeout_s = start_timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._signals = tuple(signals)
        self._slots: list[_Slot] = []
        self._stop = asyncio.Event()
        self._stop_signal: int = signal.SIGTERM
        self._failures: list[str] = []
        self._killed: set[int] = set()
        self._aggregator = MetricsAggregator()
        self.registry = CollectorRegistry()
        """The supervisor's own metrics (merged into ``/metrics`` with the workers')."""
        Gauge("arvo_workers", "Worker processes this supervisor runs.", registry=self.registry).set(workers)
        self._up = Gauge(
            "arvo_worker_up",
            "1 while the worker runs and answered the last scrape of its metrics, else 0.",
            ["worker"],
            registry=self.registry,
        )
        self._restarts = Counter(
            "arvo_worker_restarts",
            "Restarts of a worker after it exited without being asked to.",
            ["worker"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self.readiness = _Cached(self._readiness, cache_s)
        """The aggregated ``/readyz`` check."""
        self.liveness = _Cached(self._liveness, cache_s)
        """The aggregated ``/healthz`` check."""
        self.health: HealthServer | None = None
        if health_port:
            self.health = HealthServer(
                port=health_port,
                host=health_host,
                readiness=self.readiness,
                liveness=self.liveness,
                metrics=_PodMetrics(self),
            )

    # --- running ------------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """A stop was requested (a signal, or a crash loop)."""
        return self._stop.is_set()

    def pids(self) -> dict[int, int]:
        """The pid of each running worker, by index."""
        return {slot.index: slot.process.pid for slot in self._slots if slot.process is not None}

    async def run(self) -> str | None:
        """Start the workers, supervise them until a signal, drain them; ``None`` or what failed."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in self._signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        self._slots = [_Slot(index, socket.create_server((LOOPBACK, 0))) for index in range(self.workers)]
        for slot in self._slots:
            self._up.labels(str(slot.index)).set(0)
            self._restarts.labels(str(slot.index))
        try:
            if self.health is not None:
                try:
                    await self.health.start()
                except OSError as error:
                    _log.error("supervisor cannot start", error=str(error))
                    return str(error)
            _log.info("supervisor started", workers=self.workers, pid=os.getpid())
            for slot in self._slots:
                if self.stopping:
                    break
                slot.task = asyncio.create_task(self._run_slot(slot), name=f"arvo-{slot.name}")
                if slot.index < self.workers - 1:
                    await self._wait_ready(slot)
            await self._stop.wait()
            await self._drain()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            for slot in self._slots:
                if slot.task is not None and not slot.task.done():  # only when run() itself was cancelled
                    slot.task.cancel()
                    if slot.process is not None:
                        with contextlib.suppress(ProcessLookupError):
                            slot.process.kill()
            if self.health is not None:
                await self.health.stop()
            for slot in self._slots:
                slot.sock.close()
        if self._failures:
            return "; ".join(self._failures)
        _log.info("supervisor stopped: every worker drained")
        return None

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop: pass ``sig`` on to every running worker (once) and drain them."""
        if self.stopping:
            return
        self._stop_signal = sig
        self._stop.set()
        for slot in self._slots:
            if slot.process is not None:
                self._send(slot, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopping:
            _log.info("signal received again: still waiting for the workers to drain", signal=sig.name)
            return
        _log.info(
            "stopping: signal passed on to the workers; waiting for them to drain",
            signal=sig.name,
            workers=sorted(self.pids().values()),
            kill_after_s=self._stop_after_s,
        )
        self.request_stop(sig)

    def _send(self, slot: _Slot, sig: int) -> None:
        assert slot.process is not None
        with contextlib.suppress(ProcessLookupError):
            slot.process.send_signal(sig)

    async def _run_slot(self, slot: _Slot) -> None:
        """Start the slot's worker, wait for it to exit; restart it (backoff) unless stopping."""
        while not self.stopping:
            slot.started_at = time.monotonic()
            slot.answered = False
            code: int | None = None
            try:
                process = await self._launch(slot.index, slot.sock)
            except Exception as error:
                _log.error("worker could not be started", worker=slot.index, error=repr(error))
            else:
                slot.process = process
                _log.info("worker started", worker=slot.index, pid=process.pid, port=slot.port)
                if self.stopping:  # the signal came while it was being started
                    self._send(slot, self._stop_signal)
                code = await process.wait()
                slot.process = None
                slot.last_exit = code
                self._up.labels(str(slot.index)).set(0)
                self._aggregator.retire(slot.index)
                if self.stopping:
                    self._stopped(slot, process.pid, code)
                    return
            ran_s = time.monotonic() - slot.started_at
            slot.crashes = 1 if ran_s >= self._policy.stable_s else slot.crashes + 1
            if slot.crashes > self._policy.max_restarts:
                self._give_up(slot, code, ran_s)
                return
            delay = self._policy.backoff_s(slot.crashes)
            _log.error(
                "worker exited without being asked to: restarting it",
                worker=slot.index,
                exit_code=describe_exit(code),
                ran_s=round(ran_s, 1),
                restart_in_s=delay,
                crashes_in_a_row=slot.crashes,
                gives_up_after=self._policy.max_restarts,
            )
            slot.restart_at = time.monotonic() + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            slot.restart_at = None
            if self.stopping:
                return
            self._restarts.labels(str(slot.index)).inc()

    def _stopped(self, slot: _Slot, pid: int, code: int) -> None:
        """Log how a worker ended after the stop; a failure unless it stopped as asked."""
        if slot.index in self._killed:
            failure = f"worker {slot.index} (pid {pid}) did not stop within {self._stop_after_s:g} s: killed"
        elif code in _CLEAN_STOP_CODES:
            _log.info("worker stopped", worker=slot.index, pid=pid, exit_code=describe_exit(code))
            return
        else:
            failure = (
                f"worker {slot.index} (pid {pid}) failed while stopping: exit code {describe_exit(code)}"
            )
        _log.error("worker failed", worker=slot.index, pid=pid, exit_code=describe_exit(code), error=failure)
        self._failures.append(failure)

    def _give_up(self, slot: _Slot, code: int | None, ran_s: float) -> None:
        slot.gave_up = True
        failure = (
            f"worker {slot.index} exited {slot.crashes} times in a row within"
            f" {self._policy.stable_s:g} s of starting (last exit code {describe_exit(code)}):"
            " a crash loop, gave up"
        )
        _log.error(
            "worker keeps crashing: giving up and stopping the other workers",
            worker=slot.index,
            exit_code=describe_exit(code),
            ran_s=round(ran_s, 1),
            crashes_in_a_row=slot.crashes,
        )
        self._failures.append(failure)
        self.request_stop(signal.SIGTERM)

    async def _wait_ready(self, slot: _Slot) -> None:
        """Wait until the slot's worker is ready, has exited, the supervisor stops, or the time-out."""
        deadline = time.monotonic() + self._start_timeout_s
        while not self.stopping:
            process = slot.process
            if (process is None and slot.last_exit is not None) or slot.gave_up:
                return  # it exited: its task restarts it; the next starts meanwhile
            if process is not None:
                try:
                    status, _ = await self._probe(slot.port, "/readyz", min(1.0, self._probe_timeout_s))
                except (OSError, TimeoutError, ValueError):
                    pass
                else:
                    slot.answered = True
                    if status == 200:
                        _log.info("worker ready", worker=slot.index, pid=process.pid)
                        return
            if time.monotonic() > deadline:
                _log.warning(
                    "worker not ready in time: starting the next one anyway",
                    worker=slot.index,
                    waited_s=self._start_timeout_s,
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.2)

    async def _drain(self) -> None:
        """Wait for every worker to exit (bounded); SIGKILL the ones still running at the deadline."""
        tasks = {slot.task for slot in self._slots if slot.task is not None}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._stop_after_s)
        if pending:
            for slot in self._slots:
                if slot.process is not None:
                    _log.error(
                        "worker did not stop in time: killing it",
                        worker=slot.index,
                        pid=slot.process.pid,
                        waited_s=self._stop_after_s,
                    )
                    self._killed.add(slot.index)
                    with contextlib.suppress(ProcessLookupError):
                        slot.process.kill()
            await asyncio.wait(pending, timeout=10.0)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                error = task.exception()
                _log.error("worker supervision failed", error=repr(error), exc_info=error)
                self._failures.append(f"worker supervision failed: {error!r}")

    # --- aggregated health and metrics --------------------------------------------------------------

    def _not_running(self, slot: _Slot) -> str:
        if slot.gave_up:
            last = describe_exit(slot.last_exit)
            return f"gave up after {slot.crashes} crashes in a row (last exit code {last})"
        if slot.restart_at is not None:
            wait = max(0.0, slot.restart_at - time.monotonic())
            return f"exited with {describe_exit(slot.last_exit)}: restarting in {wait:.1f} s"
        if slot.last_exit is not None:
            return f"exited with {describe_exit(slot.last_exit)}"
        return "not started yet"

    async def _get(self, slot: _Slot, path: str) -> tuple[int, bytes] | str:
        """A worker's answer to ``GET path``, or why there is none."""
        try:
            answer = await self._probe(slot.port, path, self._probe_timeout_s)
        except (OSError, TimeoutError, ValueError) as error:
            return f"{path} did not answer: {type(error).__name__}{f': {error}' if str(error) else ''}"
        slot.answered = True
        return answer

    async def _liveness(self) -> ReadinessReport:
        async def one(slot: _Slot) -> tuple[str, bool]:
            if slot.process is None:
                state = self._not_running(slot)
                return state, slot.task is None and not slot.gave_up  # waiting for its turn to start
            answer = await self._get(slot, "/healthz")
            if isinstance(answer, str):
                starting = not slot.answered and time.monotonic() - slot.started_at < self._start_timeout_s
                return (f"starting ({answer})" if starting else answer), starting
            if answer[0] != 200:
                return f"/healthz answered {answer[0]}", False
            return "ok", True

        results = await asyncio.gather(*(one(slot) for slot in self._slots))
        checks = {slot.name: state for slot, (state, _) in zip(self._slots, results, strict=True)}
        failed = tuple(slot.name for slot, (_, alive) in zip(self._slots, results, strict=True) if not alive)
        return ReadinessReport(ready=not failed, checks=checks, failed=failed)

    async def _readiness(self) -> ReadinessReport:
        async def one(slot: _Slot) -> str:
            if slot.process is None:
                return self._not_running(slot)
            answer = await self._get(slot, "/readyz")
            if isinstance(answer, str):
                return answer
            status, body = answer
            if status == 200:
                return "ok"
            return f"unready: {_failed_checks(body)}"

        states = await asyncio.gather(*(one(slot) for slot in self._slots))
        checks = {slot.name: state for slot, state in zip(self._slots, states, strict=True)}
        failed = tuple(name for name, state in checks.items() if state != "ok")
        return ReadinessReport(ready=not failed, checks=checks, failed=failed)

    async def scrape(self) -> bytes:
        """Scrape every running worker's ``/metrics`` and render the merge (``/metrics``).

        A worker that does not answer counts with its last scrape's counters (so the pod's totals
        never go down) and without its gauges; ``arvo_worker_up`` is 0 for it.
        """
        slots = [slot for slot in self._slots if slot.process is not None]
        answers = await asyncio.gather(*(self._get(slot, "/metrics") for slot in slots))
        live: list[Sequence[Metric]] = []
        for slot, answer in zip(slots, answers, strict=True):
            families: list[Metric] | None = None
            if not isinstance(answer, str) and answer[0] == 200:
                try:
                    families = parse_exposition(answer[1].decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as error:
                    _log.warning("worker metrics unreadable", worker=slot.index, error=repr(error))
            else:
                _log.warning(
                    "worker metrics not scraped",
                    worker=slot.index,
                    error=answer if isinstance(answer, str) else answer[0],
                )
            self._up.labels(str(slot.index)).set(1 if families is not None else 0)
            if families is not None and slot.process is not None:
                self._aggregator.update(slot.index, families)
                live.append(families)
            else:
                live.append(
                    [family for family in self._aggregator.last(slot.index) if family.type != "gauge"]
                )
        own = parse_exposition(generate_latest(self.registry).decode("utf-8"))
        return self._aggregator.render(live, extra=own)


def _failed_checks(body: bytes) -> str:
    """``name: state`` of each failed check of a worker's ``/readyz`` body."""
    try:
        report = orjson.loads(body)
        checks: dict[str, str] = report.get("checks", {})
        failed: list[str] = report.get("failed", [])
        return "; ".join(f"{name} ({checks.get(name, '?')})" for name in failed) or "no check named"
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return body[:200].decode("utf-8", "replace").strip() or "empty answer"
