"""Detection rules: what counts as idle, under-used, partly idle, and which advice is given."""

from __future__ import annotations

from gpuwarden.collector.policy import Policy
from gpuwarden.collector.rules import (
    MIB,
    AdviceCode,
    Allocation,
    AllocationTracker,
    FindingKind,
    GpuRef,
    ObservedWindow,
)
from gpuwarden.collector.runs import observe
from gpuwarden.common.types import GpuWindow, JobInfo, WindowRecord

T0 = 1_700_000_000.0
W = 60.0
CARD = 81920 * MIB


def tracker(n_gpus: int = 1, policy: Policy | None = None, **job: object) -> AllocationTracker:
    gpus = tuple(GpuRef("gpu01", f"GPU-{i}", i) for i in range(n_gpus))
    info = JobInfo(job_id="42", start_time=int(T0), **job)  # type: ignore[arg-type]
    return AllocationTracker(Allocation(info, gpus), policy or Policy())


def feed(
    t: AllocationTracker,
    until_s: float,
    util: float | list[float],
    *,
    from_s: float = W,
    mem: int | None = None,
    mean: float | None = None,
    cpu: float | None = None,
) -> None:
    utils = util if isinstance(util, list) else [util]
    s = from_s
    while s <= until_s:
        for pos in range(len(t.allocation.gpus)):
            u = utils[pos % len(utils)]
            t.add_values(pos, T0 + s, W, u, mean, mem, CARD, cpu)
        s += W


def kinds(t: AllocationTracker, now_s: float) -> list[str]:
    return [f.kind.value + (":" + f.code if f.code else "") for f in t.evaluate(T0 + now_s)]


def test_idle_needs_grace_plus_a_covered_idle_window() -> None:
    t = tracker()
    feed(t, 2340, 0.0)
    assert kinds(t, 2340) == []  # 29 min after the 10 min grace: not yet
    feed(t, 2400, 0.0, from_s=2400)
    findings = t.evaluate(T0 + 2400)
    assert [f.kind for f in findings] == [FindingKind.IDLE]
    assert findings[0].since_ts == T0 + 600  # idle counted from the end of the grace period
    assert findings[0].evidence[0].covered_s == 1800.0


def test_active_threshold_is_max_util_at_or_above_active_util_pct() -> None:
    below, at = tracker(), tracker()
    feed(below, 2400, 4.9)
    feed(at, 2400, 5.0)
    assert kinds(below, 2400) == ["idle"]
    assert kinds(at, 2400) == []


def test_memory_held_does_not_make_a_gpu_active_but_earns_advice() -> None:
    t = tracker()
    feed(t, 2400, 0.0, mem=30000 * MIB)
    assert kinds(t, 2400) == ["idle", "advice:memory_held_idle"]
    assert "30000 MiB of 81920 MiB" in t.evaluate(T0 + 2400)[1].detail


def test_used_briefly_then_idle_is_caught_by_the_sliding_window() -> None:
    t = tracker()
    feed(t, 1200, 95.0)
    feed(t, 2940, 0.0, from_s=1260)
    assert kinds(t, 2940) == []
    feed(t, 3000, 0.0, from_s=3000)
    assert kinds(t, 3000) == ["idle"]


def test_one_active_window_restarts_the_idle_window() -> None:
    t = tracker()
    feed(t, 2000, 0.0)
    feed(t, 2040, 50.0, from_s=2040)
    feed(t, 3780, 0.0, from_s=2100)
    assert kinds(t, 3780) == []
    feed(t, 3840, 0.0, from_s=3840)
    assert kinds(t, 3840) == ["idle"]


