"""A seeded simulated GPU node: NVML-like samples and Slurm attribution without a GPU.

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
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from gpuwarden.agent.attribution import Attribution, GpuAttribution
from gpuwarden.agent.sampler import SamplerError
from gpuwarden.common.types import GpuSample, JobInfo, ProcessInfo, SlurmStatus

GiB = 1024**3
MiB = 1024**2


class Shape(StrEnum):
    """What the work on one GPU looks like over time."""

    STEADY = "steady"  # training, ~95 %, memory and power high
    BURSTY = "bursty"  # notebook: short bursts of 60-100 %, long idle gaps, memory held
    INPUT_BOUND = "input_bound"  # ~30 % sawtooth, job CPU saturated
    IDLE_MEM = "idle_mem"  # 0 %, a process holds 10-40 GB
    IDLE_EMPTY = "idle_empty"  # allocated, no process, no memory
    BRIEF_THEN_IDLE = "brief_then_idle"  # busy for the first minutes, then 0 % (memory held)
    FREE = "free"  # not allocated to any job


DEFAULT_MIX: Mapping[Shape, float] = MappingProxyType(
    {
        Shape.STEADY: 0.38,
        Shape.BURSTY: 0.15,
        Shape.INPUT_BOUND: 0.10,
        Shape.IDLE_MEM: 0.10,
        Shape.IDLE_EMPTY: 0.10,
        Shape.BRIEF_THEN_IDLE: 0.10,
        Shape.FREE: 0.07,
    }
)
DEFAULT_CHURN_PER_H = 0.2  # job ends per job slot per hour: a job lives ~5 h on average
DEFAULT_CLUSTER_NODES = 16
MAX_GPUS = 64

DASK_SCHEDULERS: tuple[tuple[str, str], ...] = (
    ("tcp://10.0.0.5:8786", "alice"),
    ("tcp://10.0.0.7:8786", "chen"),
)
USERS = ("alice", "bob", "chen", "dana", "eve", "farid", "grace", "hiro")
ACCOUNTS = {
    "alice": "proj-vision",
    "bob": "proj-nlp",
    "chen": "proj-bio",
    "dana": "proj-nlp",
    "eve": "proj-climate",
    "farid": "proj-vision",
    "grace": "proj-bio",
    "hiro": "proj-climate",
}
_JOB_NAMES: Mapping[Shape, tuple[str, ...]] = {
    Shape.STEADY: ("train-resnet50", "llm-finetune", "train_vit", "diffusion-train"),
    Shape.BURSTY: ("jupyter", "notebook", "explore-data"),
    Shape.INPUT_BOUND: ("train-dataloader", "augment-train", "video-train"),
    Shape.IDLE_MEM: ("jupyter", "debug-model", "inference-server"),
    Shape.IDLE_EMPTY: ("bash", "sleep", "interactive"),
    Shape.BRIEF_THEN_IDLE: ("eval-checkpoint", "hparam-trial", "jupyter"),
}
# Chance that a single-GPU job of this shape is interactive (srun --pty / OnDemand session).
_P_INTERACTIVE: Mapping[Shape, float] = {
    Shape.BURSTY: 0.6,
    Shape.IDLE_MEM: 0.4,
    Shape.IDLE_EMPTY: 0.3,
    Shape.BRIEF_THEN_IDLE: 0.3,
}
_DASK_SHAPES = frozenset({Shape.BURSTY, Shape.IDLE_MEM, Shape.STEADY, Shape.BRIEF_THEN_IDLE})
_P_DASK = 0.25
_P_REQUEUE = 0.6
_P_YOUNG = 0.12  # a job started inside the default 10-minute grace period
# Memory the job holds on a GPU, as fractions of the card (of 80 GiB: 60-75 GB for steady).
_MEM_FRAC: Mapping[Shape, tuple[float, float]] = {
    Shape.STEADY: (0.70, 0.87),
    Shape.BURSTY: (0.05, 0.35),
    Shape.INPUT_BOUND: (0.25, 0.50),
    Shape.IDLE_MEM: (0.12, 0.46),
    Shape.IDLE_EMPTY: (0.0, 0.0),
    Shape.BRIEF_THEN_IDLE: (0.20, 0.60),
}

_WARMUP_S = 60.0  # steady: data loading before the first step
_CHECKPOINT_PERIOD_S = 1800.0  # steady: a checkpoint every 30 min ...
_CHECKPOINT_S = 30.0  # ... that drops the GPU to ~40 % for 30 s
_BURST_CYCLE_S = 900.0  # bursty: at most one burst per 15-minute cycle ...
_BURST_P = 0.75  # ... with this chance, starting in the cycle's first third
_BURST_MIN_S = 30.0
_BURST_MAX_S = 180.0
_GAP_MEAN_S = 300.0  # churn: free time between one job and the next in a slot
_MIN_JOB_S = 600.0  # churn: a new job runs at least this long
_MAX_AHEAD_S = 366 * 86400.0  # refuse times absurdly far past the last simulated job

_MASK = (1 << 64) - 1
_SALT_MEM = 0x5851F42D4C957F2D
_SALT_POWER = 0x14057B7EF767814F
_SALT_TEMP = 0x2545F4914F6CDD1D
_SALT_CPU = 0x61C8864680B583EB


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _unit(key: int, n: int) -> float:
    """A uniform number in [0, 1) fixed by ``key`` and the integer ``n``."""
    return _mix64(key ^ ((n * 0xD1B54A32D192ED03) & _MASK)) / 18446744073709551616.0


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str
    idle_w: float
    max_w: float


A100 = GpuModel("NVIDIA A100-SXM4-80GB", idle_w=60.0, max_w=400.0)
H100 = GpuModel("NVIDIA H100 80GB HBM3", idle_w=70.0, max_w=700.0)


@dataclass(frozen=True, slots=True)
class SimGpuLoad:
    """The work one job puts on one of its GPUs."""

    index: int
    shape: Shape
    key: int  # noise key of this GPU in this job
    mem_bytes: int  # memory held once warmed up (0 when there is no process)
    pid: int | None  # None: no process on the GPU
    period_s: float  # input-bound sawtooth period


@dataclass(frozen=True, slots=True)
class SimJob:
    """A simulated Slurm job on this node; ``end_s`` is ``math.inf`` when it never ends."""

    info: JobInfo
    start_s: float
    end_s: float
    gpus: tuple[SimGpuLoad, ...]
    busy_s: float  # brief-then-idle: seconds busy after the start
    cpu_base_pct: float

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.gpus)

    def load(self, index: int) -> SimGpuLoad:
        for g in self.gpus:
            if g.index == index:
                return g
        raise KeyError(f"job {self.info.job_id} holds no GPU {index}")


@dataclass(frozen=True, slots=True)
class _SlotPlan:
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


@dataclass(frozen=True, slots=True)
class _Period:
    start_s: float
    end_s: float
    job: SimJob | None


def _check_mix(job_mix: Mapping[Shape, float]) -> tuple[tuple[Shape, float], ...]:
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
def _deck(
    seed: int, round_key: str, cluster_nodes: int, gpus: int, mix: tuple[tuple[Shape, float], ...]
) -> tuple[tuple[_SlotPlan, ...], ...]:
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

    plans = [[_SlotPlan(indices=idx, shapes=sh) for idx, sh in sorted(node)] for node in placed]
    flat = [(p, k) for p, node in enumerate(plans) for k, plan in enumerate(node) if not plan.free]
    for p, k in flat:
        plan = plans[p][k]
        single = len(plan.shapes) == 1
        primary = plan.shapes[0]
        interactive = single and rng.random() < _P_INTERACTIVE.get(primary, 0.0)
        dask = not interactive and single and primary in _DASK_SHAPES and rng.random() < _P_DASK
        requeue = not interactive and rng.random() < _P_REQUEUE
        young = rng.random() < _P_YOUNG
        plans[p][k] = replace(
            plan,
            interactive=interactive,
            dask_worker=0 if dask else None,
            requeue=requeue,
            young=young,
        )

    def force(pred: Callable[[_SlotPlan], bool], **changes: Any) -> None:
        for p, k in flat:
            if pred(plans[p][k]):
                plans[p][k] = replace(plans[p][k], **changes)
                return

    # Guarantees: every kind of job appears in a full deck (when the mix leaves room).
    if not any(plans[p][k].interactive for p, k in flat):
        force(
            lambda pl: len(pl.shapes) == 1 and pl.shapes[0] in _P_INTERACTIVE,
            interactive=True,
            dask_worker=None,
            requeue=False,
        )
    if not any(plans[p][k].dask_worker is not None for p, k in flat):
        force(
            lambda pl: len(pl.shapes) == 1 and pl.shapes[0] in _DASK_SHAPES and not pl.interactive,
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


class _Slot:
    """The timeline of the jobs on one fixed group of GPUs of a node."""

    __slots__ = ("ends", "gen", "indices", "last", "periods")

    def __init__(self, indices: tuple[int, ...], first: list[_Period]) -> None:
        self.indices = indices
        self.periods = first
        self.ends = [p.end_s for p in first]
        self.gen = 0
        self.last = 0


class SimNode:
    """One simulated GPU node with its jobs; see the module docstring.

    ``start`` (Unix seconds) is the moment the simulation begins: jobs running then started
    before it. It defaults to the current time; pass the same value to every node of a demo
    (and in tests) for reproducible runs. ``churn`` is the number of job ends per job slot
    per hour (0: the jobs of ``start`` run for ever). ``cluster_nodes`` is the size of the
    deck the default mix is dealt over (see the module docstring).
    """

    def __init__(
        self,
        node: str,
        gpus: int = 4,
        seed: int = 0,
        start: float | None = None,
        job_mix: Mapping[Shape, float] = DEFAULT_MIX,
        mem_total_bytes: int = 80 * GiB,
        churn: float = DEFAULT_CHURN_PER_H,
        cluster_nodes: int = DEFAULT_CLUSTER_NODES,
    ) -> None:
        if not isinstance(node, str) or not node or len(node) > 255 or not node.isprintable():
            raise ValueError(f"node: must be a printable name of 1-255 characters, got {node!r}")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS:
            raise ValueError(f"gpus: must be an integer from 1 to {MAX_GPUS}, got {gpus!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an integer, got {seed!r}")
        if start is not None and not math.isfinite(start):
            raise ValueError(f"start: must be a finite Unix time, got {start!r}")
        if (
            isinstance(mem_total_bytes, bool)
            or not isinstance(mem_total_bytes, int)
            or mem_total_bytes < GiB
        ):
            raise ValueError(
                f"mem_total_bytes: must be an integer >= 1 GiB, got {mem_total_bytes!r}"
            )
        if not isinstance(churn, int | float) or not math.isfinite(churn) or churn < 0:
            raise ValueError(
                f"churn: must be a finite number of job ends per hour >= 0, got {churn!r}"
            )
        if (
            isinstance(cluster_nodes, bool)
            or not isinstance(cluster_nodes, int)
            or cluster_nodes < 1
        ):
            raise ValueError(f"cluster_nodes: must be an integer >= 1, got {cluster_nodes!r}")
        self.node = node
        self.gpus = gpus
        self.seed = seed
        self.start_s = float(time.time() if start is None else start)
        self.mem_total_bytes = mem_total_bytes
        self.churn_per_h = float(churn)
        self._mix = _check_mix(job_mix)
        self._last_now: float | None = None
        self._lock = threading.Lock()

        ident = random.Random(f"gpuwarden-sim|{seed}|{node}|identity")
        self.model = H100 if ident.random() < 0.25 else A100
        self.uuids: tuple[str, ...] = tuple(
            f"GPU-{uuid.UUID(int=ident.getrandbits(128), version=4)}" for _ in range(gpus)
        )
        self._idle_w = tuple(self.model.idle_w + ident.uniform(-5.0, 5.0) for _ in range(gpus))
        self._temp_base_c = tuple(ident.uniform(28.0, 34.0) for _ in range(gpus))
        self._index_of = {u: i for i, u in enumerate(self.uuids)}

        m = re.search(r"(\d+)$", node)
        if m:
            number = int(m.group(1))
            position = (number - 1) % cluster_nodes
            round_key = str((number - 1) // cluster_nodes)
            self._id_block = (number + 101 * seed) % 5000
        else:
            h = _hash64(f"{seed}|{node}")
            position = h % cluster_nodes
            round_key = f"h{h}"
            self._id_block = h % 5000
        plans = _deck(seed, round_key, cluster_nodes, gpus, self._mix)[position]

        self._slots: list[_Slot] = []
        self._slot_of: dict[int, _Slot] = {}
        for k, plan in enumerate(plans):
            slot = _Slot(plan.indices, self._first_periods(k, plan))
            self._slots.append(slot)
            for i in plan.indices:
                self._slot_of[i] = slot

    # -- building jobs ------------------------------------------------------------------

    def _rng(self, slot: int, gen: int) -> random.Random:
        return random.Random(f"gpuwarden-sim|{self.seed}|{self.node}|{slot}|{gen}")

    def _lifetime_s(self, rng: random.Random) -> float:
        if self.churn_per_h <= 0:
            return math.inf
        return rng.expovariate(self.churn_per_h / 3600.0)

    def _first_periods(self, k: int, plan: _SlotPlan) -> list[_Period]:
        rng = self._rng(k, 0)
        if plan.free:
            return [_Period(-math.inf, self.start_s + self._lifetime_s(rng), None)]
        if plan.young:
            age = rng.uniform(30.0, 480.0)
        else:  # log-uniform between 15 minutes and 16 hours
            age = math.exp(rng.uniform(math.log(900.0), math.log(57600.0)))
        start = self.start_s - age
        end = self.start_s + self._lifetime_s(rng)  # memoryless: time left from now
        job = self._make_job(k, 0, plan, start, end, rng)
        return [_Period(-math.inf, start, None), _Period(start, end, job)]

    def _next_plan(self, indices: tuple[int, ...], rng: random.Random) -> _SlotPlan:
        shapes, weights = zip(*self._mix, strict=True)
        primary = rng.choices(shapes, weights)[0]
        if primary is Shape.FREE:
            return _SlotPlan(indices, (Shape.FREE,) * len(indices))
        per_gpu = [primary] * len(indices)
        if len(indices) > 1 and primary is Shape.STEADY and rng.random() < 0.25:
            per_gpu[-1] = Shape.IDLE_MEM
        single = len(indices) == 1
        interactive = single and rng.random() < _P_INTERACTIVE.get(primary, 0.0)
        dask = not interactive and single and primary in _DASK_SHAPES and rng.random() < _P_DASK
        return _SlotPlan(
            indices,
            tuple(per_gpu),
            interactive=interactive,
            dask_worker=rng.randrange(100) if dask else None,
            requeue=not interactive and rng.random() < _P_REQUEUE,
        )

    def _extend(self, k: int, slot: _Slot) -> None:
        slot.gen += 1
        rng = self._rng(k, slot.gen)
        t0 = slot.ends[-1]
        plan = self._next_plan(slot.indices, rng)
        if plan.free:
            new = [_Period(t0, t0 + max(_MIN_JOB_S, self._lifetime_s(rng)), None)]
        else:
            gap = min(3600.0, max(20.0, rng.expovariate(1.0 / _GAP_MEAN_S)))
            start = t0 + gap
            end = start + max(_MIN_JOB_S, self._lifetime_s(rng))
            job = self._make_job(k, slot.gen, plan, start, end, rng)
            new = [_Period(t0, start, None), _Period(start, end, job)]
        slot.periods.extend(new)
        slot.ends.extend(p.end_s for p in new)

    def _make_job(
        self, k: int, gen: int, plan: _SlotPlan, start: float, end: float, rng: random.Random
    ) -> SimJob:
        primary = plan.shapes[0]
        job_id = 1_000_000 + self._id_block * 10_000 + (gen * self.gpus + k) % 10_000
        if plan.dask_worker is not None:
            scheduler, user = DASK_SCHEDULERS[plan.dask_worker % len(DASK_SCHEDULERS)]
            worker = f"SLURMCluster-{plan.dask_worker // len(DASK_SCHEDULERS)}"
            name = "dask-worker"
        else:
            scheduler, worker = "", ""
            user = rng.choice(USERS)
            name = "train-ddp" if len(set(plan.shapes)) > 1 else rng.choice(_JOB_NAMES[primary])
        if plan.interactive:
            partition, qos = "interactive", "interactive"
        else:
            partition = "gpu-long" if rng.random() < 0.2 else "gpu"
            qos = "high" if rng.random() < 0.15 else "normal"
        info = JobInfo(
            job_id=str(job_id),
            step="0" if plan.interactive else "batch",
            user=user,
            account=ACCOUNTS[user],
            partition=partition,
            name=name,
            qos=qos,
            batch=not plan.interactive,
            requeue=plan.requeue and not plan.interactive,
            start_time=math.floor(start),
            dask_scheduler=scheduler,
            dask_worker=worker,
            source="sim",
        )
        base_pid = rng.randrange(1000, 400_000)
        loads = []
        for r, (i, shape) in enumerate(zip(plan.indices, plan.shapes, strict=True)):
            lo, hi = _MEM_FRAC[shape]
            mem = int(rng.uniform(lo, hi) * self.mem_total_bytes) // MiB * MiB
            has_process = shape is not Shape.IDLE_EMPTY
            loads.append(
                SimGpuLoad(
                    index=i,
                    shape=shape,
                    key=_hash64(f"{self.seed}|{self.node}|{k}|{gen}|{i}"),
                    mem_bytes=mem if has_process else 0,
                    pid=base_pid + r if has_process else None,
                    period_s=rng.uniform(8.0, 20.0),
                )
            )
        cpu_base = rng.uniform(95.0, 99.0) if primary is Shape.INPUT_BOUND else rng.uniform(55, 90)
        return SimJob(
            info=info,
            start_s=start,
            end_s=end,
            gpus=tuple(loads),
            busy_s=rng.uniform(300.0, 1200.0),
            cpu_base_pct=cpu_base,
        )

    # -- reading the timeline -----------------------------------------------------------

    def _period(self, index: int, now: float) -> _Period:
        if not 0 <= index < self.gpus:
            raise IndexError(f"{self.node} has GPUs 0..{self.gpus - 1}, not {index}")
        slot = self._slot_of[index]
        p = slot.periods[slot.last]
        if p.start_s <= now < p.end_s:
            return p
        with self._lock:  # the agent samples and attributes from different threads
            if now >= slot.ends[-1]:
                if now - slot.ends[-1] > _MAX_AHEAD_S:
                    raise ValueError(f"time {now} is more than a year past the simulated jobs")
                k = self._slots.index(slot)
                while now >= slot.ends[-1]:
                    self._extend(k, slot)
            last = bisect.bisect_right(slot.ends, now)
            slot.last = last
            return slot.periods[last]

    def job_at(self, index: int, now: float) -> SimJob | None:
        """The job holding GPU ``index`` at ``now``, or None when the GPU is free."""
        return self._period(index, now).job

    def shape_at(self, index: int, now: float) -> Shape:
        job = self._period(index, now).job
        return Shape.FREE if job is None else job.load(index).shape

    def jobs_at(self, now: float) -> list[SimJob]:
        """The distinct jobs on this node at ``now``, by first GPU index."""
        seen: dict[str, SimJob] = {}
        for i in range(self.gpus):
            job = self.job_at(i, now)
            if job is not None:
                seen.setdefault(job.info.job_id, job)
        return list(seen.values())

    @property
    def last_sample_s(self) -> float | None:
        """The ``now`` of the latest :meth:`sample` call (what the attributor reports on)."""
        return self._last_now

    # -- samples ------------------------------------------------------------------------

    def _load(self, job: SimJob, g: SimGpuLoad, now: float) -> tuple[float, float, int]:
        """(util %, memory-controller util %, memory used) of one GPU of ``job`` at ``now``."""
        tau = now - job.start_s
        n = math.floor(now)
        u = _unit(g.key, n)
        shape = g.shape
        mem = g.mem_bytes
        if shape is Shape.STEADY:
            if tau < _WARMUP_S:
                util = 5.0 + 35.0 * u
                mem = int(mem * (0.2 + 0.8 * max(tau, 0.0) / _WARMUP_S)) // MiB * MiB
            elif tau % _CHECKPOINT_PERIOD_S < _CHECKPOINT_S:
                util = 25.0 + 25.0 * u
            else:
                util = 92.0 + 8.0 * u
        elif shape is Shape.BURSTY:
            cycle = math.floor(tau / _BURST_CYCLE_S)
            h = _mix64(g.key ^ ((cycle * 0x9FB21C651E98DF25) & _MASK))
            pos = tau - cycle * _BURST_CYCLE_S
            offset = (h & 0xFFFF) / 65536.0 * (_BURST_CYCLE_S / 3.0)
            length = _BURST_MIN_S + (_BURST_MAX_S - _BURST_MIN_S) * ((h >> 16) & 0xFFFF) / 65536.0
            in_burst = ((h >> 32) & 0xFFFF) / 65536.0 < _BURST_P and offset <= pos < offset + length
            util = 60.0 + 40.0 * u if in_burst else 0.0
        elif shape is Shape.INPUT_BOUND:
            saw = (tau % g.period_s) / g.period_s
            util = max(0.0, 6.0 + 48.0 * saw + 4.0 * (u - 0.5))
        elif shape is Shape.BRIEF_THEN_IDLE:
            util = 85.0 + 14.0 * u if tau < job.busy_s else 0.0
        else:  # IDLE_MEM, IDLE_EMPTY
            util = 0.0
        util = float(min(100, round(util)))
        util_mem = float(round(util * (0.35 + 0.2 * _unit(g.key ^ _SALT_MEM, n)))) if util else 0.0
        return util, util_mem, mem

    def _job_cpu_pct(self, job: SimJob, now: float) -> float:
        g = job.gpus[0]
        u = _unit(g.key ^ _SALT_CPU, math.floor(now))
        if g.shape is Shape.INPUT_BOUND:
            cpu = job.cpu_base_pct + (100.0 - job.cpu_base_pct) * u
        elif g.shape is Shape.STEADY:
            cpu = job.cpu_base_pct + 5.0 * (u - 0.5)
        elif g.shape in (Shape.BURSTY, Shape.BRIEF_THEN_IDLE):
            busy = self._load(job, g, now)[0] > 0
            cpu = 70.0 + 30.0 * u if busy else 0.5 + 2.0 * u
        else:
            cpu = 0.2 + 1.5 * u
        return round(min(100.0, max(0.0, cpu)), 1)

    def sample_gpu(self, index: int, now: float) -> GpuSample:
        """One reading of GPU ``index`` at ``now`` (does not move :attr:`last_sample_s`)."""
        job = self._period(index, now).job
        n = math.floor(now)
        uuid_ = self.uuids[index]
        processes: tuple[ProcessInfo, ...]
        if job is None:
            util, util_mem, mem, processes = 0.0, 0.0, 0, ()
            key = index * 0x9E3779B97F4A7C15 ^ self._id_block
        else:
            g = job.load(index)
            key = g.key
            util, util_mem, mem = self._load(job, g, now)
            processes = (
                (ProcessInfo(pid=g.pid, used_mem_bytes=mem, name="python"),)
                if g.pid is not None
                else ()
            )
        idle_w = self._idle_w[index] + (15.0 if processes else 0.0)  # a context lifts P-state
        span = self.model.max_w - idle_w
        power = idle_w + span * util / 100.0 * (0.85 + 0.15 * _unit(key ^ _SALT_POWER, n))
        temp = self._temp_base_c[index] + 0.4 * util + _unit(key ^ _SALT_TEMP, n)
        return GpuSample(
            uuid=uuid_,
            index=index,
            name=self.model.name,
            util_gpu_pct=util,
            util_mem_pct=util_mem,
            mem_used_bytes=mem,
            mem_total_bytes=self.mem_total_bytes,
            power_w=round(power, 3),
            temperature_c=float(math.floor(temp)),
            processes=processes,
        )

    def sample(self, now: float) -> list[GpuSample]:
        """Every GPU at ``now``; remembers ``now`` for :class:`SimAttributor`."""
        if not math.isfinite(now):
            raise ValueError(f"now: must be a finite Unix time, got {now!r}")
        out = [self.sample_gpu(i, now) for i in range(self.gpus)]
        self._last_now = now
        return out

    # -- attribution and summary --------------------------------------------------------

    def attribution_at(self, now: float, uuids: Sequence[str] | None = None) -> Attribution:
        """Which job holds each GPU at ``now`` (all GPUs, or those of ``uuids`` on this node)."""
        wanted = self.uuids if uuids is None else [u for u in uuids if u in self._index_of]
        gpus: dict[str, GpuAttribution] = {}
        cpu_of: dict[str, float] = {}
        for u in wanted:
            job = self.job_at(self._index_of[u], now)
            if job is None:
                gpus[u] = GpuAttribution(job=None, allocated=False)
                continue
            jid = job.info.job_id
            if jid not in cpu_of:
                cpu_of[jid] = self._job_cpu_pct(job, now)
            gpus[u] = GpuAttribution(
                job=replace(job.info, cpu_util_pct=cpu_of[jid]), allocated=True
            )
        return Attribution(gpus=gpus, slurm=SlurmStatus(available=True))

    def describe(self, now: float | None = None) -> list[str]:
        """One short line per GPU: index, shape, job id, user and the job's kind."""
        at = self._last_now if now is None else now
        at = self.start_s if at is None else at
        lines = []
        for i in range(self.gpus):
            job = self.job_at(i, at)
            if job is None:
                lines.append(f"{self.node}/{i} {Shape.FREE.value}")
                continue
            info = job.info
            kind = []
            if len(job.gpus) > 1:
                kind.append(f"{len(job.gpus)}-gpu")
            if info.is_dask_worker:
                kind.append(f"dask:{info.dask_worker}")
            if not info.batch:
                kind.append("interactive")
            if not info.requeue:
                kind.append("no-requeue")
            age_min = (at - job.start_s) / 60.0
            lines.append(
                f"{self.node}/{i} {job.load(i).shape.value} job {info.job_id} {info.user} "
                f"{age_min:.0f}min {' '.join(kind)}".rstrip()
            )
        return lines


class SimSampler:
    """:class:`~gpuwarden.agent.sampler.Sampler` over a :class:`SimNode`."""

    def __init__(self, sim_node: SimNode) -> None:
        self.node = sim_node
        self._open = False

    def open(self) -> None:
        self._open = True

    def sample(self, now: float) -> list[GpuSample]:
        if not self._open:
            raise SamplerError("SimSampler.sample() called before open() (or after close())")
        return self.node.sample(now)

    def close(self) -> None:
        self._open = False


class SimAttributor:
    """:class:`~gpuwarden.agent.attribution.Attributor` over a :class:`SimNode`.

    Attributes at the time of the node's latest sample (samples carry no time), or at the
    simulation start before any sample. Slurm is always reported as available.
    """

    def __init__(self, sim_node: SimNode) -> None:
        self.node = sim_node

    def attribute(self, samples: Sequence[GpuSample]) -> Attribution:
        now = self.node.last_sample_s
        now = self.node.start_s if now is None else now
        return self.node.attribution_at(now, [s.uuid for s in samples])


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
