"""The consumer: Kafka records in, handler executions, emitted events out, offsets committed.

One job per module, in the spirit of aiokafka's own consumer/fetcher/coordinator split:

=================  ================================================================================
``loop``           :class:`ConsumerLoop` — lifecycle, group membership and rebalance, fetching, drain
``lanes``          one ordered lane per partition, backpressure (pause/resume)
``offsets``        :class:`OffsetTracker` (done offsets), the committer of the contiguous watermark
``decisions``      failure decisions: classify → dead-letter now / retry in place / park
``processing``     one record: decode, route, execute under a timeout, apply the decisions, finish
``publishing``     emissions and dead letters out; acks off the lane's critical path
``scope``          the per-record layers (log context, trace span) as middleware
``hooks``          :class:`LoopStats` counters and :class:`LoopHooks` callbacks (metrics)
``signals``        :func:`run_until_signal`: SIGTERM/SIGINT drain and commit
=================  ================================================================================

Delivery: nothing is marked done before its emissions are acknowledged, and offsets are committed
only up to the first record that is not done, so a crash anywhere re-delivers, never loses (the
handlers' deterministic ids and dedupe turn re-deliveries into idempotent replays). The loop never
dies on input. ``docs/architecture.md`` draws the path of one record through these modules.
"""

from __future__ import annotations

from service.arvo.execution import ExecutionOutcome as Outcome
from service.runtime.consumer.decisions import (
    DeadLetterNow,
    Decision,
    FailureBudget,
    Park,
    RetryLater,
    classify_error,
)
from service.runtime.consumer.hooks import CombinedHooks, LoopHooks, LoopStats
from service.runtime.consumer.lanes import Backpressure, Lane, LaneStopping
from service.runtime.consumer.loop import ConsumerLoop
from service.runtime.consumer.offsets import OffsetCommitter, OffsetTracker
from service.runtime.consumer.processing import HandlerCancelledError, RecordProcessor
from service.runtime.consumer.publishing import UNPUBLISHABLE, EmissionPublisher, Handoff
from service.runtime.consumer.scope import RecordContext, RecordLayer, RecordScope, record_scope_layer
from service.runtime.consumer.signals import run_until_signal, signal_handlers

__all__ = [
    "UNPUBLISHABLE",
    "Backpressure",
    "CombinedHooks",
    "ConsumerLoop",
    "DeadLetterNow",
    "Decision",
    "EmissionPublisher",
    "FailureBudget",
    "HandlerCancelledError",
    "Handoff",
    "Lane",
    "LaneStopping",
    "LoopHooks",
    "LoopStats",
    "OffsetCommitter",
    "OffsetTracker",
    "Outcome",
    "Park",
    "RecordContext",
    "RecordLayer",
    "RecordProcessor",
    "RecordScope",
    "RetryLater",
    "classify_error",
    "record_scope_layer",
    "run_until_signal",
    "signal_handlers",
]
