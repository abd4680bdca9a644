"""GPU usage over the last ``underuse_window``, per GPU, in a fixed number of time buckets.

Bounded whatever the stream length: :data:`BUCKETS` buckets of ``underuse_window / BUCKETS``
seconds each, plus running sums over the buckets kept, so a window costs a few additions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

BUCKETS = 30  # underuse_window is tracked in this many buckets


@dataclass(slots=True)
class UsageBucket:
    """What was reported in one bucket of time (only time after the grace period)."""

    index: int  # bucket number: int(window end // bucket length)
    dur_s: float = 0.0  # reported time
    util_s: float = 0.0  # sum of mean utilisation x time
    mem_max_bytes: int | None = None
    mem_total_bytes: int | None = None
    cpu_dur_s: float = 0.0  # reported time with a job CPU figure
    cpu_s: float = 0.0  # sum of job CPU use x time
    active: bool = False  # some window in it was active


class UsageWindow:
    """The buckets of one GPU and their running sums."""

    __slots__ = ("buckets", "cpu_dur_s", "cpu_s", "dur_s", "util_s")

    def __init__(self) -> None:
        self.buckets: deque[UsageBucket] = deque()
        self.dur_s = 0.0
        self.util_s = 0.0
        self.cpu_dur_s = 0.0
        self.cpu_s = 0.0

    def add(
        self,
        index: int,
        dur_s: float,
        mean_pct: float,
        mem_used_bytes: int | None,
        mem_total_bytes: int | None,
        cpu_pct: float | None,
        active: bool,
    ) -> None:
        b = self.buckets
        if b and b[-1].index == index:
            bucket = b[-1]
        else:
            bucket = UsageBucket(index)
            b.append(bucket)
            self.prune(index - BUCKETS + 1)
        bucket.dur_s += dur_s
        bucket.util_s += mean_pct * dur_s
        self.dur_s += dur_s
        self.util_s += mean_pct * dur_s
        if mem_used_bytes is not None and (
            bucket.mem_max_bytes is None or mem_used_bytes > bucket.mem_max_bytes
        ):
            bucket.mem_max_bytes = mem_used_bytes
        if mem_total_bytes is not None:
            bucket.mem_total_bytes = mem_total_bytes
        if cpu_pct is not None:
            bucket.cpu_dur_s += dur_s
            bucket.cpu_s += cpu_pct * dur_s
            self.cpu_dur_s += dur_s
            self.cpu_s += cpu_pct * dur_s
        if active:
            bucket.active = True

    def prune(self, first_index: int) -> None:
        """Drop buckets before ``first_index`` (and their share of the sums)."""
        b = self.buckets
        while b and b[0].index < first_index:
            old = b.popleft()
            self.dur_s -= old.dur_s
            self.util_s -= old.util_s
            self.cpu_dur_s -= old.cpu_dur_s
            self.cpu_s -= old.cpu_s

    def mean_util_pct(self) -> float | None:
        return self.util_s / self.dur_s if self.dur_s > 0 else None

    def mean_cpu_pct(self) -> float | None:
        return self.cpu_s / self.cpu_dur_s if self.cpu_dur_s > 0 else None

    def peak_mem(self) -> tuple[int, int] | None:
        """(peak memory used, card memory) over the buckets kept; None when unknown."""
        peak = max(
            (b.mem_max_bytes for b in self.buckets if b.mem_max_bytes is not None), default=None
        )
        total = max(
            (b.mem_total_bytes for b in self.buckets if b.mem_total_bytes is not None), default=None
        )
        if peak is None or not total:
            return None
        return peak, total

    def any_active(self) -> bool:
        return any(b.active for b in self.buckets)
