"""Rate-limited warnings: one line per key and interval, with the count of lines held back."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

__all__ = ["WarningLimiter"]


class WarningLimiter:
    """Decides which of a repeated warning's lines are written: at most one per key every ``interval_s``.

    Args:
        interval_s: The shortest time between two written lines of one key.
        clock: Monotonic seconds.

    """

    __slots__ = ("_clock", "_interval_s", "_state")

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._state: dict[Hashable, tuple[float, int]] = {}

    def allow(self, key: Hashable) -> int | None:
        """Lines of ``key`` held back since its last written one if this one may be written, else ``None``.

        A line held back is counted; a written one restarts the interval and the count.
        """
        now = self._clock()
        state = self._state.get(key)
        if state is not None and now - state[0] < self._interval_s:
            self._state[key] = (state[0], state[1] + 1)
            return None
        self._state[key] = (now, 0)
        return 0 if state is None else state[1]

    def clear(self, key: Hashable) -> int:
        """Forget ``key`` (its condition is over); return the lines held back since its last written one."""
        state = self._state.pop(key, None)
        return 0 if state is None else state[1]
