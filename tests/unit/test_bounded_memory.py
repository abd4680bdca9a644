"""Long runs hold bounded memory: what the collector and replay keep per job or per node
goes away when the jobs end and the nodes go (bench/soak.py measures the process)."""

from __future__ import annotations

import json

from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.replay import replay_lines

T0 = 1_700_000_000


def churn_trace(jobs: int, job_s: int = 600, gap_s: int = 120, window_s: int = 60) -> list[bytes]:
    """``jobs`` jobs one after another on one GPU, each with its end, sampled every window."""
    lines: list[dict[str, object]] = []
    for n in range(jobs):
        start = T0 + n * (job_s + gap_s)
        gpus = [{"node": "n1", "uuid": "GPU-a", "index": 0}]
        lines.append(
            {"type": "job", "job_id": str(1000 + n), "start": start, "end": start + job_s,
             "requeue": True, "gpus": gpus}
        )  # fmt: skip
        for t in range(start + window_s, start + job_s + 1, window_s):
            lines.append(
                {"type": "sample", "ts": t, "node": "n1", "uuid": "GPU-a", "util_gpu": 50.0}
            )
    return [json.dumps(x).encode() for x in lines]


def test_replay_keeps_no_record_of_ended_runs_that_nobody_reads() -> None:
    replayer, summary = replay_lines(churn_trace(300), PolicySet())
    assert summary.jobs == 300
    assert len(replayer.engine.runs()) == 300  # the runs themselves, for the summary
    # ... but not a second, unread list of every run that ended (live: job summaries)
    assert replayer.engine.take_ended_runs() == []
