"""Plain-text and JSON renderings of the views, for terminals 80 to 120 columns wide.

Nothing here cuts a word: user names, job ids and decision text are wrapped onto more
lines, never truncated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from gpuwarden.common.types import AuditRecord
from gpuwarden.query.views import GLYPHS, ClusterView, JobOnNode, NodeView

MIN_WIDTH = 80
MAX_WIDTH = 120
GIB = 1 << 30

LEGEND = (
    "GPUS:",
    "# busy",
    "~ idle (processes, no work)",
    "! allocated, nothing running",
    ". free",
    "X lost",
    "? unknown",
)


def fit_width(columns: int) -> int:
    """The width to lay a table out in, for a terminal ``columns`` wide."""
    return min(max(columns, MIN_WIDTH), MAX_WIDTH)


def pack(items: Sequence[str], width: int, sep: str = ", ") -> list[str]:
    """Lay ``items`` out in lines of at most ``width`` characters, ``sep`` between them
    (its trailing spaces dropped at a line's end), each item whole unless it alone is wider
    than a line: then it is split, never dropped."""
    width = max(width, 1)
    tail = sep.rstrip()
    joiner = sep[len(tail) :]
    lines: list[str] = []
    line = ""
    for i, item in enumerate(items):
        piece = item + (tail if i < len(items) - 1 else "")
        if line and len(line) + len(joiner) + len(piece) <= width:
            line += joiner + piece
            continue
        if line:
            lines.append(line)
        while len(piece) > width:
            lines.append(piece[:width])
            piece = piece[width:]
        line = piece
    lines.append(line)
    return lines


def wrap_words(text: str, width: int) -> list[str]:
    """Words of ``text`` in lines of at most ``width`` characters."""
    return pack(text.split(), width, sep=" ")


def age(seconds: float | None) -> str:
    """``4s``, ``12m``, ``3h``, ``2d``; ``-`` for never."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _util(node: NodeView) -> str:
    values = [g.util_max_pct for g in node.gpus if g.util_max_pct is not None]
    return f"{sum(values) / len(values):.0f}%" if values else "-"


def _mem(node: NodeView) -> str:
    used = [g.mem_used_bytes for g in node.gpus if g.mem_used_bytes is not None]
    total = [g.mem_total_bytes for g in node.gpus if g.mem_total_bytes is not None]
    if not used and not total:
        return "-"
    u = f"{sum(used) / GIB:.0f}" if used else "?"
    t = f"{sum(total) / GIB:.0f}" if total else "?"
    return f"{u}/{t}"


def _job_item(job: JobOnNode, idle_jobs: set[str]) -> str:
    text = f"{job.job_id} {job.user}" if job.user else job.job_id
    if len(job.gpus) > 1:
        text += f" x{len(job.gpus)}"
    if job.job_id in idle_jobs:
        text += " (idle)"
    return text


def format_status(
    view: ClusterView, *, width: int = 100, idle_jobs: Iterable[str] | None = None
) -> str:
    """The cluster as a table: one row per node (more when its jobs or GPUs wrap), the
    totals, a legend, then notes (Slurm errors, GPU errors)."""
    idle = set(idle_jobs) if idle_jobs is not None else set()
    map_w = max(4, min(16, max((len(n.gpus) for n in view.nodes), default=0)))
    rows = [
        (
            n.node,
            "yes" if n.connected else "no",
            n.slurm,
            age(n.seen_ago_s),
            "".join(GLYPHS[g.use] for g in n.gpus),
            _util(n),
            _mem(n),
        )
        for n in view.nodes
    ]
    header = ("NODE", "CONN", "SLURM", "SEEN", "GPUS", "UTIL", "MEM GiB")
    widths = [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(4)]
    widths += [map_w]
    widths += [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in (5, 6)]
    jobs_col = sum(widths) + len(widths)
    jobs_w = max(width - jobs_col, 20)

    def line(cells: Sequence[str], jobs: str) -> str:
        left = " ".join(
            c.ljust(w) if i != 5 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return f"{left} {jobs}".rstrip()

    out = [line(header, "JOBS (id user, xGPUs)")]
    notes: list[str] = []
    for n, r in zip(view.nodes, rows, strict=True):
        jobs = pack([_job_item(j, idle) for j in n.jobs], jobs_w) if n.jobs else ["-"]
        glyphs = r[4]
        chunks = [glyphs[i : i + map_w] for i in range(0, len(glyphs), map_w)] or [""]
        for i in range(max(len(jobs), len(chunks))):
            chunk = chunks[i] if i < len(chunks) else ""
            cells = (*r[:4], chunk, *r[5:]) if i == 0 else ("", "", "", "", chunk, "", "")
            out.append(line(cells, jobs[i] if i < len(jobs) else ""))
        if n.slurm_error:
            notes.append(f"{n.node}: slurm unavailable: {n.slurm_error}")
        for g in n.gpus:
            if g.errors:
                notes.append(f"{n.node} GPU {g.index}: {', '.join(g.errors)}")
    c = view.counts
    totals = [
        f"nodes {len(view.nodes)}",
        f"GPUs {c.gpus}",
        f"busy {c.busy}",
        f"idle {c.idle}",
        f"allocated-but-empty {c.empty}",
        f"free {c.free}",
        f"lost {c.lost}",
        f"unknown {c.unknown}",
        f"windows stored {view.windows_stored}",
    ]
    if idle_jobs is not None:
        totals.append(f"idle allocations {len(idle)}")
    out += pack(totals, width, sep="  ")
    out += pack(LEGEND, width, sep="  ")
    for note in notes:
        first, *rest = wrap_words(note, width - 2)
        out += [first, *("  " + r for r in rest)]
    return "\n".join(out)


def cluster_json(view: ClusterView) -> dict[str, Any]:
    """The view as JSON-ready data (``gpuwarden status --json``)."""
    return dataclasses.asdict(view)


def _when(ts: float, fmt: str, tz: dt.tzinfo | None) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime(fmt)


def format_audit_line(record: AuditRecord, *, tz: dt.tzinfo | None = None) -> str:
    """One record on one line, nothing cut (``gpuwarden audit``)."""
    when = _when(record.ts, "%Y-%m-%d %H:%M:%S", tz)
    return (
        f"{when} job {record.job_id} {record.kind} {record.action} [{record.outcome}] "
        f"{record.detail} (by {record.actor})"
    )


def format_decisions(
    records: Sequence[AuditRecord], *, width: int = 100, tz: dt.tzinfo | None = None
) -> list[str]:
    """The latest decisions, newest first, the detail wrapped under its own column."""
    out = ["latest decisions (newest first):"] if records else []
    for r in records:
        prefix = f"  {_when(r.ts, '%H:%M:%S', tz)} job {r.job_id:<8} {r.kind:<10} {r.action:<8} "
        indent = len(prefix) if width - len(prefix) >= 30 else 6
        detail = wrap_words(r.detail, width - indent) if r.detail else [""]
        if indent == len(prefix):
            out.append((prefix + detail[0]).rstrip())
            detail = detail[1:]
        else:
            out.append(prefix.rstrip())
        out += [" " * indent + d for d in detail]
    return out
