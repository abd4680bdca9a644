"""The simulated node: determinism, the signature of each shape, and the default cluster mix."""

from __future__ import annotations

import math
import re
import uuid

import pytest

from gpuwarden.agent.sampler import SamplerError
from gpuwarden.common.types import GpuSample
from gpuwarden.sim import (
    DEFAULT_MIX,
    GiB,
    Shape,
    SimAttributor,
    SimJob,
    SimNode,
    SimSampler,
    node_names,
    sim_cluster,
)

T0 = 1_700_000_000.0
HOUR = 3600.0
STEP_S = 3.0


@pytest.fixture(scope="module")
def cluster() -> list[SimNode]:
    return sim_cluster(nodes=16, gpus=4, seed=0, start=T0, churn=0.0)


def gpus_of(cluster: list[SimNode], shape: Shape) -> list[tuple[SimNode, int, SimJob | None]]:
    found = [
        (node, i, node.job_at(i, T0))
        for node in cluster
        for i in range(node.gpus)
        if node.shape_at(i, T0) is shape
    ]
    assert found, f"the default cluster has no {shape} GPU"
    return found


def first_hour(node: SimNode, index: int, job: SimJob) -> list[GpuSample]:
    """GPU ``index`` sampled every few seconds over the job's first simulated hour."""
    n = int(HOUR / STEP_S)
    return [node.sample_gpu(index, job.start_s + k * STEP_S) for k in range(n)]


def utils(samples: list[GpuSample]) -> list[float]:
    out = [s.util_gpu_pct for s in samples]
    assert all(u is not None for u in out)
    return [u for u in out if u is not None]


def longest_zero_run_s(values: list[float]) -> float:
    best = run = 0
    for v in values:
        run = run + 1 if v == 0 else 0
        best = max(best, run)
    return best * STEP_S


# -- determinism ----------------------------------------------------------------------------


def test_same_seed_node_and_start_give_identical_samples() -> None:
    a = SimNode("gpu03", seed=7, start=T0)
    b = SimNode("gpu03", seed=7, start=T0)
    times = [T0 + k for k in range(0, 600, 7)]
    assert [a.sample(t) for t in times] == [b.sample(t) for t in times]
    assert a.describe(T0) == b.describe(T0)


def test_other_seed_or_node_gives_other_gpus() -> None:
    base = SimNode("gpu03", seed=7, start=T0)
    assert SimNode("gpu03", seed=8, start=T0).uuids != base.uuids
    assert SimNode("gpu04", seed=7, start=T0).uuids != base.uuids


def test_values_depend_on_time_not_on_the_order_of_queries() -> None:
    times = [T0 + 5 * HOUR, T0 + 10.0, T0 - 30.0, T0 + 20 * HOUR, T0 + 2 * HOUR]
    forward = SimNode("gpu05", seed=1, start=T0, churn=2.0)
    backward = SimNode("gpu05", seed=1, start=T0, churn=2.0)
    got_forward = {t: forward.sample(t) for t in sorted(times)}
    got_backward = {t: backward.sample(t) for t in sorted(times, reverse=True)}
    assert got_forward == got_backward


# -- the Sampler and Attributor interfaces ---------------------------------------------------


def test_sampler_reads_every_gpu_with_nvml_like_identity_and_units() -> None:
    node = SimNode("gpu01", gpus=4, start=T0)
    sampler = SimSampler(node)
    sampler.open()
    samples = sampler.sample(T0 + 100)
    sampler.close()
    sampler.close()  # closing twice is allowed
    assert [s.index for s in samples] == [0, 1, 2, 3]
    assert len({s.uuid for s in samples}) == 4
    for s in samples:
        assert re.fullmatch(
            r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", s.uuid
        )
        assert uuid.UUID(s.uuid[4:]).version == 4
        assert s.name in ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3")
        assert s.mem_total_bytes == 80 * GiB
        assert s.util_gpu_pct is not None and 0 <= s.util_gpu_pct <= 100
        assert s.mem_used_bytes is not None and 0 <= s.mem_used_bytes <= 80 * GiB
        assert s.power_w is not None and 40 <= s.power_w <= 700
        assert s.temperature_c is not None and 20 <= s.temperature_c <= 90
        assert s.errors == ()


