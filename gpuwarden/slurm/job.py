"""``SlurmJob``: one job as Slurm shows it, whichever command or API it came from."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gpuwarden.slurm.hostlist import parse_index_list

__all__ = ["SlurmJob", "find_job"]


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One job (or array task / het component) as scontrol or squeue shows it."""

    job_id: str  # the unique numeric id (what cgroups, SLURM_JOB_ID and scontrol use)
    state: str  # RUNNING, PENDING, COMPLETED, CANCELLED, ... (first word of the state)
    user: str = ""
    uid: int | None = None
    account: str = ""
    partition: str = ""
    name: str = ""
    qos: str = ""
    batch: bool = True
    requeue: bool = False
    restart_count: int = 0
    start_time: int | None = None  # unix seconds; None when not started / unknown
    end_time: int | None = None
    reason: str = ""
    nodes: tuple[str, ...] = ()
    batch_host: str = ""
    gpus_by_node: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    cpus_by_node: Mapping[str, int] = field(default_factory=dict)  # scontrol -d CPU_IDs
    num_cpus: int | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None  # "3", or "1-5%2" for a pending array record
    het_job_id: str | None = None
    het_job_offset: int | None = None
    sluid: str | None = None  # Slurm >= 26.05

    @property
    def display_id(self) -> str:
        """The id users see: ``ARRAYJOB_TASK`` for array tasks, ``HETJOB+OFFSET`` for het
        components, else the job id."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        if self.het_job_id and self.het_job_offset is not None:
            return f"{self.het_job_id}+{self.het_job_offset}"
        return self.job_id

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"

    def gpu_indices(self, node: str) -> tuple[int, ...]:
        return self.gpus_by_node.get(node, ())


def find_job(jobs: Iterable[SlurmJob], job_id: str) -> SlurmJob | None:
    """The job users call ``job_id``: by job id, else by the id users see (``A_T``,
    ``H+O``), else, for ``A_T`` of a pending array whose tasks still share one record
    (``array_task_id`` ``"0-7%2"``), that record as task T, as ``scontrol show job A_T``
    shows it. None when no job matches."""
    jobs = list(jobs)
    for job in jobs:
        if job.job_id == job_id:
            return job
    for job in jobs:
        if job.display_id == job_id:
            return job
    array, sep, task = job_id.partition("_")
    if not sep or not task.isdigit():
        return None
    for job in jobs:
        tasks = job.array_task_id
        if job.array_job_id != array or not tasks or tasks.isdigit():
            continue
        try:
            waiting = parse_index_list(tasks.split("%")[0])
        except ValueError:
            continue
        if int(task) in waiting:
            return dataclasses.replace(job, array_task_id=task)
    return None
