"""One worker process of the crash test: the full app from ``ARVO_*`` settings, as ``arvo run`` runs it.

``python -m tests.fault.worker`` builds :class:`service.runtime.app.ArvoService` from the environment
(``ARVO_APP`` names the workflow module, e.g. ``service.examples:bench_app``) and runs it until
SIGTERM/SIGINT. It prints one line ``ASSIGNED <n>`` on stdout whenever its set of assigned partitions
changes, so the crash test can tell when a restarted worker has rejoined the group.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import structlog
from aiokafka import TopicPartition

from service.runtime.app import ArvoService
from service.runtime.consumer import LoopHooks
from service.runtime.settings import load_settings

__all__ = ["AssignmentPrinter", "main"]


class AssignmentPrinter(LoopHooks):
    """Prints ``ASSIGNED <n>`` on every assignment change (read by the crash test)."""

    def on_assignment(self, partitions: frozenset[TopicPartition]) -> None:
        print(f"ASSIGNED {len(partitions)}", flush=True)


async def _run() -> int:
    settings = load_settings(env_file=None)
    service = ArvoService.from_settings(settings, hooks=AssignmentPrinter())
    print(f"STARTING group={settings.consumer_group} topics={len(service.topics)}", flush=True)
    error = await service.run_until_signal()
    print(f"STOPPED error={error!r}", flush=True)
    return 0 if error is None else 1


def main() -> int:
    """Run the worker until a signal; exit status 1 if the consumer loop failed."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(_run())
    return uvloop.run(_run())


if __name__ == "__main__":
    raise SystemExit(main())
