"""``AdminService.RequestAction`` against a real collector in this process (real gRPC, real
SQLite, plaintext and mTLS with certificates from ``gpuwarden certs``): what lands in the
audit log and on the watch stream, who is recorded as acting, dry-run versus enforcing,
exemptions that survive a restart, and refusals that name what is wrong."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gpuwarden.certs import SiteCA
from gpuwarden.collector.admin import attach_admin
from gpuwarden.collector.enforce import AuditQuery
from gpuwarden.collector.ladder import ActionOutcome, Decision
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.common.tls import TlsFiles
from gpuwarden.common.types import (
    ActionRequest,
    AuditRecord,
    GpuWindow,
    JobInfo,
    NodeReport,
    ProcessInfo,
)
from gpuwarden.query import QueryClient
from tests.helpers import run_gpuwarden

JOB = "5001"


class RecordingExecutor:
    """Stands in for Slurm here (the Slurm executor has its own tests on real Slurm): it
    records the decision it was asked to carry out and succeeds."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def execute(self, decision: Decision) -> ActionOutcome:
        self.decisions.append(decision)
        return ActionOutcome(True, f"slurm: requeued {decision.job_id}")


def report(node: str = "gpu01") -> NodeReport:
    now = time.time()
    job = JobInfo(job_id=JOB, user="alice", account="proj", partition="gpu", requeue=True)
    gpus = tuple(
        GpuWindow(
            uuid=f"GPU-{node}-{i}",
            index=i,
            samples=5,
            util_max=0.0,
            util_mean=0.0,
            processes=(ProcessInfo(pid=100 + i),),
            job=job,
            allocated=True,
        )
        for i in range(2)
    )
    return NodeReport(node=node, seq=1, window_start=now - 5, window_end=now, gpus=gpus)


async def start(
    tmp_path: Path,
    *,
    enforce: bool,
    executor: RecordingExecutor | None = None,
    tls: tuple[bytes, bytes, bytes] | None = None,
) -> Collector:
    c = Collector(
        db_path=tmp_path / "collector.db",
        listen="127.0.0.1:0",
        tls=tls,
        audit_jsonl=tmp_path / "audit.jsonl",
    )
    await c.start()
    c.audit = AuditQuery(c.store.path)
    attach_admin(c, policies=PolicySet(default=Policy(enforce=enforce)), executor=executor)
    await c.ingestor.submit(report())
    return c


@pytest.fixture
async def dry(tmp_path: Path) -> AsyncIterator[Collector]:
    c = await start(tmp_path, enforce=False, executor=RecordingExecutor())
    try:
        yield c
    finally:
        await c.stop()


async def test_a_warning_is_audited_with_local_as_actor_and_published_on_the_watch_stream(
    dry: Collector,
) -> None:
    async with QueryClient(f"127.0.0.1:{dry.port}") as client:
        seen: list[AuditRecord] = []

        async def watch() -> None:
            async for ev in client.watch(include_snapshot=False):
                if isinstance(ev, AuditRecord):
                    seen.append(ev)
                    return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.3)  # the stream is open before the action
        reply = await client.request_action(ActionRequest(JOB, "warn", reason="please check"))
        await asyncio.wait_for(watcher, 10)
        records = await client.audit(job_id=JOB)
    assert (reply.ok, reply.outcome, reply.actor) == (True, "warned", "local")
    assert [(r.kind, r.action, r.outcome, r.actor) for r in records] == [
        ("admin", "warn", "warned", "local")
    ]
    assert "please check" in records[0].detail
    assert set(records[0].gpus) == {"GPU-gpu01-0", "GPU-gpu01-1"}
    assert (records[0].user, records[0].partition, records[0].nodes) == ("alice", "gpu", ("gpu01",))
    assert seen and seen[0].action == "warn" and seen[0].actor == "local"


async def test_requeue_in_dry_run_is_recorded_as_would_requeue_and_nothing_is_done(
    tmp_path: Path,
) -> None:
    executor = RecordingExecutor()
    c = await start(tmp_path, enforce=False, executor=executor)
    try:
        async with QueryClient(f"127.0.0.1:{c.port}") as client:
            reply = await client.request_action(ActionRequest(JOB, "requeue"))
            records = await client.audit(job_id=JOB)
    finally:
        await c.stop()
    assert (reply.outcome, reply.dry_run) == ("dry_run", True)
    assert reply.detail.startswith("dry run: would requeue")
    assert records[0].outcome == "dry_run" and records[0].dry_run
    assert executor.decisions == []
    assert '"action": "requeue"' in (tmp_path / "audit.jsonl").read_text()


async def test_requeue_with_enforcement_on_reaches_the_executor_for_that_job(
    tmp_path: Path,
) -> None:
    executor = RecordingExecutor()
    c = await start(tmp_path, enforce=True, executor=executor)
    try:
        async with QueryClient(f"127.0.0.1:{c.port}") as client:
            reply = await client.request_action(ActionRequest(JOB, "requeuehold", reason="x"))
            records = await client.audit(job_id=JOB)
    finally:
        await c.stop()
    assert (reply.ok, reply.outcome, reply.dry_run) == (True, "done", False)
    assert [(d.job_id, d.action.value) for d in executor.decisions] == [(JOB, "requeuehold")]
    assert {g.uuid for g in executor.decisions[0].allocation.gpus} == {
        "GPU-gpu01-0",
        "GPU-gpu01-1",
    }
    assert records[0].outcome == "done" and "asked by local" in records[0].detail


