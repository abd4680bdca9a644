"""Slurm's GPU numbering on this node, from what the sampler read.

Slurm's GRES index (``IDX``) of a GPU is its position in the node's GRES device list: the
``File=/dev/nvidia[0-N]`` order of gres.conf, or AutoDetect's, which follows the device
files, i.e. the GPUs' minor numbers. NVML indexes GPUs in PCI bus order, and the two orders
can differ. ``gres_index_map`` turns the samples' minor numbers into the map attribution
needs; a site whose gres.conf lists its GPUs in another order sets the map by hand.

MIG: for a GPU in MIG mode Slurm lists each MIG instance as one GRES device, whose file is
the instance's access file ``/dev/nvidia-caps/nvidia-capN`` (gres.conf ``File=``, or
AutoDetect's), so a job's ``IDX`` counts MIG instances in the order of those minors.
``gres_device_map`` ranks the node's devices, whole GPUs and MIG instances, so: a GPU by its
minor number, the instances of a MIG GPU after it by their access file's minor
(``mig_caps_minor``). A device is named by its :data:`DeviceKey`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gpuwarden.common.types import GpuSample
from gpuwarden.slurm.gres import gres_order

DeviceKey = tuple[int, int | None]  # (NVML index, GPU instance id: None for a whole GPU)


def device_key(s: GpuSample) -> DeviceKey:
    """The Slurm-allocatable device a sample is of: a whole GPU or one MIG instance."""
    mig = bool(s.parent_uuid) and s.gpu_instance_id is not None
    return (s.index, s.gpu_instance_id if mig else None)


def whole_gpus(index_map: Mapping[int, int]) -> dict[int, DeviceKey]:
    """A ``{GRES index: NVML index}`` map (a site's override) in device keys."""
    return {gres: (nvml, None) for gres, nvml in index_map.items()}


def gres_device_map(samples: Iterable[GpuSample]) -> dict[int, DeviceKey] | None:
    """``{GRES index: device}`` of the node's devices (see the module docstring).

    ``None`` when the order cannot be known: as :func:`gres_index_map`, or a MIG instance
    without the minor of its access file (the driver's table could not be read).
    """
    samples = list(samples)
    index_map = gres_index_map(samples)
    if index_map is None:
        return None
    instances: dict[int, list[tuple[int, int]]] = {}  # NVML index -> (caps minor, GI)
    for s in samples:
        key = device_key(s)
        if key[1] is None:
            continue
        if s.mig_caps_minor is None:
            return None
        instances.setdefault(s.index, []).append((s.mig_caps_minor, key[1]))
    out: dict[int, DeviceKey] = {}
    for nvml in index_map.values():  # GRES order of the GPUs
        if nvml in instances:
            for _, gi in sorted(instances[nvml]):
                out[len(out)] = (nvml, gi)
        else:
            out[len(out)] = (nvml, None)
    return out


def gres_index_map(samples: Iterable[GpuSample]) -> dict[int, int] | None:
    """``{GRES index: NVML index}`` of the node's GPUs, ranked by minor number.

    A MIG-mode GPU counts through its instances (they carry its index and minor number).
    ``None`` when the order cannot be known: a GPU without a minor number (e.g. lost before
    it could be read), two GPUs with one minor number, or one index with two.
    """
    return gres_order((s.index, s.minor_number) for s in samples)
