"""Poison inputs end in the dead-letter topic, byte for byte, while their partition keeps flowing.

One service (the bench app) runs for the whole module. Each test produces one poison record and then
a valid bench workflow to the SAME partition of the orchestrator's topic (explicit partition), and
checks that the workflow completes and that the poison was dead-lettered with the right reason, its
original key, value and headers, and where it came from.
"""

from __future__ import annotations

import base64
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson
import pytest

from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.app import ArvoService
from service.runtime.binding import encode_event
from service.runtime.dlq import read_dead_letters
from tests.integration._kafka import KafkaNames, kafka_test_settings, produce_records, unique_name
from tests.integration._redis import unique_prefix
from tests.integration._service import (
    CLIENT,
    TopicTail,
    bench_init,
    delete_redis_prefix,
    running_service,
)

pytestmark = pytest.mark.integration

MAX_EVENT_BYTES = 64 * 1024
PARTITION = 1
HEADERS = [("content-type", b"application/cloudevents+json; charset=UTF-8"), ("x-origin", b"poison-test")]


@dataclass
class Harness:
    service: ArvoService
    replies: TopicTail
    bootstrap: str

    @property
    def orchestrator_topic(self) -> str:
        return self.service.router.handler_topic("arvo.orc.bench")


@pytest.fixture(scope="module")
async def harness(kafka_bootstrap: str, shared_redis_url: str) -> AsyncIterator[Harness]:
    names = KafkaNames(prefix=f"{unique_name()}.", group=unique_name("g"))
    prefix = unique_prefix()
    settings = kafka_test_settings(
        kafka_bootstrap,
        names,
        app="service.examples:bench_app",
        redis_url=shared_redis_url,
        redis_key_prefix=prefix,
        max_event_bytes=MAX_EVENT_BYTES,
    )
    try:
        async with (
            TopicTail(kafka_bootstrap, names.topic(CLIENT)) as replies,
            running_service(settings) as service,
        ):
            yield Harness(service=service, replies=replies, bootstrap=kafka_bootstrap)
    finally:
        await delete_redis_prefix(shared_redis_url, prefix)


def _with_subject(subject: str, **changes: object) -> ArvoEvent:
    """A bench init event (valid on its own) with ``subject`` and other attributes replaced."""
    valid = bench_init(1).to_dict()
    valid.update(subject=subject, **changes)
    return create_arvo_event(**{name: value for name, value in valid.items() if name != "specversion"})


def _zip_bomb_subject() -> str:
    # 3 MB of JSON deflating to < 4 KiB of base64: the subject codec must refuse to inflate it.
    content = (
        b'{"orchestrator":{"name":"arvo.orc.bench","version":"1.0.0"},"pad":"' + b"x" * 3_000_000 + b'"}'
    )
    subject = base64.b64encode(zlib.compress(content, 9)).decode()
    assert len(subject) <= 4096
    return subject


def _invalid_event() -> bytes:
    document = orjson.loads(bench_init(1).to_json())
    document["type"] = "Not A Type"
    return orjson.dumps(document)


def _contract_violation() -> bytes:
    init = bench_init(1)
    return create_arvo_event(
        source=CLIENT,
        type=init.type,
        subject=init.subject,
        dataschema=init.dataschema,
        data={"a": "not a number", "b": 1, "parentSubject$$": None},
    ).to_json()


def _unknown_version() -> bytes:
    subject = ArvoOrchestrationSubject.new(orchestrator="arvo.orc.bench", initiator=CLIENT, version="9.9.9")
    return _with_subject(subject).to_json()


def _oversized() -> bytes:
    document = orjson.loads(bench_init(1).to_json())
    document["data"]["padding"] = "p" * (MAX_EVENT_BYTES + 1)
    return orjson.dumps(document)


POISONS: dict[str, tuple[Callable[[], bytes], str, str]] = {
    # name: (record value, dead-letter reason, error class)
    "non_json_bytes": (lambda: b"\x00\xff definitely { not json", "not_json", "RecordDecodeError"),
    "json_not_a_cloudevent": (
        lambda: b'{"hello": "world", "n": [1, 2, 3]}',
        "not_cloudevent",
        "RecordDecodeError",
    ),
    "invalid_arvo_event": (_invalid_event, "invalid_event", "RecordDecodeError"),
    "invalid_subject": (
        lambda: _with_subject("not-an-orchestration-subject").to_json(),
        "execution",
        "ExecutionViolation",
    ),
    "zip_bomb_subject": (
        lambda: _with_subject(_zip_bomb_subject()).to_json(),
        "execution",
        "ExecutionViolation",
    ),
    "oversized_record": (_oversized, "oversized", "RecordDecodeError"),
    "data_violating_the_contract": (_contract_violation, "contract", "ContractViolation"),
    "unknown_machine_version": (_unknown_version, "config", "ConfigViolation"),
}


@pytest.mark.parametrize("poison", list(POISONS))
async def test_poison_is_dead_lettered_with_its_reason_and_the_partition_keeps_flowing(
    harness: Harness, poison: str
) -> None:
    build, reason, error_class = POISONS[poison]
    value = build()
    key = f"poison-{poison}-{uuid.uuid4().hex[:8]}".encode()
    good = bench_init(7, 8)
    message = encode_event(good)
    await produce_records(
        harness.bootstrap,
        harness.orchestrator_topic,
        [(key, value, HEADERS), (message.key, message.value, message.headers)],
        partition=PARTITION,
    )

    replies = await harness.replies.wait_for_replies([good.id], timeout_s=60)
    assert replies[good.id].type == "arvo.orc.bench.done"
    assert replies[good.id].data == {"result": 30}

    # The lane dead-letters the poison (and waits for the ack) before it takes the next record.
    letters = [entry for entry in await read_dead_letters(harness.service.settings) if entry.key == key]
    assert len(letters) == 1, letters
    letter = letters[0]
    assert (letter.reason, letter.error_class) == (reason, error_class), letter.error_message
    assert letter.value == value
    assert letter.original_headers == HEADERS
    assert letter.origin_topic == harness.orchestrator_topic
    assert letter.origin_partition == PARTITION
    assert letter.origin_offset is not None
    assert letter.attempts == 1  # permanent: never retried
    assert harness.service.loop.stats.parked == 0
    assert harness.service.loop.is_running
