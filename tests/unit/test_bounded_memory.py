"""Long runs hold bounded memory: what the collector and replay keep per job or per node
goes away when the jobs end and the nodes go (bench/soak.py measures the process)."""

from __future__ import annotations

import json
from pathlib import Path

from gpuwarden.collector.engine import Engine
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.replay import replay_lines
from gpuwarden.collector.store import Store
from gpuwarden.collector.summaries import STALE_S, JobStatsSource
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, WindowRecord

T0 = 1_700_000_000


def churn_trace(jobs: int, job_s: int = 600, gap_s: int = 120, window_s: int = 60) -> list[bytes]:
    """``jobs`` jobs one after another on one GPU, each with its end, sampled every window."""
    lines: list[dict[str, object]] = []
    for n in range(jobs):
        start = T0 + n * (job_s + gap_s)
        gpus = [{"node": "n1", "uuid": "GPU-a", "index": 0}]
        lines.append(
            {"type": "job", "job_id": str(1000 + n), "start": start, "end": start + job_s,
             "requeue": True, "gpus": gpus}
        )  # fmt: skip
        for t in range(start + window_s, start + job_s + 1, window_s):
            lines.append(
                {"type": "sample", "ts": t, "node": "n1", "uuid": "GPU-a", "util_gpu": 50.0}
            )
    return [json.dumps(x).encode() for x in lines]


def test_replay_keeps_no_record_of_ended_runs_that_nobody_reads() -> None:
    replayer, summary = replay_lines(churn_trace(300), PolicySet())
    assert summary.jobs == 300
    assert len(replayer.engine.runs()) == 300  # the runs themselves, for the summary
    # ... but not a second, unread list of every run that ended (live: job summaries)
    assert replayer.engine.take_ended_runs() == []


def test_live_job_state_holds_only_the_running_jobs_while_hundreds_come_and_go(
    tmp_path: Path,
) -> None:
    """Each of 4 GPUs runs a job for 5 windows, then is free for one, then the next job
    comes: the engine's runs and the job summaries' accumulators follow the jobs running
    now, however many have ended (the ended ones are in the summaries table)."""
    store = Store(tmp_path / "c.db")
    source = JobStatsSource(store)
    engine = Engine(PolicySet(), reorder_s=0.0)
    gpus, windows, w = 4, 300, 60.0
    for k in range(windows):
        end = T0 + w * (k + 1)
        held = []
        for i in range(gpus):
            generation, phase = divmod(k + i, 6)
            job = None
            if phase < 5:
                start = int(T0 + w * (6 * generation - i))
                job = JobInfo(job_id=str(10_000 * (i + 1) + generation), start_time=start)
            held.append(GpuWindow(uuid=f"GPU-{i}", index=i, util_max=50.0, job=job,
                                  allocated=job is not None))  # fmt: skip
        r = NodeReport("n1", k + 1, end - w, end, tuple(held))
        store.write_reports([r], received=end)
        source.on_stored([r])
        for g in r.gpus:
            engine.on_window(WindowRecord(r.node, r.window_start, r.window_end, g))
        engine.evaluate(end)
        for ended in engine.take_ended_runs():
            source.on_run_end(ended)
    assert source.written > 150  # that many runs ended and were summarised
    assert len(engine.jobs()) <= gpus
    assert len(source.running()) <= gpus
    source.close()
    store.close()


def test_job_summaries_forget_jobs_whose_run_end_never_came(tmp_path: Path) -> None:
    """A run end can be dropped (the summary writer's queue was full): the job's
    accumulator goes once the job has sent nothing for STALE_S of data time."""
    store = Store(tmp_path / "c.db")
    source = JobStatsSource(store)
    hours = 48
    for h in range(hours):  # a new one-window job every hour, none of them ever ends
        end = T0 + 3600.0 * (h + 1)
        job = JobInfo(job_id=str(500 + h), start_time=int(end - 60))
        gpu = GpuWindow(uuid="GPU-0", index=0, util_max=50.0, job=job, allocated=True)
        r = NodeReport("n1", h + 1, end - 60, end, (gpu,))
        store.write_reports([r], received=end)
        source.on_stored([r])
        source.drain()
    assert len(source.running()) <= STALE_S / 3600 + 2  # the last day's jobs, not all 48
    source.close()
    store.close()
