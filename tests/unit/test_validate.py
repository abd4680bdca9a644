"""Every bound on agent input, and that the message names the field."""

from __future__ import annotations

import math

import pytest

from gpuwarden.collector.validate import Limits, ReportInvalid, validate_report
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

NOW = 1_700_000_100.0


def msg(**gpu: object) -> pb.NodeReport:
    g = GpuWindow(uuid="GPU-a", index=0, samples=5, util_max=50.0, util_mean=40.0)
    m = report_to_pb(
        NodeReport(node="gpu01", seq=1, window_start=NOW - 10, window_end=NOW - 5, gpus=(g,))
    )
    for k, v in gpu.items():
        if k == "job":
            m.gpus[0].job.CopyFrom(v)  # type: ignore[arg-type]
        else:
            setattr(m.gpus[0], k, v)
    return m


def test_a_good_report_comes_back_as_the_domain_report() -> None:
    r = validate_report(msg(), now=NOW)
    assert r.node == "gpu01" and r.gpus[0].util_max == 50.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"util_max": math.inf}, "gpus[0].util_max=inf is not a finite number"),
        ({"util_max": 101.0}, "gpus[0].util_max=101.0 is outside [0, 100]"),
        ({"util_mean": -1.0}, "gpus[0].util_mean=-1.0 is outside"),
        ({"zero_frac": 1.5}, "gpus[0].zero_frac=1.5 is outside [0, 1]"),
        ({"power_mean_w": math.nan}, "gpus[0].power_mean_w=nan is not a finite number"),
        ({"uuid": "GPU a;rm"}, "gpus[0].uuid='GPU a;rm' is not a valid GPU UUID"),
        ({"name": "x" * 300}, "gpus[0].name is 300 characters long"),
        ({"name": "A100\x1b[2J"}, "gpus[0].name contains control characters"),
        ({"mem_used_max_bytes": 10, "mem_total_bytes": 5}, "exceeds mem_total_bytes=5"),
        ({"job": pb.JobInfo(job_id="12; scancel")}, "gpus[0].job.job_id='12; scancel'"),
        ({"util_min": 60.0}, "util_min=60.0 is above util_max=50.0"),
    ],
)
def test_bad_gpu_fields_are_rejected_naming_the_field(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ReportInvalid) as err:
        validate_report(msg(**change), now=NOW)
    assert message in str(err.value)


def test_report_level_bounds() -> None:
    m = msg()
    m.node = "../etc"
    with pytest.raises(ReportInvalid, match="not a valid node name"):
        validate_report(m, now=NOW)
    m = msg()
    m.window_end = NOW + 3600
    with pytest.raises(ReportInvalid, match="window_end"):
        validate_report(m, now=NOW)
    m = msg()
    m.window_start, m.window_end = NOW - 1, NOW - 2
    with pytest.raises(ReportInvalid, match="before window_start"):
        validate_report(m, now=NOW)
    m = msg()
    m.gpus.add().CopyFrom(m.gpus[0])
    with pytest.raises(ReportInvalid, match="appears twice"):
        validate_report(m, now=NOW)
    m = msg()
    for i in range(3):
        m.gpus.add(uuid=f"GPU-{i}")
    with pytest.raises(ReportInvalid, match="4 GPUs in one report"):
        validate_report(m, now=NOW, limits=Limits(max_gpus_per_node=3))


def test_process_and_error_counts_are_bounded() -> None:
    m = msg()
    for pid in range(5):
        m.gpus[0].processes.add(pid=pid)
    with pytest.raises(ReportInvalid, match="5 processes"):
        validate_report(m, now=NOW, limits=Limits(max_processes_per_gpu=4))
    ok = validate_report(msg(), now=NOW)
    assert ok.gpus[0].processes == ()
    assert ProcessInfo(1).used_mem_bytes is None
    assert JobInfo(job_id="1").is_dask_worker is False


@pytest.mark.parametrize("node", ["gpu01\n", "gpu01\r", "gpu\u0661", "gpu01 ", "-gpu01", ""])
def test_node_names_with_a_trailing_newline_or_non_ascii_are_refused(node: str) -> None:
    m = msg()
    m.node = node
    with pytest.raises(ReportInvalid, match="not a valid node name"):
        validate_report(m, now=NOW)


@pytest.mark.parametrize(
    "job_id", ["123\n", "\uff11\uff12\uff13", "12_\u0663", "123 ", "-1", "1_2_3"]
)
def test_job_ids_with_a_trailing_newline_or_non_ascii_digits_are_refused(job_id: str) -> None:
    with pytest.raises(ReportInvalid, match="is not a Slurm job id"):
        validate_report(msg(job=pb.JobInfo(job_id=job_id)), now=NOW)


def test_gpu_uuid_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ReportInvalid, match="is not a valid GPU UUID"):
        validate_report(msg(uuid="GPU-a\n"), now=NOW)
