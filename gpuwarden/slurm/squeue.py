"""Parser of ``squeue --json`` (Slurm 22.05 plain numbers; 23.02+ ``{"set", "number"}``).

Structured output: user text (job name, comment, paths) is a JSON string and can never
change another field, so agent attribution and the collector's checks read this. A job
record that cannot be read is skipped, counted and logged; the others are still returned.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from gpuwarden.slurm.gres import parse_gres_indices
from gpuwarden.slurm.hostlist import expand_hostlist
from gpuwarden.slurm.ids import validate_job_id
from gpuwarden.slurm.job import SlurmJob
from gpuwarden.slurm.parsed import ParsedJobs

__all__ = ["parse_squeue_json", "read_squeue_jobs"]

log = logging.getLogger(__name__)


def _json_number(value: Any) -> int | None:
    """22.05 prints plain numbers; later versions wrap them in {"set", "infinite", "number"}."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        return _json_number(value.get("number"))
    return None


def _json_state(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value or "")


def _text(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise ValueError(f"{key} is {type(value).__name__}, not text")
    return str(value)


def _cpus_by_node(d: Mapping[str, Any]) -> dict[str, int]:
    """Allocated cores per node from ``job_resources.allocated_nodes`` (22.05 layout)."""
    out: dict[str, int] = {}
    resources = d.get("job_resources")
    nodes = resources.get("allocated_nodes") if isinstance(resources, dict) else None
    for entry in nodes if isinstance(nodes, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("nodename"), str):
            continue
        sockets = entry.get("sockets")
        count = 0
        for socket in sockets.values() if isinstance(sockets, dict) else []:
            cores = socket.get("cores") if isinstance(socket, dict) else None
            if isinstance(cores, dict):
                count += sum(1 for state in cores.values() if state == "allocated")
        if count:
            out[entry["nodename"]] = count
    return out


def _squeue_job(d: Mapping[str, Any]) -> SlurmJob:
    job_id = str(_json_number(d.get("job_id")))
    nodes = expand_hostlist(_text(d, "nodes"))
    detail = d.get("gres_detail") or []
    if not isinstance(detail, list):
        raise ValueError(f"job {job_id}: gres_detail is not a list")
    gpus_by_node: dict[str, tuple[int, ...]] = {}
    for node, gres in zip(nodes, detail, strict=False):
        if not isinstance(gres, str):
            raise ValueError(f"job {job_id}: gres_detail holds {type(gres).__name__}")
        gpus_by_node[node] = parse_gres_indices(gres)
    state = _json_state(d.get("job_state"))
    start = _json_number(d.get("start_time"))
    end = _json_number(d.get("end_time"))
    array_job = _json_number(d.get("array_job_id")) or 0
    array_task = _json_number(d.get("array_task_id"))
    array_task_str = str(d.get("array_task_string") or "")
    het_job = _json_number(d.get("het_job_id")) or 0
    batch_flag = d.get("batch_flag")
    return SlurmJob(
        job_id=validate_job_id(job_id),
        state=state,
        user=_text(d, "user_name"),
        uid=_json_number(d.get("user_id")),
        account=_text(d, "account"),
        partition=_text(d, "partition"),
        name=_text(d, "name"),
        qos=_text(d, "qos"),
        batch=bool(batch_flag) if batch_flag is not None else True,
        requeue=bool(d.get("requeue")),
        restart_count=_json_number(d.get("restart_cnt")) or 0,
        start_time=start if start and state != "PENDING" else None,
        end_time=end or None,
        reason=_text(d, "state_reason"),
        nodes=nodes,
        batch_host=_text(d, "batch_host"),
        gpus_by_node=gpus_by_node,
        cpus_by_node=_cpus_by_node(d),
        num_cpus=_json_number(d.get("cpus")),
        array_job_id=str(array_job) if array_job else None,
        array_task_id=(str(array_task) if array_task is not None else array_task_str or None)
        if array_job
        else None,
        het_job_id=str(het_job) if het_job else None,
        het_job_offset=_json_number(d.get("het_job_offset")) if het_job else None,
        sluid=str(d["sluid"]) if d.get("sluid") else None,
    )


def read_squeue_jobs(text: str) -> ParsedJobs:
    """Every job record of ``squeue --json`` that can be read, and a message for each one
    skipped. Raises ValueError when the text is not squeue's JSON at all."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"squeue --json output is not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise ValueError("squeue --json output has no 'jobs' list")
    out = ParsedJobs()
    for i, d in enumerate(doc["jobs"]):
        try:
            if not isinstance(d, dict):
                raise ValueError(f"is {type(d).__name__}, not an object")
            out.jobs.append(_squeue_job(d))
        except (ValueError, TypeError, AttributeError) as e:
            out.skipped.append(f"jobs[{i}]: {e}")
    return out


def parse_squeue_json(text: str, job_ids: Iterable[str] | None = None) -> list[SlurmJob]:
    """Parse ``squeue --json``. Slurm 22.05 ignores ``-j``/``-t``/``--me`` with ``--json`` and
    returns every job, so pass ``job_ids`` to filter here (matching the job id or the
    display id ``A_T`` / ``H+O``). A job record that cannot be read is skipped and logged."""
    parsed = read_squeue_jobs(text)
    for why in parsed.skipped:
        log.warning("squeue --json: skipped one job record: %s", why)
    jobs = parsed.jobs
    if job_ids is not None:
        wanted = set(job_ids)
        jobs = [j for j in jobs if j.job_id in wanted or j.display_id in wanted]
    return jobs
