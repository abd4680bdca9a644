"""A small async client for the collector's query API (used by the CLI, demo and dashboard)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType

import grpc

from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc


class QueryClient:
    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.target = target
        opts = [("grpc.max_receive_message_length", 64 << 20)]
        self._channel = (
            grpc.aio.insecure_channel(target, options=opts)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, options=opts)
        )
        self._stub = pb_grpc.QueryServiceStub(self._channel)

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

    async def snapshot(self, timeout_s: float = 10.0) -> pb.ClusterSnapshot:
        resp: pb.ClusterSnapshot = await self._stub.GetSnapshot(
            pb.SnapshotRequest(), timeout=timeout_s
        )
        return resp

    async def history(
        self,
        *,
        node: str = "",
        uuid: str = "",
        job_id: str = "",
        since: float = 0.0,
        until: float = 0.0,
        limit: int = 0,
        timeout_s: float = 30.0,
    ) -> pb.HistoryResponse:
        req = pb.HistoryRequest(
            node=node, uuid=uuid, job_id=job_id, since=since, until=until, limit=limit
        )
        resp: pb.HistoryResponse = await self._stub.GetHistory(req, timeout=timeout_s)
        return resp

    async def audit(
        self, *, job_id: str = "", since: float = 0.0, limit: int = 0, timeout_s: float = 10.0
    ) -> pb.AuditResponse:
        req = pb.AuditRequest(job_id=job_id, since=since, limit=limit)
        resp: pb.AuditResponse = await self._stub.GetAudit(req, timeout=timeout_s)
        return resp

    async def watch(self, include_snapshot: bool = True) -> AsyncIterator[pb.ClusterEvent]:
        call = self._stub.Watch(pb.WatchRequest(include_snapshot=include_snapshot))
        async for event in call:
            yield event
