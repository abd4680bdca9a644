"""Protobuf messages of the agents' reports and stored windows to domain types and back.

Domain code never passes ``_pb2`` messages around; servicers and clients call these and,
for the query and admin APIs' messages, :mod:`gpuwarden.common.convert_query`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gpuwarden.common.types import (
    GpuWindow,
    JobInfo,
    NodeReport,
    ProcessInfo,
    SlurmStatus,
    WindowRecord,
)
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb


def _opt(msg: object, name: str) -> object | None:
    return getattr(msg, name) if msg.HasField(name) else None  # type: ignore[attr-defined]


def opt_float(msg: object, name: str) -> float | None:
    v = _opt(msg, name)
    return None if v is None else float(v)  # type: ignore[arg-type]


def opt_int(msg: object, name: str) -> int | None:
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
        cpu_util_pct=opt_float(msg, "cpu_util_pct"),
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
        ProcessInfo(pid=p.pid, used_mem_bytes=opt_int(p, "used_mem_bytes"), name=p.name)
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
