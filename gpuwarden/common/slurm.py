"""Pure parsers for what Slurm shows: job ids, ``/proc/PID/cgroup``, ``/proc/PID/environ``,
``scontrol -d -o show job``, ``squeue --json`` and Dask worker command lines.

No I/O here: the agent (``gpuwarden.agent.slurm_attr``) and the collector
(``gpuwarden.collector.slurm``) fetch the text and pass it in. Tested on real captures under
``tests/fixtures/slurm`` and ``tests/fixtures/proc``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "CgroupJob",
    "DaskWorkerFacts",
    "EnvironFacts",
    "SlurmJob",
    "expand_hostlist",
    "parse_cmdline",
    "parse_dask_worker_cmdline",
    "parse_environ",
    "parse_gres_indices",
    "parse_index_list",
    "parse_proc_cgroup",
    "parse_scontrol_jobs",
    "parse_squeue_json",
    "validate_job_id",
]

# ---------------------------------------------------------------------------------- job ids

_JOB_ID_RE = re.compile(r"\d{1,10}(?:_\d{1,10}|\+\d{1,5})?")


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` if it is a Slurm job id: ``123``, an array task ``123_4`` or a
    heterogeneous component ``123+1``. Anything else raises ``ValueError`` naming the input
    (so it can never reach a command line as an option or a list)."""
    if not isinstance(job_id, str) or _JOB_ID_RE.fullmatch(job_id) is None:
        raise ValueError(
            f"invalid Slurm job id {job_id!r}: expected digits, optionally _TASK (array) "
            "or +OFFSET (heterogeneous job), e.g. '123', '123_4', '123+1'"
        )
    return job_id


# ------------------------------------------------------------------------------- /proc/cgroup


@dataclass(frozen=True, slots=True)
class CgroupJob:
    """The Slurm job a process belongs to, read from its cgroup path."""

    job_id: str | None  # None when the path names only a SLUID (Slurm >= 26.05, cgroup v2)
    step: str = ""  # "batch", "extern", "0", ... ("" when the process sits in the job cgroup)
    uid: int | None = None  # only cgroup v1 paths carry the uid
    sluid: str | None = None
    layout: str = ""  # v1 | v1-multi-slurmd | v2 | v2-sluid
    path: str = ""


_V1_RE = re.compile(
    r"/slurm(?P<multi>_[^/]+)?/uid_(?P<uid>\d+)/job_(?P<job>\d+)(?:/step_(?P<step>[^/]+))?"
)
# cgroup v2: <Slurm cgroup root>/system.slice/[<node>_]slurmstepd.scope/job_J/step_S[/user/task_N]
_V2_RE = re.compile(r"slurmstepd\.scope/job_(?P<job>\d+)(?:/step_(?P<step>[^/]+))?")
# Slurm 26.05 keys the cgroup v2 tree off the job's SLUID ("s" + Crockford base32, e.g.
# s5K1KKYAYG5D00) unless cgroup.conf sets CgroupJobIdPaths=yes.
_V2_SLUID_RE = re.compile(
    r"slurmstepd\.scope/(?P<sluid>s[0-9A-HJKMNP-TV-Z]{8,24})(?:/step_(?P<step>[^/]+))?(?:/|$)"
)


def parse_proc_cgroup(text: str) -> CgroupJob | None:
    """Parse the text of ``/proc/PID/cgroup``. Returns None when no line names a Slurm job
    (e.g. under proctrack/linuxproc, or a process outside any job)."""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].strip()
        if m := _V1_RE.search(path):
            return CgroupJob(
                job_id=m["job"],
                step=m["step"] or "",
                uid=int(m["uid"]),
                layout="v1-multi-slurmd" if m["multi"] else "v1",
                path=path,
            )
        if m := _V2_RE.search(path):
            return CgroupJob(job_id=m["job"], step=m["step"] or "", layout="v2", path=path)
        if m := _V2_SLUID_RE.search(path):
            return CgroupJob(
                job_id=None, step=m["step"] or "", sluid=m["sluid"], layout="v2-sluid", path=path
            )
    return None


# ------------------------------------------------------------------------------ index lists


