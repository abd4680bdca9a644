"""Parser of ``scontrol -d -o show job`` (one record a line, ``Key=value`` pairs).

scontrol prints user-controlled text unescaped: the job name comes before ``UserId``, and
the work dir, output paths and comments after the per-node ``Nodes=... GRES=...`` groups; any
of them can hold ``Key=value`` text or a line break. So a record is read by Slurm's known
field order, never by "first occurrence wins":

- ``JobName`` is everything between ``JobName=`` and the one ``UserId=``;
- every field Slurm prints once must appear once: a second ``UserId=``, ``Account=``,
  ``JobState=``... means user text imitates a field, and the record is skipped (never guessed);
- per-node ``Nodes=/CPU_IDs=/GRES=`` groups count only between ``UserId=`` and the first field
  that follows the groups (``MinCPUsNode=``...), where Slurm puts them and no user text is;
- nothing from ``Command=`` / ``WorkDir=`` on is read (paths, comments, mail user);
- a record broken over several lines by a line break in its name is joined again (and its
  doubled fields make it skipped) instead of being read as two records.

Text cannot be made fully safe this way (a line break in a path can start what looks like a
whole record); attribution and actions therefore read ``squeue --json`` (``squeue.py``). A
record that cannot be read is skipped, counted and logged; the others are still returned.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import datetime

from gpuwarden.slurm._values import int_or_none, null_to_empty
from gpuwarden.slurm.gres import parse_gres_indices
from gpuwarden.slurm.hostlist import expand_hostlist, parse_index_list
from gpuwarden.slurm.ids import validate_job_id
from gpuwarden.slurm.job import SlurmJob
from gpuwarden.slurm.parsed import ParsedJobs

__all__ = ["parse_scontrol_jobs", "read_scontrol_jobs"]

log = logging.getLogger(__name__)


def _scontrol_time(value: str | None) -> int | None:
    """scontrol prints local time ``2026-11-28T04:45:01`` (or Unknown / None / N/A)."""
    if not value or not value[:1].isdigit():
        return None
    try:
        return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").timestamp())
    except ValueError:
        return None


_KEY_RE = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/]*)=", re.ASCII)
_USER_RE = re.compile(r"(?P<name>[^()\s]*)(?:\((?P<uid>[0-9]+)\))?", re.ASCII)
_RECORD_START_RE = re.compile(r"^JobId=", re.MULTILINE)
# Per-node detail groups of ``scontrol -d`` (GRES_IDX is 18.08's name for GRES).
_GROUP_KEYS = frozenset({"Nodes", "CPU_IDs", "Mem", "GRES", "GRES_IDX"})
# The first fields Slurm prints after the groups; user text (Command, WorkDir, StdOut,
# Comment...) comes later still.
_AFTER_GROUPS = frozenset(
    {"MinCPUsNode", "MinMemoryNode", "MinMemoryCPU", "MinTmpDiskNode", "Features", "Command"}
)
_REQUIRED = ("JobId", "JobName", "UserId", "JobState")
# Where the fields gpuwarden reads end: from here on come paths and comments (user text),
# which are not read at all.
_TAIL_KEYS = frozenset({"Command", "WorkDir"})


def _tokens(record: str) -> list[tuple[str, int, int]]:
    """(key, start of ``Key=``, start of its value) for every ``Key=`` in the record."""
    return [(m.group(1), m.start(), m.end()) for m in _KEY_RE.finditer(record)]


def _records(text: str) -> tuple[list[str], str]:
    """Split ``scontrol -o`` output into records; returns (records, leading text that is not
    a record). A piece without the fields every record has is joined to the next: a line
    break in a job name must not make one record look like two."""
    starts = [m.start() for m in _RECORD_START_RE.finditer(text)]
    lead = text[: starts[0]] if starts else text
    pieces = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=False)]
    records: list[str] = []
    pending = ""
    for piece in pieces:
        pending += piece
        keys = {k for k, _, _ in _tokens(pending)}
        if all(k in keys for k in _REQUIRED):
            records.append(pending.strip())
            pending = ""
    if pending.strip():
        records.append(pending.strip())
    return records, lead


def _parse_record(record: str) -> SlurmJob:
    tokens = _tokens(record)
    keys = [k for k, _, _ in tokens]
    if "UserId" in keys:
        first_user = keys.index("UserId")
        tail = next((i for i in range(first_user, len(keys)) if keys[i] in _TAIL_KEYS), None)
        if tail is not None:
            record = record[: tokens[tail][1]]
            tokens, keys = tokens[:tail], keys[:tail]
    if keys[:1] != ["JobId"]:
        raise ValueError(f"not a scontrol job record: {record[:120]!r}")
    missing = [k for k in _REQUIRED if k not in keys]
    if missing:
        raise ValueError(f"scontrol record lacks {', '.join(missing)}: {record[:120]!r}")
    seen: set[str] = set()
    for key in keys:
        if key in seen and key not in _GROUP_KEYS:
            raise ValueError(
                f"scontrol record has {key}= twice (user text imitating a field?): {record[:120]!r}"
            )
        seen.add(key)
    index = {k: i for i, (k, _, _) in enumerate(tokens) if k not in _GROUP_KEYS}
    if not index["JobName"] < index["UserId"]:
        raise ValueError(f"scontrol record has JobName after UserId: {record[:120]!r}")
    # The name runs to UserId=, whatever it holds; other values run to the next Key=.
    name = record[tokens[index["JobName"]][2] : tokens[index["UserId"]][1]].strip()
    f: dict[str, str] = {}
    for i, (key, _, value_start) in enumerate(tokens):
        end = tokens[i + 1][1] if i + 1 < len(tokens) else len(record)
        if key not in _GROUP_KEYS:
            f[key] = record[value_start:end].strip()
    group_end = min(
        (index[k] for k in _AFTER_GROUPS if k in index and index[k] > index["UserId"]),
        default=len(tokens),
    )
    gpus_by_node: dict[str, tuple[int, ...]] = {}
    cpus_by_node: dict[str, int] = {}
    current_nodes: tuple[str, ...] = ()
    for i in range(index["UserId"] + 1, group_end):
        key, _, value_start = tokens[i]
        if key not in _GROUP_KEYS:
            continue
        end = tokens[i + 1][1] if i + 1 < len(tokens) else len(record)
        value = record[value_start:end].strip()
        if key == "Nodes":
            current_nodes = expand_hostlist(value)
        elif key == "CPU_IDs" and current_nodes:
            with contextlib.suppress(ValueError):
                count = len(parse_index_list(value))
                for node in current_nodes:
                    cpus_by_node[node] = count
        elif key in ("GRES", "GRES_IDX") and current_nodes:
            idx = parse_gres_indices(value)
            for node in current_nodes:
                gpus_by_node[node] = tuple(sorted(set(gpus_by_node.get(node, ())) | set(idx)))
    user_m = _USER_RE.fullmatch(f["UserId"])
    if user_m is None:
        raise ValueError(f"scontrol record has an unreadable UserId={f['UserId']!r}")
    array_job = null_to_empty(f.get("ArrayJobId"))
    het_job = null_to_empty(f.get("HetJobId"))
    state = f["JobState"].split()[0] if f["JobState"].split() else ""
    return SlurmJob(
        job_id=validate_job_id(f["JobId"]),
        state=state,
        user=user_m["name"],
        uid=int(user_m["uid"]) if user_m["uid"] else None,
        account=null_to_empty(f.get("Account")),
        partition=null_to_empty(f.get("Partition")),
        name=name,
        qos=null_to_empty(f.get("QOS")),
        batch=f.get("BatchFlag", "1") != "0",
        requeue=f.get("Requeue", "0") == "1",
        restart_count=int_or_none(f.get("Restarts")) or 0,
        start_time=_scontrol_time(f.get("StartTime")) if state != "PENDING" else None,
        end_time=_scontrol_time(f.get("EndTime")),
        reason=null_to_empty(f.get("Reason")),
        nodes=expand_hostlist(null_to_empty(f.get("NodeList"))),
        batch_host=null_to_empty(f.get("BatchHost")),
        gpus_by_node=gpus_by_node,
        cpus_by_node=cpus_by_node,
        num_cpus=int_or_none(f.get("NumCPUs")),
        array_job_id=array_job or None,
        array_task_id=null_to_empty(f.get("ArrayTaskId")) or None,
        het_job_id=het_job or None,
        het_job_offset=int_or_none(f.get("HetJobOffset")) if het_job else None,
        sluid=null_to_empty(f.get("SLUID")) or None,
    )


def read_scontrol_jobs(text: str) -> ParsedJobs:
    """Every record of ``scontrol -d -o show job [ID]`` that can be read, and a message for
    each one skipped. Raises ValueError when the text holds no job record at all but other
    text (an error message), so "Slurm said something else" is not mistaken for "no jobs"."""
    records, lead = _records(text)
    lead = lead.strip()
    if not records and lead and not lead.startswith("No jobs in the system"):
        raise ValueError(f"not a scontrol job record: {lead.splitlines()[0][:120]!r}")
    out = ParsedJobs()
    for record in records:
        try:
            out.jobs.append(_parse_record(record))
        except ValueError as e:
            out.skipped.append(str(e))
    return out


def parse_scontrol_jobs(text: str) -> list[SlurmJob]:
    """Parse ``scontrol -d -o show job [ID]``. "No jobs in the system" gives ``[]``; a record
    that cannot be read (or whose user text imitates Slurm's fields) is skipped and logged;
    text with no job record at all raises ValueError quoting it."""
    parsed = read_scontrol_jobs(text)
    for why in parsed.skipped:
        log.warning("scontrol: skipped one job record: %s", why)
    return parsed.jobs
