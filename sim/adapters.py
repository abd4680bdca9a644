"""The simulator as the agent's ``Sampler`` and ``Attributor``."""

from __future__ import annotations

from collections.abc import Sequence

from gpuwarden.agent.attribution import Attribution
from gpuwarden.agent.sampler import SamplerError
from gpuwarden.common.types import GpuSample
from gpuwarden.sim.node import SimNode


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
