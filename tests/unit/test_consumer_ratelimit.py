from __future__ import annotations

from service.runtime.consumer.ratelimit import WarningLimiter


def test_one_line_per_key_and_interval_with_the_count_held_back() -> None:
    now = [100.0]
    limiter = WarningLimiter(60.0, clock=lambda: now[0])
    assert limiter.allow("a") == 0
    assert limiter.allow("b") == 0  # keys are independent
    now[0] = 159.99
    assert limiter.allow("a") is None
    assert limiter.allow("a") is None
    now[0] = 160.0
    assert limiter.allow("a") == 2
    assert limiter.allow("a") is None
    assert limiter.clear("a") == 1
    assert limiter.clear("a") == 0
    assert limiter.allow("a") == 0  # cleared: the next line is written at once
