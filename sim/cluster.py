"""A simulated cluster: node names that deal the default deck, and nodes sharing one start."""

from __future__ import annotations

import time
from collections.abc import Mapping

from gpuwarden.sim.model import DEFAULT_CHURN_PER_H, DEFAULT_CLUSTER_NODES, DEFAULT_MIX, Shape
from gpuwarden.sim.node import SimNode


def node_names(count: int, prefix: str = "gpu") -> list[str]:
    """``gpu01`` .. ``gpuNN``: names whose numbers deal the default deck (see module doc)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count: must be an integer >= 1, got {count!r}")
    width = max(2, len(str(count)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]


def sim_cluster(
    nodes: int = DEFAULT_CLUSTER_NODES,
    gpus: int = 4,
    seed: int = 0,
    start: float | None = None,
    churn: float = DEFAULT_CHURN_PER_H,
    job_mix: Mapping[Shape, float] = DEFAULT_MIX,
    prefix: str = "gpu",
) -> list[SimNode]:
    """``nodes`` simulated nodes sharing one start time (the demo's cluster)."""
    start_s = time.time() if start is None else start
    return [
        SimNode(
            name,
            gpus=gpus,
            seed=seed,
            start=start_s,
            job_mix=job_mix,
            churn=churn,
            cluster_nodes=min(nodes, DEFAULT_CLUSTER_NODES),
        )
        for name in node_names(nodes, prefix)
    ]
