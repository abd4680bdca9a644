"""Fuzzing a running collector: hypothesis-built protobuf reports and raw-byte mutations.

A real collector process is started; tens of thousands of hostile messages are sent, each on
its own stream (an invalid one ends its stream), while an honest agent keeps streaming. Then:
the collector is still serving, every stored report passes validation again (stored-invalid =
0), the honest agent lost nothing, and the collector's RSS stayed flat. The figures are printed
(run with -s).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from pathlib import Path

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuwarden.collector.layout_read import stored_reports
from gpuwarden.collector.validate import validate_report
from gpuwarden.common.convert import gpu_to_pb, report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from tests.helpers import Proc, free_port, wait_for_sync

REPORT_METHOD = "/gpuwarden.v1.AgentService/Report"
EXAMPLES = 6_000  # hypothesis-built reports
MUTANTS = 14_000  # raw-byte mutations of valid and generated reports

U64 = st.integers(min_value=0, max_value=2**64 - 1)
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
U32 = st.integers(min_value=0, max_value=2**32 - 1)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
NEAR = st.floats(min_value=1.6e9, max_value=1.8e9)
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["123\n", "\uff11\uff12", "a\u202eb", "x\x85y", "gpu01\n", "tcp://a:1", ""]),
)
ID = st.one_of(st.sampled_from(["1", "42", "7_3", "9+1", "fz01", "GPU-1", "MIG-2"]), TEXT)


def _job() -> st.SearchStrategy[pb.JobInfo]:
    return st.builds(
        pb.JobInfo,
        job_id=ID,
        step=TEXT,
        user=ID,
        account=ID,
        partition=ID,
        name=TEXT,
        qos=ID,
        batch=st.booleans(),
        requeue=st.booleans(),
        start_time=I64,
        dask_scheduler=st.one_of(TEXT, st.just("tcp://10.0.0.5:8786")),
        dask_worker=TEXT,
        source=TEXT,
        cpu_util_pct=st.one_of(st.none(), ANY_FLOAT),
    )


def _gpu() -> st.SearchStrategy[pb.GpuWindow]:
    opt_float = st.one_of(st.none(), ANY_FLOAT, st.floats(0, 100))
    opt_u64 = st.one_of(st.none(), U64, st.integers(0, 2**40))
    return st.builds(
        pb.GpuWindow,
        uuid=ID,
        index=U32,
        name=TEXT,
        parent_uuid=st.one_of(st.just(""), ID),
        samples=U32,
        util_mean=opt_float,
        util_max=opt_float,
        util_min=opt_float,
        zero_frac=st.one_of(st.none(), ANY_FLOAT),
        mem_util_mean=opt_float,
        mem_used_max_bytes=opt_u64,
        mem_total_bytes=opt_u64,
        power_mean_w=opt_float,
        temperature_c=opt_float,
        processes=st.lists(
            st.builds(pb.ProcessInfo, pid=U32, used_mem_bytes=opt_u64, name=TEXT), max_size=3
        ),
        errors=st.lists(TEXT, max_size=2),
        job=st.one_of(st.none(), _job()),
        allocated=st.booleans(),
    )


REPORTS = st.builds(
    pb.NodeReport,
    node=st.one_of(st.sampled_from(["fz01", "fz02", "fz-03"]), TEXT),
    seq=st.one_of(U64, st.integers(1, 10**6)),
    window_start=st.one_of(ANY_FLOAT, NEAR),
    window_end=st.one_of(ANY_FLOAT, NEAR),
    gpus=st.lists(_gpu(), max_size=4),
    slurm=st.builds(pb.SlurmStatus, available=st.booleans(), error=TEXT),
    agent_id=TEXT,
    agent_version=TEXT,
)


async def _send_raw(channel: grpc.aio.Channel, raw: bytes) -> str:
    call = channel.stream_stream(
        REPORT_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )()
    try:
        await call.write(raw)
        await call.done_writing()
        async for _ in call:
            pass
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    except (grpc.aio.UsageError, asyncio.InvalidStateError):
        return "CLOSED"


async def _blast(port: int, messages: list[bytes], outcomes: dict[str, int]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        for i in range(0, len(messages), 200):
            for code in await asyncio.gather(*(_send_raw(ch, m) for m in messages[i : i + 200])):
                outcomes[code] = outcomes.get(code, 0) + 1


def _honest(seq: int) -> bytes:
    t = time.time() - 5
    g = GpuWindow(
        uuid="GPU-honest",
        index=0,
        samples=5,
        util_max=60.0,
        util_mean=50.0,
        job=JobInfo(job_id="1001", user="alice"),
    )
    r = NodeReport(node="honest01", seq=seq, window_start=t - 5, window_end=t, gpus=(g,))
    return report_to_pb(r).SerializeToString()


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if op < 0.5 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.7 and b:
            del b[rng.randrange(len(b)) :]
        elif op < 0.9:
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:
            b += b[: rng.randint(0, len(b))]
    return bytes(b)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _stored_reports(db_path: Path) -> list[tuple[pb.NodeReport, float]]:
    out: dict[tuple[str, int], tuple[pb.NodeReport, float]] = {}
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        for node, seq, start, end, received in db.execute(
            "SELECT node, seq, window_start, window_end, received FROM reports"
        ):
            out[(node, seq)] = (
                pb.NodeReport(node=node, seq=seq, window_start=start, window_end=end),
                received,
            )
        seqs = dict(db.execute("SELECT id, seq FROM reports").fetchall())
        for rid, node, *_, windows in stored_reports(db):
            out[(node, seqs[rid])][0].gpus.extend(gpu_to_pb(g) for g, _ in windows)
    return list(out.values())


def test_fuzzed_reports_never_crash_the_collector_nor_get_stored_invalid(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    state = tmp_path / "state"
    collector = Proc(
        ["collector", "--insecure", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state)],
        tmp_path / "collector.log",
    )
    procs.append(collector)
    wait_for_sync(lambda: "listening" in collector.output(), 30)
    outcomes: dict[str, int] = {}
    honest_acked: list[int] = []
    stop_honest = asyncio.Event()

    async def honest_agent() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.stream_stream(
                REPORT_METHOD,
                request_serializer=lambda b: b,
                response_deserializer=pb.Ack.FromString,
            )()
            seq = 0
            while not stop_honest.is_set():
                seq += 1
                await call.write(_honest(seq))
                ack = await call.read()
                honest_acked.append(ack.seq)
                await asyncio.sleep(0.01)
            await call.done_writing()

    async def run(messages: list[bytes]) -> None:
        await _blast(port, messages, outcomes)

    # warm-up: the honest agent alone, then RSS as the baseline
    async def warm() -> None:
        task = asyncio.create_task(honest_agent())
        await asyncio.sleep(2.0)
        stop_honest.set()
        await task

    asyncio.run(warm())
    rss_before = _rss_kib(collector.p.pid)
    warm_rate = len(honest_acked) / 2.0
    honest_acked.clear()
    stop_honest.clear()

    generated: list[bytes] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(REPORTS)
    def collect(report: pb.NodeReport) -> None:
        generated.append(report.SerializeToString())

    t_gen = time.monotonic()
    collect()
    t_gen = time.monotonic() - t_gen
    rng = random.Random(2026)
    seeds = [_honest(s) for s in range(1, 50)] + generated[:500]
    mutants = [_mutate(rng, rng.choice(seeds)) for _ in range(MUTANTS)]

    timings: dict[str, float] = {}
    rss_mid: list[int] = []

    async def main() -> float:
        honest = asyncio.create_task(honest_agent())
        t0 = time.monotonic()
        await run(generated)
        timings["hypothesis"] = time.monotonic() - t0
        await run(mutants[: MUTANTS // 2])
        rss_mid.append(_rss_kib(collector.p.pid))
        await run(mutants[MUTANTS // 2 :])
        elapsed = time.monotonic() - t0
        stop_honest.set()
        await honest
        return elapsed

    elapsed = asyncio.run(main())
    rss_after = _rss_kib(collector.p.pid)
    assert collector.p.poll() is None, collector.output()[-3000:]
    sent = len(generated) + len(mutants)
    stored = _stored_reports(state / "gpuwarden.db")
    invalid = []
    for msg, received in stored:
        try:
            validate_report(msg, now=received)
        except ValueError as exc:
            invalid.append(f"{msg.node!r} seq={msg.seq}: {exc}")
    honest_rate = len(honest_acked) / elapsed
    print(
        f"\nfuzz: {sent} messages ({len(generated)} hypothesis, {len(mutants)} mutated) "
        f"in {elapsed:.1f} s (generating {t_gen:.1f} s, sending hypothesis's "
        f"{timings['hypothesis']:.1f} s); outcomes {dict(sorted(outcomes.items()))}; "
        f"stored reports {len(stored)}, stored-invalid {len(invalid)}; "
        f"collector RSS {rss_before / 1024:.1f} MiB before, {rss_mid[0] / 1024:.1f} half-way, "
        f"{rss_after / 1024:.1f} at the end; "
        f"honest agent {warm_rate:.0f} acks/s alone, {honest_rate:.0f} acks/s under fuzz"
    )
    assert sent >= 20_000
    assert invalid == []
    assert honest_acked == list(range(1, len(honest_acked) + 1))  # in order, none lost
    assert "Traceback" not in collector.output()
    # flat: the second half of the mutants (7,000 messages) adds next to nothing
    assert rss_after - rss_mid[0] < 8 * 1024, (rss_before, rss_mid, rss_after)
