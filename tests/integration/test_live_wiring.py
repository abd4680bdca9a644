"""The live wiring around the engine, on a real collector (ingest, SQLite, enforcement
wiring): actions run off the evaluation path (one slow Dask scheduler or Slurm controller does
not stall detection for the other jobs), ladder events reach the notifiers, and the idle
streaks survive a restart."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from gpuwarden.collector.audit import AuditRecord
from gpuwarden.collector.enforce import Enforcer, attach_enforcement
from gpuwarden.collector.ladder import Action, ActionOutcome, Decision
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, SlurmStatus
from tests.helpers import wait_for

REPORT_S = 0.1
SLOW_S = 30.0


def idle_report(job: JobInfo, seq: int, end: float) -> NodeReport:
    """Node n1's report of one idle GPU of ``job``, a 10 s window ending at ``end``."""
    gpu = GpuWindow(uuid=f"GPU-{job.job_id}", index=0, util_max=0.0, job=job, allocated=True)
    return NodeReport("n1", seq, end - 10.0, end, (gpu,), SlurmStatus(True))


def evaluated_by_hand(collector: Collector, policies: PolicySet) -> Enforcer:
    """Dry-run detection on ``collector``, evaluated by the test (not on a timer)."""
    return attach_enforcement(
        collector,
        policies=policies,
        executor=None,
        audit_jsonl=None,
        evaluate_interval_s=3600.0,
    )


