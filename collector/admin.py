"""The admin API: actions a sysadmin takes on one job by hand (``AdminService``).

The authorization interceptor (``collector/authz.py``) lets only admins call
``RequestAction`` (anyone on a plaintext collector); here the request is checked (a job the
collector sees now, bounded text), carried out and written to the audit log with who asked:
the caller's certificate common name, or ``local`` on a plaintext collector. What each action does:

- ``warn``: a warning to the job's owner, through the same notifiers as the ladder's;
- ``release_dask_worker``, ``requeue``, ``requeuehold``: the executor carries it out when the
  job's policy enforces; otherwise the audit log says ``dry run: would ...`` and nothing
  happens to the job;
- ``exempt``: detection leaves the job alone for ``duration_s`` (kept in SQLite, so it
  survives a restart); :meth:`Exemptions.is_exempt` is the hook the engine asks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from gpuwarden.collector.authz import current_caller
from gpuwarden.collector.findings import Allocation, Finding, FindingKind, GpuRef
from gpuwarden.collector.ladder import Action, ActionExecutor, Decision
from gpuwarden.collector.policy import PolicySet
from gpuwarden.common.convert_query import action_reply_to_pb, action_request_from_pb
from gpuwarden.common.types import (
    ADMIN_ACTIONS,
    ActionReply,
    ActionRequest,
    AuditRecord,
    JobInfo,
    NodeState,
)
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.slurm.ids import is_job_id

if TYPE_CHECKING:
    from gpuwarden.collector.server import Collector

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_EXEMPT_S = 30 * 86400.0
MAX_REASON_CHARS = 500
LOCAL_ACTOR = "local"  # who acts on a plaintext collector (demos, tests)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exemption (
    job_id TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    granted REAL NOT NULL
);
"""


class RequestInvalid(ValueError):
    """A request that names something wrong; the message says what."""


class Exemptions:
    """Jobs an admin exempted from detection until a time: in memory for the engine's
    per-evaluation question, in a SQLite table so a restart keeps them."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        conn.executescript(_SCHEMA)
        self._until: dict[str, tuple[float, str]] = {
            job_id: (until, f"exempted by {actor} until {_clock(until)}: {reason}")
            for job_id, until, reason, actor in conn.execute(
                "SELECT job_id, until, reason, actor FROM exemption WHERE until > ?",
                (time.time(),),
            )
        }
        self._next_expiry = min((u for u, _ in self._until.values()), default=float("inf"))

    def __len__(self) -> int:
        """Exemptions held in memory (expired ones are dropped as time passes them)."""
        return len(self._until)

    def grant(self, job_id: str, until: float, reason: str, actor: str, now: float) -> str:
        """Exempt ``job_id`` until ``until`` (replacing an earlier exemption); the words the
        engine and the dashboard show."""
        words = f"exempted by {actor} until {_clock(until)}: {reason}"
        with self._lock:
            with self._conn:
                self._conn.execute(
                    "INSERT OR REPLACE INTO exemption (job_id, until, reason, actor, granted)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (job_id, until, reason, actor, now),
                )
            self._until[job_id] = (until, words)
            self._next_expiry = min(self._next_expiry, until)
        return words

    def is_exempt(self, job_id: str, now: float) -> str | None:
        """Why detection must leave ``job_id`` alone at ``now``, or None (any thread)."""
        if now >= self._next_expiry:
            self._forget_expired(now)
        entry = self._until.get(job_id)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def _forget_expired(self, now: float) -> None:
        """Drop what expired by ``now``: an exempted job that ended is never asked about
        again, and its entry would stay for the collector's life (the table keeps it)."""
        with self._lock:
            self._until = {j: e for j, e in self._until.items() if e[0] > now}
            self._next_expiry = min((u for u, _ in self._until.values()), default=float("inf"))

    def close(self) -> None:
        self._conn.close()


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="minutes")


def check_request(req: ActionRequest) -> ActionRequest:
    """The request if every field is acceptable; RequestInvalid naming the field otherwise."""
    if not is_job_id(req.job_id):
        raise RequestInvalid(f"job_id: {req.job_id[:40]!r} is not a Slurm job id")
    if req.action not in ADMIN_ACTIONS:
        raise RequestInvalid(
            f"action: {req.action[:40]!r} is not one of {', '.join(ADMIN_ACTIONS)}"
        )
    reason = req.reason.strip()
    if len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        raise RequestInvalid(f"reason: at most {MAX_REASON_CHARS} printable characters on one line")
    if req.action == "exempt":
        if not reason:
            raise RequestInvalid("reason: an exemption needs a reason (it goes to the audit log)")
        if not 0 < req.duration_s <= MAX_EXEMPT_S:  # also refuses NaN
            raise RequestInvalid(
                f"duration_s: {req.duration_s!r} is not between 0 and {MAX_EXEMPT_S:.0f} s"
            )
    elif req.duration_s:
        raise RequestInvalid(f"duration_s: only exempt takes a duration, not {req.action}")
    return ActionRequest(req.job_id, req.action, req.duration_s, reason)


