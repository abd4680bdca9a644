"""Cumulative acks: an agent that asks gets one ack per group commit, covering every report
its stream sent up to that seq; an agent that does not ask (every agent before them) still
gets one ack per report. Real collector, real gRPC, real SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport
from gpuwarden.common.wire import ACKS_CUMULATIVE, ACKS_KEY, REJECTED_SEQ_KEY
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from tests.helpers import varint

T = 1_700_000_000.0
N = 40


def _report(seq: int, util_max: float = 50.0) -> pb.NodeReport:
    return report_to_pb(
        NodeReport(
            node="gpu07",
            seq=seq,
            window_start=T + 5 * seq - 5,
            window_end=T + 5 * seq,
            gpus=(
                GpuWindow(
                    uuid="GPU-7",
                    index=0,
                    samples=5,
                    util_max=util_max,
                    job=JobInfo(job_id="4242", user="alice"),
                    allocated=True,
                ),
            ),
        )
    )


async def _send_all_then_read(
    c: Collector, metadata: tuple[tuple[str, str], ...] | None, reports: list[pb.NodeReport]
) -> tuple[list[pb.Ack], grpc.aio.AioRpcError | None]:
    """Write every report before reading any ack (as an agent with a full spool does), then
    read acks until the last report is covered or the stream ends."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{c.port}") as ch:
        call = pb_grpc.AgentServiceStub(ch).Report(metadata=metadata)
        return await _exchange(call, reports, reports[-1].seq)


async def _exchange(
    call: Any, messages: Sequence[object], last: int
) -> tuple[list[pb.Ack], grpc.aio.AioRpcError | None]:
    """Write every message, then read acks until ``last`` is covered or the stream ends.
    A stream the collector has ended makes a write fail with INTERNAL on this side: the
    collector's own status is the call's."""
    acks: list[pb.Ack] = []
    try:
        for m in messages:
            await call.write(m)
        while not acks or acks[-1].seq < last:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                break
            acks.append(ack)
        await call.done_writing()
    except grpc.aio.AioRpcError:
        code = await call.code()
        if code == grpc.StatusCode.OK:
            raise
        return acks, grpc.aio.AioRpcError(
            code,
            await call.initial_metadata(),
            await call.trailing_metadata(),
            await call.details(),
        )
    return acks, None


@pytest.fixture
async def collector(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0")
    # Transactions at least 0.2 s apart: reports written back to back share one.
    c.ingestor.commit_window_s = 0.2
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def test_an_agent_that_asks_gets_one_ack_per_group_commit_covering_all_before(
    collector: Collector,
) -> None:
    acks, err = await _send_all_then_read(
        collector, ((ACKS_KEY, ACKS_CUMULATIVE),), [_report(s) for s in range(1, N + 1)]
    )
    assert err is None
    assert acks and all(a.cumulative and a.node == "gpu07" for a in acks)
    seqs = [a.seq for a in acks]
    assert seqs == sorted(set(seqs)) and seqs[-1] == N  # in order, the last covers all
    assert len(acks) <= 5  # a handful of transactions, not one ack per report
    assert not any(a.duplicate for a in acks)
    assert collector.store.count_reports() == N


async def test_resent_reports_are_acked_as_duplicates_in_one_cumulative_ack(
    collector: Collector,
) -> None:
    reports = [_report(s) for s in range(1, 6)]
    await _send_all_then_read(collector, ((ACKS_KEY, ACKS_CUMULATIVE),), reports)
    acks, err = await _send_all_then_read(collector, ((ACKS_KEY, ACKS_CUMULATIVE),), reports)
    assert err is None and acks[-1].seq == 5
    assert all(a.duplicate and a.cumulative for a in acks)
    assert collector.store.count_reports() == 5


@pytest.mark.parametrize(
    "metadata", [None, ((ACKS_KEY, "bogus"),), ((ACKS_KEY, ACKS_CUMULATIVE.upper()),)]
)
async def test_an_agent_that_does_not_ask_gets_one_ack_per_report(
    collector: Collector, metadata: tuple[tuple[str, str], ...] | None
) -> None:
    acks, err = await _send_all_then_read(collector, metadata, [_report(s) for s in range(1, 11)])
    assert err is None
    assert [a.seq for a in acks] == list(range(1, 11))
    assert not any(a.cumulative for a in acks)
    assert collector.store.count_reports() == 10


async def test_a_bad_report_on_a_cumulative_stream_is_refused_and_no_ack_passes_it(
    collector: Collector,
) -> None:
    reports = [_report(1), _report(2), _report(3, util_max=250.0), _report(4)]
    acks, err = await _send_all_then_read(collector, ((ACKS_KEY, ACKS_CUMULATIVE),), reports)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gpus[0].util_max=250.0 is outside [0, 100]" in (err.details() or "")
    trailers = dict(err.trailing_metadata() or ())  # type: ignore[arg-type]
    assert trailers.get(REJECTED_SEQ_KEY) == "3"
    assert all(a.seq < 3 for a in acks)  # an ack never covers the refused report
    history, _ = collector.store.history(node="gpu07", resolution=0)
    assert all(r.window_end != T + 15 for r in history)  # nothing of report 3 was stored


def _batch(first: int, count: int) -> pb.NodeReportBatch:
    return pb.NodeReportBatch(
        node="gpu07", reports=[_report(s) for s in range(first, first + count)]
    )


async def _send_batches(
    c: Collector, batches: list[pb.NodeReportBatch]
) -> tuple[list[pb.Ack], grpc.aio.AioRpcError | None]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{c.port}") as ch:
        call = pb_grpc.AgentServiceStub(ch).ReportBatch()
        return await _exchange(call, batches, batches[-1].reports[-1].seq)


async def test_batches_are_stored_whole_and_acked_cumulatively(collector: Collector) -> None:
    acks, err = await _send_batches(collector, [_batch(1, 16), _batch(17, 16), _batch(33, 8)])
    assert err is None
    assert all(a.cumulative for a in acks) and acks[-1].seq == N and len(acks) <= 5
    assert collector.store.count_reports() == N
    # A batch built from spooled bytes as they are (field 2, length-delimited) is the same.
    spooled = [_report(s).SerializeToString() for s in range(41, 44)]
    wire = b"\x0a\x05gpu07" + b"".join(b"\x12" + varint(len(r)) + r for r in spooled)
    acks, err = await _send_batches(collector, [pb.NodeReportBatch.FromString(wire)])
    assert err is None and acks[-1].seq == 43
    assert collector.store.count_reports() == N + 3


async def test_a_bad_report_in_a_batch_refuses_the_stream_naming_its_seq(
    collector: Collector,
) -> None:
    batch = _batch(1, 4)
    batch.reports[2].gpus[0].util_max = 250.0
    acks, err = await _send_batches(collector, [batch])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "report seq=3: gpus[0].util_max=250.0" in (err.details() or "")
    assert dict(err.trailing_metadata() or ()).get(REJECTED_SEQ_KEY) == "3"  # type: ignore[arg-type]
    assert all(a.seq < 3 for a in acks)


async def test_a_batch_over_the_limit_is_refused_whole(collector: Collector) -> None:
    acks, err = await _send_batches(collector, [_batch(1, 257)])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "257 reports in one batch (limit 256)" in (err.details() or "")
    assert acks == [] and collector.store.count_reports() == 0
