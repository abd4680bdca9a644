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


def gres_index_map(samples: Iterable[GpuSample]) -> dict[int, int] | None:
    """``{GRES index: NVML index}`` of the node's GPUs, ranked by minor number.

    A MIG-mode GPU counts through its instances (they carry its index and minor number).
    ``None`` when the order cannot be known: a GPU without a minor number (e.g. lost before
    it could be read), two GPUs with one minor number, or one index with two.
    """
    minor_of: dict[int, int] = {}  # NVML index -> minor number
    for s in samples:
        if s.minor_number is None:
            return None
        if minor_of.setdefault(s.index, s.minor_number) != s.minor_number:
            return None
    if len(set(minor_of.values())) != len(minor_of):
        return None
    ranked = sorted(minor_of, key=minor_of.__getitem__)
    return dict(enumerate(ranked))  # GRES index -> NVML index
