"""GPU identity for attribution: minor numbers (not NVML's index order), the Slurm GRES index
map made from them, and MIG instances (GPU instance id, /dev/nvidia-caps minor), read through
nvidia-ml-py against the fake library."""

from __future__ import annotations

import shutil
from pathlib import Path

from gpuwarden.agent.gpu_order import gres_index_map
from gpuwarden.agent.nvidia_caps import MIG_MINORS, parse_mig_minors, read_mig_minors
from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.window import WindowAggregator
from gpuwarden.common.types import GpuSample
from tests.fakenvml import GIB, FakeNvmlState, default_gpu_uuid

GPU0, GPU1, GPU2, GPU3 = (default_gpu_uuid(i) for i in range(4))
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-caps" / "mig-minors"


def read(proc_root: Path) -> list[GpuSample]:
    s = NvmlSampler(proc_root=proc_root)
    s.open()
    try:
        return s.sample(1.0)
    finally:
        s.close()


def sample_once(proc_root: Path) -> dict[str, GpuSample]:
    return {x.uuid: x for x in read(proc_root)}


def with_caps(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    (root / MIG_MINORS).parent.mkdir(parents=True)
    shutil.copy(FIXTURE, root / MIG_MINORS)
    return root


def test_shuffled_minor_numbers_stay_with_their_uuid_and_map_gres_indices_to_them(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    # NVML's PCI order 0..3; the driver numbered the device files 2, 3, 0, 1.
    for uuid, minor in ((GPU0, 2), (GPU1, 3), (GPU2, 0), (GPU3, 1)):
        fake_nvml.set(uuid, minor_number=minor)
    samples = read(tmp_path)
    assert {s.uuid: (s.index, s.minor_number) for s in samples} == {
        GPU0: (0, 2),
        GPU1: (1, 3),
        GPU2: (2, 0),
        GPU3: (3, 1),
    }
    index_map = gres_index_map(samples)
    assert index_map == {0: 2, 1: 3, 2: 0, 3: 1}
    uuid_of = {s.index: s.uuid for s in samples}
    # A job given GRES IDX 0 (/dev/nvidia0) holds GPU2's UUID, not GPU0's.
    assert uuid_of[index_map[0]] == GPU2


def test_a_mig_instance_carries_its_gpu_minor_instance_id_and_caps_minor(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    fake_nvml.set(GPU0, minor_number=1)
    fake_nvml.set(GPU1, minor_number=0)
    a, b = fake_nvml.enable_mig(GPU0, instances=2)
    fake_nvml.set(a, gpu_instance_id=1, mem_used_bytes=5 * GIB, processes=[(4242, 5 * GIB)])
    fake_nvml.set(b, gpu_instance_id=2)
    samples = sample_once(with_caps(tmp_path))
    got = {
        u: (s.parent_uuid, s.minor_number, s.gpu_instance_id, s.mig_caps_minor)
        for u, s in samples.items()
    }
    # From the fixture: "gpu1/gi1/access 147", "gpu1/gi2/access 156".
    assert got[a] == (GPU0, 1, 1, 147)
    assert got[b] == (GPU0, 1, 2, 156)
    assert got[GPU1] == ("", 0, None, None)  # a whole GPU has no instance identity
    assert samples[a].mem_used_bytes == 5 * GIB
    assert [p.pid for p in samples[a].processes] == [4242]
    assert samples[b].processes == ()


def test_without_the_caps_table_a_mig_instance_still_has_its_instance_id(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    (a,) = fake_nvml.enable_mig(GPU2, instances=1)
    samples = sample_once(tmp_path / "no-proc")
    assert (samples[a].minor_number, samples[a].gpu_instance_id, samples[a].mig_caps_minor) == (
        2,
        1,
        None,
    )


def test_identity_reaches_the_report_window(fake_nvml: FakeNvmlState, tmp_path: Path) -> None:
    fake_nvml.set(GPU3, minor_number=7)
    (a,) = fake_nvml.enable_mig(GPU1, instances=1)
    s = NvmlSampler(proc_root=with_caps(tmp_path))
    s.open()
    agg = WindowAggregator()
    try:
        agg.add(s.sample(1.0))
        agg.add(s.sample(2.0))
    finally:
        s.close()
    windows = {w.uuid: w for w in agg.flush({})}
    assert windows[GPU3].minor_number == 7
    assert (windows[a].minor_number, windows[a].gpu_instance_id, windows[a].mig_caps_minor) == (
        1,
        1,
        147,
    )


def test_the_caps_table_keeps_only_gpu_instance_access_lines() -> None:
    text = "\n".join(
        [
            "config 1",
            "monitor 2",
            "gpu0/gi0/access 3",
            "gpu0/gi0/ci0/access 4",
            "gpu3/gi13/access 999",
            "gpu0/gi1/access notanumber",
            "gpu0/gi2/access",
            "garbage line here",
            "gpu10/gi7/access 1234 extra",
            "",
        ]
    )
    assert parse_mig_minors(text) == {(0, 0): 3, (3, 13): 999}


def test_the_caps_fixture_parses_to_one_minor_per_gpu_instance() -> None:
    table = parse_mig_minors(FIXTURE.read_text())
    assert len(table) == 2 * 15
    assert (table[(0, 0)], table[(0, 1)], table[(1, 1)], table[(1, 14)]) == (3, 12, 147, 264)


def test_a_missing_caps_table_reads_as_empty(tmp_path: Path) -> None:
    assert read_mig_minors(tmp_path) == {}


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
