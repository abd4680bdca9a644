"""Parser of ``scontrol -d -o show job`` (one record a line, ``Key=value`` pairs)."""

from __future__ import annotations

import contextlib
import re
from datetime import datetime

from gpuwarden.slurm._values import int_or_none, null_to_empty
from gpuwarden.slurm.gres import parse_gres_indices
from gpuwarden.slurm.hostlist import expand_hostlist, parse_index_list
from gpuwarden.slurm.ids import validate_job_id
from gpuwarden.slurm.job import SlurmJob

__all__ = ["parse_scontrol_jobs"]


def _scontrol_time(value: str | None) -> int | None:
    """scontrol prints local time ``2026-11-28T04:45:01`` (or Unknown / None / N/A)."""
    if not value or not value[:1].isdigit():
        return None
    try:
        return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").timestamp())
    except ValueError:
        return None


_KEY_RE = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/]*)=")
_USER_RE = re.compile(r"(?P<name>[^()]*)(?:\((?P<uid>[0-9]+)\))?")


def _scontrol_fields(line: str) -> list[tuple[str, str]]:
    """Split one ``scontrol -o`` record into (key, value) pairs, in order. A value runs to
    the next ``Key=``, so values with spaces (job names, paths) stay whole."""
    matches = list(_KEY_RE.finditer(line))
    out: list[tuple[str, str]] = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        out.append((m.group(1), line[m.end() : end].strip()))
    return out


def _parse_scontrol_record(line: str) -> SlurmJob:
    pairs = _scontrol_fields(line)
    f: dict[str, str] = {}
    gpus_by_node: dict[str, tuple[int, ...]] = {}
    cpus_by_node: dict[str, int] = {}
    current_nodes: tuple[str, ...] = ()
    for key, value in pairs:
        if key == "Nodes":  # start of one per-node detail group (scontrol -d)
            current_nodes = expand_hostlist(value)
            continue
        if key == "CPU_IDs" and current_nodes:
            with contextlib.suppress(ValueError):
                count = len(parse_index_list(value))
                for node in current_nodes:
                    cpus_by_node[node] = count
            continue
        if key == "GRES" and current_nodes:
            idx = parse_gres_indices(value)
            for node in current_nodes:
                gpus_by_node[node] = tuple(sorted(set(gpus_by_node.get(node, ())) | set(idx)))
            continue
        f.setdefault(key, value)
    if "JobId" not in f or "JobState" not in f:
        raise ValueError(f"not a scontrol job record (no JobId/JobState): {line[:120]!r}")
    user_m = _USER_RE.fullmatch(f.get("UserId", ""))
    user = (user_m["name"] if user_m else "") or ""
    uid = int(user_m["uid"]) if user_m and user_m["uid"] else None
    array_job = null_to_empty(f.get("ArrayJobId"))
    het_job = null_to_empty(f.get("HetJobId"))
    return SlurmJob(
        job_id=validate_job_id(f["JobId"]),
        state=f["JobState"].split()[0],
        user=user,
        uid=uid,
        account=null_to_empty(f.get("Account")),
        partition=null_to_empty(f.get("Partition")),
        name=f.get("JobName", ""),
        qos=null_to_empty(f.get("QOS")),
        batch=f.get("BatchFlag", "1") != "0",
        requeue=f.get("Requeue", "0") == "1",
        restart_count=int_or_none(f.get("Restarts")) or 0,
        start_time=_scontrol_time(f.get("StartTime")) if f["JobState"] != "PENDING" else None,
        end_time=_scontrol_time(f.get("EndTime")),
        reason=null_to_empty(f.get("Reason")),
        nodes=expand_hostlist(null_to_empty(f.get("NodeList"))),
        batch_host=null_to_empty(f.get("BatchHost")),
        gpus_by_node=gpus_by_node,
        cpus_by_node=cpus_by_node,
        num_cpus=int_or_none(f.get("NumCPUs")),
        array_job_id=array_job or None,
        array_task_id=null_to_empty(f.get("ArrayTaskId")) or None,
        het_job_id=het_job or None,
        het_job_offset=int_or_none(f.get("HetJobOffset")) if het_job else None,
        sluid=null_to_empty(f.get("SLUID")) or None,
    )


def parse_scontrol_jobs(text: str) -> list[SlurmJob]:
    """Parse ``scontrol -d -o show job [ID]`` (one record a line). "No jobs in the system"
    gives ``[]``; a line that is not a job record raises ValueError quoting it."""
    jobs: list[SlurmJob] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("No jobs in the system"):
            continue
        jobs.append(_parse_scontrol_record(line))
    return jobs
