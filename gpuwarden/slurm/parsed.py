"""``ParsedJobs``: what a parser read, and the records it had to skip."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuwarden.slurm.job import SlurmJob

__all__ = ["ParsedJobs"]


@dataclass(frozen=True, slots=True)
class ParsedJobs:
    jobs: list[SlurmJob] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one message per unreadable record
