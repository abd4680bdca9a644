"""Real Slurm jobs, fake NVML GPUs: the agent attributes each GPU to its job and the
collector shows it; with slurmctld down the agent keeps streaming GPU data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("slurm_fixtures")
from slurm_fixtures import SlurmCluster, controller_stopped, job_pids, submit, wait_state  # noqa: E402

from gpuwarden.agent.slurm_attr import SlurmAttributor  # noqa: E402
from gpuwarden.collector.server import Collector  # noqa: E402
from gpuwarden.common.types import GpuSample, GpuWindow, NodeState  # noqa: E402
from gpuwarden.query import QueryClient  # noqa: E402
from gpuwarden.slurm import CliSlurmClient  # noqa: E402
from tests.fakenvml import GIB, FakeNvmlState, default_gpu_uuid  # noqa: E402
from tests.helpers import running_agent, wait_for  # noqa: E402

pytest_plugins = ("slurm_fixtures",)
pytestmark = pytest.mark.slurm


def gpu_index(job_id: str, node: str) -> int:
    job = CliSlurmClient(timeout_s=5.0).job(job_id)
    assert job is not None
    (index,) = job.gpu_indices(node)
    return index


async def node_state(client: QueryClient, node: str) -> NodeState | None:
    snap = await client.snapshot()
    return next((n for n in snap.nodes if n.node == node), None)


async def test_jobs_gpus_are_attributed_end_to_end_and_survive_a_controller_outage(
    slurm_cluster: SlurmCluster, collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    node = slurm_cluster.node
    busy = submit("sleep 600", "-J", "gw-t-pipe-busy", "--gres=gpu:1")
    empty = submit("sleep 600", "-J", "gw-t-pipe-empty", "--gres=gpu:1")
    wait_state(busy, "RUNNING")
    wait_state(empty, "RUNNING")
    pid = job_pids(busy)[0]
    busy_uuid = default_gpu_uuid(gpu_index(busy, node))
    empty_uuid = default_gpu_uuid(gpu_index(empty, node))
    fake_nvml.add_process(busy_uuid, pid, 3 * GIB)
    fake_nvml.set(busy_uuid, util_gpu=70, mem_used_bytes=3 * GIB)

    attributor = SlurmAttributor(node, cache_ttl_s=0.5, timeout_s=3.0, refresh_s=0.5)
    async with (
        running_agent(
            collector,
            tmp_path / "spool",
            node=node,
            attributor=attributor,
            sample_interval_s=0.1,
            report_interval_s=0.3,
        ),
        QueryClient(f"127.0.0.1:{collector.port}") as client,
    ):

        async def gpus() -> dict[str, GpuWindow]:
            n = await node_state(client, node)
            return {} if n is None else {g.latest.uuid: g.latest for g in n.gpus}

        async def attributed() -> bool:
            g = await gpus()
            jobs = {uuid: w.job.job_id if w.job else "" for uuid, w in g.items()}
            return jobs.get(busy_uuid) == busy and jobs.get(empty_uuid) == empty

        for _ in range(150):
            if await attributed():
                break
            await asyncio.sleep(0.1)
        g = await gpus()
        # The busy job: attributed through its process, with the job's facts.
        assert g[busy_uuid].job.job_id == busy
        assert g[busy_uuid].job.user == "root"
        assert g[busy_uuid].job.name == "gw-t-pipe-busy"
        assert g[busy_uuid].job.batch and g[busy_uuid].job.requeue
        assert g[busy_uuid].allocated
        assert [p.pid for p in g[busy_uuid].processes] == [pid]
        assert g[busy_uuid].util_max == 70
        # Allocated, but nothing runs on it: the most wasted GPU.
        assert g[empty_uuid].job.job_id == empty and g[empty_uuid].allocated
        assert list(g[empty_uuid].processes) == []
        # GPUs nobody holds carry no job.
        for uuid, w in g.items():
            if uuid not in (busy_uuid, empty_uuid):
                assert w.job is None and not w.allocated, uuid
        n = await node_state(client, node)
        assert n is not None and n.slurm.available

        with controller_stopped():
            seq_down = collector.state.node(node).last_seq  # type: ignore[union-attr]

            async def slurm_down() -> bool:
                n = await node_state(client, node)
                return n is not None and not n.slurm.available

            for _ in range(150):
                if await slurm_down():
                    break
                await asyncio.sleep(0.1)
            n = await node_state(client, node)
            assert n is not None and not n.slurm.available and n.slurm.error
            await wait_for(
                lambda: collector.state.node(node).last_seq >= seq_down + 5,  # type: ignore[union-attr]
                timeout_s=20,
            )
            g = await gpus()
            assert g[busy_uuid].util_max == 70  # GPU data keeps flowing
            assert [p.pid for p in g[busy_uuid].processes] == [pid]
            assert g[busy_uuid].job.job_id == busy  # still known from /proc alone
        for _ in range(200):
            n = await node_state(client, node)
            if n is not None and n.slurm.available:
                break
            await asyncio.sleep(0.1)
        assert n is not None and n.slurm.available
        g = await gpus()
        assert g[busy_uuid].job.user == "root"


def test_job_cpu_use_is_measured_for_input_bound_advice(slurm_cluster: SlurmCluster) -> None:
    node = slurm_cluster.node
    burner = submit("python3 -c 'while True: pass'", "-J", "gw-t-cpu-burn", "--gres=gpu:1")
    sleeper = submit("sleep 600", "-J", "gw-t-cpu-sleep", "--gres=gpu:1")
    wait_state(burner, "RUNNING")
    wait_state(sleeper, "RUNNING")
    pids = job_pids(burner)
    attributor = SlurmAttributor(node, cache_ttl_s=0.5, timeout_s=5.0, refresh_s=0.5)
    gpus = [
        GpuSample(uuid=default_gpu_uuid(gpu_index(j, node)), index=gpu_index(j, node))
        for j in (burner, sleeper)
    ]
    attributor.attribute(gpus)
    ticks0, t0 = _cpu_ticks(pids), time.monotonic()
    time.sleep(2.0)
    result = attributor.attribute(gpus)
    ticks1, t1 = _cpu_ticks(pids), time.monotonic()
    # What the kernel says the busy loop got meanwhile (a loaded machine gives it less
    # than a whole core): the agent's figure must agree with it.
    truth = 100.0 * (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)
    burn, sleep = (result.gpus[g.uuid].job for g in gpus)
    assert burn is not None and sleep is not None
    assert burn.job_id == burner and sleep.job_id == sleeper
    print(
        f"job CPU: busy loop {burn.cpu_util_pct}% (kernel: {truth:.1f}%), "
        f"sleep {sleep.cpu_util_pct}%"
    )
    assert burn.cpu_util_pct is not None and abs(burn.cpu_util_pct - truth) < 15
    assert burn.cpu_util_pct > 10  # it did run (one CPU allocated)
    assert sleep.cpu_util_pct is not None and sleep.cpu_util_pct < 5


def _cpu_ticks(pids: list[int]) -> int:
    """utime + stime of these processes, from /proc (fields after the command name)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total
