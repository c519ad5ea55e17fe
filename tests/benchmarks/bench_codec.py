"""Codec throughput: event JSON decode/encode and orchestration subject decode, each beside a baseline.

Figures (ops per second, one core):

* ``codec.event_decode_ops_per_s``: JSON bytes -> validated :class:`ArvoEvent` (``from_json``), beside
  ``codec.orjson_loads_ops_per_s`` (plain ``orjson.loads`` of the same bytes, no validation);
* ``codec.event_encode_ops_per_s``: ``ArvoEvent.to_json()``, beside ``codec.orjson_dumps_ops_per_s``
  (``orjson.dumps`` of the same wire dict);
* ``codec.subject_decode_cold_ops_per_s`` / ``codec.subject_decode_cached_ops_per_s``: subject string
  -> parsed subject, without and with the per-string cache.

Run: ``.venv/bin/python -m tests.benchmarks codec``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from service.arvo.event import ArvoEvent, create_arvo_event

WARM_UP_S = 0.2
MEASURE_S = 1.5

# A random-looking but fixed subject (spec 3.2 test vector), used when the subject module is absent.
_FALLBACK_SUBJECT = (
    "eJwlzdEKwyAMheF3yXUVtc5ufRungQWqgtoyEN99obtMPjj/gFLDB1uvvpcK+4DsE8IOvl5FssnOCAtcWBuVzKKkkhrmAvjFcPb7"
    "OYAikzYr2ofbBD5fb6FNXIXnW1jjnLZ6s0op3qJMnf49CCXdCdmwXhSQOZbkiUfzeRycSdg9F+b8AWonNj0="
)


def ops_per_second(operation: Callable[[], object], seconds: float = MEASURE_S) -> float:
    """Call ``operation`` repeatedly for about ``seconds`` (after a warm-up) and return calls per second."""
    deadline = time.perf_counter() + WARM_UP_S
    while time.perf_counter() < deadline:
        operation()
    # Calibrate a batch of roughly 10 ms so the clock is read rarely.
    batch = 1
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            operation()
        elapsed = time.perf_counter() - start
        if elapsed >= 0.01:
            break
        batch *= 2
    calls = 0
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        for _ in range(batch):
            operation()
        calls += batch
        now = time.perf_counter()
    return calls / (now - start)


def _subject() -> str:
    try:
        from service.arvo.subject import ArvoOrchestrationSubject
    except ImportError:
        return _FALLBACK_SUBJECT
    return ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.inc", initiator="com.test.service", version="0.0.1"
    )


def typical_event() -> ArvoEvent:
    """A handler response like the one of spec 1.12 (about 600-800 bytes of JSON)."""
    return create_arvo_event(
        source="com.increment.number",
        type="evt.increment.number.success",
        subject=_subject(),
        data={"result": 4, "items": [{"name": "a", "count": 3}, {"name": "b", "count": 7}], "note": "héllo"},
        dataschema="#/test/handler/increment/0.0.1",
        to="arvo.orc.inc",
        executionunits=0.1,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        parentid="0f3e6b1c-2a4d-4c4e-8f7e-1b2c3d4e5f60",
    )


def _report(results: dict[str, float], name: str, value: float, baseline_name: str, baseline: float) -> None:
    results[name] = value
    results[baseline_name] = baseline
    print(
        f"{name}: {value:,.0f} ops/s (baseline {baseline_name}: {baseline:,.0f} ops/s, "
        f"ratio {value / baseline:.2f})",
        flush=True,
    )


def _bench_subject(results: dict[str, float], subject: str) -> None:
    try:
        from service.arvo import subject as subject_module
    except ImportError:
        print("codec.subject_decode_*: skipped (service/arvo/subject.py is not there yet)", flush=True)
        return
    parse: Callable[[str], Any] = subject_module.ArvoOrchestrationSubject.parse
    decode_uncached: Callable[[str], Any] | None = getattr(subject_module, "_decode_subject", None)
    if decode_uncached is None:
        cached = getattr(subject_module, "_parse_cached", None)
        if cached is None or not hasattr(cached, "cache_clear"):
            print("codec.subject_decode_cold: skipped (no uncached decoder or clearable cache)", flush=True)
            return
        clear = cached.cache_clear

        def cold() -> object:
            clear()
            return parse(subject)

    else:
        uncached = decode_uncached

        def cold() -> object:
            return uncached(subject)

    cold_rate = ops_per_second(cold)
    cached_rate = ops_per_second(lambda: parse(subject))
    _report(
        results,
        "codec.subject_decode_cold_ops_per_s",
        cold_rate,
        "codec.subject_decode_cached_ops_per_s",
        cached_rate,
    )


def run(results: dict[str, float]) -> None:
    """Measure every codec figure and record it in ``results``."""
    event = typical_event()
    raw = event.to_json()
    wire = event.to_dict()
    assert ArvoEvent.from_json(raw) == event
    print(f"event JSON size: {len(raw)} bytes", flush=True)
    results["codec.event_json_bytes"] = float(len(raw))

    from_json = ArvoEvent.from_json
    loads = orjson.loads
    decode = ops_per_second(lambda: from_json(raw))
    baseline_loads = ops_per_second(lambda: loads(raw))
    _report(results, "codec.event_decode_ops_per_s", decode, "codec.orjson_loads_ops_per_s", baseline_loads)

    to_json = event.to_json
    dumps = orjson.dumps
    encode = ops_per_second(to_json)
    baseline_dumps = ops_per_second(lambda: dumps(wire))
    _report(results, "codec.event_encode_ops_per_s", encode, "codec.orjson_dumps_ops_per_s", baseline_dumps)

    _bench_subject(results, event.subject)
