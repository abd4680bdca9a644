"""A job's summary from its windows, and the week's waste from summaries: pure functions.

:func:`summarize` reads a job's stored windows once, oldest first, and keeps per GPU the
time-weighted means, the peaks and the idle periods (runs of windows in which the GPU was
reported but not active, gaps up to ``max_gap_s`` bridged, kept when at least
``min_idle_s`` long). The live collector writes this summary when a job run ends
(:mod:`summaries`); for running jobs a :class:`JobAccumulator` is fed each window as it is
stored, so a summary costs nothing whatever the job's length. :func:`waste_rows` adds
summaries up by user, account and partition for ``gpuwarden report``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gpuwarden.common.jobstats import GpuStats, IdlePeriod, JobStats, WasteRow
from gpuwarden.common.types import AuditRecord, JobInfo, WindowRecord

MAX_IDLE_PERIODS = 20  # per GPU; further ones are counted, not listed
RECLAIMING_ACTIONS = ("release_dask_worker", "requeue", "requeuehold", "cancel")


@dataclass(slots=True)
class _Gpu:
    node: str
    uuid: str
    index: int
    name: str = ""
    reported_s: float = 0.0
    active_s: float = 0.0
    util_s: float = 0.0
    util_dur_s: float = 0.0
    util_max: float | None = None
    mem_peak: int | None = None
    mem_total: int | None = None
    power_s: float = 0.0
    power_dur_s: float = 0.0
    sm_s: float = 0.0
    sm_dur_s: float = 0.0
    tensor_s: float = 0.0
    tensor_dur_s: float = 0.0
    idle_start: float | None = None
    idle_end: float = 0.0
    idle: list[IdlePeriod] = field(default_factory=list)
    idle_more: int = 0

    def close_idle(self, min_idle_s: float) -> None:
        if self.idle_start is not None and self.idle_end - self.idle_start >= min_idle_s:
            if len(self.idle) < MAX_IDLE_PERIODS:
                self.idle.append(IdlePeriod(self.idle_start, self.idle_end))
            else:
                self.idle_more += 1
        self.idle_start = None

    def stats(self, min_idle_s: float) -> GpuStats:
        """The figures so far; an idle streak still open counts as a period to its end."""
        idle = list(self.idle)
        more = self.idle_more
        if self.idle_start is not None and self.idle_end - self.idle_start >= min_idle_s:
            if len(idle) < MAX_IDLE_PERIODS:
                idle.append(IdlePeriod(self.idle_start, self.idle_end))
            else:
                more += 1
        return GpuStats(
            node=self.node,
            uuid=self.uuid,
            index=self.index,
            name=self.name,
            reported_s=self.reported_s,
            active_s=self.active_s,
            util_mean_pct=self.util_s / self.util_dur_s if self.util_dur_s > 0 else None,
            util_max_pct=self.util_max,
            mem_peak_bytes=self.mem_peak,
            mem_total_bytes=self.mem_total,
            power_mean_w=self.power_s / self.power_dur_s if self.power_dur_s > 0 else None,
            sm_active_mean_pct=self.sm_s / self.sm_dur_s if self.sm_dur_s > 0 else None,
            tensor_active_mean_pct=(
                self.tensor_s / self.tensor_dur_s if self.tensor_dur_s > 0 else None
            ),
            idle_periods=tuple(idle),
            idle_periods_more=more,
        )


class JobAccumulator:
    """One job's figures so far, window by window (oldest first; windows of other jobs are
    skipped). :meth:`stats` gives the summary at any time, at no cost in the job's length."""

    def __init__(
        self,
        job_id: str,
        *,
        active_util_pct: float = 5.0,
        min_idle_s: float = 300.0,
        max_gap_s: float = 60.0,
    ) -> None:
        self.job_id = job_id
        self.active_util_pct = active_util_pct
        self.min_idle_s = min_idle_s
        self.max_gap_s = max_gap_s
        self.gpus: dict[tuple[str, str], _Gpu] = {}
        self.job: JobInfo | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.cpu_s = 0.0
        self.cpu_dur_s = 0.0

    def add(self, rec: WindowRecord) -> None:
        w = rec.gpu
        if w.job is None or w.job.job_id != self.job_id:
            return
        job = self.job = w.job
        dur = max(0.0, rec.window_end - rec.window_start)
        if self.first is None or rec.window_start < self.first:
            self.first = rec.window_start
        if self.last is None or rec.window_end > self.last:
            self.last = rec.window_end
        g = self.gpus.get((rec.node, w.uuid))
        if g is None:
            g = self.gpus[(rec.node, w.uuid)] = _Gpu(rec.node, w.uuid, w.index, w.name)
        if job.cpu_util_pct is not None:
            self.cpu_s += job.cpu_util_pct * dur
            self.cpu_dur_s += dur
        min_idle_s = self.min_idle_s
        if "gpu_lost" in w.errors:
            g.close_idle(min_idle_s)
            return  # unknown: neither active nor idle
        g.reported_s += dur
        mean = w.util_mean if w.util_mean is not None else w.util_max
        if mean is not None:
            g.util_s += mean * dur
            g.util_dur_s += dur
        if w.util_max is not None and (g.util_max is None or w.util_max > g.util_max):
            g.util_max = w.util_max
        if w.mem_used_max_bytes is not None and (
            g.mem_peak is None or w.mem_used_max_bytes > g.mem_peak
        ):
            g.mem_peak = w.mem_used_max_bytes
        if w.mem_total_bytes is not None:
            g.mem_total = w.mem_total_bytes
        if w.power_mean_w is not None:
            g.power_s += w.power_mean_w * dur
            g.power_dur_s += dur
        if w.extra_mean:
            sm = w.extra_mean.get("sm_active_pct")
            if sm is not None:
                g.sm_s += sm * dur
                g.sm_dur_s += dur
            tensor = w.extra_mean.get("tensor_active_pct")
            if tensor is not None:
                g.tensor_s += tensor * dur
                g.tensor_dur_s += dur
        if w.util_max is None:
            g.close_idle(min_idle_s)
        elif w.util_max >= self.active_util_pct:
            g.active_s += dur
            g.close_idle(min_idle_s)
        else:
            if g.idle_start is not None and rec.window_start - g.idle_end > self.max_gap_s:
                g.close_idle(min_idle_s)  # a gap in the reports: unknown, not idle
            if g.idle_start is None:
                g.idle_start = rec.window_start
            g.idle_end = max(g.idle_end, rec.window_end)

    def stats(
        self,
        decisions: Sequence[AuditRecord] = (),
        *,
        end: float | None = None,
        source: str = "windows",
    ) -> JobStats | None:
        """The summary so far (None: no window of the job yet); ``end`` set: it ended."""
        job = self.job
        if job is None:
            return None
        return JobStats(
            job_id=self.job_id,
            user=job.user,
            account=job.account,
            partition=job.partition,
            name=job.name,
            state="ended" if end is not None else "running",
            start=float(job.start_time) if job.start_time else self.first,
            end=end,
            last_seen=self.last,
            cpu_util_mean_pct=self.cpu_s / self.cpu_dur_s if self.cpu_dur_s > 0 else None,
            gpus=tuple(
                g.stats(self.min_idle_s)
                for g in sorted(self.gpus.values(), key=lambda g: (g.node, g.index))
            ),
            decisions=tuple(sorted(decisions, key=lambda r: r.ts)),
            source=source,
        )


