"""What detection works on and produces: allocations, observed windows, findings, evidence."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from gpuwarden.common.types import JobInfo

MIB = 1024 * 1024

# The profiling fields (window means, docs/profiling.md) the advice rules read, in the order
# of a :data:`Profile`.
PROFILE_FIELDS = (
    "sm_active_pct",
    "tensor_active_pct",
    "dram_active_pct",
    "fp16_active_pct",
    "fp32_active_pct",
    "fp64_active_pct",
)
SM, TENSOR, DRAM, FP16, FP32, FP64 = range(len(PROFILE_FIELDS))
PIPES = (TENSOR, FP16, FP32, FP64)
Profile = tuple[float | None, ...]  # one window's means of PROFILE_FIELDS; None: not measured


def profile_of(extra_mean: Mapping[str, float]) -> Profile | None:
    """The profiling means of a window's extra fields; None when it has none of them."""
    if not extra_mean:
        return None
    values = tuple(extra_mean.get(name) for name in PROFILE_FIELDS)
    return None if all(v is None for v in values) else values


class FindingKind(StrEnum):
    IDLE = "idle"
    PARTLY_IDLE = "partly_idle"
    UNDERUSED = "underused"
    ADVICE = "advice"


class AdviceCode(StrEnum):
    MEMORY_HELD_IDLE = "memory_held_idle"
    USE_MIG = "use_mig"
    INPUT_BOUND = "input_bound"
    GPU_WAITING = "gpu_waiting"  # high duty cycle, low SM activity
    NO_TENSOR_CORES = "no_tensor_cores"  # busy card with tensor cores that are not used
    MEMORY_BOUND = "memory_bound"  # DRAM bandwidth high, compute pipes low


@dataclass(frozen=True, slots=True)
class GpuRef:
    node: str
    uuid: str
    index: int


@dataclass(frozen=True, slots=True)
class Allocation:
    """A job and the GPUs it holds. ``start_ts`` None: ``job.start_time`` (0 = unknown)."""

    job: JobInfo
    gpus: tuple[GpuRef, ...]
    start_ts: float | None = None
    end_ts: float | None = None

    @property
    def started_ts(self) -> float | None:
        if self.start_ts is not None:
            return self.start_ts
        return float(self.job.start_time) if self.job.start_time > 0 else None


@dataclass(frozen=True, slots=True)
class ObservedWindow:
    """One report window of one GPU of an allocation (what the rules need of it)."""

    node: str
    uuid: str
    end_ts: float
    duration_s: float
    util_max_pct: float | None
    util_mean_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_w: float | None = None
    cpu_util_pct: float | None = None
    sm_active_max_pct: float | None = None
    profile: Profile | None = None
    processes: int | None = None  # None: unknown
    mig: bool = False


@dataclass(frozen=True, slots=True)
class GpuEvidence:
    """The window summary behind a finding, for one GPU."""

    node: str
    uuid: str
    index: int
    since_ts: float | None
    last_end_ts: float | None
    covered_s: float
    windows: int
    util_max_pct: float | None
    util_mean_pct: float | None
    mem_used_max_bytes: int | None
    mem_total_bytes: int | None
    cpu_util_mean_pct: float | None = None
    # what decided activity in the idle streak (activity.Basis values) and its SM activity
    active_by: tuple[str, ...] = ()
    sm_active_max_pct: float | None = None
    # profiling means over underuse_window (None: not measured)
    sm_active_mean_pct: float | None = None
    tensor_active_mean_pct: float | None = None
    dram_active_mean_pct: float | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    job_id: str
    gpus: tuple[GpuRef, ...]
    since_ts: float
    detail: str
    code: str = ""  # AdviceCode for advice findings
    evidence: tuple[GpuEvidence, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (_KIND_VALUE[self.kind], self.code)

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(g.uuid for g in self.gpus)

    def finding(self) -> Finding:
        """Itself (see :class:`PendingFinding`)."""
        return self


class PendingFinding:
    """A finding whose words and evidence are built only when they are wanted.

    The ladder decides on (kind, code, since) alone and needs the rest only for an event it
    emits; most evaluations of an idle job emit nothing (the next warning is not due yet).
    ``build`` must be called before the tracker that made it takes another window: the
    engine and :meth:`AllocationTracker.evaluate` do so within the same evaluation.
    """

    __slots__ = ("_build", "_finding", "code", "key", "kind", "since_ts")

    def __init__(
        self, kind: FindingKind, since_ts: float, build: Callable[[], Finding], code: str = ""
    ) -> None:
        self.kind = kind
        self.since_ts = since_ts
        self.code = code
        self.key = (_KIND_VALUE[kind], code)
        self._build = build
        self._finding: Finding | None = None

    def finding(self) -> Finding:
        """The whole finding (built once)."""
        f = self._finding
        if f is None:
            f = self._finding = self._build()
        return f


_KIND_VALUE = {k: k.value for k in FindingKind}
