"""The summaries table and the live accumulation on a real SQLite store: a running job's
summary from its accumulator equals the one computed from its stored windows; after a
restart it is rebuilt from the store; an ended run's summary is written once per run and
outlives the windows."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.collector.store import Store
from gpuwarden.collector.summaries import JobStatsSource
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport

T0 = 1_700_000_000.0


def report(k: int, job: JobInfo, util: float) -> NodeReport:
    gpus = tuple(
        GpuWindow(uuid=f"GPU-{i}", index=i, util_max=util, util_mean=util / 2, job=job)
        for i in range(2)
    )
    return NodeReport("n1", k, T0 + 60 * k, T0 + 60 * (k + 1), gpus)


def feed(store: Store, source: JobStatsSource, reports: list[NodeReport]) -> None:
    store.write_reports(reports, received=T0)
    source.on_stored(reports)


def test_live_summary_equals_the_one_from_stored_windows_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    job = JobInfo(job_id="9", user="ann", start_time=int(T0))
    store = Store(tmp_path / "c.db")
    source = JobStatsSource(store)
    feed(store, source, [report(k, job, 90.0 if k < 3 else 0.0) for k in range(12)])
    live = source.job_stats("9")
    assert live is not None and live.state == "running"
    assert live == source.compute("9")
    assert live.gpus[0].active_s == 180.0 and len(live.gpus[0].idle_periods) == 1
    source.close()

    again = JobStatsSource(store)  # a restarted collector: the job is mid-run
    feed(store, again, [report(12, job, 0.0)])
    rebuilt = again.job_stats("9")
    assert rebuilt is not None and rebuilt.gpus[0].reported_s == 13 * 60.0
    feed(store, again, [report(13, job, 0.0)])
    assert again.job_stats("9").gpus[0].reported_s == 14 * 60.0  # type: ignore[union-attr]
    again.close()
    store.close()


def test_an_ended_run_is_summarised_once_and_outlives_its_windows(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    source = JobStatsSource(store)
    first = JobInfo(job_id="9", user="ann", start_time=int(T0))
    feed(store, source, [report(k, first, 50.0) for k in range(5)])
    source.on_run_end(("9", int(T0), T0 + 300))
    requeued = JobInfo(job_id="9", user="ann", start_time=int(T0) + 600)
    feed(store, source, [report(k, requeued, 0.0) for k in range(10, 15)])
    running = source.job_stats("9")
    assert running is not None and running.state == "running"
    assert running.start == T0 + 600 and running.gpus[0].reported_s == 300.0
    source.on_run_end(("9", int(T0) + 600, T0 + 900))
    assert store.prune(float("inf")) > 0
    ended = source.job_stats("9")
    assert ended is not None and ended.state == "ended" and ended.start == T0 + 600
    assert ended.source == "summary" and ended.gpus[0].active_s == 0.0
    rows = {(r.by, r.key): r for r in source.waste_report(T0, T0 + 3600)}
    assert rows[("user", "ann")].jobs == 2
    assert rows[("user", "ann")].allocated_h == (300 + 300) * 2 / 3600
    source.close()
    store.close()
