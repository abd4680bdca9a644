"""Replay traces (JSON Lines, the replay format of docs/policy.md): parsing and checking of lines.

Every line is hostile until checked: a malformed one raises :class:`TraceError` naming its
line number and key. A job line becomes an :class:`Allocation`; a sample line becomes a
:class:`Sample`. Optional sample keys understood beyond the contract: ``util_gpu_mean``,
``mem_used_mib``, ``mem_total_mib``, ``power_w``, ``cpu_util_pct`` (the job's CPU use, for
input-bound advice) and ``window_s`` (the length of that report window; without it the
policy's ``window``). ``util_gpu: null`` means unknown (a gap, never idle).

Profiling fields (docs/profiling.md): each of :data:`PROFILING_FIELDS` as a top-level key
(the window's mean), any field in an ``extra`` object (means) and ``extra_max`` (maxima; a
field without a max takes its mean). ``processes``: the number of processes on the GPU in
the window (a MIG slice, whose utilisation NVML does not give, is judged idle from it).

Which job a sample line belongs to, and what the collector makes of it, is
:mod:`trace_attribution`'s business.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from gpuwarden.collector.rules import MIB, Allocation, GpuRef
from gpuwarden.common.extra import MAX_EXTRA_FIELDS, PROFILING_FIELDS, extra_problem
from gpuwarden.common.types import JobInfo

loads: Callable[[bytes], Any]
dumps: Callable[[Any], bytes]
try:
    import orjson

    loads = orjson.loads
    dumps = orjson.dumps
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback

    def _reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number")

    def loads(raw: bytes) -> Any:
        return json.loads(raw, parse_constant=_reject_constant)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


_isfinite = math.isfinite
_INF = math.inf
# a NamedTuple from a tuple of all its fields, without the Python-level __new__ it generates
# (which fills in defaults): half the cost of making one
_new_sample = tuple.__new__
# the keys that may carry profiling fields: a line with none of them (the common case) skips
# their parsing with one set operation instead of a look-up per field
_PROFILING_KEYS = frozenset(("extra", "extra_max", *PROFILING_FIELDS))
# every key of a sample line that most lines lack: a line with none of them skips each look-up
_RARE_KEYS = _PROFILING_KEYS | {
    "util_gpu_mean",
    "util_mem",
    "cpu_util_pct",
    "window_s",
    "processes",
}


class TraceError(ValueError):
    """A malformed trace line; the message names the line number."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


class Sample(NamedTuple):
    """One sample line: one report window of one GPU, ending at ``ts``."""

    ts: float
    node: str
    uuid: str
    gpu_index: int
    util_max_pct: float | None
    util_mean_pct: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    power_w: float | None
    cpu_util_pct: float | None
    window_s: float | None
    extra_mean: dict[str, float] | None = None  # profiling fields; None: none given
    extra_max: dict[str, float] | None = None
    processes: int | None = None


# the fields of a Sample as a plain tuple (see sample_values)
SampleValues = tuple[
    float,
    str,
    str,
    int,
    float | None,
    float | None,
    int | None,
    int | None,
    float | None,
    float | None,
    float | None,
    dict[str, float] | None,
    dict[str, float] | None,
    int | None,
]


def _where(line_no: int, key: str, what: str) -> TraceError:
    return TraceError(line_no, f"{key!r} {what}")


def _number(d: dict[str, Any], key: str, line_no: int, lo: float, hi: float) -> float | None:
    """``d[key]`` as a float in [lo, hi], None when absent or null. The bounds are finite,
    so NaN and infinities fail the one range test a valid value passes; the error then
    says what is wrong."""
    v = d.get(key)
    if v is None:
        return None
    t = type(v)
    if (t is float or t is int) and lo <= v <= hi:
        return float(v)
    if t is not float and t is not int:
        raise _where(line_no, key, f"must be a number, got {t.__name__} {v!r}")
    if not _isfinite(v):
        raise _where(line_no, key, f"must be finite, got {v!r}")
    raise _where(line_no, key, f"is out of range [{lo:g}, {hi:g}]: {v!r}")


def _string(d: dict[str, Any], key: str, line_no: int, required: bool = False) -> str:
    v = d.get(key)
    if v is None:
        if required:
            raise _where(line_no, key, "is missing")
        return ""
    if type(v) is not str:
        raise _where(line_no, key, f"must be a string, got {type(v).__name__} {v!r}")
    if required and not v:
        raise _where(line_no, key, "is empty")
    return v


