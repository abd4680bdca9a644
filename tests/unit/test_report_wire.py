"""The agent sends spooled reports as they are: reading their seq and node without decoding
them, and wrapping them unchanged in NodeReportBatch messages."""

from __future__ import annotations

import contextlib
import random

import pytest

from gpuwarden.agent.report_wire import BatchBuilder, report_fields, report_seq
from gpuwarden.agent.spool import SpoolCorrupt
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb


def serialized(seq: int) -> bytes:
    report = NodeReport(
        node="gpu01",
        seq=seq,
        window_start=1_700_000_000.0,
        window_end=1_700_000_005.0,
        gpus=tuple(
            GpuWindow(uuid=f"GPU-{i}", index=i, samples=5, util_max=50.0, util_mean=40.0)
            for i in range(8)
        ),
        agent_version="0.1.0",
    )
    return report_to_pb(report).SerializeToString()


@pytest.mark.parametrize("seq", [1, 127, 128, 1_795_863_511_187_478, 2**64 - 1])
def test_seq_is_read_from_a_serialized_report(seq: int) -> None:
    assert report_seq(serialized(seq)) == seq


def test_seq_is_found_wherever_the_field_sits() -> None:
    data = pb.NodeReport(agent_id="a", window_end=5.0).SerializeToString()
    data += pb.NodeReport(seq=42).SerializeToString()  # fields may come in any order
    assert report_seq(data) == 42


@pytest.mark.parametrize("cut", [1, 3, 20])
def test_a_cut_report_is_named_corrupt(cut: int) -> None:
    with pytest.raises(SpoolCorrupt, match="not a report"):
        report_seq(serialized(300)[:-cut])


def test_random_bytes_give_a_seq_or_a_corrupt_error_never_a_crash() -> None:
    rng = random.Random(13)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(1, 64))
        with contextlib.suppress(SpoolCorrupt):
            assert report_seq(data) >= 0


def test_the_node_is_read_beside_the_seq() -> None:
    assert report_fields(serialized(7)) == (7, b"gpu01")
    assert report_fields(pb.NodeReport(seq=3).SerializeToString()) == (3, b"")


def test_a_batch_holds_the_spooled_bytes_unchanged_and_decodes_as_a_batch() -> None:
    reports = [serialized(s) for s in range(1, 6)]
    batch = BatchBuilder(b"gpu01")
    for seq, report in enumerate(reports, start=1):
        assert batch.fits(b"gpu01", report)
        batch.add(seq, report)
    decoded = pb.NodeReportBatch.FromString(batch.message())
    assert decoded.node == "gpu01"
    assert [r.SerializeToString() for r in decoded.reports] == reports
    assert batch.seqs == [1, 2, 3, 4, 5]


def test_a_batch_takes_no_report_of_another_node_nor_past_its_limits() -> None:
    report = serialized(1)
    assert not BatchBuilder(b"gpu01").fits(b"gpu02", report)
    by_count = BatchBuilder(b"gpu01", max_reports=2)
    by_count.add(1, report)
    by_count.add(2, report)
    assert not by_count.fits(b"gpu01", report)
    by_bytes = BatchBuilder(b"gpu01", max_bytes=2 * len(report) + 16)
    by_bytes.add(1, report)
    assert by_bytes.fits(b"gpu01", report)
    by_bytes.add(2, report)
    assert not by_bytes.fits(b"gpu01", report)
    assert len(by_bytes.message()) <= 2 * len(report) + 16