def parse_index_list(text: str) -> tuple[int, ...]:
    """``"0-1,3"`` -> ``(0, 1, 3)``. Raises ValueError naming the text when it is not a list
    of non-negative integers and ranges."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"invalid index list {text!r}: bad element {part!r}")
        if sep:
            a, b = int(lo), int(hi)
            if b < a or b - a > 4096:
                raise ValueError(f"invalid index list {text!r}: bad range {part!r}")
            out.extend(range(a, b + 1))
        else:
            out.append(int(lo))
    return tuple(out)


_GRES_GPU_RE = re.compile(r"(?:^|,)gpu(?::[^:(),]+)?:\d+\(IDX:(?P<idx>[^)]*)\)")


def parse_gres_indices(gres: str) -> tuple[int, ...]:
    """GPU indices of one node's GRES detail: ``gpu:1(IDX:0)``, ``gpu:2(IDX:0-1)``,
    ``gpu:tesla:2(IDX:0,2)``, ``gpu:a100:1(IDX:0),gpu:v100:1(IDX:2)``. ``IDX:N/A`` and
    non-GPU GRES give nothing."""
    out: list[int] = []
    for m in _GRES_GPU_RE.finditer(gres.strip()):
        idx = m["idx"]
        if idx and idx != "N/A":
            out.extend(parse_index_list(idx))
    return tuple(sorted(set(out)))


# ---------------------------------------------------------------------------------- hostlist


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def expand_hostlist(hostlist: str) -> tuple[str, ...]:
    """Expand a Slurm hostlist: ``gpu[01-03,07],login1`` -> ``gpu01 gpu02 gpu03 gpu07 login1``.
    ``(null)`` and "" give ``()``."""
    if hostlist in ("", "(null)", "None"):
        return ()
    out: list[str] = []
    for item in _split_top_level(hostlist):
        m = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)", item)
        if m is None:
            if "[" in item or "]" in item:
                raise ValueError(f"invalid hostlist {hostlist!r}: cannot expand {item!r}")
            out.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for rng in ranges.split(","):
            lo, sep, hi = rng.partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise ValueError(f"invalid hostlist {hostlist!r}: bad range {rng!r}")
            width = len(lo)
            for n in range(int(lo), int(hi if sep else lo) + 1):
                out.append(f"{prefix}{n:0{width}d}{suffix}")
    return tuple(out)


# ---------------------------------------------------------------------------------- the job


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One job (or array task / het component) as scontrol or squeue shows it."""

    job_id: str  # the unique numeric id (what cgroups, SLURM_JOB_ID and scontrol use)
    state: str  # RUNNING, PENDING, COMPLETED, CANCELLED, ... (first word of the state)
    user: str = ""
    uid: int | None = None
    account: str = ""
    partition: str = ""
    name: str = ""
    qos: str = ""
    batch: bool = True
    requeue: bool = False
    restart_count: int = 0
    start_time: int | None = None  # unix seconds; None when not started / unknown
    end_time: int | None = None
    reason: str = ""
    nodes: tuple[str, ...] = ()
    batch_host: str = ""
    gpus_by_node: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    cpus_by_node: Mapping[str, int] = field(default_factory=dict)  # scontrol -d CPU_IDs
    num_cpus: int | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None  # "3", or "1-5%2" for a pending array record
    het_job_id: str | None = None
    het_job_offset: int | None = None
    sluid: str | None = None  # Slurm >= 26.05

    @property
    def display_id(self) -> str:
        """The id users see: ``ARRAYJOB_TASK`` for array tasks, ``HETJOB+OFFSET`` for het
        components, else the job id."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        if self.het_job_id and self.het_job_offset is not None:
            return f"{self.het_job_id}+{self.het_job_offset}"
        return self.job_id

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"

    def gpu_indices(self, node: str) -> tuple[int, ...]:
        return self.gpus_by_node.get(node, ())


def _null(value: str | None) -> str:
    return "" if value is None or value in ("(null)", "N/A") else value


def _scontrol_time(value: str | None) -> int | None:
    """scontrol prints local time ``2026-11-28T04:45:01`` (or Unknown / None / N/A)."""
    if not value or not value[:1].isdigit():
        return None
    try:
        return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").timestamp())
    except ValueError:
        return None


_KEY_RE = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/]*)=")
_USER_RE = re.compile(r"(?P<name>[^()]*)(?:\((?P<uid>\d+)\))?")


def _scontrol_fields(line: str) -> list[tuple[str, str]]:
    """Split one ``scontrol -o`` record into (key, value) pairs, in order. A value runs to
    the next ``Key=``, so values with spaces (job names, paths) stay whole."""
    matches = list(_KEY_RE.finditer(line))
    out: list[tuple[str, str]] = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        out.append((m.group(1), line[m.end() : end].strip()))
    return out


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _parse_scontrol_record(line: str) -> SlurmJob:
    pairs = _scontrol_fields(line)
    f: dict[str, str] = {}
    gpus_by_node: dict[str, tuple[int, ...]] = {}
    cpus_by_node: dict[str, int] = {}
    current_nodes: tuple[str, ...] = ()
    for key, value in pairs:
        if key == "Nodes":  # start of one per-node detail group (scontrol -d)
            current_nodes = expand_hostlist(value)
            continue
        if key == "CPU_IDs" and current_nodes:
            with contextlib.suppress(ValueError):
                count = len(parse_index_list(value))
                for node in current_nodes:
                    cpus_by_node[node] = count
            continue
        if key == "GRES" and current_nodes:
            idx = parse_gres_indices(value)
            for node in current_nodes:
                gpus_by_node[node] = tuple(sorted(set(gpus_by_node.get(node, ())) | set(idx)))
            continue
        f.setdefault(key, value)
    if "JobId" not in f or "JobState" not in f:
        raise ValueError(f"not a scontrol job record (no JobId/JobState): {line[:120]!r}")
    user_m = _USER_RE.fullmatch(f.get("UserId", ""))
    user = (user_m["name"] if user_m else "") or ""
    uid = int(user_m["uid"]) if user_m and user_m["uid"] else None
    array_job = _null(f.get("ArrayJobId"))
    het_job = _null(f.get("HetJobId"))
    return SlurmJob(
        job_id=validate_job_id(f["JobId"]),
        state=f["JobState"].split()[0],
        user=user,
        uid=uid,
        account=_null(f.get("Account")),
        partition=_null(f.get("Partition")),
        name=f.get("JobName", ""),
        qos=_null(f.get("QOS")),
        batch=f.get("BatchFlag", "1") != "0",
        requeue=f.get("Requeue", "0") == "1",
        restart_count=_int_or_none(f.get("Restarts")) or 0,
        start_time=_scontrol_time(f.get("StartTime")) if f["JobState"] != "PENDING" else None,
        end_time=_scontrol_time(f.get("EndTime")),
        reason=_null(f.get("Reason")),
        nodes=expand_hostlist(_null(f.get("NodeList"))),
        batch_host=_null(f.get("BatchHost")),
        gpus_by_node=gpus_by_node,
        cpus_by_node=cpus_by_node,
        num_cpus=_int_or_none(f.get("NumCPUs")),
        array_job_id=array_job or None,
        array_task_id=_null(f.get("ArrayTaskId")) or None,
        het_job_id=het_job or None,
        het_job_offset=_int_or_none(f.get("HetJobOffset")) if het_job else None,
        sluid=_null(f.get("SLUID")) or None,
    )


def parse_scontrol_jobs(text: str) -> list[SlurmJob]:
    """Parse ``scontrol -d -o show job [ID]`` (one record a line). "No jobs in the system"
    gives ``[]``; a line that is not a job record raises ValueError quoting it."""
    jobs: list[SlurmJob] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("No jobs in the system"):
            continue
        jobs.append(_parse_scontrol_record(line))
    return jobs


# ---------------------------------------------------------------------------- squeue --json


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


# ---------------------------------------------------------------------------- /proc/environ


@dataclass(frozen=True, slots=True)
class EnvironFacts:
    """Slurm (and Dask) facts from one process's environment."""

    job_id: str | None = None
    step_id: str | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None
    user: str | None = None
    uid: int | None = None
    job_gpus: tuple[int, ...] | None = None  # SLURM_JOB_GPUS: global indices on the node
    step_gpus: tuple[int, ...] | None = None  # SLURM_STEP_GPUS (srun steps only)
    cuda_visible_devices: tuple[str, ...] | None = None  # indices or UUIDs, as given
    restart_count: int | None = None
    node: str | None = None  # SLURMD_NODENAME
    dask_scheduler: str | None = None  # DASK_SCHEDULER_ADDRESS
    dask_worker_name: str | None = None  # DASK_WORKER_NAME (set by some launchers)


