"""The store's write-ahead log under ingest, behind a long reader and after it.

Writes rounds of reports (``--nodes`` 8-GPU reports per transaction, as the collector's
group commit does) into a fresh store and prints the ``-wal`` file's size at each stage:
steady ingest; ingest while another connection holds one read snapshot; idle once that
reader is gone (now: after the housekeeping checkpoint, :meth:`Store.checkpoint`); and
ingest again.
Each run is made twice, interleaved: as the store opens its connections now
(``journal_size_limit``), and with the limit taken off the writer (SQLite's default, the
store before it), with the write rate of every stage beside it.

    .venv/bin/python bench/wal_size.py [--nodes 20] [--rounds 1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gpuwarden.collector.store import Store, connect
from gpuwarden.collector.store_conn import WAL_LIMIT_BYTES, wal_bytes
from gpuwarden.common.types import GpuWindow, NodeReport

MIB = 1 << 20


def report(node: int, seq: int) -> NodeReport:
    t = 1_700_000_000.0 + 5 * seq
    gpus = tuple(
        GpuWindow(uuid=f"GPU-{node:04d}-{i}", index=i, samples=5, util_mean=float((seq + i) % 101))
        for i in range(8)
    )
    return NodeReport(node=f"n{node:04d}", seq=seq, window_start=t - 5, window_end=t, gpus=gpus)


class Run:
    def __init__(self, path: Path, nodes: int, limit: bool) -> None:
        self.store = Store(path)
        if not limit:
            self.store.writer.execute("PRAGMA journal_size_limit = -1")
        self.nodes = nodes
        self.seq = 0
        self.path = path

    def wal_mib(self) -> float:
        return wal_bytes(self.path) / MIB

    def rounds(self, n: int) -> float:
        """Write ``n`` rounds; returns reports per second."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.seq += 1
            self.store.write_reports([report(k, self.seq) for k in range(self.nodes)], 0)
        return n * self.nodes / (time.perf_counter() - t0)


def one(nodes: int, rounds: int, limit: bool) -> list[str]:
    with tempfile.TemporaryDirectory() as d:
        r = Run(Path(d) / "db", nodes, limit)
        steady = r.rounds(rounds // 5)
        out = [f"steady {r.wal_mib():6.1f} ({steady:,.0f}/s)"]
        reader = connect(r.store.path)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM reports").fetchone()
        held = r.rounds(rounds)
        out.append(f"reader held {r.wal_mib():6.1f} ({held:,.0f}/s)")
        reader.execute("COMMIT")
        reader.close()
        if limit:  # the store now: housekeeping checkpoints; before, nothing did
            r.store.checkpoint()
        out.append(f"reader gone, idle {r.wal_mib():6.1f}")
        after = r.rounds(rounds // 5)
        out.append(f"ingest again {r.wal_mib():6.1f} ({after:,.0f}/s)")
        r.store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20, help="reports per transaction")
    ap.add_argument("--rounds", type=int, default=1000, help="transactions behind the reader")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    print(
        f"-wal MiB (reports/s) | {a.nodes} 8-GPU reports per transaction,"
        f" {a.rounds} transactions behind the reader; limit {WAL_LIMIT_BYTES / MIB:.0f} MiB"
    )
    for i in range(a.repeat):
        for limit in (False, True):
            name = "journal_size_limit" if limit else "no limit (before)"
            print(f"{i + 1} {name:<19} | " + " | ".join(one(a.nodes, a.rounds, limit)))


if __name__ == "__main__":
    main()
