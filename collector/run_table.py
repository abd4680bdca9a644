"""The engine's job table: which run of which job holds which GPU, and when runs start and end.

A job run is identified by (job id, start time). It starts with its first window (live) or
an explicit job line (replay, with all its GPUs). It ends when one of its GPUs is reported
with another job or with none (only by a node whose Slurm view is available), when the same
job id shows up with another start time (requeued), at an explicit end, or after
``job_gone_after_s`` without data. The table never evaluates: it tells its owner (the
:class:`~gpuwarden.collector.engine.Engine`) about each run that ends, before it ends.
"""

from __future__ import annotations

from collections.abc import Callable

from gpuwarden.collector.findings import Allocation, GpuRef
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.rules import AllocationTracker
from gpuwarden.collector.runs import JobRun, Observation, RunKey, job_facts, run_key, same_run
from gpuwarden.common.types import JobInfo

# called with (run, end time, whether it is its job's current run) right before a run ends
EndHook = Callable[[JobRun, float, bool], None]


class RunTable:
    """Current runs by job id and by GPU, and the runs that ended explicitly."""

    def __init__(
        self,
        policy_of: Callable[[JobInfo], Policy],
        on_end: EndHook,
        *,
        job_gone_after_s: float,
        keep_runs: bool,
    ) -> None:
        self.policy_of = policy_of
        self.on_end = on_end
        self.job_gone_after_s = job_gone_after_s
        self.runs: dict[str, JobRun] = {}
        self.gpu: dict[tuple[str, str], JobRun] = {}
        self.closed_runs: list[JobRun] | None = [] if keep_runs else None
        self.unattributed = 0  # windows of no job, or of a run that has ended
        self._ended: dict[RunKey, None] = {}  # explicitly ended runs (bounded, oldest first)

    def sweep(self, ts: float) -> None:
        """End the runs silent for longer than job_gone_after_s (memory only: a silent run
        produces nothing, and its next window would end it anyway)."""
        gone = self.job_gone_after_s
        for run in list(self.runs.values()):
            if run.last_seen is not None and ts - run.last_seen > gone:
                self.end_run(run, run.last_seen + gone, explicit=False)

    def start(self, allocation: Allocation, now: float) -> None:
        """A job known in advance starts (replay's job line), with all its GPUs."""
        self._ended.pop(run_key(allocation.job), None)
        self._new_run(allocation, now)

    def end(self, key: tuple[str, int | None], now: float) -> None:
        """The job's current run ends (when ``key`` names a start: only that run)."""
        run = self.runs.get(key[0])
        if run is None or (key[1] is not None and run.key != key):
            return
        self.end_run(run, now, explicit=True)

    def _new_run(self, allocation: Allocation, now: float) -> JobRun:
        job = allocation.job
        old = self.runs.get(job.job_id)
        if old is not None:
            self.end_run(old, now, explicit=False)  # the same id again: requeued
        policy = self.policy_of(job)
        run = JobRun(
            run_key(job), policy, AllocationTracker(allocation, policy), job_facts(job), job
        )
        self.runs[job.job_id] = run
        for g in allocation.gpus:
            holder = self.gpu.get((g.node, g.uuid))
            if holder is not None and holder is not run:
                self.end_run(holder, now, explicit=False)
            self.gpu[(g.node, g.uuid)] = run
        return run

    def run_of_window(self, o: Observation, holder: JobRun | None, now: float) -> JobRun | None:
        """The run a window belongs to, holding its GPU from now on, with the window's job
        facts; None when the window is of no run (no job, or a run that has ended). Ends
        the runs the window shows over: the GPU's holder when another job or none has it,
        a run silent for longer than job_gone_after_s, the job's earlier run (requeued)."""
        job = o.job
        end = o.end
        if job is None:
            self.unattributed += 1
            if holder is not None and o.attributed:
                self.end_run(holder, end, explicit=False)  # the GPU is free
            return None
        key = (job.job_id, job.start_time)
        if holder is not None and not same_run(holder.key, key):
            self.end_run(holder, end, explicit=False)  # another job holds it
        run = self.runs.get(job.job_id)
        if run is not None and same_run(run.key, key):
            last = run.last_seen
            if last is not None and end - last > self.job_gone_after_s:
                self.end_run(run, last + self.job_gone_after_s, explicit=False)
                run = None
        elif run is not None:
            self.end_run(run, end, explicit=False)  # requeued: a new run
            run = None
        if run is None:
            if key in self._ended:
                self.unattributed += 1  # a straggler of a run that has ended
                return None
            ref = GpuRef(o.node, o.uuid, o.gpu_index)
            run = self._new_run(Allocation(job=job, gpus=(ref,)), now)
        where = (o.node, o.uuid)
        tracker = run.tracker
        if tracker.position(o.node, o.uuid) is None:
            tracker.add_gpu(GpuRef(o.node, o.uuid, o.gpu_index))
            self.gpu[where] = run
        elif holder is not run:
            self.gpu[where] = run
        if job is not run.job and (key[1] or not run.key[1]):  # never fewer facts than known
            _update_facts(run, job)
        return run

    def end_run(self, run: JobRun, ts: float, *, explicit: bool) -> None:
        if run.ended:
            return
        current = self.runs.get(run.job_id) is run
        self.on_end(run, ts, current)
        run.ended = True
        run.end_ts = ts
        for g in run.allocation.gpus:
            where = (g.node, g.uuid)
            if self.gpu.get(where) is run:
                del self.gpu[where]
        if current:
            del self.runs[run.job_id]
        if explicit:
            self._ended[run.key] = None
            if len(self._ended) > 100_000:
                del self._ended[next(iter(self._ended))]
        if self.closed_runs is not None:
            self.closed_runs.append(run)


def _update_facts(run: JobRun, job: JobInfo) -> None:
    """Newer facts of the job (e.g. Slurm answered again) replace the old ones."""
    run.job = job
    if job.start_time and not run.key[1]:
        run.key = run_key(job)
    facts = job_facts(job)
    if facts != run.facts:
        run.facts = facts
        a = run.tracker.allocation
        run.tracker.allocation = Allocation(
            job=job, gpus=a.gpus, start_ts=a.start_ts, end_ts=a.end_ts
        )
