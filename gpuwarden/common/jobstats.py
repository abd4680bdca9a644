"""Job summaries: what ``gpuwarden jobstats`` shows and ``gpuwarden report`` adds up.

A :class:`JobStats` is computed by the collector from a job's windows (and kept in the store
when the job ends, so it outlives the raw windows). Units are in the names; a value that
was never measured is ``None``, never 0. ``to_json``/``job_stats_from_json`` are the one
JSON form (stored summaries, ``--json``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpuwarden.common.types import AuditRecord


@dataclass(frozen=True, slots=True)
class IdlePeriod:
    """From ``start`` to ``end`` (unix seconds) the GPU was reported and never active."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class GpuStats:
    """One GPU (or MIG instance) of a job over the job's reported time."""

    node: str
    uuid: str
    index: int
    name: str = ""
    reported_s: float = 0.0  # time covered by windows
    active_s: float = 0.0  # of which in windows where the GPU was active
    util_mean_pct: float | None = None
    util_max_pct: float | None = None
    mem_peak_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_mean_w: float | None = None
    sm_active_mean_pct: float | None = None  # GPM, where the card reports it
    tensor_active_mean_pct: float | None = None
    idle_periods: tuple[IdlePeriod, ...] = ()
    idle_periods_more: int = 0  # further idle periods left out (the list is bounded)


@dataclass(frozen=True, slots=True)
class JobStats:
    """A job's facts, per-GPU figures and the ladder's decisions about it."""

    job_id: str
    user: str = ""
    account: str = ""
    partition: str = ""
    name: str = ""
    state: str = ""  # running | ended ("" = unknown)
    start: float | None = None  # unix seconds: Slurm's start, else the first window
    end: float | None = None  # None while running
    last_seen: float | None = None  # end of the newest window
    cpu_util_mean_pct: float | None = None  # the job's CPU use, where the agent knows it
    gpus: tuple[GpuStats, ...] = ()
    decisions: tuple[AuditRecord, ...] = ()  # warnings and actions, oldest first
    source: str = ""  # summary (stored at the job's end) | windows (computed now)

    @property
    def elapsed_s(self) -> float | None:
        last = self.end if self.end is not None else self.last_seen
        if self.start is None or last is None:
            return None
        return max(0.0, last - self.start)

    def gpu_hours(self) -> tuple[float, float]:
        """(reported GPU-hours, active GPU-hours)."""
        return (
            sum(g.reported_s for g in self.gpus) / 3600.0,
            sum(g.active_s for g in self.gpus) / 3600.0,
        )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["decisions"] = [d.to_json() for d in self.decisions]
        out["elapsed_s"] = self.elapsed_s
        return out


@dataclass(frozen=True, slots=True)
class WasteRow:
    """One line of ``gpuwarden report``: GPU-hours of one user, account or partition."""

    by: str  # user | account | partition
    key: str
    jobs: int
    allocated_h: float
    active_h: float
    idle_h: float
    reclaimed_h: float  # allocated time given back early by an action (or, dry-run, would be)


def _opt_float(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]


def _opt_int(v: object) -> int | None:
    return None if v is None else int(v)  # type: ignore[call-overload]


def gpu_stats_from_json(d: Mapping[str, Any]) -> GpuStats:
    return GpuStats(
        node=str(d["node"]),
        uuid=str(d["uuid"]),
        index=int(d["index"]),
        name=str(d.get("name", "")),
        reported_s=float(d.get("reported_s", 0.0)),
        active_s=float(d.get("active_s", 0.0)),
        util_mean_pct=_opt_float(d.get("util_mean_pct")),
        util_max_pct=_opt_float(d.get("util_max_pct")),
        mem_peak_bytes=_opt_int(d.get("mem_peak_bytes")),
        mem_total_bytes=_opt_int(d.get("mem_total_bytes")),
        power_mean_w=_opt_float(d.get("power_mean_w")),
        sm_active_mean_pct=_opt_float(d.get("sm_active_mean_pct")),
        tensor_active_mean_pct=_opt_float(d.get("tensor_active_mean_pct")),
        idle_periods=tuple(
            IdlePeriod(float(p["start"]), float(p["end"])) for p in d.get("idle_periods", ())
        ),
        idle_periods_more=int(d.get("idle_periods_more", 0)),
    )


def job_stats_from_json(d: Mapping[str, Any]) -> JobStats:
    """The inverse of :meth:`JobStats.to_json` (a stored summary)."""
    return JobStats(
        job_id=str(d["job_id"]),
        user=str(d.get("user", "")),
        account=str(d.get("account", "")),
        partition=str(d.get("partition", "")),
        name=str(d.get("name", "")),
        state=str(d.get("state", "")),
        start=_opt_float(d.get("start")),
        end=_opt_float(d.get("end")),
        last_seen=_opt_float(d.get("last_seen")),
        cpu_util_mean_pct=_opt_float(d.get("cpu_util_mean_pct")),
        gpus=tuple(gpu_stats_from_json(g) for g in d.get("gpus", ())),
        decisions=tuple(
            AuditRecord(
                ts=float(r["ts"]),
                job_id=str(r["job_id"]),
                kind=str(r["kind"]),
                action=str(r["action"]),
                outcome=str(r["outcome"]),
                dry_run=bool(r["dry_run"]),
                gpus=tuple(r.get("gpus", ())),
                detail=str(r.get("detail", "")),
                evidence=dict(r.get("evidence", {})),
                actor=str(r.get("actor", "")),
                user=str(r.get("user", "")),
                account=str(r.get("account", "")),
                partition=str(r.get("partition", "")),
                nodes=tuple(r.get("nodes", ())),
            )
            for r in d.get("decisions", ())
        ),
        source=str(d.get("source", "")),
    )
