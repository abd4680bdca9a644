"""``gpuwarden replay``: a trace adapter in front of the collector's own :class:`Engine`.

Trace lines (the replay format of docs/policy.md, parsed in :mod:`trace`) become the very records
the live collector gets: a job line is an allocation known in advance (:meth:`Engine.on_job`),
a sample line is a stored window of that GPU, attributed to the job that holds the GPU at that
time, as the agent attributes it. The engine runs on a simulated clock (the trace's times)
with a synchronous executor that records each action as carried out. Choices the contract
leaves open (see docs/policy.md):

* Order: lines must be sorted by time. A job line takes effect at its ``start`` and must come
  before that job's samples (job lines may all come first). Sample lines may be out of order
  by at most one report window (``--window-s``, policy ``window``); the engine's reorder
  buffer is that long. A sample older than that is an error naming its line.
* A sample is one report window ending at ``ts`` and lasting ``window_s`` when the line has
  it, else the job's policy ``window`` (default 60 s).
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

import gc
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gpuwarden.collector.engine import Engine
from gpuwarden.collector.ladder import Action, ActionOutcome, Decision, LadderEvent, Status
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.rules import Allocation, FindingKind
from gpuwarden.collector.runs import Observation
from gpuwarden.collector.trace import TraceError, loads, parse_job, sample_values
from gpuwarden.collector.trace_attribution import TraceAttribution

_KIND = {
    FindingKind.IDLE: "idle",
    FindingKind.PARTLY_IDLE: "idle",
    FindingKind.UNDERUSED: "underused",
    FindingKind.ADVICE: "advice",
}


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


class Replayer:
    """Feed raw lines with :meth:`feed`, then :meth:`finish`; events are in :attr:`events`
    (contract form) and :attr:`ladder_events` (as the live collector audits them)."""

    def __init__(self, policies: PolicySet, job_gone_after_s: float = 900.0) -> None:
        self.policies = policies
        self.tolerance_s = policies.default.window
        self.engine = Engine(
            policies,
            executor=RecordingExecutor(),
            reorder_s=self.tolerance_s,
            job_gone_after_s=job_gone_after_s,
            keep_runs=True,
        )
        self.events: list[ReplayEvent] = []
        self.ladder_events: list[LadderEvent] = []
        self.attribution = TraceAttribution(policies)
        self._allocations: list[Allocation] = []
        # the observations of the newest time read, not yet handed to the engine
        self._observed: list[Observation] = []
        self._max_ts = -math.inf
        self._first_ts: float | None = None
        self.lines = 0
        self.samples = 0
        self.unattributed = 0

    def feed(self, raw: bytes, line_no: int) -> None:
        """One line (see :meth:`feed_lines`)."""
        self.feed_lines((raw,), line_no)

    def feed_lines(self, lines: Iterable[bytes], first_line_no: int = 1) -> None:
        """Lines numbered from ``first_line_no``; raises TraceError at the first malformed
        one. One loop with its look-ups made once: it runs for every line of a trace."""
        observed = self._observed
        observation = self.attribution.observation
        engine = self.engine
        tolerance = self.tolerance_s
        max_ts = self._max_ts
        samples = unattributed = 0
        line_no = first_line_no - 1
        try:
            for line_no, raw in enumerate(lines, first_line_no):
                try:
                    d = loads(raw)
                except ValueError as exc:
                    if not raw or raw.isspace():  # a blank line (asked only of what fails)
                        continue
                    raise TraceError(line_no, f"not valid JSON: {exc}") from None
                if type(d) is not dict:
                    raise TraceError(line_no, "expected a JSON object")
                kind = d.get("type")
                if kind == "sample":
                    s = sample_values(d, line_no)
                    ts = s[0]
                    if ts < max_ts - tolerance:
                        raise TraceError(
                            line_no,
                            f"sample ts {ts:g} is {max_ts - ts:g} s older than an earlier line; "
                            f"replay needs lines sorted by ts (within {tolerance:g} s)",
                        )
                    samples += 1
                    o = observation(s, max_ts)
                    if o[3] is None:  # its job (a field look-up costs a call)
                        unattributed += 1
                    if ts == max_ts:  # the common case: more lines of the newest time
                        observed.append(o)
                    elif ts > max_ts:
                        if self._first_ts is None:
                            self._first_ts = ts
                        self._hand_over()
                        observed = self._observed
                        max_ts = self._max_ts = ts
                        # strictly older than the tolerance: a later line may still have that time
                        engine.advance_to(math.nextafter(ts - tolerance, -math.inf))
                        self._collect()
                        observed.append(o)
                    else:  # late, within the tolerance: its time is still buffered
                        engine.on_observation(o)
                elif kind == "job":
                    alloc, start = parse_job(d, line_no)
                    self._allocations.append(alloc)
                    self.attribution.add_job(alloc, start)
                    self.engine.on_job(alloc)
                elif kind is None:
                    raise TraceError(line_no, "'type' is missing")
                else:
                    raise TraceError(line_no, f"'type' must be 'job' or 'sample', got {kind!r}")
        finally:
            self.lines = line_no
            self.samples += samples
            self.unattributed += unattributed

    def _hand_over(self) -> None:
        """Give the engine the observations of the newest time read (one call for the many
        lines of one time of the trace), before the next time comes."""
        if self._observed:
            self.engine.on_observations_at(self._max_ts, self._observed)
            self._observed = []

    def _collect(self) -> None:
        self.engine.take_ended_runs()  # the live collector's summaries; the runs are kept
        for e in self.engine.take_events():
            self.ladder_events.append(e)
            self.events.append(to_replay_event(e))

    def finish(self) -> ReplaySummary:
        self._hand_over()
        self.engine.advance_to(math.inf)
        self._collect()
        idle = observed = reclaimed = 0.0
        exempt: set[object] = set()
        for run in self.engine.runs():
            tracker = run.tracker
            idle += tracker.idle_gpu_s()
            observed += tracker.observed_s
            if tracker.exempt_reason is not None:
                exempt.add(run.key)
            if run.action_ts is not None:
                end = run.allocation.end_ts
                if end is None:
                    end = run.last_seen if run.last_seen is not None else run.action_ts
                reclaimed += len(run.allocation.gpus) * max(0.0, end - run.action_ts)
        return ReplaySummary(
            lines=self.lines,
            jobs=len(self._allocations),
            samples=self.samples,
            unattributed_samples=self.unattributed,
            exempt_jobs=len(exempt),
            observed_gpu_s=observed,
            idle_gpu_s=idle,
            reclaimed_gpu_s=reclaimed,
            enforce=self.policies.default.enforce,
            first_ts=self._first_ts,
            last_ts=None if self._max_ts == -math.inf else self._max_ts,
        )


def to_replay_event(e: LadderEvent) -> ReplayEvent:
    d = e.decision
    f = d.finding
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


# Replay allocates a few short-lived objects per line (parsed line, window, buffer entry) and
# keeps every run it saw. With Python's default collection threshold (700) the cyclic garbage
# collector ran ~2,400 times on a 1,000-GPU day and its full passes over the kept runs took
# 15 % of the replay. A higher first threshold lets short-lived objects die by reference
# counting before a collection sees them; collections still run, only less often.
_REPLAY_GC_THRESHOLD = 50_000


@contextmanager
def _fewer_collections() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], _REPLAY_GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def replay_lines(
    lines: Iterable[bytes], policies: PolicySet, job_gone_after_s: float = 900.0
) -> tuple[Replayer, ReplaySummary]:
    """Replay a whole trace; raises TraceError on the first malformed line."""
    r = Replayer(policies, job_gone_after_s)
    with _fewer_collections():
        r.feed_lines(lines)
        return r, r.finish()


def replay_main(argv: list[str] | None = None) -> int:
    """``gpuwarden replay``; the command line itself lives in :mod:`replay_cli`."""
    from gpuwarden.collector.replay_cli import replay_main as main

    return main(argv)


if __name__ == "__main__":
    raise SystemExit(replay_main())
