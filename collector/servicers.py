"""The collector's gRPC servicers for the query API and admin calls (agents' report streams
are :mod:`agent_service`'s).

They stay thin: authorization is the interceptor's, storage and state live in their own
modules, and protobuf is converted at this edge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from gpuwarden.collector.admin import request_action
from gpuwarden.collector.authz import current_caller
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.visibility import (
    JobOwners,
    node_for_user,
    snapshot_for_user,
    windows_for_user,
)
from gpuwarden.common.convert import window_record_to_pb
from gpuwarden.common.convert_query import (
    audit_record_to_pb,
    cluster_event_to_pb,
    job_stats_to_pb,
    node_state_to_pb,
    snapshot_to_pb,
    waste_rows_to_pb,
)
from gpuwarden.common.types import AuditRecord
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from gpuwarden.collector.server import Collector

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]

HISTORY_DEFAULT_LIMIT = 10_000
HISTORY_MAX_LIMIT = 100_000
MAX_JOB_ID_CHARS = 128


class AuditSource(Protocol):
    def query(self, job_id: str, since: float, limit: int) -> list[AuditRecord]:
        """Records of ``job_id`` (all jobs when empty) from ``since``, newest first."""
        ...


class QueryServicer(pb_grpc.QueryServiceServicer):
    """Reads; a researcher's (``current_caller().researcher``) see only their own jobs."""

    def __init__(self, collector: Collector) -> None:
        self.c = collector
        self.owners = JobOwners(collector.store.job_user)

    async def GetSnapshot(self, request: pb.SnapshotRequest, context: Ctx) -> pb.ClusterSnapshot:
        snap = self.c.snapshot()
        caller = current_caller()
        if caller.researcher:
            snap = snapshot_for_user(snap, caller.name)
        return snapshot_to_pb(snap)

    async def Whoami(self, request: pb.WhoamiRequest, context: Ctx) -> pb.WhoamiResponse:
        caller = current_caller()
        return pb.WhoamiResponse(name=caller.name, role=caller.role, via=caller.via)

    async def _visible(self, events: list[Any], user: str) -> list[Any]:
        out: list[Any] = []
        for ev in events:
            if isinstance(ev, AuditRecord):
                if await asyncio.to_thread(self.owners.owner, ev.job_id) == user:
                    out.append(ev)
            else:
                out.append(node_for_user(ev, user))
        return out

    async def Watch(self, request: pb.WatchRequest, context: Ctx) -> AsyncIterator[pb.ClusterEvent]:
        caller = current_caller()
        watcher = self.c.state.subscribe()
        try:
            if request.include_snapshot:
                for n in self.c.state.nodes():
                    if caller.researcher:
                        n = node_for_user(n, caller.name)
                    yield pb.ClusterEvent(node=node_state_to_pb(n))
            while True:
                events = await watcher.get()
                if events is None:  # fell behind: send the whole cluster again
                    events = list(self.c.state.nodes())
                if caller.researcher:
                    events = await self._visible(list(events), caller.name)
                for ev in events:
                    yield cluster_event_to_pb(ev)
        finally:
            self.c.state.unsubscribe(watcher)

    async def GetHistory(self, request: pb.HistoryRequest, context: Ctx) -> pb.HistoryResponse:
        if not (request.node or request.uuid or request.job_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "give at least one of node, uuid, job_id"
            )
        limit = request.limit or HISTORY_DEFAULT_LIMIT
        if limit > HISTORY_MAX_LIMIT:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"limit={limit} is above the maximum {HISTORY_MAX_LIMIT}",
            )
        caller = current_caller()
        if caller.researcher and request.job_id:
            owner = await asyncio.to_thread(self.owners.owner, request.job_id)
            if owner != caller.name:
                return pb.HistoryResponse()  # another user's job, or none: nothing to see
        records, truncated = await asyncio.to_thread(
            self.c.store.history,
            node=request.node,
            uuid=request.uuid,
            job_id=request.job_id,
            since=request.since,
            until=request.until or None,
            limit=limit,
        )
        if caller.researcher:
            records = windows_for_user(records, caller.name)
        return pb.HistoryResponse(
            windows=[window_record_to_pb(r) for r in records], truncated=truncated
        )

    async def GetAudit(self, request: pb.AuditRequest, context: Ctx) -> pb.AuditResponse:
        if self.c.audit is None:
            return pb.AuditResponse()
        caller = current_caller()
        records = await asyncio.to_thread(
            self.c.audit.query, request.job_id, request.since, request.limit or 1000
        )
        if caller.researcher:
            records = await asyncio.to_thread(self.owners.records_for_user, records, caller.name)
        return pb.AuditResponse(records=[audit_record_to_pb(r) for r in records])

    async def GetJobStats(self, request: pb.JobStatsRequest, context: Ctx) -> pb.JobStats:
        job_id = request.job_id
        if not job_id or len(job_id) > MAX_JOB_ID_CHARS or not job_id.isprintable():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id: not a job id")
        stats = await asyncio.to_thread(self.c.jobstats.job_stats, job_id)
        caller = current_caller()
        if stats is not None and caller.researcher and stats.user != caller.name:
            stats = None  # another user's job looks like no job at all
        return job_stats_to_pb(stats)

    async def GetWasteReport(self, request: pb.WasteReportRequest, context: Ctx) -> pb.WasteReport:
        # researchers are refused by the Authorizer: this is every user's waste
        now = time.time()
        if not math.isfinite(request.since) or not 0 <= request.since <= now:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "since: not a past time")
        rows = await asyncio.to_thread(self.c.jobstats.waste_report, request.since, now)
        return waste_rows_to_pb(rows)


def policy_json(policies: PolicySet) -> str:
    """The active policy set as JSON: the default and each partition's."""
    return json.dumps(
        {
            "default": dataclasses.asdict(policies.default),
            "partitions": {k: dataclasses.asdict(p) for k, p in policies.partitions.items()},
        },
        sort_keys=True,
        default=str,
    )


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Admin calls; the Authorizer lets only admins in and audits every call."""

    def __init__(self, collector: Collector) -> None:
        self.c = collector

    async def GetPolicy(self, request: pb.PolicyRequest, context: Ctx) -> pb.PolicyResponse:
        source = self.c.policy_source
        return pb.PolicyResponse(policy_json=policy_json(source() if source else PolicySet()))

    async def RequestAction(self, request: pb.ActionRequest, context: Ctx) -> pb.ActionReply:
        return await request_action(self.c, request, context)
