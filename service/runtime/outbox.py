"""Stable emissions of stateless handlers across re-executions (byte-identical duplicates only).

Orchestrators and resumables keep what they emitted in their state record and replay it on
redelivery. Stateless services have no record: re-executing one after a crash (the record was
processed, its emissions published, the offset not yet committed) would publish events with the
same ids (those are derived) but a new ``time`` and ``traceparent``. The outbox stores the first
execution's emissions per consumed event in Redis with a TTL, in the same single round trip that
checks for an earlier one (``SET key value NX GET``, Redis ≥ 7.0): the first writer wins and every
later execution publishes exactly the stored bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from service.arvo.errors import TransactionViolation, TransactionViolationCause
from service.arvo.event import ArvoEvent
from service.arvo.execution import ArvoHandler, ExecutionOutcome, ExecutionResult, InheritFrom

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from service.runtime.resp_client import PipelinedRedis

__all__ = ["OutboxedHandler", "StatelessOutbox"]


class StatelessOutbox:
    """Redis store of the emissions of stateless handlers, keyed by handler and consumed event.

    Args:
        client: The redis-py client.
        key_prefix: First component of every outbox key.
        ttl_s: How long a stored emission is kept.
        hot_client: A lean pipelined client to the same server (standalone Redis), used instead
            of ``client`` when given (``RedisMemory.hot_client``).

    """

    def __init__(
        self,
        *,
        client: Redis | RedisCluster,
        key_prefix: str,
        ttl_s: int,
        hot_client: PipelinedRedis | None = None,
    ) -> None:
        self._client = client
        self._hot = hot_client
        self._prefix = key_prefix
        self._ttl_s = ttl_s

    def key(self, source: str, event: ArvoEvent) -> str:
        """The outbox key of ``event`` consumed by ``source`` (one hash slot per key)."""
        return f"{self._prefix}:outbox:{{{source}:{event.domain or ''}/{event.id}}}"

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
        except Exception as error:
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


class OutboxedHandler:
    """A stateless handler whose emissions for one consumed event never change once published."""

    def __init__(self, handler: ArvoHandler, outbox: StatelessOutbox) -> None:
        self.handler = handler
        self._outbox = outbox

    @property
    def source(self) -> str:
        """The wrapped handler's source."""
        return self.handler.source

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        """Run the handler, then publish the first execution's emissions if there was one."""
        result = await self.handler.execute(event, inherit_from=inherit_from)
        if not result.events:
            return result
        stored = await self._outbox.settle(self.source, event, result.events)
        if stored is None:
            return result
        return ExecutionResult(stored, ExecutionOutcome.REPLAYED)
