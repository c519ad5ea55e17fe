"""The Redis implementation of the timer schedule port (:mod:`service.runtime.timer_index`).

One sorted set per orchestrator topic partition, ``<prefix>:timers:{<topic>/<partition>}`` (the
partition escaped inside the hash tag, so each schedule is one cluster slot): score = due time in
ms, member = ``<due ms>``, ``<timer id>`` and ``<subject>`` joined by newlines. Adding is ``ZADD``,
reading ``ZRANGEBYSCORE … LIMIT`` and removing ``ZREM``: one command each, however many hints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from service.runtime.redis_memory import _tag, redis_failure
from service.runtime.timer_index import ScheduledTimer

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

__all__ = ["RedisTimerIndex"]


def _member(timer: ScheduledTimer) -> bytes:
    return f"{int(timer.due_ms)}\n{timer.timer_id}\n{timer.subject}".encode()


def _parse(member: bytes | str) -> ScheduledTimer | None:
    text = member.decode() if isinstance(member, bytes) else member
    parts = text.split("\n", 2)
    if len(parts) != 3 or not parts[0].lstrip("-").isdigit():
        return None
    return ScheduledTimer(subject=parts[2], timer_id=parts[1], due_ms=int(parts[0]))


class RedisTimerIndex:
    """Per-partition timer schedules in Redis sorted sets (see the module docstring).

    Args:
        client: The redis-py client (standalone or cluster).
        key_prefix: First component of every key.

    """

    def __init__(self, *, client: Redis | RedisCluster, key_prefix: str) -> None:
        self._client = client
        self._prefix = key_prefix

    def key(self, partition: str) -> str:
        """The sorted set of ``partition`` (``<topic>/<partition>``)."""
        return f"{self._prefix}:timers:{{{_tag(partition)}}}"

    async def schedule(self, partition: str, timers: Sequence[ScheduledTimer]) -> None:
        """``ZADD`` the hints (raises a :class:`~service.runtime.redis_memory.RedisMemoryError`)."""
        if not timers:
            return
        key = self.key(partition)
        try:
            await self._client.zadd(key, {_member(timer): int(timer.due_ms) for timer in timers})
        except Exception as raw:
            raise redis_failure(raw, "timer_schedule", key) from raw

    async def due(self, partition: str, *, now_ms: int, limit: int) -> list[ScheduledTimer]:
        """``ZRANGE key -inf now BYSCORE LIMIT 0 limit``; members that do not parse are dropped."""
        key = self.key(partition)
        try:
            members = cast(
                "list[bytes | str]",
                await self._client.zrangebyscore(key, "-inf", int(now_ms), start=0, num=limit),
            )
        except Exception as raw:
            raise redis_failure(raw, "timer_due", key) from raw
        timers: list[ScheduledTimer] = []
        garbage: list[bytes | str] = []
        for member in members:
            parsed = _parse(member)
            if parsed is None:
                garbage.append(member)
            else:
                timers.append(parsed)
        if garbage:
            try:
                await self._client.zrem(key, *garbage)
            except Exception as raw:
                raise redis_failure(raw, "timer_remove", key) from raw
        return timers

    async def remove(self, partition: str, timers: Sequence[ScheduledTimer]) -> None:
        """``ZREM`` the hints."""
        if not timers:
            return
        key = self.key(partition)
        try:
            await self._client.zrem(key, *(_member(timer) for timer in timers))
        except Exception as raw:
            raise redis_failure(raw, "timer_remove", key) from raw

    async def count(self, partition: str) -> int:
        """``ZCARD``."""
        key = self.key(partition)
        try:
            return int(await self._client.zcard(key))
        except Exception as raw:
            raise redis_failure(raw, "timer_count", key) from raw
