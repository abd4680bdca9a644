"""Extra per-GPU fields: aggregated at the edge, validated at the collector, stored whole."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gpuwarden.agent.window import WindowAggregator
from gpuwarden.collector.store import Store
from gpuwarden.collector.validate import ReportInvalid, validate_report
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.extra import MAX_EXTRA_FIELDS
from gpuwarden.common.types import GpuSample, GpuWindow, NodeReport

NOW = 1_700_000_100.0


def sample(uuid: str = "GPU-a", **extra: float) -> GpuSample:
    return GpuSample(uuid=uuid, index=0, util_gpu_pct=50.0, extra=extra)


def test_window_has_mean_and_max_of_each_extra_field_over_the_samples_that_had_it() -> None:
    agg = WindowAggregator()
    agg.add([sample(sm_active_pct=20.0, dram_active_pct=5.0)])
    agg.add([sample(sm_active_pct=60.0)])
    agg.add([sample()])  # this reading had no profiling counters: not counted as 0
    (w,) = agg.flush({})
    assert w.extra_mean == {"sm_active_pct": 40.0, "dram_active_pct": 5.0}
    assert w.extra_max == {"sm_active_pct": 60.0, "dram_active_pct": 5.0}


def test_a_gpu_without_the_field_has_it_absent_never_zero() -> None:
    agg = WindowAggregator()
    agg.add([sample("GPU-a", sm_active_pct=30.0), sample("GPU-b")])
    by_uuid = {w.uuid: w for w in agg.flush({})}
    assert by_uuid["GPU-a"].extra_mean == {"sm_active_pct": 30.0}
    assert by_uuid["GPU-b"].extra_mean == {} and by_uuid["GPU-b"].extra_max == {}


def test_bad_extra_fields_from_a_sampler_are_left_out_and_the_rest_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agg = WindowAggregator()
    agg.add([sample(**{"sm_active_pct": 10.0, "Bad-Name": 1.0, "nan_field": math.nan})])
    (w,) = agg.flush({})
    assert w.extra_mean == {"sm_active_pct": 10.0}
    assert "Bad-Name" in caplog.text and "nan_field=nan is not a finite number" in caplog.text


def report(**extra: dict[str, float]) -> NodeReport:
    g = GpuWindow(uuid="GPU-a", index=0, samples=5, util_max=50.0, **extra)  # type: ignore[arg-type]
    return NodeReport(node="gpu01", seq=1, window_start=NOW - 10, window_end=NOW - 5, gpus=(g,))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"extra_mean": {"sm_active_pct": math.inf}}, "sm_active_pct=inf is not a finite"),
        ({"extra_max": {"sm_active_pct": math.nan}}, "gpus[0].extra_max: sm_active_pct=nan"),
        ({"extra_mean": {"SM active": 1.0}}, "name 'SM active' is not a short identifier"),
        ({"extra_mean": {"x" * 49: 1.0}}, "is not a short identifier"),
        ({"extra_mean": {"a\n": 1.0}}, "is not a short identifier"),
        ({"extra_max": {"big": 1e19}}, "big=1e+19 is beyond"),
        (
            {"extra_mean": {f"f{i}": 1.0 for i in range(MAX_EXTRA_FIELDS + 1)}},
            f"gpus[0].extra_mean has {MAX_EXTRA_FIELDS + 1} fields (limit {MAX_EXTRA_FIELDS})",
        ),
    ],
)
def test_collector_refuses_bad_extra_fields_naming_them(
    extra: dict[str, dict[str, float]], message: str
) -> None:
    with pytest.raises(ReportInvalid) as err:
        validate_report(report_to_pb(report(**extra)), now=NOW)
    assert message in str(err.value)


def test_extra_fields_are_stored_and_read_back_from_history(tmp_path: Path) -> None:
    r = validate_report(
        report_to_pb(report(extra_mean={"sm_active_pct": 41.5}, extra_max={"sm_active_pct": 77.0})),
        now=NOW,
    )
    store = Store(tmp_path / "db.sqlite")
    store.write_reports([r], NOW)
    (rec,), _ = store.history(uuid="GPU-a")
    store.close()
    assert rec.gpu.extra_mean == {"sm_active_pct": 41.5}
    assert rec.gpu.extra_max == {"sm_active_pct": 77.0}