def summarize(
    job_id: str,
    windows: Iterable[WindowRecord],
    decisions: Sequence[AuditRecord] = (),
    *,
    active_util_pct: float = 5.0,
    min_idle_s: float = 300.0,
    max_gap_s: float = 60.0,
    end: float | None = None,
    source: str = "windows",
) -> JobStats | None:
    """The summary of ``job_id`` from its ``windows`` (oldest first; windows of other jobs
    are skipped); None when there is none. ``end`` set: the job ended then."""
    acc = JobAccumulator(
        job_id, active_util_pct=active_util_pct, min_idle_s=min_idle_s, max_gap_s=max_gap_s
    )
    for rec in windows:
        acc.add(rec)
    return acc.stats(decisions, end=end, source=source)


def reclaimed_s(stats: JobStats, until: float) -> float:
    """GPU-seconds given back early: from each carried-out action to the job's end (or
    ``until`` while it runs), for the action's GPUs."""
    total = 0.0
    stop = stats.end if stats.end is not None else until
    for r in stats.decisions:
        if r.action in RECLAIMING_ACTIONS and r.outcome == "done" and stop > r.ts:
            total += (stop - r.ts) * max(1, len(r.gpus))
    return total


def waste_rows(jobs: Iterable[JobStats], since: float, until: float) -> list[WasteRow]:
    """GPU-hours by user, account and partition between ``since`` and ``until``. A job that
    began before ``since`` counts with the share of its time inside the period."""
    sums: dict[tuple[str, str], list[float]] = {}
    for s in jobs:
        begin = s.start if s.start is not None else s.last_seen
        stop = s.end if s.end is not None else s.last_seen
        if begin is None or stop is None or stop < since or begin > until:
            continue
        span = stop - begin
        share = 1.0 if span <= 0 else (min(stop, until) - max(begin, since)) / span
        reported_h, active_h = s.gpu_hours()
        allocated_h = span * len(s.gpus) / 3600.0
        figures = (
            1.0,
            allocated_h * share,
            active_h * share,
            max(0.0, reported_h - active_h) * share,
            reclaimed_s(s, until) / 3600.0,
        )
        for by, key in (("user", s.user), ("account", s.account), ("partition", s.partition)):
            row = sums.setdefault((by, key), [0.0] * 5)
            for i, v in enumerate(figures):
                row[i] += v
    order = {"user": 0, "account": 1, "partition": 2}
    return [
        WasteRow(by, key, int(v[0]), v[1], v[2], v[3], v[4])
        for (by, key), v in sorted(sums.items(), key=lambda kv: (order[kv[0][0]], -kv[1][3]))
    ]
