from __future__ import annotations

import pytest

from service.runtime.binding import RecordDecodeError
from service.runtime.dlq import MAX_ERROR_MESSAGE_BYTES, DeadLetter, DeadLetterEntry, replay


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
        topic="arvo.dlq", partition=0, offset=0, key=b"k", value=None, headers=headers
    )
    with pytest.raises(ValueError, match="lost its payload"):
        await replay(entry, producer=None)  # type: ignore[arg-type]
