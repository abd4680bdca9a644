"""The collector's gRPC servicers: agents' report streams, the query API, admin calls.

They stay thin: authorization is the interceptor's, validation, storage and state live in
their own modules, and protobuf is converted at this edge.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from gpuwarden.collector.admin import request_action
from gpuwarden.collector.authz import current_caller
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.validate import ReportInvalid, validate_report
from gpuwarden.collector.visibility import (
    JobOwners,
    node_for_user,
    snapshot_for_user,
    windows_for_user,
)
from gpuwarden.common.convert import (
    audit_record_to_pb,
    cluster_event_to_pb,
    job_stats_to_pb,
    node_state_to_pb,
    snapshot_to_pb,
    waste_rows_to_pb,
    window_record_to_pb,
)
from gpuwarden.common.types import AuditRecord
from gpuwarden.common.wire import ACKS_CUMULATIVE, ACKS_KEY, REJECTED_SEQ_KEY
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


def _retrieve(fut: asyncio.Future[bool]) -> None:
    """Mark an outcome nobody waits for any more as seen (no "never retrieved" noise)."""
    if not fut.cancelled():
        fut.exception()


def _wants_cumulative(context: Ctx) -> bool:
    """Whether the agent asked for cumulative acks (``Ack.cumulative``) on this stream."""
    for key, value in context.invocation_metadata() or ():
        if key == ACKS_KEY:
            return (value if isinstance(value, str) else value.decode(errors="replace")) == (
                ACKS_CUMULATIVE
            )
    return False


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self.c = collector

    async def _undecodable(self, exc: DecodeError, context: Ctx) -> None:
        """Bytes that are no NodeReport end the stream with INVALID_ARGUMENT (not UNKNOWN
        with a traceback in the log for each one); a flood is one log line a minute."""
        c = self.c
        c.undecodable += 1
        now = time.monotonic()
        if now - c.undecodable_logged >= 60.0:
            c.undecodable_logged = now
            log.warning(
                "a stream sent bytes that are no NodeReport (%s); %d so far", exc, c.undecodable
            )
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"message is not a gpuwarden.v1.NodeReport: {exc}"
        )

    async def Report(self, request_iterator: AsyncIterator[pb.NodeReport], context: Ctx) -> None:
        # Who may report for which node is checked by the Authorizer (collector/authz.py).
        cumulative = _wants_cumulative(context)
        # (seq, node, outcome) of each report handed to the ingestor, in the order received.
        pending: collections.deque[tuple[int, str, asyncio.Future[bool]]] = collections.deque()
        more = asyncio.Event()  # set when pending grows or reading has ended
        reading = True
        node_seen: str | None = None

        refused: list[tuple[int, ReportInvalid]] = []  # by the store, after validation
        failed: list[Exception] = []  # the store could not write

        async def write_acks() -> None:
            """Acks in the order received, as their transactions commit: one per report, or
            one per group commit on a cumulative stream."""
            while True:
                if not pending:
                    if not reading:
                        return
                    more.clear()
                    await more.wait()
                    continue
                with contextlib.suppress(Exception):  # read below, report by report
                    await pending[0][2]
                last: tuple[int, str] | None = None
                all_duplicates = True
                while pending and pending[0][2].done():
                    seq, node, fut = pending.popleft()
                    try:
                        duplicate = not fut.result()
                    except ReportInvalid as exc:  # valid on the wire, but the store refused it
                        refused.append((seq, exc))
                    except Exception as exc:  # the store cannot write now: resend later
                        failed.append(exc)
                    if refused or failed:
                        if last is not None:  # what came before it is stored
                            await context.write(
                                pb.Ack(
                                    node=last[1],
                                    seq=last[0],
                                    duplicate=all_duplicates,
                                    cumulative=True,
                                )
                            )
                        return
                    if cumulative:
                        last = (seq, node)
                        all_duplicates = all_duplicates and duplicate
                    else:
                        await context.write(pb.Ack(node=node, seq=seq, duplicate=duplicate))
                if last is not None:
                    await context.write(
                        pb.Ack(node=last[1], seq=last[0], duplicate=all_duplicates, cumulative=True)
                    )

        async def refuse(seq: int, node: str | None, exc: ReportInvalid) -> None:
            self.c.rejected += 1
            log.warning("rejected report seq=%d from %r: %s", seq, node, exc)
            context.set_trailing_metadata(((REJECTED_SEQ_KEY, str(seq)),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"report seq={seq}: {exc}")

        limits = self.c.limits
        rate_limiter = self.c.rate_limiter
        ingestor = self.c.ingestor
        acker = asyncio.create_task(write_acks())
        try:
            try:
                async for msg in request_iterator:
                    if acker.done():
                        break
                    try:
                        report = validate_report(msg, now=time.time(), limits=limits)
                    except ReportInvalid as exc:
                        await refuse(msg.seq, msg.node[:64], exc)
                    wait_s = rate_limiter.delay(report.node)
                    if wait_s > 0:
                        await asyncio.sleep(wait_s)  # back-pressure: this node's stream waits
                    if node_seen != report.node:
                        if node_seen is not None:
                            self.c.stream_closed(node_seen)
                        node_seen = report.node
                        self.c.stream_opened(node_seen, context.peer())
                    # Stored as received: no second encoding (unknown fields are not kept).
                    msg.DiscardUnknownFields()
                    blobs = [g.SerializeToString() for g in msg.gpus]
                    pending.append((report.seq, report.node, ingestor.submit(report, blobs)))
                    more.set()
            except DecodeError as exc:
                await self._undecodable(exc, context)
            reading = False
            more.set()
            await acker
            if refused:
                await refuse(refused[0][0], node_seen, refused[0][1])
            if failed:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the collector cannot store reports now: {failed[0]}; keep them and retry",
                )
        finally:
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acker
            for _seq, _node, fut in pending:  # never acked: the agent resends them
                fut.add_done_callback(_retrieve)
            if node_seen is not None:
                self.c.stream_closed(node_seen)


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