def test_sampler_refuses_to_sample_when_not_open() -> None:
    sampler = SimSampler(SimNode("gpu01", start=T0))
    with pytest.raises(SamplerError, match="before open"):
        sampler.sample(T0)
    sampler.open()
    sampler.close()
    with pytest.raises(SamplerError):
        sampler.sample(T0)


def test_attributor_reports_the_job_of_every_allocated_gpu_at_the_sampled_time(
    cluster: list[SimNode],
) -> None:
    for node in cluster:
        sampler, attributor = SimSampler(node), SimAttributor(node)
        sampler.open()
        samples = sampler.sample(T0 + 60)
        result = attributor.attribute(samples)
        assert result.slurm.available
        assert set(result.gpus) == set(node.uuids)
        for s in samples:
            got = result.gpus[s.uuid]
            job = node.job_at(s.index, T0 + 60)
            if job is None:
                assert got.job is None and not got.allocated
            else:
                assert got.allocated and got.job is not None
                assert got.job.job_id == job.info.job_id
                assert got.job.source == "sim"
                assert got.job.cpu_util_pct is not None and 0 <= got.job.cpu_util_pct <= 100


def test_attributor_ignores_gpus_of_other_nodes() -> None:
    node, other = SimNode("gpu01", start=T0), SimNode("gpu02", start=T0)
    samples = other.sample(T0)
    assert SimAttributor(node).attribute(samples).gpus == {}


# -- each shape has the signature it claims ---------------------------------------------------


def test_steady_training_is_busy_with_high_memory_and_power(cluster: list[SimNode]) -> None:
    for node, i, job in gpus_of(cluster, Shape.STEADY):
        assert job is not None
        samples = first_hour(node, i, job)
        assert sum(utils(samples)) / len(samples) > 85
        warmed = samples[100:]
        assert min(s.mem_used_bytes or 0 for s in warmed) >= 60e9
        assert max(s.mem_used_bytes or 0 for s in warmed) <= 75e9
        mean_power = sum(s.power_w or 0 for s in warmed) / len(warmed)
        assert mean_power > 250
        assert all(s.processes for s in samples)


def test_idle_with_memory_held_never_computes_but_keeps_memory(cluster: list[SimNode]) -> None:
    for node, i, job in gpus_of(cluster, Shape.IDLE_MEM):
        assert job is not None
        samples = first_hour(node, i, job)
        assert max(utils(samples)) < 5
        mem = [s.mem_used_bytes or 0 for s in samples]
        assert min(mem) >= 10e9 and max(mem) <= 40e9
        assert all(len(s.processes) == 1 for s in samples)


def test_idle_empty_gpu_is_allocated_but_has_no_process_and_no_memory(
    cluster: list[SimNode],
) -> None:
    for node, i, job in gpus_of(cluster, Shape.IDLE_EMPTY):
        assert job is not None
        samples = first_hour(node, i, job)
        assert max(utils(samples)) == 0
        assert all(s.processes == () and s.mem_used_bytes == 0 for s in samples)
        node.sample(T0)
        got = SimAttributor(node).attribute(node.sample(T0)).gpus[node.uuids[i]]
        assert got.allocated and got.job is not None and got.job.job_id == job.info.job_id


def test_briefly_used_gpu_is_busy_in_its_first_minutes_then_idle(cluster: list[SimNode]) -> None:
    for node, i, job in gpus_of(cluster, Shape.BRIEF_THEN_IDLE):
        assert job is not None
        u = utils(first_hour(node, i, job))
        first_5_min = u[: int(300 / STEP_S)]
        last_30_min = u[int(1800 / STEP_S) :]
        assert sum(first_5_min) / len(first_5_min) > 80
        assert max(last_30_min) == 0
        later = node.sample_gpu(i, job.start_s + 3000)
        assert later.processes and (later.mem_used_bytes or 0) > 0  # memory still held


