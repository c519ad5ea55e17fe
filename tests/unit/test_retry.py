from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from service.runtime.retry import RetryPolicy
from service.runtime.settings import load_settings


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def test_caps_double_until_the_maximum() -> None:
    policy = RetryPolicy(initial_ms=100, max_ms=1_000, max_attempts=10, jitter=0.0)
    assert [policy.cap_ms(n) for n in range(6)] == [100, 200, 400, 800, 1_000, 1_000]


def test_without_jitter_delays_are_the_caps_in_seconds() -> None:
    policy = RetryPolicy(initial_ms=100, max_ms=1_000, max_attempts=5, jitter=0.0)
    assert list(policy.delays()) == [0.1, 0.2, 0.4, 0.8]


def test_delays_yield_one_less_than_max_attempts() -> None:
    assert len(list(RetryPolicy(max_attempts=1).delays())) == 0
    assert len(list(RetryPolicy(max_attempts=4).delays())) == 3


def test_full_jitter_spreads_uniformly_below_the_cap() -> None:
    low = RetryPolicy(initial_ms=100, max_ms=100, max_attempts=2, jitter=1.0, random=constant(0.999))
    high = RetryPolicy(initial_ms=100, max_ms=100, max_attempts=2, jitter=1.0, random=constant(0.0))
    assert low.delay(0) == pytest.approx(0.0001)
    assert high.delay(0) == pytest.approx(0.1)


def test_partial_jitter_keeps_a_floor() -> None:
    policy = RetryPolicy(
        initial_ms=1_000, max_ms=1_000, max_attempts=2, jitter=0.25, random=constant(0.999999)
    )
    assert policy.delay(0) == pytest.approx(0.75, abs=1e-3)


def test_injected_random_makes_delays_deterministic() -> None:
    def seeded() -> Callable[[], float]:
        values = itertools.cycle([0.5, 0.25])
        return lambda: next(values)

    a = list(RetryPolicy(initial_ms=10, max_ms=80, max_attempts=6, random=seeded()).delays())
    b = list(RetryPolicy(initial_ms=10, max_ms=80, max_attempts=6, random=seeded()).delays())
    assert a == b == [0.005, 0.015, 0.02, 0.06, 0.04]


def test_unbounded_delays_never_end_and_stay_capped() -> None:
    policy = RetryPolicy(initial_ms=1, max_ms=50, max_attempts=1, jitter=0.0)
    delays = list(itertools.islice(policy.unbounded_delays(), 1_000))
    assert len(delays) == 1_000
    assert max(delays) == 0.05


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_ms": -1}, "initial_ms"),
        ({"initial_ms": 100, "max_ms": 10}, "max_ms"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_invalid_policies_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{field}"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_from_settings() -> None:
    settings = load_settings(
        env_file=None, retry_initial_ms=5, retry_max_ms=500, retry_max_attempts=4, retry_jitter=0.5
    )
    policy = RetryPolicy.from_settings(settings)
    assert (policy.initial_ms, policy.max_ms, policy.max_attempts, policy.jitter) == (5, 500, 4, 0.5)
