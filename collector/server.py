"""The collector daemon: wires the gRPC server (agents, query API, admin calls, health),
the store, ingestion, live state and outputs together. The servicers are in
:mod:`agent_service` (agents' reports) and :mod:`servicers` (queries, admin calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gpuwarden.collector.accounting import AuditCounts, IdleAccounting
from gpuwarden.collector.admin import AdminActions, Exemptions
from gpuwarden.collector.agent_service import AgentServicer
from gpuwarden.collector.audit import AuditLog
from gpuwarden.collector.authz import Authorizer
from gpuwarden.collector.ingest import COMMIT_WINDOW_S, Ingestor
from gpuwarden.collector.munge import MungeVerifier
from gpuwarden.collector.outputs.exporter import LiveView
from gpuwarden.collector.outputs.notify import NotifierHub
from gpuwarden.collector.outputs.running import SinkSet
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.retention import Retention
from gpuwarden.collector.servicers import AdminServicer, AuditSource, QueryServicer
from gpuwarden.collector.state import ClusterState
from gpuwarden.collector.store import Store, connect
from gpuwarden.collector.summaries import JobStatsSource
from gpuwarden.collector.validate import Limits
from gpuwarden.common.address import peer_ip
from gpuwarden.common.types import AuditRecord, ClusterSnapshot
from gpuwarden.common.wire import MAX_REPORT_BYTES
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# Streams opened at once that the collector takes up without refusing any (a whole site's
# agents reconnecting after a restart); past twice this gRPC refuses every new call.
MAX_PENDING_CALLS = 20_000

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_REPORT_BYTES),
    ("grpc.max_send_message_length", 64 << 20),
    # The port is ours alone: with SO_REUSEPORT a second collector would start on it and the
    # kernel would split the agents between the two databases.
    ("grpc.so_reuseport", 0),
    # Calls that arrived but that the server has not yet taken up: beyond 1,000 (gRPC's
    # default) gRPC cancels a growing share of new ones at random, so agents reconnecting all
    # at once would see their streams end CANCELLED or INTERNAL before sending anything.
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
]


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
        commit_window_s: float = COMMIT_WINDOW_S,
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
            self.store,
            self.state,
            batch_max=write_batch_max,
            commit_window_s=commit_window_s,
            sinks=self.sinks,
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
            options=SERVER_OPTIONS,
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

    def forget_silent_nodes(self, before: float) -> None:
        """What the collector keeps per node, for nodes silent since before ``before``."""
        for node in self.state.forget_silent(before):
            self.node_addresses.pop(node, None)

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
