from __future__ import annotations

from collections.abc import Sequence

import orjson
import pytest

from service.runtime.binding import RecordDecodeError
from service.runtime.dlq import (
    MAX_ERROR_MESSAGE_BYTES,
    MAX_KEPT_KEY_BYTES,
    DeadLetter,
    DeadLetterEntry,
    DeadLetterPublisher,
    replay,
)


def letter(**overrides: object) -> DeadLetter:
    values: dict[str, object] = {
        "key": b"k",
        "value": b"v",
        "headers": [("content-type", b"application/json"), ("arvo-dlq-reason", b"old")],
        "topic": "t.com.a.b",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000_000,
        "reason": "not_json",
        "error": RecordDecodeError("not_json", "record value is not JSON"),
        "attempts": 1,
    }
    values.update(overrides)
    return DeadLetter.from_error(**values)  # type: ignore[arg-type]


def test_dead_letter_keeps_original_headers_and_appends_diagnostics() -> None:
    headers = dict(letter().headers_out())
    assert headers["content-type"] == b"application/json"
    assert headers["arvo-dlq-reason"] == b"not_json"  # the stale one was replaced, not repeated
    assert headers["arvo-dlq-error-class"] == b"RecordDecodeError"
    assert headers["arvo-dlq-origin-topic"] == b"t.com.a.b"
    assert headers["arvo-dlq-origin-partition"] == b"2"
    assert headers["arvo-dlq-origin-offset"] == b"41"
    assert headers["arvo-dlq-origin-timestamp"] == b"1700000000000"
    assert headers["arvo-dlq-attempts"] == b"1"
    assert [name for name, _ in letter().headers_out()].count("arvo-dlq-reason") == 1


def test_error_messages_are_truncated_to_one_kib_of_utf8() -> None:
    long_error = RuntimeError("é" * 5_000)
    message = dict(letter(error=long_error).headers_out())["arvo-dlq-error-message"]
    assert len(message) <= MAX_ERROR_MESSAGE_BYTES
    message.decode("utf-8")  # still valid UTF-8 after the cut


def test_entry_parses_what_the_letter_wrote() -> None:
    written = letter(attempts=3)
    entry = DeadLetterEntry.from_record(
        topic="arvo.dlq", partition=0, offset=7, key=b"k", value=b"v", headers=written.headers_out()
    )
    assert entry.reason == "not_json"
    assert entry.origin_topic == "t.com.a.b"
    assert (entry.origin_partition, entry.origin_offset, entry.attempts) == (2, 41, 3)
    assert entry.original_headers == [("content-type", b"application/json")]
    assert entry.payload_dropped_bytes is None


async def test_payloadless_letters_record_the_size_and_cannot_be_replayed() -> None:
    stripped = letter(value=b"x" * 100).without_payload()
    assert stripped.value is None
    headers = stripped.headers_out()
    # value (100) + "content-type"/"application/json" (12 + 16) + "arvo-dlq-reason"/"old" (15 + 3)
    assert dict(headers)["arvo-dlq-payload-dropped"] == b"146"
    entry = DeadLetterEntry.from_record(
        topic="arvo.dlq",
        partition=0,
        offset=0,
        key=stripped.record_key,
        value=stripped.record_value,
        headers=headers,
    )
    assert entry.value is None
    assert not entry.replayable
    with pytest.raises(ValueError, match=r"lost its payload \(146 bytes.*cannot be replayed"):
        await replay(entry, producer=None)  # type: ignore[arg-type]


