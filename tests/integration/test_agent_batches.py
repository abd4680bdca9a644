"""The agent's backlog on ReportBatch with cumulative acks, against the real grpcio collector
(and against collectors older than either): what is stored, how many acks it took, what is
set aside, and that nothing is lost or stored twice."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gpuwarden.agent.client import ReportStreamer
from gpuwarden.agent.spool import Spool
from gpuwarden.collector import agent_service
from gpuwarden.collector.agent_service import AgentServicer
from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.server import Collector
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from tests.helpers import free_port, spool_reports, streaming, wait_for


def unlimited(db: Path, port: int = 0) -> Collector:
    """A collector without the per-node rate limit (the default lets a node catch up at 100
    reports/s)."""
    return Collector(db_path=db, listen=f"127.0.0.1:{port}", rate_limiter=RateLimiter(1e6, 1e6))


@pytest.fixture
async def collector_unlimited(tmp_path: Path) -> AsyncIterator[Collector]:
    c = unlimited(tmp_path / "collector.db")
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def test_a_backlog_of_10000_drains_in_batches_with_far_fewer_acks_each_stored_once(
    tmp_path: Path,
) -> None:
    collector = unlimited(tmp_path / "db")
    await collector.start()
    spool = Spool(tmp_path / "spool", max_reports=20_000)
    spool_reports(spool, 10_000)
    streamer = ReportStreamer(f"127.0.0.1:{collector.port}", spool)
    try:
        async with streaming(streamer):
            await wait_for(lambda: len(spool) == 0, timeout_s=120)
            batches = streamer.batches
            # caught up: a new report goes alone on Report, not in a batch of one
            spool_reports(spool, 1)
            streamer.notify_new_report()
            await wait_for(lambda: len(spool) == 0)
        stored = collector.store.count_reports()
    finally:
        await collector.stop()
    assert stored == 10_001
    assert streamer.acked == 10_001
    assert streamer.acks <= 10_001 // 20  # one per group commit, not one per report
    assert 10_000 // 256 <= batches <= 10_000 // 32
    assert streamer.batches == batches
    assert spool.size_bytes == 0


async def test_a_rejected_report_inside_a_batch_is_set_aside_and_the_rest_stored(
    collector_unlimited: Collector, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    good = spool_reports(spool, 300, node="n9", util=10.0)
    (bad,) = spool_reports(spool, 1, node="n9", util=150.0)  # util_max outside [0, 100]
    good += spool_reports(spool, 299, node="n9", util=20.0)
    streamer = ReportStreamer(
        f"127.0.0.1:{collector_unlimited.port}", spool, backoff_initial_s=0.05
    )
    async with streaming(streamer):
        await wait_for(lambda: len(spool) == 0)
    assert streamer.rejected == 1 and streamer.batches >= 2
    assert (spool.directory / "rejected" / f"{bad:020d}.pb").exists()
    assert collector_unlimited.store.count_reports() == len(good) == 599
    records, _ = collector_unlimited.store.history(node="n9", resolution=0)
    assert all(r.gpu.util_max in (10.0, 20.0) for r in records)


async def test_a_collector_restart_in_the_middle_of_a_backlog_stores_each_report_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    db = tmp_path / "db.sqlite"
    # the first collector slow enough (500 reports/s for the node) to be stopped mid-backlog
    first = Collector(db_path=db, listen=f"127.0.0.1:{port}", rate_limiter=RateLimiter(500, 50))
    await first.start()
    spool = Spool(tmp_path / "spool")
    spool_reports(spool, 3000)
    streamer = ReportStreamer(f"127.0.0.1:{port}", spool, backoff_initial_s=0.05)
    streamer.backoff_max_s = 0.2
    async with streaming(streamer):
        await wait_for(lambda: streamer.acked >= 300)
        await first.stop()  # batches sent, some stored and unacked, some never read
        assert len(spool) > 0
        spool_reports(spool, 50)  # while no collector listens
        second = unlimited(db, port)
        await second.start()
        try:
            await wait_for(lambda: len(spool) == 0, timeout_s=60)
            stored = second.store.count_reports()
        finally:
            await second.stop()
    assert stored == 3050
    assert streamer.connections >= 2 and streamer.batches >= 2


def older_collector(collector: Collector) -> grpc.aio.Server:
    """A server with only ``Report`` (as before ReportBatch), storing through ``collector``."""
    servicer = AgentServicer(collector)

    handler = grpc.method_handlers_generic_handler(
        "gpuwarden.v1.AgentService",
        {
            "Report": grpc.stream_stream_rpc_method_handler(
                servicer.Report,
                request_deserializer=pb.NodeReport.FromString,
                response_serializer=pb.Ack.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    return server


@pytest.mark.parametrize("cumulative", [True, False], ids=["cumulative-acks", "acks-per-report"])
async def test_a_collector_without_report_batch_gets_the_backlog_on_report_once_each(
    collector_unlimited: Collector,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    cumulative: bool,
) -> None:
    if not cumulative:  # as before cumulative acks: the request metadata is not read
        monkeypatch.setattr(agent_service, "wants_cumulative", lambda context: False)
    server = older_collector(collector_unlimited)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    spool = Spool(tmp_path / "spool")
    spool_reports(spool, 600)
    streamer = ReportStreamer(f"127.0.0.1:{port}", spool, backoff_initial_s=0.05)
    try:
        with caplog.at_level(logging.INFO, logger="gpuwarden.agent.client"):
            async with streaming(streamer):
                await wait_for(lambda: len(spool) == 0)
                spool_reports(spool, 3)  # later reports too, on Report
                streamer.notify_new_report()
                await wait_for(lambda: len(spool) == 0)
    finally:
        await server.stop(None)
    assert collector_unlimited.store.count_reports() == 603
    assert streamer.acked == 603
    if cumulative:
        assert streamer.acks < 603 // 5
    else:
        assert streamer.acks == 603  # one per report, each counted once
    assert streamer.connections == 2  # ReportBatch refused once, then Report only
    assert "has no ReportBatch" in caplog.text
