"""Collector settings: the ``[collector]`` table of the TOML config, or GPUWARDEN_COLLECTOR_*."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuwarden.collector.corroborate import parse_networks
from gpuwarden.collector.ingest import COMMIT_WINDOW_S
from gpuwarden.collector.retention import Retention
from gpuwarden.common.address import split_host_port
from gpuwarden.common.config import duration_field, load_section, ranged


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    listen: str = "127.0.0.1:50051"
    state_dir: Path = Path("/var/lib/gpuwarden")
    db_path: str = ""  # default: <state_dir>/gpuwarden.db
    insecure: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    retention: float = duration_field(7 * 24 * 3600.0, minimum=60.0)  # raw windows
    rollups: bool = True  # 1-minute and 1-hour roll-ups in SQLite (off: history elsewhere)
    rollup_1m_retention: float = duration_field(30 * 24 * 3600.0, minimum=60.0)
    rollup_1h_retention: float = duration_field(365 * 24 * 3600.0, minimum=3600.0)
    prune_batch: int = ranged(2000, minimum=1, maximum=1_000_000)
    max_gpus_per_node: int = ranged(64, minimum=1, maximum=4096)
    write_batch_max: int = ranged(512, minimum=1)
    # transactions start at least this far apart, so that agents reporting at about the
    # same time share one fsync (a report after a quiet spell is written at once)
    commit_window: float = duration_field(COMMIT_WINDOW_S, maximum=1.0)
    shutdown_grace: float = duration_field(5.0)
    audit_jsonl: str = ""  # default: <state_dir>/audit.jsonl
    evaluate_interval: float = duration_field(15.0, minimum=0.1)
    actor: str = "gpuwarden-collector"  # who acted, in the audit log
    slurm_backend: str = "auto"  # auto | cli | pyslurm
    slurm_timeout: float = duration_field(10.0, minimum=0.1)
    dask_timeout: float = duration_field(30.0, minimum=0.1)
    job_gone_after: float = duration_field(900.0, minimum=1.0)
    # per-node rate limit (back-pressure, nothing dropped): a spool replay after an outage
    # runs at this rate; a flooding node cannot starve the others
    # the collector refuses to start with less free space than this under its database
    min_free_space: int = ranged(16 * 1024 * 1024, minimum=0)
    max_reports_per_s: float = ranged(100.0, minimum=0.01)
    report_burst: int = ranged(1000, minimum=1)
    # certificate common name -> role (node, reader, admin) for certificates that carry no
    # gpuwarden:role: SAN URI (a site's existing PKI); an entry wins over the certificate's
    roles_file: str = ""
    # researchers' port (TLS without client certificates; every call needs MUNGE)
    munge_listen: str = ""
    munge_socket: str = ""  # munged's socket for unmunge; empty: munge's default
    # Dask schedulers the collector may contact to release a worker (CIDRs), besides the
    # address the worker's own node connects from; empty: that address only
    dask_trusted_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_networks(self.dask_trusted_networks)  # ValueError naming the key and entry
        if self.slurm_backend not in ("auto", "cli", "pyslurm", "none"):
            raise ValueError(
                f"slurm_backend: {self.slurm_backend!r} is not one of auto, cli, pyslurm, none"
            )
        try:
            split_host_port(self.listen)
        except ValueError as exc:
            raise ValueError(f"listen: {exc}") from None
        if self.munge_listen:
            try:
                split_host_port(self.munge_listen)
            except ValueError as exc:
                raise ValueError(f"munge_listen: {exc}") from None
            if self.munge_listen == self.listen:
                raise ValueError("munge_listen: must differ from listen (agents need mTLS there)")
        if not self.insecure and not (self.tls_ca and self.tls_cert and self.tls_key):
            raise ValueError(
                "tls_ca, tls_cert and tls_key are required (agents connect with mTLS); "
                "set insecure = true only for demos and tests"
            )

    @property
    def retention_policy(self) -> Retention:
        return Retention(
            raw_s=self.retention,
            rollup_1m_s=self.rollup_1m_retention,
            rollup_1h_s=self.rollup_1h_retention,
            rollups=self.rollups,
            prune_batch=self.prune_batch,
        )

    @property
    def database(self) -> Path:
        return Path(self.db_path) if self.db_path else self.state_dir / "gpuwarden.db"

    @property
    def audit_path(self) -> Path:
        return Path(self.audit_jsonl) if self.audit_jsonl else self.state_dir / "audit.jsonl"


def load_collector_config(
    path: Path | None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> CollectorConfig:
    return load_section(CollectorConfig, "collector", path, environ, overrides)
