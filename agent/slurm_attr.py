"""``SlurmAttributor``: which Slurm job holds each GPU of this node.

For each GPU: the job of its processes (``/proc/PID/cgroup``, then ``/proc/PID/environ``),
then the node's allocations (``squeue --json``: per-node ``gres_detail`` ``gpu:N(IDX:..)``).
A GPU that Slurm allocated but that runs no process is reported ``allocated=True`` with its
job. Dask workers are found from the job's processes (command line, environment).

Slurm is asked as little as the node needs. The job ids on the node come from ``/proc`` on
every call, at no cost to the controller; ``squeue --json`` (one RPC; structured, so a job
name or path can never change an attributed field) is run only when ``/proc`` shows a job it
has not described yet, or when its answer is older than ``refresh_s`` (jobs holding GPUs
with no process on the node, state changes), and never more often than every
``cache_ttl_s``. A failure is kept for ``cache_ttl_s`` too, so a controller outage costs at
most one timeout per TTL; while it lasts, ``slurm.available`` is False and only what
``/proc`` tells is reported. A job record Slurm prints that cannot be read is skipped and
counted (``skipped_records``); it never blanks the node's other jobs. ``jobs_source``
replaces ``squeue --json`` with another way of listing the node's jobs (the agent passes
pyslurm's, ``PyslurmClient.node_jobs``, where pyslurm matches the Slurm); it raises
SlurmError when Slurm cannot be asked.

Each job's CPU use (all its processes on this node, data loaders included, not only those on
a GPU) is measured between two calls from ``/proc/PID/stat`` and reported as a percentage
of the CPUs Slurm gave the job on this node, for the input-bound advice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpuwarden.agent.attribution import Attribution, GpuAttribution
from gpuwarden.agent.gpu_order import DeviceKey, device_key, gres_device_map, whole_gpus
from gpuwarden.agent.proc_jobs import ProcEntry, ProcessJob, ProcJobReader
from gpuwarden.common.types import GpuSample, JobInfo, SlurmStatus
from gpuwarden.slurm import (
    DaskWorkerFacts,
    EnvironFacts,
    SlurmError,
    SlurmJob,
    SlurmRunner,
    validate_node_name,
)
from gpuwarden.slurm.parsed import ParsedJobs
from gpuwarden.slurm.squeue import read_squeue_jobs

log = logging.getLogger(__name__)

__all__ = ["ProcessJob", "SlurmAttributor"]

# States in which a job still holds its GPUs on the node.
_DEFAULT_REFRESH_S = 60.0  # age at which a good answer is asked again with nothing new
_HOLDING_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "CONFIGURING"})


@dataclass(slots=True)
class _Snapshot:
    """One Slurm answer, cut down to this node: its jobs, or the error."""

    taken_at: float
    jobs: dict[str, SlurmJob] = field(default_factory=dict)  # this node's jobs, by job id
    by_sluid: dict[str, SlurmJob] = field(default_factory=dict)
    by_gpu: dict[DeviceKey, SlurmJob] = field(default_factory=dict)  # device -> holding job
    error: str = ""


class SlurmAttributor:
    """Implements ``gpuwarden.agent.attribution.Attributor`` for a Slurm node.

    ``gpu_index_map`` maps a Slurm GRES index (position in gres.conf) to the NVML GPU index
    (whole GPUs only). By default it is derived from the samples' minor numbers (GRES counts
    /dev/nvidiaN in minor order; NVML counts in PCI bus order, which can differ) and, for
    MIG instances, the minors of their /dev/nvidia-caps access files (see
    :mod:`gpu_order`); when a minor number is unknown, GRES and NVML indices are taken as
    equal and MIG instances are attributed only through their processes.
    ``scontrol``: path of scontrol; ``squeue`` is taken from the same folder unless given.
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
        *,
        squeue: str | None = None,
        refresh_s: float | None = None,
        jobs_source: Callable[[], Sequence[SlurmJob]] | None = None,
    ) -> None:
        validate_node_name(node)
        if cache_ttl_s < 0:
            raise ValueError(f"SlurmAttributor: cache_ttl_s must be >= 0, not {cache_ttl_s}")
        if timeout_s <= 0:
            raise ValueError(f"SlurmAttributor: timeout_s must be > 0, not {timeout_s}")
        if refresh_s is None:
            refresh_s = max(_DEFAULT_REFRESH_S, cache_ttl_s)
        if refresh_s < cache_ttl_s:
            raise ValueError(
                f"SlurmAttributor: refresh_s ({refresh_s}) must be >= cache_ttl_s ({cache_ttl_s})"
            )
        if squeue is None:
            folder = os.path.dirname(scontrol)  # noqa: PTH120
            squeue = os.path.join(folder, "squeue") if folder else "squeue"  # noqa: PTH118
        self.node = node
        self.cache_ttl_s = cache_ttl_s
        self.refresh_s = refresh_s
        self.jobs_source = jobs_source
        self.runner = SlurmRunner(
            timeout_s=timeout_s, paths={"scontrol": scontrol, "squeue": squeue}
        )
        self.gpu_index_map = dict(gpu_index_map) if gpu_index_map is not None else None
        self._index_map: dict[int, DeviceKey] | None = (  # GRES index -> device, in force now
            None if gpu_index_map is None else whole_gpus(gpu_index_map)
        )
        self.procs = ProcJobReader(proc_root)
        self.skipped_records = 0  # Slurm job records that could not be read, since start
        self._clock = clock
        self._snap: _Snapshot | None = None
        self._clk_tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
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
        """Forget the cached Slurm answer: the next call asks Slurm again."""
        self._snap = None

    def process_job(self, pid: int) -> ProcessJob | None:
        """The Slurm job of one process, from /proc alone (cgroup first, then environ)."""
        return self.procs.process_job(pid)

    # --------------------------------------------------------------------------- internals

    def _attribute(self, samples: Sequence[GpuSample]) -> Attribution:
        if self.gpu_index_map is not None:
            index_map: dict[int, DeviceKey] | None = whole_gpus(self.gpu_index_map)
        else:  # Slurm counts GPUs in minor-number order, NVML in PCI order
            index_map = gres_device_map(samples)
        if index_map != self._index_map:
            self._index_map = index_map
            self._snap = None  # GPUs are mapped to jobs when the snapshot is filled
        entries = self.procs.scan()
        pids = [e.job for e in entries] + [
            pj for s in samples for p in s.processes if (pj := self._pj(p.pid)) is not None
        ]
        job_ids = {pj.job_id for pj in pids if pj.job_id}
        sluids = {pj.sluid for pj in pids if pj.job_id is None and pj.sluid}
        snap = self._snapshot(job_ids, sluids)
        available = not snap.error
        self._account(snap, entries)
        out: dict[str, GpuAttribution] = {}
        for sample in samples:
            attr = self._attribute_gpu(sample, snap, available)
            if attr.job is not None and attr.job.job_id in self._cpu_pct:
                job = dataclasses.replace(attr.job, cpu_util_pct=self._cpu_pct[attr.job.job_id])
                attr = GpuAttribution(job=job, allocated=attr.allocated)
            out[sample.uuid] = attr
        return Attribution(gpus=out, slurm=SlurmStatus(available=available, error=snap.error))

    def _pj(self, pid: int) -> ProcessJob | None:
        return self.procs.process_job(pid)

    def _account(self, snap: _Snapshot, entries: Sequence[ProcEntry]) -> None:
        """Dask workers by job, and each job's CPU use since the last call."""
        ticks: dict[str, int] = {}
        dask_by_job: dict[str, DaskWorkerFacts] = {}
        for entry in entries:
            pj = entry.job
            job_id = pj.job_id or self._sluid_job(snap, pj.sluid)
            if job_id is None:
                continue
            if entry.cpu_ticks is not None:
                ticks[job_id] = ticks.get(job_id, 0) + entry.cpu_ticks
            if pj.dask is not None:
                dask_by_job.setdefault(job_id, pj.dask)
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
        holder = snap.by_gpu.get(device_key(sample))
        procs = [pj for p in sample.processes if (pj := self._pj(p.pid)) is not None]
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
                allocated = self._env_allocates(chosen.environ, device_key(sample))
            return GpuAttribution(job=info, allocated=allocated)
        if holder is not None:
            dask = self._dask_by_job.get(holder.job_id)
            info = _job_info(holder.job_id, "", "allocation", holder, None, dask)
            return GpuAttribution(job=info, allocated=True)
        return GpuAttribution()

    def _env_allocates(self, env: EnvironFacts | None, device: DeviceKey) -> bool:
        if env is None or env.job_gpus is None:
            return False
        return device in {self._device(i) for i in env.job_gpus}

    def _device(self, gres_index: int) -> DeviceKey | None:
        """The device of a GRES index; None when this node has no such device."""
        if self._index_map is None:
            return (gres_index, None)
        return self._index_map.get(gres_index)

    @staticmethod
    def _sluid_job(snap: _Snapshot, sluid: str | None) -> str | None:
        if sluid is None:
            return None
        job = snap.by_sluid.get(sluid)
        return job.job_id if job is not None else None

    def _snapshot(self, job_ids: Collection[str], sluids: Collection[str]) -> _Snapshot:
        """The cached answer while it is fresh; asks Slurm again when it is older than
        ``refresh_s``, or when /proc shows a job (or SLUID) it does not describe and it is
        older than ``cache_ttl_s``."""
        now = self._clock()
        snap = self._snap
        if snap is not None:
            age = now - snap.taken_at
            unknown = bool(snap.error) or any(j not in snap.jobs for j in job_ids)
            unknown = unknown or any(s not in snap.by_sluid for s in sluids)
            if age < self.cache_ttl_s or (age < self.refresh_s and not unknown):
                return snap
        new = _Snapshot(taken_at=now)
        try:
            if self.jobs_source is not None:
                parsed = ParsedJobs(jobs=list(self.jobs_source()))
            else:
                parsed = read_squeue_jobs(self.runner.output("squeue", "--json"))
        except SlurmError as exc:
            new.error = str(exc)
        except ValueError as exc:
            what = "the job list" if self.jobs_source is not None else "squeue --json output"
            new.error = f"cannot read {what}: {exc}"
        else:
            if parsed.skipped:
                self.skipped_records += len(parsed.skipped)
                log.warning(
                    "squeue --json: skipped %d unreadable job record(s); first: %s",
                    len(parsed.skipped),
                    parsed.skipped[0],
                )
            self._fill(new, parsed.jobs, set(job_ids), set(sluids))
        if new.error:
            if snap is None or not snap.error:
                log.warning("slurm unavailable: %s", new.error)
        elif snap is not None and snap.error:
            log.info("slurm available again")
        new.taken_at = self._clock()  # the TTL runs from the answer, not from the question
        self._snap = new
        return new

    def _fill(
        self, snap: _Snapshot, jobs: list[SlurmJob], job_ids: set[str], sluids: set[str]
    ) -> None:
        """Keep the jobs of this node (and those /proc named), map GPUs to holding jobs."""
        for job in jobs:
            mine = self.node in job.nodes or job.job_id in job_ids or job.sluid in sluids
            if not mine:
                continue
            snap.jobs[job.job_id] = job
            if job.sluid:
                snap.by_sluid[job.sluid] = job
            if job.state not in _HOLDING_STATES:
                continue
            for gres_index in job.gpu_indices(self.node):
                device = self._device(gres_index)
                if device is not None:
                    snap.by_gpu[device] = job


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