def test_input_bound_job_runs_its_gpu_at_a_third_with_the_cpu_saturated(
    cluster: list[SimNode],
) -> None:
    for node, i, job in gpus_of(cluster, Shape.INPUT_BOUND):
        assert job is not None
        u = utils(first_hour(node, i, job))
        assert 20 <= sum(u) / len(u) <= 40
        assert max(u) > min(u) + 30  # a sawtooth, not a flat line
        for k in range(5):
            now = job.start_s + 600 + 97 * k
            got = SimAttributor(node).attribute(node.sample(now)).gpus[node.uuids[i]]
            assert got.job is not None and got.job.cpu_util_pct is not None
            assert got.job.cpu_util_pct >= 95


def test_bursty_notebook_has_short_bursts_and_long_zero_stretches(cluster: list[SimNode]) -> None:
    for node, i, job in gpus_of(cluster, Shape.BURSTY):
        assert job is not None
        samples = first_hour(node, i, job)
        u = utils(samples)
        assert max(u) > 60
        assert u.count(0.0) > len(u) / 2
        assert longest_zero_run_s(u) >= 5 * 60
        assert all((s.mem_used_bytes or 0) > 0 for s in samples)  # memory held between bursts


def test_free_gpu_has_no_job_and_no_load(cluster: list[SimNode]) -> None:
    for node, i, job in gpus_of(cluster, Shape.FREE):
        assert job is None
        s = node.sample_gpu(i, T0 + 10)
        assert s.util_gpu_pct == 0 and s.mem_used_bytes == 0 and s.processes == ()
        got = node.attribution_at(T0 + 10).gpus[node.uuids[i]]
        assert not got.allocated and got.job is None


def test_power_rises_with_utilisation(cluster: list[SimNode]) -> None:
    node, i, job = gpus_of(cluster, Shape.STEADY)[0]
    assert job is not None
    busy = node.sample_gpu(i, job.start_s + 600)
    free_node, free_i, _ = gpus_of(cluster, Shape.FREE)[0]
    idle = free_node.sample_gpu(free_i, T0)
    assert busy.power_w is not None and idle.power_w is not None
    assert busy.power_w > 3 * idle.power_w


# -- the default 16 x 4 cluster ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
def test_default_cluster_holds_every_shape_and_kind_of_job(seed: int) -> None:
    nodes = sim_cluster(nodes=16, gpus=4, seed=seed, start=T0, churn=0.0)
    shapes = [n.shape_at(i, T0) for n in nodes for i in range(4)]
    assert set(shapes) == set(Shape)
    assert shapes.count(Shape.STEADY) >= 20  # ~40 % of 64
    assert 2 <= shapes.count(Shape.FREE) <= 8
    jobs = [job for n in nodes for job in n.jobs_at(T0)]
    infos = [j.info for j in jobs]
    dask = [x for x in infos if x.is_dask_worker]
    assert dask and any(x.dask_scheduler == "tcp://10.0.0.5:8786" for x in dask)
    assert all(re.fullmatch(r"SLURMCluster-\d+", x.dask_worker) for x in dask)
    assert any(not x.batch for x in infos)  # interactive
    assert any(x.batch and not x.requeue and not x.is_dask_worker for x in infos)  # --no-requeue
    assert any(x.batch and x.requeue for x in infos)
    sizes = {len(j.gpus) for j in jobs}
    assert {1, 2, 4} <= sizes
    assert any(  # a 2-GPU job using only one of its GPUs
        len(j.gpus) == 2 and {g.shape for g in j.gpus} == {Shape.STEADY, Shape.IDLE_MEM}
        for j in jobs
    )
    assert any(T0 - j.start_s < 600 for j in jobs)  # inside the default grace period
    assert all(j.start_s < T0 and j.info.start_time <= T0 for j in jobs)
    ids = [x.job_id for x in infos]
    assert len(ids) == len(set(ids))  # unique across nodes
    assert all(x.source == "sim" and x.user and x.account and x.partition for x in infos)


