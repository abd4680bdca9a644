"""Report-only findings over the last ``underuse_window``: under-use, and the advice that
goes with it (input-bound pipeline, a MIG slice would do). Never enforced."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpuwarden.collector import wording
from gpuwarden.collector.findings import AdviceCode, Finding, FindingKind, GpuEvidence, GpuRef
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
    ev = evidence()

    def finding(kind: FindingKind, detail: str, code: str = "") -> Finding:
        return Finding(kind, job_id, gpus, since, detail, code=code, evidence=ev)

    out: list[Finding] = []
    if mean < p.underuse_pct:
        out.append(finding(FindingKind.UNDERUSED, wording.underused(p, mean)))
        if cpu_dur >= need * len(usages) and cpu / cpu_dur >= p.cpu_saturated_pct:
            detail = wording.input_bound(cpu / cpu_dur, mean)
            out.append(finding(FindingKind.ADVICE, detail, AdviceCode.INPUT_BOUND))
    if any(r.uuid.startswith("MIG-") for r in gpus):
        return out  # already a MIG slice
    peaks = [u.peak_mem() for u in usages]
    known = [x for x in peaks if x is not None]
    if len(known) < len(peaks) or not any(u.any_active() for u in usages):
        return out
    if all(peak < total * p.mig_mem_pct / 100.0 for peak, total in known):
        worst = max(peak / total for peak, total in known)
        out.append(finding(FindingKind.ADVICE, wording.use_mig(p, worst), AdviceCode.USE_MIG))
    return out
