"""Validation of everything an agent sends. Bad input is rejected whole, with a message that
names the field, and changes nothing (the servicer turns it into INVALID_ARGUMENT)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from gpuwarden.common.convert import report_from_pb
from gpuwarden.common.extra import MAX_EXTRA_FIELDS, extra_problem
from gpuwarden.common.types import NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UUID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.:-]{0,95}$")
JOB_ID_RE = re.compile(r"^\d{1,12}(?:[_+]\d{1,9})?$")
CONTROL_RE = re.compile(r"[\x00-\x1f]")


class ReportInvalid(ValueError):
    """The report breaks a bound; the message names the field and the value."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_gpus_per_node: int = 64
    max_processes_per_gpu: int = 512
    max_errors_per_gpu: int = 32
    max_string_len: int = 256
    max_clock_skew_s: float = 300.0
    max_window_s: float = 3600.0
    max_power_w: float = 5000.0


def _finite(where: str, value: float, lo: float, hi: float) -> None:
    if not math.isfinite(value):
        raise ReportInvalid(f"{where}={value} is not a finite number")
    if value < lo or value > hi:
        raise ReportInvalid(f"{where}={value} is outside [{lo:g}, {hi:g}]")


def _string(where: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ReportInvalid(f"{where} is {len(value)} characters long (limit {limit})")
    if CONTROL_RE.search(value):
        raise ReportInvalid(f"{where} contains control characters")


def validate_report(msg: pb.NodeReport, *, now: float, limits: Limits = Limits()) -> NodeReport:
    """Check ``msg`` against every bound and return the domain report."""
    if not NODE_RE.match(msg.node):
        raise ReportInvalid(f"node={msg.node[:80]!r} is not a valid node name")
    if msg.seq == 0:
        raise ReportInvalid("seq must be > 0")
    _finite("window_start", msg.window_start, 0, now + limits.max_clock_skew_s)
    _finite("window_end", msg.window_end, 0, now + limits.max_clock_skew_s)
    if msg.window_end < msg.window_start:
        raise ReportInvalid(
            f"window_end={msg.window_end} is before window_start={msg.window_start}"
        )
    if msg.window_end - msg.window_start > limits.max_window_s:
        raise ReportInvalid(
            f"window of {msg.window_end - msg.window_start:.0f} s is longer than "
            f"{limits.max_window_s:.0f} s"
        )
    if len(msg.gpus) > limits.max_gpus_per_node:
        raise ReportInvalid(
            f"{len(msg.gpus)} GPUs in one report (limit {limits.max_gpus_per_node})"
        )
    _string("agent_id", msg.agent_id, limits.max_string_len)
    _string("agent_version", msg.agent_version, limits.max_string_len)
    _string("slurm.error", msg.slurm.error, 4 * limits.max_string_len)
    seen: set[str] = set()
    for i, g in enumerate(msg.gpus):
        _validate_gpu(f"gpus[{i}]", g, limits)
        if g.uuid in seen:
            raise ReportInvalid(f"gpus[{i}].uuid={g.uuid!r} appears twice")
        seen.add(g.uuid)
    return report_from_pb(msg)


def _validate_gpu(where: str, g: pb.GpuWindow, limits: Limits) -> None:
    if not UUID_RE.match(g.uuid):
        raise ReportInvalid(f"{where}.uuid={g.uuid[:100]!r} is not a valid GPU UUID")
    if g.parent_uuid and not UUID_RE.match(g.parent_uuid):
        raise ReportInvalid(f"{where}.parent_uuid={g.parent_uuid[:100]!r} is not a valid GPU UUID")
    if g.index > 4096:
        raise ReportInvalid(f"{where}.index={g.index} is out of range")
    _string(f"{where}.name", g.name, limits.max_string_len)
    for field in ("util_mean", "util_max", "util_min", "mem_util_mean"):
        if g.HasField(field):
            _finite(f"{where}.{field}", getattr(g, field), 0.0, 100.0)
    if g.HasField("zero_frac"):
        _finite(f"{where}.zero_frac", g.zero_frac, 0.0, 1.0)
    if g.HasField("util_min") and g.HasField("util_max") and g.util_min > g.util_max:
        raise ReportInvalid(f"{where}.util_min={g.util_min} is above util_max={g.util_max}")
    if g.HasField("power_mean_w"):
        _finite(f"{where}.power_mean_w", g.power_mean_w, 0.0, limits.max_power_w)
    if g.HasField("temperature_c"):
        _finite(f"{where}.temperature_c", g.temperature_c, -50.0, 200.0)
    if (
        g.HasField("mem_used_max_bytes")
        and g.HasField("mem_total_bytes")
        and g.mem_used_max_bytes > g.mem_total_bytes
    ):
        raise ReportInvalid(
            f"{where}.mem_used_max_bytes={g.mem_used_max_bytes} exceeds "
            f"mem_total_bytes={g.mem_total_bytes}"
        )
    if len(g.processes) > limits.max_processes_per_gpu:
        raise ReportInvalid(
            f"{where} has {len(g.processes)} processes (limit {limits.max_processes_per_gpu})"
        )
    for j, p in enumerate(g.processes):
        _string(f"{where}.processes[{j}].name", p.name, limits.max_string_len)
    if len(g.errors) > limits.max_errors_per_gpu:
        raise ReportInvalid(
            f"{where} has {len(g.errors)} errors (limit {limits.max_errors_per_gpu})"
        )
    for j, e in enumerate(g.errors):
        _string(f"{where}.errors[{j}]", e, limits.max_string_len)
    for part in ("extra_mean", "extra_max"):
        fields = getattr(g, part)
        if len(fields) > MAX_EXTRA_FIELDS:
            raise ReportInvalid(
                f"{where}.{part} has {len(fields)} fields (limit {MAX_EXTRA_FIELDS})"
            )
        for name, value in fields.items():
            problem = extra_problem(name, value)
            if problem is not None:
                raise ReportInvalid(f"{where}.{part}: {problem}")
    if g.HasField("job"):
        job = g.job
        if not JOB_ID_RE.match(job.job_id):
            raise ReportInvalid(f"{where}.job.job_id={job.job_id[:40]!r} is not a Slurm job id")
        for field in (
            "step",
            "user",
            "account",
            "partition",
            "name",
            "qos",
            "dask_scheduler",
            "dask_worker",
            "source",
        ):
            _string(f"{where}.job.{field}", getattr(job, field), limits.max_string_len)
        if job.HasField("cpu_util_pct"):
            _finite(f"{where}.job.cpu_util_pct", job.cpu_util_pct, 0.0, 100_000.0)
        if job.start_time < 0:
            raise ReportInvalid(f"{where}.job.start_time={job.start_time} is negative")
