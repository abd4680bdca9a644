"""GPU indices out of Slurm's per-node GRES detail (``GRES=gpu:2(IDX:0-1)``)."""

from __future__ import annotations

import re

from gpuwarden.slurm.hostlist import parse_index_list

__all__ = ["parse_gres_indices"]

_GRES_GPU_RE = re.compile(r"(?:^|,)gpu(?::[^:(),]+)?:[0-9]+\(IDX:(?P<idx>[^)]*)\)")


def parse_gres_indices(gres: str) -> tuple[int, ...]:
    """GPU indices of one node's GRES detail: ``gpu:1(IDX:0)``, ``gpu:2(IDX:0-1)``,
    ``gpu:tesla:2(IDX:0,2)``, ``gpu:a100:1(IDX:0),gpu:v100:1(IDX:2)``. ``IDX:N/A`` and
    non-GPU GRES give nothing."""
    out: list[int] = []
    for m in _GRES_GPU_RE.finditer(gres.strip()):
        idx = m["idx"]
        if idx and idx != "N/A":
            out.extend(parse_index_list(idx))
    return tuple(sorted(set(out)))
