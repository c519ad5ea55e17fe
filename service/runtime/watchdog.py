"""The loop-lag watchdog: how late the event loop runs, and who blocks it while it is blocked.

Everything of a service shares one event loop, so code that blocks it — a handler doing synchronous
work in an ``async def`` function, a statechart action that is not quick — freezes consumption,
publishing, Kafka heartbeats and ``/healthz`` alike. Synchronous handler functions run in worker
threads (:mod:`service.arvo.blocking`); this watchdog catches the rest.

* **Lag, continuously**: a task on the loop sleeps ``interval_s`` and measures how late it wakes;
  each lateness is observed (``arvo_event_loop_lag_seconds``).
* **A block, while it lasts**: a daemon thread checks every ``interval_s`` whether that task is
  overdue by ``warning_s`` or more. If so it logs ONE warning naming what runs on the loop — the
  task, the handler (source, event id and type, subject; from
  :func:`service.arvo.blocking.running_handler`) and the code location (the loop thread's stack) —
  and how long the loop has been blocked. When the loop runs again, one more line gives the total.
  Both durations count from when the task was due, so they are lower bounds (by at most
  ``interval_s``).

The thread only reads: the loop's current task, the handler slot and the loop thread's frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

import structlog

from service.arvo.blocking import event_fields, running_handler

__all__ = ["LoopWatchdog"]

_STACK_FRAMES: Final = 8
_LIBRARY_PATHS: Final = tuple(
    {path for name in ("stdlib", "platstdlib", "purelib", "platlib") if (path := sysconfig.get_path(name))}
)
_log = structlog.get_logger("arvo.runtime.watchdog")


class LoopWatchdog:
    """Measures the event loop's lag and reports blocks while they last; see the module docstring.

    Args:
        interval_s: How often the loop task wakes (one lag sample each) and the thread checks.
        warning_s: Lateness from which the loop counts as blocked (one warning per block).
        observe: Called on the loop with each lateness in seconds (the histogram).
        clock: Monotonic clock (tests).

    """

    def __init__(
        self,
        *,
        interval_s: float = 0.25,
        warning_s: float = 1.0,
        observe: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0 or warning_s <= 0:
            raise ValueError("interval_s and warning_s must be positive")
        self.interval_s = interval_s
        self.warning_s = warning_s
        self._observe = observe
        self._clock = clock
        self._lock = threading.Lock()
        self._due = 0.0
        """When the loop task should wake next (``clock()``); overdue means the loop is blocked."""
        self._reported: float | None = None
        """The ``_due`` of the block the thread warned about and the loop has not ended yet."""
        self._blocked_fields: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.blocks = 0
        """Blocks reported so far."""

    @property
    def running(self) -> bool:
        """Whether the watchdog is started."""
        return self._task is not None

    async def start(self) -> None:
        """Start the loop task and the watching thread (on the loop to watch)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._due = self._clock() + self.interval_s
        self._stop = threading.Event()  # a thread of an earlier start may still be winding down
        self._task = asyncio.create_task(self._tick(), name="arvo-loop-watchdog")
        self._thread = threading.Thread(
            target=self._watch, args=(self._stop, self._loop), name="arvo-loop-watchdog", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop both (the thread ends within ``interval_s``; not waited for)."""
        task, self._task = self._task, None
        self._stop.set()
        self._thread = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> LoopWatchdog:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- on the loop ---------------------------------------------------------------------------

    async def _tick(self) -> None:
        interval, clock, observe = self.interval_s, self._clock, self._observe
        while True:
            await asyncio.sleep(interval)
            now = clock()
            with self._lock:
                due = self._due
                self._due = now + interval
                reported, self._reported = self._reported, None
                fields, self._blocked_fields = self._blocked_fields, {}
            lag = max(0.0, now - due)
            if observe is not None:
                try:
                    observe(lag)
                except Exception:  # a metrics problem must not end the watchdog (a false block)
                    _log.exception("loop lag not recorded")
            if reported is not None and reported == due:
                _log.warning("event loop free again", blocked_s=round(lag, 3), **fields)

    # --- on the watching thread ----------------------------------------------------------------

    def _watch(self, stop: threading.Event, loop: asyncio.AbstractEventLoop) -> None:
        interval = self.interval_s
        while not stop.wait(interval):
            if loop.is_closed() or not loop.is_running():
                return  # the loop ended without stopping the watchdog: nothing to watch
            with self._lock:
                due = self._due
                blocked = self._clock() - due
                if blocked < self.warning_s or self._reported == due:
                    continue
                # Logged under the lock: the loop's "free again" line cannot come first.
                self._reported = due
                self.blocks += 1
                try:
                    fields = self._describe()
                except Exception as error:  # never let a diagnostic end the watching
                    fields = {"describe_error": repr(error)}
                self._blocked_fields = fields
                _log.warning(
                    "event loop blocked: nothing else runs (Kafka, Redis, /healthz, other records)",
                    blocked_s=round(blocked, 3),
                    **fields,
                )

    def _describe(self) -> dict[str, Any]:
        """What runs on the loop now: the task, its handler and the loop thread's innermost frames."""
        fields: dict[str, Any] = {}
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        if task is not None:
            fields["task"] = task.get_name()
        frame = sys._current_frames().get(self._loop_thread)
        running = running_handler(frame)
        if running is not None:
            fields.update(event_fields(running.source, running.event))
        if frame is not None:
            stack = list(
                reversed(
                    traceback.StackSummary.extract(
                        traceback.walk_stack(frame), limit=_STACK_FRAMES, lookup_lines=False
                    )
                )
            )
            if stack:
                own = [entry for entry in stack if not entry.filename.startswith(_LIBRARY_PATHS)]
                where = (own or stack)[-1]
                fields["where"] = f"{where.filename}:{where.lineno} in {where.name}"
                fields["stack"] = [f"{entry.filename}:{entry.lineno} in {entry.name}" for entry in stack]
        return fields
