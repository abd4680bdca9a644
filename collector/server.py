"""The collector daemon: gRPC server (agents, query API, health), store, live state.

Servicers stay thin: validation, storage and state live in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gpuwarden.collector.accounting import AuditCounts, IdleAccounting
from gpuwarden.collector.admin import AdminActions, Exemptions, request_action
from gpuwarden.collector.audit import AuditLog
from gpuwarden.collector.authz import Authorizer, current_caller
from gpuwarden.collector.ingest import Ingestor
from gpuwarden.collector.munge import MungeVerifier
from gpuwarden.collector.outputs.exporter import LiveView
from gpuwarden.collector.outputs.notify import NotifierHub
from gpuwarden.collector.outputs.running import SinkSet
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.retention import Retention
from gpuwarden.collector.state import ClusterState
from gpuwarden.collector.store import Store, connect
from gpuwarden.collector.summaries import JobStatsSource
from gpuwarden.collector.validate import Limits, ReportInvalid, validate_report
from gpuwarden.collector.visibility import (
    JobOwners,
    node_for_user,
    snapshot_for_user,
    windows_for_user,
)
from gpuwarden.common.address import peer_ip
from gpuwarden.common.convert import (
    audit_record_to_pb,
    cluster_event_to_pb,
    job_stats_to_pb,
    node_state_to_pb,
    snapshot_to_pb,
    waste_rows_to_pb,
    window_record_to_pb,
)
from gpuwarden.common.types import AuditRecord, ClusterSnapshot
from gpuwarden.common.wire import MAX_REPORT_BYTES, REJECTED_SEQ_KEY
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

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


async def _decoded(
    messages: AsyncIterator[pb.NodeReport], collector: Collector, context: Ctx
) -> AsyncIterator[pb.NodeReport]:
    """The stream's messages; bytes that are no NodeReport end the stream with
    INVALID_ARGUMENT (not UNKNOWN with a traceback in the log for each one)."""
    try:
        async for msg in messages:
            yield msg
    except DecodeError as exc:
        collector.undecodable += 1
        now = time.monotonic()
        if now - collector.undecodable_logged >= 60.0:  # a flood is one line a minute
            collector.undecodable_logged = now
            log.warning(
                "a stream sent bytes that are no NodeReport (%s); %d so far",
                exc,
                collector.undecodable,
            )
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"message is not a gpuwarden.v1.NodeReport: {exc}"
        )


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self.c = collector

    async def Report(self, request_iterator: AsyncIterator[pb.NodeReport], context: Ctx) -> None:
        # Who may report for which node is checked by the Authorizer (collector/authz.py).
        pending: asyncio.Queue[tuple[pb.NodeReport, asyncio.Future[bool]] | None] = asyncio.Queue()
        node_seen: str | None = None

        refused: list[tuple[int, ReportInvalid]] = []  # by the store, after validation
        failed: list[Exception] = []  # the store could not write

        async def write_acks() -> None:
            while (item := await pending.get()) is not None:
                msg, fut = item
                try:
                    duplicate = not await fut
                except ReportInvalid as exc:  # valid on the wire, but the store refused it
                    refused.append((msg.seq, exc))
                    return
                except Exception as exc:  # the store cannot write now: resend later
                    failed.append(exc)
                    return
                await context.write(pb.Ack(node=msg.node, seq=msg.seq, duplicate=duplicate))

        async def refuse(seq: int, node: str | None, exc: ReportInvalid) -> None:
            self.c.rejected += 1
            log.warning("rejected report seq=%d from %r: %s", seq, node, exc)
            context.set_trailing_metadata(((REJECTED_SEQ_KEY, str(seq)),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"report seq={seq}: {exc}")

        acker = asyncio.create_task(write_acks())
        try:
            async for msg in _decoded(request_iterator, self.c, context):
                if acker.done():
                    break
                try:
                    report = validate_report(msg, now=time.time(), limits=self.c.limits)
                except ReportInvalid as exc:
                    await refuse(msg.seq, msg.node[:64], exc)
                wait_s = self.c.rate_limiter.delay(report.node)
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
                pending.put_nowait((msg, self.c.ingestor.submit(report, blobs)))
            pending.put_nowait(None)
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
            while not pending.empty():  # never acked: the agent resends them
                item = pending.get_nowait()
                if item is not None:
                    item[1].add_done_callback(_retrieve)
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


class Collector:
    """Wires store, state, ingestion and the gRPC services together."""

    def __init__(
        self,
        *,
        db_path: Path,
        listen: str = "127.0.0.1:0",
        tls: tuple[bytes, bytes, bytes] | None = None,  # (ca, cert, key)
        limits: Limits | None = None,
        write_batch_max: int = 512,
        shutdown_grace_s: float = 5.0,
        sinks: SinkSet | None = None,
        notifiers: NotifierHub | None = None,
        rate_limiter: RateLimiter | None = None,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
        min_free_bytes: int = 0,
        roles: dict[str, str] | None = None,
        munge: MungeVerifier | None = None,
        munge_listen: str = "",
        audit_jsonl: Path | None = None,
    ) -> None:
        self.listen = listen
        self.tls = tls
        self.munge_listen = munge_listen  # TLS without client certificates: MUNGE callers
        self.munge_port = 0
        self.audit_jsonl = audit_jsonl
        self.policy_source: Callable[[], PolicySet] | None = None  # for AdminService.GetPolicy
        self.limits = limits or Limits()
        self.shutdown_grace_s = shutdown_grace_s
        self.store = Store(db_path, retention=retention, clock=clock, min_free_bytes=min_free_bytes)
        self.state = ClusterState()
        self.sinks = sinks or SinkSet()
        self.notifiers = notifiers or NotifierHub()  # fed ladder events through submit()
        self.ingestor = Ingestor(
            self.store, self.state, batch_max=write_batch_max, sinks=self.sinks
        )
        self.audit: AuditSource | None = None
        self.jobstats = JobStatsSource(self.store)  # attach_enforcement gives it the policy
        self.ingestor.listeners.append(self.jobstats.on_stored)
        self.exemptions = Exemptions(connect(db_path))
        self.admin: AdminActions | None = None  # set by collector.admin.attach_admin
        self.idle_accounting = IdleAccounting()  # idle GPU-seconds by user, for /metrics
        self.ingestor.listeners.append(self.idle_accounting.on_stored)
        self.audit_counts = AuditCounts(db_path)
        self.rate_limiter = rate_limiter or RateLimiter(rate_per_s=100.0, burst=1000)
        self.rejected = 0
        self.undecodable = 0
        self.undecodable_logged = -math.inf
        self.ingestor.fault_listeners.append(self._on_store_fault)
        self.port = 0
        self._streams: dict[str, int] = {}
        self.node_addresses: dict[str, str] = {}  # node -> IP its agent connected from
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._background: list[asyncio.Task[Any]] = []
        self._admin_audit: AuditLog | None = None  # admin calls, with who made them
        self._admin_audit_conn: sqlite3.Connection | None = None
        self._admin_audit_lock = threading.Lock()
        self.authorizer = Authorizer(
            tls=tls is not None, roles=roles, munge=munge, audit=self.audit_admin_call
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self.sinks.start()
        self.notifiers.start()
        self.ingestor.start()
        server = grpc.aio.server(
            interceptors=[self.authorizer],
            options=[
                ("grpc.max_receive_message_length", MAX_REPORT_BYTES),
                ("grpc.max_send_message_length", 64 << 20),
                # The port is ours alone: with SO_REUSEPORT a second collector would start
                # on it and the kernel would split the agents between the two databases.
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_AgentServiceServicer_to_server(AgentServicer(self), server)
        pb_grpc.add_QueryServiceServicer_to_server(QueryServicer(self), server)
        pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(self.listen)
            else:
                ca, cert, key = self.tls
                creds = grpc.ssl_server_credentials(
                    [(key, cert)], root_certificates=ca, require_client_auth=True
                )
                self.port = server.add_secure_port(self.listen, creds)
        except RuntimeError:  # grpc's "Failed to bind to address"
            self.port = 0
        if self.port and self.munge_listen:
            self.munge_port = self._add_munge_port(server)
        if self.port == 0 or (self.munge_listen and self.munge_port == 0):
            await server.stop(None)
            where = self.listen if self.port == 0 else self.munge_listen
            raise OSError(
                f"cannot listen on {where}: the address is in use (another collector?) "
                "or not available on this machine"
            )
        self._admin_audit_conn = connect(self.store.path)
        self._admin_audit = AuditLog(conn=self._admin_audit_conn, jsonl=self.audit_jsonl)
        await server.start()
        self._server = server
        for name in (
            "",
            "gpuwarden.v1.AgentService",
            "gpuwarden.v1.QueryService",
            "gpuwarden.v1.AdminService",
        ):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("collector listening on port %d (db %s)", self.port, self.store.path)
        self.add_background(self._summarize_forever, "jobstats")

    async def _summarize_forever(self) -> None:
        """Add stored windows to the running jobs' summaries, off the event loop."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(self.jobstats.drain)
            except Exception:
                log.exception("job summaries: adding windows failed; trying again")

    def _add_munge_port(self, server: grpc.aio.Server) -> int:
        """The researchers' port: server-authenticated TLS that asks for no client
        certificate (grpc cannot ask for one without requiring it), so every call there
        must carry a MUNGE credential."""
        try:
            if self.tls is None:
                return server.add_insecure_port(self.munge_listen)
            _ca, cert, key = self.tls
            creds = grpc.ssl_server_credentials([(key, cert)], require_client_auth=False)
            return server.add_secure_port(self.munge_listen, creds)
        except RuntimeError:
            return 0

    async def audit_admin_call(self, record: AuditRecord) -> None:
        """Write an admin call's (or an admin action's) record and publish it."""

        def write() -> None:
            with self._admin_audit_lock:
                if self._admin_audit is not None:
                    self._admin_audit.append(record)

        await asyncio.to_thread(write)
        self.state.publish(record)

    def add_background(self, coro_factory: Callable[[], Any], name: str) -> None:
        self._background.append(asyncio.create_task(coro_factory(), name=name))

    async def stop(self) -> None:
        """NOT_SERVING, stop accepting with a grace period, write what is queued, close."""
        await self._health.enter_graceful_shutdown()
        for t in self._background:
            t.cancel()
        for t in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            await self._server.stop(self.shutdown_grace_s)
            self._server = None
        await self.ingestor.stop()
        await asyncio.to_thread(self.sinks.stop)  # deliver or keep on disk what is queued
        await asyncio.to_thread(self.notifiers.stop)
        self.audit_counts.close()
        with self._admin_audit_lock:
            if self._admin_audit is not None:
                self._admin_audit.close()
                if self._admin_audit_conn is not None:
                    self._admin_audit_conn.close()
                self._admin_audit = None
        self.jobstats.close()
        self.exemptions.close()
        self.store.close()

    @property
    def store_fault(self) -> str | None:
        """Why the store cannot write now (health is NOT_SERVING meanwhile), or None."""
        return self.ingestor.fault

    def _on_store_fault(self, reason: str | None) -> None:
        if self._server is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if reason is None
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

        async def set_all() -> None:
            for name in ("", "gpuwarden.v1.AgentService"):
                await self._health.set(name, status)

        self.add_background(set_all, "health")

    # -- used by the servicers -----------------------------------------------------------
    def stream_opened(self, node: str, peer: str = "") -> None:
        self._streams[node] = self._streams.get(node, 0) + 1
        ip = peer_ip(peer)
        if ip is not None:  # where this node's agent connects from (trusted Dask schedulers)
            self.node_addresses[node] = ip
        self.state.set_connected(node, True)

    def stream_closed(self, node: str) -> None:
        left = self._streams.get(node, 1) - 1
        if left <= 0:
            self._streams.pop(node, None)
            self.state.set_connected(node, False)
        else:
            self._streams[node] = left

    def snapshot(self) -> ClusterSnapshot:
        return ClusterSnapshot(
            now=time.time(),
            nodes=tuple(self.state.nodes()),
            windows_stored=self.store.count_windows(),
        )

    def is_exempt(self, job_id: str, now: float) -> str | None:
        """Why detection must leave ``job_id`` alone at ``now`` (an admin exempted it), or
        None: the engine's hook, safe from any thread."""
        return self.exemptions.is_exempt(job_id, now)

    def live_view(self) -> LiveView:
        """What exporters render at scrape time."""
        return LiveView(
            now=time.time(),
            state=self.state,
            windows_stored=self.store.count_windows(),
            sinks=tuple(self.sinks.stats()),
            notifiers=tuple(self.notifiers.stats()),
            alerts_dropped=self.notifiers.dropped,
            reports_stored=self.ingestor.stored,
            reports_duplicate=self.ingestor.duplicates,
            reports_rejected=self.rejected,
            idle_gpu_seconds=self.idle_accounting.idle_gpu_seconds(),
            audit_counts=self.audit_counts.counts(),
        )

    def add_stored_listener(self, listener: Callable[[Sequence[Any]], None]) -> None:
        self.ingestor.listeners.append(listener)
