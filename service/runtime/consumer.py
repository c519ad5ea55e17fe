"""The consumer loop: Kafka records in, handler executions, emitted events out, offsets committed.

Shape::

    fetch task ──getmany──▶ lane(topic-partition 0) ─┐   decode → handler.execute (timeout)
               (never      lane(topic-partition 1) ─┼─▶ → publish emissions (acks) → offset done
                blocks)    lane(...)               ─┘
    commit task: every ``commit_interval_ms`` commit the highest *contiguous* done offset + 1

* **One ordered lane per partition.** Records of a partition are processed strictly in order by one
  asyncio task; partitions run in parallel. Events of one orchestration share a key (the subject),
  hence a partition, hence a lane: they are never processed concurrently.
* **Nothing is marked done before its emissions are acknowledged**, and offsets are committed only up
  to the first record that is not done, so a crash anywhere re-delivers, never loses (the handlers'
  deterministic ids and dedupe turn re-deliveries into idempotent replays).
* **Acks off the critical path.** Once a record's emissions are handed to the producer, its lane
  goes on with the next record — unless that record belongs to the same orchestration instance (or,
  outside orchestrations, the same subject), which waits for those acks first: an instance's
  unacknowledged record is always its *last* consumed one, the one the dedupe ring replays after a
  crash. At most ``max_inflight_publishes_per_partition`` records per lane await acks; drains wait for
  them before committing.
* **Error classes** (spec 9, architecture 4): undecodable records and ``Contract``/``Config``/
  ``Execution`` violations are dead-lettered at once. ``TransactionViolation``, memory errors, handler
  time-outs, connection errors — and any unexpected exception — are retried *in place* with capped
  exponential backoff (that lane waits; other partitions continue), then *parked*: dead-lettered with
  reason ``parked`` and, when the handler owns the instance, the instance is marked ``parked``.
  A lease denied by a holder whose lease expires (the error carries ``holder_ttl_ms``, e.g. the lease
  of a worker killed mid-record) is waited out — retries capped at the holder's remaining TTL — for up
  to two lease TTLs before those retries count towards parking: a crash never parks a record.
  Publishing (events or dead letters) is retried without bound: while the broker is down the lane
  waits and resumes by itself. The loop never dies on input.
* **Backpressure.** A lane buffers at most ``partition_buffer_size`` records (plus one poll); when full
  its partition is paused and resumed once the lane drained below half. The fetch task keeps
  polling, so heartbeats and ``max_poll_interval_ms`` are unaffected by slow handlers.
* **Rebalance and shutdown.** On revoke (and :meth:`ConsumerLoop.stop`) lanes stop taking records,
  in-flight work gets ``drain_timeout_s`` to finish, done offsets are committed, then the partitions
  are released. Records buffered but not processed are simply fetched again by the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.arvo.errors import is_violation_error
from service.arvo.memory import InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.telemetry import not_sampled, parent_context_for
from service.runtime.binding import (
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    RecordDecodeError,
    decode_record,
    header_value,
)
from service.runtime.dlq import DeadLetter, DeadLetterPublisher
from service.runtime.kafka_admin import ensure_topics
from service.runtime.otel import runtime_tracer, tracing_enabled, untraced
from service.runtime.producer import is_permanent_publish_error
from service.runtime.retry import RetryPolicy

if TYPE_CHECKING:
    from service.arvo.event import ArvoEvent
    from service.arvo.execution import ArvoHandler, ExecutionResult
    from service.arvo.memory import Memory
    from service.runtime.producer import EventProducer
    from service.runtime.routing import TopicRouter
    from service.runtime.settings import ServiceSettings

__all__ = [
    "CombinedHooks",
    "ConsumerLoop",
    "HandlerCancelledError",
    "LoopHooks",
    "LoopStats",
    "OffsetTracker",
    "Outcome",
    "classify_error",
    "run_until_signal",
    "signal_handlers",
]

_log = structlog.get_logger("arvo.runtime.consumer")
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_SHORT_SUBJECT_CHARS: Final = 64
_POLL_TIMEOUT_MS: Final = 100
_POLL_ERROR_BACKOFF_S: Final = 0.5
_PERMANENT_VIOLATIONS: Final = frozenset({"Contract", "Config", "Execution"})
_LEASE_EXPIRY_SLACK_S: Final = 0.005
"""Added to a denying holder's remaining lease before retrying, so the retry finds it expired."""


class Outcome:
    """Outcome labels of consumed records besides :class:`~service.arvo.execution.ExecutionOutcome`."""

    DEAD_LETTERED: Final = "dead_lettered"
    """Dead-lettered at once (undecodable, permanent violation, no handler)."""
    PARKED: Final = "parked"
    """Transient failures exhausted the retries; dead-lettered with reason ``parked``."""
    UNPUBLISHABLE: Final = "unpublishable"
    """Dead-letter reason: the emissions can never be published (too large, illegal topic)."""


