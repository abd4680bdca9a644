#!/usr/bin/env python3
"""The dashboard under a large cluster: a collector serving --nodes nodes x --gpus GPUs, every
node reporting once a second, and ``gpuwarden top`` (headless, real Textual, real watch
stream) following it.

The collector and its producer run in a child process (as a collector runs on its own host);
the producer submits each node's report to the collector's ingest path (storage, live state,
watch stream: the path an agent's report takes after validation). Prints, for the dashboard:
events received per second against the reports stored; the time to apply one event to the
model; the time of one re-render (the screens' ``show`` plus Textual's layout and painting
until the next one); how stale the screen is when drawn (now minus the newest window end
applied); and whether the watch stream ever had to resend the cluster (the app fell behind).

    .venv/bin/python bench/tui_update.py --nodes 1000 --gpus 8 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "hiro")


def _report(node: str, n: int, seq: int, gpus: int, now: float) -> Any:
    from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo

    windows = []
    for i in range(gpus):
        jid = f"{100000 + n * 4 + i // 2}"
        busy = (n + i + seq // 30) % 3 != 0
        windows.append(
            GpuWindow(
                uuid=f"GPU-{node}-{i}",
                index=i,
                samples=1,
                util_mean=70.0 if busy else 0.0,
                util_max=90.0 if busy else 0.0,
                mem_used_max_bytes=(20 << 30) if busy else (2 << 30),
                mem_total_bytes=80 << 30,
                power_mean_w=300.0 if busy else 70.0,
                processes=(ProcessInfo(pid=1000 + i),) if busy or i % 4 else (),
                job=JobInfo(
                    job_id=jid,
                    user=USERS[(n + i // 2) % len(USERS)],
                    account=f"proj{n % 7}",
                    partition=("gpu", "long", "debug")[n % 3],
                    start_time=int(now) - 3600,
                ),
                allocated=True,
            )
        )
    return NodeReport(node, seq, now - 1.0, now, tuple(windows))


def serve(nodes: int, gpus: int, seconds: float, port_q: Any, go: MpEvent, out_q: Any) -> None:
    """Child process: collector plus a producer of one report per node per second."""
    from gpuwarden.collector.server import Collector

    async def main() -> None:
        tmp = Path(tempfile.mkdtemp(prefix="gpuwarden-bench-tui-"))
        c = Collector(db_path=tmp / "c.db", listen="127.0.0.1:0", write_batch_max=2048)
        await c.start()
        names = [f"n{i:04d}" for i in range(nodes)]
        for n, name in enumerate(names):  # the cluster exists before the dashboard starts
            await c.ingestor.submit(_report(name, n, 1, gpus, time.time()))
        port_q.put(c.port)
        await asyncio.to_thread(go.wait)
        start = time.monotonic()
        seq = 1
        late = 0
        while time.monotonic() - start < seconds:
            seq += 1
            tick = start + (seq - 1)
            for k in range(10):  # a tenth of the nodes every 100 ms
                await asyncio.sleep(max(0.0, tick + k / 10 - time.monotonic()))
                now = time.time()
                futs = [
                    c.ingestor.submit(_report(names[n], n, seq, gpus, now))
                    for n in range(k, nodes, 10)
                ]
                await asyncio.gather(*futs)
            late += time.monotonic() > tick + 1.0
        out_q.put({"stored": c.ingestor.stored, "late_seconds": late, "seconds": seq - 1})
        await asyncio.sleep(1.0)
        await c.stop()

    asyncio.run(main())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def follow(port: int, go: MpEvent, seconds: float, size: tuple[int, int]) -> dict[str, Any]:
    from textual.screen import Screen

    from gpuwarden.query.config import ClientConfig
    from gpuwarden.tui.app import TopApp

    app = TopApp(ClientConfig(collector=f"127.0.0.1:{port}", insecure=True))
    apply_s: list[float] = []
    show_s: list[float] = []
    paint_s: list[float] = []
    stale_s: list[float] = []
    newest = [0.0]
    paint_acc = [0.0]
    model = app.model
    real_apply = model.apply

    def timed_apply(event: Any, now: float) -> None:
        t = time.perf_counter()
        real_apply(event, now)
        apply_s.append(time.perf_counter() - t)
        for g in getattr(event, "gpus", ()):
            newest[0] = max(newest[0], g.window_end)

    model.apply = timed_apply  # type: ignore[method-assign]
    real_render = app.render_now

    def timed_render() -> None:
        if show_s:
            paint_s.append(paint_acc[0])
        paint_acc[0] = 0.0
        t = time.perf_counter()
        real_render()
        show_s.append(time.perf_counter() - t)
        if newest[0]:
            stale_s.append(time.time() - newest[0])

    app.render_now = timed_render  # type: ignore[method-assign]
    patched = {}
    for name in ("_refresh_layout", "_compositor_refresh"):
        original = getattr(Screen, name)

        def wrapper(self: Screen[Any], *a: Any, _o: Any = original, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return _o(self, *a, **kw)
            finally:
                paint_acc[0] += time.perf_counter() - t

        patched[name] = original
        setattr(Screen, name, wrapper)
    try:
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + 120
            while len(model.nodes) < 1 or not app.connected:
                assert time.monotonic() < deadline, "no data from the collector"
                await pilot.pause(0.1)
            await pilot.pause(2.0)  # the initial snapshot
            apply_s.clear()
            show_s.clear()
            paint_s.clear()
            stale_s.clear()
            before = model.updates
            go.set()
            t0 = time.monotonic()
            await pilot.pause(seconds + 2.0)
            received = model.updates - before
            elapsed = time.monotonic() - t0
    finally:
        for name, original in patched.items():
            setattr(Screen, name, original)
    cycle = [a + b for a, b in zip(show_s, paint_s, strict=False)]
    return {
        "received": received,
        "elapsed": elapsed,
        "renders": len(show_s),
        "apply_ms": [1e3 * statistics.fmean(apply_s), 1e3 * pct(apply_s, 0.99)],
        "show_ms": [1e3 * statistics.fmean(show_s), 1e3 * pct(show_s, 0.99)],
        "paint_ms": [1e3 * statistics.fmean(paint_s or [0.0]), 1e3 * pct(paint_s, 0.99)],
        "cycle_ms": [1e3 * statistics.fmean(cycle or [0.0]), 1e3 * pct(cycle, 0.99)],
        "stale_s": [pct(stale_s, 0.5), pct(stale_s, 0.99), max(stale_s or [0.0])],
        "nodes_seen": len(model.nodes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--height", type=int, default=60)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    port_q, out_q = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    child = ctx.Process(target=serve, args=(args.nodes, args.gpus, args.seconds, port_q, go, out_q))
    child.start()
    port = port_q.get(timeout=300)
    r = asyncio.run(follow(port, go, args.seconds, (args.width, args.height)))
    produced = out_q.get(timeout=120)
    child.join(30)
    per_s = r["received"] / r["elapsed"]
    print(
        f"cluster: {args.nodes} nodes x {args.gpus} GPUs, one report per node per second, "
        f"{produced['seconds']} s; collector stored {produced['stored']} reports "
        f"({produced['late_seconds']} s where the producer ran late)"
    )
    print(
        f"dashboard {args.width}x{args.height}: {r['received']} events in {r['elapsed']:.1f} s "
        f"= {per_s:.0f}/s, {r['renders']} re-renders, {r['nodes_seen']} nodes shown"
    )
    print(
        f"apply one event to the model: mean {r['apply_ms'][0]:.3f} ms, "
        f"p99 {r['apply_ms'][1]:.3f} ms"
    )
    print(f"re-render (show): mean {r['show_ms'][0]:.1f} ms, p99 {r['show_ms'][1]:.1f} ms")
    print(
        f"Textual layout + paint per re-render: mean {r['paint_ms'][0]:.1f} ms, "
        f"p99 {r['paint_ms'][1]:.1f} ms"
    )
    print(
        f"one update cycle (show + paint): mean {r['cycle_ms'][0]:.1f} ms, "
        f"p99 {r['cycle_ms'][1]:.1f} ms (target < 50 ms)"
    )
    print(
        f"screen staleness when drawn: p50 {r['stale_s'][0]:.2f} s, p99 {r['stale_s'][1]:.2f} s, "
        f"max {r['stale_s'][2]:.2f} s (window end -> on screen)"
    )


if __name__ == "__main__":
    main()
