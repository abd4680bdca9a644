"""What the action ladder decides, as data: actions, decisions, outcomes and events.

:mod:`ladder` decides; executors (:mod:`actions`), the audit log, alerts and replay read
these.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gpuwarden.collector.findings import Allocation, Finding


class Action(StrEnum):
    NONE = "none"
    WARN = "warn"
    RELEASE_DASK_WORKER = "release_dask_worker"
    REQUEUE = "requeue"
    REQUEUEHOLD = "requeuehold"
    CANCEL = "cancel"


ENFORCING = frozenset(
    {Action.RELEASE_DASK_WORKER, Action.REQUEUE, Action.REQUEUEHOLD, Action.CANCEL}
)


class Status(StrEnum):
    REPORTED = "reported"  # report-only finding, action none
    WARNED = "warned"  # a warning to deliver
    DRY_RUN = "dry_run"  # enforcement off: the action that would have been taken
    DONE = "done"  # the executor carried the action out
    FAILED = "failed"  # the executor failed; retry or fall back (see detail)
    ABORTED = "aborted"  # the re-check right before acting found the allocation in use


@dataclass(frozen=True, slots=True)
class Decision:
    ts: float
    allocation: Allocation
    finding: Finding
    action: Action
    attempt: int = 0  # warning number for warn, attempt number for an action
    reason: str = ""

    @property
    def job_id(self) -> str:
        return self.allocation.job.job_id


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    ok: bool
    detail: str = ""


class ActionExecutor(Protocol):
    def execute(self, decision: Decision) -> ActionOutcome: ...


@dataclass(frozen=True, slots=True)
class LadderEvent:
    decision: Decision
    status: Status
    detail: str

    @property
    def dry_run(self) -> bool:
        return self.status is Status.DRY_RUN
