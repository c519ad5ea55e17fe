"""The one place that chooses the stores behind the runtime's ports: Redis.

The runtime (consumer, health, metrics, app assembly) and the CLI depend on the ports
:class:`~service.arvo.memory.Memory` and :class:`~service.runtime.outbox.EmissionOutbox` only;
this module builds their Redis implementations from the settings, and is with the Redis adapter
modules the only one allowed to import them (an import-linter contract checks it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.runtime.outbox import EmissionOutbox
from service.runtime.timer_index import InMemoryTimerIndex, TimerIndex

if TYPE_CHECKING:
    from service.arvo.memory import Memory
    from service.runtime.settings import ServiceSettings

__all__ = ["Stores", "memory_answers", "open_memory", "open_stores"]


@dataclass(frozen=True)
class Stores:
    """The stores of one service process.

    Attributes:
        memory: Leases and state records of orchestrations.
        outbox: Emissions of stateless handlers (``None`` when ``stateless_outbox_ttl_s`` is 0).

    """

    memory: Memory
    outbox: EmissionOutbox | None
    timers: TimerIndex
    """Per-partition schedules of orchestrations' timers (hints; the records hold the truth)."""


async def memory_answers(memory: Memory, *, timeout_s: float | None) -> bool:
    """Whether ``memory`` answers its ``ping`` within ``timeout_s`` (``None``: its own timeouts).

    Untraced: a probe (readiness, start-up, a timed-out execution's check) is not worth a trace of its
    own. Never raises.
    """
    from service.runtime.otel import untraced

    try:
        async with asyncio.timeout(timeout_s):
            with untraced():
                return await memory.ping()
    except TimeoutError:
        return False


def open_memory(settings: ServiceSettings) -> Memory:
    """The Redis memory of ``settings``; the caller closes it.

    URL, key prefix, cluster mode, retention and replica acknowledgements (``ARVO_REDIS_WAIT_*``).
    """
    from service.runtime.redis_memory import RedisMemory

    return RedisMemory.from_url(
        settings.redis_url.get_secret_value(),
        key_prefix=settings.redis_key_prefix,
        cluster_mode=settings.redis_cluster,
        instance_retention_s=settings.instance_retention_s,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )


def open_stores(settings: ServiceSettings, *, memory: Memory | None = None) -> Stores:
    """Build the service's stores from ``settings``; ``memory`` replaces the Redis memory when given.

    With tracing on, redis-py's calls are instrumented here; the lean hot-path client traces its own.
    The outbox and the timer schedules share the memory's Redis connections when the memory is a
    :class:`~service.runtime.redis_memory.RedisMemory`, and live in process memory otherwise
    (tests that pass an in-memory memory).
    """
    from service.runtime.outbox import InMemoryOutbox
    from service.runtime.redis_memory import RedisMemory

    chosen = memory if memory is not None else open_memory(settings)
    outbox: EmissionOutbox | None = None
    timers: TimerIndex = InMemoryTimerIndex()
    if isinstance(chosen, RedisMemory):
        from service.runtime.otel import instrument_redis
        from service.runtime.redis_outbox import RedisOutbox
        from service.runtime.redis_timer_index import RedisTimerIndex

        instrument_redis(chosen.client, scripts=chosen.script_operations)
        timers = RedisTimerIndex(client=chosen.client, key_prefix=settings.redis_key_prefix)
        if settings.stateless_outbox_ttl_s > 0:
            outbox = RedisOutbox(
                client=chosen.client,
                key_prefix=settings.redis_key_prefix,
                ttl_s=settings.stateless_outbox_ttl_s,
                hot_client=chosen.hot_client,
            )
    elif settings.stateless_outbox_ttl_s > 0:
        outbox = InMemoryOutbox(ttl_s=settings.stateless_outbox_ttl_s)
    return Stores(memory=chosen, outbox=outbox, timers=timers)
