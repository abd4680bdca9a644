"""Per-job CPU use from /proc/PID/stat, as a share of the job's CPUs on the node (for the
input-bound advice), on a /proc tree the test writes and captured squeue --json output."""

from __future__ import annotations

import os
from pathlib import Path

from gpuwarden.agent.slurm_attr import SlurmAttributor
from gpuwarden.common.types import GpuSample, ProcessInfo

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TCK = os.sysconf("SC_CLK_TCK")


def write_proc(root: Path, pid: int, job: str | None, cpu_ticks: int, start: int = 1000) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    cgroup = (
        f"4:freezer:/slurm_vm/uid_0/job_{job}/step_batch\n" if job else "0::/system.slice/sshd\n"
    )
    (d / "cgroup").write_text(cgroup)
    (d / "cmdline").write_bytes(b"python\x00loader.py\x00")
    (d / "environ").write_bytes(b"")
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice threads itrealvalue starttime
    utime, stime = cpu_ticks - cpu_ticks // 4, cpu_ticks // 4
    (d / "stat").write_text(
        f"{pid} (py thon) R 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 0 0\n"
    )


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def scontrol(tmp: Path) -> str:
    """Path of a scontrol whose sibling squeue prints a captured ``squeue --json``."""
    script = tmp / "squeue"
    script.write_text(f"#!/bin/sh\ncat {FIX / 'slurm' / 'squeue_2.json'}\n")
    script.chmod(0o755)
    return str(tmp / "scontrol")


def test_job_cpu_counts_every_process_of_the_job_not_only_those_on_the_gpu(
    tmp_path: Path,
) -> None:
    proc = tmp_path / "proc"
    write_proc(proc, 100, "2", 0)  # the training process, on the GPU
    write_proc(proc, 101, "2", 0)  # a data-loader worker, not on the GPU
    write_proc(proc, 300, None, 0)  # not a Slurm process
    clock = Clock()
    attributor = SlurmAttributor("vm", proc_root=proc, scontrol=scontrol(tmp_path), clock=clock)
    gpu = GpuSample(uuid="GPU-0", index=0, processes=(ProcessInfo(100),))
    first = attributor.attribute([gpu]).gpus["GPU-0"].job
    assert first is not None and first.cpu_util_pct is None  # one reading: no rate yet
    clock.t += 10.0
    write_proc(proc, 100, "2", 3 * TCK)  # 3 CPU-seconds in 10 s
    write_proc(proc, 101, "2", 6 * TCK)  # 6 CPU-seconds in 10 s
    write_proc(proc, 300, None, 10 * TCK)  # not counted
    job = attributor.attribute([gpu]).gpus["GPU-0"].job
    assert job is not None and job.job_id == "2"
    assert job.cpu_util_pct == 90.0  # 9 CPU-s / 10 s / the job's 1 CPU on this node


def test_a_reused_pid_is_a_new_process_and_an_exited_one_takes_no_negative_time(
    tmp_path: Path,
) -> None:
    proc = tmp_path / "proc"
    write_proc(proc, 100, "2", 50 * TCK)
    write_proc(proc, 101, "2", 40 * TCK)
    clock = Clock()
    attributor = SlurmAttributor("vm", proc_root=proc, scontrol=scontrol(tmp_path), clock=clock)
    gpu = GpuSample(uuid="GPU-0", index=0, processes=(ProcessInfo(100),))
    attributor.attribute([gpu])
    clock.t += 10.0
    for f in (proc / "101").iterdir():
        f.unlink()
    (proc / "101").rmdir()  # the loader exited with its 40 s
    job = attributor.attribute([gpu]).gpus["GPU-0"].job
    assert job is not None and job.cpu_util_pct == 0.0
