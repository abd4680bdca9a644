"""``gpuwarden replay``: run the detection rules and the action ladder over a JSON Lines trace.

Implements DESIGN.md's replay contract with the very engine (:mod:`rules`) and ladder
(:mod:`ladder`) the collector runs. Choices the contract leaves open (see docs/policy.md):

* Order: lines must be sorted by time. A job line takes effect at its ``start`` and must come
  before that job's samples (job lines may all come first). Sample lines may be out of order
  by at most one report window (``--window-s``, policy ``window``): they are re-sorted in a
  small buffer. A sample older than that is an error naming its line.
* A sample is one report window ending at ``ts`` and lasting ``--window-s`` (default 60 s).
  Optional extra sample keys understood: ``util_gpu_mean``, ``mem_used_mib``,
  ``mem_total_mib``, ``power_w``, ``cpu_util_pct`` (the job's CPU use, for input-bound
  advice). ``util_gpu: null`` means unknown (a gap, never idle). Other keys are ignored.
* Output kinds: a partly idle multi-GPU job is reported as kind ``idle`` listing only its
  idle GPUs, detail starting ``partly idle:`` (action ``none`` unless
  ``enforce_partly_idle``). Advice details start with their code (``use_mig: ...``).
* Actions: report-only findings give action ``none``; warnings ``warn``. With enforcement
  on, the executor records the action and it is printed as taken (``requeue`` ...). With
  enforcement off (the default), nothing is taken: the ladder's last step is printed as
  action ``warn`` with detail ``dry run: would requeue: ...``.
* After an action (taken or would-be) the job's later samples are not evaluated: its GPUs
  count as reclaimed from then to the job's end (or its last sample).
* Nothing is printed unless the whole trace is valid: a malformed line is reported on stderr
  with its line number and the exit code is 2.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpuwarden.collector.ladder import (
    Action,
    ActionOutcome,
    Decision,
    Ladder,
    LadderEvent,
    Status,
)
from gpuwarden.collector.policy import Policy, PolicySet, load_policy
from gpuwarden.collector.rules import (
    MIB,
    Allocation,
    AllocationTracker,
    Finding,
    FindingKind,
    GpuRef,
)
from gpuwarden.common.argtypes import (
    attach_negative_values,
    duration_arg,
    int_arg,
    positive_duration_arg,
)
from gpuwarden.common.config import ConfigError
from gpuwarden.common.types import JobInfo

_loads: Callable[[bytes], Any]
_dumps: Callable[[Any], bytes]
try:
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback

    def _reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number")

    def _loads(raw: bytes) -> Any:
        return json.loads(raw, parse_constant=_reject_constant)

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


_START, _SAMPLE, _END = 0, 1, 2
_KIND = {
    FindingKind.IDLE: "idle",
    FindingKind.PARTLY_IDLE: "idle",
    FindingKind.UNDERUSED: "underused",
    FindingKind.ADVICE: "advice",
}
_isfinite = math.isfinite


class TraceError(ValueError):
    """A malformed trace line; the message names the line number."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One output line of the replay contract (plus what the summary needs)."""

    ts: float
    job_id: str
    kind: str
    action: str
    gpus: tuple[str, ...]
    detail: str
    status: str
    ladder_action: str  # the ladder's action, also for a dry run ("requeue")

    def contract(self) -> dict[str, Any]:
        ts: float | int = int(self.ts) if float(self.ts).is_integer() else self.ts
        return {
            "ts": ts,
            "job_id": self.job_id,
            "kind": self.kind,
            "action": self.action,
            "gpus": list(self.gpus),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    lines: int
    jobs: int
    samples: int
    unattributed_samples: int
    exempt_jobs: int
    observed_gpu_s: float
    idle_gpu_s: float
    reclaimed_gpu_s: float
    enforce: bool
    first_ts: float | None
    last_ts: float | None


class RecordingExecutor:
    """Replay's executor: records each decision as carried out; acts on nothing."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def execute(self, decision: Decision) -> ActionOutcome:
        self.decisions.append(decision)
        return ActionOutcome(True, "")


class _Job:
    __slots__ = (
        "action_ts",
        "allocation",
        "dirty",
        "ended",
        "last_seen",
        "policy",
        "refs",
        "stopped",
        "tracker",
        "window_s",
    )

    def __init__(self, allocation: Allocation, policy: Policy) -> None:
        self.allocation = allocation
        self.policy = policy
        self.tracker = AllocationTracker(allocation, policy)
        self.window_s = policy.window
        self.refs = tuple((g.node, g.uuid) for g in allocation.gpus)
        self.dirty = False
        self.ended = False
        self.stopped = False
        self.last_seen: float | None = None
        self.action_ts: float | None = None


# ---------------------------------------------------------------------------- parsing


def _where(line_no: int, key: str, what: str) -> TraceError:
    return TraceError(line_no, f"{key!r} {what}")


def _number(d: dict[str, Any], key: str, line_no: int, lo: float, hi: float) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    t = type(v)
    if t is not float and t is not int:
        raise _where(line_no, key, f"must be a number, got {type(v).__name__} {v!r}")
    if not _isfinite(v):
        raise _where(line_no, key, f"must be finite, got {v!r}")
    if v < lo or v > hi:
        raise _where(line_no, key, f"is out of range [{lo:g}, {hi:g}]: {v!r}")
    return float(v)


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


def _sample(d: dict[str, Any], line_no: int) -> tuple[Any, ...]:
    ts = d.get("ts")
    if type(ts) is not float and type(ts) is not int:
        if "ts" not in d:
            raise _where(line_no, "ts", "is missing")
        raise _where(line_no, "ts", f"must be a number, got {ts!r}")
    if not _isfinite(ts) or ts < 0:
        raise _where(line_no, "ts", f"must be a finite time, got {ts!r}")
    node = d.get("node")
    uuid = d.get("uuid")
    if type(node) is not str or not node:
        raise _where(line_no, "node", "is missing" if "node" not in d else "must be a string")
    if type(uuid) is not str or not uuid:
        raise _where(line_no, "uuid", "is missing" if "uuid" not in d else "must be a string")
    if "util_gpu" not in d:
        raise _where(line_no, "util_gpu", "is missing")
    util = _number(d, "util_gpu", line_no, 0.0, 100.0)
    get = d.get
    mean = used = total = cpu = None
    if get("util_gpu_mean") is not None:
        mean = _number(d, "util_gpu_mean", line_no, 0.0, 100.0)
        if mean is not None and util is not None and mean > util + 1e-9:
            raise _where(line_no, "util_gpu_mean", f"({mean:g}) exceeds util_gpu ({util:g})")
    if get("mem_used_mib") is not None:
        used = _number(d, "mem_used_mib", line_no, 0.0, 1e9)
    if get("mem_total_mib") is not None:
        total = _number(d, "mem_total_mib", line_no, 0.0, 1e9)
    if get("util_mem") is not None:
        _number(d, "util_mem", line_no, 0.0, 100.0)
    if get("power_w") is not None:
        _number(d, "power_w", line_no, 0.0, 1e5)
    if get("cpu_util_pct") is not None:
        cpu = _number(d, "cpu_util_pct", line_no, 0.0, 1e6)
    return (
        float(ts),
        node,
        uuid,
        util,
        mean,
        None if used is None else int(used * MIB),
        None if total is None else int(total * MIB),
        cpu,
    )


# ---------------------------------------------------------------------------- engine


class Replayer:
    """Feed raw lines with :meth:`feed`, then :meth:`finish`; events are in :attr:`events`."""

    def __init__(self, policies: PolicySet) -> None:
        self.policies = policies
        self.tolerance_s = policies.default.window
        self.ladder = Ladder(RecordingExecutor())
        self.events: list[ReplayEvent] = []
        self._heap: list[tuple[float, int, int, Any]] = []
        self._gpu: dict[tuple[str, str], tuple[_Job, int]] = {}
        self._jobs: dict[str, _Job] = {}
        self._done: list[_Job] = []
        self._dirty: list[_Job] = []
        self._now = -math.inf
        self._max_ts = -math.inf
        self._first_ts: float | None = None
        self.lines = 0
        self.samples = 0
        self.unattributed = 0
        self._n_jobs = 0
        self._end_seq = 0

    def feed(self, raw: bytes, line_no: int) -> None:
        self.lines = line_no
        if not raw.strip():
            return
        try:
            d = _loads(raw)
        except ValueError as exc:
            raise TraceError(line_no, f"not valid JSON: {exc}") from None
        if type(d) is not dict:
            raise TraceError(line_no, "expected a JSON object")
        kind = d.get("type")
        if kind == "sample":
            s = _sample(d, line_no)
            ts = s[0]
            if ts < self._max_ts - self.tolerance_s:
                raise TraceError(
                    line_no,
                    f"sample ts {ts:g} is {self._max_ts - ts:g} s older than an earlier line; "
                    f"replay needs lines sorted by ts (within {self.tolerance_s:g} s)",
                )
            if self._first_ts is None:
                self._first_ts = ts
            if ts >= self._max_ts:
                self._max_ts = ts
                heap = self._heap
                limit = ts - self.tolerance_s
                while heap and heap[0][0] <= limit:
                    self._process(heapq.heappop(heap))
            heapq.heappush(self._heap, (ts, _SAMPLE, line_no, s))
        elif kind == "job":
            alloc, start = parse_job(d, line_no)
            self._n_jobs += 1
            heapq.heappush(self._heap, (start, _START, line_no, alloc))
        elif kind is None:
            raise _where(line_no, "type", "is missing")
        else:
            raise _where(line_no, "type", f"must be 'job' or 'sample', got {kind!r}")

    def _process(self, item: tuple[float, int, int, Any]) -> None:
        ts, prio, _, payload = item
        if ts > self._now:
            if self._dirty:
                self._flush(self._now)
            self._now = ts
        if prio == _SAMPLE:
            self._on_sample(payload)
        elif prio == _START:
            self._on_start(payload)
        else:
            self._on_end(payload)

    def _on_sample(self, s: tuple[Any, ...]) -> None:
        self.samples += 1
        entry = self._gpu.get((s[1], s[2]))
        if entry is None:
            self.unattributed += 1
            return
        job, pos = entry
        ts = s[0]
        job.last_seen = ts
        if job.stopped:
            return
        job.tracker.add_values(pos, ts, job.window_s, s[3], s[4], s[5], s[6], s[7])
        if not job.dirty:
            job.dirty = True
            self._dirty.append(job)

    def _on_start(self, alloc: Allocation) -> None:
        old = self._jobs.get(alloc.job.job_id)
        if old is not None and not old.ended:
            self._on_end(old)  # the same id again (a requeued job): the old run is over
        job = _Job(alloc, self.policies.for_job(alloc.job))
        self._jobs[alloc.job.job_id] = job
        for pos, ref in enumerate(job.refs):
            self._gpu[ref] = (job, pos)
        if alloc.end_ts is not None:
            self._end_seq += 1  # unique, so the heap never compares two jobs
            heapq.heappush(self._heap, (max(alloc.end_ts, self._now), _END, self._end_seq, job))

    def _on_end(self, job: _Job) -> None:
        if job.ended:
            return
        if job.dirty:
            job.dirty = False
            self._evaluate(job, self._now)
        job.ended = True
        for ref in job.refs:
            entry = self._gpu.get(ref)
            if entry is not None and entry[0] is job:
                del self._gpu[ref]
        self.ladder.forget(job.allocation.job.job_id)
        self._done.append(job)

    def _flush(self, now: float) -> None:
        dirty = self._dirty
        self._dirty = []
        for job in dirty:
            if job.dirty:
                job.dirty = False
                self._evaluate(job, now)

    def _evaluate(self, job: _Job, now: float) -> None:
        if job.stopped or job.ended:
            return
        tracker = job.tracker
        findings = tracker.evaluate(now)
        if not findings:
            self.ladder.step(now, job.allocation, findings, job.policy)
            return
        events = self.ladder.step(
            now, job.allocation, findings, job.policy, lambda _f: tracker.still_idle(now)
        )
        for e in events:
            self.events.append(_to_replay_event(e))
            if e.status is Status.DONE or e.status is Status.DRY_RUN:
                job.stopped = True
                job.action_ts = now

    def finish(self) -> ReplaySummary:
        heap = self._heap
        while heap:
            self._process(heapq.heappop(heap))
        self._flush(self._now)
        jobs = self._done + [j for j in self._jobs.values() if not j.ended]
        idle = observed = reclaimed = 0.0
        exempt = 0
        seen: set[int] = set()
        for job in jobs:
            if id(job) in seen:
                continue
            seen.add(id(job))
            idle += job.tracker.idle_gpu_s()
            observed += job.tracker.observed_s
            exempt += job.tracker.exempt_reason is not None
            if job.action_ts is not None:
                end = job.allocation.end_ts
                if end is None:
                    end = job.last_seen if job.last_seen is not None else job.action_ts
                reclaimed += len(job.refs) * max(0.0, end - job.action_ts)
        return ReplaySummary(
            lines=self.lines,
            jobs=self._n_jobs,
            samples=self.samples,
            unattributed_samples=self.unattributed,
            exempt_jobs=exempt,
            observed_gpu_s=observed,
            idle_gpu_s=idle,
            reclaimed_gpu_s=reclaimed,
            enforce=self.policies.default.enforce,
            first_ts=self._first_ts,
            last_ts=None if self._max_ts == -math.inf else self._max_ts,
        )


def _to_replay_event(e: LadderEvent) -> ReplayEvent:
    d = e.decision
    f: Finding = d.finding
    if e.status is Status.REPORTED:
        action = Action.NONE.value
    elif e.status is Status.WARNED or e.status is Status.DRY_RUN:
        action = Action.WARN.value
    elif e.status is Status.DONE:
        action = d.action.value
    else:  # failed or aborted: nothing was done
        action = Action.NONE.value
    detail = f"{f.code}: {e.detail}" if f.code else e.detail
    return ReplayEvent(
        ts=d.ts,
        job_id=d.job_id,
        kind=_KIND[f.kind],
        action=action,
        gpus=f.uuids,
        detail=detail,
        status=e.status.value,
        ladder_action=d.action.value,
    )


def replay_lines(lines: Iterable[bytes], policies: PolicySet) -> tuple[Replayer, ReplaySummary]:
    """Replay a whole trace; raises TraceError on the first malformed line."""
    r = Replayer(policies)
    for line_no, raw in enumerate(lines, 1):
        r.feed(raw, line_no)
    return r, r.finish()


# ---------------------------------------------------------------------------- output


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_table(events: Sequence[ReplayEvent], summary: ReplaySummary) -> str:
    rows = [f"{'TIME (UTC)':19}  {'JOB':>10}  {'KIND':9}  {'ACTION':19}  {'GPUS':>4}  DETAIL"]
    for e in events:
        rows.append(
            f"{_iso(e.ts):19}  {e.job_id:>10}  {e.kind:9}  {e.action:19}  "
            f"{len(e.gpus):>4}  {e.detail}"
        )
    if not events:
        rows.append("(no findings)")
    kinds = Counter(e.kind for e in events)
    taken = Counter(e.ladder_action for e in events if e.status == Status.DONE.value)
    would = Counter(e.ladder_action for e in events if e.status == Status.DRY_RUN.value)
    warns = sum(1 for e in events if e.status == Status.WARNED.value)
    span = ""
    if summary.first_ts is not None and summary.last_ts is not None:
        span = f" from {_iso(summary.first_ts)} to {_iso(summary.last_ts)} UTC"
    pct = 100.0 * summary.idle_gpu_s / summary.observed_gpu_s if summary.observed_gpu_s else 0.0
    rows += [
        "",
        f"Summary: {summary.jobs} jobs, {summary.samples} samples{span}"
        + (
            f", {summary.unattributed_samples} samples of no job"
            if summary.unattributed_samples
            else ""
        )
        + (f", {summary.exempt_jobs} exempt jobs" if summary.exempt_jobs else ""),
        f"  GPU-hours observed: {summary.observed_gpu_s / 3600:.1f}; idle "
        f"(>= idle_window, reported time): {summary.idle_gpu_s / 3600:.1f} ({pct:.0f} %)",
        "  findings: " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"),
        f"  warnings: {warns}",
    ]
    if summary.enforce:
        acts = ", ".join(f"{a} {n}" for a, n in sorted(taken.items())) or "none"
        rows.append(f"  actions taken: {acts}")
        rows.append(f"  GPU-hours reclaimed: {summary.reclaimed_gpu_s / 3600:.1f}")
    else:
        acts = ", ".join(f"{a} {n}" for a, n in sorted(would.items())) or "none"
        rows.append(f"  dry run (enforcement off): would have taken: {acts}")
        rows.append(
            f"  GPU-hours that would have been reclaimed: {summary.reclaimed_gpu_s / 3600:.1f}"
        )
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpuwarden replay",
        description="Run gpuwarden's detection rules and action ladder over a JSON Lines trace.",
    )
    p.add_argument("trace", metavar="TRACE", help="JSON Lines trace file, or - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON object per finding/action")
    p.add_argument("--policy", type=Path, metavar="FILE", help="TOML file with a [policy] table")
    p.add_argument("--idle-window", type=positive_duration_arg, metavar="D")
    p.add_argument("--grace-period", type=duration_arg, metavar="D")
    p.add_argument("--warnings", type=int_arg(0), metavar="N")
    p.add_argument("--warn-interval", type=duration_arg, metavar="D")
    p.add_argument("--enforce", action="store_true", default=None, help="act (recorded only)")
    p.add_argument(
        "--window-s",
        type=positive_duration_arg,
        metavar="D",
        help="length of one sample's report window (default: policy window, 60 s)",
    )
    return p


def _open_lines(trace: str) -> Iterable[bytes]:
    if trace == "-":
        yield from sys.stdin.buffer
        return
    with Path(trace).open("rb") as fh:
        yield from fh


def replay_main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(attach_negative_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a bad flag (2, message already printed)
        return int(exc.code or 0)
    overrides = {
        "idle_window": args.idle_window,
        "grace_period": args.grace_period,
        "warnings": args.warnings,
        "warn_interval": args.warn_interval,
        "enforce": args.enforce,
        "window": args.window_s,
    }
    try:
        policies = load_policy(args.policy, overrides)
    except ConfigError as exc:
        print(f"gpuwarden replay: policy: {exc}", file=sys.stderr)
        return 2
    name = "<stdin>" if args.trace == "-" else args.trace
    try:
        replayer, summary = replay_lines(_open_lines(args.trace), policies)
    except TraceError as exc:
        print(f"gpuwarden replay: {name}: {exc} (no results printed)", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gpuwarden replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    if args.json:
        out.write(b"".join(_dumps(e.contract()) + b"\n" for e in replayer.events).decode())
    else:
        out.write(format_table(replayer.events, summary))
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(replay_main())
