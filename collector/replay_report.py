"""``gpuwarden replay``'s table: the events, then a summary a sysadmin can act on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from gpuwarden.collector.ladder import Status
from gpuwarden.collector.replay import ReplayEvent, ReplaySummary


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_table(events: Sequence[ReplayEvent], summary: ReplaySummary) -> str:
    rows = [f"{'TIME (UTC)':19}  {'JOB':>10}  {'KIND':9}  {'ACTION':19}  {'GPUS':>4}  DETAIL"]
    for e in events:
        rows.append(
            f"{_iso(e.ts):19}  {e.job_id:>10}  {e.kind:9}  {e.action:19}  "
            f"{len(e.gpus):>4}  {e.detail}"
        )
    if not events:
        rows.append("(no findings)")
    kinds = Counter(e.kind for e in events)
    taken = Counter(e.ladder_action for e in events if e.status == Status.DONE.value)
    would = Counter(e.ladder_action for e in events if e.status == Status.DRY_RUN.value)
    warns = sum(1 for e in events if e.status == Status.WARNED.value)
    span = ""
    if summary.first_ts is not None and summary.last_ts is not None:
        span = f" from {_iso(summary.first_ts)} to {_iso(summary.last_ts)} UTC"
    pct = 100.0 * summary.idle_gpu_s / summary.observed_gpu_s if summary.observed_gpu_s else 0.0
    rows += [
        "",
        f"Summary: {summary.jobs} jobs, {summary.samples} samples{span}"
        + (
            f", {summary.unattributed_samples} samples of no job"
            if summary.unattributed_samples
            else ""
        )
        + (f", {summary.exempt_jobs} exempt jobs" if summary.exempt_jobs else ""),
        f"  GPU-hours observed: {summary.observed_gpu_s / 3600:.1f}; idle "
        f"(>= idle_window, reported time): {summary.idle_gpu_s / 3600:.1f} ({pct:.0f} %)",
        "  findings: " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"),
        f"  warnings: {warns}",
    ]
    if summary.enforce:
        acts = ", ".join(f"{a} {n}" for a, n in sorted(taken.items())) or "none"
        rows.append(f"  actions taken: {acts}")
        rows.append(f"  GPU-hours reclaimed: {summary.reclaimed_gpu_s / 3600:.1f}")
    else:
        acts = ", ".join(f"{a} {n}" for a, n in sorted(would.items())) or "none"
        rows.append(f"  dry run (enforcement off): would have taken: {acts}")
        rows.append(
            f"  GPU-hours that would have been reclaimed: {summary.reclaimed_gpu_s / 3600:.1f}"
        )
    return "\n".join(rows) + "\n"
