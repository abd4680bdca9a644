"""Drive the live collector (real Collector: ingest, SQLite store, enforcement wiring) with a
replay trace, on a simulated clock, and collect its audit records; and the same trace through
``gpuwarden replay``'s path. Used by the live-equals-replay tests and bench/live_vs_replay.py.

The trace's samples become the node reports an agent would have sent: per node and window end
one report, each GPU attributed to the job holding it then, or reported free.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from gpuwarden.collector.audit import AuditRecord, record_from_event
from gpuwarden.collector.enforce import Enforcer, attach_enforcement
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.replay import RecordingExecutor, replay_lines
from gpuwarden.collector.server import Collector
from gpuwarden.collector.trace import loads, parse_job, parse_sample
from gpuwarden.collector.trace_attribution import TraceAttribution
from gpuwarden.common.types import NodeReport, SlurmStatus, WindowRecord

ROOT = Path(__file__).resolve().parents[1]
ACTOR = "gpuwarden"


def gen_trace() -> ModuleType:
    """bench/gen_trace.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gen_trace", ROOT / "bench" / "gen_trace.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trace_reports(lines: Iterable[bytes], policies: PolicySet) -> Iterator[list[NodeReport]]:
    """The trace as agents would have reported it: for each window end (in time order), one
    report per node with every GPU sampled then."""
    attribution = TraceAttribution(policies)
    by_end: dict[float, dict[str, list[WindowRecord]]] = defaultdict(lambda: defaultdict(list))
    for line_no, raw in enumerate(lines, 1):
        d = loads(raw)
        if d.get("type") == "job":
            alloc, start = parse_job(d, line_no)
            attribution.add_job(alloc, start)
        elif d.get("type") == "sample":
            s = parse_sample(d, line_no)
            by_end[s.ts][s.node].append(attribution.record(s, s.ts))
    seq: dict[str, int] = defaultdict(int)
    for end in sorted(by_end):
        reports = []
        for node, recs in sorted(by_end[end].items()):
            starts = {r.window_start for r in recs}
            assert len(starts) == 1, f"{node} at {end}: windows of different lengths"
            seq[node] += 1
            reports.append(
                NodeReport(
                    node=node,
                    seq=seq[node],
                    window_start=starts.pop(),
                    window_end=end,
                    gpus=tuple(r.gpu for r in recs),
                    slurm=SlurmStatus(available=True),
                )
            )
        yield reports


async def live_records(
    lines: list[bytes],
    policies: PolicySet,
    db_path: Path,
    *,
    seed: int = 0,
    max_batch: int = 6,
    slice_s: float | None = None,
) -> tuple[list[AuditRecord], Enforcer]:
    """Feed the trace to a real collector in batches of 1..``max_batch`` window ends, and
    evaluate after each batch at a random ``now`` between the newest window end and the end
    of the reorder window (as the wall clock would be); return every audit record.
    ``slice_s``: the enforcer's (how long it works before letting the event loop run)."""
    rng = random.Random(seed)
    collector = Collector(db_path=db_path, listen="127.0.0.1:0")
    await collector.start()
    records: list[AuditRecord] = []
    try:
        enforcer = attach_enforcement(
            collector,
            policies=policies,
            executor=RecordingExecutor(),  # replay's own: each action done, no detail
            audit_jsonl=None,
            evaluate_interval_s=3600.0,  # evaluated here, on the trace's clock
            actor=ACTOR,
        )
        if slice_s is not None:
            enforcer.slice_s = slice_s
        reorder = enforcer.engine.reorder_s
        pending: list[NodeReport] = []
        batch = rng.randint(1, max_batch)
        groups = list(trace_reports(lines, policies))
        for i, reports in enumerate(groups):
            pending.extend(reports)
            batch -= 1
            if batch > 0 and i < len(groups) - 1:
                continue
            await asyncio.gather(*(collector.ingestor.submit(r) for r in pending))
            now = pending[-1].window_end + rng.random() * reorder
            pending = []
            batch = rng.randint(1, max_batch)
            records += await asyncio.to_thread(enforcer.evaluate, now)
        records += await asyncio.to_thread(enforcer.evaluate, float("inf"))
        while enforcer.worker is not None and enforcer.worker.in_flight():
            await asyncio.sleep(0.01)
        records += await asyncio.to_thread(enforcer.evaluate, float("inf"))
    finally:
        await collector.stop()
    return records, enforcer


def replay_records(lines: list[bytes], policies: PolicySet) -> list[AuditRecord]:
    """``gpuwarden replay``'s events on the same trace, as audit records."""
    replayer, _ = replay_lines(lines, policies)
    return [
        record_from_event(e, policies.for_job(e.decision.allocation.job), actor=ACTOR)
        for e in replayer.ladder_events
    ]


def comparable(records: Iterable[AuditRecord]) -> list[tuple[Any, ...]]:
    """Every field of every record (evidence included), in a canonical order."""
    return sorted(
        (
            r.ts,
            r.job_id,
            r.kind,
            r.action,
            r.outcome,
            r.dry_run,
            r.gpus,
            r.detail,
            json.dumps(dict(r.evidence), sort_keys=True, default=str),
        )
        for r in records
    )