def _bool(d: dict[str, Any], key: str, line_no: int, default: bool) -> bool:
    v = d.get(key)
    if v is None:
        return default
    if type(v) is not bool:
        raise _where(line_no, key, f"must be true or false, got {v!r}")
    return v


def parse_job(d: dict[str, Any], line_no: int) -> tuple[Allocation, float]:
    """A job line -> (allocation, start); raises TraceError naming the line and key."""
    job_id = _string(d, "job_id", line_no, required=True)
    if "start" not in d:
        raise _where(line_no, "start", "is missing")
    start = _number(d, "start", line_no, 0.0, 1e11)
    if start is None:
        raise _where(line_no, "start", "must be a number, got null")
    end = _number(d, "end", line_no, 0.0, 1e11)
    if end is not None and end < start:
        raise _where(line_no, "end", f"({end:g}) is before start ({start:g})")
    raw_gpus = d.get("gpus")
    if type(raw_gpus) is not list or not raw_gpus:
        raise _where(line_no, "gpus", "must be a non-empty list of {node, uuid, index}")
    refs: list[GpuRef] = []
    seen: set[tuple[str, str]] = set()
    for i, g in enumerate(raw_gpus):
        if type(g) is not dict:
            raise _where(line_no, f"gpus[{i}]", "must be an object")
        node = _string(g, "node", line_no, required=True)
        uuid = _string(g, "uuid", line_no, required=True)
        idx = g.get("index", -1)
        if type(idx) is not int or idx < -1:
            raise _where(line_no, f"gpus[{i}].index", f"must be a GPU index, got {idx!r}")
        if (node, uuid) in seen:
            raise _where(line_no, f"gpus[{i}]", f"lists {node}/{uuid} twice")
        seen.add((node, uuid))
        refs.append(GpuRef(node, uuid, idx))
    scheduler = worker = ""
    dask = d.get("dask")
    if dask is not None:
        if type(dask) is not dict:
            raise _where(line_no, "dask", "must be null or {scheduler, worker}")
        scheduler = _string(dask, "scheduler", line_no, required=True)
        worker = _string(dask, "worker", line_no, required=True)
    job = JobInfo(
        job_id=job_id,
        user=_string(d, "user", line_no),
        account=_string(d, "account", line_no),
        partition=_string(d, "partition", line_no),
        name=_string(d, "name", line_no),
        qos=_string(d, "qos", line_no),
        batch=_bool(d, "batch", line_no, True),
        requeue=_bool(d, "requeue", line_no, False),
        start_time=int(start),
        dask_scheduler=scheduler,
        dask_worker=worker,
        source="replay",
    )
    return Allocation(job=job, gpus=tuple(refs), start_ts=start, end_ts=end), start


def _extra_value(name: str, v: Any, where: str, line_no: int) -> float:
    """The checks the collector makes of a stored extra field (so an export replays)."""
    problem = extra_problem(name, v)
    if problem is not None:
        raise TraceError(line_no, f"{where}: {problem}")
    return float(v)


def _extra_object(d: dict[str, Any], key: str, line_no: int) -> dict[str, float]:
    raw = d.get(key)
    if raw is None:
        return {}
    if type(raw) is not dict:
        raise _where(line_no, key, f"must be an object of named numbers, got {raw!r}")
    if len(raw) > MAX_EXTRA_FIELDS:
        raise _where(line_no, key, f"has {len(raw)} fields, more than {MAX_EXTRA_FIELDS}")
    return {name: _extra_value(name, v, key, line_no) for name, v in raw.items()}


