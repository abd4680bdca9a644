"""Findings built from per-GPU detection state: evidence, idle, partly idle, memory held.

:class:`~gpuwarden.collector.rules.AllocationTracker` decides *whether* an allocation is
idle; this module says *what* it found, in words and evidence. The ladder decides on kind,
code and start alone, so the idle findings come as :class:`PendingFinding` whose words and
evidence are built only for an event (most evaluations of an idle job emit nothing).
"""

from __future__ import annotations

import functools
import math

from gpuwarden.collector import wording
from gpuwarden.collector.findings import (
    DRAM,
    SM,
    TENSOR,
    AdviceCode,
    Finding,
    FindingKind,
    GpuEvidence,
    GpuRef,
    PendingFinding,
)
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.streaks import IdleStreak
from gpuwarden.collector.usage import UsageWindow


class GpuState:
    """Detection state of one GPU of an allocation; bounded whatever the stream length."""

    __slots__ = ("last_end", "ref", "streak", "usage")

    def __init__(self, ref: GpuRef) -> None:
        self.ref = ref
        self.last_end: float | None = None
        self.streak = IdleStreak()
        self.usage = UsageWindow()


def gpu_evidence(g: GpuState) -> GpuEvidence:
    """The evidence of one GPU: its current idle streak and its recent usage."""
    streak = g.streak
    return GpuEvidence(
        node=g.ref.node,
        uuid=g.ref.uuid,
        index=g.ref.index,
        since_ts=streak.since,
        last_end_ts=g.last_end,
        covered_s=streak.covered_s,
        windows=streak.windows,
        util_max_pct=streak.util_max_pct if streak.windows else None,
        util_mean_pct=g.usage.mean_util_pct(),
        mem_used_max_bytes=streak.mem_max_bytes,
        mem_total_bytes=streak.mem_total_bytes,
        cpu_util_mean_pct=g.usage.mean_cpu_pct(),
        active_by=streak.bases,
        sm_active_max_pct=streak.sm_max_pct,
        sm_active_mean_pct=g.usage.mean_profile_pct(SM),
        tensor_active_mean_pct=g.usage.mean_profile_pct(TENSOR),
        dram_active_mean_pct=g.usage.mean_profile_pct(DRAM),
    )


def partly_idle(job_id: str, policy: Policy, chosen: list[GpuState], n: int) -> PendingFinding:
    """The partly-idle finding of the ``chosen`` idle GPUs out of ``n``."""
    since = max(g.streak.since or 0.0 for g in chosen)
    return PendingFinding(
        FindingKind.PARTLY_IDLE,
        since,
        functools.partial(_partly_idle, job_id, policy, chosen, since, n),
    )


def _partly_idle(
    job_id: str, policy: Policy, chosen: list[GpuState], since: float, n: int
) -> Finding:
    return Finding(
        kind=FindingKind.PARTLY_IDLE,
        job_id=job_id,
        gpus=tuple(g.ref for g in chosen),
        since_ts=since,
        detail=wording.partly_idle(policy, len(chosen), n),
        evidence=tuple(gpu_evidence(g) for g in chosen),
    )


def idle(job_id: str, policy: Policy, gpus: list[GpuState]) -> list[Finding | PendingFinding]:
    """The idle finding (and memory-held advice) of an allocation whose GPUs are all idle:
    what the ladder decides on (since when, whether memory is held) in one pass over the
    GPUs; the rest when an event needs it (see :class:`_IdleBuild`)."""
    since = 0.0
    held: list[int] = []  # positions of GPUs holding memory
    for i, g in enumerate(gpus):
        streak = g.streak
        since = max(since, streak.since or 0.0)
        used, total = streak.mem_max_bytes, streak.mem_total_bytes
        if used is not None and total and used >= total * policy.mem_held_pct / 100.0:
            held.append(i)
    build = _IdleBuild(job_id, policy, gpus, since, held)
    out: list[Finding | PendingFinding] = [PendingFinding(FindingKind.IDLE, since, build.idle)]
    if held:
        out.append(
            PendingFinding(
                FindingKind.ADVICE, since, build.memory_held, AdviceCode.MEMORY_HELD_IDLE
            )
        )
    return out


class _IdleBuild:
    """Builds the findings of an all-idle evaluation once, for whichever is asked first;
    each GPU's evidence is built once for both."""

    __slots__ = ("built", "gpus", "held", "job_id", "policy", "since")

    def __init__(
        self, job_id: str, policy: Policy, gpus: list[GpuState], since: float, held: list[int]
    ) -> None:
        self.job_id = job_id
        self.policy = policy
        self.gpus = gpus
        self.since = since
        self.held = held
        self.built: tuple[Finding, Finding | None] | None = None

    def _both(self) -> tuple[Finding, Finding | None]:
        if self.built is None:
            self.built = self._build()
        return self.built

    def idle(self) -> Finding:
        return self._both()[0]

    def memory_held(self) -> Finding:
        advice = self._both()[1]
        assert advice is not None  # asked for only when memory is held
        return advice

    def _build(self) -> tuple[Finding, Finding | None]:
        gpus, held, since = self.gpus, self.held, self.since
        covered = math.inf
        peak_mem = 0
        bases: set[str] = set()
        evidence = []
        for g in gpus:
            streak = g.streak
            covered = min(covered, streak.covered_s)
            peak_mem = max(peak_mem, streak.mem_max_bytes or 0)
            bases.update(streak.bases)
            evidence.append(gpu_evidence(g))
        idle = Finding(
            kind=FindingKind.IDLE,
            job_id=self.job_id,
            gpus=tuple(g.ref for g in gpus),
            since_ts=since,
            detail=wording.idle(self.policy, len(gpus), covered, peak_mem, bases),
            evidence=tuple(evidence),
        )
        if not held:
            return idle, None
        advice = Finding(
            kind=FindingKind.ADVICE,
            job_id=self.job_id,
            gpus=tuple(gpus[i].ref for i in held),
            since_ts=since,
            code=AdviceCode.MEMORY_HELD_IDLE,
            detail=wording.memory_held_idle(
                [(gpus[i].streak.mem_max_bytes, gpus[i].streak.mem_total_bytes) for i in held]
            ),
            evidence=tuple(evidence[i] for i in held),
        )
        return idle, advice