def test_a_long_gap_restarts_the_idle_streak_and_is_never_counted() -> None:
    t = tracker()
    feed(t, 1800, 0.0)  # 20 min covered after grace
    feed(t, 5400, 0.0, from_s=3600)  # 31 min of reports after a 29 min outage
    streak = t.evaluate(T0 + 5400)[0]
    assert streak.since_ts == T0 + 3540  # restarted at the first window after the gap
    t2 = tracker()
    feed(t2, 1800, 0.0)
    feed(t2, 5280, 0.0, from_s=3600)
    assert kinds(t2, 5280) == []  # 29 min of reports since the gap
    feed(t2, 5340, 0.0, from_s=5340)
    assert kinds(t2, 5340) == ["idle"]


def test_a_short_gap_keeps_the_streak_but_adds_no_time() -> None:
    t = tracker()
    feed(t, 1200, 0.0)
    feed(t, 2400, 0.0, from_s=1320)  # window ending 1260 lost: 60 s gap <= max_gap
    assert kinds(t, 2400) == []
    feed(t, 2460, 0.0, from_s=2460)
    f = t.evaluate(T0 + 2460)[0]
    assert (f.since_ts, f.evidence[0].covered_s) == (T0 + 600, 1800.0)


def test_stale_data_is_unknown_not_idle() -> None:
    t = tracker()
    feed(t, 2400, 0.0)
    assert kinds(t, 2400 + 120) == ["idle"]  # within max_gap
    assert kinds(t, 2400 + 121) == []  # no report for longer than max_gap


def test_unknown_utilisation_counts_as_a_gap() -> None:
    t = tracker()
    feed(t, 2400, 0.0)
    for s in range(2460, 2460 + 600, 60):
        t.add_values(0, T0 + s, W, None)
    assert kinds(t, 3000) == []


def test_a_late_active_window_ends_the_streak() -> None:
    t = tracker()
    feed(t, 2400, 0.0)
    t.add_values(0, T0 + 2000, W, 80.0)  # arrives late
    assert kinds(t, 2400) == []


def test_multi_gpu_is_idle_only_when_every_gpu_is() -> None:
    t = tracker(n_gpus=2)
    feed(t, 2400, [0.0, 60.0])
    assert kinds(t, 2400) == []
    t2 = tracker(n_gpus=2)
    feed(t2, 2400, 0.0)
    assert [f.uuids for f in t2.evaluate(T0 + 2400)] == [("GPU-0", "GPU-1")]


def test_partly_idle_when_active_share_is_below_gpu_frac() -> None:
    t = tracker(n_gpus=4, policy=Policy(gpu_frac=0.5))
    feed(t, 2400, [90.0, 0.0, 0.0, 0.0])
    (f,) = t.evaluate(T0 + 2400)
    assert f.kind is FindingKind.PARTLY_IDLE
    assert f.uuids == ("GPU-1", "GPU-2", "GPU-3")
    assert "3 of 4 GPUs" in f.detail
    t2 = tracker(n_gpus=4, policy=Policy(gpu_frac=0.5))
    feed(t2, 2400, [90.0, 90.0, 0.0, 0.0])  # half active: not below 0.5
    assert kinds(t2, 2400) == []


def test_underused_low_mean_over_the_underuse_window_is_reported() -> None:
    t = tracker()
    feed(t, 4140, 40.0, mean=10.0, mem=40000 * MIB)
    assert kinds(t, 4140) == []  # less than underuse_window after the grace period
    feed(t, 4740, 40.0, mean=10.0, mem=40000 * MIB, from_s=4200)
    (f,) = t.evaluate(T0 + 4740)  # re-checked every underuse_window / 6
    assert f.kind is FindingKind.UNDERUSED
    assert "mean GPU utilisation 10.0%" in f.detail


def test_util_max_is_the_mean_when_no_mean_is_given() -> None:
    t = tracker()
    feed(t, 4260, 40.0, mem=40000 * MIB)
    assert kinds(t, 4260) == []  # 40 % max could be 40 % mean: never over-report


def test_small_memory_footprint_suggests_a_mig_slice() -> None:
    t = tracker()
    feed(t, 4260, 60.0, mem=8000 * MIB)
    assert kinds(t, 4260) == ["advice:" + AdviceCode.USE_MIG]


