"""Per-agent rate limits: a burst passes, a flood is slowed to the rate, nodes are apart."""

from __future__ import annotations

import pytest

from gpuwarden.collector.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_passes_then_a_flood_waits_for_the_rate() -> None:
    clock = Clock()
    lim = RateLimiter(rate_per_s=10, burst=5, clock=clock)
    assert [lim.delay("gpu01") for _ in range(5)] == [0.0] * 5
    assert lim.delay("gpu01") == pytest.approx(0.1)
    assert lim.delay("gpu01") == pytest.approx(0.2)  # each waiter queues behind the last
    assert lim.throttled == 2


def test_one_flooding_node_does_not_slow_another() -> None:
    clock = Clock()
    lim = RateLimiter(rate_per_s=10, burst=5, clock=clock)
    for _ in range(100):
        lim.delay("bad")
    assert lim.delay("good") == 0.0


def test_tokens_come_back_with_time_up_to_the_burst() -> None:
    clock = Clock()
    lim = RateLimiter(rate_per_s=10, burst=5, clock=clock)
    for _ in range(5):
        lim.delay("gpu01")
    clock.t = 100.0
    assert [lim.delay("gpu01") for _ in range(5)] == [0.0] * 5
    assert lim.delay("gpu01") > 0


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(rate_per_s=0, burst=5)