def classify_error(error: BaseException) -> str | None:
    """The dead-letter reason of a *permanent* error, or ``None`` for errors worth retrying.

    ``ContractViolation``/``ConfigViolation``/``ExecutionViolation`` (and any duck-typed violation of
    those kinds) are permanent: ``"contract"``, ``"config"``, ``"execution"``. Everything else —
    ``TransactionViolation``, memory and connection errors, time-outs, bugs — is retried.
    """
    if is_violation_error(error):
        kind = str(getattr(error, "type", ""))
        if kind in _PERMANENT_VIOLATIONS:
            return kind.lower()
    return None


class OffsetTracker:
    """Which offsets of one partition are done, and what may be committed.

    Offsets are :meth:`track`-ed in fetch order and may complete (:meth:`done`) in any order; the
    committable position is one past the highest offset such that it and every tracked offset
    before it are done. Gaps in the offset sequence (compaction, transaction markers) are fine:
    contiguity is over *tracked* offsets.
    """

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._last_tracked: int | None = None
        self._position: int | None = None
        self._committed: int | None = None

    def track(self, offset: int) -> None:
        """Register a fetched offset (must be greater than every tracked one)."""
        if self._last_tracked is not None and offset <= self._last_tracked:
            raise ValueError(f"offset {offset} tracked out of order (last tracked {self._last_tracked})")
        self._last_tracked = offset
        self._pending.append(offset)

    def done(self, offset: int) -> None:
        """Mark ``offset`` processed (its effects are durable)."""
        if offset not in self._done and offset in self._pending:
            self._done.add(offset)
            while self._pending and self._pending[0] in self._done:
                first = self._pending.popleft()
                self._done.discard(first)
                self._position = first + 1

    @property
    def committable(self) -> int | None:
        """The offset to commit (next to consume), or ``None`` when nothing completed yet."""
        return self._position

    @property
    def pending(self) -> int:
        """Tracked offsets not yet committable (buffered, in flight, or done after a gap)."""
        return len(self._pending)

    def needs_commit(self) -> bool:
        """Whether :attr:`committable` moved past the last :meth:`mark_committed` value."""
        return self._position is not None and self._position != self._committed

    def mark_committed(self, offset: int) -> None:
        """Record that ``offset`` was committed to the group."""
        self._committed = offset


@dataclass
class LoopStats:
    """Counters of the loop (read them, or subclass :class:`LoopHooks` to export them live)."""

    consumed: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Records finished by ``(topic, event type or '', outcome)``."""
    produced: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Events acknowledged by ``(topic, type)``."""
    dead_lettered: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Dead letters by ``(origin topic, reason)``."""
    retries: Counter[tuple[str, str]] = field(default_factory=Counter)
    """In-place retries by ``(topic, error class)``."""
    publish_retries: int = 0
    """Failed publish attempts (broker trouble) that were retried."""
    parked: int = 0
    """Records parked after exhausting retries."""
    commits: int = 0
    """Successful offset commits."""
    rebalances: int = 0
    """Partition assignments received."""
    in_flight: dict[TopicPartition, int] = field(default_factory=dict)
    """Records buffered or being processed, per assigned partition."""
    paused: set[TopicPartition] = field(default_factory=set)
    """Partitions currently paused by backpressure."""


class LoopHooks:
    """Callbacks for live metrics; every method is a no-op here (subclass and override).

    Called on the event loop in the middle of processing: keep them cheap and non-blocking. An
    exception from a hook is logged and otherwise ignored.
    """

    def on_consumed(self, topic: str, event_type: str, outcome: str, duration_s: float) -> None:
        """A record finished (processed, dead-lettered or parked) after ``duration_s``."""

    def on_produced(self, topic: str, event_type: str) -> None:
        """An emitted event was acknowledged."""

    def on_dead_letter(self, topic: str, reason: str) -> None:
        """A record was dead-lettered."""

    def on_retry(self, topic: str, error_class: str) -> None:
        """A record is retried in place after a transient error."""

    def on_publish_retry(self, error_class: str) -> None:
        """Publishing failed and is retried."""

    def on_assignment(self, partitions: frozenset[TopicPartition]) -> None:
        """The set of assigned partitions changed."""


class CombinedHooks(LoopHooks):
    """Calls every one of ``hooks`` in order (metrics plus the caller's own hooks).

    A failing hook is logged and does not keep the others from being called.
    """

    def __init__(self, *hooks: LoopHooks) -> None:
        self._hooks = hooks

    def _call(self, name: str, *args: Any) -> None:
        for hook in self._hooks:
            try:
                getattr(hook, name)(*args)
            except Exception:
                _log.exception("loop hook failed", hook=name, hooks=type(hook).__name__)

    def on_consumed(self, topic: str, event_type: str, outcome: str, duration_s: float) -> None:
        """Forward to every hook."""
        self._call("on_consumed", topic, event_type, outcome, duration_s)

    def on_produced(self, topic: str, event_type: str) -> None:
        """Forward to every hook."""
        self._call("on_produced", topic, event_type)

    def on_dead_letter(self, topic: str, reason: str) -> None:
        """Forward to every hook."""
        self._call("on_dead_letter", topic, reason)

    def on_retry(self, topic: str, error_class: str) -> None:
        """Forward to every hook."""
        self._call("on_retry", topic, error_class)

    def on_publish_retry(self, error_class: str) -> None:
        """Forward to every hook."""
        self._call("on_publish_retry", error_class)

    def on_assignment(self, partitions: frozenset[TopicPartition]) -> None:
        """Forward to every hook."""
        self._call("on_assignment", partitions)


class HandlerCancelledError(Exception):
    """A handler raised ``CancelledError`` although nobody cancelled it (retried like any failure)."""


class _Stopping(Exception):  # control flow, not an error
    """The lane was asked to stop while a record was waiting to be retried."""


class _Lane:
    """One partition's ordered queue and worker task."""

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.records: deque[Any] = deque()
        self.tracker = OffsetTracker()
        self.wakeup = asyncio.Event()
        self.stop_event = asyncio.Event()
        self.busy = False
        self.paused = False
        self.task: asyncio.Task[None] | None = None
        self.publishing: dict[str, asyncio.Task[bool]] = {}
        """Records handed to the producer and not yet acknowledged, by instance key (one per key)."""

    @property
    def closing(self) -> bool:
        return self.stop_event.is_set()

    @property
    def size(self) -> int:
        return len(self.records) + (1 if self.busy else 0)

    def enqueue(self, records: Iterable[Any]) -> None:
        for record in records:
            self.tracker.track(record.offset)
            self.records.append(record)
        self.wakeup.set()

    def close(self) -> None:
        self.stop_event.set()
        self.wakeup.set()

    async def sleep(self, delay_s: float) -> None:
        """Sleep ``delay_s`` unless the lane is closed first (then raise :class:`_Stopping`)."""
        if self.closing:
            raise _Stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), timeout=delay_s)
        if self.closing:
            raise _Stopping


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._loop._on_revoked(frozenset(revoked))  # the loop's own listener

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._loop._on_assigned(frozenset(assigned))


