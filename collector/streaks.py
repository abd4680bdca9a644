"""Idle streaks: per GPU, the current run of report windows none of which was active.

See :mod:`rules` for the coverage rule (only reported time after the grace period counts;
a long gap or an active window ends the streak).
"""

from __future__ import annotations


class IdleStreak:
    """The current idle streak of one GPU, with what the evidence of a finding needs."""

    __slots__ = (
        "bases",
        "closed_idle_s",
        "covered_s",
        "mem_max_bytes",
        "mem_total_bytes",
        "since",
        "sm_max_pct",
        "util_max_pct",
        "windows",
    )

    def __init__(self) -> None:
        self.since: float | None = None  # start of the counted time; None: no streak
        self.covered_s = 0.0
        self.windows = 0
        self.util_max_pct = 0.0
        self.mem_max_bytes: int | None = None
        self.mem_total_bytes: int | None = None
        self.closed_idle_s = 0.0  # time of earlier streaks that reached idle_window
        self.sm_max_pct: float | None = None  # max SM activity of the streak's windows
        self.bases: tuple[str, ...] = ()  # what decided that its windows were idle

    def extend(
        self,
        counted_from: float,
        end: float,
        util_max_pct: float,
        mem_used_bytes: int | None,
        mem_total_bytes: int | None,
        sm_max_pct: float | None = None,
        basis: str = "",
    ) -> bool:
        """Count ``counted_from``..``end`` of an idle window. True when what an idle finding
        is decided on changed: the streak started, or its memory figures moved."""
        changed = False
        if self.since is None:
            self.since = counted_from
            changed = True
        self.covered_s += end - counted_from
        self.windows += 1
        if util_max_pct > self.util_max_pct:
            self.util_max_pct = util_max_pct
        if mem_used_bytes is not None and (
            self.mem_max_bytes is None or mem_used_bytes > self.mem_max_bytes
        ):
            self.mem_max_bytes = mem_used_bytes
            changed = True
        if mem_total_bytes is not None:
            if mem_total_bytes != self.mem_total_bytes:
                changed = True
            self.mem_total_bytes = mem_total_bytes
        if sm_max_pct is not None and (self.sm_max_pct is None or sm_max_pct > self.sm_max_pct):
            self.sm_max_pct = sm_max_pct
        if basis and basis not in self.bases:
            self.bases = (*self.bases, basis)
        return changed

    def end(self, idle_window_s: float) -> None:
        """The streak is over (activity, or a gap longer than max_gap)."""
        if self.since is None:
            return  # no streak: every field is as it was reset (extend sets since first)
        if self.covered_s >= idle_window_s:
            self.closed_idle_s += self.covered_s
        self.since = None
        self.covered_s = 0.0
        self.windows = 0
        self.util_max_pct = 0.0
        self.mem_max_bytes = None
        self.mem_total_bytes = None
        self.sm_max_pct = None
        self.bases = ()

    def is_idle(self, idle_window_s: float) -> bool:
        return self.since is not None and self.covered_s >= idle_window_s
