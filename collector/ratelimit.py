"""Per-agent rate limits: a token bucket per node name.

An agent replaying its spool after an outage sends as fast as the collector acks, which is
fine; a compromised or broken node that floods the collector must not take the group commit
and the rules away from everyone else. Going over the rate slows that node's stream down
(its next message is read later: back-pressure through gRPC flow control); nothing is dropped,
so an honest agent loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``delay(node)`` takes one token and returns how long the caller must wait first."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_nodes: int = 100_000,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._max_nodes = max_nodes
        self.throttled = 0  # messages that had to wait

    def delay(self, node: str) -> float:
        now = self._clock()
        b = self._buckets.get(node)
        if b is None:
            if len(self._buckets) >= self._max_nodes:  # bounded memory whatever the names
                self._buckets.clear()
            b = self._buckets[node] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.updated) * self.rate_per_s)
        b.updated = now
        b.tokens -= 1.0
        if b.tokens >= 0:
            return 0.0
        self.throttled += 1
        return -b.tokens / self.rate_per_s
