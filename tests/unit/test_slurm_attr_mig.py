"""MIG attribution: three jobs on MIG slices IDX 0/1/2 of one card, each attributed to its own
slice. The card is sampled through nvidia-ml-py against the fake NVML (MIG instances, the
driver's /dev/nvidia-caps table from a real capture), /proc is a tree of captured-style files,
and ``squeue --json`` is a script printing a fixture made from a real capture (see
tests/fixtures/slurm/README.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

from gpuwarden.agent.gpu_order import gres_device_map
from gpuwarden.agent.nvidia_caps import MIG_MINORS
from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.slurm_attr import SlurmAttributor
from gpuwarden.agent.window import WindowAggregator
from gpuwarden.collector.engine import Engine
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.rules import FindingKind
from gpuwarden.common.types import WindowRecord
from tests.fakenvml import GIB, FakeNvmlState, default_gpu_uuid
from tests.unit.test_nvml_identity import read

FIX = Path(__file__).resolve().parents[1] / "fixtures"
CARD = default_gpu_uuid(0)


def _squeue(tmp: Path, fixture: str) -> str:
    """A fake ``squeue`` printing ``fixture``; returns the ``scontrol`` path beside it."""
    script = tmp / "squeue"
    script.write_text(f"#!/bin/sh\ncat {FIX / 'slurm' / fixture}\n")
    script.chmod(0o755)
    return str(tmp / "scontrol")


def _proc_root(tmp: Path, jobs: dict[int, int]) -> Path:
    """/proc with the driver's MIG minors table and one process per ``{pid: job id}``."""
    root = tmp / "proc"
    (root / MIG_MINORS).parent.mkdir(parents=True)
    shutil.copy(FIX / "nvidia-caps" / "mig-minors", root / MIG_MINORS)
    for pid, job in jobs.items():
        d = root / str(pid)
        d.mkdir()
        (d / "cgroup").write_text(
            f"0::/system.slice/slurmstepd.scope/job_{job}/step_0/user/task_0\n"
        )
        (d / "cmdline").write_bytes(b"python\x00train.py\x00")
        (d / "environ").write_bytes(b"")
        (d / "stat").write_text(f"{pid} (python) S 1 1 1 0 -1\n")
    return root


def _one_mig_card(fake_nvml: FakeNvmlState) -> list[str]:
    """One card (minor 0) with three MIG instances, which NVML lists as GPU instances 5, 3
    and 4: Slurm's GRES order (access file minors 48, 30, 39) differs from NVML's."""
    fake_nvml.gpus = fake_nvml.gpus[:1]
    fake_nvml.set(CARD, minor_number=0)
    slices = fake_nvml.enable_mig(CARD, instances=3)
    for uuid, gi in zip(slices, (5, 3, 4), strict=True):
        fake_nvml.set(uuid, gpu_instance_id=gi)
    return slices


