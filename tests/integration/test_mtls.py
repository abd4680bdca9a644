"""mTLS between agents and the collector: the node in a report must be the certificate's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gpuwarden.agent.client import ReportStreamer, TlsFiles
from gpuwarden.agent.spool import Spool
from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.tls import make_channel
from gpuwarden.common.types import GpuWindow, NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from tests.helpers import streaming, wait_for
from tests.pki import TestCA, server_tls


def report(node: str, seq: int) -> pb.NodeReport:
    return report_to_pb(
        NodeReport(
            node=node,
            seq=seq,
            window_start=1_700_000_000,
            window_end=1_700_000_005,
            gpus=(GpuWindow(uuid=f"GPU-{node}", index=0, samples=5, util_max=12.0),),
        )
    )


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
async def tls_collector(ca: TestCA, tmp_path: Path) -> AsyncIterator[Collector]:
    c = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0", tls=server_tls(ca))
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def test_agent_with_its_node_certificate_is_stored(
    tls_collector: Collector, ca: TestCA, tmp_path: Path
) -> None:
    n1 = ca.issue("n1", role="node")
    spool = Spool(tmp_path / "spool")
    seq = spool.next_seq()
    spool.put(seq, report("n1", seq).SerializeToString())
    streamer = ReportStreamer(
        f"127.0.0.1:{tls_collector.port}", spool, tls=TlsFiles(ca.ca, n1.cert, n1.key)
    )
    async with streaming(streamer):
        await wait_for(lambda: len(spool) == 0)
    assert [r.node for r in tls_collector.store.history(node="n1")[0]] == ["n1"]


async def test_report_for_another_node_is_denied_and_not_stored(
    tls_collector: Collector, ca: TestCA
) -> None:
    n1 = ca.issue("n1", role="node")
    async with make_channel(
        f"127.0.0.1:{tls_collector.port}", TlsFiles(ca.ca, n1.cert, n1.key)
    ) as ch:
        call = pb_grpc.AgentServiceStub(ch).Report()
        await call.write(report("n2", 1))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "authenticated as 'n1'" in (err.value.details() or "")
    assert tls_collector.store.count_reports() == 0


async def test_client_without_a_certificate_cannot_connect(
    tls_collector: Collector, ca: TestCA
) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=ca.ca.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{tls_collector.port}", creds) as ch:
        call = pb_grpc.AgentServiceStub(ch).Report()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.write(report("n1", 1))
            await call.read()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert tls_collector.store.count_reports() == 0


@pytest.mark.parametrize(
    ("batch_node", "report_nodes", "code", "says"),
    [
        ("n2", ["n2"], grpc.StatusCode.PERMISSION_DENIED, "authenticated as 'n1'"),
        ("n1", ["n1", "n2"], grpc.StatusCode.INVALID_ARGUMENT, "is not the batch's node"),
    ],
    ids=["batch-for-another-node", "report-for-another-node-in-own-batch"],
)
async def test_a_batch_carrying_another_nodes_reports_is_refused_and_not_stored(
    tls_collector: Collector,
    ca: TestCA,
    batch_node: str,
    report_nodes: list[str],
    code: grpc.StatusCode,
    says: str,
) -> None:
    n1 = ca.issue("n1", role="node")
    batch = pb.NodeReportBatch(
        node=batch_node, reports=[report(n, seq) for seq, n in enumerate(report_nodes, 1)]
    )
    async with make_channel(
        f"127.0.0.1:{tls_collector.port}", TlsFiles(ca.ca, n1.cert, n1.key)
    ) as ch:
        call = pb_grpc.AgentServiceStub(ch).ReportBatch()
        await call.write(batch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ack in call:
                pass
    assert err.value.code() == code
    assert says in (err.value.details() or "")
    await asyncio.sleep(0.1)  # what was queued before the refusal is written
    assert [r.node for r in tls_collector.store.history(node="n2")[0]] == []
