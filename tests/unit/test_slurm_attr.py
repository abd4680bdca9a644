"""SlurmAttributor on a /proc tree built from real captures, with squeue replaced by a script
that prints a captured ``squeue --json`` (the subprocess path is the real one)."""

from __future__ import annotations

import json
from pathlib import Path

from gpuwarden.agent.slurm_attr import SlurmAttributor
from gpuwarden.common.types import GpuSample, ProcessInfo

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _proc(
    root: Path, pid: int, ppid: int, cgroup: str, cmdline: bytes, environ: bytes = b""
) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "cmdline").write_bytes(cmdline)
    (d / "environ").write_bytes(environ)
    (d / "stat").write_text(f"{pid} (some (odd) name) S {ppid} 1 1 0 -1\n")


def _scontrol(tmp: Path, fixture: str | None, rc: int = 0) -> str:
    """A folder with a fake ``squeue`` printing ``fixture`` (or failing); returns the path of
    the ``scontrol`` beside it, which is what the agent is configured with."""
    script = tmp / "squeue"
    body = (
        f'echo "$@" >> {tmp / "squeue.calls"}\ncat {FIX / "slurm" / fixture}\n'
        if fixture
        else "echo 'Unable to contact slurm controller' >&2\n"
    )
    script.write_text(f"#!/bin/sh\n{body}exit {rc}\n")
    script.chmod(0o755)
    return str(tmp / "scontrol")


def _gpu(index: int, *pids: int) -> GpuSample:
    return GpuSample(
        uuid=f"GPU-{index}", index=index, processes=tuple(ProcessInfo(pid=p) for p in pids)
    )


