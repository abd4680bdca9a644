"""The real agent killed with SIGKILL while it spools and streams: after a restart every
report it had spooled reaches the collector once, and none is read back damaged."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from gpuwarden.agent.spool import spooled_seqs
from gpuwarden.collector.server import Collector
from tests.fakenvml import FakeNvmlState, default_gpu_uuid
from tests.helpers import Proc, agent_args, free_port, wait_for

GPU0 = default_gpu_uuid(0)


def stored_seqs(collector: Collector) -> list[int]:
    with contextlib.closing(sqlite3.connect(collector.store.path, timeout=10)) as db:
        return [int(seq) for (seq,) in db.execute("SELECT seq FROM reports WHERE node = 'n1'")]


async def test_an_agent_killed_mid_run_loses_no_spooled_report_and_sends_none_twice(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path, procs: list[Proc]
) -> None:
    fake_nvml.set(GPU0, util_gpu=70)
    spool_dir = tmp_path / "spool"
    # Run 0: no collector at its address, so everything is spooled; killed. Run 1: streaming
    # that backlog and new reports; killed. Run 2: stopped once it delivered more.
    away = Proc(
        agent_args(free_port(), spool_dir, sample_s=0.05, report_s=0.1),
        tmp_path / "agent0.log",
        env=fake_nvml.env(),
    )
    procs.append(away)
    await wait_for(lambda: len(spooled_seqs(spool_dir)) >= 20, 60)
    away.kill()
    left = set(spooled_seqs(spool_dir))
    for run in (1, 2):
        agent = Proc(
            agent_args(collector.port, spool_dir, sample_s=0.05, report_s=0.1),
            tmp_path / f"agent{run}.log",
            env=fake_nvml.env(),
        )
        procs.append(agent)
        goal = len(left) + len(stored_seqs(collector)) + 10
        await wait_for(lambda goal=goal: len(stored_seqs(collector)) >= goal, 60)
        if run == 1:
            agent.kill()
            left |= set(spooled_seqs(spool_dir))  # spooled and not known acked
        else:
            assert agent.terminate() == 0, agent.output()
    stored = stored_seqs(collector)
    assert len(stored) == len(set(stored))  # the collector de-duplicated what was resent
    assert left <= set(stored), sorted(left - set(stored))
    assert "cannot be read" not in "".join(p.output() for p in procs)
    assert not list((spool_dir / "corrupt").iterdir())
