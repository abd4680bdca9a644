"""A GPU window survives the wire both ways: every field set, and none of the optional ones
(absent stays None, never 0)."""

from __future__ import annotations

from gpuwarden.common.convert import gpu_from_pb, gpu_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, ProcessInfo
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb


def _wire(g: GpuWindow) -> GpuWindow:
    return gpu_from_pb(pb.GpuWindow.FromString(gpu_to_pb(g).SerializeToString()))


def test_every_field_comes_back() -> None:
    g = GpuWindow(
        uuid="GPU-11111111-2222-3333-4444-555555555555",
        index=3,
        name="NVIDIA H100",
        parent_uuid="GPU-aaaaaaaa-2222-3333-4444-555555555555",
        samples=5,
        util_mean=0.0,
        util_max=100.0,
        util_min=0.0,
        zero_frac=0.2,
        mem_util_mean=12.5,
        mem_used_max_bytes=0,
        mem_total_bytes=80 << 30,
        power_mean_w=301.5,
        temperature_c=61.0,
        processes=(ProcessInfo(7, 1 << 30, "python"), ProcessInfo(8, None, "")),
        errors=("xid:79",),
        job=JobInfo(job_id="42", user="alice", account="phys", partition="gpu"),
        allocated=True,
        extra_mean={"sm_active": 0.25},
        extra_max={"sm_active": 0.5},
        minor_number=0,
        gpu_instance_id=1,
        mig_caps_minor=10,
    )
    back = _wire(g)
    assert back == g
    assert back.extra_mean == {"sm_active": 0.25} and isinstance(back.extra_mean, dict)


def test_a_bare_window_keeps_its_unknowns_unknown() -> None:
    g = GpuWindow(uuid="", index=0)
    back = _wire(g)
    assert back == g
    assert back.util_mean is None and back.mem_used_max_bytes is None and back.job is None
    assert back.processes == () and back.errors == () and back.minor_number is None
