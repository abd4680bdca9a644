"""``SlurmAttributor``: which Slurm job holds each GPU of this node.

For each GPU: the job of its processes (``/proc/PID/cgroup``, then ``/proc/PID/environ``),
then the node's allocations (``scontrol -d -o show job``: per-node ``GRES=gpu:N(IDX:..)``).
A GPU that Slurm allocated but that runs no process is reported ``allocated=True`` with its
job. Dask workers are found from the job's processes (command line, environment).

``scontrol`` runs as an argv list, bounded by ``timeout_s`` and cached for ``cache_ttl_s``
(a failure is cached too, so a controller outage costs at most one timeout per TTL). While it
fails, ``slurm.available`` is False and only what ``/proc`` tells is reported.

Each job's CPU use (all its processes on this node, data loaders included, not only those on
a GPU) is measured between two calls from ``/proc/PID/stat`` and reported as a percentage
of the CPUs Slurm gave the job on this node, for the input-bound advice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpuwarden.agent.attribution import Attribution, GpuAttribution
from gpuwarden.common.types import GpuSample, JobInfo, SlurmStatus
from gpuwarden.slurm import (
    CgroupJob,
    DaskWorkerFacts,
    EnvironFacts,
    SlurmError,
    SlurmJob,
    SlurmRunner,
    parse_cmdline,
    parse_dask_worker_cmdline,
    parse_environ,
    parse_proc_cgroup,
    parse_scontrol_jobs,
    validate_node_name,
)

log = logging.getLogger(__name__)

__all__ = ["ProcessJob", "SlurmAttributor"]

# States in which a job still holds its GPUs on the node.
_HOLDING_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "CONFIGURING"})
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


@dataclass(slots=True)
class _Snapshot:
    """One scontrol refresh: the node's jobs, or the error."""

    taken_at: float
    jobs: dict[str, SlurmJob] = field(default_factory=dict)  # every job, by job id
    by_sluid: dict[str, SlurmJob] = field(default_factory=dict)
    by_gpu: dict[int, SlurmJob] = field(default_factory=dict)  # NVML index -> holding job
    error: str = ""