async def test_an_exemption_is_kept_across_a_restart_and_ends_when_its_time_is_up(
    tmp_path: Path,
) -> None:
    c = await start(tmp_path, enforce=False)
    try:
        async with QueryClient(f"127.0.0.1:{c.port}") as client:
            reply = await client.request_action(
                ActionRequest(JOB, "exempt", duration_s=3600, reason="deadline on Friday")
            )
        assert reply.outcome == "exempted"
        now = time.time()
        assert c.is_exempt(JOB, now) is not None
        assert c.is_exempt("5002", now) is None
    finally:
        await c.stop()
    again = Collector(db_path=tmp_path / "collector.db", listen="127.0.0.1:0")
    try:
        words = again.is_exempt(JOB, time.time())
        assert words is not None and "deadline on Friday" in words and "local" in words
        assert again.is_exempt(JOB, time.time() + 3601) is None
    finally:
        again.store.close()
        again.exemptions.close()


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (ActionRequest(JOB, "exempt", duration_s=60), "INVALID_ARGUMENT", "reason"),
        (ActionRequest(JOB, "exempt", duration_s=-1, reason="r"), "INVALID_ARGUMENT", "duration"),
        (ActionRequest(JOB, "cancel"), "INVALID_ARGUMENT", "action"),
        (ActionRequest("5001; rm", "warn"), "INVALID_ARGUMENT", "job_id"),
        (ActionRequest(JOB, "warn", reason="a\nb"), "INVALID_ARGUMENT", "reason"),
        (ActionRequest("999", "warn"), "NOT_FOUND", "999"),
    ],
)
async def test_bad_requests_are_refused_naming_what_is_wrong_and_change_nothing(
    dry: Collector, request_: ActionRequest, code: str, words: str
) -> None:
    async with QueryClient(f"127.0.0.1:{dry.port}") as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.request_action(request_)
        assert err.value.code().name == code
        assert words in (err.value.details() or "")
        # the refused call itself is audited (job ""), but nothing about the job
        assert [r for r in await client.audit() if r.job_id] == []
    assert dry.is_exempt(JOB, time.time()) is None


async def test_with_mtls_only_an_admin_certificate_may_act_and_its_name_is_the_actor(
    tmp_path: Path,
) -> None:
    ca, _ = SiteCA.open_or_create(tmp_path / "pki", org="test", name="test CA", days=1)
    server = ca.issue("collector", "collector", hosts=["127.0.0.1"], days=1)
    admin = ca.issue("admin", "carol", days=1)
    reader = ca.issue("reader", "dave", days=1)
    ca_pem = (tmp_path / "pki" / "ca.pem").read_bytes()
    tls = (ca_pem, server.cert.read_bytes(), server.key.read_bytes())
    c = await start(tmp_path, enforce=False, tls=tls)
    target = f"127.0.0.1:{c.port}"
    try:
        as_reader = TlsFiles(tmp_path / "pki" / "ca.pem", reader.cert, reader.key)
        async with QueryClient(target, tls=as_reader) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.request_action(ActionRequest(JOB, "warn"))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "dave" in (err.value.details() or "")
        as_admin = TlsFiles(tmp_path / "pki" / "ca.pem", admin.cert, admin.key)
        async with QueryClient(target, tls=as_admin) as client:
            reply = await client.request_action(ActionRequest(JOB, "warn"))
            records = await client.audit(job_id=JOB)
    finally:
        await c.stop()
    assert reply.actor == "carol"
    assert [(r.action, r.actor) for r in records] == [("warn", "carol")]


async def test_gpuwarden_exempt_on_the_command_line_takes_effect_at_once(
    dry: Collector,
) -> None:
    """``gpuwarden exempt JOB --for 4h --reason ...``: the running collector leaves the job
    alone from now on (no restart), and the command says until when and who asked."""
    target = f"127.0.0.1:{dry.port}"
    proc = await asyncio.to_thread(
        run_gpuwarden,
        "exempt",
        JOB,
        "--for",
        "4h",
        "--reason",
        "thesis deadline",
        "--collector",
        target,
        "--insecure",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"job {JOB}: exempted by local until" in proc.stdout
    assert "thesis deadline" in proc.stdout
    assert dry.is_exempt(JOB, time.time() + 3 * 3600) is not None
    assert dry.is_exempt(JOB, time.time() + 5 * 3600) is None
    # A reason is required, and the duration must be positive: refused before any call.
    for bad in (["--for", "4h"], ["--for", "-1h", "--reason", "x"]):
        proc = await asyncio.to_thread(
            run_gpuwarden, "exempt", JOB, *bad, "--collector", target, "--insecure"
        )
        assert proc.returncode == 2, proc.stderr
    unknown = await asyncio.to_thread(
        run_gpuwarden,
        "exempt",
        "999999",
        "--for",
        "1h",
        "--reason",
        "x",
        "--collector",
        target,
        "--insecure",
    )
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
