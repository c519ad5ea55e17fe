"""Dependency outages: one state per dependency, one log line and one metric mark per change.

While Redis (or the broker) cannot serve the service, the records that need it *wait* — nothing is
counted against their retry budget, nothing is dead-lettered or parked for it — and
:class:`DependencyMonitor` knows it:

* the first record that meets the outage reports it (:meth:`DependencyMonitor.report_down`): one
  WARNING line, the ``on_dependency`` hook (metric), ``/readyz`` 503 naming the dependency;
* a probe (Redis: ``PING``, which also checks the credentials) runs every ``probe_interval_s`` while
  it is down; the waiting lanes retry as soon as it answers, or after their backoff at the latest;
* the first success reports it back (:meth:`DependencyMonitor.report_up`): one line with how long
  the outage lasted, the hook again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog

from service.runtime.otel import untraced

if TYPE_CHECKING:
    from service.runtime.consumer.hooks import LoopHooks

__all__ = ["DependencyMonitor", "Outage"]

_log = structlog.get_logger("arvo.runtime.consumer")
_REASON_CHARS: Final = 300


@dataclass(frozen=True, slots=True)
class Outage:
    """A dependency that is down.

    Attributes:
        dependency: Its name (``redis``, ``kafka``).
        since: ``time.monotonic()`` when it was first seen down.
        reason: The error that showed it (class and message, shortened).

    """

    dependency: str
    since: float
    reason: str

    def describe(self, now: float) -> str:
        """``unavailable for 12.3 s: <reason>`` (the ``/readyz`` line)."""
        return f"unavailable for {now - self.since:.1f} s: {self.reason}"


class DependencyMonitor:
    """The availability of the service's dependencies, as its records experience it.

    Args:
        hooks: Told of every change (``on_dependency(name, available)``).
        probe_interval_s: How often a down dependency with a probe is probed.
        clock: Monotonic seconds.

    """

    def __init__(
        self,
        *,
        hooks: LoopHooks,
        probe_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hooks = hooks
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._outages: dict[str, Outage] = {}
        self._up_events: dict[str, asyncio.Event] = {}
        self._probes: dict[str, Callable[[], Awaitable[bool]]] = {}
        self._probe_tasks: dict[str, asyncio.Task[None]] = {}

    def add_probe(self, dependency: str, probe: Callable[[], Awaitable[bool]]) -> None:
        """Probe ``dependency`` with ``probe`` (``True`` = it answers) while it is down."""
        self._probes[dependency] = probe

    @property
    def outages(self) -> dict[str, Outage]:
        """The dependencies down now, by name."""
        return dict(self._outages)

    def is_up(self, dependency: str) -> bool:
        """Whether ``dependency`` is not known to be down."""
        return dependency not in self._outages

    def up_event(self, dependency: str) -> asyncio.Event:
        """Set while ``dependency`` is up, cleared while it is down (wait on it to resume)."""
        event = self._up_events.get(dependency)
        if event is None:
            event = self._up_events[dependency] = asyncio.Event()
            if self.is_up(dependency):
                event.set()
        return event

    def report_down(self, dependency: str, error: BaseException) -> None:
        """``error`` shows that ``dependency`` cannot serve us; logs and marks only the first report."""
        if dependency in self._outages:
            return
        reason = f"{type(error).__name__}: {error}"[:_REASON_CHARS]
        self._outages[dependency] = Outage(dependency=dependency, since=self._clock(), reason=reason)
        self.up_event(dependency).clear()
        _log.warning(
            "dependency unavailable; records wait for it (no retry budget spent, nothing dead-lettered)",
            dependency=dependency,
            error=reason,
        )
        self._notify(dependency, available=False)
        probe = self._probes.get(dependency)
        running = self._probe_tasks.get(dependency)
        if probe is not None and (running is None or running.done()):
            self._probe_tasks[dependency] = asyncio.create_task(
                self._probe_until_up(dependency, probe), name=f"arvo-probe-{dependency}"
            )

    def report_up(self, dependency: str) -> None:
        """``dependency`` served us again; logs and marks the end of the outage, if there was one."""
        outage = self._outages.pop(dependency, None)
        if outage is None:
            return
        self.up_event(dependency).set()
        _log.warning(
            "dependency available again; waiting records resume",
            dependency=dependency,
            down_for_s=round(self._clock() - outage.since, 3),
        )
        self._notify(dependency, available=True)

    async def close(self) -> None:
        """Stop the probes."""
        tasks = list(self._probe_tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._probe_tasks.clear()

    async def _probe_until_up(self, dependency: str, probe: Callable[[], Awaitable[bool]]) -> None:
        while dependency in self._outages:
            await asyncio.sleep(self._probe_interval_s)
            try:
                with untraced():  # a probe is not worth a trace of its own
                    answered = await probe()
            except Exception:  # a probe that fails is a probe that says "still down"
                answered = False
            if answered:
                self.report_up(dependency)

    def _notify(self, dependency: str, *, available: bool) -> None:
        try:
            self._hooks.on_dependency(dependency, available)
        except Exception:
            _log.exception("loop hook failed", hook="on_dependency")
