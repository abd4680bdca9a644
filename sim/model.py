"""The workload model of the simulator: shapes of GPU work, the default job mix, the
constants that shape each kind of job, GPU models, simulated jobs, and the cheap hash the
noise comes from (noise is an integer hash of the second, not a random generator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from gpuwarden.common.types import JobInfo

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
JOB_NAMES: Mapping[Shape, tuple[str, ...]] = {
    Shape.STEADY: ("train-resnet50", "llm-finetune", "train_vit", "diffusion-train"),
    Shape.BURSTY: ("jupyter", "notebook", "explore-data"),
    Shape.INPUT_BOUND: ("train-dataloader", "augment-train", "video-train"),
    Shape.IDLE_MEM: ("jupyter", "debug-model", "inference-server"),
    Shape.IDLE_EMPTY: ("bash", "sleep", "interactive"),
    Shape.BRIEF_THEN_IDLE: ("eval-checkpoint", "hparam-trial", "jupyter"),
}
# Chance that a single-GPU job of this shape is interactive (srun --pty / OnDemand session).
P_INTERACTIVE: Mapping[Shape, float] = {
    Shape.BURSTY: 0.6,
    Shape.IDLE_MEM: 0.4,
    Shape.IDLE_EMPTY: 0.3,
    Shape.BRIEF_THEN_IDLE: 0.3,
}
DASK_SHAPES = frozenset({Shape.BURSTY, Shape.IDLE_MEM, Shape.STEADY, Shape.BRIEF_THEN_IDLE})
P_DASK = 0.25
P_REQUEUE = 0.6
P_YOUNG = 0.12  # a job started inside the default 10-minute grace period
# Memory the job holds on a GPU, as fractions of the card (of 80 GiB: 60-75 GB for steady).
MEM_FRAC: Mapping[Shape, tuple[float, float]] = {
    Shape.STEADY: (0.70, 0.87),
    Shape.BURSTY: (0.05, 0.35),
    Shape.INPUT_BOUND: (0.25, 0.50),
    Shape.IDLE_MEM: (0.12, 0.46),
    Shape.IDLE_EMPTY: (0.0, 0.0),
    Shape.BRIEF_THEN_IDLE: (0.20, 0.60),
}

WARMUP_S = 60.0  # steady: data loading before the first step
CHECKPOINT_PERIOD_S = 1800.0  # steady: a checkpoint every 30 min ...
CHECKPOINT_S = 30.0  # ... that drops the GPU to ~40 % for 30 s
BURST_CYCLE_S = 900.0  # bursty: at most one burst per 15-minute cycle ...
BURST_P = 0.75  # ... with this chance, starting in the cycle's first third
BURST_MIN_S = 30.0
BURST_MAX_S = 180.0
GAP_MEAN_S = 300.0  # churn: free time between one job and the next in a slot
MIN_JOB_S = 600.0  # churn: a new job runs at least this long
MAX_AHEAD_S = 366 * 86400.0  # refuse times absurdly far past the last simulated job

MASK = (1 << 64) - 1
SALT_MEM = 0x5851F42D4C957F2D
SALT_POWER = 0x14057B7EF767814F
SALT_TEMP = 0x2545F4914F6CDD1D
SALT_CPU = 0x61C8864680B583EB


def mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def unit(key: int, n: int) -> float:
    """A uniform number in [0, 1) fixed by ``key`` and the integer ``n``."""
    return mix64(key ^ ((n * 0xD1B54A32D192ED03) & MASK)) / 18446744073709551616.0


def hash64(text: str) -> int:
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
