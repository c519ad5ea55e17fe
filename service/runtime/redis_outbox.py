"""The Redis implementation of the stateless-handler outbox port (:mod:`service.runtime.outbox`).

One round trip per settle: ``SET key value NX GET EX ttl`` (Redis ≥ 7.0) stores the emissions unless
an earlier execution stored its own, and returns those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from service.arvo.errors import TransactionViolation, TransactionViolationCause
from service.arvo.event import ArvoEvent
from service.runtime.outbox import outbox_identity_text
from service.runtime.redis_memory import redis_failure

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from service.runtime.resp_client import PipelinedRedis
    from service.runtime.resp_cluster import ClusterPipelinedRedis

__all__ = ["RedisOutbox"]


class RedisOutbox:
    """Redis store of the emissions of stateless handlers, keyed by handler and consumed event.

    Args:
        client: The redis-py client.
        key_prefix: First component of every outbox key.
        ttl_s: How long a stored emission is kept.
        hot_client: A lean pipelined client to the same server (``PipelinedRedis``) or cluster
            (``ClusterPipelinedRedis``, slot-routed), used instead of ``client`` when given
            (``RedisMemory.hot_client``).

    """

    def __init__(
        self,
        *,
        client: Redis | RedisCluster,
        key_prefix: str,
        ttl_s: int,
        hot_client: PipelinedRedis | ClusterPipelinedRedis | None = None,
    ) -> None:
        self._client = client
        self._hot = hot_client
        self._prefix = key_prefix
        self._ttl_s = ttl_s

    def key(self, source: str, event: ArvoEvent) -> str:
        """The outbox key of ``event`` consumed by ``source`` (one hash slot per key).

        ``<prefix>:outbox:{<handler>/<domain>/<subject>/<event source>/<event id>}``, each part
        percent-escaped (``%``, ``/``, ``{``, ``}``) so that no value can end the hash tag or shift a
        part into another (:func:`~service.runtime.outbox.outbox_identity_text`).
        """
        return f"{self._prefix}:outbox:{{{outbox_identity_text(source, event)}}}"

    async def settle(self, source: str, event: ArvoEvent, emitted: list[ArvoEvent]) -> list[ArvoEvent] | None:
        """Store ``emitted`` unless an earlier execution stored its own; return those, else ``None``.

        Raises:
            TransactionViolation: Redis is unreachable (the consumer retries the record in place).

        """
        payload = orjson.dumps([item.to_dict() for item in emitted])
        try:
            if self._hot is not None:
                previous = await self._hot.execute(
                    "SET", self.key(source, event), payload, "NX", "GET", "EX", self._ttl_s
                )
            else:
                previous = await self._client.set(
                    self.key(source, event), payload, nx=True, get=True, ex=self._ttl_s
                )
        except Exception as raw:
            # Mapped like the memory's failures: an outage is a RedisUnavailableError (the consumer
            # waits for Redis), anything else a RedisMemoryError (retried, then parked).
            error = redis_failure(raw, "outbox_settle", outbox_identity_text(source, event))
            raise TransactionViolation(
                cause=TransactionViolationCause.WRITE_FAILURE,
                message=f"Error writing the outbox of {source} for event (id={event.id}): {error}",
                initiating_event=event,
            ) from error
        if previous is None:
            return None
        if not isinstance(previous, bytes | str):
            raise TypeError(f"unexpected SET ... GET reply from Redis: {previous!r}")
        return [ArvoEvent.from_json(item) for item in orjson.loads(previous)]
