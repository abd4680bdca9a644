"""``gpuwarden collector``: run the collector daemon until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from gpuwarden.collector.actions import ClusterExecutor
from gpuwarden.collector.admin import attach_admin
from gpuwarden.collector.authz import load_roles_file
from gpuwarden.collector.config import CollectorConfig
from gpuwarden.collector.corroborate import Corroborator, SchedulerTrust, parse_networks
from gpuwarden.collector.enforce import Enforcer, attach_enforcement
from gpuwarden.collector.gcfreeze import GcFreezer
from gpuwarden.collector.munge import MungeVerifier
from gpuwarden.collector.outputs.config import Outputs
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.server import Collector
from gpuwarden.collector.validate import Limits
from gpuwarden.common.config import ConfigError
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
        commit_window_s=cfg.commit_window,
        shutdown_grace_s=cfg.shutdown_grace,
        sinks=outputs.sinks if outputs else None,
        notifiers=outputs.notifiers if outputs else None,
        rate_limiter=RateLimiter(cfg.max_reports_per_s, cfg.report_burst),
        retention=cfg.retention_policy,
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


async def _housekeeping(collector: Collector, interval_s: float = 10.0) -> None:
    """Retention, one small DELETE transaction at a time off the event loop; ingest gets
    the write lock between batches. Then the WAL checkpoint (:meth:`Store.checkpoint`)."""
    while True:
        deleted = 0
        try:
            while n := await asyncio.to_thread(collector.store.prune_step):
                deleted += n
                await asyncio.sleep(0.01)
            await asyncio.to_thread(collector.store.checkpoint)  # a grown WAL given back
            collector.forget_silent_nodes(time.time() - collector.store.retention.raw_s)
        except Exception as exc:  # a store fault (full disk...): try again next round
            log.warning("retention: %s; trying again in %.0f s", exc, interval_s)
        if deleted:
            log.info("retention: deleted %d rows past their retention", deleted)
        await asyncio.sleep(interval_s)


def check_retention(cfg: CollectorConfig, policies: PolicySet) -> None:
    """Raw windows must outlive the longest look-back of the detection rules, or a
    restarted collector could not rebuild what they need."""
    need = max(
        max(p.idle_window + p.grace_period, p.underuse_window) + p.max_gap
        for p in (policies.default, *policies.partitions.values())
    )
    if cfg.retention < need:
        raise ConfigError(
            f"[collector] retention: {cfg.retention:.0f} s is shorter than the detection "
            f"rules look back ({need:.0f} s: idle_window + grace_period or underuse_window, "
            "plus max_gap)"
        )


def build_executor(cfg: CollectorConfig, collector: Collector) -> ClusterExecutor:
    """Acts only on what Slurm corroborates, with each node's GPU layout as its agent last
    reported it; contacts a Dask scheduler only inside ``dask_trusted_networks`` or at the
    address the worker's node connects from."""
    slurm = None
    if cfg.slurm_backend != "none":
        slurm = make_slurm_client(cfg.slurm_backend, timeout_s=cfg.slurm_timeout)

    def node_gpus(node: str) -> list[tuple[int, int | None]]:
        state = collector.state.node(node)
        if state is None:
            return []
        return [(g.latest.index, g.latest.minor_number) for g in state.gpus]

    trust = SchedulerTrust(
        networks=parse_networks(cfg.dask_trusted_networks),
        node_address=collector.node_addresses.get,
    )
    return ClusterExecutor(
        slurm,
        dask_timeout_s=cfg.dask_timeout,
        trust=trust,
        corroborator=Corroborator(slurm, node_gpus) if slurm is not None else None,
    )


def _describe(policies: PolicySet) -> str:
    modes = {p.enforce for p in (policies.default, *policies.partitions.values())}
    return "ON" if modes == {True} else "dry-run" if modes == {False} else "per partition"


async def _reload_policy(
    enforcer: Enforcer, load: Callable[[], PolicySet], collector: Collector
) -> None:
    """SIGHUP: read the policy again; a bad one is refused (logged, naming the key) and the
    one in force is kept."""
    try:
        policies = await asyncio.to_thread(load)
    except (ConfigError, OSError) as exc:
        log.error("policy reload refused, keeping the policy in force: %s", exc)
        return
    await asyncio.to_thread(enforcer.set_policies, policies)
    if collector.admin is not None:  # admin actions ask the same policy whether to act
        collector.admin.policies = policies
    collector.jobstats.policies = policies  # what job summaries count as active and idle
    log.warning("policy reloaded; enforcement: %s", _describe(policies))


async def run_collector(
    cfg: CollectorConfig,
    policies: PolicySet | None = None,
    outputs: Outputs | None = None,
    reload_policy: Callable[[], PolicySet] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT. ``reload_policy`` (re-reading the config file) is called
    on SIGHUP; without it SIGHUP is logged and ignored."""
    policies = policies or PolicySet()
    check_retention(cfg, policies)
    collector = build_collector(cfg, outputs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await collector.start()
    collector.add_background(lambda: _housekeeping(collector), "housekeeping")
    collector.add_background(_watchdog, "watchdog")
    executor = build_executor(cfg, collector)
    enforcer = attach_enforcement(
        collector,
        policies=policies,
        executor=executor,
        audit_jsonl=cfg.audit_path,
        evaluate_interval_s=cfg.evaluate_interval,
        actor=cfg.actor,
        job_gone_after_s=cfg.job_gone_after,
        gc_freezer=GcFreezer(),
    )
    collector.policy_source = lambda: enforcer.policies  # AdminService.GetPolicy
    log.warning("enforcement: %s", _describe(policies))
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        if reload_policy is None:
            log.warning("SIGHUP: no config file to reload the policy from; ignored")
            return
        task = asyncio.create_task(_reload_policy(enforcer, reload_policy, collector))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    attach_admin(collector, policies=policies, executor=executor)
    for endpoint in outputs.exporters if outputs else ():
        endpoint.start(collector.live_view)
    notify("READY=1")
    print(f"collector listening on port {collector.port}", flush=True)
    if collector.munge_port:
        print(f"collector: MUNGE (researchers) on port {collector.munge_port}", flush=True)
    await stop.wait()
    notify("STOPPING=1")
    log.info("stopping: draining streams and flushing the store")
    for endpoint in outputs.exporters if outputs else ():
        endpoint.stop()
    await collector.stop()
