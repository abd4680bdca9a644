"""Validation of everything an agent sends. Bad input is rejected whole, with a message that
names the field, and changes nothing (the servicer turns it into INVALID_ARGUMENT).

Every field is checked against its real range before anything reaches the store: integers
that SQLite cannot hold (or no GPU could report) are refused here rather than failing a shared
transaction later. Identities (node, GPU UUID, job id, user, account, partition, QOS, Dask
addresses) must match their whole pattern in ASCII; free text (job and GPU names, process
names) may be any Unicode except control (C0, DEL, C1) and bidirectional or invisible format
characters, which could hide or reorder what a sysadmin reads.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from gpuwarden.common.convert import report_from_pb
from gpuwarden.common.extra import MAX_EXTRA_FIELDS, extra_problem
from gpuwarden.common.types import NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.slurm import is_job_id, is_node_name

UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.:-]{0,95}", re.ASCII)
# user, account, partition, QOS: POSIX/LDAP-like names (sssd users may carry '@domain')
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+$-]{0,127}", re.ASCII)
STEP_RE = re.compile(r"[A-Za-z0-9_.+-]{0,32}", re.ASCII)
DASK_ADDRESS_RE = re.compile(
    r"(?:tcp|tls|ucx|ws|wss)://(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}",
    re.ASCII,
)
DASK_WORKER_RE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}", re.ASCII)
# C0, DEL, C1, soft hyphen, and the bidirectional / invisible format characters
# (ALM, Mongolian vowel separator, zero-width, LRM/RLM, embeddings/overrides, isolates, BOM).
UNSAFE_TEXT_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)

MAX_SEQ = 2**53  # one report a millisecond for 285,000 years
MAX_GPU_MEM_BYTES = 2**50  # 1 PiB: far above any GPU, far below SQLite's limit
MAX_PID = 2**22  # Linux's pid_max ceiling
MAX_TIME_S = 1e11  # Unix seconds (year 5138)


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


def _integer(where: str, value: int, lo: int, hi: int) -> None:
    if value < lo or value > hi:
        raise ReportInvalid(f"{where}={value} is outside [{lo}, {hi}]")


def _string(where: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ReportInvalid(f"{where} is {len(value)} characters long (limit {limit})")
    if UNSAFE_TEXT_RE.search(value):
        raise ReportInvalid(f"{where} contains control characters or bidirectional marks")


def _identity(where: str, value: str, pattern: re.Pattern[str], what: str) -> None:
    if value and not pattern.fullmatch(value):
        raise ReportInvalid(f"{where}={value[:80]!r} is not {what}")


def validate_report(msg: pb.NodeReport, *, now: float, limits: Limits = Limits()) -> NodeReport:
    """Check ``msg`` against every bound and return the domain report.

    A window that ends after ``now`` (the agent's clock is ahead, within
    ``max_clock_skew_s``) is moved back to end at ``now``, keeping its length: a window from
    the future would otherwise make every honest window after it look late to the rules.
    """
    if not is_node_name(msg.node):
        raise ReportInvalid(f"node={msg.node[:80]!r} is not a valid node name")
    _integer("seq", msg.seq, 1, MAX_SEQ)
    for name in ("window_start", "window_end"):
        value = getattr(msg, name)
        _finite(name, value, 0, MAX_TIME_S)
        if value > now + limits.max_clock_skew_s:
            raise ReportInvalid(
                f"{name}={value} is {value - now:.0f} s ahead of the collector's clock "
                f"(allowance {limits.max_clock_skew_s:g} s)"
            )
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
        _validate_gpu(f"gpus[{i}]", g, limits, now)
        if g.uuid in seen:
            raise ReportInvalid(f"gpus[{i}].uuid={g.uuid!r} appears twice")
        seen.add(g.uuid)
    report = report_from_pb(msg)
    ahead = report.window_end - now
    if ahead > 0:
        report = dataclasses.replace(
            report, window_start=report.window_start - ahead, window_end=now
        )
    return report


def _validate_gpu(where: str, g: pb.GpuWindow, limits: Limits, now: float) -> None:
    if not UUID_RE.fullmatch(g.uuid):
        raise ReportInvalid(f"{where}.uuid={g.uuid[:100]!r} is not a valid GPU UUID")
    if g.parent_uuid and not UUID_RE.fullmatch(g.parent_uuid):
        raise ReportInvalid(f"{where}.parent_uuid={g.parent_uuid[:100]!r} is not a valid GPU UUID")
    if g.index > 4096:
        raise ReportInvalid(f"{where}.index={g.index} is out of range")
    _validate_identity(where, g)
    _integer(f"{where}.samples", g.samples, 0, int(limits.max_window_s * 1000))
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
    for field in ("mem_used_max_bytes", "mem_total_bytes"):
        if g.HasField(field):
            _integer(f"{where}.{field}", getattr(g, field), 0, MAX_GPU_MEM_BYTES)
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
        _integer(f"{where}.processes[{j}].pid", p.pid, 0, MAX_PID)
        if p.HasField("used_mem_bytes"):
            _integer(
                f"{where}.processes[{j}].used_mem_bytes", p.used_mem_bytes, 0, MAX_GPU_MEM_BYTES
            )
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
        _validate_job(f"{where}.job", g.job, limits, now)


MAX_DEVICE_MINOR = (1 << 20) - 1  # Linux minor numbers have 20 bits
MAX_GPU_INSTANCE_ID = 4096


def _validate_identity(where: str, g: pb.GpuWindow) -> None:
    """Minor numbers within Linux's range; MIG identity only on a MIG instance."""
    for field, top in (
        ("minor_number", MAX_DEVICE_MINOR),
        ("gpu_instance_id", MAX_GPU_INSTANCE_ID),
        ("mig_caps_minor", MAX_DEVICE_MINOR),
    ):
        if g.HasField(field):
            _integer(f"{where}.{field}", getattr(g, field), 0, top)
            if field != "minor_number" and not g.parent_uuid:
                raise ReportInvalid(f"{where}.{field} is set on a GPU without parent_uuid")


def _validate_job(where: str, job: pb.JobInfo, limits: Limits, now: float) -> None:
    if not is_job_id(job.job_id):
        raise ReportInvalid(f"{where}.job_id={job.job_id[:40]!r} is not a Slurm job id")
    _identity(f"{where}.step", job.step, STEP_RE, "a Slurm step name")
    for field in ("user", "account", "partition", "qos"):
        _identity(f"{where}.{field}", getattr(job, field), NAME_RE, f"a valid {field} name")
    _identity(f"{where}.dask_scheduler", job.dask_scheduler, DASK_ADDRESS_RE, "a scheduler URL")
    _identity(f"{where}.dask_worker", job.dask_worker, DASK_WORKER_RE, "a Dask worker name")
    _identity(f"{where}.source", job.source, STEP_RE, "an attribution source")
    _string(f"{where}.name", job.name, limits.max_string_len)
    if job.HasField("cpu_util_pct"):
        _finite(f"{where}.cpu_util_pct", job.cpu_util_pct, 0.0, 100_000.0)
    _integer(f"{where}.start_time", job.start_time, 0, int(now + limits.max_clock_skew_s))