def find_allocation(nodes: list[NodeState], job_id: str) -> Allocation | None:
    """The job's GPUs as the collector sees them now, or None when no GPU holds it."""
    job: JobInfo | None = None
    gpus: list[GpuRef] = []
    for node in nodes:
        for state in node.gpus:
            w = state.latest
            if w.job is not None and w.job.job_id == job_id:
                job = w.job
                gpus.append(GpuRef(node.node, w.uuid, w.index))
    return None if job is None else Allocation(job=job, gpus=tuple(gpus))


class AdminActions:
    """Carries out admin requests; ``handle`` blocks (an executor runs Slurm or Dask)."""

    def __init__(
        self,
        collector: Collector,
        *,
        policies: PolicySet,
        executor: ActionExecutor | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collector = collector
        self.policies = policies
        self.executor = executor
        self.clock = clock
        self._lock = threading.Lock()  # one admin action at a time

    def handle(self, req: ActionRequest, actor: str, nodes: list[NodeState]) -> AuditRecord:
        """Act on ``req`` (already checked) for ``actor``; the audit record to write.
        LookupError when the collector sees no GPU of the job."""
        allocation = find_allocation(nodes, req.job_id)
        if allocation is None:
            raise LookupError(f"job {req.job_id} holds no GPU the collector sees now")
        now = self.clock()
        enforce = self.policies.for_job(allocation.job).enforce
        dry_run = False
        because = f" ({req.reason})" if req.reason else ""
        with self._lock:
            if req.action == "exempt":
                words = self.collector.exemptions.grant(
                    req.job_id, now + req.duration_s, req.reason, actor, now
                )
                outcome, detail = "exempted", words
            elif req.action == "warn":
                outcome, detail = "warned", f"warning from {actor}{because}"
            elif not enforce:
                dry_run = True
                outcome = "dry_run"
                detail = f"dry run: would {req.action} (asked by {actor}{because})"
            elif self.executor is None:
                outcome, detail = "failed", "no action executor on this collector"
            else:
                finding = Finding(
                    kind=FindingKind.IDLE,
                    job_id=req.job_id,
                    gpus=allocation.gpus,
                    since_ts=now,
                    detail=f"asked by {actor}",
                )
                decision = Decision(now, allocation, finding, Action(req.action), reason=actor)
                result = self.executor.execute(decision)
                outcome = "done" if result.ok else "failed"
                detail = f"{result.detail} (asked by {actor}{because})"
            record = AuditRecord(
                ts=now,
                job_id=req.job_id,
                kind="admin",
                action=req.action,
                outcome=outcome,
                dry_run=dry_run,
                gpus=tuple(g.uuid for g in allocation.gpus),
                detail=detail,
                evidence={
                    "request": {
                        "action": req.action,
                        "duration_s": req.duration_s,
                        "reason": req.reason,
                    },
                    "policy": {"enforce": enforce},
                },
                actor=actor,
                user=allocation.job.user,  # a warning reaches this user's alerts
                account=allocation.job.account,
                partition=allocation.job.partition,
                nodes=tuple(dict.fromkeys(g.node for g in allocation.gpus)),
            )
        self.collector.notifiers.submit(record)  # a warning or a done action reaches the owner
        log.warning("admin %s: job %s %s: %s", actor, req.job_id, req.action, detail)
        return record


async def request_action(
    collector: Collector, request: pb.ActionRequest, context: Ctx
) -> pb.ActionReply:
    """``AdminService.RequestAction``: the authorization interceptor has let only an admin
    (or anyone, on a plaintext collector) through; this checks, acts and audits."""
    caller = current_caller()
    actor = caller.name if caller.via != "none" else LOCAL_ACTOR
    actions = collector.admin
    if actions is None:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION, "this collector takes no admin actions"
        )
        raise AssertionError("abort returned")  # pragma: no cover
    try:
        req = check_request(action_request_from_pb(request))
    except RequestInvalid as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise
    try:
        record = await asyncio.to_thread(actions.handle, req, actor, collector.state.nodes())
    except LookupError as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        raise
    await collector.audit_admin_call(record)  # the audit log and the watch stream
    return action_reply_to_pb(
        ActionReply(
            ok=record.outcome != "failed",
            outcome=record.outcome,
            detail=record.detail,
            actor=record.actor,
            dry_run=record.dry_run,
        )
    )


def attach_admin(
    collector: Collector, *, policies: PolicySet, executor: ActionExecutor | None
) -> AdminActions:
    """Let ``collector`` take admin actions (it refuses them with FAILED_PRECONDITION until
    this is called)."""
    collector.admin = AdminActions(collector, policies=policies, executor=executor)
    return collector.admin
