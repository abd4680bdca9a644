"""Synthetic ``gpuwarden replay`` traces (JSON Lines), seeded and reproducible.

Two uses:

* a random cluster: ``python bench/gen_trace.py --gpus 1000 --days 1 --window-s 60 --out t.jsonl``
  (8 GPUs per node; jobs of mixed behaviour: busy, idle, used briefly then idle, bursty, low
  use, Dask workers, interactive sessions; job lines first, then samples sorted by ts);
* the small scenario traces under tests/fixtures/traces/:
  ``python bench/gen_trace.py --scenarios tests/fixtures/traces`` (exact, hand-shaped cases
  that the replay tests assert on).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

T0 = 1_700_000_000  # every scenario's job starts here
W = 60  # scenario window length, s
CARD_MIB = 81920


def job_line(
    job_id: str,
    gpus: list[tuple[str, str, int]],
    *,
    start: int = T0,
    end: int | None = None,
    user: str = "alice",
    batch: bool = True,
    requeue: bool = True,
    dask: dict[str, str] | None = None,
    name: str = "train",
    partition: str = "gpu",
) -> dict[str, Any]:
    return {
        "type": "job",
        "job_id": job_id,
        "user": user,
        "account": "a1",
        "partition": partition,
        "qos": "normal",
        "name": name,
        "start": start,
        "end": end,
        "batch": batch,
        "requeue": requeue,
        "gpus": [{"node": n, "uuid": u, "index": i} for n, u, i in gpus],
        "dask": dask,
    }


def sample_line(
    ts: int,
    node: str,
    uuid: str,
    index: int,
    util: float | None,
    mem_mib: int,
    *,
    mean: float | None = None,
    cpu: float | None = None,
    prof: dict[str, float] | None = None,
    procs: int | None = None,
    card_mib: int = CARD_MIB,
) -> dict[str, Any]:
    """``util`` None: NVML gives no utilisation (a MIG slice); ``prof``: profiling fields
    (window means, top-level keys); ``procs``: processes on the GPU."""
    d: dict[str, Any] = {
        "type": "sample",
        "ts": ts,
        "node": node,
        "uuid": uuid,
        "index": index,
        "util_gpu": util,
    }
    if util is not None:
        d["util_mem"] = min(util, 50.0)
    d["mem_used_mib"] = mem_mib
    d["mem_total_mib"] = card_mib
    if util is not None:
        d["power_w"] = 60.0 + 3.0 * util
    if mean is not None:
        d["util_gpu_mean"] = mean
    if cpu is not None:
        d["cpu_util_pct"] = cpu
    if prof is not None:
        d.update(prof)
    if procs is not None:
        d["processes"] = procs
    return d


Gpu = tuple[str, str, int]
G0: Gpu = ("gpu01", "GPU-aaaa", 0)


def _series(
    gpu: Gpu,
    until_s: int,
    util: Callable[[int], float | None],
    mem: Callable[[int], int],
    **extra: Callable[[int], Any],
) -> list[dict[str, Any]]:
    """One sample per window end T0+60 .. T0+until_s; util None = no report (a gap)."""
    out = []
    for t in range(W, until_s + 1, W):
        u = util(t)
        if u is None:
            continue
        kw = {k: f(t) for k, f in extra.items()}
        out.append(sample_line(T0 + t, gpu[0], gpu[1], gpu[2], u, mem(t), **kw))
    return out


def scenarios() -> dict[str, list[dict[str, Any]]]:
    """Small traces, each with one behaviour a sysadmin knows the right answer for."""
    s: dict[str, list[dict[str, Any]]] = {}
    s["busy"] = [
        job_line("1001", [G0], end=T0 + 3 * 3600),
        *_series(G0, 3 * 3600, lambda t: 80.0 + t // W % 20, lambda t: 30000),
    ]
    s["idle_from_start"] = [
        job_line("1002", [G0], end=T0 + 2 * 3600),
        *_series(G0, 2 * 3600, lambda t: 0.0, lambda t: 500),
    ]
    s["brief_then_idle"] = [
        job_line("1003", [G0], end=T0 + 2 * 3600),
        *_series(G0, 2 * 3600, lambda t: 95.0 if t <= 1200 else 1.0, lambda t: 2000),
    ]
    # short gaps between bursts (20 min) never reach the idle window; long ones (40 min) do
    s["bursty"] = [
        job_line("1004", [G0], end=T0 + 4 * 3600),
        *_series(
            G0,
            4 * 3600,
            lambda t: (
                90.0 if (t <= 7200 and t % 1200 == 0) or (t > 7200 and t % 2400 == 0) else 0.0
            ),
            lambda t: 4000,
        ),
    ]
    s["memory_held_idle"] = [
        job_line("1005", [G0], end=T0 + 3600),
        *_series(G0, 3600, lambda t: 0.0, lambda t: 30000),
    ]
    s["low_use"] = [
        job_line("1006", [G0], end=T0 + 2 * 3600),
        *_series(
            G0, 2 * 3600, lambda t: 12.0, lambda t: 8000, mean=lambda t: 8.0, cpu=lambda t: 98.0
        ),
    ]
    gpus4 = [("gpu02", f"GPU-b{i}", i) for i in range(4)]
    lines = [job_line("1007", gpus4, end=T0 + 3000)]
    for t in range(W, 3000 + 1, W):
        for g in gpus4:
            u = 100.0 if g[2] == 0 else 0.0
            lines.append(sample_line(T0 + t, g[0], g[1], g[2], u, 20000))
    s["multi_gpu_partly_idle"] = lines
    s["dask_worker_idle"] = [
        job_line(
            "1008",
            [G0],
            end=T0 + 2 * 3600,
            requeue=False,
            name="dask-worker",
            dask={"scheduler": "tcp://10.0.0.5:8786", "worker": "SLURMCluster-3"},
        ),
        *_series(G0, 2 * 3600, lambda t: 0.0, lambda t: 1000),
    ]
    s["not_requeueable"] = [
        job_line("1009", [G0], end=T0 + 2 * 3600, requeue=False),
        *_series(G0, 2 * 3600, lambda t: 0.0, lambda t: 500),
    ]
    s["interactive"] = [
        job_line("1010", [G0], end=T0 + 2 * 3600, batch=False, requeue=True, name="jupyter"),
        *_series(G0, 2 * 3600, lambda t: 0.0, lambda t: 500),
    ]

    # agent outage: idle throughout, but no report between T0+1800 and T0+3600, and in the
    # first half every 5th report is lost (short gaps: not counted, streak kept)
    def gappy(t: int) -> float | None:
        if 1800 < t < 3600:
            return None
        if t <= 1800 and t % 300 == 0:
            return None
        return 0.0

    s["agent_gaps"] = [
        job_line("1011", [G0], end=T0 + 2 * 3600),
        *_series(G0, 2 * 3600, gappy, lambda t: 500),
    ]
    s.update(training_scenarios())
    return s


def _prof(sm: float, tensor: float, dram: float, fp32: float) -> Callable[[int], dict[str, Any]]:
    """Profiling fields of a training job, with a little wobble per window."""

    def at(t: int) -> dict[str, Any]:
        w = t // W % 5
        return {
            "sm_active_pct": sm + w,
            "tensor_active_pct": tensor + (w / 10 if tensor else 0.0),
            "dram_active_pct": dram + w,
            "extra": {"fp32_active_pct": fp32, "sm_occupancy_pct": sm / 2},
            "extra_max": {"sm_active_pct": min(100.0, sm + w + 10.0)},
        }

    return at


def training_scenarios() -> dict[str, list[dict[str, Any]]]:
    """Training jobs on a card with profiling counters (GPM/DCGM): advice from SM, tensor
    and DRAM activity; and MIG slices, which NVML gives no utilisation for."""
    s: dict[str, list[dict[str, Any]]] = {}
    two_h = 2 * 3600

    def train(job_id: str, util: float, cpu: float, prof: Callable[[int], Any]) -> list[Any]:
        return [
            job_line(job_id, [G0], end=T0 + two_h),
            *_series(
                G0,
                two_h,
                lambda t: util,
                lambda t: 60000,
                mean=lambda t: util - 5.0,
                cpu=lambda t: cpu,
                prof=prof,
            ),
        ]

    s["train_healthy"] = train("1101", 98.0, 60.0, _prof(72.0, 45.0, 40.0, 12.0))
    s["train_gpu_waiting"] = train("1102", 97.0, 40.0, _prof(11.0, 4.0, 8.0, 3.0))
    s["train_no_tensor"] = train("1103", 99.0, 55.0, _prof(78.0, 0.0, 35.0, 62.0))
    s["train_input_bound"] = train("1104", 70.0, 99.0, _prof(14.0, 6.0, 9.0, 4.0))
    s["train_memory_bound"] = train("1105", 96.0, 50.0, _prof(55.0, 3.0, 86.0, 9.0))
    # three jobs on three MIG slices of one card: an empty one, one holding memory with no
    # process, one running a process (NVML gives no utilisation for any of them)
    slice_mib = 10240
    mig = [("gpu03", f"MIG-3g-{k}", 0) for k in range(3)]
    lines: list[dict[str, Any]] = [
        job_line(str(1106 + k), [g], end=T0 + two_h) for k, g in enumerate(mig)
    ]
    for t in range(W, two_h + 1, W):
        for k, (node, uuid, idx) in enumerate(mig):
            mem, procs = ((12, 0), (4000, 0), (6000, 1))[k]
            lines.append(
                sample_line(T0 + t, node, uuid, idx, None, mem, procs=procs, card_mib=slice_mib)
            )
    s["mig_slices"] = lines
    return s


# ---------------------------------------------------------------------------- random cluster


def cluster_lines(gpus: int, days: float, window_s: int, seed: int) -> Iterator[str]:
    """Job lines (all first), then one sample per GPU per window, sorted by ts."""
    rng = random.Random(seed)
    horizon = int(days * 86400)
    nodes = [(f"n{n:04d}", [f"GPU-{n:04d}-{i}" for i in range(8)]) for n in range((gpus + 7) // 8)]
    slots = [(node, uuid, i) for node, uuids in nodes for i, uuid in enumerate(uuids)][:gpus]
    kinds = ["busy", "busy", "busy", "idle", "brief", "bursty", "low", "dask", "interactive"]
    # per GPU: a sequence of (start, end, job_id, kind)
    plan: list[list[tuple[int, int, str, str]]] = []
    jobs: list[str] = []
    next_id = 100000
    for node, uuid, idx in slots:
        t = rng.randrange(0, 3600)
        mine = []
        while t < horizon:
            length = rng.randrange(1800, 8 * 3600)
            kind = rng.choice(kinds)
            job_id = str(next_id)
            next_id += 1
            end = min(horizon, t + length)
            mine.append((t, end, job_id, kind))
            jobs.append(
                json.dumps(
                    job_line(
                        job_id,
                        [(node, uuid, idx)],
                        start=T0 + t,
                        end=T0 + end,
                        user=f"u{rng.randrange(200)}",
                        batch=kind != "interactive",
                        requeue=kind in ("idle", "brief", "busy"),
                        dask=(
                            {"scheduler": "tcp://10.0.0.5:8786", "worker": f"w-{job_id}"}
                            if kind == "dask"
                            else None
                        ),
                    )
                )
            )
            t = end + rng.randrange(0, 1800)
        plan.append(mine)
    yield from jobs
    cursor = [0] * len(slots)
    tmpl = (
        '{{"type":"sample","ts":{ts},"node":"{node}","uuid":"{uuid}","index":{idx},'
        '"util_gpu":{u:.1f},"mem_used_mib":{m},"mem_total_mib":81920,"power_w":{p:.1f}}}'
    )
    for t in range(window_s, horizon + 1, window_s):
        for g, (node, uuid, idx) in enumerate(slots):
            mine = plan[g]
            c = cursor[g]
            while c < len(mine) and mine[c][1] < t:
                c += 1
            cursor[g] = c
            util = 0.0
            mem = 0
            if c < len(mine) and mine[c][0] < t:
                start, _, _, kind = mine[c]
                age = t - start
                if kind == "busy":
                    util, mem = 70.0 + rng.random() * 30.0, 40000
                elif kind == "brief":
                    util, mem = (90.0 if age < 1800 else 0.0), 20000
                elif kind == "bursty":
                    util, mem = (95.0 if age % 2700 < 300 else 0.0), 10000
                elif kind == "low":
                    util, mem = 10.0 + rng.random() * 5.0, 6000
                else:  # idle, dask, interactive
                    util, mem = 0.0, 800
            yield tmpl.format(
                ts=T0 + t, node=node, uuid=uuid, idx=idx, u=util, m=mem, p=60.0 + 3.0 * util
            )


def shuffled_lines(lines: list[str], seed: int) -> list[str]:
    """The same trace in another order that replay must read alike: the job lines, then the
    sample lines of each time in a random order, some of them held back until after the
    first lines of the next time (late by less than one window)."""
    rng = random.Random(seed)
    jobs: list[str] = []
    by_ts: dict[float, list[str]] = {}
    for x in lines:
        d = json.loads(x)
        if d["type"] == "sample":
            by_ts.setdefault(d["ts"], []).append(x)
        else:
            jobs.append(x)
    out: list[str] = []
    held: list[str] = []
    for ts in sorted(by_ts):
        group = by_ts[ts]
        rng.shuffle(group)
        cut = rng.randrange(1, len(group) + 1)
        out += group[:cut] + held
        held = group[cut:]
    return jobs + out + held


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=64)
    p.add_argument("--days", type=float, default=1.0)
    p.add_argument("--window-s", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="-", help="output file, or - for stdout")
    p.add_argument("--scenarios", type=Path, help="write the scenario traces into this folder")
    args = p.parse_args(argv)
    if args.scenarios is not None:
        args.scenarios.mkdir(parents=True, exist_ok=True)
        for name, lines in scenarios().items():
            text = "".join(json.dumps(line) + "\n" for line in lines)
            (args.scenarios / f"{name}.jsonl").write_text(text)
        return 0
    out = sys.stdout if args.out == "-" else Path(args.out).open("w")  # noqa: SIM115
    try:
        for line in cluster_lines(args.gpus, args.days, args.window_s, args.seed):
            out.write(line + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
