"""dask-jobqueue with ``processes=2`` on the real Slurm: one Slurm job runs two worker
processes named ``NAME-0`` and ``NAME-1``; the agent reports NAME (from the command line) and
releasing that worker retires both processes, so the job ends and its GPU is free."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("slurm_fixtures")
from slurm_fixtures import SlurmCluster, dask_on_slurm, wait_state  # noqa: E402

from gpuwarden.agent.slurm_attr import SlurmAttributor  # noqa: E402
from gpuwarden.collector.actions import retire_dask_worker  # noqa: E402
from gpuwarden.common.types import GpuSample, ProcessInfo  # noqa: E402
from gpuwarden.slurm import CliSlurmClient  # noqa: E402

pytest_plugins = ("slurm_fixtures",)
pytestmark = [pytest.mark.slurm, pytest.mark.dask, pytest.mark.timeout(240)]


def test_releasing_a_two_process_worker_retires_both_and_ends_its_job(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    with dask_on_slurm(tmp_path, name="gw-t-dask-procs", jobs=1, processes=2) as client:
        facts: dict[str, tuple[int, str]] = client.run(
            lambda: (os.getpid(), os.environ["SLURM_JOB_ID"])
        )
        names = sorted(str(w["name"]) for w in client.scheduler_info()["workers"].values())
        (job_id,) = {j for _, j in facts.values()}
        job = CliSlurmClient(timeout_s=10.0).job(job_id)
        assert job is not None
        (gpu,) = job.gpu_indices(slurm_cluster.node)
        pid = next(iter(facts.values()))[0]

        # What the agent reports for the job's GPU: the name on the command line.
        attributor = SlurmAttributor(slurm_cluster.node, cache_ttl_s=0.0, timeout_s=10.0)
        sample = GpuSample(uuid="GPU-x", index=gpu, processes=(ProcessInfo(pid=pid),))
        info = attributor.attribute([sample]).gpus["GPU-x"].job
        assert info is not None and info.job_id == job_id and info.is_dask_worker
        assert names == [f"{info.dask_worker}-0", f"{info.dask_worker}-1"]

        outcome = retire_dask_worker(info.dask_scheduler, info.dask_worker, timeout_s=30.0)
        assert outcome.ok, outcome
        assert "2 processes" in outcome.detail
        deadline = time.monotonic() + 60
        while client.scheduler_info()["workers"]:
            assert time.monotonic() < deadline, client.scheduler_info()["workers"]
            time.sleep(0.3)
        assert wait_state(job_id, "COMPLETED", timeout=60) == "COMPLETED"
