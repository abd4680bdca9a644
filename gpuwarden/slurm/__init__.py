"""Everything gpuwarden knows about Slurm, in one place.

- ``ids``: the one job-id and node-name check (full match, ASCII only);
- ``hostlist``, ``gres``: Slurm's compact lists and per-node GPU indices;
- ``scontrol``, ``squeue``: parsers of ``scontrol -d -o show job`` and ``squeue --json``;
- ``proc``, ``dask``: pure parsers of ``/proc/PID`` text and Dask worker command lines (the
  agent reads ``/proc`` and passes the text in);
- ``runner``: the one runner of Slurm commands (timeout, error text -> ``Outcome``);
- ``client``, ``pyslurm_client``: ``SlurmClient`` (job facts, requeue, cancel) over the CLI or
  pyslurm, chosen by ``make_slurm_client``.

Nothing here imports the agent or the collector.
"""

from __future__ import annotations

from gpuwarden.slurm.client import ActionResult, CliSlurmClient, SlurmClient
from gpuwarden.slurm.dask import DaskWorkerFacts, parse_dask_worker_cmdline
from gpuwarden.slurm.gres import parse_gres_indices
from gpuwarden.slurm.hostlist import expand_hostlist, parse_index_list
from gpuwarden.slurm.ids import is_job_id, is_node_name, validate_job_id, validate_node_name
from gpuwarden.slurm.job import SlurmJob
from gpuwarden.slurm.proc import (
    CgroupJob,
    EnvironFacts,
    parse_cmdline,
    parse_environ,
    parse_proc_cgroup,
)
from gpuwarden.slurm.pyslurm_client import PyslurmClient, make_slurm_client
from gpuwarden.slurm.runner import Outcome, SlurmError, SlurmRunner, classify_error
from gpuwarden.slurm.scontrol import parse_scontrol_jobs
from gpuwarden.slurm.squeue import parse_squeue_json

__all__ = [
    "ActionResult",
    "CgroupJob",
    "CliSlurmClient",
    "DaskWorkerFacts",
    "EnvironFacts",
    "Outcome",
    "PyslurmClient",
    "SlurmClient",
    "SlurmError",
    "SlurmJob",
    "SlurmRunner",
    "classify_error",
    "expand_hostlist",
    "is_job_id",
    "is_node_name",
    "make_slurm_client",
    "parse_cmdline",
    "parse_dask_worker_cmdline",
    "parse_environ",
    "parse_gres_indices",
    "parse_index_list",
    "parse_proc_cgroup",
    "parse_scontrol_jobs",
    "parse_squeue_json",
    "validate_job_id",
    "validate_node_name",
]
