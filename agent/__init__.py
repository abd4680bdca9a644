"""Node agent: samples GPUs, attributes them to Slurm jobs, streams reports to the collector."""
