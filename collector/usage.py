"""GPU usage over the last ``underuse_window``, per GPU, in a fixed number of time buckets.

Bounded whatever the stream length: :data:`BUCKETS` buckets of ``underuse_window / BUCKETS``
seconds each, plus running sums over the buckets kept, so a window costs a few additions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gpuwarden.collector.findings import PROFILE_FIELDS, Profile

BUCKETS = 30  # underuse_window is tracked in this many buckets
_NPROF = len(PROFILE_FIELDS)


def _zeros() -> list[float]:
    return [0.0] * _NPROF


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
    # per profiling field (PROFILE_FIELDS order): reported time with it, sum of mean x time;
    # None until a window with profiling counters comes (most cards have none)
    prof_dur_s: list[float] | None = None
    prof_s: list[float] | None = None


class UsageWindow:
    """The buckets of one GPU and their running sums."""

    __slots__ = (
        "active_buckets",
        "buckets",
        "cpu_dur_s",
        "cpu_s",
        "current",
        "dur_s",
        "prof_dur_s",
        "prof_s",
        "profiled",
        "util_s",
    )

    def __init__(self) -> None:
        self.buckets: deque[UsageBucket] = deque()
        self.current: UsageBucket | None = None  # the newest bucket (buckets[-1])
        self.dur_s = 0.0
        self.util_s = 0.0
        self.cpu_dur_s = 0.0
        self.cpu_s = 0.0
        self.prof_dur_s = _zeros()
        self.prof_s = _zeros()
        self.active_buckets = 0  # buckets kept with an active window
        self.profiled = False  # some window had profiling counters (most cards have none)

    def add(
        self,
        index: int,
        dur_s: float,
        mean_pct: float,
        mem_used_bytes: int | None,
        mem_total_bytes: int | None,
        cpu_pct: float | None,
        active: bool,
        profile: Profile | None = None,
    ) -> None:
        bucket = self.current
        if bucket is None or bucket.index != index:
            bucket = self.current = UsageBucket(index)
            self.buckets.append(bucket)
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
        if active and not bucket.active:
            bucket.active = True
            self.active_buckets += 1
        if profile is not None:
            self.profiled = True
            if bucket.prof_dur_s is None or bucket.prof_s is None:
                bucket.prof_dur_s, bucket.prof_s = _zeros(), _zeros()
            for i, v in enumerate(profile):
                if v is not None:
                    bucket.prof_dur_s[i] += dur_s
                    bucket.prof_s[i] += v * dur_s
                    self.prof_dur_s[i] += dur_s
                    self.prof_s[i] += v * dur_s

    def prune(self, first_index: int) -> None:
        """Drop buckets before ``first_index`` (and their share of the sums)."""
        b = self.buckets
        while b and b[0].index < first_index:
            old = b.popleft()
            if old is self.current:
                self.current = None
            self.dur_s -= old.dur_s
            self.util_s -= old.util_s
            self.cpu_dur_s -= old.cpu_dur_s
            self.cpu_s -= old.cpu_s
            if old.active:
                self.active_buckets -= 1
            if old.prof_dur_s is not None and old.prof_s is not None:
                for i in range(_NPROF):
                    self.prof_dur_s[i] -= old.prof_dur_s[i]
                    self.prof_s[i] -= old.prof_s[i]

    def mean_util_pct(self) -> float | None:
        return self.util_s / self.dur_s if self.dur_s > 0 else None

    def mean_cpu_pct(self) -> float | None:
        return self.cpu_s / self.cpu_dur_s if self.cpu_dur_s > 0 else None

    def mean_profile_pct(self, i: int) -> float | None:
        """Mean of profiling field ``i`` (PROFILE_FIELDS order) over the time that had it."""
        d = self.prof_dur_s[i]
        return self.prof_s[i] / d if d > 1e-6 else None  # > 0 but for rounding

    def peak_mem(self) -> tuple[int, int] | None:
        """(peak memory used, card memory) over the buckets kept; None when unknown."""
        # checked every few windows of every job: the maxima taken in C where no bucket
        # lacks the figure (the usual case)
        used = [b.mem_max_bytes for b in self.buckets]
        cards = [b.mem_total_bytes for b in self.buckets]
        peak = _max_known(used)
        total = _max_known(cards)
        if peak is None or not total:
            return None
        return peak, total

    def any_active(self) -> bool:
        return self.active_buckets > 0


def _max_known(values: list[int | None]) -> int | None:
    """The largest value that is not None; None when there is none."""
    if None not in values:
        return max(values) if values else None  # type: ignore[type-var]
    known = [v for v in values if v is not None]
    return max(known) if known else None
