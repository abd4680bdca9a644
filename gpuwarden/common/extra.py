"""Extra per-GPU measurements: the rules their names and values follow, on both sides.

A sampler may return any number of named measurements in ``GpuSample.extra`` (profiling
counters such as ``sm_active_pct``). The agent aggregates each into a window mean and max,
the collector validates and stores them with the window, and the query API returns them:
adding a field needs a change in the sampler only.
"""

from __future__ import annotations

import math
import re

EXTRA_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,47}")
MAX_EXTRA_FIELDS = 64  # per GPU window, in each of extra_mean and extra_max
MAX_EXTRA_ABS = 1e18  # large enough for bytes/s counters, small enough to be sane


def extra_problem(name: object, value: object) -> str | None:
    """Why ``name = value`` cannot be an extra field, or None when it can."""
    if not isinstance(name, str) or not EXTRA_NAME_RE.fullmatch(name):
        shown = name[:60] if isinstance(name, str) else name
        return (
            f"name {shown!r} is not a short identifier (lower-case letter, then up to 47 "
            "lower-case letters, digits or _)"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name}={value!r} is not a number"
    if not math.isfinite(value):
        return f"{name}={value} is not a finite number"
    if abs(value) > MAX_EXTRA_ABS:
        return f"{name}={value} is beyond +-{MAX_EXTRA_ABS:g}"
    return None


# The profiling fields the shipped samplers report (docs/profiling.md). Replay traces may give
# them as top-level sample keys (window means); any other field goes in ``extra``.
PROFILING_FIELDS = (
    "gr_active_pct",
    "sm_active_pct",
    "sm_occupancy_pct",
    "tensor_active_pct",
    "tensor_hmma_active_pct",
    "dram_active_pct",
    "fp16_active_pct",
    "fp32_active_pct",
    "fp64_active_pct",
    "pcie_tx_bytes_per_s",
    "pcie_rx_bytes_per_s",
    "nvlink_tx_bytes_per_s",
    "nvlink_rx_bytes_per_s",
)
