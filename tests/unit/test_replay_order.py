"""Replay's fast paths give what the general ones give: lines of one time in any order, late
lines within the reorder window, blank lines, and sample lines with or without the rare keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gpuwarden.collector.policy import PolicySet, load_policy
from gpuwarden.collector.replay import replay_lines
from gpuwarden.collector.trace import TraceError, loads, parse_job, parse_sample
from gpuwarden.collector.trace_attribution import TraceAttribution

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from gen_trace import cluster_lines, shuffled_lines


def _replayed(lines: list[str], policies: PolicySet) -> list[tuple[object, ...]]:
    """Every ladder event, with its words and evidence, as the audit would keep it."""
    replayer, _ = replay_lines((x.encode() for x in lines), policies)
    return [
        (e.decision.ts, e.decision.job_id, e.status.value, e.detail, e.decision.finding.evidence)
        for e in replayer.ladder_events
    ]


def test_lines_of_one_time_in_any_order_and_late_lines_give_the_same_events() -> None:
    lines = list(cluster_lines(24, 0.5, 60, seed=3))
    policies = load_policy(None, {"window": 60.0, "idle_window": 1200.0, "enforce": True})
    expected = _replayed(lines, policies)
    assert len(expected) > 20  # warnings, actions and reports to compare
    shuffled = shuffled_lines(lines, seed=11)
    assert shuffled != lines
    assert _replayed(shuffled, policies) == expected


def test_blank_lines_are_skipped_and_a_line_that_is_not_json_is_still_an_error() -> None:
    lines = list(cluster_lines(8, 0.25, 60, seed=2))
    policies = PolicySet()
    expected = _replayed(lines, policies)
    spaced = [*lines[:40], "", "   ", "\t", *lines[40:]]
    assert _replayed(spaced, policies) == expected
    with pytest.raises(TraceError, match="line 41: not valid JSON"):
        replay_lines((x.encode() for x in [*lines[:40], "  nonsense", *lines[40:]]), policies)


def _sample(**keys: object) -> dict[str, object]:
    d: dict[str, object] = {"type": "sample", "ts": 1_700_000_060, "node": "n1", "uuid": "GPU-1"}
    d.update(keys)
    return d


def test_a_line_of_nine_keys_with_rare_ones_among_them_has_them_read() -> None:
    # nine keys, as many as the usual line, but util_gpu_mean and processes instead of
    # power_w and index: both are read and checked
    d = _sample(util_gpu=50.0, mem_used_mib=10, mem_total_mib=100, util_gpu_mean=20.0, processes=3)
    assert len(d) == 9
    s = parse_sample(d, 1)
    assert (s.util_mean_pct, s.processes, s.power_w, s.gpu_index) == (20.0, 3, None, -1)
    bad = _sample(util_gpu=50.0, mem_used_mib=10, mem_total_mib=100, power_w=1.0, processes=-1)
    assert len(bad) == 9
    with pytest.raises(TraceError, match="'processes' must be a number of processes"):
        parse_sample(bad, 1)


def test_the_usual_line_and_one_with_an_unknown_key_read_alike() -> None:
    usual = _sample(util_gpu=5.0, mem_used_mib=1, mem_total_mib=80, power_w=60.0, index=0)
    assert len(usual) == 9
    more = dict(usual, comment="from the export")
    assert parse_sample(usual, 1) == parse_sample(more, 1)
    null_index = dict(usual, index=None)
    with pytest.raises(TraceError, match="'index' must be a GPU index, got None"):
        parse_sample(null_index, 1)
    no_index = {k: v for k, v in usual.items() if k != "index"}
    assert parse_sample(no_index, 1).gpu_index == -1
    assert loads(json.dumps(usual).encode()) == usual


def test_a_gpu_between_jobs_is_free_until_the_next_job_starts_or_a_job_line_claims_it() -> None:
    attribution = TraceAttribution(PolicySet())
    gpus = [{"node": "n1", "uuid": "GPU-a", "index": 0}]

    def add(job_id: str, start: int, end: int | None) -> None:
        d = {"type": "job", "job_id": job_id, "start": start, "end": end, "gpus": gpus}
        attribution.add_job(*parse_job(d, 1))

    def holders(*times: int) -> list[str | None]:
        out = []
        for ts in times:
            s = parse_sample(_sample(ts=ts, node="n1", uuid="GPU-a", util_gpu=0.0), 2)
            found = attribution.holder(s)
            out.append(None if found is None else found.job.job_id)
        return out

    add("A", 100, 200)
    add("B", 300, None)
    # asked in time order, as replay asks: free before A, between A and B (a sample ending
    # at a start is the time before it), then B's
    assert holders(50, 100, 101, 200, 201, 250, 299, 300, 301, 900) == [
        *(None, None, "A", "A", None, None, None, None, "B", "B")
    ]
    assert holders(250, 150) == [None, "A"]  # an earlier time is not taken for free
    add("C", 250, 280)  # a job line for a time already seen free
    assert holders(240, 260, 280, 281, 301) == [None, "C", "C", None, "B"]
