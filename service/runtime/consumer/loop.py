"""The consumer loop and its lifecycle: start, group membership and rebalance, fetching, drain, stop.

Shape::

    fetch task ──getmany──▶ lane(topic-partition 0) ─┐   RecordProcessor: decode → execute (timeout,
               (never      lane(topic-partition 1) ─┼─▶ failure decisions) → EmissionPublisher
                blocks)    lane(...)               ─┘   (acks) → offset done
    commit task: every ``commit_interval_ms`` the OffsetCommitter commits the contiguous watermark

Each job has its module: :mod:`.lanes` (ordered lanes, backpressure), :mod:`.offsets` (offset
tracking, commits), :mod:`.decisions` (failure classification: retry / park / dead-letter),
:mod:`.processing` (one record), :mod:`.publishing` (emissions and dead letters, acks off the
critical path), :mod:`.scope` (log context and span as layers), :mod:`.hooks` (counters, metrics).

**Rebalance and shutdown.** On revoke (and :meth:`ConsumerLoop.stop`) lanes stop taking records,
in-flight work gets ``drain_timeout_s`` to finish, done offsets are committed, then the partitions
are released. Records buffered but not processed are simply fetched again by the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from service.arvo.orchestration.pipeline import PipelineHandler
from service.runtime.consumer.decisions import FailureBudget
from service.runtime.consumer.dependencies import DependencyMonitor
from service.runtime.consumer.hooks import CombinedHooks, LoopHooks, LoopStats
from service.runtime.consumer.lanes import Backpressure, Lane, LaneStopping, root_init_classifier
from service.runtime.consumer.offsets import OffsetCommitter
from service.runtime.consumer.processing import RecordFinisher, RecordProcessor
from service.runtime.consumer.publishing import EmissionPublisher
from service.runtime.consumer.scope import RecordLayer, record_scope_layer
from service.runtime.consumer.timers import TimerScheduler
from service.runtime.kafka_admin import ensure_topics
from service.runtime.retry import RetryPolicy
from service.runtime.timer_index import TimerIndex

if TYPE_CHECKING:
    from service.arvo.execution import ArvoHandler
    from service.arvo.memory import Memory
    from service.runtime.dlq import DeadLetterPublisher
    from service.runtime.producer import EventProducer
    from service.runtime.routing import TopicRouter
    from service.runtime.settings import ServiceSettings

__all__ = ["ConsumerLoop"]

_log = structlog.get_logger("arvo.runtime.consumer")
_POLL_TIMEOUT_MS: Final = 100
_POLL_ERROR_BACKOFF_S: Final = 0.5
_PARTITION_END_CHECK_S: Final = 5.0
REDIS: Final = "redis"
"""The dependency name of the memory store (metric label, ``/readyz`` check)."""
_RECANCEL_AFTER_S: Final = 1.0


async def _cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they end, cancelling again the ones that swallowed it.

    redis-py's asyncio client (8.1, measured: ~4 % of cancellations during a command) can swallow a
    ``CancelledError``: the task then carries on (the timer scheduler sleeps until its next poll), and
    a plain ``cancel(); await`` waits forever — a stop that never ends.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_AFTER_S)
        if pending:
            _log.warning(
                "a task ignored its cancellation; cancelling it again",
                tasks=sorted(task.get_name() for task in pending),
            )


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
        consumer_factory: Builds the Kafka consumer (an ``AIOKafkaConsumer`` or anything with its
            ``subscribe``/``start``/``stop``/``getmany``/``commit``/``pause``/``resume``/
            ``assignment``/``highwater``/``topics`` methods — tests plug a fake in here); from
            ``settings`` when omitted.
        layers: Middleware around each record (default: its log context and span).
        timers: The per-partition timer schedules: orchestrations' timers are scheduled there and
            the owned partitions' due timers fired (``None``: timers are neither scheduled nor fired).

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
        consumer_factory: Callable[[], Any] | None = None,
        layers: Sequence[RecordLayer] = (record_scope_layer,),
        timers: TimerIndex | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("ConsumerLoop needs at least one handler (handlers is empty)")
        self._settings = settings
        self._handlers = dict(handlers)
        self._dlq = dlq
        self._hooks: LoopHooks = CombinedHooks(metrics_hooks) if metrics_hooks else LoopHooks()
        self._retry = retry_policy or RetryPolicy.from_settings(settings)
        publish_retry = RetryPolicy(
            initial_ms=self._retry.initial_ms,
            max_ms=max(self._retry.max_ms, 1_000),
            max_attempts=1,
            jitter=self._retry.jitter,
        )
        self._bug_pause_s = publish_retry.max_ms / 1000
        # A denying lease runs out within one TTL (a live holder's work is bounded by the handler
        # timeout, which is below the TTL); twice that is the most a lane waits before it parks.
        lease_wait_budget_s = 2 * settings.lease_ttl_ms / 1000
        self._consumer_factory = consumer_factory
        self._consumer: Any = None
        self._lanes: dict[TopicPartition, Lane] = {}
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False
        self._assigned_event = asyncio.Event()
        self._backpressure = Backpressure(settings.partition_buffer_size, settings.admission_backlog)
        # Admission: the topics of orchestrators and resumables, whose new root inits may wait.
        self._root_inits: dict[str, Callable[[Any], bool]] = (
            {
                topic: root_init_classifier(handler.source)
                for topic, handler in self._handlers.items()
                if isinstance(handler, PipelineHandler)
            }
            if settings.admission_backlog > 0
            else {}
        )
        self._ends_checked_at = 0.0
        self.stats = LoopStats()
        """Counters of this loop."""
        self._committer = OffsetCommitter(
            consumer=lambda: self._consumer,
            stats=self.stats,
            interval_s=settings.commit_interval_ms / 1000,
            timeout_s=settings.drain_timeout_s,
        )
        finish = RecordFinisher(self.stats, self._hooks)
        self.dependencies = DependencyMonitor(
            hooks=self._hooks, probe_interval_s=settings.dependency_probe_interval_ms / 1000
        )
        """Outages of the service's dependencies, as its records met them (``/readyz``)."""
        if memory is not None:
            self.dependencies.add_probe(REDIS, memory.ping)
        self._publisher = EmissionPublisher(
            producer=producer,
            router=router,
            dlq=dlq,
            stats=self.stats,
            hooks=self._hooks,
            retry=publish_retry,
            max_inflight_per_lane=settings.max_inflight_publishes_per_partition,
            finish=finish,
            dependencies=self.dependencies,
            give_up_attempts=settings.publish_give_up_attempts,
        )
        self._processor = RecordProcessor(
            handlers=self._handlers,
            publisher=self._publisher,
            failure_budget=functools.partial(
                FailureBudget,
                self._retry,
                lease_wait_budget_s=lease_wait_budget_s,
                dependency_wait_max_s=settings.dependency_wait_max_s,
            ),
            handler_timeout_s=settings.handler_timeout_s,
            max_event_bytes=settings.max_event_bytes,
            stats=self.stats,
            hooks=self._hooks,
            finish=finish,
            dependencies=self.dependencies,
            memory=memory,
            dead_letter_no_state=settings.dead_letter_no_state,
            layers=layers,
            timers=timers,
        )
        self._timer_task: asyncio.Task[None] | None = None
        self._scheduler: TimerScheduler | None = None
        if timers is not None:
            self._scheduler = TimerScheduler(
                index=timers,
                publish=producer.publish,
                partitions=self._lanes.keys,
                orchestrators={
                    topic: handler.source
                    for topic, handler in self._handlers.items()
                    if isinstance(handler, PipelineHandler)
                },
                interval_s=settings.timer_poll_interval_ms / 1000,
                batch=settings.timer_batch_size,
                stats=self.stats,
                hooks=self._hooks,
            )

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def _producer(self) -> EventProducer:
        """The producer of emissions and dead letters (tests replay dead letters through it)."""
        return self._publisher.producer

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
        self._commit_task = asyncio.create_task(
            self._committer.run(self._lanes.values), name="arvo-consumer-commit"
        )
        if self._scheduler is not None and self._scheduler.active:
            self._timer_task = asyncio.create_task(self._scheduler.run(), name="arvo-timer-scheduler")
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
        if self._timer_task is not None:
            await _cancel_and_wait([self._timer_task])
        if self._fetch_task is not None:
            self._fetch_task.cancel()
            # Wait for it without re-raising: a fetch task that failed on its own was reported by
            # wait_failed(), and its error must not skip the drain, commit and leaving the group.
            await asyncio.wait({self._fetch_task})
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
        await self.dependencies.close()
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

    def stalled_partitions(self) -> dict[TopicPartition, float]:
        """Partitions whose lane has work but finished nothing for ``stall_timeout_s``, with the seconds."""
        now = time.monotonic()
        limit = self._settings.stall_timeout_s
        stalled = {tp: lane.stalled_for(now) for tp, lane in self._lanes.items()}
        return {tp: seconds for tp, seconds in stalled.items() if seconds >= limit}

    @property
    def stall_timeout_s(self) -> float:
        """After how long without progress a partition (or failing commits) counts as stalled."""
        return self._settings.stall_timeout_s

    def commits_failing_for(self) -> float:
        """Seconds offset commits have been failing (``0.0`` while they succeed)."""
        return self._committer.failing_for(time.monotonic())

    @property
    def last_commit_error(self) -> str | None:
        """The last offset commit error while commits fail."""
        return self._committer.last_error

    # --- rebalance --------------------------------------------------------------------------------

    def _on_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        self.stats.rebalances += 1
        if self._stopping:
            # A rebalance completed while this member stops (another member left meanwhile): the
            # drain is over, a lane started now would never be stopped; the next owner takes them.
            _log.info(
                "partitions assigned while stopping: not consumed",
                partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned),
            )
            return
        for tp in assigned:
            if tp in self._lanes or tp.topic not in self._handlers:
                continue
            self._start_lane(tp)
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
        await self._stop_lanes(lanes)
        await self._committer.commit(lanes)
        for lane in lanes:
            self._lanes.pop(lane.tp, None)
            self.stats.in_flight.pop(lane.tp, None)
            self.stats.deferred_inits.pop(lane.tp, None)
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
            if not batch:
                await self._check_partition_ends(consumer)
            for tp, records in batch.items():
                lane = self._lanes.get(tp)
                if lane is None or lane.closing or not records:
                    continue  # revoked meanwhile: the next owner fetches these again
                last = lane.tracker.last_tracked
                if last is not None and records[0].offset <= last:
                    lane = await self._restart_lane(
                        lane, f"offsets went back from {last} to {records[0].offset}"
                    )
                lane.enqueue(records)
                self._count(lane)
                if self._backpressure.should_pause(lane):
                    consumer.pause(tp)
                    lane.paused = True
                    self.stats.paused.add(tp)

    async def _check_partition_ends(self, consumer: Any) -> None:
        """Seek back a partition whose log now ends before our position (its topic was recreated).

        Some brokers answer a fetch beyond the log end with nothing instead of
        ``OFFSET_OUT_OF_RANGE``; the partition would then wait for records that never come.
        """
        now = time.monotonic()
        if now - self._ends_checked_at < _PARTITION_END_CHECK_S:
            return
        self._ends_checked_at = now
        for tp, lane in list(self._lanes.items()):
            position = lane.tracker.committable
            highwater = consumer.highwater(tp)
            if (
                not lane.idle
                or lane.closing
                or position is None
                or highwater is None
                or highwater >= position
            ):
                continue
            await consumer.seek_to_beginning(tp)
            await self._restart_lane(lane, f"the log ends at {highwater}, before position {position}")

    async def _restart_lane(self, lane: Lane, why: str) -> Lane:
        """Replace ``lane`` by a fresh one: its partition's log was replaced (deleted and recreated).

        The old lane's buffered records belong to a log that no longer exists: they are abandoned and
        their offsets never committed (committing them would skip the new log's first records).
        """
        tp = lane.tp
        abandoned = lane.clear()
        await self._stop_lanes([lane])
        _log.warning(
            "partition log replaced (topic deleted and recreated, or truncated); restarting its lane",
            partition=f"{tp.topic}/{tp.partition}",
            detail=why,
            abandoned_records=abandoned,
        )
        return self._start_lane(tp)

    def _start_lane(self, tp: TopicPartition) -> Lane:
        """A new lane for ``tp`` with its worker task running (replacing any lane ``tp`` had)."""
        is_root_init = self._root_inits.get(tp.topic)
        lane = Lane(tp, is_root_init, self._admit if is_root_init is not None else None)
        lane.task = asyncio.create_task(self._run_lane(lane), name=f"arvo-lane-{tp.topic}-{tp.partition}")
        self._lanes[tp] = lane
        self.stats.in_flight[tp] = 0
        if lane.is_root_init is not None:
            self.stats.deferred_inits[tp] = 0
        return lane

    async def _stop_lanes(self, lanes: list[Lane]) -> None:
        """Close ``lanes`` and give their in-flight work ``drain_timeout_s``; then abandon (cancel) it."""
        for lane in lanes:
            lane.close()
        tasks = [lane.task for lane in lanes if lane.task is not None]
        if not tasks:
            return
        _done, late = await asyncio.wait(tasks, timeout=self._settings.drain_timeout_s)
        if late:
            _log.warning("drain timed out; abandoning in-flight records", lanes=len(late))
            await _cancel_and_wait(late)

    def _admit(self) -> bool:
        """Whether a new root init may start: the process is not busy with started workflows.

        Fewer than ``partition_buffer_size`` records of started workflows wait in the whole process
        (every lane, the services' too). Otherwise a lane would start inits whenever its own queue is
        momentarily empty (its replies are being made by other lanes) and an overload would start
        more workflows than the process finishes.
        """
        waiting = 0
        for lane in self._lanes.values():
            waiting += len(lane.records) + lane.keyed_count
        return waiting < self._backpressure.buffer_size

    def _count(self, lane: Lane) -> None:
        """Update the lane's gauges: records in flight (deferred inits included), deferred inits."""
        deferred = len(lane.deferred)
        self.stats.in_flight[lane.tp] = lane.size + deferred
        if lane.is_root_init is not None:
            self.stats.deferred_inits[lane.tp] = deferred

    def _maybe_resume(self, lane: Lane) -> None:
        self._count(lane)
        if self._backpressure.should_resume(lane):
            lane.paused = False
            self.stats.paused.discard(lane.tp)
            if self._consumer is not None and lane.tp in self._consumer.assignment():
                self._consumer.resume(lane.tp)

    # --- the lanes' workers -----------------------------------------------------------------------

    async def _run_lane(self, lane: Lane) -> None:
        try:
            await self._run_lane_records(lane)
            # Drain (revoke, stop): the records handed to the producer finish before the commit.
            await self._publisher.drain(lane)
        finally:
            # Cancelled (drain timeout): abandon unacknowledged records; they are redelivered.
            await self._publisher.abandon(lane)

    async def _run_lane_records(self, lane: Lane) -> None:
        if self._settings.partition_concurrency > 1:
            await self._run_lane_keyed(lane, self._settings.partition_concurrency)
            return
        while (record := await lane.next_record()) is not None:
            if not await self._process_one(lane, record, lane.records):
                return

    async def _process_one(self, lane: Lane, record: Any, queue: deque[Any]) -> bool:
        """Process ``record``; ``False`` once the lane is stopping.

        After a failure outside the handler (a bug: the handler's errors are decided in the
        processor) the record goes back to the head of ``queue`` and is tried again after a pause.
        """
        lane.busy += 1
        try:
            await self._processor.process(lane, record)
        except LaneStopping:
            return False
        except Exception:
            _log.exception("processing failed unexpectedly; retrying the record", partition=str(lane.tp))
            queue.appendleft(record)
            if queue is not lane.records:
                lane.keyed_count += 1
            try:
                await lane.sleep(self._bug_pause_s)
            except LaneStopping:
                return False
        finally:
            lane.busy -= 1
            self._maybe_resume(lane)
        return True

    async def _run_lane_keyed(self, lane: Lane, concurrency: int) -> None:
        """Key-ordered concurrency: up to ``concurrency`` keys at once, each key's records in order.

        A record whose key has a record running joins that key's queue; another waits for a free
        slot (later records wait behind it: the head of the lane is never overtaken by a key that
        is not running yet). A deferred init (admission) is taken only when no other record waits,
        and only once a slot is free: records of started workflows that arrive meanwhile go first.
        """
        slots = asyncio.Semaphore(concurrency)
        workers: set[asyncio.Task[None]] = set()
        try:
            while (record := await self._next_keyed(lane, slots)) is not None:
                queue = lane.keyed.get(record.key)
                if queue is not None:
                    queue.append(record)
                    lane.keyed_count += 1
                    continue
                await slots.acquire()
                if lane.closing:
                    slots.release()
                    break
                lane.keyed[record.key] = deque([record])
                lane.keyed_count += 1
                worker = asyncio.create_task(
                    self._run_key(lane, record.key, slots),
                    name=f"arvo-lane-{lane.tp.topic}-{lane.tp.partition}-key",
                )
                workers.add(worker)
                worker.add_done_callback(workers.discard)
            # Closing: the records running finish (the drain bounds this wait from outside).
            if workers:
                await asyncio.wait(set(workers))
        except asyncio.CancelledError:
            # The drain timed out: abandon the records still running (they are redelivered).
            for worker in workers:
                worker.cancel()
            if workers:
                await asyncio.wait(set(workers))
            raise

    @staticmethod
    async def _next_keyed(lane: Lane, slots: asyncio.Semaphore) -> Any | None:
        """The next record for :meth:`_run_lane_keyed`; ``None`` once the lane is closing.

        A deferred init is popped only when it can be placed at once (its key runs, or a slot is
        free), so nothing of its key can be enqueued between its pop and its placement.
        """
        while not lane.closing:
            if lane.records:
                return lane.records.popleft()
            if lane.deferred and lane.may_start_init():
                if lane.deferred[0].key in lane.keyed or not slots.locked():
                    return lane.pop_deferred()
                # Every slot busy: wait for one without holding the init, then look again (records
                # of started workflows fetched meanwhile go first).
                await slots.acquire()
                slots.release()
                continue
            await lane.wait_for_work()
        return None

    async def _run_key(self, lane: Lane, key: Any, slots: asyncio.Semaphore) -> None:
        """Run the records of ``key`` one after the other until its queue is empty."""
        queue = lane.keyed[key]
        try:
            while queue and not lane.closing:
                record = queue.popleft()
                lane.keyed_count -= 1
                if not await self._process_one(lane, record, queue):
                    return
        finally:
            lane.keyed.pop(key, None)
            lane.keyed_count -= len(queue)
            slots.release()
