"""Report-only findings over the last ``underuse_window``: under-use, and the advice that
goes with it (input-bound pipeline, a MIG slice would do), and the training advice that
profiling counters allow (GPU mostly waiting, tensor cores unused, memory-bandwidth bound).
Never enforced. Each piece of advice needs the measurements it rests on to cover
``min_coverage`` of the window: a card without profiling counters gets none of the latter."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpuwarden.collector import wording
from gpuwarden.collector.findings import (
    DRAM,
    PIPES,
    PROFILE_FIELDS,
    SM,
    TENSOR,
    AdviceCode,
    Finding,
    FindingKind,
    GpuEvidence,
    GpuRef,
)
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.usage import BUCKETS, UsageWindow


def usage_findings(
    job_id: str,
    refs: Sequence[GpuRef],
    usages: Sequence[UsageWindow],
    evidence: Callable[[], tuple[GpuEvidence, ...]],
    p: Policy,
    now: float,
    grace_end: float | None,
) -> list[Finding]:
    """Under-use and advice at ``now`` (bucket granularity). Nothing until the job has been
    past its grace period for a whole ``underuse_window``, and nothing when reports cover
    less than ``min_coverage`` of it for any GPU (unknown, never under-used)."""
    if grace_end is None or now - grace_end < p.underuse_window:
        return []
    bucket_s = p.underuse_window / BUCKETS
    first = int(now // bucket_s) - BUCKETS + 1
    need = p.min_coverage * (now - first * bucket_s)
    dur = util = cpu_dur = cpu = 0.0
    for u in usages:
        u.prune(first)
        if u.dur_s < need:
            return []
        dur += u.dur_s
        util += u.util_s
        cpu_dur += u.cpu_dur_s
        cpu += u.cpu_s
    if not usages:
        return []
    mean = util / dur
    gpus = tuple(refs)
    since = first * bucket_s
    ev: list[tuple[GpuEvidence, ...]] = []  # built with the first finding: most checks find none

    def finding(kind: FindingKind, detail: str, code: str = "") -> Finding:
        if not ev:
            ev.append(evidence())
        return Finding(kind, job_id, gpus, since, detail, code=code, evidence=ev[0])

    prof = _profile_means(usages, need * len(usages))
    sm = prof[SM]
    cpu_saturated = cpu_dur >= need * len(usages) and cpu / cpu_dur >= p.cpu_saturated_pct
    waiting = sm is not None and sm < p.sm_waiting_pct
    out: list[Finding] = []
    if mean < p.underuse_pct:
        out.append(finding(FindingKind.UNDERUSED, wording.underused(p, mean)))
    if cpu_saturated and (mean < p.underuse_pct or waiting):
        detail = wording.input_bound(cpu / cpu_dur, mean, sm)
        out.append(finding(FindingKind.ADVICE, detail, AdviceCode.INPUT_BOUND))
    if mean >= p.busy_util_pct:  # training-style use: how well the busy GPU works
        if sm is not None and waiting and not cpu_saturated:
            detail = wording.gpu_waiting(p, mean, sm)
            out.append(finding(FindingKind.ADVICE, detail, AdviceCode.GPU_WAITING))
        tensor = prof[TENSOR]
        if tensor is not None and tensor < p.tensor_unused_pct:
            detail = wording.no_tensor_cores(p, mean, tensor)
            out.append(finding(FindingKind.ADVICE, detail, AdviceCode.NO_TENSOR_CORES))
    dram = prof[DRAM]
    if dram is not None:  # (most cards have no profiling counters)
        pipes = [v for i in PIPES if (v := prof[i]) is not None]
        if pipes and dram >= p.dram_bound_pct and max(pipes) < p.pipes_low_pct:
            detail = wording.memory_bound(p, dram, max(pipes))
            out.append(finding(FindingKind.ADVICE, detail, AdviceCode.MEMORY_BOUND))
    for r in gpus:  # loops, not any() over a generator: this runs every few windows
        if r.uuid.startswith("MIG-"):
            return out  # already a MIG slice
    for u in usages:
        if u.active_buckets:
            break
    else:
        return out  # never active
    worst = 0.0  # the largest share of its card's memory a GPU used at its peak
    for u in usages:  # a loop, not comprehensions: this runs every few windows of every job
        peak_total = u.peak_mem()
        if peak_total is None:
            return out  # unknown for a GPU
        peak, total = peak_total
        if not peak < total * p.mig_mem_pct / 100.0:
            return out  # one GPU uses too much of its card
        if peak / total > worst:
            worst = peak / total
    out.append(finding(FindingKind.ADVICE, wording.use_mig(p, worst), AdviceCode.USE_MIG))
    return out


def _profile_means(usages: Sequence[UsageWindow], need_s: float) -> list[float | None]:
    """Per profiling field, its time-weighted mean over all GPUs; None unless reports with
    it cover ``need_s`` (the coverage the other rules need, summed over the GPUs)."""
    for u in usages:
        if u.profiled:
            break
    else:
        return [None] * len(PROFILE_FIELDS)  # no time with any of them: the sums are 0
    out: list[float | None] = []
    for i in range(len(PROFILE_FIELDS)):
        dur = sum(u.prof_dur_s[i] for u in usages)
        total = sum(u.prof_s[i] for u in usages)
        out.append(total / dur if dur >= need_s and dur > 0 else None)
    return out