def parse_environ(data: bytes | str) -> EnvironFacts:
    """Parse ``/proc/PID/environ`` (NUL-separated ``KEY=VALUE``). Malformed entries are
    skipped; a malformed GPU list is treated as absent."""
    raw = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    env: dict[str, str] = {}
    for item in raw.split("\0"):
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value

    def indices(key: str) -> tuple[int, ...] | None:
        value = env.get(key)
        if value is None:
            return None
        try:
            return parse_index_list(value)
        except ValueError:
            return None

    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if job_id is not None and _JOB_ID_RE.fullmatch(job_id) is None:
        job_id = None
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    return EnvironFacts(
        job_id=job_id,
        step_id=env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID"),
        array_job_id=env.get("SLURM_ARRAY_JOB_ID"),
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
        user=env.get("SLURM_JOB_USER"),
        uid=_int_or_none(env.get("SLURM_JOB_UID")),
        job_gpus=indices("SLURM_JOB_GPUS"),
        step_gpus=indices("SLURM_STEP_GPUS"),
        cuda_visible_devices=tuple(s.strip() for s in cvd.split(",") if s.strip())
        if cvd is not None
        else None,
        restart_count=_int_or_none(env.get("SLURM_RESTART_COUNT")),
        node=env.get("SLURMD_NODENAME"),
        dask_scheduler=env.get("DASK_SCHEDULER_ADDRESS") or None,
        dask_worker_name=env.get("DASK_WORKER_NAME") or None,
    )