def test_cpu_saturated_while_gpu_low_is_input_bound() -> None:
    t = tracker()
    feed(t, 4260, 20.0, mean=12.0, mem=40000 * MIB, cpu=97.0)
    assert kinds(t, 4260) == ["underused", "advice:input_bound"]
    t2 = tracker()
    feed(t2, 4260, 20.0, mean=12.0, mem=40000 * MIB, cpu=40.0)
    assert kinds(t2, 4260) == ["underused"]


def test_underuse_needs_covered_reports() -> None:
    t = tracker()
    feed(t, 4260, 40.0, mean=10.0, mem=40000 * MIB)
    for s in range(4320, 7200, 60):
        if s % 180:  # a third of the reports missing
            t.add_values(0, T0 + s, W, 40.0, 10.0, 40000 * MIB, CARD)
    assert kinds(t, 7140) == []


def test_exempt_job_has_no_findings() -> None:
    t = tracker(policy=Policy(exempt_users=("alice",)), user="alice")
    feed(t, 2400, 0.0)
    assert t.exempt_reason == "user alice is exempt"
    assert kinds(t, 2400) == []


def test_unknown_start_time_runs_grace_from_the_first_window() -> None:
    gpus = (GpuRef("gpu01", "GPU-0", 0),)
    t = AllocationTracker(Allocation(JobInfo(job_id="9"), gpus), Policy())
    for s in range(3600 + 60, 3600 + 2460, 60):
        t.add_values(0, T0 + s, W, 0.0)
    assert t.evaluate(T0 + 3600 + 2400)[0].since_ts == T0 + 3600 + 600


def test_stored_window_maps_to_what_the_engine_observes() -> None:
    job = JobInfo(job_id="42", cpu_util_pct=50.0)
    g = GpuWindow(
        uuid="GPU-0",
        index=0,
        util_max=3.0,
        util_mean=1.0,
        job=job,
        mem_used_max_bytes=5,
        mem_total_bytes=10,
        errors=(),
    )
    o = observe(WindowRecord("gpu01", T0, T0 + 5, g))
    assert (o.node, o.uuid, o.start, o.end, o.util_max_pct, o.util_mean_pct) == (
        "gpu01",
        "GPU-0",
        T0,
        T0 + 5,
        3.0,
        1.0,
    )
    assert (o.mem_used_bytes, o.mem_total_bytes, o.job, o.attributed) == (5, 10, job, True)
    w = ObservedWindow("gpu01", "GPU-0", T0 + 5, 5.0, 3.0, 1.0, 5, 10, None, 50.0)
    lost = observe(
        WindowRecord(
            "gpu01",
            T0,
            T0 + 5,
            GpuWindow(uuid="GPU-0", index=0, util_max=0.0, errors=("gpu_lost",)),
        )
    )
    assert lost.util_max_pct is None
    t = tracker()
    assert t.add(w) is True
    assert t.add(ObservedWindow("gpu09", "GPU-0", T0 + 5, 5.0, 0.0)) is False


def test_a_policy_reload_is_applied_even_after_an_evaluation_found_nothing() -> None:
    t = tracker()
    feed(t, 1200, 0.0)
    assert kinds(t, 1200) == []  # 10 idle minutes after grace: short of idle_window
    t.set_policy(Policy(idle_window=300))
    assert kinds(t, 1200) == ["idle"]


def test_a_busy_job_that_falls_idle_is_found_at_the_window_that_completes_idle_window() -> None:
    t = tracker()
    feed(t, 1800, 100.0)
    assert kinds(t, 1800) == []  # busy: nothing, and nothing until an idle window comes
    feed(t, 3540, 0.0, from_s=1860)
    assert kinds(t, 3540) == []  # 29 idle minutes
    feed(t, 3600, 0.0, from_s=3600)
    assert kinds(t, 3600) == ["idle"]