class SlurmAttributor:
    """Implements ``gpuwarden.agent.attribution.Attributor`` for a Slurm node.

    ``gpu_index_map`` maps a Slurm GRES index (position in gres.conf) to the NVML GPU index;
    by default they are equal (gres.conf lists /dev/nvidia0..N in order, as on most sites).
    """

    def __init__(
        self,
        node: str,
        proc_root: Path | str = Path("/proc"),
        scontrol: str = "scontrol",
        cache_ttl_s: float = 10.0,
        timeout_s: float = 3.0,
        gpu_index_map: Mapping[int, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        validate_node_name(node)
        if cache_ttl_s < 0:
            raise ValueError(f"SlurmAttributor: cache_ttl_s must be >= 0, not {cache_ttl_s}")
        if timeout_s <= 0:
            raise ValueError(f"SlurmAttributor: timeout_s must be > 0, not {timeout_s}")
        self.node = node
        self.proc_root = Path(proc_root)
        self.cache_ttl_s = cache_ttl_s
        self.runner = SlurmRunner(timeout_s=timeout_s, paths={"scontrol": scontrol})
        self.gpu_index_map = dict(gpu_index_map) if gpu_index_map is not None else None
        self._clock = clock
        self._snap: _Snapshot | None = None
        self._clk_tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        # (pid, starttime) -> (job id, Dask worker facts), read once per process
        self._pid_jobs: dict[tuple[int, int], tuple[str | None, DaskWorkerFacts | None]] = {}
        self._dask_by_job: dict[str, DaskWorkerFacts] = {}
        self._cpu_prev: tuple[float, dict[str, int]] | None = None  # (clock, ticks by job)
        self._cpu_pct: dict[str, float] = {}

    # ---------------------------------------------------------------------------- public

    def attribute(self, samples: Sequence[GpuSample]) -> Attribution:
        try:
            return self._attribute(samples)
        except Exception as exc:  # the Attributor contract: never raise
            log.exception("slurm attribution failed")
            return Attribution(slurm=SlurmStatus(available=False, error=f"attribution: {exc}"))

    def invalidate(self) -> None:
        """Forget the cached scontrol answer: the next call asks Slurm again."""
        self._snap = None

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
        if cg is not None and cg.sluid is not None:  # SLUID only: resolved through scontrol
            return ProcessJob(pid, None, cg.step, "cgroup", cg.sluid, env, dask)
        return None

    # --------------------------------------------------------------------------- internals

    def _attribute(self, samples: Sequence[GpuSample]) -> Attribution:
        snap = self._snapshot()
        available = not snap.error
        self._scan_processes(snap)
        out: dict[str, GpuAttribution] = {}
        for sample in samples:
            attr = self._attribute_gpu(sample, snap, available)
            if attr.job is not None and attr.job.job_id in self._cpu_pct:
                job = dataclasses.replace(attr.job, cpu_util_pct=self._cpu_pct[attr.job.job_id])
                attr = GpuAttribution(job=job, allocated=attr.allocated)
            out[sample.uuid] = attr
        status = SlurmStatus(available=available, error=snap.error)
        return Attribution(gpus=out, slurm=status)

    def _stat_fields(self, pid: int) -> list[str] | None:
        try:
            stat = (self.proc_root / str(pid) / "stat").read_text()
        except OSError:
            return None
        # "pid (comm) state ppid ...": comm may hold spaces and parens
        return stat.rpartition(")")[2].split()

    def _scan_processes(self, snap: _Snapshot) -> None:
        """One pass over /proc per report: each process's job and Dask worker (read once per
        process and cached), and the CPU ticks of every job; percent since the last call.
        Dask workers are found this way even on idle GPUs (no process on the GPU)."""
        try:
            pids = [int(p.name) for p in self.proc_root.iterdir() if p.name.isdigit()]
        except OSError:
            return
        ticks: dict[str, int] = {}
        dask_by_job: dict[str, DaskWorkerFacts] = {}
        seen: set[tuple[int, int]] = set()
        for pid in pids:
            fields = self._stat_fields(pid)
            start, used = 0, None
            if fields is not None and len(fields) >= 20:
                with contextlib.suppress(ValueError):
                    start = int(fields[19])  # starttime: a reused PID is another process
                    used = int(fields[11]) + int(fields[12])  # utime + stime
            key = (pid, start)
            seen.add(key)
            cached = self._pid_jobs.get(key)
            if cached is None:
                pj = self.process_job(pid)
                job_id = None if pj is None else pj.job_id or self._sluid_job(snap, pj.sluid)
                cached = (job_id, pj.dask if pj is not None else None)
                if pj is None or job_id is not None or pj.sluid is None:
                    self._pid_jobs[key] = cached  # an unresolved SLUID is asked again
            job_id, dask = cached
            if job_id is None:
                continue
            if used is not None:
                ticks[job_id] = ticks.get(job_id, 0) + used
            if dask is not None:
                dask_by_job.setdefault(job_id, dask)
        for key in [k for k in self._pid_jobs if k not in seen]:
            del self._pid_jobs[key]  # exited
        self._dask_by_job = dask_by_job
        now = self._clock()
        prev = self._cpu_prev
        self._cpu_prev = (now, ticks)
        self._cpu_pct = {}
        if prev is None or now <= prev[0]:
            return
        wall_s = now - prev[0]
        for job_id, total in ticks.items():
            if job_id not in prev[1]:
                continue
            delta = max(0, total - prev[1][job_id])  # an exited process takes its ticks along
            job = snap.jobs.get(job_id)
            cpus = (job.cpus_by_node.get(self.node) or job.num_cpus) if job else None
            self._cpu_pct[job_id] = round(100.0 * delta / self._clk_tck / wall_s / (cpus or 1), 1)

    def _attribute_gpu(self, sample: GpuSample, snap: _Snapshot, available: bool) -> GpuAttribution:
        holder = snap.by_gpu.get(sample.index)
        procs = [pj for p in sample.processes if (pj := self.process_job(p.pid)) is not None]
        chosen: ProcessJob | None = None
        for pj in procs:  # prefer the process of the job Slurm gave this GPU to
            job_id = pj.job_id or self._sluid_job(snap, pj.sluid)
            if holder is not None and job_id == holder.job_id:
                chosen = pj
                break
        if chosen is None:
            chosen = next(
                (pj for pj in procs if pj.job_id or self._sluid_job(snap, pj.sluid)), None
            )
        if chosen is not None:
            job_id = chosen.job_id or self._sluid_job(snap, chosen.sluid) or ""
            slurm_job = snap.jobs.get(job_id)
            dask = chosen.dask or self._dask_by_job.get(job_id)
            info = _job_info(job_id, chosen.step, chosen.source, slurm_job, chosen.environ, dask)
            if available:
                allocated = holder is not None
            else:  # only /proc: the job's own SLURM_JOB_GPUS says what it was given
                allocated = self._env_allocates(chosen.environ, sample.index)
            return GpuAttribution(job=info, allocated=allocated)
        if holder is not None:
            dask = self._dask_by_job.get(holder.job_id)
            info = _job_info(holder.job_id, "", "allocation", holder, None, dask)
            return GpuAttribution(job=info, allocated=True)
        return GpuAttribution()

    def _env_allocates(self, env: EnvironFacts | None, nvml_index: int) -> bool:
        if env is None or env.job_gpus is None:
            return False
        return nvml_index in {self._nvml_index(i) for i in env.job_gpus}

    def _nvml_index(self, gres_index: int) -> int:
        if self.gpu_index_map is None:
            return gres_index
        return self.gpu_index_map.get(gres_index, -1)

    @staticmethod
    def _sluid_job(snap: _Snapshot, sluid: str | None) -> str | None:
        if sluid is None:
            return None
        job = snap.by_sluid.get(sluid)
        return job.job_id if job is not None else None

    def _snapshot(self) -> _Snapshot:
        now = self._clock()
        if self._snap is not None and now - self._snap.taken_at < self.cache_ttl_s:
            return self._snap
        snap = _Snapshot(taken_at=now)
        try:
            self._fill(
                snap, parse_scontrol_jobs(self.runner.output("scontrol", "-d", "-o", "show", "job"))
            )
        except SlurmError as exc:
            snap.error = str(exc)
        except ValueError as exc:
            snap.error = f"cannot parse scontrol output: {exc}"
        if snap.error:
            if self._snap is None or not self._snap.error:
                log.warning("slurm unavailable: %s", snap.error)
        elif self._snap is not None and self._snap.error:
            log.info("slurm available again")
        snap.taken_at = self._clock()  # the TTL runs from the answer, not from the question
        self._snap = snap
        return snap

    def _fill(self, snap: _Snapshot, jobs: list[SlurmJob]) -> None:
        for job in jobs:
            snap.jobs[job.job_id] = job
            if job.sluid:
                snap.by_sluid[job.sluid] = job
            if job.state not in _HOLDING_STATES:
                continue
            for gres_index in job.gpu_indices(self.node):
                nvml = self._nvml_index(gres_index)
                if nvml >= 0:
                    snap.by_gpu[nvml] = job

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
        fields = self._stat_fields(pid)
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


def _job_info(
    job_id: str,
    step: str,
    source: str,
    job: SlurmJob | None,
    env: EnvironFacts | None,
    dask: DaskWorkerFacts | None,
) -> JobInfo:
    scheduler = dask.scheduler if dask else ""
    worker = dask.name if dask else ""
    if job is None:  # /proc only (Slurm unavailable or job unknown to it)
        return JobInfo(
            job_id=job_id,
            step=step,
            user=(env.user or "") if env else "",
            dask_scheduler=scheduler,
            dask_worker=worker,
            source=source,
        )
    return JobInfo(
        job_id=job_id,
        step=step,
        user=job.user,
        account=job.account,
        partition=job.partition,
        name=job.name,
        qos=job.qos,
        batch=job.batch,
        requeue=job.requeue,
        start_time=job.start_time or 0,
        dask_scheduler=scheduler,
        dask_worker=worker,
        source=source,
    )
