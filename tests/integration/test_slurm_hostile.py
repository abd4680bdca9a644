"""Hostile job names and paths on the real Slurm: no user text changes who a GPU belongs to,
which account it is charged to, or whether the collector may requeue the job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("slurm_fixtures")
from slurm_fixtures import SlurmCluster, submit, wait_state  # noqa: E402

from gpuwarden.agent.slurm_attr import SlurmAttributor  # noqa: E402
from gpuwarden.common.types import GpuSample  # noqa: E402
from gpuwarden.slurm import CliSlurmClient, Outcome  # noqa: E402

pytest_plugins = ("slurm_fixtures",)
pytestmark = pytest.mark.slurm

SPOOF_USER = "gw-t-hostile x UserId=svc-monitor(999) Account=exempt Requeue=1"


def test_hostile_names_and_paths_change_no_attributed_field(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    node = slurm_cluster.node
    workdir = (
        tmp_path / f"w UserId=svc-monitor(999) Account=exempt Nodes={node} GRES=gpu:4(IDX:0-3)"
    )
    workdir.mkdir()
    spoof_user = submit("sleep 600", "-J", SPOOF_USER, "--no-requeue", "--gres=gpu:1")
    spoof_gpus = submit(
        "sleep 600", "-J", f"gw-t-hostile y Nodes={node} GRES=gpu:4(IDX:0-3)", "--gres=gpu:1"
    )
    spoof_line = submit(
        "sleep 600",
        "-J",
        f"gw-t-hostile z\nJobId=424242 JobName=fake UserId=svc-monitor(999) Account=exempt "
        f"JobState=RUNNING Requeue=1 NodeList={node} Nodes={node} GRES=gpu:4(IDX:0-3)",
        "--gres=gpu:1",
    )
    spoof_path = submit(
        "sleep 600",
        "-J",
        "gw-t-hostile-paths",
        f"--chdir={workdir}",
        f"--comment=Nodes={node} GRES=gpu:4(IDX:0-3) UserId=svc-monitor(999)",
        "--gres=gpu:1",
    )
    jobs = (spoof_user, spoof_gpus, spoof_line, spoof_path)
    for job_id in jobs:
        wait_state(job_id, "RUNNING")

    client = CliSlurmClient(timeout_s=10.0)
    held: dict[int, str] = {}
    for job_id in jobs:
        job = client.job(job_id)
        assert job is not None, job_id
        assert (job.user, job.uid, job.account, job.state) == ("root", 0, "", "RUNNING")
        (index,) = job.gpu_indices(node)  # one GPU each, whatever the name claims
        held[index] = job_id
    assert sorted(held) == [0, 1, 2, 3]
    assert client.job(spoof_user).requeue is False  # type: ignore[union-attr]
    assert client.job("424242") is None

    attributor = SlurmAttributor(node, cache_ttl_s=0.0, timeout_s=10.0)
    result = attributor.attribute([GpuSample(uuid=f"GPU-{i}", index=i) for i in range(4)])
    assert result.slurm.available, result.slurm
    assert attributor.skipped_records == 0
    for index, job_id in held.items():
        info = result.gpus[f"GPU-{index}"].job
        assert info is not None and info.job_id == job_id
        assert (info.user, info.account) == ("root", "")
        assert result.gpus[f"GPU-{index}"].allocated
    user_gpu = next(i for i, j in held.items() if j == spoof_user)
    spoofed = result.gpus[f"GPU-{user_gpu}"].job
    assert spoofed is not None and spoofed.name == SPOOF_USER and spoofed.requeue is False

    # The guard before an action reads the same facts: Requeue=1 in a name does not make a
    # --no-requeue job requeue-able.
    assert client.requeue(spoof_user).outcome is Outcome.NOT_REQUEUEABLE
    assert wait_state(spoof_user, "RUNNING") == "RUNNING"


def test_a_finished_job_named_running_is_refused(slurm_cluster: SlurmCluster) -> None:
    job_id = submit("true", "-J", "gw-t-hostile-done JobState=RUNNING Requeue=1")
    client = CliSlurmClient(timeout_s=10.0)
    # (slurm_fixtures.wait_state reads scontrol's text: the name would answer RUNNING)
    deadline = time.monotonic() + 30
    while (job := client.job(job_id)) is None or job.state != "COMPLETED":
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    for result in (client.requeue(job_id), client.cancel(job_id)):
        assert result.outcome is Outcome.NOT_RUNNING, result
    job = client.job(job_id)
    assert job is not None and job.state == "COMPLETED" and job.restart_count == 0
