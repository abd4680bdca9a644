"""``gpuwarden jobstats`` and ``gpuwarden report`` output: text (80 columns, unicode bars,
optional colour), JSON and CSV, plus the notes of advice a job's figures call for.

Pure functions of :class:`JobStats` / :class:`WasteRow`; the clock and time zone are passed
in so the output can be checked exactly.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

from gpuwarden.common.jobstats import GpuStats, JobStats, WasteRow
from gpuwarden.query.format import wrap_words

WIDTH = 80
BAR_CELLS = 30
GIB = 1 << 30
_EIGHTHS = " ▏▎▍▌▋▊▉"

# thresholds of the notes (percent unless named otherwise)
ACTIVE_PCT = 5.0  # a GPU never above this did not work
LOW_UTIL_PCT = 25.0
MIG_MEM_FRACTION = 0.2  # peak memory below this share of the card: a MIG slice would do
INPUT_BOUND_CPU_PCT = 90.0
LOW_SM_PCT = 30.0
IDLE_TAIL_SHARE = 0.25  # an idle period to the end covering this share of the job

_GREEN, _YELLOW, _RED, _BOLD, _RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[1m", "\x1b[0m"


def bar(pct: float, cells: int = BAR_CELLS) -> str:
    """A bar of ``cells`` characters, filled to ``pct`` percent in eighths of a cell."""
    eighths = round(max(0.0, min(pct, 100.0)) / 100.0 * cells * 8)
    full, part = divmod(eighths, 8)
    out = "█" * full + (_EIGHTHS[part] if part else "")
    return out + "░" * (cells - len(out))


def _paint(text: str, pct: float | None, color: bool) -> str:
    if not color or pct is None:
        return text
    code = _GREEN if pct >= 50 else _YELLOW if pct >= LOW_UTIL_PCT else _RED
    return f"{code}{text}{_RESET}"


def _time(ts: float | None, tz: dt.tzinfo | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def _clock(ts: float, tz: dt.tzinfo | None) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime("%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h:02d}h {m:02d}m"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s" if m else f"{s}s"


def _pct(v: float | None) -> str:
    return "  - " if v is None else f"{v:3.0f}%"


def _gib(b: int | None) -> str:
    return "-" if b is None else f"{b / GIB:.1f}"


def _label(g: GpuStats) -> str:
    return f"{g.node} GPU {g.index}"


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def job_notes(s: JobStats, tz: dt.tzinfo | None = None) -> list[str]:
    """Advice the figures call for, most important first."""
    notes: list[str] = []
    gpus = s.gpus
    if not gpus:
        return notes
    n = len(gpus)
    used = [g for g in gpus if g.util_max_pct is not None and g.util_max_pct >= ACTIVE_PCT]
    util = _mean([g.util_mean_pct for g in gpus])
    if not used:
        notes.append(
            f"This job did not use its GPU{'s' if n > 1 else ''}: utilisation never reached "
            f"{ACTIVE_PCT:g}%. Please check that your code runs on the GPU (e.g. "
            "torch.cuda.is_available()), or run it on CPU-only nodes."
        )
        return notes
    if len(used) < n:
        notes.append(
            f"{n - len(used)} of the {n} GPUs were never used. Ask for {len(used)} "
            f"GPU{'s' if len(used) > 1 else ''} next time (--gres=gpu:{len(used)}), or make "
            "your code use all of them (e.g. DistributedDataParallel)."
        )
    elapsed = s.elapsed_s
    last = s.end if s.end is not None else s.last_seen
    if elapsed and s.start is not None and last is not None:
        tails = [
            p
            for g in gpus
            for p in g.idle_periods[-1:]
            if last - p.end <= 60.0 and p.start > s.start
        ]
        if len(tails) == n:
            since = max(p.start for p in tails)  # when the last GPU stopped
            if last - since >= IDLE_TAIL_SHARE * elapsed:
                notes.append(
                    f"The GPUs were idle after the first {duration(since - s.start)} "
                    f"(from {_clock(since, tz)} to {_clock(last, tz)}). End the job, or "
                    "release the GPUs, when the work is done."
                )
    if util is not None and util < LOW_UTIL_PCT:
        notes.append(
            f"Mean GPU utilisation is low ({util:.0f}%). Larger batches, more data-loader "
            "workers or fewer GPUs may help."
        )
    cpu = s.cpu_util_mean_pct
    if cpu is not None and cpu >= INPUT_BOUND_CPU_PCT and util is not None and util < 50:
        notes.append(
            f"The job's CPUs were busy ({cpu:.0f}%) while the GPUs waited ({util:.0f}%): it "
            "looks input-bound. More CPU cores or data-loader workers, or pre-processed data, "
            "may help."
        )
    peaks = [
        (g.mem_peak_bytes, g.mem_total_bytes)
        for g in gpus
        if g.mem_peak_bytes is not None and g.mem_total_bytes
    ]
    if peaks and all(p < MIG_MEM_FRACTION * t for p, t in peaks):
        peak = max(p for p, _ in peaks)
        total = max(t for _, t in peaks)
        notes.append(
            f"Peak GPU memory was {peak / GIB:.1f} GiB of {total / GIB:.0f} GiB: a smaller "
            "GPU or a MIG slice would do, and is usually easier to get."
        )
    sm = _mean([g.sm_active_mean_pct for g in gpus])
    if sm is not None and sm < LOW_SM_PCT and util is not None and util >= 50:
        notes.append(
            f"The GPU looked busy ({util:.0f}%) but its SMs were active only {sm:.0f}% of the "
            "time: few, small kernels. Profile it (Nsight Systems) and batch more work per "
            "kernel."
        )
    tensor = _mean([g.tensor_active_mean_pct for g in gpus])
    if tensor is not None and tensor < 1.0 and util is not None and util >= LOW_UTIL_PCT:
        notes.append(
            "Tensor cores were not used. Mixed precision (bf16/fp16 autocast) or TF32 may "
            "make training several times faster."
        )
    return notes


def _heading(title: str, color: bool) -> list[str]:
    rule = "=" * WIDTH
    text = title.center(WIDTH).rstrip()
    return [rule, f"{_BOLD}{text}{_RESET}" if color else text, rule]


def format_jobstats(s: JobStats, *, color: bool = False, tz: dt.tzinfo | None = None) -> str:
    """The job as text, at most 80 columns wide."""
    out = _heading("GPU Job Statistics", color)
    nodes = sorted({g.node for g in s.gpus})
    facts = [
        ("Job ID", s.job_id),
        ("User", s.user or "-"),
        ("Account", s.account or "-"),
        ("Partition", s.partition or "-"),
        ("State", s.state or "-"),
        ("Start Time", _time(s.start, tz)),
        ("End Time", _time(s.end, tz) if s.end is not None else "(running)"),
        ("Elapsed Time", duration(s.elapsed_s)),
        ("GPUs", f"{len(s.gpus)} on {len(nodes)} node{'s' if len(nodes) != 1 else ''}"),
    ]
    if s.cpu_util_mean_pct is not None:
        facts.append(("CPU Efficiency", f"{s.cpu_util_mean_pct:.0f}%"))
    for k, v in facts:
        for i, line in enumerate(wrap_words(v, WIDTH - 17)):
            out.append(f"{k + ':' if i == 0 else '':>15}  {line}")
    out.append("")
    out += _heading("Overall Utilization", color)
    util = _mean([g.util_mean_pct for g in s.gpus])
    mems = [
        g.mem_peak_bytes / g.mem_total_bytes * 100
        for g in s.gpus
        if g.mem_peak_bytes is not None and g.mem_total_bytes
    ]
    mem = max(mems) if mems else None
    for name, pct in (("GPU utilization", util), ("GPU memory peak", mem)):
        out.append(f"  {name:<16} {_paint(bar(pct or 0.0), pct, color)} {_pct(pct)}")
    out.append("")
    out += _heading("Detailed Utilization", color)
    label_w = max([len(_label(g)) for g in s.gpus] + [10])
    if label_w > 30:
        label_w = 30
    out.append("  GPU utilization (mean, max):")
    for g in s.gpus:
        m = g.util_mean_pct
        out.append(
            f"    {_label(g)[:label_w]:<{label_w}} {_paint(bar(m or 0.0, 24), m, color)} "
            f"{_pct(m)} {_pct(g.util_max_pct)}"
        )
    out.append("  Peak GPU memory (GiB of the card):")
    for g in s.gpus:
        frac = (
            g.mem_peak_bytes / g.mem_total_bytes * 100
            if g.mem_peak_bytes is not None and g.mem_total_bytes
            else None
        )
        out.append(
            f"    {_label(g)[:label_w]:<{label_w}} {bar(frac or 0.0, 24)} "
            f"{_gib(g.mem_peak_bytes)} / {_gib(g.mem_total_bytes)}"
        )
    out.append("  Mean power, time active:")
    for g in s.gpus:
        power = "-" if g.power_mean_w is None else f"{g.power_mean_w:.0f} W"
        active = (
            f"{g.active_s / g.reported_s * 100:.0f}% of {duration(g.reported_s)} reported"
            if g.reported_s > 0
            else "not reported"
        )
        extra = ""
        if g.sm_active_mean_pct is not None:
            extra += f", SM active {g.sm_active_mean_pct:.0f}%"
        if g.tensor_active_mean_pct is not None:
            extra += f", tensor {g.tensor_active_mean_pct:.0f}%"
        out.append(f"    {_label(g)[:label_w]:<{label_w}} {power:>7}, active {active}{extra}")
    idle = [(g, p) for g in s.gpus for p in g.idle_periods]
    if idle:
        out.append("  Idle periods:")
        for g, p in idle:
            out.append(
                f"    {_label(g)[:label_w]:<{label_w}} {_clock(p.start, tz)} to "
                f"{_clock(p.end, tz)} ({duration(p.end - p.start)})"
            )
        more = sum(g.idle_periods_more for g in s.gpus)
        if more:
            out.append(f"    and {more} more")
    notes = job_notes(s, tz)
    if notes:
        out.append("")
        out += _heading("Notes", color)
        for note in notes:
            lines = wrap_words(note, WIDTH - 4)
            out.append("  * " + lines[0])
            out += ["    " + x for x in lines[1:]]
    if s.decisions:
        out.append("")
        out += _heading("Warnings and Actions", color)
        for r in s.decisions:
            dry = " (dry run)" if r.dry_run and r.outcome != "dry_run" else ""
            head = f"  {_clock(r.ts, tz)} {r.kind} {r.action} [{r.outcome}]{dry}"
            out.append(head)
            out += ["    " + x for x in wrap_words(r.detail, WIDTH - 4)] if r.detail else []
    if s.source == "windows" and s.end is None:
        out.append("")
        out.append("(running: figures so far, from the stored windows)")
    return "\n".join(out)


def jobstats_json(s: JobStats, tz: dt.tzinfo | None = None) -> dict[str, Any]:
    out = s.to_json()
    out["notes"] = job_notes(s, tz)
    return out


# ---- report ----------------------------------------------------------------------------


def format_waste(rows: Sequence[WasteRow], since: float, tz: dt.tzinfo | None = None) -> str:
    """GPU-hours by user, account and partition, one table each. Allocated time without
    reports (an agent down) is neither active nor idle; ``idle %`` is of the reported time."""
    out = [f"GPU-hours since {_time(since, tz)}"]
    for by in ("user", "account", "partition"):
        part = [r for r in rows if r.by == by]
        if not part:
            continue
        key_w = min(max([len(r.key or "-") for r in part] + [len(by)]), 24)
        out.append("")
        out.append(
            f"{by:<{key_w}} {'jobs':>5} {'allocated':>10} {'active':>9} {'idle':>9} "
            f"{'reclaimed':>10} {'idle %':>7}"
        )
        for r in part:
            reported = r.active_h + r.idle_h  # idle % of the reported time: unknown is not idle
            idle_pct = f"{r.idle_h / reported * 100:.0f}%" if reported > 0 else "-"
            out.append(
                f"{(r.key or '-')[:key_w]:<{key_w}} {r.jobs:>5} {r.allocated_h:>10.1f} "
                f"{r.active_h:>9.1f} {r.idle_h:>9.1f} {r.reclaimed_h:>10.1f} {idle_pct:>7}"
            )
    if len(out) == 1:
        out.append("no jobs in this period")
    return "\n".join(out)


def waste_csv(rows: Sequence[WasteRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("by", "key", "jobs", "allocated_h", "active_h", "idle_h", "reclaimed_h"))
    for r in rows:
        w.writerow(
            (
                r.by,
                r.key,
                r.jobs,
                f"{r.allocated_h:.3f}",
                f"{r.active_h:.3f}",
                f"{r.idle_h:.3f}",
                f"{r.reclaimed_h:.3f}",
            )
        )
    return buf.getvalue()
