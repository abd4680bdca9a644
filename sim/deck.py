"""Planning the cluster's jobs: the default mix is dealt like a deck of cards.

Nodes whose names end in the numbers 1..``cluster_nodes`` together hold every shape and every
kind of job at once, in the proportions of the job mix (see :mod:`gpuwarden.sim`).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gpuwarden.sim.model import (
    DASK_SHAPES,
    P_DASK,
    P_INTERACTIVE,
    P_REQUEUE,
    P_YOUNG,
    Shape,
)


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """One job of the deck: which GPUs, which shape on each, and its kind."""

    indices: tuple[int, ...]
    shapes: tuple[Shape, ...]
    interactive: bool = False
    dask_worker: int | None = None  # global worker number: scheduler and worker name
    requeue: bool = False
    young: bool = False

    @property
    def free(self) -> bool:
        return self.shapes[0] is Shape.FREE


def check_mix(job_mix: Mapping[Shape, float]) -> tuple[tuple[Shape, float], ...]:
    if not isinstance(job_mix, Mapping) or not job_mix:
        raise ValueError("job_mix must be a non-empty mapping of Shape -> weight")
    out: list[tuple[Shape, float]] = []
    for key, weight in job_mix.items():
        try:
            shape = Shape(key)
        except ValueError:
            known = ", ".join(s.value for s in Shape)
            raise ValueError(f"job_mix: unknown shape {key!r} (known: {known})") from None
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"job_mix[{shape.value}]: weight must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"job_mix[{shape.value}]: weight must be finite and >= 0")
        out.append((shape, float(weight)))
    if sum(w for _, w in out) <= 0:
        raise ValueError("job_mix: at least one weight must be > 0")
    order = list(Shape)
    return tuple(sorted(out, key=lambda sw: order.index(sw[0])))


def _gpu_counts(mix: tuple[tuple[Shape, float], ...], total: int) -> dict[Shape, int]:
    """Split ``total`` GPUs by weight (largest remainder); every weighted shape gets one."""
    wsum = sum(w for _, w in mix)
    exact = {s: w / wsum * total for s, w in mix if w > 0}
    counts = {s: math.floor(x) for s, x in exact.items()}
    by_remainder = sorted(exact, key=lambda s: counts[s] - exact[s])
    for s in by_remainder[: total - sum(counts.values())]:
        counts[s] += 1
    for s in exact:  # a shape with weight gets at least one GPU when there is room
        if counts[s] == 0:
            donor = max(counts, key=lambda d: counts[d])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[s] = 1
    return counts


@functools.lru_cache(maxsize=16)
def deal_deck(
    seed: int, round_key: str, cluster_nodes: int, gpus: int, mix: tuple[tuple[Shape, float], ...]
) -> tuple[tuple[SlotPlan, ...], ...]:
    """The jobs of ``cluster_nodes`` nodes, dealt so that together they hold the whole mix."""
    rng = random.Random(f"gpuwarden-sim|deck|{seed}|{round_key}|{cluster_nodes}|{gpus}|{mix}")
    counts = _gpu_counts(mix, cluster_nodes * gpus)
    multi: list[tuple[Shape, ...]] = []

    def take(shapes: tuple[Shape, ...]) -> None:
        need: dict[Shape, int] = {}
        for s in shapes:
            need[s] = need.get(s, 0) + 1
        if all(counts.get(s, 0) >= n for s, n in need.items()):
            for s, n in need.items():
                counts[s] -= n
            multi.append(shapes)

    for _ in range(max(1, cluster_nodes // 16)):
        if gpus >= 4:
            take((Shape.STEADY,) * 4)
        if gpus >= 2:
            take((Shape.STEADY, Shape.STEADY))
            take((Shape.STEADY, Shape.IDLE_MEM))  # asked for 2 GPUs, uses one
            take((Shape.INPUT_BOUND, Shape.INPUT_BOUND))
    singles = [s for s, n in counts.items() for _ in range(n)]
    rng.shuffle(singles)

    free_idx = [list(range(gpus)) for _ in range(cluster_nodes)]
    placed: list[list[tuple[tuple[int, ...], tuple[Shape, ...]]]] = [[] for _ in free_idx]
    for shapes in multi:
        order = rng.sample(range(cluster_nodes), cluster_nodes)
        target = next((p for p in order if len(free_idx[p]) >= len(shapes)), None)
        if target is None:  # no room for it as one job: its GPUs become single jobs
            singles.extend(shapes)
            continue
        idx = tuple(free_idx[target][: len(shapes)])
        del free_idx[target][: len(shapes)]
        placed[target].append((idx, shapes))
    for p in range(cluster_nodes):
        for i in free_idx[p]:
            shape = singles.pop() if singles else Shape.FREE
            placed[p].append(((i,), (shape,)))

    plans = [[SlotPlan(indices=idx, shapes=sh) for idx, sh in sorted(node)] for node in placed]
    flat = [(p, k) for p, node in enumerate(plans) for k, plan in enumerate(node) if not plan.free]
    for p, k in flat:
        plan = plans[p][k]
        single = len(plan.shapes) == 1
        primary = plan.shapes[0]
        interactive = single and rng.random() < P_INTERACTIVE.get(primary, 0.0)
        dask = not interactive and single and primary in DASK_SHAPES and rng.random() < P_DASK
        requeue = not interactive and rng.random() < P_REQUEUE
        young = rng.random() < P_YOUNG
        plans[p][k] = replace(
            plan,
            interactive=interactive,
            dask_worker=0 if dask else None,
            requeue=requeue,
            young=young,
        )

    def force(pred: Callable[[SlotPlan], bool], **changes: Any) -> None:
        for p, k in flat:
            if pred(plans[p][k]):
                plans[p][k] = replace(plans[p][k], **changes)
                return

    # Guarantees: every kind of job appears in a full deck (when the mix leaves room).
    if not any(plans[p][k].interactive for p, k in flat):
        force(
            lambda pl: len(pl.shapes) == 1 and pl.shapes[0] in P_INTERACTIVE,
            interactive=True,
            dask_worker=None,
            requeue=False,
        )
    if not any(plans[p][k].dask_worker is not None for p, k in flat):
        force(
            lambda pl: len(pl.shapes) == 1 and pl.shapes[0] in DASK_SHAPES and not pl.interactive,
            dask_worker=0,
        )
    if not any(
        not plans[p][k].interactive and plans[p][k].dask_worker is None and not plans[p][k].requeue
        for p, k in flat
    ):
        force(lambda pl: not pl.interactive and pl.dask_worker is None, requeue=False)
    if not any(plans[p][k].young for p, k in flat):
        force(lambda pl: True, young=True)

    workers = 0
    for p, k in flat:
        if plans[p][k].dask_worker is not None:
            plans[p][k] = replace(plans[p][k], dask_worker=workers)
            workers += 1
    order = rng.sample(range(cluster_nodes), cluster_nodes)
    return tuple(tuple(plans[q]) for q in order)