class SlowForA:
    """Takes 30 s to act on job A (a scheduler that hangs); instant for anyone else."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[tuple[str, float]] = []

    def execute(self, decision: Decision) -> ActionOutcome:
        self.started.append((decision.job_id, time.time()))
        if decision.job_id == "A":
            self.release.wait(SLOW_S)
        return ActionOutcome(True, f"{decision.action.value} {decision.job_id}")


async def test_an_executor_sleeping_30s_for_one_job_does_not_delay_another_jobs_warning(
    tmp_path: Path,
) -> None:
    now = time.time()
    act_at_once = Policy(
        idle_window=0.5,
        grace_period=0.0,
        warnings=0,
        window=REPORT_S,
        max_gap=1.0,
        enforce=True,
    )
    warn_first = Policy(
        idle_window=1.0, grace_period=0.0, warnings=1, warn_interval=60.0, window=REPORT_S
    )
    policies = PolicySet(default=act_at_once, partitions={"b": warn_first})
    a = JobInfo(job_id="A", partition="a", start_time=int(now) - 60, requeue=True)
    b = JobInfo(job_id="B", partition="b", start_time=int(now) - 60, requeue=True)
    collector = Collector(db_path=tmp_path / "c.db")
    await collector.start()
    executor = SlowForA()
    audited: list[tuple[float, AuditRecord]] = []
    enforcer = attach_enforcement(
        collector,
        policies=policies,
        executor=executor,
        audit_jsonl=None,
        evaluate_interval_s=0.1,
        listeners=[lambda r: audited.append((time.time(), r))],
    )
    b_idle_from: float | None = None
    try:
        seq = 0
        start = time.time()
        while time.time() - start < 6.0:
            await asyncio.sleep(REPORT_S)
            end = time.time()
            seq += 1
            b_busy = end - start < 2.0  # B computes for 2 s, then idles
            if not b_busy and b_idle_from is None:
                b_idle_from = end
            gpus = (
                GpuWindow(uuid="GPU-a", index=0, util_max=0.0, job=a, allocated=True),
                GpuWindow(
                    uuid="GPU-b", index=1, util_max=80.0 if b_busy else 0.0, job=b, allocated=True
                ),
            )
            report = NodeReport("n1", seq, end - REPORT_S, end, gpus, SlurmStatus(True))
            await collector.ingestor.submit(report)
        await wait_for(lambda: any(r.job_id == "B" for _, r in audited), timeout_s=10)
        assert b_idle_from is not None
        # A's requeue started long ago and is still hanging in its worker thread ...
        assert [j for j, _ in executor.started] == ["A"]
        assert enforcer.worker is not None and enforcer.worker.in_flight() == 1
        # ... yet B's warning came within seconds of its data showing a full idle window.
        when, warning = next((t, r) for t, r in audited if r.job_id == "B")
        assert (warning.action, warning.outcome) == ("warn", "warned")
        assert when - (b_idle_from + warn_first.idle_window) < 3.0
        assert [(r.job_id, r.outcome) for _, r in audited if r.job_id == "A"] == []

        executor.release.set()  # A's outcome comes back as an event at the next evaluation
        await wait_for(lambda: any(r.job_id == "A" for _, r in audited), timeout_s=10)
        (done,) = [r for _, r in audited if r.job_id == "A"]
        assert (done.action, done.outcome, done.detail) == (
            Action.REQUEUE.value,
            "done",
            "requeue A",
        )
    finally:
        executor.release.set()
        await collector.stop()


async def test_warnings_reach_the_collectors_notifiers(tmp_path: Path) -> None:
    from gpuwarden.collector.outputs.notify import NotifierHub

    class Inbox:
        def __init__(self) -> None:
            self.got: list[AuditRecord] = []

        def send(self, record: AuditRecord) -> None:
            self.got.append(record)

        def close(self) -> None:
            pass

    inbox = Inbox()
    collector = Collector(db_path=tmp_path / "c.db", notifiers=NotifierHub([("inbox", inbox)]))
    await collector.start()
    policy = Policy(idle_window=0.5, grace_period=0.0, warnings=1, window=REPORT_S, max_gap=1.0)
    job = JobInfo(job_id="C", user="carol", start_time=int(time.time()) - 60)
    try:
        attach_enforcement(
            collector,
            policies=PolicySet(default=policy),
            executor=None,
            audit_jsonl=None,
            evaluate_interval_s=0.1,
        )
        for seq in range(1, 15):
            await asyncio.sleep(REPORT_S)
            end = time.time()
            gpu = GpuWindow(uuid="GPU-c", index=0, util_max=0.0, job=job, allocated=True)
            report = NodeReport("n1", seq, end - REPORT_S, end, (gpu,), SlurmStatus(True))
            await collector.ingestor.submit(report)
        await wait_for(lambda: inbox.got, timeout_s=10)
        assert [(r.job_id, r.outcome) for r in inbox.got] == [("C", "warned")]
    finally:
        await collector.stop()


async def test_after_a_restart_the_idle_streak_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    """The windows stored before a restart count: the warning comes with the first new
    windows, not a whole idle window later, and its streak starts before the restart."""
    policy = Policy(idle_window=120.0, grace_period=0.0, warnings=1, window=10.0, max_gap=30.0)
    now = time.time()
    job = JobInfo(job_id="D", start_time=int(now) - 600)
    first = Collector(db_path=tmp_path / "c.db")
    await first.start()
    for k in range(10):  # 100 s idle before the restart (less than idle_window)
        await first.ingestor.submit(idle_report(job, k + 1, now - 100 + 10 * k))
    await first.stop()

    collector = Collector(db_path=tmp_path / "c.db")
    await collector.start()
    try:
        enforcer = evaluated_by_hand(collector, PolicySet(default=policy))
        for k in range(3):  # 30 s more after it
            await collector.ingestor.submit(idle_report(job, 11 + k, now + 10 * (k + 1)))
        records = enforcer.evaluate(now + 30 + policy.window)
        assert [(r.job_id, r.outcome) for r in records] == [("D", "warned")]
        assert records[0].evidence["finding"]["since_ts"] < now - 60
    finally:
        await collector.stop()


async def test_an_evaluation_goes_no_further_while_the_event_loop_cannot_run(
    tmp_path: Path,
) -> None:
    """Acks are written on the event loop: the evaluation thread lets it run after every
    slice of work and waits for it, so a pass never holds the loop up for longer than a
    slice, however many windows it has to go through."""
    now = time.time()
    collector = Collector(db_path=tmp_path / "c.db")
    await collector.start()
    try:
        enforcer = evaluated_by_hand(collector, PolicySet())
        enforcer.slice_s = 0.0  # let the loop run after every report and every data time
        reports = [
            NodeReport(
                f"n{k % 4}",
                k // 4 + 1,
                now - 1000 + k - 5,
                now - 1000 + k,
                tuple(
                    GpuWindow(
                        uuid=f"GPU-{k % 4}-{i}",
                        index=i,
                        util_max=50.0,
                        job=JobInfo(job_id=f"{k % 4}{i}"),
                        allocated=True,
                    )
                    for i in range(8)
                ),
                SlurmStatus(True),
            )
            for k in range(200)
        ]
        await asyncio.gather(*(collector.ingestor.submit(r) for r in reports))
        passing = asyncio.get_running_loop().run_in_executor(None, enforcer.evaluate, now)
        time.sleep(0.5)  # noqa: ASYNC251 (the point: the loop cannot run meanwhile)
        assert enforcer.engine.data_time == float("-inf")  # still at its first slice
        assert enforcer.engine.windows == 0
        await passing
        assert enforcer.engine.data_time == now - 1000 + 199
        assert enforcer.engine.windows == 200 * 8
        assert enforcer.pauses >= 200 + 200  # reports handed over, then data times
    finally:
        await collector.stop()


async def test_acks_go_on_while_the_enforcement_warms_up_from_a_slow_store(
    tmp_path: Path,
) -> None:
    """Warm-up reads up to 2 million stored windows (minutes on a full store): it runs off
    the event loop, so reports are stored and acked meanwhile; one stored while warm-up
    reads is taken once, not twice."""
    now = time.time()
    job = JobInfo(job_id="W", start_time=int(now) - 600)
    collector = Collector(db_path=tmp_path / "c.db")
    await collector.start()
    reading, go_on, read = threading.Event(), threading.Event(), threading.Event()
    history = collector.store.history

    def slow_history(**kw: Any) -> Any:  # the real store, only late
        reading.set()
        go_on.wait(5.0)
        try:
            return history(**kw)
        finally:
            read.set()

    collector.store.history = slow_history  # type: ignore[method-assign]
    try:
        assert await collector.ingestor.submit(idle_report(job, 1, now - 20))
        enforcer = evaluated_by_hand(collector, PolicySet())
        assert await asyncio.to_thread(reading.wait, 10.0)  # warm-up is reading the store
        meanwhile = collector.ingestor.submit(idle_report(job, 2, now - 10))
        stored = await asyncio.wait_for(meanwhile, 10.0)
        assert stored is True and not read.is_set()  # acked while warm-up still reads
        go_on.set()
        await asyncio.to_thread(enforcer.evaluate, now + 60)
        assert enforcer.engine.windows == 2  # each once: the store's copy or the queue's
        assert enforcer.engine.late_windows == 0
    finally:
        go_on.set()
        await collector.stop()
