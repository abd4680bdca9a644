"""Protobuf messages of the query and admin APIs to domain types and back: cluster state,
history, audit records, job summaries and admin actions (reports and windows:
:mod:`gpuwarden.common.convert`).
"""

from __future__ import annotations

import json
from typing import Any

from gpuwarden.common.convert import (
    gpu_from_pb,
    gpu_to_pb,
    opt_float,
    opt_int,
    slurm_from_pb,
    slurm_to_pb,
    window_record_from_pb,
)
from gpuwarden.common.jobstats import GpuStats, IdlePeriod, JobStats, WasteRow
from gpuwarden.common.types import (
    ActionReply,
    ActionRequest,
    AuditRecord,
    ClusterSnapshot,
    GpuState,
    HistoryPage,
    NodeState,
)
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

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
        util_mean_pct=opt_float(msg, "util_mean_pct"),
        util_max_pct=opt_float(msg, "util_max_pct"),
        mem_peak_bytes=opt_int(msg, "mem_peak_bytes"),
        mem_total_bytes=opt_int(msg, "mem_total_bytes"),
        power_mean_w=opt_float(msg, "power_mean_w"),
        sm_active_mean_pct=opt_float(msg, "sm_active_mean_pct"),
        tensor_active_mean_pct=opt_float(msg, "tensor_active_mean_pct"),
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
        start=opt_float(msg, "start"),
        end=opt_float(msg, "end"),
        last_seen=opt_float(msg, "last_seen"),
        cpu_util_mean_pct=opt_float(msg, "cpu_util_mean_pct"),
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
