"""What the dashboard shows, kept up to date from the watch stream; no Textual here.

:class:`Dashboard` takes the stream's events (node states and audit records) one at a time
(cheap: one node's view is rebuilt per event) and answers the screens' questions: the
header's figures, the jobs with their waste, filtered and sorted, a job's GPUs and records.

Idle GPU-hours are counted from the windows the dashboard has seen (each GPU's time between
two windows while it is allocated and below the busy threshold) and, for a job, at least
what its newest idle finding says (time since the finding began times its GPUs): a job
that was idle before the dashboard started still shows its waste.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gpuwarden.common.types import AuditRecord, JobInfo, NodeState
from gpuwarden.query.views import GpuCounts, GpuUse, GpuView, NodeView, count_gpus, node_view

ENFORCING_ACTIONS = frozenset({"release_dask_worker", "requeue", "requeuehold", "cancel"})
FINDING_KINDS = frozenset({"idle", "partly_idle", "underused", "advice"})
MAX_GAP_S = 120.0  # a longer gap between two windows of a GPU is not counted as idle time
MAX_FEED = 500


class SortKey(StrEnum):
    WASTE = "waste"
    USER = "user"
    ACCOUNT = "account"
    PARTITION = "partition"
    AGE = "age"
    UTIL = "util"


# the order ``s`` cycles through; waste first, largest waste at the top
SORT_KEYS = tuple(SortKey)
FILTER_FIELDS = ("user", "account", "partition", "node", "state")


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    user: str
    account: str
    partition: str
    nodes: tuple[str, ...]
    gpus: int
    state: str  # busy | idle | empty | mixed | lost | unknown
    age_s: float | None
    util_pct: float | None  # mean over its GPUs of the newest window's max
    waste_gpu_h: float
    dask: bool
    exempt: bool = False


@dataclass(frozen=True, slots=True)
class Figures:
    """The header's numbers."""

    gpus: int
    allocated: int
    active: int
    idle: int
    idle_gpu_h_today: float
    reclaimed_gpu_h: float
    open_findings: int
    enforcement: str  # on | dry-run | ?
    nodes: int
    nodes_connected: int


