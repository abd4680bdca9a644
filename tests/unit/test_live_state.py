"""Live cluster state: the newest window of each node wins, whatever its sequence number."""

from __future__ import annotations

from gpuwarden.collector.state import ClusterState
from gpuwarden.common.types import GpuWindow, NodeReport


def report(seq: int, end: float, util: float) -> NodeReport:
    g = GpuWindow(uuid="GPU-a", index=0, samples=5, util_max=util)
    return NodeReport(node="gpu01", seq=seq, window_start=end - 5, window_end=end, gpus=(g,))


def test_a_huge_sequence_number_does_not_freeze_the_node_live_state() -> None:
    state = ClusterState()
    state.apply(report(2**53, 1000.0, 10.0))
    state.apply(report(2, 1005.0, 90.0))  # e.g. the agent's spool was wiped: seq restarts
    live = state.node("gpu01")
    assert live is not None and live.gpus[0].latest.util_max == 90.0 and live.last_seen == 1005.0


def test_a_replayed_older_window_does_not_replace_a_newer_one() -> None:
    state = ClusterState()
    state.apply(report(10, 1010.0, 90.0))
    state.apply(report(9, 1005.0, 10.0))  # spooled while the collector was down
    live = state.node("gpu01")
    assert live is not None and live.gpus[0].latest.util_max == 90.0 and live.last_seq == 10
