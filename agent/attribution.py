"""The ``Attributor`` interface: which Slurm job holds each GPU of this node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gpuwarden.common.types import SLURM_NOT_CONFIGURED, GpuSample, JobInfo, SlurmStatus


@dataclass(frozen=True, slots=True)
class GpuAttribution:
    job: JobInfo | None = None
    allocated: bool = False  # Slurm allocated the GPU (even when it runs no process)


@dataclass(frozen=True, slots=True)
class Attribution:
    gpus: Mapping[str, GpuAttribution] = field(default_factory=dict)  # by GPU UUID
    slurm: SlurmStatus = field(default_factory=SlurmStatus)


class Attributor(Protocol):
    def attribute(self, samples: Sequence[GpuSample]) -> Attribution:
        """Attribute the GPUs in ``samples`` (the newest reading of each GPU, with the union
        of processes seen in the window). Must return quickly and never raise for a Slurm
        outage: report ``slurm.available = False`` and whatever is still known."""


class NoAttribution:
    """For nodes without Slurm: every GPU unallocated, Slurm reported as not configured."""

    def attribute(self, samples: Sequence[GpuSample]) -> Attribution:
        return Attribution(slurm=SlurmStatus(available=False, error=SLURM_NOT_CONFIGURED))
