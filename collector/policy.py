"""Detection and enforcement policy: every number of the detection semantics is a setting
(docs/architecture.md; every key in docs/policy.md).

The policy lives in the ``[policy]`` table of the TOML config, with per-partition overrides in
``[policy.partition.<name>]`` tables. Durations are seconds, written as ``1800``, ``"30m"``,
``"90s"`` or ``"2h"``; in the dataclass they are floats of seconds (the keys keep the names of
the design, as the other config sections do).

Precedence, lowest first: defaults, ``[policy]``, ``GPUWARDEN_POLICY_<KEY>`` environment
variables, ``[policy.partition.<name>]``, explicit overrides (command-line flags).
See docs/policy.md for the meaning of every key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuwarden.common.config import (
    ConfigError,
    build_section,
    check_sections,
    did_you_mean,
    duration_field,
    ranged,
    read_toml,
)
from gpuwarden.common.types import JobInfo

REQUEUE_MODES = ("requeue", "requeuehold")


@dataclass(frozen=True, slots=True)
class Policy:
    """One effective policy (the default, or a partition's)."""

    # Detection
    active_util_pct: float = ranged(5.0, minimum=0.0, maximum=100.0)
    idle_window: float = duration_field(1800.0, minimum=1.0)
    grace_period: float = duration_field(600.0)
    gpu_frac: float = ranged(0.0, minimum=0.0, maximum=1.0)
    underuse_window: float = duration_field(3600.0, minimum=1.0)
    underuse_pct: float = ranged(25.0, minimum=0.0, maximum=100.0)
    min_coverage: float = ranged(0.9, minimum=0.0, maximum=1.0)
    window: float = duration_field(60.0, minimum=0.001)
    max_gap: float = duration_field(120.0)
    # 0 = off: with it set, a window with SM activity is active only when its max SM
    # activity (profiling counters) is >= this; a window without SM activity falls back to
    # active_util_pct (NVML-only cards), and the evidence says which was used.
    active_sm_pct: float = ranged(0.0, minimum=0.0, maximum=100.0)
    # Advice
    mem_held_pct: float = ranged(5.0, minimum=0.0, maximum=100.0)
    mig_mem_pct: float = ranged(20.0, minimum=0.0, maximum=100.0)
    cpu_saturated_pct: float = ranged(90.0, minimum=0.0)
    # Training advice from profiling counters (see docs/profiling.md); each needs the field
    busy_util_pct: float = ranged(50.0, minimum=0.0, maximum=100.0)
    sm_waiting_pct: float = ranged(30.0, minimum=0.0, maximum=100.0)
    tensor_unused_pct: float = ranged(1.0, minimum=0.0, maximum=100.0)
    dram_bound_pct: float = ranged(60.0, minimum=0.0, maximum=100.0)
    pipes_low_pct: float = ranged(20.0, minimum=0.0, maximum=100.0)
    # Ladder and enforcement
    warnings: int = ranged(2, minimum=0, maximum=1000)
    warn_interval: float = duration_field(900.0)
    enforce: bool = False
    dask_release: bool = True
    requeue_mode: str = "requeue"
    allow_cancel: bool = False
    cancel_interactive: bool = False
    enforce_partly_idle: bool = False
    action_retries: int = ranged(3, minimum=1, maximum=100)
    action_backoff: float = duration_field(60.0)
    action_backoff_max: float = duration_field(900.0)
    # Exemptions: matching jobs get no finding at all
    exempt_users: tuple[str, ...] = ()
    exempt_accounts: tuple[str, ...] = ()
    exempt_partitions: tuple[str, ...] = ()
    exempt_qos: tuple[str, ...] = ()
    exempt_job_names: tuple[str, ...] = ()  # fnmatch globs, e.g. "interactive-*"
    exempt_nodes: tuple[str, ...] = ()  # fnmatch globs, e.g. "gpu-debug*"

    def __post_init__(self) -> None:
        if self.requeue_mode not in REQUEUE_MODES:
            raise ValueError(
                f"requeue_mode: {self.requeue_mode!r} is not one of {', '.join(REQUEUE_MODES)}"
            )
        if self.action_backoff_max < self.action_backoff:
            raise ValueError(
                f"action_backoff_max: {self.action_backoff_max:g} s is shorter than "
                f"action_backoff ({self.action_backoff:g} s)"
            )
        if self.cancel_interactive and not self.allow_cancel:
            raise ValueError("cancel_interactive: needs allow_cancel = true")
        for name in (
            "exempt_users",
            "exempt_accounts",
            "exempt_partitions",
            "exempt_qos",
            "exempt_job_names",
            "exempt_nodes",
        ):
            if any(not item for item in getattr(self, name)):
                raise ValueError(f"{name}: contains an empty entry")

    def exemption(self, job: JobInfo, nodes: Iterable[str] = ()) -> str | None:
        """Why ``job`` is exempt from detection, or None when it is not."""
        if job.user and job.user in self.exempt_users:
            return f"user {job.user} is exempt"
        if job.account and job.account in self.exempt_accounts:
            return f"account {job.account} is exempt"
        if job.partition and job.partition in self.exempt_partitions:
            return f"partition {job.partition} is exempt"
        if job.qos and job.qos in self.exempt_qos:
            return f"QOS {job.qos} is exempt"
        for pattern in self.exempt_job_names:
            if fnmatch.fnmatchcase(job.name, pattern):
                return f"job name {job.name!r} matches exempt pattern {pattern!r}"
        for node in nodes:
            for pattern in self.exempt_nodes:
                if fnmatch.fnmatchcase(node, pattern):
                    return f"node {node} matches exempt pattern {pattern!r}"
        return None

    def as_dict(self) -> dict[str, Any]:
        """Every setting, for audit evidence (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The default policy and the per-partition ones."""

    default: Policy = field(default_factory=Policy)
    partitions: Mapping[str, Policy] = field(default_factory=dict)

    def for_job(self, job: JobInfo) -> Policy:
        return self.partitions.get(job.partition, self.default)


def load_policy(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PolicySet:
    """Read ``[policy]`` and ``[policy.partition.<name>]`` from ``path`` (None: defaults only).

    ``overrides`` are raw values (as in TOML) that win over everything, e.g. the replay
    command's flags. Raises :class:`ConfigError` naming the table and key.
    """
    table: dict[str, Any] = {}
    if path is not None:
        doc = read_toml(path)
        known = {f.name for f in dataclasses.fields(Policy)}
        stray = sorted(k for k in doc if k in known)
        if stray:
            raise ConfigError(f"{path}: {stray[0]}: policy settings belong in a [policy] table")
        check_sections(doc, path)
        raw = doc.get("policy", {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [policy] must be a table")
        table = dict(raw)
        for key, value in table.items():
            if isinstance(value, dict) and key != "partition":
                near = did_you_mean(key, ["partition"])
                hint = f", did you mean [policy.{near}.<name>]?" if near else ""
                raise ConfigError(f"{path}: [policy.{key}]: unknown section{hint}")
    parts = table.pop("partition", {})
    if not isinstance(parts, dict) or not all(isinstance(v, dict) for v in parts.values()):
        raise ConfigError("[policy.partition]: expected tables such as [policy.partition.gpu]")
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    default = build_section(Policy, "policy", table, environ, flags=flags)
    base = default.as_dict()
    partitions: dict[str, Policy] = {}
    for name, part in parts.items():
        partitions[name] = build_section(
            Policy, f"policy.partition.{name}", {**base, **part, **flags}, {}
        )
    return PolicySet(default=default, partitions=partitions)
