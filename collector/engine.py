"""The detection engine: report windows in, ladder events out, the clock passed in.

One engine drives both the live collector (:mod:`enforce`) and ``gpuwarden replay``
(:mod:`replay`), so replay shows literally what the collector would do. It owns the job
table (a :class:`RunTable`: one :class:`JobRun` per run of a job, each with its
:class:`AllocationTracker`) and the :class:`Ladder`; it never reads a clock.

Detection runs on data time. :meth:`Engine.on_window` only buffers; :meth:`Engine.evaluate`
(``now``) processes the buffered windows whose end is at most ``now - reorder_s`` (the
watermark), in one fixed order: window end, then node, then GPU UUID. After all windows
ending at time T, every job that got one is evaluated at T. So the events do not depend on
when, or how often, the caller evaluates; a window that arrives after the watermark passed
it (an agent's spool after an outage) is processed when it comes, conservatively (see
:mod:`rules`).

Which run of which job a window belongs to, and when runs start and end
(:meth:`Engine.on_job`, :meth:`Engine.on_job_end`, another job on a GPU, a requeue,
silence), is the job table's business (:mod:`run_table`). No event is produced for a run
after its end. After an action is taken (or, in dry-run, would have been taken) the run is
not evaluated again: its GPUs count as given back.

Actions: with a synchronous ``executor`` (replay) the ladder acts inside the evaluation.
Without one (live), due actions wait in :meth:`Engine.take_actions`; the caller carries them
out elsewhere and hands each outcome back with :meth:`Engine.on_action_result`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

from gpuwarden.collector.ladder import (
    ActionExecutor,
    ActionOutcome,
    Decision,
    Ladder,
    LadderEvent,
    Status,
)
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.reorder import ReorderBuffer
from gpuwarden.collector.rules import Allocation, Finding, FindingKind
from gpuwarden.collector.run_table import RunTable
from gpuwarden.collector.runs import JobRun, Observation, observe, run_key, same_run
from gpuwarden.common.types import WindowRecord

# At one instant: the windows that end then, then the jobs that end, then those that start. A
# window ending when the next job starts covers time before that start, so it is the old
# job's; taken after the new job's start it would end the new run and split each hand-over.
_WINDOW, _END, _START = 0, 1, 2
_NO_TIME = -math.inf


def _note_action(run: JobRun | None, e: LadderEvent) -> None:
    if run is not None and e.status in (Status.DONE, Status.DRY_RUN):
        run.stopped = True
        run.action_ts = e.decision.ts


class Engine:
    """See the module docstring. Thread-safe: windows may come from one thread while
    another evaluates and action workers ask :meth:`still_idle`."""

    def __init__(
        self,
        policies: PolicySet,
        *,
        executor: ActionExecutor | None = None,
        reorder_s: float | None = None,
        job_gone_after_s: float = 900.0,
        keep_runs: bool = False,
    ) -> None:
        self.policies = policies
        self.reorder_s = policies.default.window if reorder_s is None else reorder_s
        self.job_gone_after_s = job_gone_after_s
        self.ladder = Ladder(executor)
        self._table = RunTable(
            lambda job: self.policies.for_job(job),
            self._on_run_end,
            job_gone_after_s=job_gone_after_s,
            keep_runs=keep_runs,
        )
        self.closed_runs = self._table.closed_runs
        # Why a job must be left alone now (an admin's exemption), asked before each
        # evaluation and before each action; None: no such hook (replay).
        self.exempt: Callable[[str, float], str | None] | None = None
        self.windows = 0
        self.late_windows = 0
        self._buffer = ReorderBuffer()
        self._push = self._buffer.push
        self._push_window = self._buffer.push_window
        self._now = -math.inf  # data time processed so far
        self._next_sweep = -math.inf
        self._runs = self._table.runs  # the table's, read here on hot paths
        self._gpu = self._table.gpu
        self._dirty: list[JobRun] = []
        self._events: list[LadderEvent] = []
        self._actions: list[Decision] = []
        self._ended_runs: list[tuple[str, int, float]] = []  # (job id, start, end)
        self._quiet = False
        self._flushed = False
        self._lock = threading.RLock()

    @property
    def unattributed(self) -> int:
        """Windows of no job, or of a run that had ended."""
        return self._table.unattributed

    def set_policies(self, policies: PolicySet) -> None:
        """A reloaded policy: current runs follow it from their next evaluation (see
        :meth:`AllocationTracker.set_policy`), new runs start with it."""
        with self._lock:
            self.policies = policies
            for run in self._runs.values():
                run.quiet_until = -math.inf
                run.policy = policies.for_job(run.job)
                run.tracker.set_policy(run.policy)
                run.policy = run.tracker.policy

    # -- input ---------------------------------------------------------------------------
    def on_window(self, rec: WindowRecord, attributed: bool = True) -> None:
        """Buffer one stored window. ``attributed`` False: the node could not ask Slurm, so a
        GPU reported without a job says nothing about the job that held it."""
        self.on_observation(observe(rec, attributed))

    def on_observation(self, o: Observation) -> None:
        """:meth:`on_window` for a window already in the engine's terms."""
        with self._lock:
            self._push_window(o)

    def on_observations_at(self, ts: float, batch: list[Observation]) -> None:
        """:meth:`on_observation` of windows that all end at ``ts``, in order, under one lock
        (replay's path: the lines of one time of a trace). The engine keeps ``batch``."""
        with self._lock:
            self._buffer.push_windows_at(ts, batch)

    def on_job(self, allocation: Allocation) -> None:
        """A job known in advance (replay's job line): it starts at its start with all its
        GPUs and, when ``end_ts`` is set, ends then."""
        start = allocation.started_ts
        with self._lock:
            self._push(-math.inf if start is None else start, _START, "", "", allocation)
            if allocation.end_ts is not None:
                key = run_key(allocation.job)
                self._push(allocation.end_ts, _END, key[0], "", key)

    def on_job_end(self, job_id: str, ts: float) -> None:
        """The job ended at ``ts`` (whatever run of it is current then)."""
        with self._lock:
            self._push(ts, _END, job_id, "", (job_id, None))

    # -- processing ----------------------------------------------------------------------
    def evaluate(self, now: float) -> list[LadderEvent]:
        """Process what is buffered up to the watermark ``now - reorder_s``; return the
        events since the last call (the same whatever the calls in between)."""
        with self._lock:
            self._advance(now - self.reorder_s)
            return self.take_events()

    def take_events(self) -> list[LadderEvent]:
        """The events produced since the last call."""
        with self._lock:
            out, self._events = self._events, []
            return out

    def finish(self) -> list[LadderEvent]:
        """Process everything buffered (the end of a replayed trace)."""
        return self.evaluate(math.inf)

    def advance_to(self, watermark: float) -> None:
        """Process what is buffered up to ``watermark`` (data time), keeping the events for
        the next :meth:`evaluate`."""
        with self._lock:
            self._advance(watermark)

    def next_time(self) -> float | None:
        """The earliest buffered time (window end, job start or end); None: nothing buffered.
        Lets a caller advance in small steps (``advance_to`` each time in turn) with the same
        events as one :meth:`evaluate`."""
        with self._lock:
            return self._buffer.next_time()

    def warm_up(self, records: Iterable[WindowRecord], until: float) -> None:
        """Rebuild the trackers from stored windows (after a restart) without producing
        events: the idle streaks survive, the ladder starts afresh."""
        with self._lock:
            for rec in records:
                self.on_observation(observe(rec, attributed=False))
            self._quiet = True
            try:
                self._advance(until)
            finally:
                self._quiet = False

    def _advance(self, watermark: float) -> None:
        pop = self._buffer.pop
        on_window = self._on_window
        while (due := pop(watermark)) is not None:
            ts, windows, others = due
            if ts > self._now:
                if self._dirty:
                    self._flush()
                if ts >= self._next_sweep:
                    self._table.sweep(ts)
                    self._next_sweep = ts + self.job_gone_after_s / 8
                self._now = ts
                self._flushed = False
            elif ts < self._now or self._flushed:
                self.late_windows += len(windows)
            self.windows += len(windows)
            for o in windows:
                on_window(o)
            for prio, _, _, _, payload in others:
                if prio == _START:
                    self._table.start(payload, self._now)
                else:
                    self._table.end(payload, self._now)
        if self._dirty:
            self._flush()
        self._flushed = True

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        now = self._now
        if self._quiet:
            for run in dirty:
                run.dirty = False
            return
        evaluate = self._evaluate
        for run in dirty:
            if run.dirty:
                run.dirty = False
                evaluate(run, now)

    def _on_window(self, o: Observation) -> None:
        # one unpacking instead of a field look-up each: this runs for every window
        node, uuid, _, job, start, end, umax, umean, used, total, _, sm, profile, procs, mig = o
        where = (node, uuid)
        run = self._gpu.get(where)
        # The common case: the GPU's run got this very facts object last time (so it is the
        # current run of that job, holding this GPU) and has not been silent too long.
        if (
            run is None
            or run.job is not job
            or ((last := run.last_seen) is not None and end - last > self.job_gone_after_s)
        ):
            run = self._table.run_of_window(o, run, self._now)
            if run is None:
                return
            last = run.last_seen
        tracker = run.tracker
        pos = tracker.positions.get(where)
        assert pos is not None  # the GPU is the run's (see RunTable.run_of_window)
        if last is None or end > last:
            run.last_seen = end
        if run.stopped:
            return
        assert job is not None  # a window of no job has no run
        tracker.add_values(
            pos,
            end,
            end - start if end > start else 0.0,
            umax,
            umean,
            used,
            total,
            job.cpu_util_pct,
            sm,
            profile,
            procs,
            mig,
        )
        if run.dirty:
            return
        if (
            self._now < tracker.quiet_until
            and run.quiet_until == _NO_TIME
            and not self.ladder.has_state(run.key[0])
        ):
            # Its evaluation now would do nothing (see _evaluate): the tracker would find
            # nothing, the ladder has nothing to reset, no quiet mark to clear. Nothing
            # between here and the evaluation at this same time can change that but another
            # window of the run, which asks again.
            return
        run.dirty = True
        self._dirty.append(run)

    def _on_run_end(self, run: JobRun, ts: float, current: bool) -> None:
        """Right before a run ends: its last windows are evaluated, its ladder forgotten."""
        if run.dirty:
            run.dirty = False
            if not self._quiet:
                self._evaluate(run, self._now)
        if not self._quiet:
            self._ended_runs.append((run.job_id, run.key[1], ts))
        if current:
            self.ladder.forget(run.job_id)

    def _evaluate(self, run: JobRun, now: float) -> None:
        if run.stopped or run.ended:
            return
        tracker = run.tracker
        if (
            now < run.quiet_until
            and run.quiet_revision == self.ladder.revision
            and tracker.same_idle(run.idle_mark, now)
            and (self.exempt is None or not self.exempt(run.job_id, now))
        ):
            # An idle job between warnings: the same findings as at the last step, and the
            # ladder's next step for them is not due yet (Ladder.quiet_until).
            return
        run.quiet_until = _NO_TIME
        if now < tracker.quiet_until and not self.ladder.has_state(run.key[0]):
            return  # pending() would find nothing, and there is nothing to reset
        findings = tracker.pending(now)
        if findings and self.exempt is not None and self.exempt(run.job_id, now):
            findings = []  # exempted: the ladder resets, as when the job is in use
        if not findings and not self.ladder.has_state(run.key[0]):
            return  # nothing found, nothing to reset
        if findings and findings is run.stepped:
            # The very report-only findings the ladder took at this run's last step, and
            # only a step changes their state: it would report nothing new.
            return
        run.stepped = findings

        def still_idle(f: Finding) -> bool:
            return tracker.still_idle(now, f.gpus)

        ladder = self.ladder
        events = ladder.step(now, tracker.allocation, findings, run.policy, still_idle)
        self._actions.extend(ladder.take_pending())
        for e in events:
            _note_action(run, e)
        self._events.extend(events)
        if findings and findings[0].kind is FindingKind.IDLE and not run.stopped:
            # all its GPUs idle (only then is an idle finding first): while they stay in
            # the same streaks, nothing happens before the ladder's next step is due
            until = ladder.quiet_until(run.key[0], run.policy)
            if until > now:
                run.quiet_until = until
                run.quiet_revision = ladder.revision
                run.idle_mark = tracker.idle_mark()

    def take_ended_runs(self) -> list[tuple[str, int, float]]:
        """(job id, start time or 0, end time) of the runs that ended since the last call."""
        with self._lock:
            out, self._ended_runs = self._ended_runs, []
            return out

    # -- actions carried out elsewhere ---------------------------------------------------
    def take_actions(self) -> list[Decision]:
        """Actions due since the last call (only without a synchronous executor)."""
        with self._lock:
            out, self._actions = self._actions, []
            return out

    def _run_of(self, d: Decision) -> JobRun | None:
        run = self._runs.get(d.job_id)
        return run if run is not None and same_run(run.key, run_key(d.allocation.job)) else None

    def on_action_result(self, decision: Decision, outcome: ActionOutcome) -> LadderEvent:
        """The outcome of an action from :meth:`take_actions`; returns its event."""
        with self._lock:
            run = self._run_of(decision)
            policy = (
                run.policy if run is not None else self.policies.for_job(decision.allocation.job)
            )
            event = self.ladder.on_result(decision, outcome, policy)
            _note_action(run, event)
            return event

    def on_action_aborted(self, decision: Decision, detail: str) -> LadderEvent:
        """An action from :meth:`take_actions` was not carried out (see :meth:`still_idle`)."""
        with self._lock:
            return self.ladder.on_aborted(decision, detail)

    def still_idle(self, decision: Decision) -> bool:
        """The check right before acting, on the newest data, processed or still buffered:
        the run is current, each GPU of the finding is in the same idle streak, and no newer
        window of them shows activity."""
        with self._lock:
            run = self._run_of(decision)
            if run is None or run.ended:
                return False
            if self.exempt is not None and self.exempt(run.job_id, decision.ts):
                return False  # exempted since the decision: not acting
            f = decision.finding
            where = set()
            for g in f.gpus:
                since = run.tracker.idle_since(g.node, g.uuid)
                if since is None or since > f.since_ts:
                    return False
                where.add((g.node, g.uuid))
            for o in self._buffer.windows():
                if (o.node, o.uuid) not in where:
                    continue
                if o.end > decision.ts and o.activity(run.policy):
                    return False
            return True

    # -- inspection ----------------------------------------------------------------------
    def jobs(self) -> list[str]:
        with self._lock:
            return sorted(self._runs)

    def runs(self) -> list[JobRun]:
        """Current runs, then (with ``keep_runs``) the ended ones."""
        with self._lock:
            return list(self._runs.values()) + list(self.closed_runs or ())

    @property
    def data_time(self) -> float:
        return self._now
