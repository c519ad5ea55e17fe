"""Handler timeouts of every running execution, watched by one timer instead of one per record.

``asyncio.timeout`` schedules (and cancels) a loop timer per execution — a timer handle, a heap
push and, on uvloop, a libuv timer start and stop for every consumed record, although almost no
execution ever times out. :class:`ExecutionDeadlines` keeps the running executions' deadlines in a
dict (two dict operations per record) and checks them with one timer that runs only while
executions are running, every ``resolution_s``: a timeout fires at most ``resolution_s`` late
(:func:`resolution_for`: 50 ms, or a quarter of a shorter timeout).

The cancellation works as ``asyncio.timeout``'s: the overdue task is cancelled;
:meth:`ExecutionDeadlines.leave` uncancels it and reports whether the ``CancelledError`` it saw was
the deadline's (then the caller raises its timeout error) or came from outside (then it must
propagate).
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["ExecutionDeadlines", "resolution_for"]

_RESOLUTION_S: Final = 0.05


def resolution_for(timeout_s: float) -> float:
    """How often deadlines of ``timeout_s`` are checked: 50 ms, or a quarter of a shorter timeout."""
    return min(_RESOLUTION_S, timeout_s / 4)


class ExecutionDeadlines:
    """The deadlines of the executions running now, keyed by the task running each.

    Args:
        timeout_s: Bound of one execution.

    """

    __slots__ = ("_expired", "_resolution_s", "_running", "_timer", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._resolution_s = resolution_for(timeout_s)
        self._running: dict[asyncio.Task[object], float] = {}
        self._expired: dict[asyncio.Task[object], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> int:
        """Executions being watched."""
        return len(self._running)

    def enter(self, task: asyncio.Task[object]) -> None:
        """Start watching the execution ``task`` runs now (one at a time per task)."""
        loop = task.get_loop()
        self._running[task] = loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = loop.call_later(self._resolution_s, self._check)

    def leave(self, task: asyncio.Task[object], *, cancelled: bool) -> bool:
        """Stop watching ``task``'s execution; whether it timed out.

        Args:
            task: The task given to :meth:`enter`.
            cancelled: The execution ended with ``CancelledError``.

        Returns:
            ``True`` when the deadline cancelled the execution and nobody else cancelled the task:
            the caller raises its timeout error instead of the ``CancelledError``. ``False`` for an
            execution that ended in time, and for a cancellation from outside (which propagates).

        """
        self._running.pop(task, None)
        cancelling_before = self._expired.pop(task, None)
        if cancelling_before is None:
            return False
        # As asyncio.timeout: the deadline's cancel request is withdrawn whatever the outcome; the
        # execution timed out only if the CancelledError was that request alone.
        return task.uncancel() <= cancelling_before and cancelled

    def _check(self) -> None:
        self._timer = None
        if not self._running:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, deadline in self._running.items():
            if deadline <= now and task not in self._expired and not task.done():
                self._expired[task] = task.cancelling()
                task.cancel()
        self._timer = loop.call_later(self._resolution_s, self._check)
