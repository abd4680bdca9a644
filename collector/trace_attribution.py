"""Replay traces: which job each sample line belongs to, and the sample as the collector
would have it (an engine observation, or the window an agent would have reported).

A sample is attributed as the node agent attributes a GPU: to the job holding the GPU at the
sample's time, known from the trace's job lines; a GPU of no job is reported free."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gpuwarden.collector.findings import profile_of
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.rules import Allocation
from gpuwarden.collector.runs import Observation
from gpuwarden.collector.trace import Sample, SampleValues
from gpuwarden.common.types import GpuWindow, JobInfo, ProcessInfo, WindowRecord

# a NamedTuple from a tuple of all its fields, without the Python-level __new__ it generates
_new_observation = tuple.__new__


@dataclass(slots=True)
class _Claim:
    """A job line's claim on one GPU: from ``start`` to ``end`` (None: still running)."""

    start: float
    end: float | None
    job: JobInfo
    window_s: float


class TraceAttribution:
    """Turns sample lines into the stored windows a collector would have: each attributed
    to the job that holds its GPU at its time (the newest job line whose start..end covers
    it: after the start, up to the end, since a sample ends a window), as the node agent
    attributes GPUs; a GPU of no job is reported free."""

    def __init__(self, policies: PolicySet) -> None:
        self.policies = policies
        self.default_window_s = policies.default.window
        self._claims: dict[tuple[str, str], list[_Claim]] = {}
        # per GPU: (start, until, claim) of the claim found last; it holds the GPU at any
        # time in start < ts <= until (its end, or the start of a newer claim). Claim None:
        # no claim holds the GPU then (from the end of the last one to the next start).
        self._last: dict[tuple[str, str], tuple[float, float, _Claim | None]] = {}

    def add_job(self, allocation: Allocation, start: float) -> None:
        window_s = self.policies.for_job(allocation.job).window
        for g in allocation.gpus:
            claim = _Claim(start, allocation.end_ts, allocation.job, window_s)
            self._claims.setdefault((g.node, g.uuid), []).append(claim)
            self._last.pop((g.node, g.uuid), None)

    def holder(self, s: Sample, horizon: float = -math.inf) -> _Claim | None:
        """The claim on the sample's GPU at its time; claims that ended before ``horizon``
        are forgotten (a replay passes its newest time less twice the reorder window)."""
        where = (s.node, s.uuid)
        ts = s.ts
        cached = self._last.get(where)
        if cached is not None and cached[0] < ts <= cached[1]:
            return cached[2]
        return self._find(where, ts, horizon)

    def _find(self, where: tuple[str, str], ts: float, horizon: float) -> _Claim | None:
        """:meth:`holder` when the claim found last does not hold the GPU at ``ts``."""
        claims = self._claims.get(where)
        if not claims:
            return None
        found = None
        for c in claims:
            covers = c.start < ts and (c.end is None or ts <= c.end)
            if covers and (found is None or c.start >= found.start):
                found = c
        if found is None:  # a free GPU (between jobs): its samples need not search again
            # every claim that started before ts has ended before it (none covers ts)
            ended = [c.end for c in claims if c.start < ts and c.end is not None]
            free_from = max(ended, default=-math.inf)
            free_until = min([c.start for c in claims if c.start >= ts], default=math.inf)
            self._last[where] = (free_from, free_until, None)
        if len(claims) > 4:
            claims[:] = [c for c in claims if c.end is None or c.end >= horizon]
        if found is not None:
            until = min([c.start for c in claims if c.start > found.start], default=math.inf)
            if found.end is not None and found.end < until:
                until = found.end
            self._last[where] = (found.start, until, found)
        return found

    def observation(self, s: SampleValues, newest_ts: float = -math.inf) -> Observation:
        """The sample as the engine reads a stored window of it (replay's fast path)."""
        # one unpacking instead of a field look-up each: this runs for every sample line
        ts, node, uuid, index, umax, umean, used, total, _, cpu, window_s, mean, peak, procs = s
        # holder(), its common case inlined: the claim found last still holds the GPU
        where = (node, uuid)
        cached = self._last.get(where)
        if cached is not None and cached[0] < ts <= cached[1]:
            claim: _Claim | None = cached[2]
        else:
            claim = self._find(where, ts, newest_ts - 2 * self.default_window_s)
        job = None
        if claim is None:
            if window_s is None:
                window_s = self.default_window_s
        else:
            job = claim.job
            if cpu is not None:
                job = dataclasses.replace(job, cpu_util_pct=cpu)
            if window_s is None:
                window_s = claim.window_s
        return _new_observation(
            Observation,
            (
                node,
                uuid,
                index,
                job,
                ts - window_s,
                ts,
                umax,
                umean,
                used,
                total,
                True,
                None if peak is None else peak.get("sm_active_pct"),
                None if mean is None else profile_of(mean),
                procs,
                uuid[:4] == "MIG-",
            ),
        )

    def record(self, s: Sample, newest_ts: float = -math.inf) -> WindowRecord:
        """The sample as the window an agent would have reported (to feed a collector)."""
        o = self.observation(s, newest_ts)
        gpu = GpuWindow(
            uuid=o.uuid,
            index=o.gpu_index,
            util_mean=o.util_mean_pct,
            util_max=o.util_max_pct,
            mem_used_max_bytes=o.mem_used_bytes,
            mem_total_bytes=o.mem_total_bytes,
            power_mean_w=s.power_w,
            job=o.job,
            allocated=o.job is not None,
            # a process count makes the window one an agent sampled (see engine.observe)
            samples=0 if s.processes is None else 1,
            processes=tuple(ProcessInfo(pid=i + 1) for i in range(s.processes or 0)),
            extra_mean=s.extra_mean or {},
            extra_max=s.extra_max or {},
        )
        return WindowRecord(o.node, o.start, o.end, gpu)