def test_three_mig_jobs_on_one_card_are_attributed_to_their_own_slices(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    by_gi = dict(zip((5, 3, 4), _one_mig_card(fake_nvml), strict=True))
    # IDX 0 -> GI 3 (job 21, a process on it), IDX 1 -> GI 4 (job 22, a process),
    # IDX 2 -> GI 5 (job 23: allocated, nothing running)
    fake_nvml.set(by_gi[3], mem_used_bytes=6 * GIB, processes=[(100, 6 * GIB)])
    fake_nvml.set(by_gi[4], mem_used_bytes=2 * GIB, processes=[(200, 2 * GIB)])
    proc = _proc_root(tmp_path, {100: 21, 200: 22})
    samples = read(proc)
    assert {s.uuid for s in samples} == set(by_gi.values())  # a MIG card is its slices
    assert gres_device_map(samples) == {0: (0, 3), 1: (0, 4), 2: (0, 5)}

    attributor = SlurmAttributor(
        "vm", proc_root=proc, scontrol=_squeue(tmp_path, "squeue_mig.json")
    )
    result = attributor.attribute(samples)
    assert result.slurm.available
    got = {}
    for gi, uuid in by_gi.items():
        a = result.gpus[uuid]
        assert a.job is not None and a.allocated
        got[gi] = (a.job.job_id, a.job.user, a.job.source)
    assert got == {
        3: ("21", "ann", "cgroup"),
        4: ("22", "bob", "cgroup"),
        5: ("23", "cat", "allocation"),
    }


def test_slices_are_attributed_by_allocation_alone_when_nothing_runs(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    by_gi = dict(zip((5, 3, 4), _one_mig_card(fake_nvml), strict=True))
    proc = _proc_root(tmp_path, {})
    attributor = SlurmAttributor(
        "vm", proc_root=proc, scontrol=_squeue(tmp_path, "squeue_mig.json")
    )
    result = attributor.attribute(read(proc))
    owners = {gi: (result.gpus[u].job or None) for gi, u in by_gi.items()}
    assert {gi: j.job_id if j else None for gi, j in owners.items()} == {
        3: "21",
        4: "22",
        5: "23",
    }


def test_without_the_caps_table_slices_are_attributed_only_through_their_processes(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    by_gi = dict(zip((5, 3, 4), _one_mig_card(fake_nvml), strict=True))
    fake_nvml.set(by_gi[4], processes=[(200, GIB)])
    proc = _proc_root(tmp_path, {200: 22})
    (proc / MIG_MINORS).unlink()  # Slurm's order of the slices cannot be known
    samples = read(proc)
    assert gres_device_map(samples) is None
    attributor = SlurmAttributor(
        "vm", proc_root=proc, scontrol=_squeue(tmp_path, "squeue_mig.json")
    )
    result = attributor.attribute(samples)
    owners = {gi: (result.gpus[u].job or None) for gi, u in by_gi.items()}
    assert {gi: j.job_id if j else None for gi, j in owners.items()} == {
        3: None,  # never a guess: GRES IDX 0 is not "the first slice NVML lists"
        4: "22",
        5: None,
    }


def test_an_empty_slice_is_found_idle_from_its_windows_and_slices_in_use_are_not(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    """NVML gives a MIG slice no utilisation: the agent's windows of an empty slice (no
    process, no memory) make it idle; a slice with a process or with memory in use is not."""
    by_gi = dict(zip((5, 3, 4), _one_mig_card(fake_nvml), strict=True))
    fake_nvml.set(by_gi[3], mem_used_bytes=12 * 1024 * 1024)  # empty: driver's few MiB
    fake_nvml.set(by_gi[4], mem_used_bytes=6 * GIB, processes=[(100, 6 * GIB)])
    fake_nvml.set(by_gi[5], mem_used_bytes=3 * GIB)  # memory held, no process listed
    proc = _proc_root(tmp_path, {100: 22})
    attributor = SlurmAttributor(
        "vm", proc_root=proc, scontrol=_squeue(tmp_path, "squeue_mig.json")
    )
    sampler = NvmlSampler(proc_root=proc)
    sampler.open()
    engine = Engine(PolicySet(default=Policy(idle_window=600.0, grace_period=0.0)))
    events = []
    try:
        t0 = 1_795_842_000.0  # after the jobs' start in the fixture
        for k in range(15):  # 15 one-minute windows, two samples each
            agg = WindowAggregator()
            agg.add(sampler.sample(t0))
            agg.add(sampler.sample(t0))
            attribution = attributor.attribute(agg.merged_samples()).gpus
            for w in agg.flush(attribution):
                assert w.util_max is None  # no utilisation for a slice
                engine.on_window(WindowRecord("vm", t0 + 60 * k, t0 + 60 * (k + 1), w))
            events += engine.evaluate(t0 + 60 * (k + 1) + engine.reorder_s)
    finally:
        sampler.close()
    idle = [e for e in events if e.decision.finding.kind is FindingKind.IDLE]
    assert idle, events
    assert {e.decision.job_id for e in idle} == {"21"}  # GI 3 is GRES IDX 0: job 21
    assert {g.uuid for e in idle for g in e.decision.finding.gpus} == {by_gi[3]}
    assert "MIG slice with no process and no memory in use" in idle[0].decision.finding.detail
