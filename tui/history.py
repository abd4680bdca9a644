"""A job's stored windows as per-GPU series for sparklines, and its summary (no Textual)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gpuwarden.common.types import WindowRecord

MAX_POINTS = 120


@dataclass(slots=True)
class GpuSeries:
    node: str
    uuid: str
    index: int
    util_pct: list[float] = field(default_factory=list)
    mem_pct: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    first_ts: float = 0.0
    last_ts: float = 0.0
    summary: str = ""  # over every window, before squeezing


def squeeze(values: Sequence[float], points: int = MAX_POINTS) -> list[float]:
    """At most ``points`` values, each the largest of its stretch (a short spike stays)."""
    if len(values) <= points:
        return list(values)
    step = len(values) / points
    return [
        max(values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)])
        for i in range(points)
    ]


def job_series(windows: Iterable[WindowRecord], points: int = MAX_POINTS) -> list[GpuSeries]:
    """One series per GPU (node, UUID order), oldest first; a missing value is skipped."""
    by_gpu: dict[tuple[str, str], GpuSeries] = {}
    for w in windows:
        g = w.gpu
        s = by_gpu.get((w.node, g.uuid))
        if s is None:
            s = by_gpu[(w.node, g.uuid)] = GpuSeries(w.node, g.uuid, g.index, first_ts=w.window_end)
        s.last_ts = w.window_end
        if g.util_max is not None:
            s.util_pct.append(g.util_max)
        if g.mem_used_max_bytes is not None and g.mem_total_bytes:
            s.mem_pct.append(100.0 * g.mem_used_max_bytes / g.mem_total_bytes)
        if g.power_mean_w is not None:
            s.power_w.append(g.power_mean_w)
    out = [by_gpu[k] for k in sorted(by_gpu)]
    for s in out:
        s.summary = summary(s.util_pct, s.mem_pct, s.power_w)
        s.util_pct, s.mem_pct, s.power_w = (
            squeeze(s.util_pct, points),
            squeeze(s.mem_pct, points),
            squeeze(s.power_w, points),
        )
    return out


def summary(util_pct: Sequence[float], mem_pct: Sequence[float], power_w: Sequence[float]) -> str:
    """``util mean 3% max 40%, memory peak 12%, power mean 61 W``."""
    parts = []
    if util_pct:
        parts.append(f"util mean {sum(util_pct) / len(util_pct):.0f}% max {max(util_pct):.0f}%")
    if mem_pct:
        parts.append(f"memory peak {max(mem_pct):.0f}%")
    if power_w:
        parts.append(f"power mean {sum(power_w) / len(power_w):.0f} W")
    return ", ".join(parts) or "no measurements"
