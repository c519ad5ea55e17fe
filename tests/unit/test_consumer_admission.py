"""Admission under overload (``ARVO_ADMISSION_BACKLOG``) over the in-memory Kafka: records of workflows
already started overtake queued new root inits, records of one key stay in offset order, the commit
watermark never passes a deferred init, the backlog bound pauses the partition, and ``0`` restores
strict offset order — in the sequential lane and with key-ordered concurrency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.orchestration.pipeline import PipelineHandler
from service.runtime.binding import encode_event
from service.runtime.consumer import Backpressure, Lane
from service.runtime.consumer.lanes import root_init_classifier
from tests.unit.test_consumer_loop_unit import CLIENT, ECHO, P0, EchoHandler, running, settle, wait_until

REPLY = "com.test.reply"


class OrchestratorEcho(EchoHandler, PipelineHandler):  # type: ignore[misc]
    """The echo handler, seen by the loop as an orchestrator: events of type ``ECHO`` are its inits."""


def init(subject: str, parent: str | None = None, **data: Any) -> ArvoEvent:
    """A root init of the orchestrator (a child's when ``parent`` is given)."""
    return create_arvo_event(
        source=CLIENT, type=ECHO, subject=subject, data={"parentSubject$$": parent, **data}
    )


def reply(subject: str, **data: Any) -> ArvoEvent:
    """A record of a started workflow (a service's reply) on the orchestrator's topic."""
    return create_arvo_event(source="com.test.service", type=REPLY, subject=subject, data=data)


def admitted(**overrides: Any) -> Any:
    """An orchestrator on one partition with admission on (it is off by default)."""
    return running(OrchestratorEcho(), partitions=1, **{"admission_backlog": 2_000, **overrides})


async def _hold_lane(rig: Any, *events: ArvoEvent) -> None:
    """Produce ``events`` behind a gated reply that holds the lane, and wait until all are fetched."""
    for event in events:
        rig.produce(event)
    lane = rig.loop._lanes[P0]
    await wait_until(lambda: lane.tracker.last_tracked == len(rig.kafka.logs[P0]) - 1)


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_replies_overtake_the_inits_queued_before_them(concurrency: int) -> None:
    async with admitted(partition_concurrency=concurrency) as rig:
        gates = [reply(f"g{index}", mode="gate", gate=f"g{index}") for index in range(concurrency)]
        inits = [init("a"), init("b")]
        replies = [reply("c"), reply("d")]
        await _hold_lane(rig, *gates, *inits, *replies)
        assert len(rig.loop._lanes[P0].deferred) == 2
        assert rig.loop.stats.deferred_inits[P0] == 2
        for index in range(concurrency):
            rig.handler.gates[f"g{index}"].set()
        await wait_until(lambda: len(rig.sink()) == concurrency + 4)
        order = rig.handler.started[concurrency:]
        assert order[:2] == [replies[0].id, replies[1].id]
        assert order[2:] == [inits[0].id, inits[1].id]
        await wait_until(lambda: rig.committed() == concurrency + 4)
        assert rig.loop.stats.deferred_inits[P0] == 0


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_records_of_a_deferred_inits_key_wait_behind_it_in_offset_order(concurrency: int) -> None:
    async with admitted(partition_concurrency=concurrency) as rig:
        gates = [reply(f"g{index}", mode="gate", gate=f"g{index}") for index in range(concurrency)]
        first = init("a")
        same_key = [reply("a", n=1), reply("a", n=2)]  # e.g. a cancel sent right after the init
        other = reply("b")
        await _hold_lane(rig, *gates, first, same_key[0], other, same_key[1])
        lane = rig.loop._lanes[P0]
        assert [record.key for record in lane.deferred] == [b"a", b"a", b"a"]
        assert lane.deferred_keys == {b"a": 3}
        for index in range(concurrency):
            rig.handler.gates[f"g{index}"].set()
        await wait_until(lambda: len(rig.sink()) == concurrency + 4)
        started = rig.handler.started
        assert started.index(other.id) < started.index(first.id)
        assert [event_id for event_id in started if event_id in {first.id, *(e.id for e in same_key)}] == [
            first.id,
            same_key[0].id,
            same_key[1].id,
        ]
        assert lane.deferred_keys == {}


async def test_the_watermark_never_passes_a_deferred_init() -> None:
    async with admitted() as rig:
        gate = reply("g", mode="gate", gate="g")
        waiting = init("a")
        done = reply("c")
        busy = reply("d", mode="gate", gate="d")
        await _hold_lane(rig, gate, waiting, done, busy)
        rig.handler.gates["g"].set()
        await wait_until(lambda: busy.id in rig.handler.started)
        await settle(rig)
        lane = rig.loop._lanes[P0]
        assert [record.offset for record in lane.deferred] == [1]  # still deferred
        assert rig.sink() == [gate.id, done.id]  # offsets 0 and 2 are done
        assert rig.committed() == 1  # the position stops at the deferred init
        rig.handler.gates["d"].set()
        await wait_until(lambda: rig.committed() == 4)
        assert rig.handler.started[-1] == waiting.id


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_the_backlog_bound_pauses_the_partition_and_resumes_it_at_half(concurrency: int) -> None:
    async with admitted(partition_concurrency=concurrency, admission_backlog=4, max_poll_records=1) as rig:
        gates = [reply(f"g{index}", mode="gate", gate=f"g{index}") for index in range(concurrency)]
        inits = [init(f"k{index}") for index in range(8)]
        for event in [*gates, *inits]:
            rig.produce(event)
        await wait_until(lambda: P0 in rig.loop.stats.paused)
        lane = rig.loop._lanes[P0]
        await asyncio.sleep(0.02)
        assert len(lane.deferred) == 4  # one record per poll: paused exactly at the bound
        assert lane.tracker.last_tracked == concurrency + 3
        assert lane.size <= concurrency  # the deferred inits do not fill the buffer
        for index in range(concurrency):
            rig.handler.gates[f"g{index}"].set()
        await wait_until(lambda: len(rig.sink()) == concurrency + 8)
        assert P0 in rig.consumer.resume_calls
        await wait_until(lambda: P0 not in rig.loop.stats.paused)
        assert rig.handler.started[concurrency:] == [event.id for event in inits]


async def test_deferred_inits_do_not_stop_the_fetch_of_the_replies_behind_them() -> None:
    async with admitted(partition_buffer_size=4, admission_backlog=100, max_poll_records=2) as rig:
        gate = reply("g", mode="gate", gate="g")
        inits = [init(f"k{index}") for index in range(20)]
        tail = reply("late")
        await _hold_lane(rig, gate, *inits, tail)
        assert P0 not in rig.loop.stats.paused
        assert list(rig.loop._lanes[P0].records) != []  # the reply behind 20 inits was fetched
        rig.handler.gates["g"].set()
        await wait_until(lambda: len(rig.sink()) == 22)
        assert rig.handler.started[1] == tail.id


@pytest.mark.parametrize(("concurrency", "admission"), [(1, {}), (2, {}), (2, {"admission_backlog": 0})])
async def test_admission_off_keeps_strict_offset_order(concurrency: int, admission: dict[str, int]) -> None:
    # Off by default (no override) and with ARVO_ADMISSION_BACKLOG=0.
    async with running(
        OrchestratorEcho(), partitions=1, partition_concurrency=concurrency, **admission
    ) as rig:
        gates = [reply(f"g{index}", mode="gate", gate=f"g{index}") for index in range(concurrency)]
        rest = [init("a"), init("b"), reply("c"), reply("d")]
        await _hold_lane(rig, *gates, *rest)
        lane = rig.loop._lanes[P0]
        assert lane.is_root_init is None
        assert not lane.deferred
        assert P0 not in rig.loop.stats.deferred_inits
        for index in range(concurrency):
            rig.handler.gates[f"g{index}"].set()
        await wait_until(lambda: len(rig.sink()) == concurrency + 4)
        assert rig.handler.started[concurrency:] == [event.id for event in rest]


async def test_a_handler_that_is_not_an_orchestrator_gets_no_admission() -> None:
    async with running(partitions=1) as rig:  # a stateless service: every record is its "init"
        assert rig.loop._lanes[P0].is_root_init is None


# --- the classifier and the lane on their own ---------------------------------------------------------


def _record(event: ArvoEvent, offset: int = 0, headers: list[tuple[str, bytes]] | None = None) -> Any:
    message = encode_event(event)

    class Rec:
        pass

    record = Rec()
    record.offset = offset  # type: ignore[attr-defined]
    record.key = message.key  # type: ignore[attr-defined]
    record.value = message.value  # type: ignore[attr-defined]
    record.headers = message.headers if headers is None else headers  # type: ignore[attr-defined]
    return record


def test_a_root_init_is_the_handlers_type_without_a_parent_subject() -> None:
    is_root_init = root_init_classifier(ECHO)
    assert is_root_init(_record(init("a")))
    assert is_root_init(_record(create_arvo_event(source=CLIENT, type=ECHO, subject="a", data={})))
    assert is_root_init(_record(init("a", parent="")))
    assert not is_root_init(_record(init("a", parent="the-parent")))  # a child's init: its parent waits
    assert not is_root_init(_record(reply("a")))
    assert not is_root_init(_record(init("a"), headers=[]))  # no ce_type header: not classified


def test_the_parent_subject_is_read_with_json_whitespace() -> None:
    is_root_init = root_init_classifier(ECHO)
    record = _record(init("a"))
    record.value = b'{"type": "x", "data": {"parentSubject$$" :  null}}'
    assert is_root_init(record)
    record.value = b'{"type": "x", "data": {"parentSubject$$" : "p"}}'
    assert not is_root_init(record)


async def test_a_lane_gives_its_other_records_before_its_deferred_ones() -> None:
    lane = Lane(P0, root_init_classifier(ECHO))
    events = [init("a"), reply("b"), reply("a"), init("c"), reply("d")]
    lane.enqueue(_record(event, offset) for offset, event in enumerate(events))
    assert lane.size == 2
    assert len(lane.deferred) == 3
    assert not lane.idle
    taken = [(await lane.next_record()).offset for _ in events]
    assert taken == [1, 4, 0, 2, 3]
    assert lane.deferred_keys == {}


def test_backpressure_counts_deferred_inits_against_the_backlog_only() -> None:
    backpressure = Backpressure(2, admission_backlog=3)
    lane = Lane(P0, root_init_classifier(ECHO))
    lane.enqueue(_record(init(f"k{offset}"), offset) for offset in range(2))
    assert not backpressure.should_pause(lane)
    lane.enqueue([_record(init("k2"), 2)])
    assert backpressure.should_pause(lane)
    lane.paused = True
    lane.pop_deferred()
    assert not backpressure.should_resume(lane)  # 2 deferred: above half the backlog (1)
    lane.pop_deferred()
    assert backpressure.should_resume(lane)
    with pytest.raises(ValueError, match="negative"):
        Backpressure(2, admission_backlog=-1)


async def test_a_deferred_init_starts_only_when_the_process_admits_it() -> None:
    open_ = False
    lane = Lane(P0, root_init_classifier(ECHO), admit=lambda: open_)
    lane.enqueue([_record(init("a"), 0)])
    taking = asyncio.create_task(lane.next_record())
    await asyncio.sleep(0.05)
    assert not taking.done()  # the process is busy with started workflows: the init waits
    lane.enqueue([_record(reply("b"), 1)])
    assert (await asyncio.wait_for(taking, 1)).offset == 1  # a reply still goes at once
    taking = asyncio.create_task(lane.next_record())
    await asyncio.sleep(0.03)
    assert not taking.done()
    open_ = True
    assert (await asyncio.wait_for(taking, 1)).offset == 0


async def test_the_loop_admits_inits_while_fewer_than_a_buffer_of_records_wait() -> None:
    async with admitted(partition_buffer_size=4) as rig:
        lane = rig.loop._lanes[P0]
        assert lane.admit is not None
        assert lane.admit()
        lane.records.extend([object()] * 4)
        assert not lane.admit()
        lane.records.clear()


def test_marking_offsets_done_does_not_scan_the_pending_ones() -> None:
    from service.runtime.consumer import OffsetTracker

    tracker = OffsetTracker()
    for offset in range(200_000):
        tracker.track(offset)
    started = time.perf_counter()
    for offset in range(1, 200_000):
        tracker.done(offset)  # the watermark waits at offset 0 (a deferred init)
    assert time.perf_counter() - started < 2.0  # a deque scan per call would take minutes
    assert tracker.committable is None
    tracker.done(0)
    assert tracker.committable == 200_000
