"""The one place that maps protobuf messages to domain types and back.

Domain code never passes ``_pb2`` messages around; servicers and clients call these.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gpuwarden.common.jobstats import GpuStats, IdlePeriod, JobStats, WasteRow
from gpuwarden.common.types import (
    ActionReply,
    ActionRequest,
    AuditRecord,
    ClusterSnapshot,
    GpuState,
    GpuWindow,
    HistoryPage,
    JobInfo,
    NodeReport,
    NodeState,
    ProcessInfo,
    SlurmStatus,
    WindowRecord,
)
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb


def _opt(msg: object, name: str) -> object | None:
    return getattr(msg, name) if msg.HasField(name) else None  # type: ignore[attr-defined]


def _opt_float(msg: object, name: str) -> float | None:
    v = _opt(msg, name)
    return None if v is None else float(v)  # type: ignore[arg-type]


def _opt_int(msg: object, name: str) -> int | None:
    v = _opt(msg, name)
    return None if v is None else int(v)  # type: ignore[call-overload]


def job_to_pb(job: JobInfo) -> pb.JobInfo:
    msg = pb.JobInfo(
        job_id=job.job_id,
        step=job.step,
        user=job.user,
        account=job.account,
        partition=job.partition,
        name=job.name,
        qos=job.qos,
        batch=job.batch,
        requeue=job.requeue,
        start_time=job.start_time,
        dask_scheduler=job.dask_scheduler,
        dask_worker=job.dask_worker,
        source=job.source,
    )
    if job.cpu_util_pct is not None:
        msg.cpu_util_pct = job.cpu_util_pct
    return msg


def job_from_pb(msg: pb.JobInfo) -> JobInfo:
    return JobInfo(
        job_id=msg.job_id,
        step=msg.step,
        user=msg.user,
        account=msg.account,
        partition=msg.partition,
        name=msg.name,
        qos=msg.qos,
        batch=msg.batch,
        requeue=msg.requeue,
        start_time=msg.start_time,
        dask_scheduler=msg.dask_scheduler,
        dask_worker=msg.dask_worker,
        source=msg.source,
        cpu_util_pct=_opt_float(msg, "cpu_util_pct"),
    )


_GPU_OPTIONAL_FLOATS = (
    "util_mean",
    "util_max",
    "util_min",
    "zero_frac",
    "mem_util_mean",
    "power_mean_w",
    "temperature_c",
)
_GPU_OPTIONAL_INTS = (
    "mem_used_max_bytes",
    "mem_total_bytes",
    "minor_number",
    "gpu_instance_id",
    "mig_caps_minor",
)


def gpu_to_pb(gpu: GpuWindow) -> pb.GpuWindow:
    msg = pb.GpuWindow(
        uuid=gpu.uuid,
        index=gpu.index,
        name=gpu.name,
        parent_uuid=gpu.parent_uuid,
        samples=gpu.samples,
        errors=list(gpu.errors),
        allocated=gpu.allocated,
    )
    for name in _GPU_OPTIONAL_FLOATS + _GPU_OPTIONAL_INTS:
        value = getattr(gpu, name)
        if value is not None:
            setattr(msg, name, value)
    for proc in gpu.processes:
        p = msg.processes.add(pid=proc.pid, name=proc.name)
        if proc.used_mem_bytes is not None:
            p.used_mem_bytes = proc.used_mem_bytes
    if gpu.job is not None:
        msg.job.CopyFrom(job_to_pb(gpu.job))
    msg.extra_mean.update(gpu.extra_mean)
    msg.extra_max.update(gpu.extra_max)
    return msg


def _processes_from_pb(msgs: Any) -> tuple[ProcessInfo, ...]:
    return tuple(
        ProcessInfo(pid=p.pid, used_mem_bytes=_opt_int(p, "used_mem_bytes"), name=p.name)
        for p in msgs
    )


# GpuWindow's fields are named as the message's; these need more than the value as it is.
_GPU_CONVERT: dict[str, Any] = {
    "processes": _processes_from_pb,
    "errors": tuple,
    "job": job_from_pb,
    "extra_mean": dict,
    "extra_max": dict,
}
_GPU_FIELDS = frozenset(f.name for f in dataclasses.fields(GpuWindow))


def gpu_from_pb(msg: pb.GpuWindow) -> GpuWindow:
    # Only the fields set on the wire (one call), not a HasField and a getattr per field:
    # this runs for every window the collector receives or reads back.
    kw: dict[str, Any] = {"uuid": "", "index": 0}
    for fd, value in msg.ListFields():
        name = fd.name
        if name in _GPU_FIELDS:  # a newer message's field GpuWindow lacks is not kept
            convert = _GPU_CONVERT.get(name)
            kw[name] = value if convert is None else convert(value)
    return GpuWindow(**kw)


def slurm_to_pb(status: SlurmStatus) -> pb.SlurmStatus:
    return pb.SlurmStatus(available=status.available, error=status.error)


def slurm_from_pb(msg: pb.SlurmStatus) -> SlurmStatus:
    return SlurmStatus(available=msg.available, error=msg.error)


def report_to_pb(report: NodeReport) -> pb.NodeReport:
    return pb.NodeReport(
        node=report.node,
        seq=report.seq,
        agent_id=report.agent_id,
        window_start=report.window_start,
        window_end=report.window_end,
        gpus=[gpu_to_pb(g) for g in report.gpus],
        slurm=slurm_to_pb(report.slurm),
        agent_version=report.agent_version,
    )


def report_from_pb(msg: pb.NodeReport) -> NodeReport:
    return NodeReport(
        node=msg.node,
        seq=msg.seq,
        agent_id=msg.agent_id,
        window_start=msg.window_start,
        window_end=msg.window_end,
        gpus=tuple(gpu_from_pb(g) for g in msg.gpus),
        slurm=slurm_from_pb(msg.slurm)
        if msg.HasField("slurm")
        else SlurmStatus(available=False, error="not reported"),
        agent_version=msg.agent_version,
    )


def window_record_to_pb(rec: WindowRecord) -> pb.WindowRecord:
    return pb.WindowRecord(
        node=rec.node,
        window_start=rec.window_start,
        window_end=rec.window_end,
        gpu=gpu_to_pb(rec.gpu),
    )


def window_record_from_pb(msg: pb.WindowRecord) -> WindowRecord:
    return WindowRecord(
        node=msg.node,
        window_start=msg.window_start,
        window_end=msg.window_end,
        gpu=gpu_from_pb(msg.gpu),
    )


# ---- query API ------------------------------------------------------------------------


def node_state_to_pb(node: NodeState) -> pb.NodeState:
    return pb.NodeState(
        node=node.node,
        last_seen=node.last_seen,
        connected=node.connected,
        slurm=slurm_to_pb(node.slurm),
        gpus=[
            pb.GpuState(node=node.node, latest=gpu_to_pb(g.latest), window_end=g.window_end)
            for g in node.gpus
        ],
        last_seq=node.last_seq,
    )


def node_state_from_pb(msg: pb.NodeState) -> NodeState:
    return NodeState(
        node=msg.node,
        last_seen=msg.last_seen,
        last_seq=msg.last_seq,
        connected=msg.connected,
        slurm=slurm_from_pb(msg.slurm),
        gpus=tuple(
            GpuState(window_end=g.window_end, latest=gpu_from_pb(g.latest)) for g in msg.gpus
        ),
    )


def snapshot_to_pb(snap: ClusterSnapshot) -> pb.ClusterSnapshot:
    return pb.ClusterSnapshot(
        now=snap.now,
        nodes=[node_state_to_pb(n) for n in snap.nodes],
        windows_stored=snap.windows_stored,
    )


def snapshot_from_pb(msg: pb.ClusterSnapshot) -> ClusterSnapshot:
    return ClusterSnapshot(
        now=msg.now,
        nodes=tuple(node_state_from_pb(n) for n in msg.nodes),
        windows_stored=msg.windows_stored,
    )


def history_from_pb(msg: pb.HistoryResponse) -> HistoryPage:
    return HistoryPage(
        windows=tuple(window_record_from_pb(w) for w in msg.windows), truncated=msg.truncated
    )


def audit_record_to_pb(record: AuditRecord) -> pb.AuditRecord:
    return pb.AuditRecord(
        ts=record.ts,
        job_id=record.job_id,
        kind=record.kind,
        action=record.action,
        outcome=record.outcome,
        dry_run=record.dry_run,
        gpus=list(record.gpus),
        detail=record.detail,
        evidence_json=json.dumps(dict(record.evidence), sort_keys=True, default=str),
        actor=record.actor,
        user=record.user,
        account=record.account,
        partition=record.partition,
        nodes=list(record.nodes),
    )


def _evidence_from_json(text: str) -> dict[str, Any]:
    """The evidence object, or the text kept as it came when it is not a JSON object."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparsed": text}
    return value if isinstance(value, dict) else {"unparsed": text}


