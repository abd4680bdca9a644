"""Whether one report window of one GPU was active, and on what evidence.

NVML's utilisation is a duty cycle (a GPU running one tiny kernel at a time reads 100 %);
profiling counters (GPM, DCGM) give SM activity. The policy key ``active_sm_pct`` (0 = off)
makes SM activity the measure where a window has it; a window without it (an NVML-only card)
falls back to utilisation, and the basis says so. A MIG slice has no NVML utilisation: it is
judged by its SM activity where the card gives it, else by what is knowable: no process and
(almost) no memory in use is idle, a process or memory in use is active. Anything else is
unknown (``None``): a gap, never idle.
"""

from __future__ import annotations

from enum import StrEnum

from gpuwarden.collector.policy import Policy


class Basis(StrEnum):
    """What decided whether a window was active (shown in the evidence of findings)."""

    UTIL = "util"  # max utilisation vs active_util_pct
    SM = "sm_active"  # max SM activity vs active_sm_pct (or active_util_pct for a MIG slice)
    UTIL_NO_SM = "util_no_sm"  # active_sm_pct set, but the window had no SM activity
    MIG_EMPTY = "mig_empty"  # MIG slice: no process, memory below mem_held_pct
    MIG_IN_USE = "mig_in_use"  # MIG slice: a process or memory in use
    UNKNOWN = ""


def window_activity(
    p: Policy,
    util_max_pct: float | None,
    sm_active_max_pct: float | None,
    mig: bool = False,
    processes: int | None = None,
    mem_used_bytes: int | None = None,
    mem_total_bytes: int | None = None,
) -> tuple[bool | None, Basis]:
    """(active, basis) of one window; active None: unknown."""
    if p.active_sm_pct > 0 and sm_active_max_pct is not None:
        return sm_active_max_pct >= p.active_sm_pct, Basis.SM
    if util_max_pct is not None:
        basis = Basis.UTIL_NO_SM if p.active_sm_pct > 0 else Basis.UTIL
        return util_max_pct >= p.active_util_pct, basis
    if not mig:
        return None, Basis.UNKNOWN
    if sm_active_max_pct is not None:
        return sm_active_max_pct >= p.active_util_pct, Basis.SM
    if processes is None or mem_used_bytes is None or not mem_total_bytes:
        return None, Basis.UNKNOWN
    if processes == 0 and mem_used_bytes < mem_total_bytes * p.mem_held_pct / 100.0:
        return False, Basis.MIG_EMPTY
    return True, Basis.MIG_IN_USE
