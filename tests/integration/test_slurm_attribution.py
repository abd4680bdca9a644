"""SlurmAttributor with the real /proc and the real local Slurms, listing the node's jobs with
``squeue --json`` on 22.05 and 25.11 and with pyslurm on 25.11 (as the agent wires it)."""

from __future__ import annotations

import time

import pytest

pytest.register_assert_rewrite("slurm_fixtures")
from slurm_fixtures import (  # noqa: E402
    SlurmCluster,
    controller_stopped,
    ensure_pyslurm,
    job_pids,
    submit,
    wait_state,
)

from gpuwarden.agent.config import AgentConfig  # noqa: E402
from gpuwarden.agent.main import pyslurm_jobs_source  # noqa: E402
from gpuwarden.agent.slurm_attr import SlurmAttributor  # noqa: E402
from gpuwarden.common.config import ConfigError  # noqa: E402
from gpuwarden.common.types import GpuSample, ProcessInfo  # noqa: E402
from gpuwarden.slurm import CliSlurmClient  # noqa: E402

pytest_plugins = ("slurm_fixtures",)  # the slurm_cluster fixture
pytestmark = pytest.mark.slurm


def _gpu(index: int, pids: tuple[int, ...] = ()) -> GpuSample:
    return GpuSample(
        uuid=f"GPU-fake-{index}", index=index, processes=tuple(ProcessInfo(pid=p) for p in pids)
    )


def attributor_for(cluster: SlurmCluster, backend: str, **settings: float) -> SlurmAttributor:
    """The attributor the agent builds with ``slurm_backend = backend``."""
    cfg = AgentConfig(node=cluster.node, insecure=True, slurm_backend=backend)
    source = pyslurm_jobs_source(cfg)
    assert (source is not None) == (backend == "pyslurm"), source
    return SlurmAttributor(cluster.node, jobs_source=source, **settings)


def _gres_indices(attributor: SlurmAttributor, job_id: str) -> tuple[int, ...]:
    job = CliSlurmClient(timeout_s=5.0).job(job_id)  # what Slurm allocated, asked separately
    assert job is not None
    return job.gpu_indices(attributor.node)


def test_real_jobs_are_attributed_by_process_and_by_allocation(
    slurm_cluster: SlurmCluster, slurm_backend: str
) -> None:
    one = submit("sleep 600", "-J", "gw-t-attr-1gpu", "--gres=gpu:1")
    two = submit("sleep 600", "-J", "gw-t-attr-2gpu", "--gres=gpu:2")
    wait_state(one, "RUNNING")
    wait_state(two, "RUNNING")
    pids = job_pids(one)
    attributor = attributor_for(slurm_cluster, slurm_backend, cache_ttl_s=0.0, timeout_s=5.0)
    (gpu_one,) = _gres_indices(attributor, one)
    gpus_two = _gres_indices(attributor, two)
    assert len(gpus_two) == 2
    free = sorted({0, 1, 2, 3} - {gpu_one, *gpus_two})

    samples = [
        _gpu(gpu_one, pids=(pids[-1],)),  # the job's sleep runs "on" its GPU
        _gpu(gpus_two[0]),  # allocated, no process
        _gpu(gpus_two[1]),
        *[_gpu(i) for i in free],
    ]
    result = attributor.attribute(samples)

    assert result.slurm.available, result.slurm
    on_one = result.gpus[f"GPU-fake-{gpu_one}"]
    assert on_one.allocated and on_one.job is not None
    assert on_one.job.job_id == one
    assert on_one.job.user == "root"
    assert on_one.job.name == "gw-t-attr-1gpu"
    assert on_one.job.partition == "debug"
    assert on_one.job.source == "environ"  # proctrack/linuxproc: no Slurm cgroup path
    assert on_one.job.step == ""
    assert on_one.job.requeue and on_one.job.batch and on_one.job.start_time > 0
    for idx in gpus_two:
        idle = result.gpus[f"GPU-fake-{idx}"]
        assert idle.allocated and idle.job is not None
        assert idle.job.job_id == two and idle.job.source == "allocation"
    for idx in free:
        assert result.gpus[f"GPU-fake-{idx}"].job is None
        assert not result.gpus[f"GPU-fake-{idx}"].allocated
    # pyslurm: no Slurm command ran; the CLI: squeue did
    assert (attributor.runner.calls == 0) == (slurm_backend == "pyslurm")


def test_controller_down_gives_proc_facts_quickly_and_full_facts_after_restart(
    slurm_cluster: SlurmCluster, slurm_backend: str
) -> None:
    job_id = submit("sleep 600", "-J", "gw-t-attr-ctld", "--gres=gpu:1")
    wait_state(job_id, "RUNNING")
    pids = job_pids(job_id)
    attributor = attributor_for(
        slurm_cluster, slurm_backend, cache_ttl_s=0.5, timeout_s=1.0, refresh_s=0.5
    )
    (gpu,) = _gres_indices(attributor, job_id)
    sample = _gpu(gpu, pids=(pids[-1],))
    assert attributor.attribute([sample]).slurm.available

    with controller_stopped():
        time.sleep(0.6)  # past the cache TTL
        t0 = time.monotonic()
        down = attributor.attribute([sample])
        elapsed = time.monotonic() - t0
        print(f"attribute() with slurmctld down took {elapsed:.2f} s (timeout_s=1.0)")
        assert not down.slurm.available and down.slurm.error
        att = down.gpus[sample.uuid]
        assert att.job is not None and att.job.job_id == job_id
        assert att.job.user == "root"  # from SLURM_JOB_USER
        assert att.job.name == ""  # only scontrol knows it
        assert att.allocated  # the job's own SLURM_JOB_GPUS names this GPU
        # the failure is cached for the TTL: the next call does not wait again
        t1 = time.monotonic()
        attributor.attribute([sample])
        print(f"cached failure answered in {time.monotonic() - t1:.3f} s")

    time.sleep(0.6)
    up = attributor.attribute([sample])
    assert up.slurm.available, up.slurm
    att = up.gpus[sample.uuid]
    assert att.job is not None and att.job.job_id == job_id
    assert att.job.name == "gw-t-attr-ctld" and att.job.partition == "debug" and att.allocated


def test_agent_asking_for_pyslurm_where_it_cannot_work_stops_at_start_saying_why(
    slurm_cluster: SlurmCluster,
) -> None:
    cfg = AgentConfig(node=slurm_cluster.node, insecure=True, slurm_backend="pyslurm")
    if slurm_cluster.version == "25.11":
        ensure_pyslurm()
        assert pyslurm_jobs_source(cfg) is not None
        return
    with pytest.raises(ConfigError, match=r"\[agent\] slurm_backend: .*pyslurm"):
        pyslurm_jobs_source(cfg)
