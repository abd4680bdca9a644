"""Long runs hold bounded memory: what the collector and replay keep per job or per node
goes away when the jobs end and the nodes go (bench/soak.py measures the process)."""

from __future__ import annotations

import json
from pathlib import Path

from gpuwarden.collector.admin import Exemptions
from gpuwarden.collector.engine import Engine
from gpuwarden.collector.layout import INSERT_REPORT, INSERT_REPORT_JOB, Writer
from gpuwarden.collector.layout_read import RawQuery, Reader, read_reports
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.replay import replay_lines
from gpuwarden.collector.state import ClusterState
from gpuwarden.collector.store import Store, connect
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


def test_exemptions_of_jobs_long_ended_are_not_kept_once_their_time_is_past(
    tmp_path: Path,
) -> None:
    exemptions = Exemptions(connect(tmp_path / "db"))
    for n in range(500):  # jobs exempted for an hour, each ending before it is up
        exemptions.grant(str(1000 + n), T0 + 3600, "benchmark", "root", T0)
    exemptions.grant("77", T0 + 7200, "debugging", "root", T0)
    assert exemptions.is_exempt("1000", T0 + 60) is not None
    assert len(exemptions) == 501
    # the engine asks only about jobs still running: here, job 77
    assert exemptions.is_exempt("77", T0 + 3601) is not None
    assert len(exemptions) == 1
    assert exemptions.is_exempt("77", T0 + 7201) is None
    assert len(exemptions) == 0
    exemptions.grant("78", T0 + 9000, "again", "root", T0 + 7300)  # granting still works
    assert exemptions.is_exempt("78", T0 + 7400) is not None


def test_live_state_forgets_nodes_silent_past_the_raw_retention() -> None:
    state = ClusterState()
    for n in range(300):  # nodes that reported once and were taken out of service
        state.apply(NodeReport(node=f"old{n}", seq=1, window_start=T0 - 5, window_end=T0))
        state.set_connected(f"old{n}", False)
    state.apply(NodeReport(node="quiet", seq=1, window_start=T0 - 5, window_end=T0))
    state.apply(NodeReport(node="busy", seq=9, window_start=T0 + 95, window_end=T0 + 100))
    state.set_connected("busy", False)
    assert len(state.nodes()) == 302
    state.forget_silent(before=T0 + 50)
    # a node still connected stays however quiet it is; a recent one stays disconnected
    assert [n.node for n in state.nodes()] == ["busy", "quiet"]


def mig_report(n: int, job: int) -> NodeReport:
    """A report of node n1 whose one MIG instance is new (reconfigured for every job)."""
    g = GpuWindow(
        uuid=f"MIG-{n:04d}",
        index=0,
        samples=5,
        job=JobInfo(job_id=str(job), user="alice"),
        allocated=True,
    )
    return NodeReport(
        node="n1", seq=n + 1, window_start=T0 + 5 * n, window_end=T0 + 5 * n + 5, gpus=(g,)
    )


def test_dictionary_caches_stay_bounded_while_jobs_and_mig_instances_come_and_go(
    tmp_path: Path,
) -> None:
    Store(tmp_path / "db").close()  # the schema
    conn = connect(tmp_path / "db")
    writer = Writer(conn, max_cached=50)
    reports = [mig_report(n, 5000 + n) for n in range(300)]
    reports.append(mig_report(300, 5000))  # a job seen long ago, its key evicted since
    for r in reports:
        rows = writer.rows(r, T0, None)
        rid = conn.execute(INSERT_REPORT, rows.report).lastrowid
        conn.executemany(INSERT_REPORT_JOB, [(j, rid) for j in rows.job_keys])
        writer.commit()
    assert len(writer) <= 3 * 50
    # keys of evicted entries are found again, never made twice
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 300
    assert conn.execute("SELECT count(*) FROM gpus").fetchone()[0] == 301
    reader = Reader(conn, max_cached=50)
    back = [
        (g.uuid, g.job.job_id if g.job else None)
        for *_, windows in read_reports(reader, conn, RawQuery(since=float("-inf")))
        for g, _ in windows
    ]
    assert back == [
        (r.gpus[0].uuid, r.gpus[0].job.job_id if r.gpus[0].job else None) for r in reports
    ]
    assert len(reader) <= 2 * 50
