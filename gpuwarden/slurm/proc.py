"""Pure parsers of what ``/proc/PID`` tells about Slurm: ``cgroup``, ``environ``, ``cmdline``.

No I/O: the agent (``gpuwarden.agent``) reads the files and passes their content in. Tested on
captures under ``tests/fixtures/proc``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuwarden.slurm._values import int_or_none
from gpuwarden.slurm.hostlist import parse_index_list
from gpuwarden.slurm.ids import is_job_id

__all__ = ["CgroupJob", "EnvironFacts", "parse_cmdline", "parse_environ", "parse_proc_cgroup"]


@dataclass(frozen=True, slots=True)
class CgroupJob:
    """The Slurm job a process belongs to, read from its cgroup path."""

    job_id: str | None  # None when the path names only a SLUID (Slurm >= 26.05, cgroup v2)
    step: str = ""  # "batch", "extern", "0", ... ("" when the process sits in the job cgroup)
    uid: int | None = None  # only cgroup v1 paths carry the uid
    sluid: str | None = None
    layout: str = ""  # v1 | v1-multi-slurmd | v2 | v2-sluid
    path: str = ""


_V1_RE = re.compile(
    r"/slurm(?P<multi>_[^/]+)?/uid_(?P<uid>[0-9]+)/job_(?P<job>[0-9]+)(?:/step_(?P<step>[^/]+))?"
)
# cgroup v2: <Slurm cgroup root>/system.slice/[<node>_]slurmstepd.scope/job_J/step_S[/user/task_N]
_V2_RE = re.compile(r"slurmstepd\.scope/job_(?P<job>[0-9]+)(?:/step_(?P<step>[^/]+))?")
# Slurm 26.05 keys the cgroup v2 tree off the job's SLUID ("s" + Crockford base32, e.g.
# s5K1KKYAYG5D00) unless cgroup.conf sets CgroupJobIdPaths=yes.
_V2_SLUID_RE = re.compile(
    r"slurmstepd\.scope/(?P<sluid>s[0-9A-HJKMNP-TV-Z]{8,24})(?:/step_(?P<step>[^/]+))?(?:/|$)"
)


def parse_proc_cgroup(text: str) -> CgroupJob | None:
    """Parse the text of ``/proc/PID/cgroup``. Returns None when no line names a Slurm job
    (e.g. under proctrack/linuxproc, or a process outside any job)."""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].strip()
        if m := _V1_RE.search(path):
            return CgroupJob(
                job_id=m["job"],
                step=m["step"] or "",
                uid=int(m["uid"]),
                layout="v1-multi-slurmd" if m["multi"] else "v1",
                path=path,
            )
        if m := _V2_RE.search(path):
            return CgroupJob(job_id=m["job"], step=m["step"] or "", layout="v2", path=path)
        if m := _V2_SLUID_RE.search(path):
            return CgroupJob(
                job_id=None, step=m["step"] or "", sluid=m["sluid"], layout="v2-sluid", path=path
            )
    return None


@dataclass(frozen=True, slots=True)
class EnvironFacts:
    """Slurm (and Dask) facts from one process's environment."""

    job_id: str | None = None
    step_id: str | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None
    user: str | None = None
    uid: int | None = None
    job_gpus: tuple[int, ...] | None = None  # SLURM_JOB_GPUS: global indices on the node
    step_gpus: tuple[int, ...] | None = None  # SLURM_STEP_GPUS (srun steps only)
    cuda_visible_devices: tuple[str, ...] | None = None  # indices or UUIDs, as given
    restart_count: int | None = None
    node: str | None = None  # SLURMD_NODENAME
    dask_scheduler: str | None = None  # DASK_SCHEDULER_ADDRESS
    dask_worker_name: str | None = None  # DASK_WORKER_NAME (set by some launchers)


def parse_environ(data: bytes | str) -> EnvironFacts:
    """Parse ``/proc/PID/environ`` (NUL-separated ``KEY=VALUE``). Malformed entries are
    skipped; a malformed job id or GPU list is treated as absent."""
    raw = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    env: dict[str, str] = {}
    for item in raw.split("\0"):
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value

    def indices(key: str) -> tuple[int, ...] | None:
        value = env.get(key)
        if value is None:
            return None
        try:
            return parse_index_list(value)
        except ValueError:
            return None

    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not is_job_id(job_id):
        job_id = None
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    return EnvironFacts(
        job_id=job_id,
        step_id=env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID"),
        array_job_id=env.get("SLURM_ARRAY_JOB_ID"),
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
        user=env.get("SLURM_JOB_USER"),
        uid=int_or_none(env.get("SLURM_JOB_UID")),
        job_gpus=indices("SLURM_JOB_GPUS"),
        step_gpus=indices("SLURM_STEP_GPUS"),
        cuda_visible_devices=tuple(s.strip() for s in cvd.split(",") if s.strip())
        if cvd is not None
        else None,
        restart_count=int_or_none(env.get("SLURM_RESTART_COUNT")),
        node=env.get("SLURMD_NODENAME"),
        dask_scheduler=env.get("DASK_SCHEDULER_ADDRESS") or None,
        dask_worker_name=env.get("DASK_WORKER_NAME") or None,
    )


def parse_cmdline(data: bytes) -> tuple[str, ...]:
    """``/proc/PID/cmdline`` (NUL-separated argv) -> argv."""
    text = data.decode("utf-8", "replace")
    return tuple(text.rstrip("\0").split("\0")) if text else ()