class ConsumerLoop:
    """Runs ``handlers`` against their topics with at-least-once, ordered-per-partition delivery.

    Args:
        settings: Consumer, retry, timeout, size and drain settings.
        handlers: The handler for each topic (``router.handler_topic(handler.source)``).
        producer: Publishes emitted events and dead letters (started and stopped by the caller).
        router: The topic router (used for logging and to match ``producer``'s routing).
        dlq: Where dead letters go.
        metrics_hooks: Optional live metric callbacks.
        memory: When given, parked records mark their orchestration instance ``parked``.
        retry_policy: Backoff of in-place retries (from ``settings`` when omitted).
        consumer_factory: Builds the aiokafka consumer (tests); from ``settings`` when omitted.

    """

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        handlers: Mapping[str, ArvoHandler],
        producer: EventProducer,
        router: TopicRouter,
        dlq: DeadLetterPublisher,
        metrics_hooks: LoopHooks | None = None,
        memory: Memory | None = None,
        retry_policy: RetryPolicy | None = None,
        consumer_factory: Callable[[], AIOKafkaConsumer] | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("ConsumerLoop needs at least one handler (handlers is empty)")
        self._settings = settings
        self._handlers = dict(handlers)
        self._producer = producer
        self._router = router
        self._dlq = dlq
        self._hooks: LoopHooks = CombinedHooks(metrics_hooks) if metrics_hooks else LoopHooks()
        self._memory = memory
        self._retry = retry_policy or RetryPolicy.from_settings(settings)
        self._publish_retry = RetryPolicy(
            initial_ms=self._retry.initial_ms,
            max_ms=max(self._retry.max_ms, 1_000),
            max_attempts=1,
            jitter=self._retry.jitter,
        )
        # A denying lease runs out within one TTL (a live holder's work is bounded by the handler
        # timeout, which is below the TTL); twice that is the most a lane waits before it parks.
        self._lease_wait_budget_s = 2 * settings.lease_ttl_ms / 1000
        self._consumer_factory = consumer_factory
        self._consumer: AIOKafkaConsumer | None = None
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self._stopping = False
        self._started = False
        self._assigned_event = asyncio.Event()
        self.stats = LoopStats()
        """Counters of this loop."""

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        """The topics consumed (one per handler)."""
        return sorted(self._handlers)

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """Partitions with a running lane."""
        return frozenset(self._lanes)

    @property
    def is_running(self) -> bool:
        """Started, not stopping, and the fetch task is alive."""
        return (
            self._started
            and not self._stopping
            and self._fetch_task is not None
            and not self._fetch_task.done()
        )

    async def start(self) -> None:
        """Create missing topics (when configured), join the group and start fetching.

        Returns once the consumer is connected; partitions are assigned in the background
        (:meth:`wait_assigned`).
        """
        if self._started:
            return
        if self._settings.create_topics:
            await ensure_topics(self._settings, [*self._handlers, self._dlq.topic])
        consumer = (
            self._consumer_factory()
            if self._consumer_factory
            else AIOKafkaConsumer(**self._settings.consumer_kwargs())
        )
        consumer.subscribe(topics=self.topics, listener=_Listener(self))
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._started = True
        self._stopping = False
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name="arvo-consumer-fetch")
        self._commit_task = asyncio.create_task(self._commit_loop(), name="arvo-consumer-commit")
        _log.info("consumer started", topics=self.topics, group=self._settings.consumer_group)

    async def wait_assigned(self, timeout_s: float | None = None) -> frozenset[TopicPartition]:
        """Wait until at least one partition is assigned; return the assignment."""
        async with asyncio.timeout(timeout_s):
            await self._assigned_event.wait()
        return self.assignment

    async def stop(self) -> None:
        """Stop fetching, drain in-flight records (``drain_timeout_s``), commit, leave the group."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        if self._fetch_task is not None:
            self._fetch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetch_task
        await self._drain(frozenset(self._lanes))
        if self._commit_task is not None:
            self._commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._commit_task
        if self._consumer is not None:
            try:
                await self._consumer.stop()
            except Exception as exc:  # shutting down: log and carry on
                _log.warning("consumer stop failed", error=repr(exc))
        self._started = False
        _log.info("consumer stopped", commits=self.stats.commits)

    async def __aenter__(self) -> ConsumerLoop:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_failed(self) -> BaseException | None:
        """Wait until the fetch task ends on its own; return its error (``None`` after :meth:`stop`)."""
        if self._fetch_task is None:
            return None
        await asyncio.wait({self._fetch_task})
        if self._fetch_task.cancelled():
            return None
        return self._fetch_task.exception()

    @property
    def joined(self) -> bool:
        """Whether the group gave this member an assignment since it started (possibly empty)."""
        return self._started and self.stats.rebalances > 0

    async def broker_reachable(self, *, timeout_s: float = 1.0) -> bool:
        """Whether the cluster answers a metadata request within ``timeout_s`` (readiness probes)."""
        consumer = self._consumer
        if consumer is None or not self._started:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await consumer.topics()
        except Exception:  # unreachable, timed out, or refused: not ready
            return False
        return True

    def partition_lag(self) -> dict[TopicPartition, int]:
        """Records behind the partition end per assigned partition (from the last fetch's high watermark)."""
        lags: dict[TopicPartition, int] = {}
        if self._consumer is None:
            return lags
        for tp, lane in self._lanes.items():
            highwater = self._consumer.highwater(tp)
            position = lane.tracker.committable
            if highwater is not None and position is not None:
                lags[tp] = max(0, int(highwater) - position)
        return lags

    # --- rebalance --------------------------------------------------------------------------------

    def _on_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        self.stats.rebalances += 1
        for tp in assigned:
            if tp in self._lanes or tp.topic not in self._handlers:
                continue
            lane = _Lane(tp)
            lane.task = asyncio.create_task(self._run_lane(lane), name=f"arvo-lane-{tp.topic}-{tp.partition}")
            self._lanes[tp] = lane
            self.stats.in_flight[tp] = 0
        self._hooks.on_assignment(frozenset(self._lanes))
        _log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))
        if self._lanes:
            self._assigned_event.set()

    async def _on_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        if revoked:
            _log.info("partitions revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))
        await self._drain(revoked)

    async def _drain(self, partitions: frozenset[TopicPartition]) -> None:
        lanes = [self._lanes[tp] for tp in partitions if tp in self._lanes]
        for lane in lanes:
            lane.close()
        tasks = [lane.task for lane in lanes if lane.task is not None]
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=self._settings.drain_timeout_s)
            for task in late:
                task.cancel()
            if late:
                _log.warning("drain timed out; abandoning in-flight records", lanes=len(late))
                await asyncio.wait(late)
        await self._commit(lanes)
        for lane in lanes:
            self._lanes.pop(lane.tp, None)
            self.stats.in_flight.pop(lane.tp, None)
            self.stats.paused.discard(lane.tp)
        if not self._lanes:
            self._assigned_event.clear()
        self._hooks.on_assignment(frozenset(self._lanes))

    # --- fetching and backpressure ----------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        limit = self._settings.max_poll_records
        while not self._stopping:
            try:
                batch = await consumer.getmany(timeout_ms=_POLL_TIMEOUT_MS, max_records=limit)
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                _log.warning("poll failed; retrying", error=repr(exc))
                await asyncio.sleep(_POLL_ERROR_BACKOFF_S)
                continue
            for tp, records in batch.items():
                lane = self._lanes.get(tp)
                if lane is None or lane.closing or not records:
                    continue  # revoked meanwhile: the next owner fetches these again
                lane.enqueue(records)
                self.stats.in_flight[tp] = lane.size
                if not lane.paused and lane.size >= self._settings.partition_buffer_size:
                    consumer.pause(tp)
                    lane.paused = True
                    self.stats.paused.add(tp)

    def _maybe_resume(self, lane: _Lane) -> None:
        self.stats.in_flight[lane.tp] = lane.size
        if lane.paused and lane.size <= self._settings.partition_buffer_size // 2 and not lane.closing:
            lane.paused = False
            self.stats.paused.discard(lane.tp)
            if self._consumer is not None and lane.tp in self._consumer.assignment():
                self._consumer.resume(lane.tp)

    # --- committing -------------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval = self._settings.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self._commit(list(self._lanes.values()))

    async def _commit(self, lanes: Iterable[_Lane]) -> None:
        async with self._commit_lock:
            offsets = {
                lane.tp: lane.tracker.committable
                for lane in lanes
                if lane.tracker.needs_commit() and lane.tracker.committable is not None
            }
            if not offsets or self._consumer is None:
                return
            try:
                # Bounded: with the broker down a commit would wait for a coordinator forever.
                async with asyncio.timeout(self._settings.drain_timeout_s):
                    await self._consumer.commit(offsets)
            except Exception as exc:  # a failed commit only means re-delivery later
                _log.warning("offset commit failed; will retry", error=repr(exc), partitions=len(offsets))
                return
            for lane in lanes:
                offset = offsets.get(lane.tp)
                if offset is not None:
                    lane.tracker.mark_committed(offset)
            self.stats.commits += 1

    # --- processing -------------------------------------------------------------------------------

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            await self._run_lane_records(lane)
            # Drain (revoke, stop): the records handed to the producer finish before the commit.
            while lane.publishing:
                await asyncio.wait(list(lane.publishing.values()))
        finally:
            # Cancelled (drain timeout): abandon unacknowledged records; they are redelivered.
            abandoned = list(lane.publishing.values())
            for task in abandoned:
                task.cancel()
            if abandoned:
                await asyncio.wait(abandoned)

    async def _run_lane_records(self, lane: _Lane) -> None:
        while not lane.closing:
            if not lane.records:
                lane.wakeup.clear()
                await lane.wakeup.wait()
                continue
            record = lane.records.popleft()
            lane.busy = True
            try:
                await self._process(lane, record)
            except _Stopping:
                return
            except Exception:
                # A bug outside the handler (the handler's errors are classified in _process):
                # keep the record at the head of the lane and try again after a pause.
                _log.exception("processing failed unexpectedly; retrying the record", partition=str(lane.tp))
                lane.records.appendleft(record)
                try:
                    await lane.sleep(self._publish_retry.max_ms / 1000)
                except _Stopping:
                    return
            finally:
                lane.busy = False
                self._maybe_resume(lane)

    async def _process(self, lane: _Lane, record: Any) -> None:
        """Process one record inside its ``process <topic>`` span, with its log context bound.

        The span covers everything done for the record (retries, publishing, dead-lettering), so the
        ``send`` spans of its emissions are its children; the handler span inherits from it.
        """
        started = time.perf_counter()
        topic: str = record.topic
        event: ArvoEvent | None = None
        failure: Exception | None = None
        try:
            event = decode_record(record.value, record.headers, max_bytes=self._settings.max_event_bytes)
        except RecordDecodeError as exc:
            failure = exc
        with _RecordScope(record, event) as span:
            if event is None:
                assert isinstance(failure, RecordDecodeError)
                await self._dead_letter(lane, record, reason=failure.reason, error=failure, attempts=1)
                outcome = Outcome.DEAD_LETTERED
                _fail_span(span, failure, record_exception=True)
            elif (handler := self._handlers.get(topic)) is None:
                error = LookupError(f"no handler consumes topic {topic!r}")
                await self._dead_letter(lane, record, reason="no_handler", error=error, attempts=1)
                outcome = Outcome.DEAD_LETTERED
                _fail_span(span, error, record_exception=True)
            else:
                executed = await self._execute_with_retries(lane, record, handler, event, span)
                if isinstance(executed, _Handoff):
                    # Created in the record's context: the ``send`` spans stay the span's children.
                    self._hand_off(lane, record, event, executed, started)
                    if span.is_recording():
                        span.set_attribute("arvo.consumer.outcome", executed.outcome)
                    return
                outcome = executed
            if span.is_recording():
                span.set_attribute("arvo.consumer.outcome", outcome)
        self._finish(lane, record, event.type if event is not None else "", outcome, started)

    async def _execute_with_retries(
        self, lane: _Lane, record: Any, handler: ArvoHandler, event: ArvoEvent, span: Span
    ) -> str | _Handoff:
        instance = _instance_key(event.subject)
        await self._wait_for_instance(lane, instance)
        delays = self._retry.delays()
        lease_delays = self._retry.unbounded_delays()
        denied_since: float | None = None
        attempts = 0
        while True:
            attempts += 1
            try:
                result = await self._execute(handler, event)
            except Exception as exc:  # classified below; the loop never dies on input
                if span.is_recording():
                    span.record_exception(exc)
                reason = classify_error(exc)
                if reason is not None:
                    _log.warning(
                        "permanent failure; dead-lettering", **_record_fields(record, event), error=str(exc)
                    )
                    await self._dead_letter(lane, record, reason=reason, error=exc, attempts=attempts)
                    _fail_span(span, exc)
                    return Outcome.DEAD_LETTERED
                holder_ttl_ms = _holder_ttl_ms(exc)
                if holder_ttl_ms is not None:
                    # Denied by a lease that expires (a crashed or draining holder): wait it out
                    # without spending the park budget, for at most two lease TTLs.
                    now = time.monotonic()
                    denied_since = now if denied_since is None else denied_since
                    if now - denied_since < self._lease_wait_budget_s:
                        attempts -= 1
                        wait = min(next(lease_delays), holder_ttl_ms / 1000 + _LEASE_EXPIRY_SLACK_S)
                        await self._retry_later(lane, record, event, exc, attempts=attempts, delay=wait)
                        continue
                delay = next(delays, None)
                if delay is None:
                    await self._park(
                        lane, record=record, handler=handler, event=event, error=exc, attempts=attempts
                    )
                    _fail_span(span, exc)
                    return Outcome.PARKED
                await self._retry_later(lane, record, event, exc, attempts=attempts, delay=delay)
                continue
            if result.events:
                return _Handoff(
                    instance=instance,
                    events=list(result.events),
                    outcome=str(result.outcome.value),
                    attempts=attempts,
                )
            return str(result.outcome.value)

    # --- publishing off the lane's critical path --------------------------------------------------

    async def _wait_for_instance(self, lane: _Lane, instance: str) -> None:
        """Wait until ``instance`` has no unacknowledged emissions and the lane has room for one more.

        An instance's next event runs only once its previous emissions are acknowledged: after a crash,
        a record whose publish was lost is then still the instance's *last* consumed event, which the
        dedupe ring replays (an older one would be dropped). Other instances' records go ahead.

        Raises:
            _Stopping: the earlier record of ``instance`` was abandoned (the lane is closing).

        """
        pending = lane.publishing.get(instance)
        if pending is not None:
            await asyncio.wait({pending})
            if pending.cancelled() or not pending.result():
                raise _Stopping
        while len(lane.publishing) >= self._settings.max_inflight_publishes_per_partition:
            await asyncio.wait(list(lane.publishing.values()), return_when=asyncio.FIRST_COMPLETED)

    def _hand_off(
        self, lane: _Lane, record: Any, event: ArvoEvent, handoff: _Handoff, started: float
    ) -> None:
        """Publish ``handoff``'s events in a task of their own; the record is done once they are acked."""
        task = asyncio.create_task(
            self._publish_and_finish(lane, record, event, handoff, started),
            name=f"arvo-publish-{lane.tp.topic}-{lane.tp.partition}@{record.offset}",
        )
        lane.publishing[handoff.instance] = task
        task.add_done_callback(functools.partial(_forget_publish, lane, handoff.instance))

    async def _publish_and_finish(
        self, lane: _Lane, record: Any, event: ArvoEvent, handoff: _Handoff, started: float
    ) -> bool:
        """Publish until acknowledged (retried in order, without bound), then mark the record done.

        Returns:
            Whether the record was finished (``False``: abandoned because the lane is closing).

        """
        outcome = handoff.outcome
        while True:
            try:
                unpublishable = await self._publish(lane, handoff.events)
                if unpublishable is not None:
                    await self._dead_letter(
                        lane,
                        record,
                        reason=Outcome.UNPUBLISHABLE,
                        error=unpublishable,
                        attempts=handoff.attempts,
                    )
                    outcome = Outcome.DEAD_LETTERED
                self._finish(lane, record, event.type, outcome, started)
                return True
            except _Stopping:
                return False
            except Exception:
                _log.exception("publishing failed unexpectedly; retrying", partition=str(lane.tp))
                try:
                    await lane.sleep(self._publish_retry.max_ms / 1000)
                except _Stopping:
                    return False

    async def _retry_later(
        self, lane: _Lane, record: Any, event: ArvoEvent, error: Exception, *, attempts: int, delay: float
    ) -> None:
        error_class = type(error).__name__
        self.stats.retries[(record.topic, error_class)] += 1
        self._hooks.on_retry(record.topic, error_class)
        _log.info(
            "transient failure; retrying in place",
            **_record_fields(record, event),
            error=repr(error),
            attempt=attempts,
            delay_s=round(delay, 3),
        )
        await lane.sleep(delay)

    async def _execute(self, handler: ArvoHandler, event: ArvoEvent) -> ExecutionResult:
        """One attempt, inside the record's span: the handler span is its child (``CONTEXT``)."""
        try:
            async with asyncio.timeout(self._settings.handler_timeout_s):
                return await handler.execute(event, inherit_from="CONTEXT")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the lane itself is being cancelled (drain timeout)
            # Leaked from the handler's own tasks: a failure of this execution, not ours.
            raise HandlerCancelledError(
                f"handler {handler.source!r} raised CancelledError without being cancelled"
            ) from None

    async def _publish(self, lane: _Lane, events: list[ArvoEvent]) -> BaseException | None:
        """Publish until acknowledged; return the error if it can never succeed (nothing retried)."""
        if not events:
            return None
        for delay in self._publish_retry.unbounded_delays():
            try:
                await self._producer.publish(events)
            except Exception as exc:
                if is_permanent_publish_error(exc):
                    return exc
                # Broker trouble: wait and retry, never drop.
                self.stats.publish_retries += 1
                self._hooks.on_publish_retry(type(exc).__name__)
                _log.warning("publish failed; retrying", error=repr(exc), events=len(events))
                await lane.sleep(delay)
                continue
            for event in events:
                topic = self._router.route_event(event)
                self.stats.produced[(topic, event.type)] += 1
                self._hooks.on_produced(topic, event.type)
            return None
        return None  # pragma: no cover - unbounded_delays never ends

    async def _dead_letter(
        self, lane: _Lane, record: Any, *, reason: str, error: BaseException, attempts: int
    ) -> None:
        letter = DeadLetter.from_error(
            key=record.key,
            value=record.value,
            headers=list(record.headers),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            reason=reason,
            error=error,
            attempts=attempts,
        )
        for delay in self._publish_retry.unbounded_delays():
            try:
                await self._dlq.publish(letter)
            except Exception as exc:
                if is_permanent_publish_error(exc):
                    if letter.payload_dropped_bytes is not None:
                        _log.error("dead letter cannot be written; dropping it", error=repr(exc))
                        break
                    # Too large for the dead-letter topic: keep the diagnostics, drop the payload.
                    letter = letter.without_payload()
                    continue
                # Broker trouble: wait and retry, never drop.
                self.stats.publish_retries += 1
                self._hooks.on_publish_retry(type(exc).__name__)
                _log.warning("dead-letter publish failed; retrying", error=repr(exc))
                await lane.sleep(delay)
                continue
            break
        self.stats.dead_lettered[(record.topic, reason)] += 1
        self._hooks.on_dead_letter(record.topic, reason)
        _log.warning(
            "record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            error_class=type(error).__name__,
        )

    async def _park(
        self,
        lane: _Lane,
        *,
        record: Any,
        handler: ArvoHandler,
        event: ArvoEvent,
        error: BaseException,
        attempts: int,
    ) -> None:
        self.stats.parked += 1
        await self._dead_letter(lane, record, reason=Outcome.PARKED, error=error, attempts=attempts)
        instance_key = _owned_instance_key(event.subject, handler.source)
        if self._memory is None or instance_key is None:
            return
        reason = (
            f"{type(error).__name__}: {str(error)[:300]} "
            f"(after {attempts} attempts; dead letter of {record.topic}/{record.partition}@{record.offset})"
        )
        try:
            await self._memory.set_status(instance_key, InstanceStatus.PARKED, reason=reason)
        except Exception as exc:  # the dead letter is the source of truth; log the miss
            _log.error("could not mark instance parked", instance=instance_key, error=repr(exc))

    def _finish(self, lane: _Lane, record: Any, event_type: str, outcome: str, started: float) -> None:
        lane.tracker.done(record.offset)
        self.stats.consumed[(record.topic, event_type, outcome)] += 1
        self._hooks.on_consumed(record.topic, event_type, outcome, time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class _Handoff:
    """A record's execution is done; its emissions still have to be published."""

    instance: str
    events: list[ArvoEvent]
    outcome: str
    attempts: int


def _forget_publish(lane: _Lane, instance: str, task: asyncio.Task[bool]) -> None:
    if lane.publishing.get(instance) is task:
        del lane.publishing[instance]


def _instance_key(subject: str) -> str:
    """What orders a lane's records: the orchestration instance of ``subject``, else the subject."""
    try:
        return ArvoOrchestrationSubject.parse(subject).instance_key
    except Exception:  # not an orchestration subject (stateless handlers): the subject itself
        return subject


def _holder_ttl_ms(error: BaseException) -> int | None:
    """The remaining lease of the holder that denied ``error``'s lease, if it is known and bounded.

    Set by :class:`~service.arvo.orchestration.pipeline.LeaseDeniedViolation` (duck-typed, so any
    handler can report a lease denial the same way).
    """
    ttl = getattr(error, "holder_ttl_ms", None)
    if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0:
        return ttl
    return None


def _owned_instance_key(subject: str, handler_source: str) -> str | None:
    """The instance key of ``subject`` if the handler owns that orchestration, else ``None``.

    Only the orchestrator/resumable named in the subject owns the instance; a stateless service
    handler failing on an orchestration's subject does not park the orchestration.
    """
    try:
        parsed = ArvoOrchestrationSubject.parse(subject)
    except Exception:  # not an orchestration subject: nothing to park
        return None
    if parsed.name != handler_source:
        return None
    return parsed.instance_key


def _header_text(headers: Any, name: str) -> str | None:
    raw = header_value(headers, name)
    if not raw:
        return None
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _parent_context(record: Any, event: ArvoEvent | None) -> otel_context.Context | None:
    """The trace context a record continues: the event's ``traceparent``, else the record header's."""
    traceparent = (event.traceparent if event is not None else None) or _header_text(
        record.headers, TRACEPARENT_HEADER
    )
    if not traceparent:
        return None
    tracestate = (event.tracestate if event is not None else None) or _header_text(
        record.headers, TRACESTATE_HEADER
    )
    return parent_context_for(traceparent=traceparent, tracestate=tracestate, inherit_from="EVENT")


@contextlib.contextmanager
def _record_span(record: Any, event: ArvoEvent | None) -> Iterator[Span]:
    """The CONSUMER span ``process <topic>`` of one record, active while the record is processed.

    Its parent is the event's trace context. Without tracing no span is built: the parent context
    is made current instead, so the handler still passes the event's ``traceparent`` on. In a trace
    that is sampled out, instrumented clients (Redis) are kept quiet too: their spans would not be
    recorded, but building them is most of what an unsampled record costs.
    """
    parent = _parent_context(record, event)
    enabled = tracing_enabled()
    if not enabled or not_sampled(parent):
        # Off, or the event's trace was sampled out (its children would not record either).
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with untraced() if enabled else contextlib.nullcontext():
                yield trace.INVALID_SPAN
        finally:
            if token is not None:
                otel_context.detach(token)
        return
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": int(record.offset),
    }
    if event is not None:
        attributes["messaging.message.id"] = event.id
        attributes["cloudevents.event_type"] = event.type
    with runtime_tracer().start_as_current_span(
        f"process {record.topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if span.is_recording():
            yield span
        else:  # sampled out here, at the root of the trace
            with untraced():
                yield span


def _fail_span(span: Span, error: BaseException, *, record_exception: bool = False) -> None:
    """Mark a record's span as failed (ERROR status), recording ``error`` unless it already was."""
    if span.is_recording():
        if record_exception:
            span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {str(error)[:200]}"))


def _short_subject(subject: str) -> str:
    """The instance key of an orchestration subject (``<orchestrator>:<execution id>``), else a prefix."""
    try:
        return ArvoOrchestrationSubject.parse(subject).instance_key
    except Exception:  # not an orchestration subject
        return subject if len(subject) <= _SHORT_SUBJECT_CHARS else f"{subject[:_SHORT_SUBJECT_CHARS]}…"


_LOG_FIELDS: Final = ("topic", "partition", "offset", "event_id", "event_type", "subject")
"""The keys bound to every log line written while a record is processed, in order (the last three
only with a decoded event; ``subject`` is the instance key of an orchestration subject)."""


class _RecordScope:
    """While a record is processed: its log context bound and its ``process`` span current.

    Equal to ``structlog.contextvars.bound_contextvars(**fields)`` (:data:`_LOG_FIELDS`) around
    :func:`_record_span`, without most of their per-record cost when tracing is off (17 → 9 µs): the
    structlog context variables are set and reset directly (``Token.var`` of a first
    ``bind_contextvars``), and without an SDK the event's trace context is attached without building
    a generator-based context manager.
    """

    __slots__ = ("_event", "_log_tokens", "_otel_token", "_record", "_span_scope")

    log_vars: ClassVar[tuple[contextvars.ContextVar[Any], ...]] = ()
    """structlog's context variables of :data:`_LOG_FIELDS` (found on first use, then reused)."""

    def __init__(self, record: Any, event: ArvoEvent | None) -> None:
        self._record = record
        self._event = event
        self._log_tokens: list[contextvars.Token[Any]] = []
        self._otel_token: contextvars.Token[Any] | None = None
        self._span_scope: contextlib.AbstractContextManager[Span] | None = None

    def __enter__(self) -> Span:
        record, event = self._record, self._event
        values: tuple[Any, ...] = (record.topic, record.partition, record.offset)
        if event is not None:
            values += (event.id, event.type, _short_subject(event.subject))
        log_vars = _RecordScope.log_vars
        if not log_vars:
            tokens = structlog.contextvars.bind_contextvars(**dict(zip(_LOG_FIELDS, values, strict=False)))
            if len(tokens) == len(_LOG_FIELDS):
                _RecordScope.log_vars = tuple(tokens[name].var for name in _LOG_FIELDS)
            self._log_tokens = list(tokens.values())
        else:
            self._log_tokens = [var.set(value) for var, value in zip(log_vars, values, strict=False)]
        try:
            if tracing_enabled():
                self._span_scope = _record_span(record, event)
                return self._span_scope.__enter__()
            parent = _parent_context(record, event)
            if parent is not None:
                self._otel_token = otel_context.attach(parent)
        except BaseException:
            self._reset_log_context()
            raise
        return trace.INVALID_SPAN

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            if self._span_scope is not None:
                return bool(self._span_scope.__exit__(exc_type, exc, tb))
            if self._otel_token is not None:
                otel_context.detach(self._otel_token)
            return False
        finally:
            self._reset_log_context()

    def _reset_log_context(self) -> None:
        for token in reversed(self._log_tokens):
            token.var.reset(token)
        self._log_tokens = []


def _record_fields(record: Any, event: ArvoEvent) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "event_id": event.id,
        "event_type": event.type,
        "subject": event.subject,
    }


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
