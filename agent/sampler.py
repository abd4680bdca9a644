"""The ``Sampler`` plug-in interface and the name -> factory registry.

A sampler reads every GPU (and MIG instance) of the node once per call; it never raises for
one bad GPU: that GPU's sample carries ``errors`` (e.g. ``("gpu_lost",)``) and ``None``
values while the others are read as usual.

``[agent] sampler = NAME`` picks a factory from :data:`SAMPLERS`. A new source of GPU
readings is one module with a class that has ``open / sample / close`` and one line here
naming its factory. A sampler may add measurements of its own through
``GpuSample.extra`` (named numbers); they reach the store without any other change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gpuwarden.agent.attribution import Attributor
from gpuwarden.common.types import GpuSample

if TYPE_CHECKING:
    from gpuwarden.agent.config import AgentConfig


class SamplerError(RuntimeError):
    """The sampler cannot work at all (no driver, init failed)."""


class Sampler(Protocol):
    def open(self) -> None:
        """Acquire the session (e.g. ``nvmlInit``); raise SamplerError when impossible."""

    def sample(self, now: float) -> list[GpuSample]:
        """One reading of every GPU; ``now`` is the wall clock the caller uses."""

    def close(self) -> None:
        """Release the session; safe to call twice."""


@dataclass(frozen=True, slots=True)
class SamplerSetup:
    """What a factory builds: the sampler, and an attributor when the source brings its own
    (the simulator knows its jobs); ``None`` means the agent's Slurm attribution."""

    sampler: Sampler
    attributor: Attributor | None = None


SamplerFactory = Callable[["AgentConfig"], SamplerSetup]


def _nvml(cfg: AgentConfig) -> SamplerSetup:
    from gpuwarden.agent.nvml import NvmlSampler

    return SamplerSetup(NvmlSampler(library_path=cfg.nvml_library or None, proc_root=cfg.proc_root))


def _dcgm(cfg: AgentConfig) -> SamplerSetup:
    from gpuwarden.agent.dcgm import DcgmSampler
    from gpuwarden.agent.nvml import NvmlSampler

    nvml = NvmlSampler(library_path=cfg.nvml_library or None, proc_root=cfg.proc_root)
    return SamplerSetup(DcgmSampler(nvml, host=cfg.dcgm_host))


def _sim(cfg: AgentConfig) -> SamplerSetup:
    from gpuwarden.sim import SimAttributor, SimNode, SimSampler

    node = SimNode(cfg.node_name, gpus=cfg.sim_gpus, seed=cfg.sim_seed)
    return SamplerSetup(SimSampler(node), SimAttributor(node))


SAMPLERS: dict[str, SamplerFactory] = {
    "nvml": _nvml,  # real GPUs through NVML (with GPM profiling fields where the card has it)
    "dcgm": _dcgm,  # NVML plus DCGM's profiling fields (needs DCGM's bindings and host engine)
    "sim": _sim,  # a simulated node (demo, tests)
}


def unknown_sampler_message(name: str) -> str:
    return f"sampler: {name!r} is not a known sampler (known: {', '.join(sorted(SAMPLERS))})"


def make_sampler(cfg: AgentConfig) -> SamplerSetup:
    """Build the sampler ``cfg.sampler`` names (the config has already checked the name)."""
    factory = SAMPLERS.get(cfg.sampler)
    if factory is None:
        raise SamplerError(unknown_sampler_message(cfg.sampler))
    return factory(cfg)
