"""The workload simulator: seeded GPU nodes with NVML-like samples and Slurm attribution.

Used by ``gpuwarden demo`` (16 nodes x 4 GPUs, each node its own agent), by tests and by
benchmarks. Everything is a pure function of ``(seed, node name, start, time)``: two
:class:`SimNode` built with the same arguments return the same samples at the same times,
whatever order the times are asked in, so separate agent processes of one demo agree.

Each GPU runs one *shape* of work (:class:`Shape`): steady training, a bursty notebook, an
input-bound job (GPU ~30 %, CPU saturated), idle with memory held, idle with no process at
all, used briefly then idle, or free (no job). Jobs can span 2 or 4 GPUs of a node; some
are Dask workers, some interactive, some not requeue-able. With ``churn > 0`` jobs end and
new ones start, so a long demo evolves.

The default mix of a cluster is dealt like a deck of cards: nodes whose names end in the
numbers 1..``cluster_nodes`` (``gpu01`` .. ``gpu16``) together hold every shape and every
kind of job at once, in the proportions of ``job_mix``. Other node names get a seeded
random share of the same kind of deck.

Sampling costs a few microseconds per GPU: noise comes from an integer hash of the second,
not from a random generator.

Modules: :mod:`~gpuwarden.sim.model` (shapes, constants, jobs), :mod:`~gpuwarden.sim.deck`
(planning the cluster's jobs), :mod:`~gpuwarden.sim.load` (what a shape puts on a GPU at a
given second), :mod:`~gpuwarden.sim.node` (one node's timeline, readings and attribution),
:mod:`~gpuwarden.sim.adapters` (the agent's sampler and attributor), and
:mod:`~gpuwarden.sim.cluster` (a whole simulated cluster).
"""

from gpuwarden.sim.adapters import SimAttributor, SimSampler
from gpuwarden.sim.cluster import node_names, sim_cluster
from gpuwarden.sim.model import (
    A100,
    DEFAULT_CHURN_PER_H,
    DEFAULT_CLUSTER_NODES,
    DEFAULT_MIX,
    H100,
    MAX_GPUS,
    GiB,
    GpuModel,
    MiB,
    Shape,
    SimGpuLoad,
    SimJob,
)
from gpuwarden.sim.node import SimNode

__all__ = [
    "A100",
    "DEFAULT_CHURN_PER_H",
    "DEFAULT_CLUSTER_NODES",
    "DEFAULT_MIX",
    "H100",
    "MAX_GPUS",
    "GiB",
    "GpuModel",
    "MiB",
    "Shape",
    "SimAttributor",
    "SimGpuLoad",
    "SimJob",
    "SimNode",
    "SimSampler",
    "node_names",
    "sim_cluster",
]
