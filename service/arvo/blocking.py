"""Synchronous handler functions run in worker threads, off the event loop; which handler runs where.

Everything of a service shares one event loop: Kafka fetches and heartbeats, Redis, publishing,
``/healthz``. A handler function that blocks it (8 s of synchronous code) freezes all of that, and
the handler timeout cannot interrupt it. So a *synchronous* handler function (a plain ``def``, not
``async def``) never runs on the loop: :func:`run_sync_handler` runs it in a bounded, process-wide
pool of worker threads (:class:`HandlerThreads`) while the loop goes on with other records.

* **Context**: the function runs in a copy of the caller's :mod:`contextvars` context, so the current
  OpenTelemetry span (the handler span) and structlog's bound fields are the same in the thread:
  spans and log lines do not change.
* **Timeout**: the consumer's handler timeout cancels the *awaiting*: the execution fails at the
  timeout and is retried or parked as before. The thread itself cannot be stopped (Python cannot kill
  a thread): it keeps running until the function returns, and stays busy meanwhile. That is logged
  (WARNING, naming the handler and the event), and so is the moment such a thread returns, and a
  pool whose threads are all busy (calls then wait for a free one; at most once a minute).
* **Configuration**: the runtime sets the pool at start-up (:func:`configure_handler_threads`,
  ``ARVO_HANDLER_THREADS``); without that (tests, ``arvo demo``) a pool of
  :data:`DEFAULT_HANDLER_THREADS` threads is made on first use. ``0`` runs synchronous functions on
  the loop, as before. The threads are daemon threads: a stuck one never holds up the process's exit.

``async def`` handler functions, resumable handler functions (always ``async``) and statechart guards
and actions (synchronous by design, and meant to be pure and quick) run on the loop: they must not
block. The loop-lag watchdog of the runtime reports one that does, naming it through
:func:`running_handler` — what :func:`enter_handler`/:func:`leave_handler` record around a
handler function's call, keyed by the calling frame (well under a microsecond per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import structlog

from service.arvo.subject import ArvoOrchestrationSubject

if TYPE_CHECKING:
    from types import FrameType

    from service.arvo.event import ArvoEvent

__all__ = [
    "DEFAULT_HANDLER_THREADS",
    "HandlerThreads",
    "RunningHandler",
    "configure_handler_threads",
    "enter_handler",
    "event_fields",
    "handler_threads",
    "is_async_callable",
    "leave_handler",
    "release_handler_threads",
    "run_sync_handler",
    "running_handler",
]

DEFAULT_HANDLER_THREADS: Final = 8
"""Threads of the pool when nothing configured it (``ARVO_HANDLER_THREADS``' default).

A member runs at most one execution per assigned partition at a time (one lane each), so threads
beyond its partition count never run; 8 covers a member owning every partition of a default topic
(6, ``ARVO_TOPIC_PARTITIONS``) with two to spare for threads stuck after a timeout. Not derived from
the CPU count: in a container that is the host's, and more threads do not make CPU-bound Python
faster (the GIL); raise it for handlers that mostly wait on I/O across many partitions.
"""

_SATURATION_LOG_EVERY_S: Final = 60.0
_SHORT_SUBJECT_CHARS: Final = 64
_log = structlog.get_logger("arvo.handler.threads")


# --- which handler runs in which frame (read by the runtime's loop-lag watchdog) -----------------


class RunningHandler(NamedTuple):
    """A handler function being called: the handler's source and the event it handles."""

    source: str
    event: ArvoEvent


_running: dict[int, tuple[str, ArvoEvent]] = {}
"""The handler each registered frame is calling (key: ``id()`` of the frame that called
:func:`enter_handler`; the frame is alive while it is registered).

Keyed by frame, not by task or a single slot: while the loop is blocked, exactly the frames of the
code that blocks it are on the loop thread's stack, so the innermost registered one names the
handler even when many handlers' coroutines are suspended in between. Getting the caller's frame
costs less than ``asyncio.current_task()`` (which asks the OS for the process id on 3.11). The token
is the frame's ``id()``, not the frame: a frame holding itself in a local would be a reference cycle.
"""

_getframe = sys._getframe


def enter_handler(source: str, event: ArvoEvent) -> int:
    """Record that the caller is calling ``source``'s function for ``event``.

    Pass the result to :func:`leave_handler` when the call is over (in a ``finally``).
    """
    key = id(_getframe(1))
    _running[key] = (source, event)
    return key


def leave_handler(token: int) -> None:
    """Undo the :func:`enter_handler` that returned ``token``."""
    _running.pop(token, None)


def running_handler(frame: FrameType | None) -> RunningHandler | None:
    """The handler the innermost registered frame of the stack ending at ``frame`` is calling.

    For any thread's stack (``sys._current_frames()``), from any thread: it only reads.
    """
    while frame is not None:
        running = _running.get(id(frame))
        if running is not None:
            return RunningHandler(*running)
        frame = frame.f_back
    return None


def event_fields(source: str, event: ArvoEvent) -> dict[str, str]:
    """Log fields naming a handler and its event (``subject``: the instance key when it has one)."""
    return {
        "handler": source,
        "event_id": event.id,
        "event_type": event.type,
        "subject": _short_subject(event.subject),
    }


def _short_subject(subject: str) -> str:
    try:
        return ArvoOrchestrationSubject.parse(subject).instance_key
    except Exception:  # not an orchestration subject
        return subject if len(subject) <= _SHORT_SUBJECT_CHARS else f"{subject[:_SHORT_SUBJECT_CHARS]}…"


def is_async_callable(function: Callable[..., Any]) -> bool:
    """Whether ``function`` is an ``async def`` function (or partial, or object with ``async __call__``)."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - an instance's async __call__, not callability
    )


# --- the pool ------------------------------------------------------------------------------------


class _Call:
    """One call of a synchronous function, from submission to its result on the loop."""

    __slots__ = (
        "abandoned",
        "argument",
        "context",
        "event",
        "function",
        "future",
        "loop",
        "source",
        "started",
    )

    def __init__(
        self,
        function: Callable[[Any], Any],
        argument: Any,
        loop: asyncio.AbstractEventLoop,
        source: str,
        event: ArvoEvent | None,
    ) -> None:
        self.function = function
        self.argument = argument
        self.context = contextvars.copy_context()
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.source = source
        self.event = event
        self.started: float | None = None
        """``time.monotonic()`` when a thread took it; ``None`` while queued."""
        self.abandoned = False
        """Its awaiting was cancelled (timeout, shutdown): nobody wants the result any more."""

    def fields(self) -> dict[str, Any]:
        event = self.event
        if event is None:
            return {"handler": self.source}
        return event_fields(self.source, event)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class HandlerThreads:
    """A bounded pool of daemon threads for synchronous handler functions; see the module docstring.

    Threads are started on demand up to ``max_threads``; calls beyond that wait in a queue for a free
    thread.

    Args:
        max_threads: Most threads (at least 1).
        name: Prefix of the threads' names.

    """

    def __init__(self, max_threads: int, *, name: str = "arvo-handler") -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.max_threads = max_threads
        self._name = name
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._executing: set[_Call] = set()
        self._closed = False
        self._saturated_logged_at: float | None = None
        self._saturations = 0

    @property
    def threads(self) -> int:
        """Threads started so far."""
        return len(self._threads)

    @property
    def busy(self) -> int:
        """Threads running a function now."""
        return len(self._executing)

    @property
    def stuck(self) -> int:
        """Threads still running a function whose execution was cancelled (timed out)."""
        with self._lock:
            return sum(1 for call in self._executing if call.abandoned)

    async def run(
        self,
        function: Callable[[Any], Any],
        argument: Any,
        *,
        source: str = "",
        event: ArvoEvent | None = None,
    ) -> Any:
        """``function(argument)`` in a thread of the pool, in a copy of the current context.

        Cancelling the awaiting (the handler timeout) ends this call at once; the thread goes on
        until ``function`` returns (logged). ``source`` and ``event`` name the call in those lines.

        Raises:
            RuntimeError: the pool was shut down.

        """
        call = _Call(function, argument, asyncio.get_running_loop(), source, event)
        self._submit(call)
        try:
            return await call.future
        except asyncio.CancelledError:
            self._abandon(call)
            raise

    def shutdown(self) -> None:
        """Let every thread end once the calls already queued are done (does not wait for them)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = len(self._threads)
        for _ in range(threads):
            self._queue.put(None)

    def _submit(self, call: _Call) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the handler thread pool is shut down")
            self._queue.put(call)
            if self._idle.acquire(blocking=False):
                return  # an idle thread takes it
            if len(self._threads) < self.max_threads:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
                return
            self._saturations += 1
            now = time.monotonic()
            if self._saturated_logged_at is not None and now - self._saturated_logged_at < (
                _SATURATION_LOG_EVERY_S
            ):
                return
            self._saturated_logged_at = now
            stuck = sum(1 for executing in self._executing if executing.abandoned)
            saturations, self._saturations = self._saturations, 0
        _log.warning(
            "every handler thread is busy; synchronous handler calls wait for a free one",
            threads=self.max_threads,
            stuck_after_timeout=stuck,
            times_since_last_line=saturations,
            hint="raise ARVO_HANDLER_THREADS, or fix handlers that outlive ARVO_HANDLER_TIMEOUT_S",
            **call.fields(),
        )

    def _abandon(self, call: _Call) -> None:
        with self._lock:
            call.abandoned = True
            started = call.started
            if started is None or call not in self._executing:
                return  # never started (it will be skipped) or already finished
            stuck = sum(1 for executing in self._executing if executing.abandoned)
        _log.warning(
            "handler execution cancelled while its synchronous function runs in a thread; the thread"
            " cannot be stopped and stays busy until the function returns",
            running_s=round(time.monotonic() - started, 3),
            stuck_threads=stuck,
            busy_threads=len(self._executing),
            threads=self.max_threads,
            **call.fields(),
        )

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            self._execute(call)
            del call
            self._idle.release()

    def _execute(self, call: _Call) -> None:
        with self._lock:
            if call.abandoned:
                return  # cancelled while queued
            started = call.started = time.monotonic()
            self._executing.add(call)
        result: Any = None
        error: BaseException | None = None
        try:
            result = call.context.run(call.function, call.argument)
        except BaseException as exc:  # delivered to the awaiting coroutine
            if isinstance(exc, Exception) and not isinstance(exc, StopIteration):
                error = exc
            else:  # cannot be set on a future as such
                error = RuntimeError(f"handler function raised {exc!r}")
                error.__cause__ = exc
        finally:
            with self._lock:
                self._executing.discard(call)
                abandoned = call.abandoned
        if abandoned:
            _log.warning(
                "a handler thread stuck after its execution was cancelled returned",
                ran_s=round(time.monotonic() - started, 3),
                failed=repr(error) if error is not None else None,
                **call.fields(),
            )
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            call.loop.call_soon_threadsafe(_resolve, call.future, result, error)


# --- the process-wide pool -----------------------------------------------------------------------


class _ProcessPool:
    """The process-wide pool: configured, or the default made on first use, or none (inline)."""

    __slots__ = ("inline", "lock", "pool")

    def __init__(self) -> None:
        self.pool: HandlerThreads | None = None
        self.inline = False
        self.lock = threading.Lock()


_process = _ProcessPool()


def configure_handler_threads(max_threads: int) -> HandlerThreads | None:
    """Make the process-wide pool ``max_threads`` threads (``0``: synchronous functions run on the loop).

    A previous pool is shut down (its threads end after their current call). Returns the new pool
    (``None`` for ``0``), to hand to :func:`release_handler_threads` when done.

    Raises:
        ValueError: ``max_threads`` is negative.

    """
    if max_threads < 0:
        raise ValueError(f"max_threads must be 0 or more, got {max_threads}")
    pool = HandlerThreads(max_threads) if max_threads else None
    with _process.lock:
        previous, _process.pool, _process.inline = _process.pool, pool, pool is None
    if previous is not None:
        previous.shutdown()
    return pool


def release_handler_threads(pool: HandlerThreads | None) -> None:
    """Shut ``pool`` down; if it is still the process-wide pool, the default applies again.

    With ``None`` (the runtime configured ``0``), the default applies again too.
    """
    with _process.lock:
        if pool is _process.pool:
            _process.pool, _process.inline = None, False
    if pool is not None:
        pool.shutdown()


def handler_threads() -> HandlerThreads | None:
    """The process-wide pool (made with :data:`DEFAULT_HANDLER_THREADS` on first use); ``None``: inline."""
    pool = _process.pool
    if pool is not None or _process.inline:
        return pool
    with _process.lock:
        if _process.pool is None and not _process.inline:
            _process.pool = HandlerThreads(DEFAULT_HANDLER_THREADS)
        return _process.pool


async def run_sync_handler(
    function: Callable[[Any], Any], argument: Any, *, source: str, event: ArvoEvent | None = None
) -> Any:
    """``function(argument)`` in the process-wide pool (or on the loop when it is configured to ``0``)."""
    pool = handler_threads()
    if pool is None:
        return function(argument)
    return await pool.run(function, argument, source=source, event=event)
