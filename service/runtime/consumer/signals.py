"""Running a consumer loop until a signal: SIGTERM/SIGINT drain and commit instead of killing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from service.runtime.consumer.loop import ConsumerLoop

__all__ = ["run_until_signal", "signal_handlers"]

_log = structlog.get_logger("arvo.runtime.consumer")


@contextlib.contextmanager
def signal_handlers(
    stop: asyncio.Event, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[None]:
    """While active, the given signals set ``stop`` instead of killing the process."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in signals:
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix or not main thread
            continue
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_until_signal(
    loop: ConsumerLoop,
    *,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    stop_event: asyncio.Event | None = None,
) -> BaseException | None:
    """Start ``loop``, run until a signal (or ``stop_event``, or a fatal fetch error), then stop it.

    The stop drains in-flight records and commits their offsets (graceful shutdown on SIGTERM).

    Returns:
        The fatal error that ended the loop, or ``None`` after a signal or ``stop_event``.

    """
    stop = stop_event or asyncio.Event()
    with signal_handlers(stop, signals):
        await loop.start()
        stopper = asyncio.create_task(stop.wait())
        failure = asyncio.create_task(loop.wait_failed())
        try:
            await asyncio.wait({stopper, failure}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            await loop.stop()
            failure.cancel()
        error = failure.result() if failure.done() and not failure.cancelled() else None
        if error is not None:
            _log.error("consumer loop failed", error=repr(error))
        return error
