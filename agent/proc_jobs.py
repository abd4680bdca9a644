"""Reading ``/proc`` for Slurm facts: which job each process belongs to (cgroup, then
environ), the Dask worker it is part of, and its CPU ticks.

The parsing is pure and lives in ``gpuwarden.slurm`` (``parse_proc_cgroup``,
``parse_environ``, ``parse_dask_worker_cmdline``); this module only reads the files. A
process is read once: its facts are kept by (pid, start time), so a reused PID is a new
process. ``proc_root`` is a setting (tests point it at a tree they write).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.slurm import (
    CgroupJob,
    DaskWorkerFacts,
    EnvironFacts,
    parse_cmdline,
    parse_dask_worker_cmdline,
    parse_environ,
    parse_proc_cgroup,
)

__all__ = ["ProcEntry", "ProcJobReader", "ProcessJob"]

_MAX_ANCESTORS = 8


@dataclass(frozen=True, slots=True)
class ProcessJob:
    """What /proc tells about one process's Slurm job."""

    pid: int
    job_id: str | None
    step: str = ""
    source: str = ""  # cgroup | environ
    sluid: str | None = None
    environ: EnvironFacts | None = None
    dask: DaskWorkerFacts | None = None


@dataclass(frozen=True, slots=True)
class ProcEntry:
    """One process of the node that belongs to a Slurm job, as one scan saw it."""

    pid: int
    job: ProcessJob
    cpu_ticks: int | None  # utime + stime; None when unreadable


class ProcJobReader:
    def __init__(self, proc_root: Path | str = Path("/proc")) -> None:
        self.proc_root = Path(proc_root)
        self._known: dict[tuple[int, int], ProcessJob | None] = {}  # (pid, starttime)

    def process_job(self, pid: int) -> ProcessJob | None:
        """The Slurm job of one process, from /proc alone (cgroup first, then environ)."""
        base = self.proc_root / str(pid)
        cg: CgroupJob | None = None
        with contextlib.suppress(OSError):
            cg = parse_proc_cgroup((base / "cgroup").read_text(errors="replace"))
        env = self._read_environ(pid)
        dask = self._dask_of(pid, env)
        if cg is not None and cg.job_id is not None:
            return ProcessJob(pid, cg.job_id, cg.step, "cgroup", cg.sluid, env, dask)
        if env is not None and env.job_id is not None:
            step = cg.step if cg is not None else (env.step_id or "")
            return ProcessJob(pid, env.job_id, step, "environ", None, env, dask)
        if cg is not None and cg.sluid is not None:  # SLUID only: resolved through Slurm
            return ProcessJob(pid, None, cg.step, "cgroup", cg.sluid, env, dask)
        return None

    def scan(self) -> list[ProcEntry]:
        """One pass over /proc: every process that belongs to a Slurm job, with its CPU
        ticks. Each process's job and Dask worker are read once and kept until it exits."""
        try:
            pids = [int(p.name) for p in self.proc_root.iterdir() if p.name.isdigit()]
        except OSError:
            return []
        out: list[ProcEntry] = []
        seen: set[tuple[int, int]] = set()
        for pid in pids:
            fields = self.stat_fields(pid)
            start, used = 0, None
            if fields is not None and len(fields) >= 20:
                with contextlib.suppress(ValueError):
                    start = int(fields[19])  # starttime: a reused PID is another process
                    used = int(fields[11]) + int(fields[12])  # utime + stime
            key = (pid, start)
            seen.add(key)
            if key not in self._known:
                self._known[key] = self.process_job(pid)
            job = self._known[key]
            if job is not None:
                out.append(ProcEntry(pid, job, used))
        for key in [k for k in self._known if k not in seen]:
            del self._known[key]  # exited
        return out

    def stat_fields(self, pid: int) -> list[str] | None:
        """The fields of ``/proc/PID/stat`` after ``(comm)`` (comm may hold spaces and
        parens), or None when unreadable."""
        try:
            stat = (self.proc_root / str(pid) / "stat").read_text()
        except OSError:
            return None
        return stat.rpartition(")")[2].split()

    def _read_environ(self, pid: int) -> EnvironFacts | None:
        try:
            return parse_environ((self.proc_root / str(pid) / "environ").read_bytes())
        except OSError:
            return None

    def _cmdline(self, pid: int) -> tuple[str, ...]:
        try:
            return parse_cmdline((self.proc_root / str(pid) / "cmdline").read_bytes())
        except OSError:
            return ()

    def _ppid(self, pid: int) -> int | None:
        fields = self.stat_fields(pid)
        try:
            return int(fields[1]) if fields is not None else None
        except (IndexError, ValueError):
            return None

    def _dask_of(self, pid: int, env: EnvironFacts | None) -> DaskWorkerFacts | None:
        """The Dask worker a process belongs to: its own command line or an ancestor's (the
        nanny starts the worker as a child), else DASK_SCHEDULER_ADDRESS in its environment."""
        current: int | None = pid
        for _ in range(_MAX_ANCESTORS):
            if current is None or current <= 1:
                break
            facts = parse_dask_worker_cmdline(self._cmdline(current))
            if facts is not None:
                return facts
            current = self._ppid(current)
        if env is not None and env.dask_scheduler:
            return DaskWorkerFacts(scheduler=env.dask_scheduler, name=env.dask_worker_name or "")
        return None
