"""Parser of ``squeue --json`` (Slurm 22.05 plain numbers; 23.02+ ``{"set", "number"}``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from gpuwarden.slurm.gres import parse_gres_indices
from gpuwarden.slurm.hostlist import expand_hostlist
from gpuwarden.slurm.ids import validate_job_id
from gpuwarden.slurm.job import SlurmJob

__all__ = ["parse_squeue_json"]


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


def _squeue_job(d: Mapping[str, Any]) -> SlurmJob:
    job_id = str(_json_number(d.get("job_id")))
    nodes = expand_hostlist(str(d.get("nodes") or ""))
    gres_detail = [str(g) for g in d.get("gres_detail") or []]
    gpus_by_node: dict[str, tuple[int, ...]] = {}
    for node, gres in zip(nodes, gres_detail, strict=False):
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
        user=str(d.get("user_name") or ""),
        uid=_json_number(d.get("user_id")),
        account=str(d.get("account") or ""),
        partition=str(d.get("partition") or ""),
        name=str(d.get("name") or ""),
        qos=str(d.get("qos") or ""),
        batch=bool(batch_flag) if batch_flag is not None else True,
        requeue=bool(d.get("requeue")),
        restart_count=_json_number(d.get("restart_cnt")) or 0,
        start_time=start if start and state != "PENDING" else None,
        end_time=end or None,
        reason=str(d.get("state_reason") or ""),
        nodes=nodes,
        batch_host=str(d.get("batch_host") or ""),
        gpus_by_node=gpus_by_node,
        array_job_id=str(array_job) if array_job else None,
        array_task_id=(str(array_task) if array_task is not None else array_task_str or None)
        if array_job
        else None,
        het_job_id=str(het_job) if het_job else None,
        het_job_offset=_json_number(d.get("het_job_offset")) if het_job else None,
        sluid=str(d["sluid"]) if d.get("sluid") else None,
    )


def parse_squeue_json(text: str, job_ids: Iterable[str] | None = None) -> list[SlurmJob]:
    """Parse ``squeue --json``. Slurm 22.05 ignores ``-j``/``-t``/``--me`` with ``--json`` and
    returns every job, so pass ``job_ids`` to filter here (matching the job id or the
    display id ``A_T`` / ``H+O``)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"squeue --json output is not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise ValueError("squeue --json output has no 'jobs' list")
    jobs = [_squeue_job(d) for d in doc["jobs"] if isinstance(d, dict)]
    if job_ids is not None:
        wanted = set(job_ids)
        jobs = [j for j in jobs if j.job_id in wanted or j.display_id in wanted]
    return jobs
