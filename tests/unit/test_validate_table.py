"""The one-pass validator built from the field tables: what it returns is what was sent, its
caches never let through what the bounds of the moment refuse, and whatever it accepts is
within every bound."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuwarden.collector import fieldcheck
from gpuwarden.collector.fieldcheck import compile_builder
from gpuwarden.collector.validate import GPU_CHECKS, Limits, ReportInvalid, validate_report
from gpuwarden.common.convert import report_from_pb, report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

NOW = 1_700_000_100.0
FULL = GpuWindow(
    uuid="MIG-11111111-2222-3333-4444-555555555555",
    index=3,
    name="NVIDIA H100 \u6a21\u578b",
    parent_uuid="GPU-aaaaaaaa-2222-3333-4444-555555555555",
    samples=5,
    util_mean=0.0,  # zero is a value, not "absent"
    util_max=100.0,
    util_min=0.0,
    zero_frac=0.2,
    mem_util_mean=12.5,
    mem_used_max_bytes=0,
    mem_total_bytes=80 << 30,
    power_mean_w=301.5,
    temperature_c=-1.0,
    processes=(ProcessInfo(7, 1 << 30, "python"), ProcessInfo(8, None, "")),
    errors=("xid:79", "gpu_lost"),
    job=JobInfo(
        job_id="42_7",
        step="batch",
        user="alice@example.org",
        account="phys",
        partition="gpu",
        name="train \u2014 v2",
        qos="normal",
        batch=False,
        requeue=True,
        start_time=1_699_999_000,
        dask_scheduler="tcp://10.0.0.5:8786",
        dask_worker="SLURMCluster-3-0",
        source="cgroup",
        cpu_util_pct=0.0,
    ),
    allocated=True,
    extra_mean={"sm_active_pct": 25.0},
    extra_max={"sm_active_pct": 50.0, "pcie_tx_bytes_per_s": 1e9},
    minor_number=0,
    gpu_instance_id=1,
    mig_caps_minor=10,
)


def _report(*gpus: GpuWindow, seq: int = 1) -> pb.NodeReport:
    return report_to_pb(
        NodeReport(
            node="gpu01",
            seq=seq,
            window_start=NOW - 10,
            window_end=NOW - 5,
            gpus=gpus,
            agent_id="a1",
            agent_version="1.2",
        )
    )


def test_every_field_sent_comes_back_and_absent_ones_stay_none() -> None:
    bare = GpuWindow(uuid="GPU-b", index=1)
    msg = _report(FULL, bare)
    got = validate_report(msg, now=NOW)
    assert got == report_from_pb(msg)
    assert got.gpus == (FULL, bare)
    assert (got.gpus[1].util_mean, got.gpus[1].mem_used_max_bytes, got.gpus[1].job) == (
        None,
        None,
        None,
    )
    assert got.gpus[0].job is not None and got.gpus[0].job.cpu_util_pct == 0.0
    assert got.gpus[0].job.is_dask_worker


def test_a_job_remembered_under_one_text_limit_is_checked_again_under_a_smaller_one() -> None:
    job = JobInfo(job_id="77", name="n" * 100)
    msg = _report(GpuWindow(uuid="GPU-c", index=0, job=job))
    assert validate_report(msg, now=NOW).gpus[0].job == job
    with pytest.raises(ReportInvalid, match=r"gpus\[0\]\.job\.name is 100 characters long"):
        validate_report(msg, now=NOW, limits=Limits(max_string_len=50))


def test_a_remembered_job_whose_start_is_now_in_the_future_is_refused() -> None:
    job = JobInfo(job_id="78", start_time=int(NOW) + 100)  # within the 300 s clock skew
    msg = _report(GpuWindow(uuid="GPU-d", index=0, job=job))
    assert validate_report(msg, now=NOW).gpus[0].job == job
    msg.window_start, msg.window_end = NOW - 2000, NOW - 1995
    with pytest.raises(ReportInvalid, match=r"gpus\[0\]\.job\.start_time="):
        validate_report(msg, now=NOW - 1000)


def test_remembered_identities_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fieldcheck, "KNOWN_MAX", 100)
    uuid_row = GPU_CHECKS[0]
    for i in range(350):
        validate_report(_report(GpuWindow(uuid=f"GPU-many-{i}", index=0)), now=NOW)
        assert len(uuid_row.known) <= 100
    with pytest.raises(ReportInvalid, match="not a valid GPU UUID"):
        validate_report(_report(GpuWindow(uuid="GPU many", index=0)), now=NOW)
    assert "GPU many" not in uuid_row.known


def test_the_builder_makes_what_the_constructor_makes_and_needs_every_field() -> None:
    build = compile_builder(ProcessInfo, ["pid", "used_mem_bytes", "name"])
    assert build(7, None, "python") == ProcessInfo(7, None, "python")
    with pytest.raises(TypeError, match="give every field once"):
        compile_builder(ProcessInfo, ["pid", "name"])


FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 100.0, 100.0000001, 1.0, 5000.0, 5000.1, -50.0, 200.0]),
)
INTS = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 4096, 4097, 2**20, 2**50 + 1]))
NAMES = st.one_of(st.just("A100"), st.text(max_size=20))
TEXTS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["GPU-1", "alice", "1", "tcp://h:1", "a\u202eb", "x\x85", "", "a b"]),
)


@st.composite
def _gpus(draw: st.DrawFn) -> pb.GpuWindow:
    uuid = draw(st.one_of(st.builds("GPU-{}".format, st.integers(0, 99)), TEXTS))
    g = pb.GpuWindow(uuid=uuid, index=draw(st.integers(0, 5000)), name=draw(NAMES))
    g.parent_uuid = draw(st.sampled_from(["", "GPU-p", "bad uuid"]))
    for name in ("util_mean", "util_max", "util_min", "zero_frac", "power_mean_w"):
        if draw(st.booleans()):
            setattr(g, name, draw(FLOATS))
    if draw(st.booleans()):
        g.temperature_c = draw(FLOATS)
    for name in ("mem_used_max_bytes", "mem_total_bytes", "minor_number"):
        if draw(st.booleans()):
            setattr(g, name, draw(INTS) % (2**32 if name == "minor_number" else 2**64))
    if draw(st.booleans()):
        g.job.CopyFrom(
            pb.JobInfo(
                job_id=draw(st.sampled_from(["1", "2_3", "4", "x", ""])),
                user=draw(st.one_of(st.just("alice"), TEXTS)),
                name=draw(NAMES),
                start_time=draw(st.integers(-(2**63), 2**63 - 1)),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        g.processes.add(pid=draw(st.one_of(st.integers(0, 2**22 + 1), INTS)) % 2**32)
    if draw(st.booleans()):
        g.extra_mean[draw(st.sampled_from(["sm_active_pct", "Bad", "x" * 60]))] = draw(FLOATS)
    return g


def _within(v: float | None, lo: float, hi: float) -> bool:
    return v is None or (math.isfinite(v) and lo <= v <= hi)


@settings(max_examples=400, deadline=None)
@given(st.lists(_gpus(), max_size=3))
def test_what_is_accepted_is_within_every_bound_and_equal_to_what_was_sent(
    gpus: list[pb.GpuWindow],
) -> None:
    msg = _report()
    msg.gpus.extend(gpus)
    try:
        got = validate_report(msg, now=NOW)
    except ReportInvalid as exc:
        assert str(exc).startswith(("gpus[", "node", "seq", "window")), exc
        return
    assert got == report_from_pb(msg)
    for g in got.gpus:
        for v in (g.util_mean, g.util_max, g.util_min):
            assert _within(v, 0, 100)
        assert _within(g.zero_frac, 0, 1) and _within(g.power_mean_w, 0, 5000)
        assert _within(g.temperature_c, -50, 200)
        assert all(m is None or m <= 2**50 for m in (g.mem_used_max_bytes, g.mem_total_bytes))
        assert g.index <= 4096 and fieldcheck.UNSAFE_TEXT_RE.search(g.name) is None
        assert all(p.pid <= 2**22 for p in g.processes)
        assert all(_within(v, -1e18, 1e18) for v in g.extra_mean.values())
        if g.job is not None:
            assert g.job.job_id and g.job.start_time <= NOW + 300
            assert fieldcheck.UNSAFE_TEXT_RE.search(g.job.name) is None


def test_printable_text_skips_the_search_only_because_no_unsafe_character_is_printable() -> None:
    """text_ok trusts str.isprintable() before searching for control and bidirectional
    characters: that holds only while every one of them is non-printable."""
    unsafe = [c for c in range(0x110000) if fieldcheck.UNSAFE_TEXT_RE.match(chr(c))]
    assert len(unsafe) > 60
    assert [hex(c) for c in unsafe if chr(c).isprintable()] == []
    assert not fieldcheck.text_ok("evil\u202etxt") and fieldcheck.text_ok("\u6a21\u578b v2")
