"""The words of findings: every ``detail`` text a researcher or sysadmin reads, in one place.

Pure formatting of numbers the rules computed; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from gpuwarden.collector.activity import Basis
from gpuwarden.collector.findings import MIB
from gpuwarden.collector.policy import Policy


def duration(seconds: float) -> str:
    """``1h05m``, ``4m30s``, ``4m``, ``45s``."""
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    return f"{sec}s"


def mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MIB:.0f} MiB"


def _idle_measure(p: Policy, bases: Collection[str]) -> str:
    """How idleness was judged: utilisation, SM activity, or a MIG slice's emptiness."""
    util = f"max util < {p.active_util_pct:g}%"
    parts = []
    if Basis.SM in bases:
        parts.append(f"max SM activity < {p.active_sm_pct or p.active_util_pct:g}%")
    if Basis.UTIL_NO_SM in bases:
        parts.append(f"{util} where no SM activity was reported")
    if Basis.MIG_EMPTY in bases:
        parts.append("MIG slice with no process and no memory in use")
    if Basis.UTIL in bases or not parts:
        parts.insert(0, util)
    return ", ".join(parts)


def idle(
    p: Policy, gpus: int, covered_s: float, peak_mem_bytes: int, bases: Collection[str] = ()
) -> str:
    which = f"all {gpus} GPUs" if gpus > 1 else "the GPU"
    mem_note = f"; memory held up to {mib(peak_mem_bytes)}" if peak_mem_bytes > 0 else ""
    return (
        f"idle: {_idle_measure(p, bases)} on {which} for {duration(covered_s)} of "
        f"reported time (idle_window {duration(p.idle_window)}){mem_note}"
    )


def partly_idle(p: Policy, idle: int, gpus: int) -> str:
    share = (gpus - idle) / gpus
    return (
        f"partly idle: {idle} of {gpus} GPUs had no use (max util < {p.active_util_pct:g}%) "
        f"for at least {duration(p.idle_window)}; active share {share:.0%} < gpu_frac "
        f"{p.gpu_frac:.0%}"
    )


def memory_held_idle(held: Sequence[tuple[int | None, int | None]]) -> str:
    amounts = ", ".join(f"{mib(used)} of {mib(total)}" for used, total in held)
    return (
        f"GPU memory held while idle ({amounts}): free it, or end the session, so the GPU "
        "can serve someone else"
    )


def underused(p: Policy, mean_pct: float) -> str:
    return (
        f"mean GPU utilisation {mean_pct:.1f}% over the last {duration(p.underuse_window)} "
        f"(< {p.underuse_pct:g}%)"
    )


def input_bound(cpu_pct: float, mean_pct: float, sm_pct: float | None = None) -> str:
    sm = "" if sm_pct is None else f" (SM activity {sm_pct:.1f}%)"
    return (
        f"job CPU at {cpu_pct:.0f}% while the GPU averages {mean_pct:.1f}%{sm}: input-bound, "
        "the GPU waits for data: more data-loader workers or CPUs per GPU"
    )


def gpu_waiting(p: Policy, mean_pct: float, sm_pct: float) -> str:
    return (
        f"GPU busy {mean_pct:.1f}% of the time but SMs active only {sm_pct:.1f}% "
        f"(< {p.sm_waiting_pct:g}%) over the last {duration(p.underuse_window)}: the GPU is "
        "mostly waiting: larger batches, more data-loader workers"
    )


def no_tensor_cores(p: Policy, mean_pct: float, tensor_pct: float) -> str:
    return (
        f"tensor cores active {tensor_pct:.1f}% (< {p.tensor_unused_pct:g}%) while the GPU is "
        f"busy {mean_pct:.1f}% of the time over the last {duration(p.underuse_window)}: "
        "mixed precision (bf16/fp16) would be several times faster"
    )


def memory_bound(p: Policy, dram_pct: float, pipes_pct: float) -> str:
    return (
        f"memory bandwidth {dram_pct:.1f}% of peak (>= {p.dram_bound_pct:g}%) while the "
        f"compute pipes are at most {pipes_pct:.1f}% (< {p.pipes_low_pct:g}%) over the last "
        f"{duration(p.underuse_window)}: memory-bandwidth bound: fuse operations, larger "
        "batches, lower-precision data"
    )


def use_mig(p: Policy, worst_share: float) -> str:
    return (
        f"peak GPU memory {worst_share:.0%} of the card (< {p.mig_mem_pct:g}%) over the last "
        f"{duration(p.underuse_window)}: a MIG slice would do"
    )
