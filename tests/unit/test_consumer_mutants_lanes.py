"""A lane's waits and its stall clock: what ``/readyz`` reports and how long a record waits."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.runtime.consumer import Lane, LaneStopping
from tests.unit.test_consumer_lanes import TP, lane_with


def test_an_idle_lane_is_never_stalled() -> None:
    lane = Lane(TP)
    assert lane.stalled_for(time.monotonic() + 1_000) == 0.0


def test_a_lane_with_work_is_stalled_for_the_time_since_its_last_progress() -> None:
    lane = lane_with(0)
    lane.progress_at = 50.0
    assert lane.stalled_for(50.25) == 0.25
    assert lane.stalled_for(80.0) == 30.0
    assert lane.stalled_for(49.0) == 0.0  # a clock read before the progress: not negative


async def test_wait_for_waits_until_the_timeout_when_the_event_stays_unset() -> None:
    lane = Lane(TP)
    started = time.monotonic()
    assert await lane.wait_for(asyncio.Event(), 0.05) is False
    assert time.monotonic() - started >= 0.04


async def test_wait_for_returns_as_soon_as_the_event_is_set() -> None:
    lane = Lane(TP)
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)
    started = time.monotonic()
    assert await lane.wait_for(event, 5.0) is True
    assert time.monotonic() - started < 1.0


async def test_wait_for_an_event_already_set_returns_at_once() -> None:
    lane = Lane(TP)
    event = asyncio.Event()
    event.set()
    assert await asyncio.wait_for(lane.wait_for(event, 5.0), 1.0) is True


async def test_closing_the_lane_ends_a_wait_for_with_lane_stopping() -> None:
    lane = Lane(TP)
    asyncio.get_running_loop().call_later(0.01, lane.close)
    started = time.monotonic()
    with pytest.raises(LaneStopping):
        await lane.wait_for(asyncio.Event(), 5.0)
    assert time.monotonic() - started < 1.0
    with pytest.raises(LaneStopping):
        await lane.wait_for(asyncio.Event(), 5.0)  # closed already
