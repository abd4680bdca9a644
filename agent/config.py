"""Agent settings: the ``[agent]`` table of the TOML config, or GPUWARDEN_AGENT_* variables."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuwarden.agent.sampler import SAMPLERS, unknown_sampler_message
from gpuwarden.common.address import split_host_port
from gpuwarden.common.config import duration_field, load_section, ranged

SLURM_MODES = ("auto", "on", "off")
SLURM_BACKENDS = ("auto", "cli", "pyslurm")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    node: str = ""  # default: the short host name
    collector: str = "127.0.0.1:50051"
    sampler: str = "nvml"
    nvml_library: str = ""  # preload this libnvidia-ml.so.1 instead of the linker's choice
    dcgm_host: str = "localhost"  # the DCGM host engine, for sampler = "dcgm"
    sample_interval: float = duration_field(1.0, minimum=0.05)
    report_interval: float = duration_field(5.0, minimum=0.1)
    spool_dir: Path = Path("/var/lib/gpuwarden-agent/spool")
    spool_max_reports: int = ranged(17280, minimum=1)
    spool_max_bytes: int = ranged(256 << 20, minimum=4096)
    insecure: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    slurm: str = "auto"
    proc_root: Path = Path("/proc")
    scontrol: str = "scontrol"
    slurm_backend: str = "auto"  # how the node's jobs are listed: pyslurm where it matches
    slurm_cache_ttl: float = duration_field(10.0)
    slurm_timeout: float = duration_field(3.0, minimum=0.1)
    sim_gpus: int = ranged(4, minimum=1, maximum=64)
    sim_seed: int = 0
    reconnect_max_backoff: float = duration_field(30.0, minimum=0.1)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(unknown_sampler_message(self.sampler))
        if self.slurm not in SLURM_MODES:
            raise ValueError(f"slurm: {self.slurm!r} is not one of {', '.join(SLURM_MODES)}")
        if self.slurm_backend not in SLURM_BACKENDS:
            raise ValueError(
                f"slurm_backend: {self.slurm_backend!r} is not one of {', '.join(SLURM_BACKENDS)}"
            )
        if self.report_interval < self.sample_interval:
            raise ValueError(
                f"report_interval ({self.report_interval:g} s) is shorter than "
                f"sample_interval ({self.sample_interval:g} s)"
            )
        if not self.insecure and not (self.tls_ca and self.tls_cert and self.tls_key):
            raise ValueError(
                "tls_ca, tls_cert and tls_key are required (mTLS to the collector); "
                "set insecure = true only for demos and tests"
            )
        try:
            split_host_port(self.collector)
        except ValueError as exc:
            raise ValueError(f"collector: {exc}") from None

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname().split(".")[0]


def load_agent_config(
    path: Path | None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> AgentConfig:
    return load_section(AgentConfig, "agent", path, environ, overrides)