@dataclass(frozen=True, slots=True)
class JobFilter:
    """``user:alice partition:gpu state:idle word``: every field must match (a prefix of
    the value, case-insensitive); bare words must each appear in the job's id, user,
    account, partition or a node name."""

    fields: tuple[tuple[str, str], ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> JobFilter:
        fields: list[tuple[str, str]] = []
        words: list[str] = []
        for token in text.split():
            name, sep, value = token.partition(":")
            if sep and name.lower() in FILTER_FIELDS:
                if not value:
                    raise ValueError(f"{token!r}: give a value after {name}:")
                fields.append((name.lower(), value.lower()))
            elif sep and name:
                raise ValueError(
                    f"{name!r} is not a filter (use {', '.join(f + ':' for f in FILTER_FIELDS)})"
                )
            else:
                words.append(token.lower())
        return cls(tuple(fields), tuple(words))

    def __bool__(self) -> bool:
        return bool(self.fields or self.words)

    def matches(self, row: JobRow) -> bool:
        for name, value in self.fields:
            if name == "node":
                if not any(n.lower().startswith(value) for n in row.nodes):
                    return False
            elif not str(getattr(row, name)).lower().startswith(value):
                return False
        hay = " ".join((row.job_id, row.user, row.account, row.partition, *row.nodes)).lower()
        return all(w in hay for w in self.words)


@dataclass(frozen=True, slots=True)
class _Part:
    """One job's GPUs on one node, worked out once when the node's state arrives."""

    job_id: str
    user: str
    account: str
    partition: str
    node: str
    uses: tuple[GpuUse, ...]
    utils: tuple[float, ...]
    start_time: int
    dask: bool


def _parts(node: NodeState, view: NodeView) -> list[_Part]:
    jobs: dict[str, JobInfo] = {}
    held: dict[str, list[GpuView]] = {}
    for state, g in zip(sorted(node.gpus, key=lambda s: (s.latest.index, s.latest.uuid)),
                        view.gpus, strict=True):  # fmt: skip
        job = state.latest.job
        if job is not None:
            jobs.setdefault(job.job_id, job)
            held.setdefault(job.job_id, []).append(g)
    return [
        _Part(
            job_id=job_id,
            user=gpus[0].user,
            account=gpus[0].account,
            partition=gpus[0].partition,
            node=view.node,
            uses=tuple(g.use for g in gpus),
            utils=tuple(g.util_max_pct for g in gpus if g.util_max_pct is not None),
            start_time=jobs[job_id].start_time,
            dask=jobs[job_id].is_dask_worker,
        )
        for job_id, gpus in held.items()
    ]


def _job_state(uses: Sequence[GpuUse]) -> str:
    kinds = set(uses)
    if len(kinds) == 1:
        return next(iter(kinds)).value
    if kinds <= {GpuUse.IDLE, GpuUse.EMPTY}:
        return GpuUse.IDLE.value
    return "mixed"


def sort_rows(rows: list[JobRow], key: SortKey, reverse: bool = False) -> list[JobRow]:
    """Waste and age largest first, utilisation lowest first, names A to Z; ties by job id.
    ``reverse`` turns the order round. Missing values go last either way."""
    missing: list[JobRow] = []
    present: list[JobRow] = []
    if key is SortKey.AGE:
        for r in rows:
            (missing if r.age_s is None else present).append(r)
        present.sort(key=lambda r: (-(r.age_s or 0.0), r.job_id), reverse=reverse)
    elif key is SortKey.UTIL:
        for r in rows:
            (missing if r.util_pct is None else present).append(r)
        present.sort(key=lambda r: (r.util_pct or 0.0, r.job_id), reverse=reverse)
    elif key is SortKey.WASTE:
        present = list(rows)
        present.sort(key=lambda r: (-r.waste_gpu_h, r.job_id), reverse=reverse)
    else:
        present = list(rows)
        present.sort(key=lambda r: (getattr(r, key.value).lower(), r.job_id), reverse=reverse)
    return present + sorted(missing, key=lambda r: r.job_id)


def _midnight(now: float) -> float:
    day = dt.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


class Dashboard:
    """The cluster as the dashboard knows it; ``apply`` every event of the watch stream."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeView] = {}
        self.raw: dict[str, NodeState] = {}
        self.feed: list[AuditRecord] = []  # newest first
        self.records_by_job: dict[str, list[AuditRecord]] = {}  # newest first
        self.enforcement = "?"
        self.now = 0.0
        self._last_end: dict[str, float] = {}  # uuid -> newest window end seen
        self._idle_s_by_job: dict[str, float] = {}
        self._idle_s_by_day: dict[float, float] = {}
        self._finding_waste_s: dict[str, float] = {}
        self._rows: list[JobRow] | None = None  # cache, dropped by every change
        self._parts: dict[str, list[_Part]] = {}
        self._job_nodes: dict[str, set[str]] = {}
        self._row_by_job: dict[str, JobRow] = {}
        self._dirty: set[str] = set()  # jobs whose row must be built again
        self._counts: dict[str, GpuCounts] = {}
        self.updates = 0

    # -- feeding ---------------------------------------------------------------------------
    def apply(self, event: NodeState | AuditRecord, now: float) -> None:
        self.now = max(self.now, now)
        self._rows = None
        self.updates += 1
        if isinstance(event, AuditRecord):
            self.add_record(event)
            return
        self.raw[event.node] = event
        view = node_view(event, now)
        self.nodes[event.node] = view
        for part in self._parts.get(event.node, ()):
            self._dirty.add(part.job_id)
            self._job_nodes.get(part.job_id, set()).discard(event.node)
        self._parts[event.node] = _parts(event, view)
        for part in self._parts[event.node]:
            self._dirty.add(part.job_id)
            self._job_nodes.setdefault(part.job_id, set()).add(event.node)
        self._counts[event.node] = count_gpus(view.gpus)
        for g in view.gpus:
            last = self._last_end.get(g.uuid)
            self._last_end[g.uuid] = max(g.window_end, last or 0.0)
            if last is None or not g.job_id or g.window_end <= last:
                continue
            gap = g.window_end - last
            if gap <= MAX_GAP_S and g.use in (GpuUse.IDLE, GpuUse.EMPTY):
                self._idle_s_by_job[g.job_id] = self._idle_s_by_job.get(g.job_id, 0.0) + gap
                day = _midnight(g.window_end)
                self._idle_s_by_day[day] = self._idle_s_by_day.get(day, 0.0) + gap

    def load_records(self, records: Iterable[AuditRecord]) -> None:
        """Records fetched at (re)connection, any order; those already known are skipped."""
        known = {(r.ts, r.job_id, r.action, r.outcome) for r in self.feed}
        for r in sorted(records, key=lambda r: r.ts):
            if (r.ts, r.job_id, r.action, r.outcome) not in known:
                self.add_record(r)
        self._rows = None

    def add_record(self, r: AuditRecord) -> None:
        self.feed.insert(0, r)
        del self.feed[MAX_FEED:]
        self._dirty.add(r.job_id)
        by_job = self.records_by_job.setdefault(r.job_id, [])
        by_job.insert(0, r)
        del by_job[100:]
        policy = r.evidence.get("policy") if isinstance(r.evidence, dict) else None
        if isinstance(policy, dict) and isinstance(policy.get("enforce"), bool):
            self.enforcement = "on" if policy["enforce"] else "dry-run"
        finding = r.evidence.get("finding") if isinstance(r.evidence, dict) else None
        since = finding.get("since_ts") if isinstance(finding, dict) else None
        if r.kind == "idle" and isinstance(since, int | float) and math.isfinite(since):
            waste = max(0.0, r.ts - float(since)) * max(1, len(r.gpus))
            self._finding_waste_s[r.job_id] = max(self._finding_waste_s.get(r.job_id, 0.0), waste)
        self._rows = None

    # -- questions -------------------------------------------------------------------------
    def gpus(self) -> Iterable[tuple[str, GpuView]]:
        for name in sorted(self.nodes):
            for g in self.nodes[name].gpus:
                yield name, g

    def jobs(self) -> list[JobRow]:
        """One row per job on the cluster now; only the rows of jobs that changed since the
        last call are built again."""
        if self._rows is not None and not self._dirty:
            return self._rows
        for job_id in self._dirty:
            nodes = self._job_nodes.get(job_id)
            if not nodes:
                self._job_nodes.pop(job_id, None)
                self._row_by_job.pop(job_id, None)
                continue
            parts = [p for n in sorted(nodes) for p in self._parts[n] if p.job_id == job_id]
            self._row_by_job[job_id] = self._row(job_id, parts)
        self._dirty.clear()
        self._rows = list(self._row_by_job.values())
        return self._rows

    def _row(self, job_id: str, parts: list[_Part]) -> JobRow:
        first = parts[0]
        utils = [u for p in parts for u in p.utils]
        waste_s = max(self._idle_s_by_job.get(job_id, 0.0), self._finding_waste_s.get(job_id, 0.0))
        newest = self.records_by_job.get(job_id, ())
        return JobRow(
            job_id=job_id,
            user=first.user,
            account=first.account,
            partition=first.partition,
            nodes=tuple(p.node for p in parts),
            gpus=sum(len(p.uses) for p in parts),
            state=_job_state([u for p in parts for u in p.uses]),
            age_s=max(0.0, self.now - first.start_time) if first.start_time else None,
            util_pct=sum(utils) / len(utils) if utils else None,
            waste_gpu_h=waste_s / 3600.0,
            dask=any(p.dask for p in parts),
            exempt=any(r.action == "exempt" and r.outcome == "exempted" for r in newest[:5]),
        )

    def rows(
        self, flt: JobFilter | None = None, key: SortKey = SortKey.WASTE, reverse: bool = False
    ) -> list[JobRow]:
        rows = self.jobs()
        if flt:
            rows = [r for r in rows if flt.matches(r)]
        return sort_rows(rows, key, reverse)

    def job(self, job_id: str) -> JobRow | None:
        return next((r for r in self.jobs() if r.job_id == job_id), None)

    def job_gpus(self, job_id: str) -> list[tuple[str, GpuView]]:
        return [(n, g) for n, g in self.gpus() if g.job_id == job_id]

    def figures(self) -> Figures:
        per_node = list(self._counts.values())
        today = _midnight(self.now) if self.now else 0.0
        reclaimed_s = sum(
            len(r.gpus) * max(0.0, self.now - max(r.ts, today))
            for r in self.feed
            if r.outcome == "done" and r.action in ENFORCING_ACTIONS
        )
        on_cluster = {p.job_id for parts in self._parts.values() for p in parts}
        open_findings = sum(
            1
            for job_id in on_cluster
            if any(
                r.kind in FINDING_KINDS and r.outcome != "aborted"
                for r in self.records_by_job.get(job_id, [])[:1]
            )
        )
        idle_today_s = self._idle_s_by_day.get(today, 0.0)
        finding_today_s = sum(self._finding_waste_s.get(j, 0.0) for j in on_cluster)
        return Figures(
            gpus=sum(c.gpus for c in per_node),
            allocated=sum(len(p.uses) for parts in self._parts.values() for p in parts),
            active=sum(c.busy for c in per_node),
            idle=sum(c.idle + c.empty for c in per_node),
            idle_gpu_h_today=max(idle_today_s, finding_today_s) / 3600.0,
            reclaimed_gpu_h=reclaimed_s / 3600.0,
            open_findings=open_findings,
            enforcement=self.enforcement,
            nodes=len(self.nodes),
            nodes_connected=sum(1 for n in self.nodes.values() if n.connected),
        )
