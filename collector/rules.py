"""Detection rules: a pure engine from (report windows, policy, now) to findings.

No I/O and no clock: the caller passes ``now``. The collector and ``gpuwarden replay`` feed
windows to one :class:`AllocationTracker` per allocation (a job and its GPUs) and call
:meth:`AllocationTracker.evaluate`, which is cheap (a few comparisons per GPU) and keeps
bounded state: one idle streak per GPU plus 30 buckets covering ``underuse_window``. The
engine calls :meth:`AllocationTracker.pending` instead, whose idle findings get their words
and evidence (:mod:`idle_findings`) only for the ladder's events.

Coverage rule (missing data is unknown, never idle; docs/architecture.md). Per GPU, an *idle
streak* is a run of report windows none of which is active. Only the part of a window that lies
after the job's start + ``grace_period`` and after the previous window's end counts (overlaps
are not counted twice). The streak's *covered time* is the sum of those parts: time with no
report adds nothing. A gap between two windows longer than ``max_gap`` ends the streak (the GPU
may have been busy while nobody was looking), and so does any active window, or an active window
that arrives late. A window whose utilisation is unknown counts as a gap. The allocation is
**idle** when every GPU has an idle streak whose covered time is at least ``idle_window`` and
whose newest window ended at most ``max_gap`` before ``now`` (fresh data).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from gpuwarden.collector import idle_findings
from gpuwarden.collector.activity import Basis, window_activity
from gpuwarden.collector.advice import usage_findings
from gpuwarden.collector.findings import (
    MIB,
    AdviceCode,
    Allocation,
    Finding,
    FindingKind,
    GpuEvidence,
    GpuRef,
    ObservedWindow,
    PendingFinding,
    Profile,
)
from gpuwarden.collector.idle_findings import GpuState, gpu_evidence
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.usage import BUCKETS

__all__ = [
    "MIB",
    "AdviceCode",
    "Allocation",
    "AllocationTracker",
    "Finding",
    "FindingKind",
    "GpuEvidence",
    "GpuRef",
    "ObservedWindow",
    "PendingFinding",
]

REPORT_EVERY_BUCKETS = 5  # under-use and advice are re-checked every underuse_window / 6


def _activity_rule(policy: Policy) -> tuple[bool, Basis]:
    """(whether SM activity decides where a window has it, the basis of a window decided by
    its utilisation): :func:`window_activity`'s first two cases, for its inlined form."""
    by_sm = policy.active_sm_pct > 0
    return by_sm, Basis.UTIL_NO_SM if by_sm else Basis.UTIL


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
        self._gpus = [GpuState(ref) for ref in allocation.gpus]
        # (node, GPU UUID) -> the GPU's number in the allocation (see position())
        self.positions = {(g.node, g.uuid): i for i, g in enumerate(allocation.gpus)}
        started = allocation.started_ts
        self._grace_end: float | None = None if started is None else started + policy.grace_period
        self._bucket_s = policy.underuse_window / BUCKETS
        self._next_report_ts = -math.inf
        self._by_sm, self._util_basis = _activity_rule(policy)
        self._report_cache: list[Finding] = []
        # pending() finds nothing before this time (see there); -inf: look. Read by the
        # engine, which then need not ask.
        self.quiet_until = -math.inf
        # Counts the changes of what all-idle findings are decided on (a streak started or
        # ended, memory figures, the GPUs, the policy): see idle_mark().
        self._idle_gen = 0
        self.windows_seen = 0
        self.observed_s = 0.0

    def set_policy(self, policy: Policy) -> None:
        """A reloaded policy, from the next evaluation on. ``underuse_window`` sizes the
        under-use buckets already filled: a change of it applies to allocations that start
        after the reload."""
        if policy.underuse_window != self.policy.underuse_window:
            policy = dataclasses.replace(policy, underuse_window=self.policy.underuse_window)
        self.policy = policy
        self._by_sm, self._util_basis = _activity_rule(policy)
        self.quiet_until = -math.inf
        self._idle_gen += 1
        a = self.allocation
        self.exempt_reason = policy.exemption(a.job, sorted({g.node for g in a.gpus}))
        started = a.started_ts
        self._grace_end = None if started is None else started + policy.grace_period

    def position(self, node: str, uuid: str) -> int | None:
        """Index of a GPU in the allocation, or None when it is not one of its GPUs."""
        return self.positions.get((node, uuid))

    def add(self, w: ObservedWindow) -> bool:
        pos = self.positions.get((w.node, w.uuid))
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
            sm_active_max=w.sm_active_max_pct,
            profile=w.profile,
            processes=w.processes,
            mig=w.mig,
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
        sm_active_max: float | None = None,
        profile: Profile | None = None,
        processes: int | None = None,
        mig: bool = False,
    ) -> None:
        """Add one window of GPU number ``pos`` (see :meth:`position`)."""
        p = self.policy
        if util_max is not None and (sm_active_max is None or not self._by_sm):
            # window_activity's utilisation case, inlined: by far the most common one
            active = util_max >= p.active_util_pct
            basis = self._util_basis
        else:
            known, basis = window_activity(
                p, util_max, sm_active_max, mig, processes, mem_used_bytes, mem_total_bytes
            )
            if known is None:  # unknown activity: a gap, never idle
                return
            active = known
        g = self._gpus[pos]
        streak = g.streak
        start = end - duration_s
        grace_end = self._grace_end
        if grace_end is None:  # start unknown: grace runs from the first window
            grace_end = self._grace_end = start + p.grace_period
        last = g.last_end
        if last is not None and end <= last:  # late or duplicate window
            if active and streak.since is not None and end > streak.since:
                streak.end(p.idle_window)
                self._idle_gen += 1
            return
        self.windows_seen += 1
        lo = start if last is None or start >= last else last
        counted_from = lo if lo >= grace_end else grace_end  # only time after grace counts
        if active:
            if streak.since is not None:
                streak.end(p.idle_window)
                self._idle_gen += 1
        else:
            self.quiet_until = -math.inf  # the streak grows: it may be idle now
            if streak.since is not None and last is not None and start - last > p.max_gap:
                streak.end(p.idle_window)  # a long gap: unknown, so the streak starts anew
                self._idle_gen += 1
            if end > counted_from and streak.extend(
                counted_from,
                end,
                0.0 if util_max is None else util_max,
                mem_used_bytes,
                mem_total_bytes,
                sm_active_max,
                basis,
            ):
                self._idle_gen += 1
        g.last_end = end
        if end <= counted_from:
            return
        dur = end - counted_from
        self.observed_s += dur
        # a missing mean: the max (an upper bound); no utilisation at all (a MIG slice): 0
        # when it was found idle, else 100 (so under-use is never over-reported)
        if util_mean is not None:
            mean = util_mean
        elif util_max is not None:
            mean = util_max
        else:
            mean = 100.0 if active else 0.0
        g.usage.add(
            int(end // self._bucket_s),
            dur,
            mean,
            mem_used_bytes,
            mem_total_bytes,
            cpu_util_pct,
            active,
            profile,
        )

    # ------------------------------------------------------------------ evaluation

    def idle_gpu_s(self) -> float:
        """GPU-seconds spent in idle streaks that reached ``idle_window`` (for summaries)."""
        w = self.policy.idle_window
        total = 0.0
        for g in self._gpus:
            total += g.streak.closed_idle_s
            if g.streak.is_idle(w):
                total += g.streak.covered_s
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
        wanted = [self.positions.get((g.node, g.uuid)) for g in gpus]
        return bool(wanted) and all(p is not None and p in idle for p in wanted)

    def idle_since(self, node: str, uuid: str) -> float | None:
        """Start of the GPU's current idle streak (None: no streak, or not one of its GPUs)."""
        pos = self.positions.get((node, uuid))
        return None if pos is None else self._gpus[pos].streak.since

    def add_gpu(self, ref: GpuRef) -> int:
        """Add a GPU the allocation turned out to hold (live: learnt from its windows)."""
        pos = self.positions.get((ref.node, ref.uuid))
        if pos is not None:
            return pos
        self.allocation = dataclasses.replace(self.allocation, gpus=(*self.allocation.gpus, ref))
        self._gpus.append(GpuState(ref))  # not idle yet: pending() stays quiet
        self._idle_gen += 1
        pos = self.positions[(ref.node, ref.uuid)] = len(self._gpus) - 1
        return pos

    def idle_mark(self) -> int:
        """Taken right after :meth:`pending` gave the all-idle findings: a mark for
        :meth:`same_idle`."""
        return self._idle_gen

    def same_idle(self, mark: int, now: float) -> bool:
        """Whether :meth:`pending` (``now``) would give the same all-idle findings (kinds,
        codes and start; not words) as when ``mark`` was taken. Nothing they are decided on
        has changed when the change count is the same: every streak is the one it was, its
        covered time has only grown, its memory figures are as they were. What is left is
        that every GPU's newest window is still fresh."""
        if mark != self._idle_gen:
            return False
        max_gap = self.policy.max_gap
        for g in self._gpus:
            last = g.last_end
            if last is None or now - last > max_gap:
                return False
        return True

    def _idle_positions(self, now: float) -> list[int]:
        """GPUs whose idle streak is long enough (:meth:`IdleStreak.is_idle`, inlined: this
        runs at every evaluation) and whose newest window is fresh."""
        p = self.policy
        idle_window = p.idle_window
        max_gap = p.max_gap
        out = []
        for i, g in enumerate(self._gpus):
            streak = g.streak
            last = g.last_end
            if (
                streak.since is not None
                and streak.covered_s >= idle_window
                and last is not None
                and now - last <= max_gap
            ):
                out.append(i)
        return out

    def evaluate(self, now: float) -> list[Finding]:
        """Findings of this allocation at ``now``; an exempt allocation has none."""
        return [f.finding() for f in self.pending(now)]

    def pending(self, now: float) -> Sequence[Finding | PendingFinding]:
        """:meth:`evaluate`, with the words and evidence of idle findings built only when
        asked for, before the next window (see :class:`PendingFinding`).

        When it finds nothing, nothing can be found before the next under-use check unless
        a GPU gets an idle window: without one, time only ends idle streaks (their data grows
        old) and never starts them. Until then it answers at once."""
        if self.exempt_reason is not None or now < self.quiet_until:
            return []
        p = self.policy
        gpus = self._gpus
        n = len(gpus)
        idle = self._idle_positions(now)
        if idle and len(idle) == n:
            return idle_findings.idle(self.allocation.job.job_id, p, gpus)
        findings: list[Finding | PendingFinding] = []
        if idle and n >= 2 and (n - len(idle)) / n < p.gpu_frac:
            chosen = [gpus[i] for i in idle]
            findings.append(idle_findings.partly_idle(self.allocation.job.job_id, p, chosen, n))
        if not n:
            return findings
        if now >= self._next_report_ts:
            self._next_report_ts = now + REPORT_EVERY_BUCKETS * self._bucket_s
            self._report_cache = self._report_findings(now)
        if findings:
            findings.extend(self._report_cache)
            return findings
        cache = self._report_cache
        if not cache:
            self.quiet_until = self._next_report_ts
        # The list itself while it lasts (not to be changed): the engine sees that the
        # ladder has already taken these report-only findings (Engine._evaluate).
        return cache

    def _report_findings(self, now: float) -> list[Finding]:
        gpus = self._gpus
        return usage_findings(
            self.allocation.job.job_id,
            [g.ref for g in gpus],
            [g.usage for g in gpus],
            lambda: tuple(gpu_evidence(g) for g in gpus),
            self.policy,
            now,
            self._grace_end,
        )