def test_cgroup_environ_and_allocation_sources_on_captured_state(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    v1 = (
        (FIX / "proc" / "cgroup_v1_proctrack_cgroup_batch.txt")
        .read_text()
        .replace("job_11", "job_2")
    )
    _proc(proc, 100, 1, v1, b"sleep\x00600\x00")  # job 2 by cgroup, on GPU 0
    env = (
        (FIX / "proc" / "environ_batch_step.bin")
        .read_bytes()
        .replace(b"SLURM_JOB_ID=10", b"SLURM_JOB_ID=4")
    )
    linuxproc = (FIX / "proc" / "cgroup_linuxproc_batch.txt").read_text()
    _proc(proc, 200, 1, linuxproc, b"python\x00train.py\x00", env)  # job 4 by environ, GPU 3
    attributor = SlurmAttributor(
        "vm", proc_root=proc, scontrol=_scontrol(tmp_path, "squeue_2.json")
    )
    result = attributor.attribute([_gpu(0, 100), _gpu(1), _gpu(2), _gpu(3, 200)])
    assert result.slurm.available
    g0, g1, g2, g3 = (result.gpus[f"GPU-{i}"] for i in range(4))
    assert g0.job is not None and (g0.job.job_id, g0.job.step, g0.job.source) == (
        "2",
        "batch",
        "cgroup",
    )
    assert g0.job.name == "gw-cap-run1" and g0.allocated
    # job 3 holds GPUs 1-2 with no process on them: allocated, attributed by allocation
    for g in (g1, g2):
        assert g.allocated and g.job is not None
        assert (g.job.job_id, g.job.source, g.job.account) == ("3", "allocation", "root")
    assert (
        g3.job is not None and (g3.job.job_id, g3.job.source) == ("4", "environ") and g3.allocated
    )


def test_dask_worker_found_through_the_nanny_parent_and_on_an_idle_gpu(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    cmd = (FIX / "slurm" / "dask_worker_cmdline.bin").read_bytes()
    cg = "0::/system.slice/slurmstepd.scope/job_3/step_batch\n"
    _proc(proc, 300, 1, cg, cmd)  # the nanny: dask-jobqueue's command line
    _proc(
        proc,
        301,
        300,
        cg,
        b"/usr/bin/python3\x00-c\x00from multiprocessing.spawn import spawn_main\x00",
    )
    attributor = SlurmAttributor(
        "vm", proc_root=proc, scontrol=_scontrol(tmp_path, "squeue_2.json")
    )
    result = attributor.attribute([_gpu(1, 301), _gpu(2)])
    for uuid in ("GPU-1", "GPU-2"):  # with and without a process on the GPU
        job = result.gpus[uuid].job
        assert job is not None and job.job_id == "3"
        assert (job.dask_scheduler, job.dask_worker) == ("tcp://127.0.0.1:33745", "SLURMCluster-3")
        assert job.is_dask_worker


def test_sluid_cgroup_is_resolved_through_environ_when_slurm_is_down(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    cg = (FIX / "proc" / "cgroup_v2_sluid_step_task.txt").read_text()
    env = (FIX / "proc" / "environ_batch_step.bin").read_bytes()
    _proc(proc, 400, 1, cg, b"python\x00train.py\x00", env)
    attributor = SlurmAttributor("vm", proc_root=proc, scontrol=_scontrol(tmp_path, None, rc=1))
    result = attributor.attribute([_gpu(0, 400), _gpu(2)])
    assert not result.slurm.available and "Unable to contact" in result.slurm.error
    job = result.gpus["GPU-0"].job
    assert job is not None and (job.job_id, job.step, job.user) == ("10", "0", "root")
    assert result.gpus["GPU-0"].allocated  # SLURM_JOB_GPUS=0,1
    assert result.gpus["GPU-2"].job is None  # unknown without Slurm


def test_gpu_index_map_moves_the_allocation_to_the_nvml_index(tmp_path: Path) -> None:
    attributor = SlurmAttributor(
        "vm",
        proc_root=tmp_path,
        scontrol=_scontrol(tmp_path, "squeue_2.json"),
        gpu_index_map={0: 3, 1: 2, 2: 1, 3: 0},
    )
    result = attributor.attribute([_gpu(i) for i in range(4)])
    owners = {i: (result.gpus[f"GPU-{i}"].job or None) for i in range(4)}
    assert {i: j.job_id if j else None for i, j in owners.items()} == {
        0: "4",
        1: "3",
        2: "3",
        3: "2",
    }


def test_missing_scontrol_binary_is_reported_not_raised(tmp_path: Path) -> None:
    attributor = SlurmAttributor("vm", proc_root=tmp_path, scontrol=str(tmp_path / "scontrol"))
    result = attributor.attribute([_gpu(0)])
    assert not result.slurm.available and "cannot run" in result.slurm.error
    assert result.gpus["GPU-0"].job is None


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _calls(tmp: Path) -> int:
    calls = tmp / "squeue.calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_slurm_is_asked_only_for_a_new_job_or_when_the_answer_is_old(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _proc(proc, 100, 1, "0::/system.slice/slurmstepd.scope/job_2/step_batch\n", b"sleep\x00")
    clock = _Clock()
    attributor = SlurmAttributor(
        "vm",
        proc_root=proc,
        scontrol=_scontrol(tmp_path, "squeue_2.json"),
        cache_ttl_s=10.0,
        refresh_s=60.0,
        clock=clock,
    )
    gpus = [_gpu(0, 100), _gpu(1), _gpu(2), _gpu(3)]
    assert attributor.attribute(gpus).slurm.available
    assert _calls(tmp_path) == 1
    for _ in range(10):  # 50 s of reports every 5 s: nothing new on the node
        clock.t += 5.0
        attributor.attribute(gpus)
    assert _calls(tmp_path) == 1
    clock.t += 11.0  # past refresh_s: asked again (jobs without a process, state changes)
    attributor.attribute(gpus)
    assert _calls(tmp_path) == 2
    # a job Slurm has not described appears in /proc: asked at once (the TTL has passed),
    # not at the next refresh; while Slurm does not show it, at most once per TTL
    _proc(proc, 300, 1, "0::/system.slice/slurmstepd.scope/job_99/step_batch\n", b"sleep\x00")
    clock.t += 10.0
    attributor.attribute([_gpu(0, 100)])
    assert _calls(tmp_path) == 3
    for _ in range(2):
        clock.t += 4.0
        attributor.attribute([_gpu(0, 100)])
    assert _calls(tmp_path) == 3
    clock.t += 4.0
    result = attributor.attribute([_gpu(0, 100), _gpu(3)])
    assert _calls(tmp_path) == 4
    job = result.gpus["GPU-3"].job  # held by job 4, no process on it: the allocation says
    assert job is not None and (job.job_id, job.source) == ("4", "allocation")
    assert (tmp_path / "squeue.calls").read_text().splitlines() == ["--json"] * 4


def test_an_unreadable_job_record_is_skipped_and_the_node_keeps_its_other_jobs(
    tmp_path: Path,
) -> None:
    doc = json.loads((FIX / "slurm" / "squeue_2.json").read_text())
    for job in doc["jobs"]:
        if job["job_id"] == 3:
            job["gres_detail"] = ["gpu:2(IDX:1-"]  # cut short
    bad = tmp_path / "fixture.json"
    bad.write_text(json.dumps(doc))
    script = tmp_path / "squeue"
    script.write_text(f"#!/bin/sh\ncat {bad}\n")
    script.chmod(0o755)
    attributor = SlurmAttributor(
        "vm", proc_root=tmp_path / "proc", scontrol="scontrol", squeue=str(script)
    )
    result = attributor.attribute([_gpu(i) for i in range(4)])
    assert result.slurm.available, result.slurm
    assert attributor.skipped_records == 1
    owners = {i: (result.gpus[f"GPU-{i}"].job or None) for i in range(4)}
    assert {i: j.job_id if j else None for i, j in owners.items()} == {
        0: "2",
        1: None,  # job 3's record was unreadable: unknown, not someone else's
        2: None,
        3: "4",
    }


def test_hostile_job_names_change_no_attributed_field(tmp_path: Path) -> None:
    attributor = SlurmAttributor(
        "vm", proc_root=tmp_path / "proc", scontrol=_scontrol(tmp_path, "squeue_hostile_names.json")
    )
    result = attributor.attribute([_gpu(i) for i in range(4)])
    jobs = {i: result.gpus[f"GPU-{i}"].job for i in range(4)}
    assert {i: j.job_id if j else None for i, j in jobs.items()} == {
        0: "32",
        1: "33",  # its name claims gpu:4(IDX:0-3): it holds IDX 1 only
        2: "34",  # its name holds a line break and a fake record for job 424242
        3: "35",
    }
    for job in jobs.values():
        assert job is not None
        assert (job.user, job.account) == ("root", "")
    assert jobs[0] is not None and jobs[0].requeue is False  # submitted --no-requeue
    assert jobs[0].name == "x UserId=svc-monitor(999) Account=exempt Requeue=1"


def test_allocations_land_on_the_right_uuid_when_minor_numbers_differ_from_nvml_order(
    tmp_path: Path,
) -> None:
    """Slurm's GRES IDX counts /dev/nvidiaN (minor numbers); NVML counts PCI order. With
    minors [1, 0, 3, 2] for NVML indices 0..3, GRES IDX 1-2 are NVML GPUs 0 and 3."""
    proc = tmp_path / "proc"
    proc.mkdir()
    attributor = SlurmAttributor(
        "vm", proc_root=proc, scontrol=_scontrol(tmp_path, "squeue_2.json")
    )
    minors = [1, 0, 3, 2]
    samples = [GpuSample(uuid=f"GPU-{i}", index=i, minor_number=minors[i]) for i in range(4)]
    result = attributor.attribute(samples)
    holders = {u: (a.job.job_id if a.job else None) for u, a in result.gpus.items()}
    assert holders["GPU-0"] == "3" and holders["GPU-3"] == "3"
    assert holders["GPU-1"] != "3" and holders["GPU-2"] != "3"
    # without minor numbers (unknown), the old assumption holds: GRES IDX = NVML index
    plain = attributor.attribute([GpuSample(uuid=f"GPU-{i}", index=i) for i in range(4)])
    assert [plain.gpus[f"GPU-{i}"].job is not None for i in (1, 2)] == [True, True]
