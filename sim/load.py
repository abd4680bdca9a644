"""What each shape of work puts on a GPU at a given second: pure functions of (job, time)."""

from __future__ import annotations

import math

from gpuwarden.sim.model import (
    BURST_CYCLE_S,
    BURST_MAX_S,
    BURST_MIN_S,
    BURST_P,
    CHECKPOINT_PERIOD_S,
    CHECKPOINT_S,
    MASK,
    SALT_CPU,
    SALT_MEM,
    SALT_POWER,
    SALT_TEMP,
    WARMUP_S,
    MiB,
    Shape,
    SimGpuLoad,
    SimJob,
    mix64,
    unit,
)


def gpu_load(job: SimJob, g: SimGpuLoad, now: float) -> tuple[float, float, int]:
    """(util %, memory-controller util %, memory used) of one GPU of ``job`` at ``now``."""
    tau = now - job.start_s
    n = math.floor(now)
    u = unit(g.key, n)
    shape = g.shape
    mem = g.mem_bytes
    if shape is Shape.STEADY:
        if tau < WARMUP_S:
            util = 5.0 + 35.0 * u
            mem = int(mem * (0.2 + 0.8 * max(tau, 0.0) / WARMUP_S)) // MiB * MiB
        elif tau % CHECKPOINT_PERIOD_S < CHECKPOINT_S:
            util = 25.0 + 25.0 * u
        else:
            util = 92.0 + 8.0 * u
    elif shape is Shape.BURSTY:
        cycle = math.floor(tau / BURST_CYCLE_S)
        h = mix64(g.key ^ ((cycle * 0x9FB21C651E98DF25) & MASK))
        pos = tau - cycle * BURST_CYCLE_S
        offset = (h & 0xFFFF) / 65536.0 * (BURST_CYCLE_S / 3.0)
        length = BURST_MIN_S + (BURST_MAX_S - BURST_MIN_S) * ((h >> 16) & 0xFFFF) / 65536.0
        in_burst = ((h >> 32) & 0xFFFF) / 65536.0 < BURST_P and offset <= pos < offset + length
        util = 60.0 + 40.0 * u if in_burst else 0.0
    elif shape is Shape.INPUT_BOUND:
        saw = (tau % g.period_s) / g.period_s
        util = max(0.0, 6.0 + 48.0 * saw + 4.0 * (u - 0.5))
    elif shape is Shape.BRIEF_THEN_IDLE:
        util = 85.0 + 14.0 * u if tau < job.busy_s else 0.0
    else:  # IDLE_MEM, IDLE_EMPTY
        util = 0.0
    util = float(min(100, round(util)))
    util_mem = float(round(util * (0.35 + 0.2 * unit(g.key ^ SALT_MEM, n)))) if util else 0.0
    return util, util_mem, mem


def job_cpu_pct(job: SimJob, now: float) -> float:
    """The job's CPU use at ``now``, percent of its allocated CPUs (input-bound: saturated)."""
    g = job.gpus[0]
    u = unit(g.key ^ SALT_CPU, math.floor(now))
    if g.shape is Shape.INPUT_BOUND:
        cpu = job.cpu_base_pct + (100.0 - job.cpu_base_pct) * u
    elif g.shape is Shape.STEADY:
        cpu = job.cpu_base_pct + 5.0 * (u - 0.5)
    elif g.shape in (Shape.BURSTY, Shape.BRIEF_THEN_IDLE):
        busy = gpu_load(job, g, now)[0] > 0
        cpu = 70.0 + 30.0 * u if busy else 0.5 + 2.0 * u
    else:
        cpu = 0.2 + 1.5 * u
    return round(min(100.0, max(0.0, cpu)), 1)


def power_temperature(
    util: float, idle_w: float, max_w: float, temp_base_c: float, key: int, now: float
) -> tuple[float, float]:
    """(power in W, temperature in C) of a GPU at ``util`` % (noise fixed by ``key``, second)."""
    n = math.floor(now)
    power = idle_w + (max_w - idle_w) * util / 100.0 * (0.85 + 0.15 * unit(key ^ SALT_POWER, n))
    temp = temp_base_c + 0.4 * util + unit(key ^ SALT_TEMP, n)
    return round(power, 3), float(math.floor(temp))
