"""The ``Sampler`` plug-in interface and the name -> factory registry.

A sampler reads every GPU (and MIG instance) of the node once per call; it never raises for
one bad GPU: that GPU's sample carries ``errors`` (e.g. ``("gpu_lost",)``) and ``None``
values while the others are read as usual.
"""

from __future__ import annotations

from typing import Protocol

from gpuwarden.common.types import GpuSample


class SamplerError(RuntimeError):
    """The sampler cannot work at all (no driver, init failed)."""


class Sampler(Protocol):
    def open(self) -> None:
        """Acquire the session (e.g. ``nvmlInit``); raise SamplerError when impossible."""

    def sample(self, now: float) -> list[GpuSample]:
        """One reading of every GPU; ``now`` is the wall clock the caller uses."""

    def close(self) -> None:
        """Release the session; safe to call twice."""