class RecordingProducer:
    """Stands in for the EventProducer; refuses a record without key and value as aiokafka does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def publish_raw(
        self, topic: str, *, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        assert not (value is None and key is None), "Need at least one: key or value"
        self.sent.append((topic, key, value, list(headers)))


def publisher() -> tuple[DeadLetterPublisher, RecordingProducer]:
    producer = RecordingProducer()
    return DeadLetterPublisher(producer=producer, topic="arvo.dlq"), producer  # type: ignore[arg-type]


def read_back(producer: RecordingProducer) -> DeadLetterEntry:
    [(topic, key, value, headers)] = producer.sent
    return DeadLetterEntry.from_record(
        topic=topic, partition=0, offset=5, key=key, value=value, headers=headers
    )


async def test_a_keyless_letter_gets_the_source_records_position_as_key_and_replays_keyless() -> None:
    dlq, producer = publisher()
    await dlq.publish(letter(key=None))
    [(_, key, value, headers)] = producer.sent
    assert key == b"t.com.a.b/2/41"
    assert value == b"v"
    assert dict(headers)["arvo-dlq-key-synthetic"] == b"1"
    entry = read_back(producer)
    assert (entry.key, entry.record_key, entry.value) == (None, b"t.com.a.b/2/41", b"v")
    replayed = RecordingProducer()
    await replay(entry, producer=replayed)  # type: ignore[arg-type]
    assert replayed.sent == [("t.com.a.b", None, b"v", [("content-type", b"application/json")])]


async def test_a_keyless_record_too_large_to_dead_letter_keeps_a_key_a_value_and_its_diagnostics() -> None:
    # The finding: a keyless record over ~1.1 MB lost its payload and became key = value = null,
    # which aiokafka refuses ("Need at least one: key or value").
    dlq, producer = publisher()
    big = letter(key=None, value=b"x" * 1_200_000, reason="oversized")
    await dlq.publish(big.without_payload())
    [(_, key, value, headers)] = producer.sent
    assert key == b"t.com.a.b/2/41"
    assert value is not None
    assert len(value) < 4096
    diagnostics = orjson.loads(value)
    assert diagnostics["arvo-dlq-reason"] == "oversized"
    assert diagnostics["arvo-dlq-error-class"] == "RecordDecodeError"
    assert diagnostics["arvo-dlq-origin-topic"] == "t.com.a.b"
    assert diagnostics["arvo-dlq-origin-offset"] == "41"
    assert int(diagnostics["arvo-dlq-payload-dropped"]) > 1_200_000
    assert {name: raw.decode() for name, raw in headers} == diagnostics  # the same, in both
    entry = read_back(producer)
    assert (entry.reason, entry.error_class, entry.origin_topic) == (
        "oversized",
        "RecordDecodeError",
        "t.com.a.b",
    )
    assert (entry.origin_partition, entry.origin_offset, entry.attempts) == (2, 41, 1)
    assert (entry.key, entry.value, entry.original_headers) == (None, None, [])
    assert entry.payload_dropped_bytes is not None
    assert entry.payload_dropped_bytes > 1_200_000
    problem = entry.replay_problem()
    assert problem is not None
    assert "cannot be replayed" in problem
    assert "t.com.a.b/2@41" in problem  # where the original still is


async def test_a_letter_without_payload_keeps_its_key_and_the_dead_letter_tools_read_it() -> None:
    dlq, producer = publisher()
    await dlq.publish(letter(key=b"subject-1", value=b"x" * 2_000_000).without_payload())
    [(_, key, _value, headers)] = producer.sent
    assert key == b"subject-1"
    assert "arvo-dlq-key-synthetic" not in dict(headers)
    entry = read_back(producer)
    assert (entry.key, entry.record_key) == (b"subject-1", b"subject-1")
    assert entry.reason == "not_json"


async def test_an_oversized_key_is_dropped_with_the_payload_and_replaced_by_the_position() -> None:
    dlq, producer = publisher()
    huge_key = b"k" * (MAX_KEPT_KEY_BYTES + 1)
    await dlq.publish(letter(key=huge_key, value=b"v").without_payload())
    [(_, key, _, headers)] = producer.sent
    assert key == b"t.com.a.b/2/41"
    assert dict(headers)["arvo-dlq-key-dropped"] == str(len(huge_key)).encode()
    entry = read_back(producer)
    assert entry.key is None
    assert entry.key_dropped_bytes == len(huge_key)
    assert not entry.replayable


async def test_a_key_at_the_limit_is_kept_without_the_payload() -> None:
    dlq, producer = publisher()
    await dlq.publish(letter(key=b"k" * MAX_KEPT_KEY_BYTES).without_payload())
    assert producer.sent[0][1] == b"k" * MAX_KEPT_KEY_BYTES


async def test_a_tombstone_letter_keeps_its_null_value_and_replays_as_a_tombstone() -> None:
    dlq, producer = publisher()
    await dlq.publish(letter(key=b"k", value=None))
    assert producer.sent[0][1:3] == (b"k", None)
    entry = read_back(producer)
    replayed = RecordingProducer()
    await replay(entry, producer=replayed)  # type: ignore[arg-type]
    assert replayed.sent[0][1:3] == (b"k", None)


async def test_a_record_with_neither_key_nor_value_is_dead_lettered_but_cannot_be_replayed() -> None:
    dlq, producer = publisher()
    await dlq.publish(letter(key=None, value=None))
    assert producer.sent[0][1:3] == (b"t.com.a.b/2/41", None)
    entry = read_back(producer)
    with pytest.raises(ValueError, match="neither key nor value"):
        await replay(entry, producer=RecordingProducer())  # type: ignore[arg-type]


def test_diagnostics_are_read_from_the_value_when_the_headers_are_gone() -> None:
    stripped = letter(key=None, reason="contract").without_payload()
    entry = DeadLetterEntry.from_record(
        topic="arvo.dlq",
        partition=1,
        offset=2,
        key=stripped.record_key,
        value=stripped.record_value,
        headers=[],
    )
    assert (entry.reason, entry.origin_topic, entry.origin_offset) == ("contract", "t.com.a.b", 41)
    assert (entry.key, entry.value) == (None, None)
    assert not entry.replayable


@pytest.mark.parametrize("value", [b"{}", b"not json", b'{"arvo-dlq-reason": "x"}', b"[1]", None])
def test_an_ordinary_value_is_not_mistaken_for_diagnostics(value: bytes | None) -> None:
    entry = DeadLetterEntry.from_record(
        topic="arvo.dlq", partition=0, offset=0, key=b"k", value=value, headers=[]
    )
    assert (entry.reason, entry.key, entry.value, entry.payload_dropped_bytes) == ("", b"k", value, None)


async def test_a_letter_without_origin_topic_cannot_be_replayed() -> None:
    entry = DeadLetterEntry.from_record(
        topic="arvo.dlq", partition=0, offset=3, key=b"k", value=b"v", headers=[]
    )
    with pytest.raises(ValueError, match="no 'arvo-dlq-origin-topic' header"):
        await replay(entry, producer=RecordingProducer())  # type: ignore[arg-type]