def test_a_multi_gpu_job_is_one_job_on_all_its_gpus(cluster: list[SimNode]) -> None:
    jobs = [j for n in cluster for j in n.jobs_at(T0) if len(j.gpus) > 1]
    assert jobs
    for node in cluster:
        att = node.attribution_at(T0)
        for job in node.jobs_at(T0):
            ids = {att.gpus[node.uuids[i]].job.job_id for i in job.gpu_indices}  # type: ignore[union-attr]
            assert ids == {job.info.job_id}
            pids = [g.pid for g in job.gpus if g.pid is not None]
            assert len(pids) == len(set(pids))  # one process per rank


def test_describe_names_the_shape_of_every_gpu(cluster: list[SimNode]) -> None:
    node = cluster[0]
    lines = node.describe(T0)
    assert len(lines) == node.gpus
    for i, line in enumerate(lines):
        assert line.startswith(f"{node.node}/{i} {node.shape_at(i, T0).value}")


# -- churn, custom mixes, bad input ------------------------------------------------------------


def test_without_churn_the_same_jobs_run_all_day() -> None:
    node = SimNode("gpu07", start=T0, churn=0.0)
    before = [j.info.job_id for j in node.jobs_at(T0)]
    assert [j.info.job_id for j in node.jobs_at(T0 + 24 * HOUR)] == before


def test_with_churn_jobs_end_and_new_jobs_with_fresh_ids_start() -> None:
    nodes = sim_cluster(nodes=4, seed=0, start=T0, churn=1.0)
    seen: dict[str, tuple[str, float]] = {}
    for node in nodes:
        for k in range(24 * 12):  # every 5 minutes for a day
            now = T0 + k * 300
            for job in node.jobs_at(now):
                seen.setdefault(job.info.job_id, (node.node, job.start_s))
    at_start = {j.info.job_id for n in nodes for j in n.jobs_at(T0)}
    later = set(seen) - at_start
    assert len(later) > 10
    assert all(seen[j][1] > T0 for j in later)  # new jobs start after the simulation start
    assert all(n.jobs_at(T0 + 24 * HOUR) for n in nodes)


def test_custom_mix_with_one_shape_puts_it_on_every_gpu() -> None:
    node = SimNode("gpu02", gpus=8, start=T0, job_mix={Shape.IDLE_MEM: 1.0}, churn=0.0)
    assert {node.shape_at(i, T0) for i in range(8)} == {Shape.IDLE_MEM}


def test_memory_scales_with_a_smaller_card() -> None:
    node = SimNode("gpu01", start=T0, mem_total_bytes=40 * GiB, job_mix={Shape.STEADY: 1.0})
    s = node.sample_gpu(0, T0 + 600)
    assert s.mem_total_bytes == 40 * GiB
    assert s.mem_used_bytes is not None and 0.6 * 40 * GiB < s.mem_used_bytes <= 40 * GiB


def test_default_mix_weights_sum_to_one() -> None:
    assert math.isclose(sum(DEFAULT_MIX.values()), 1.0)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"gpus": 0}, "gpus"),
        ({"gpus": 65}, "gpus"),
        ({"churn": -1.0}, "churn"),
        ({"churn": math.nan}, "churn"),
        ({"mem_total_bytes": 0}, "mem_total_bytes"),
        ({"job_mix": {}}, "job_mix"),
        ({"job_mix": {"gaming": 1.0}}, "unknown shape 'gaming'"),
        ({"job_mix": {Shape.STEADY: 0.0}}, "at least one weight"),
        ({"job_mix": {Shape.STEADY: -1.0}}, r"job_mix\[steady\]"),
        ({"start": math.inf}, "start"),
        ({"node": ""}, "node"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(
    kwargs: dict[str, object], names: str
) -> None:
    args: dict[str, object] = {"node": "gpu01", "start": T0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=names):
        SimNode(**args)  # type: ignore[arg-type]


def test_node_names_are_numbered_from_one_with_padding() -> None:
    assert node_names(3) == ["gpu01", "gpu02", "gpu03"]
    assert node_names(100)[-1] == "gpu100"
    with pytest.raises(ValueError, match="count"):
        node_names(0)
