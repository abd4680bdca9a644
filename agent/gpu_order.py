"""Slurm's GPU numbering on this node, from what the sampler read.

Slurm's GRES index (``IDX``) of a GPU is its position in the node's GRES device list: the
``File=/dev/nvidia[0-N]`` order of gres.conf, or AutoDetect's, which follows the device
files, i.e. the GPUs' minor numbers. NVML indexes GPUs in PCI bus order, and the two orders
can differ. ``gres_index_map`` turns the samples' minor numbers into the map attribution
needs; a site whose gres.conf lists its GPUs in another order sets the map by hand.
"""

from __future__ import annotations

from collections.abc import Iterable

from gpuwarden.common.types import GpuSample
from gpuwarden.slurm.gres import gres_order


def gres_index_map(samples: Iterable[GpuSample]) -> dict[int, int] | None:
    """``{GRES index: NVML index}`` of the node's GPUs, ranked by minor number.

    A MIG-mode GPU counts through its instances (they carry its index and minor number).
    ``None`` when the order cannot be known: a GPU without a minor number (e.g. lost before
    it could be read), two GPUs with one minor number, or one index with two.
    """
    return gres_order((s.index, s.minor_number) for s in samples)
