"""The async client of the collector's query API, for every reader (CLI, dashboard, jobstats).

It speaks protobuf to the collector and hands domain types (``gpuwarden.common.types``) to
its callers: readers never see a ``_pb2`` message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType

from gpuwarden.common.convert_query import (
    action_reply_from_pb,
    action_request_to_pb,
    audit_record_from_pb,
    cluster_event_from_pb,
    history_from_pb,
    job_stats_from_pb,
    snapshot_from_pb,
    waste_rows_from_pb,
)
from gpuwarden.common.jobstats import JobStats, WasteRow
from gpuwarden.common.tls import TlsFiles, make_channel
from gpuwarden.common.types import (
    ActionReply,
    ActionRequest,
    AuditRecord,
    ClusterSnapshot,
    HistoryPage,
    NodeState,
)
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from gpuwarden.query.config import ClientConfig
from gpuwarden.query.munge import munge_metadata

MAX_RECEIVE_BYTES = 64 << 20


class QueryClient:
    """``async with QueryClient(target) as client: snap = await client.snapshot()``.

    ``tls`` None means plaintext (demos, tests); give the collector's CA and a reader
    certificate for a collector that requires mTLS. ``munge``: every call carries a fresh
    MUNGE credential (a researcher). ``timeout_s`` bounds each call.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: TlsFiles | None = None,
        timeout_s: float = 10.0,
        munge: bool = False,
        munge_socket: str = "",
    ) -> None:
        self.target = target
        self.tls = tls
        self.timeout_s = timeout_s
        self.munge = munge
        self.munge_socket = munge_socket
        self._channel = make_channel(
            target, tls, [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
        )
        self._stub = pb_grpc.QueryServiceStub(self._channel)
        self._admin = pb_grpc.AdminServiceStub(self._channel)

    @classmethod
    def from_config(cls, cfg: ClientConfig) -> QueryClient:
        return cls(
            cfg.collector,
            tls=cfg.tls_files,
            timeout_s=cfg.timeout,
            munge=cfg.use_munge,
            munge_socket=cfg.munge_socket,
        )

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        """Per call: a fresh MUNGE credential (munged decodes each one only once)."""
        return await munge_metadata(self.munge_socket) if self.munge else ()

    async def __aenter__(self) -> QueryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def snapshot(self) -> ClusterSnapshot:
        """Every node's newest state."""
        resp: pb.ClusterSnapshot = await self._stub.GetSnapshot(
            pb.SnapshotRequest(), timeout=self.timeout_s, metadata=await self._metadata()
        )
        return snapshot_from_pb(resp)

    async def history(
        self,
        *,
        node: str = "",
        uuid: str = "",
        job_id: str = "",
        since: float = 0.0,
        until: float = 0.0,
        limit: int = 0,
    ) -> HistoryPage:
        """Stored windows of a node, a GPU or a job (at least one filter), oldest first."""
        req = pb.HistoryRequest(
            node=node, uuid=uuid, job_id=job_id, since=since, until=until, limit=limit
        )
        resp: pb.HistoryResponse = await self._stub.GetHistory(
            req, timeout=3 * self.timeout_s, metadata=await self._metadata()
        )
        return history_from_pb(resp)

    async def audit(
        self, *, job_id: str = "", since: float = 0.0, limit: int = 0
    ) -> list[AuditRecord]:
        """Audit records (all jobs when ``job_id`` is empty) from ``since``, newest first."""
        req = pb.AuditRequest(job_id=job_id, since=since, limit=limit)
        resp: pb.AuditResponse = await self._stub.GetAudit(
            req, timeout=self.timeout_s, metadata=await self._metadata()
        )
        return [audit_record_from_pb(r) for r in resp.records]

    async def job_stats(self, job_id: str) -> JobStats | None:
        """The summary of one job (None: no such job, or not the caller's to see)."""
        resp: pb.JobStats = await self._stub.GetJobStats(
            pb.JobStatsRequest(job_id=job_id),
            timeout=3 * self.timeout_s,
            metadata=await self._metadata(),
        )
        return job_stats_from_pb(resp)

    async def waste_report(self, since: float) -> list[WasteRow]:
        """GPU-hours by user, account and partition since ``since`` (readers, admins)."""
        resp: pb.WasteReport = await self._stub.GetWasteReport(
            pb.WasteReportRequest(since=since),
            timeout=6 * self.timeout_s,
            metadata=await self._metadata(),
        )
        return waste_rows_from_pb(resp)

    async def whoami(self) -> tuple[str, str, str]:
        """(name, role, via) of this client as the collector sees it."""
        resp: pb.WhoamiResponse = await self._stub.Whoami(
            pb.WhoamiRequest(), timeout=self.timeout_s, metadata=await self._metadata()
        )
        return resp.name, resp.role, resp.via

    async def policy_json(self) -> str:
        """The collector's active policy as JSON (admin certificates only; audited)."""
        resp: pb.PolicyResponse = await self._admin.GetPolicy(
            pb.PolicyRequest(), timeout=self.timeout_s, metadata=await self._metadata()
        )
        return resp.policy_json

    async def watch(self, include_snapshot: bool = True) -> AsyncIterator[NodeState | AuditRecord]:
        """Node states (first the whole cluster when ``include_snapshot``), then every change
        and every new audit record, until the caller stops or the stream breaks."""
        call = self._stub.Watch(
            pb.WatchRequest(include_snapshot=include_snapshot), metadata=await self._metadata()
        )
        async for msg in call:
            event = cluster_event_from_pb(msg)
            if event is not None:
                yield event

    async def request_action(self, request: ActionRequest) -> ActionReply:
        """Ask the collector to act on one job (admin role; audited with who asked)."""
        resp: pb.ActionReply = await self._admin.RequestAction(
            action_request_to_pb(request),
            timeout=6 * self.timeout_s,
            metadata=await self._metadata(),
        )
        return action_reply_from_pb(resp)
