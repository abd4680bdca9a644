"""Edge aggregation of samples into one report window per GPU."""

from __future__ import annotations

from gpuwarden.agent.attribution import GpuAttribution
from gpuwarden.agent.window import WindowAggregator
from gpuwarden.common.types import GpuSample, JobInfo, ProcessInfo


def s(
    util: float | None,
    mem: int | None = None,
    procs: tuple[ProcessInfo, ...] = (),
    errors: tuple[str, ...] = (),
    power: float | None = None,
) -> GpuSample:
    return GpuSample(
        uuid="GPU-a",
        index=0,
        util_gpu_pct=util,
        mem_used_bytes=mem,
        mem_total_bytes=100,
        processes=procs,
        errors=errors,
        power_w=power,
    )


def test_window_has_mean_max_min_zero_fraction_peak_memory_and_mean_power() -> None:
    agg = WindowAggregator()
    for sample in (s(0, 10, power=100), s(60, 50, power=300), s(0, 20, power=None), s(100, 5)):
        agg.add([sample])
    (w,) = agg.flush({})
    assert (w.samples, w.util_mean, w.util_max, w.util_min) == (4, 40.0, 100, 0)
    assert w.zero_frac == 0.5
    assert w.mem_used_max_bytes == 50 and w.mem_total_bytes == 100
    assert w.power_mean_w == 200.0  # the sample without power does not count as 0 W
    assert len(agg) == 0  # flushed


def test_unsupported_utilisation_stays_missing_not_zero() -> None:
    agg = WindowAggregator()
    agg.add([s(None, 10), s(None, 12)])
    (w,) = agg.flush({})
    assert w.util_mean is None and w.util_max is None and w.zero_frac is None
    assert w.samples == 2 and w.mem_used_max_bytes == 12


def test_failed_readings_are_errors_not_idle_samples() -> None:
    agg = WindowAggregator()
    agg.add([s(50)])
    agg.add([s(None, errors=("gpu_lost",))])
    (w,) = agg.flush({})
    assert w.samples == 1 and w.util_min == 50 and w.errors == ("gpu_lost",)


def test_processes_seen_at_any_time_in_the_window_are_reported_with_their_peak_memory() -> None:
    agg = WindowAggregator()
    agg.add([s(10, procs=(ProcessInfo(7, 100),))])
    agg.add([s(10, procs=(ProcessInfo(7, 300), ProcessInfo(9, None)))])
    agg.add([s(10)])
    (w,) = agg.flush({"GPU-a": GpuAttribution(job=JobInfo(job_id="42"), allocated=True)})
    assert w.processes == (ProcessInfo(7, 300), ProcessInfo(9, None))
    assert w.job is not None and w.job.job_id == "42" and w.allocated
