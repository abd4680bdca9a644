"""What a researcher (MUNGE identity) may see: their own jobs, nothing of anyone else's.

Pure functions over domain types, plus the job -> owner look-up the audit filter needs.
Node names, connection and Slurm state stay visible (``sinfo`` shows them to everyone);
GPUs that do not hold one of the researcher's jobs are left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from gpuwarden.common.types import (
    AuditRecord,
    ClusterSnapshot,
    GpuWindow,
    NodeState,
    WindowRecord,
)


def owns(gpu: GpuWindow, user: str) -> bool:
    return gpu.job is not None and bool(user) and gpu.job.user == user


def node_for_user(node: NodeState, user: str) -> NodeState:
    """``node`` with only the GPUs that hold one of ``user``'s jobs."""
    return dataclasses.replace(node, gpus=tuple(g for g in node.gpus if owns(g.latest, user)))


def snapshot_for_user(snap: ClusterSnapshot, user: str) -> ClusterSnapshot:
    return dataclasses.replace(snap, nodes=tuple(node_for_user(n, user) for n in snap.nodes))


def windows_for_user(records: Iterable[WindowRecord], user: str) -> list[WindowRecord]:
    return [r for r in records if owns(r.gpu, user)]


class JobOwners:
    """job id -> the user the newest stored window names (``lookup`` reads the store).
    A known owner is kept (a Slurm job id does not change hands); bounded."""

    def __init__(self, lookup: Callable[[str], str | None], max_entries: int = 100_000) -> None:
        self._lookup = lookup
        self._max = max_entries
        self._known: dict[str, str] = {}

    def owner(self, job_id: str) -> str | None:
        if not job_id:
            return None
        user = self._known.get(job_id)
        if user is None:
            user = self._lookup(job_id)
            if user:
                if len(self._known) >= self._max:
                    self._known.pop(next(iter(self._known)))
                self._known[job_id] = user
        return user or None

    def records_for_user(self, records: Iterable[AuditRecord], user: str) -> list[AuditRecord]:
        return [r for r in records if user and self.owner(r.job_id) == user]
