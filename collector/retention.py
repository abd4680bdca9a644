"""How long the embedded store keeps each resolution, and which one a history query reads.

Raw windows are kept ``raw_s`` (default 7 days), 1-minute roll-ups ``rollup_1m_s``
(default 30 days), 1-hour roll-ups ``rollup_1h_s`` (default 1 year). A history query reads
the finest resolution that still holds the whole range and is not too fine for its length:
raw windows up to ``raw_max_span_s`` (6 h), 1-minute roll-ups up to ``minute_max_span_s``
(2 days: an 8-GPU job's 2 days are 23,000 minute records; a week of them took seconds to
answer), 1-hour roll-ups beyond. A site whose long-term store is elsewhere (InfluxDB,
VictoriaMetrics) sets ``rollups = False`` and a short ``raw_s``: SQLite then holds only
what the detection rules need.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW = 0  # the resolution of raw windows; roll-ups are 60 and 3600 seconds
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    raw_s: float = 7 * DAY
    rollup_1m_s: float = 30 * DAY
    rollup_1h_s: float = 365 * DAY
    raw_max_span_s: float = 6 * 3600.0
    minute_max_span_s: float = 2 * DAY
    rollups: bool = True
    prune_batch: int = 2000  # rows per DELETE transaction: ingest waits at most one batch

    def __post_init__(self) -> None:
        for name in ("raw_s", "rollup_1m_s", "rollup_1h_s", "raw_max_span_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0, got {getattr(self, name)!r}")
        if self.prune_batch < 1:
            raise ValueError(f"prune_batch must be at least 1, got {self.prune_batch}")

    def horizons(self, now: float) -> dict[int, float]:
        """Per resolution, the instant before which its rows are deleted."""
        out = {RAW: now - self.raw_s}
        if self.rollups:
            out[60] = now - self.rollup_1m_s
            out[3600] = now - self.rollup_1h_s
        return out

    def resolution_for(self, start: float, end: float, complete_from: dict[int, float]) -> int:
        """The resolution for data from ``start`` to ``end``; ``complete_from[res]`` is the
        instant from which that resolution still holds everything (nothing newer pruned)."""
        span = max(0.0, end - start)
        if not self.rollups or (start >= complete_from[RAW] and span <= self.raw_max_span_s):
            return RAW
        if start >= complete_from[60] and span <= self.minute_max_span_s:
            return 60
        return 3600