# ------------------------------------------------------------------------------ Dask workers


@dataclass(frozen=True, slots=True)
class DaskWorkerFacts:
    scheduler: str  # e.g. tcp://10.0.0.5:8786; "" when only --scheduler-file was given
    name: str  # the --name given to the worker; "" when none


def parse_cmdline(data: bytes) -> tuple[str, ...]:
    """``/proc/PID/cmdline`` (NUL-separated argv) -> argv."""
    text = data.decode("utf-8", "replace")
    return tuple(text.rstrip("\0").split("\0")) if text else ()


_SCHED_RE = re.compile(r"(?:tcp|tls|ucx|ucxx|inproc|ws|wss)://\S+|[A-Za-z0-9_.\-]+:\d{1,5}")
_WORKER_MODULES = frozenset({"distributed.cli.dask_worker", "dask_cuda.cli.dask_cuda_worker"})
_WORKER_SCRIPTS = frozenset({"dask-worker", "dask-cuda-worker"})


def _worker_args(argv: Sequence[str]) -> Sequence[str] | None:
    """The arguments after the worker entry point, or None if argv is no Dask worker. The
    entry point is argv[0], or, after a Python interpreter and its options, ``-m MODULE`` or
    the script path."""
    i = 0
    if argv and argv[0].rsplit("/", 1)[-1].startswith("python"):
        i = 1
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "-m":
            i += 1
        if i < len(argv) and argv[i] == "-m":
            if i + 1 < len(argv) and argv[i + 1] in _WORKER_MODULES:
                return argv[i + 2 :]
            return None
    if i >= len(argv):
        return None
    base = argv[i].rsplit("/", 1)[-1]
    if base in _WORKER_SCRIPTS:
        return argv[i + 1 :]
    if base == "dask" and i + 1 < len(argv):
        if argv[i + 1] == "worker":
            return argv[i + 2 :]
        if argv[i + 1] == "cuda" and i + 2 < len(argv) and argv[i + 2] == "worker":
            return argv[i + 3 :]
    return None


def parse_dask_worker_cmdline(argv: Sequence[str]) -> DaskWorkerFacts | None:
    """Recognise a Dask worker command line (``python -m distributed.cli.dask_worker
    tcp://HOST:PORT --name NAME ...``, ``dask-worker ...``, ``dask worker ...``) and return
    its scheduler address and name; None for anything else."""
    args = _worker_args(argv)
    if args is None:
        return None
    scheduler = ""
    name = ""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--name" and i + 1 < len(args):
            name = args[i + 1]
            i += 2
            continue
        if arg.startswith("--name="):
            name = arg.split("=", 1)[1]
        elif not arg.startswith("-") and not scheduler and _SCHED_RE.fullmatch(arg):
            scheduler = arg
        i += 1
    return DaskWorkerFacts(scheduler=scheduler, name=name)