def _extra_fields(
    d: dict[str, Any], line_no: int
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """(window means, window maxima) of the profiling fields; (None, None) when none."""
    mean = _extra_object(d, "extra", line_no)
    for name in PROFILING_FIELDS:
        v = d.get(name)
        if v is not None:
            if name in mean and mean[name] != v:
                raise _where(line_no, name, f"({v!r}) disagrees with extra.{name}")
            mean[name] = _extra_value(name, v, name, line_no)
    peak = _extra_object(d, "extra_max", line_no)
    for name, v in mean.items():
        if name not in peak:
            peak[name] = v
        elif peak[name] < v:
            raise _where(line_no, f"extra_max.{name}", f"({peak[name]:g}) is below its mean")
    if not mean and not peak:
        return None, None
    return mean, peak


def parse_sample(d: dict[str, Any], line_no: int) -> Sample:
    """A sample line -> :class:`Sample`; raises TraceError naming the line and key."""
    return _new_sample(Sample, sample_values(d, line_no))


def sample_values(d: dict[str, Any], line_no: int) -> SampleValues:
    """:func:`parse_sample`'s fields as a plain tuple, in :class:`Sample`'s order (replay
    unpacks them at once: no named tuple need be made); raises TraceError likewise.

    Run once per line of a trace, so the common case is checked inline: an absent key costs
    one look-up, a valid value of the usual type a test or two; anything else goes through
    :func:`_number`, which converts it or says what is wrong."""
    get = d.get
    ts = get("ts")
    if type(ts) is not float and type(ts) is not int:
        if "ts" not in d:
            raise _where(line_no, "ts", "is missing")
        raise _where(line_no, "ts", f"must be a number, got {ts!r}")
    if not 0 <= ts < _INF:  # NaN fails both comparisons
        raise _where(line_no, "ts", f"must be a finite time, got {ts!r}")
    node = get("node")
    uuid = get("uuid")
    if type(node) is not str or not node:
        raise _where(line_no, "node", "is missing" if "node" not in d else "must be a string")
    if type(uuid) is not str or not uuid:
        raise _where(line_no, "uuid", "is missing" if "uuid" not in d else "must be a string")
    util = get("util_gpu")
    if util is None:
        if "util_gpu" not in d:
            raise _where(line_no, "util_gpu", "is missing")
    elif type(util) is not float or not 0.0 <= util <= 100.0:
        util = _number(d, "util_gpu", line_no, 0.0, 100.0)
    used = get("mem_used_mib")
    total = get("mem_total_mib")
    power = get("power_w")
    idx = get("index")  # None: absent (-1) or null (wrong), told apart where it is checked
    # Whether to look for the keys most lines lack: not when the line has nothing but type,
    # ts, node, uuid, util_gpu and those four (the usual line; len is cheaper than a set
    # operation), else when it has any of them.
    rare = (
        len(d) != 9 or used is None or total is None or power is None or idx is None
    ) and not _RARE_KEYS.isdisjoint(d)
    mean = get("util_gpu_mean") if rare else None
    if mean is not None:
        mean = _number(d, "util_gpu_mean", line_no, 0.0, 100.0)
        if mean is not None and util is not None and mean > util + 1e-9:
            raise _where(line_no, "util_gpu_mean", f"({mean:g}) exceeds util_gpu ({util:g})")
    # memory: an int in range stays one (it is only multiplied and rounded, exactly)
    if used is not None and (type(used) is not int or not 0 <= used <= 1e9):
        used = _number(d, "mem_used_mib", line_no, 0.0, 1e9)
    if total is not None and (type(total) is not int or not 0 <= total <= 1e9):
        total = _number(d, "mem_total_mib", line_no, 0.0, 1e9)
    if rare and get("util_mem") is not None:
        _number(d, "util_mem", line_no, 0.0, 100.0)  # checked, not used
    if power is not None and (type(power) is not float or not 0.0 <= power <= 1e5):
        power = _number(d, "power_w", line_no, 0.0, 1e5)
    cpu = window = extra_mean = extra_max = procs = None
    if rare:
        cpu = get("cpu_util_pct")
        if cpu is not None:
            cpu = _number(d, "cpu_util_pct", line_no, 0.0, 1e6)
        window = get("window_s")
        if window is not None:
            window = _number(d, "window_s", line_no, 0.001, 86400.0)
    if idx is None and "index" not in d:
        idx = -1
    if type(idx) is not int or idx < -1:
        raise _where(line_no, "index", f"must be a GPU index, got {idx!r}")
    if rare:
        if not _PROFILING_KEYS.isdisjoint(d):  # null values give (None, None) there too
            extra_mean, extra_max = _extra_fields(d, line_no)
        procs = get("processes")
        if procs is not None and (type(procs) is not int or not 0 <= procs <= 100_000):
            raise _where(line_no, "processes", f"must be a number of processes, got {procs!r}")
    return (
        float(ts),
        node,
        uuid,
        idx,
        util,
        mean,
        None if used is None else used * MIB if type(used) is int else round(used * MIB),
        None if total is None else total * MIB if type(total) is int else round(total * MIB),
        power,
        cpu,
        window,
        extra_mean,
        extra_max,
        procs,
    )
