"""Profiling counters travel the whole way: a trace with them, fed to a real collector as
agent reports (gRPC ingest, SQLite store), exported with ``gpuwarden export`` and replayed,
gives the advice and idle findings the original trace gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuwarden.cli import main as gpuwarden
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.replay import replay_lines
from tests.live_feed import live_records

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


def findings(lines: list[bytes]) -> list[tuple[float, str, str, str]]:
    replayer, _ = replay_lines(lines, PolicySet())
    return [(e.ts, e.job_id, e.kind, e.detail) for e in replayer.events]


@pytest.mark.parametrize("scenario", ["train_no_tensor", "train_input_bound", "mig_slices"])
async def test_exported_profiling_fields_and_processes_replay_to_the_same_findings(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (TRACES / f"{scenario}.jsonl").read_bytes().splitlines()
    db = tmp_path / "c.db"
    await live_records(lines, PolicySet(), db)
    capsys.readouterr()
    assert gpuwarden(["export", "--db", str(db)]) == 0
    exported = capsys.readouterr().out.encode().splitlines()
    samples = [json.loads(x) for x in exported if b'"sample"' in x]
    original = [json.loads(x) for x in lines if b'"sample"' in x]
    assert len(samples) == len(original)
    first = samples[0]
    if scenario == "mig_slices":
        assert first["util_gpu"] is None and "processes" in first
        assert sorted(s["processes"] for s in samples[:3]) == [0, 0, 1]
    else:
        assert first["extra"]["sm_active_pct"] == original[0]["sm_active_pct"]
        assert first["extra"]["fp32_active_pct"] == original[0]["extra"]["fp32_active_pct"]
        assert first["extra_max"]["sm_active_pct"] == original[0]["extra_max"]["sm_active_pct"]
    expected = findings(lines)
    assert expected  # every one of these scenarios has something to say
    assert findings(exported) == expected
