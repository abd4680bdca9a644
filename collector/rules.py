"""Detection rules: a pure engine from (report windows, policy, now) to findings.

No I/O and no clock: the caller passes ``now``. The collector and ``gpuwarden replay`` feed
windows to one :class:`AllocationTracker` per allocation (a job and its GPUs) and call
:meth:`AllocationTracker.evaluate`, which is cheap (a few comparisons per GPU) and keeps
bounded state: one idle streak per GPU plus 30 buckets covering ``underuse_window``.

Coverage rule (DESIGN.md: missing data is unknown, never idle). Per GPU, an *idle streak* is a
run of report windows none of which is active. Only the part of a window that lies after the
job's start + ``grace_period`` and after the previous window's end counts (overlaps are not
counted twice). The streak's *covered time* is the sum of those parts: time with no report adds
nothing. A gap between two windows longer than ``max_gap`` ends the streak (the GPU may have
been busy while nobody was looking), and so does any active window, or an active window that
arrives late. A window whose utilisation is unknown counts as a gap. The allocation is
**idle** when every GPU has an idle streak whose covered time is at least ``idle_window`` and
whose newest window ended at most ``max_gap`` before ``now`` (fresh data).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from gpuwarden.collector.policy import Policy
from gpuwarden.common.types import JobInfo, WindowRecord

MIB = 1024 * 1024
BUCKETS = 30  # underuse_window is tracked in this many buckets
REPORT_EVERY_BUCKETS = 5  # under-use and advice are re-checked every underuse_window / 6


class FindingKind(StrEnum):
    IDLE = "idle"
    PARTLY_IDLE = "partly_idle"
    UNDERUSED = "underused"
    ADVICE = "advice"


class AdviceCode(StrEnum):
    MEMORY_HELD_IDLE = "memory_held_idle"
    USE_MIG = "use_mig"
    INPUT_BOUND = "input_bound"


@dataclass(frozen=True, slots=True)
class GpuRef:
    node: str
    uuid: str
    index: int


@dataclass(frozen=True, slots=True)
class Allocation:
    """A job and the GPUs it holds. ``start_ts`` None: ``job.start_time`` (0 = unknown)."""

    job: JobInfo
    gpus: tuple[GpuRef, ...]
    start_ts: float | None = None
    end_ts: float | None = None

    @property
    def started_ts(self) -> float | None:
        if self.start_ts is not None:
            return self.start_ts
        return float(self.job.start_time) if self.job.start_time > 0 else None


@dataclass(frozen=True, slots=True)
class ObservedWindow:
    """One report window of one GPU of an allocation (what the rules need of it)."""

    node: str
    uuid: str
    end_ts: float
    duration_s: float
    util_max_pct: float | None
    util_mean_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_w: float | None = None
    cpu_util_pct: float | None = None


def window_from_record(rec: WindowRecord) -> ObservedWindow:
    """Map a stored window to what the rules read; a lost GPU has unknown utilisation."""
    g = rec.gpu
    util_max = None if "gpu_lost" in g.errors else g.util_max
    return ObservedWindow(
        node=rec.node,
        uuid=g.uuid,
        end_ts=rec.window_end,
        duration_s=max(0.0, rec.window_end - rec.window_start),
        util_max_pct=util_max,
        util_mean_pct=g.util_mean,
        mem_used_bytes=g.mem_used_max_bytes,
        mem_total_bytes=g.mem_total_bytes,
        power_w=g.power_mean_w,
        cpu_util_pct=g.job.cpu_util_pct if g.job is not None else None,
    )


@dataclass(frozen=True, slots=True)
class GpuEvidence:
    """The window summary behind a finding, for one GPU."""

    node: str
    uuid: str
    index: int
    since_ts: float | None
    last_end_ts: float | None
    covered_s: float
    windows: int
    util_max_pct: float | None
    util_mean_pct: float | None
    mem_used_max_bytes: int | None
    mem_total_bytes: int | None
    cpu_util_mean_pct: float | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    job_id: str
    gpus: tuple[GpuRef, ...]
    since_ts: float
    detail: str
    code: str = ""  # AdviceCode for advice findings
    evidence: tuple[GpuEvidence, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind.value, self.code)

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(g.uuid for g in self.gpus)


class _Gpu:
    """Mutable per-GPU state; bounded whatever the stream length."""

    __slots__ = (
        "buckets",
        "closed_idle_s",
        "covered",
        "last_end",
        "r_cpu",
        "r_cpu_dur",
        "r_dur",
        "r_util",
        "ref",
        "s_mem_max",
        "s_mem_total",
        "s_util_max",
        "streak_start",
        "windows",
    )

    def __init__(self, ref: GpuRef) -> None:
        self.ref = ref
        self.last_end: float | None = None
        self.streak_start: float | None = None
        self.covered = 0.0
        self.windows = 0
        self.s_util_max = 0.0
        self.s_mem_max: int | None = None
        self.s_mem_total: int | None = None
        self.closed_idle_s = 0.0
        # bucket: [index, dur, util*dur, mem max, mem total, cpu dur, cpu*dur, any active]
        self.buckets: deque[list[float]] = deque()
        self.r_dur = 0.0
        self.r_util = 0.0
        self.r_cpu_dur = 0.0
        self.r_cpu = 0.0

    def end_streak(self, idle_window: float) -> None:
        if self.streak_start is not None and self.covered >= idle_window:
            self.closed_idle_s += self.covered
        self.streak_start = None
        self.covered = 0.0
        self.windows = 0
        self.s_util_max = 0.0
        self.s_mem_max = None
        self.s_mem_total = None

    def prune(self, first_bucket: int) -> None:
        b = self.buckets
        while b and b[0][0] < first_bucket:
            old = b.popleft()
            self.r_dur -= old[1]
            self.r_util -= old[2]
            self.r_cpu_dur -= old[5]
            self.r_cpu -= old[6]


def _fmt_s(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    return f"{sec}s"


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MIB:.0f} MiB"


class AllocationTracker:
    """Incremental detection state of one allocation under one policy.

    Feed windows in time order with :meth:`add` (or :meth:`add_values` on hot paths); call
    :meth:`evaluate` whenever findings are wanted. Late windows are handled conservatively: a
    late active window ends the idle streak, a late idle one is not counted.
    """

    def __init__(self, allocation: Allocation, policy: Policy) -> None:
        self.allocation = allocation
        self.policy = policy
        nodes = {g.node for g in allocation.gpus}
        self.exempt_reason = policy.exemption(allocation.job, sorted(nodes))
        self._gpus = [_Gpu(ref) for ref in allocation.gpus]
        self._pos = {(g.node, g.uuid): i for i, g in enumerate(allocation.gpus)}
        started = allocation.started_ts
        self._grace_end: float | None = None if started is None else started + policy.grace_period
        self._bucket_s = policy.underuse_window / BUCKETS
        self._next_report_ts = -math.inf
        self._report_cache: list[Finding] = []
        self.windows_seen = 0
        self.observed_s = 0.0

    def position(self, node: str, uuid: str) -> int | None:
        """Index of a GPU in the allocation, or None when it is not one of its GPUs."""
        return self._pos.get((node, uuid))

    def add(self, w: ObservedWindow) -> bool:
        pos = self._pos.get((w.node, w.uuid))
        if pos is None:
            return False
        self.add_values(
            pos,
            w.end_ts,
            w.duration_s,
            w.util_max_pct,
            w.util_mean_pct,
            w.mem_used_bytes,
            w.mem_total_bytes,
            w.cpu_util_pct,
        )
        return True

    def add_values(
        self,
        pos: int,
        end: float,
        duration_s: float,
        util_max: float | None,
        util_mean: float | None = None,
        mem_used_bytes: int | None = None,
        mem_total_bytes: int | None = None,
        cpu_util_pct: float | None = None,
    ) -> None:
        """Add one window of GPU number ``pos`` (see :meth:`position`)."""
        if util_max is None:  # unknown utilisation: a gap, never idle
            return
        p = self.policy
        g = self._gpus[pos]
        start = end - duration_s
        if self._grace_end is None:  # start unknown: grace runs from the first window
            self._grace_end = start + p.grace_period
        grace_end = self._grace_end
        active = util_max >= p.active_util_pct
        last = g.last_end
        if last is not None and end <= last:  # late or duplicate window
            if active and g.streak_start is not None and end > g.streak_start:
                g.end_streak(p.idle_window)
            return
        self.windows_seen += 1
        lo = start if last is None or start >= last else last
        if active:
            g.end_streak(p.idle_window)
        else:
            if g.streak_start is not None and last is not None and start - last > p.max_gap:
                g.end_streak(p.idle_window)  # a long gap: unknown, so the streak starts anew
            counted_from = lo if lo >= grace_end else grace_end
            if end > counted_from:
                if g.streak_start is None:
                    g.streak_start = counted_from
                g.covered += end - counted_from
                g.windows += 1
                if util_max > g.s_util_max:
                    g.s_util_max = util_max
                if mem_used_bytes is not None and (
                    g.s_mem_max is None or mem_used_bytes > g.s_mem_max
                ):
                    g.s_mem_max = mem_used_bytes
                if mem_total_bytes is not None:
                    g.s_mem_total = mem_total_bytes
        g.last_end = end
        # under-use buckets: only time after the grace period counts
        counted_from = lo if lo >= grace_end else grace_end
        if end <= counted_from:
            return
        dur = end - counted_from
        self.observed_s += dur
        mean = util_mean if util_mean is not None else util_max  # an upper bound
        idx = int(end // self._bucket_s)
        b = g.buckets
        if b and b[-1][0] == idx:
            bucket = b[-1]
        else:
            bucket = [idx, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0]
            b.append(bucket)
            g.prune(idx - BUCKETS + 1)
        bucket[1] += dur
        bucket[2] += mean * dur
        g.r_dur += dur
        g.r_util += mean * dur
        if mem_used_bytes is not None and mem_used_bytes > bucket[3]:
            bucket[3] = mem_used_bytes
        if mem_total_bytes is not None:
            bucket[4] = mem_total_bytes
        if cpu_util_pct is not None:
            bucket[5] += dur
            bucket[6] += cpu_util_pct * dur
            g.r_cpu_dur += dur
            g.r_cpu += cpu_util_pct * dur
        if active:
            bucket[7] = 1.0

    # ------------------------------------------------------------------ evaluation

    def idle_gpu_s(self) -> float:
        """GPU-seconds spent in idle streaks that reached ``idle_window`` (for summaries)."""
        w = self.policy.idle_window
        total = 0.0
        for g in self._gpus:
            total += g.closed_idle_s
            if g.streak_start is not None and g.covered >= w:
                total += g.covered
        return total

    def last_end_ts(self) -> float | None:
        ends = [g.last_end for g in self._gpus if g.last_end is not None]
        return max(ends) if ends else None

    def still_idle(self, now: float, gpus: Sequence[GpuRef] | None = None) -> bool:
        """True when the newest data of every GPU (or of ``gpus``, e.g. a partly idle
        finding's) still shows an idle streak long enough."""
        idle = self._idle_positions(now)
        if gpus is None:
            return len(idle) == len(self._gpus) > 0
        wanted = [self._pos.get((g.node, g.uuid)) for g in gpus]
        return bool(wanted) and all(p is not None and p in idle for p in wanted)

    def idle_since(self, node: str, uuid: str) -> float | None:
        """Start of the GPU's current idle streak (None: no streak, or not one of its GPUs)."""
        pos = self._pos.get((node, uuid))
        return None if pos is None else self._gpus[pos].streak_start

    def add_gpu(self, ref: GpuRef) -> int:
        """Add a GPU the allocation turned out to hold (live: learnt from its windows)."""
        pos = self._pos.get((ref.node, ref.uuid))
        if pos is not None:
            return pos
        self.allocation = dataclasses.replace(self.allocation, gpus=(*self.allocation.gpus, ref))
        self._gpus.append(_Gpu(ref))
        pos = self._pos[(ref.node, ref.uuid)] = len(self._gpus) - 1
        return pos

    def _idle_positions(self, now: float) -> list[int]:
        p = self.policy
        out = []
        for i, g in enumerate(self._gpus):
            if (
                g.streak_start is not None
                and g.covered >= p.idle_window
                and g.last_end is not None
                and now - g.last_end <= p.max_gap
            ):
                out.append(i)
        return out

    def _evidence(self, g: _Gpu) -> GpuEvidence:
        return GpuEvidence(
            node=g.ref.node,
            uuid=g.ref.uuid,
            index=g.ref.index,
            since_ts=g.streak_start,
            last_end_ts=g.last_end,
            covered_s=g.covered,
            windows=g.windows,
            util_max_pct=g.s_util_max if g.windows else None,
            util_mean_pct=(g.r_util / g.r_dur) if g.r_dur > 0 else None,
            mem_used_max_bytes=g.s_mem_max,
            mem_total_bytes=g.s_mem_total,
            cpu_util_mean_pct=(g.r_cpu / g.r_cpu_dur) if g.r_cpu_dur > 0 else None,
        )

    def evaluate(self, now: float) -> list[Finding]:
        """Findings of this allocation at ``now``; an exempt allocation has none."""
        if self.exempt_reason is not None:
            return []
        p = self.policy
        gpus = self._gpus
        n = len(gpus)
        idle = self._idle_positions(now)
        job_id = self.allocation.job.job_id
        findings: list[Finding] = []
        if idle and len(idle) == n:
            findings.extend(self._idle_findings(job_id))
        elif idle and n >= 2 and (n - len(idle)) / n < p.gpu_frac:
            chosen = [gpus[i] for i in idle]
            since = max(g.streak_start or 0.0 for g in chosen)
            findings.append(
                Finding(
                    kind=FindingKind.PARTLY_IDLE,
                    job_id=job_id,
                    gpus=tuple(g.ref for g in chosen),
                    since_ts=since,
                    detail=(
                        f"partly idle: {len(idle)} of {n} GPUs had no use "
                        f"(max util < {p.active_util_pct:g}%) for at least "
                        f"{_fmt_s(p.idle_window)}; active share {(n - len(idle)) / n:.0%} "
                        f"< gpu_frac {p.gpu_frac:.0%}"
                    ),
                    evidence=tuple(self._evidence(g) for g in chosen),
                )
            )
        if len(idle) == n:
            return findings  # idle: under-use and other advice would only repeat it
        if now >= self._next_report_ts:
            self._next_report_ts = now + REPORT_EVERY_BUCKETS * self._bucket_s
            self._report_cache = self._report_findings(now)
        findings.extend(self._report_cache)
        return findings

    def _idle_findings(self, job_id: str) -> list[Finding]:
        p = self.policy
        gpus = self._gpus
        since = max(g.streak_start or 0.0 for g in gpus)
        covered = min(g.covered for g in gpus)
        held = [
            g
            for g in gpus
            if g.s_mem_max is not None
            and g.s_mem_total
            and g.s_mem_max >= g.s_mem_total * p.mem_held_pct / 100.0
        ]
        refs = tuple(g.ref for g in gpus)
        evidence = tuple(self._evidence(g) for g in gpus)
        mem_note = ""
        peak_mem = max((g.s_mem_max or 0 for g in gpus), default=0)
        if peak_mem > 0:
            mem_note = f"; memory held up to {_mib(peak_mem)}"
        out = [
            Finding(
                kind=FindingKind.IDLE,
                job_id=job_id,
                gpus=refs,
                since_ts=since,
                detail=(
                    f"idle: max util < {p.active_util_pct:g}% on "
                    f"{'all ' + str(len(gpus)) + ' GPUs' if len(gpus) > 1 else 'the GPU'} "
                    f"for {_fmt_s(covered)} of reported time "
                    f"(idle_window {_fmt_s(p.idle_window)}){mem_note}"
                ),
                evidence=evidence,
            )
        ]
        if held:
            out.append(
                Finding(
                    kind=FindingKind.ADVICE,
                    job_id=job_id,
                    gpus=tuple(g.ref for g in held),
                    since_ts=since,
                    code=AdviceCode.MEMORY_HELD_IDLE,
                    detail=(
                        "GPU memory held while idle ("
                        + ", ".join(f"{_mib(g.s_mem_max)} of {_mib(g.s_mem_total)}" for g in held)
                        + "): free it, or end the session, so the GPU can serve someone else"
                    ),
                    evidence=tuple(self._evidence(g) for g in held),
                )
            )
        return out

    def _report_findings(self, now: float) -> list[Finding]:
        """Under-use and advice over the last ``underuse_window`` (bucket granularity)."""
        p = self.policy
        grace_end = self._grace_end
        if grace_end is None or now - grace_end < p.underuse_window:
            return []
        first = int(now // self._bucket_s) - BUCKETS + 1
        span = now - first * self._bucket_s
        need = p.min_coverage * span
        gpus = self._gpus
        dur = util = cpu_dur = cpu = 0.0
        for g in gpus:
            g.prune(first)
            if g.r_dur < need:
                return []  # not enough reports in the window: unknown
            dur += g.r_dur
            util += g.r_util
            cpu_dur += g.r_cpu_dur
            cpu += g.r_cpu
        mean = util / dur
        job_id = self.allocation.job.job_id
        refs = tuple(g.ref for g in gpus)
        since = first * self._bucket_s
        out: list[Finding] = []
        evidence = tuple(self._evidence(g) for g in gpus) if gpus else ()
        if mean < p.underuse_pct:
            out.append(
                Finding(
                    kind=FindingKind.UNDERUSED,
                    job_id=job_id,
                    gpus=refs,
                    since_ts=since,
                    detail=(
                        f"mean GPU utilisation {mean:.1f}% over the last "
                        f"{_fmt_s(p.underuse_window)} (< {p.underuse_pct:g}%)"
                    ),
                    evidence=evidence,
                )
            )
            if cpu_dur >= need * len(gpus) and cpu / cpu_dur >= p.cpu_saturated_pct:
                out.append(
                    Finding(
                        kind=FindingKind.ADVICE,
                        job_id=job_id,
                        gpus=refs,
                        since_ts=since,
                        code=AdviceCode.INPUT_BOUND,
                        detail=(
                            f"job CPU at {cpu / cpu_dur:.0f}% while the GPU "
                            f"averages {mean:.1f}%: more data-loader workers or CPUs per GPU"
                        ),
                        evidence=evidence,
                    )
                )
        peaks: list[tuple[float, float]] = []
        any_active = False
        for g in gpus:
            if g.ref.uuid.startswith("MIG-"):
                return out  # already a MIG slice
            peak = max((b[3] for b in g.buckets), default=-1.0)
            total = max((b[4] for b in g.buckets), default=-1.0)
            if peak < 0 or total <= 0:
                return out
            peaks.append((peak, total))
            any_active = any_active or any(b[7] > 0 for b in g.buckets)
        if any_active and all(peak < total * p.mig_mem_pct / 100.0 for peak, total in peaks):
            worst = max(peak / total for peak, total in peaks)
            out.append(
                Finding(
                    kind=FindingKind.ADVICE,
                    job_id=job_id,
                    gpus=refs,
                    since_ts=since,
                    code=AdviceCode.USE_MIG,
                    detail=(
                        f"peak GPU memory {worst:.0%} of the card (< {p.mig_mem_pct:g}%) over "
                        f"the last {_fmt_s(p.underuse_window)}: a MIG slice would do"
                    ),
                    evidence=evidence,
                )
            )
        return out
