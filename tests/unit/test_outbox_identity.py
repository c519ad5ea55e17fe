"""The stateless outbox keys an emission by the CloudEvents identity (source, id), the subject too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.arvo.event import ArvoEvent, create_arvo_event
from service.runtime.outbox import EmissionOutbox, InMemoryOutbox
from service.runtime.redis_memory import RedisMemory
from service.runtime.redis_outbox import RedisOutbox
from tests.integration._redis import delete_keys_with_prefix, require_shared_redis, unique_prefix

HANDLER = "com.bench.add"


@pytest.fixture(params=["in_memory", pytest.param("redis", marks=pytest.mark.integration)])
async def outbox(request: pytest.FixtureRequest) -> AsyncIterator[EmissionOutbox]:
    if request.param == "in_memory":
        yield InMemoryOutbox(ttl_s=60)
        return
    prefix = unique_prefix()
    memory = RedisMemory.from_url(require_shared_redis(), key_prefix=prefix)
    try:
        yield RedisOutbox(client=memory.client, key_prefix=prefix, ttl_s=60, hot_client=memory.hot_client)
    finally:
        await delete_keys_with_prefix(memory.client, prefix)  # type: ignore[arg-type]
        await memory.close()


def consumed(*, source: str = "com.src.one", event_id: str = "1", subject: str = "subject-1") -> ArvoEvent:
    return create_arvo_event(id=event_id, source=source, type=HANDLER, subject=subject, data={"a": 1, "b": 2})


def answer(value: str) -> list[ArvoEvent]:
    return [create_arvo_event(source=HANDLER, type="evt.bench.add.success", subject="s", data={"v": value})]


async def test_the_same_id_from_two_sources_is_two_events(outbox: EmissionOutbox) -> None:
    assert await outbox.settle(HANDLER, consumed(source="com.src.one"), answer("one")) is None
    assert await outbox.settle(HANDLER, consumed(source="com.src.two"), answer("two")) is None
    stored = await outbox.settle(HANDLER, consumed(source="com.src.two"), answer("again"))
    assert stored is not None
    assert stored[0].data == {"v": "two"}


async def test_the_same_event_on_two_subjects_is_two_executions(outbox: EmissionOutbox) -> None:
    assert await outbox.settle(HANDLER, consumed(subject="subject-1"), answer("1")) is None
    assert await outbox.settle(HANDLER, consumed(subject="subject-2"), answer("2")) is None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"source": "a/b", "event_id": "c"}, {"source": "a", "event_id": "b/c"}),
        ({"source": "a}", "event_id": "c"}, {"source": "a", "event_id": "}c"}),
        ({"source": "a%2Fb", "event_id": "c"}, {"source": "a/b", "event_id": "c"}),
        ({"subject": "x/y", "source": "z"}, {"subject": "x", "source": "y/z"}),
    ],
)
async def test_no_value_can_shift_into_another_part_of_the_key(
    outbox: EmissionOutbox, first: dict[str, str], second: dict[str, str]
) -> None:
    assert await outbox.settle(HANDLER, consumed(**first), answer("first")) is None
    assert await outbox.settle(HANDLER, consumed(**second), answer("second")) is None


def test_the_redis_key_keeps_every_part_inside_one_hash_tag() -> None:
    key = RedisOutbox(client=None, key_prefix="arvo", ttl_s=60).key(  # type: ignore[arg-type]
        HANDLER, consumed(source="weird{source}", event_id="id}{", subject="s/1")
    )
    assert key == "arvo:outbox:{com.bench.add//s%2F1/weird%257Bsource%257D/id%7D%7B}"  # the URI comes encoded
    assert key.count("{") == 1
    assert key.count("}") == 1
