"""``gpuwarden agent``: build the agent from its config and run it until SIGTERM."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gpuwarden.agent.attribution import Attributor, NoAttribution
from gpuwarden.agent.client import TlsFiles
from gpuwarden.agent.config import AgentConfig
from gpuwarden.agent.runtime import Agent
from gpuwarden.agent.sampler import Sampler, make_sampler
from gpuwarden.agent.spool import Spool
from gpuwarden.common.config import ConfigError
from gpuwarden.common.names import check_node
from gpuwarden.common.preflight import readable_pem, writable_dir
from gpuwarden.common.sdnotify import notify

if TYPE_CHECKING:  # imported where Slurm is used: a node with slurm = "off" never loads it
    from gpuwarden.slurm import SlurmJob

log = logging.getLogger(__name__)


def build_sampler_and_attributor(cfg: AgentConfig) -> tuple[Sampler, Attributor]:
    setup = make_sampler(cfg)
    sampler = setup.sampler
    if cfg.slurm == "off":  # no attribution, not even a simulator's own simulated jobs
        return sampler, NoAttribution()
    if setup.attributor is not None:
        return sampler, setup.attributor
    use_slurm = cfg.slurm == "on" or (cfg.slurm == "auto" and shutil.which(cfg.scontrol))
    if not use_slurm:
        return sampler, NoAttribution()
    from gpuwarden.agent.slurm_attr import SlurmAttributor

    return sampler, SlurmAttributor(
        cfg.node_name,
        proc_root=cfg.proc_root,
        scontrol=cfg.scontrol,
        cache_ttl_s=cfg.slurm_cache_ttl,
        timeout_s=cfg.slurm_timeout,
        jobs_source=pyslurm_jobs_source(cfg),
    )


def pyslurm_jobs_source(cfg: AgentConfig) -> Callable[[], list[SlurmJob]] | None:
    """This node's jobs through pyslurm when ``slurm_backend`` allows it and pyslurm matches
    the Slurm (else None: the attributor runs ``squeue --json``). ConfigError when
    ``slurm_backend = "pyslurm"`` and pyslurm cannot be used."""
    if cfg.slurm_backend == "cli":
        return None
    from gpuwarden.slurm import PyslurmClient, make_slurm_client

    try:
        client = make_slurm_client(
            cfg.slurm_backend,
            timeout_s=cfg.slurm_timeout,
            bin_dir=os.path.dirname(cfg.scontrol) or None,  # noqa: PTH120
        )
    except ValueError as exc:
        raise ConfigError(f"[agent] slurm_backend: {exc}") from None
    if not isinstance(client, PyslurmClient):
        return None
    log.info("slurm: the node's jobs come from pyslurm")
    return functools.partial(client.node_jobs, cfg.node_name)


def preflight(cfg: AgentConfig) -> None:
    """Check at start what does not heal by retrying: the node name, the spool folder and
    the TLS files. Raises ConfigError naming the setting (exit 2)."""
    try:
        check_node(cfg.node_name)
    except ValueError as exc:
        what = "" if cfg.node else "not set, and the host name "
        raise ConfigError(f"[agent] node: {what}{exc}") from None
    writable_dir("[agent] spool_dir", cfg.spool_dir)
    if not cfg.insecure:
        for key in ("tls_ca", "tls_cert", "tls_key"):
            readable_pem(f"[agent] {key}", getattr(cfg, key))


def build_agent(cfg: AgentConfig, *, systemd: bool = True) -> Agent:
    preflight(cfg)
    sampler, attributor = build_sampler_and_attributor(cfg)
    tls = (
        None
        if cfg.insecure
        else TlsFiles(ca=Path(cfg.tls_ca), cert=Path(cfg.tls_cert), key=Path(cfg.tls_key))
    )
    return Agent(
        node=cfg.node_name,
        sampler=sampler,
        attributor=attributor,
        spool=Spool(
            cfg.spool_dir, max_reports=cfg.spool_max_reports, max_bytes=cfg.spool_max_bytes
        ),
        collector=cfg.collector,
        tls=tls,
        sample_interval_s=cfg.sample_interval,
        report_interval_s=cfg.report_interval,
        reconnect_max_backoff_s=cfg.reconnect_max_backoff,
        systemd=systemd,
    )


def run_agent(cfg: AgentConfig) -> None:
    """Run the agent in this (the main) thread until SIGTERM or SIGINT."""
    agent = build_agent(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: agent.stop())
    log.info(
        "agent %s: sampler=%s collector=%s spool=%s (%d reports pending)",
        cfg.node_name,
        cfg.sampler,
        cfg.collector,
        cfg.spool_dir,
        len(agent.spool),
    )
    agent.serve()
    notify("STOPPING=1")
    log.info("agent stopped: %s", agent.stats())
