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


# ----------------------------------------------------------------- hostile input (issue 9)

BIG = 2**63  # what SQLite's INTEGER cannot hold


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mem_used_max_bytes": BIG}, "gpus[0].mem_used_max_bytes="),
        ({"mem_total_bytes": BIG}, "gpus[0].mem_total_bytes="),
        ({"mem_total_bytes": 2**60}, "gpus[0].mem_total_bytes="),
        ({"samples": 2**31}, "gpus[0].samples="),
    ],
)
def test_integers_beyond_their_real_range_are_rejected(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ReportInvalid) as err:
        validate_report(msg(**change), now=NOW)
    assert message in str(err.value) and "outside" in str(err.value)


def test_seq_and_process_fields_beyond_their_range_are_rejected() -> None:
    m = msg()
    m.seq = BIG
    with pytest.raises(ReportInvalid, match="seq="):
        validate_report(m, now=NOW)
    m = msg()
    m.gpus[0].processes.add(pid=1, used_mem_bytes=BIG)
    with pytest.raises(ReportInvalid, match=r"processes\[0\].used_mem_bytes="):
        validate_report(m, now=NOW)
    m = msg()
    m.gpus[0].processes.add(pid=2**31)
    with pytest.raises(ReportInvalid, match=r"processes\[0\].pid="):
        validate_report(m, now=NOW)
    m = msg(job=pb.JobInfo(job_id="1", start_time=2**62))
    with pytest.raises(ReportInvalid, match=r"job\.start_time="):
        validate_report(m, now=NOW)


@pytest.mark.parametrize("job_id", ["123\n", "\uff11\uff12\uff13", "12 3", "", "1_", "+1"])
def test_job_ids_must_match_whole_and_ascii(job_id: str) -> None:
    with pytest.raises(ReportInvalid, match="is not a Slurm job id"):
        validate_report(msg(job=pb.JobInfo(job_id=job_id)), now=NOW)


@pytest.mark.parametrize("node", ["gpu01\n", "\uff47\uff50\uff5501", "gpu 01", "gpu01\x00"])
def test_node_names_must_match_whole_and_ascii(node: str) -> None:
    m = msg()
    m.node = node
    with pytest.raises(ReportInvalid, match="not a valid node name"):
        validate_report(m, now=NOW)


def test_uuid_must_match_whole() -> None:
    with pytest.raises(ReportInvalid, match="not a valid GPU UUID"):
        validate_report(msg(uuid="GPU-a\n"), now=NOW)


@pytest.mark.parametrize(
    "text",
    ["a\x7fb", "a\x85b", "a\x9bb", "evil\u202etxt.sh", "a\u2066b", "a\u200fb", "a\u061cb"],
    ids=["DEL", "NEL", "CSI", "RLO", "LRI", "RLM", "ALM"],
)
def test_control_c1_and_bidi_characters_are_rejected_in_free_text(text: str) -> None:
    with pytest.raises(ReportInvalid, match=r"gpus\[0\].job.name contains"):
        validate_report(msg(job=pb.JobInfo(job_id="7", name=text)), now=NOW)


def test_free_text_may_be_unicode_but_identities_are_ascii() -> None:
    ok = validate_report(msg(job=pb.JobInfo(job_id="7", name="模型训练 v2", user="alice")), now=NOW)
    assert ok.gpus[0].job is not None and ok.gpus[0].job.name == "模型训练 v2"
    for field in ("user", "account", "partition", "qos"):
        with pytest.raises(ReportInvalid, match=rf"job.{field}="):
            validate_report(msg(job=pb.JobInfo(job_id="7", **{field: "\uff41lice"})), now=NOW)
        with pytest.raises(ReportInvalid, match=rf"job.{field}="):
            validate_report(msg(job=pb.JobInfo(job_id="7", **{field: "a b"})), now=NOW)


@pytest.mark.parametrize(
    "address", ["tcp://10.0.0.5:8786\n", "file:///etc/passwd", "tcp://host", "tcp://a b:1"]
)
def test_dask_scheduler_address_must_be_a_scheduler_url(address: str) -> None:
    job = pb.JobInfo(job_id="7", dask_scheduler=address, dask_worker="w-0")
    with pytest.raises(ReportInvalid, match=r"job\.dask_scheduler="):
        validate_report(msg(job=job), now=NOW)


def test_dask_addresses_of_the_usual_forms_pass() -> None:
    for address in ("tcp://10.0.0.5:8786", "tls://gpu01.example.org:8786", "tcp://[::1]:8786"):
        job = pb.JobInfo(job_id="7", dask_scheduler=address, dask_worker="SLURMCluster-3-0")
        validate_report(msg(job=job), now=NOW)


def test_a_window_ahead_of_the_collector_clock_is_clamped_to_it() -> None:
    """A window stamped 295 s in the future would hold the rules' "newest window" there and
    make every honest window after it look late: it is moved back to end at the collector's
    clock, keeping its length."""
    m = msg()
    m.window_start, m.window_end = NOW + 290, NOW + 295
    r = validate_report(m, now=NOW)
    assert (r.window_start, r.window_end) == (NOW - 5, NOW)


def test_a_window_far_beyond_the_skew_allowance_is_still_rejected() -> None:
    m = msg()
    m.window_start, m.window_end = NOW + 900, NOW + 905
    with pytest.raises(ReportInvalid, match="ahead of the collector's clock"):
        validate_report(m, now=NOW)
