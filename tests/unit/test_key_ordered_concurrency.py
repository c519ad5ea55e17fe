"""Key-ordered concurrency inside a partition (``ARVO_PARTITION_CONCURRENCY``) over the in-memory Kafka:
records of different keys run at once, records of one key stay in order, the commit watermark stays
contiguous, a retry holds up only its own key, and a drain abandons what did not finish."""

from __future__ import annotations

import asyncio

from tests.unit.test_consumer_loop_unit import P0, echo, running, settle, wait_until


async def test_records_of_other_keys_overtake_a_slow_one_but_the_commit_waits_for_it() -> None:
    async with running(partitions=1, partition_concurrency=4) as rig:
        slow = echo("a", mode="gate", gate="g")
        fast = echo("b")
        first = rig.produce(slow)
        rig.produce(fast)
        await wait_until(lambda: rig.sink() == [fast.id])
        assert rig.handler.executed == [fast.id]
        await settle(rig)
        assert (rig.committed(P0) or 0) <= first  # never past the record still running
        rig.handler.gates["g"].set()
        await wait_until(lambda: rig.sink() == [fast.id, slow.id])
        await wait_until(lambda: rig.committed(P0) == first + 2)


async def test_records_of_one_key_run_one_after_the_other_in_offset_order() -> None:
    async with running(partitions=1, partition_concurrency=4) as rig:
        a1 = echo("a", mode="gate", gate="g")
        a2 = echo("a")
        b1 = echo("b")
        for event in (a1, a2, b1):
            rig.produce(event)
        await wait_until(lambda: rig.sink() == [b1.id])
        await asyncio.sleep(0.02)
        assert a2.id not in rig.handler.started  # waits behind a1
        rig.handler.gates["g"].set()
        await wait_until(lambda: len(rig.sink()) == 3)
        assert [event_id for event_id in rig.handler.executed if event_id in (a1.id, a2.id)] == [a1.id, a2.id]
        assert rig.sink() == [b1.id, a1.id, a2.id]


async def test_at_most_the_configured_number_of_keys_run_at_once() -> None:
    async with running(partitions=1, partition_concurrency=2) as rig:
        events = [echo(f"k{index}", mode="gate", gate=f"g{index}") for index in range(3)]
        for event in events:
            rig.produce(event)
        await wait_until(lambda: len(rig.handler.started) == 2)
        await asyncio.sleep(0.02)
        assert rig.handler.started == [events[0].id, events[1].id]
        rig.handler.gates["g0"].set()
        await wait_until(lambda: len(rig.handler.started) == 3)
        for index in (1, 2):
            rig.handler.gates[f"g{index}"].set()
        await wait_until(lambda: len(rig.sink()) == 3)


async def test_a_retry_holds_up_only_its_own_key() -> None:
    async with running(partitions=1, partition_concurrency=4, retry_initial_ms=200, retry_max_ms=200) as rig:
        flaky = echo("a", mode="flaky", failures=1)
        behind = echo("a")
        other = echo("b")
        for event in (flaky, behind, other):
            rig.produce(event)
        await wait_until(lambda: rig.sink() == [other.id])  # while "a" waits for its retry
        await wait_until(lambda: rig.sink() == [other.id, flaky.id, behind.id])
        assert rig.handler.attempts[flaky.id] == 2


async def test_a_drain_abandons_what_did_not_finish_and_commits_only_below_it() -> None:
    async with running(partitions=1, partition_concurrency=4, drain_timeout_s=0.1) as rig:
        stuck = echo("a", mode="stuck")
        done = echo("b")
        first = rig.produce(stuck)
        rig.produce(done)
        rig.produce(echo("a"))  # behind the stuck one: never runs
        await wait_until(lambda: rig.sink() == [done.id])
        await rig.loop.stop()
        assert rig.handler.cancelled == [stuck.id]
        assert (rig.committed(P0) or 0) <= first
        assert len(rig.handler.executed) == 1


async def test_the_lane_counts_records_waiting_for_their_key_for_backpressure() -> None:
    async with running(partitions=1, partition_concurrency=2, partition_buffer_size=4) as rig:
        rig.produce(echo("a", mode="gate", gate="g"))
        for _ in range(5):
            rig.produce(echo("a"))
        await wait_until(lambda: P0 in rig.loop.stats.paused)
        lane = rig.loop._lanes[P0]
        assert lane.size == 6
        assert lane.keyed_count == 5
        rig.handler.gates["g"].set()
        await wait_until(lambda: len(rig.sink()) == 6)
        await wait_until(lambda: P0 not in rig.loop.stats.paused)
        await wait_until(lambda: lane.idle)  # the last record's finish follows its sink record
