"""A job's summary from its windows: time-weighted means, peaks, idle periods (gaps are
unknown, not idle), lost GPUs, GPM and CPU figures; the waste report's arithmetic."""

from __future__ import annotations

from gpuwarden.collector.jobstats import summarize, waste_rows
from gpuwarden.common.jobstats import IdlePeriod, JobStats
from gpuwarden.common.types import AuditRecord, GpuWindow, JobInfo, WindowRecord

T0 = 1_700_000_000.0
JOB = JobInfo(job_id="42", user="ann", account="a1", partition="gpu", start_time=int(T0))


def win(
    k: int,
    util: float | None,
    *,
    uuid: str = "GPU-0",
    index: int = 0,
    job: JobInfo = JOB,
    step: float = 60.0,
    **kw: object,
) -> WindowRecord:
    g = GpuWindow(
        uuid=uuid,
        index=index,
        util_max=util,
        util_mean=None if util is None else util / 2,
        job=job,
        **kw,  # type: ignore[arg-type]
    )
    return WindowRecord("n1", T0 + step * k, T0 + step * (k + 1), g)  # fmt: skip


def test_means_are_time_weighted_and_peaks_kept() -> None:
    recs = [
        win(0, 80.0, mem_used_max_bytes=5, mem_total_bytes=100, power_mean_w=200.0),
        win(1, 40.0, mem_used_max_bytes=9, mem_total_bytes=100, power_mean_w=100.0),
    ]
    s = summarize("42", recs, min_idle_s=60)
    assert s is not None and s.user == "ann" and s.state == "running" and s.start == T0
    (g,) = s.gpus
    assert (g.util_mean_pct, g.util_max_pct, g.mem_peak_bytes, g.power_mean_w) == (
        30.0,
        80.0,
        9,
        150.0,
    )
    assert g.reported_s == 120.0 and g.active_s == 120.0 and g.idle_periods == ()


def test_idle_periods_are_listed_and_a_gap_in_the_reports_splits_them() -> None:
    recs = [win(0, 90.0), win(1, 0.0), win(2, 1.0), win(3, 0.0), win(10, 0.0), win(11, 0.0)]
    s = summarize("42", recs, min_idle_s=120, max_gap_s=60)
    assert s is not None
    (g,) = s.gpus
    assert g.idle_periods == (
        IdlePeriod(T0 + 60, T0 + 240),
        IdlePeriod(T0 + 600, T0 + 720),
    )
    assert g.active_s == 60.0 and g.reported_s == 360.0


def test_a_lost_gpu_is_unknown_and_windows_of_other_jobs_are_skipped() -> None:
    other = JobInfo(job_id="43", user="bob")
    recs = [win(0, 0.0), win(1, 0.0, errors=("gpu_lost",)), win(2, 0.0), win(3, 99.0, job=other)]
    s = summarize("42", recs, min_idle_s=90)
    assert s is not None
    (g,) = s.gpus
    assert g.reported_s == 120.0 and g.idle_periods == ()  # two 60 s streaks, cut by the loss
    assert summarize("44", recs) is None


def test_gpm_and_cpu_figures_are_averaged_where_present() -> None:
    cpu_job = JobInfo(job_id="42", user="ann", cpu_util_pct=50.0)
    recs = [
        win(0, 90.0, job=cpu_job, extra_mean={"sm_active_pct": 20.0, "tensor_active_pct": 4.0}),
        win(1, 90.0, job=cpu_job, extra_mean={"sm_active_pct": 40.0}),
    ]
    s = summarize("42", recs)
    assert s is not None and s.cpu_util_mean_pct == 50.0
    assert s.gpus[0].sm_active_mean_pct == 30.0 and s.gpus[0].tensor_active_mean_pct == 4.0


def test_an_ended_summary_carries_its_decisions_oldest_first() -> None:
    d = [
        AuditRecord(T0 + 90, "42", "idle", "requeue", "done", False, ("GPU-0",), "requeued"),
        AuditRecord(T0 + 30, "42", "idle", "warn", "warned", False, ("GPU-0",), "warning"),
    ]
    s = summarize("42", [win(0, 0.0), win(1, 0.0)], d, end=T0 + 120, source="summary")
    assert s is not None and s.state == "ended" and s.end == T0 + 120
    assert [r.action for r in s.decisions] == ["warn", "requeue"]


def job(user: str, start: float, end: float | None, reported: float, active: float) -> JobStats:
    from gpuwarden.common.jobstats import GpuStats

    return JobStats(
        job_id=user + str(start),
        user=user,
        account="acc",
        partition="gpu",
        start=start,
        end=end,
        last_seen=end if end is not None else start + reported,
        gpus=(GpuStats("n1", "G", 0, reported_s=reported, active_s=active),),
    )


def test_waste_rows_add_up_by_user_account_and_partition_and_clip_to_the_period() -> None:
    since = T0 + 3600
    jobs = [
        job("ann", T0 + 3600, T0 + 3 * 3600, 7200, 3600),  # inside: 2 h, 1 h active
        job("ann", T0, T0 + 2 * 3600, 7200, 0),  # half inside: 1 h counted, all idle
        job("bob", T0, T0 + 1800, 1800, 0),  # before the period: not counted
    ]
    rows = {(r.by, r.key): r for r in waste_rows(jobs, since, T0 + 10 * 3600)}
    ann = rows[("user", "ann")]
    assert (ann.jobs, ann.allocated_h, ann.active_h, ann.idle_h) == (2, 3.0, 1.0, 2.0)
    assert ("user", "bob") not in rows
    assert rows[("account", "acc")].allocated_h == 3.0
