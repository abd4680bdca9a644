"""The collector's bounds on the GPU identity fields (minor number, MIG instance identity)."""

from __future__ import annotations

import pytest

from gpuwarden.collector.validate import ReportInvalid, validate_report
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport

NOW = 1_700_000_100.0
GPU = "GPU-00000000-0000-4000-8000-000000000001"
MIG = "MIG-00000000-0000-4000-9000-000001000000"


def report(gpu: GpuWindow) -> NodeReport:
    return NodeReport(node="gpu01", seq=1, window_start=NOW - 10, window_end=NOW - 5, gpus=(gpu,))


def test_identity_of_a_gpu_and_of_a_mig_instance_is_stored_as_sent() -> None:
    gpu = GpuWindow(uuid=GPU, index=1, samples=5, minor_number=3)
    mig = GpuWindow(
        uuid=MIG,
        index=1,
        parent_uuid=GPU,
        samples=5,
        minor_number=3,
        gpu_instance_id=2,
        mig_caps_minor=156,
    )
    back = [validate_report(report_to_pb(report(g)), now=NOW).gpus[0] for g in (gpu, mig)]
    assert (back[0].minor_number, back[0].gpu_instance_id, back[0].mig_caps_minor) == (
        3,
        None,
        None,
    )
    assert (back[1].minor_number, back[1].gpu_instance_id, back[1].mig_caps_minor) == (3, 2, 156)


def test_absent_identity_stays_absent_not_zero() -> None:
    back = validate_report(report_to_pb(report(GpuWindow(uuid=GPU, index=0))), now=NOW).gpus[0]
    assert (back.minor_number, back.gpu_instance_id, back.mig_caps_minor) == (None, None, None)


@pytest.mark.parametrize(
    ("gpu", "message"),
    [
        (
            GpuWindow(uuid=GPU, index=0, minor_number=1 << 20),
            "gpus[0].minor_number=1048576 is outside",
        ),
        (
            GpuWindow(uuid=MIG, index=0, parent_uuid=GPU, gpu_instance_id=5000),
            "gpus[0].gpu_instance_id=5000 is outside [0, 4096]",
        ),
        (
            GpuWindow(uuid=MIG, index=0, parent_uuid=GPU, mig_caps_minor=1 << 21),
            "gpus[0].mig_caps_minor=2097152 is outside",
        ),
        (
            GpuWindow(uuid=GPU, index=0, gpu_instance_id=1),
            "gpus[0].gpu_instance_id is set on a GPU without parent_uuid",
        ),
        (
            GpuWindow(uuid=GPU, index=0, mig_caps_minor=12),
            "gpus[0].mig_caps_minor is set on a GPU without parent_uuid",
        ),
    ],
)
def test_identity_out_of_range_or_out_of_place_is_rejected_naming_the_field(
    gpu: GpuWindow, message: str
) -> None:
    with pytest.raises(ReportInvalid) as err:
        validate_report(report_to_pb(report(gpu)), now=NOW)
    assert message in str(err.value)
