"""The one place that maps protobuf messages to domain types and back.

Domain code never passes ``_pb2`` messages around; servicers and clients call these.
"""

from __future__ import annotations

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
_GPU_OPTIONAL_INTS = ("mem_used_max_bytes", "mem_total_bytes")


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


def gpu_from_pb(msg: pb.GpuWindow) -> GpuWindow:
    return GpuWindow(
        uuid=msg.uuid,
        index=msg.index,
        name=msg.name,
        parent_uuid=msg.parent_uuid,
        samples=msg.samples,
        util_mean=_opt_float(msg, "util_mean"),
        util_max=_opt_float(msg, "util_max"),
        util_min=_opt_float(msg, "util_min"),
        zero_frac=_opt_float(msg, "zero_frac"),
        mem_util_mean=_opt_float(msg, "mem_util_mean"),
        mem_used_max_bytes=_opt_int(msg, "mem_used_max_bytes"),
        mem_total_bytes=_opt_int(msg, "mem_total_bytes"),
        power_mean_w=_opt_float(msg, "power_mean_w"),
        temperature_c=_opt_float(msg, "temperature_c"),
        processes=tuple(
            ProcessInfo(pid=p.pid, used_mem_bytes=_opt_int(p, "used_mem_bytes"), name=p.name)
            for p in msg.processes
        ),
        errors=tuple(msg.errors),
        job=job_from_pb(msg.job) if msg.HasField("job") else None,
        allocated=msg.allocated,
        extra_mean=dict(msg.extra_mean),
        extra_max=dict(msg.extra_max),
    )


def report_to_pb(report: NodeReport) -> pb.NodeReport:
    return pb.NodeReport(
        node=report.node,
        seq=report.seq,
        agent_id=report.agent_id,
        window_start=report.window_start,
        window_end=report.window_end,
        gpus=[gpu_to_pb(g) for g in report.gpus],
        slurm=pb.SlurmStatus(available=report.slurm.available, error=report.slurm.error),
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
        slurm=SlurmStatus(available=msg.slurm.available, error=msg.slurm.error)
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
