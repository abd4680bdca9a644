"""One simulated node: the timeline of jobs on its GPUs, its readings and its attribution."""

from __future__ import annotations

import bisect
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gpuwarden.agent.attribution import Attribution, GpuAttribution
from gpuwarden.common.types import GpuSample, JobInfo, ProcessInfo, SlurmStatus
from gpuwarden.sim.deck import SlotPlan, check_mix, deal_deck
from gpuwarden.sim.load import gpu_load, job_cpu_pct, power_temperature
from gpuwarden.sim.model import (
    A100,
    ACCOUNTS,
    DASK_SCHEDULERS,
    DASK_SHAPES,
    DEFAULT_CHURN_PER_H,
    DEFAULT_CLUSTER_NODES,
    DEFAULT_MIX,
    GAP_MEAN_S,
    H100,
    JOB_NAMES,
    MAX_AHEAD_S,
    MAX_GPUS,
    MEM_FRAC,
    MIN_JOB_S,
    P_DASK,
    P_INTERACTIVE,
    P_REQUEUE,
    USERS,
    GiB,
    MiB,
    Shape,
    SimGpuLoad,
    SimJob,
    hash64,
)


@dataclass(frozen=True, slots=True)
class _Period:
    start_s: float
    end_s: float
    job: SimJob | None


class _Slot:
    """The timeline of the jobs on one fixed group of GPUs of a node."""

    __slots__ = ("ends", "gen", "indices", "last", "periods")

    def __init__(self, indices: tuple[int, ...], first: list[_Period]) -> None:
        self.indices = indices
        self.periods = first
        self.ends = [p.end_s for p in first]
        self.gen = 0
        self.last = 0


