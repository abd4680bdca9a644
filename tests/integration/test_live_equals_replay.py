"""Replay shows literally what the collector does: the same windows through the live
collector (real ingest, SQLite store, enforcement wiring, action worker; job ends inferred
from the reports, evaluated at random moments) and through ``gpuwarden replay`` give the same
audit records, evidence included."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gpuwarden.collector.policy import Policy, PolicySet
from tests.live_feed import comparable, gen_trace, live_records, replay_records

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
SCENARIOS = sorted(p.stem for p in TRACES.glob("*.jsonl"))


@pytest.mark.parametrize("enforce", [False, True], ids=["dry_run", "enforce"])
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_live_collector_and_replay_give_identical_events_on_every_scenario(
    scenario: str, enforce: bool, tmp_path: Path
) -> None:
    lines = (TRACES / f"{scenario}.jsonl").read_bytes().splitlines()
    policies = PolicySet(default=Policy(enforce=enforce))
    replayed = comparable(replay_records(lines, policies))
    live, _ = await live_records(lines, policies, tmp_path / "c.db", seed=len(scenario))
    assert comparable(live) == replayed


async def test_live_collector_and_replay_agree_on_a_generated_six_hour_cluster(
    tmp_path: Path,
) -> None:
    lines = [x.encode() for x in gen_trace().cluster_lines(32, 0.25, 60, 5)]
    policy = Policy(idle_window=1200.0, grace_period=300.0, warnings=1, warn_interval=600.0)
    for enforce in (False, True):
        policies = PolicySet(default=dataclasses.replace(policy, enforce=enforce))
        replayed = comparable(replay_records(lines, policies))
        live, enforcer = await live_records(
            lines, policies, tmp_path / f"c-{enforce}.db", seed=7, max_batch=10
        )
        assert {r[4] for r in replayed} >= {"warned", "reported"}
        assert ("done" if enforce else "dry_run") in {r[4] for r in replayed}
        assert comparable(live) == replayed
        assert enforcer.engine.late_windows == 0


async def test_live_collector_evaluating_one_data_time_at_a_time_gives_replays_events(
    tmp_path: Path,
) -> None:
    """The evaluation thread lets the event loop run after every data time (slice 0 s):
    the events are those of replay all the same."""
    lines = [x.encode() for x in gen_trace().cluster_lines(16, 0.25, 60, 11)]
    policy = Policy(idle_window=1200.0, grace_period=300.0, warnings=1, warn_interval=600.0)
    policies = PolicySet(default=dataclasses.replace(policy, enforce=True))
    replayed = comparable(replay_records(lines, policies))
    live, enforcer = await live_records(
        lines, policies, tmp_path / "c.db", seed=3, max_batch=10, slice_s=0.0
    )
    assert {r[4] for r in replayed} >= {"warned", "done"}
    assert comparable(live) == replayed
    assert enforcer.pauses > len(lines) / 16  # it did stop for the loop, time after time
