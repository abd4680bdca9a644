"""``gpuwarden collector``: run the collector daemon until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from gpuwarden.collector.actions import ClusterExecutor
from gpuwarden.collector.admin import attach_admin
from gpuwarden.collector.authz import load_roles_file
from gpuwarden.collector.config import CollectorConfig
from gpuwarden.collector.enforce import attach_enforcement
from gpuwarden.collector.munge import MungeVerifier
from gpuwarden.collector.outputs.config import Outputs
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.server import Collector
from gpuwarden.collector.validate import Limits
from gpuwarden.common.preflight import readable_pem, writable_dir
from gpuwarden.common.sdnotify import notify
from gpuwarden.slurm import make_slurm_client

log = logging.getLogger(__name__)


def preflight(cfg: CollectorConfig) -> tuple[bytes, bytes, bytes] | None:
    """Check at start what the config names on disk; return the TLS files' bytes.

    Raises ConfigError naming the setting (exit 2) for a missing certificate or a state
    folder the collector cannot write in.
    """
    writable_dir("[collector] state_dir", cfg.state_dir)
    if cfg.db_path:
        writable_dir("[collector] db_path", cfg.database.parent)
    if cfg.audit_jsonl:
        writable_dir("[collector] audit_jsonl", cfg.audit_path.parent)
    if cfg.insecure:
        return None
    return (
        readable_pem("[collector] tls_ca", cfg.tls_ca),
        readable_pem("[collector] tls_cert", cfg.tls_cert),
        readable_pem("[collector] tls_key", cfg.tls_key),
    )


def build_collector(cfg: CollectorConfig, outputs: Outputs | None = None) -> Collector:
    tls = preflight(cfg)
    roles = load_roles_file(Path(cfg.roles_file)) if cfg.roles_file else None
    return Collector(
        db_path=cfg.database,
        listen=cfg.listen,
        tls=tls,
        limits=Limits(max_gpus_per_node=cfg.max_gpus_per_node),
        write_batch_max=cfg.write_batch_max,
        shutdown_grace_s=cfg.shutdown_grace,
        sinks=outputs.sinks if outputs else None,
        notifiers=outputs.notifiers if outputs else None,
        rate_limiter=RateLimiter(cfg.max_reports_per_s, cfg.report_burst),
        min_free_bytes=cfg.min_free_space,
        roles=roles,
        munge=MungeVerifier(socket=cfg.munge_socket),
        munge_listen=cfg.munge_listen,
        audit_jsonl=cfg.audit_path,
    )


async def _watchdog(interval_s: float = 5.0) -> None:
    """WATCHDOG=1 while the event loop is alive (a hung loop gets the daemon restarted)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)


async def _housekeeping(collector: Collector, cfg: CollectorConfig) -> None:
    while True:
        deleted = await asyncio.to_thread(collector.store.prune, time.time() - cfg.retention)
        if deleted:
            log.info("retention: deleted %d windows older than %.0f s", deleted, cfg.retention)
        await asyncio.sleep(10.0)


def build_executor(cfg: CollectorConfig) -> ClusterExecutor:
    slurm = None
    if cfg.slurm_backend != "none":
        slurm = make_slurm_client(cfg.slurm_backend, timeout_s=cfg.slurm_timeout)
    return ClusterExecutor(slurm, dask_timeout_s=cfg.dask_timeout)


async def run_collector(
    cfg: CollectorConfig, policies: PolicySet | None = None, outputs: Outputs | None = None
) -> None:
    policies = policies or PolicySet()
    collector = build_collector(cfg, outputs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await collector.start()
    collector.add_background(lambda: _housekeeping(collector, cfg), "housekeeping")
    collector.add_background(_watchdog, "watchdog")
    executor = build_executor(cfg)
    enforcer = attach_enforcement(
        collector,
        policies=policies,
        executor=executor,
        audit_jsonl=cfg.audit_path,
        evaluate_interval_s=cfg.evaluate_interval,
        actor=cfg.actor,
        job_gone_after_s=cfg.job_gone_after,
    )
    collector.policy_source = lambda: enforcer.policies  # AdminService.GetPolicy
    attach_admin(collector, policies=policies, executor=executor)
    modes = {p.enforce for p in (policies.default, *policies.partitions.values())}
    log.warning(
        "enforcement: %s",
        "ON" if modes == {True} else "dry-run" if modes == {False} else "per partition",
    )
    notify("READY=1")
    print(f"collector listening on port {collector.port}", flush=True)
    if collector.munge_port:
        print(f"collector: MUNGE (researchers) on port {collector.munge_port}", flush=True)
    await stop.wait()
    notify("STOPPING=1")
    log.info("stopping: draining streams and flushing the store")
    await collector.stop()