class SimNode:
    """One simulated GPU node with its jobs; see the module docstring.

    ``start`` (Unix seconds) is the moment the simulation begins: jobs running then started
    before it. It defaults to the current time; pass the same value to every node of a demo
    (and in tests) for reproducible runs. ``churn`` is the number of job ends per job slot
    per hour (0: the jobs of ``start`` run for ever). ``cluster_nodes`` is the size of the
    deck the default mix is dealt over (see the module docstring).
    """

    def __init__(
        self,
        node: str,
        gpus: int = 4,
        seed: int = 0,
        start: float | None = None,
        job_mix: Mapping[Shape, float] = DEFAULT_MIX,
        mem_total_bytes: int = 80 * GiB,
        churn: float = DEFAULT_CHURN_PER_H,
        cluster_nodes: int = DEFAULT_CLUSTER_NODES,
    ) -> None:
        if not isinstance(node, str) or not node or len(node) > 255 or not node.isprintable():
            raise ValueError(f"node: must be a printable name of 1-255 characters, got {node!r}")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS:
            raise ValueError(f"gpus: must be an integer from 1 to {MAX_GPUS}, got {gpus!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an integer, got {seed!r}")
        if start is not None and not math.isfinite(start):
            raise ValueError(f"start: must be a finite Unix time, got {start!r}")
        if (
            isinstance(mem_total_bytes, bool)
            or not isinstance(mem_total_bytes, int)
            or mem_total_bytes < GiB
        ):
            raise ValueError(
                f"mem_total_bytes: must be an integer >= 1 GiB, got {mem_total_bytes!r}"
            )
        if not isinstance(churn, int | float) or not math.isfinite(churn) or churn < 0:
            raise ValueError(
                f"churn: must be a finite number of job ends per hour >= 0, got {churn!r}"
            )
        if (
            isinstance(cluster_nodes, bool)
            or not isinstance(cluster_nodes, int)
            or cluster_nodes < 1
        ):
            raise ValueError(f"cluster_nodes: must be an integer >= 1, got {cluster_nodes!r}")
        self.node = node
        self.gpus = gpus
        self.seed = seed
        self.start_s = float(time.time() if start is None else start)
        self.mem_total_bytes = mem_total_bytes
        self.churn_per_h = float(churn)
        self._mix = check_mix(job_mix)
        self._last_now: float | None = None
        self._lock = threading.Lock()

        ident = random.Random(f"gpuwarden-sim|{seed}|{node}|identity")
        self.model = H100 if ident.random() < 0.25 else A100
        self.uuids: tuple[str, ...] = tuple(
            f"GPU-{uuid.UUID(int=ident.getrandbits(128), version=4)}" for _ in range(gpus)
        )
        self._idle_w = tuple(self.model.idle_w + ident.uniform(-5.0, 5.0) for _ in range(gpus))
        self._temp_base_c = tuple(ident.uniform(28.0, 34.0) for _ in range(gpus))
        self._index_of = {u: i for i, u in enumerate(self.uuids)}

        m = re.search(r"(\d+)$", node)
        if m:
            number = int(m.group(1))
            position = (number - 1) % cluster_nodes
            round_key = str((number - 1) // cluster_nodes)
            self._id_block = (number + 101 * seed) % 5000
        else:
            h = hash64(f"{seed}|{node}")
            position = h % cluster_nodes
            round_key = f"h{h}"
            self._id_block = h % 5000
        plans = deal_deck(seed, round_key, cluster_nodes, gpus, self._mix)[position]

        self._slots: list[_Slot] = []
        self._slot_of: dict[int, _Slot] = {}
        for k, plan in enumerate(plans):
            slot = _Slot(plan.indices, self._first_periods(k, plan))
            self._slots.append(slot)
            for i in plan.indices:
                self._slot_of[i] = slot

    # -- building jobs ------------------------------------------------------------------

    def _rng(self, slot: int, gen: int) -> random.Random:
        return random.Random(f"gpuwarden-sim|{self.seed}|{self.node}|{slot}|{gen}")

    def _lifetime_s(self, rng: random.Random) -> float:
        if self.churn_per_h <= 0:
            return math.inf
        return rng.expovariate(self.churn_per_h / 3600.0)

    def _first_periods(self, k: int, plan: SlotPlan) -> list[_Period]:
        rng = self._rng(k, 0)
        if plan.free:
            return [_Period(-math.inf, self.start_s + self._lifetime_s(rng), None)]
        if plan.young:
            age = rng.uniform(30.0, 480.0)
        else:  # log-uniform between 15 minutes and 16 hours
            age = math.exp(rng.uniform(math.log(900.0), math.log(57600.0)))
        start = self.start_s - age
        end = self.start_s + self._lifetime_s(rng)  # memoryless: time left from now
        job = self._make_job(k, 0, plan, start, end, rng)
        return [_Period(-math.inf, start, None), _Period(start, end, job)]

    def _next_plan(self, indices: tuple[int, ...], rng: random.Random) -> SlotPlan:
        shapes, weights = zip(*self._mix, strict=True)
        primary = rng.choices(shapes, weights)[0]
        if primary is Shape.FREE:
            return SlotPlan(indices, (Shape.FREE,) * len(indices))
        per_gpu = [primary] * len(indices)
        if len(indices) > 1 and primary is Shape.STEADY and rng.random() < 0.25:
            per_gpu[-1] = Shape.IDLE_MEM
        single = len(indices) == 1
        interactive = single and rng.random() < P_INTERACTIVE.get(primary, 0.0)
        dask = not interactive and single and primary in DASK_SHAPES and rng.random() < P_DASK
        return SlotPlan(
            indices,
            tuple(per_gpu),
            interactive=interactive,
            dask_worker=rng.randrange(100) if dask else None,
            requeue=not interactive and rng.random() < P_REQUEUE,
        )

    def _extend(self, k: int, slot: _Slot) -> None:
        slot.gen += 1
        rng = self._rng(k, slot.gen)
        t0 = slot.ends[-1]
        plan = self._next_plan(slot.indices, rng)
        if plan.free:
            new = [_Period(t0, t0 + max(MIN_JOB_S, self._lifetime_s(rng)), None)]
        else:
            gap = min(3600.0, max(20.0, rng.expovariate(1.0 / GAP_MEAN_S)))
            start = t0 + gap
            end = start + max(MIN_JOB_S, self._lifetime_s(rng))
            job = self._make_job(k, slot.gen, plan, start, end, rng)
            new = [_Period(t0, start, None), _Period(start, end, job)]
        slot.periods.extend(new)
        slot.ends.extend(p.end_s for p in new)

    def _make_job(
        self, k: int, gen: int, plan: SlotPlan, start: float, end: float, rng: random.Random
    ) -> SimJob:
        primary = plan.shapes[0]
        job_id = 1_000_000 + self._id_block * 10_000 + (gen * self.gpus + k) % 10_000
        if plan.dask_worker is not None:
            scheduler, user = DASK_SCHEDULERS[plan.dask_worker % len(DASK_SCHEDULERS)]
            worker = f"SLURMCluster-{plan.dask_worker // len(DASK_SCHEDULERS)}"
            name = "dask-worker"
        else:
            scheduler, worker = "", ""
            user = rng.choice(USERS)
            name = "train-ddp" if len(set(plan.shapes)) > 1 else rng.choice(JOB_NAMES[primary])
        if plan.interactive:
            partition, qos = "interactive", "interactive"
        else:
            partition = "gpu-long" if rng.random() < 0.2 else "gpu"
            qos = "high" if rng.random() < 0.15 else "normal"
        info = JobInfo(
            job_id=str(job_id),
            step="0" if plan.interactive else "batch",
            user=user,
            account=ACCOUNTS[user],
            partition=partition,
            name=name,
            qos=qos,
            batch=not plan.interactive,
            requeue=plan.requeue and not plan.interactive,
            start_time=math.floor(start),
            dask_scheduler=scheduler,
            dask_worker=worker,
            source="sim",
        )
        base_pid = rng.randrange(1000, 400_000)
        loads = []
        for r, (i, shape) in enumerate(zip(plan.indices, plan.shapes, strict=True)):
            lo, hi = MEM_FRAC[shape]
            mem = int(rng.uniform(lo, hi) * self.mem_total_bytes) // MiB * MiB
            has_process = shape is not Shape.IDLE_EMPTY
            loads.append(
                SimGpuLoad(
                    index=i,
                    shape=shape,
                    key=hash64(f"{self.seed}|{self.node}|{k}|{gen}|{i}"),
                    mem_bytes=mem if has_process else 0,
                    pid=base_pid + r if has_process else None,
                    period_s=rng.uniform(8.0, 20.0),
                )
            )
        cpu_base = rng.uniform(95.0, 99.0) if primary is Shape.INPUT_BOUND else rng.uniform(55, 90)
        return SimJob(
            info=info,
            start_s=start,
            end_s=end,
            gpus=tuple(loads),
            busy_s=rng.uniform(300.0, 1200.0),
            cpu_base_pct=cpu_base,
        )

    # -- reading the timeline -----------------------------------------------------------

    def _period(self, index: int, now: float) -> _Period:
        if not 0 <= index < self.gpus:
            raise IndexError(f"{self.node} has GPUs 0..{self.gpus - 1}, not {index}")
        slot = self._slot_of[index]
        p = slot.periods[slot.last]
        if p.start_s <= now < p.end_s:
            return p
        with self._lock:  # the agent samples and attributes from different threads
            if now >= slot.ends[-1]:
                if now - slot.ends[-1] > MAX_AHEAD_S:
                    raise ValueError(f"time {now} is more than a year past the simulated jobs")
                k = self._slots.index(slot)
                while now >= slot.ends[-1]:
                    self._extend(k, slot)
            last = bisect.bisect_right(slot.ends, now)
            slot.last = last
            return slot.periods[last]

    def job_at(self, index: int, now: float) -> SimJob | None:
        """The job holding GPU ``index`` at ``now``, or None when the GPU is free."""
        return self._period(index, now).job

    def shape_at(self, index: int, now: float) -> Shape:
        job = self._period(index, now).job
        return Shape.FREE if job is None else job.load(index).shape

    def jobs_at(self, now: float) -> list[SimJob]:
        """The distinct jobs on this node at ``now``, by first GPU index."""
        seen: dict[str, SimJob] = {}
        for i in range(self.gpus):
            job = self.job_at(i, now)
            if job is not None:
                seen.setdefault(job.info.job_id, job)
        return list(seen.values())

    @property
    def last_sample_s(self) -> float | None:
        """The ``now`` of the latest :meth:`sample` call (what the attributor reports on)."""
        return self._last_now

    # -- samples ------------------------------------------------------------------------

    def sample_gpu(self, index: int, now: float) -> GpuSample:
        """One reading of GPU ``index`` at ``now`` (does not move :attr:`last_sample_s`)."""
        job = self._period(index, now).job
        uuid_ = self.uuids[index]
        processes: tuple[ProcessInfo, ...]
        if job is None:
            util, util_mem, mem, processes = 0.0, 0.0, 0, ()
            key = index * 0x9E3779B97F4A7C15 ^ self._id_block
        else:
            g = job.load(index)
            key = g.key
            util, util_mem, mem = gpu_load(job, g, now)
            processes = (
                (ProcessInfo(pid=g.pid, used_mem_bytes=mem, name="python"),)
                if g.pid is not None
                else ()
            )
        idle_w = self._idle_w[index] + (15.0 if processes else 0.0)  # a context lifts P-state
        power, temp = power_temperature(
            util, idle_w, self.model.max_w, self._temp_base_c[index], key, now
        )
        return GpuSample(
            uuid=uuid_,
            index=index,
            name=self.model.name,
            util_gpu_pct=util,
            util_mem_pct=util_mem,
            mem_used_bytes=mem,
            mem_total_bytes=self.mem_total_bytes,
            power_w=power,
            temperature_c=temp,
            processes=processes,
        )

    def sample(self, now: float) -> list[GpuSample]:
        """Every GPU at ``now``; remembers ``now`` for :class:`SimAttributor`."""
        if not math.isfinite(now):
            raise ValueError(f"now: must be a finite Unix time, got {now!r}")
        out = [self.sample_gpu(i, now) for i in range(self.gpus)]
        self._last_now = now
        return out

    # -- attribution and summary --------------------------------------------------------

    def attribution_at(self, now: float, uuids: Sequence[str] | None = None) -> Attribution:
        """Which job holds each GPU at ``now`` (all GPUs, or those of ``uuids`` on this node)."""
        wanted = self.uuids if uuids is None else [u for u in uuids if u in self._index_of]
        gpus: dict[str, GpuAttribution] = {}
        cpu_of: dict[str, float] = {}
        for u in wanted:
            job = self.job_at(self._index_of[u], now)
            if job is None:
                gpus[u] = GpuAttribution(job=None, allocated=False)
                continue
            jid = job.info.job_id
            if jid not in cpu_of:
                cpu_of[jid] = job_cpu_pct(job, now)
            gpus[u] = GpuAttribution(
                job=replace(job.info, cpu_util_pct=cpu_of[jid]), allocated=True
            )
        return Attribution(gpus=gpus, slurm=SlurmStatus(available=True))

    def describe(self, now: float | None = None) -> list[str]:
        """One short line per GPU: index, shape, job id, user and the job's kind."""
        at = self._last_now if now is None else now
        at = self.start_s if at is None else at
        lines = []
        for i in range(self.gpus):
            job = self.job_at(i, at)
            if job is None:
                lines.append(f"{self.node}/{i} {Shape.FREE.value}")
                continue
            info = job.info
            kind = []
            if len(job.gpus) > 1:
                kind.append(f"{len(job.gpus)}-gpu")
            if info.is_dask_worker:
                kind.append(f"dask:{info.dask_worker}")
            if not info.batch:
                kind.append("interactive")
            if not info.requeue:
                kind.append("no-requeue")
            age_min = (at - job.start_s) / 60.0
            lines.append(
                f"{self.node}/{i} {job.load(i).shape.value} job {info.job_id} {info.user} "
                f"{age_min:.0f}min {' '.join(kind)}".rstrip()
            )
        return lines
