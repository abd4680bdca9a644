"""Slurm GRES index -> NVML index from minor numbers, as the fake NVML reports them."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.agent.gpu_order import gres_index_map
from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.common.types import GpuSample
from tests.fakenvml import FakeNvmlState, default_gpu_uuid

GPU0, GPU1, GPU2, GPU3 = (default_gpu_uuid(i) for i in range(4))


def read(tmp_path: Path) -> list[GpuSample]:
    s = NvmlSampler(proc_root=tmp_path)
    s.open()
    try:
        return s.sample(1.0)
    finally:
        s.close()


def test_shuffled_minor_numbers_give_each_gres_index_its_nvml_gpu(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    # NVML's PCI order 0..3; the driver numbered the device files 2, 3, 0, 1.
    for uuid, minor in ((GPU0, 2), (GPU1, 3), (GPU2, 0), (GPU3, 1)):
        fake_nvml.set(uuid, minor_number=minor)
    samples = read(tmp_path)
    index_map = gres_index_map(samples)
    assert index_map == {0: 2, 1: 3, 2: 0, 3: 1}
    uuid_of = {s.index: s.uuid for s in samples}
    # A job given GRES IDX 0 (/dev/nvidia0) holds GPU2's UUID, not GPU0's.
    assert uuid_of[index_map[0]] == GPU2


def test_in_order_minors_map_each_index_to_itself(fake_nvml: FakeNvmlState, tmp_path: Path) -> None:
    assert gres_index_map(read(tmp_path)) == {0: 0, 1: 1, 2: 2, 3: 3}


def test_gaps_in_the_minor_numbers_are_ranked(fake_nvml: FakeNvmlState, tmp_path: Path) -> None:
    for uuid, minor in ((GPU0, 7), (GPU1, 5), (GPU2, 1), (GPU3, 6)):
        fake_nvml.set(uuid, minor_number=minor)
    assert gres_index_map(read(tmp_path)) == {0: 2, 1: 1, 2: 3, 3: 0}


def test_a_mig_gpu_counts_once_through_its_instances(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    fake_nvml.set(GPU1, minor_number=0)
    fake_nvml.set(GPU0, minor_number=1)
    fake_nvml.enable_mig(GPU1, instances=3)
    assert gres_index_map(read(tmp_path)) == {0: 1, 1: 0, 2: 2, 3: 3}


def test_unknown_or_clashing_minor_numbers_give_no_map() -> None:
    a = GpuSample(uuid="GPU-a", index=0, minor_number=0)
    lost = GpuSample(uuid="nvml-index-1", index=1, errors=("gpu_lost",))
    clash = GpuSample(uuid="GPU-c", index=1, minor_number=0)
    two_minors = GpuSample(uuid="MIG-x", index=0, parent_uuid="GPU-a", minor_number=4)
    assert gres_index_map([a, lost]) is None
    assert gres_index_map([a, clash]) is None
    assert gres_index_map([a, two_minors]) is None
    assert gres_index_map([]) == {}
