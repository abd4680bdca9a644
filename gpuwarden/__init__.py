"""gpuwarden: find idle GPU allocations on Slurm clusters and give them back, safely."""

__version__ = "0.1.0"
