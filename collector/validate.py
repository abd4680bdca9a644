"""Validation of everything an agent sends. Bad input is rejected whole, with a message that
names the field, and changes nothing (the servicer turns it into INVALID_ARGUMENT).

Every field is checked against its real range before anything reaches the store: integers
that SQLite cannot hold (or no GPU could report) are refused here rather than failing a shared
transaction later. Identities (node, GPU UUID, job id, user, account, partition, QOS, Dask
addresses) must match their whole pattern in ASCII; free text (job and GPU names, process
names) may be any Unicode except control (C0, DEL, C1) and bidirectional or invisible format
characters, which could hide or reorder what a sysadmin reads.

Each message type's scalar fields are checked from a table (:mod:`fieldcheck`): one pass
over the received protobuf reads each field once and builds the domain report directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NoReturn

from gpuwarden.collector.fieldcheck import (
    Bounds,
    Check,
    ReportInvalid,
    check_integer,
    check_real,
    check_text,
    compile_builder,
    compile_reader,
    explain,
    identity,
    integer,
    plain,
    real,
    text,
    text_ok,
)
from gpuwarden.common.extra import MAX_EXTRA_ABS, MAX_EXTRA_FIELDS, extra_problem
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo, SlurmStatus
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.slurm import is_job_id, is_node_name

__all__ = ["Limits", "ReportInvalid", "validate_report"]

UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.:-]{0,95}", re.ASCII)
# user, account, partition, QOS: POSIX/LDAP-like names (sssd users may carry '@domain')
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+$-]{0,127}", re.ASCII)
STEP_RE = re.compile(r"[A-Za-z0-9_.+-]{0,32}", re.ASCII)
DASK_ADDRESS_RE = re.compile(
    r"(?:tcp|tls|ucx|ws|wss)://(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}",
    re.ASCII,
)
DASK_WORKER_RE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}", re.ASCII)

MAX_SEQ = 2**53  # one report a millisecond for 285,000 years
MAX_GPU_MEM_BYTES = 2**50  # 1 PiB: far above any GPU, far below SQLite's limit
MAX_PID = 2**22  # Linux's pid_max ceiling
MAX_TIME_S = 1e11  # Unix seconds (year 5138)
MAX_DEVICE_MINOR = (1 << 20) - 1  # Linux minor numbers have 20 bits
MAX_GPU_INSTANCE_ID = 4096
MAX_GPU_INDEX = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    max_gpus_per_node: int = 64
    max_processes_per_gpu: int = 512
    max_errors_per_gpu: int = 32
    max_string_len: int = 256
    max_clock_skew_s: float = 300.0
    max_window_s: float = 3600.0
    max_power_w: float = 5000.0


# ---- the tables: each message's scalar fields, in the order they are checked -------------

_GPU_UUID = "a valid GPU UUID"
GPU_CHECKS: tuple[Check, ...] = (
    identity("uuid", UUID_RE.fullmatch, _GPU_UUID, required=True, shown=100),
    identity("parent_uuid", UUID_RE.fullmatch, _GPU_UUID, shown=100),
    integer("index", 0, MAX_GPU_INDEX, message="is out of range"),
    integer("minor_number", 0, MAX_DEVICE_MINOR, optional=True),
    integer("gpu_instance_id", 0, MAX_GPU_INSTANCE_ID, optional=True),
    integer("mig_caps_minor", 0, MAX_DEVICE_MINOR, optional=True),
    integer("samples", 0, "samples"),
    text("name"),
    real("util_mean", 0.0, 100.0),
    real("util_max", 0.0, 100.0),
    real("util_min", 0.0, 100.0),
    real("mem_util_mean", 0.0, 100.0),
    real("zero_frac", 0.0, 1.0),
    real("power_mean_w", 0.0, "power_w"),
    real("temperature_c", -50.0, 200.0),
    integer("mem_used_max_bytes", 0, MAX_GPU_MEM_BYTES, optional=True),
    integer("mem_total_bytes", 0, MAX_GPU_MEM_BYTES, optional=True),
    plain("allocated"),
)
JOB_CHECKS: tuple[Check, ...] = (
    identity("job_id", is_job_id, "a Slurm job id", required=True, shown=40),
    identity("step", STEP_RE.fullmatch, "a Slurm step name"),
    identity("user", NAME_RE.fullmatch, "a valid user name"),
    identity("account", NAME_RE.fullmatch, "a valid account name"),
    identity("partition", NAME_RE.fullmatch, "a valid partition name"),
    identity("qos", NAME_RE.fullmatch, "a valid qos name"),
    identity("dask_scheduler", DASK_ADDRESS_RE.fullmatch, "a scheduler URL"),
    identity("dask_worker", DASK_WORKER_RE.fullmatch, "a Dask worker name"),
    identity("source", STEP_RE.fullmatch, "an attribution source"),
    text("name"),
    real("cpu_util_pct", 0.0, 100_000.0),
    integer("start_time", 0, "start_time"),
    plain("batch"),
    plain("requeue"),
)
PROCESS_CHECKS: tuple[Check, ...] = (
    integer("pid", 0, MAX_PID),
    integer("used_mem_bytes", 0, MAX_GPU_MEM_BYTES, optional=True),
    text("name"),
)


def _bad_gpu(g: Any, b: Bounds, i: int) -> NoReturn:
    explain(f"gpus[{i}]", g, GPU_CHECKS, b)


def _bad_job(job: Any, b: Bounds, i: int) -> NoReturn:
    explain(f"gpus[{i}].job", job, JOB_CHECKS, b)


def _bad_process(p: Any, b: Bounds, at: tuple[int, int]) -> NoReturn:
    explain(f"gpus[{at[0]}].processes[{at[1]}]", p, PROCESS_CHECKS, b)


_read_gpu = compile_reader("GpuWindow", GPU_CHECKS, _bad_gpu)
_read_job = compile_reader("JobInfo", JOB_CHECKS, _bad_job)
_read_process = compile_reader("ProcessInfo", PROCESS_CHECKS, _bad_process)
_build_job = compile_builder(JobInfo, [c.name for c in JOB_CHECKS])
_build_process = compile_builder(ProcessInfo, [c.name for c in PROCESS_CHECKS])
_GPU_COMPOSITE = ("processes", "errors", "job", "extra_mean", "extra_max")  # built by hand
_build_gpu = compile_builder(GpuWindow, [c.name for c in GPU_CHECKS] + list(_GPU_COMPOSITE))
_AT = {c.name: k for k, c in enumerate(GPU_CHECKS)}  # where each field is in a reader's tuple
_PARENT_UUID, _UTIL_MIN, _UTIL_MAX = _AT["parent_uuid"], _AT["util_min"], _AT["util_max"]
_MEM_USED, _MEM_TOTAL = _AT["mem_used_max_bytes"], _AT["mem_total_bytes"]
_EXTRA_NAMES: set[str] = set()  # extra-field names that passed (bounded as in fieldcheck)
# A job's facts repeat in every window of its GPUs: the JobInfo built from the same bytes
# under the same text limit is the same (frozen) object. start_time's bound moves with the
# clock, so it is checked again on every hit. (A job with its CPU use, which changes every
# window, is built each time; its identities are still remembered by the rows.)
_JOBS: dict[tuple[bytes, int], JobInfo] = {}
# Likewise a process seen in one window is mostly seen again, unchanged, in the next.
_PROCESSES: dict[tuple[bytes, int], ProcessInfo] = {}
_CACHE_MAX = 1 << 14  # entries of each cache before it starts again


def validate_report(msg: pb.NodeReport, *, now: float, limits: Limits = Limits()) -> NodeReport:
    """Check ``msg`` against every bound and return the domain report.

    A window that ends after ``now`` (the agent's clock is ahead, within
    ``max_clock_skew_s``) is moved back to end at ``now``, keeping its length: a window from
    the future would otherwise make every honest window after it look late to the rules.
    """
    node = msg.node
    if not is_node_name(node):
        raise ReportInvalid(f"node={node[:80]!r} is not a valid node name")
    seq = msg.seq
    check_integer("seq", seq, 1, MAX_SEQ)
    start, end = msg.window_start, msg.window_end
    for name, value in (("window_start", start), ("window_end", end)):
        check_real(name, value, 0, MAX_TIME_S)
        if value > now + limits.max_clock_skew_s:
            raise ReportInvalid(
                f"{name}={value} is {value - now:.0f} s ahead of the collector's clock "
                f"(allowance {limits.max_clock_skew_s:g} s)"
            )
    if end < start:
        raise ReportInvalid(f"window_end={end} is before window_start={start}")
    if end - start > limits.max_window_s:
        raise ReportInvalid(
            f"window of {end - start:.0f} s is longer than {limits.max_window_s:.0f} s"
        )
    gpus_pb = msg.gpus
    if len(gpus_pb) > limits.max_gpus_per_node:
        raise ReportInvalid(f"{len(gpus_pb)} GPUs in one report (limit {limits.max_gpus_per_node})")
    check_text("agent_id", msg.agent_id, limits.max_string_len)
    check_text("agent_version", msg.agent_version, limits.max_string_len)
    has_slurm = msg.HasField("slurm")
    slurm_pb = msg.slurm
    check_text("slurm.error", slurm_pb.error, 4 * limits.max_string_len)
    b = Bounds(
        text=limits.max_string_len,
        samples=int(limits.max_window_s * 1000),
        power_w=limits.max_power_w,
        start_time=int(now + limits.max_clock_skew_s),
    )
    gpus = tuple(_gpu(g, i, b, limits) for i, g in enumerate(gpus_pb))
    if len({g.uuid for g in gpus}) < len(gpus):
        seen: set[str] = set()
        for i, g in enumerate(gpus):
            if g.uuid in seen:
                raise ReportInvalid(f"gpus[{i}].uuid={g.uuid!r} appears twice")
            seen.add(g.uuid)
    ahead = end - now
    if ahead > 0:
        start, end = start - ahead, now
    return NodeReport(
        node=node,
        seq=seq,
        window_start=start,
        window_end=end,
        gpus=gpus,
        slurm=SlurmStatus(slurm_pb.available, slurm_pb.error)
        if has_slurm
        else SlurmStatus(available=False, error="not reported"),
        agent_id=msg.agent_id,
        agent_version=msg.agent_version,
    )


def _gpu(g: pb.GpuWindow, i: int, b: Bounds, limits: Limits) -> GpuWindow:
    scalars = _read_gpu(g, b, i)  # GPU_CHECKS's fields, in the table's order
    if not scalars[_PARENT_UUID]:
        for field in ("gpu_instance_id", "mig_caps_minor"):
            if scalars[_AT[field]] is not None:
                raise ReportInvalid(f"gpus[{i}].{field} is set on a GPU without parent_uuid")
    util_min, util_max = scalars[_UTIL_MIN], scalars[_UTIL_MAX]
    if util_min is not None and util_max is not None and util_min > util_max:
        raise ReportInvalid(f"gpus[{i}].util_min={util_min} is above util_max={util_max}")
    used, total = scalars[_MEM_USED], scalars[_MEM_TOTAL]
    if used is not None and total is not None and used > total:
        raise ReportInvalid(f"gpus[{i}].mem_used_max_bytes={used} exceeds mem_total_bytes={total}")
    gpu: GpuWindow = _build_gpu(
        *scalars,
        _processes(g.processes, i, b, limits) if g.processes else (),
        _errors(g.errors, i, limits) if g.errors else (),
        _job(g.job, i, b) if g.HasField("job") else None,
        _extras(g.extra_mean, f"gpus[{i}].extra_mean") if g.extra_mean else {},
        _extras(g.extra_max, f"gpus[{i}].extra_max") if g.extra_max else {},
    )
    return gpu


def _job(msg: pb.JobInfo, i: int, b: Bounds) -> JobInfo:
    if msg.HasField("cpu_util_pct"):  # new in every window: nothing worth remembering
        built: JobInfo = _build_job(*_read_job(msg, b, i))
        return built
    key = (msg.SerializeToString(), b.text)
    job = _JOBS.get(key)
    if job is None or job.start_time > b.start_time:
        job = _build_job(*_read_job(msg, b, i))
        if len(_JOBS) >= _CACHE_MAX:
            _JOBS.clear()
        _JOBS[key] = job
    return job


def _processes(procs: Any, i: int, b: Bounds, limits: Limits) -> tuple[ProcessInfo, ...]:
    if len(procs) > limits.max_processes_per_gpu:
        raise ReportInvalid(
            f"gpus[{i}] has {len(procs)} processes (limit {limits.max_processes_per_gpu})"
        )
    out = []
    cache = _PROCESSES
    for j, p in enumerate(procs):
        key = (p.SerializeToString(), b.text)
        proc = cache.get(key)
        if proc is None:
            proc = _build_process(*_read_process(p, b, (i, j)))
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[key] = proc
        out.append(proc)
    return tuple(out)


def _errors(errors: Any, i: int, limits: Limits) -> tuple[str, ...]:
    if len(errors) > limits.max_errors_per_gpu:
        raise ReportInvalid(
            f"gpus[{i}] has {len(errors)} errors (limit {limits.max_errors_per_gpu})"
        )
    out = tuple(errors)
    for j, e in enumerate(out):
        if len(e) > limits.max_string_len or not text_ok(e):
            check_text(f"gpus[{i}].errors[{j}]", e, limits.max_string_len)
    return out


def _extras(fields: Any, where: str) -> dict[str, float]:
    if len(fields) > MAX_EXTRA_FIELDS:
        raise ReportInvalid(f"{where} has {len(fields)} fields (limit {MAX_EXTRA_FIELDS})")
    out = dict(fields)
    known = _EXTRA_NAMES
    for name, value in out.items():
        if name in known and -MAX_EXTRA_ABS <= value <= MAX_EXTRA_ABS:
            continue
        problem = extra_problem(name, value)
        if problem is not None:
            raise ReportInvalid(f"{where}: {problem}")
        if len(known) >= 1 << 12:
            known.clear()
        known.add(name)
    return out