def audit_record_from_pb(msg: pb.AuditRecord) -> AuditRecord:
    return AuditRecord(
        ts=msg.ts,
        job_id=msg.job_id,
        kind=msg.kind,
        action=msg.action,
        outcome=msg.outcome,
        dry_run=msg.dry_run,
        gpus=tuple(msg.gpus),
        detail=msg.detail,
        evidence=_evidence_from_json(msg.evidence_json),
        actor=msg.actor,
        user=msg.user,
        account=msg.account,
        partition=msg.partition,
        nodes=tuple(msg.nodes),
    )


def cluster_event_to_pb(event: NodeState | AuditRecord) -> pb.ClusterEvent:
    if isinstance(event, NodeState):
        return pb.ClusterEvent(node=node_state_to_pb(event))
    return pb.ClusterEvent(audit=audit_record_to_pb(event))


def cluster_event_from_pb(msg: pb.ClusterEvent) -> NodeState | AuditRecord | None:
    """The event a watch stream carried; None for a kind this client does not know."""
    which = msg.WhichOneof("event")
    if which == "node":
        return node_state_from_pb(msg.node)
    if which == "audit":
        return audit_record_from_pb(msg.audit)
    return None


# ---- job summaries ----------------------------------------------------------------------


def gpu_stats_to_pb(g: GpuStats) -> pb.GpuStats:
    msg = pb.GpuStats(
        node=g.node,
        uuid=g.uuid,
        index=g.index,
        name=g.name,
        reported_s=g.reported_s,
        active_s=g.active_s,
        idle_periods=[pb.IdlePeriod(start=p.start, end=p.end) for p in g.idle_periods],
        idle_periods_more=g.idle_periods_more,
    )
    for name in _GPU_OPTIONAL:
        value = getattr(g, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


_GPU_OPTIONAL = (
    "util_mean_pct",
    "util_max_pct",
    "mem_peak_bytes",
    "mem_total_bytes",
    "power_mean_w",
    "sm_active_mean_pct",
    "tensor_active_mean_pct",
)
_JOB_OPTIONAL = ("start", "end", "last_seen", "cpu_util_mean_pct")


def gpu_stats_from_pb(msg: pb.GpuStats) -> GpuStats:
    return GpuStats(
        node=msg.node,
        uuid=msg.uuid,
        index=msg.index,
        name=msg.name,
        reported_s=msg.reported_s,
        active_s=msg.active_s,
        idle_periods=tuple(IdlePeriod(p.start, p.end) for p in msg.idle_periods),
        idle_periods_more=msg.idle_periods_more,
        util_mean_pct=_opt_float(msg, "util_mean_pct"),
        util_max_pct=_opt_float(msg, "util_max_pct"),
        mem_peak_bytes=_opt_int(msg, "mem_peak_bytes"),
        mem_total_bytes=_opt_int(msg, "mem_total_bytes"),
        power_mean_w=_opt_float(msg, "power_mean_w"),
        sm_active_mean_pct=_opt_float(msg, "sm_active_mean_pct"),
        tensor_active_mean_pct=_opt_float(msg, "tensor_active_mean_pct"),
    )


def job_stats_to_pb(stats: JobStats | None) -> pb.JobStats:
    if stats is None:
        return pb.JobStats(found=False)
    msg = pb.JobStats(
        found=True,
        job_id=stats.job_id,
        user=stats.user,
        account=stats.account,
        partition=stats.partition,
        name=stats.name,
        state=stats.state,
        gpus=[gpu_stats_to_pb(g) for g in stats.gpus],
        decisions=[audit_record_to_pb(r) for r in stats.decisions],
        source=stats.source,
    )
    for name in _JOB_OPTIONAL:
        value = getattr(stats, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def job_stats_from_pb(msg: pb.JobStats) -> JobStats | None:
    if not msg.found:
        return None
    return JobStats(
        job_id=msg.job_id,
        user=msg.user,
        account=msg.account,
        partition=msg.partition,
        name=msg.name,
        state=msg.state,
        gpus=tuple(gpu_stats_from_pb(g) for g in msg.gpus),
        decisions=tuple(audit_record_from_pb(r) for r in msg.decisions),
        source=msg.source,
        start=_opt_float(msg, "start"),
        end=_opt_float(msg, "end"),
        last_seen=_opt_float(msg, "last_seen"),
        cpu_util_mean_pct=_opt_float(msg, "cpu_util_mean_pct"),
    )


def waste_rows_to_pb(rows: list[WasteRow]) -> pb.WasteReport:
    return pb.WasteReport(
        rows=[
            pb.WasteRow(
                by=r.by,
                key=r.key,
                jobs=r.jobs,
                allocated_h=r.allocated_h,
                active_h=r.active_h,
                idle_h=r.idle_h,
                reclaimed_h=r.reclaimed_h,
            )
            for r in rows
        ]
    )


def waste_rows_from_pb(msg: pb.WasteReport) -> list[WasteRow]:
    return [
        WasteRow(r.by, r.key, r.jobs, r.allocated_h, r.active_h, r.idle_h, r.reclaimed_h)
        for r in msg.rows
    ]


def action_request_to_pb(req: ActionRequest) -> pb.ActionRequest:
    return pb.ActionRequest(
        job_id=req.job_id, action=req.action, duration_s=req.duration_s, reason=req.reason
    )


def action_request_from_pb(msg: pb.ActionRequest) -> ActionRequest:
    return ActionRequest(
        job_id=msg.job_id, action=msg.action, duration_s=msg.duration_s, reason=msg.reason
    )


def action_reply_to_pb(reply: ActionReply) -> pb.ActionReply:
    return pb.ActionReply(
        ok=reply.ok,
        outcome=reply.outcome,
        detail=reply.detail,
        actor=reply.actor,
        dry_run=reply.dry_run,
    )


def action_reply_from_pb(msg: pb.ActionReply) -> ActionReply:
    return ActionReply(
        ok=msg.ok, outcome=msg.outcome, detail=msg.detail, actor=msg.actor, dry_run=msg.dry_run
    )
